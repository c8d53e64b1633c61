//! SQLite backend: the embedded single-node store. Writes take the database
//! lock up front (`BEGIN IMMEDIATE`) so concurrent writers queue on the busy
//! timeout instead of failing a lock upgrade; WAL lets readers proceed.

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool, Transaction};
use std::path::Path;
use std::time::Duration;
use strongroom_core::ids::TenantId;
use strongroom_core::{Error, Result};

use crate::error::db;

/// The SQLite store.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// No row locks: SQLite serializes writers on the database lock.
    pub(crate) const LOCK: &'static str = "";
    /// Substring position function.
    pub(crate) const STRPOS: &'static str = "instr";

    /// Wraps an existing pool (foreign keys must be on, as sqlx does by
    /// default).
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
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
        Ok(Self { pool })
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
}

crate::shared::store_impl!(SqliteStore, Sqlite);
