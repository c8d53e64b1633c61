//! Abuse controls: the per-principal limit on denied calls (on by default),
//! the limit on all calls (off by default), the repeated-denial alert in the
//! audit chain, the optional automatic lock, and a fair share of the
//! database pool for every tenant.

use std::time::{Duration, Instant};

use strongroom_client::Client;
use strongroom_e2e::{
    Backend, Options, TenantAdmin, TestServer, api_key, audit_events, expect_code, grant, path,
    verified_event_count,
};
use strongroom_proto::v1 as pb;
use tonic::Code;
use tonic_types::StatusExt;

on_both_backends!(
    repeated_denials_are_limited_and_raise_one_alert,
    auto_lock_disables_until_an_admin_enables,
    call_limit_is_off_by_default_and_enforced_when_set,
);

async fn create(admin: &TenantAdmin, name: &str) {
    admin
        .client
        .credentials()
        .create_credential(pb::CreateCredentialRequest {
            environment: "dev".into(),
            name: name.into(),
            service: "openai".into(),
            value: api_key("sk-abuse-test-value"),
            ..Default::default()
        })
        .await
        .expect("create");
}

async fn reveal(
    client: &Client,
    name: &str,
) -> Result<pb::RevealCredentialResponse, tonic::Status> {
    client
        .credentials()
        .reveal_credential(pb::RevealCredentialRequest {
            credential: path("dev", name),
            purpose: "abuse test".into(),
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn update_settings(admin: &TenantAdmin, settings: pb::TenantSettings, paths: &[&str]) {
    admin
        .client
        .admin()
        .update_tenant_settings(pb::UpdateTenantSettingsRequest {
            settings: Some(settings),
            update_mask: Some(prost_types::FieldMask {
                paths: paths.iter().map(|p| (*p).to_owned()).collect(),
            }),
        })
        .await
        .expect("update settings");
}

fn seconds(s: i64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration {
        seconds: s,
        nanos: 0,
    })
}

/// The delay a RESOURCE_EXHAUSTED status asks for, from its
/// `google.rpc.RetryInfo` detail; asserts the message says it too.
#[track_caller]
fn retry_delay(status: &tonic::Status) -> Duration {
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let info = status
        .get_details_retry_info()
        .expect("RESOURCE_EXHAUSTED carries a google.rpc.RetryInfo");
    let delay = info.retry_delay.expect("RetryInfo names a delay");
    assert!(
        delay > Duration::ZERO && delay <= Duration::from_secs(60),
        "retry delay {delay:?}"
    );
    assert!(
        status.message().contains("retry after") && status.message().contains(" ms"),
        "the message names the delay: {:?}",
        status.message()
    );
    delay
}

/// Events of `action` caused by `principal_id`.
async fn events_of(
    admin: &TenantAdmin,
    principal_id: &str,
    action: pb::AuditAction,
) -> Vec<pb::AuditEvent> {
    audit_events(
        &admin.client,
        pb::QueryEventsRequest {
            principal_id: principal_id.into(),
            actions: vec![action as i32],
            ..Default::default()
        },
    )
    .await
}

/// With the default settings, an agent probing for credentials it has no
/// grant for gets PERMISSION_DENIED for its first denials, then
/// RESOURCE_EXHAUSTED with a retry delay for every call (even one it would
/// be allowed); the tenant's chain holds exactly one alert for the window,
/// and the flood of refusals is recorded as one event, not one a call.
async fn repeated_denials_are_limited_and_raise_one_alert(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.tenant("acme").await;
    create(&admin, "llm/openai").await;
    let (agent_id, agent) = server.principal(&admin, "prober", pb::Role::Agent).await;

    let mut denied = 0;
    let exhausted = loop {
        match reveal(&agent, "llm/openai").await {
            // Without read_metadata a refused reveal is NOT_FOUND, like a
            // missing name; it counts as a denial all the same.
            Err(s) if s.code() == Code::NotFound => denied += 1,
            Err(s) if s.code() == Code::ResourceExhausted => break s,
            other => panic!("unexpected answer to a denied reveal: {other:?}"),
        }
        assert!(denied <= 40, "40 denials in a row were never limited");
    };
    // The default limit: 60 denials a minute in bursts of 20.
    assert!(
        (20..=22).contains(&denied),
        "limited after {denied} denials, expected about the burst of 20"
    );
    let delay = retry_delay(&exhausted);
    assert!(delay <= Duration::from_secs(5), "delay {delay:?}");

    // While blocked, every call is refused, even one that would succeed.
    for _ in 0..30 {
        let s = expect_code(
            agent.admin().who_am_i(pb::WhoAmIRequest::default()).await,
            Code::ResourceExhausted,
            "an allowed call while blocked",
        );
        retry_delay(&s);
    }
    // Other principals are not affected.
    admin
        .client
        .admin()
        .who_am_i(pb::WhoAmIRequest::default())
        .await
        .expect("the admin is not limited");

    // After the delay the agent is heard again, but only for the few
    // denials its budget regained meanwhile (one a second); then it is
    // blocked again. The window's alert is not raised twice.
    tokio::time::sleep(delay + Duration::from_millis(50)).await;
    expect_code(
        reveal(&agent, "llm/openai").await,
        Code::NotFound,
        "a denial after the delay",
    );
    let mut again = 1;
    loop {
        match reveal(&agent, "llm/openai").await {
            Err(s) if s.code() == Code::NotFound => again += 1,
            Err(s) => {
                retry_delay(&s);
                break;
            }
            Ok(v) => panic!("a denied reveal succeeded: {v:?}"),
        }
        assert!(
            again <= 4,
            "{again} more denials before being blocked again"
        );
    }

    let alerts = events_of(&admin, &agent_id, pb::AuditAction::AlertRepeatedDenials).await;
    assert_eq!(alerts.len(), 1, "one alert per window: {alerts:?}");
    let alert = &alerts[0];
    assert_eq!(alert.reason_code, "DENIAL_THRESHOLD");
    assert_eq!(alert.principal_id, agent_id);
    assert_eq!(alert.principal_name, "prober");
    let limited = events_of(&admin, &agent_id, pb::AuditAction::RateLimited).await;
    assert_eq!(
        limited.len(),
        1,
        "the refusals of one window are recorded once when they begin: {limited:?}"
    );
    assert_eq!(limited[0].reason_code, "DENIED_CALL_LIMIT");
    assert_eq!(limited[0].outcome, pb::AuditOutcome::Denied as i32);
    verified_event_count(&admin.client).await;
    server.stop().await;
}

/// With auto-lock on, crossing the alert threshold disables the principal
/// (the lock is in the chain); it stays refused until an admin enables it
/// again, and then works.
async fn auto_lock_disables_until_an_admin_enables(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.tenant("acme").await;
    create(&admin, "llm/openai").await;
    create(&admin, "llm/granted").await;
    let (agent_id, agent) = server.principal(&admin, "prober", pb::Role::Agent).await;
    grant(
        &admin,
        &agent_id,
        "llm/granted",
        &["dev"],
        &[pb::Capability::Reveal],
        None,
    )
    .await;
    update_settings(
        &admin,
        pb::TenantSettings {
            denial_alert: Some(pb::DenialAlert {
                threshold: 3,
                window: seconds(60),
                auto_lock: true,
            }),
            ..Default::default()
        },
        &["denial_alert"],
    )
    .await;
    let settings = admin
        .client
        .admin()
        .get_tenant_settings(pb::GetTenantSettingsRequest::default())
        .await
        .expect("settings")
        .into_inner()
        .settings
        .expect("settings");
    let alert = settings.denial_alert.expect("denial alert");
    assert!(alert.auto_lock);
    assert_eq!(alert.threshold, 3);
    let limit = settings.denied_call_limit.expect("denied-call limit");
    assert!(limit.enabled, "the denied-call limit is on by default");
    assert!(
        !settings.call_limit.expect("call limit").enabled,
        "the call limit is off by default"
    );

    reveal(&agent, "llm/granted").await.expect("granted");
    for _ in 0..3 {
        expect_code(
            reveal(&agent, "llm/openai").await,
            Code::NotFound,
            "a probe",
        );
    }
    // The third denial crossed the threshold: locked.
    let s = expect_code(
        reveal(&agent, "llm/granted").await,
        Code::PermissionDenied,
        "a locked principal",
    );
    assert!(s.message().contains("disabled"), "{s:?}");
    let p = admin
        .client
        .admin()
        .get_principal(pb::GetPrincipalRequest {
            principal_id: agent_id.clone(),
        })
        .await
        .expect("get principal")
        .into_inner()
        .principal
        .expect("principal");
    assert_ne!(p.status, pb::PrincipalStatus::Active as i32, "{p:?}");
    assert_eq!(
        events_of(&admin, &agent_id, pb::AuditAction::AlertRepeatedDenials)
            .await
            .len(),
        1
    );
    let locks = events_of(&admin, &agent_id, pb::AuditAction::PrincipalLock).await;
    assert_eq!(locks.len(), 1, "{locks:?}");
    assert_eq!(locks[0].reason_code, "DENIAL_THRESHOLD");

    admin
        .client
        .admin()
        .enable_principal(pb::EnablePrincipalRequest {
            principal_id: agent_id.clone(),
        })
        .await
        .expect("enable");
    reveal(&agent, "llm/granted")
        .await
        .expect("enabled again, the agent works");
    verified_event_count(&admin.client).await;
    server.stop().await;
}

/// By default a principal's calls are not limited at all: a burst of 2000
/// allowed reveals never meets RESOURCE_EXHAUSTED. Once the tenant sets a
/// call limit, it is enforced (with the retry delay), and the refusals of a
/// window are counted into the chain: one event when they begin, one with
/// the count when the window ends.
async fn call_limit_is_off_by_default_and_enforced_when_set(backend: Backend) {
    let server = TestServer::start_with(Options {
        log_level: "info".into(),
        ..Options::new(backend)
    })
    .await;
    let admin = server.tenant("acme").await;
    create(&admin, "llm/openai").await;
    let (agent_id, agent) = server.principal(&admin, "busy", pb::Role::Agent).await;
    grant(
        &admin,
        &agent_id,
        "llm/*",
        &["dev"],
        &[pb::Capability::Reveal],
        None,
    )
    .await;

    let mut tasks = Vec::new();
    for _ in 0..16 {
        let agent = agent.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..125 {
                reveal(&agent, "llm/openai")
                    .await
                    .expect("no limit applies to allowed calls by default");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }

    update_settings(
        &admin,
        pb::TenantSettings {
            call_limit: Some(pb::RateLimit {
                enabled: true,
                per_minute: 300,
                burst: 10,
            }),
            denial_alert: Some(pb::DenialAlert {
                threshold: 20,
                window: seconds(1),
                auto_lock: false,
            }),
            ..Default::default()
        },
        &["call_limit", "denial_alert"],
    )
    .await;
    let mut allowed = 0;
    let mut refused = 0;
    for _ in 0..30 {
        match reveal(&agent, "llm/openai").await {
            Ok(_) => allowed += 1,
            Err(s) => {
                retry_delay(&s);
                refused += 1;
            }
        }
    }
    // The burst, and the odd call its budget regained meanwhile (5 a
    // second).
    assert!(
        (10..=13).contains(&allowed),
        "the burst of 10 is allowed, then calls are refused: {allowed} allowed"
    );
    assert_eq!(allowed + refused, 30);

    // The first refusal is in the chain at once; when the 1-second window
    // has ended, one more event counts all of them.
    let deadline = Instant::now() + Duration::from_secs(10);
    let limited = loop {
        let limited = events_of(&admin, &agent_id, pb::AuditAction::RateLimited).await;
        if limited.len() >= 2 || Instant::now() > deadline {
            break limited;
        }
        // The admin's calls count against the same limit (5 a second).
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(limited.len(), 2, "{limited:?}");
    assert!(limited.iter().all(|e| e.reason_code == "CALL_LIMIT"));
    // Newest first: the window's count, then its first refusal.
    assert!(
        limited[1]
            .detail
            .starts_with(r#"{"v":1,"kind":"rate_limit_first","#),
        "the first refusal: {:?}",
        limited[1].detail
    );
    assert!(
        limited[0].detail
            == format!(
                r#"{{"v":1,"kind":"rate_limit_window","refused":{refused},"window_secs":1}}"#
            ),
        "the window's event counts its {refused} refusals: {:?}",
        limited[0].detail
    );
    verified_event_count(&admin.client).await;
    server.stop().await;
}

/// A change of the tenant's denied-call limit does not hand a principal
/// that spent its budget a fresh one: after the delay it was told, it gets
/// only the denials its budget regained meanwhile. (Caches off, so every
/// call brings the settings as they are now.)
#[tokio::test]
async fn a_settings_change_does_not_refill_a_spent_budget() {
    let server = TestServer::start_with(Options {
        log_level: "info".into(),
        env: vec![("STRONGROOM_CACHE_TTL_MS".into(), "0".into())],
        ..Options::new(Backend::Sqlite)
    })
    .await;
    let admin = server.tenant("acme").await;
    create(&admin, "llm/openai").await;
    let (_, agent) = server.principal(&admin, "prober", pb::Role::Agent).await;

    let mut denied = 0;
    let exhausted = loop {
        match reveal(&agent, "llm/openai").await {
            Err(s) if s.code() == Code::NotFound => denied += 1,
            Err(s) if s.code() == Code::ResourceExhausted => break s,
            other => panic!("unexpected answer to a denied reveal: {other:?}"),
        }
        assert!(denied <= 40, "40 denials in a row were never limited");
    };
    let delay = retry_delay(&exhausted);

    // Slightly different numbers: another limit, as a settings change (or
    // an older snapshot of the settings) brings.
    update_settings(
        &admin,
        pb::TenantSettings {
            denied_call_limit: Some(pb::RateLimit {
                enabled: true,
                per_minute: 61,
                burst: 21,
            }),
            ..Default::default()
        },
        &["denied_call_limit"],
    )
    .await;
    tokio::time::sleep(delay + Duration::from_millis(50)).await;
    let mut again = 0;
    loop {
        match reveal(&agent, "llm/openai").await {
            Err(s) if s.code() == Code::NotFound => again += 1,
            Err(s) => {
                retry_delay(&s);
                break;
            }
            Ok(v) => panic!("a denied reveal succeeded: {v:?}"),
        }
        assert!(
            again <= 4,
            "{again} denials after the limit changed: the spent budget was refilled"
        );
    }
    server.stop().await;
}

/// One tenant whose calls hold pooled connections for a long time (here:
/// waiting for a lock on its audit chain, held outside the server) cannot
/// take the whole pool: another tenant's reveals keep completing promptly.
#[tokio::test]
async fn busy_tenant_does_not_starve_another_tenants_reveals() {
    use sqlx::Connection;
    let server = TestServer::start_with(Options {
        log_level: "info".into(),
        // 6 connections: the change listener keeps one, the quiet tenant's
        // audit committer keeps one while its tenant has reveal traffic,
        // and by default one tenant's calls may hold three quarters of the
        // other five (3).
        env: vec![("STRONGROOM_DATABASE_MAX_CONNECTIONS".into(), "6".into())],
        ..Options::new(Backend::Postgres)
    })
    .await;
    let busy = server.tenant("busy").await;
    let quiet = server.tenant("quiet").await;
    create(&quiet, "llm/openai").await;
    let (agent_id, agent) = server.principal(&quiet, "agent", pb::Role::Agent).await;
    grant(
        &quiet,
        &agent_id,
        "llm/*",
        &["dev"],
        &[pb::Capability::Reveal],
        None,
    )
    .await;
    reveal(&agent, "llm/openai").await.expect("warm up");
    let (busy_agent, _) = server.principal(&busy, "worker", pb::Role::Agent).await;

    // Hold the busy tenant's chain head, as a long transaction would.
    let url = strongroom_e2e::admin_url();
    let db_url = format!(
        "{}/{}",
        url.rsplit_once('/').map_or(url.as_str(), |(b, _)| b),
        server.database.as_deref().expect("database")
    );
    let mut holder = sqlx::PgConnection::connect(&db_url).await.expect("connect");
    let mut tx = holder.begin().await.expect("begin");
    sqlx::query("SELECT 1 FROM audit_heads WHERE tenant_id = $1::uuid FOR UPDATE")
        .bind(&busy.tenant_id)
        .execute(&mut *tx)
        .await
        .expect("lock the busy tenant's chain head");

    // The busy tenant's admin piles up writes that each wait for that lock
    // while holding a pooled connection.
    let mut piled = Vec::new();
    for i in 0..16 {
        let client = busy.client.clone();
        let subject = busy_agent.clone();
        piled.push(tokio::spawn(async move {
            let _ = client
                .policy()
                .create_grant(pb::CreateGrantRequest {
                    subject: Some(pb::GrantSubject {
                        subject: Some(pb::grant_subject::Subject::PrincipalId(subject)),
                    }),
                    selector: format!("pile/{i}"),
                    environments: vec!["dev".into()],
                    capabilities: vec![pb::Capability::Reveal as i32],
                    reason: "pile up".into(),
                    ..Default::default()
                })
                .await;
        }));
    }
    // Wait until the server's connections are really stuck on the lock.
    let mut watcher = sqlx::PgConnection::connect(&db_url).await.expect("connect");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND usename = 'strongroom_e2e_server' AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut watcher)
        .await
        .expect("pg_stat_activity");
        if waiting >= 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the busy tenant's calls never waited on the lock ({waiting} waiting)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The quiet tenant's reveals all complete, each promptly.
    for i in 0..20 {
        let started = Instant::now();
        reveal(&agent, "llm/openai")
            .await
            .unwrap_or_else(|s| panic!("reveal {i} of the quiet tenant failed: {s:?}"));
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "reveal {i} took {:?}",
            started.elapsed()
        );
    }

    tx.rollback().await.expect("release the lock");
    for p in piled {
        let _ = tokio::time::timeout(Duration::from_secs(20), p).await;
    }
    server.stop().await;
}

/// The server's Postgres database, as the test's administrative role.
fn server_db_url(server: &TestServer) -> String {
    let url = strongroom_e2e::admin_url();
    format!(
        "{}/{}",
        url.rsplit_once('/').map_or(url.as_str(), |(b, _)| b),
        server.database.as_deref().expect("database")
    )
}

/// Holds `busy`'s audit chain head from outside the server, as a long
/// transaction would (until the returned connection is dropped), and has
/// its admin pile up 16 writes that each wait for it while holding a pooled
/// connection.
async fn pile_up(
    db_url: &str,
    busy: &TenantAdmin,
    subject: &str,
) -> (sqlx::PgConnection, Vec<tokio::task::JoinHandle<()>>) {
    use sqlx::Connection;
    let mut holder = sqlx::PgConnection::connect(db_url).await.expect("connect");
    sqlx::query("BEGIN")
        .execute(&mut holder)
        .await
        .expect("begin");
    sqlx::query("SELECT 1 FROM audit_heads WHERE tenant_id = $1::uuid FOR UPDATE")
        .bind(&busy.tenant_id)
        .execute(&mut holder)
        .await
        .expect("lock the busy tenant's chain head");
    let mut piled = Vec::new();
    for i in 0..16 {
        let client = busy.client.clone();
        let subject = subject.to_owned();
        piled.push(tokio::spawn(async move {
            let _ = client
                .policy()
                .create_grant(pb::CreateGrantRequest {
                    subject: Some(pb::GrantSubject {
                        subject: Some(pb::grant_subject::Subject::PrincipalId(subject)),
                    }),
                    selector: format!("pile/{i}"),
                    environments: vec!["dev".into()],
                    capabilities: vec![pb::Capability::Reveal as i32],
                    reason: "pile up".into(),
                    ..Default::default()
                })
                .await;
        }));
    }
    (holder, piled)
}

/// Waits until at least `count` of the server's connections wait on a lock.
async fn lock_waiters(db_url: &str, count: i64) {
    use sqlx::Connection;
    let mut watcher = sqlx::PgConnection::connect(db_url).await.expect("connect");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND usename = 'strongroom_e2e_server' AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut watcher)
        .await
        .expect("pg_stat_activity");
        if waiting >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the busy tenants' calls never waited on the lock ({waiting} waiting)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Two tenants whose calls pile up cannot take the whole pool between
/// them either (each under its own share): the pool less a reserve is all
/// they get, and a third tenant's reveals keep completing promptly.
#[tokio::test]
async fn busy_tenants_together_do_not_starve_a_quiet_one() {
    let server = TestServer::start_with(Options {
        log_level: "info".into(),
        // 6 connections: the change listener keeps one; of the other five,
        // one is kept back from busy tenants, and one tenant's calls may
        // hold three.
        env: vec![("STRONGROOM_DATABASE_MAX_CONNECTIONS".into(), "6".into())],
        ..Options::new(Backend::Postgres)
    })
    .await;
    let first = server.tenant("busy-a").await;
    let second = server.tenant("busy-b").await;
    let quiet = server.tenant("quiet").await;
    create(&quiet, "llm/openai").await;
    let (agent_id, agent) = server.principal(&quiet, "agent", pb::Role::Agent).await;
    grant(
        &quiet,
        &agent_id,
        "llm/*",
        &["dev"],
        &[pb::Capability::Reveal],
        None,
    )
    .await;
    reveal(&agent, "llm/openai").await.expect("warm up");
    let (first_worker, _) = server.principal(&first, "worker", pb::Role::Agent).await;
    let (second_worker, _) = server.principal(&second, "worker", pb::Role::Agent).await;

    let db_url = server_db_url(&server);
    let (first_holder, first_piled) = pile_up(&db_url, &first, &first_worker).await;
    let (second_holder, second_piled) = pile_up(&db_url, &second, &second_worker).await;
    // Three of the first tenant's calls and one of the second's.
    lock_waiters(&db_url, 4).await;
    // Time for more of them to take connections, were they allowed to.
    tokio::time::sleep(Duration::from_millis(500)).await;

    for i in 0..20 {
        let started = Instant::now();
        reveal(&agent, "llm/openai")
            .await
            .unwrap_or_else(|s| panic!("reveal {i} of the quiet tenant failed: {s:?}"));
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "reveal {i} took {:?}",
            started.elapsed()
        );
    }

    drop(first_holder);
    drop(second_holder);
    for p in first_piled.into_iter().chain(second_piled) {
        let _ = tokio::time::timeout(Duration::from_secs(20), p).await;
    }
    server.stop().await;
}
