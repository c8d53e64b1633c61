//! Rotation policies, reminders and expiry, on the server's test clock: the
//! rotation monitor records each reminder (due soon, overdue, expired) once
//! per window, with one notifier delivery and one audit event each, across
//! restarts and with two replicas; expired credentials are refused with
//! FAILED_PRECONDITION by reveal, resolve and the relay; the rotation
//! status overview counts what the caller may see.

use std::time::{Duration, SystemTime};

use strongroom_client::Client;
use strongroom_e2e::upstream::Upstream;
use strongroom_e2e::{
    Backend, Options, TenantAdmin, TestServer, api_key, audit_events, expect_code, expect_invalid,
    grant, path, timestamp,
};
use strongroom_proto::v1 as pb;
use tonic::Code;

use crate::emergency_revoke::{inject_grant, relay_env, relay_use};

on_both_backends!(
    reminders_are_sent_once_per_window_across_restarts,
    each_reminder_reaches_the_receiver_once,
    expired_credentials_are_refused_where_values_are_used,
    overview_validates_pages_and_confines
);

const DAY: Duration = Duration::from_secs(86_400);

/// Values stored in this file's credentials: none may appear in a
/// delivery, an event or a log line.
const VALUES: [&str; 3] = [
    "sk-rotation-db-5f1e2d",
    "sk-rotation-llm-9a8b7c",
    "sk-rotation-pay-3c4d5e",
];

fn options(backend: Backend) -> Options {
    Options {
        test_clock: true,
        log_level: "info".into(),
        env: vec![(
            "STRONGROOM_ROTATION_MONITOR_INTERVAL_MS".into(),
            "50".into(),
        )],
        ..Options::new(backend)
    }
}

fn policy(period_days: u64, reminder_days: u64) -> Option<pb::RotationPolicy> {
    let secs = |d: u64| prost_types::Duration {
        seconds: i64::try_from(d * 86_400).expect("seconds"),
        nanos: 0,
    };
    Some(pb::RotationPolicy {
        period: Some(secs(period_days)),
        reminder: Some(secs(reminder_days)),
    })
}

async fn create(
    admin: &TenantAdmin,
    environment: &str,
    name: &str,
    service: &str,
    value: &str,
    rotation: Option<pb::RotationPolicy>,
    expires_at: Option<SystemTime>,
) -> pb::Credential {
    admin
        .client
        .credentials()
        .create_credential(pb::CreateCredentialRequest {
            environment: environment.into(),
            name: name.into(),
            service: service.into(),
            value: api_key(value),
            rotation_policy: rotation,
            expires_at: expires_at.map(timestamp),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("create {environment}/{name}: {e:?}"))
        .into_inner()
        .credential
        .expect("credential")
}

async fn set_notifier(admin: &TenantAdmin) {
    admin
        .client
        .admin()
        .update_tenant_settings(pb::UpdateTenantSettingsRequest {
            settings: Some(pb::TenantSettings {
                notifier: Some(pb::Notifier {
                    url: "https://hooks.example.com/rotation".into(),
                    signing_secret: b"whsec-rotation-0123456789".to_vec(),
                    signing_secret_set: false,
                }),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["notifier".into()],
            }),
        })
        .await
        .expect("set notifier");
}

async fn deliveries(client: &Client) -> Vec<pb::NotificationDelivery> {
    client
        .policy()
        .list_notification_deliveries(pb::ListNotificationDeliveriesRequest {
            page_size: 500,
            page_token: String::new(),
        })
        .await
        .expect("list deliveries")
        .into_inner()
        .deliveries
}

/// The deliveries of `event` about credential `name`.
async fn notices(client: &Client, event: &str, name: &str) -> Vec<serde_json::Value> {
    deliveries(client)
        .await
        .into_iter()
        .filter(|d| d.event == event)
        .map(|d| serde_json::from_str::<serde_json::Value>(&d.payload_json).expect("json"))
        .filter(|p| p["credential_name"] == name)
        .collect()
}

/// Waits until `client`'s tenant has a delivery of `event` about `name`.
async fn wait_for_notice(client: &Client, event: &str, name: &str) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(n) = notices(client, event, name).await.into_iter().next() {
            return n;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {event} delivery for {name} within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The allowed events of `action`.
async fn events(client: &Client, action: pb::AuditAction) -> Vec<pb::AuditEvent> {
    audit_events(
        client,
        pb::QueryEventsRequest {
            actions: vec![action as i32],
            ..Default::default()
        },
    )
    .await
}

async fn overview(
    client: &Client,
    req: pb::RotationStatusOverviewRequest,
) -> Result<pb::RotationStatusOverviewResponse, tonic::Status> {
    client
        .admin()
        .rotation_status_overview(req)
        .await
        .map(tonic::Response::into_inner)
}

/// Lets the monitor make several more passes (it runs every 50 ms).
async fn a_few_passes() {
    tokio::time::sleep(Duration::from_millis(600)).await;
}

fn counts(o: &pb::RotationStatusOverviewResponse) -> [u64; 5] {
    [o.healthy, o.due_soon, o.overdue, o.expired, o.revoked]
}

/// One credential crosses into its reminder window, then past its due
/// date, while another expires: exactly one delivery and one reminder event
/// each, also after the server restarts in the middle of a window; the
/// notices carry what an owner needs and no value; the overview counts
/// match.
async fn reminders_are_sent_once_per_window_across_restarts(backend: Backend) {
    let mut server = TestServer::start_with(options(backend)).await;
    let admin = server.tenant("acme").await;
    set_notifier(&admin).await;
    let start = SystemTime::now();
    create(
        &admin,
        "production",
        "db/main",
        "postgres",
        VALUES[0],
        policy(30, 7),
        None,
    )
    .await;
    create(&admin, "dev", "llm/openai", "openai", VALUES[1], None, None).await;
    create(
        &admin,
        "production",
        "pay/stripe",
        "stripe",
        VALUES[2],
        None,
        Some(start + 25 * DAY),
    )
    .await;
    a_few_passes().await;
    assert!(
        deliveries(&admin.client).await.is_empty(),
        "nothing is due yet"
    );
    let o = overview(&admin.client, Default::default())
        .await
        .expect("overview");
    assert_eq!(counts(&o), [3, 0, 0, 0, 0]);
    assert!(o.due_credentials.is_empty());

    // Day 24: db/main (30 days, reminded 7 before) is due soon.
    server.advance_clock(24 * DAY);
    let due_soon = wait_for_notice(&admin.client, "credential.rotation_due_soon", "db/main").await;
    assert_eq!(due_soon["environment"], "production");
    assert_eq!(due_soon["service"], "postgres");
    assert_eq!(due_soon["status"], "due_soon");
    assert_eq!(due_soon["period_days"], 30);
    let rotated = due_soon["last_rotated_at"].as_i64().expect("last rotated");
    assert_eq!(
        due_soon["next_due_at"].as_i64().expect("next due"),
        rotated + 30 * 86_400
    );
    a_few_passes().await;
    let o = overview(&admin.client, Default::default())
        .await
        .expect("overview");
    assert_eq!(counts(&o), [2, 1, 0, 0, 0]);
    assert_eq!(o.due_credentials.len(), 1);
    let listed = &o.due_credentials[0];
    assert_eq!(listed.name, "db/main");
    assert_eq!(listed.rotation_status(), pb::RotationStatus::DueSoon);
    assert_eq!(
        listed.rotation_due_at.as_ref().expect("due").seconds,
        rotated + 30 * 86_400
    );
    assert!(listed.last_rotated_at.is_some());
    let groups: Vec<_> = o
        .groups
        .iter()
        .map(|g| {
            (
                g.environment.as_str(),
                g.service.as_str(),
                [g.healthy, g.due_soon, g.overdue, g.expired, g.revoked],
            )
        })
        .collect();
    assert_eq!(
        groups,
        [
            ("dev", "openai", [1, 0, 0, 0, 0]),
            ("production", "postgres", [0, 1, 0, 0, 0]),
            ("production", "stripe", [1, 0, 0, 0, 0]),
        ]
    );

    // A restart inside the window sends nothing again; the restarted
    // monitor runs (it expires pay/stripe on day 25.5).
    server.restart().await;
    let admin = TenantAdmin {
        client: server.client(&admin.identity).await,
        ..admin
    };
    server.advance_clock(DAY + DAY / 2);
    let expired = wait_for_notice(&admin.client, "credential.expired", "pay/stripe").await;
    assert_eq!(expired["status"], "expired");
    assert!(expired["expires_at"].is_i64());
    a_few_passes().await;
    assert_eq!(
        notices(&admin.client, "credential.rotation_due_soon", "db/main")
            .await
            .len(),
        1,
        "the due-soon reminder is not sent again after a restart"
    );
    assert_eq!(
        notices(&admin.client, "credential.expired", "pay/stripe")
            .await
            .len(),
        1
    );

    // Day 31: db/main is overdue; one reminder, once.
    server.advance_clock(6 * DAY);
    let overdue = wait_for_notice(&admin.client, "credential.rotation_overdue", "db/main").await;
    assert_eq!(overdue["status"], "overdue");
    server.restart().await;
    let admin = TenantAdmin {
        client: server.client(&admin.identity).await,
        ..admin
    };
    a_few_passes().await;
    for (event, name) in [
        ("credential.rotation_due_soon", "db/main"),
        ("credential.rotation_overdue", "db/main"),
        ("credential.expired", "pay/stripe"),
    ] {
        assert_eq!(
            notices(&admin.client, event, name).await.len(),
            1,
            "{event} of {name}"
        );
    }
    assert_eq!(deliveries(&admin.client).await.len(), 3);
    let reminders = events(&admin.client, pb::AuditAction::CredentialRotationReminder).await;
    assert_eq!(reminders.len(), 3, "{reminders:?}");
    let expire = events(&admin.client, pb::AuditAction::CredentialExpire).await;
    assert_eq!(expire.len(), 1, "{expire:?}");
    assert_eq!(expire[0].credential_name, "pay/stripe");

    let o = overview(&admin.client, Default::default())
        .await
        .expect("overview");
    assert_eq!(counts(&o), [1, 0, 1, 1, 0]);
    let stripe = admin
        .client
        .credentials()
        .get_credential(pb::GetCredentialRequest {
            credential: path("production", "pay/stripe"),
        })
        .await
        .expect("get")
        .into_inner()
        .credential
        .expect("credential");
    assert_eq!(stripe.status(), pb::CredentialStatus::Expired);

    // A rotation opens a new window: healthy again, nothing sent.
    admin
        .client
        .credentials()
        .rotate_credential(pb::RotateCredentialRequest {
            credential: path("production", "db/main"),
            new_value: Some(pb::rotate_credential_request::NewValue::Value(
                api_key("sk-rotation-db-rotated-77aa").expect("value"),
            )),
            ..Default::default()
        })
        .await
        .expect("rotate");
    a_few_passes().await;
    assert_eq!(deliveries(&admin.client).await.len(), 3);
    let o = overview(&admin.client, Default::default())
        .await
        .expect("overview");
    assert_eq!(counts(&o), [2, 0, 0, 1, 0]);

    let logs = server.logs.clone();
    let sent = deliveries(&admin.client).await;
    let chain = admin
        .client
        .audit()
        .verify_chain(pb::VerifyChainRequest::default())
        .await
        .expect("verify")
        .into_inner();
    assert!(chain.ok, "{chain:?}");
    let status = server.stop().await;
    assert!(status.success(), "strongroomd exited with {status}");
    assert_eq!(
        logs.matching("rotation reminder").len(),
        3,
        "one log line per reminder"
    );
    let everything = format!("{reminders:?}{sent:?}{:?}", logs.lines());
    for v in VALUES {
        assert!(!everything.contains(v), "a value leaked: {v}");
    }
}

/// Past its expires_at, a credential's value is refused with
/// FAILED_PRECONDITION by reveal, resolve and the relay (before and after
/// the monitor marks it expired), and reads as EXPIRED.
async fn expired_credentials_are_refused_where_values_are_used(backend: Backend) {
    let upstream = Upstream::start(&["*.example.test"]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = options(backend);
    opts.env.extend(relay_env(&upstream, &dir));
    // The monitor waits here until the test has seen the unmarked refusal.
    opts.env[0].1 = "3600000".into();
    let mut server = TestServer::start_with(opts).await;
    let admin = server.tenant("acme").await;
    let start = SystemTime::now();
    create(
        &admin,
        "dev",
        "llm/openai",
        "openai",
        VALUES[1],
        None,
        Some(start + 3600 * Duration::from_secs(1)),
    )
    .await;
    let (agent_id, mut agent) = server.principal(&admin, "agent", pb::Role::Agent).await;
    grant(
        &admin,
        &agent_id,
        "llm/*",
        &["dev"],
        &[pb::Capability::Reveal],
        None,
    )
    .await;
    inject_grant(&admin, &agent_id, "llm/*", &upstream).await;
    let reveal = |client: Client| async move {
        client
            .credentials()
            .reveal_credential(pb::RevealCredentialRequest {
                credential: path("dev", "llm/openai"),
                purpose: "expiry test".into(),
                ..Default::default()
            })
            .await
    };
    let resolve = |client: Client| async move {
        client
            .credentials()
            .resolve_credential(pb::ResolveCredentialRequest {
                service: "openai".into(),
                environment: "dev".into(),
                purpose: "expiry test".into(),
                ..Default::default()
            })
            .await
    };
    reveal(agent.clone()).await.expect("reveal before expiry");
    resolve(agent.clone()).await.expect("resolve before expiry");
    assert_eq!(
        relay_use(&agent, &upstream, "llm/openai")
            .await
            .expect("relay"),
        200
    );
    let reached = upstream.received().len();

    server.advance_clock(2 * 3600 * Duration::from_secs(1));
    let refused = |what: &str, e: tonic::Status| {
        assert_eq!(e.code(), Code::FailedPrecondition, "{what}: {e:?}");
        assert!(e.message().contains("expired"), "{what}: {}", e.message());
    };
    for round in ["unmarked", "marked"] {
        refused(
            &format!("reveal ({round})"),
            expect_code(
                reveal(agent.clone()).await,
                Code::FailedPrecondition,
                "reveal",
            ),
        );
        refused(
            &format!("resolve ({round})"),
            expect_code(
                resolve(agent.clone()).await,
                Code::FailedPrecondition,
                "resolve",
            ),
        );
        refused(
            &format!("relay ({round})"),
            relay_use(&agent, &upstream, "llm/openai")
                .await
                .expect_err("the relay refuses an expired credential"),
        );
        assert_eq!(upstream.received().len(), reached, "nothing was sent");
        let got = server
            .client(&admin.identity)
            .await
            .credentials()
            .get_credential(pb::GetCredentialRequest {
                credential: path("dev", "llm/openai"),
            })
            .await
            .expect("get")
            .into_inner()
            .credential
            .expect("credential");
        assert_eq!(got.status(), pb::CredentialStatus::Expired, "{round}");
        if round == "unmarked" {
            // Now let the monitor mark it.
            server.restart().await;
            agent = server.client("spiffe://e2e.test/acme/agent").await;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            let admin_client = server.client(&admin.identity).await;
            while events(&admin_client, pb::AuditAction::CredentialExpire)
                .await
                .is_empty()
            {
                assert!(tokio::time::Instant::now() < deadline, "never marked");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let status = server.stop().await;
    assert!(status.success(), "strongroomd exited with {status}");
}

/// The overview validates its input (naming the field), is for admins,
/// operators and viewers, pages the due credentials earliest first, filters
/// by environment, service and status, and shows a confined viewer only its
/// environments.
async fn overview_validates_pages_and_confines(backend: Backend) {
    let server = TestServer::start_with(options(backend)).await;
    let admin = server.tenant("acme").await;
    // Due on days 10, 20 and 30 (production, dev, dev); one healthy.
    for (env, name, service, period) in [
        ("production", "a/one", "alpha", 10),
        ("dev", "b/two", "beta", 20),
        ("dev", "c/three", "beta", 30),
    ] {
        create(
            &admin,
            env,
            name,
            service,
            "sk-overview-x",
            policy(period, period - 1),
            None,
        )
        .await;
    }
    create(
        &admin,
        "dev",
        "d/healthy",
        "beta",
        "sk-overview-y",
        None,
        None,
    )
    .await;
    server.advance_clock(5 * DAY);

    let mut names = Vec::new();
    let mut token = String::new();
    loop {
        let page = overview(
            &admin.client,
            pb::RotationStatusOverviewRequest {
                page_size: 2,
                page_token: token,
                ..Default::default()
            },
        )
        .await
        .expect("overview page");
        assert_eq!(counts(&page), [1, 3, 0, 0, 0]);
        names.extend(page.due_credentials.into_iter().map(|c| c.name));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(names, ["a/one", "b/two", "c/three"], "earliest due first");

    let filtered = overview(
        &admin.client,
        pb::RotationStatusOverviewRequest {
            environment: "dev".into(),
            service: "beta".into(),
            status: pb::RotationOverviewStatus::Healthy as i32,
            ..Default::default()
        },
    )
    .await
    .expect("filtered");
    assert_eq!(counts(&filtered), [1, 2, 0, 0, 0]);
    let listed: Vec<_> = filtered
        .due_credentials
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(listed, ["d/healthy"]);

    for (req, field) in [
        (
            pb::RotationStatusOverviewRequest {
                status: 99,
                ..Default::default()
            },
            "status",
        ),
        (
            pb::RotationStatusOverviewRequest {
                environment: "Not An Env!".into(),
                ..Default::default()
            },
            "environment",
        ),
        (
            pb::RotationStatusOverviewRequest {
                service: "Bad Service".into(),
                ..Default::default()
            },
            "service",
        ),
        (
            pb::RotationStatusOverviewRequest {
                page_size: 501,
                ..Default::default()
            },
            "page_size",
        ),
        (
            pb::RotationStatusOverviewRequest {
                page_token: "bm90LWEtdG9rZW4".into(),
                ..Default::default()
            },
            "page_token",
        ),
    ] {
        expect_invalid(overview(&admin.client, req).await, field, field);
    }

    let (_, agent) = server.principal(&admin, "agent", pb::Role::Agent).await;
    expect_code(
        overview(&agent, Default::default()).await,
        Code::PermissionDenied,
        "an agent",
    );
    let (_, viewer) = server
        .principal_in(&admin, "dev-viewer", pb::Role::Viewer, &["dev"])
        .await;
    let seen = overview(&viewer, Default::default())
        .await
        .expect("a confined viewer");
    assert_eq!(counts(&seen), [1, 2, 0, 0, 0]);
    assert!(seen.groups.iter().all(|g| g.environment == "dev"));
    let (_, operator) = server
        .principal(&admin, "operator", pb::Role::Operator)
        .await;
    overview(&operator, Default::default())
        .await
        .expect("an operator");
    let status = server.stop().await;
    assert!(status.success(), "strongroomd exited with {status}");
}

/// Two servers on one Postgres, each with a running monitor: one delivery
/// and one event per reminder.
#[tokio::test]
async fn two_replicas_send_each_reminder_once() {
    let primary = TestServer::start_with(options(Backend::Postgres)).await;
    let mut replica_options = primary.replica_options();
    replica_options.test_clock = true;
    replica_options.env = options(Backend::Postgres).env;
    let replica = TestServer::start_with(replica_options).await;
    let admin = primary.tenant("acme").await;
    set_notifier(&admin).await;
    create(
        &admin,
        "production",
        "db/main",
        "postgres",
        VALUES[0],
        policy(30, 7),
        None,
    )
    .await;
    let both = |by: Duration| {
        primary.advance_clock(by);
        replica.advance_clock(by);
    };
    both(24 * DAY);
    wait_for_notice(&admin.client, "credential.rotation_due_soon", "db/main").await;
    a_few_passes().await;
    both(7 * DAY);
    wait_for_notice(&admin.client, "credential.rotation_overdue", "db/main").await;
    a_few_passes().await;
    assert_eq!(deliveries(&admin.client).await.len(), 2);
    let reminders = events(&admin.client, pb::AuditAction::CredentialRotationReminder).await;
    assert_eq!(reminders.len(), 2, "{reminders:?}");
    let o = overview(&admin.client, Default::default())
        .await
        .expect("overview");
    assert_eq!(counts(&o), [0, 0, 1, 0, 0]);
    let _ = replica.stop().await;
    let _ = primary.stop().await;
}

/// The reminders reach a real HTTPS receiver (on 127.0.0.1, named and
/// trusted like the notifier's tests): due soon, expired and overdue, one
/// post each, signed with the tenant's secret (checked here independently),
/// carrying what an owner needs and no value; after a restart and more
/// monitor passes the receiver still has exactly those three.
async fn each_reminder_reaches_the_receiver_once(backend: Backend) {
    use crate::notifier::{received, receiver_env, unix_now, verify_signature};

    let receiver = Upstream::start(&["hooks.example.test"]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let allow = format!("acme/hooks.example.test:{}", receiver.port());
    let mut options = options(backend);
    options.env.extend(receiver_env(
        &receiver,
        &dir,
        "hooks.example.test",
        Some(allow),
    ));
    let mut server = TestServer::start_with(options).await;
    let admin = server.tenant("acme").await;
    let secret = b"whsec-rotation-receiver-6a2f";
    admin
        .client
        .admin()
        .update_tenant_settings(pb::UpdateTenantSettingsRequest {
            settings: Some(pb::TenantSettings {
                notifier: Some(pb::Notifier {
                    url: format!("https://hooks.example.test:{}/rotation", receiver.port()),
                    signing_secret: secret.to_vec(),
                    signing_secret_set: false,
                }),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["notifier".into()],
            }),
        })
        .await
        .expect("set notifier");
    let start = SystemTime::now();
    create(
        &admin,
        "production",
        "db/main",
        "postgres",
        VALUES[0],
        policy(30, 7),
        None,
    )
    .await;
    create(
        &admin,
        "production",
        "pay/stripe",
        "stripe",
        VALUES[2],
        None,
        Some(start + 25 * DAY),
    )
    .await;
    a_few_passes().await;
    assert!(receiver.received().is_empty(), "nothing is due yet");

    let mut advanced = 0u64;
    let mut seen = Vec::new();
    for (days, event, name) in [
        (24, "credential.rotation_due_soon", "db/main"),
        (2, "credential.expired", "pay/stripe"),
        (5, "credential.rotation_overdue", "db/main"),
    ] {
        server.advance_clock(days * DAY);
        advanced += u64::from(days) * 86_400;
        let got = received(&receiver, seen.len() + 1).await;
        assert_eq!(got.len(), seen.len() + 1, "one post for {event}");
        let r = got.last().expect("a post").clone();
        assert_eq!(r.method, "POST");
        assert_eq!(r.header("strongroom-event"), Some(event));
        // The timestamp is the server's (test) clock.
        let now = unix_now() + i64::try_from(advanced).expect("in range");
        verify_signature(&r, secret, now);
        let body: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
        assert_eq!(body["event"], event);
        assert_eq!(body["data"]["credential_name"], name, "{body}");
        let text = String::from_utf8(r.body.clone()).expect("utf8");
        for v in VALUES {
            assert!(!text.contains(v), "a value in the notice: {text}");
        }
        seen.push(r);
        a_few_passes().await;
        assert_eq!(receiver.received().len(), seen.len(), "a repeat of {event}");
    }

    server.restart().await;
    a_few_passes().await;
    a_few_passes().await;
    assert_eq!(
        receiver.received().len(),
        3,
        "a restarted monitor sends nothing already sent"
    );
    let admin = TenantAdmin {
        client: server.client(&admin.identity).await,
        ..admin
    };
    let sent = deliveries(&admin.client).await;
    assert_eq!(sent.len(), 3);
    assert!(
        sent.iter()
            .all(|d| d.delivered_at.is_some() && d.attempts == 1),
        "{sent:?}"
    );
    server.stop().await;
}
