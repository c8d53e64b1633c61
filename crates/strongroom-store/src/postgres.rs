//! Postgres backend. Tenant isolation is enforced twice: every query filters
//! by tenant, and row-level security (see the migration) hides every other
//! tenant's rows from a transaction bound to one tenant.

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use strongroom_core::ids::TenantId;
use strongroom_core::store::Change;
use strongroom_core::{Error, Result};
use tokio::sync::broadcast;

use crate::batch::Committers;
use crate::error::db;

/// The database role the server's login role must be a member of. The
/// migrations create it without `SUPERUSER` and `BYPASSRLS` and grant it
/// exactly the privileges the server needs.
pub const APP_ROLE: &str = "strongroom_app";

/// The Postgres store.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    committers: Arc<Committers>,
    changes: broadcast::Sender<Change>,
    listening: Arc<AtomicBool>,
    /// Tags this store's change notices, so its own listener skips them:
    /// its server already applied them when it made them.
    origin: uuid::Uuid,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

/// The channel on which committed changes are announced to every server.
const CHANGES_CHANNEL: &str = "strongroom_changes";

impl PgStore {
    /// Row locks used when reading the audit chain head.
    pub(crate) const LOCK: &'static str = " FOR UPDATE";
    /// Substring position function.
    pub(crate) const STRPOS: &'static str = "strpos";

    /// Wraps an existing pool. The pool's role must not be a superuser or
    /// have `BYPASSRLS`, or row-level security is not in force; see
    /// [`PgStore::check_role`].
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            committers: Arc::default(),
            changes: broadcast::channel(1024).0,
            listening: Arc::default(),
            origin: uuid::Uuid::new_v4(),
        }
    }

    /// Connects to `url` with up to `max_connections` connections.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|_| Error::invalid("database.url", "is not a valid Postgres URL"))?
            .application_name("strongroomd")
            // Short OLTP statements: JIT compilation (triggered by the
            // planner's estimates for array-unnesting batch statements) would
            // cost more than it saves.
            .options([("jit", "off")]);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "cannot connect to Postgres");
                Error::Unavailable("cannot connect to the database".into())
            })?;
        Ok(Self::new(pool))
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
        // One round trip: BEGIN and the tenant binding as one simple query
        // (the id is a formatted UUID, hex digits and dashes only).
        self.pool
            .begin_with(format!(
                "BEGIN; SELECT set_config('strongroom.tenant_id', '{}', true)",
                tenant.as_uuid().hyphenated()
            ))
            .await
            .map_err(db("transaction"))
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

    /// The tag of this store's change notices.
    pub(crate) fn origin(&self) -> uuid::Uuid {
        self.origin
    }

    /// Announces committed changes to every server (delivered when the
    /// transaction commits), in one round trip.
    pub(crate) async fn notify_changes(
        tx: &mut Transaction<'static, Postgres>,
        origin: uuid::Uuid,
        changes: &[Change],
    ) -> Result<()> {
        let texts: Vec<String> = changes
            .iter()
            .map(|c| format!("{origin} {}", c.to_text()))
            .collect();
        sqlx::query("SELECT pg_notify($1, t) FROM unnest($2::text[]) AS t")
            .bind(CHANGES_CHANNEL)
            .bind(texts)
            .execute(&mut **tx)
            .await
            .map_err(db("change notice"))?;
        Ok(())
    }

    /// Subscribes to change notices, starting the listener on first use. A
    /// lost listener connection announces `None` (drop every cache) and
    /// reconnects.
    pub(crate) fn subscribe_changes(&self) -> broadcast::Receiver<Change> {
        let rx = self.changes.subscribe();
        if !self.listening.swap(true, Ordering::SeqCst) {
            let pool = self.pool.clone();
            let changes = self.changes.clone();
            let origin = self.origin;
            tokio::spawn(async move {
                loop {
                    match listen(&pool, &changes, origin).await {
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

    /// Reads the states a reveal check depends on, for a batch at once, in
    /// one query.
    pub(crate) async fn fetch_states(
        tx: &mut Transaction<'static, Postgres>,
        tenant: TenantId,
        credentials: &[uuid::Uuid],
        principals: &[uuid::Uuid],
        grants: &[uuid::Uuid],
    ) -> Result<crate::shared::States> {
        type Row = (
            String,
            uuid::Uuid,
            String,
            String,
            i64,
            Option<i64>,
            Option<i64>,
        );
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT 'c', id, status, '', current_version::bigint, destroyed_at, expires_at FROM credentials \
               WHERE tenant_id = $1 AND id = ANY($2) \
             UNION ALL \
             SELECT 'p', p.id, p.status, p.role || ' ' || t.status, 0, NULL, NULL FROM principals p \
               JOIN tenants t ON t.id = p.tenant_id WHERE p.tenant_id = $1 AND p.id = ANY($3) \
             UNION ALL \
             SELECT 'g', id, '', '', 0, NULL, expires_at FROM grants WHERE tenant_id = $1 AND id = ANY($4)",
        )
        .bind(tenant.as_uuid())
        .bind(credentials)
        .bind(principals)
        .bind(grants)
        .fetch_all(&mut **tx)
        .await
        .map_err(db("reveal check"))?;
        let mut states = crate::shared::States::default();
        for (kind, id, status, extra, version, destroyed_at, expires_at) in rows {
            match kind.as_str() {
                "c" => {
                    states.credentials.insert(
                        id,
                        crate::shared::CredentialState {
                            id,
                            status,
                            current_version: i32::try_from(version).unwrap_or(-1),
                            destroyed_at,
                            expires_at,
                        },
                    );
                }
                "p" => {
                    let (role, tenant_status) = extra.split_once(' ').unwrap_or_default();
                    states.principals.insert(
                        id,
                        crate::shared::PrincipalState {
                            id,
                            status,
                            role: role.to_owned(),
                            tenant_status: tenant_status.to_owned(),
                        },
                    );
                }
                _ => {
                    states.grants.insert(id, expires_at);
                }
            }
        }
        Ok(states)
    }
}

async fn listen(
    pool: &PgPool,
    changes: &broadcast::Sender<Change>,
    origin: uuid::Uuid,
) -> std::result::Result<(), sqlx::Error> {
    let own = origin.to_string();
    let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
    listener.listen(CHANGES_CHANNEL).await?;
    // Anything may have changed while no listener was connected.
    let _ = changes.send(Change::Everything);
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

crate::shared::store_impl!(PgStore, Postgres);
