//! Abuse controls (SPEC §4): per-principal rate limits, an alert event when
//! a principal's denials cross a threshold, and an optional automatic lock.
//!
//! Two separate limits, both per principal, both set per tenant
//! ([`TenantSettings`]):
//! - the **denied-call limit** (on by default) counts calls that were
//!   denied; once a principal exceeds it, every call of that principal is
//!   refused with RESOURCE_EXHAUSTED until the delay the limiter names has
//!   passed (a prober cannot go on probing at full speed);
//! - the **call limit** (off by default, so it never slows a busy agent)
//!   counts every call.
//!
//! Repeated denials within the tenant's alert window raise one
//! `alert.repeated_denials` event in the tenant's audit chain per window,
//! and with `auto_lock` disable the principal (admins excepted) until an
//! admin enables it again. Refusals are recorded too, coalesced: the first
//! refusal of a principal in a window is recorded when it happens, and when
//! the window ends one more event counts all of the window's refusals, so a
//! flood of refused calls writes at most two events per principal and
//! window.
//!
//! All of this state is in memory, per server: with N servers behind a load
//! balancer a principal may get up to N times each limit, and counts start
//! afresh when a server restarts.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use strongroom_core::audit::{Action, AuditDraft, Outcome};
use strongroom_core::ids::{PrincipalId, TenantId};
use strongroom_core::principal::{PrincipalStatus, Role};
use strongroom_core::scope::{Authenticated, TenantScope};
use strongroom_core::store::Store;
use strongroom_core::tenant::{RateLimit, TenantSettings};

use crate::{CallContext, Engine as Vault};

/// A principal of a tenant.
type Key = (TenantId, PrincipalId);

/// Which limit refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Too many denied calls.
    DeniedCalls,
    /// Too many calls.
    Calls,
}

impl Limit {
    /// The reason code recorded for its refusals.
    pub const fn reason_code(&self) -> &'static str {
        match self {
            Self::DeniedCalls => "DENIED_CALL_LIMIT",
            Self::Calls => "CALL_LIMIT",
        }
    }

    /// What the caller is told.
    pub const fn explain(&self) -> &'static str {
        match self {
            Self::DeniedCalls => "too many denied calls",
            Self::Calls => "too many calls",
        }
    }
}

/// A call refused by a rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// The limit.
    pub limit: Limit,
    /// How long until a call may succeed again.
    pub retry_after: Duration,
}

/// A tenant's limiter, keyed by principal, with the limit it enforces.
type TenantLimiter = (RateLimit, Arc<DefaultKeyedRateLimiter<PrincipalId>>);

/// One keyed limiter per tenant, rebuilt when the tenant's limit changes.
#[derive(Default)]
struct Limiters(Mutex<HashMap<TenantId, TenantLimiter>>);

impl Limiters {
    /// Takes one cell of `principal`'s budget under `limit`; the wait until
    /// the next cell if none is left.
    fn check(
        &self,
        tenant: TenantId,
        principal: PrincipalId,
        limit: RateLimit,
    ) -> Option<Duration> {
        let limiter = {
            let mut all = self.0.lock().ok()?;
            match all.get(&tenant) {
                Some((l, limiter)) if *l == limit => Arc::clone(limiter),
                _ => {
                    let limiter = Arc::new(DefaultKeyedRateLimiter::keyed(quota(limit)));
                    all.insert(tenant, (limit, Arc::clone(&limiter)));
                    limiter
                }
            }
        };
        limiter
            .check_key(&principal)
            .err()
            .map(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Forgets principals whose budget is full again.
    fn shrink(&self) {
        if let Ok(all) = self.0.lock() {
            for (_, limiter) in all.values() {
                limiter.retain_recent();
                limiter.shrink_to_fit();
            }
        }
    }
}

fn quota(limit: RateLimit) -> Quota {
    let per_minute = limit.per_minute.max(1);
    let period = (Duration::from_secs(60) / per_minute).max(Duration::from_nanos(1));
    let burst = NonZeroU32::new(limit.burst).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(burst)
}

/// A principal's denials in its current alert window.
struct DenialWindow {
    started: Instant,
    length: Duration,
    denials: u32,
    alerted: bool,
}

/// A principal's refused calls in its current window.
struct RefusalWindow {
    started: Instant,
    length: Duration,
    refused: u64,
    /// The last refused call's caller and limit, to record the window's
    /// refusals when it ends.
    last: (Arc<Authenticated>, Limit),
}

fn ended(started: Instant, length: Duration, now: Instant) -> bool {
    now.duration_since(started) >= length
}

/// What a denial calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DenialNoted {
    /// The alert threshold was just crossed: the denials counted in the
    /// window.
    pub alert: Option<u32>,
}

/// The refusals of one ended window, to be recorded.
struct EndedWindow {
    caller: Arc<Authenticated>,
    limit: Limit,
    refused: u64,
    length: Duration,
}

/// The in-memory state of the abuse controls of one server.
#[derive(Default)]
pub struct AbuseGuard {
    denied: Limiters,
    calls: Limiters,
    blocked: RwLock<HashMap<Key, (Instant, Limit)>>,
    denials: Mutex<HashMap<Key, DenialWindow>>,
    refusals: Mutex<HashMap<Key, RefusalWindow>>,
}

fn window_length(settings: &TenantSettings) -> Duration {
    Duration::from_secs(u64::from(settings.denial_alert.window_secs.max(1)))
}

impl AbuseGuard {
    /// Whether the caller may make a call now.
    pub fn admit(&self, caller: &Authenticated) -> Result<(), Refusal> {
        let (Some(tenant), Some(principal)) = (caller.tenant(), caller.principal()) else {
            return Ok(());
        };
        let key = (tenant.id, principal.id);
        if let Ok(blocked) = self.blocked.read()
            && let Some((until, limit)) = blocked.get(&key)
        {
            let now = Instant::now();
            if *until > now {
                return Err(Refusal {
                    limit: *limit,
                    retry_after: *until - now,
                });
            }
        }
        let limit = tenant.settings.call_limit;
        if limit.enabled
            && let Some(wait) = self.calls.check(tenant.id, principal.id, limit)
        {
            return Err(Refusal {
                limit: Limit::Calls,
                retry_after: wait,
            });
        }
        Ok(())
    }

    /// Counts a refusal; true if it is the first of the principal's window
    /// (recorded at once; the rest are counted into one event when the
    /// window ends).
    fn note_refusal(&self, caller: &Arc<Authenticated>, limit: Limit) -> bool {
        let (Some(tenant), Some(principal)) = (caller.tenant(), caller.principal()) else {
            return false;
        };
        let Ok(mut refusals) = self.refusals.lock() else {
            return false;
        };
        let now = Instant::now();
        let key = (tenant.id, principal.id);
        match refusals.get_mut(&key) {
            // An ended window is recorded (and removed) by the sweeper
            // within a second; refusals meanwhile still count into it.
            Some(w) => {
                w.refused += 1;
                w.last = (Arc::clone(caller), limit);
                false
            }
            None => {
                refusals.insert(
                    key,
                    RefusalWindow {
                        started: now,
                        length: window_length(&tenant.settings),
                        refused: 1,
                        last: (Arc::clone(caller), limit),
                    },
                );
                true
            }
        }
    }

    /// Counts a denial of the scope's principal: takes a cell of its
    /// denied-call budget (blocking the principal when none is left) and
    /// counts it towards the alert.
    fn note_denial(&self, scope: &TenantScope<'_>) -> DenialNoted {
        let tenant = scope.tenant();
        let principal = scope.principal();
        let key = (tenant.id, principal.id);
        let limit = tenant.settings.denied_call_limit;
        if limit.enabled
            && let Some(wait) = self.denied.check(tenant.id, principal.id, limit)
            && let Ok(mut blocked) = self.blocked.write()
        {
            blocked.insert(key, (Instant::now() + wait, Limit::DeniedCalls));
        }
        let Ok(mut denials) = self.denials.lock() else {
            return DenialNoted { alert: None };
        };
        let now = Instant::now();
        let length = window_length(&tenant.settings);
        let w = denials.entry(key).or_insert(DenialWindow {
            started: now,
            length,
            denials: 0,
            alerted: false,
        });
        if ended(w.started, w.length, now) {
            *w = DenialWindow {
                started: now,
                length,
                denials: 0,
                alerted: false,
            };
        }
        w.denials += 1;
        if w.denials >= tenant.settings.denial_alert.threshold && !w.alerted {
            w.alerted = true;
            return DenialNoted {
                alert: Some(w.denials),
            };
        }
        DenialNoted { alert: None }
    }

    /// Clears a principal's blocks and counts (an admin enabled it again).
    pub fn forgive(&self, tenant: TenantId, principal: PrincipalId) {
        if let Ok(mut blocked) = self.blocked.write() {
            blocked.remove(&(tenant, principal));
        }
        if let Ok(mut denials) = self.denials.lock() {
            denials.remove(&(tenant, principal));
        }
    }

    /// Removes ended windows and expired blocks; returns the ended windows
    /// with refusals to record.
    fn sweep(&self) -> Vec<EndedWindow> {
        let now = Instant::now();
        if let Ok(mut blocked) = self.blocked.write() {
            blocked.retain(|_, (until, _)| *until > now);
        }
        if let Ok(mut denials) = self.denials.lock() {
            denials.retain(|_, w| !ended(w.started, w.length, now));
        }
        let mut closed = Vec::new();
        if let Ok(mut refusals) = self.refusals.lock() {
            refusals.retain(|_, w| {
                if !ended(w.started, w.length, now) {
                    return true;
                }
                closed.push(EndedWindow {
                    caller: Arc::clone(&w.last.0),
                    limit: w.last.1,
                    refused: w.refused,
                    length: w.length,
                });
                false
            });
        }
        closed
    }

    /// Forgets idle principals' limiter state.
    fn shrink(&self) {
        self.denied.shrink();
        self.calls.shrink();
    }
}

/// Records the refusals of ended windows (and trims idle state) once a
/// second, until the vault is dropped.
pub fn spawn_sweeper(guard: Weak<AbuseGuard>, store: Arc<dyn Store>, timeout: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut ticks: u64 = 0;
        loop {
            tick.tick().await;
            let Some(guard) = guard.upgrade() else { return };
            ticks += 1;
            if ticks.is_multiple_of(60) {
                guard.shrink();
            }
            for w in guard.sweep() {
                // The first refusal is recorded already; a window with no
                // other leaves nothing more to say.
                if w.refused < 2 {
                    continue;
                }
                let Ok(scope) = w.caller.tenant_scope() else {
                    continue;
                };
                let mut draft =
                    scope.audit(Action::RateLimited, Outcome::Denied, w.limit.reason_code());
                draft.detail = Some(format!(
                    "refused={} window_secs={} window=ended",
                    w.refused,
                    w.length.as_secs()
                ));
                record(store.as_ref(), &scope, draft, timeout).await;
            }
        }
    });
}

/// Appends an abuse-control event; a failure is logged (the refusal or
/// denial it is about stands either way).
async fn record(store: &dyn Store, scope: &TenantScope<'_>, draft: AuditDraft, timeout: Duration) {
    let action = draft.action.as_str();
    match tokio::time::timeout(timeout, store.append_audit(scope, draft)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::error!(error = %e, action, "could not record an abuse-control event")
        }
        Err(_) => tracing::error!(action, "recording an abuse-control event timed out"),
    }
}

impl Vault {
    /// Refuses the call if a rate limit of the caller says so; the first
    /// refusal of the caller's window is recorded in its tenant's chain.
    pub async fn admit(
        &self,
        caller: &Arc<Authenticated>,
        ctx: &CallContext,
        rpc: &'static str,
    ) -> Result<(), Refusal> {
        let Err(refusal) = self.abuse().admit(caller) else {
            return Ok(());
        };
        if self.abuse().note_refusal(caller, refusal.limit)
            && let Ok(scope) = caller.tenant_scope()
        {
            let mut draft = ctx.stamp(scope.audit(
                Action::RateLimited,
                Outcome::Denied,
                refusal.limit.reason_code(),
            ));
            draft.detail = Some(format!(
                "refused=1 window=first rpc={rpc} retry_after_ms={}",
                refusal.retry_after.as_millis()
            ));
            record(
                self.store().as_ref(),
                &scope,
                draft,
                self.limits().audit_timeout,
            )
            .await;
        }
        Err(refusal)
    }

    /// Counts a denial (recorded already) of the scope's principal: may
    /// block it, raise the alert event and lock it.
    pub(crate) async fn denial_noted(&self, scope: &TenantScope<'_>, denial: &AuditDraft) {
        let Some(denials) = self.abuse().note_denial(scope).alert else {
            return;
        };
        let settings = &scope.tenant().settings;
        let principal = scope.principal();
        let lock = settings.denial_alert.auto_lock && principal.role != Role::Admin;
        let mut alert = scope.audit(
            Action::AlertRepeatedDenials,
            Outcome::Denied,
            "DENIAL_THRESHOLD",
        );
        alert.peer.clone_from(&denial.peer);
        alert.request_id.clone_from(&denial.request_id);
        alert.trace_id.clone_from(&denial.trace_id);
        alert.detail = Some(format!(
            "principal={} denials={denials} window_secs={} threshold={} lock={lock}",
            principal.id, settings.denial_alert.window_secs, settings.denial_alert.threshold
        ));
        tracing::warn!(
            tenant = %scope.tenant_id(),
            principal = %principal.id,
            denials,
            lock,
            "repeated denials: alert raised"
        );
        let timeout = self.limits().audit_timeout;
        record(self.store().as_ref(), scope, alert, timeout).await;
        if !lock {
            return;
        }
        let mut draft = scope.audit(Action::PrincipalLock, Outcome::Allowed, "DENIAL_THRESHOLD");
        draft.peer.clone_from(&denial.peer);
        draft.request_id.clone_from(&denial.request_id);
        draft.detail = Some(format!(
            "principal={} status=disabled reason=locked after {denials} denials",
            principal.id
        ));
        match tokio::time::timeout(
            timeout,
            self.store().set_principal_status(
                scope,
                principal.id,
                PrincipalStatus::Disabled,
                draft,
            ),
        )
        .await
        {
            Ok(Ok(_)) => self.callers_changed(scope.tenant_id()),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "could not lock a principal after repeated denials")
            }
            Err(_) => tracing::error!("locking a principal after repeated denials timed out"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(per_minute: u32, burst: u32) -> RateLimit {
        RateLimit {
            enabled: true,
            per_minute,
            burst,
        }
    }

    #[test]
    fn quota_follows_the_setting() {
        let q = quota(limit(60, 20));
        assert_eq!(q.replenish_interval(), Duration::from_secs(1));
        assert_eq!(q.burst_size().get(), 20);
        let q = quota(limit(600, 100));
        assert_eq!(q.replenish_interval(), Duration::from_millis(100));
    }

    #[test]
    fn a_spent_budget_names_the_wait_and_a_new_limit_starts_afresh() {
        let limiters = Limiters::default();
        let tenant = TenantId::generate();
        let principal = PrincipalId::generate();
        let other = PrincipalId::generate();
        for _ in 0..5 {
            assert_eq!(limiters.check(tenant, principal, limit(60, 5)), None);
        }
        let wait = limiters
            .check(tenant, principal, limit(60, 5))
            .unwrap_or_default();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        // Per principal: another one has its own budget.
        assert_eq!(limiters.check(tenant, other, limit(60, 5)), None);
        // A changed limit replaces the tenant's limiter.
        assert_eq!(limiters.check(tenant, principal, limit(60, 6)), None);
    }
}
