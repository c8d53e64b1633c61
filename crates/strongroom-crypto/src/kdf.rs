//! Argon2id derivation of the root key from a passphrase.

use argon2::{Algorithm, Argon2, Params, Version};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::aead::KEY_LEN;
use crate::error::{CryptoError, Result};
use crate::random;

/// Salt length chosen by [`KdfParams::generate`].
const SALT_LEN: usize = 16;
/// Largest memory cost accepted (4 GiB), so corrupted stored parameters cannot
/// make start-up allocate without bound.
const MAX_M_COST_KIB: u32 = 4 * 1024 * 1024;

/// Argon2id salt and cost parameters for deriving the root key from a
/// passphrase.
///
/// Stored next to the data (not secret) so the same passphrase derives the
/// same root key at every start-up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Random salt (at least 8 bytes).
    pub salt: Vec<u8>,
    /// Memory cost in KiB.
    pub m_cost_kib: u32,
    /// Number of passes.
    pub t_cost: u32,
    /// Degree of parallelism.
    pub p_cost: u32,
    /// Argon2 version number (`0x13` = 19 for Argon2 1.3).
    pub version: u32,
}

impl KdfParams {
    /// Fresh parameters: a random 16-byte salt and OWASP-style costs
    /// (64 MiB memory, 3 passes, parallelism 1, Argon2 1.3).
    pub fn generate() -> Result<KdfParams> {
        let mut salt = vec![0u8; SALT_LEN];
        random::fill(&mut salt)?;
        Ok(KdfParams {
            salt,
            m_cost_kib: 64 * 1024,
            t_cost: 3,
            p_cost: 1,
            version: 0x13,
        })
    }
}

impl KdfParams {
    /// Fresh parameters (a random 16-byte salt, parallelism 1, Argon2 1.3)
    /// with the given memory cost (KiB) and passes.
    pub fn generate_with(m_cost_kib: u32, t_cost: u32) -> Result<KdfParams> {
        let mut params = KdfParams::generate()?;
        params.m_cost_kib = m_cost_kib;
        params.t_cost = t_cost;
        Ok(params)
    }
}

/// Runs Argon2id; slow by design (see [`crate::RootKey::derive_from_passphrase`]).
pub(crate) fn derive(
    passphrase: &SecretString,
    params: &KdfParams,
) -> Result<Zeroizing<[u8; KEY_LEN]>> {
    if params.m_cost_kib > MAX_M_COST_KIB {
        return Err(CryptoError::Kdf(format!(
            "memory cost {} KiB is above the maximum of {MAX_M_COST_KIB} KiB",
            params.m_cost_kib
        )));
    }
    let version = Version::try_from(params.version)
        .map_err(|e| CryptoError::Kdf(format!("argon2 version {}: {e}", params.version)))?;
    let argon_params = Params::new(
        params.m_cost_kib,
        params.t_cost,
        params.p_cost,
        Some(KEY_LEN),
    )
    .map_err(|e| CryptoError::Kdf(format!("argon2 parameters: {e}")))?;
    let argon2 = Argon2::new(Algorithm::Argon2id, version, argon_params);
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    argon2
        // The passphrase is exposed only to the KDF.
        .hash_password_into(
            passphrase.expose_secret().as_bytes(),
            &params.salt,
            &mut *key,
        )
        // argon2's errors describe parameters and lengths, never the inputs.
        .map_err(|e| CryptoError::Kdf(e.to_string()))?;
    Ok(key)
}
