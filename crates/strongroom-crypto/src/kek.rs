//! Tenant key-encryption keys and envelope encryption.

use std::fmt;

use zeroize::{ZeroizeOnDrop, Zeroizing};

use crate::aad::Aad;
use crate::aead::{self, KEY_LEN};
use crate::envelope::Envelope;
use crate::error::{CryptoError, Result};
use crate::random;

/// A tenant's key-encryption key (one per tenant and KEK version).
///
/// It wraps the data keys of the tenant's credential versions. It is stored
/// only wrapped by the root key ([`RootKey::wrap_kek`](crate::RootKey::wrap_kek)).
/// Zeroised on drop, clones included; `Debug` prints `Kek([REDACTED])`.
#[derive(Clone, ZeroizeOnDrop)]
pub struct Kek {
    bytes: [u8; KEY_LEN],
}

impl Kek {
    /// A new random KEK.
    pub fn generate() -> Result<Kek> {
        let mut kek = Kek {
            bytes: [0u8; KEY_LEN],
        };
        random::fill(&mut kek.bytes)?;
        Ok(kek)
    }

    /// Builds a KEK from its raw bytes (after unwrapping).
    pub(crate) fn from_bytes(bytes: &[u8; KEY_LEN]) -> Kek {
        Kek { bytes: *bytes }
    }

    /// The raw key bytes, for wrapping by the root key only.
    pub(crate) fn expose(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }

    /// Encrypts one credential value.
    ///
    /// A fresh random 32-byte data key encrypts `plaintext`; this KEK wraps the
    /// data key. Both use AES-256-GCM with fresh random nonces, and both bind
    /// `aad`; the data-key wrap also binds `kek_version`. Sealing the same
    /// plaintext twice gives different envelopes.
    pub fn seal(&self, kek_version: u32, aad: &Aad<'_>, plaintext: &[u8]) -> Result<Envelope> {
        let mut dek = Zeroizing::new([0u8; KEY_LEN]);
        random::fill(&mut *dek)?;
        let payload_nonce = random::nonce()?;
        let payload = aead::seal(&dek, payload_nonce, &Envelope::payload_aad(aad), plaintext)?;
        self.envelope_with_dek(&dek, kek_version, aad, payload_nonce, payload)
    }

    /// Decrypts an envelope sealed by this KEK for `aad`.
    ///
    /// Fails closed with [`CryptoError::Decrypt`] if anything does not match:
    /// a wrong KEK, a different tenant, environment, credential or version in
    /// `aad`, or any altered byte of the envelope. Never returns unauthenticated
    /// bytes.
    pub fn open(&self, aad: &Aad<'_>, envelope: &Envelope) -> Result<Zeroizing<Vec<u8>>> {
        let dek = self.unwrap_dek(aad, envelope)?;
        aead::open(
            &dek,
            envelope.payload_nonce,
            &Envelope::payload_aad(aad),
            &envelope.payload,
        )
    }

    /// Tenant-key rotation: re-wraps the envelope's data key under `new_kek`
    /// (as KEK version `new_kek_version`) without touching the payload
    /// ciphertext.
    ///
    /// Fails with [`CryptoError::Decrypt`] if this KEK or `aad` does not open
    /// the envelope's data key. The payload itself is not decrypted here.
    pub fn rewrap(
        &self,
        new_kek: &Kek,
        new_kek_version: u32,
        aad: &Aad<'_>,
        envelope: &Envelope,
    ) -> Result<Envelope> {
        let dek = self.unwrap_dek(aad, envelope)?;
        new_kek.envelope_with_dek(
            &dek,
            new_kek_version,
            aad,
            envelope.payload_nonce,
            envelope.payload.clone(),
        )
    }

    fn unwrap_dek(&self, aad: &Aad<'_>, envelope: &Envelope) -> Result<Zeroizing<[u8; KEY_LEN]>> {
        aead::open_key(
            &self.bytes,
            envelope.dek_nonce,
            &Envelope::dek_aad(envelope.kek_version, aad),
            &envelope.wrapped_dek,
        )
    }

    fn envelope_with_dek(
        &self,
        dek: &[u8; KEY_LEN],
        kek_version: u32,
        aad: &Aad<'_>,
        payload_nonce: [u8; aead::NONCE_LEN],
        payload: Vec<u8>,
    ) -> Result<Envelope> {
        let dek_nonce = random::nonce()?;
        let wrapped = aead::seal(
            &self.bytes,
            dek_nonce,
            &Envelope::dek_aad(kek_version, aad),
            dek,
        )?;
        let wrapped_dek = wrapped
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::Malformed("wrapped data key (wrong length)"))?;
        Ok(Envelope {
            kek_version,
            dek_nonce,
            wrapped_dek,
            payload_nonce,
            payload,
        })
    }
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Kek([REDACTED])")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let bytes: [u8; KEY_LEN] = std::array::from_fn(|i| 0xa0 + i as u8);
        let kek = Kek::from_bytes(&bytes);
        let shown = format!("{kek:?} {:?} {kek:#?}", kek.clone());
        assert_eq!(format!("{kek:?}"), "Kek([REDACTED])");
        assert!(!shown.contains(&hex::encode(bytes)));
        assert!(!shown.contains(&hex::encode_upper(bytes)));
        assert!(!shown.contains("160, 161"), "decimal bytes leaked: {shown}");
    }
}
