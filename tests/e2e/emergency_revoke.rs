//! Emergency revoke of a principal (AdminService.EmergencyRevokePrincipal):
//! one call disables the principal, revokes its grants, ends its leases and
//! deletes its identity bindings, in one audited step that counts what it
//! cut; a repeat cuts nothing and writes nothing; only tenant admins may
//! call it. On two servers sharing Postgres, the revoked principal's
//! reveals and resolves fail on both right after the call returns, even on
//! a server that never hears the change notice, and its other calls stop
//! there within the cache time to live. Relay uses (RelayService.Forward,
//! to a local upstream) are value-bearing too: they fail on both servers at
//! once and nothing more reaches the upstream.

use std::time::{Duration, Instant};

use strongroom_client::Client;
use strongroom_e2e::upstream::Upstream;
use strongroom_e2e::{
    Backend, Options, TenantAdmin, TestServer, api_key, audit_events, expect_code, expect_invalid,
    grant, path, verified_event_count,
};
use strongroom_proto::v1 as pb;
use tonic::Code;

on_both_backends!(revoke_cuts_everything_once, only_admins_may_revoke);

const SECRET: &str = "sk-emergency-revoke-value-7731";

/// A credential `llm/openai` (service `openai`) in `dev`, and an agent
/// with two grants on it (reveal, and read-metadata).
async fn agent_with_grants(server: &TestServer, admin: &TenantAdmin) -> (String, Client) {
    admin
        .client
        .credentials()
        .create_credential(pb::CreateCredentialRequest {
            environment: "dev".into(),
            name: "llm/openai".into(),
            service: "openai".into(),
            value: api_key(SECRET),
            ..Default::default()
        })
        .await
        .expect("create");
    let (agent_id, agent) = server.principal(admin, "agent", pb::Role::Agent).await;
    grant(
        admin,
        &agent_id,
        "llm/*",
        &["dev"],
        &[pb::Capability::Reveal],
        None,
    )
    .await;
    grant(
        admin,
        &agent_id,
        "llm/openai",
        &["dev"],
        &[pb::Capability::ReadMetadata],
        None,
    )
    .await;
    (agent_id, agent)
}

async fn reveal(
    client: &Client,
) -> Result<tonic::Response<pb::RevealCredentialResponse>, tonic::Status> {
    client
        .credentials()
        .reveal_credential(pb::RevealCredentialRequest {
            credential: path("dev", "llm/openai"),
            purpose: "emergency revoke test".into(),
            ..Default::default()
        })
        .await
}

async fn resolve(
    client: &Client,
) -> Result<tonic::Response<pb::ResolveCredentialResponse>, tonic::Status> {
    client
        .credentials()
        .resolve_credential(pb::ResolveCredentialRequest {
            service: "openai".into(),
            environment: "dev".into(),
            purpose: "emergency revoke test".into(),
            ..Default::default()
        })
        .await
}

async fn emergency_revoke(
    admin: &TenantAdmin,
    principal_id: &str,
    reason: &str,
) -> Result<pb::EmergencyRevokePrincipalResponse, tonic::Status> {
    admin
        .client
        .admin()
        .emergency_revoke_principal(pb::EmergencyRevokePrincipalRequest {
            principal_id: principal_id.into(),
            reason: reason.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn events_of(admin: &TenantAdmin, action: pb::AuditAction) -> Vec<pb::AuditEvent> {
    audit_events(
        &admin.client,
        pb::QueryEventsRequest {
            actions: vec![action as i32],
            ..Default::default()
        },
    )
    .await
}

/// Asserts that a value-bearing call was refused, and names it. A server
/// whose cached decision is found stale at commit decides again on fresh
/// state, where the caller holds no grant: it then answers as for a
/// credential it cannot see (NOT_FOUND).
fn assert_refused<T: std::fmt::Debug>(result: Result<T, tonic::Status>, what: &str) {
    match result {
        Ok(r) => panic!("{what}: a value was handed out after the revoke: {r:?}"),
        Err(s) => assert!(
            matches!(
                s.code(),
                Code::FailedPrecondition
                    | Code::Unauthenticated
                    | Code::PermissionDenied
                    | Code::NotFound
            ),
            "{what}: unexpected refusal {s:?}"
        ),
    }
}

async fn revoke_cuts_everything_once(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.tenant("acme").await;
    let (agent_id, agent) = agent_with_grants(&server, &admin).await;
    // Two leases: one reveal, one resolve.
    reveal(&agent).await.expect("reveal before the revoke");
    resolve(&agent).await.expect("resolve before the revoke");

    let cut = emergency_revoke(&admin, &agent_id, "key found in a public repo")
        .await
        .expect("emergency revoke");
    let principal = cut.principal.expect("principal");
    assert_eq!(principal.id, agent_id);
    assert_eq!(principal.status, pb::PrincipalStatus::Disabled as i32);
    assert_eq!(cut.grants_revoked, 2);
    assert_eq!(cut.leases_ended, 2);
    assert_eq!(cut.bindings_deleted, 1);

    // Everything it held is gone.
    assert_refused(reveal(&agent).await, "reveal");
    assert_refused(resolve(&agent).await, "resolve");
    let grants = admin
        .client
        .policy()
        .list_grants(pb::ListGrantsRequest {
            principal_id: agent_id.clone(),
            ..Default::default()
        })
        .await
        .expect("list grants")
        .into_inner()
        .grants;
    assert!(grants.is_empty(), "grants left: {grants:?}");
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
    assert!(bindings.is_empty(), "bindings left: {bindings:?}");
    let leases = admin
        .client
        .credentials()
        .list_leases(pb::ListLeasesRequest {
            principal_id: agent_id.clone(),
            ..Default::default()
        })
        .await
        .expect("list leases")
        .into_inner()
        .leases;
    assert_eq!(leases.len(), 2);
    assert!(
        leases
            .iter()
            .all(|l| l.state == pb::LeaseState::Revoked as i32),
        "{leases:?}"
    );

    // One audited step counting what it cut, then one lease.revoke a lease.
    let revokes = events_of(&admin, pb::AuditAction::PrincipalEmergencyRevoke).await;
    assert_eq!(revokes.len(), 1);
    let detail = &revokes[0].detail;
    for field in [
        format!("\"principal\":\"{agent_id}\""),
        "\"reason\":\"key found in a public repo\"".to_owned(),
        "\"grants_revoked\":2".to_owned(),
        "\"leases_ended\":2".to_owned(),
        "\"bindings_deleted\":1".to_owned(),
    ] {
        assert!(detail.contains(&field), "{field} not in {detail}");
    }
    let lease_ends = events_of(&admin, pb::AuditAction::LeaseRevoke).await;
    assert_eq!(lease_ends.len(), 2);
    assert!(lease_ends.iter().all(|e| e.sequence > revokes[0].sequence));
    let events = verified_event_count(&admin.client).await;

    // A repeat finds nothing left to cut and writes nothing.
    let again = emergency_revoke(&admin, &agent_id, "again")
        .await
        .expect("repeat");
    assert_eq!(
        (
            again.grants_revoked,
            again.leases_ended,
            again.bindings_deleted
        ),
        (0, 0, 0)
    );
    assert_eq!(
        again.principal.expect("principal").status,
        pb::PrincipalStatus::Disabled as i32
    );
    assert_eq!(verified_event_count(&admin.client).await, events);

    // Nothing of the value in the audit trail.
    let all = audit_events(&admin.client, pb::QueryEventsRequest::default()).await;
    assert!(!format!("{all:?}").contains(SECRET));
    server.stop().await;
}

async fn only_admins_may_revoke(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.tenant("acme").await;
    let (agent_id, agent) = agent_with_grants(&server, &admin).await;
    let (_, viewer) = server.principal(&admin, "viewer", pb::Role::Viewer).await;
    let (_, operator) = server
        .principal(&admin, "operator", pb::Role::Operator)
        .await;
    let request = || pb::EmergencyRevokePrincipalRequest {
        principal_id: agent_id.clone(),
        reason: "not allowed".into(),
    };
    for (client, who) in [
        (&viewer, "viewer"),
        (&operator, "operator"),
        (&agent, "agent"),
    ] {
        expect_code(
            client.admin().emergency_revoke_principal(request()).await,
            Code::PermissionDenied,
            who,
        );
    }
    // Input is checked, and a refused call changes nothing.
    expect_invalid(
        emergency_revoke(&admin, &agent_id, "").await,
        "reason",
        "no reason",
    );
    expect_invalid(
        emergency_revoke(&admin, &agent_id, &"x".repeat(1025)).await,
        "reason",
        "a reason too long",
    );
    expect_invalid(
        emergency_revoke(&admin, "not-an-id", "r").await,
        "principal_id",
        "a malformed id",
    );
    let me = admin
        .client
        .admin()
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .expect("who am i")
        .into_inner();
    expect_code(
        emergency_revoke(&admin, &me.principal.expect("principal").id, "myself").await,
        Code::FailedPrecondition,
        "an admin revoking itself",
    );
    reveal(&agent).await.expect("still allowed");
    // The refusals are recorded as denials; nothing was revoked.
    let attempts = events_of(&admin, pb::AuditAction::PrincipalEmergencyRevoke).await;
    assert_eq!(attempts.len(), 3, "{attempts:?}");
    assert!(
        attempts
            .iter()
            .all(|e| e.outcome == pb::AuditOutcome::Denied as i32),
        "{attempts:?}"
    );
    verified_event_count(&admin.client).await;
    server.stop().await;
}

/// The relay's settings for a server that reaches `upstream` as
/// `api.example.test` (on 127.0.0.1), trusting its CA (written into `dir`).
pub(crate) fn relay_env(upstream: &Upstream, dir: &tempfile::TempDir) -> Vec<(String, String)> {
    let ca = dir.path().join("upstream-ca.pem");
    std::fs::write(&ca, upstream.ca_pem()).expect("write upstream CA");
    let port = upstream.port();
    vec![
        (
            "STRONGROOM_RELAY_RESOLVE".into(),
            format!("api.example.test:{port}:127.0.0.1"),
        ),
        (
            "STRONGROOM_RELAY_ALLOW_INTERNAL".into(),
            format!("api.example.test:{port}"),
        ),
        (
            "STRONGROOM_RELAY_UPSTREAM_CA".into(),
            ca.to_string_lossy().into_owned(),
        ),
    ]
}

/// Two servers on one Postgres database, both with the relay set up for
/// `upstream`: the primary, and a replica deaf to change notices (it
/// listens on another database: the worst case, a lost notice) whose cache
/// time to live is `ttl_ms`.
pub(crate) async fn two_replicas(
    upstream: &Upstream,
    dir: &tempfile::TempDir,
    ttl_ms: u64,
) -> (TestServer, TestServer) {
    let relay = relay_env(upstream, dir);
    let primary = TestServer::start_with(Options {
        log_level: "info".into(),
        env: relay.clone(),
        ..Options::new(Backend::Postgres)
    })
    .await;
    let mut options = primary.replica_options();
    let url = primary.database_url.clone().expect("postgres");
    let elsewhere = format!(
        "{}/postgres",
        url.rsplit_once('/').map_or(url.as_str(), |(b, _)| b)
    );
    options.env = relay;
    options
        .env
        .push(("STRONGROOM_DATABASE_LISTEN_URL".into(), elsewhere));
    options
        .env
        .push(("STRONGROOM_CACHE_TTL_MS".into(), ttl_ms.to_string()));
    options.log_level = "info".into();
    let replica = TestServer::start_with(options).await;
    replica
        .logs
        .wait_for_line(&["listening for change notices"], Duration::from_secs(10))
        .await;
    (primary, replica)
}

/// Grants `principal_id` inject on `selector` in dev, to the upstream's
/// `/echo`.
pub(crate) async fn inject_grant(
    admin: &TenantAdmin,
    principal_id: &str,
    selector: &str,
    upstream: &Upstream,
) -> pb::Grant {
    admin
        .client
        .policy()
        .create_grant(pb::CreateGrantRequest {
            subject: Some(pb::GrantSubject {
                subject: Some(pb::grant_subject::Subject::PrincipalId(
                    principal_id.to_owned(),
                )),
            }),
            selector: selector.into(),
            environments: vec!["dev".into()],
            capabilities: vec![pb::Capability::Inject as i32],
            destinations: vec![pb::Destination {
                host: format!("api.example.test:{}", upstream.port()),
                methods: vec![],
                path_prefixes: vec!["/echo".into()],
                ..Default::default()
            }],
            reason: "e2e".into(),
            ..Default::default()
        })
        .await
        .expect("create inject grant")
        .into_inner()
        .grant
        .expect("grant")
}

/// One relay use of `dev/NAME` through `client`: the upstream's status, or
/// the relay's refusal (as a status of its own or a gRPC error).
pub(crate) async fn relay_use(
    client: &Client,
    upstream: &Upstream,
    name: &str,
) -> Result<u32, tonic::Status> {
    let head = pb::RelayRequestHead {
        method: "GET".into(),
        url: format!("https://api.example.test:{}/echo", upstream.port()),
        inject: vec![pb::InjectionRef {
            environment: "dev".into(),
            name: name.into(),
            field: String::new(),
        }],
        purpose: "emergency revoke test".into(),
        ..Default::default()
    };
    let messages = vec![pb::ForwardRequest {
        part: Some(pb::forward_request::Part::Head(head)),
    }];
    let mut stream = client
        .relay()
        .forward(tokio_stream::iter(messages))
        .await?
        .into_inner();
    let first = stream
        .message()
        .await?
        .ok_or_else(|| tonic::Status::internal("no response head"))?;
    let Some(pb::forward_response::Part::Head(head)) = first.part else {
        return Err(tonic::Status::internal("the first message is not a head"));
    };
    while stream.message().await?.is_some() {}
    Ok(head.status)
}

/// Asserts that a relay use was refused: no upstream answer came back and
/// nothing more reached the upstream.
pub(crate) fn assert_relay_refused(
    result: Result<u32, tonic::Status>,
    upstream: &Upstream,
    reached_before: usize,
    what: &str,
) {
    match result {
        Ok(200) => panic!("{what}: the relay sent the credential after the revoke"),
        Ok(status) => assert!(
            (400..500).contains(&status),
            "{what}: unexpected relay status {status}"
        ),
        Err(s) => assert!(
            matches!(
                s.code(),
                Code::FailedPrecondition
                    | Code::Unauthenticated
                    | Code::PermissionDenied
                    | Code::NotFound
            ),
            "{what}: unexpected refusal {s:?}"
        ),
    }
    assert_eq!(
        upstream.received().len(),
        reached_before,
        "{what}: a request reached the upstream after the revoke"
    );
}

/// The acceptance case, on two servers sharing Postgres, the replica
/// deaf to change notices (the worst case: a lost notice) with a short
/// cache time to live: right after the revoke returns through the
/// primary, the principal's reveals, resolves and relay uses fail on both
/// servers (the replica's cached caller is still fresh: the reveal check
/// at commit refuses them), no value-bearing event is recorded, nothing
/// more reaches the upstream, and its other calls through the replica stop
/// within the cache time to live.
#[tokio::test]
async fn value_bearing_calls_fail_on_both_replicas_at_once() {
    const TTL_MS: u64 = 2000;
    let upstream = Upstream::start(&["*.example.test"]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (primary, replica) = two_replicas(&upstream, &dir, TTL_MS).await;
    let admin = primary.tenant("acme").await;
    let (agent_id, on_primary) = agent_with_grants(&primary, &admin).await;
    inject_grant(&admin, &agent_id, "llm/*", &upstream).await;
    let on_replica = replica.client("spiffe://e2e.test/acme/agent").await;

    // Leases on both servers; the replica caches the caller and grants;
    // relay uses reach the upstream through both.
    reveal(&on_primary).await.expect("reveal on the primary");
    reveal(&on_replica).await.expect("reveal on the replica");
    resolve(&on_replica).await.expect("resolve on the replica");
    for (client, which) in [(&on_primary, "primary"), (&on_replica, "replica")] {
        assert_eq!(
            relay_use(client, &upstream, "llm/openai")
                .await
                .unwrap_or_else(|e| panic!("relay use on the {which}: {e:?}")),
            200,
            "relay use on the {which}"
        );
    }
    let reached = upstream.received().len();
    assert_eq!(reached, 2);
    let list = || async {
        on_replica
            .credentials()
            .list_credentials(pb::ListCredentialsRequest::default())
            .await
    };
    list().await.expect("list on the replica");
    let value_events = |admin: &TenantAdmin| {
        let client = admin.client.clone();
        let agent_id = agent_id.clone();
        async move {
            let mut n = 0;
            // Resolves are recorded as reveals.
            for action in [
                pb::AuditAction::CredentialReveal,
                pb::AuditAction::CredentialInject,
            ] {
                n += audit_events(
                    &client,
                    pb::QueryEventsRequest {
                        principal_id: agent_id.clone(),
                        actions: vec![action as i32],
                        outcome: pb::AuditOutcome::Allowed as i32,
                        ..Default::default()
                    },
                )
                .await
                .len();
            }
            n
        }
    };
    let before = value_events(&admin).await;

    let cut = emergency_revoke(&admin, &agent_id, "compromised")
        .await
        .expect("emergency revoke through the primary");
    let revoked = Instant::now();
    assert_eq!(cut.leases_ended, 3);
    assert_eq!(cut.grants_revoked, 3);

    assert_refused(reveal(&on_replica).await, "reveal on the replica");
    assert_refused(resolve(&on_replica).await, "resolve on the replica");
    assert_relay_refused(
        relay_use(&on_replica, &upstream, "llm/openai").await,
        &upstream,
        reached,
        "relay use on the replica",
    );
    assert_refused(reveal(&on_primary).await, "reveal on the primary");
    assert_refused(resolve(&on_primary).await, "resolve on the primary");
    assert_relay_refused(
        relay_use(&on_primary, &upstream, "llm/openai").await,
        &upstream,
        reached,
        "relay use on the primary",
    );
    assert_eq!(
        value_events(&admin).await,
        before,
        "no value was handed out or sent"
    );

    // Other calls through the deaf replica: refused within the TTL.
    let refused_after = loop {
        match list().await {
            Ok(_) => {}
            Err(s) if matches!(s.code(), Code::Unauthenticated | Code::PermissionDenied) => {
                break revoked.elapsed();
            }
            Err(s) => panic!("unexpected refusal: {s:?}"),
        }
        assert!(
            revoked.elapsed() < Duration::from_secs(20),
            "the replica kept serving the revoked principal for 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        refused_after <= Duration::from_millis(TTL_MS + 1500),
        "other calls were refused only after {refused_after:?} (cache TTL {TTL_MS} ms)"
    );
    verified_event_count(&admin.client).await;
    replica.stop().await;
    primary.stop().await;
}
