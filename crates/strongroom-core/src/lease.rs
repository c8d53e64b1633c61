//! Leases: the right a reveal gives its caller to use the value for a
//! limited time. Each reveal (and resolve) opens one, stored in the same
//! commit as the reveal's audit event; the holder renews it (up to its
//! maximum lifetime) or releases it; the server's sweeper expires it when
//! it runs out; revoking its credential, its grant or its principal ends
//! it at once. Every step is an audit event carrying the lease's id, so the
//! chain tells how long a credential was in use and whether it was cleaned
//! up (released) or left to expire.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::audit::{Action, AuditDetail, AuditDraft, Outcome};
use crate::error::Result;
use crate::ids::{CredentialId, GrantId, LeaseId, PrincipalId, TenantId};
use crate::names::{CredentialName, Environment};
use crate::page::{Page, PageRequest};
use crate::scope::TenantScope;
use crate::time::Timestamp;

/// Where a lease stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LeaseState {
    /// In use: renewable until it expires.
    Active,
    /// Ended by its holder.
    Released,
    /// Ran out without being released (ended by the sweeper).
    Expired,
    /// Ended because its credential, grant or principal was revoked.
    Revoked,
}

impl LeaseState {
    /// Stable text form, as stored.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Released => "released",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
        }
    }

    /// Parses [`LeaseState::as_str`].
    pub fn parse(text: &str) -> Option<Self> {
        [Self::Active, Self::Released, Self::Expired, Self::Revoked]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// Why a lease ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseEnd {
    /// Its holder released it.
    Released,
    /// It ran out.
    Expired,
    /// Its credential was revoked.
    CredentialRevoked,
    /// Its credential's values were destroyed.
    CredentialDestroyed,
    /// The grant that allowed it was revoked.
    GrantRevoked,
    /// Its principal was disabled (by an administrator or locked after
    /// repeated denials).
    PrincipalDisabled,
    /// Its principal's role or environments were narrowed.
    PrincipalNarrowed,
    /// Its credential's metadata was changed in a way that narrows its use
    /// (an earlier expiry, another owner, service or injection template).
    CredentialNarrowed,
}

impl LeaseEnd {
    /// Stable text form, as stored.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Released => "released",
            Self::Expired => "expired",
            Self::CredentialRevoked => "credential_revoked",
            Self::CredentialDestroyed => "credential_destroyed",
            Self::GrantRevoked => "grant_revoked",
            Self::PrincipalDisabled => "principal_disabled",
            Self::PrincipalNarrowed => "principal_narrowed",
            Self::CredentialNarrowed => "credential_narrowed",
        }
    }

    /// Parses [`LeaseEnd::as_str`].
    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::Released,
            Self::Expired,
            Self::CredentialRevoked,
            Self::CredentialDestroyed,
            Self::GrantRevoked,
            Self::PrincipalDisabled,
            Self::PrincipalNarrowed,
            Self::CredentialNarrowed,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }

    /// The state a lease ended this way is in.
    pub const fn state(&self) -> LeaseState {
        match self {
            Self::Released => LeaseState::Released,
            Self::Expired => LeaseState::Expired,
            _ => LeaseState::Revoked,
        }
    }

    /// The action of the audit event that records it.
    pub const fn action(&self) -> Action {
        match self {
            Self::Released => Action::LeaseRelease,
            Self::Expired => Action::LeaseExpire,
            _ => Action::LeaseRevoke,
        }
    }
}

/// A stored lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Its id.
    pub id: LeaseId,
    /// Owning tenant.
    pub tenant: TenantId,
    /// The credential revealed.
    pub credential: CredentialId,
    /// Its name.
    pub credential_name: CredentialName,
    /// Its environment.
    pub environment: Environment,
    /// The version revealed.
    pub version: u32,
    /// The principal holding it (the one that revealed).
    pub principal: PrincipalId,
    /// The grant that allowed the reveal; none when the principal's role
    /// did.
    pub grant: Option<GrantId>,
    /// End user the holder acts for.
    pub on_behalf_of: Option<String>,
    /// The purpose stated with the reveal.
    pub purpose: Option<String>,
    /// How long each issue or renewal lasts by default.
    pub ttl: Duration,
    /// When the reveal opened it.
    pub issued_at: Timestamp,
    /// When it ends unless renewed.
    pub expires_at: Timestamp,
    /// The latest time renewals can extend it to.
    pub max_expires_at: Timestamp,
    /// Where it stands.
    pub state: LeaseState,
    /// When it ended (for an expired lease, when it ran out).
    pub ended_at: Option<Timestamp>,
    /// Why it ended.
    pub end: Option<LeaseEnd>,
}

impl Lease {
    /// The audit event recording that this lease ended `end` at `at`, by
    /// the actor of `by` (the call or task ending it: its principal,
    /// peer and request ids are kept; the rest describes the lease).
    pub fn end_draft(&self, by: &AuditDraft, end: LeaseEnd, at: Timestamp) -> AuditDraft {
        let mut d = AuditDraft::new_at(end.action(), Outcome::Allowed, "", by.at);
        d.principal = by.principal;
        d.actor.clone_from(&by.actor);
        d.peer.clone_from(&by.peer);
        d.request_id.clone_from(&by.request_id);
        d.trace_id.clone_from(&by.trace_id);
        d.on_behalf_of.clone_from(&self.on_behalf_of);
        d.credential = Some(self.credential);
        d.credential_name = Some(self.credential_name.to_string());
        d.environment = Some(self.environment.to_string());
        d.version = Some(self.version);
        d.reason_code = end.as_str().to_ascii_uppercase();
        d.detail = Some(AuditDetail::LeaseEnded {
            lease_id: self.id,
            holder: self.principal,
            ended_at: at,
            end,
        });
        d
    }
}

/// What ends leases at once, in the transaction of a revocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseHolder {
    /// Every lease on a credential.
    Credential(CredentialId),
    /// Every lease a grant allowed.
    Grant(GrantId),
    /// Every lease of a principal.
    Principal(PrincipalId),
}

/// Filters for listing leases.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseFilter {
    /// Only leases on this credential.
    pub credential: Option<CredentialId>,
    /// Only leases held by this principal.
    pub principal: Option<PrincipalId>,
    /// Only leases in this state.
    pub state: Option<LeaseState>,
    /// Only leases on credentials of these environments (what a principal
    /// confined to them sees).
    pub environments: Option<Vec<Environment>>,
}

/// A tenant's leases. Leases are opened by
/// [`AuditStore::append_reveal`](crate::store::AuditStore::append_reveal),
/// in the reveal's commit, and ended by revocations in theirs.
#[async_trait]
pub trait LeaseStore: Send + Sync {
    /// Reads a lease.
    async fn get_lease(&self, scope: &TenantScope<'_>, id: LeaseId) -> Result<Lease>;

    /// Lists leases matching `filter`, oldest first.
    async fn list_leases(
        &self,
        scope: &TenantScope<'_>,
        filter: &LeaseFilter,
        page: &PageRequest,
    ) -> Result<Page<Lease>>;

    /// Moves an active lease of `holder` to `expires_at`, with its audit
    /// event; `FailedPrecondition` if it has ended meanwhile.
    async fn renew_lease(
        &self,
        scope: &TenantScope<'_>,
        id: LeaseId,
        holder: PrincipalId,
        expires_at: Timestamp,
        audit: AuditDraft,
    ) -> Result<Lease>;

    /// Ends an active lease of `holder` as released, with its audit event;
    /// `FailedPrecondition` if it has ended meanwhile.
    async fn release_lease(
        &self,
        scope: &TenantScope<'_>,
        id: LeaseId,
        holder: PrincipalId,
        audit: AuditDraft,
    ) -> Result<Lease>;

    /// Expires up to `limit` active leases that ran out by `now`, across
    /// tenants, each with a `lease.expire` event in its tenant's chain made
    /// from `by` (see [`Lease::end_draft`]); for the server's sweeper only.
    /// One sweeper works at a time across servers sharing a database: a
    /// store that finds another sweeping stops. Returns how many it
    /// expired.
    async fn expire_leases(&self, now: Timestamp, by: &AuditDraft, limit: u32) -> Result<u32>;
}
