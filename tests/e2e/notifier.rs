//! The tenant's webhook notifier: the setting (an https URL and a
//! write-only signing secret, sealed under the tenant's keys and never
//! returned), the delivery log, and the sender, posting to a real HTTPS
//! receiver on 127.0.0.1 with its own test CA (named through
//! `relay.resolve`, allowed through `relay.allow_internal`, trusted
//! through `relay.upstream_ca`, as the relay's tests do).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use strongroom_client::Client;
use strongroom_e2e::upstream::{Received, Upstream};
use strongroom_e2e::{Backend, Options, TenantAdmin, TestServer, expect_code};
use strongroom_proto::v1 as pb;
use tonic::Code;

on_both_backends!(
    notifier_setting_is_write_only_and_validated,
    filing_logs_a_delivery_admins_list,
    deliveries_are_signed_retried_and_logged,
    a_notifier_aimed_inside_is_never_connected,
    redirects_and_silence_are_failed_attempts
);

async fn set_notifier(
    admin: &TenantAdmin,
    url: &str,
    secret: &[u8],
) -> Result<pb::TenantSettings, tonic::Status> {
    admin
        .client
        .admin()
        .update_tenant_settings(pb::UpdateTenantSettingsRequest {
            settings: Some(pb::TenantSettings {
                notifier: Some(pb::Notifier {
                    url: url.into(),
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
        .map(|r| r.into_inner().settings.expect("settings"))
}

async fn current(admin: &TenantAdmin) -> pb::TenantSettings {
    admin
        .client
        .admin()
        .get_tenant_settings(pb::GetTenantSettingsRequest {})
        .await
        .expect("get settings")
        .into_inner()
        .settings
        .expect("settings")
}

/// Setting a notifier stores the URL and seals the secret: reads show the
/// URL and `signing_secret_set`, never the secret; a plain-http, over-long
/// or user-info URL and a short secret are refused naming the field; a URL
/// change without a secret keeps the secret; an empty URL removes it; the
/// other settings are untouched; the audit event does not carry the secret.
async fn notifier_setting_is_write_only_and_validated(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.tenant("acme").await;
    assert!(current(&admin).await.notifier.is_none());

    let secret = b"whsec-0123456789abcdef-notifier";
    let s = set_notifier(&admin, "https://hooks.example.com/strongroom", secret)
        .await
        .expect("set notifier");
    let n = s.notifier.expect("notifier");
    assert_eq!(n.url, "https://hooks.example.com/strongroom");
    assert!(n.signing_secret.is_empty(), "the secret is never returned");
    assert!(n.signing_secret_set);
    assert_eq!(s.version_retention, 10, "other settings untouched");
    let read = current(&admin).await.notifier.expect("notifier");
    assert!(read.signing_secret.is_empty());
    assert!(read.signing_secret_set);

    for (url, secret, field) in [
        (
            "http://hooks.example.com/",
            &secret[..],
            "settings.notifier.url",
        ),
        (
            "https://user:pw@hooks.example.com/",
            &secret[..],
            "settings.notifier.url",
        ),
        ("https:///nohost", &secret[..], "settings.notifier.url"),
        (
            "https://hooks.example.com/",
            b"short",
            "settings.notifier.signing_secret",
        ),
    ] {
        let e = expect_code(
            set_notifier(&admin, url, secret).await,
            Code::InvalidArgument,
            url,
        );
        assert!(e.message().contains(field), "{url}: {}", e.message());
    }
    let long = format!("https://hooks.example.com/{}", "a".repeat(2048));
    expect_code(
        set_notifier(&admin, &long, secret).await,
        Code::InvalidArgument,
        "long url",
    );

    // A new URL without a secret keeps the sealed one.
    let s = set_notifier(&admin, "https://other.example.com/hook", b"")
        .await
        .expect("move notifier");
    let n = s.notifier.expect("notifier");
    assert_eq!(n.url, "https://other.example.com/hook");
    assert!(n.signing_secret_set);

    // Clearing it.
    let s = set_notifier(&admin, "", b"").await.expect("clear");
    assert!(s.notifier.is_none());
    // Without a notifier, a URL alone is refused: a secret is needed.
    let e = expect_code(
        set_notifier(&admin, "https://hooks.example.com/", b"").await,
        Code::InvalidArgument,
        "no secret",
    );
    assert!(e.message().contains("settings.notifier.signing_secret"));

    let logs = server.logs.clone();
    let status = server.stop().await;
    assert!(status.success(), "strongroomd exited with {status}");
    let needle = std::str::from_utf8(secret).expect("utf8");
    assert!(
        !logs.lines().iter().any(|l| l.contains(needle)),
        "the signing secret is in the server log"
    );
}

/// With a notifier set, a filed request logs one delivery (a collapsed
/// duplicate none) that admins list, newest first: the notice's data (who,
/// for whom, what, why) and no value; it is never delivered (the notifier
/// aims at a loopback address no allow-list entry allows). Others may not
/// list the log.
async fn filing_logs_a_delivery_admins_list(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.tenant("acme").await;
    admin
        .client
        .credentials()
        .create_credential(pb::CreateCredentialRequest {
            environment: "dev".into(),
            name: "llm/openai".into(),
            service: "openai".into(),
            value: strongroom_e2e::api_key("sk-notifier-value-7f3a9c"),
            ..Default::default()
        })
        .await
        .expect("create");
    set_notifier(
        &admin,
        "https://127.0.0.1:9/hook",
        b"whsec-0123456789abcdef",
    )
    .await
    .expect("set notifier");
    let (agent_id, agent) = server.principal(&admin, "agent", pb::Role::Agent).await;
    let filing = pb::FileAccessRequestRequest {
        credential: Some(pb::CredentialPath {
            environment: "dev".into(),
            name: "llm/openai".into(),
        }),
        capability: pb::Capability::Reveal as i32,
        purpose: "nightly report".into(),
        on_behalf_of: "alice@example.com".into(),
        ..Default::default()
    };
    let filed = agent
        .policy()
        .file_access_request(filing.clone())
        .await
        .expect("file")
        .into_inner();
    let request_id = filed.access_request.expect("request").id;
    let again = agent
        .policy()
        .file_access_request(filing)
        .await
        .expect("file again")
        .into_inner();
    assert!(again.existing, "the duplicate collapses");

    let listed = admin
        .client
        .policy()
        .list_notification_deliveries(pb::ListNotificationDeliveriesRequest {
            page_size: 10,
            page_token: String::new(),
        })
        .await
        .expect("list deliveries")
        .into_inner();
    assert_eq!(listed.deliveries.len(), 1, "{listed:?}");
    let d = &listed.deliveries[0];
    assert_eq!(d.event, "access_request.filed");
    let data: serde_json::Value = serde_json::from_str(&d.payload_json).expect("json");
    assert_eq!(data["access_request_id"], request_id.as_str());
    assert_eq!(data["requester_id"], agent_id.as_str());
    assert_eq!(data["on_behalf_of"], "alice@example.com");
    assert_eq!(data["purpose"], "nightly report");
    assert_eq!(data["capability"], "reveal");
    assert!(!d.payload_json.contains("sk-notifier-value-7f3a9c"));
    assert!(d.delivered_at.is_none());

    expect_code(
        agent
            .policy()
            .list_notification_deliveries(pb::ListNotificationDeliveriesRequest::default())
            .await,
        Code::PermissionDenied,
        "an agent lists the delivery log",
    );
}

/// A receiver's verdict on one delivery: the independent HMAC-SHA256 of
/// `timestamp "." body` under `secret` matches its signature header, and
/// its timestamp is within five minutes of `now` (unix seconds).
pub(crate) fn verify_signature(r: &Received, secret: &[u8], now: i64) {
    let timestamp = r.header("strongroom-timestamp").expect("timestamp header");
    let signature = r.header("strongroom-signature").expect("signature header");
    let at: i64 = timestamp.parse().expect("a unix timestamp");
    assert!((now - at).abs() <= 300, "timestamp {at} is stale at {now}");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let mut signed = timestamp.as_bytes().to_vec();
    signed.push(b'.');
    signed.extend_from_slice(&r.body);
    let expected = format!(
        "v1={}",
        hex::encode(ring::hmac::sign(&key, &signed).as_ref())
    );
    assert_eq!(signature, expected, "the signature verifies");
    let body: serde_json::Value = serde_json::from_slice(&r.body).expect("a JSON body");
    assert_eq!(
        body["sent_at"].as_i64(),
        Some(at),
        "the body's time is signed"
    );
}

pub(crate) fn unix_now() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after the epoch")
            .as_secs(),
    )
    .expect("in range")
}

/// The notifier settings of a server that resolves `name` to the
/// receiver on 127.0.0.1, trusts its CA, and allows the internal address
/// for `allow` (a `relay.allow_internal` entry, if any).
pub(crate) fn receiver_env(
    receiver: &Upstream,
    dir: &tempfile::TempDir,
    name: &str,
    allow: Option<String>,
) -> Vec<(String, String)> {
    let ca = dir.path().join("receiver-ca.pem");
    std::fs::write(&ca, receiver.ca_pem()).expect("write the receiver's CA");
    let mut env = vec![
        (
            "STRONGROOM_RELAY_RESOLVE".into(),
            format!("{name}:{}:127.0.0.1", receiver.port()),
        ),
        (
            "STRONGROOM_RELAY_UPSTREAM_CA".into(),
            ca.to_string_lossy().into_owned(),
        ),
    ];
    if let Some(allow) = allow {
        env.push(("STRONGROOM_RELAY_ALLOW_INTERNAL".into(), allow));
    }
    env
}

/// Creates `dev/llm/openai` holding `value` and a new agent `name`, and
/// files the agent's request for it; the agent's client.
async fn file_request(
    server: &TestServer,
    admin: &TenantAdmin,
    name: &str,
    value: Option<&str>,
) -> Client {
    if let Some(value) = value {
        admin
            .client
            .credentials()
            .create_credential(pb::CreateCredentialRequest {
                environment: "dev".into(),
                name: "llm/openai".into(),
                service: "openai".into(),
                value: strongroom_e2e::api_key(value),
                ..Default::default()
            })
            .await
            .expect("create");
    }
    let (_, agent) = server.principal(admin, name, pb::Role::Agent).await;
    agent
        .policy()
        .file_access_request(pb::FileAccessRequestRequest {
            credential: Some(pb::CredentialPath {
                environment: "dev".into(),
                name: "llm/openai".into(),
            }),
            capability: pb::Capability::Reveal as i32,
            purpose: format!("nightly report of {name}"),
            on_behalf_of: "alice@example.com".into(),
            ..Default::default()
        })
        .await
        .expect("file");
    agent
}

async fn deliveries(admin: &TenantAdmin) -> Vec<pb::NotificationDelivery> {
    admin
        .client
        .policy()
        .list_notification_deliveries(pb::ListNotificationDeliveriesRequest {
            page_size: 100,
            page_token: String::new(),
        })
        .await
        .expect("list deliveries")
        .into_inner()
        .deliveries
}

/// Waits (up to 15 s) until the delivery log satisfies `done`.
async fn log_until(
    admin: &TenantAdmin,
    what: &str,
    done: impl Fn(&[pb::NotificationDelivery]) -> bool,
) -> Vec<pb::NotificationDelivery> {
    let start = Instant::now();
    loop {
        let log = deliveries(admin).await;
        if done(&log) {
            return log;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{what}: the log is {log:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (up to 15 s) until `receiver` has `n` requests.
pub(crate) async fn received(receiver: &Upstream, n: usize) -> Vec<Received> {
    let start = Instant::now();
    loop {
        let got = receiver.received();
        if got.len() >= n {
            return got;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{n} deliveries expected, {} received",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A filed request is posted to the tenant's receiver at once (the sender
/// is woken): signed (the receiver checks the HMAC itself and the
/// timestamp's window), the notice and no value in the body. The receiver
/// answers 500: the log shows the attempt and its next one after the
/// backoff, and nothing is sent before the clock reaches it; moved past
/// it, the delivery is retried with the same id, answered 200 and logged
/// delivered after 2 attempts, each attempt a `notification.delivery`
/// audit event (failed with 500, then delivered) naming the host only. The
/// receiver's body, the secret and the signatures reach no log line;
/// `/metrics` counts the attempts by outcome only. The allow-list entry is the tenant's own.
async fn deliveries_are_signed_retried_and_logged(backend: Backend) {
    let receiver = Upstream::start(&["hooks.example.test"]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let allow = format!("acme/hooks.example.test:{}", receiver.port());
    let mut options = Options::new(backend);
    options.test_clock = true;
    options.env = receiver_env(&receiver, &dir, "hooks.example.test", Some(allow));
    options
        .env
        .push(("STRONGROOM_METRICS_LISTEN".into(), "127.0.0.1:0".into()));
    let server = TestServer::start_with(options).await;
    let admin = server.tenant("acme").await;
    let secret = b"whsec-e2e-sender-5d1c0b7a9e";
    let value = "sk-notifier-sent-value-4e2b8d";
    set_notifier(
        &admin,
        &format!(
            "https://hooks.example.test:{}/fail-once/acme?token=t0k3n",
            receiver.port()
        ),
        secret,
    )
    .await
    .expect("set notifier");
    file_request(&server, &admin, "agent", Some(value)).await;

    let first = received(&receiver, 1).await;
    let r = &first[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path_and_query, "/fail-once/acme?token=t0k3n");
    assert_eq!(r.server_name.as_deref(), Some("hooks.example.test"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("strongroom-event"), Some("access_request.filed"));
    verify_signature(r, secret, unix_now());
    let body = String::from_utf8(r.body.clone()).expect("utf8 body");
    assert!(!body.contains(value), "a value in the notice: {body}");
    assert!(
        !body.contains("whsec-e2e-sender"),
        "the secret in the notice"
    );
    let json: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(json["event"], "access_request.filed");
    assert_eq!(json["tenant_id"], admin.tenant_id.as_str());
    assert_eq!(json["data"]["purpose"], "nightly report of agent");
    assert_eq!(json["data"]["on_behalf_of"], "alice@example.com");
    let delivery_id = r.header("strongroom-delivery").expect("id").to_owned();
    assert_eq!(
        json["id"], delivery_id,
        "the signed body carries the delivery's id, as the header says"
    );

    let log = log_until(&admin, "the first attempt is logged", |l| {
        l.len() == 1 && l[0].attempts == 1 && l[0].last_status == 500
    })
    .await;
    let d = &log[0];
    assert_eq!(d.id, delivery_id);
    assert_eq!(d.last_error, "the receiver answered 500");
    assert!(d.delivered_at.is_none());
    let next = d.next_attempt_at.as_ref().expect("a next attempt");
    let created = d.created_at.as_ref().expect("created");
    assert!(
        next.seconds > created.seconds && next.seconds <= unix_now() + 6,
        "the retry is due after the backoff: {next:?}"
    );
    // The sender polls every second: not retried before the clock
    // reaches the next attempt.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(receiver.received().len(), 1, "retried before its time");

    server.advance_clock(Duration::from_secs(10));
    let both = received(&receiver, 2).await;
    let again = &both[1];
    assert_eq!(
        again.header("strongroom-delivery"),
        Some(delivery_id.as_str())
    );
    verify_signature(again, secret, unix_now() + 10);
    let again_json: serde_json::Value = serde_json::from_slice(&again.body).expect("json");
    assert_eq!(
        again_json["id"], delivery_id,
        "the body's id stays the same across retries"
    );
    assert_eq!(again_json["event"], "access_request.filed");
    assert!(
        again.header("strongroom-timestamp") != r.header("strongroom-timestamp"),
        "each attempt is signed anew"
    );
    let log = log_until(&admin, "delivered on the second attempt", |l| {
        l.len() == 1 && l[0].delivered_at.is_some()
    })
    .await;
    let d = &log[0];
    assert_eq!(d.attempts, 2);
    assert_eq!(d.last_status, 200);
    assert_eq!(d.last_error, "");
    assert!(d.next_attempt_at.is_none());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        receiver.received().len(),
        2,
        "a delivered notice is not sent again"
    );

    // Each attempt is a `notification.delivery` event in the tenant's
    // chain: attempt 1 failed with 500, attempt 2 delivered; the host, and
    // never the URL's path or query, the body, the signature or the secret.
    let mut attempts: Vec<pb::AuditEvent> = strongroom_e2e::audit_events(
        &admin.client,
        pb::QueryEventsRequest {
            actions: vec![pb::AuditAction::NotificationDelivery as i32],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    attempts.sort_by_key(|e| e.sequence);
    let detail = |e: &pb::AuditEvent| -> serde_json::Value {
        serde_json::from_str(&e.detail).expect("a JSON detail")
    };
    let (first_event, second_event) = (&attempts[0], &attempts[1]);
    assert_eq!(first_event.outcome, pb::AuditOutcome::Error as i32);
    assert_eq!(first_event.reason_code, "DELIVERY_FAILED");
    assert_eq!(second_event.outcome, pb::AuditOutcome::Allowed as i32);
    for (e, attempt, result, status, failure) in [
        (
            first_event,
            1,
            "failed",
            serde_json::json!(500),
            serde_json::json!("status"),
        ),
        (
            second_event,
            2,
            "delivered",
            serde_json::json!(200),
            serde_json::Value::Null,
        ),
    ] {
        let d = detail(e);
        assert_eq!(d["kind"], "notification_delivery");
        assert_eq!(d["delivery"], delivery_id.as_str());
        assert_eq!(d["notice"], "access_request.filed");
        assert_eq!(d["attempt"], attempt);
        assert_eq!(d["host"], "hooks.example.test");
        assert_eq!(d["result"], result);
        assert_eq!(d["status"], status);
        assert_eq!(d["failure"], failure);
        assert_eq!(e.principal_name, "strongroomd");
        for needle in [
            "t0k3n",
            "/fail-once",
            "whsec-e2e-sender",
            value,
            "nightly report",
        ] {
            assert!(
                !format!("{e:?}").contains(needle),
                "{needle} in a delivery event: {e:?}"
            );
        }
    }
    strongroom_e2e::verified_event_count(&admin.client).await;

    let (status, metrics) =
        crate::ops_listener::get(crate::ops_listener::ops_addr(&server), "/metrics").await;
    assert_eq!(status, 200);
    for series in [
        r#"strongroom_notifier_deliveries_total{outcome="retrying"} 1"#,
        r#"strongroom_notifier_deliveries_total{outcome="delivered"} 1"#,
    ] {
        assert!(
            metrics.lines().any(|l| l.starts_with(series)),
            "{series} not in /metrics"
        );
    }
    assert!(!metrics.contains("acme"), "a tenant name in /metrics");

    let signatures: Vec<String> = both
        .iter()
        .filter_map(|r| r.header("strongroom-signature"))
        .map(|s| s.trim_start_matches("v1=").to_owned())
        .collect();
    let logs = server.logs.clone();
    assert!(logs.contains("notifier delivery delivered"));
    assert!(logs.contains("notifier delivery failed; retrying"));
    let status = server.stop().await;
    assert!(status.success(), "strongroomd exited with {status}");
    for needle in [
        "whsec-e2e-sender-5d1c0b7a9e",
        value,
        "receiver-body-not-to-be-logged",
        "t0k3n",
        signatures[0].as_str(),
        signatures[1].as_str(),
    ] {
        assert!(
            !logs.lines().iter().any(|l| l.contains(needle)),
            "{needle} is in the server log"
        );
    }
}

/// A notifier aimed at a name that resolves to 127.0.0.1, allowed
/// internal for another tenant only, is refused before any connection
/// (the listener accepts none), and the log says why; the same for an
/// address literal. Neither is retried into a connection later.
async fn a_notifier_aimed_inside_is_never_connected(backend: Backend) {
    let receiver = Upstream::start(&["inside.example.test", "127.0.0.1"]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let allow = format!("globex/inside.example.test:{}", receiver.port());
    let mut options = Options::new(backend);
    options.test_clock = true;
    options.env = receiver_env(&receiver, &dir, "inside.example.test", Some(allow));
    let server = TestServer::start_with(options).await;
    let secret = b"whsec-e2e-inside-0123456789";
    let acme = server.tenant("acme").await;
    set_notifier(
        &acme,
        &format!("https://inside.example.test:{}/hook", receiver.port()),
        secret,
    )
    .await
    .expect("set notifier");
    file_request(&server, &acme, "agent", Some("sk-inside-value-1")).await;
    let initech = server.tenant("initech").await;
    set_notifier(
        &initech,
        &format!("https://127.0.0.1:{}/hook", receiver.port()),
        secret,
    )
    .await
    .expect("set notifier");
    file_request(&server, &initech, "agent", Some("sk-inside-value-2")).await;

    for admin in [&acme, &initech] {
        // (A claimed attempt counts before its outcome is recorded.)
        let log = log_until(admin, "the refusal is logged", |l| {
            l.len() == 1 && l[0].attempts >= 1 && !l[0].last_error.is_empty()
        })
        .await;
        let d = &log[0];
        assert!(
            d.last_error.starts_with("refused:") && d.last_error.contains("loopback"),
            "{}",
            d.last_error
        );
        assert_eq!(d.last_status, 0);
        assert!(d.delivered_at.is_none());
    }
    // Past the backoff: tried again, refused again, still no connection.
    server.advance_clock(Duration::from_secs(10));
    let log = log_until(&acme, "the retry is refused too", |l| {
        l.len() == 1 && l[0].attempts >= 2
    })
    .await;
    assert!(log[0].delivered_at.is_none());
    assert_eq!(receiver.accepted(), 0, "a connection reached the receiver");
    assert!(receiver.received().is_empty());
}

/// A receiver that redirects is not followed (the 302 is a failed
/// attempt, the redirect's target never asked), and one that does not
/// answer within the notifier's timeout (`STRONGROOM_NOTIFIER_TIMEOUT_MS`,
/// 2 s here) is a failed attempt too; both are retried later, and their
/// audit events class the failures.
async fn redirects_and_silence_are_failed_attempts(backend: Backend) {
    let receiver = Upstream::start(&["hooks.example.test"]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let allow = format!("hooks.example.test:{}", receiver.port());
    let mut options = Options::new(backend);
    options.test_clock = true;
    options.env = receiver_env(&receiver, &dir, "hooks.example.test", Some(allow));
    options
        .env
        .push(("STRONGROOM_NOTIFIER_TIMEOUT_MS".into(), "2000".into()));
    let server = TestServer::start_with(options).await;
    let secret = b"whsec-e2e-redirects-0123456789";
    let acme = server.tenant("acme").await;
    set_notifier(
        &acme,
        &format!("https://hooks.example.test:{}/redirect", receiver.port()),
        secret,
    )
    .await
    .expect("set notifier");
    let initech = server.tenant("initech").await;
    set_notifier(
        &initech,
        &format!("https://hooks.example.test:{}/slow/8000", receiver.port()),
        secret,
    )
    .await
    .expect("set notifier");
    let started = Instant::now();
    file_request(&server, &acme, "agent", Some("sk-redirect-value")).await;
    file_request(&server, &initech, "agent", Some("sk-slow-value")).await;

    let log = log_until(&acme, "the redirect is a failed attempt", |l| {
        l.len() == 1 && l[0].last_status == 302
    })
    .await;
    assert!(
        log[0].last_error.contains("redirects are not followed"),
        "{}",
        log[0].last_error
    );
    assert!(log[0].next_attempt_at.is_some(), "retried later");
    let log = log_until(&initech, "the silent receiver is a failed attempt", |l| {
        l.len() == 1 && !l[0].last_error.is_empty()
    })
    .await;
    assert_eq!(log[0].last_error, "no answer within 2 s");
    assert_eq!(log[0].last_status, 0);
    assert!(log[0].next_attempt_at.is_some(), "retried later");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "the post was not cut off at 2 s"
    );
    for (admin, status, failure) in [
        (&acme, serde_json::json!(302), "status"),
        (&initech, serde_json::Value::Null, "timeout"),
    ] {
        let events = strongroom_e2e::audit_events(
            &admin.client,
            pb::QueryEventsRequest {
                actions: vec![pb::AuditAction::NotificationDelivery as i32],
                ..Default::default()
            },
        )
        .await;
        let first = events
            .iter()
            .min_by_key(|e| e.sequence)
            .expect("an attempt's event");
        assert_eq!(first.reason_code, "DELIVERY_FAILED");
        let d: serde_json::Value = serde_json::from_str(&first.detail).expect("JSON");
        assert_eq!(d["attempt"], 1);
        assert_eq!(d["result"], "failed");
        assert_eq!(d["status"], status);
        assert_eq!(d["failure"], failure);
    }
    let paths: Vec<String> = receiver
        .received()
        .iter()
        .map(|r| r.path_and_query.clone())
        .collect();
    assert!(
        !paths.iter().any(|p| p.starts_with("/elsewhere")),
        "a redirect was followed: {paths:?}"
    );
    // (The redirect may have been retried meanwhile: its backoff of 5 s
    // passes while the silent receiver is waited for.)
    assert!(paths.iter().any(|p| p == "/redirect"), "{paths:?}");
}

/// Two servers on one Postgres database, both sending: every notice,
/// whichever server filed it, reaches the receiver exactly once.
#[tokio::test]
async fn replicas_deliver_each_notice_once() {
    let receiver = Upstream::start(&["hooks.example.test"]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let allow = format!("hooks.example.test:{}", receiver.port());
    let env = receiver_env(&receiver, &dir, "hooks.example.test", Some(allow));
    let mut options = Options::new(Backend::Postgres);
    options.env = env.clone();
    let primary = TestServer::start_with(options).await;
    let mut options = primary.replica_options();
    options.env = env;
    let replica = TestServer::start_with(options).await;
    let admin = primary.tenant("acme").await;
    set_notifier(
        &admin,
        &format!("https://hooks.example.test:{}/ok", receiver.port()),
        b"whsec-e2e-replicas-0123456789",
    )
    .await
    .expect("set notifier");
    file_request(&primary, &admin, "agent-0", Some("sk-replica-notice")).await;
    const AGENTS: usize = 8;
    for i in 1..AGENTS {
        let name = format!("agent-{i}");
        let (_, _) = primary.principal(&admin, &name, pb::Role::Agent).await;
        // Filed through either server.
        let server = if i % 2 == 0 { &primary } else { &replica };
        let agent = server
            .client(&format!("spiffe://e2e.test/acme/{name}"))
            .await;
        agent
            .policy()
            .file_access_request(pb::FileAccessRequestRequest {
                credential: Some(pb::CredentialPath {
                    environment: "dev".into(),
                    name: "llm/openai".into(),
                }),
                capability: pb::Capability::Reveal as i32,
                purpose: format!("report {i}"),
                ..Default::default()
            })
            .await
            .expect("file");
    }
    let log = log_until(&admin, "every notice delivered", |l| {
        l.len() == AGENTS && l.iter().all(|d| d.delivered_at.is_some())
    })
    .await;
    assert!(log.iter().all(|d| d.attempts == 1), "{log:?}");
    // Both servers keep polling: nothing is sent twice.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got = receiver.received();
    let mut ids: Vec<&str> = got
        .iter()
        .filter_map(|r| r.header("strongroom-delivery"))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(got.len(), AGENTS, "each notice posted once");
    assert_eq!(ids.len(), AGENTS);
}

/// A tenant whose receiver never answers (each post cut off at 5 s, several
/// due) does not delay another tenant's delivery: the sender does not wait
/// for one tenant's turn before serving the others.
#[tokio::test]
async fn a_silent_receiver_delays_no_other_tenant() {
    let receiver = Upstream::start(&["hooks.example.test"]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let allow = format!("hooks.example.test:{}", receiver.port());
    let mut options = Options::new(Backend::Sqlite);
    options.env = receiver_env(&receiver, &dir, "hooks.example.test", Some(allow));
    let server = TestServer::start_with(options).await;
    let secret = b"whsec-e2e-fairness-0123456789";
    let acme = server.tenant("acme").await;
    set_notifier(
        &acme,
        &format!("https://hooks.example.test:{}/slow/60000", receiver.port()),
        secret,
    )
    .await
    .expect("set notifier");
    let initech = server.tenant("initech").await;
    set_notifier(
        &initech,
        &format!("https://hooks.example.test:{}/status/204", receiver.port()),
        secret,
    )
    .await
    .expect("set notifier");
    file_request(&server, &acme, "agent-1", Some("sk-silent-value")).await;
    for name in ["agent-2", "agent-3", "agent-4"] {
        file_request(&server, &acme, name, None).await;
    }
    // The silent receiver has held one post of acme's for 5 s and holds
    // the next (more are due behind it).
    received(&receiver, 2).await;

    let filed = Instant::now();
    file_request(&server, &initech, "agent", Some("sk-initech-value")).await;
    let log = log_until(&initech, "the other tenant's delivery", |l| {
        l.len() == 1 && l[0].delivered_at.is_some()
    })
    .await;
    assert_eq!(log[0].last_status, 204);
    assert!(
        filed.elapsed() < Duration::from_secs(3),
        "delivered {:?} after filing, behind the silent receiver",
        filed.elapsed()
    );
    let paths: Vec<String> = receiver
        .received()
        .iter()
        .map(|r| r.path_and_query.clone())
        .collect();
    assert!(paths.iter().any(|p| p == "/status/204"), "{paths:?}");
    let acme_log = deliveries(&acme).await;
    assert_eq!(acme_log.len(), 4);
    assert!(
        acme_log.iter().all(|d| d.delivered_at.is_none()),
        "the silent receiver delivered nothing"
    );
}
