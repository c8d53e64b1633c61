//! Postgres backend. Tenant isolation is enforced twice: every query filters
//! by tenant, and row-level security (see the migration) hides every other
//! tenant's rows from a transaction bound to one tenant.

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};
use std::str::FromStr;
use std::time::Duration;
use strongroom_core::ids::TenantId;
use strongroom_core::{Error, Result};

use crate::error::db;

/// The database role the server's login role must be a member of. The
/// migrations create it without `SUPERUSER` and `BYPASSRLS` and grant it
/// exactly the privileges the server needs.
pub const APP_ROLE: &str = "strongroom_app";

/// The Postgres store.
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Row locks used when reading the audit chain head.
    pub(crate) const LOCK: &'static str = " FOR UPDATE";
    /// Substring position function.
    pub(crate) const STRPOS: &'static str = "strpos";

    /// Wraps an existing pool. The pool's role must not be a superuser or
    /// have `BYPASSRLS`, or row-level security is not in force; see
    /// [`PgStore::check_role`].
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Connects to `url` with up to `max_connections` connections.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|_| Error::invalid("database.url", "is not a valid Postgres URL"))?
            .application_name("strongroomd");
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "cannot connect to Postgres");
                Error::Unavailable("cannot connect to the database".into())
            })?;
        Ok(Self { pool })
    }

    /// The underlying pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Fails unless the connected role is subject to row-level security:
    /// neither a superuser nor `BYPASSRLS`.
    pub async fn check_role(&self) -> Result<()> {
        let (name, superuser, bypass): (String, bool, bool) = sqlx::query_as(
            "SELECT rolname::text, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(db("database role"))?;
        if superuser || bypass {
            return Err(Error::precondition(format!(
                "database role '{name}' is a superuser or has BYPASSRLS, so row-level security would not apply; \
                 connect as a role that is a member of {APP_ROLE}"
            )));
        }
        Ok(())
    }

    /// A transaction bound to `tenant`: row-level security shows it only
    /// that tenant's rows.
    pub(crate) async fn tenant_tx(
        &self,
        tenant: TenantId,
        _write: bool,
    ) -> Result<Transaction<'static, Postgres>> {
        let mut tx = self.pool.begin().await.map_err(db("transaction"))?;
        sqlx::query("SELECT set_config('strongroom.tenant_id', $1, true)")
            .bind(tenant.to_string())
            .execute(&mut *tx)
            .await
            .map_err(db("transaction"))?;
        Ok(tx)
    }

    /// A platform transaction: it may read the tenant registry, principals
    /// and identity bindings of every tenant; when `tenant` is given it is
    /// also bound to that tenant (to write its rows and audit chain).
    pub(crate) async fn platform_tx(
        &self,
        tenant: Option<TenantId>,
        _write: bool,
    ) -> Result<Transaction<'static, Postgres>> {
        let mut tx = self.pool.begin().await.map_err(db("transaction"))?;
        sqlx::query(
            "SELECT set_config('strongroom.platform', 'on', true), set_config('strongroom.tenant_id', $1, true)",
        )
        .bind(tenant.map(|t| t.to_string()).unwrap_or_default())
        .execute(&mut *tx)
        .await
        .map_err(db("transaction"))?;
        Ok(tx)
    }
}

crate::shared::store_impl!(PgStore, Postgres);
