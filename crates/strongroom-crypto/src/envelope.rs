//! The sealed form of one credential version, and its stored format.

use std::fmt;

use crate::aad::Aad;
use crate::aead::{KEY_LEN, NONCE_LEN, TAG_LEN, put_field};
use crate::error::{CryptoError, Result};

/// Stored format `EnvelopeV1`:
///
/// | bytes | field |
/// |---|---|
/// | 1 | format version, `1` |
/// | 4 | KEK version, u32 big-endian |
/// | 12 | nonce of the data-key wrap |
/// | 48 | data key wrapped by the KEK (32 bytes + 16-byte tag) |
/// | 12 | nonce of the payload |
/// | ≥ 16 | payload ciphertext + 16-byte tag |
mod v1 {
    use super::{KEY_LEN, NONCE_LEN, TAG_LEN};

    pub(super) const FORMAT: u8 = 1;
    pub(super) const WRAPPED_DEK_LEN: usize = KEY_LEN + TAG_LEN;
    pub(super) const HEADER_LEN: usize = 1 + 4 + NONCE_LEN + WRAPPED_DEK_LEN + NONCE_LEN;
    pub(super) const MIN_LEN: usize = HEADER_LEN + TAG_LEN;

    pub(super) const DEK_DOMAIN: &[u8] = b"strongroom/envelope/v1/data-key";
    pub(super) const PAYLOAD_DOMAIN: &[u8] = b"strongroom/envelope/v1/payload";
}

/// One credential value, sealed under a fresh data key that is itself wrapped
/// by a tenant [`Kek`](crate::Kek).
///
/// Holds only ciphertext; still, `Debug` shows only the KEK version and
/// lengths. Convert to and from the stored format with [`Envelope::to_bytes`]
/// and [`Envelope::from_bytes`].
#[derive(Clone, PartialEq, Eq)]
pub struct Envelope {
    pub(crate) kek_version: u32,
    pub(crate) dek_nonce: [u8; NONCE_LEN],
    pub(crate) wrapped_dek: [u8; v1::WRAPPED_DEK_LEN],
    pub(crate) payload_nonce: [u8; NONCE_LEN],
    /// Payload ciphertext followed by its tag.
    pub(crate) payload: Vec<u8>,
}

impl Envelope {
    /// The version of the tenant KEK whose key wraps this envelope's data key:
    /// the caller picks that KEK to open it.
    pub fn kek_version(&self) -> u32 {
        self.kek_version
    }

    /// The payload ciphertext (with its tag). Re-wrapping under a new KEK
    /// leaves it unchanged.
    pub fn payload_ciphertext(&self) -> &[u8] {
        &self.payload
    }

    /// Encodes the envelope in the stored format (`EnvelopeV1`).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(v1::HEADER_LEN + self.payload.len());
        out.push(v1::FORMAT);
        out.extend_from_slice(&self.kek_version.to_be_bytes());
        out.extend_from_slice(&self.dek_nonce);
        out.extend_from_slice(&self.wrapped_dek);
        out.extend_from_slice(&self.payload_nonce);
        out.extend_from_slice(&self.payload);
        out
    }

    /// Parses the stored format.
    ///
    /// Fails with [`CryptoError::Malformed`] on an unknown format version or a
    /// wrong length. Parsing authenticates nothing: tampering is detected by
    /// [`Kek::open`](crate::Kek::open).
    pub fn from_bytes(bytes: &[u8]) -> Result<Envelope> {
        let (&format, rest) = bytes
            .split_first()
            .ok_or(CryptoError::Malformed("envelope (empty)"))?;
        if format != v1::FORMAT {
            return Err(CryptoError::Malformed("envelope (unknown format version)"));
        }
        if bytes.len() < v1::MIN_LEN {
            return Err(CryptoError::Malformed("envelope (too short)"));
        }
        let (kek_version, rest) = split_array::<4>(rest)?;
        let (dek_nonce, rest) = split_array::<NONCE_LEN>(rest)?;
        let (wrapped_dek, rest) = split_array::<{ v1::WRAPPED_DEK_LEN }>(rest)?;
        let (payload_nonce, payload) = split_array::<NONCE_LEN>(rest)?;
        Ok(Envelope {
            kek_version: u32::from_be_bytes(kek_version),
            dek_nonce,
            wrapped_dek,
            payload_nonce,
            payload: payload.to_vec(),
        })
    }

    /// Associated data of the data-key wrap: binds the format version, the KEK
    /// version and the credential's place.
    pub(crate) fn dek_aad(kek_version: u32, aad: &Aad<'_>) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + v1::DEK_DOMAIN.len() + 1 + 4 + aad.encoded_len());
        put_field(&mut out, v1::DEK_DOMAIN);
        out.push(v1::FORMAT);
        out.extend_from_slice(&kek_version.to_be_bytes());
        aad.write_to(&mut out);
        out
    }

    /// Associated data of the payload: binds the format version and the
    /// credential's place.
    ///
    /// The KEK version is deliberately not part of it: tenant-key rotation
    /// changes the KEK version while keeping the payload ciphertext. The payload
    /// is still tied to its KEK version through its data key, which is unique
    /// to this payload and whose wrap binds the KEK version.
    pub(crate) fn payload_aad(aad: &Aad<'_>) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + v1::PAYLOAD_DOMAIN.len() + 1 + aad.encoded_len());
        put_field(&mut out, v1::PAYLOAD_DOMAIN);
        out.push(v1::FORMAT);
        aad.write_to(&mut out);
        out
    }
}

fn split_array<const N: usize>(bytes: &[u8]) -> Result<([u8; N], &[u8])> {
    let (head, rest) = bytes
        .split_first_chunk::<N>()
        .ok_or(CryptoError::Malformed("envelope (too short)"))?;
    Ok((*head, rest))
}

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Envelope")
            .field("kek_version", &self.kek_version)
            .field("payload_len", &self.payload.len())
            .finish_non_exhaustive()
    }
}
