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
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strongroom_core::idempotency::RequestKey;
use strongroom_core::ids::TenantId;
use strongroom_core::store::Store;
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

mod ports;

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
