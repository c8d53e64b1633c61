//! The key that fingerprints requests for idempotent retries.
//!
//! A retried call is recognised by a keyed hash of its request
//! (HMAC-SHA256), stored instead of the request: a database reader cannot
//! test guesses of a value the request carried without this key, which is
//! derived from the root key and never stored.

use std::fmt;

/// Length of a request fingerprint.
pub const FINGERPRINT_LEN: usize = 32;

/// The request-fingerprint key, derived from the root key
/// ([`crate::RootKey::idempotency_key`]).
pub struct IdempotencyKey(ring::hmac::Key);

impl IdempotencyKey {
    pub(crate) fn from_okm(okm: &[u8; 32]) -> Self {
        Self(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, okm))
    }

    /// HMAC-SHA256 over the length-prefixed `parts`, so that no two
    /// different lists of parts give the same input.
    pub fn fingerprint(&self, parts: &[&[u8]]) -> [u8; FINGERPRINT_LEN] {
        let mut ctx = ring::hmac::Context::with_key(&self.0);
        for part in parts {
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part);
        }
        let tag = ctx.sign();
        let mut out = [0u8; FINGERPRINT_LEN];
        out.copy_from_slice(tag.as_ref());
        out
    }
}

impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdempotencyKey([REDACTED])")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use secrecy::ExposeSecret;

    use crate::RootKey;

    #[test]
    fn fingerprints_depend_on_the_root_key_and_every_part() {
        let root = RootKey::generate().unwrap();
        let key = root.idempotency_key().unwrap();
        let again = RootKey::from_encoded(root.to_encoded().expose_secret())
            .unwrap()
            .idempotency_key()
            .unwrap();
        let a = key.fingerprint(&[b"CreateCredential", b"body"]);
        assert_eq!(a, again.fingerprint(&[b"CreateCredential", b"body"]));
        assert_ne!(a, key.fingerprint(&[b"CreateCredential", b"bodx"]));
        // Length prefixes: moving bytes between parts changes the input.
        assert_ne!(a, key.fingerprint(&[b"CreateCredentialb", b"ody"]));
        let other = RootKey::generate().unwrap().idempotency_key().unwrap();
        assert_ne!(a, other.fingerprint(&[b"CreateCredential", b"body"]));
        assert_eq!(format!("{key:?}"), "IdempotencyKey([REDACTED])");
    }
}
