//! The background tasks a server starts beside serving (see
//! [`super::App`]): the root-key reports, the re-wrapping of data keys, the
//! failed-authentication flush, the lease sweeper, the rotation monitor;
//! each runs until the server stops. Also the signal that stops it.

use std::sync::Arc;

use strongroom_core::scope::{SystemScope, SystemTask};
use strongroom_engine::Engine;
use tokio::sync::watch;

/// Reports this replica's root keys every heartbeat (see the engine's
/// `root_rotation.rs`) until the server stops (which then removes the
/// report).
pub(super) async fn report_root_keys(engine: Arc<Engine>, mut stopping: watch::Receiver<bool>) {
    let system = SystemScope::for_task(SystemTask::KeyRotation);
    let mut ticks = tokio::time::interval(engine.key_heartbeat());
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {
                if let Err(e) = engine.report_root_keys(&system).await {
                    tracing::warn!(error = %e, "cannot report this replica's root keys");
                }
            }
            _ = stopping.changed() => return,
        }
    }
}

/// Re-wraps data keys under tenants' new KEK versions (see the engine's
/// `tenant_keys.rs`): a pass when a KEK is added here, every heartbeat
/// otherwise, and at once again while a pass made progress.
pub(super) async fn rewrap_data_keys(engine: Arc<Engine>, mut stopping: watch::Receiver<bool>) {
    let system = SystemScope::for_task(SystemTask::KeyRotation);
    loop {
        let progressed = match engine.rewrap_data_keys(&system).await {
            Ok(n) => n > 0,
            Err(e) => {
                tracing::warn!(error = %e, "re-wrapping data keys failed");
                false
            }
        };
        if progressed && !*stopping.borrow() {
            continue;
        }
        tokio::select! {
            () = engine.rewrap_wait(engine.key_heartbeat()) => {}
            _ = stopping.changed() => return,
        }
    }
}

/// Records coalesced failed authentications once their window has passed
/// (see `Engine::flush_failed_authentications`), until the server stops.
pub(super) async fn flush_failed_authentications(
    engine: Arc<Engine>,
    mut stopping: watch::Receiver<bool>,
) {
    let system = SystemScope::for_task(SystemTask::FailedAuthentications);
    let mut ticks = tokio::time::interval(strongroom_engine::FAILED_AUTH_WINDOW);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => engine.flush_failed_authentications(&system).await,
            _ = stopping.changed() => return,
        }
    }
}

/// Expires the leases that ran out, then the access requests nobody
/// answered in time, every `interval`, until the server stops (see
/// `Engine::expire_leases`, `Engine::expire_access_requests`: one server
/// sweeps at a time, under the same lock), and purges the idempotency
/// records whose retention window has passed (`Engine::purge_retries`); a
/// failed pass is logged and the next one tries again.
pub(super) async fn sweep_leases(
    engine: Arc<Engine>,
    interval: std::time::Duration,
    mut stopping: watch::Receiver<bool>,
) {
    let system = SystemScope::for_task(SystemTask::LeaseSweeper);
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {
                match engine.expire_leases(&system).await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(expired = n, "leases expired"),
                    Err(e) => tracing::warn!(error = %e, "the lease sweep failed"),
                }
                match engine.expire_access_requests(&system).await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(expired = n, "access requests expired"),
                    Err(e) => tracing::warn!(error = %e, "the access request sweep failed"),
                }
                match engine.purge_retries(&system).await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(purged = n, "expired idempotency records purged"),
                    Err(e) => tracing::warn!(error = %e, "the idempotency purge failed"),
                }
            }
            _ = stopping.changed() => return,
        }
    }
}

/// Marks expired credentials and records the rotation reminders due, every
/// `interval`, until the server stops (see `Engine::monitor_rotation`: one
/// server's monitor works at a time, and what was reminded is stored); a
/// failed pass is logged and the next one tries again.
pub(super) async fn monitor_rotation(
    engine: Arc<Engine>,
    interval: std::time::Duration,
    mut stopping: watch::Receiver<bool>,
) {
    let system = SystemScope::for_task(SystemTask::RotationMonitor);
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => match engine.monitor_rotation(&system).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(reminders = n, "rotation reminders recorded"),
                Err(e) => tracing::warn!(error = %e, "the rotation monitor's pass failed"),
            },
            _ = stopping.changed() => return,
        }
    }
}

pub(super) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
