//! Whole tenants read and written back (`ExportStore`): every table
//! round-trips exactly (ids, sequences, hashes), the import event links
//! after the imported chain head, and a refused import writes nothing.

use std::sync::Arc;

use sqlx::{PgPool, SqlitePool};
use strongroom_core::audit::{
    Action, AuditDetail, AuditDraft, AuditEvent, EventFormat, GENESIS_HASH, Outcome,
};
use strongroom_core::export::{Cell, ExportScope, TenantImport, TenantRows};
use strongroom_core::ids::TenantId;
use strongroom_core::ids::{CredentialId, EventId, PrincipalId};
use strongroom_core::policy::{Capability, GrantSubject};
use strongroom_core::principal::Role;
use strongroom_core::store::Store;
use strongroom_core::tenant::WrappedKekRecord;
use strongroom_core::time::Timestamp;
use strongroom_store::{EXPORT_LEFT_OUT, EXPORT_TABLES};

use crate::support::{Code, code, create_tenant, credential, grant, operator};

/// A tenant with two credentials (three versions in all), a principal with
/// a binding and a grant.
async fn populated(store: &dyn Store, name: &str) -> crate::support::TestTenant {
    let t = create_tenant(store, name).await;
    let scope = t.scope();
    let a = credential(&scope, "production", "llm/openai");
    t.store(store, &a).await.expect("store a");
    t.rotate(store, &a, 1).await.expect("rotate a");
    let b = credential(&scope, "dev", "db/main");
    t.store(store, &b).await.expect("store b");
    let agent = t.add_principal(store, "agent", Role::Agent).await;
    t.bind(store, agent.id, &format!("spiffe://test/{name}/agent"))
        .await
        .expect("bind");
    let g = grant(
        &t,
        GrantSubject::Principal(agent.id),
        "llm/*",
        &["production"],
        &[Capability::Reveal],
    );
    t.add_grant(store, &g).await;
    t
}

fn rows_of<'a>(rows: &'a TenantRows, table: &str) -> &'a [Vec<Cell>] {
    &rows.table(table).expect("table").rows
}

/// `rows` moved to tenant `to` named `name`, with its namespaces and
/// bindings renamed so they overlap nothing of the original.
fn moved(rows: &TenantRows, to: TenantId, from_name: &str, name: &str) -> TenantRows {
    let mut out = rows.clone();
    out.keks.clear();
    for table in &mut out.tables {
        let text_columns: Vec<usize> = table
            .columns
            .iter()
            .enumerate()
            .filter(|(_, (c, _))| c == "pattern" || c == "name")
            .map(|(i, _)| i)
            .collect();
        let tenants = table.table == "tenants";
        for row in &mut table.rows {
            for &i in &text_columns {
                if let Cell::Text(t) = &mut row[i] {
                    if tenants {
                        *t = name.to_owned();
                    } else {
                        *t = t.replace(&format!("/{from_name}/"), &format!("/{name}/"));
                    }
                }
            }
        }
    }
    rechain(&mut out, to);
    out
}

/// Re-links and re-hashes the audit events of `rows` as `tenant`'s chain
/// (the tenant's id is in every hash), and moves the head to the last one.
fn rechain(rows: &mut TenantRows, tenant: TenantId) {
    let text = |c: &Cell| match c {
        Cell::Text(t) => Some(t.clone()),
        _ => None,
    };
    let uuid = |c: &Cell| match c {
        Cell::Uuid(u) => Some(*u),
        _ => None,
    };
    let int = |c: &Cell| match c {
        Cell::Int(i) => *i,
        other => panic!("not an integer: {other:?}"),
    };
    let mut prev = GENESIS_HASH;
    let table = rows.table_mut("audit_events").expect("audit_events");
    for row in &mut table.rows {
        let format = EventFormat::from_number(int(&row[20]) as i32).expect("format");
        let detail_text = text(&row[17]);
        let detail = match (format, detail_text.as_deref()) {
            (EventFormat::V2, Some(t)) => AuditDetail::decode(t).ok(),
            _ => None,
        };
        let mut event = AuditEvent {
            tenant,
            sequence: int(&row[0]) as u64,
            format,
            detail_text,
            draft: AuditDraft {
                id: EventId::from_uuid(uuid(&row[1]).expect("id")),
                at: Timestamp::from_micros(int(&row[2])),
                principal: uuid(&row[3]).map(PrincipalId::from_uuid),
                actor: text(&row[4]).expect("actor"),
                on_behalf_of: text(&row[5]),
                action: Action::parse(&text(&row[6]).expect("action")).expect("action"),
                credential: uuid(&row[7]).map(CredentialId::from_uuid),
                credential_name: text(&row[8]),
                version: match &row[9] {
                    Cell::Int(v) => Some(*v as u32),
                    _ => None,
                },
                environment: text(&row[10]),
                purpose: text(&row[11]),
                outcome: Outcome::parse(&text(&row[12]).expect("outcome")).expect("outcome"),
                reason_code: text(&row[13]).expect("reason"),
                peer: text(&row[14]),
                request_id: text(&row[15]),
                trace_id: text(&row[16]),
                detail,
            },
            prev_hash: prev,
            hash: [0; 32],
        };
        event.hash = event.compute_hash();
        row[18] = Cell::Bytes(prev.to_vec());
        row[19] = Cell::Bytes(event.hash.to_vec());
        prev = event.hash;
    }
    let head = rows.table_mut("audit_heads").expect("audit_heads");
    head.rows[0][1] = Cell::Bytes(prev.to_vec());
}

fn import_of(rows: TenantRows, tenant: TenantId) -> TenantImport {
    TenantImport {
        tenant,
        kek: WrappedKekRecord {
            tenant,
            version: 1,
            wrapped: vec![7; 60],
            created_at: Timestamp::now(),
        },
        rows,
    }
}

pub async fn export_then_import_round_trips(store: Arc<dyn Store>) {
    let store = &*store;
    let acme = populated(store, "acme").await;
    let scope = acme.scope();
    let rows = store
        .export_rows(ExportScope::Tenant(&scope))
        .await
        .expect("export");
    assert_eq!(
        rows.tables
            .iter()
            .map(|t| t.table.as_str())
            .collect::<Vec<_>>(),
        EXPORT_TABLES.iter().map(|t| t.name).collect::<Vec<_>>()
    );
    assert_eq!(rows_of(&rows, "credentials").len(), 2);
    assert_eq!(rows_of(&rows, "credential_versions").len(), 3);
    assert_eq!(rows_of(&rows, "principals").len(), 2);
    assert_eq!(rows_of(&rows, "identity_bindings").len(), 2);
    assert_eq!(rows_of(&rows, "grants").len(), 1);
    assert_eq!(rows_of(&rows, "environments").len(), 3);
    assert_eq!(rows_of(&rows, "identity_namespaces").len(), 1);
    assert_eq!(rows.keks.len(), 1);
    let events = rows_of(&rows, "audit_events").len();
    assert!(events >= 6, "every mutation's event: {events}");
    // The head is the last event's hash.
    let head = &rows_of(&rows, "audit_heads")[0];
    let last = rows_of(&rows, "audit_events")
        .last()
        .expect("events")
        .clone();
    assert_eq!(head[0], Cell::Int(events as i64));
    assert_eq!(head[1], last[19]);

    // A platform operator reads the same rows.
    let op = operator(store).await;
    let platform = op.platform_scope().expect("platform");
    let again = store
        .export_rows(ExportScope::Platform(&platform, acme.id()))
        .await
        .expect("operator export");
    assert_eq!(again, rows);

    // Restored as another tenant: every row as it was.
    let to = TenantId::generate();
    let copy = moved(&rows, to, "acme", "acme-copy");
    let import = import_of(copy.clone(), to);
    let tenant_event = platform.audit(Action::TenantImport, Outcome::Allowed, "PLATFORM_OPERATOR");
    let platform_event =
        platform.audit(Action::TenantImport, Outcome::Allowed, "PLATFORM_OPERATOR");
    let platform_head = store.platform_audit_head().await.expect("head");
    // A chain that does not verify is refused and nothing is written: an
    // event dropped (the head still names the last one), an event whose
    // hash is not its own, a head that is not the last event.
    let dropped = {
        let mut c = copy.clone();
        c.table_mut("audit_events").expect("events").rows.remove(2);
        c
    };
    let edited = {
        let mut c = copy.clone();
        let events = c.table_mut("audit_events").expect("events");
        events.rows[1][4] = Cell::Text("someone-else".into());
        c
    };
    let cut = {
        let mut c = copy.clone();
        c.table_mut("audit_events").expect("events").rows.pop();
        c
    };
    for (what, rows) in [("dropped", dropped), ("edited", edited), ("cut", cut)] {
        let broken = import_of(rows, to);
        let refused = store
            .import_rows(
                &platform,
                &broken,
                platform.audit(Action::TenantImport, Outcome::Allowed, "PLATFORM_OPERATOR"),
                platform.audit(Action::TenantImport, Outcome::Allowed, "PLATFORM_OPERATOR"),
            )
            .await;
        let e = refused.as_ref().expect_err(what).to_string();
        assert_eq!(code(refused), Code::InvalidArgument, "{what}: {e}");
        assert!(
            e.to_string().contains("audit chain does not verify"),
            "{what}: {e}"
        );
        assert_eq!(
            store.platform_audit_head().await.expect("head"),
            platform_head,
            "{what}: a refused import wrote the platform chain"
        );
    }
    store
        .import_rows(&platform, &import, tenant_event, platform_event)
        .await
        .expect("import");
    let back = store
        .export_rows(ExportScope::Platform(&platform, to))
        .await
        .expect("export the copy");
    for (read, written) in back.tables.iter().zip(&copy.tables) {
        match read.table.as_str() {
            // One event more: the import, after the imported head.
            "audit_events" => {
                assert_eq!(read.rows[..written.rows.len()], written.rows[..]);
                assert_eq!(read.rows.len(), written.rows.len() + 1);
                let import_event = read.rows.last().expect("import event");
                assert_eq!(import_event[0], Cell::Int(events as i64 + 1));
                assert_eq!(import_event[6], Cell::Text("tenant.import".into()));
                assert_eq!(
                    import_event[18],
                    rows_of(&copy, "audit_heads")[0][1],
                    "linked after the imported head"
                );
            }
            "audit_heads" => assert_eq!(read.rows[0][0], Cell::Int(events as i64 + 1)),
            _ => assert_eq!(read, written, "table {}", read.table),
        }
    }
    assert_eq!(back.keks.len(), 1);
    assert_eq!(back.keks[0].wrapped, vec![7; 60]);
    let platform_after = store.platform_audit_head().await.expect("head");
    assert_eq!(platform_after.sequence, platform_head.sequence + 1);
}

pub async fn refused_imports_write_nothing(store: Arc<dyn Store>) {
    let store = &*store;
    let acme = populated(store, "acme").await;
    let scope = acme.scope();
    let rows = store
        .export_rows(ExportScope::Tenant(&scope))
        .await
        .expect("export");
    let op = operator(store).await;
    let platform = op.platform_scope().expect("platform");
    let before = store.platform_audit_head().await.expect("head");
    let event = || platform.audit(Action::TenantImport, Outcome::Allowed, "PLATFORM_OPERATOR");

    // The same tenant again: its id is taken.
    let same = import_of(rows.clone(), acme.id());
    assert_eq!(
        code(store.import_rows(&platform, &same, event(), event()).await),
        Code::AlreadyExists
    );
    // Another id, the same name.
    let to = TenantId::generate();
    let mut same_name = moved(&rows, to, "acme", "acme-2");
    if let Some(t) = same_name.table_mut("tenants") {
        t.rows[0][0] = Cell::Text("acme".into());
    }
    assert_eq!(
        code(
            store
                .import_rows(&platform, &import_of(same_name, to), event(), event())
                .await
        ),
        Code::AlreadyExists
    );
    // Another id and name, but the original's identity namespace.
    let mut overlapping = moved(&rows, to, "acme", "acme-3");
    let original_namespaces = rows.table("identity_namespaces").expect("table").clone();
    if let Some(t) = overlapping.table_mut("identity_namespaces") {
        *t = original_namespaces;
    }
    if let Some(t) = overlapping.table_mut("identity_bindings") {
        t.rows.clear();
    }
    assert_eq!(
        code(
            store
                .import_rows(&platform, &import_of(overlapping, to), event(), event())
                .await
        ),
        Code::AlreadyExists
    );
    // A malformed row (a text where a uuid belongs), after good tables.
    let mut malformed = moved(&rows, to, "acme", "acme-4");
    if let Some(t) = malformed.table_mut("grants") {
        t.rows[0][0] = Cell::Text("not a uuid".into());
    }
    assert_eq!(
        code(
            store
                .import_rows(&platform, &import_of(malformed, to), event(), event())
                .await
        ),
        Code::InvalidArgument
    );
    // Nothing of any attempt was written.
    assert_eq!(code(store.get_tenant(&platform, to).await), Code::NotFound);
    assert_eq!(
        store.platform_audit_head().await.expect("head").sequence,
        before.sequence
    );
    let unchanged = store
        .export_rows(ExportScope::Tenant(&scope))
        .await
        .expect("export");
    assert_eq!(unchanged, rows);
}

/// The tables with a `tenant_id` column (or `tenants` itself) that an
/// export neither carries nor names as left out.
fn uncovered(tables: Vec<String>) -> Vec<String> {
    tables
        .into_iter()
        .filter(|t| {
            !EXPORT_TABLES.iter().any(|s| s.name == t.as_str())
                && !EXPORT_LEFT_OUT.contains(&t.as_str())
        })
        .filter(|t| !t.starts_with("platform_") && t != "server_meta")
        .collect()
}

#[sqlx::test(migrator = "strongroom_store::PG_MIGRATOR")]
async fn export_rows_cover_every_tenant_table_postgres(pool: PgPool) {
    let tables: Vec<(String,)> = sqlx::query_as(
        "SELECT DISTINCT table_name::text FROM information_schema.columns \
         WHERE table_schema = 'public' AND column_name = 'tenant_id'",
    )
    .fetch_all(&pool)
    .await
    .expect("tables");
    let missing = uncovered(tables.into_iter().map(|(t,)| t).collect());
    assert!(
        missing.is_empty(),
        "tables an export leaves behind: {missing:?}"
    );
}

#[sqlx::test(migrator = "strongroom_store::SQLITE_MIGRATOR")]
async fn export_rows_cover_every_tenant_table_sqlite(pool: SqlitePool) {
    let tables: Vec<(String,)> = sqlx::query_as(
        "SELECT DISTINCT m.name FROM sqlite_master m, pragma_table_info(m.name) c \
         WHERE m.type = 'table' AND c.name = 'tenant_id'",
    )
    .fetch_all(&pool)
    .await
    .expect("tables");
    let missing = uncovered(tables.into_iter().map(|(t,)| t).collect());
    assert!(
        missing.is_empty(),
        "tables an export leaves behind: {missing:?}"
    );
}
