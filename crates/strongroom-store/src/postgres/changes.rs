//! Change notices between the servers sharing one Postgres database: a
//! committed change is announced with `pg_notify` (delivered at commit,
//! tagged with the committing store's origin) and every store's listener
//! hands the others' notices to its subscribers, for cache invalidation. A
//! lost listener connection is announced as [`Change::Everything`].

use std::sync::atomic::Ordering;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};
use strongroom_core::Result;
use strongroom_core::store::Change;
use tokio::sync::broadcast;

use super::PgStore;
use crate::error::db;

/// The channel on which committed changes are announced to every server.
pub(super) const CHANGES_CHANNEL: &str = "strongroom_changes";

/// The payloads announcing `changes`, tagged with the store's `origin`.
pub(super) fn notice_texts(origin: uuid::Uuid, changes: &[Change]) -> Vec<String> {
    changes
        .iter()
        .map(|c| format!("{origin} {}", c.to_text()))
        .collect()
}

/// Announces committed changes to every server (delivered when the
/// transaction commits), in one round trip.
pub(super) async fn notify(
    tx: &mut Transaction<'static, Postgres>,
    origin: uuid::Uuid,
    changes: &[Change],
) -> Result<()> {
    let texts = notice_texts(origin, changes);
    sqlx::query("SELECT pg_notify($1, t) FROM unnest($2::text[]) AS t")
        .bind(CHANGES_CHANNEL)
        .bind(texts)
        .execute(&mut **tx)
        .await
        .map_err(db("change notice"))?;
    Ok(())
}

/// Subscribes to change notices, starting the listener on first use. A
/// lost listener connection announces `Everything` (drop every cache) and
/// reconnects.
pub(super) fn subscribe(store: &PgStore) -> broadcast::Receiver<Change> {
    let rx = store.changes.subscribe();
    if !store.state.listening.swap(true, Ordering::SeqCst) {
        let pool = store.pool.clone();
        let changes = store.changes.clone();
        let origin = store.origin;
        let options = store.state.listen_options.clone();
        tokio::spawn(async move {
            loop {
                match listen(&pool, options.as_ref(), &changes, origin).await {
                    Ok(()) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "change listener lost its connection; caches dropped");
                        let _ = changes.send(Change::Everything);
                        if pool.is_closed() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
    }
    rx
}

async fn listen(
    pool: &PgPool,
    options: Option<&PgConnectOptions>,
    changes: &broadcast::Sender<Change>,
    origin: uuid::Uuid,
) -> std::result::Result<(), sqlx::Error> {
    let own = origin.to_string();
    let mut listener = match options {
        None => sqlx::postgres::PgListener::connect_with(pool).await?,
        Some(options) => {
            let single = PgPoolOptions::new()
                .max_connections(1)
                .connect_lazy_with(options.clone());
            sqlx::postgres::PgListener::connect_with(&single).await?
        }
    };
    listener.listen(CHANGES_CHANNEL).await?;
    // Anything may have changed while no listener was connected.
    let _ = changes.send(Change::Everything);
    tracing::info!("listening for change notices");
    loop {
        // `try_recv` reports a lost connection as `None` once reconnected
        // (`recv` hides it): notices may have been missed meanwhile.
        let Some(notice) = listener.try_recv().await? else {
            let _ = changes.send(Change::Everything);
            continue;
        };
        // Fails only while nobody is subscribed: keep listening for whoever
        // subscribes next (the listener is started once per store).
        let change = match notice.payload().split_once(' ') {
            // This store's own change: its server applied it already.
            Some((from, _)) if from == own => continue,
            Some((_, text)) => Change::parse(text),
            None => Change::Everything,
        };
        let _ = changes.send(change);
    }
}
