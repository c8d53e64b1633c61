//! Secrets the server generates (`RotateCredential` with a generation
//! policy): length, alphabet and prefix, drawn from the system's randomness.

use secrecy::SecretString;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Character set for server-generated secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Alphabet {
    /// `A-Z a-z 0-9`.
    #[default]
    Alphanumeric,
    /// `0-9 a-f`.
    Hex,
    /// URL-safe base64 characters `A-Z a-z 0-9 - _`.
    Base64Url,
    /// Printable ASCII without space and quotes.
    Printable,
}

impl Alphabet {
    fn chars(&self) -> &'static [u8] {
        match self {
            Self::Alphanumeric => b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
            Self::Hex => b"0123456789abcdef",
            Self::Base64Url => {
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
            }
            Self::Printable => {
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$%&()*+,-./:;<=>?@[]^_{|}~"
            }
        }
    }
}

/// How the server generates a new secret on rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerationPolicy {
    /// Number of random characters (16-512), not counting the prefix.
    pub length: usize,
    /// Characters to draw from.
    pub alphabet: Alphabet,
    /// Fixed text put before the random part (`sk-live-`), at most 32.
    pub prefix: String,
}

impl GenerationPolicy {
    /// Checks the policy's bounds.
    pub fn validate(&self) -> Result<()> {
        if !(16..=512).contains(&self.length) {
            return Err(Error::invalid("generate.length", "must be 16-512"));
        }
        if self.prefix.len() > 32 || !self.prefix.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::invalid(
                "generate.prefix",
                "must be at most 32 printable ASCII characters",
            ));
        }
        Ok(())
    }

    /// Draws a fresh secret from the system CSPRNG, without modulo bias.
    pub fn generate(&self) -> Result<SecretString> {
        use ring::rand::SecureRandom;
        self.validate()?;
        let rng = ring::rand::SystemRandom::new();
        let chars = self.alphabet.chars();
        // Largest multiple of the alphabet size that fits a byte: bytes at or
        // above it are rejected so every character is equally likely.
        let limit = 256 - (256 % chars.len());
        let mut out = Zeroizing::new(String::with_capacity(self.prefix.len() + self.length));
        out.push_str(&self.prefix);
        let mut buf = Zeroizing::new([0u8; 64]);
        let mut produced = 0;
        while produced < self.length {
            rng.fill(&mut *buf)
                .map_err(|_| Error::internal("system randomness unavailable"))?;
            for &b in buf.iter() {
                if usize::from(b) < limit && produced < self.length {
                    out.push(char::from(chars[usize::from(b) % chars.len()]));
                    produced += 1;
                }
            }
        }
        Ok(SecretString::from(out.as_str()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn generation_respects_policy() {
        let p = GenerationPolicy {
            length: 40,
            alphabet: Alphabet::Hex,
            prefix: "sk-".into(),
        };
        let a = p.generate().unwrap();
        let b = p.generate().unwrap();
        assert_eq!(a.expose_secret().len(), 43);
        assert!(a.expose_secret().starts_with("sk-"));
        assert!(
            a.expose_secret()[3..]
                .bytes()
                .all(|c| c.is_ascii_hexdigit())
        );
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert!(GenerationPolicy { length: 8, ..p }.generate().is_err());
    }
}
