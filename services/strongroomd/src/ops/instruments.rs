//! The server's instruments besides the per-call ones (`edge::metrics`),
//! made from the one meter both readers (OTLP and `/metrics`) read:
//!
//! - `strongroom.audit.batch.size` (histogram, events) and
//!   `strongroom.audit.batch.duration` (histogram, milliseconds): each
//!   group-commit batch of audit events, recorded by the store's
//!   committers once per batch (`strongroom_store::BatchObserver`);
//! - `strongroom.cache.lookups` (counter; `cache`: `callers`, `grants`,
//!   `credentials`; `result`: `hit`, `miss`): read at collection from the
//!   engine's relaxed atomic counters, so a lookup costs one increment;
//! - `strongroom.db.pool.connections` (gauge; `state`: `idle`, `used`)
//!   and `strongroom.db.pool.max` (gauge): the database pool, read at
//!   collection;
//! - `strongroom.tls.crl.stale` (gauge): client CRLs in force whose
//!   nextUpdate has passed (also logged at every check of the TLS files);
//! - `strongroom.notifier.deliveries` (counter; `outcome`: `delivered`,
//!   `retrying`, `given_up`): the webhook notifier's attempts, counted by
//!   its task after each pass (`crate::notifier::run`).
//!
//! No label names a tenant, principal or credential.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Histogram, Meter};
use strongroom_engine::Engine;
use strongroom_engine::cache::CacheKind;

/// Audit batch sizes and their commit latency.
pub struct BatchMetrics {
    size: Histogram<u64>,
    duration: Histogram<f64>,
}

impl BatchMetrics {
    /// Instruments of `meter`.
    pub fn new(meter: &Meter) -> Self {
        Self {
            size: meter
                .u64_histogram("strongroom.audit.batch.size")
                .with_unit("{event}")
                .with_description("Audit events committed together in one group-commit batch")
                .with_boundaries(vec![
                    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0,
                ])
                .build(),
            duration: meter
                .f64_histogram("strongroom.audit.batch.duration")
                .with_unit("ms")
                .with_description("Time to run and commit one group-commit batch of audit events")
                .with_boundaries(vec![
                    0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0,
                ])
                .build(),
        }
    }
}

impl strongroom_store::BatchObserver for BatchMetrics {
    fn batch(&self, jobs: usize, elapsed: Duration) {
        self.size
            .record(u64::try_from(jobs).unwrap_or(u64::MAX), &[]);
        self.duration.record(elapsed.as_secs_f64() * 1000.0, &[]);
    }
}

/// Registers `strongroom.cache.lookups`, read from `engine` at each
/// collection.
pub fn observe_caches(meter: &Meter, engine: &Arc<Engine>) {
    let engine = Arc::downgrade(engine);
    let _counter = meter
        .u64_observable_counter("strongroom.cache.lookups")
        .with_description("Cache lookups since start-up, by cache and result")
        .with_callback(move |observer| {
            let Some(engine) = engine.upgrade() else {
                return;
            };
            for (kind, (hits, misses)) in CacheKind::ALL.into_iter().zip(engine.cache_lookups()) {
                let cache = KeyValue::new("cache", kind.name());
                observer.observe(hits, &[cache.clone(), KeyValue::new("result", "hit")]);
                observer.observe(misses, &[cache, KeyValue::new("result", "miss")]);
            }
        })
        .build();
}

/// The size of a pool, its idle connections and its most connections.
pub type PoolState = Box<dyn Fn() -> (u32, usize, u32) + Send + Sync>;

/// Registers the pool gauges, read through `state` at each collection.
pub fn observe_pool(meter: &Meter, state: PoolState) {
    let state = Arc::new(state);
    let read = Arc::clone(&state);
    let _connections = meter
        .u64_observable_gauge("strongroom.db.pool.connections")
        .with_description("Open database connections of the pool, idle or in use")
        .with_callback(move |observer| {
            let (size, idle, _) = read();
            let idle = u64::try_from(idle).unwrap_or(u64::MAX);
            observer.observe(
                u64::from(size).saturating_sub(idle),
                &[KeyValue::new("state", "used")],
            );
            observer.observe(idle, &[KeyValue::new("state", "idle")]);
        })
        .build();
    let _max = meter
        .u64_observable_gauge("strongroom.db.pool.max")
        .with_description("Most connections the database pool opens")
        .with_callback(move |observer| observer.observe(u64::from(state().2), &[]))
        .build();
}

/// Registers `strongroom.tls.crl.stale`: the client CRLs in force whose
/// nextUpdate has passed, read from `trust` at each collection.
pub fn observe_crls(meter: &Meter, trust: &Arc<crate::tls::ClientTrust>) {
    let trust = Arc::downgrade(trust);
    let _stale = meter
        .u64_observable_gauge("strongroom.tls.crl.stale")
        .with_description("Client CRLs in force whose nextUpdate has passed")
        .with_callback(move |observer| {
            let Some(trust) = trust.upgrade() else {
                return;
            };
            let stale = trust.stale_crls(crate::tls::unix_now()).len();
            observer.observe(u64::try_from(stale).unwrap_or(u64::MAX), &[]);
        })
        .build();
}
