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
//! The limits are counted by `governor` (GCRA). A principal's spent budget
//! is kept per principal, not per setting: when the tenant changes a limit,
//! or calls arrive with two snapshots of the tenant's settings in turn
//! (callers are cached per identity, so two workloads of one principal may
//! carry settings of different ages), every limit reads the same state, the
//! instant the principal's budget is whole again. A change never brings
//! that instant nearer, so it never refills a budget: each allowed call
//! costs the time in which the limit it brought regains one call, and a
//! limit allows a call while what is owed, with that call, is at most its
//! burst's worth.
//!
//! The guard fails closed: a lock poisoned by a panic elsewhere is taken
//! over as it is (its maps hold plain values, whole after any panic), so no
//! check is ever skipped.
//!
//! All of this state is in memory, per server: with N servers behind a load
//! balancer a principal may get up to N times each limit, and counts start
//! afresh when a server restarts.

use std::collections::HashMap;
use std::sync::{
    Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak,
};
use std::time::{Duration, Instant};

use strongroom_core::audit::{Action, AuditDetail, AuditDraft, Outcome};
use strongroom_core::ids::{PrincipalId, TenantId};
use strongroom_core::policy::Reason;
use strongroom_core::principal::{PrincipalStatus, Role};
use strongroom_core::scope::{Authenticated, TenantScope};
use strongroom_core::store::Store;
use strongroom_core::tenant::{RateLimit, TenantSettings};
use strongroom_core::time::Clock as EngineClock;

use crate::{CallContext, Engine};

mod budgets;

use budgets::Budgets;

/// A principal of a tenant.
type Key = (TenantId, PrincipalId);

/// Which limit refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Too many denied calls.
    DeniedCalls,
    /// Too many calls.
    Calls,
    /// Too many text scans.
    Scans,
    /// Too many leak reports.
    LeakReports,
}

impl Limit {
    /// The reason recorded for its refusals.
    pub const fn reason(&self) -> Reason {
        match self {
            Self::DeniedCalls => Reason::DeniedCallLimit,
            Self::Calls | Self::Scans | Self::LeakReports => Reason::CallLimit,
        }
    }

    /// What the caller is told.
    pub const fn explain(&self) -> &'static str {
        match self {
            Self::DeniedCalls => "too many denied calls",
            Self::Calls => "too many calls",
            Self::Scans => "too many scans",
            Self::LeakReports => "too many leak reports",
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

/// Takes `mutex` even if a panic poisoned it: the abuse state holds plain
/// values that are whole after any panic, and skipping a check would admit
/// calls (fail open).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Reads `lock` even if a panic poisoned it (see [`lock`]).
fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

/// Writes `lock` even if a panic poisoned it (see [`lock`]).
fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
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
    denied: Budgets,
    calls: Budgets,
    scans: Budgets,
    leak_reports: Budgets,
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
        self.admit_at((tenant.id, principal.id), &tenant.settings, Instant::now)
    }

    /// Whether the principal `key` may make a call now (`clock` tells the
    /// time, only when a limit needs it), under its tenant's `settings`.
    fn admit_at(
        &self,
        key: Key,
        settings: &TenantSettings,
        clock: impl Fn() -> Instant,
    ) -> Result<(), Refusal> {
        if let Some((until, limit)) = read(&self.blocked).get(&key) {
            let now = clock();
            if *until > now {
                return Err(Refusal {
                    limit: *limit,
                    retry_after: *until - now,
                });
            }
        }
        let limit = settings.call_limit;
        if limit.enabled
            && let Some(wait) = self.calls.check(key.0, key.1, limit, clock())
        {
            return Err(Refusal {
                limit: Limit::Calls,
                retry_after: wait,
            });
        }
        Ok(())
    }

    /// Whether the scope's principal may scan a text now, under `limit`
    /// (its own budget, apart from the call limit).
    pub(crate) fn admit_scan(
        &self,
        scope: &TenantScope<'_>,
        limit: RateLimit,
    ) -> Result<(), Refusal> {
        if !limit.enabled {
            return Ok(());
        }
        match self.scans.check(
            scope.tenant_id(),
            scope.principal().id,
            limit,
            Instant::now(),
        ) {
            None => Ok(()),
            Some(wait) => Err(Refusal {
                limit: Limit::Scans,
                retry_after: wait,
            }),
        }
    }

    /// Whether the scope's principal may report a leak now, under `limit`
    /// (its own budget: a report may revoke grants and write alerts).
    pub(crate) fn admit_leak_report(
        &self,
        scope: &TenantScope<'_>,
        limit: RateLimit,
    ) -> Result<(), Refusal> {
        if !limit.enabled {
            return Ok(());
        }
        match self.leak_reports.check(
            scope.tenant_id(),
            scope.principal().id,
            limit,
            Instant::now(),
        ) {
            None => Ok(()),
            Some(wait) => Err(Refusal {
                limit: Limit::LeakReports,
                retry_after: wait,
            }),
        }
    }

    /// Counts a refusal; true if it is the first of the principal's window
    /// (recorded at once; the rest are counted into one event when the
    /// window ends).
    fn note_refusal(&self, caller: &Arc<Authenticated>, limit: Limit) -> bool {
        let (Some(tenant), Some(principal)) = (caller.tenant(), caller.principal()) else {
            return false;
        };
        let mut refusals = lock(&self.refusals);
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
        self.note_denial_at(
            (tenant.id, scope.principal().id),
            &tenant.settings,
            Instant::now(),
        )
    }

    /// Counts a denial of the principal `key` at `now`, under its tenant's
    /// `settings`.
    fn note_denial_at(&self, key: Key, settings: &TenantSettings, now: Instant) -> DenialNoted {
        let limit = settings.denied_call_limit;
        if limit.enabled
            && let Some(wait) = self.denied.check(key.0, key.1, limit, now)
        {
            write(&self.blocked).insert(key, (now + wait, Limit::DeniedCalls));
        }
        let mut denials = lock(&self.denials);
        let length = window_length(settings);
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
        if w.denials >= settings.denial_alert.threshold && !w.alerted {
            w.alerted = true;
            return DenialNoted {
                alert: Some(w.denials),
            };
        }
        DenialNoted { alert: None }
    }

    /// Clears a principal's blocks and counts (an admin enabled it again).
    pub fn forgive(&self, tenant: TenantId, principal: PrincipalId) {
        write(&self.blocked).remove(&(tenant, principal));
        lock(&self.denials).remove(&(tenant, principal));
    }

    /// Removes ended windows and expired blocks; returns the ended windows
    /// with refusals to record.
    fn sweep(&self) -> Vec<EndedWindow> {
        let now = Instant::now();
        write(&self.blocked).retain(|_, (until, _)| *until > now);
        lock(&self.denials).retain(|_, w| !ended(w.started, w.length, now));
        let mut closed = Vec::new();
        lock(&self.refusals).retain(|_, w| {
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
        closed
    }

    /// Forgets the budgets of principals that regained them whole.
    fn shrink(&self) {
        let now = Instant::now();
        self.denied.shrink(now);
        self.calls.shrink(now);
        self.scans.shrink(now);
    }
}

/// Records the refusals of ended windows (and trims idle state) once a
/// second, until the vault is dropped.
pub fn spawn_sweeper(
    guard: Weak<AbuseGuard>,
    store: Arc<dyn Store>,
    timeout: Duration,
    clock: Arc<dyn EngineClock>,
) {
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
            let now = clock.now();
            for w in guard.sweep() {
                // The first refusal is recorded already; a window with no
                // other leaves nothing more to say.
                if w.refused < 2 {
                    continue;
                }
                let Ok(scope) = w.caller.tenant_scope() else {
                    continue;
                };
                let mut draft = scope.audit_at(
                    Action::RateLimited,
                    Outcome::Denied,
                    w.limit.reason().as_str(),
                    now,
                );
                draft.detail = Some(AuditDetail::RateLimitWindow {
                    refused: w.refused,
                    window_secs: w.length.as_secs(),
                });
                record(store.as_ref(), &scope, draft, timeout).await;
            }
        }
    });
}

/// The method name a refusal's event records: the caller chose it (any
/// path reaches the rate limit), so only a plausible RPC name (1 to 64 ASCII
/// letters, digits and underscores) is kept as sent.
fn recorded_rpc(rpc: &str) -> String {
    if (1..=64).contains(&rpc.len()) && rpc.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        rpc.to_owned()
    } else {
        "(not an RPC name)".to_owned()
    }
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

impl Engine {
    /// Whether the caller's rate limits let it make a call now: in memory,
    /// without waiting, on the path of every call. A refusal is answered
    /// to the caller and handed to [`Engine::record_rate_limited`].
    pub fn admit(&self, caller: &Authenticated) -> Result<(), Refusal> {
        self.abuse().admit(caller)
    }

    /// Notes a call [`Engine::admit`] refused; the first refusal of the
    /// caller's window is recorded in its tenant's chain, naming `rpc`.
    pub async fn record_rate_limited(
        &self,
        caller: &Arc<Authenticated>,
        ctx: &CallContext,
        rpc: &str,
        refusal: &Refusal,
    ) {
        if self.abuse().note_refusal(caller, refusal.limit)
            && let Ok(scope) = caller.tenant_scope()
        {
            let mut draft = self.draft(
                &scope,
                ctx,
                Action::RateLimited,
                Outcome::Denied,
                refusal.limit.reason(),
            );
            draft.detail = Some(AuditDetail::RateLimitFirst {
                rpc: recorded_rpc(rpc),
                retry_after_ms: u64::try_from(refusal.retry_after.as_millis()).unwrap_or(u64::MAX),
            });
            record(
                self.store().as_ref(),
                &scope,
                draft,
                self.limits().audit_timeout,
            )
            .await;
        }
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
        let mut alert = scope.audit_at(
            Action::AlertRepeatedDenials,
            Outcome::Denied,
            Reason::DenialThreshold.as_str(),
            self.now(),
        );
        alert.peer.clone_from(&denial.peer);
        alert.request_id.clone_from(&denial.request_id);
        alert.trace_id.clone_from(&denial.trace_id);
        alert.detail = Some(AuditDetail::DenialAlert {
            principal: principal.id,
            denials,
            window_secs: settings.denial_alert.window_secs,
            threshold: settings.denial_alert.threshold,
            lock,
        });
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
        self.lock_principal(scope, denial, Reason::DenialThreshold, denials)
            .await;
    }

    /// Disables the scope's principal (`principal.lock`, recorded with
    /// `reason`), as `auto_lock` does; `denials` is what the event counts
    /// (0 for a lock after misuse rather than a count of denials).
    pub(crate) async fn lock_principal(
        &self,
        scope: &TenantScope<'_>,
        cause: &AuditDraft,
        reason: Reason,
        denials: u32,
    ) {
        let principal = scope.principal();
        let timeout = self.limits().audit_timeout;
        let mut draft = scope.audit_at(
            Action::PrincipalLock,
            Outcome::Allowed,
            reason.as_str(),
            self.now(),
        );
        draft.peer.clone_from(&cause.peer);
        draft.request_id.clone_from(&cause.request_id);
        draft.detail = Some(AuditDetail::PrincipalLock {
            principal: principal.id,
            denials,
        });
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
                tracing::error!(error = %e, "could not lock a principal")
            }
            Err(_) => tracing::error!("locking a principal timed out"),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_a_plausible_rpc_name_is_recorded() {
        assert_eq!(super::recorded_rpc("RevealCredential"), "RevealCredential");
        for made_up in ["", "Reveal/../x", "name with space", &"A".repeat(65)] {
            assert_eq!(
                super::recorded_rpc(made_up),
                "(not an RPC name)",
                "{made_up:?}"
            );
        }
    }

    use super::budgets::quota;
    use super::*;
    use strongroom_core::tenant::RateLimit;

    fn limit(per_minute: u32, burst: u32) -> RateLimit {
        RateLimit {
            enabled: true,
            per_minute,
            burst,
        }
    }

    /// How many of `tries` checks at `at` pass.
    fn passed(budgets: &Budgets, key: Key, limit: RateLimit, at: Instant, tries: u32) -> u32 {
        (0..tries)
            .filter(|_| budgets.check(key.0, key.1, limit, at).is_none())
            .count() as u32
    }

    fn key() -> Key {
        (TenantId::generate(), PrincipalId::generate())
    }

    #[test]
    fn the_quota_follows_the_setting() {
        let q = quota(limit(60, 20));
        assert_eq!(q.replenish_interval(), Duration::from_secs(1));
        assert_eq!(q.burst_size().get(), 20);
        let q = quota(limit(600, 100));
        assert_eq!(q.replenish_interval(), Duration::from_millis(100));
        assert_eq!(q.burst_size().get(), 100);
    }

    #[test]
    fn a_spent_budget_names_the_wait_and_regains_at_the_limits_rate() {
        let budgets = Budgets::default();
        let (tenant, principal) = key();
        let other = PrincipalId::generate();
        let t0 = Instant::now();
        for _ in 0..5 {
            assert_eq!(budgets.check(tenant, principal, limit(60, 5), t0), None);
        }
        // Five calls owe 5 s; a sixth may come once 4 s are owed.
        assert_eq!(
            budgets.check(tenant, principal, limit(60, 5), t0),
            Some(Duration::from_secs(1))
        );
        // Per principal: another one has its own budget.
        assert_eq!(budgets.check(tenant, other, limit(60, 5), t0), None);
        // One call a second comes back.
        let t1 = t0 + Duration::from_millis(1500);
        assert_eq!(
            passed(&budgets, (tenant, principal), limit(60, 5), t1, 5),
            1
        );
        // Forgotten once regained whole (at t0 + 6 s), not before.
        budgets.shrink(t1 + Duration::from_secs(4));
        assert_eq!(lock(budgets.shard(principal)).len(), 1);
        budgets.shrink(t1 + Duration::from_secs(6));
        assert!(lock(budgets.shard(principal)).is_empty());
    }

    /// A changed limit, or two snapshots of the tenant's settings arriving
    /// in turn, never hands a principal a fresh budget. Every limit reads
    /// the same state, the instant the principal's budget is whole again,
    /// so what it spent is kept as the time it takes to regain it: with
    /// `owed` to regain, a limit regaining a call every `p` in bursts of
    /// `b` allows `b - ceil(owed / p)` calls at once (none if that is not
    /// positive), where a fresh budget would allow `b`.
    #[test]
    fn a_changed_limit_keeps_the_spent_budget() {
        let budgets = Budgets::default();
        let k = key();
        let t0 = Instant::now();
        let (a, b) = (limit(60, 20), limit(61, 21));
        assert_eq!(passed(&budgets, k, a, t0, 30), 20);
        // 20 s owed; `b` regains a call every 60/61 s, so that is 21 of
        // its calls (20.3 rounded up): none of its 21 is left.
        assert_eq!(passed(&budgets, k, b, t0, 30), 0);
        // Snapshots in turn, every 10 ms for a second: what is owed drains
        // at one second a second, whichever snapshot each call brings. At
        // 330 ms `b` allows one call (19.67 s owed is 20 of its periods,
        // room for one within its burst); that call owes 0.98 s more, so
        // the next would come at 1.31 s under `b` and at 1.98 s under `a`.
        let mut allowed = 0;
        for i in 0..100u32 {
            let at = t0 + Duration::from_millis(10 * u64::from(i));
            let limit = if i % 2 == 0 { a } else { b };
            allowed += passed(&budgets, k, limit, at, 1);
        }
        assert_eq!(allowed, 1, "calls allowed in a second");
        // A stricter limit counts what was spent under a laxer one, as the
        // time it takes to regain: 100 calls at 600 a minute owe 10 s,
        // which is 10 calls at 60 a minute, so 10 of its 20 are left; then
        // the next comes a second later.
        let k = key();
        assert_eq!(passed(&budgets, k, limit(600, 100), t0, 100), 100);
        assert_eq!(passed(&budgets, k, limit(60, 20), t0, 30), 10);
        assert_eq!(
            budgets.check(k.0, k.1, limit(60, 20), t0),
            Some(Duration::from_secs(1))
        );
        // And a laxer limit what was spent under a stricter one: 20 calls
        // at 60 a minute owe 20 s, more than the 9.9 s a limit of 600 a
        // minute in bursts of 100 lets a principal owe before a call.
        let k = key();
        assert_eq!(passed(&budgets, k, limit(60, 20), t0, 20), 20);
        assert_eq!(
            budgets.check(k.0, k.1, limit(600, 100), t0),
            Some(Duration::from_millis(10_100))
        );
    }

    fn settings(denied: RateLimit, calls: RateLimit) -> TenantSettings {
        TenantSettings {
            denied_call_limit: denied,
            call_limit: calls,
            ..TenantSettings::default()
        }
    }

    /// A panic while one of the guard's locks was held does not open it:
    /// a blocked principal stays blocked, and spent budgets stay spent.
    #[test]
    fn a_poisoned_lock_fails_closed() {
        let guard = AbuseGuard::default();
        let settings = settings(limit(60, 3), limit(60, 3));
        let now = Instant::now();
        let blocked = key();
        for _ in 0..4 {
            guard.note_denial_at(blocked, &settings, now);
        }
        let spent = key();
        for _ in 0..3 {
            assert_eq!(guard.admit_at(spent, &settings, || now), Ok(()));
        }

        let poison = |f: &dyn Fn()| {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        };
        poison(&|| {
            let _held = guard.blocked.write();
            panic!("poisons the blocks");
        });
        poison(&|| {
            let _held = guard.calls.shard(spent.1).lock();
            panic!("poisons the call budgets");
        });
        poison(&|| {
            let _held = guard.denied.shard(blocked.1).lock();
            panic!("poisons the denied-call budgets");
        });
        poison(&|| {
            let _held = guard.denials.lock();
            panic!("poisons the denial windows");
        });
        assert!(guard.blocked.is_poisoned());
        assert!(guard.calls.shard(spent.1).is_poisoned());

        let refusal = guard
            .admit_at(blocked, &settings, || now)
            .expect_err("a blocked principal stays blocked");
        assert_eq!(refusal.limit, Limit::DeniedCalls);
        let refusal = guard
            .admit_at(spent, &settings, || now)
            .expect_err("a spent call budget stays spent");
        assert_eq!(refusal.limit, Limit::Calls);
        // Denials go on being counted, and block.
        let other = key();
        for _ in 0..4 {
            guard.note_denial_at(other, &settings, now);
        }
        assert!(guard.admit_at(other, &settings, || now).is_err());
    }
}
