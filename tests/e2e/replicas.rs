//! Two servers on one Postgres database when change notices are lost: a
//! replica whose listener hears nothing (here: `database.listen_url` points
//! at another database, as a pooler in transaction mode would swallow
//! LISTEN) still stops honouring a revoked grant within its cache time to
//! live, and a reveal by a caller whose identity binding was deleted
//! through the other server fails at commit at once.

use std::time::{Duration, Instant};

use strongroom_client::Client;
use strongroom_e2e::{
    Backend, Options, TenantAdmin, TestServer, api_key, audit_events, expect_code, grant, path,
};
use strongroom_proto::v1 as pb;
use tonic::Code;

/// A replica of `primary` whose change listener is connected to another
/// database of the same Postgres server: it starts and listens without
/// error, and never hears a notice of `primary`'s database.
async fn deaf_replica(primary: &TestServer, cache_ttl_ms: u64) -> TestServer {
    let mut options = primary.replica_options();
    let url = primary.database_url.clone().expect("postgres");
    let elsewhere = format!(
        "{}/postgres",
        url.rsplit_once('/').map_or(url.as_str(), |(b, _)| b)
    );
    options.env = vec![
        ("STRONGROOM_DATABASE_LISTEN_URL".into(), elsewhere),
        ("STRONGROOM_CACHE_TTL_MS".into(), cache_ttl_ms.to_string()),
    ];
    options.log_level = "info".into();
    let replica = TestServer::start_with(options).await;
    // Its listener drops every cache when it connects: wait for that, so
    // what the test caches next stays cached.
    replica
        .logs
        .wait_for_line(&["listening for change notices"], Duration::from_secs(10))
        .await;
    replica
}

async fn create_as(client: &Client, name: &str) -> Result<(), tonic::Status> {
    client
        .credentials()
        .create_credential(pb::CreateCredentialRequest {
            environment: "dev".into(),
            name: name.into(),
            service: "internal".into(),
            value: api_key("sk-replica-test"),
            ..Default::default()
        })
        .await
        .map(|_| ())
}

async fn tenant_with(primary: &TestServer) -> TenantAdmin {
    primary.tenant("acme").await
}

/// A `write` grant revoked through one server stops writes through a
/// replica that never hears the change notice within the replica's cache
/// time to live (plus a margin).
#[tokio::test]
async fn revoked_grant_stops_writes_on_a_deaf_replica_within_the_ttl() {
    const TTL_MS: u64 = 2000;
    let primary = TestServer::start_with(Options {
        log_level: "info".into(),
        ..Options::new(Backend::Postgres)
    })
    .await;
    let admin = tenant_with(&primary).await;
    let (writer_id, _) = primary.principal(&admin, "writer", pb::Role::Agent).await;
    let g = grant(
        &admin,
        &writer_id,
        "app/*",
        &["dev"],
        &[pb::Capability::Write],
        None,
    )
    .await;
    let replica = deaf_replica(&primary, TTL_MS).await;
    let writer = replica.client("spiffe://e2e.test/acme/writer").await;
    // The replica caches the writer and its grants.
    create_as(&writer, "app/w0").await.expect("allowed");

    admin
        .client
        .policy()
        .revoke_grant(pb::RevokeGrantRequest {
            grant_id: g.id.clone(),
            reason: "revoked".into(),
        })
        .await
        .expect("revoke through the primary");
    let revoked = Instant::now();
    // The replica really missed the notice: right after the revocation it
    // still decides on its cached grants.
    create_as(&writer, "app/w1")
        .await
        .expect("the replica heard no notice and its cache is still fresh");

    let mut n = 2;
    let refused_after = loop {
        match create_as(&writer, &format!("app/w{n}")).await {
            Ok(()) => {}
            Err(s) if s.code() == Code::PermissionDenied => break revoked.elapsed(),
            Err(s) => panic!("unexpected refusal: {s:?}"),
        }
        n += 1;
        assert!(
            revoked.elapsed() < Duration::from_secs(20),
            "the replica kept honouring the revoked grant for 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        refused_after <= Duration::from_millis(TTL_MS + 1500),
        "writes were refused only after {refused_after:?} (cache TTL {TTL_MS} ms)"
    );
    replica.stop().await;
    primary.stop().await;
}

/// A reveal through a replica by a caller whose identity binding was just
/// deleted through the other server fails at commit, although the replica
/// heard nothing and its cached caller is fresh; no reveal is recorded,
/// and the caller's next call is not authenticated.
#[tokio::test]
async fn reveal_after_binding_deleted_elsewhere_fails_at_commit() {
    let primary = TestServer::start_with(Options {
        log_level: "info".into(),
        ..Options::new(Backend::Postgres)
    })
    .await;
    let admin = tenant_with(&primary).await;
    admin
        .client
        .credentials()
        .create_credential(pb::CreateCredentialRequest {
            environment: "dev".into(),
            name: "llm/openai".into(),
            service: "openai".into(),
            value: api_key("sk-replica-binding"),
            ..Default::default()
        })
        .await
        .expect("create");
    let (agent_id, _) = primary.principal(&admin, "agent", pb::Role::Agent).await;
    grant(
        &admin,
        &agent_id,
        "llm/*",
        &["dev"],
        &[pb::Capability::Reveal],
        None,
    )
    .await;
    // A long cache time to live: only the commit check can stop it.
    let replica = deaf_replica(&primary, 120_000).await;
    let agent = replica.client("spiffe://e2e.test/acme/agent").await;
    let reveal = || async {
        agent
            .credentials()
            .reveal_credential(pb::RevealCredentialRequest {
                credential: path("dev", "llm/openai"),
                purpose: "replica test".into(),
                ..Default::default()
            })
            .await
    };
    reveal().await.expect("bound: the reveal passes");
    let reveals = |admin: &TenantAdmin| {
        let client = admin.client.clone();
        let agent_id = agent_id.clone();
        async move {
            audit_events(
                &client,
                pb::QueryEventsRequest {
                    principal_id: agent_id,
                    actions: vec![pb::AuditAction::CredentialReveal as i32],
                    outcome: pb::AuditOutcome::Allowed as i32,
                    ..Default::default()
                },
            )
            .await
            .len()
        }
    };
    assert_eq!(reveals(&admin).await, 1);

    let bindings = admin
        .client
        .admin()
        .list_identity_bindings(pb::ListIdentityBindingsRequest {
            principal_id: agent_id.clone(),
            ..Default::default()
        })
        .await
        .expect("list bindings")
        .into_inner()
        .bindings;
    assert_eq!(bindings.len(), 1);
    admin
        .client
        .admin()
        .delete_identity_binding(pb::DeleteIdentityBindingRequest {
            binding_id: bindings[0].id.clone(),
        })
        .await
        .expect("delete the binding through the primary");

    expect_code(
        reveal().await,
        Code::FailedPrecondition,
        "a reveal by an unbound caller through the deaf replica",
    );
    assert_eq!(reveals(&admin).await, 1, "no reveal was recorded");
    expect_code(
        reveal().await,
        Code::Unauthenticated,
        "the next call authenticates afresh",
    );
    replica.stop().await;
    primary.stop().await;
}
