//! [`SqlStore`]: the store over one backend's pool. [`crate::PgStore`] and
//! [`crate::SqliteStore`] are this type over [`sqlx::Postgres`] and
//! [`sqlx::Sqlite`]; the storage ports are implemented for it once, generic
//! over the [`Dialect`], one module per aggregate.

use std::sync::Arc;

use sqlx::{Pool, Transaction};
use strongroom_core::audit::AuditDraft;
use strongroom_core::ids::TenantId;
use strongroom_core::store::Change;
use strongroom_core::{Error, Result};
use tokio::sync::broadcast;

use crate::dialect::Dialect;
use crate::error::db;
use crate::group_commit::Committers;

/// A store on one backend's database: its pool, the tenants' group
/// committers, and the change notices it hands out.
pub struct SqlStore<D: Dialect> {
    pub(crate) pool: Pool<D>,
    pub(crate) committers: Arc<Committers>,
    pub(crate) changes: broadcast::Sender<Change>,
    /// Wake-ups for chain followers (see `AuditStore::appended`).
    pub(crate) appended: broadcast::Sender<TenantId>,
    /// Tags this store's change notices, so its own listener skips them:
    /// its server already applied them when it made them.
    pub(crate) origin: uuid::Uuid,
    pub(crate) state: D::State,
}

impl<D: Dialect> Clone for SqlStore<D> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            committers: Arc::clone(&self.committers),
            changes: self.changes.clone(),
            appended: self.appended.clone(),
            origin: self.origin,
            state: self.state.clone(),
        }
    }
}

impl<D: Dialect> std::fmt::Debug for SqlStore<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlStore")
            .field("backend", &<D as sqlx::Database>::NAME)
            .finish_non_exhaustive()
    }
}

/// Wake-ups buffered per follower; one that falls further behind is told
/// it lagged, which wakes it just the same.
const APPENDED_CAPACITY: usize = 256;

impl<D: Dialect> SqlStore<D> {
    /// Wakes the followers of `tenant`'s chain (nobody listening is fine).
    pub(crate) fn announce_appended(&self, tenant: TenantId) {
        let _ = self.appended.send(tenant);
    }

    /// A store on `pool` whose change notices are tagged `origin` and
    /// buffered up to `capacity` per subscriber.
    pub(crate) fn with_pool(pool: Pool<D>, origin: uuid::Uuid, capacity: usize) -> Self {
        Self {
            pool,
            committers: Arc::default(),
            changes: broadcast::channel(capacity).0,
            appended: broadcast::channel(APPENDED_CAPACITY).0,
            origin,
            state: D::State::default(),
        }
    }

    /// Tells `observer` of every audit batch this store (and its clones)
    /// commits from now on; only the first observer set is kept.
    pub fn observe_batches(&self, observer: Arc<dyn crate::BatchObserver>) {
        let _ = self.committers.observer.set(observer);
    }

    /// The underlying pool.
    pub fn pool(&self) -> &Pool<D> {
        &self.pool
    }

    /// A transaction that sees and writes only `tenant`'s rows.
    pub(crate) async fn tenant_tx(
        &self,
        tenant: TenantId,
        write: bool,
    ) -> Result<Transaction<'static, D>> {
        D::begin_tenant(self, tenant, write).await
    }

    /// A platform transaction, bound to `tenant` when given.
    pub(crate) async fn platform_tx(
        &self,
        tenant: Option<TenantId>,
        write: bool,
    ) -> Result<Transaction<'static, D>> {
        D::begin_platform(self, tenant, write).await
    }

    /// Deletes `tenant`'s row that `sql` selects by tenant (`$1`) and id
    /// (`$2`) and appends `audit`, in one transaction; `NotFound` naming
    /// `what` if there was no such row.
    pub(crate) async fn delete_audited(
        &self,
        tenant: TenantId,
        sql: &'static str,
        id: uuid::Uuid,
        what: &'static str,
        audit: AuditDraft,
    ) -> Result<()> {
        let mut tx = self.tenant_tx(tenant, true).await?;
        let deleted = D::query(sql)
            .bind(tenant.as_uuid())
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db(what))?;
        if deleted == 0 {
            return Err(Error::not_found(what));
        }
        self.append_in(&mut tx, tenant, audit).await?;
        tx.commit().await.map_err(db(what))?;
        Ok(())
    }
}
