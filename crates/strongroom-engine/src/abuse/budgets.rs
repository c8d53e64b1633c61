//! The rate limits' budgets: one state per principal, counted by
//! governor's GCRA whatever limit a call brings.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::Clock;
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::state::keyed::ShrinkableKeyedStateStore;
use governor::{Quota, RateLimiter};
use strongroom_core::ids::{PrincipalId, TenantId};
use strongroom_core::tenant::RateLimit;

use super::{Key, lock};

/// Principals' budgets, spread over a few locks so that principals calling
/// at once seldom wait for each other.
const SHARDS: usize = 16;

/// One kind of limit's budgets (denied calls, or all calls), per principal,
/// counted by governor's GCRA: each principal has one state, the instant
/// its budget is whole again (GCRA's theoretical arrival time), whatever
/// limit a call brings. A call allowed under a limit of `per_minute`
/// pushes that instant `60 s / per_minute` later, and a limit allows a call
/// while it is at most `burst - 1` such periods away; so a change of limit
/// (or calls bringing two snapshots of the settings in turn) never brings
/// it nearer: what a principal spent stays spent, as the time it takes to
/// regain it, and comes back at one second a second.
#[derive(Default)]
pub(super) struct Budgets([Mutex<HashMap<Key, Instant>>; SHARDS]);

impl Budgets {
    pub(super) fn shard(&self, principal: PrincipalId) -> &Mutex<HashMap<Key, Instant>> {
        // UUID v7: the low bits are random.
        let (_, low) = principal.as_uuid().as_u64_pair();
        &self.0[(low % SHARDS as u64) as usize]
    }

    /// Takes one call of `principal`'s budget under `limit` at `now`; the
    /// wait until one is regained if none is left.
    pub(super) fn check(
        &self,
        tenant: TenantId,
        principal: PrincipalId,
        limit: RateLimit,
        now: Instant,
    ) -> Option<Duration> {
        // A limiter is a little arithmetic to set up and holds no state of
        // its own: one per check lets every limit read and write the same
        // state, at the check's instant.
        let limiter: RateLimiter<Key, BudgetsAt<'_>, At> =
            RateLimiter::new(quota(limit), BudgetsAt { budgets: self, now }, At(now));
        limiter
            .check_key(&(tenant, principal))
            .err()
            .map(|not_until| not_until.wait_time_from(now))
    }

    /// Forgets principals whose budget is whole again.
    pub(super) fn shrink(&self, now: Instant) {
        let budgets = BudgetsAt { budgets: self, now };
        budgets.retain_recent(Nanos::new(0));
        budgets.shrink_to_fit();
    }
}

/// The quota governor enforces for a limit: a call regained every
/// `60 s / per_minute`, bursts of `burst`.
pub(super) fn quota(limit: RateLimit) -> Quota {
    let per_minute = NonZeroU32::new(limit.per_minute).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(limit.burst).unwrap_or(NonZeroU32::MIN);
    Quota::per_minute(per_minute).allow_burst(burst)
}

/// The instant of one check, as governor's clock: the caller tells the
/// time.
struct At(Instant);

impl Clock for At {
    type Instant = Instant;

    fn now(&self) -> Instant {
        self.0
    }
}

/// [`Budgets`] as governor's state store for a check at `now`: a limiter
/// counts time from the instant it was made, here `now`, so each
/// principal's instant is handed over as the time from `now` until then
/// (none left: nothing owed) and kept as an instant.
struct BudgetsAt<'a> {
    budgets: &'a Budgets,
    now: Instant,
}

impl StateStore for BudgetsAt<'_> {
    type Key = Key;

    fn measure_and_replace<T, F, E>(&self, key: &Key, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        // The lock is held across the decision, so no other check of the
        // principal comes between reading its state and replacing it.
        let mut shard = lock(self.budgets.shard(key.1));
        match shard.entry(*key) {
            Entry::Occupied(mut whole_at) => {
                let owed = whole_at.get().saturating_duration_since(self.now);
                let (outcome, next) = f(Some(Nanos::from(owed)))?;
                whole_at.insert(self.now + Duration::from(next));
                Ok(outcome)
            }
            Entry::Vacant(whole_at) => {
                let (outcome, next) = f(None)?;
                whole_at.insert(self.now + Duration::from(next));
                Ok(outcome)
            }
        }
    }
}

impl ShrinkableKeyedStateStore<Key> for BudgetsAt<'_> {
    fn retain_recent(&self, drop_below: Nanos) {
        let keep_after = self.now + Duration::from(drop_below);
        for shard in &self.budgets.0 {
            lock(shard).retain(|_, whole_at| *whole_at > keep_after);
        }
    }

    fn shrink_to_fit(&self) {
        for shard in &self.budgets.0 {
            lock(shard).shrink_to_fit();
        }
    }

    fn len(&self) -> usize {
        self.budgets.0.iter().map(|shard| lock(shard).len()).sum()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
