//! Access requests: an agent without a grant asks for one, with a purpose;
//! a tenant admin approves (creating a time-boxed grant linked to the
//! request) or denies it; a request nobody answers expires.
//!
//! A request is stored `pending` until decided or swept; one whose
//! `expires_at` has passed is expired whatever its stored status says
//! ([`AccessRequestRecord::effective_status`]), so no reader has to wait
//! for the sweeper.

use std::time::Duration;

use async_trait::async_trait;

use crate::audit::AuditDraft;
use crate::error::Result;
use crate::ids::{AccessRequestId, GrantId, PrincipalId, TenantId};
use crate::names::Environment;
use crate::page::{Page, PageRequest};
use crate::policy::{Capability, Destination, Grant, Selector};
use crate::scope::TenantScope;
use crate::time::Timestamp;

/// The longest access a request may ask for (and an approval grant).
pub const MAX_ACCESS_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

/// The access a request asks for when it names no duration.
pub const DEFAULT_ACCESS_DURATION: Duration = Duration::from_secs(3600);

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccessRequestStatus {
    /// Waiting for an admin.
    Pending,
    /// Approved: a grant was created.
    Approved,
    /// Denied by an admin.
    Denied,
    /// Nobody answered in time.
    Expired,
}

impl AccessRequestStatus {
    /// The stored text form.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Expired => "expired",
        }
    }

    /// Parses [`AccessRequestStatus::as_str`].
    pub fn parse(text: &str) -> Option<Self> {
        [Self::Pending, Self::Approved, Self::Denied, Self::Expired]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// A filed access request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRequestRecord {
    /// Id.
    pub id: AccessRequestId,
    /// Owning tenant.
    pub tenant: TenantId,
    /// Who asked.
    pub requester: PrincipalId,
    /// The requester's name when it asked.
    pub requester_name: String,
    /// Which credential names (an exact name or a prefix).
    pub selector: Selector,
    /// In which environments (at least one).
    pub environments: Vec<Environment>,
    /// What for: `inject` or `reveal`.
    pub capability: Capability,
    /// Where injection would go (for `inject`).
    pub destinations: Vec<Destination>,
    /// Why.
    pub purpose: String,
    /// The end user the requester acts for.
    pub on_behalf_of: Option<String>,
    /// How long access is wanted.
    pub duration: Duration,
    /// Stored status (see [`AccessRequestRecord::effective_status`]).
    pub status: AccessRequestStatus,
    /// When it was filed.
    pub created_at: Timestamp,
    /// When it expires unless decided.
    pub expires_at: Timestamp,
    /// When it was decided (or swept as expired).
    pub decided_at: Option<Timestamp>,
    /// The deciding admin.
    pub decided_by: Option<PrincipalId>,
    /// The admin's reason.
    pub decision_reason: String,
    /// The grant an approval created.
    pub grant: Option<GrantId>,
}

impl AccessRequestRecord {
    /// The status at `now`: a pending request past its expiry is expired.
    pub fn effective_status(&self, now: Timestamp) -> AccessRequestStatus {
        if self.status == AccessRequestStatus::Pending && self.expires_at <= now {
            AccessRequestStatus::Expired
        } else {
            self.status
        }
    }

    /// What makes two pending requests of one requester the same request:
    /// capability, environments (in order), selector and the end user.
    pub fn same_key(&self) -> String {
        let mut environments: Vec<&str> = self.environments.iter().map(|e| e.as_str()).collect();
        environments.sort_unstable();
        environments.dedup();
        format!(
            "{}|{}|{}|{}",
            self.capability.as_str(),
            environments.join(","),
            self.selector.to_text(),
            self.on_behalf_of.as_deref().unwrap_or("")
        )
    }
}

/// An admin's decision on a pending request.
#[derive(Debug, Clone)]
pub enum AccessDecision {
    /// Approved, creating this grant (its `access_request` the request's
    /// id).
    Approve(Box<Grant>),
    /// Denied, for this reason.
    Deny(String),
}

/// Filters for listing access requests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessRequestFilter {
    /// Only requests of this requester.
    pub requester: Option<PrincipalId>,
    /// Only requests in this status, as it is at `now` (a pending request
    /// past its expiry counts as expired).
    pub status: Option<AccessRequestStatus>,
}

/// A tenant's access requests.
#[async_trait]
pub trait AccessRequestStore: Send + Sync {
    /// Files `request` (pending) with its `audit` event, unless the same
    /// requester already has a pending, unexpired request at `now` with the
    /// same [`AccessRequestRecord::same_key`]: then that one is returned
    /// and nothing is written. Returns the request and whether it is new.
    /// A new request's `notice` (the tenant has a notifier) is enqueued in
    /// the same transaction.
    async fn file_access_request(
        &self,
        scope: &TenantScope<'_>,
        request: &AccessRequestRecord,
        notice: Option<&crate::notify::NewDelivery>,
        now: Timestamp,
        audit: AuditDraft,
    ) -> Result<(AccessRequestRecord, bool)>;

    /// The tenant's notifier deliveries, newest first.
    async fn list_notification_deliveries(
        &self,
        scope: &TenantScope<'_>,
        page: &PageRequest,
    ) -> Result<Page<crate::notify::Delivery>>;

    /// Reads a request (its stored status).
    async fn get_access_request(
        &self,
        scope: &TenantScope<'_>,
        id: AccessRequestId,
    ) -> Result<AccessRequestRecord>;

    /// Lists requests, newest first.
    async fn list_access_requests(
        &self,
        scope: &TenantScope<'_>,
        filter: &AccessRequestFilter,
        now: Timestamp,
        page: &PageRequest,
    ) -> Result<Page<AccessRequestRecord>>;

    /// Decides a request at `now` by `by`, in one transaction with its
    /// `audit` event (and, for an approval, the grant). `FailedPrecondition`
    /// if it is no longer pending or has expired; `NotFound` if absent.
    async fn decide_access_request(
        &self,
        scope: &TenantScope<'_>,
        id: AccessRequestId,
        decision: &AccessDecision,
        by: PrincipalId,
        now: Timestamp,
        audit: AuditDraft,
    ) -> Result<AccessRequestRecord>;

    /// Marks up to `limit` pending requests past their expiry at `now` as
    /// expired, each with an event made from `by`, tenant by tenant, one
    /// sweeper at a time across servers; returns how many.
    async fn expire_access_requests(
        &self,
        now: Timestamp,
        by: &AuditDraft,
        limit: u32,
    ) -> Result<u32>;
}
