//! Row-level security on its own (Postgres only). Raw SQL as the app role,
//! with no tenant filter of the store's to help, must see and change only the
//! rows of the tenant the transaction is bound to: the database enforces the
//! boundary even against a query that forgot it.

use std::sync::Arc;

use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Postgres, Transaction};
use strongroom_core::audit::{Action, ChainVerifier};
use strongroom_core::credential::Credential;
use strongroom_core::ids::TenantId;
use strongroom_core::policy::{Capability, GrantSubject};
use strongroom_core::principal::Role;
use strongroom_core::store::Store;
use strongroom_store::{APP_ROLE, PgStore};
use uuid::Uuid;

use crate::support::{
    Code, TestTenant, audit_log, code, create_tenant, credential, grant, pg_store,
};

/// Every table holding tenant data, with the column naming the tenant.
const TENANT_TABLES: [(&str, &str); 14] = [
    ("tenants", "id"),
    ("tenant_keks", "tenant_id"),
    ("environments", "tenant_id"),
    ("principals", "tenant_id"),
    ("identity_bindings", "tenant_id"),
    ("credentials", "tenant_id"),
    ("credential_versions", "tenant_id"),
    ("grants", "tenant_id"),
    ("audit_heads", "tenant_id"),
    ("audit_events", "tenant_id"),
    ("leases", "tenant_id"),
    ("access_requests", "tenant_id"),
    ("notification_deliveries", "tenant_id"),
    ("rotation_reminders", "tenant_id"),
];

/// Two tenants with rows in every tenant table, written through the store as
/// the app role.
struct Populated {
    /// Superuser pool: sees everything, to count what RLS must hide.
    admin: PgPool,
    store: Arc<PgStore>,
    a: TestTenant,
    b: TestTenant,
    b_credential: Credential,
}

impl Populated {
    async fn new(admin: PgPool) -> Self {
        let store = pg_store(admin.clone()).await;
        let s: &dyn Store = &*store;
        let a = create_tenant(s, "alpha").await;
        let b = create_tenant(s, "beta").await;
        let mut b_credential = None;
        for t in [&a, &b] {
            let scope = t.scope();
            let c = credential(&scope, "dev", "llm/openai");
            t.store(s, &c).await.expect("credential");
            t.rotate(s, &c, 1).await.expect("second version");
            let g = grant(
                t,
                GrantSubject::Role(Role::Agent),
                "llm/*",
                &["dev"],
                &[Capability::Inject],
            );
            t.add_grant(s, &g).await;
            reveal_with_lease(s, t, &c).await;
            let request = crate::access_requests::request(t, t.admin().id, "llm/*");
            s.file_access_request(
                &scope,
                &request,
                Some(&crate::access_requests::notice(&request)),
                request.created_at,
                crate::support::draft(&scope, Action::AccessRequestFile),
            )
            .await
            .expect("an access request");
            let now = strongroom_core::time::Timestamp::now();
            s.record_reminders(
                &strongroom_core::scope::SystemScope::for_task(
                    strongroom_core::scope::SystemTask::RotationMonitor,
                ),
                t.id(),
                &[strongroom_core::rotation::Reminder {
                    credential: c.id,
                    kind: strongroom_core::rotation::ReminderKind::DueSoon,
                    window: now,
                    delivery: None,
                    events: vec![],
                }],
                now,
            )
            .await
            .expect("a rotation reminder")
            .expect("the monitor lock");
            b_credential = Some(c);
        }
        Self {
            admin,
            store,
            a,
            b,
            b_credential: b_credential.expect("b's credential"),
        }
    }

    fn app(&self) -> &PgPool {
        self.store.pool()
    }

    /// Rows of `tenant` in `table`, counted by the superuser.
    async fn rows_of(&self, table: &str, column: &str, tenant: TenantId) -> i64 {
        sqlx::query_scalar(&format!("SELECT count(*) FROM {table} WHERE {column} = $1"))
            .bind(tenant.as_uuid())
            .fetch_one(&self.admin)
            .await
            .expect("count as superuser")
    }

    async fn close(self) {
        self.store.pool().close().await;
    }
}

/// Reveals `c` as the tenant's admin, storing the reveal's lease.
async fn reveal_with_lease(s: &dyn Store, t: &TestTenant, c: &Credential) {
    let scope = t.scope();
    let admin = t.admin();
    // As stored now (rotated since `c` was made).
    let c = &s.get_credential(&scope, c.id).await.expect("credential");
    let mut draft = strongroom_core::audit::AuditDraft::new(
        Action::CredentialReveal,
        strongroom_core::audit::Outcome::Allowed,
        "ALLOWED_BY_ROLE",
    );
    draft.principal = Some(admin.id);
    draft.credential = Some(c.id);
    let now = strongroom_core::time::Timestamp::now();
    let lease = strongroom_core::lease::Lease {
        id: strongroom_core::ids::LeaseId::generate(),
        tenant: t.id(),
        credential: c.id,
        credential_name: c.name.clone(),
        environment: c.environment.clone(),
        version: c.current_version,
        principal: admin.id,
        grant: None,
        on_behalf_of: None,
        purpose: None,
        ttl: std::time::Duration::from_secs(60),
        issued_at: now,
        expires_at: now.plus(std::time::Duration::from_secs(60)),
        max_expires_at: now.plus(std::time::Duration::from_secs(60)),
        state: strongroom_core::lease::LeaseState::Active,
        ended_at: None,
        end: None,
    };
    let check = strongroom_core::store::RevealCheck {
        credential: c.id,
        version: c.current_version,
        principal: admin.id,
        role: admin.role,
        grant: None,
        binding: None,
    };
    s.append_reveal(&scope, draft, check, Some(std::sync::Arc::new(lease)))
        .await
        .expect("a reveal with its lease");
}

/// A transaction of the app role, bound to `tenant` if given.
async fn app_tx(pool: &PgPool, tenant: Option<TenantId>) -> Transaction<'static, Postgres> {
    let mut tx = pool.begin().await.expect("begin");
    if let Some(t) = tenant {
        sqlx::query("SELECT set_config('strongroom.tenant_id', $1, true)")
            .bind(t.to_string())
            .execute(&mut *tx)
            .await
            .expect("bind the transaction to a tenant");
    }
    tx
}

async fn count(tx: &mut Transaction<'static, Postgres>, sql: &str, bind: Option<Uuid>) -> i64 {
    let mut q = sqlx::query_scalar(sql);
    if let Some(b) = bind {
        q = q.bind(b);
    }
    q.fetch_one(&mut **tx)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The database error of a statement that must fail, as (SQLSTATE, message).
fn db_error(
    result: Result<sqlx::postgres::PgQueryResult, sqlx::Error>,
    what: &str,
) -> (String, String) {
    match result {
        Ok(done) => panic!("{what} succeeded ({} rows)", done.rows_affected()),
        Err(sqlx::Error::Database(e)) => (
            e.code().map(|c| c.to_string()).unwrap_or_default(),
            e.message().to_owned(),
        ),
        Err(e) => panic!("{what}: not a database error: {e}"),
    }
}

/// Bound to one tenant, a query without any tenant filter sees exactly that
/// tenant's rows, in every tenant table, and none of the other's.
pub async fn rls_hides_other_tenants_rows(admin: PgPool) {
    let world = Populated::new(admin).await;
    for (me, other) in [(&world.a, &world.b), (&world.b, &world.a)] {
        let mut tx = app_tx(world.app(), Some(me.id())).await;
        for (table, column) in TENANT_TABLES {
            let mine = world.rows_of(table, column, me.id()).await;
            let theirs = world.rows_of(table, column, other.id()).await;
            assert!(
                mine > 0 && theirs > 0,
                "{table} must hold rows of both tenants"
            );
            let visible = count(&mut tx, &format!("SELECT count(*) FROM {table}"), None).await;
            assert_eq!(
                visible,
                mine,
                "{table}: unfiltered count as {}",
                me.tenant().name
            );
            let leaked = count(
                &mut tx,
                &format!("SELECT count(*) FROM {table} WHERE {column} = $1"),
                Some(other.id().as_uuid()),
            )
            .await;
            assert_eq!(leaked, 0, "{table}: rows of the other tenant are visible");
            let foreign = count(
                &mut tx,
                &format!("SELECT count(*) FROM {table} WHERE {column} <> $1"),
                Some(me.id().as_uuid()),
            )
            .await;
            assert_eq!(foreign, 0, "{table}: rows of another tenant are visible");
        }
        tx.rollback().await.expect("rollback");
    }
    // The other tenant's envelopes in particular.
    let mut tx = app_tx(world.app(), Some(world.a.id())).await;
    let envelopes: Vec<Option<Vec<u8>>> =
        sqlx::query_scalar("SELECT envelope FROM credential_versions WHERE credential_id = $1")
            .bind(world.b_credential.id.as_uuid())
            .fetch_all(&mut *tx)
            .await
            .expect("select");
    assert!(envelopes.is_empty());
    tx.rollback().await.expect("rollback");
    world.close().await;
}

/// Bound to tenant A, the app role can insert no row for tenant B in any
/// tenant table, cannot move its own rows to B, and its updates and deletes
/// of B's rows touch nothing.
pub async fn rls_rejects_writes_into_another_tenant(admin: PgPool) {
    let world = Populated::new(admin).await;
    let (a, b) = (&world.a, &world.b);
    let b_admin = b.admin().id.as_uuid();
    let b_cred = world.b_credential.id.as_uuid();
    let inserts: [(&str, &str); 12] = [
        (
            "tenants",
            "INSERT INTO tenants (id, name, status, settings, current_kek_version, created_at) \
                     VALUES ($1, 'evil', 'active', '{}', 1, 0)",
        ),
        (
            "tenant_keks",
            "INSERT INTO tenant_keks (tenant_id, version, wrapped, created_at) VALUES ($1, 99, '\\x00', 0)",
        ),
        (
            "environments",
            "INSERT INTO environments (tenant_id, name, created_at) VALUES ($1, 'evil', 0)",
        ),
        (
            "principals",
            "INSERT INTO principals (tenant_id, id, name, role, environments, description, status, created_at) \
                        VALUES ($1, gen_random_uuid(), 'evil', 'admin', '[]', '', 'active', 0)",
        ),
        (
            "identity_bindings",
            "INSERT INTO identity_bindings (tenant_id, id, principal_id, kind, pattern, created_at) \
                               VALUES ($1, gen_random_uuid(), $2, 'exact', 'spiffe://evil', 0)",
        ),
        (
            "credentials",
            "INSERT INTO credentials (tenant_id, id, environment, name, service, kind, description, tags, \
                         scopes, status, current_version, latest_version, rotated_at, created_at, updated_at, created_by) \
                         VALUES ($1, gen_random_uuid(), 'dev', 'evil', 'x', 'api_key', '', '[]', '[]', 'active', 1, 1, 0, 0, 0, $2)",
        ),
        (
            "credential_versions",
            "INSERT INTO credential_versions (tenant_id, credential_id, version, envelope, kek_version, \
                                 created_at, created_by) VALUES ($1, $3, 99, '\\x00', 1, 0, $2)",
        ),
        (
            "grants",
            "INSERT INTO grants (tenant_id, id, subject_kind, subject, selector, environments, capabilities, \
                    destinations, reason, granted_by, created_at) \
                    VALUES ($1, gen_random_uuid(), 'role', 'agent', '*', '[\"dev\"]', 127, '[]', '', $2, 0)",
        ),
        (
            "audit_heads",
            "INSERT INTO audit_heads (tenant_id, sequence, hash) VALUES ($1, 0, '\\x00')",
        ),
        (
            "audit_events",
            "INSERT INTO audit_events (tenant_id, sequence, id, at, actor, action, outcome, reason_code, \
                          prev_hash, hash) VALUES ($1, 999, gen_random_uuid(), 0, 'evil', 'other', 'allowed', '', '\\x00', '\\x00')",
        ),
        (
            "leases",
            "INSERT INTO leases (tenant_id, id, credential_id, credential_name, environment, version, \
                    principal_id, ttl_secs, issued_at, expires_at, max_expires_at, state) \
                    VALUES ($1, gen_random_uuid(), $3, 'evil', 'dev', 1, $2, 60, 0, 60, 60, 'active')",
        ),
        (
            "rotation_reminders",
            "INSERT INTO rotation_reminders (tenant_id, credential_id, reminder, window_at, \
                    delivery_id, created_at) VALUES ($1, $3, 'overdue', 0, $2, 0)",
        ),
    ];
    let mut before = Vec::new();
    for (table, column) in TENANT_TABLES {
        before.push(world.rows_of(table, column, b.id()).await);
    }
    for (table, sql) in inserts {
        let mut tx = app_tx(world.app(), Some(a.id())).await;
        let mut q = sqlx::query(sql).bind(b.id().as_uuid());
        if sql.contains("$2") {
            q = q.bind(b_admin);
        }
        if sql.contains("$3") {
            q = q.bind(b_cred);
        }
        let (state, message) = db_error(q.execute(&mut *tx).await, &format!("insert into {table}"));
        assert_eq!(state, "42501", "{table}: {message}");
        assert!(message.contains("row-level security"), "{table}: {message}");
        tx.rollback().await.expect("rollback");
    }
    // Moving one's own rows into another tenant fails the same check.
    for (table, column) in [
        ("credentials", "tenant_id"),
        ("grants", "tenant_id"),
        ("principals", "tenant_id"),
    ] {
        let mut tx = app_tx(world.app(), Some(a.id())).await;
        let result = sqlx::query(&format!(
            "UPDATE {table} SET {column} = $1 WHERE {column} = $2"
        ))
        .bind(b.id().as_uuid())
        .bind(a.id().as_uuid())
        .execute(&mut *tx)
        .await;
        let (state, message) = db_error(result, &format!("move {table} rows"));
        assert_eq!(state, "42501", "{table}: {message}");
        assert!(message.contains("row-level security"), "{table}: {message}");
        tx.rollback().await.expect("rollback");
    }
    // Updates and deletes aimed at the other tenant's rows touch none.
    let updatable = [
        "tenants",
        "tenant_keks",
        "principals",
        "credentials",
        "credential_versions",
        "grants",
        "audit_heads",
        "leases",
    ];
    let deletable = [
        "environments",
        "principals",
        "identity_bindings",
        "credentials",
        "credential_versions",
        "grants",
        "rotation_reminders",
    ];
    let mut tx = app_tx(world.app(), Some(a.id())).await;
    for (table, column) in TENANT_TABLES {
        let mut statements = Vec::new();
        if updatable.contains(&table) {
            statements.push(format!(
                "UPDATE {table} SET {column} = {column} WHERE {column} = $1"
            ));
        }
        if deletable.contains(&table) {
            statements.push(format!("DELETE FROM {table} WHERE {column} = $1"));
        }
        for sql in statements {
            let done = sqlx::query(&sql)
                .bind(b.id().as_uuid())
                .execute(&mut *tx)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            assert_eq!(done.rows_affected(), 0, "{sql} touched the other tenant");
        }
    }
    tx.commit().await.expect("commit");

    for ((table, column), rows) in TENANT_TABLES.into_iter().zip(before) {
        assert_eq!(
            world.rows_of(table, column, b.id()).await,
            rows,
            "{table} of the other tenant changed"
        );
    }
    let store: &dyn Store = &*world.store;
    let mut v = ChainVerifier::default();
    for e in audit_log(store, &b.scope()).await {
        v.push(&e)
            .unwrap_or_else(|br| panic!("b's chain breaks at {}: {}", br.sequence, br.reason));
    }
    assert_eq!(
        store
            .get_credential(&b.scope(), world.b_credential.id)
            .await
            .expect("b's credential")
            .latest_version,
        2
    );
    world.close().await;
}

/// A transaction bound to no tenant sees no row of any tenant table, even
/// on a connection that was bound to a tenant before; a malformed tenant id
/// fails the query instead of matching anything.
pub async fn rls_without_a_tenant_sees_nothing(admin: PgPool) {
    let world = Populated::new(admin).await;
    let mut conn = world.app().acquire().await.expect("one connection");
    {
        let mut tx = sqlx::Connection::begin(&mut *conn).await.expect("begin");
        sqlx::query("SELECT set_config('strongroom.tenant_id', $1, true)")
            .bind(world.a.id().to_string())
            .execute(&mut *tx)
            .await
            .expect("bind");
        let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM credentials")
            .fetch_one(&mut *tx)
            .await
            .expect("count");
        assert_eq!(seen, 1);
        tx.commit().await.expect("commit");
    }
    for setting in [None, Some("")] {
        let mut tx = sqlx::Connection::begin(&mut *conn).await.expect("begin");
        if let Some(s) = setting {
            sqlx::query("SELECT set_config('strongroom.tenant_id', $1, true)")
                .bind(s)
                .execute(&mut *tx)
                .await
                .expect("set");
        }
        for (table, _) in TENANT_TABLES {
            let seen: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
                .fetch_one(&mut *tx)
                .await
                .expect("count");
            assert_eq!(seen, 0, "{table} without a tenant ({setting:?})");
        }
        tx.rollback().await.expect("rollback");
    }
    let mut tx = sqlx::Connection::begin(&mut *conn).await.expect("begin");
    sqlx::query("SELECT set_config('strongroom.tenant_id', 'not-a-uuid', true)")
        .execute(&mut *tx)
        .await
        .expect("set");
    let result: Result<i64, _> = sqlx::query_scalar("SELECT count(*) FROM credentials")
        .fetch_one(&mut *tx)
        .await;
    assert!(result.is_err(), "a malformed tenant id must fail closed");
    tx.rollback().await.expect("rollback");
    drop(conn);
    world.close().await;
}

/// Platform mode opens the tenant registry, principals and bindings to
/// reading, and nothing else: no keys, environments, credentials, versions,
/// grants or audit; and it writes nothing without a tenant.
pub async fn rls_platform_mode_reads_only_the_registry(admin: PgPool) {
    let world = Populated::new(admin).await;
    let mut tx = world.app().begin().await.expect("begin");
    sqlx::query("SELECT set_config('strongroom.platform', 'on', true)")
        .execute(&mut *tx)
        .await
        .expect("platform");
    for (table, _) in TENANT_TABLES {
        let seen: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&mut *tx)
            .await
            .expect("count");
        let total: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&world.admin)
            .await
            .expect("count as superuser");
        // Chain heads (a sequence and a hash each, no tenant data) are read
        // in platform mode by the scheduled checkpoint task.
        let expected =
            if ["tenants", "principals", "identity_bindings", "audit_heads"].contains(&table) {
                total
            } else {
                0
            };
        assert_eq!(seen, expected, "{table} in platform mode");
    }
    let result = sqlx::query(
        "INSERT INTO environments (tenant_id, name, created_at) VALUES ($1, 'evil', 0)",
    )
    .bind(world.b.id().as_uuid())
    .execute(&mut *tx)
    .await;
    let (state, message) = db_error(result, "platform insert");
    assert_eq!(state, "42501", "{message}");
    tx.rollback().await.expect("rollback");
    world.close().await;
}

/// The lease sweeper's mode (`strongroom.lease_sweep`) opens every
/// tenant's leases and access requests (the sweeper expires both), chain
/// heads (their lease due times name the tenants with leases their events
/// record running out) and notifier deliveries (the sender finds the
/// tenants with some due) to reading and nothing else, and writes nothing.
pub async fn rls_lease_sweep_reads_only_leases(admin: PgPool) {
    let world = Populated::new(admin).await;
    let mut tx = world.app().begin().await.expect("begin");
    sqlx::query("SELECT set_config('strongroom.lease_sweep', 'on', true)")
        .execute(&mut *tx)
        .await
        .expect("lease sweep mode");
    for (table, _) in TENANT_TABLES {
        let seen: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&mut *tx)
            .await
            .expect("count");
        let total: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&world.admin)
            .await
            .expect("count as superuser");
        let expected = if matches!(
            table,
            "leases" | "access_requests" | "notification_deliveries" | "audit_heads"
        ) {
            total
        } else {
            0
        };
        assert!(total > 0, "{table} holds rows");
        assert_eq!(seen, expected, "{table} in lease sweep mode");
    }
    let done = sqlx::query("UPDATE leases SET state = 'expired'")
        .execute(&mut *tx)
        .await
        .expect("update");
    assert_eq!(done.rows_affected(), 0, "the sweep mode writes no lease");
    let done = sqlx::query("UPDATE audit_heads SET leases_swept_through = 1")
        .execute(&mut *tx)
        .await
        .expect("update");
    assert_eq!(done.rows_affected(), 0, "the sweep mode writes no head");
    let done = sqlx::query("UPDATE access_requests SET status = 'expired'")
        .execute(&mut *tx)
        .await
        .expect("update");
    assert_eq!(done.rows_affected(), 0, "the sweep mode writes no request");
    let done = sqlx::query("UPDATE notification_deliveries SET attempts = 99")
        .execute(&mut *tx)
        .await
        .expect("update");
    assert_eq!(done.rows_affected(), 0, "the sweep mode writes no delivery");
    tx.rollback().await.expect("rollback");
    world.close().await;
}

/// The app role may only append to the audit log: no update, delete or
/// truncate, not even of its own tenant's events.
pub async fn rls_audit_log_is_append_only(admin: PgPool) {
    let world = Populated::new(admin).await;
    let a = world.a.id();
    for sql in [
        "UPDATE audit_events SET actor = 'forged' WHERE tenant_id = $1",
        "DELETE FROM audit_events WHERE tenant_id = $1",
        "DELETE FROM audit_heads WHERE tenant_id = $1",
        "UPDATE platform_audit_events SET actor = 'forged' WHERE tenant_id <> $1",
        "DELETE FROM platform_audit_events WHERE tenant_id <> $1",
        "DELETE FROM platform_audit_heads WHERE id = 1 AND $1::uuid IS NOT NULL",
    ] {
        let mut tx = app_tx(world.app(), Some(a)).await;
        let result = sqlx::query(sql).bind(a.as_uuid()).execute(&mut *tx).await;
        let (state, message) = db_error(result, sql);
        assert_eq!(state, "42501", "{sql}: {message}");
        assert!(message.contains("permission denied"), "{sql}: {message}");
        tx.rollback().await.expect("rollback");
    }
    let mut tx = app_tx(world.app(), Some(a)).await;
    let result = sqlx::query("TRUNCATE audit_events").execute(&mut *tx).await;
    let (state, _) = db_error(result, "truncate");
    assert_eq!(state, "42501");
    tx.rollback().await.expect("rollback");

    let store: &dyn Store = &*world.store;
    let log = audit_log(store, &world.a.scope()).await;
    assert!(log.iter().all(|e| e.draft.actor != "forged"));
    let mut v = ChainVerifier::default();
    for e in &log {
        v.push(e)
            .unwrap_or_else(|br| panic!("chain breaks at {}: {}", br.sequence, br.reason));
    }
    assert_eq!(v.checked(), log.len() as u64);
    world.close().await;
}

/// `check_role` refuses a superuser connection.
pub async fn check_role_refuses_a_superuser(admin: PgPool) {
    let store = PgStore::new(admin);
    assert_eq!(code(store.check_role().await), Code::FailedPrecondition);
}

/// `check_role` refuses a role with `BYPASSRLS`, even a member of the app
/// role.
pub async fn check_role_refuses_bypassrls(admin: PgPool) {
    const BYPASS: &str = "strongroom_test_bypass";
    sqlx::query(&format!(
        "DO $$ BEGIN CREATE ROLE {BYPASS} LOGIN BYPASSRLS IN ROLE {APP_ROLE}; \
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
    ))
    .execute(&admin)
    .await
    .expect("create a BYPASSRLS role");
    let options = admin.connect_options().as_ref().clone().username(BYPASS);
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .expect("connect as the BYPASSRLS role");
    let store = PgStore::new(pool);
    assert_eq!(code(store.check_role().await), Code::FailedPrecondition);
    store.pool().close().await;
}

/// The platform-level tables: identity namespaces are readable for the
/// bound tenant's own rows or in platform mode and writable only in
/// platform mode; the platform audit chain (failed authentications: peer
/// identities and addresses) is readable and writable only in platform mode.
pub async fn rls_platform_tables_are_platform_only(admin: PgPool) {
    use strongroom_core::audit::{AuditDraft, Outcome};
    use strongroom_core::chains::ChainStore;
    let world = Populated::new(admin).await;
    let mut failed = AuditDraft::new(
        Action::AuthenticationFailed,
        Outcome::Denied,
        "UNKNOWN_IDENTITY",
    );
    failed.actor = "spiffe://x/stranger".into();
    failed.peer = Some("127.0.0.1:1".into());
    world
        .store
        .append_platform_audit(failed)
        .await
        .expect("platform audit event");
    let (a, b) = (&world.a, &world.b);
    let total = |table: &'static str| {
        let admin = world.admin.clone();
        async move {
            sqlx::query_scalar::<_, i64>(&format!("SELECT count(*) FROM {table}"))
                .fetch_one(&admin)
                .await
                .expect("count as superuser")
        }
    };
    let b_namespaces = world
        .rows_of("identity_namespaces", "tenant_id", b.id())
        .await;
    assert!(
        world
            .rows_of("identity_namespaces", "tenant_id", a.id())
            .await
            > 0
    );
    assert!(b_namespaces > 0);
    assert!(total("platform_audit_events").await > 0);

    // Bound to A: A's namespaces only, nothing of the platform chain.
    let mut tx = app_tx(world.app(), Some(a.id())).await;
    let mine = world
        .rows_of("identity_namespaces", "tenant_id", a.id())
        .await;
    assert_eq!(
        count(&mut tx, "SELECT count(*) FROM identity_namespaces", None).await,
        mine
    );
    for table in ["platform_audit_events", "platform_audit_heads"] {
        assert_eq!(
            count(&mut tx, &format!("SELECT count(*) FROM {table}"), None).await,
            0,
            "{table} bound to a tenant"
        );
    }
    tx.rollback().await.expect("rollback");

    // Bound to A, every write to a platform table is refused or touches
    // nothing; each statement in its own transaction (a refusal aborts it).
    for (tenant, sql) in [
        (
            a.id(),
            "INSERT INTO identity_namespaces (tenant_id, kind, pattern, created_at) VALUES ($1, 'prefix', 'spiffe://squat/ns/', 0)",
        ),
        (
            b.id(),
            "INSERT INTO identity_namespaces (tenant_id, kind, pattern, created_at) VALUES ($1, 'prefix', 'spiffe://squat/ns/', 0)",
        ),
        (
            a.id(),
            "INSERT INTO platform_audit_events (tenant_id, sequence, id, at, actor, action, outcome, reason_code, prev_hash, hash) \
                  VALUES ($1, 999, gen_random_uuid(), 0, 'x', 'x', 'x', 'x', '\\x00', '\\x00')",
        ),
    ] {
        let mut tx = app_tx(world.app(), Some(a.id())).await;
        let result = sqlx::query(sql)
            .bind(tenant.as_uuid())
            .execute(&mut *tx)
            .await;
        let (state, message) = db_error(result, sql);
        assert_eq!(state, "42501", "{sql}: {message}");
        tx.rollback().await.expect("rollback");
    }
    let mut tx = app_tx(world.app(), Some(a.id())).await;
    for sql in [
        "DELETE FROM identity_namespaces",
        "UPDATE platform_audit_heads SET sequence = 999",
    ] {
        let done = sqlx::query(sql).execute(&mut *tx).await.expect(sql);
        assert_eq!(done.rows_affected(), 0, "{sql} bound to a tenant");
    }
    tx.commit().await.expect("commit");
    assert_eq!(
        world
            .rows_of("identity_namespaces", "tenant_id", b.id())
            .await,
        b_namespaces
    );

    // Without any binding: nothing.
    let mut tx = app_tx(world.app(), None).await;
    for table in [
        "identity_namespaces",
        "platform_audit_events",
        "platform_audit_heads",
    ] {
        assert_eq!(
            count(&mut tx, &format!("SELECT count(*) FROM {table}"), None).await,
            0,
            "{table} without a binding"
        );
    }
    tx.rollback().await.expect("rollback");

    // Platform mode: everything, and it may write.
    let mut tx = world.app().begin().await.expect("begin");
    sqlx::query("SELECT set_config('strongroom.platform', 'on', true)")
        .execute(&mut *tx)
        .await
        .expect("platform");
    for table in [
        "identity_namespaces",
        "platform_audit_events",
        "platform_audit_heads",
    ] {
        assert_eq!(
            count(&mut tx, &format!("SELECT count(*) FROM {table}"), None).await,
            total(table).await,
            "{table} in platform mode"
        );
    }
    sqlx::query("INSERT INTO identity_namespaces (tenant_id, kind, pattern, created_at) VALUES ($1, 'prefix', 'spiffe://granted/ns/', 0)")
        .bind(a.id().as_uuid())
        .execute(&mut *tx)
        .await
        .expect("platform mode assigns namespaces");
    tx.rollback().await.expect("rollback");
    world.close().await;
}

/// The review of derived namespaces at start-up runs as the app role: under
/// row-level security it removes a derived namespace too shallow for the
/// depth given and disables the bindings it covered, in that tenant only.
pub async fn pg_derived_namespace_review_runs_as_the_app_role(admin: PgPool) {
    let world = Populated::new(admin).await;
    let s: &dyn Store = &*world.store;
    let agent = world.a.add_principal(s, "squatter", Role::Agent).await;
    world
        .a
        .bind(s, agent.id, "spiffe://squat.test/ns/*")
        .await
        .expect("bind");
    // As the namespaces migration would have left it.
    sqlx::query(
        "UPDATE identity_namespaces SET derived = TRUE WHERE pattern = 'spiffe://squat.test/ns/'",
    )
    .execute(&world.admin)
    .await
    .expect("mark derived");
    let before_b: Vec<Option<String>> =
        sqlx::query_scalar("SELECT disabled_reason FROM identity_bindings WHERE tenant_id = $1")
            .bind(world.b.id().as_uuid())
            .fetch_all(&world.admin)
            .await
            .expect("b's bindings");
    let found = world
        .store
        .review_derived_namespaces(|n| n.depth_problem(2))
        .await
        .expect("review as the app role");
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].removed && found[0].tenant == world.a.id(),
        "{found:?}"
    );
    let left: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM identity_namespaces WHERE pattern = 'spiffe://squat.test/ns/'",
    )
    .fetch_one(&world.admin)
    .await
    .expect("count");
    assert_eq!(left, 0);
    let reason: Option<String> = sqlx::query_scalar(
        "SELECT disabled_reason FROM identity_bindings WHERE pattern = 'spiffe://squat.test/ns/'",
    )
    .fetch_one(&world.admin)
    .await
    .expect("the squatter's binding");
    assert!(
        reason
            .as_deref()
            .is_some_and(|r| r.contains("min_namespace_depth")),
        "{reason:?}"
    );
    assert!(
        s.resolve_identity("spiffe://squat.test/ns/x/sa/y")
            .await
            .expect("resolve")
            .is_empty()
    );
    // A's admin and B's bindings are untouched.
    let me = crate::support::authenticate(s, &world.a.admin_identity)
        .await
        .expect("a's admin still authenticates");
    assert_eq!(me.tenant().map(|t| t.id), Some(world.a.id()));
    let after_b: Vec<Option<String>> =
        sqlx::query_scalar("SELECT disabled_reason FROM identity_bindings WHERE tenant_id = $1")
            .bind(world.b.id().as_uuid())
            .fetch_all(&world.admin)
            .await
            .expect("b's bindings");
    assert_eq!(before_b, after_b);
    // Nothing derived is left to review.
    assert!(
        world
            .store
            .review_derived_namespaces(|n| n.depth_problem(2))
            .await
            .expect("again")
            .is_empty()
    );
    world.close().await;
}

/// Idempotency records: bound to a tenant, the app role sees and writes
/// only that tenant's; without a tenant it sees none; platform mode sees
/// only the platform operators' records; the sweeper's mode may read and
/// delete every record (the purge) but update none.
pub async fn rls_idempotency_records_are_confined(admin: PgPool) {
    use strongroom_core::idempotency::{IdempotencyStore, RequestKey};
    use strongroom_core::time::Timestamp;

    let world = Populated::new(admin).await;
    let (a, b) = (world.a.id(), world.b.id());
    let now = Timestamp::from_micros(1_800_000_000_000_000);
    let key = |tenant: Option<TenantId>| RequestKey {
        tenant,
        principal: "p".into(),
        call: "/strongroom.v1.PolicyService/CreateGrant".into(),
        request_id: "r".into(),
    };
    for tenant in [Some(a), Some(b), None] {
        world
            .store
            .claim_request(
                &key(tenant),
                &[1; 32],
                now,
                now.plus(std::time::Duration::from_secs(60)),
            )
            .await
            .expect("claim");
    }
    const COUNT: &str = "SELECT count(*) FROM idempotency_keys";
    let platform_scope = Uuid::nil();

    let mut tx = app_tx(world.app(), Some(a)).await;
    assert_eq!(
        count(&mut tx, COUNT, None).await,
        1,
        "a tenant sees its own"
    );
    for other in [b.as_uuid(), platform_scope] {
        let updated =
            sqlx::query("UPDATE idempotency_keys SET response = '\\x00' WHERE scope_id = $1")
                .bind(other)
                .execute(&mut *tx)
                .await
                .expect("update");
        assert_eq!(updated.rows_affected(), 0);
        let deleted = sqlx::query("DELETE FROM idempotency_keys WHERE scope_id = $1")
            .bind(other)
            .execute(&mut *tx)
            .await
            .expect("delete");
        assert_eq!(deleted.rows_affected(), 0);
    }
    let result = sqlx::query(
        "INSERT INTO idempotency_keys (scope_id, principal, rpc, request_id, fingerprint, \
         claimed_at, expires_at) VALUES ($1, 'p', 'c', 'evil', '\\x00', 0, 1)",
    )
    .bind(b.as_uuid())
    .execute(&mut *tx)
    .await;
    let (state, message) = db_error(result, "insert into another tenant");
    assert_eq!(state, "42501", "{message}");
    tx.rollback().await.expect("rollback");

    let mut tx = app_tx(world.app(), None).await;
    assert_eq!(count(&mut tx, COUNT, None).await, 0, "no tenant, no record");
    tx.rollback().await.expect("rollback");

    let mut tx = world.app().begin().await.expect("begin");
    sqlx::query("SELECT set_config('strongroom.platform', 'on', true)")
        .execute(&mut *tx)
        .await
        .expect("platform");
    assert_eq!(
        count(&mut tx, COUNT, None).await,
        1,
        "platform mode: the operators' only"
    );
    let seen: Uuid = sqlx::query_scalar("SELECT scope_id FROM idempotency_keys")
        .fetch_one(&mut *tx)
        .await
        .expect("select");
    assert_eq!(seen, platform_scope);
    tx.rollback().await.expect("rollback");

    let mut tx = world.app().begin().await.expect("begin");
    sqlx::query("SELECT set_config('strongroom.lease_sweep', 'on', true)")
        .execute(&mut *tx)
        .await
        .expect("sweep mode");
    assert_eq!(
        count(&mut tx, COUNT, None).await,
        3,
        "the sweeper sees every record"
    );
    let updated = sqlx::query("UPDATE idempotency_keys SET response = '\\x00'")
        .execute(&mut *tx)
        .await
        .expect("update");
    assert_eq!(updated.rows_affected(), 0, "the sweeper updates no record");
    tx.rollback().await.expect("rollback");
    assert_eq!(
        world
            .store
            .purge_requests(now.plus(std::time::Duration::from_secs(60)))
            .await
            .expect("purge"),
        3
    );
    world.close().await;
}
