//! The root key: loading, key check, and wrapping of tenant KEKs.

use std::fmt;
use std::io::Read;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use secrecy::SecretString;
use uuid::Uuid;
use zeroize::{ZeroizeOnDrop, Zeroizing};

use crate::aead::{self, KEY_LEN, NONCE_LEN, TAG_LEN, put_field};
use crate::checkpoint::SigningKey;
use crate::error::{CryptoError, Result};
use crate::idempotency::IdempotencyKey;
use crate::kdf::{self, KdfParams};
use crate::kek::Kek;
use crate::{constant_time_eq, random};

/// Format version of [`KeyCheck`]: nonce (12) then ciphertext + tag.
const KEY_CHECK_FORMAT: u8 = 1;
/// Associated data of the key check.
const KEY_CHECK_AAD: &[u8] = b"strongroom/key-check/v1";
/// The fixed, public constant the key check encrypts.
const KEY_CHECK_CONSTANT: &[u8; 32] = b"strongroom root key check value.";
const KEY_CHECK_LEN: usize = 1 + NONCE_LEN + KEY_CHECK_CONSTANT.len() + TAG_LEN;

/// Format version of [`WrappedKek`]: nonce (12) then wrapped key (32) + tag.
const WRAPPED_KEK_FORMAT: u8 = 1;
const WRAPPED_KEK_DOMAIN: &[u8] = b"strongroom/kek-wrap/v1";
const WRAPPED_KEK_LEN: usize = 1 + NONCE_LEN + KEY_LEN + TAG_LEN;

/// HKDF-SHA256 label of the checkpoint signing key's seed.
const CHECKPOINT_SIGNING_LABEL: &[u8] = b"strongroom/checkpoint-signing/v1";

/// HKDF-SHA256 label of the request-fingerprint key (idempotent retries).
const IDEMPOTENCY_LABEL: &[u8] = b"strongroom/idempotency-fingerprint/v1";

/// HKDF-SHA256 label of a root key's public id (its fingerprint).
const KEY_ID_LABEL: &[u8] = b"strongroom/root-key-id/v1";

/// Format version of [`WrappedDerivedKeys`]: nonce (12) then the two
/// 32-byte secrets + tag.
const DERIVED_FORMAT: u8 = 1;
const DERIVED_AAD: &[u8] = b"strongroom/derived-keys/v1";
const DERIVED_LEN: usize = 1 + NONCE_LEN + 2 * KEY_LEN + TAG_LEN;

/// Largest key file read; a key file is at most a line of text.
const MAX_KEY_FILE_LEN: u64 = 4096;

const INVALID_ENCODING: &str =
    "expected 32 bytes encoded as hex (64 characters) or base64 (standard or url-safe)";

/// The server's root key: 32 bytes that wrap every tenant [`Kek`].
///
/// Zeroised on drop; `Debug` prints `RootKey([REDACTED])`; no `Display`, no
/// `Clone` (share it behind an `Arc`).
#[derive(ZeroizeOnDrop)]
pub struct RootKey {
    bytes: [u8; KEY_LEN],
}

impl RootKey {
    /// A new random root key (dev mode, first start).
    pub fn generate() -> Result<RootKey> {
        let mut key = RootKey {
            bytes: [0u8; KEY_LEN],
        };
        random::fill(&mut key.bytes)?;
        Ok(key)
    }

    /// Parses a root key given as text, e.g. `STRONGROOM_ROOT_KEY`.
    ///
    /// Accepts 32 bytes as hex (64 characters) or base64 (standard or url-safe
    /// alphabet, padded or not); surrounding whitespace is ignored. Fails with
    /// [`CryptoError::InvalidKey`], whose message never contains the text.
    pub fn from_encoded(text: &str) -> Result<RootKey> {
        let text = text.trim();
        let mut key = RootKey {
            bytes: [0u8; KEY_LEN],
        };
        if text.len() == 2 * KEY_LEN && hex::decode_to_slice(text, &mut key.bytes).is_ok() {
            return Ok(key);
        }
        // Decode into a fixed buffer, larger than a key so an over-long input
        // is detected, and zeroised whatever happens.
        let mut buf = Zeroizing::new([0u8; KEY_LEN + 16]);
        for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
            if let Ok(len) = engine.decode_slice(text, &mut buf[..]) {
                if len == KEY_LEN {
                    key.bytes.copy_from_slice(&buf[..KEY_LEN]);
                    return Ok(key);
                }
                return Err(CryptoError::InvalidKey(format!(
                    "decoded to {len} bytes; {INVALID_ENCODING}"
                )));
            }
        }
        Err(CryptoError::InvalidKey(INVALID_ENCODING.to_owned()))
    }

    /// Reads a root key file: the key as text (see [`RootKey::from_encoded`])
    /// or exactly 32 raw bytes.
    ///
    /// A 32-byte file made only of hex/base64 characters is taken as (too
    /// short) text, not as raw bytes, so a truncated text key is rejected
    /// rather than silently used.
    pub fn from_file(path: &Path) -> Result<RootKey> {
        let unreadable = |e: std::io::Error| {
            CryptoError::InvalidKey(format!("cannot read key file {}: {e}", path.display()))
        };
        let file = std::fs::File::open(path).map_err(unreadable)?;
        let mut contents = Zeroizing::new(Vec::with_capacity(MAX_KEY_FILE_LEN as usize + 1));
        file.take(MAX_KEY_FILE_LEN + 1)
            .read_to_end(&mut contents)
            .map_err(unreadable)?;
        if contents.len() as u64 > MAX_KEY_FILE_LEN {
            return Err(CryptoError::InvalidKey(format!(
                "key file {} is larger than {MAX_KEY_FILE_LEN} bytes",
                path.display()
            )));
        }
        if contents.len() == KEY_LEN && !looks_like_text(&contents) {
            let mut key = RootKey {
                bytes: [0u8; KEY_LEN],
            };
            key.bytes.copy_from_slice(&contents);
            return Ok(key);
        }
        let text = std::str::from_utf8(&contents).map_err(|_| {
            CryptoError::InvalidKey(format!(
                "key file {} holds neither key text nor exactly 32 raw bytes",
                path.display()
            ))
        })?;
        RootKey::from_encoded(text).map_err(|e| match e {
            CryptoError::InvalidKey(reason) => {
                CryptoError::InvalidKey(format!("key file {}: {reason}", path.display()))
            }
            other => other,
        })
    }

    /// The key as lower-case hex, for writing a dev-mode key file.
    pub fn to_encoded(&self) -> SecretString {
        // Exposed on purpose: the caller asked for the key's text form.
        SecretString::from(hex::encode(self.bytes))
    }

    /// Derives the root key from a passphrase with Argon2id and `params`.
    ///
    /// Deliberately slow (about a second with [`KdfParams::generate`]'s costs)
    /// and memory-hungry: run it once at start-up, in `spawn_blocking` on an
    /// async runtime, never per request.
    pub fn derive_from_passphrase(
        passphrase: &SecretString,
        params: &KdfParams,
    ) -> Result<RootKey> {
        let derived = kdf::derive(passphrase, params)?;
        Ok(RootKey { bytes: *derived })
    }

    /// A key-check value to store next to the data, so a wrong root key is
    /// detected at start-up ([`RootKey::verify`]). Uses a fresh random nonce
    /// on every call.
    pub fn key_check(&self) -> Result<KeyCheck> {
        let nonce = random::nonce()?;
        let ciphertext = aead::seal(&self.bytes, nonce, KEY_CHECK_AAD, KEY_CHECK_CONSTANT)?;
        let mut bytes = Vec::with_capacity(KEY_CHECK_LEN);
        bytes.push(KEY_CHECK_FORMAT);
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&ciphertext);
        Ok(KeyCheck(bytes))
    }

    /// Checks that `check` was made with this root key.
    ///
    /// Fails with [`CryptoError::WrongRootKey`] if it was not (or was altered),
    /// and with [`CryptoError::Malformed`] if the stored bytes cannot be parsed.
    pub fn verify(&self, check: &KeyCheck) -> Result<()> {
        let bytes = &check.0;
        match bytes.first() {
            Some(&KEY_CHECK_FORMAT) => {}
            Some(_) => return Err(CryptoError::Malformed("key check (unknown format version)")),
            None => return Err(CryptoError::Malformed("key check (empty)")),
        }
        if bytes.len() != KEY_CHECK_LEN {
            return Err(CryptoError::Malformed("key check (wrong length)"));
        }
        let (nonce, ciphertext) = split_nonce(&bytes[1..], "key check (wrong length)")?;
        let constant = aead::open(&self.bytes, nonce, KEY_CHECK_AAD, ciphertext)
            .map_err(|_| CryptoError::WrongRootKey)?;
        if constant_time_eq(&constant, KEY_CHECK_CONSTANT) {
            Ok(())
        } else {
            Err(CryptoError::WrongRootKey)
        }
    }

    /// Wraps a tenant KEK for storage, bound to `tenant` and `kek_version`.
    pub fn wrap_kek(&self, tenant: Uuid, kek_version: u32, kek: &Kek) -> Result<WrappedKek> {
        let nonce = random::nonce()?;
        let ciphertext = aead::seal(
            &self.bytes,
            nonce,
            &kek_aad(tenant, kek_version),
            kek.expose(),
        )?;
        let mut bytes = Vec::with_capacity(WRAPPED_KEK_LEN);
        bytes.push(WRAPPED_KEK_FORMAT);
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&ciphertext);
        Ok(WrappedKek(bytes))
    }

    /// Unwraps a tenant KEK.
    ///
    /// Fails closed with [`CryptoError::Decrypt`] if this is the wrong root key,
    /// or `wrapped` was made for another tenant or KEK version, or was altered;
    /// with [`CryptoError::Malformed`] if it cannot be parsed.
    pub fn unwrap_kek(&self, tenant: Uuid, kek_version: u32, wrapped: &WrappedKek) -> Result<Kek> {
        let bytes = &wrapped.0;
        match bytes.first() {
            Some(&WRAPPED_KEK_FORMAT) => {}
            Some(_) => {
                return Err(CryptoError::Malformed(
                    "wrapped KEK (unknown format version)",
                ));
            }
            None => return Err(CryptoError::Malformed("wrapped KEK (empty)")),
        }
        if bytes.len() != WRAPPED_KEK_LEN {
            return Err(CryptoError::Malformed("wrapped KEK (wrong length)"));
        }
        let (nonce, ciphertext) = split_nonce(&bytes[1..], "wrapped KEK (wrong length)")?;
        let kek = aead::open_key(
            &self.bytes,
            nonce,
            &kek_aad(tenant, kek_version),
            ciphertext,
        )?;
        Ok(Kek::from_bytes(&kek))
    }

    /// The checkpoint signing key, derived from this root key (HKDF-SHA256
    /// with the fixed label `strongroom/checkpoint-signing/v1`, giving the
    /// 32-byte Ed25519 seed). Nothing stored in the database takes part, so
    /// a database owner cannot swap the key; the same root key always gives
    /// the same key (and key id). After a root-key rotation the key derived
    /// from the first root key is kept, wrapped ([`DerivedKeys`]).
    pub fn checkpoint_signing_key(&self) -> Result<SigningKey> {
        self.derived_keys()?.checkpoint_signing_key()
    }

    /// The key of request fingerprints (idempotent retries), derived from
    /// this root key like the checkpoint signing key (HKDF-SHA256, label
    /// `strongroom/idempotency-fingerprint/v1`). Never stored.
    pub fn idempotency_key(&self) -> Result<IdempotencyKey> {
        Ok(self.derived_keys()?.idempotency_key())
    }

    /// The secrets derived from this root key: the checkpoint signing seed
    /// and the request-fingerprint key.
    pub fn derived_keys(&self) -> Result<DerivedKeys> {
        Ok(DerivedKeys {
            checkpoint_seed: self.expand(
                CHECKPOINT_SIGNING_LABEL,
                "checkpoint signing key derivation",
            )?,
            idempotency: self.expand(IDEMPOTENCY_LABEL, "idempotency key derivation")?,
        })
    }

    /// This key's public id: 8 bytes of HKDF-SHA256 under a fixed label, as
    /// hex. Reveals nothing of the key; names it in replica reports, audit
    /// events and errors.
    pub fn key_id(&self) -> String {
        match self.expand(KEY_ID_LABEL, "root key id") {
            Ok(okm) => hex::encode(&okm[..8]),
            Err(_) => "unknown".to_owned(),
        }
    }

    /// `keys` wrapped by this root key for storage (root-key rotation keeps
    /// the derived keys of the first root key this way).
    pub fn wrap_derived(&self, keys: &DerivedKeys) -> Result<WrappedDerivedKeys> {
        let nonce = random::nonce()?;
        let mut plain = Zeroizing::new([0u8; 2 * KEY_LEN]);
        plain[..KEY_LEN].copy_from_slice(&keys.checkpoint_seed[..]);
        plain[KEY_LEN..].copy_from_slice(&keys.idempotency[..]);
        let ciphertext = aead::seal(&self.bytes, nonce, DERIVED_AAD, &plain[..])?;
        let mut bytes = Vec::with_capacity(DERIVED_LEN);
        bytes.push(DERIVED_FORMAT);
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&ciphertext);
        Ok(WrappedDerivedKeys(bytes))
    }

    /// Unwraps derived keys stored by [`RootKey::wrap_derived`]; fails with
    /// [`CryptoError::Decrypt`] under another root key.
    pub fn unwrap_derived(&self, wrapped: &WrappedDerivedKeys) -> Result<DerivedKeys> {
        let bytes = &wrapped.0;
        if bytes.first() != Some(&DERIVED_FORMAT) || bytes.len() != DERIVED_LEN {
            return Err(CryptoError::Malformed("wrapped derived keys"));
        }
        let (nonce, ciphertext) = split_nonce(&bytes[1..], "wrapped derived keys")?;
        let plain = aead::open(&self.bytes, nonce, DERIVED_AAD, ciphertext)?;
        if plain.len() != 2 * KEY_LEN {
            return Err(CryptoError::Malformed("wrapped derived keys"));
        }
        let mut keys = DerivedKeys {
            checkpoint_seed: Zeroizing::new([0u8; KEY_LEN]),
            idempotency: Zeroizing::new([0u8; KEY_LEN]),
        };
        keys.checkpoint_seed.copy_from_slice(&plain[..KEY_LEN]);
        keys.idempotency.copy_from_slice(&plain[KEY_LEN..]);
        Ok(keys)
    }

    /// 32 bytes of HKDF-SHA256 (no salt) of this key under `label`.
    fn expand(&self, label: &[u8], what: &'static str) -> Result<Zeroizing<[u8; 32]>> {
        struct Len32;
        impl ring::hkdf::KeyType for Len32 {
            fn len(&self) -> usize {
                32
            }
        }
        let prk = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, &[]).extract(&self.bytes);
        let info = [label];
        let okm = prk
            .expand(&info, Len32)
            .map_err(|_| CryptoError::Malformed(what))?;
        let mut out = Zeroizing::new([0u8; 32]);
        okm.fill(&mut out[..])
            .map_err(|_| CryptoError::Malformed(what))?;
        Ok(out)
    }

    /// Root-key rotation: re-wraps a tenant KEK under `new_root`. The KEK
    /// itself, and so all credential data, is unchanged.
    pub fn rewrap_kek(
        &self,
        new_root: &RootKey,
        tenant: Uuid,
        kek_version: u32,
        wrapped: &WrappedKek,
    ) -> Result<WrappedKek> {
        let kek = self.unwrap_kek(tenant, kek_version, wrapped)?;
        new_root.wrap_kek(tenant, kek_version, &kek)
    }
}

impl fmt::Debug for RootKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RootKey([REDACTED])")
    }
}

/// Associated data of a KEK wrap: binds tenant and KEK version.
fn kek_aad(tenant: Uuid, kek_version: u32) -> Vec<u8> {
    let mut out = Vec::new();
    put_field(&mut out, WRAPPED_KEK_DOMAIN);
    out.push(WRAPPED_KEK_FORMAT);
    out.extend_from_slice(tenant.as_bytes());
    out.extend_from_slice(&kek_version.to_be_bytes());
    out
}

fn split_nonce<'a>(bytes: &'a [u8], what: &'static str) -> Result<([u8; NONCE_LEN], &'a [u8])> {
    let (nonce, rest) = bytes
        .split_first_chunk::<NONCE_LEN>()
        .ok_or(CryptoError::Malformed(what))?;
    Ok((*nonce, rest))
}

/// Whether a 32-byte key file looks like (truncated) key text rather than raw
/// bytes. Random bytes pass this with probability below 10^-18.
fn looks_like_text(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || b"+/=-_ \t\r\n".contains(b))
}

/// The secrets derived from a root key: the checkpoint signing seed and the
/// request-fingerprint key. Zeroised on drop; `Debug` redacts.
pub struct DerivedKeys {
    checkpoint_seed: Zeroizing<[u8; KEY_LEN]>,
    idempotency: Zeroizing<[u8; KEY_LEN]>,
}

impl DerivedKeys {
    /// The checkpoint signing key.
    pub fn checkpoint_signing_key(&self) -> Result<SigningKey> {
        SigningKey::from_seed(&self.checkpoint_seed)
    }

    /// The request-fingerprint key.
    pub fn idempotency_key(&self) -> IdempotencyKey {
        IdempotencyKey::from_okm(&self.idempotency)
    }
}

impl fmt::Debug for DerivedKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DerivedKeys([REDACTED])")
    }
}

/// [`DerivedKeys`] wrapped by a root key. Opaque, versioned bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedDerivedKeys(Vec<u8>);

impl WrappedDerivedKeys {
    /// The stored form.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.clone()
    }

    /// Wraps stored bytes; parsed by [`RootKey::unwrap_derived`].
    pub fn from_bytes(bytes: Vec<u8>) -> WrappedDerivedKeys {
        WrappedDerivedKeys(bytes)
    }
}

impl fmt::Debug for WrappedDerivedKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WrappedDerivedKeys")
            .field("len", &self.0.len())
            .finish()
    }
}

/// The stored key-check value: proof, without revealing the key, of which
/// root key a database was created with.
///
/// Opaque, versioned bytes (first byte = format version). Not secret.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyCheck(Vec<u8>);

impl KeyCheck {
    /// The stored form.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.clone()
    }

    /// Wraps stored bytes; they are parsed by [`RootKey::verify`].
    pub fn from_bytes(bytes: Vec<u8>) -> KeyCheck {
        KeyCheck(bytes)
    }
}

impl fmt::Debug for KeyCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyCheck")
            .field("len", &self.0.len())
            .finish()
    }
}

/// A tenant KEK wrapped by the root key, bound to its tenant and KEK version.
///
/// Opaque, versioned bytes (first byte = format version).
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedKek(Vec<u8>);

impl WrappedKek {
    /// The stored form.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.clone()
    }

    /// Wraps stored bytes; they are parsed by [`RootKey::unwrap_kek`].
    pub fn from_bytes(bytes: Vec<u8>) -> WrappedKek {
        WrappedKek(bytes)
    }
}

impl fmt::Debug for WrappedKek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WrappedKek")
            .field("len", &self.0.len())
            .finish()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn stored_lengths_match_format() {
        let root = RootKey::generate().unwrap();
        assert_eq!(root.key_check().unwrap().to_bytes().len(), KEY_CHECK_LEN);
        let wrapped = root
            .wrap_kek(Uuid::nil(), 1, &Kek::generate().unwrap())
            .unwrap();
        assert_eq!(wrapped.to_bytes().len(), WRAPPED_KEK_LEN);
        assert_eq!(wrapped.to_bytes()[0], WRAPPED_KEK_FORMAT);
    }

    #[test]
    fn derived_keys_survive_a_rewrap_under_another_root() {
        let old = RootKey::generate().unwrap();
        let new = RootKey::generate().unwrap();
        let wrapped = new.wrap_derived(&old.derived_keys().unwrap()).unwrap();
        assert_eq!(wrapped.to_bytes().len(), DERIVED_LEN);
        let kept = new.unwrap_derived(&wrapped).unwrap();
        assert_eq!(
            kept.checkpoint_signing_key().unwrap().key_id(),
            old.checkpoint_signing_key().unwrap().key_id()
        );
        assert_eq!(
            kept.idempotency_key().fingerprint(&[b"x"]),
            old.idempotency_key().unwrap().fingerprint(&[b"x"])
        );
        assert!(
            old.unwrap_derived(&wrapped).is_err(),
            "only the new root opens it"
        );
        assert_ne!(old.key_id(), new.key_id());
        assert_eq!(old.key_id().len(), 16);
        assert!(!format!("{kept:?}").contains(&hex::encode(&kept.idempotency[..])));
    }

    #[test]
    fn raw_key_file_detection() {
        assert!(looks_like_text(&[b'a'; 32]));
        assert!(!looks_like_text(&[0u8; 32]));
    }
}
