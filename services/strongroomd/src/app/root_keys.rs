//! The root keys at start-up: the configured key (or one derived from a
//! passphrase with the parameters stored in the database), the next key of
//! a rotation, and their check against the database's key check.

use secrecy::SecretString;
use strongroom_core::store::{Store, meta};
use strongroom_crypto::{CryptoError, KdfParams, KeyCheck, RootKey};

use super::StartError;
use crate::config::{NextRootKey, RootKeySource};

fn key_error(e: CryptoError) -> StartError {
    StartError::RootKey(e.to_string())
}

/// The root keys a server holds: the configured one, the next one of a
/// rotation, which of them the database's key check matches, and the
/// derived keys in use.
pub struct RootKeys {
    /// `root_key.*`'s key.
    pub current: RootKey,
    /// `root_key.next_file`'s key (or `STRONGROOM_NEXT_ROOT_KEY`).
    pub next: Option<RootKey>,
    /// Whether the key check matches the next key (its rotation completed).
    pub check_is_next: bool,
    /// The derived keys kept across rotations, if one happened.
    pub derived: Option<strongroom_crypto::DerivedKeys>,
}

/// Reads the configured root key (deriving it from a passphrase if so
/// configured, with the parameters stored in the database).
async fn read_root_key(source: &RootKeySource, store: &dyn Store) -> Result<RootKey, StartError> {
    let key = match source {
        RootKeySource::Env => {
            let text = SecretString::from(std::env::var("STRONGROOM_ROOT_KEY").unwrap_or_default());
            RootKey::from_encoded(secrecy::ExposeSecret::expose_secret(&text)).map_err(key_error)?
        }
        RootKeySource::File(path) => RootKey::from_file(path).map_err(key_error)?,
        RootKeySource::PassphraseEnv | RootKeySource::PassphraseFile(_) => {
            let passphrase = match source {
                RootKeySource::PassphraseFile(path) => SecretString::from(
                    std::fs::read_to_string(path)
                        .map_err(|e| {
                            StartError::RootKey(format!("cannot read {}: {e}", path.display()))
                        })?
                        .trim_end_matches(['\r', '\n'])
                        .to_owned(),
                ),
                _ => SecretString::from(
                    std::env::var("STRONGROOM_ROOT_PASSPHRASE").unwrap_or_default(),
                ),
            };
            let params = match store
                .get_meta(meta::KDF_PARAMS)
                .await
                .map_err(|e| StartError::Database(e.to_string()))?
            {
                Some(bytes) => params_from_bytes(&bytes)?,
                None => {
                    let params = KdfParams::generate().map_err(key_error)?;
                    let bytes = params_to_bytes(&params)?;
                    store
                        .put_meta_if_absent(meta::KDF_PARAMS, &bytes)
                        .await
                        .map_err(|e| StartError::Database(e.to_string()))?;
                    // Another replica may have stored its parameters first.
                    let stored = store
                        .get_meta(meta::KDF_PARAMS)
                        .await
                        .map_err(|e| StartError::Database(e.to_string()))?
                        .ok_or_else(|| StartError::Database("KDF parameters vanished".into()))?;
                    params_from_bytes(&stored)?
                }
            };
            // Argon2id runs once, off the async runtime.
            tokio::task::spawn_blocking(move || {
                RootKey::derive_from_passphrase(&passphrase, &params)
            })
            .await
            .map_err(|e| StartError::RootKey(format!("derivation task failed: {e}")))?
            .map_err(key_error)?
        }
    };
    Ok(key)
}

/// Reads the next root key of a rotation.
fn read_next_root_key(source: &NextRootKey) -> Result<RootKey, StartError> {
    let key = match source {
        NextRootKey::Env => {
            let text =
                SecretString::from(std::env::var("STRONGROOM_NEXT_ROOT_KEY").unwrap_or_default());
            RootKey::from_encoded(secrecy::ExposeSecret::expose_secret(&text))
        }
        NextRootKey::File(path) => RootKey::from_file(path),
    };
    key.map_err(|e| StartError::RootKey(format!("next root key: {e}")))
}

/// Loads the root key and checks it against the database's key-check value
/// (stored on first start). A wrong key refuses start-up.
pub async fn load_root_key(
    source: &RootKeySource,
    store: &dyn Store,
) -> Result<RootKey, StartError> {
    Ok(load_root_keys(source, None, store).await?.current)
}

/// Loads the root key and, for a rotation, the next one, and checks them
/// against the database's key-check value (stored on first start): one of
/// them must match it, or start-up is refused (after a rotation, the old
/// key alone no longer starts a server). Then the derived keys kept by a
/// rotation are unwrapped with whichever key opens them.
pub async fn load_root_keys(
    source: &RootKeySource,
    next: Option<&NextRootKey>,
    store: &dyn Store,
) -> Result<RootKeys, StartError> {
    let key = read_root_key(source, store).await?;
    let next = next.map(read_next_root_key).transpose()?;
    let check_is_next = match store
        .get_meta(meta::KEY_CHECK)
        .await
        .map_err(|e| StartError::Database(e.to_string()))?
    {
        Some(bytes) => matches_check(&key, next.as_ref(), &KeyCheck::from_bytes(bytes))?,
        None => {
            let check = key.key_check().map_err(key_error)?;
            let stored = store
                .put_meta_if_absent(meta::KEY_CHECK, &check.to_bytes())
                .await
                .map_err(|e| StartError::Database(e.to_string()))?;
            if stored {
                false
            } else {
                // Another replica stored one first: ours must match it.
                let bytes = store
                    .get_meta(meta::KEY_CHECK)
                    .await
                    .map_err(|e| StartError::Database(e.to_string()))?
                    .unwrap_or_default();
                matches_check(&key, next.as_ref(), &KeyCheck::from_bytes(bytes))?
            }
        }
    };
    refuse_unfinished_rotation(&key, next.as_ref(), store).await?;
    let derived = match store
        .get_meta(strongroom_core::keys::DERIVED_KEYS)
        .await
        .map_err(|e| StartError::Database(e.to_string()))?
    {
        Some(bytes) => {
            let wrapped = strongroom_crypto::WrappedDerivedKeys::from_bytes(bytes);
            let opened = key.unwrap_derived(&wrapped).or_else(|e| match &next {
                Some(next) => next.unwrap_derived(&wrapped),
                None => Err(e),
            });
            Some(opened.map_err(|e| {
                StartError::RootKey(format!(
                    "the stored derived keys open with no configured root key: {e}"
                ))
            })?)
        }
        None => None,
    };
    Ok(RootKeys {
        current: key,
        next,
        check_is_next,
        derived,
    })
}

/// Refuses start-up while a root-key rotation is unfinished (its state in
/// server metadata not yet done) and neither configured key is its target:
/// such a server would wrap new KEKs by a key being retired.
async fn refuse_unfinished_rotation(
    key: &RootKey,
    next: Option<&RootKey>,
    store: &dyn Store,
) -> Result<(), StartError> {
    let Some(bytes) = store
        .get_meta(strongroom_core::keys::ROOT_ROTATION)
        .await
        .map_err(|e| StartError::Database(e.to_string()))?
    else {
        return Ok(());
    };
    let state: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|_| StartError::RootKey("corrupt root-key rotation state".to_owned()))?;
    let done = state.get("done").and_then(serde_json::Value::as_bool);
    let to = state.get("to").and_then(serde_json::Value::as_str);
    match (done, to) {
        (Some(true), _) => Ok(()),
        (Some(false), Some(to)) => {
            if key.key_id() == to || next.is_some_and(|n| n.key_id() == to) {
                Ok(())
            } else {
                Err(StartError::RootKey(format!(
                    "a root-key rotation to {to} is unfinished and this server does not hold \
                     that key: configure it as root_key.next_file (or finish the rotation) first"
                )))
            }
        }
        _ => Err(StartError::RootKey(
            "corrupt root-key rotation state".to_owned(),
        )),
    }
}

/// Whether the key check matches `next` rather than `key`; refused if it
/// matches neither.
fn matches_check(
    key: &RootKey,
    next: Option<&RootKey>,
    check: &KeyCheck,
) -> Result<bool, StartError> {
    match key.verify(check) {
        Ok(()) => Ok(false),
        Err(e) => match next {
            Some(next) if next.verify(check).is_ok() => Ok(true),
            Some(_) => Err(StartError::RootKey(format!(
                "{e} (neither root_key nor root_key.next_file matches the database's key check)"
            ))),
            None => Err(key_error(e)),
        },
    }
}

fn params_to_bytes(params: &KdfParams) -> Result<Vec<u8>, StartError> {
    serde_json::to_vec(params).map_err(|e| StartError::RootKey(format!("KDF parameters: {e}")))
}

fn params_from_bytes(bytes: &[u8]) -> Result<KdfParams, StartError> {
    serde_json::from_slice(bytes)
        .map_err(|e| StartError::RootKey(format!("stored KDF parameters: {e}")))
}
