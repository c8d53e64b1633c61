//! The keyring: the root key and the tenant keys (KEKs) it unwraps, kept in
//! memory for the credential values they seal and open.
//!
//! Promises:
//! - an unwrapped KEK lives only here, in zeroizing memory (dropped with its
//!   last `Arc`), and never in plaintext anywhere else;
//! - a tenant's keys, or one KEK version, can be evicted at once (a shredded
//!   tenant's keys must be forgotten, a retired version need not be kept);
//!   an unwrap that started before an eviction does not put its keys back;
//! - during a root-key rotation a server holds two root keys (the current
//!   one and `root_key.next_file`'s) and opens a KEK wrapped by either, so
//!   no reveal fails while KEKs are being re-wrapped; new KEKs are wrapped
//!   by the next key once the rotation has started;
//! - the derived keys (checkpoint signing, request fingerprints) stay those
//!   of the first root key across rotations (kept wrapped, see
//!   `root_rotation.rs`).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use strongroom_core::credential::{Credential, StoredVersion};
use strongroom_core::ids::TenantId;
use strongroom_core::scope::TenantScope;
use strongroom_core::tenant::WrappedKekRecord;
use strongroom_core::value::CredentialValue;
use strongroom_core::{Error, Precondition, Result};
use strongroom_crypto::{
    Aad, DerivedKeys, Envelope, FINGERPRINT_LEN, IdempotencyKey, Kek, RootKey, SigningKey,
    WrappedKek,
};

use crate::Engine;

/// A crypto failure as an internal error. The message names no key or
/// plaintext; it is logged server-side only.
pub(crate) fn crypto_error(e: strongroom_crypto::CryptoError) -> Error {
    Error::internal(format!("crypto: {e}"))
}

/// Unwrapped KEKs by tenant and KEK version.
type HeldKeys = RwLock<HashMap<(TenantId, u32), Arc<Kek>>>;

/// The root key and the unwrapped tenant KEKs, by tenant and KEK version.
pub(crate) struct Keyring {
    root: Arc<RootKey>,
    /// The other root key, during a root-key rotation (set once, while the
    /// engine is built).
    next: OnceLock<Arc<RootKey>>,
    /// Whether new KEKs are wrapped by `next` (the rotation started).
    wrap_next: AtomicBool,
    /// The derived keys of the root key itself.
    own: Option<DerivedKeys>,
    /// The derived keys kept across rotations, when stored (set once, while
    /// the engine is built); used instead of `own`.
    kept: OnceLock<(DerivedKeys, IdempotencyKey)>,
    /// The request-fingerprint key of idempotent retries, derived from the
    /// root key (`None` only if the derivation failed, which it cannot).
    idempotency: Option<IdempotencyKey>,
    keys: Arc<HeldKeys>,
    /// Counts evictions, so an unwrap that raced with one is not kept.
    evictions: Arc<AtomicU64>,
}

/// Evicts KEK versions from a keyring's held keys, from outside it (the
/// change listener, on another server's retirement notice).
#[derive(Clone)]
pub(crate) struct KeyEvictor {
    keys: Arc<HeldKeys>,
    evictions: Arc<AtomicU64>,
}

impl KeyEvictor {
    /// Forgets KEK `version` of `tenant` (retired by a key rotation).
    pub(crate) fn evict_version(&self, tenant: TenantId, version: u32) {
        if let Ok(mut keys) = self.keys.write() {
            self.evictions.fetch_add(1, Ordering::SeqCst);
            keys.remove(&(tenant, version));
        }
    }
}

impl Keyring {
    /// A keyring unwrapping with `root`, holding no tenant key yet.
    pub(crate) fn new(root: Arc<RootKey>) -> Self {
        let derived = root.derived_keys().ok();
        Self {
            idempotency: derived.as_ref().map(DerivedKeys::idempotency_key),
            own: derived,
            kept: OnceLock::new(),
            root,
            next: OnceLock::new(),
            wrap_next: AtomicBool::new(false),
            keys: Arc::new(RwLock::new(HashMap::new())),
            evictions: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Adds the other root key of a rotation; `wrap_next`: new KEKs are
    /// wrapped by it from the start.
    pub(crate) fn set_next(&self, next: Arc<RootKey>, wrap_next: bool) {
        if self.next.set(next).is_ok() {
            self.wrap_next.store(wrap_next, Ordering::SeqCst);
        }
    }

    /// The other root key of a rotation, if held.
    pub(crate) fn next(&self) -> Option<&Arc<RootKey>> {
        self.next.get()
    }

    /// Uses `derived` (kept across rotations) instead of the root key's own.
    pub(crate) fn set_derived(&self, derived: DerivedKeys) {
        let idempotency = derived.idempotency_key();
        let _ = self.kept.set((derived, idempotency));
    }

    /// The derived keys in use.
    pub(crate) fn derived(&self) -> Result<&DerivedKeys> {
        self.kept
            .get()
            .map(|(d, _)| d)
            .or(self.own.as_ref())
            .ok_or_else(|| Error::internal("the derived keys could not be derived"))
    }

    /// The root key configured as current.
    pub(crate) fn current(&self) -> &Arc<RootKey> {
        &self.root
    }

    /// From now on, wrap new KEKs by the next root key (a rotation to it
    /// started). Whether it is held.
    pub(crate) fn switch_to_next(&self) -> bool {
        if self.next.get().is_some() {
            self.wrap_next.store(true, Ordering::SeqCst);
            true
        } else {
            false
        }
    }

    /// The root key new KEKs are wrapped by.
    pub(crate) fn wrapping(&self) -> &Arc<RootKey> {
        match self.next.get() {
            Some(next) if self.wrap_next.load(Ordering::SeqCst) => next,
            _ => &self.root,
        }
    }

    /// Unwraps a KEK with the wrapping root key, or else the other one.
    fn unwrap(&self, r: &WrappedKekRecord) -> Result<Kek> {
        let wrapped = WrappedKek::from_bytes(r.wrapped.clone());
        let first = self.wrapping();
        match first.unwrap_kek(r.tenant.as_uuid(), r.version, &wrapped) {
            Ok(kek) => Ok(kek),
            Err(e) => {
                let other = if Arc::ptr_eq(first, &self.root) {
                    self.next.get()
                } else {
                    Some(&self.root)
                };
                match other {
                    Some(other) => other
                        .unwrap_kek(r.tenant.as_uuid(), r.version, &wrapped)
                        .map_err(crypto_error),
                    None => Err(crypto_error(e)),
                }
            }
        }
    }

    /// KEK `version` of `tenant`. On a miss, `load` reads every wrapped KEK
    /// of the tenant, and all of them are unwrapped and kept.
    pub(crate) async fn kek<F, Fut>(
        &self,
        tenant: TenantId,
        version: u32,
        load: F,
    ) -> Result<Arc<Kek>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<WrappedKekRecord>>>,
    {
        if let Some(k) = self.held(tenant, version)? {
            return Ok(k);
        }
        let evictions = self.evictions.load(Ordering::SeqCst);
        let records = load().await?;
        if records.is_empty() {
            // A tenant's wrapped keys are deleted only by a shred.
            return Err(Error::FailedPrecondition(Precondition::TenantShredded));
        }
        let mut found = None;
        let mut unwrapped = Vec::with_capacity(records.len());
        for r in records.into_iter().filter(|r| r.tenant == tenant) {
            let kek = self.unwrap(&r)?;
            let kek = Arc::new(kek);
            if r.version == version {
                found = Some(Arc::clone(&kek));
            }
            unwrapped.push(((r.tenant, r.version), kek));
        }
        let mut keys = self
            .keys
            .write()
            .map_err(|_| Error::internal("keyring poisoned"))?;
        // Kept only if nothing was evicted meanwhile (checked under the lock
        // evictions take): the keys may be the ones evicted.
        if self.evictions.load(Ordering::SeqCst) == evictions {
            keys.extend(unwrapped);
        }
        found.ok_or_else(|| Error::internal("tenant key version not found"))
    }

    /// KEK `version` of `tenant`, if held.
    fn held(&self, tenant: TenantId, version: u32) -> Result<Option<Arc<Kek>>> {
        Ok(self
            .keys
            .read()
            .map_err(|_| Error::internal("keyring poisoned"))?
            .get(&(tenant, version))
            .map(Arc::clone))
    }

    /// Forgets every key of `tenant` (its keys were shredded or replaced).
    pub(crate) fn evict_tenant(&self, tenant: TenantId) {
        if let Ok(mut keys) = self.keys.write() {
            self.evictions.fetch_add(1, Ordering::SeqCst);
            keys.retain(|(t, _), _| *t != tenant);
        }
    }

    /// Forgets every tenant's keys (change notices may have been missed,
    /// a shred among them); each is unwrapped again on its next use.
    pub(crate) fn evict_all(&self) {
        if let Ok(mut keys) = self.keys.write() {
            self.evictions.fetch_add(1, Ordering::SeqCst);
            keys.clear();
        }
    }

    /// Forgets KEK `version` of `tenant` (retired by a key rotation).
    pub(crate) fn evict_version(&self, tenant: TenantId, version: u32) {
        self.evictor().evict_version(tenant, version);
    }

    /// What evicts this keyring's keys from elsewhere.
    pub(crate) fn evictor(&self) -> KeyEvictor {
        KeyEvictor {
            keys: Arc::clone(&self.keys),
            evictions: Arc::clone(&self.evictions),
        }
    }

    /// `kek` wrapped by the root key as KEK `version` of `tenant`.
    pub(crate) fn wrap(&self, tenant: TenantId, version: u32, kek: &Kek) -> Result<WrappedKek> {
        self.wrapping()
            .wrap_kek(tenant.as_uuid(), version, kek)
            .map_err(crypto_error)
    }

    /// The keyed hash (HMAC-SHA256 under the key derived from the root
    /// key) of `parts`: a request's fingerprint for idempotent retries.
    pub(crate) fn fingerprint(&self, parts: &[&[u8]]) -> Result<[u8; FINGERPRINT_LEN]> {
        self.kept
            .get()
            .map(|(_, k)| k)
            .or(self.idempotency.as_ref())
            .map(|key| key.fingerprint(parts))
            .ok_or_else(|| Error::internal("the idempotency key could not be derived"))
    }

    /// The checkpoint signing key, derived from the root key.
    pub(crate) fn checkpoint_signing_key(&self) -> Result<SigningKey> {
        self.derived()?
            .checkpoint_signing_key()
            .map_err(crypto_error)
    }
}

/// What a sealed value is bound to: its tenant, environment, credential and
/// version (moving the ciphertext anywhere else fails to open).
fn aad(credential: &Credential, version: u32) -> Aad<'_> {
    Aad {
        tenant: credential.tenant.as_uuid(),
        environment: credential.environment.as_str(),
        credential: credential.id.as_uuid(),
        version,
    }
}

impl Engine {
    /// Forgets every unwrapped key of `tenant`: what crypto-shredding a
    /// tenant does to this server's memory once its wrapped keys are gone.
    pub fn evict_tenant_keys(&self, tenant: TenantId) {
        self.keyring.evict_tenant(tenant);
    }

    /// Forgets KEK `version` of `tenant`, once a key rotation has re-sealed
    /// everything it sealed.
    pub fn evict_tenant_key(&self, tenant: TenantId, version: u32) {
        self.keyring.evict_version(tenant, version);
    }

    /// KEK `version` of the scope's tenant.
    pub(crate) async fn kek(&self, scope: &TenantScope<'_>, version: u32) -> Result<Arc<Kek>> {
        self.keyring
            .kek(scope.tenant_id(), version, || self.store.keks(scope))
            .await
    }

    /// Seals `plaintext` as `version` of `credential` with `kek`.
    pub(crate) fn seal(
        kek: &Kek,
        kek_version: u32,
        credential: &Credential,
        version: u32,
        plaintext: &[u8],
    ) -> Result<Vec<u8>> {
        let envelope = kek
            .seal(kek_version, &aad(credential, version), plaintext)
            .map_err(crypto_error)?;
        Ok(envelope.to_bytes())
    }

    /// Opens a stored version of `credential`; refused if its value was
    /// destroyed.
    pub(crate) async fn open(
        &self,
        scope: &TenantScope<'_>,
        credential: &Credential,
        stored: &StoredVersion,
    ) -> Result<CredentialValue> {
        let bytes = stored
            .envelope
            .as_deref()
            .ok_or_else(|| Error::precondition("this version's value was destroyed"))?;
        let envelope = Envelope::from_bytes(bytes).map_err(crypto_error)?;
        let kek = self.kek(scope, envelope.kek_version()).await?;
        let plaintext = kek
            .open(&aad(credential, stored.version), &envelope)
            .map_err(crypto_error)?;
        CredentialValue::from_plaintext(&plaintext)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use strongroom_core::time::Timestamp;

    use super::*;

    fn record(root: &RootKey, tenant: TenantId, version: u32) -> WrappedKekRecord {
        let kek = Kek::generate().unwrap_or_else(|e| panic!("{e}"));
        let wrapped = root
            .wrap_kek(tenant.as_uuid(), version, &kek)
            .unwrap_or_else(|e| panic!("{e}"));
        WrappedKekRecord {
            tenant,
            version,
            wrapped: wrapped.to_bytes(),
            created_at: Timestamp::from_micros(0),
        }
    }

    /// A keyring over a fresh root key and a loader of `tenant`'s wrapped
    /// KEKs (versions 1 and 2) that counts its calls.
    struct Fixture {
        ring: Keyring,
        tenant: TenantId,
        records: Vec<WrappedKekRecord>,
        loads: AtomicUsize,
    }

    impl Fixture {
        fn new() -> Self {
            let root = Arc::new(RootKey::generate().unwrap_or_else(|e| panic!("{e}")));
            let tenant = TenantId::generate();
            let records = vec![record(&root, tenant, 1), record(&root, tenant, 2)];
            Self {
                ring: Keyring::new(root),
                tenant,
                records,
                loads: AtomicUsize::new(0),
            }
        }

        async fn kek(&self, version: u32) -> Result<Arc<Kek>> {
            self.ring
                .kek(self.tenant, version, || async {
                    self.loads.fetch_add(1, Ordering::SeqCst);
                    Ok(self.records.clone())
                })
                .await
        }

        fn loads(&self) -> usize {
            self.loads.load(Ordering::SeqCst)
        }
    }

    #[tokio::test]
    async fn a_tenant_is_unwrapped_once_then_served_from_memory() {
        let f = Fixture::new();
        let one = f.kek(1).await.unwrap_or_else(|e| panic!("{e}"));
        let two = f.kek(2).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(f.loads(), 1, "every version comes with the first load");
        assert!(Arc::ptr_eq(
            &one,
            &f.kek(1).await.unwrap_or_else(|e| panic!("{e}"))
        ));
        assert!(Arc::ptr_eq(
            &two,
            &f.kek(2).await.unwrap_or_else(|e| panic!("{e}"))
        ));
        assert_eq!(f.loads(), 1);
        assert!(f.kek(3).await.is_err(), "an unknown version is an error");
    }

    #[tokio::test]
    async fn evicting_a_version_forgets_only_that_version() {
        let f = Fixture::new();
        f.kek(1).await.unwrap_or_else(|e| panic!("{e}"));
        f.ring.evict_version(f.tenant, 2);
        f.kek(1).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(f.loads(), 1);
        f.kek(2).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(f.loads(), 2, "the evicted version is unwrapped again");
    }

    #[tokio::test]
    async fn an_evictor_forgets_a_version_of_the_keyring_it_came_from() {
        let f = Fixture::new();
        let evictor = f.ring.evictor();
        f.kek(1).await.unwrap_or_else(|e| panic!("{e}"));
        evictor.evict_version(f.tenant, 1);
        f.kek(1).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(f.loads(), 2, "the evicted version is unwrapped again");
    }

    #[tokio::test]
    async fn evicting_a_tenant_forgets_all_its_keys() {
        let f = Fixture::new();
        let other = Fixture::new();
        f.kek(1).await.unwrap_or_else(|e| panic!("{e}"));
        f.ring.evict_tenant(other.tenant);
        f.kek(2).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(f.loads(), 1, "another tenant's eviction keeps these keys");
        f.ring.evict_tenant(f.tenant);
        f.kek(1).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(f.loads(), 2);
    }

    #[tokio::test]
    async fn during_a_rotation_keks_wrapped_by_either_root_key_open() {
        let old = Arc::new(RootKey::generate().unwrap_or_else(|e| panic!("{e}")));
        let new = Arc::new(RootKey::generate().unwrap_or_else(|e| panic!("{e}")));
        let tenant = TenantId::generate();
        let records = vec![record(&old, tenant, 1), record(&new, tenant, 2)];
        let ring = Keyring::new(Arc::clone(&old));
        ring.set_next(Arc::clone(&new), false);
        for v in [1, 2] {
            ring.kek(tenant, v, || async { Ok(records.clone()) })
                .await
                .unwrap_or_else(|e| panic!("version {v}: {e}"));
        }
        let kek = Kek::generate().unwrap_or_else(|e| panic!("{e}"));
        let before = ring.wrap(tenant, 3, &kek).unwrap_or_else(|e| panic!("{e}"));
        assert!(old.unwrap_kek(tenant.as_uuid(), 3, &before).is_ok());
        assert!(ring.switch_to_next());
        let after = ring.wrap(tenant, 3, &kek).unwrap_or_else(|e| panic!("{e}"));
        assert!(new.unwrap_kek(tenant.as_uuid(), 3, &after).is_ok());
        assert!(old.unwrap_kek(tenant.as_uuid(), 3, &after).is_err());
        let alone = Keyring::new(Arc::clone(&old));
        assert!(
            alone
                .kek(tenant, 2, || async { Ok(records.clone()) })
                .await
                .is_err(),
            "the old key alone opens no KEK wrapped by the new one"
        );
    }

    #[tokio::test]
    async fn an_unwrap_racing_with_an_eviction_is_not_kept() {
        let f = Fixture::new();
        let key = f
            .ring
            .kek(f.tenant, 1, || async {
                // The tenant is evicted while its keys are being read.
                f.ring.evict_tenant(f.tenant);
                Ok(f.records.clone())
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        drop(key);
        assert!(
            f.ring
                .held(f.tenant, 1)
                .unwrap_or_else(|e| panic!("{e}"))
                .is_none(),
            "the keys read before the eviction are not kept"
        );
    }
}
