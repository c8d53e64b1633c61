//! Key rotation's storage port ([`KeyStore`]): the replicas' reports of
//! the root keys they hold, the re-wrapping of tenant KEKs under a new root
//! key, tenant KEK versions added, the re-wrapping of data keys under the
//! newest version, and retiring an old version.
//!
//! The store never sees a key: it moves wrapped bytes, and every
//! replacement is a compare-and-swap on the bytes read (`old`), so two
//! replicas re-wrapping the same row, or a write racing with a re-wrap, can
//! never lose a value.

use async_trait::async_trait;

use crate::audit::AuditDraft;
use crate::error::Result;
use crate::ids::{CredentialId, TenantId};
use crate::scope::{PlatformScope, SystemScope, TenantScope};
use crate::tenant::{Tenant, WrappedKekRecord};
use crate::time::Timestamp;

/// Server metadata key of the root-key rotation's state (JSON, not
/// secret): see `strongroom-engine`'s `root_rotation.rs`.
pub const ROOT_ROTATION: &str = "root_key_rotation";

/// Server metadata key of the derived keys (checkpoint signing seed,
/// request-fingerprint key) kept across root-key rotations, wrapped by the
/// root key in use. Absent until the first rotation: they are derived from
/// the root key itself.
pub const DERIVED_KEYS: &str = "root_key_derived_keys";

/// What one running server reports of its root keys, refreshed on a
/// heartbeat; a report older than the liveness window is a replica gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaReport {
    /// The server process (random per start).
    pub replica: String,
    /// Its listening address, for people.
    pub addr: String,
    /// The id of the root key the database's key check matches on it.
    pub current_key: String,
    /// The id of the other root key it holds (`root_key.next_file`).
    pub next_key: Option<String>,
    /// The id of the root key it wraps new tenant keys with.
    pub wraps_with: String,
    /// When it reported.
    pub seen_at: Timestamp,
}

impl ReplicaReport {
    /// Whether the replica holds the root key `id`.
    pub fn holds(&self, id: &str) -> bool {
        self.current_key == id || self.next_key.as_deref() == Some(id)
    }
}

/// Whose tenant keys a key operation acts on: a tenant admin's own tenant,
/// a tenant named by a platform operator, or a tenant the server's
/// background re-wrapping works on. Built only from those scopes.
#[derive(Debug, Clone, Copy)]
pub enum KeyScope<'a> {
    /// The caller's own tenant.
    Tenant(&'a TenantScope<'a>),
    /// A tenant named by a platform operator.
    Platform(&'a PlatformScope<'a>, TenantId),
    /// A tenant the server's background task works on.
    System(&'a SystemScope, TenantId),
}

impl KeyScope<'_> {
    /// The tenant acted on.
    pub fn tenant_id(&self) -> TenantId {
        match self {
            KeyScope::Tenant(s) => s.tenant_id(),
            KeyScope::Platform(_, t) | KeyScope::System(_, t) => *t,
        }
    }
}

/// One data key still wrapped by an older KEK version: where its value
/// sits (what its envelope is bound to) and the envelope.
#[derive(Clone)]
pub struct PendingDataKey {
    /// The credential.
    pub credential: CredentialId,
    /// Its environment.
    pub environment: String,
    /// The credential version.
    pub version: u32,
    /// The stored envelope (ciphertext only).
    pub envelope: Vec<u8>,
}

impl std::fmt::Debug for PendingDataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingDataKey")
            .field("credential", &self.credential)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// A tenant's rotation to a new KEK version, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantRewrap {
    /// The tenant.
    pub tenant: TenantId,
    /// The version data keys are re-wrapped to.
    pub kek_version: u32,
    /// When the rotation started.
    pub started_at: Timestamp,
    /// When every data key was found re-wrapped.
    pub finished_at: Option<Timestamp>,
}

/// Key rotation's storage.
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Stores (replaces) a replica's report.
    async fn report_replica(&self, report: &ReplicaReport) -> Result<()>;

    /// The reports made at or after `since`, by replica.
    async fn live_replicas(&self, since: Timestamp) -> Result<Vec<ReplicaReport>>;

    /// Removes a replica's report (it stops).
    async fn forget_replica(&self, replica: &str) -> Result<()>;

    /// Stores `value` under server metadata `key`, replacing any value.
    async fn set_meta(&self, key: &str, value: &[u8]) -> Result<()>;

    /// Every KEK version of the scope's tenant, wrapped.
    async fn tenant_keks(&self, scope: KeyScope<'_>) -> Result<Vec<WrappedKekRecord>>;

    /// Replaces the wrapped form of KEK `version` if it is still `old`
    /// (root-key rotation). Whether it was replaced.
    async fn replace_kek(
        &self,
        scope: KeyScope<'_>,
        version: u32,
        old: &[u8],
        new: &[u8],
    ) -> Result<bool>;

    /// Adds KEK version `kek.version` (one above every version the tenant
    /// has had), makes it current, records the rotation as open and
    /// appends `audit` to the tenant's chain, in one transaction.
    /// `FailedPrecondition` if the version is not the next one.
    async fn add_kek_version(
        &self,
        scope: KeyScope<'_>,
        kek: &WrappedKekRecord,
        audit: AuditDraft,
    ) -> Result<Tenant>;

    /// The tenant as stored now.
    async fn key_tenant(&self, scope: KeyScope<'_>) -> Result<Tenant>;

    /// The tenant's latest KEK rotation, if any.
    async fn tenant_rewrap(&self, scope: KeyScope<'_>) -> Result<Option<TenantRewrap>>;

    /// Every rotation not yet finished, over all tenants.
    async fn open_rewraps(&self, system: &SystemScope) -> Result<Vec<TenantRewrap>>;

    /// Marks the tenant's rotation to `kek_version` finished at `at`.
    async fn finish_rewrap(
        &self,
        scope: KeyScope<'_>,
        kek_version: u32,
        at: Timestamp,
    ) -> Result<()>;

    /// Up to `limit` stored values whose data key is wrapped by a KEK
    /// version other than `current`.
    async fn pending_data_keys(
        &self,
        scope: KeyScope<'_>,
        current: u32,
        limit: u32,
    ) -> Result<Vec<PendingDataKey>>;

    /// Replaces a stored value's envelope by `new` (its data key wrapped by
    /// `kek_version`) if it is still `old`. Whether it was replaced.
    async fn replace_data_key(
        &self,
        scope: KeyScope<'_>,
        credential: CredentialId,
        version: u32,
        old: &[u8],
        new: &[u8],
        kek_version: u32,
    ) -> Result<bool>;

    /// How many stored values each KEK version wraps, by version.
    async fn data_key_counts(&self, scope: KeyScope<'_>) -> Result<Vec<(u32, u64)>>;

    /// Replaces the notifier's sealed signing secret if it is still `old`.
    async fn replace_notifier_secret(
        &self,
        scope: KeyScope<'_>,
        old: &str,
        new: &str,
    ) -> Result<bool>;

    /// Deletes KEK `version` and appends `audit`, in one transaction.
    /// `FailedPrecondition` while it is the current version or any stored
    /// value's data key is wrapped by it; `NotFound` if there is no such
    /// version.
    ///
    /// `notifier_secret` is the notifier's sealed secret the caller found
    /// sealed under another version: checked again in the transaction
    /// (with the tenant row locked), `FailedPrecondition` if it changed.
    async fn retire_kek(
        &self,
        scope: KeyScope<'_>,
        version: u32,
        notifier_secret: Option<&str>,
        audit: AuditDraft,
    ) -> Result<()>;
}
