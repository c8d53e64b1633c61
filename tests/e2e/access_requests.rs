//! Access requests with human approval, end to end: an agent without a
//! grant files a request and blocks on WatchAccessRequest; an admin
//! approves it (narrowing the duration) and the watch releases the agent,
//! whose reveal then succeeds until the grant ends at the approved time
//! (the server's test clock moved, no sleeping); a denied request leaves no
//! grant; a request nobody answers expires (read as expired at once, then
//! marked by the sweeper, audited) and cannot be approved; duplicates of a
//! pending request collapse into it; validation errors name their field; a
//! tenant's own request TTL (a tenant setting, bounded by the server's
//! maximum) expires its requests only.

use std::time::Duration;

use strongroom_client::Client;
use strongroom_e2e::{
    Backend, Options, TenantAdmin, TestServer, assert_free_of, audit_events, expect_code,
    expect_invalid, path, verified_event_count,
};
use strongroom_proto::v1 as pb;
use tonic::Code;

on_both_backends!(
    approval_releases_the_waiting_agent,
    denial_expiry_and_validation,
    a_tenants_own_ttl_expires_only_its_requests
);

const SECRETS: [&str; 2] = ["sk-request-openai-5e1c", "sk-request-stripe-0a9d"];

/// A server with a clock the test moves, requests that expire after an
/// hour, and a sweeper every 100 ms.
async fn server(backend: Backend) -> TestServer {
    TestServer::start_with(Options {
        test_clock: true,
        env: vec![
            ("STRONGROOM_ACCESS_REQUEST_TTL_SECS".into(), "3600".into()),
            ("STRONGROOM_LEASE_SWEEP_INTERVAL_MS".into(), "100".into()),
        ],
        ..Options::new(backend)
    })
    .await
}

async fn reveal(client: &Client, name: &str) -> Result<(), tonic::Status> {
    client
        .credentials()
        .reveal_credential(pb::RevealCredentialRequest {
            credential: path("dev", name),
            purpose: "access request e2e".into(),
            ..Default::default()
        })
        .await
        .map(|_| ())
}

fn file_for(name: &str, capability: pb::Capability) -> pb::FileAccessRequestRequest {
    pb::FileAccessRequestRequest {
        credential: Some(pb::CredentialPath {
            environment: "dev".into(),
            name: name.into(),
        }),
        capability: capability as i32,
        purpose: "nightly report".into(),
        on_behalf_of: "alice@example.com".into(),
        requested_duration: Some(prost_types::Duration {
            seconds: 600,
            nanos: 0,
        }),
        ..Default::default()
    }
}

async fn file(
    client: &Client,
    request: pb::FileAccessRequestRequest,
) -> Result<pb::FileAccessRequestResponse, tonic::Status> {
    client
        .policy()
        .file_access_request(request)
        .await
        .map(tonic::Response::into_inner)
}

async fn get(client: &Client, id: &str) -> Result<pb::AccessRequest, tonic::Status> {
    client
        .policy()
        .get_access_request(pb::GetAccessRequestRequest {
            access_request_id: id.into(),
        })
        .await
        .map(|r| r.into_inner().access_request.expect("a request"))
}

async fn approve(
    admin: &TenantAdmin,
    request: pb::ApproveAccessRequestRequest,
) -> Result<pb::ApproveAccessRequestResponse, tonic::Status> {
    admin
        .client
        .policy()
        .approve_access_request(request)
        .await
        .map(tonic::Response::into_inner)
}

async fn deny(admin: &TenantAdmin, id: &str) -> Result<pb::AccessRequest, tonic::Status> {
    admin
        .client
        .policy()
        .deny_access_request(pb::DenyAccessRequestRequest {
            access_request_id: id.into(),
            reason: "not for production data".into(),
        })
        .await
        .map(|r| r.into_inner().access_request.expect("a request"))
}

async fn list(
    client: &Client,
    status: pb::AccessRequestStatus,
    requester_id: &str,
) -> Result<Vec<pb::AccessRequest>, tonic::Status> {
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .policy()
            .list_access_requests(pb::ListAccessRequestsRequest {
                status: status as i32,
                requester_id: requester_id.into(),
                page_size: 1,
                page_token: token,
            })
            .await?
            .into_inner();
        all.extend(page.access_requests);
        if page.next_page_token.is_empty() {
            return Ok(all);
        }
        token = page.next_page_token;
    }
}

fn status(r: &pb::AccessRequest) -> pb::AccessRequestStatus {
    pb::AccessRequestStatus::try_from(r.status).expect("a status")
}

/// How many allowed events of `action` there are.
fn action_count(events: &[pb::AuditEvent], action: pb::AuditAction) -> usize {
    events
        .iter()
        .filter(|e| e.action == action as i32 && e.outcome == pb::AuditOutcome::Allowed as i32)
        .count()
}

async fn agent_grants(admin: &TenantAdmin, agent_id: &str) -> Vec<pb::Grant> {
    admin
        .client
        .policy()
        .list_grants(pb::ListGrantsRequest {
            principal_id: agent_id.into(),
            include_expired: true,
            ..Default::default()
        })
        .await
        .expect("list grants")
        .into_inner()
        .grants
}

async fn approval_releases_the_waiting_agent(backend: Backend) {
    let server = server(backend).await;
    let acme = server.tenant("acme").await;
    let (agent_id, agent) = server.principal(&acme, "agent", pb::Role::Agent).await;
    let (_, other) = server.principal(&acme, "other", pb::Role::Agent).await;
    acme.create_api_key("dev", "llm/openai", SECRETS[0]).await;

    // No grant: the reveal is refused (as if the credential did not exist:
    // the agent may not see it).
    expect_code(reveal(&agent, "llm/openai").await, Code::NotFound, "before");

    let filed = file(&agent, file_for("llm/openai", pb::Capability::Reveal))
        .await
        .expect("file a request");
    assert!(!filed.existing);
    let request = filed.access_request.expect("a request");
    assert_eq!(status(&request), pb::AccessRequestStatus::Pending);
    assert_eq!(request.requester_id, agent_id);
    assert_eq!(request.selector, "llm/openai");
    assert_eq!(request.environments, vec!["dev".to_owned()]);
    assert_eq!(request.on_behalf_of, "alice@example.com");
    assert_eq!(
        request.expires_at.as_ref().expect("expiry").seconds
            - request.created_at.as_ref().expect("created").seconds,
        3600
    );

    // Filing the same again returns the pending one.
    let again = file(&agent, file_for("llm/openai", pb::Capability::Reveal))
        .await
        .expect("file again");
    assert!(
        again.existing,
        "a duplicate collapses into the pending request"
    );
    assert_eq!(again.access_request.expect("a request").id, request.id);

    // The agent blocks on the watch: first the request as it is.
    let mut watch = agent
        .policy()
        .watch_access_request(pb::WatchAccessRequestRequest {
            access_request_id: request.id.clone(),
        })
        .await
        .expect("watch")
        .into_inner();
    let first = watch
        .message()
        .await
        .expect("first message")
        .expect("a message")
        .access_request
        .expect("request");
    assert_eq!(status(&first), pb::AccessRequestStatus::Pending);
    let waiter = tokio::spawn(async move {
        let decided = watch
            .message()
            .await
            .expect("the decision")
            .expect("a message")
            .access_request
            .expect("request");
        let end = watch.message().await.expect("the end of the stream");
        (decided, end.is_none())
    });

    // Requesters see only their own; admins see all.
    expect_code(
        get(&other, &request.id).await,
        Code::NotFound,
        "another's request",
    );
    assert!(
        list(&other, pb::AccessRequestStatus::Unspecified, "")
            .await
            .expect("other lists its own")
            .is_empty()
    );
    expect_code(
        list(&other, pb::AccessRequestStatus::Unspecified, &agent_id).await,
        Code::PermissionDenied,
        "listing another's requests",
    );
    let pending = list(&acme.client, pb::AccessRequestStatus::Pending, "")
        .await
        .expect("admin lists");
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].id, request.id);
    // Still waiting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "the watch waits for a decision");

    // Approval narrows, never widens.
    let approval = |seconds: i64, environments: Vec<String>| pb::ApproveAccessRequestRequest {
        access_request_id: request.id.clone(),
        duration: Some(prost_types::Duration { seconds, nanos: 0 }),
        environments,
        reason: "ok for the report".into(),
        ..Default::default()
    };
    expect_invalid(
        approve(&acme, approval(601, vec![])).await,
        "duration",
        "a longer duration",
    );
    expect_invalid(
        approve(&acme, approval(300, vec!["production".into()])).await,
        "environments",
        "another environment",
    );
    expect_code(
        agent
            .policy()
            .approve_access_request(approval(300, vec![]))
            .await,
        Code::PermissionDenied,
        "an agent approving",
    );
    let approved = approve(&acme, approval(300, vec!["dev".into()]))
        .await
        .expect("approve");
    let grant = approved.grant.expect("a grant");
    let decided = approved.access_request.expect("the request");
    assert_eq!(status(&decided), pb::AccessRequestStatus::Approved);
    assert_eq!(decided.grant_id, grant.id);
    assert_eq!(decided.decided_by, acme.principal_id);
    assert_eq!(grant.access_request_id, request.id);
    assert_eq!(grant.selector, "llm/openai");
    assert_eq!(grant.capabilities, vec![pb::Capability::Reveal as i32]);
    assert_eq!(
        grant
            .expires_at
            .as_ref()
            .expect("a time-boxed grant")
            .seconds
            - decided.decided_at.as_ref().expect("decided at").seconds,
        300,
        "the grant ends at the approved time"
    );

    // The waiting agent is released with the decision, and the stream ends.
    let (released, ended) = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the watch returns once decided")
        .expect("the waiter");
    assert_eq!(status(&released), pb::AccessRequestStatus::Approved);
    assert_eq!(released.grant_id, grant.id);
    assert!(ended, "the watch ends after the decision");

    // Later uses are automatic until the grant ends.
    reveal(&agent, "llm/openai")
        .await
        .expect("reveal after approval");
    reveal(&agent, "llm/openai").await.expect("a second use");
    expect_code(
        approve(&acme, approval(300, vec![])).await,
        Code::FailedPrecondition,
        "approving twice",
    );
    let listed = agent_grants(&acme, &agent_id).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].access_request_id, request.id);

    server.advance_clock(Duration::from_secs(301));
    let after = reveal(&agent, "llm/openai").await;
    assert!(
        matches!(
            after.as_ref().map_err(tonic::Status::code),
            Err(Code::NotFound | Code::PermissionDenied)
        ),
        "after the approved time the reveal is refused: {after:?}"
    );

    // Every step audited, and nothing of the value in the events.
    let events = audit_events(&acme.client, pb::QueryEventsRequest::default()).await;
    assert_eq!(action_count(&events, pb::AuditAction::AccessRequestFile), 1);
    assert_eq!(
        action_count(&events, pb::AuditAction::AccessRequestApprove),
        1
    );
    for e in &events {
        assert_free_of(e, &SECRETS, "an audit event");
    }
    assert_free_of(&released, &SECRETS, "the request");
    verified_event_count(&acme.client).await;
}

async fn denial_expiry_and_validation(backend: Backend) {
    let server = server(backend).await;
    let acme = server.tenant("acme").await;
    let (agent_id, agent) = server.principal(&acme, "agent", pb::Role::Agent).await;
    let (_, viewer) = server.principal(&acme, "viewer", pb::Role::Viewer).await;
    acme.create_api_key("dev", "llm/openai", SECRETS[0]).await;
    acme.create_api_key("dev", "payments/stripe", SECRETS[1])
        .await;

    // An inject request by selector, denied: no grant is left.
    let by_selector = pb::FileAccessRequestRequest {
        selector: "llm/*".into(),
        environments: vec!["dev".into()],
        capability: pb::Capability::Inject as i32,
        destinations: vec![pb::Destination {
            host: "api.openai.com".into(),
            methods: vec!["POST".into()],
            path_prefixes: vec!["/v1".into()],
            ..Default::default()
        }],
        purpose: "summarise tickets".into(),
        ..Default::default()
    };
    let denied = file(&agent, by_selector.clone())
        .await
        .expect("file by selector")
        .access_request
        .expect("a request");
    assert_eq!(denied.selector, "llm/*");
    assert!(denied.credential.is_none());
    let after = deny(&acme, &denied.id).await.expect("deny");
    assert_eq!(status(&after), pb::AccessRequestStatus::Denied);
    assert_eq!(after.decision_reason, "not for production data");
    assert!(after.grant_id.is_empty());
    assert!(
        agent_grants(&acme, &agent_id).await.is_empty(),
        "a denial leaves no grant"
    );
    expect_code(
        deny(&acme, &denied.id).await,
        Code::FailedPrecondition,
        "deny twice",
    );
    expect_code(
        approve(
            &acme,
            pb::ApproveAccessRequestRequest {
                access_request_id: denied.id.clone(),
                ..Default::default()
            },
        )
        .await,
        Code::FailedPrecondition,
        "approve a denied request",
    );
    // A watch of a decided request answers at once and ends.
    let mut watch = agent
        .policy()
        .watch_access_request(pb::WatchAccessRequestRequest {
            access_request_id: denied.id.clone(),
        })
        .await
        .expect("watch")
        .into_inner();
    let seen = watch.message().await.expect("a message").expect("one");
    assert_eq!(
        status(&seen.access_request.expect("request")),
        pb::AccessRequestStatus::Denied
    );
    assert!(watch.message().await.expect("the end").is_none());
    // A denied request does not collapse a new one.
    let refiled = file(&agent, by_selector.clone()).await.expect("file again");
    assert!(!refiled.existing);

    // Narrowing destinations: only within the requested ones.
    let refiled = refiled.access_request.expect("a request");
    expect_invalid(
        approve(
            &acme,
            pb::ApproveAccessRequestRequest {
                access_request_id: refiled.id.clone(),
                destinations: vec![pb::Destination {
                    host: "evil.example.com".into(),
                    ..Default::default()
                }],
                ..Default::default()
            },
        )
        .await,
        "destinations",
        "a destination not requested",
    );
    expect_invalid(
        approve(
            &acme,
            pb::ApproveAccessRequestRequest {
                access_request_id: refiled.id.clone(),
                destinations: vec![pb::Destination {
                    host: "api.openai.com".into(),
                    ..Default::default()
                }],
                ..Default::default()
            },
        )
        .await,
        "destinations",
        "any path where /v1 was requested",
    );

    // A request nobody answers expires: read as expired at once, then
    // marked by the sweeper and audited; it cannot be approved.
    let stale = file(&agent, file_for("payments/stripe", pb::Capability::Reveal))
        .await
        .expect("file")
        .access_request
        .expect("a request");
    server.advance_clock(Duration::from_secs(3601));
    assert_eq!(
        status(&get(&agent, &stale.id).await.expect("get")),
        pb::AccessRequestStatus::Expired
    );
    expect_code(
        approve(
            &acme,
            pb::ApproveAccessRequestRequest {
                access_request_id: stale.id.clone(),
                ..Default::default()
            },
        )
        .await,
        Code::FailedPrecondition,
        "approve an expired request",
    );
    assert!(agent_grants(&acme, &agent_id).await.is_empty());
    let expired = list(&acme.client, pb::AccessRequestStatus::Expired, &agent_id)
        .await
        .expect("list expired");
    assert!(expired.iter().any(|r| r.id == stale.id));
    let mut swept = 0;
    for _ in 0..100 {
        let events = audit_events(&acme.client, pb::QueryEventsRequest::default()).await;
        swept = action_count(&events, pb::AuditAction::AccessRequestExpire);
        if swept >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(swept, 2, "the sweeper marks both pending requests expired");
    // After expiry the same request is new again.
    let fresh = file(&agent, file_for("payments/stripe", pb::Capability::Reveal))
        .await
        .expect("file after expiry");
    assert!(!fresh.existing);

    // Validation names the field.
    let mut no_purpose = file_for("llm/openai", pb::Capability::Reveal);
    no_purpose.purpose = String::new();
    expect_invalid(file(&agent, no_purpose).await, "purpose", "no purpose");
    let mut no_destination = by_selector.clone();
    no_destination.destinations.clear();
    expect_invalid(file(&agent, no_destination).await, "destinations", "inject");
    let mut both = by_selector.clone();
    both.credential = file_for("llm/openai", pb::Capability::Inject).credential;
    expect_invalid(file(&agent, both).await, "selector", "both forms");
    expect_invalid(
        file(&agent, file_for("llm/openai", pb::Capability::Write)).await,
        "capability",
        "write",
    );
    let mut long = file_for("llm/openai", pb::Capability::Reveal);
    long.requested_duration = Some(prost_types::Duration {
        seconds: 31 * 24 * 3600,
        nanos: 0,
    });
    expect_invalid(file(&agent, long).await, "requested_duration", "too long");
    let mut nowhere = by_selector.clone();
    nowhere.environments = vec!["qa".into()];
    expect_code(
        file(&agent, nowhere).await,
        Code::InvalidArgument,
        "no such environment",
    );
    expect_invalid(
        get(&agent, "not-an-id").await,
        "access_request_id",
        "a malformed id",
    );
    expect_code(
        file(&viewer, file_for("llm/openai", pb::Capability::Reveal)).await,
        Code::PermissionDenied,
        "a viewer",
    );
    // An admin cannot approve its own request.
    let own = file(&acme.client, file_for("llm/openai", pb::Capability::Reveal))
        .await
        .expect("an admin files")
        .access_request
        .expect("a request");
    expect_code(
        approve(
            &acme,
            pb::ApproveAccessRequestRequest {
                access_request_id: own.id,
                ..Default::default()
            },
        )
        .await,
        Code::PermissionDenied,
        "approving one's own request",
    );
    verified_event_count(&acme.client).await;
}

/// An agent waiting on one server is released by an approval made through
/// another (Postgres, two servers on one database), and its reveal through
/// the first server succeeds at once.
#[tokio::test]
async fn a_watch_on_one_server_sees_an_approval_on_another() {
    let primary = TestServer::start(Backend::Postgres).await;
    let acme = primary.tenant("acme").await;
    let (agent_id, _) = primary.principal(&acme, "agent", pb::Role::Agent).await;
    acme.create_api_key("dev", "llm/openai", SECRETS[0]).await;
    let replica = TestServer::start_with(primary.replica_options()).await;
    let agent = replica.client("spiffe://e2e.test/acme/agent").await;

    let request = file(&agent, file_for("llm/openai", pb::Capability::Reveal))
        .await
        .expect("file through the replica")
        .access_request
        .expect("a request");
    assert_eq!(request.requester_id, agent_id);
    let mut watch = agent
        .policy()
        .watch_access_request(pb::WatchAccessRequestRequest {
            access_request_id: request.id.clone(),
        })
        .await
        .expect("watch")
        .into_inner();
    watch.message().await.expect("first").expect("a message");

    approve(
        &acme,
        pb::ApproveAccessRequestRequest {
            access_request_id: request.id.clone(),
            ..Default::default()
        },
    )
    .await
    .expect("approve through the primary");
    let decided = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .expect("released within the polling bound")
        .expect("the decision")
        .expect("a message")
        .access_request
        .expect("request");
    assert_eq!(status(&decided), pb::AccessRequestStatus::Approved);
    reveal(&agent, "llm/openai")
        .await
        .expect("the reveal through the replica sees the new grant");
}

/// Sets (or, with `None`, resets) the tenant's access request TTL.
async fn set_request_ttl(
    admin: &TenantAdmin,
    secs: Option<i64>,
) -> Result<pb::TenantSettings, tonic::Status> {
    admin
        .client
        .admin()
        .update_tenant_settings(pb::UpdateTenantSettingsRequest {
            settings: Some(pb::TenantSettings {
                access_request_ttl: secs.map(|seconds| prost_types::Duration { seconds, nanos: 0 }),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["access_request_ttl".into()],
            }),
        })
        .await
        .map(|r| r.into_inner().settings.expect("settings"))
}

fn ttl_secs(s: &pb::TenantSettings) -> i64 {
    s.access_request_ttl.as_ref().expect("a TTL").seconds
}

/// The access request TTL is a tenant setting: read as the server's
/// default until set, bounded by the server's maximum, audited like any
/// settings change, and reset by zero. A tenant with a one-minute TTL sees
/// its request expire when the test clock moves past it, while another
/// tenant's request, under the server's hour, stays pending.
async fn a_tenants_own_ttl_expires_only_its_requests(backend: Backend) {
    let server = TestServer::start_with(Options {
        test_clock: true,
        env: vec![
            ("STRONGROOM_ACCESS_REQUEST_TTL_SECS".into(), "3600".into()),
            (
                "STRONGROOM_MAX_ACCESS_REQUEST_TTL_SECS".into(),
                "7200".into(),
            ),
            ("STRONGROOM_LEASE_SWEEP_INTERVAL_MS".into(), "100".into()),
        ],
        ..Options::new(backend)
    })
    .await;
    let acme = server.tenant("acme").await;
    let globex = server.tenant("globex").await;
    let settings = acme
        .client
        .admin()
        .get_tenant_settings(pb::GetTenantSettingsRequest {})
        .await
        .expect("get settings")
        .into_inner()
        .settings
        .expect("settings");
    assert_eq!(ttl_secs(&settings), 3600, "the server's default");

    expect_invalid(
        set_request_ttl(&acme, Some(7201)).await,
        "settings.access_request_ttl",
        "a TTL beyond the server's maximum",
    );
    expect_invalid(
        set_request_ttl(&acme, Some(59)).await,
        "settings.access_request_ttl",
        "a TTL under a minute",
    );
    let set = set_request_ttl(&acme, Some(7200))
        .await
        .expect("the maximum");
    assert_eq!(ttl_secs(&set), 7200);
    let reset = set_request_ttl(&acme, Some(0)).await.expect("reset");
    assert_eq!(
        ttl_secs(&reset),
        3600,
        "zero returns to the server's default"
    );
    let set = set_request_ttl(&acme, Some(60)).await.expect("one minute");
    assert_eq!(ttl_secs(&set), 60);
    let events = audit_events(
        &acme.client,
        pb::QueryEventsRequest {
            actions: vec![pb::AuditAction::TenantSettingsUpdate as i32],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        action_count(&events, pb::AuditAction::TenantSettingsUpdate),
        3,
        "each change is audited"
    );

    acme.create_api_key("dev", "llm/openai", SECRETS[0]).await;
    globex.create_api_key("dev", "llm/openai", SECRETS[1]).await;
    let (_, acme_agent) = server.principal(&acme, "agent", pb::Role::Agent).await;
    let (_, globex_agent) = server.principal(&globex, "agent", pb::Role::Agent).await;
    let short = file(&acme_agent, file_for("llm/openai", pb::Capability::Reveal))
        .await
        .expect("file in acme")
        .access_request
        .expect("a request");
    let long = file(
        &globex_agent,
        file_for("llm/openai", pb::Capability::Reveal),
    )
    .await
    .expect("file in globex")
    .access_request
    .expect("a request");
    let lifetime = |r: &pb::AccessRequest| {
        r.expires_at.as_ref().expect("expires").seconds
            - r.created_at.as_ref().expect("created").seconds
    };
    assert_eq!(lifetime(&short), 60, "the tenant's own TTL");
    assert_eq!(lifetime(&long), 3600, "the server's default");

    server.advance_clock(Duration::from_secs(61));
    assert_eq!(
        status(&get(&acme_agent, &short.id).await.expect("get")),
        pb::AccessRequestStatus::Expired
    );
    assert_eq!(
        status(&get(&globex_agent, &long.id).await.expect("get")),
        pb::AccessRequestStatus::Pending,
        "another tenant's request waits for its own TTL"
    );
    let mut swept = 0;
    for _ in 0..100 {
        let events = audit_events(&acme.client, pb::QueryEventsRequest::default()).await;
        swept = action_count(&events, pb::AuditAction::AccessRequestExpire);
        if swept >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(swept, 1, "the sweeper marks acme's request expired");
    let events = audit_events(&globex.client, pb::QueryEventsRequest::default()).await;
    assert_eq!(
        action_count(&events, pb::AuditAction::AccessRequestExpire),
        0,
        "globex's request is not expired"
    );
    expect_code(
        approve(
            &acme,
            pb::ApproveAccessRequestRequest {
                access_request_id: short.id.clone(),
                ..Default::default()
            },
        )
        .await,
        Code::FailedPrecondition,
        "approve the expired request",
    );
    approve(
        &globex,
        pb::ApproveAccessRequestRequest {
            access_request_id: long.id.clone(),
            ..Default::default()
        },
    )
    .await
    .expect("globex's request can still be approved");
}
