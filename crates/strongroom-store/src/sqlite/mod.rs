//! SQLite: the embedded single-node backend. Writes take the database lock
//! up front (`BEGIN IMMEDIATE`) so concurrent writers queue on the busy
//! timeout instead of failing a lock upgrade; WAL lets readers proceed.
//! Having one writer at a time, it needs no row or table locks; having one
//! server per database, it announces no changes. Its statements are local
//! calls, but sqlx runs each on the connection's own thread, a hand-off
//! each way: the audit batches are made of few statements of fixed text
//! (`events.rs`); it has no bulk path for mutations (the dialect's
//! default).

use std::path::Path;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::query::Query;
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Sqlite, SqlitePool, Transaction};
use strongroom_core::audit::{AuditDraft, AuditEvent};
use strongroom_core::ids::TenantId;
use strongroom_core::store::Change;
use strongroom_core::{Error, Result};
use tokio::sync::broadcast;

use crate::dialect::{Dialect, NamespaceLock, insert_chunks};
use crate::error::db;
use crate::group_commit::checks::{CheckIds, States};
use crate::group_commit::{Fast, Head, Work};
use crate::rows::{EventRow, audit_columns};
use crate::store::SqlStore;

/// The SQLite store.
pub type SqliteStore = SqlStore<Sqlite>;

mod events;

/// How often a store opened by [`SqliteStore::open`] copies its
/// write-ahead log into the database file (a passive checkpoint: it never
/// waits for a reader or a writer). SQLite's own checkpoint runs in the
/// commit that fills the log past 1,000 pages, on the audit committer's
/// path: copying the pages and the database file's fsync held up the
/// batches behind it (a checkpoint was about a fifteenth of the server's
/// CPU at 64 reveals in flight). Durability is unchanged: a commit is
/// durable once its log frames are synced; a checkpoint only moves them.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// The page cache of each connection, in KiB as `PRAGMA cache_size`
/// takes it (negative): 16 MiB, filled only as pages are read.
const CACHE_KIB: &str = "-16384";

/// Checkpoints `pool`'s database every [`CHECKPOINT_EVERY`] until the pool
/// closes; a failed checkpoint is logged and the next one tries again.
fn spawn_checkpointer(pool: SqlitePool) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(CHECKPOINT_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if pool.is_closed() {
                return;
            }
            if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&pool)
                .await
                && !pool.is_closed()
            {
                tracing::warn!(error = %e, "SQLite checkpoint failed");
            }
        }
    });
}

impl SqlStore<Sqlite> {
    /// Wraps an existing pool (foreign keys must be on, as sqlx does by
    /// default).
    pub fn new(pool: SqlitePool) -> Self {
        // Notices are never sent (see `notify_changes`), so none is tagged.
        Self::with_pool(pool, uuid::Uuid::nil(), 16)
    }

    /// Opens (creating if absent) the database file at `path`, in WAL mode
    /// with full fsync on commit, and applies migrations. The log is copied
    /// into the database file by a task of its own (see
    /// [`CHECKPOINT_EVERY`]), never by a commit.
    pub async fn open(path: &Path) -> Result<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .pragma("wal_autocheckpoint", "0")
            // Pages a connection keeps (SQLite's default is 2 MiB): the
            // audit committer's connection holds the index pages its
            // batches insert into (events and leases by credential and by
            // principal, across every credential in use).
            .pragma("cache_size", CACHE_KIB)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            // A connection to a local file does not go stale: no ping (a
            // hand-off to its thread) before each use.
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "cannot open SQLite database");
                Error::Unavailable("cannot open the database file".into())
            })?;
        crate::SQLITE_MIGRATOR.run(&pool).await.map_err(|e| {
            tracing::error!(error = %e, "SQLite migration failed");
            Error::internal("database migration failed")
        })?;
        spawn_checkpointer(pool.clone());
        Ok(Self::new(pool))
    }

    /// A transaction; a writer's takes the database lock up front.
    async fn begin(&self, write: bool) -> Result<Transaction<'static, Sqlite>> {
        if write {
            self.pool.begin_with("BEGIN IMMEDIATE").await
        } else {
            self.pool.begin().await
        }
        .map_err(db("transaction"))
    }
}

/// The chain head update after a batch's events.
const ADVANCE_HEAD: &str = "UPDATE audit_heads SET sequence = $2, hash = $3 WHERE tenant_id = $1";

impl Dialect for Sqlite {
    type State = ();

    /// Batches of events only take [`events::fast`], which reads the head
    /// under the write lock itself.
    const FAST_EVENTS: bool = true;

    const SUBSTRING_POSITION: &'static str = "instr";

    const LOCK_TENANT_HEAD: &'static str =
        "SELECT sequence, hash FROM audit_heads WHERE tenant_id = $1";

    const LOCK_PLATFORM_HEAD: &'static str =
        "SELECT sequence, hash FROM platform_audit_heads WHERE id = 1";

    const SKIP_LOCKED: &'static str = "";
    const PURGE_SHREDDED_AUDIT: &'static [&'static str] = &[
        "DELETE FROM audit_events WHERE tenant_id = $1",
        "DELETE FROM audit_heads WHERE tenant_id = $1",
    ];
    const FOR_UPDATE: &'static str = "";
    const FOR_SHARE: &'static str = "";

    /// No row-level security: the transaction is the same for every tenant.
    async fn begin_tenant(
        store: &SqliteStore,
        _tenant: TenantId,
        write: bool,
    ) -> Result<Transaction<'static, Sqlite>> {
        store.begin(write).await
    }

    /// As [`Dialect::begin_tenant`].
    async fn begin_platform(
        store: &SqliteStore,
        _tenant: Option<TenantId>,
        write: bool,
    ) -> Result<Transaction<'static, Sqlite>> {
        store.begin(write).await
    }

    /// A plain read: nothing hides one tenant's rows from another's.
    async fn begin_lease_sweep(store: &SqliteStore) -> Result<Transaction<'static, Sqlite>> {
        store.begin(false).await
    }

    /// Always taken: one server owns a SQLite database, and its write
    /// transactions run one at a time.
    async fn try_sweep_lock(_tx: &mut Transaction<'static, Sqlite>) -> Result<bool> {
        Ok(true)
    }

    /// Always taken, as the sweep lock.
    async fn try_monitor_lock(_tx: &mut Transaction<'static, Sqlite>) -> Result<bool> {
        Ok(true)
    }

    /// Nothing binds a transaction to a tenant.
    async fn bind_tenant(_tx: &mut Transaction<'static, Sqlite>, _tenant: TenantId) -> Result<()> {
        Ok(())
    }

    /// No table locks: write transactions (`BEGIN IMMEDIATE`) already run
    /// one at a time.
    async fn lock_namespaces(
        _tx: &mut Transaction<'static, Sqlite>,
        _lock: NamespaceLock,
    ) -> Result<()> {
        Ok(())
    }

    /// Nothing to announce: one SQLite database has one server, whose own
    /// writes refresh its caches.
    async fn notify_changes(
        _tx: &mut Transaction<'static, Sqlite>,
        _origin: uuid::Uuid,
        _changes: &[Change],
    ) -> Result<()> {
        Ok(())
    }

    /// Change notices never arrive from elsewhere (see `notify_changes`).
    fn subscribe_changes(store: &SqliteStore) -> broadcast::Receiver<Change> {
        store.changes.subscribe()
    }

    /// Every kind in one statement list (see [`events`]).
    async fn read_states(
        tx: &mut Transaction<'static, Sqlite>,
        tenant: TenantId,
        ids: &CheckIds,
    ) -> Result<States> {
        events::read_states(tx, tenant, ids).await
    }

    /// A batch of events only: four hand-offs (see [`events::fast`]).
    async fn fast_events(
        store: &SqliteStore,
        tenant: TenantId,
        works: &[Work],
        drafts: Vec<AuditDraft>,
        _head: Head,
        held: &mut Option<PoolConnection<Sqlite>>,
    ) -> Result<Fast> {
        events::fast(store, tenant, works, drafts, held).await
    }

    /// The batch's rows in a few statements of fixed shapes
    /// ([`insert_chunks`]), then the head update; no notices (see
    /// `notify_changes`).
    async fn insert_events(
        tx: &mut Transaction<'static, Sqlite>,
        events: &[AuditEvent],
        head: Head,
        _origin: uuid::Uuid,
        _changes: &[Change],
    ) -> Result<()> {
        let Some(first) = events.first() else {
            return Ok(());
        };
        let mut rows = events
            .iter()
            .map(EventRow::of)
            .collect::<Result<Vec<_>>>()?
            .into_iter();
        for size in insert_chunks(events.len()) {
            insert_event_rows(tx, rows.by_ref().take(size)).await?;
        }
        let to =
            i64::try_from(head.sequence).map_err(|_| Error::internal("audit sequence overflow"))?;
        sqlx::query(ADVANCE_HEAD)
            .bind(first.tenant.as_uuid())
            .bind(to)
            .bind(head.hash.as_slice())
            .execute(&mut **tx)
            .await
            .map_err(db("audit chain head"))?;
        Ok(())
    }

    async fn execute<'q>(
        query: Query<'q, Sqlite, SqliteArguments<'q>>,
        conn: &mut SqliteConnection,
    ) -> std::result::Result<u64, sqlx::Error> {
        Ok(query.execute(conn).await?.rows_affected())
    }

    async fn fetch_one<'q>(
        query: Query<'q, Sqlite, SqliteArguments<'q>>,
        conn: &mut SqliteConnection,
    ) -> std::result::Result<SqliteRow, sqlx::Error> {
        query.fetch_one(conn).await
    }

    async fn fetch_optional<'q>(
        query: Query<'q, Sqlite, SqliteArguments<'q>>,
        conn: &mut SqliteConnection,
    ) -> std::result::Result<Option<SqliteRow>, sqlx::Error> {
        query.fetch_optional(conn).await
    }

    async fn fetch_all<'q>(
        query: Query<'q, Sqlite, SqliteArguments<'q>>,
        conn: &mut SqliteConnection,
    ) -> std::result::Result<Vec<SqliteRow>, sqlx::Error> {
        query.fetch_all(conn).await
    }

    async fn fetch_all_built<'q>(
        builder: &mut QueryBuilder<'q, Sqlite>,
        conn: &mut SqliteConnection,
    ) -> std::result::Result<Vec<SqliteRow>, sqlx::Error> {
        builder.build().fetch_all(conn).await
    }
}

/// One INSERT of `rows`: its text depends only on how many there are.
async fn insert_event_rows<'a>(
    tx: &mut Transaction<'static, Sqlite>,
    rows: impl Iterator<Item = EventRow<'a>>,
) -> Result<()> {
    let mut q = QueryBuilder::<Sqlite>::new(concat!(
        "INSERT INTO audit_events (",
        audit_columns!(),
        ") "
    ));
    q.push_values(rows, |mut b, row| {
        let EventRow {
            chain,
            sequence,
            id,
            at,
            principal,
            actor,
            on_behalf_of,
            action,
            credential,
            credential_name,
            version,
            environment,
            purpose,
            outcome,
            reason_code,
            peer,
            request_id,
            trace_id,
            detail,
            prev_hash,
            hash,
            format,
        } = row;
        b.push_bind(chain)
            .push_bind(sequence)
            .push_bind(id)
            .push_bind(at)
            .push_bind(principal)
            .push_bind(actor)
            .push_bind(on_behalf_of)
            .push_bind(action)
            .push_bind(credential)
            .push_bind(credential_name)
            .push_bind(version)
            .push_bind(environment)
            .push_bind(purpose)
            .push_bind(outcome)
            .push_bind(reason_code)
            .push_bind(peer)
            .push_bind(request_id)
            .push_bind(trace_id)
            .push_bind(detail)
            .push_bind(prev_hash)
            .push_bind(hash)
            .push_bind(format);
    });
    q.build()
        .execute(&mut **tx)
        .await
        .map_err(db("audit event"))?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::SqliteStore;
    use super::events::hex_ids;
    use std::time::{Duration, Instant};

    /// A store opened on a file leaves its commits' log frames to the
    /// checkpointer: the connections' automatic checkpoint is off, and the
    /// migrations' pages still reach the database file (only a checkpoint
    /// writes it in WAL mode).
    #[tokio::test]
    async fn commits_leave_the_log_to_the_checkpointer() {
        let dir = std::env::temp_dir().join(format!("strongroom-wal-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("store.db");
        let store = SqliteStore::open(&path).await.expect("open");
        let (pages,): (i64,) = sqlx::query_as("PRAGMA wal_autocheckpoint")
            .fetch_one(store.pool())
            .await
            .expect("pragma");
        assert_eq!(pages, 0, "commits must not checkpoint");
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut size = 0;
        while Instant::now() < deadline {
            size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            if size > 64 * 1024 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        store.pool().close().await;
        let _ = std::fs::remove_dir_all(&dir);
        assert!(size > 64 * 1024, "the database file stayed at {size} bytes");
    }

    #[test]
    fn check_ids_go_as_a_json_array_of_hex_digits() {
        let a = uuid::Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        let b = uuid::Uuid::from_u128(1);
        assert_eq!(hex_ids(&[]), "[]");
        assert_eq!(
            hex_ids(&[a, b]),
            r#"["0123456789abcdef0123456789abcdef","00000000000000000000000000000001"]"#
        );
    }
}
