//! Tamper evidence of the audit chains: signed checkpoints reveal a
//! truncated tail, VerifyChain compares the chain with its stored head,
//! checkpoints verify with the published key (checked here with `ring`, from
//! the encoding documented in audit.proto), scheduled checkpoints reach
//! their file, and failed authentications land in the platform chain.
//!
//! Tampering goes straight to the database as its owner (the Postgres
//! superuser, or the SQLite file), as an attacker holding the database
//! would.

use std::time::Duration;

use strongroom_client::Client;
use strongroom_e2e::{Backend, CertKind, Options, TestServer, api_key, expect_code};
use strongroom_proto::v1 as pb;

/// Runs `sql` on the server's database as its owner, with `$1` = `tenant`
/// and `$2` = `n` (both must appear in `sql`); returns the rows affected.
pub(crate) async fn tamper(server: &TestServer, sql: &str, tenant: uuid::Uuid, n: i64) -> u64 {
    use sqlx::Connection;
    match &server.database {
        Some(db) => {
            let url = format!(
                "{}/{db}",
                strongroom_e2e::admin_url().rsplit_once('/').expect("url").0
            );
            let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
            let done = sqlx::query(sql)
                .bind(tenant)
                .bind(n)
                .execute(&mut conn)
                .await
                .expect("tamper");
            done.rows_affected()
        }
        None => {
            let path = server.dir.path().join("strongroom.db");
            let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
                .await
                .expect("open the SQLite file");
            let done = sqlx::query(sql)
                .bind(tenant)
                .bind(n)
                .execute(&mut conn)
                .await
                .expect("tamper");
            done.rows_affected()
        }
    }
}

/// Deletes the tenant's events from sequence `from` on.
pub(crate) async fn delete_events_from(server: &TestServer, tenant: uuid::Uuid, from: u64) -> u64 {
    tamper(
        server,
        "DELETE FROM audit_events WHERE tenant_id = $1 AND sequence >= $2",
        tenant,
        i64::try_from(from).expect("sequence"),
    )
    .await
}

/// Points the tenant's stored head at its event `sequence`, as an attacker
/// covering a truncation would.
pub(crate) async fn rewind_head(server: &TestServer, tenant: uuid::Uuid, sequence: u64) {
    let n = tamper(
        server,
        "UPDATE audit_heads SET sequence = $2, hash = \
         (SELECT hash FROM audit_events WHERE tenant_id = $1 AND sequence = $2) \
         WHERE tenant_id = $1",
        tenant,
        i64::try_from(sequence).expect("sequence"),
    )
    .await;
    assert_eq!(n, 1, "head rewound");
}

/// The canonical encoding a checkpoint's signature covers, written from the
/// description in audit.proto (not from the server's code).
fn canonical(
    tenant_id: &str,
    sequence: u64,
    hash: &[u8],
    signed_at_micros: i64,
    key_id: &str,
) -> Vec<u8> {
    fn field(out: &mut Vec<u8>, b: &[u8]) {
        out.extend_from_slice(&(b.len() as u64).to_be_bytes());
        out.extend_from_slice(b);
    }
    let mut out = Vec::new();
    field(&mut out, b"strongroom/checkpoint/v1");
    out.push(1);
    if tenant_id.is_empty() {
        out.push(b'p');
        field(&mut out, b"");
    } else {
        out.push(b't');
        field(
            &mut out,
            uuid::Uuid::parse_str(tenant_id)
                .expect("tenant id")
                .as_bytes(),
        );
    }
    out.extend_from_slice(&sequence.to_be_bytes());
    field(&mut out, hash);
    out.extend_from_slice(&signed_at_micros.to_be_bytes());
    field(&mut out, key_id.as_bytes());
    out
}

fn micros(t: &prost_types::Timestamp) -> i64 {
    t.seconds * 1_000_000 + i64::from(t.nanos / 1000)
}

/// Verifies `checkpoint`'s signature with `public_key` using ring.
fn signature_verifies(checkpoint: &pb::Checkpoint, public_key: &[u8]) -> bool {
    let message = canonical(
        &checkpoint.tenant_id,
        checkpoint.sequence,
        &checkpoint.hash,
        micros(checkpoint.signed_at.as_ref().expect("signed_at")),
        &checkpoint.key_id,
    );
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public_key)
        .verify(&message, &checkpoint.signature)
        .is_ok()
}

/// The published checkpoint key (exactly one).
pub(crate) async fn published_key(client: &Client) -> pb::CheckpointKey {
    let keys = client
        .audit()
        .get_checkpoint_public_key(pb::GetCheckpointPublicKeyRequest {})
        .await
        .expect("public key")
        .into_inner()
        .keys;
    assert_eq!(keys.len(), 1, "one signing key per deployment: {keys:?}");
    let key = keys.into_iter().next().expect("key");
    assert_eq!(key.algorithm, "ed25519");
    assert_eq!(key.public_key.len(), 32);
    key
}

pub(crate) async fn export(
    client: &Client,
    request: pb::ExportCheckpointRequest,
) -> pb::Checkpoint {
    client
        .audit()
        .export_checkpoint(request)
        .await
        .expect("export checkpoint")
        .into_inner()
        .checkpoint
        .expect("checkpoint")
}

pub(crate) async fn verify(
    client: &Client,
    request: pb::VerifyChainRequest,
) -> pb::VerifyChainResponse {
    client
        .audit()
        .verify_chain(request)
        .await
        .expect("verify chain")
        .into_inner()
}

/// Verifies the whole chain, `page` events per call, following
/// next_sequence; returns the last report and the events checked in all.
async fn verify_paged(client: &Client, page: u32) -> (pb::VerifyChainResponse, u64) {
    let mut from = 0;
    let mut total = 0;
    loop {
        let r = verify(
            client,
            pb::VerifyChainRequest {
                from_sequence: from,
                max_events: page,
                ..Default::default()
            },
        )
        .await;
        assert!(
            r.events_checked <= u64::from(page),
            "the bound holds: {r:?}"
        );
        total += r.events_checked;
        if r.next_sequence == 0 || !r.ok {
            return (r, total);
        }
        from = r.next_sequence;
    }
}

pub(crate) async fn create_credentials(client: &Client, prefix: &str, n: usize) {
    for i in 0..n {
        client
            .credentials()
            .create_credential(pb::CreateCredentialRequest {
                environment: "dev".into(),
                name: format!("{prefix}/{i}"),
                service: "svc".into(),
                value: api_key(&format!("sk-e2e-checkpoint-{prefix}-{i}")),
                ..Default::default()
            })
            .await
            .expect("create credential");
    }
}

/// A checkpoint exported before the newest events were deleted reports the
/// truncation, even when the stored head was rewound to hide it; without a
/// checkpoint, deleting the newest events is caught by the stored head.
/// Checkpoints verify with the published key; altered ones are refused.
/// Verification is bounded per call and continues to the whole chain.
async fn truncated_tail_is_reported(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = server.tenant("acme").await;
    let tenant = uuid::Uuid::parse_str(&acme.tenant_id).expect("tenant id");
    let admin = &acme.client;
    create_credentials(admin, "a", 6).await;

    let intact = verify(admin, pb::VerifyChainRequest::default()).await;
    assert!(intact.ok, "intact chain: {intact:?}");
    let head = intact.head_sequence;
    assert!(
        head >= 7,
        "tenant.create, bindings and 6 creates: {intact:?}"
    );
    assert_eq!(intact.events_checked, head);
    assert_eq!(intact.next_sequence, 0);

    // Bounded: 3 events a call, continued to the head.
    let (paged, total) = verify_paged(admin, 3).await;
    assert!(paged.ok, "paged verification: {paged:?}");
    assert_eq!(total, head, "the pages cover the whole chain");

    // The checkpoint verifies with the published key, checked with ring.
    let key = published_key(admin).await;
    let checkpoint = export(admin, pb::ExportCheckpointRequest::default()).await;
    assert_eq!(checkpoint.tenant_id, acme.tenant_id);
    assert_eq!(checkpoint.sequence, head);
    assert_eq!(checkpoint.hash, intact.head_hash);
    assert_eq!(checkpoint.key_id, key.key_id);
    assert_eq!(checkpoint.public_key, key.public_key);
    assert!(
        signature_verifies(&checkpoint, &key.public_key),
        "the checkpoint's signature verifies with the published key"
    );
    let matched = verify(
        admin,
        pb::VerifyChainRequest {
            checkpoint: Some(checkpoint.clone()),
            ..Default::default()
        },
    )
    .await;
    assert!(matched.ok && matched.checkpoint_matched, "{matched:?}");

    // Altered checkpoints: ring refuses them, and so does the server.
    let mut other_hash = checkpoint.clone();
    other_hash.hash[0] ^= 1;
    let mut other_sequence = checkpoint.clone();
    other_sequence.sequence -= 1;
    for (what, altered) in [("hash", other_hash), ("sequence", other_sequence)] {
        assert!(
            !signature_verifies(&altered, &key.public_key),
            "an altered {what} fails ring's check"
        );
        let refused = admin
            .audit()
            .verify_chain(pb::VerifyChainRequest {
                checkpoint: Some(altered),
                ..Default::default()
            })
            .await;
        let status = expect_code(
            refused,
            tonic::Code::InvalidArgument,
            &format!("checkpoint with an altered {what}"),
        );
        assert!(status.message().starts_with("checkpoint:"), "{status:?}");
    }

    // Two more events, and a later checkpoint.
    create_credentials(admin, "b", 2).await;
    let later = export(admin, pb::ExportCheckpointRequest::default()).await;
    assert_eq!(later.sequence, head + 2);

    // 1. The newest event deleted, head row intact: caught without a
    //    checkpoint.
    assert_eq!(delete_events_from(&server, tenant, head + 2).await, 1);
    let r = verify(admin, pb::VerifyChainRequest::default()).await;
    assert!(!r.ok, "deleting the newest event is reported: {r:?}");
    assert_eq!(r.first_broken_sequence, head + 2, "{r:?}");
    assert_eq!(r.head_sequence, head + 2);

    // 2. The newest three deleted and the head rewound over them: the chain
    //    alone looks intact, the checkpoints exported before do not.
    assert_eq!(delete_events_from(&server, tenant, head).await, 2);
    rewind_head(&server, tenant, head - 1).await;
    let alone = verify(admin, pb::VerifyChainRequest::default()).await;
    assert!(
        alone.ok,
        "with the head rewound too, only a checkpoint can tell: {alone:?}"
    );
    for (what, cp) in [("first", checkpoint), ("later", later)] {
        let r = verify(
            admin,
            pb::VerifyChainRequest {
                checkpoint: Some(cp),
                ..Default::default()
            },
        )
        .await;
        assert!(!r.ok && !r.checkpoint_matched, "{what} checkpoint: {r:?}");
        assert_eq!(
            r.first_broken_sequence, head,
            "{what} checkpoint names the first missing sequence: {r:?}"
        );
    }
    server.stop().await;
}

/// A certificate from the trusted CA whose identity is bound nowhere is
/// refused and recorded in the platform chain (repeats coalesced with a
/// count), which a platform operator queries, verifies and checkpoints, and
/// a tenant admin cannot read.
async fn failed_authentication_is_recorded(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = server.tenant("acme").await;
    let stranger = "spiffe://e2e.test/nowhere/stranger";
    let client = Client::connect(&server.client_config(stranger, CertKind::Spiffe))
        .await
        .expect("connect");
    for _ in 0..4 {
        let refused = client
            .audit()
            .verify_chain(pb::VerifyChainRequest::default())
            .await;
        expect_code(refused, tonic::Code::Unauthenticated, "unbound identity");
    }
    let operator = server.operator().await;
    let events = operator
        .audit()
        .query_platform_events(pb::QueryPlatformEventsRequest::default())
        .await
        .expect("query platform events")
        .into_inner()
        .events;
    let failures: Vec<&pb::AuditEvent> = events
        .iter()
        .filter(|e| e.principal_name == stranger)
        .collect();
    assert_eq!(
        failures.len(),
        1,
        "four failures within seconds are one event: {events:?}"
    );
    let e = failures[0];
    assert_eq!(e.action, pb::AuditAction::AuthenticationFailed as i32);
    assert_eq!(e.outcome, pb::AuditOutcome::Denied as i32);
    assert_eq!(e.reason_code, "UNKNOWN_IDENTITY");
    assert!(e.peer_address.starts_with("127.0.0.1:"), "{e:?}");
    assert_eq!(
        e.detail,
        r#"{"v":1,"kind":"failed_authentications","count":1}"#
    );

    // The three failures coalesced into it are recorded once its window has
    // passed.
    let flushed = wait_for_platform_event(
        &operator,
        stranger,
        r#"{"v":1,"kind":"failed_authentications","count":3}"#,
    )
    .await;
    assert_eq!(flushed.reason_code, "UNKNOWN_IDENTITY");
    assert!(flushed.sequence > e.sequence);

    let denied = acme
        .client
        .audit()
        .query_platform_events(pb::QueryPlatformEventsRequest::default())
        .await;
    expect_code(denied, tonic::Code::PermissionDenied, "tenant admin");
    let denied = acme
        .client
        .audit()
        .verify_chain(pb::VerifyChainRequest {
            platform_chain: true,
            ..Default::default()
        })
        .await;
    expect_code(denied, tonic::Code::PermissionDenied, "tenant admin");

    let report = verify(
        &operator,
        pb::VerifyChainRequest {
            platform_chain: true,
            ..Default::default()
        },
    )
    .await;
    assert!(report.ok, "platform chain: {report:?}");
    assert_eq!(report.events_checked, report.head_sequence);
    assert_eq!(report.head_sequence, flushed.sequence);

    let checkpoint = export(
        &operator,
        pb::ExportCheckpointRequest {
            platform_chain: true,
            ..Default::default()
        },
    )
    .await;
    assert!(checkpoint.tenant_id.is_empty());
    let key = published_key(&operator).await;
    assert!(signature_verifies(&checkpoint, &key.public_key));
    // An operator can also sign any tenant's head.
    let tenant_cp = export(
        &operator,
        pb::ExportCheckpointRequest {
            tenant_id: acme.tenant_id.clone(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(tenant_cp.tenant_id, acme.tenant_id);
    assert!(signature_verifies(&tenant_cp, &key.public_key));

    // Deleting the platform events is reported against the checkpoint.
    let nil = uuid::Uuid::nil();
    let n = tamper(
        &server,
        "DELETE FROM platform_audit_events WHERE tenant_id = $1 AND sequence >= $2",
        nil,
        i64::try_from(e.sequence).expect("sequence"),
    )
    .await;
    assert_eq!(n, 2);
    let r = verify(
        &operator,
        pb::VerifyChainRequest {
            platform_chain: true,
            checkpoint: Some(checkpoint),
            ..Default::default()
        },
    )
    .await;
    assert!(!r.ok, "{r:?}");
    assert_eq!(r.first_broken_sequence, e.sequence);
    server.stop().await;
}

/// Waits (up to 20 s) for a platform event of `identity` whose detail is
/// `detail`.
async fn wait_for_platform_event(
    operator: &Client,
    identity: &str,
    detail: &str,
) -> pb::AuditEvent {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let events = operator
            .audit()
            .query_platform_events(pb::QueryPlatformEventsRequest::default())
            .await
            .expect("query platform events")
            .into_inner()
            .events;
        if let Some(e) = events
            .iter()
            .find(|e| e.principal_name == identity && e.detail == detail)
        {
            return e.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no platform event of {identity} with {detail}: {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// With a checkpoint file and a short interval, the server appends a signed
/// line for each chain that moved, and a new one once it moves again.
async fn scheduled_checkpoints_reach_the_file(backend: Backend) {
    let mut options = Options::new(backend);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("checkpoints.jsonl");
    options.env.push((
        "STRONGROOM_AUDIT_CHECKPOINT_FILE".into(),
        file.display().to_string(),
    ));
    options.env.push((
        "STRONGROOM_AUDIT_CHECKPOINT_INTERVAL_SECS".into(),
        "1".into(),
    ));
    let server = TestServer::start_with(options).await;
    let acme = server.tenant("acme").await;
    let key = published_key(&acme.client).await;

    let head = verify(&acme.client, pb::VerifyChainRequest::default())
        .await
        .head_sequence;
    let line = wait_for_checkpoint(&file, &acme.tenant_id, head).await;
    assert_eq!(line["key_id"], key.key_id.as_str());
    assert!(line_verifies(&line, &key.public_key), "{line}");

    create_credentials(&acme.client, "c", 1).await;
    let moved = wait_for_checkpoint(&file, &acme.tenant_id, head + 1).await;
    assert!(line_verifies(&moved, &key.public_key), "{moved}");
    server
        .logs
        .wait_for_line(
            &["audit checkpoint", &acme.tenant_id],
            Duration::from_secs(5),
        )
        .await;
    server.stop().await;
}

/// Waits (up to 15 s) for a line of `file` about `tenant` at `sequence` or
/// later.
pub(crate) async fn wait_for_checkpoint(
    file: &std::path::Path,
    tenant: &str,
    sequence: u64,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        if let Some(line) = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a JSON line"))
            .find(|v| v["tenant_id"] == tenant && v["sequence"].as_u64() >= Some(sequence))
        {
            return line;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no checkpoint of {tenant} at {sequence} in {}:\n{text}",
            file.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) fn line_verifies(line: &serde_json::Value, public_key: &[u8]) -> bool {
    let message = canonical(
        line["tenant_id"].as_str().expect("tenant_id"),
        line["sequence"].as_u64().expect("sequence"),
        &hex_bytes(line["hash"].as_str().expect("hash")),
        line["signed_at_micros"].as_i64().expect("signed_at_micros"),
        line["key_id"].as_str().expect("key_id"),
    );
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public_key)
        .verify(
            &message,
            &hex_bytes(line["signature"].as_str().expect("signature")),
        )
        .is_ok()
}

fn hex_bytes(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

/// A reveal refused as stale (the state it was decided on changed, and was
/// still changed on its retry) leaves a denial in the tenant chain. The
/// principal is disabled behind the server's back, so its cached caller is
/// stale on every attempt.
async fn stale_reveal_is_recorded(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = server.tenant("acme").await;
    let tenant = uuid::Uuid::parse_str(&acme.tenant_id).expect("tenant id");
    let (agent_id, agent) = server.principal(&acme, "agent", pb::Role::Agent).await;
    create_credentials(&acme.client, "s", 1).await;
    strongroom_e2e::grant(
        &acme,
        &agent_id,
        "s/*",
        &["dev"],
        &[pb::Capability::Reveal],
        None,
    )
    .await;
    let request = || pb::RevealCredentialRequest {
        credential: strongroom_e2e::path("dev", "s/0"),
        purpose: "stale test".into(),
        ..Default::default()
    };
    agent
        .credentials()
        .reveal_credential(request())
        .await
        .expect("the first reveal caches the caller");
    let n = tamper(
        &server,
        "UPDATE principals SET status = 'disabled' WHERE tenant_id = $1 AND name = 'agent' AND $2 = 1",
        tenant,
        1,
    )
    .await;
    assert_eq!(n, 1);
    expect_code(
        agent.credentials().reveal_credential(request()).await,
        tonic::Code::FailedPrecondition,
        "stale reveal",
    );
    let denials = strongroom_e2e::audit_events(
        &acme.client,
        pb::QueryEventsRequest {
            actions: vec![pb::AuditAction::CredentialReveal as i32],
            outcome: pb::AuditOutcome::Denied as i32,
            ..Default::default()
        },
    )
    .await;
    let stale: Vec<_> = denials
        .iter()
        .filter(|e| e.reason_code == "STALE_STATE")
        .collect();
    assert_eq!(stale.len(), 1, "the stale refusal is recorded: {denials:?}");
    assert_eq!(stale[0].principal_id, agent_id);
    assert_eq!(stale[0].credential_name, "s/0");
    assert_eq!(stale[0].purpose, "stale test");
    assert!(
        verify(&acme.client, pb::VerifyChainRequest::default())
            .await
            .ok,
        "chain intact"
    );
    server.stop().await;
}

on_both_backends!(
    stale_reveal_is_recorded,
    truncated_tail_is_reported,
    failed_authentication_is_recorded,
    scheduled_checkpoints_reach_the_file,
);
