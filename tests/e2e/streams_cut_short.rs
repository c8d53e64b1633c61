//! Long-lived streams end once what they carry stops being allowed, on
//! whichever server the change was made.
//!
//! A relayed response still streaming ends when its grant is revoked or
//! expires, its credential is revoked, its value in use is replaced (a
//! rotation, an emergency revoke with a generated replacement), its tenant
//! is suspended, the identity binding that authenticated the agent is
//! deleted, the environments its principal may enter are narrowed, its
//! credential is given an owner the use is not on behalf of, or its
//! principal is emergency-revoked through another replica: well before
//! `relay.max_duration_ms`, with PERMISSION_DENIED or FAILED_PRECONDITION
//! saying why (never a value), and the outcome (`credential.inject_result`)
//! records `cut_short` with the reason. A StreamEvents reader that loses
//! its role through another replica, and a WatchAccessRequest watcher that
//! is disabled, stop too (PERMISSION_DENIED), as do both when their tenant
//! is suspended.

use std::time::{Duration, Instant};

use strongroom_client::Client;
use strongroom_e2e::upstream::Upstream;
use strongroom_e2e::{
    Backend, Options, TenantAdmin, TestServer, api_key, audit_events, path, timestamp,
};
use strongroom_proto::v1 as pb;
use tonic::Code;

use crate::emergency_revoke::relay_env;

on_both_backends!(
    revoking_the_grant_ends_the_response,
    revoking_the_credential_ends_the_response,
    an_emergency_revoke_with_a_replacement_ends_the_response,
    rotating_the_credential_ends_the_response,
    suspending_the_tenant_ends_the_response,
    deleting_the_binding_ends_the_response,
    the_grant_expiring_ends_the_response,
    a_disabled_watcher_stops_watching
);

/// The relay's cap on one use: far longer than any of these tests waits.
const MAX_DURATION_MS: &str = "120000";
/// How long an open response may take to end once its use is no longer
/// allowed (the staleness bound in these servers is at most 2 s).
const PROMPTLY: Duration = Duration::from_secs(6);

const SECRET: &str = "sk-e2eCUTSHORT-value-5521";

/// The relay's settings for `upstream`, with the long cap.
fn env(upstream: &Upstream, dir: &tempfile::TempDir) -> Vec<(String, String)> {
    let mut env = relay_env(upstream, dir);
    env.push((
        "STRONGROOM_RELAY_MAX_DURATION_MS".into(),
        MAX_DURATION_MS.into(),
    ));
    env
}

/// `dev/svc/drip` and an agent of `admin`'s tenant with an inject grant on
/// it (expiring at `expires_at`, if given) to the upstream's `/drip`.
async fn agent_on(
    server: &TestServer,
    admin: &TenantAdmin,
    upstream: &Upstream,
    expires_at: Option<std::time::SystemTime>,
) -> (String, Client, pb::Grant) {
    admin
        .client
        .credentials()
        .create_credential(pb::CreateCredentialRequest {
            environment: "dev".into(),
            name: "svc/drip".into(),
            service: "svc".into(),
            value: api_key(SECRET),
            ..Default::default()
        })
        .await
        .expect("create credential");
    let (agent_id, agent) = server.principal(admin, "agent", pb::Role::Agent).await;
    let grant = admin
        .client
        .policy()
        .create_grant(pb::CreateGrantRequest {
            subject: Some(pb::GrantSubject {
                subject: Some(pb::grant_subject::Subject::PrincipalId(agent_id.clone())),
            }),
            selector: "svc/drip".into(),
            environments: vec!["dev".into()],
            capabilities: vec![pb::Capability::Inject as i32],
            destinations: vec![pb::Destination {
                host: format!("api.example.test:{}", upstream.port()),
                path_prefixes: vec!["/drip".into(), "/slow".into(), "/flood".into()],
                ..Default::default()
            }],
            expires_at: expires_at.map(timestamp),
            reason: "e2e".into(),
            ..Default::default()
        })
        .await
        .expect("create grant")
        .into_inner()
        .grant
        .expect("grant");
    (agent_id, agent, grant)
}

/// An open relayed response: its head and first bytes have arrived.
struct Open {
    stream: tonic::Streaming<pb::ForwardResponse>,
    /// Body bytes received so far.
    received: usize,
}

/// Starts a use of `dev/svc/drip` through `client` whose response drips a
/// byte every 100 ms, and reads its head and some of its body.
async fn open(client: &Client, upstream: &Upstream) -> Open {
    let head = pb::RelayRequestHead {
        method: "GET".into(),
        url: format!("https://api.example.test:{}/drip/100", upstream.port()),
        inject: vec![pb::InjectionRef {
            environment: "dev".into(),
            name: "svc/drip".into(),
            field: String::new(),
        }],
        purpose: "cut short test".into(),
        ..Default::default()
    };
    let messages = vec![pb::ForwardRequest {
        part: Some(pb::forward_request::Part::Head(head)),
    }];
    let mut stream = client
        .relay()
        .forward(tokio_stream::iter(messages))
        .await
        .expect("forward")
        .into_inner();
    let first = stream.message().await.expect("head").expect("a head");
    let Some(pb::forward_response::Part::Head(head)) = first.part else {
        panic!("the first message is not a head: {first:?}");
    };
    assert_eq!(head.status, 200, "{head:?}");
    assert!(head.relay_error.is_none(), "{head:?}");
    let mut open = Open {
        stream,
        received: 0,
    };
    while open.received < 3 {
        let m = open
            .stream
            .message()
            .await
            .expect("body")
            .expect("more body");
        if let Some(pb::forward_response::Part::Body(b)) = m.part {
            open.received += b.len();
        }
    }
    open
}

/// Reads `open` to its end, which must come within [`PROMPTLY`] of now
/// and be an error: that error.
async fn ends(mut open: Open, what: &str) -> tonic::Status {
    let started = Instant::now();
    let end = tokio::time::timeout(PROMPTLY, async {
        loop {
            match open.stream.message().await {
                Ok(Some(m)) => {
                    if let Some(pb::forward_response::Part::Body(b)) = m.part {
                        assert!(
                            !String::from_utf8_lossy(&b).contains(SECRET),
                            "a value came back"
                        );
                        open.received += b.len();
                    }
                }
                Ok(None) => panic!("{what}: the response ended without an error"),
                Err(status) => return status,
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}: the response was still open after {PROMPTLY:?}"));
    assert!(started.elapsed() < PROMPTLY);
    assert!(!end.message().contains(SECRET), "{end:?}");
    end
}

/// The outcome records of `admin`'s tenant once one says `cut_short`: it
/// must carry `reason`.
async fn assert_cut_short_recorded(admin: &TenantAdmin, reason: &str) {
    for _ in 0..100 {
        let results = audit_events(
            &admin.client,
            pb::QueryEventsRequest {
                actions: vec![pb::AuditAction::CredentialInjectResult as i32],
                ..Default::default()
            },
        )
        .await;
        if let Some(e) = results.iter().find(|e| {
            e.relay
                .as_ref()
                .is_some_and(|r| r.relay_error == "cut_short")
        }) {
            assert_eq!(e.reason_code, reason, "{e:?}");
            assert_eq!(e.outcome, pb::AuditOutcome::Error as i32, "{e:?}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no cut-short outcome was recorded");
}

async fn start(backend: Backend, upstream: &Upstream, dir: &tempfile::TempDir) -> TestServer {
    let mut options = Options::new(backend);
    options.env = env(upstream, dir);
    options.test_clock = true;
    options.log_level = "info".into();
    TestServer::start_with(options).await
}

/// Revoking the grant ends the response: PERMISSION_DENIED naming the
/// revoked grant.
async fn revoking_the_grant_ends_the_response(backend: Backend) {
    let upstream = Upstream::start(&["*.example.test"]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(backend, &upstream, &dir).await;
    let admin = server.tenant("acme").await;
    let (_, agent, grant) = agent_on(&server, &admin, &upstream, None).await;
    let open = open(&agent, &upstream).await;
    admin
        .client
        .policy()
        .revoke_grant(pb::RevokeGrantRequest {
            grant_id: grant.id.clone(),
            reason: "cut it".into(),
        })
        .await
        .expect("revoke grant");
    let end = ends(open, "grant revoked").await;
    assert_eq!(end.code(), Code::PermissionDenied, "{end:?}");
    assert!(end.message().contains("revoked"), "{end:?}");
    assert_cut_short_recorded(&admin, "GRANT_REVOKED").await;
    server.stop().await;
}

/// Revoking the credential ends the response: FAILED_PRECONDITION saying
/// it is revoked.
async fn revoking_the_credential_ends_the_response(backend: Backend) {
    let upstream = Upstream::start(&["*.example.test"]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(backend, &upstream, &dir).await;
    let admin = server.tenant("acme").await;
    let (_, agent, _) = agent_on(&server, &admin, &upstream, None).await;
    let open = open(&agent, &upstream).await;
    admin
        .client
        .credentials()
        .revoke_credential(pb::RevokeCredentialRequest {
            credential: path("dev", "svc/drip"),
            reason: "cut it".into(),
        })
        .await
        .expect("revoke credential");
    let end = ends(open, "credential revoked").await;
    assert_eq!(end.code(), Code::FailedPrecondition, "{end:?}");
    assert!(end.message().contains("revoked"), "{end:?}");
    assert_cut_short_recorded(&admin, "CREDENTIAL_REVOKED").await;
    server.stop().await;
}

/// An emergency revoke that generates a replacement (the credential stays
/// active, a new version becomes current, the old value is destroyed)
/// ends the response carrying the old value.
async fn an_emergency_revoke_with_a_replacement_ends_the_response(backend: Backend) {
    let upstream = Upstream::start(&["*.example.test"]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(backend, &upstream, &dir).await;
    let admin = server.tenant("acme").await;
    let (_, agent, _) = agent_on(&server, &admin, &upstream, None).await;
    let open = open(&agent, &upstream).await;
    let cut = admin
        .client
        .credentials()
        .emergency_revoke_credential(pb::EmergencyRevokeCredentialRequest {
            credential: path("dev", "svc/drip"),
            reason: "leaked".into(),
            generate: Some(pb::GenerationPolicy {
                length: 40,
                alphabet: pb::GenerationAlphabet::Hex as i32,
                prefix: "sk-new-".into(),
                field: String::new(),
            }),
            ..Default::default()
        })
        .await
        .expect("emergency revoke with a replacement")
        .into_inner();
    let c = cut.credential.expect("credential");
    assert_eq!(c.status, pb::CredentialStatus::Active as i32);
    let end = ends(open, "emergency revoke with a replacement").await;
    assert_eq!(end.code(), Code::FailedPrecondition, "{end:?}");
    assert!(end.message().contains("replaced"), "{end:?}");
    assert_cut_short_recorded(&admin, "CREDENTIAL_REVOKED").await;
    server.stop().await;
}

/// A plain rotation ends the response carrying the old value.
async fn rotating_the_credential_ends_the_response(backend: Backend) {
    let upstream = Upstream::start(&["*.example.test"]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(backend, &upstream, &dir).await;
    let admin = server.tenant("acme").await;
    let (_, agent, _) = agent_on(&server, &admin, &upstream, None).await;
    let open = open(&agent, &upstream).await;
    admin
        .client
        .credentials()
        .rotate_credential(pb::RotateCredentialRequest {
            credential: path("dev", "svc/drip"),
            new_value: Some(pb::rotate_credential_request::NewValue::Value(
                api_key("sk-e2eROTATED-value-7734").expect("a value"),
            )),
            reason: "e2e".into(),
            ..Default::default()
        })
        .await
        .expect("rotate");
    let end = ends(open, "credential rotated").await;
    assert_eq!(end.code(), Code::FailedPrecondition, "{end:?}");
    assert_cut_short_recorded(&admin, "CREDENTIAL_REVOKED").await;
    server.stop().await;
}

/// Suspending the tenant ends the response: PERMISSION_DENIED.
async fn suspending_the_tenant_ends_the_response(backend: Backend) {
    let upstream = Upstream::start(&["*.example.test"]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(backend, &upstream, &dir).await;
    let admin = server.tenant("acme").await;
    let (_, agent, _) = agent_on(&server, &admin, &upstream, None).await;
    let open = open(&agent, &upstream).await;
    server
        .operator()
        .await
        .admin()
        .suspend_tenant(pb::SuspendTenantRequest {
            tenant_id: admin.tenant_id.clone(),
            reason: "unpaid".into(),
        })
        .await
        .expect("suspend the tenant");
    let end = ends(open, "tenant suspended").await;
    assert_eq!(end.code(), Code::PermissionDenied, "{end:?}");
    assert!(end.message().contains("suspended"), "{end:?}");
    server
        .operator()
        .await
        .admin()
        .resume_tenant(pb::ResumeTenantRequest {
            tenant_id: admin.tenant_id.clone(),
        })
        .await
        .expect("resume the tenant");
    assert_cut_short_recorded(&admin, "PRINCIPAL_DISABLED").await;
    server.stop().await;
}

/// Deleting the identity binding that authenticated the agent ends the
/// response: PERMISSION_DENIED.
async fn deleting_the_binding_ends_the_response(backend: Backend) {
    let upstream = Upstream::start(&["*.example.test"]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(backend, &upstream, &dir).await;
    let admin = server.tenant("acme").await;
    let (agent_id, agent, _) = agent_on(&server, &admin, &upstream, None).await;
    let open = open(&agent, &upstream).await;
    let bindings = admin
        .client
        .admin()
        .list_identity_bindings(pb::ListIdentityBindingsRequest {
            principal_id: agent_id,
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
        .expect("delete the binding");
    let end = ends(open, "binding deleted").await;
    assert_eq!(end.code(), Code::PermissionDenied, "{end:?}");
    assert!(end.message().contains("binding"), "{end:?}");
    assert_cut_short_recorded(&admin, "UNKNOWN_IDENTITY").await;
    server.stop().await;
}

/// An agent that stops reading its response does not hold a use that is
/// cut short open: the end is recorded at once, though the agent's stream
/// is full.
#[tokio::test]
async fn an_agent_that_stops_reading_does_not_delay_the_record() {
    let upstream = Upstream::start(&["*.example.test"]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(Backend::Sqlite, &upstream, &dir).await;
    let admin = server.tenant("acme").await;
    let (_, agent, grant) = agent_on(&server, &admin, &upstream, None).await;
    let head = pb::RelayRequestHead {
        method: "GET".into(),
        url: format!("https://api.example.test:{}/flood", upstream.port()),
        inject: vec![pb::InjectionRef {
            environment: "dev".into(),
            name: "svc/drip".into(),
            field: String::new(),
        }],
        purpose: "cut short test".into(),
        ..Default::default()
    };
    let mut stream = agent
        .relay()
        .forward(tokio_stream::iter(vec![pb::ForwardRequest {
            part: Some(pb::forward_request::Part::Head(head)),
        }]))
        .await
        .expect("forward")
        .into_inner();
    let first = stream.message().await.expect("head").expect("a head");
    assert!(
        matches!(first.part, Some(pb::forward_response::Part::Head(_))),
        "{first:?}"
    );
    // The agent stops reading (its stream kept open): every buffer on the
    // way fills.
    tokio::time::sleep(Duration::from_secs(3)).await;
    admin
        .client
        .policy()
        .revoke_grant(pb::RevokeGrantRequest {
            grant_id: grant.id.clone(),
            reason: "cut it".into(),
        })
        .await
        .expect("revoke grant");
    assert_cut_short_recorded(&admin, "GRANT_REVOKED").await;
    drop(stream);
    server.stop().await;
}

/// Narrowing the environments the agent may enter (to ones without the
/// credential's) ends the response.
#[tokio::test]
async fn narrowing_the_environments_ends_the_response() {
    let upstream = Upstream::start(&["*.example.test"]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(Backend::Sqlite, &upstream, &dir).await;
    let admin = server.tenant("acme").await;
    let (agent_id, agent, _) = agent_on(&server, &admin, &upstream, None).await;
    let open = open(&agent, &upstream).await;
    admin
        .client
        .admin()
        .update_principal(pb::UpdatePrincipalRequest {
            principal_id: agent_id,
            update: Some(pb::Principal {
                environments: vec!["staging".into()],
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["environments".into()],
            }),
        })
        .await
        .expect("narrow the environments");
    let end = ends(open, "environments narrowed").await;
    assert_eq!(end.code(), Code::PermissionDenied, "{end:?}");
    assert_cut_short_recorded(&admin, "ENVIRONMENT_NOT_PERMITTED").await;
    server.stop().await;
}

/// Giving the credential an owner the use is not on behalf of ends the
/// response.
#[tokio::test]
async fn a_new_owner_ends_the_response() {
    let upstream = Upstream::start(&["*.example.test"]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(Backend::Sqlite, &upstream, &dir).await;
    let admin = server.tenant("acme").await;
    let (_, agent, _) = agent_on(&server, &admin, &upstream, None).await;
    let open = open(&agent, &upstream).await;
    admin
        .client
        .credentials()
        .update_credential(pb::UpdateCredentialRequest {
            credential: path("dev", "svc/drip"),
            update: Some(pb::Credential {
                owner: "alice@example.com".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["owner".into()],
            }),
        })
        .await
        .expect("set the owner");
    let end = ends(open, "owner set").await;
    assert_eq!(end.code(), Code::PermissionDenied, "{end:?}");
    assert_cut_short_recorded(&admin, "OWNER_MISMATCH").await;
    server.stop().await;
}

/// A use whose grant is revoked while the destination has yet to answer
/// ends too: its response is never passed on.
#[tokio::test]
async fn revoking_the_grant_before_the_answer_ends_the_use() {
    let upstream = Upstream::start(&["*.example.test"]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(Backend::Sqlite, &upstream, &dir).await;
    let admin = server.tenant("acme").await;
    let (_, agent, grant) = agent_on(&server, &admin, &upstream, None).await;
    let head = pb::RelayRequestHead {
        method: "GET".into(),
        url: format!("https://api.example.test:{}/slow/20000", upstream.port()),
        inject: vec![pb::InjectionRef {
            environment: "dev".into(),
            name: "svc/drip".into(),
            field: String::new(),
        }],
        purpose: "cut short test".into(),
        ..Default::default()
    };
    let call = tokio::spawn(async move {
        let mut stream = agent
            .relay()
            .forward(tokio_stream::iter(vec![pb::ForwardRequest {
                part: Some(pb::forward_request::Part::Head(head)),
            }]))
            .await?
            .into_inner();
        stream.message().await
    });
    // The request is on its way once the destination has received it.
    for _ in 0..100 {
        if upstream
            .received()
            .iter()
            .any(|r| r.path_and_query.starts_with("/slow"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    admin
        .client
        .policy()
        .revoke_grant(pb::RevokeGrantRequest {
            grant_id: grant.id.clone(),
            reason: "cut it".into(),
        })
        .await
        .expect("revoke grant");
    let end = tokio::time::timeout(PROMPTLY, call)
        .await
        .expect("the use was still open")
        .expect("join")
        .expect_err("no response is passed on");
    assert_eq!(end.code(), Code::PermissionDenied, "{end:?}");
    assert_cut_short_recorded(&admin, "GRANT_REVOKED").await;
    server.stop().await;
}

/// The grant's expiry passing (the server's clock moved past it, no
/// change notice at all) ends the response.
async fn the_grant_expiring_ends_the_response(backend: Backend) {
    let upstream = Upstream::start(&["*.example.test"]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(backend, &upstream, &dir).await;
    let admin = server.tenant("acme").await;
    let expires = std::time::SystemTime::now() + Duration::from_secs(3600);
    let (_, agent, _) = agent_on(&server, &admin, &upstream, Some(expires)).await;
    let open = open(&agent, &upstream).await;
    server.advance_clock(Duration::from_secs(2 * 3600));
    let end = ends(open, "grant expired").await;
    assert_eq!(end.code(), Code::PermissionDenied, "{end:?}");
    assert!(end.message().contains("expired"), "{end:?}");
    assert_cut_short_recorded(&admin, "GRANT_EXPIRED").await;
    server.stop().await;
}

/// Two servers on one Postgres database; the replica listens for change
/// notices (`deaf`: on another database, so it hears none) and trusts its
/// caches for `ttl_ms`.
async fn replicas(
    upstream: &Upstream,
    dir: &tempfile::TempDir,
    deaf: bool,
    ttl_ms: u64,
) -> (TestServer, TestServer) {
    let primary = TestServer::start_with(Options {
        log_level: "info".into(),
        env: env(upstream, dir),
        ..Options::new(Backend::Postgres)
    })
    .await;
    let mut options = primary.replica_options();
    options.env = env(upstream, dir);
    if deaf {
        let url = primary.database_url.clone().expect("postgres");
        let elsewhere = format!(
            "{}/postgres",
            url.rsplit_once('/').map_or(url.as_str(), |(b, _)| b)
        );
        options
            .env
            .push(("STRONGROOM_DATABASE_LISTEN_URL".into(), elsewhere));
    }
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

/// The principal emergency-revoked through one server: its response
/// streaming through another ends, by the change notice (the replica's
/// caches are trusted for a minute, so nothing else could end it in time).
#[tokio::test]
async fn emergency_revoke_on_another_replica_ends_the_response() {
    let upstream = Upstream::start(&["*.example.test"]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (primary, replica) = replicas(&upstream, &dir, false, 60_000).await;
    let admin = primary.tenant("acme").await;
    let (agent_id, _, _) = agent_on(&primary, &admin, &upstream, None).await;
    let on_replica = replica.client("spiffe://e2e.test/acme/agent").await;
    let open = open(&on_replica, &upstream).await;
    admin
        .client
        .admin()
        .emergency_revoke_principal(pb::EmergencyRevokePrincipalRequest {
            principal_id: agent_id,
            reason: "compromised".into(),
        })
        .await
        .expect("emergency revoke");
    let end = ends(open, "principal emergency-revoked elsewhere").await;
    assert_eq!(end.code(), Code::PermissionDenied, "{end:?}");
    assert!(end.message().contains("disabled"), "{end:?}");
    assert_cut_short_recorded(&admin, "PRINCIPAL_DISABLED").await;
    replica.stop().await;
    primary.stop().await;
}

/// A replica that hears no change notices (a lost notice) still ends the
/// response, by its recheck within the cache time to live.
#[tokio::test]
async fn a_lost_notice_only_delays_the_end() {
    let upstream = Upstream::start(&["*.example.test"]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (primary, replica) = replicas(&upstream, &dir, true, 2000).await;
    let admin = primary.tenant("acme").await;
    let (agent_id, _, _) = agent_on(&primary, &admin, &upstream, None).await;
    let on_replica = replica.client("spiffe://e2e.test/acme/agent").await;
    let open = open(&on_replica, &upstream).await;
    admin
        .client
        .admin()
        .emergency_revoke_principal(pb::EmergencyRevokePrincipalRequest {
            principal_id: agent_id,
            reason: "compromised".into(),
        })
        .await
        .expect("emergency revoke");
    let end = ends(open, "principal emergency-revoked, notice lost").await;
    assert_eq!(end.code(), Code::PermissionDenied, "{end:?}");
    assert_cut_short_recorded(&admin, "PRINCIPAL_DISABLED").await;
    replica.stop().await;
    primary.stop().await;
}

/// A StreamEvents reader on one replica whose role is changed through the
/// other (to one that does not read the chain) stops reading.
#[tokio::test]
async fn a_reader_losing_its_role_elsewhere_stops_streaming() {
    let upstream = Upstream::start(&["*.example.test"]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (primary, replica) = replicas(&upstream, &dir, false, 60_000).await;
    let admin = primary.tenant("acme").await;
    let (viewer_id, _) = primary.principal(&admin, "siem", pb::Role::Viewer).await;
    let on_replica = replica.client("spiffe://e2e.test/acme/siem").await;
    let mut events = on_replica
        .audit()
        .stream_events(pb::StreamEventsRequest {
            from_sequence: 1,
            follow: true,
            ..Default::default()
        })
        .await
        .expect("stream")
        .into_inner();
    events
        .message()
        .await
        .expect("an event")
        .expect("the stream is open");
    admin
        .client
        .admin()
        .update_principal(pb::UpdatePrincipalRequest {
            principal_id: viewer_id,
            update: Some(pb::Principal {
                role: pb::Role::Agent as i32,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["role".into()],
            }),
        })
        .await
        .expect("change the role");
    let end = tokio::time::timeout(PROMPTLY, async {
        loop {
            match events.message().await {
                Ok(Some(_)) => {}
                Ok(None) => panic!("the stream ended without an error"),
                Err(status) => return status,
            }
        }
    })
    .await
    .expect("the reader's stream was still open");
    assert_eq!(end.code(), Code::PermissionDenied, "{end:?}");
    replica.stop().await;
    primary.stop().await;
}

/// Files a request for `dev/svc/drip` as `agent` and watches it: the
/// watch, past its first message (the pending request).
async fn watch_a_filed_request(agent: &Client) -> tonic::Streaming<pb::WatchAccessRequestResponse> {
    let filed = agent
        .policy()
        .file_access_request(pb::FileAccessRequestRequest {
            credential: Some(pb::CredentialPath {
                environment: "dev".into(),
                name: "svc/drip".into(),
            }),
            capability: pb::Capability::Reveal as i32,
            purpose: "nightly report".into(),
            requested_duration: Some(prost_types::Duration {
                seconds: 600,
                nanos: 0,
            }),
            ..Default::default()
        })
        .await
        .expect("file a request")
        .into_inner();
    let mut watch = agent
        .policy()
        .watch_access_request(pb::WatchAccessRequestRequest {
            access_request_id: filed.access_request.expect("a request").id,
        })
        .await
        .expect("watch")
        .into_inner();
    watch.message().await.expect("first").expect("the request");
    watch
}

/// A WatchAccessRequest watcher disabled while it waits stops waiting.
async fn a_disabled_watcher_stops_watching(backend: Backend) {
    let upstream = Upstream::start(&["*.example.test"]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(backend, &upstream, &dir).await;
    let admin = server.tenant("acme").await;
    let (agent_id, agent, _) = agent_on(&server, &admin, &upstream, None).await;
    let mut watch = watch_a_filed_request(&agent).await;
    admin
        .client
        .admin()
        .disable_principal(pb::DisablePrincipalRequest {
            principal_id: agent_id,
            reason: "offboarded".into(),
        })
        .await
        .expect("disable");
    let end = tokio::time::timeout(PROMPTLY, watch.message())
        .await
        .expect("the watch was still open");
    let end = end.expect_err("the watch ends with an error");
    assert_eq!(end.code(), Code::PermissionDenied, "{end:?}");
    assert!(end.message().contains("disabled"), "{end:?}");
    server.stop().await;
}

/// Suspending the tenant stops its open StreamEvents and
/// WatchAccessRequest streams (PERMISSION_DENIED).
#[tokio::test]
async fn suspending_the_tenant_stops_its_streams() {
    let upstream = Upstream::start(&["*.example.test"]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(Backend::Sqlite, &upstream, &dir).await;
    let admin = server.tenant("acme").await;
    let (_, agent, _) = agent_on(&server, &admin, &upstream, None).await;
    let mut watch = watch_a_filed_request(&agent).await;
    let mut events = admin
        .client
        .audit()
        .stream_events(pb::StreamEventsRequest {
            from_sequence: 1,
            follow: true,
            ..Default::default()
        })
        .await
        .expect("stream")
        .into_inner();
    events
        .message()
        .await
        .expect("an event")
        .expect("the stream is open");
    server
        .operator()
        .await
        .admin()
        .suspend_tenant(pb::SuspendTenantRequest {
            tenant_id: admin.tenant_id.clone(),
            reason: "unpaid".into(),
        })
        .await
        .expect("suspend the tenant");
    let end = tokio::time::timeout(PROMPTLY, async {
        loop {
            match events.message().await {
                Ok(Some(_)) => {}
                Ok(None) => panic!("the stream ended without an error"),
                Err(status) => return status,
            }
        }
    })
    .await
    .expect("the reader's stream was still open");
    assert_eq!(end.code(), Code::PermissionDenied, "{end:?}");
    let end = tokio::time::timeout(PROMPTLY, watch.message())
        .await
        .expect("the watch was still open")
        .expect_err("the watch ends with an error");
    assert_eq!(end.code(), Code::PermissionDenied, "{end:?}");
    assert!(end.message().contains("suspended"), "{end:?}");
    server.stop().await;
}
