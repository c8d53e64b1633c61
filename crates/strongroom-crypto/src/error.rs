//! The crate's error type.

use thiserror::Error;

/// Everything that can go wrong in `strongroom-crypto`.
///
/// No variant ever carries key material, plaintext or the text of a root key:
/// messages are safe to log.
#[derive(Debug, Error)]
pub enum CryptoError {
    /// The root key does not open this database's key-check value: the server
    /// must refuse to start.
    #[error(
        "the root key does not match this database's key-check value \
         (wrong STRONGROOM_ROOT_KEY or passphrase?)"
    )]
    WrongRootKey,

    /// AEAD decryption failed: the ciphertext was altered, or the key or the
    /// associated data (tenant, environment, credential, version) do not match.
    #[error("decryption failed: ciphertext, key or associated data do not match")]
    Decrypt,

    /// Stored bytes (envelope, wrapped key, key check) cannot be parsed: unknown
    /// format version or wrong length. The string names what was malformed.
    #[error("malformed {0}")]
    Malformed(&'static str),

    /// A root key could not be loaded: wrong length or encoding, unreadable
    /// file. The message never echoes the key text.
    #[error("invalid root key: {0}")]
    InvalidKey(String),

    /// Argon2id key derivation failed, usually because of bad parameters.
    #[error("key derivation failed: {0}")]
    Kdf(String),

    /// A checkpoint signature does not verify with the given public key.
    #[error("the checkpoint signature does not verify")]
    BadSignature,

    /// The passphrase does not open an export file's key check.
    #[error("the passphrase does not open this export (wrong passphrase)")]
    ExportPassphrase,

    /// A chunk of an export file does not authenticate: the file was
    /// changed, its chunks reordered, or it was cut short or extended.
    #[error(
        "the export fails authentication at chunk {chunk}: it was changed, \
         truncated or reordered"
    )]
    ExportAuthentication {
        /// The index of the first chunk that failed.
        chunk: u64,
    },

    /// The operating system's random number generator is unavailable.
    #[error("system randomness is unavailable")]
    Rng,
}

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, CryptoError>;
