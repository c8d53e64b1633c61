//! Postgres: the production backend, shared by any number of servers.
//! Tenant isolation is enforced twice: every query filters by tenant, and
//! row-level security (see the migrations) hides every other tenant's rows
//! from a transaction bound to one tenant, as [`Dialect::begin_tenant`]
//! binds every tenant transaction here.
//!
//! Besides the shared SQL, Postgres has the group committer's bulk path
//! (`bulk`: a batch's rotations and creates as multi-row statements) and its
//! one-round-trip path for batches of events only (`events`), and announces
//! committed changes to the other servers (`changes`).

mod bulk;
mod changes;
mod events;
mod probe;

pub use probe::{PgProbe, PgTimeouts};

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions, PgRow};
use sqlx::query::Query;
use sqlx::{PgPool, Postgres, QueryBuilder, Transaction};
use strongroom_core::audit::{AuditDraft, AuditEvent};
use strongroom_core::ids::TenantId;
use strongroom_core::store::Change;
use strongroom_core::{Error, Result};
use tokio::sync::broadcast;

use crate::dialect::{Dialect, NamespaceLock};
use crate::error::db;
use crate::group_commit::checks::{
    BindingState, CheckIds, CredentialState, GrantState, PrincipalState, States,
};
use crate::group_commit::{Fast, Head, Outcome, Work};
use crate::store::SqlStore;

/// The database role the server's login role must be a member of. The
/// migrations create it without `SUPERUSER` and `BYPASSRLS` and grant it
/// exactly the privileges the server needs.
pub const APP_ROLE: &str = "strongroom_app";

/// The advisory lock the lease sweeper holds while it expires a tenant's
/// leases (`pg_try_advisory_xact_lock`): one sweeper works at a time
/// across the servers sharing the database.
const LEASE_SWEEP_LOCK: i64 = 0x7372_6c65_6173_6501;

/// The advisory lock the rotation monitor holds while it records a
/// tenant's reminders: one monitor works at a time across the servers.
const ROTATION_MONITOR_LOCK: i64 = 0x7372_726f_7461_7401;

/// The Postgres store.
pub type PgStore = SqlStore<Postgres>;

/// What a Postgres store keeps besides its pool: its change listener.
#[derive(Clone, Default)]
pub struct PgState {
    /// Whether the change listener was started.
    listening: Arc<AtomicBool>,
    /// Where the change listener connects, when not through the pool's
    /// own settings.
    listen_options: Option<PgConnectOptions>,
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
impl SqlStore<Postgres> {
    /// Drops the reply of the next batch of events committed on the short
    /// path, as a connection closed between the commit and its answer
    /// would, and holds the resend until `hook.resend` resolves.
    pub fn lose_next_commit_reply(&self, hook: LostReply) {
        if let Ok(mut slot) = self.state.lost_reply.lock() {
            *slot = Some(hook);
        }
    }

    pub(crate) fn take_lost_reply(&self) -> Option<LostReply> {
        self.state
            .lost_reply
            .lock()
            .ok()
            .and_then(|mut slot| slot.take())
    }
}

impl SqlStore<Postgres> {
    /// Wraps an existing pool. The pool's role must not be a superuser or
    /// have `BYPASSRLS`, or row-level security is not in force; see
    /// [`PgStore::check_role`].
    pub fn new(pool: PgPool) -> Self {
        Self::with_pool(pool, uuid::Uuid::new_v4(), 1024)
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
        self.state.listen_options = Some(options);
        Ok(self)
    }

    /// Connects to `url` with up to `max_connections` connections, without
    /// statement or lock timeouts (migrations, reports).
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self> {
        Self::connect_bounded(url, max_connections, None).await
    }

    /// Connects to `url` with up to `max_connections` connections; with
    /// `timeouts`, every connection has their `statement_timeout` and
    /// `lock_timeout`, and a call waits for a pooled connection (or a new
    /// one to connect) at most `acquire` (else 5 s).
    pub async fn connect_bounded(
        url: &str,
        max_connections: u32,
        timeouts: Option<PgTimeouts>,
    ) -> Result<Self> {
        let mut options = PgConnectOptions::from_str(url)
            .map_err(|_| Error::invalid("database.url", "is not a valid Postgres URL"))?
            .application_name("strongroomd")
            // Short OLTP statements: JIT compilation (triggered by the
            // planner's estimates for array-unnesting batch statements) would
            // cost more than it saves.
            .options([("jit", "off")]);
        if let Some(t) = &timeouts {
            options = options.options([
                ("statement_timeout", t.statement.as_millis().to_string()),
                ("lock_timeout", t.lock.as_millis().to_string()),
            ]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            // No ping before each use (a round trip per transaction); a
            // connection found broken when a transaction begins is replaced
            // and the BEGIN retried (see `begin_with`).
            .test_before_acquire(false)
            .acquire_timeout(timeouts.map_or(Duration::from_secs(5), |t| t.acquire))
            .connect_with(options)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "cannot connect to Postgres");
                Error::Unavailable("cannot connect to the database".into())
            })?;
        Ok(Self::new(pool))
    }

    /// Fails unless the connected role is subject to row-level security:
    /// neither a superuser nor `BYPASSRLS`.
    pub async fn check_role(&self) -> Result<()> {
        let (name, superuser, bypass): (String, bool, bool) = sqlx::query_as(
            "SELECT rolname::text, rolsuper, rolbypassrls FROM pg_roles \
             WHERE rolname = current_user",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(db("database role"))?;
        if superuser || bypass {
            return Err(Error::precondition(format!(
                "database role '{name}' is a superuser or has BYPASSRLS, so row-level security \
                 would not apply; connect as a role that is a member of {APP_ROLE}"
            )));
        }
        Ok(())
    }

    /// Begins a transaction with `begin` (a simple query starting with
    /// BEGIN). Pooled connections are not pinged before use, so a connection
    /// the server closed meanwhile (a restart, an idle timeout) fails here:
    /// nothing ran on it, so the BEGIN is retried on another connection.
    async fn begin_with(&self, begin: String) -> Result<Transaction<'static, Postgres>> {
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
}

/// The reveal-check states of the credentials, principals, grants and
/// bindings whose id arrays are `$2` to `$5` (`$1` is the tenant), in one
/// query, as [`StateRow`]s. Each id is looked up by its primary key in a
/// LATERAL subquery with LIMIT 1, which stays a nested loop over the index:
/// a join of the array with a small table was planned as a sequential scan
/// of every row (migration 20261210010001 says the same of the commit's
/// check).
const READ_STATES: &str = "\
    SELECT 'c' AS kind, c.id, c.status, NULL::text AS role, NULL::text AS tenant_status, \
           c.current_version, c.destroyed_at, c.expires_at, \
           NULL::uuid AS principal_id, NULL::text AS disabled_reason \
      FROM unnest($2::uuid[]) AS x(id) \
      CROSS JOIN LATERAL (SELECT c.id, c.status, c.current_version, c.destroyed_at, \
                                 c.expires_at \
                            FROM credentials c WHERE c.tenant_id = $1 AND c.id = x.id \
                           LIMIT 1) AS c \
    UNION ALL \
    SELECT 'p', p.id, p.status, p.role, t.status, NULL, NULL, NULL, NULL, NULL \
      FROM unnest($3::uuid[]) AS x(id) \
      CROSS JOIN LATERAL (SELECT p.id, p.status, p.role, p.tenant_id \
                            FROM principals p WHERE p.tenant_id = $1 AND p.id = x.id \
                           LIMIT 1) AS p \
      JOIN tenants t ON t.id = p.tenant_id \
    UNION ALL \
    SELECT 'g', g.id, NULL, NULL, NULL, NULL, NULL, g.expires_at, NULL, NULL \
      FROM unnest($4::uuid[]) AS x(id) \
      CROSS JOIN LATERAL (SELECT g.id, g.expires_at \
                            FROM grants g WHERE g.tenant_id = $1 AND g.id = x.id \
                           LIMIT 1) AS g \
    UNION ALL \
    SELECT 'b', b.id, NULL, NULL, NULL, NULL, NULL, NULL, b.principal_id, b.disabled_reason \
      FROM unnest($5::uuid[]) AS x(id) \
      CROSS JOIN LATERAL (SELECT b.id, b.principal_id, b.disabled_reason \
                            FROM identity_bindings b WHERE b.tenant_id = $1 AND b.id = x.id \
                           LIMIT 1) AS b";

/// One row of [`READ_STATES`]: a state of `kind` (`c`redential,
/// `p`rincipal, `g`rant or `b`inding), its columns null where the kind has
/// none.
#[derive(sqlx::FromRow)]
struct StateRow {
    kind: String,
    id: uuid::Uuid,
    status: Option<String>,
    role: Option<String>,
    tenant_status: Option<String>,
    current_version: Option<i32>,
    destroyed_at: Option<i64>,
    expires_at: Option<i64>,
    principal_id: Option<uuid::Uuid>,
    disabled_reason: Option<String>,
}

impl StateRow {
    /// Adds the state this row holds to `states`.
    fn add_to(self, states: &mut States) -> Result<()> {
        let StateRow {
            kind,
            id,
            status,
            role,
            tenant_status,
            current_version,
            destroyed_at,
            expires_at,
            principal_id,
            disabled_reason,
        } = self;
        let missing = || Error::internal("reveal check state row is incomplete");
        match kind.as_str() {
            "c" => states.credential(CredentialState {
                id,
                status: status.ok_or_else(missing)?,
                current_version: current_version.ok_or_else(missing)?,
                destroyed_at,
                expires_at,
            }),
            "p" => states.principal(PrincipalState {
                id,
                status: status.ok_or_else(missing)?,
                role: role.ok_or_else(missing)?,
                tenant_status: tenant_status.ok_or_else(missing)?,
            }),
            "g" => states.grant(GrantState { id, expires_at }),
            "b" => states.binding(BindingState {
                id,
                principal_id: principal_id.ok_or_else(missing)?,
                disabled_reason,
            }),
            _ => return Err(missing()),
        }
        Ok(())
    }
}

impl Dialect for Postgres {
    type State = PgState;

    const SUBSTRING_POSITION: &'static str = "strpos";

    const LOCK_TENANT_HEAD: &'static str =
        "SELECT sequence, hash FROM audit_heads WHERE tenant_id = $1 FOR UPDATE";

    const LOCK_PLATFORM_HEAD: &'static str =
        "SELECT sequence, hash FROM platform_audit_heads WHERE id = 1 FOR UPDATE";

    const SKIP_LOCKED: &'static str = " FOR UPDATE SKIP LOCKED";
    const PURGE_SHREDDED_AUDIT: &'static [&'static str] = &["SELECT purge_shredded_audit($1)"];
    const FOR_UPDATE: &'static str = " FOR UPDATE";
    const FOR_SHARE: &'static str = " FOR KEY SHARE";

    /// Batches of events only take [`Postgres::fast_events`]: one round
    /// trip to the server instead of six.
    const FAST_EVENTS: bool = true;

    async fn begin_tenant(
        store: &PgStore,
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
        store
            .begin_with(format!(
                "BEGIN ISOLATION LEVEL READ COMMITTED; \
                 SELECT set_config('strongroom.tenant_id', '{}', true)",
                tenant.as_uuid().hyphenated()
            ))
            .await
    }

    async fn begin_platform(
        store: &PgStore,
        tenant: Option<TenantId>,
        _write: bool,
    ) -> Result<Transaction<'static, Postgres>> {
        // One round trip, as for `begin_tenant` (the id is a formatted
        // UUID), and READ COMMITTED for the same reason: the overlap check
        // after `LOCK TABLE identity_namespaces` must see every assignment
        // committed before the lock was granted.
        store
            .begin_with(format!(
                "BEGIN ISOLATION LEVEL READ COMMITTED; \
                 SELECT set_config('strongroom.platform', 'on', true), \
                 set_config('strongroom.tenant_id', '{}', true)",
                tenant
                    .map(|t| t.as_uuid().hyphenated().to_string())
                    .unwrap_or_default()
            ))
            .await
    }

    async fn begin_lease_sweep(store: &PgStore) -> Result<Transaction<'static, Postgres>> {
        store
            .begin_with(
                "BEGIN ISOLATION LEVEL READ COMMITTED; \
                 SELECT set_config('strongroom.lease_sweep', 'on', true)"
                    .to_owned(),
            )
            .await
    }

    async fn try_sweep_lock(tx: &mut Transaction<'static, Postgres>) -> Result<bool> {
        let (taken,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_xact_lock($1)")
            .bind(LEASE_SWEEP_LOCK)
            .fetch_one(&mut **tx)
            .await
            .map_err(db("lease sweep lock"))?;
        Ok(taken)
    }

    async fn try_monitor_lock(tx: &mut Transaction<'static, Postgres>) -> Result<bool> {
        let (taken,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_xact_lock($1)")
            .bind(ROTATION_MONITOR_LOCK)
            .fetch_one(&mut **tx)
            .await
            .map_err(db("rotation monitor lock"))?;
        Ok(taken)
    }

    async fn bind_tenant(tx: &mut Transaction<'static, Postgres>, tenant: TenantId) -> Result<()> {
        sqlx::query("SELECT set_config('strongroom.tenant_id', $1, true)")
            .bind(tenant.as_uuid().hyphenated().to_string())
            .execute(&mut **tx)
            .await
            .map_err(db("transaction"))?;
        Ok(())
    }

    async fn lock_namespaces(
        tx: &mut Transaction<'static, Postgres>,
        lock: NamespaceLock,
    ) -> Result<()> {
        let sql = match lock {
            NamespaceLock::Exclusive => "LOCK TABLE identity_namespaces IN EXCLUSIVE MODE",
            NamespaceLock::Shared => "LOCK TABLE identity_namespaces IN SHARE MODE",
        };
        sqlx::query(sql)
            .execute(&mut **tx)
            .await
            .map_err(db("identity namespace"))?;
        Ok(())
    }

    async fn notify_changes(
        tx: &mut Transaction<'static, Postgres>,
        origin: uuid::Uuid,
        changes: &[Change],
    ) -> Result<()> {
        changes::notify(tx, origin, changes).await
    }

    fn subscribe_changes(store: &PgStore) -> broadcast::Receiver<Change> {
        changes::subscribe(store)
    }

    /// One query for the whole batch.
    async fn read_states(
        tx: &mut Transaction<'static, Postgres>,
        tenant: TenantId,
        ids: &CheckIds,
    ) -> Result<States> {
        let rows: Vec<StateRow> = sqlx::query_as(READ_STATES)
            .bind(tenant.as_uuid())
            .bind(&ids.credentials)
            .bind(&ids.principals)
            .bind(&ids.grants)
            .bind(&ids.bindings)
            .fetch_all(&mut **tx)
            .await
            .map_err(db("reveal check"))?;
        let mut states = States::default();
        for row in rows {
            row.add_to(&mut states)?;
        }
        Ok(states)
    }

    async fn insert_events(
        tx: &mut Transaction<'static, Postgres>,
        events: &[AuditEvent],
        head: Head,
        origin: uuid::Uuid,
        changes: &[Change],
    ) -> Result<()> {
        events::insert(tx, events, head, origin, changes).await
    }

    async fn bulk_mutations(
        tx: &mut Transaction<'static, Postgres>,
        tenant: TenantId,
        works: &[Work],
    ) -> Result<Vec<Outcome>> {
        bulk::mutations(tx, tenant, works).await
    }

    async fn fast_events(
        store: &PgStore,
        tenant: TenantId,
        works: &[Work],
        drafts: Vec<AuditDraft>,
        head: Head,
        held: &mut Option<PoolConnection<Postgres>>,
    ) -> Result<Fast> {
        events::fast(store, tenant, works, drafts, head, held).await
    }

    async fn execute<'q>(
        query: Query<'q, Postgres, sqlx::postgres::PgArguments>,
        conn: &mut PgConnection,
    ) -> std::result::Result<u64, sqlx::Error> {
        Ok(query.execute(conn).await?.rows_affected())
    }

    async fn fetch_one<'q>(
        query: Query<'q, Postgres, sqlx::postgres::PgArguments>,
        conn: &mut PgConnection,
    ) -> std::result::Result<PgRow, sqlx::Error> {
        query.fetch_one(conn).await
    }

    async fn fetch_optional<'q>(
        query: Query<'q, Postgres, sqlx::postgres::PgArguments>,
        conn: &mut PgConnection,
    ) -> std::result::Result<Option<PgRow>, sqlx::Error> {
        query.fetch_optional(conn).await
    }

    async fn fetch_all<'q>(
        query: Query<'q, Postgres, sqlx::postgres::PgArguments>,
        conn: &mut PgConnection,
    ) -> std::result::Result<Vec<PgRow>, sqlx::Error> {
        query.fetch_all(conn).await
    }

    async fn fetch_all_built<'q>(
        builder: &mut QueryBuilder<'q, Postgres>,
        conn: &mut PgConnection,
    ) -> std::result::Result<Vec<PgRow>, sqlx::Error> {
        builder.build().fetch_all(conn).await
    }
}
