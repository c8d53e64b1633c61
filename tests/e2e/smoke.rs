//! A first lifecycle on both backends.

use strongroom_e2e::{Backend, TestServer, api_key, path};
use strongroom_proto::v1 as pb;

async fn lifecycle(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = server.tenant("acme").await;
    let (agent_id, agent) = server.principal(&acme, "agent", pb::Role::Agent).await;
    acme.client
        .credentials()
        .create_credential(pb::CreateCredentialRequest {
            environment: "dev".into(),
            name: "llm/openai".into(),
            service: "openai".into(),
            value: api_key("sk-e2e-smoke-secret"),
            ..Default::default()
        })
        .await
        .expect("create");
    let denied = agent
        .credentials()
        .reveal_credential(pb::RevealCredentialRequest {
            credential: path("dev", "llm/openai"),
            purpose: "smoke".into(),
            ..Default::default()
        })
        .await
        .expect_err("no grant yet");
    // Without read_metadata the agent may not learn that it exists.
    assert_eq!(denied.code(), tonic::Code::NotFound);
    acme.client
        .policy()
        .create_grant(pb::CreateGrantRequest {
            subject: Some(pb::GrantSubject {
                subject: Some(pb::grant_subject::Subject::PrincipalId(agent_id)),
            }),
            selector: "llm/*".into(),
            environments: vec!["dev".into()],
            capabilities: vec![pb::Capability::Reveal as i32],
            ..Default::default()
        })
        .await
        .expect("grant");
    let revealed = agent
        .credentials()
        .reveal_credential(pb::RevealCredentialRequest {
            credential: path("dev", "llm/openai"),
            purpose: "smoke".into(),
            ..Default::default()
        })
        .await
        .expect("reveal")
        .into_inner();
    match revealed.revealed {
        Some(pb::reveal_credential_response::Revealed::Value(v)) => match v.value {
            Some(pb::credential_value::Value::ApiKey(k)) => {
                assert_eq!(k.api_key, "sk-e2e-smoke-secret")
            }
            other => panic!("unexpected value {other:?}"),
        },
        other => panic!("unexpected reveal {other:?}"),
    }
    assert!(
        !server.logs.contains("sk-e2e-smoke-secret"),
        "secret in server logs"
    );
    let status = server.stop().await;
    assert!(status.success(), "strongroomd exited with {status}");
}

#[tokio::test]
async fn lifecycle_postgres() {
    lifecycle(Backend::Postgres).await;
}

#[tokio::test]
async fn lifecycle_sqlite() {
    lifecycle(Backend::Sqlite).await;
}
