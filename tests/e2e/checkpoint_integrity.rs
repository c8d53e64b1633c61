//! The checkpoint signer cannot be turned against the chain it guards: the
//! server never signs a head that moved backwards (scheduled or on demand,
//! also after a restart that reads the checkpoint file), VerifyChain reports
//! a stored head behind a checkpoint or events stored past the head, the
//! signing key is derived from the root key (deleting database rows cannot
//! swap it), and a checkpointed event's contents must still hash to its
//! stored hash.
//!
//! Tampering goes straight to the database as its owner, as in
//! `checkpoints.rs`.

use std::time::Duration;

use strongroom_client::Client;
use strongroom_e2e::{Backend, Options, TestServer, expect_code};
use strongroom_proto::v1 as pb;

use crate::checkpoints::{
    create_credentials, delete_events_from, export, line_verifies, published_key, rewind_head,
    tamper, verify, wait_for_checkpoint,
};

const NOT_EXTENDING: &str = "the audit chain no longer extends the last checkpoint";

/// Runs `sql` (no parameters) on the server's database as its owner.
async fn owner_exec(server: &TestServer, sql: &str) -> u64 {
    use sqlx::Connection;
    match &server.database {
        Some(db) => {
            let url = format!(
                "{}/{db}",
                strongroom_e2e::admin_url().rsplit_once('/').expect("url").0
            );
            let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
            sqlx::query(sql)
                .execute(&mut conn)
                .await
                .expect("owner statement")
                .rows_affected()
        }
        None => {
            let path = server.dir.path().join("strongroom.db");
            let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
                .await
                .expect("open the SQLite file");
            sqlx::query(sql)
                .execute(&mut conn)
                .await
                .expect("owner statement")
                .rows_affected()
        }
    }
}

fn tenant_uuid(id: &str) -> uuid::Uuid {
    uuid::Uuid::parse_str(id).expect("tenant id")
}

async fn head_of(client: &Client) -> u64 {
    let r = verify(client, pb::VerifyChainRequest::default()).await;
    assert!(r.ok, "intact chain: {r:?}");
    r.head_sequence
}

async fn verify_with(client: &Client, checkpoint: &pb::Checkpoint) -> pb::VerifyChainResponse {
    verify(
        client,
        pb::VerifyChainRequest {
            checkpoint: Some(checkpoint.clone()),
            ..Default::default()
        },
    )
    .await
}

/// ExportCheckpoint is refused with FAILED_PRECONDITION and the fixed text.
async fn export_refused(client: &Client, what: &str) {
    let status = expect_code(
        client
            .audit()
            .export_checkpoint(pb::ExportCheckpointRequest::default())
            .await,
        tonic::Code::FailedPrecondition,
        what,
    );
    assert_eq!(status.message(), NOT_EXTENDING, "{what}: {status:?}");
}

/// The platform chain's alerts of refused checkpoints of `tenant`.
async fn refusal_alerts(operator: &Client, tenant: &str) -> Vec<pb::AuditEvent> {
    operator
        .audit()
        .query_platform_events(pb::QueryPlatformEventsRequest::default())
        .await
        .expect("query platform events")
        .into_inner()
        .events
        .into_iter()
        .filter(|e| {
            e.reason_code == "CHECKPOINT_REFUSED"
                && e.detail
                    .starts_with(r#"{"v":1,"kind":"checkpoint_refused","#)
                && e.detail.contains(&format!(r#""tenant":"{tenant}","#))
        })
        .collect()
}

/// Waits (up to 20 s) for an alert of a refused checkpoint of `tenant` in
/// the platform chain, more than `seen` of them.
async fn wait_for_refusal_alert(operator: &Client, tenant: &str, seen: usize) -> pb::AuditEvent {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let alerts = refusal_alerts(operator, tenant).await;
        if alerts.len() > seen {
            return alerts.into_iter().next().expect("alert");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no alert of a refused checkpoint of {tenant}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The file's lines about `tenant`, as (sequence, line).
fn lines_of(file: &std::path::Path, tenant: &str) -> Vec<(u64, serde_json::Value)> {
    std::fs::read_to_string(file)
        .expect("checkpoint file")
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a JSON line"))
        .filter(|v| v["tenant_id"] == tenant)
        .map(|v| (v["sequence"].as_u64().expect("sequence"), v))
        .collect()
}

/// ExportCheckpoint never signs a head that moved backwards. A checkpoint
/// at S; then (acme) events K+1..S deleted and the head row set to K, or
/// (beta) only the head row set back to K: the next export is refused with
/// FAILED_PRECONDITION, an error is logged and an alert lands in the
/// platform chain; VerifyChain given the checkpoint at S reports K+1, and
/// (beta) VerifyChain alone reports the events stored past the head. With
/// the tail replaced by new events past S (delta), export is refused too.
async fn export_refuses_a_head_that_moved_back(backend: Backend) {
    let server = TestServer::start(backend).await;
    let operator = server.operator().await;
    for (name, delete) in [("acme", true), ("beta", false)] {
        let t = server.tenant(name).await;
        let tenant = tenant_uuid(&t.tenant_id);
        create_credentials(&t.client, name, 4).await;
        let s = head_of(&t.client).await;
        let at_s = export(&t.client, pb::ExportCheckpointRequest::default()).await;
        assert_eq!(at_s.sequence, s);
        let k = s - 2;
        if delete {
            assert_eq!(delete_events_from(&server, tenant, k + 1).await, 2);
        }
        rewind_head(&server, tenant, k).await;

        export_refused(
            &t.client,
            &format!("{name}: export after the head moved back"),
        )
        .await;
        let alert = wait_for_refusal_alert(&operator, &t.tenant_id, 0).await;
        assert!(
            alert.detail.contains(&format!(r#""head_sequence":{k},"#))
                && alert
                    .detail
                    .contains(&format!(r#""last_signed_sequence":{s},"#)),
            "{alert:?}"
        );
        server
            .logs
            .wait_for_line(
                &["refusing to sign an audit chain head", &t.tenant_id],
                Duration::from_secs(5),
            )
            .await;
        // A platform operator's export of the same chain is refused too.
        export_refused_for(&operator, &t.tenant_id).await;

        let r = verify_with(&t.client, &at_s).await;
        assert!(!r.ok && !r.checkpoint_matched, "{name}: {r:?}");
        assert_eq!(r.first_broken_sequence, k + 1, "{name}: {r:?}");
        // A bounded call that stops before the head: the stored head behind
        // the checkpoint is reported all the same.
        let paged = verify(
            &t.client,
            pb::VerifyChainRequest {
                checkpoint: Some(at_s.clone()),
                max_events: 2,
                ..Default::default()
            },
        )
        .await;
        assert!(!paged.ok && !paged.checkpoint_matched, "{name}: {paged:?}");
        assert_eq!(paged.first_broken_sequence, k + 1, "{name}: {paged:?}");
        let alone = verify(&t.client, pb::VerifyChainRequest::default()).await;
        if delete {
            assert!(alone.ok, "{name}: only a checkpoint can tell: {alone:?}");
        } else {
            assert!(!alone.ok, "{name}: events past the head: {alone:?}");
            assert_eq!(alone.first_broken_sequence, k + 1, "{name}: {alone:?}");
        }
    }
    // The tail replaced: K+1..S deleted, the head set to K, and new events
    // appended past S. The sequence moved on, but the event the last
    // checkpoint signed is gone: still refused.
    let delta = server.tenant("delta").await;
    let tenant = tenant_uuid(&delta.tenant_id);
    create_credentials(&delta.client, "d", 4).await;
    let s = head_of(&delta.client).await;
    let at_s = export(&delta.client, pb::ExportCheckpointRequest::default()).await;
    let k = s - 2;
    assert_eq!(delete_events_from(&server, tenant, k + 1).await, 2);
    rewind_head(&server, tenant, k).await;
    create_credentials(&delta.client, "e", 3).await;
    assert_eq!(
        head_of(&delta.client).await,
        s + 1,
        "the chain regrew past S"
    );
    export_refused(&delta.client, "delta: export after the tail was replaced").await;
    let alert = wait_for_refusal_alert(&operator, &delta.tenant_id, 0).await;
    assert!(
        alert
            .detail
            .contains(&format!(r#""head_sequence":{},"#, s + 1)),
        "{alert:?}"
    );
    let r = verify_with(&delta.client, &at_s).await;
    assert!(!r.ok && !r.checkpoint_matched, "delta: {r:?}");
    assert_eq!(r.first_broken_sequence, s, "delta: {r:?}");

    // Untampered chains are still signed, and moving on is fine.
    let gamma = server.tenant("gamma").await;
    let first = export(&gamma.client, pb::ExportCheckpointRequest::default()).await;
    create_credentials(&gamma.client, "g", 1).await;
    let next = export(&gamma.client, pb::ExportCheckpointRequest::default()).await;
    assert_eq!(next.sequence, first.sequence + 1);
    let again = export(&gamma.client, pb::ExportCheckpointRequest::default()).await;
    assert_eq!(
        again.sequence, next.sequence,
        "the same head is signed again"
    );
    assert!(verify_with(&gamma.client, &first).await.ok);
    server.stop().await;
}

async fn export_refused_for(operator: &Client, tenant_id: &str) {
    let status = expect_code(
        operator
            .audit()
            .export_checkpoint(pb::ExportCheckpointRequest {
                tenant_id: tenant_id.to_owned(),
                ..Default::default()
            })
            .await,
        tonic::Code::FailedPrecondition,
        "operator export after the head moved back",
    );
    assert_eq!(status.message(), NOT_EXTENDING);
}

/// Scheduled checkpoints never sign a head that moved backwards: after the
/// file holds a checkpoint at S, deleting K+1..S and setting the head to K
/// (acme), or only setting the head to K (beta), makes the next run refuse
/// (error logged, platform alert) and write no line at K. After a restart,
/// the file's last line per chain is the last signed head: export and the
/// scheduled run still refuse.
async fn scheduled_checkpoints_refuse_a_head_that_moved_back(backend: Backend) {
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
    let mut server = TestServer::start_with(options).await;
    let operator = server.operator().await;
    let mut tenants = Vec::new();
    for (name, delete) in [("acme", true), ("beta", false)] {
        let t = server.tenant(name).await;
        create_credentials(&t.client, name, 4).await;
        let s = head_of(&t.client).await;
        let line = wait_for_checkpoint(&file, &t.tenant_id, s).await;
        assert_eq!(line["sequence"].as_u64(), Some(s));
        let k = s - 2;
        let tenant = tenant_uuid(&t.tenant_id);
        if delete {
            assert_eq!(delete_events_from(&server, tenant, k + 1).await, 2);
        }
        rewind_head(&server, tenant, k).await;
        let alert = wait_for_refusal_alert(&operator, &t.tenant_id, 0).await;
        assert!(
            alert.detail.contains(&format!(r#""head_sequence":{k},"#)),
            "{alert:?}"
        );
        tenants.push((t.identity.clone(), t.tenant_id.clone(), s, k));
    }
    server
        .logs
        .wait_for_line(
            &["refusing to sign an audit chain head", &tenants[0].1],
            Duration::from_secs(5),
        )
        .await;
    let key = published_key(&operator).await;
    for (_, tenant_id, s, _) in &tenants {
        let lines = lines_of(&file, tenant_id);
        assert!(
            lines.windows(2).all(|w| w[0].0 <= w[1].0),
            "never a line behind an earlier one: {lines:?}"
        );
        let (last, line) = lines.last().expect("a line");
        assert_eq!(last, s, "nothing signed after the head moved back");
        assert!(line_verifies(line, &key.public_key));
    }

    // A restart forgets nothing: the file's last lines are the last signed
    // heads.
    server.restart().await;
    let operator = server.operator().await;
    for (identity, tenant_id, s, k) in &tenants {
        let client = server.client(identity).await;
        export_refused(&client, "export after a restart").await;
        let lines = lines_of(&file, tenant_id);
        assert_eq!(lines.last().map(|l| l.0), Some(*s), "{lines:?}");
        let alerts = refusal_alerts(&operator, tenant_id).await;
        assert!(
            alerts
                .iter()
                .any(|a| a.detail.contains(&format!(r#""head_sequence":{k},"#))),
            "{alerts:?}"
        );
    }
    server.stop().await;
}

/// The checkpoint key is derived from the root key: with every
/// server_meta row deleted and the server restarted on the same database
/// and root key, the published key is the same and old checkpoints still
/// verify. A checkpoint naming another key id is refused as signed by an
/// unknown key.
async fn checkpoint_key_survives_deleted_rows(backend: Backend) {
    let mut server = TestServer::start(backend).await;
    let acme = server.tenant("acme").await;
    create_credentials(&acme.client, "k", 2).await;
    let key = published_key(&acme.client).await;
    let checkpoint = export(&acme.client, pb::ExportCheckpointRequest::default()).await;

    owner_exec(&server, "DELETE FROM server_meta").await;
    server.restart().await;
    let client = server.client(&acme.identity).await;
    let after = published_key(&client).await;
    assert_eq!(
        after.public_key, key.public_key,
        "the same key after a restart"
    );
    assert_eq!(after.key_id, key.key_id);
    let r = verify_with(&client, &checkpoint).await;
    assert!(
        r.ok && r.checkpoint_matched,
        "old checkpoint verifies: {r:?}"
    );
    let fresh = export(&client, pb::ExportCheckpointRequest::default()).await;
    assert_eq!(fresh.key_id, key.key_id);

    let mut unknown = checkpoint.clone();
    unknown.key_id = "ed25519:0000000000000000".into();
    let status = expect_code(
        client
            .audit()
            .verify_chain(pb::VerifyChainRequest {
                checkpoint: Some(unknown),
                ..Default::default()
            })
            .await,
        tonic::Code::InvalidArgument,
        "checkpoint of an unknown key",
    );
    assert_eq!(status.message(), "checkpoint: signed by an unknown key");
    server.stop().await;
}

/// Event S's contents edited with its hash column kept: VerifyChain given
/// the checkpoint at S, continuing from past S + 1 (so the walk does not
/// pass S), reports S.
async fn checkpointed_event_contents_must_hash(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = server.tenant("acme").await;
    let tenant = tenant_uuid(&acme.tenant_id);
    create_credentials(&acme.client, "h", 2).await;
    let checkpoint = export(&acme.client, pb::ExportCheckpointRequest::default()).await;
    let s = checkpoint.sequence;
    create_credentials(&acme.client, "i", 3).await;
    let from = s + 2;
    let request = || pb::VerifyChainRequest {
        checkpoint: Some(checkpoint.clone()),
        from_sequence: from,
        ..Default::default()
    };
    let r = verify(&acme.client, request()).await;
    assert!(r.ok && r.checkpoint_matched, "intact: {r:?}");

    let n = tamper(
        &server,
        "UPDATE audit_events SET actor = 'someone else' WHERE tenant_id = $1 AND sequence = $2",
        tenant,
        i64::try_from(s).expect("sequence"),
    )
    .await;
    assert_eq!(n, 1);
    let r = verify(&acme.client, request()).await;
    assert!(!r.ok && !r.checkpoint_matched, "{r:?}");
    assert_eq!(r.first_broken_sequence, s, "{r:?}");
    server.stop().await;
}

on_both_backends!(
    export_refuses_a_head_that_moved_back,
    scheduled_checkpoints_refuse_a_head_that_moved_back,
    checkpoint_key_survives_deleted_rows,
    checkpointed_event_contents_must_hash,
);
