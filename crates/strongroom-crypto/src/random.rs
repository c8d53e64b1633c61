//! Randomness from the operating system.

use ring::rand::{SecureRandom, SystemRandom};

use crate::error::{CryptoError, Result};

/// Fills `buf` with random bytes from the operating system.
pub(crate) fn fill(buf: &mut [u8]) -> Result<()> {
    SystemRandom::new().fill(buf).map_err(|_| CryptoError::Rng)
}

/// A fresh random 96-bit AES-GCM nonce.
pub(crate) fn nonce() -> Result<[u8; crate::aead::NONCE_LEN]> {
    let mut nonce = [0u8; crate::aead::NONCE_LEN];
    fill(&mut nonce)?;
    Ok(nonce)
}
