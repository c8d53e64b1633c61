//! Signed checkpoints of an audit chain head.
//!
//! A checkpoint states "chain C had event `sequence` with hash `hash` at
//! `signed_at`", signed with the deployment's Ed25519 key (`ring`). Kept
//! outside the database, it makes a truncated chain tail detectable: a
//! database owner can delete the newest events and rewrite the stored head,
//! but cannot forge a checkpoint over the shorter chain that verifies with a
//! public key the verifier pinned.
//!
//! The signature covers [`Checkpoint::canonical_bytes`], a versioned,
//! length-prefixed encoding, so no two different checkpoints encode alike.
//! The signing key is derived from the root key
//! ([`RootKey::checkpoint_signing_key`](crate::RootKey::checkpoint_signing_key))
//! and never stored.

use std::fmt;

use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use uuid::Uuid;

use crate::aead::put_field;
use crate::error::{CryptoError, Result};

/// Current format version of [`Checkpoint::canonical_bytes`].
pub const CHECKPOINT_FORMAT: u8 = 1;
/// Domain tag of the signed encoding.
const CHECKPOINT_DOMAIN: &[u8] = b"strongroom/checkpoint/v1";
/// Length of an Ed25519 public key.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// Which audit chain a checkpoint is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChainRef {
    /// A tenant's chain.
    Tenant(Uuid),
    /// The platform-level chain (events with no tenant).
    Platform,
}

/// The signed statement: the head of one chain at one time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The chain.
    pub chain: ChainRef,
    /// Sequence of the head event.
    pub sequence: u64,
    /// Hash of the head event.
    pub hash: [u8; 32],
    /// When it was signed, microseconds since the Unix epoch.
    pub signed_at_micros: i64,
    /// Id of the signing key.
    pub key_id: String,
}

impl Checkpoint {
    /// The bytes the signature covers: domain tag, format version, chain
    /// kind and id, sequence, hash, time and key id, each field
    /// length-prefixed.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(160);
        put_field(&mut out, CHECKPOINT_DOMAIN);
        out.push(CHECKPOINT_FORMAT);
        match self.chain {
            ChainRef::Tenant(id) => {
                out.push(b't');
                put_field(&mut out, id.as_bytes());
            }
            ChainRef::Platform => {
                out.push(b'p');
                put_field(&mut out, &[]);
            }
        }
        out.extend_from_slice(&self.sequence.to_be_bytes());
        put_field(&mut out, &self.hash);
        out.extend_from_slice(&self.signed_at_micros.to_be_bytes());
        put_field(&mut out, self.key_id.as_bytes());
        out
    }

    /// Checks `signature` over this checkpoint with the Ed25519
    /// `public_key`. Fails with [`CryptoError::BadSignature`] if it does not
    /// verify (altered checkpoint, wrong key, malformed signature).
    pub fn verify(&self, public_key: &[u8], signature: &[u8]) -> Result<()> {
        UnparsedPublicKey::new(&ED25519, public_key)
            .verify(&self.canonical_bytes(), signature)
            .map_err(|_| CryptoError::BadSignature)
    }
}

/// The deployment's checkpoint signing key (Ed25519). The private half is
/// held by `ring` and never leaves it; `Debug` shows only the key id.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    key_id: String,
}

impl SigningKey {
    /// The key of a 32-byte Ed25519 seed.
    pub(crate) fn from_seed(seed: &[u8; 32]) -> Result<SigningKey> {
        let pair = Ed25519KeyPair::from_seed_unchecked(seed)
            .map_err(|_| CryptoError::Malformed("checkpoint signing key"))?;
        let key_id = key_id_of(pair.public_key().as_ref());
        Ok(SigningKey { pair, key_id })
    }

    /// The key id: `ed25519:` and the first 8 bytes of the SHA-256 of the
    /// public key, in hex. Derived from the public key, so a verifier can
    /// recompute it.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The public key (32 bytes).
    pub fn public_key(&self) -> [u8; PUBLIC_KEY_LEN] {
        let mut out = [0u8; PUBLIC_KEY_LEN];
        out.copy_from_slice(self.pair.public_key().as_ref());
        out
    }

    /// Signs the head of `chain` (`sequence`, `hash`) as of
    /// `signed_at_micros` with this key.
    pub fn sign(
        &self,
        chain: ChainRef,
        sequence: u64,
        hash: [u8; 32],
        signed_at_micros: i64,
    ) -> SignedCheckpoint {
        let checkpoint = Checkpoint {
            chain,
            sequence,
            hash,
            signed_at_micros,
            key_id: self.key_id.clone(),
        };
        let mut signature = [0u8; SIGNATURE_LEN];
        signature.copy_from_slice(self.pair.sign(&checkpoint.canonical_bytes()).as_ref());
        SignedCheckpoint {
            checkpoint,
            signature,
        }
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// The key id of an Ed25519 public key (see [`SigningKey::key_id`]).
pub fn key_id_of(public_key: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, public_key);
    format!("ed25519:{}", hex::encode(&digest.as_ref()[..8]))
}

/// A checkpoint with its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    /// What was signed.
    pub checkpoint: Checkpoint,
    /// Ed25519 signature over [`Checkpoint::canonical_bytes`].
    pub signature: [u8; SIGNATURE_LEN],
}

impl SignedCheckpoint {
    /// Verifies the signature with `public_key`.
    pub fn verify(&self, public_key: &[u8]) -> Result<()> {
        self.checkpoint.verify(public_key, &self.signature)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::RootKey;
    use secrecy::ExposeSecret;

    #[test]
    fn signatures_verify_and_any_change_is_refused() {
        let key = RootKey::generate()
            .unwrap()
            .checkpoint_signing_key()
            .unwrap();
        let tenant = Uuid::now_v7();
        let signed = key.sign(
            ChainRef::Tenant(tenant),
            7,
            [3u8; 32],
            1_700_000_000_000_000,
        );
        let public = key.public_key();
        signed.verify(&public).unwrap();
        assert_eq!(key_id_of(&public), key.key_id());

        let mut changed = signed.clone();
        changed.checkpoint.sequence = 6;
        assert!(changed.verify(&public).is_err());
        let mut changed = signed.clone();
        changed.checkpoint.hash[0] ^= 1;
        assert!(changed.verify(&public).is_err());
        let mut changed = signed.clone();
        changed.checkpoint.chain = ChainRef::Platform;
        assert!(changed.verify(&public).is_err());
        let mut changed = signed.clone();
        changed.checkpoint.signed_at_micros += 1;
        assert!(changed.verify(&public).is_err());
        let mut changed = signed.clone();
        changed.signature[10] ^= 1;
        assert!(changed.verify(&public).is_err());
        let other = RootKey::generate()
            .unwrap()
            .checkpoint_signing_key()
            .unwrap();
        assert!(signed.verify(&other.public_key()).is_err());
    }

    #[test]
    fn the_key_is_derived_from_the_root_key_alone() {
        let root = RootKey::generate().unwrap();
        let key = root.checkpoint_signing_key().unwrap();
        let again = RootKey::from_encoded(root.to_encoded().expose_secret())
            .unwrap()
            .checkpoint_signing_key()
            .unwrap();
        assert_eq!(again.public_key(), key.public_key());
        assert_eq!(again.key_id(), key.key_id());
        let other = RootKey::generate()
            .unwrap()
            .checkpoint_signing_key()
            .unwrap();
        assert_ne!(other.public_key(), key.public_key());
        assert_eq!(
            format!("{key:?}"),
            format!("SigningKey {{ key_id: {:?}, .. }}", key.key_id())
        );
    }
}
