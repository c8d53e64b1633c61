//! A server killed outright (SIGKILL, no shutdown) loses nothing it
//! answered: every credential created, every rotation and every reveal's
//! audit event is there after a restart on the same storage, and the
//! tenant's audit chain still verifies. On SQLite the log is checkpointed
//! by a task of its own, never by a commit, so most of what the test wrote
//! is only in the write-ahead log when the server dies.

use strongroom_client::Client;
use strongroom_e2e::{
    Backend, TenantAdmin, TestServer, api_key, api_key_text, grant, path, verified_event_count,
};
use strongroom_proto::v1 as pb;

on_both_backends!(nothing_answered_is_lost);

async fn rotate(admin: &TenantAdmin, name: &str, secret: &str) {
    admin
        .client
        .credentials()
        .rotate_credential(pb::RotateCredentialRequest {
            credential: path("dev", name),
            new_value: api_key(secret).map(pb::rotate_credential_request::NewValue::Value),
            ..Default::default()
        })
        .await
        .expect("rotate a credential");
}

async fn reveal(client: &Client, name: &str) -> String {
    let revealed = client
        .credentials()
        .reveal_credential(pb::RevealCredentialRequest {
            credential: path("dev", name),
            purpose: "killed e2e".into(),
            ..Default::default()
        })
        .await
        .expect("reveal")
        .into_inner()
        .revealed;
    match revealed {
        Some(pb::reveal_credential_response::Revealed::Value(v)) => api_key_text(&v).to_owned(),
        other => panic!("not a whole value: {}", other.is_some()),
    }
}

async fn nothing_answered_is_lost(backend: Backend) {
    let mut server = TestServer::start(backend).await;
    let acme = server.tenant("acme").await;
    let (agent_id, agent) = server.principal(&acme, "agent", pb::Role::Agent).await;
    grant(
        &acme,
        &agent_id,
        "svc/*",
        &["dev"],
        &[pb::Capability::Reveal],
        None,
    )
    .await;
    let n = 40;
    for i in 0..n {
        acme.create_api_key("dev", &format!("svc/key-{i}"), &format!("sk-killed-{i}-a"))
            .await;
    }
    for i in (0..n).step_by(2) {
        rotate(&acme, &format!("svc/key-{i}"), &format!("sk-killed-{i}-b")).await;
    }
    for i in 0..n {
        reveal(&agent, &format!("svc/key-{i}")).await;
    }
    let events = verified_event_count(&acme.client).await;

    server.kill_and_restart().await;

    let acme = TenantAdmin {
        client: server.client(&acme.identity).await,
        ..acme
    };
    assert_eq!(
        verified_event_count(&acme.client).await,
        events,
        "the audit chain after the kill"
    );
    let agent = server.client("spiffe://e2e.test/acme/agent").await;
    for i in 0..n {
        let want = if i % 2 == 0 {
            format!("sk-killed-{i}-b")
        } else {
            format!("sk-killed-{i}-a")
        };
        assert_eq!(reveal(&agent, &format!("svc/key-{i}")).await, want);
    }
    server.stop().await;
}
