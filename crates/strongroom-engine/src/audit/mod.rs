//! The audit log as callers read it: queries of a tenant's chain and of the
//! platform chain; chain verification, checkpoints and failed
//! authentications in their own modules.

use strongroom_core::Result;
use strongroom_core::audit::{Action, AuditEvent, ChainBreak};
use strongroom_core::ids::TenantId;
use strongroom_core::page::{Page, PageRequest};
use strongroom_core::principal::Role;
use strongroom_core::scope::Authenticated;
use strongroom_core::store::AuditFilter;

use crate::{CallContext, Engine};

mod checkpoints;
mod failed_auth;
mod stream;
mod summary;
mod verify;

pub use checkpoints::CheckpointSchedule;
pub(crate) use checkpoints::SignedHeads;
pub(crate) use failed_auth::FailedAuthLog;
pub use failed_auth::{FAILED_AUTH_PER_SECOND, FAILED_AUTH_WINDOW};
pub use stream::{AuditFeed, FEED_BATCH, FEED_POLL};
pub use summary::{
    AuditSummary, CredentialActivity, DEFAULT_SUMMARY_TOP, LeaseUsage, MAX_SUMMARY_TOP,
    PrincipalActivity, SummaryQuery,
};
pub use verify::{DEFAULT_VERIFY_EVENTS, MAX_VERIFY_EVENTS, VerifyOptions};

/// Which chain a checkpoint or verification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainTarget {
    /// The caller's own tenant chain.
    OwnTenant,
    /// A tenant's chain, named by a platform operator.
    Tenant(TenantId),
    /// The platform-level chain (platform operators).
    Platform,
}

/// The outcome of a chain verification.
#[derive(Debug, Clone)]
pub struct ChainReport {
    /// Events that verified.
    pub checked: u64,
    /// The first break (missing, altered or unlinked event), if any.
    pub broken: Option<ChainBreak>,
    /// The chain head as stored.
    pub head: strongroom_core::audit::ChainHead,
    /// Where the next call continues, when this one stopped at its bound
    /// with the chain intact so far.
    pub next_sequence: Option<u64>,
    /// Whether a checkpoint was given and the chain still holds its head.
    pub checkpoint_matched: bool,
}

impl Engine {
    /// Queries audit events, newest first (admin, operator, viewer).
    pub async fn query_audit(
        &self,
        caller: &Authenticated,
        ctx: &CallContext,
        filter: &AuditFilter,
        page: &PageRequest,
    ) -> Result<Page<AuditEvent>> {
        let scope = caller.tenant_scope()?;
        self.require_role(
            &scope,
            ctx,
            Action::AuditQuery,
            &[Role::Admin, Role::Operator, Role::Viewer],
        )
        .await?;
        // A principal confined to environments reads only their events.
        let principal = scope.principal();
        if principal.environments.is_empty() {
            return self.store.query_audit(&scope, filter, page).await;
        }
        let confined = AuditFilter {
            environments: Some(principal.environments.clone()),
            ..filter.clone()
        };
        self.store.query_audit(&scope, &confined, page).await
    }

    /// Platform events, newest first (platform operators).
    pub async fn query_platform_events(
        &self,
        caller: &Authenticated,
        filter: &AuditFilter,
        page: &PageRequest,
    ) -> Result<Page<AuditEvent>> {
        let scope = caller.platform_scope()?;
        self.store.query_platform_audit(&scope, filter, page).await
    }
}
