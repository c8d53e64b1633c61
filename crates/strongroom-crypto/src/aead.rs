//! AES-256-GCM with `ring`, in the two shapes this crate needs.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use zeroize::Zeroizing;

use crate::error::{CryptoError, Result};

/// Length of every symmetric key in this crate (AES-256).
pub(crate) const KEY_LEN: usize = 32;
/// Length of an AES-GCM nonce (96 bits).
pub(crate) const NONCE_LEN: usize = 12;
/// Length of an AES-GCM tag.
pub(crate) const TAG_LEN: usize = 16;

fn aead_key(key: &[u8; KEY_LEN]) -> Result<LessSafeKey> {
    // AES-256 accepts any 32-byte key; an error here would be a ring bug.
    let unbound = UnboundKey::new(&AES_256_GCM, key).map_err(|_| CryptoError::Decrypt)?;
    Ok(LessSafeKey::new(unbound))
}

/// Encrypts `plaintext`, returning ciphertext followed by the tag.
///
/// The working buffer is allocated at its final size up front, so no copy of
/// the plaintext is left behind by a reallocation.
pub(crate) fn seal(
    key: &[u8; KEY_LEN],
    nonce: [u8; NONCE_LEN],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>> {
    let key = aead_key(key)?;
    let mut buf = Zeroizing::new(Vec::with_capacity(plaintext.len() + TAG_LEN));
    buf.extend_from_slice(plaintext);
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        &mut *buf,
    )
    // ring refuses only inputs beyond AES-GCM's length limit (~64 GiB).
    .map_err(|_| CryptoError::Malformed("plaintext (too long to encrypt)"))?;
    // The buffer now holds ciphertext only; take it out of the zeroising wrapper.
    Ok(std::mem::take(&mut *buf))
}

/// Decrypts `ciphertext_and_tag`; fails closed with [`CryptoError::Decrypt`].
pub(crate) fn open(
    key: &[u8; KEY_LEN],
    nonce: [u8; NONCE_LEN],
    aad: &[u8],
    ciphertext_and_tag: &[u8],
) -> Result<Zeroizing<Vec<u8>>> {
    let key = aead_key(key)?;
    let mut buf = Zeroizing::new(ciphertext_and_tag.to_vec());
    let plaintext_len = key
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut buf,
        )
        .map_err(|_| CryptoError::Decrypt)?
        .len();
    buf.truncate(plaintext_len);
    Ok(buf)
}

/// Decrypts a wrapped 32-byte key; fails closed with [`CryptoError::Decrypt`].
pub(crate) fn open_key(
    key: &[u8; KEY_LEN],
    nonce: [u8; NONCE_LEN],
    aad: &[u8],
    wrapped: &[u8],
) -> Result<Zeroizing<[u8; KEY_LEN]>> {
    let plaintext = open(key, nonce, aad, wrapped)?;
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    if plaintext.len() != KEY_LEN {
        return Err(CryptoError::Decrypt);
    }
    out.copy_from_slice(&plaintext);
    Ok(out)
}

/// Appends a length-prefixed field (u64 big-endian length, then the bytes).
pub(crate) fn put_field(out: &mut Vec<u8>, field: &[u8]) {
    out.extend_from_slice(&(field.len() as u64).to_be_bytes());
    out.extend_from_slice(field);
}
