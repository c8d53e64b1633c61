//! Event formats: a chain holding format-1 events (free-text detail, hashed
//! under `strongroom/audit/v1`, as earlier versions wrote them; here
//! inserted with SQL, as they are found after the migration that added the
//! `format` column) followed by format-2 events (typed detail) reads back
//! with each event's format and verifies; editing the detail or the format
//! of either kind of event is detected.

use std::sync::Arc;

use sqlx::{PgPool, SqlitePool};
use strongroom_core::audit::{
    Action, AuditDetail, AuditDraft, AuditEvent, ChainBreak, ChainVerifier, EventFormat,
    GENESIS_HASH, Outcome, PLATFORM_CHAIN,
};
use strongroom_core::ids::{LeaseId, TenantId};
use strongroom_core::store::Store;
use strongroom_store::SqliteStore;

use crate::support::{audit_log, create_tenant, draft, pg_store};

/// The superuser's (Postgres) or the one database's (SQLite) connection,
/// for what the store never does: writing rows of an earlier format and
/// editing events.
enum Raw {
    Pg(PgPool),
    Sqlite(SqlitePool),
}

macro_rules! bind_event {
    ($query:expr, $e:expr) => {{
        let e: &AuditEvent = $e;
        let d = &e.draft;
        $query
            .bind(e.tenant.as_uuid())
            .bind(i64::try_from(e.sequence).expect("sequence"))
            .bind(d.id.as_uuid())
            .bind(d.at.as_micros())
            .bind(d.principal.map(|p| p.as_uuid()))
            .bind(d.actor.clone())
            .bind(d.on_behalf_of.clone())
            .bind(d.action.as_str())
            .bind(d.credential.map(|c| c.as_uuid()))
            .bind(d.credential_name.clone())
            .bind(d.version.map(|v| i32::try_from(v).expect("version")))
            .bind(d.environment.clone())
            .bind(d.purpose.clone())
            .bind(d.outcome.as_str())
            .bind(d.reason_code.clone())
            .bind(d.peer.clone())
            .bind(d.request_id.clone())
            .bind(d.trace_id.clone())
            .bind(e.detail_text.clone())
            .bind(e.prev_hash.to_vec())
            .bind(e.hash.to_vec())
            .bind(e.format.number())
    }};
}

impl Raw {
    async fn run(&self, sql: &str) {
        match self {
            Raw::Pg(p) => sqlx::raw_sql(sql).execute(p).await.map(drop),
            Raw::Sqlite(p) => sqlx::raw_sql(sql).execute(p).await.map(drop),
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Inserts `event` into `table` and makes it its chain's head.
    async fn insert(&self, table: &str, heads: &str, event: &AuditEvent) {
        let sql = format!(
            "INSERT INTO {table} (tenant_id, sequence, id, at, principal_id, actor, \
             on_behalf_of, action, credential_id, credential_name, version, environment, \
             purpose, outcome, reason_code, peer, request_id, trace_id, detail, prev_hash, \
             hash, format) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, \
             $14, $15, $16, $17, $18, $19, $20, $21, $22)"
        );
        match self {
            Raw::Pg(p) => bind_event!(sqlx::query(&sql), event)
                .execute(p)
                .await
                .map(drop),
            Raw::Sqlite(p) => bind_event!(sqlx::query(&sql), event)
                .execute(p)
                .await
                .map(drop),
        }
        .expect("insert an event");
        let sequence = i64::try_from(event.sequence).expect("sequence");
        let head = to_hex(&event.hash);
        let hash = match self {
            Raw::Pg(_) => format!("'\\x{head}'::bytea"),
            Raw::Sqlite(_) => format!("X'{head}'"),
        };
        let which = match (self, heads) {
            (_, "platform_audit_heads") => "id = 1".to_owned(),
            (Raw::Pg(_), _) => format!("tenant_id = '{}'", event.tenant),
            // SQLite stores ids as blobs.
            (Raw::Sqlite(_), _) => format!(
                "tenant_id = X'{}'",
                to_hex(event.tenant.as_uuid().as_bytes())
            ),
        };
        self.run(&format!(
            "UPDATE {heads} SET sequence = {sequence}, hash = {hash} WHERE {which}"
        ))
        .await;
    }
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Event `sequence` of `chain` after `prev`, as an earlier version wrote
/// it: format 1, its detail free text.
fn format_1_event(
    chain: TenantId,
    sequence: u64,
    prev: [u8; 32],
    mut draft: AuditDraft,
    detail: Option<&str>,
) -> AuditEvent {
    draft.detail = None;
    let mut event = draft.seal(chain, sequence, prev);
    event.format = EventFormat::V1;
    event.detail_text = detail.map(str::to_owned);
    event.hash = event.compute_hash();
    event
}

fn verify(events: &[AuditEvent]) -> Result<u64, ChainBreak> {
    let mut v = ChainVerifier::default();
    for e in events {
        v.push(e)?;
    }
    Ok(v.checked())
}

fn failed(identity: &str, detail: Option<AuditDetail>) -> AuditDraft {
    let mut d = AuditDraft::new(
        Action::AuthenticationFailed,
        Outcome::Denied,
        "UNKNOWN_IDENTITY",
    );
    d.actor = identity.to_owned();
    d.detail = detail;
    d
}

async fn format_1_then_format_2_chains_verify(store: Arc<dyn Store>, raw: Raw) {
    let store = &*store;

    // The platform chain: two events of format 1, then one of format 2.
    let first = format_1_event(
        PLATFORM_CHAIN,
        1,
        GENESIS_HASH,
        failed("CN=old", None),
        Some("count=3"),
    );
    let second = format_1_event(PLATFORM_CHAIN, 2, first.hash, failed("CN=old2", None), None);
    raw.insert("platform_audit_events", "platform_audit_heads", &first)
        .await;
    raw.insert("platform_audit_events", "platform_audit_heads", &second)
        .await;
    let third = store
        .append_platform_audit(failed(
            "CN=new",
            Some(AuditDetail::FailedAuthentications { count: 1 }),
        ))
        .await
        .expect("append after format-1 events");
    assert_eq!((third.sequence, third.prev_hash), (3, second.hash));
    let log = store.platform_audit_after(0, 100).await.expect("read");
    assert_eq!(log, vec![first.clone(), second, third.clone()]);
    assert_eq!(
        log.iter().map(|e| e.format).collect::<Vec<_>>(),
        [EventFormat::V1, EventFormat::V1, EventFormat::V2]
    );
    assert_eq!(log[0].detail_text.as_deref(), Some("count=3"));
    assert_eq!(log[0].draft.detail, None);
    assert_eq!(
        log[2].detail_text.as_deref(),
        Some(r#"{"v":1,"kind":"failed_authentications","count":1}"#)
    );
    assert_eq!(verify(&log), Ok(3));

    // Tampering with either format is detected where it happened.
    let platform_break = || async {
        verify(&store.platform_audit_after(0, 100).await.expect("read"))
            .expect_err("tampered")
            .sequence
    };
    raw.run("UPDATE platform_audit_events SET detail = 'count=1' WHERE sequence = 1")
        .await;
    assert_eq!(platform_break().await, 1);
    raw.run("UPDATE platform_audit_events SET detail = 'count=3' WHERE sequence = 1")
        .await;
    raw.run(
        "UPDATE platform_audit_events SET detail = \
         '{\"v\":1,\"kind\":\"failed_authentications\",\"count\":0}' WHERE sequence = 3",
    )
    .await;
    assert_eq!(platform_break().await, 3);
    raw.run(
        "UPDATE platform_audit_events SET detail = \
         '{\"v\":1,\"kind\":\"failed_authentications\",\"count\":1}', format = 1 \
         WHERE sequence = 3",
    )
    .await;
    assert_eq!(platform_break().await, 3);
    raw.run("UPDATE platform_audit_events SET format = 2 WHERE sequence = 3")
        .await;
    assert_eq!(
        verify(&store.platform_audit_after(0, 100).await.expect("read")),
        Ok(3)
    );

    // A tenant's chain: its events so far, one of format 1, one of format 2
    // (a reveal's lease), in any order the upgrade left them.
    let acme = create_tenant(store, "acme").await;
    let scope = acme.scope();
    let head = store.audit_head(&scope).await.expect("head");
    let old = format_1_event(
        acme.id(),
        head.sequence + 1,
        head.hash,
        draft(&scope, Action::CredentialReveal),
        Some("lease=0190c0de-0000-7000-8000-000000000001 ttl_secs=300"),
    );
    raw.insert("audit_events", "audit_heads", &old).await;
    let mut reveal = draft(&scope, Action::CredentialReveal);
    reveal.detail = Some(AuditDetail::Lease {
        lease_id: LeaseId::generate(),
        ttl_secs: 300,
        grant: None,
    });
    let new = store.append_audit(&scope, reveal).await.expect("append");
    let log = audit_log(store, &scope).await;
    assert_eq!(log.len() as u64, new.sequence);
    assert_eq!(log[log.len() - 2], old);
    assert_eq!(log[log.len() - 1], new);
    assert_eq!(verify(&log), Ok(new.sequence));

    let tenant_break = || async {
        verify(&audit_log(store, &scope).await)
            .expect_err("tampered")
            .sequence
    };
    let (old_seq, new_seq) = (old.sequence, new.sequence);
    raw.run(&format!(
        "UPDATE audit_events SET detail = replace(detail, 'ttl_secs=300', 'ttl_secs=3000') \
         WHERE sequence = {old_seq}"
    ))
    .await;
    assert_eq!(tenant_break().await, old_seq);
    raw.run(&format!(
        "UPDATE audit_events SET detail = replace(detail, 'ttl_secs=3000', 'ttl_secs=300') \
         WHERE sequence = {old_seq}"
    ))
    .await;
    assert_eq!(verify(&audit_log(store, &scope).await), Ok(new_seq));
    raw.run(&format!(
        "UPDATE audit_events SET detail = replace(detail, '\"ttl_secs\":300', \
         '\"ttl_secs\":3000') WHERE sequence = {new_seq}"
    ))
    .await;
    assert_eq!(tenant_break().await, new_seq);
}

pub async fn pg_format_1_then_format_2_chains_verify(admin: PgPool) {
    let store = pg_store(admin.clone()).await;
    format_1_then_format_2_chains_verify(store, Raw::Pg(admin)).await;
}

pub async fn sqlite_format_1_then_format_2_chains_verify(pool: SqlitePool) {
    let store = Arc::new(SqliteStore::new(pool.clone()));
    format_1_then_format_2_chains_verify(store, Raw::Sqlite(pool)).await;
}
