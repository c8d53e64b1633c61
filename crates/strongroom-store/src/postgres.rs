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

/// The query reading the states of the credentials, principals and grants
/// whose id arrays are the parameters named (the first names the tenant),
/// as [`StateRow`]s.
macro_rules! states_select {
    ($tenant:literal, $credentials:literal, $principals:literal, $grants:literal, $bindings:literal) => {
        concat!(
            "SELECT 'c', c.id, c.status, '', c.current_version::bigint, c.destroyed_at, c.expires_at \
               FROM unnest(", $credentials, "::uuid[]) AS x(id) JOIN credentials c \
               ON c.tenant_id = ", $tenant, " AND c.id = x.id \
             UNION ALL \
             SELECT 'p', p.id, p.status, p.role || ' ' || t.status, 0, NULL, NULL \
               FROM unnest(", $principals, "::uuid[]) AS x(id) JOIN principals p \
               ON p.tenant_id = ", $tenant, " AND p.id = x.id JOIN tenants t ON t.id = p.tenant_id \
             UNION ALL \
             SELECT 'g', g.id, '', '', 0, NULL, g.expires_at \
               FROM unnest(", $grants, "::uuid[]) AS x(id) JOIN grants g \
               ON g.tenant_id = ", $tenant, " AND g.id = x.id \
             UNION ALL \
             SELECT 'b', b.id, b.principal_id::text, '', 0, NULL, NULL \
               FROM unnest(", $bindings, "::uuid[]) AS x(id) JOIN identity_bindings b \
               ON b.tenant_id = ", $tenant, " AND b.id = x.id AND b.disabled_reason IS NULL"
        )
    };
}

/// The Postgres store.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    committers: Arc<Committers>,
    changes: broadcast::Sender<Change>,
    listening: Arc<AtomicBool>,
    /// Where the change listener connects, when not through the pool's
    /// own settings.
    listen_options: Option<PgConnectOptions>,
    /// Tags this store's change notices, so its own listener skips them:
    /// its server already applied them when it made them.
    origin: uuid::Uuid,
    /// Test hook: see [`PgStore::lose_next_commit_reply`].
    #[cfg(feature = "fault-injection")]
    lost_reply: Arc<std::sync::Mutex<Option<LostReply>>>,
}

/// Test hook (feature `fault-injection`): what happens when the next batch
/// of events on the short path has committed but its reply is lost.
#[cfg(feature = "fault-injection")]
#[derive(Debug)]
pub struct LostReply {
    /// Told once the batch committed and its reply was thrown away.
    pub committed: tokio::sync::oneshot::Sender<()>,
    /// The batch is sent again (on a fresh connection) once this resolves.
    pub resend: tokio::sync::oneshot::Receiver<()>,
}

#[cfg(feature = "fault-injection")]
impl PgStore {
    /// Drops the reply of the next batch of events committed on the short
    /// path, as a connection closed between the commit and its answer
    /// would, and holds the resend until `hook.resend` resolves.
    pub fn lose_next_commit_reply(&self, hook: LostReply) {
        if let Ok(mut slot) = self.lost_reply.lock() {
            *slot = Some(hook);
        }
    }

    pub(crate) fn take_lost_reply(&self) -> Option<LostReply> {
        self.lost_reply.lock().ok().and_then(|mut slot| slot.take())
    }
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

/// The channel on which committed changes are announced to every server.
pub(crate) const CHANGES_CHANNEL: &str = "strongroom_changes";

impl PgStore {
    /// Row locks used when reading the audit chain head.
    pub(crate) const LOCK: &'static str = " FOR UPDATE";
    /// Taken before assigning identity namespaces: one assignment at a
    /// time, and no binding created meanwhile.
    pub(crate) const NAMESPACE_LOCK_EXCLUSIVE: &'static str =
        "LOCK TABLE identity_namespaces IN EXCLUSIVE MODE";
    /// Taken before creating a binding: its namespace check holds until
    /// commit. Bindings do not block one another.
    pub(crate) const NAMESPACE_LOCK_SHARED: &'static str =
        "LOCK TABLE identity_namespaces IN SHARE MODE";
    /// Binds the rest of a platform transaction to a tenant (`$1`, its id
    /// as text), so row-level security lets it write that tenant's rows.
    pub(crate) const BIND_TENANT: &'static str =
        "SELECT set_config('strongroom.tenant_id', $1, true)";
    /// Substring position function.
    pub(crate) const STRPOS: &'static str = "strpos";
    /// Batches of events only take [`PgStore::fast_events`]: one round trip
    /// to the server instead of six.
    pub(crate) const FAST_EVENTS: bool = true;

    /// Wraps an existing pool. The pool's role must not be a superuser or
    /// have `BYPASSRLS`, or row-level security is not in force; see
    /// [`PgStore::check_role`].
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            committers: Arc::default(),
            changes: broadcast::channel(1024).0,
            listening: Arc::default(),
            listen_options: None,
            origin: uuid::Uuid::new_v4(),
            #[cfg(feature = "fault-injection")]
            lost_reply: Arc::default(),
        }
    }

    /// Connects the change listener to `url` instead of through the pool's
    /// settings: the database itself when the pool goes through a pooler in
    /// transaction mode, where LISTEN does not work. It must reach the same
    /// database; notices missed for any reason are bounded by the server's
    /// cache time to live, not detected.
    pub fn listen_at(mut self, url: &str) -> Result<Self> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|_| Error::invalid("database.listen_url", "is not a valid Postgres URL"))?
            .application_name("strongroomd-listener");
        self.listen_options = Some(options);
        Ok(self)
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
            // No ping before each use (a round trip per transaction); a
            // connection found broken when a transaction begins is replaced
            // and the BEGIN retried (see `begin_with`).
            .test_before_acquire(false)
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
        // READ COMMITTED whatever the database's default: the store's
        // locking (row locks on chain heads, the namespace table lock taken
        // after the first statement) relies on each statement seeing what
        // committed before it; under REPEATABLE READ the snapshot would
        // predate the lock.
        self.begin_with(format!(
            "BEGIN ISOLATION LEVEL READ COMMITTED; SELECT set_config('strongroom.tenant_id', '{}', true)",
            tenant.as_uuid().hyphenated()
        ))
        .await
    }

    /// Begins a transaction with `begin` (a simple query starting with
    /// BEGIN). Pooled connections are not pinged before use, so a connection
    /// the server closed meanwhile (a restart, an idle timeout) fails here:
    /// nothing ran on it, so the BEGIN is retried on another connection.
    pub(crate) async fn begin_with(&self, begin: String) -> Result<Transaction<'static, Postgres>> {
        let mut attempts = 0;
        loop {
            match self.pool.begin_with(begin.clone()).await {
                Ok(tx) => return Ok(tx),
                Err(e) if attempts < 2 && crate::error::connection_lost(&e) => {
                    attempts += 1;
                    tracing::debug!("a pooled database connection was closed; retrying on another");
                }
                Err(e) => return Err(db("transaction")(e)),
            }
        }
    }

    /// A platform transaction: it may read the tenant registry, principals
    /// and identity bindings of every tenant; when `tenant` is given it is
    /// also bound to that tenant (to write its rows and audit chain).
    pub(crate) async fn platform_tx(
        &self,
        tenant: Option<TenantId>,
        _write: bool,
    ) -> Result<Transaction<'static, Postgres>> {
        // One round trip, as for `tenant_tx` (the id is a formatted UUID),
        // and READ COMMITTED for the same reason: the overlap check after
        // `LOCK TABLE identity_namespaces` must see every assignment
        // committed before the lock was granted.
        self.begin_with(format!(
            "BEGIN ISOLATION LEVEL READ COMMITTED; SELECT set_config('strongroom.platform', 'on', true), \
             set_config('strongroom.tenant_id', '{}', true)",
            tenant
                .map(|t| t.as_uuid().hyphenated().to_string())
                .unwrap_or_default()
        ))
        .await
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
    /// lost listener connection announces `None` (drop every cache) and
    /// reconnects.
    pub(crate) fn subscribe_changes(&self) -> broadcast::Receiver<Change> {
        let rx = self.changes.subscribe();
        if !self.listening.swap(true, Ordering::SeqCst) {
            let pool = self.pool.clone();
            let changes = self.changes.clone();
            let origin = self.origin;
            let options = self.listen_options.clone();
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

    /// Reads the states a reveal check depends on, for a batch at once, in
    /// one query.
    pub(crate) async fn fetch_states(
        tx: &mut Transaction<'static, Postgres>,
        tenant: TenantId,
        credentials: &[uuid::Uuid],
        principals: &[uuid::Uuid],
        grants: &[uuid::Uuid],
        bindings: &[uuid::Uuid],
    ) -> Result<crate::shared::States> {
        let rows: Vec<StateRow> = sqlx::query_as(states_select!("$1", "$2", "$3", "$4", "$5"))
            .bind(tenant.as_uuid())
            .bind(credentials)
            .bind(principals)
            .bind(grants)
            .bind(bindings)
            .fetch_all(&mut **tx)
            .await
            .map_err(db("reveal check"))?;
        Ok(states_from_rows(rows))
    }
}

/// One row of [`states_select!`]: kind (`c`redential, `p`rincipal,
/// `g`rant or `b`inding, whose status is its principal's id), id, status,
/// extra, version, destroyed_at, expires_at.
type StateRow = (
    String,
    uuid::Uuid,
    String,
    String,
    i64,
    Option<i64>,
    Option<i64>,
);

/// The states in `rows`.
fn states_from_rows(rows: Vec<StateRow>) -> crate::shared::States {
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
            "b" => {
                if let Ok(principal) = status.parse::<uuid::Uuid>() {
                    states.bindings.insert(id, principal);
                }
            }
            _ => {
                states.grants.insert(id, expires_at);
            }
        }
    }
    states
}

/// The payloads announcing `changes`, tagged with the store's `origin`.
pub(crate) fn notice_texts(origin: uuid::Uuid, changes: &[Change]) -> Vec<String> {
    changes
        .iter()
        .map(|c| format!("{origin} {}", c.to_text()))
        .collect()
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

crate::shared::store_impl!(PgStore, Postgres);
crate::chains::chain_store_impl!(PgStore, Postgres);
crate::namespaces::namespace_review_impl!(PgStore, Postgres);
