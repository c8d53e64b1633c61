//! The server's time is its engine's clock. Moved forward by the test-only
//! control (servers built with the `test-clock` feature), grants and
//! credentials expire and audit events carry the moved time, without the
//! test waiting for any of it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use strongroom_client::Client;
use strongroom_e2e::{
    Backend, Options, TestServer, api_key, audit_events, expect_code, expect_invalid, grant, path,
    timestamp,
};
use strongroom_proto::v1 as pb;
use tonic::Code;

on_both_backends!(expiry_follows_the_server_clock);

const HOUR: Duration = Duration::from_secs(3600);

async fn reveal(client: &Client) -> Result<pb::RevealCredentialResponse, tonic::Status> {
    client
        .credentials()
        .reveal_credential(pb::RevealCredentialRequest {
            credential: path("dev", "llm/openai"),
            purpose: "clock test".into(),
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Seconds since the epoch of `t`.
fn secs(t: SystemTime) -> i64 {
    i64::try_from(
        t.duration_since(UNIX_EPOCH)
            .expect("after the epoch")
            .as_secs(),
    )
    .expect("seconds")
}

/// The newest denied event of `principal_id` with `reason`.
async fn denial(client: &Client, principal_id: &str, reason: &str) -> pb::AuditEvent {
    audit_events(
        client,
        pb::QueryEventsRequest {
            principal_id: principal_id.into(),
            outcome: pb::AuditOutcome::Denied as i32,
            ..Default::default()
        },
    )
    .await
    .into_iter()
    .find(|e| e.reason_code == reason)
    .unwrap_or_else(|| panic!("no denial {reason} of {principal_id}"))
}

async fn expiry_follows_the_server_clock(backend: Backend) {
    let server = TestServer::start_with(Options {
        test_clock: true,
        ..Options::new(backend)
    })
    .await;
    let acme = server.tenant("acme").await;
    let (agent_id, agent) = server.principal(&acme, "agent", pb::Role::Agent).await;
    let start = SystemTime::now();
    acme.client
        .credentials()
        .create_credential(pb::CreateCredentialRequest {
            environment: "dev".into(),
            name: "llm/openai".into(),
            service: "openai".into(),
            value: api_key("sk-e2e-clock"),
            expires_at: Some(timestamp(start + 3 * HOUR)),
            ..Default::default()
        })
        .await
        .expect("create a credential expiring in three hours");
    grant(
        &acme,
        &agent_id,
        "llm/*",
        &["dev"],
        &[pb::Capability::Reveal],
        Some(start + HOUR),
    )
    .await;
    reveal(&agent).await.expect("reveal under a fresh grant");

    // Two hours on: the grant has expired (the store still holds it), and
    // the refusal is audited at the server's time, not the test's.
    server.advance_clock(2 * HOUR);
    expect_code(
        reveal(&agent).await,
        Code::NotFound,
        "reveal after the grant expired",
    );
    let expired = denial(&acme.client, &agent_id, "GRANT_EXPIRED").await;
    let at = expired.time.expect("event time").seconds;
    assert!(
        (secs(start + 2 * HOUR) - 60..=secs(SystemTime::now() + 2 * HOUR) + 60).contains(&at),
        "the denial is stamped two hours ahead of the test's clock: {at}"
    );
    // A grant is new only if it ends after the server's now.
    expect_invalid(
        acme.client
            .policy()
            .create_grant(pb::CreateGrantRequest {
                subject: Some(pb::GrantSubject {
                    subject: Some(pb::grant_subject::Subject::PrincipalId(agent_id.clone())),
                }),
                selector: "llm/*".into(),
                environments: vec!["dev".into()],
                capabilities: vec![pb::Capability::Reveal as i32],
                expires_at: Some(timestamp(start + HOUR + HOUR / 2)),
                reason: "e2e".into(),
                ..Default::default()
            })
            .await,
        "expires_at",
        "a grant ending in the server's past",
    );

    // The credential is still active until its own expiry, then refused.
    let status = |c: Option<pb::Credential>| c.expect("credential").status();
    let get = || async {
        acme.client
            .credentials()
            .get_credential(pb::GetCredentialRequest {
                credential: path("dev", "llm/openai"),
            })
            .await
            .expect("get")
            .into_inner()
            .credential
    };
    assert_eq!(status(get().await), pb::CredentialStatus::Active);
    reveal(&acme.client)
        .await
        .expect("the admin reveals before the credential expires");
    server.advance_clock(2 * HOUR);
    assert_eq!(status(get().await), pb::CredentialStatus::Expired);
    expect_code(
        reveal(&acme.client).await,
        Code::FailedPrecondition,
        "reveal after the credential expired",
    );
    denial(&acme.client, &acme.principal_id, "CREDENTIAL_EXPIRED").await;
    server.stop().await;
}
