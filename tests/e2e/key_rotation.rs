//! Key rotation end to end: the root key rotated online while reveals run
//! (none fails; afterwards the old key alone cannot start a server and the
//! new key can), refused while a live replica lacks the next key; a tenant
//! key rotated while reveals and writes run (none fails, every data key
//! ends wrapped by the new version, the old version retires, every value
//! reveals as written).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use strongroom_client::Client;
use strongroom_e2e::{
    Backend, Options, ReplicaOf, TestServer, api_key, api_key_text, expect_code, path,
    revealed_value, server_binary,
};
use strongroom_proto::v1 as pb;
use tonic::Code;

on_both_backends!(tenant_key_rotation_under_load);

/// A random root key as hex.
fn new_key() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Heartbeats fast enough for a test.
const HEARTBEAT: (&str, &str) = ("STRONGROOM_ROOT_KEY_HEARTBEAT_MS", "200");

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

async fn create(client: &Client, name: &str, value: &str) {
    client
        .credentials()
        .create_credential(pb::CreateCredentialRequest {
            environment: "dev".into(),
            name: name.into(),
            service: "internal".into(),
            value: api_key(value),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("create {name}: {e}"));
}

async fn rotate(client: &Client, name: &str, value: &str) {
    client
        .credentials()
        .rotate_credential(pb::RotateCredentialRequest {
            credential: path("dev", name),
            new_value: api_key(value).map(pb::rotate_credential_request::NewValue::Value),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("rotate {name}: {e}"));
}

async fn reveal(client: &Client, name: &str) -> Result<String, tonic::Status> {
    let r = client
        .credentials()
        .reveal_credential(pb::RevealCredentialRequest {
            credential: path("dev", name),
            purpose: "key rotation test".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(api_key_text(revealed_value(&r)).to_owned())
}

/// Two tasks revealing `names` (expecting `values`) round-robin,
/// `per_task` reveals each; returns the count of failures (a refusal or a
/// wrong value).
fn reveal_load(
    client: &Client,
    names: &[(String, String)],
    per_task: usize,
) -> (
    tokio::task::JoinHandle<()>,
    tokio::task::JoinHandle<()>,
    Arc<AtomicUsize>,
    Arc<AtomicUsize>,
) {
    let failures = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let task = |offset: usize| {
        let client = client.clone();
        let names = names.to_vec();
        let failures = Arc::clone(&failures);
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            for i in 0..per_task {
                let (name, value) = &names[(i + offset) % names.len()];
                match reveal(&client, name).await {
                    Ok(v) if &v == value => {}
                    Ok(_) => {
                        failures.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => {
                        eprintln!("reveal of {name} failed: {e}");
                        failures.fetch_add(1, Ordering::SeqCst);
                    }
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    (task(0), task(1), failures, done)
}

/// Waits until `done` reaches `at` (the load is under way).
async fn until(done: &AtomicUsize, at: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while done.load(Ordering::SeqCst) < at {
        assert!(tokio::time::Instant::now() < deadline, "the load stalled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `strongroomd serve` against `primary`'s Postgres database with the root
/// key in `key_file`, run to its exit (or killed after 30 s).
async fn serve_once(primary: &TestServer, key_file: &std::path::Path) -> std::process::Output {
    let dir = primary.dir.path();
    let out = tokio::process::Command::new(server_binary())
        .arg("serve")
        .env_clear()
        .env("STRONGROOM_LISTEN", "127.0.0.1:0")
        .env("STRONGROOM_TLS_CERT", dir.join("server.pem"))
        .env("STRONGROOM_TLS_KEY", dir.join("server-key.pem"))
        .env("STRONGROOM_TLS_CLIENT_CA", dir.join("ca.pem"))
        .env("STRONGROOM_ROOT_KEY_FILE", key_file)
        .env(
            "STRONGROOM_DATABASE_URL",
            primary.database_url.clone().expect("postgres"),
        )
        .env(
            "STRONGROOM_PLATFORM_OPERATORS",
            "spiffe://e2e.test/operator",
        )
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(30), out)
        .await
        .expect("strongroomd must refuse promptly, not serve")
        .expect("run strongroomd")
}

#[tokio::test]
async fn root_key_rotation_under_load() {
    let keys = tempfile::tempdir().expect("tempdir");
    let next = new_key();
    let next_file = keys.path().join("next.key");
    std::fs::write(&next_file, &next).expect("write");
    let next_path = next_file.display().to_string();
    let server = TestServer::start_with(Options {
        env: env(&[HEARTBEAT, ("STRONGROOM_NEXT_ROOT_KEY_FILE", &next_path)]),
        log_level: "info".into(),
        ..Options::new(Backend::Postgres)
    })
    .await;
    let old_key = std::fs::read_to_string(server.dir.path().join("root.key")).expect("key");
    let acme = server.tenant("acme").await;
    let beta = server.tenant("beta").await;
    let mut values = Vec::new();
    for i in 0..8 {
        let (name, value) = (format!("svc/key-{i}"), format!("sk-root-rotation-{i}"));
        create(&acme.client, &name, &value).await;
        values.push((name, value));
    }
    create(&beta.client, "svc/beta", "sk-root-rotation-beta").await;
    // A tenant rotated before: two KEK versions to re-wrap.
    beta.client
        .admin()
        .rotate_tenant_key(pb::RotateTenantKeyRequest::default())
        .await
        .expect("rotate beta's key");

    let (a, b, failures, done) = reveal_load(&acme.client, &values, 150);
    until(&done, 20).await;
    let operator = server.operator().await;
    let rotated = operator
        .admin()
        .rotate_root_key(pb::RotateRootKeyRequest::default())
        .await
        .expect("rotate the root key")
        .into_inner();
    a.await.expect("load task");
    b.await.expect("load task");
    assert_eq!(done.load(Ordering::SeqCst), 300);
    assert_eq!(
        failures.load(Ordering::SeqCst),
        0,
        "reveals failed during the rotation"
    );
    assert_eq!(rotated.keys_rewrapped, 3, "acme's KEK and beta's two");
    assert_eq!(rotated.tenants, 2);
    assert_ne!(rotated.previous_key_id, rotated.new_key_id);
    // Resuming a finished rotation is refused, naming what to do.
    let again = expect_code(
        operator
            .admin()
            .rotate_root_key(pb::RotateRootKeyRequest::default())
            .await,
        Code::FailedPrecondition,
        "a second rotation",
    );
    assert!(again.message().contains("already"), "{}", again.message());
    // Audited in the platform chain.
    let events = operator
        .audit()
        .query_platform_events(pb::QueryPlatformEventsRequest::default())
        .await
        .expect("platform audit")
        .into_inner();
    assert_eq!(
        events
            .events
            .iter()
            .filter(|e| e.action == pb::AuditAction::KeyRotateRoot as i32)
            .count(),
        1,
        "{events:?}"
    );
    // A restarted server holding both keys still serves.
    let mut server = server;
    server.restart().await;
    assert_eq!(
        reveal(&server.client(&acme.identity).await, "svc/key-3")
            .await
            .expect("reveal"),
        "sk-root-rotation-3"
    );

    // The old key alone no longer starts a server.
    let old_file = keys.path().join("old.key");
    std::fs::write(&old_file, &old_key).expect("write");
    let out = serve_once(&server, &old_file).await;
    assert!(!out.status.success(), "started with the old root key");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not match"), "{err}");

    // The new key alone starts one, which reveals what was written before.
    let fresh = TestServer::start_with(Options {
        replica_of: Some(ReplicaOf {
            database_url: server.database_url.clone().expect("postgres"),
            root_key: next.clone(),
        }),
        ..Options::new(Backend::Postgres)
    })
    .await;
    for (name, value) in &values {
        assert_eq!(
            &reveal(&fresh.client(&acme.identity).await, name)
                .await
                .expect("reveal with the new key"),
            value
        );
    }
    assert_eq!(
        reveal(&fresh.client(&beta.identity).await, "svc/beta")
            .await
            .expect("reveal"),
        "sk-root-rotation-beta"
    );
    for (_, value) in &values {
        assert!(!fresh.logs.contains(value) && !server.logs.contains(value));
    }
    assert!(!server.logs.contains(&next) && !fresh.logs.contains(&next));
}

#[tokio::test]
async fn root_key_rotation_waits_for_every_live_replica() {
    let keys = tempfile::tempdir().expect("tempdir");
    let next_file = keys.path().join("next.key");
    std::fs::write(&next_file, new_key()).expect("write");
    let next_path = next_file.display().to_string();
    let server = TestServer::start_with(Options {
        env: env(&[HEARTBEAT, ("STRONGROOM_NEXT_ROOT_KEY_FILE", &next_path)]),
        ..Options::new(Backend::Postgres)
    })
    .await;
    let acme = server.tenant("acme").await;
    create(&acme.client, "svc/one", "sk-replica-wait").await;
    let mut options = server.replica_options();
    options.env = env(&[HEARTBEAT]);
    let lacking = TestServer::start_with(options).await;
    let operator = server.operator().await;
    let refused = expect_code(
        operator
            .admin()
            .rotate_root_key(pb::RotateRootKeyRequest::default())
            .await,
        Code::FailedPrecondition,
        "rotation with a replica lacking the next key",
    );
    assert!(
        refused.message().contains("lack the next root key")
            && refused.message().contains(&lacking.addr.to_string()),
        "{}",
        refused.message()
    );
    // Nothing changed: the replica without the next key still reveals.
    assert_eq!(
        reveal(&lacking.client(&acme.identity).await, "svc/one")
            .await
            .expect("reveal"),
        "sk-replica-wait"
    );
    // Once it is gone, the rotation proceeds.
    lacking.stop().await;
    let rotated = operator
        .admin()
        .rotate_root_key(pb::RotateRootKeyRequest::default())
        .await
        .expect("rotate")
        .into_inner();
    assert_eq!(rotated.keys_rewrapped, 1);
    assert_eq!(
        reveal(&acme.client, "svc/one").await.expect("reveal"),
        "sk-replica-wait"
    );
}

async fn key_status(client: &Client) -> pb::GetTenantKeyStatusResponse {
    client
        .admin()
        .get_tenant_key_status(pb::GetTenantKeyStatusRequest::default())
        .await
        .expect("key status")
        .into_inner()
}

async fn tenant_key_rotation_under_load(backend: Backend) {
    let server = TestServer::start_with(Options {
        env: env(&[HEARTBEAT]),
        log_level: "info".into(),
        ..Options::new(backend)
    })
    .await;
    let acme = server.tenant("acme").await;
    let mut values = Vec::new();
    for i in 0..12 {
        let name = format!("svc/key-{i}");
        create(&acme.client, &name, &format!("sk-tenant-rotation-{i}-v1")).await;
        let value = format!("sk-tenant-rotation-{i}-v2");
        rotate(&acme.client, &name, &value).await;
        values.push((name, value));
    }
    let before = key_status(&acme.client).await;
    assert_eq!(before.current_kek_version, 1);
    assert_eq!(before.versions.len(), 1);
    assert_eq!(before.versions[0].data_keys, 24);
    // The only, current version cannot retire.
    expect_code(
        acme.client
            .admin()
            .retire_tenant_key(pb::RetireTenantKeyRequest {
                kek_version: 1,
                ..Default::default()
            })
            .await,
        Code::FailedPrecondition,
        "retiring the only version",
    );

    // Input checks: a failed call changes nothing.
    let operator = server.operator().await;
    strongroom_e2e::expect_invalid(
        operator
            .admin()
            .get_tenant_key_status(pb::GetTenantKeyStatusRequest::default())
            .await,
        "tenant_id",
        "an operator naming no tenant",
    );
    strongroom_e2e::expect_invalid(
        acme.client
            .admin()
            .retire_tenant_key(pb::RetireTenantKeyRequest::default())
            .await,
        "kek_version",
        "retiring no version",
    );
    strongroom_e2e::expect_invalid(
        operator
            .admin()
            .rotate_tenant_key(pb::RotateTenantKeyRequest {
                tenant_id: "not-a-uuid".into(),
                ..Default::default()
            })
            .await,
        "tenant_id",
        "a malformed tenant id",
    );
    // A tenant admin cannot act on a tenant by id (a platform operator's
    // call); the operator sees the tenant's keys.
    assert_ne!(
        acme.client
            .admin()
            .rotate_tenant_key(pb::RotateTenantKeyRequest {
                tenant_id: acme.tenant_id.clone(),
                ..Default::default()
            })
            .await
            .expect_err("a tenant admin naming a tenant")
            .code(),
        Code::Ok
    );
    let seen = operator
        .admin()
        .get_tenant_key_status(pb::GetTenantKeyStatusRequest {
            tenant_id: acme.tenant_id.clone(),
        })
        .await
        .expect("operator's view")
        .into_inner();
    assert_eq!(seen, before);

    let (a, b, failures, done) = reveal_load(&acme.client, &values, 150);
    until(&done, 20).await;
    let rotated = acme
        .client
        .admin()
        .rotate_tenant_key(pb::RotateTenantKeyRequest::default())
        .await
        .expect("rotate the tenant key")
        .into_inner();
    assert_eq!(rotated.kek_version, 2);
    // Written while the re-wrapping runs.
    create(&acme.client, "svc/during", "sk-tenant-rotation-during").await;
    a.await.expect("load task");
    b.await.expect("load task");
    assert_eq!(done.load(Ordering::SeqCst), 300);
    assert_eq!(
        failures.load(Ordering::SeqCst),
        0,
        "reveals failed during the rotation"
    );

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        let s = key_status(&acme.client).await;
        if s.data_keys_pending == 0 && s.rotation_finished_at.is_some() {
            break s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the re-wrapping did not finish: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status.current_kek_version, 2);
    let by_version: Vec<(u32, u64)> = status
        .versions
        .iter()
        .map(|v| (v.kek_version, v.data_keys))
        .collect();
    assert_eq!(
        by_version,
        vec![(1, 0), (2, 25)],
        "every data key under version 2"
    );
    assert!(status.rotation_started_at.is_some());

    // The current version never retires; the old one does, once.
    expect_code(
        acme.client
            .admin()
            .retire_tenant_key(pb::RetireTenantKeyRequest {
                kek_version: 2,
                ..Default::default()
            })
            .await,
        Code::FailedPrecondition,
        "retiring the current version",
    );
    acme.client
        .admin()
        .retire_tenant_key(pb::RetireTenantKeyRequest {
            kek_version: 1,
            ..Default::default()
        })
        .await
        .expect("retire version 1");
    let after = key_status(&acme.client).await;
    assert_eq!(after.versions.len(), 1);
    expect_code(
        acme.client
            .admin()
            .retire_tenant_key(pb::RetireTenantKeyRequest {
                kek_version: 1,
                ..Default::default()
            })
            .await,
        Code::NotFound,
        "retiring a retired version",
    );

    // Every value, written before and during, reveals as written; also
    // after a restart (nothing in memory helps).
    let mut server = server;
    server.restart().await;
    let client = server.client(&acme.identity).await;
    for (name, value) in &values {
        assert_eq!(&reveal(&client, name).await.expect("reveal"), value);
    }
    assert_eq!(
        reveal(&client, "svc/during").await.expect("reveal"),
        "sk-tenant-rotation-during"
    );
    for (_, value) in &values {
        assert!(!server.logs.contains(value), "a value in the server's log");
    }
    // Audited in the tenant's chain.
    for action in [
        pb::AuditAction::KeyRotateTenant,
        pb::AuditAction::KeyRetireTenant,
    ] {
        let events = client
            .audit()
            .query_events(pb::QueryEventsRequest {
                actions: vec![action as i32],
                ..Default::default()
            })
            .await
            .expect("audit")
            .into_inner();
        assert_eq!(events.events.len(), 1, "{action:?}: {events:?}");
    }
}

/// A root connection to `server`'s Postgres database (to stage what a
/// crash or a lagging replica would leave behind).
async fn admin_db(server: &TestServer) -> sqlx::PgConnection {
    use sqlx::Connection;
    let url = strongroom_e2e::admin_url();
    let db_url = format!(
        "{}/{}",
        url.rsplit_once('/').map_or(url.as_str(), |(b, _)| b),
        server.database.as_deref().expect("database")
    );
    sqlx::PgConnection::connect(&db_url).await.expect("connect")
}

#[tokio::test]
async fn unfinished_root_rotation_refuses_a_server_without_its_target_key() {
    let server = TestServer::start_with(Options::new(Backend::Postgres)).await;
    let mut db = admin_db(&server).await;
    sqlx::query(
        "INSERT INTO server_meta (key, value, created_at) VALUES ('root_key_rotation', \
         convert_to('{\"from\":\"00\",\"to\":\"0123456789abcdef\",\"done\":false}', 'UTF8'), 0)",
    )
    .execute(&mut db)
    .await
    .expect("stage an unfinished rotation");
    let key_file = server.dir.path().join("root.key");
    let out = serve_once(&server, &key_file).await;
    assert!(!out.status.success(), "started without the rotation's key");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unfinished") && err.contains("0123456789abcdef"),
        "{err}"
    );
}

#[tokio::test]
async fn interrupted_root_rotation_is_finished_by_calling_again() {
    let keys = tempfile::tempdir().expect("tempdir");
    let next = new_key();
    let next_file = keys.path().join("next.key");
    std::fs::write(&next_file, &next).expect("write");
    let next_path = next_file.display().to_string();
    let server = TestServer::start_with(Options {
        env: env(&[HEARTBEAT, ("STRONGROOM_NEXT_ROOT_KEY_FILE", &next_path)]),
        ..Options::new(Backend::Postgres)
    })
    .await;
    let acme = server.tenant("acme").await;
    create(&acme.client, "svc/one", "sk-interrupted-rotation").await;
    let mut db = admin_db(&server).await;
    let (tenant, old_wrapped): (uuid::Uuid, Vec<u8>) =
        sqlx::query_as("SELECT tenant_id, wrapped FROM tenant_keks LIMIT 1")
            .fetch_one(&mut db)
            .await
            .expect("a KEK");
    let operator = server.operator().await;
    operator
        .admin()
        .rotate_root_key(pb::RotateRootKeyRequest::default())
        .await
        .expect("rotate");
    // As if a replica wrapped a KEK by the old key after the re-wrap passes
    // and the rotation crashed between replacing the key check and
    // marking it done.
    sqlx::query("UPDATE tenant_keks SET wrapped = $2 WHERE tenant_id = $1")
        .bind(tenant)
        .bind(&old_wrapped)
        .execute(&mut db)
        .await
        .expect("stage a KEK wrapped by the old key");
    sqlx::query(
        "UPDATE server_meta SET value = convert_to(replace(convert_from(value, 'UTF8'), \
         '\"done\":true', '\"done\":false'), 'UTF8') WHERE key = 'root_key_rotation'",
    )
    .execute(&mut db)
    .await
    .expect("stage an unfinished rotation");
    let resumed = operator
        .admin()
        .rotate_root_key(pb::RotateRootKeyRequest::default())
        .await
        .expect("resume the rotation")
        .into_inner();
    assert_eq!(resumed.keys_rewrapped, 1, "the KEK left by the old key");
    let again = expect_code(
        operator
            .admin()
            .rotate_root_key(pb::RotateRootKeyRequest::default())
            .await,
        Code::FailedPrecondition,
        "a finished rotation",
    );
    assert!(again.message().contains("already"), "{}", again.message());
    // The new key alone opens every KEK.
    let fresh = TestServer::start_with(Options {
        replica_of: Some(ReplicaOf {
            database_url: server.database_url.clone().expect("postgres"),
            root_key: next.clone(),
        }),
        ..Options::new(Backend::Postgres)
    })
    .await;
    assert_eq!(
        reveal(&fresh.client(&acme.identity).await, "svc/one")
            .await
            .expect("reveal with the new key"),
        "sk-interrupted-rotation"
    );
    assert!(!server.logs.contains(&next) && !fresh.logs.contains(&next));
}
