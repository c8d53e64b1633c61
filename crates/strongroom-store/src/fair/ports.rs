//! [`FairShare`] as every storage port: each call takes its tenant's share
//! (or, for platform calls, none) and hands on to the wrapped store.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use strongroom_core::Result;
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

use super::*;

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
        lease: Option<Arc<Lease>>,
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
