//! A fair share of the database pool for every tenant.
//!
//! [`FairShare`] wraps a store and bounds how many of the tenants' store
//! calls hold pooled connections at once (each call holds at most one, for
//! as long as it runs):
//!
//! - one tenant's calls hold at most `per_tenant` connections: a tenant
//!   whose calls pile up (a burst of lists, a slow query, a lock held in its
//!   rows) waits for its own share;
//! - the calls of all tenants together hold at most the pool less a reserve
//!   (a quarter of it, at least one connection, see [`pool_reserve`]), so
//!   two or more busy tenants cannot take the whole pool either;
//! - the reserve serves only a tenant with no other call in progress (a
//!   quiet tenant), and only when the rest is taken: its call gets a
//!   connection at once, whatever the busy tenants do.
//!
//! Busy tenants therefore never hold the reserve (beyond the one call each
//! that found the rest taken while it had no other call in progress). The
//! reserve is what quiet tenants' calls, the audit committers and platform
//! work share.
//!
//! Audit appends and reveal records are not counted: they go through the
//! tenant's group committer, which holds at most one connection per tenant
//! whatever the number of callers waiting on it, and counting the waiting
//! callers would cap how many reveals a busy tenant has in flight (and so
//! its batch sizes) for nothing. Platform calls (authentication, tenant
//! registry) name no tenant and pass straight through.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use strongroom_core::access::{
    AccessDecision, AccessRequestFilter, AccessRequestRecord, AccessRequestStore,
};
use strongroom_core::audit::{AuditDraft, AuditEvent, ChainHead};
use strongroom_core::chains::ChainStore;
use strongroom_core::credential::{Credential, CredentialFilter, CredentialUpdate, StoredVersion};
use strongroom_core::idempotency::{Claim, IdempotencyStore, RequestKey, RequestRecord};
use strongroom_core::ids::{
    AccessRequestId, BindingId, CredentialId, GrantId, LeaseId, PrincipalId, TenantId,
};
use strongroom_core::keys::{KeyScope, KeyStore, PendingDataKey, ReplicaReport, TenantRewrap};
use strongroom_core::lease::{Lease, LeaseFilter, LeaseStore};
use strongroom_core::names::{CredentialName, Environment};
use strongroom_core::page::{Page, PageRequest};
use strongroom_core::policy::Grant;
use strongroom_core::principal::{IdentityBinding, IdentityPattern, Principal, PrincipalStatus};
use strongroom_core::scope::SystemScope;
use strongroom_core::scope::{IdentityMatch, PlatformScope, TenantScope};
use strongroom_core::store::{
    AuditFilter, AuditStore, Change, CredentialRevoked, CredentialStore, EmergencyRotation,
    EnvironmentStore, GrantFilter, GrantStore, IdentityStore, MetaStore, NewTenant,
    PrincipalRevoked, PrincipalStore, RevealCheck, Store, TenantShredded, TenantStore,
};
use strongroom_core::tenant::{Tenant, TenantSettings, TenantStatus, WrappedKekRecord};
use strongroom_core::time::Timestamp;
use strongroom_core::{Error, Result};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a call waits for its tenant's share before failing with
/// UNAVAILABLE (as long as the pool waits for a free connection).
const SHARE_WAIT: Duration = Duration::from_secs(5);

/// The connections of a pool of `connections` (those the calls use) that
/// busy tenants never take: a quarter, at least one unless the pool has a
/// single connection.
pub const fn pool_reserve(connections: u32) -> u32 {
    if connections < 2 {
        0
    } else if connections < 8 {
        1
    } else {
        connections / 4
    }
}

/// A store whose tenants share its pool fairly (see the module
/// documentation).
pub struct FairShare<S> {
    inner: S,
    shares: Shares,
}

impl<S> std::fmt::Debug for FairShare<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FairShare")
            .field("per_tenant", &self.shares.per_tenant)
            .field("reserve", &self.shares.reserve)
            .finish_non_exhaustive()
    }
}

impl<S: Store> FairShare<S> {
    /// Wraps `inner`, whose pool has `connections` connections for calls:
    /// one tenant's calls hold at most `per_tenant` of them (at least 1, at
    /// most `connections` less [`pool_reserve`]).
    pub fn new(inner: S, connections: u32, per_tenant: u32) -> Self {
        Self {
            inner,
            shares: Shares::new(connections, per_tenant),
        }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Waits for one of `tenant`'s connections; held until dropped.
    async fn share(&self, tenant: TenantId) -> Result<Share> {
        self.shares.acquire(tenant).await
    }

    /// The share of `key`'s tenant; none for a platform operator's key.
    async fn key_share(&self, key: &RequestKey) -> Result<Option<Share>> {
        match key.tenant {
            Some(tenant) => Ok(Some(self.share(tenant).await?)),
            None => Ok(None),
        }
    }
}

/// The shares of the pool: the per-tenant limits, the busy part and the
/// reserve.
struct Shares {
    per_tenant: u32,
    reserve: u32,
    /// The pool less the reserve, for any tenant's calls.
    busy: Arc<Semaphore>,
    /// The reserve, for calls of tenants with no other call in progress.
    quiet: Arc<Semaphore>,
    tenants: Mutex<HashMap<TenantId, Arc<TenantShare>>>,
}

/// One tenant's share.
struct TenantShare {
    /// The tenant's calls in progress (waiting for a connection or holding
    /// one).
    calls: AtomicUsize,
    /// At most `per_tenant` of them hold a connection.
    connections: Arc<Semaphore>,
}

/// A call of a tenant, counted until dropped.
struct CallInProgress(Arc<TenantShare>);

impl Drop for CallInProgress {
    fn drop(&mut self) {
        self.0.calls.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A call's hold on a connection of its tenant and of the pool; released
/// when dropped.
struct Share {
    _pooled: OwnedSemaphorePermit,
    _tenant: OwnedSemaphorePermit,
    _call: CallInProgress,
}

impl Shares {
    fn new(connections: u32, per_tenant: u32) -> Self {
        let connections = connections.max(1);
        let reserve = pool_reserve(connections);
        let busy = connections - reserve;
        Self {
            per_tenant: per_tenant.clamp(1, busy),
            reserve,
            busy: Arc::new(Semaphore::new(busy as usize)),
            quiet: Arc::new(Semaphore::new(reserve as usize)),
            tenants: Mutex::default(),
        }
    }

    /// Waits for a connection for a call of `tenant` (see the module
    /// documentation); fails with UNAVAILABLE after [`SHARE_WAIT`].
    async fn acquire(&self, tenant: TenantId) -> Result<Share> {
        let share = {
            let mut tenants = self
                .tenants
                .lock()
                .map_err(|_| Error::internal("tenant connection shares poisoned"))?;
            Arc::clone(tenants.entry(tenant).or_insert_with(|| {
                Arc::new(TenantShare {
                    calls: AtomicUsize::new(0),
                    connections: Arc::new(Semaphore::new(self.per_tenant as usize)),
                })
            }))
        };
        let quiet = share.calls.fetch_add(1, Ordering::Relaxed) == 0;
        let call = CallInProgress(share);
        let closed = |_| Error::internal("tenant connection share closed");
        let wait = async {
            let own = Arc::clone(&call.0.connections)
                .acquire_owned()
                .await
                .map_err(closed)?;
            let pooled = match Arc::clone(&self.busy).try_acquire_owned() {
                Ok(permit) => permit,
                // The rest is taken: a quiet tenant's call takes whichever
                // frees first, the rest or the reserve.
                Err(_) if quiet => tokio::select! {
                    biased;
                    p = Arc::clone(&self.busy).acquire_owned() => p,
                    p = Arc::clone(&self.quiet).acquire_owned() => p,
                }
                .map_err(closed)?,
                Err(_) => Arc::clone(&self.busy)
                    .acquire_owned()
                    .await
                    .map_err(closed)?,
            };
            Ok::<_, Error>((own, pooled))
        };
        match tokio::time::timeout(SHARE_WAIT, wait).await {
            Ok(Ok((own, pooled))) => Ok(Share {
                _pooled: pooled,
                _tenant: own,
                _call: call,
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => {
                tracing::warn!(tenant = %tenant, "a call waited too long for its tenant's share of the database pool");
                Err(Error::Unavailable("the database is busy; retry".into()))
            }
        }
    }
}

/// The chain heads and the platform chain: audit work, which the share
/// leaves alone like the tenant's audit appends.
#[async_trait]
impl<S: Store> ChainStore for FairShare<S> {
    async fn audit_head(&self, scope: &TenantScope<'_>) -> Result<ChainHead> {
        self.inner.audit_head(scope).await
    }

    async fn audit_heads(&self, tenant: Option<TenantId>) -> Result<Vec<(TenantId, ChainHead)>> {
        self.inner.audit_heads(tenant).await
    }

    async fn append_platform_audit(&self, draft: AuditDraft) -> Result<AuditEvent> {
        self.inner.append_platform_audit(draft).await
    }

    async fn platform_audit_head(&self) -> Result<ChainHead> {
        self.inner.platform_audit_head().await
    }

    async fn chain_event_at(
        &self,
        tenant: Option<TenantId>,
        sequence: u64,
    ) -> Result<Option<AuditEvent>> {
        self.inner.chain_event_at(tenant, sequence).await
    }

    async fn platform_audit_after(&self, after: u64, limit: u32) -> Result<Vec<AuditEvent>> {
        self.inner.platform_audit_after(after, limit).await
    }

    async fn query_platform_audit(
        &self,
        scope: &PlatformScope<'_>,
        filter: &AuditFilter,
        page: &PageRequest,
    ) -> Result<Page<AuditEvent>> {
        self.inner.query_platform_audit(scope, filter, page).await
    }
}

#[async_trait]
impl<S: Store> strongroom_core::export::ExportStore for FairShare<S> {
    async fn export_rows(
        &self,
        scope: strongroom_core::export::ExportScope<'_>,
    ) -> Result<strongroom_core::export::TenantRows> {
        let _share = self.share(scope.tenant_id()).await?;
        self.inner.export_rows(scope).await
    }

    async fn record_export(
        &self,
        scope: strongroom_core::export::ExportScope<'_>,
        tenant_event: AuditDraft,
        platform_event: Option<AuditDraft>,
    ) -> Result<bool> {
        self.inner
            .record_export(scope, tenant_event, platform_event)
            .await
    }

    async fn import_rows(
        &self,
        scope: &PlatformScope<'_>,
        import: &strongroom_core::export::TenantImport,
        tenant_event: AuditDraft,
        platform_event: AuditDraft,
    ) -> Result<()> {
        self.inner
            .import_rows(scope, import, tenant_event, platform_event)
            .await
    }
}

#[async_trait]
impl<S: Store> MetaStore for FairShare<S> {
    async fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.inner.get_meta(key).await
    }

    async fn put_meta_if_absent(&self, key: &str, value: &[u8]) -> Result<bool> {
        self.inner.put_meta_if_absent(key, value).await
    }
}

#[async_trait]
impl<S: Store> IdentityStore for FairShare<S> {
    async fn resolve_identity(&self, identity: &str) -> Result<Vec<IdentityMatch>> {
        self.inner.resolve_identity(identity).await
    }

    async fn set_identity_namespaces(
        &self,
        scope: &PlatformScope<'_>,
        id: TenantId,
        namespaces: &[IdentityPattern],
        audit: AuditDraft,
    ) -> Result<()> {
        self.inner
            .set_identity_namespaces(scope, id, namespaces, audit)
            .await
    }

    async fn identity_namespaces(
        &self,
        scope: &PlatformScope<'_>,
        from: TenantId,
        to: TenantId,
    ) -> Result<Vec<(TenantId, IdentityPattern)>> {
        self.inner.identity_namespaces(scope, from, to).await
    }
}

#[async_trait]
impl<S: Store> TenantStore for FairShare<S> {
    async fn create_tenant(
        &self,
        scope: &PlatformScope<'_>,
        new: &NewTenant,
        audit: AuditDraft,
    ) -> Result<()> {
        self.inner.create_tenant(scope, new, audit).await
    }

    async fn list_tenants(
        &self,
        scope: &PlatformScope<'_>,
        page: &PageRequest,
    ) -> Result<Page<Tenant>> {
        self.inner.list_tenants(scope, page).await
    }

    async fn get_tenant(&self, scope: &PlatformScope<'_>, id: TenantId) -> Result<Tenant> {
        self.inner.get_tenant(scope, id).await
    }

    async fn set_tenant_status(
        &self,
        scope: &PlatformScope<'_>,
        id: TenantId,
        status: TenantStatus,
        audit: AuditDraft,
    ) -> Result<Tenant> {
        self.inner.set_tenant_status(scope, id, status, audit).await
    }

    async fn shred_tenant(
        &self,
        scope: &PlatformScope<'_>,
        id: TenantId,
        purge: bool,
        audit: AuditDraft,
    ) -> Result<TenantShredded> {
        self.inner.shred_tenant(scope, id, purge, audit).await
    }

    async fn tenant(&self, scope: &TenantScope<'_>) -> Result<Tenant> {
        let _share = self.share(scope.tenant_id()).await?;
        self.inner.tenant(scope).await
    }

    async fn update_tenant_settings(
        &self,
        scope: &TenantScope<'_>,
        settings: &TenantSettings,
        audit: AuditDraft,
    ) -> Result<Tenant> {
        let _share = self.share(scope.tenant_id()).await?;
        self.inner
            .update_tenant_settings(scope, settings, audit)
            .await
    }

    async fn keks(&self, scope: &TenantScope<'_>) -> Result<Vec<WrappedKekRecord>> {
        let _share = self.share(scope.tenant_id()).await?;
        self.inner.keks(scope).await
    }

    async fn add_kek(
        &self,
        scope: &TenantScope<'_>,
        kek: &WrappedKekRecord,
        audit: AuditDraft,
    ) -> Result<Tenant> {
        let _share = self.share(scope.tenant_id()).await?;
        self.inner.add_kek(scope, kek, audit).await
    }
}

#[async_trait]
impl<S: Store> EnvironmentStore for FairShare<S> {
    async fn create_environment(
        &self,
        scope: &TenantScope<'_>,
        environment: &Environment,
        audit: AuditDraft,
    ) -> Result<()> {
        let _share = self.share(scope.tenant_id()).await?;
        self.inner
            .create_environment(scope, environment, audit)
            .await
    }

    async fn list_environments(&self, scope: &TenantScope<'_>) -> Result<Vec<Environment>> {
        let _share = self.share(scope.tenant_id()).await?;
        self.inner.list_environments(scope).await
    }

    async fn delete_environment(
        &self,
        scope: &TenantScope<'_>,
        environment: &Environment,
        audit: AuditDraft,
    ) -> Result<()> {
        let _share = self.share(scope.tenant_id()).await?;
        self.inner
            .delete_environment(scope, environment, audit)
            .await
    }
}

#[async_trait]
impl<S: Store> PrincipalStore for FairShare<S> {
    async fn create_principal(
        &self,
        scope: &TenantScope<'_>,
        principal: &Principal,
        audit: AuditDraft,
    ) -> Result<()> {
        let _share = self.share(scope.tenant_id()).await?;
        self.inner.create_principal(scope, principal, audit).await
    }

    async fn get_principal(&self, scope: &TenantScope<'_>, id: PrincipalId) -> Result<Principal> {
        let _share = self.share(scope.tenant_id()).await?;
        self.inner.get_principal(scope, id).await
    }

    async fn list_principals(
        &self,
        scope: &TenantScope<'_>,
        page: &PageRequest,
    ) -> Result<Page<Principal>> {
        let _share = self.share(scope.tenant_id()).await?;
        self.inner.list_principals(scope, page).await
    }

    async fn set_principal_status(
        &self,
        scope: &TenantScope<'_>,
        id: PrincipalId,
        status: PrincipalStatus,
        audit: AuditDraft,
    ) -> Result<(Principal, u32)> {
        let _share = self.share(scope.tenant_id()).await?;
        self.inner
            .set_principal_status(scope, id, status, audit)
            .await
    }

    async fn update_principal(
        &self,
        scope: &TenantScope<'_>,
        principal: &Principal,
        narrowed: bool,
        audit: AuditDraft,
    ) -> Result<(Principal, u32)> {
        let _share = self.share(scope.tenant_id()).await?;
        self.inner
            .update_principal(scope, principal, narrowed, audit)
            .await
    }

    async fn create_binding(
        &self,
        scope: &TenantScope<'_>,
        binding: &IdentityBinding,
        audit: AuditDraft,
    ) -> Result<()> {
        let _share = self.share(scope.tenant_id()).await?;
        self.inner.create_binding(scope, binding, audit).await
    }

    async fn list_bindings(
        &self,
        scope: &TenantScope<'_>,
        principal: Option<PrincipalId>,
        page: &PageRequest,
    ) -> Result<Page<IdentityBinding>> {
        let _share = self.share(scope.tenant_id()).await?;
        self.inner.list_bindings(scope, principal, page).await
    }

    async fn delete_binding(
        &self,
        scope: &TenantScope<'_>,
        id: BindingId,
        audit: AuditDraft,
    ) -> Result<()> {
        let _share = self.share(scope.tenant_id()).await?;
        self.inner.delete_binding(scope, id, audit).await
    }

    async fn emergency_revoke_principal(
        &self,
        scope: &TenantScope<'_>,
        id: PrincipalId,
        reason: &str,
        audit: AuditDraft,
    ) -> Result<PrincipalRevoked> {
        let _share = self.share(scope.tenant_id()).await?;
        self.inner
            .emergency_revoke_principal(scope, id, reason, audit)
            .await
    }
}

#[async_trait]
impl<S: Store> CredentialStore for FairShare<S> {
    async fn create_credential(
        &self,
        scope: &TenantScope<'_>,
        credential: &Credential,
        first: &StoredVersion,
        audit: AuditDraft,
    ) -> Result<()> {
        let _share = self.share(scope.tenant_id()).await?;
        self.inner
            .create_credential(scope, credential, first, audit)
            .await
    }

    async fn get_credential(
        &self,
        scope: &TenantScope<'_>,
        id: CredentialId,
    ) -> Result<Credential> {
        let _share = self.share(scope.tenant_id()).await?;
        self.inner.get_credential(scope, id).await
    }

    async fn find_credential(
        &self,
        scope: &TenantScope<'_>,
        environment: &Environment,
        name: &CredentialName,
    ) -> Result<Credential> {
        let _share = self.share(scope.tenant_id()).await?;
        self.inner.find_credential(scope, environment, name).await
    }

    async fn list_credentials(
        &self,
        scope: &TenantScope<'_>,
        filter: &CredentialFilter,
        page: &PageRequest,
    ) -> Result<Page<Credential>> {
        let _share = self.share(scope.tenant_id()).await?;
        self.inner.list_credentials(scope, filter, page).await
    }

    async fn add_version(
        &self,
        scope: &TenantScope<'_>,
        id: CredentialId,
        expected_latest: u32,
        version: &StoredVersion,
        retention: u32,
        audit: AuditDraft,
    ) -> Result<Credential> {
        let _share = self.share(scope.tenant_id()).await?;
        self.inner
            .add_version(scope, id, expected_latest, version, retention, audit)
            .await
    }

    async fn get_version(
        &self,
        scope: &TenantScope<'_>,
        id: CredentialId,
        version: u32,
    ) -> Result<StoredVersion> {
        let _share = self.share(scope.tenant_id()).await?;
        self.inner.get_version(scope, id, version).await
    }

    async fn list_versions(
        &self,
        scope: &TenantScope<'_>,
        id: CredentialId,
    ) -> Result<Vec<StoredVersion>> {
        let _share = self.share(scope.tenant_id()).await?;
        self.inner.list_versions(scope, id).await
    }

    async fn set_current_version(
        &self,
        scope: &TenantScope<'_>,
        id: CredentialId,
        version: u32,
        audit: AuditDraft,
    ) -> Result<Credential> {
        let _share = self.share(scope.tenant_id()).await?;
        self.inner
            .set_current_version(scope, id, version, audit)
            .await
    }

    async fn revoke_credential(
        &self,
        scope: &TenantScope<'_>,
        id: CredentialId,
        reason: &str,
        audit: AuditDraft,
    ) -> Result<(Credential, u32)> {
        let _share = self.share(scope.tenant_id()).await?;
        self.inner.revoke_credential(scope, id, reason, audit).await
    }

    async fn update_credential(
        &self,
        scope: &TenantScope<'_>,
        id: CredentialId,
        update: &CredentialUpdate,
        narrowed: bool,
        audit: AuditDraft,
    ) -> Result<(Credential, u32)> {
        let _share = self.share(scope.tenant_id()).await?;
        self.inner
            .update_credential(scope, id, update, narrowed, audit)
            .await
    }

    async fn emergency_revoke_credential(
        &self,
        scope: &TenantScope<'_>,
        id: CredentialId,
        reason: &str,
        rotation: Option<EmergencyRotation>,
        audit: AuditDraft,
    ) -> Result<CredentialRevoked> {
        let _share = self.share(scope.tenant_id()).await?;
        self.inner
            .emergency_revoke_credential(scope, id, reason, rotation, audit)
            .await
    }

    async fn destroy_credential(
        &self,
        scope: &TenantScope<'_>,
        id: CredentialId,
        audit: AuditDraft,
    ) -> Result<Credential> {
        let _share = self.share(scope.tenant_id()).await?;
        self.inner.destroy_credential(scope, id, audit).await
    }
}

#[async_trait]
impl<S: Store> GrantStore for FairShare<S> {
    async fn create_grant(
        &self,
        scope: &TenantScope<'_>,
        grant: &Grant,
        audit: AuditDraft,
    ) -> Result<()> {
        let _share = self.share(scope.tenant_id()).await?;
        self.inner.create_grant(scope, grant, audit).await
    }

    async fn get_grant(&self, scope: &TenantScope<'_>, id: GrantId) -> Result<Grant> {
        let _share = self.share(scope.tenant_id()).await?;
        self.inner.get_grant(scope, id).await
    }

    async fn delete_grant(
        &self,
        scope: &TenantScope<'_>,
        id: GrantId,
        audit: AuditDraft,
    ) -> Result<u32> {
        let _share = self.share(scope.tenant_id()).await?;
        self.inner.delete_grant(scope, id, audit).await
    }

    async fn list_grants(
        &self,
        scope: &TenantScope<'_>,
        filter: &GrantFilter,
        page: &PageRequest,
    ) -> Result<Page<Grant>> {
        let _share = self.share(scope.tenant_id()).await?;
        self.inner.list_grants(scope, filter, page).await
    }

    async fn grants_for(
        &self,
        scope: &TenantScope<'_>,
        principal: &Principal,
    ) -> Result<Vec<Grant>> {
        let _share = self.share(scope.tenant_id()).await?;
        self.inner.grants_for(scope, principal).await
    }
}

#[async_trait]
impl<S: Store> AuditStore for FairShare<S> {
    // The audit appends are not counted (see the type's doc) and are the
    // reveal path: they hand back the inner store's future itself rather
    // than wrapping it in one more boxed future.
    fn append_audit<'life0, 'life1, 'life2, 'async_trait>(
        &'life0 self,
        scope: &'life1 TenantScope<'life2>,
        draft: AuditDraft,
    ) -> Pin<Box<dyn Future<Output = Result<AuditEvent>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        'life2: 'async_trait,
        Self: 'async_trait,
    {
        self.inner.append_audit(scope, draft)
    }

    fn append_reveal<'life0, 'life1, 'life2, 'async_trait>(
        &'life0 self,
        scope: &'life1 TenantScope<'life2>,
        draft: AuditDraft,
        check: RevealCheck,
        lease: Option<Lease>,
    ) -> Pin<Box<dyn Future<Output = Result<AuditEvent>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        'life2: 'async_trait,
        Self: 'async_trait,
    {
        self.inner.append_reveal(scope, draft, check, lease)
    }

    // A read like any other: counted against the tenant's share.
    async fn check_reveals(
        &self,
        scope: &TenantScope<'_>,
        checks: &[RevealCheck],
    ) -> Result<Option<&'static str>> {
        let _share = self.share(scope.tenant_id()).await?;
        self.inner.check_reveals(scope, checks).await
    }

    fn changes(&self) -> tokio::sync::broadcast::Receiver<Change> {
        self.inner.changes()
    }

    fn appended(&self) -> tokio::sync::broadcast::Receiver<TenantId> {
        self.inner.appended()
    }

    async fn query_audit(
        &self,
        scope: &TenantScope<'_>,
        filter: &AuditFilter,
        page: &PageRequest,
    ) -> Result<Page<AuditEvent>> {
        let _share = self.share(scope.tenant_id()).await?;
        self.inner.query_audit(scope, filter, page).await
    }

    async fn audit_after(
        &self,
        scope: &TenantScope<'_>,
        after: u64,
        limit: u32,
    ) -> Result<Vec<AuditEvent>> {
        let _share = self.share(scope.tenant_id()).await?;
        self.inner.audit_after(scope, after, limit).await
    }
}

#[async_trait]
impl<S: Store> LeaseStore for FairShare<S> {
    async fn get_lease(&self, scope: &TenantScope<'_>, id: LeaseId) -> Result<Lease> {
        let _share = self.share(scope.tenant_id()).await?;
        self.inner.get_lease(scope, id).await
    }

    async fn list_leases(
        &self,
        scope: &TenantScope<'_>,
        filter: &LeaseFilter,
        page: &PageRequest,
    ) -> Result<Page<Lease>> {
        let _share = self.share(scope.tenant_id()).await?;
        self.inner.list_leases(scope, filter, page).await
    }

    async fn renew_lease(
        &self,
        scope: &TenantScope<'_>,
        id: LeaseId,
        holder: PrincipalId,
        expires_at: Timestamp,
        audit: AuditDraft,
    ) -> Result<Lease> {
        let _share = self.share(scope.tenant_id()).await?;
        self.inner
            .renew_lease(scope, id, holder, expires_at, audit)
            .await
    }

    async fn release_lease(
        &self,
        scope: &TenantScope<'_>,
        id: LeaseId,
        holder: PrincipalId,
        audit: AuditDraft,
    ) -> Result<Lease> {
        let _share = self.share(scope.tenant_id()).await?;
        self.inner.release_lease(scope, id, holder, audit).await
    }

    // The sweeper's work belongs to no caller: not counted against a
    // tenant's share, like the checkpoint task's reads.
    async fn expire_leases(&self, now: Timestamp, by: &AuditDraft, limit: u32) -> Result<u32> {
        self.inner.expire_leases(now, by, limit).await
    }
}

#[async_trait]
impl<S: Store> AccessRequestStore for FairShare<S> {
    async fn file_access_request(
        &self,
        scope: &TenantScope<'_>,
        request: &AccessRequestRecord,
        notice: Option<&strongroom_core::notify::NewDelivery>,
        now: Timestamp,
        audit: AuditDraft,
    ) -> Result<(AccessRequestRecord, bool)> {
        let _share = self.share(scope.tenant_id()).await?;
        self.inner
            .file_access_request(scope, request, notice, now, audit)
            .await
    }

    async fn list_notification_deliveries(
        &self,
        scope: &TenantScope<'_>,
        page: &PageRequest,
    ) -> Result<Page<strongroom_core::notify::Delivery>> {
        let _share = self.share(scope.tenant_id()).await?;
        self.inner.list_notification_deliveries(scope, page).await
    }

    async fn get_access_request(
        &self,
        scope: &TenantScope<'_>,
        id: AccessRequestId,
    ) -> Result<AccessRequestRecord> {
        let _share = self.share(scope.tenant_id()).await?;
        self.inner.get_access_request(scope, id).await
    }

    async fn list_access_requests(
        &self,
        scope: &TenantScope<'_>,
        filter: &AccessRequestFilter,
        now: Timestamp,
        page: &PageRequest,
    ) -> Result<Page<AccessRequestRecord>> {
        let _share = self.share(scope.tenant_id()).await?;
        self.inner
            .list_access_requests(scope, filter, now, page)
            .await
    }

    async fn decide_access_request(
        &self,
        scope: &TenantScope<'_>,
        id: AccessRequestId,
        decision: &AccessDecision,
        by: PrincipalId,
        now: Timestamp,
        audit: AuditDraft,
    ) -> Result<AccessRequestRecord> {
        let _share = self.share(scope.tenant_id()).await?;
        self.inner
            .decide_access_request(scope, id, decision, by, now, audit)
            .await
    }

    // The sweeper's work, as the leases': not counted against a tenant.
    async fn expire_access_requests(
        &self,
        now: Timestamp,
        by: &AuditDraft,
        limit: u32,
    ) -> Result<u32> {
        self.inner.expire_access_requests(now, by, limit).await
    }
}

// The notifier sender's work belongs to no caller (a bounded batch per
// tenant and pass), like the sweeper's: not counted against a share.
#[async_trait]
impl<S: Store> strongroom_core::notify::NotificationStore for FairShare<S> {
    async fn due_notification_tenants(&self, now: Timestamp, limit: u32) -> Result<Vec<TenantId>> {
        self.inner.due_notification_tenants(now, limit).await
    }

    async fn claim_notification_deliveries(
        &self,
        tenant: TenantId,
        now: Timestamp,
        hold_until: Timestamp,
        limit: u32,
    ) -> Result<Vec<strongroom_core::notify::Delivery>> {
        self.inner
            .claim_notification_deliveries(tenant, now, hold_until, limit)
            .await
    }

    async fn record_notification_attempt(
        &self,
        tenant: TenantId,
        attempt: &strongroom_core::notify::DeliveryAttempt,
        event: strongroom_core::audit::AuditDraft,
    ) -> Result<bool> {
        self.inner
            .record_notification_attempt(tenant, attempt, event)
            .await
    }

    async fn notifier_tenant(&self, tenant: TenantId) -> Result<(Tenant, Vec<WrappedKekRecord>)> {
        self.inner.notifier_tenant(tenant).await
    }
}

// Idempotency records are counted against the caller's tenant's share
// like its other calls; platform operators' records pass straight through,
// and so does the sweeper's purge.
#[async_trait]
impl<S: Store> IdempotencyStore for FairShare<S> {
    async fn claim_request(
        &self,
        key: &RequestKey,
        fingerprint: &[u8],
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<Claim> {
        let _share = self.key_share(key).await?;
        self.inner
            .claim_request(key, fingerprint, now, expires_at)
            .await
    }

    async fn get_request(&self, key: &RequestKey, now: Timestamp) -> Result<Option<RequestRecord>> {
        let _share = self.key_share(key).await?;
        self.inner.get_request(key, now).await
    }

    async fn complete_request(
        &self,
        key: &RequestKey,
        claimed_at: Timestamp,
        response: &[u8],
    ) -> Result<bool> {
        let _share = self.key_share(key).await?;
        self.inner.complete_request(key, claimed_at, response).await
    }

    async fn release_request(&self, key: &RequestKey, claimed_at: Timestamp) -> Result<()> {
        let _share = self.key_share(key).await?;
        self.inner.release_request(key, claimed_at).await
    }

    async fn purge_requests(&self, now: Timestamp) -> Result<u64> {
        self.inner.purge_requests(now).await
    }
}

// The rotation monitor's work belongs to no caller: not counted against a
// tenant's share, like the lease sweeper's.
#[async_trait]
impl<S: Store> strongroom_core::rotation::RotationStore for FairShare<S> {
    async fn monitored_tenants(
        &self,
        system: &strongroom_core::scope::SystemScope,
        after: Option<TenantId>,
        limit: u32,
    ) -> Result<Vec<Tenant>> {
        self.inner.monitored_tenants(system, after, limit).await
    }

    async fn monitored_credentials(
        &self,
        system: &strongroom_core::scope::SystemScope,
        tenant: TenantId,
        after: Option<CredentialId>,
        limit: u32,
    ) -> Result<Vec<strongroom_core::rotation::Monitored>> {
        self.inner
            .monitored_credentials(system, tenant, after, limit)
            .await
    }

    async fn record_reminders(
        &self,
        system: &strongroom_core::scope::SystemScope,
        tenant: TenantId,
        reminders: &[strongroom_core::rotation::Reminder],
        now: Timestamp,
    ) -> Result<Option<Vec<bool>>> {
        self.inner
            .record_reminders(system, tenant, reminders, now)
            .await
    }
}

// Key rotation passes straight through: rare administrative calls and
// the background re-wrapping, which works one small batch at a time.
#[async_trait]
impl<S: Store> KeyStore for FairShare<S> {
    async fn report_replica(&self, report: &ReplicaReport) -> Result<()> {
        self.inner.report_replica(report).await
    }

    async fn live_replicas(&self, since: Timestamp) -> Result<Vec<ReplicaReport>> {
        self.inner.live_replicas(since).await
    }

    async fn forget_replica(&self, replica: &str) -> Result<()> {
        self.inner.forget_replica(replica).await
    }

    async fn set_meta(&self, key: &str, value: &[u8]) -> Result<()> {
        self.inner.set_meta(key, value).await
    }

    async fn tenant_keks(&self, scope: KeyScope<'_>) -> Result<Vec<WrappedKekRecord>> {
        self.inner.tenant_keks(scope).await
    }

    async fn replace_kek(
        &self,
        scope: KeyScope<'_>,
        version: u32,
        old: &[u8],
        new: &[u8],
    ) -> Result<bool> {
        self.inner.replace_kek(scope, version, old, new).await
    }

    async fn add_kek_version(
        &self,
        scope: KeyScope<'_>,
        kek: &WrappedKekRecord,
        audit: AuditDraft,
    ) -> Result<Tenant> {
        self.inner.add_kek_version(scope, kek, audit).await
    }

    async fn key_tenant(&self, scope: KeyScope<'_>) -> Result<Tenant> {
        self.inner.key_tenant(scope).await
    }

    async fn tenant_rewrap(&self, scope: KeyScope<'_>) -> Result<Option<TenantRewrap>> {
        self.inner.tenant_rewrap(scope).await
    }

    async fn open_rewraps(&self, system: &SystemScope) -> Result<Vec<TenantRewrap>> {
        self.inner.open_rewraps(system).await
    }

    async fn finish_rewrap(
        &self,
        scope: KeyScope<'_>,
        kek_version: u32,
        at: Timestamp,
    ) -> Result<()> {
        self.inner.finish_rewrap(scope, kek_version, at).await
    }

    async fn pending_data_keys(
        &self,
        scope: KeyScope<'_>,
        current: u32,
        limit: u32,
    ) -> Result<Vec<PendingDataKey>> {
        self.inner.pending_data_keys(scope, current, limit).await
    }

    async fn replace_data_key(
        &self,
        scope: KeyScope<'_>,
        credential: CredentialId,
        version: u32,
        old: &[u8],
        new: &[u8],
        kek_version: u32,
    ) -> Result<bool> {
        self.inner
            .replace_data_key(scope, credential, version, old, new, kek_version)
            .await
    }

    async fn data_key_counts(&self, scope: KeyScope<'_>) -> Result<Vec<(u32, u64)>> {
        self.inner.data_key_counts(scope).await
    }

    async fn replace_notifier_secret(
        &self,
        scope: KeyScope<'_>,
        old: &str,
        new: &str,
    ) -> Result<bool> {
        self.inner.replace_notifier_secret(scope, old, new).await
    }

    async fn retire_kek(
        &self,
        scope: KeyScope<'_>,
        version: u32,
        notifier_secret: Option<&str>,
        audit: AuditDraft,
    ) -> Result<()> {
        self.inner
            .retire_kek(scope, version, notifier_secret, audit)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROMPT: Duration = Duration::from_millis(50);

    /// A share obtained at once (within [`PROMPT`]).
    async fn now(shares: &Shares, tenant: TenantId, what: &str) -> Share {
        match tokio::time::timeout(PROMPT, shares.acquire(tenant)).await {
            Ok(Ok(share)) => share,
            Ok(Err(e)) => panic!("{what}: {e}"),
            Err(_) => panic!("{what}: had to wait"),
        }
    }

    /// Whether a call of `tenant` has to wait for a share.
    async fn waits(shares: &Shares, tenant: TenantId) -> bool {
        tokio::time::timeout(PROMPT, shares.acquire(tenant))
            .await
            .is_err()
    }

    #[test]
    fn the_reserve_is_a_quarter_of_the_pool() {
        assert_eq!(pool_reserve(1), 0);
        assert_eq!(pool_reserve(2), 1);
        assert_eq!(pool_reserve(7), 1);
        assert_eq!(pool_reserve(8), 2);
        assert_eq!(pool_reserve(31), 7);
        let shares = Shares::new(8, 8);
        assert_eq!(shares.per_tenant, 6, "at most the pool less the reserve");
    }

    /// Two busy tenants hold at most the pool less the reserve between
    /// them; a tenant with no other call in progress still gets a
    /// connection at once, from the reserve.
    #[tokio::test]
    async fn busy_tenants_leave_the_reserve_to_quiet_tenants() {
        // 8 connections: 2 kept back, 6 for anyone, 5 at most per tenant.
        let shares = Shares::new(8, 5);
        let (a, b) = (TenantId::generate(), TenantId::generate());
        let mut held = Vec::new();
        for i in 0..5 {
            held.push(now(&shares, a, &format!("busy tenant a, call {i}")).await);
        }
        assert!(waits(&shares, a).await, "a tenant beyond its share");
        held.push(now(&shares, b, "busy tenant b, first call").await);
        // The six are taken: b waits, although under its own share.
        assert!(
            waits(&shares, b).await,
            "busy tenants beyond the pool less the reserve"
        );

        let quiet = TenantId::generate();
        let first = now(&shares, quiet, "a quiet tenant").await;
        let other = now(&shares, TenantId::generate(), "another quiet tenant").await;
        assert_eq!(shares.quiet.available_permits(), 0);
        // A quiet tenant's second call is not quiet: it waits like a busy
        // tenant's.
        assert!(waits(&shares, quiet).await, "a second call in the reserve");
        assert!(
            waits(&shares, TenantId::generate()).await,
            "the reserve is two"
        );
        drop(other);
        drop(now(&shares, TenantId::generate(), "a third quiet tenant").await);
        drop(first);
        // A busy tenant's call gets the connection a busy call frees.
        drop(held.remove(0));
        drop(now(&shares, a, "busy tenant a, once one of its calls ended").await);
        assert_eq!(shares.quiet.available_permits(), 2);
    }

    /// A quiet tenant takes the connections busy tenants leave before the
    /// reserve, and a call given up while waiting counts no longer.
    #[tokio::test]
    async fn the_reserve_is_used_last_and_calls_given_up_are_not_counted() {
        let shares = Shares::new(8, 5);
        let quiet = TenantId::generate();
        let share = now(&shares, quiet, "a quiet tenant").await;
        assert_eq!(shares.quiet.available_permits(), 2, "the reserve untouched");
        assert_eq!(shares.busy.available_permits(), 5);
        drop(share);

        let busy = TenantId::generate();
        let mut held = Vec::new();
        for i in 0..5 {
            held.push(now(&shares, busy, &format!("call {i}")).await);
        }
        assert!(waits(&shares, busy).await);
        held.clear();
        let tenant = lock_tenant(&shares, busy);
        assert_eq!(tenant.calls.load(Ordering::Relaxed), 0, "the given-up call");
    }

    fn lock_tenant(shares: &Shares, tenant: TenantId) -> Arc<TenantShare> {
        let tenants = shares
            .tenants
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match tenants.get(&tenant) {
            Some(share) => Arc::clone(share),
            None => panic!("no share for the tenant"),
        }
    }
}
