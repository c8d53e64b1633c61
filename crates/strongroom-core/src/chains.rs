//! The storage port for audit chain heads and the platform-level chain.
//!
//! Tenant chains live with the tenant's data (see [`crate::store::AuditStore`]);
//! this port adds what checkpoints and chain verification need: reading a
//! chain's stored head, and the platform chain of events that belong to no
//! tenant (failed authentication). The platform chain is hashed exactly like
//! a tenant's, under the id [`PLATFORM_CHAIN`](crate::audit::PLATFORM_CHAIN).

use async_trait::async_trait;

use crate::audit::{AuditDraft, AuditEvent, ChainHead};
use crate::error::Result;
use crate::ids::TenantId;
use crate::page::{Page, PageRequest};
use crate::scope::{PlatformScope, TenantScope};
use crate::store::AuditFilter;

/// Audit chain heads and the platform chain.
#[async_trait]
pub trait ChainStore {
    /// The stored head of the scope's tenant chain.
    async fn audit_head(&self, scope: &TenantScope<'_>) -> Result<ChainHead>;

    /// The stored heads of every tenant's chain (or of `tenant` only), for
    /// checkpoints signed without a caller (the scheduled task) or for a
    /// platform operator. Heads are hashes and counts, never tenant data.
    async fn audit_heads(&self, tenant: Option<TenantId>) -> Result<Vec<(TenantId, ChainHead)>>;

    /// The stored event `sequence` of `tenant`'s chain (`None`: the platform
    /// chain), if any; for the checkpoint signer, which has no caller.
    async fn chain_event_at(
        &self,
        tenant: Option<TenantId>,
        sequence: u64,
    ) -> Result<Option<AuditEvent>>;

    /// Links `draft` into the platform chain and stores it durably.
    async fn append_platform_audit(&self, draft: AuditDraft) -> Result<AuditEvent>;

    /// The stored head of the platform chain.
    async fn platform_audit_head(&self) -> Result<ChainHead>;

    /// Up to `limit` platform events with sequence greater than `after`, in
    /// order.
    async fn platform_audit_after(&self, after: u64, limit: u32) -> Result<Vec<AuditEvent>>;

    /// Queries platform events, newest first (only `action`, `outcome`,
    /// `since` and `until` of `filter` apply).
    async fn query_platform_audit(
        &self,
        scope: &PlatformScope<'_>,
        filter: &AuditFilter,
        page: &PageRequest,
    ) -> Result<Page<AuditEvent>>;
}
