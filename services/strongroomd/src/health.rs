//! Whether the server serves, in one place: it is draining (SIGTERM), or
//! its database has stopped answering (an outage, or a database too slow
//! to answer a one-row query in time). gRPC health (`grpc.health.v1`,
//! every service and the server as a whole), `/readyz` and the request
//! edge all read it:
//!
//! - a background monitor probes the database every quarter of
//!   `database.unavailable_after_ms`, each probe bounded by half of it (on
//!   Postgres a connection of its own, outside the pool, so a pool busy
//!   with calls is not taken for an outage); two failed probes in a row mark
//!   the database down, the first one that answers marks it up again;
//! - while the database is down the edge answers calls that need it
//!   UNAVAILABLE at once, and calls already in flight UNAVAILABLE within
//!   an eighth of `database.unavailable_after_ms` (see `edge::timeout`):
//!   no call waits on a database that is gone. Health and reflection
//!   still answer.
//!
//! Nothing needs restarting when the database returns: the pool reconnects,
//! the change listener reconnects (dropping every cache once), and the
//! next probe that answers turns health back to SERVING.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use strongroom_core::store::{Store, meta};
use tokio::sync::watch;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// The services whose health is reported (besides the server's, "").
pub const SERVICES: [&str; 5] = [
    "strongroom.v1.CredentialService",
    "strongroom.v1.PolicyService",
    "strongroom.v1.AuditService",
    "strongroom.v1.AdminService",
    "strongroom.v1.RelayService",
];

/// The server's health: draining, and whether the database answers.
#[derive(Debug)]
pub struct Health {
    database_down: AtomicBool,
    draining: AtomicBool,
    unavailable_after: Duration,
    /// Bumped on every change, for whoever reports it.
    changed: watch::Sender<()>,
    /// gRPC health, once reported.
    reporter: std::sync::OnceLock<HealthReporter>,
}

impl Health {
    /// A healthy server whose database is declared down once it has not
    /// answered for `unavailable_after`.
    pub fn new(unavailable_after: Duration) -> Arc<Self> {
        Arc::new(Self {
            database_down: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            unavailable_after,
            changed: watch::channel(()).0,
            reporter: std::sync::OnceLock::new(),
        })
    }

    /// Whether the database is down (the last probe failed).
    pub fn database_down(&self) -> bool {
        self.database_down.load(Ordering::Relaxed)
    }

    /// Whether the server is draining.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Whether the server takes calls: not draining, database up.
    pub fn serving(&self) -> bool {
        !self.draining() && !self.database_down()
    }

    /// How often a call in flight checks whether the database went down.
    pub fn check_every(&self) -> Duration {
        self.unavailable_after / 8
    }

    /// The server starts draining: NOT_SERVING from now on, published to
    /// gRPC health watchers before this returns.
    pub async fn drain(&self) {
        if !self.draining.swap(true, Ordering::Relaxed) {
            if let Some(reporter) = self.reporter.get() {
                publish(reporter, false).await;
            }
            self.changed.send_replace(());
        }
    }

    fn set_database_down(&self, down: bool) {
        if self.database_down.swap(down, Ordering::Relaxed) != down {
            self.changed.send_replace(());
        }
    }

    /// Sets every service's gRPC health to match, now and on every change,
    /// until the server stops.
    pub async fn report(self: &Arc<Self>, reporter: HealthReporter) {
        publish(&reporter, self.serving()).await;
        let _ = self.reporter.set(reporter.clone());
        let health = Arc::clone(self);
        let mut changed = self.changed.subscribe();
        tokio::spawn(async move {
            while changed.changed().await.is_ok() {
                publish(&reporter, health.serving()).await;
            }
        });
    }

    /// Probes the database with `probe` until `stopping` turns true (see
    /// the module documentation).
    pub fn spawn_monitor(self: &Arc<Self>, mut probe: Probe, mut stopping: watch::Receiver<bool>) {
        let health = Arc::clone(self);
        let every = self.unavailable_after / 4;
        let limit = self.unavailable_after / 2;
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // Failed probes in a row: one alone may be a busy machine's
            // stall, so two are needed to declare the database down (a
            // probe that times out is followed by the next one at once, so
            // a stalled database is still declared down within
            // `unavailable_after`).
            let mut failures = 0u32;
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    _ = stopping.changed() => return,
                }
                match probe.check(limit).await {
                    Ok(()) => {
                        failures = 0;
                        if health.database_down() {
                            tracing::info!("the database answers again: serving");
                        }
                        health.set_database_down(false);
                    }
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        if failures < 2 {
                            tracing::debug!(error = %e, "a database probe failed; the next one decides");
                            continue;
                        }
                        if !health.database_down() {
                            tracing::warn!(error = %e, "the database does not answer: calls that need it are answered UNAVAILABLE, health is NOT_SERVING");
                        }
                        health.set_database_down(true);
                    }
                }
            }
        });
    }
}

async fn publish(reporter: &HealthReporter, serving: bool) {
    let status = if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    reporter.set_service_status("", status).await;
    for service in SERVICES {
        reporter.set_service_status(service, status).await;
    }
}

/// How the monitor asks the database whether it answers.
pub enum Probe {
    /// Postgres, on a connection of its own.
    Postgres(Box<strongroom_store::PgProbe>),
    /// A one-row read through the store (SQLite: a local file).
    Store(Arc<dyn Store>),
}

impl Probe {
    async fn check(&mut self, limit: Duration) -> Result<(), String> {
        match self {
            Probe::Postgres(probe) => probe.check().await.map_err(|e| e.to_string()),
            Probe::Store(store) => {
                match tokio::time::timeout(limit, store.get_meta(meta::KEY_CHECK)).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!(
                        "the database did not answer within {} ms",
                        limit.as_millis()
                    )),
                }
            }
        }
    }
}
