//! SQLite backend: the embedded single-node store. Writes take the database
//! lock up front (`BEGIN IMMEDIATE`) so concurrent writers queue on the busy
//! timeout instead of failing a lock upgrade; WAL lets readers proceed.

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool, Transaction};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use strongroom_core::ids::TenantId;
use strongroom_core::store::Change;
use strongroom_core::{Error, Result};
use tokio::sync::broadcast;

use crate::batch::Committers;

use crate::error::db;

/// The SQLite store.
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    committers: Arc<Committers>,
    changes: broadcast::Sender<Change>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// No row locks: SQLite serializes writers on the database lock.
    pub(crate) const LOCK: &'static str = "";
    /// No table locks: write transactions (`BEGIN IMMEDIATE`) already run
    /// one at a time.
    pub(crate) const NAMESPACE_LOCK_EXCLUSIVE: &'static str = "";
    /// As [`SqliteStore::NAMESPACE_LOCK_EXCLUSIVE`].
    pub(crate) const NAMESPACE_LOCK_SHARED: &'static str = "";
    /// No row-level security: nothing binds a transaction to a tenant.
    pub(crate) const BIND_TENANT: &'static str = "";
    /// Substring position function.
    pub(crate) const STRPOS: &'static str = "instr";
    /// Every batch takes the full path: its statements are local calls, so
    /// there are no round trips to save.
    pub(crate) const FAST_EVENTS: bool = false;

    /// Wraps an existing pool (foreign keys must be on, as sqlx does by
    /// default).
    pub fn new(pool: SqlitePool) -> Self {
        Self {
            pool,
            committers: Arc::default(),
            changes: broadcast::channel(16).0,
        }
    }

    /// Opens (creating if absent) the database file at `path`, in WAL mode
    /// with full fsync on commit, and applies migrations.
    pub async fn open(path: &Path) -> Result<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
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
        Ok(Self::new(pool))
    }

    /// The underlying pool.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub(crate) async fn tenant_tx(
        &self,
        _tenant: TenantId,
        write: bool,
    ) -> Result<Transaction<'static, Sqlite>> {
        self.begin(write).await
    }

    pub(crate) async fn platform_tx(
        &self,
        _tenant: Option<TenantId>,
        write: bool,
    ) -> Result<Transaction<'static, Sqlite>> {
        self.begin(write).await
    }

    async fn begin(&self, write: bool) -> Result<Transaction<'static, Sqlite>> {
        if write {
            self.pool.begin_with("BEGIN IMMEDIATE").await
        } else {
            self.pool.begin().await
        }
        .map_err(db("transaction"))
    }

    /// Nothing to announce: one SQLite database has one server, whose own
    /// writes refresh its caches.
    pub(crate) async fn notify_changes(
        _tx: &mut Transaction<'static, Sqlite>,
        _origin: uuid::Uuid,
        _changes: &[Change],
    ) -> Result<()> {
        Ok(())
    }

    /// Inserts a batch's sealed events (one statement built for the batch);
    /// no notices (see `notify_changes`).
    pub(crate) async fn insert_events(
        tx: &mut sqlx::Transaction<'static, Sqlite>,
        events: &[strongroom_core::audit::AuditEvent],
        head: i64,
        head_hash: &[u8; 32],
        _origin: uuid::Uuid,
        _changes: &[Change],
    ) -> strongroom_core::Result<()> {
        let mut rows = Vec::with_capacity(events.len());
        for e in events {
            rows.push((
                i64::try_from(e.sequence)
                    .map_err(|_| strongroom_core::Error::internal("audit sequence overflow"))?,
                e.draft.version.map(crate::rows::version_i32).transpose()?,
            ));
        }
        let mut q = sqlx::QueryBuilder::<Sqlite>::new(concat!(
            "INSERT INTO audit_events (",
            crate::shared::audit_cols!(),
            ") "
        ));
        q.push_values(events.iter().zip(rows), |mut b, (e, (seq, version))| {
            let d = &e.draft;
            b.push_bind(e.tenant.as_uuid())
                .push_bind(seq)
                .push_bind(d.id.as_uuid())
                .push_bind(d.at.as_micros())
                .push_bind(d.principal.map(|p| p.as_uuid()))
                .push_bind(d.actor.as_str())
                .push_bind(d.on_behalf_of.as_deref())
                .push_bind(d.action.as_str())
                .push_bind(d.credential.map(|c| c.as_uuid()))
                .push_bind(d.credential_name.as_deref())
                .push_bind(version)
                .push_bind(d.environment.as_deref())
                .push_bind(d.purpose.as_deref())
                .push_bind(d.outcome.as_str())
                .push_bind(d.reason_code.as_str())
                .push_bind(d.peer.as_deref())
                .push_bind(d.request_id.as_deref())
                .push_bind(d.trace_id.as_deref())
                .push_bind(d.detail.as_deref())
                .push_bind(e.prev_hash.as_slice())
                .push_bind(e.hash.as_slice());
        });
        q.build()
            .execute(&mut **tx)
            .await
            .map_err(crate::error::db("audit event"))?;
        let Some(first) = events.first() else {
            return Ok(());
        };
        sqlx::query("UPDATE audit_heads SET sequence = $2, hash = $3 WHERE tenant_id = $1")
            .bind(first.tenant.as_uuid())
            .bind(head)
            .bind(head_hash.as_slice())
            .execute(&mut **tx)
            .await
            .map_err(db("audit chain head"))?;
        Ok(())
    }

    /// No bulk path: SQLite runs a batch's mutations one by one (they are
    /// local calls).
    pub(crate) async fn bulk_mutations(
        _tx: &mut Transaction<'static, Sqlite>,
        _tenant: TenantId,
        works: &[crate::batch::Work],
    ) -> Result<Vec<Option<Result<Option<strongroom_core::credential::Credential>>>>> {
        Ok(works.iter().map(|_| None).collect())
    }

    /// Notices are not sent (see `notify_changes`), so none is tagged.
    pub(crate) fn origin(&self) -> uuid::Uuid {
        uuid::Uuid::nil()
    }

    /// Change notices never arrive from elsewhere (see `notify_change`).
    pub(crate) fn subscribe_changes(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// Not taken (see [`SqliteStore::FAST_EVENTS`]): hands the drafts back
    /// to the full path.
    pub(crate) async fn fast_events(
        &self,
        _tenant: TenantId,
        _works: &[crate::batch::Work],
        drafts: Vec<strongroom_core::audit::AuditDraft>,
        _head: crate::batch::Head,
        _conn: &mut Option<sqlx::pool::PoolConnection<Sqlite>>,
    ) -> Result<crate::batch::Fast> {
        Ok(crate::batch::Fast::Redo(drafts))
    }

    /// Reads the states a reveal check depends on (one query an id: they
    /// are local calls).
    pub(crate) async fn fetch_states(
        tx: &mut Transaction<'static, Sqlite>,
        tenant: TenantId,
        credentials: &[uuid::Uuid],
        principals: &[uuid::Uuid],
        grants: &[uuid::Uuid],
        bindings: &[uuid::Uuid],
    ) -> Result<crate::shared::States> {
        let mut states = crate::shared::States::default();
        for id in credentials {
            let row: Option<crate::shared::CredentialState> = sqlx::query_as(
                "SELECT id, status, current_version, destroyed_at, expires_at FROM credentials \
                 WHERE tenant_id = $1 AND id = $2",
            )
            .bind(tenant.as_uuid())
            .bind(id)
            .fetch_optional(&mut **tx)
            .await
            .map_err(db("credential"))?;
            if let Some(r) = row {
                states.credentials.insert(r.id, r);
            }
        }
        for id in principals {
            let row: Option<crate::shared::PrincipalState> = sqlx::query_as(
                "SELECT p.id, p.status, p.role, t.status AS tenant_status FROM principals p \
                 JOIN tenants t ON t.id = p.tenant_id WHERE p.tenant_id = $1 AND p.id = $2",
            )
            .bind(tenant.as_uuid())
            .bind(id)
            .fetch_optional(&mut **tx)
            .await
            .map_err(db("principal"))?;
            if let Some(r) = row {
                states.principals.insert(r.id, r);
            }
        }
        for id in grants {
            let row: Option<(uuid::Uuid, Option<i64>)> = sqlx::query_as(
                "SELECT id, expires_at FROM grants WHERE tenant_id = $1 AND id = $2",
            )
            .bind(tenant.as_uuid())
            .bind(id)
            .fetch_optional(&mut **tx)
            .await
            .map_err(db("grant"))?;
            states.grants.extend(row);
        }
        for id in bindings {
            let row: Option<(uuid::Uuid, uuid::Uuid)> = sqlx::query_as(
                "SELECT id, principal_id FROM identity_bindings \
                 WHERE tenant_id = $1 AND id = $2 AND disabled_reason IS NULL",
            )
            .bind(tenant.as_uuid())
            .bind(id)
            .fetch_optional(&mut **tx)
            .await
            .map_err(db("identity binding"))?;
            states.bindings.extend(row);
        }
        Ok(states)
    }
}

crate::shared::store_impl!(SqliteStore, Sqlite);
crate::chains::chain_store_impl!(SqliteStore, Sqlite);
crate::namespaces::namespace_review_impl!(SqliteStore, Sqlite);
