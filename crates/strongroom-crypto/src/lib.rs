//! Encryption at rest for strongroom.
//!
//! The key hierarchy (SPEC §4):
//!
//! * a [`RootKey`] (32 bytes, from `STRONGROOM_ROOT_KEY`, a key file, or
//!   derived once at start-up from a passphrase with Argon2id) wraps
//! * one [`Kek`] per tenant and KEK version (stored as a [`WrappedKek`]), which
//!   wraps
//! * a fresh random data key per sealed credential version; the data key
//!   encrypts the value. The result is an [`Envelope`].
//!
//! Signed checkpoints of audit chain heads use an Ed25519 [`SigningKey`],
//! stored wrapped by the root key.
//!
//! Everything else is AES-256-GCM from `ring` with random 96-bit nonces. Every
//! ciphertext is bound by its associated data to where it belongs (tenant,
//! environment, credential id, version for an envelope; tenant and KEK version
//! for a wrapped KEK), so a ciphertext copied elsewhere fails to decrypt.
//!
//! Security promises of this crate:
//!
//! * decryption fails closed: any tampering, wrong key or wrong associated data
//!   yields [`CryptoError::Decrypt`] (or [`CryptoError::Malformed`] when the
//!   bytes cannot even be parsed), never garbage plaintext;
//! * key material is zeroised on drop and `Debug` never prints it; errors never
//!   carry key or plaintext material;
//! * stored formats start with a format version byte so they can evolve.
//!
//! [`RootKey::derive_from_passphrase`] is deliberately slow (Argon2id). This
//! crate has no async runtime: callers on an async runtime must run it in
//! `spawn_blocking`, once, at start-up.

#![deny(clippy::unwrap_used, clippy::expect_used)]

mod aad;
mod aead;
mod checkpoint;
mod envelope;
mod error;
mod export;
mod idempotency;
mod kdf;
mod kek;
mod random;
mod root_key;
pub mod webhook;

pub use aad::Aad;
pub use checkpoint::{
    CHECKPOINT_FORMAT, ChainRef, Checkpoint, PUBLIC_KEY_LEN, SIGNATURE_LEN, SignedCheckpoint,
    SigningKey, key_id_of,
};
pub use envelope::Envelope;
pub use error::{CryptoError, Result};
pub use export::{
    EXPORT_CHUNK_SIZE, EXPORT_FORMAT, EXPORT_MAGIC, ExportFileHeader, ExportKdf, ExportSealer,
    OpenedExport, export_digest, open_sealed_file, read_sealed_header,
};
pub use idempotency::{FINGERPRINT_LEN, IdempotencyKey};
pub use kdf::KdfParams;
pub use kek::Kek;
pub use root_key::{DerivedKeys, KeyCheck, RootKey, WrappedDerivedKeys, WrappedKek};

/// Compares two byte strings without an early exit on the first difference.
///
/// Use it for secret values (tokens, key-check constants, MACs). The running
/// time depends on the lengths only, never on the contents; the lengths are
/// not treated as secret.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let difference = a
        .iter()
        .zip(b)
        // black_box keeps the optimiser from turning the fold into an early exit.
        .fold(0u8, |acc, (x, y)| std::hint::black_box(acc | (x ^ y)));
    difference == 0
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn constant_time_eq_compares_contents_and_lengths() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"\x80bc", b"abc"));
    }
}
