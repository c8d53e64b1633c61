//! The audit summary: what a tenant's chain says about a time range, read
//! from the events themselves (totals, failures, activity per credential
//! and per principal, the last access) and, from the lease events, how long
//! credentials were in use and whether their leases were released or left
//! to expire.
//!
//! Time in use is the union of nothing cleverer than each lease's own span:
//! from the reveal that began it to the event that ended it (its
//! `ended_at`: release, expiry, revocation), clipped to the range; a lease
//! still open at the range's end counts to that end, or to its expiry
//! (after its last renewal) if that comes first. A lease begun before the
//! range counts from the range's start.

use std::collections::HashMap;

use strongroom_core::audit::{Action, AuditDetail, AuditEvent, Outcome};
use strongroom_core::ids::{CredentialId, LeaseId, PrincipalId};
use strongroom_core::lease::LeaseEnd;
use strongroom_core::page::PageRequest;
use strongroom_core::principal::Role;
use strongroom_core::scope::Authenticated;
use strongroom_core::store::AuditFilter;
use strongroom_core::time::Timestamp;
use strongroom_core::{Error, Result};

use crate::{CallContext, Engine};

/// Entries per breakdown by default.
pub const DEFAULT_SUMMARY_TOP: u32 = 20;
/// Entries per breakdown at most.
pub const MAX_SUMMARY_TOP: u32 = 500;
/// Events a summary reads at most; a larger range is refused (narrow it).
pub const MAX_SUMMARY_EVENTS: usize = 200_000;

/// What to summarise.
#[derive(Debug, Clone, Default)]
pub struct SummaryQuery {
    /// Start of the range (inclusive); none: the first event.
    pub since: Option<Timestamp>,
    /// End of the range (exclusive); none: now.
    pub until: Option<Timestamp>,
    /// Only events on this credential.
    pub credential: Option<CredentialId>,
    /// Only events caused by this principal, and leases it held.
    pub principal: Option<PrincipalId>,
    /// Entries per breakdown.
    pub top: u32,
}

/// Lease use within a range.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeaseUsage {
    /// Leases begun in the range.
    pub started: u64,
    /// Leases their holder released in the range.
    pub released: u64,
    /// Leases that ran out in the range.
    pub expired: u64,
    /// Leases ended in the range by a revocation (credential, grant,
    /// principal).
    pub revoked: u64,
    /// Leases still open at the range's end.
    pub open: u64,
    /// Total time the leases were held within the range, in microseconds.
    pub in_use_micros: u64,
}

/// Activity on one credential.
#[derive(Debug, Clone)]
pub struct CredentialActivity {
    /// The credential.
    pub credential: CredentialId,
    /// Its name, as last recorded.
    pub name: String,
    /// Its environment, as last recorded.
    pub environment: String,
    /// Events about it.
    pub events: u64,
    /// Allowed reveals, resolves and injections.
    pub uses: u64,
    /// Denied or failed events.
    pub failed: u64,
    /// The last allowed use and who made it.
    pub last_access: Option<(Timestamp, Option<PrincipalId>)>,
    /// Its leases.
    pub leases: LeaseUsage,
}

/// Activity of one principal.
#[derive(Debug, Clone)]
pub struct PrincipalActivity {
    /// The principal.
    pub principal: PrincipalId,
    /// Its name, as last recorded.
    pub name: String,
    /// Events it caused.
    pub events: u64,
    /// Denied or failed ones.
    pub failed: u64,
    /// Its last event.
    pub last_at: Timestamp,
}

/// A summary of a range of a tenant's chain.
#[derive(Debug, Clone, Default)]
pub struct AuditSummary {
    /// Events in the range.
    pub total: u64,
    /// Denied or failed events.
    pub failed: u64,
    /// Per credential, most events first.
    pub by_credential: Vec<CredentialActivity>,
    /// Per principal, most events first.
    pub by_principal: Vec<PrincipalActivity>,
    /// The last allowed use of any credential.
    pub last_access: Option<Timestamp>,
    /// Every lease.
    pub leases: LeaseUsage,
}

/// A lease seen begin in the range.
struct OpenLease {
    credential: Option<CredentialId>,
    start: Timestamp,
    expires: Timestamp,
}

/// Lease figures: the tenant's and each credential's.
#[derive(Default)]
struct LeaseTally {
    total: LeaseUsage,
    by_credential: HashMap<CredentialId, LeaseUsage>,
}

impl LeaseTally {
    fn count(&mut self, credential: Option<CredentialId>, add: impl Fn(&mut LeaseUsage)) {
        add(&mut self.total);
        if let Some(c) = credential {
            add(self.by_credential.entry(c).or_default());
        }
    }
}

fn is_use(e: &AuditEvent) -> bool {
    e.draft.outcome == Outcome::Allowed
        && matches!(
            e.draft.action,
            Action::CredentialReveal | Action::CredentialInject
        )
}

fn span_micros(from: Timestamp, to: Timestamp) -> u64 {
    u64::try_from(to.as_micros().saturating_sub(from.as_micros())).unwrap_or(0)
}

impl Engine {
    /// Summarises the caller's tenant chain over `query`'s range (admin,
    /// operator, viewer). A caller confined to environments summarises only
    /// their events, as in [`Engine::query_audit`].
    pub async fn audit_summary(
        &self,
        caller: &Authenticated,
        ctx: &CallContext,
        query: &SummaryQuery,
    ) -> Result<AuditSummary> {
        let scope = caller.tenant_scope()?;
        self.require_role(
            &scope,
            ctx,
            Action::AuditQuery,
            &[Role::Admin, Role::Operator, Role::Viewer],
        )
        .await?;
        let until = query.until.unwrap_or_else(|| self.now());
        if query.since.is_some_and(|since| since >= until) {
            return Err(Error::invalid("end_time", "must be after start_time"));
        }
        let confined = &scope.principal().environments;
        let filter = AuditFilter {
            credential: query.credential,
            since: query.since,
            until: Some(until),
            environments: (!confined.is_empty()).then(|| confined.clone()),
            ..AuditFilter::default()
        };
        // Newest first, page by page; summarised in chain order.
        let mut events = Vec::new();
        let mut page = PageRequest {
            size: strongroom_core::page::MAX_PAGE_SIZE,
            after: None,
        };
        loop {
            let read = self.store.query_audit(&scope, &filter, &page).await?;
            let next = read.next;
            events.extend(read.items.into_iter().filter(|e| match query.principal {
                None => true,
                Some(p) => {
                    e.draft.principal == Some(p)
                        || matches!(
                            e.draft.detail,
                            Some(AuditDetail::LeaseEnded { holder, .. }) if holder == p
                        )
                }
            }));
            if events.len() > MAX_SUMMARY_EVENTS {
                return Err(Error::invalid(
                    "start_time",
                    "the range holds more than 200000 events: narrow it",
                ));
            }
            if next.is_none() {
                break;
            }
            page.after = next;
        }
        events.reverse();
        let since = query
            .since
            .or_else(|| events.first().map(|e| e.draft.at))
            .unwrap_or(until);
        Ok(summarise(&events, since, until, query.top))
    }
}

/// The summary of `events` (in chain order) over `since..until`.
fn summarise(events: &[AuditEvent], since: Timestamp, until: Timestamp, top: u32) -> AuditSummary {
    let mut summary = AuditSummary::default();
    let mut credentials: HashMap<CredentialId, CredentialActivity> = HashMap::new();
    let mut principals: HashMap<PrincipalId, PrincipalActivity> = HashMap::new();
    let mut open: HashMap<LeaseId, OpenLease> = HashMap::new();
    let mut tally = LeaseTally::default();

    for e in events {
        let d = &e.draft;
        let failed = d.outcome != Outcome::Allowed;
        summary.total += 1;
        summary.failed += u64::from(failed);
        if let Some(c) = d.credential {
            let a = credentials.entry(c).or_insert_with(|| CredentialActivity {
                credential: c,
                name: String::new(),
                environment: String::new(),
                events: 0,
                uses: 0,
                failed: 0,
                last_access: None,
                leases: LeaseUsage::default(),
            });
            a.events += 1;
            a.failed += u64::from(failed);
            if let Some(n) = &d.credential_name {
                a.name.clone_from(n);
            }
            if let Some(env) = &d.environment {
                a.environment.clone_from(env);
            }
            if is_use(e) {
                a.uses += 1;
                a.last_access = Some((d.at, d.principal));
            }
        }
        if is_use(e) {
            summary.last_access = Some(d.at);
        }
        if let Some(p) = d.principal {
            let a = principals.entry(p).or_insert_with(|| PrincipalActivity {
                principal: p,
                name: String::new(),
                events: 0,
                failed: 0,
                last_at: d.at,
            });
            a.events += 1;
            a.failed += u64::from(failed);
            a.name.clone_from(&d.actor);
            a.last_at = d.at;
        }
        if failed {
            continue;
        }
        match &d.detail {
            Some(AuditDetail::Lease {
                lease_id, ttl_secs, ..
            }) => {
                tally.count(d.credential, |u| u.started += 1);
                open.insert(
                    *lease_id,
                    OpenLease {
                        credential: d.credential,
                        start: d.at,
                        expires: d.at.plus(std::time::Duration::from_secs(*ttl_secs)),
                    },
                );
            }
            Some(AuditDetail::LeaseRenewed {
                lease_id,
                expires_at,
                ..
            }) => {
                if let Some(l) = open.get_mut(lease_id) {
                    l.expires = *expires_at;
                }
            }
            Some(AuditDetail::LeaseEnded {
                lease_id,
                ended_at,
                end,
                ..
            }) => {
                let start = open.remove(lease_id).map_or(since, |l| l.start).max(since);
                let stop = (*ended_at).min(until);
                let micros = span_micros(start, stop);
                tally.count(d.credential, |u| {
                    match end {
                        LeaseEnd::Released => u.released += 1,
                        LeaseEnd::Expired => u.expired += 1,
                        _ => u.revoked += 1,
                    }
                    u.in_use_micros += micros;
                });
            }
            _ => {}
        }
    }
    for lease in open.into_values() {
        let micros = span_micros(lease.start, lease.expires.min(until));
        tally.count(lease.credential, |u| {
            u.open += 1;
            u.in_use_micros += micros;
        });
    }
    summary.leases = tally.total;
    for (c, usage) in tally.by_credential {
        if let Some(a) = credentials.get_mut(&c) {
            a.leases = usage;
        }
    }
    let top = usize::try_from(top).unwrap_or(usize::MAX);
    let mut by_credential: Vec<_> = credentials.into_values().collect();
    by_credential.sort_by(|a, b| {
        b.events
            .cmp(&a.events)
            .then_with(|| a.name.cmp(&b.name))
            .then_with(|| a.credential.to_string().cmp(&b.credential.to_string()))
    });
    by_credential.truncate(top);
    let mut by_principal: Vec<_> = principals.into_values().collect();
    by_principal.sort_by(|a, b| {
        b.events
            .cmp(&a.events)
            .then_with(|| a.name.cmp(&b.name))
            .then_with(|| a.principal.to_string().cmp(&b.principal.to_string()))
    });
    by_principal.truncate(top);
    summary.by_credential = by_credential;
    summary.by_principal = by_principal;
    summary
}
