//! `TestCredential` for `db_connection`, against a PostgreSQL cluster of
//! the test's own that checks passwords (SCRAM): correct values connect, a
//! wrong password is an authentication failure, a missing database is
//! reported as such, a closed port as unreachable, a TLS mode the server
//! cannot meet as a TLS failure, and an internal address not on
//! `relay.allow_internal` is refused by policy without connecting. Neither
//! an answer nor the server's log holds the password; each use is audited.

use strongroom_e2e::pg_cluster::PgCluster;
use strongroom_e2e::{
    Backend, Options, TenantAdmin, TestServer, api_key, assert_free_of, audit_events, expect_code,
    grant, path,
};
use strongroom_proto::v1 as pb;

const PASSWORD: &str = "tc-Secret:@/%x 9f8e7d";
const WRONG: &str = "tc-Wrong:@/%x 1a2b3c";
const USER: &str = "tester";

async fn db_credential(
    admin: &TenantAdmin,
    name: &str,
    port: u16,
    password: &str,
    database: &str,
    ssl_mode: pb::DbSslMode,
) {
    admin
        .client
        .credentials()
        .create_credential(pb::CreateCredentialRequest {
            environment: "dev".into(),
            name: name.into(),
            service: "postgres".into(),
            value: Some(pb::CredentialValue {
                value: Some(pb::credential_value::Value::DbConnection(
                    pb::DbConnection {
                        host: "127.0.0.1".into(),
                        port: u32::from(port),
                        database: database.into(),
                        username: USER.into(),
                        password: password.into(),
                        ssl_mode: ssl_mode as i32,
                    },
                )),
            }),
            ..Default::default()
        })
        .await
        .expect("create the db_connection");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

#[tokio::test]
async fn db_connection_tests_classify_each_failure_without_echoing_values() {
    let cluster = PgCluster::start().await;
    cluster.create_login(USER, PASSWORD, "app").await;
    let closed = free_port();
    // A listener a `verify-full` test must never reach: this build speaks
    // no TLS to databases, so it answers without connecting.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    silent.set_nonblocking(true).expect("nonblocking");
    let silent_port = silent.local_addr().expect("addr").port();
    let server = TestServer::start_with(Options {
        log_level: "debug".into(),
        env: vec![(
            "STRONGROOM_RELAY_ALLOW_INTERNAL".into(),
            format!(
                "127.0.0.1:{}, 127.0.0.1:{closed}, 127.0.0.1:{silent_port}",
                cluster.port
            ),
        )],
        ..Options::new(Backend::Postgres)
    })
    .await;
    let acme = server.tenant("acme").await;
    let (agent_id, agent) = server.principal(&acme, "agent", pb::Role::Agent).await;
    let port = cluster.port;
    db_credential(
        &acme,
        "db/good",
        port,
        PASSWORD,
        "app",
        pb::DbSslMode::Disable,
    )
    .await;
    db_credential(
        &acme,
        "db/wrong",
        port,
        WRONG,
        "app",
        pb::DbSslMode::Disable,
    )
    .await;
    db_credential(
        &acme,
        "db/missing",
        port,
        PASSWORD,
        "nope",
        pb::DbSslMode::Disable,
    )
    .await;
    db_credential(
        &acme,
        "db/closed",
        closed,
        PASSWORD,
        "app",
        pb::DbSslMode::Disable,
    )
    .await;
    db_credential(
        &acme,
        "db/tls",
        port,
        PASSWORD,
        "app",
        pb::DbSslMode::Require,
    )
    .await;
    db_credential(
        &acme,
        "db/verify",
        silent_port,
        PASSWORD,
        "app",
        pb::DbSslMode::VerifyFull,
    )
    .await;
    // The shared Postgres: internal, and not on the allow-list.
    db_credential(
        &acme,
        "db/policy",
        5432,
        PASSWORD,
        "app",
        pb::DbSslMode::Disable,
    )
    .await;
    acme.client
        .credentials()
        .create_credential(pb::CreateCredentialRequest {
            environment: "dev".into(),
            name: "db/key".into(),
            service: "other".into(),
            value: api_key("sk-not-a-database-123"),
            ..Default::default()
        })
        .await
        .expect("create api key");

    let test = |name: &'static str| {
        let agent = agent.clone();
        async move {
            agent
                .credentials()
                .test_credential(pb::TestCredentialRequest {
                    credential: path("dev", name),
                    timeout: Some(prost_types::Duration {
                        seconds: 5,
                        nanos: 0,
                    }),
                })
                .await
                .map(tonic::Response::into_inner)
        }
    };
    // No grant: not found, like a reveal.
    expect_code(test("db/good").await, tonic::Code::NotFound, "no grant");
    grant(
        &acme,
        &agent_id,
        "db/*",
        &["dev"],
        &[pb::Capability::Reveal],
        None,
    )
    .await;

    let good = test("db/good").await.expect("test db/good");
    assert!(good.ok, "{good:?}\ncluster log: {}", cluster.server_log());
    assert!(
        good.message.starts_with("connected: PostgreSQL 1"),
        "{good:?}"
    );
    assert_eq!(good.failure, pb::CredentialTestFailure::Unspecified as i32);
    assert_eq!(good.version, 1);

    for (name, failure) in [
        ("db/wrong", pb::CredentialTestFailure::Authentication),
        ("db/missing", pb::CredentialTestFailure::DatabaseMissing),
        ("db/closed", pb::CredentialTestFailure::Unreachable),
        ("db/tls", pb::CredentialTestFailure::Tls),
        ("db/verify", pb::CredentialTestFailure::Tls),
        ("db/policy", pb::CredentialTestFailure::RefusedByPolicy),
    ] {
        let r = test(name).await.unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert!(!r.ok, "{name}: {r:?}");
        assert_eq!(r.failure, failure as i32, "{name}: {r:?}");
        assert_free_of(&r, &[PASSWORD, WRONG], name);
    }
    assert_free_of(&good, &[PASSWORD, WRONG], "db/good");
    assert!(
        matches!(silent.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "a test of a TLS mode connected"
    );
    expect_code(
        test("db/key").await,
        tonic::Code::FailedPrecondition,
        "an api key cannot be tested",
    );

    // Each test is audited as credential.test.
    let tests = audit_events(
        &acme.client,
        pb::QueryEventsRequest {
            principal_id: agent_id.clone(),
            actions: vec![pb::AuditAction::CredentialTest as i32],
            ..Default::default()
        },
    )
    .await;
    let allowed = tests
        .iter()
        .filter(|e| e.outcome == pb::AuditOutcome::Allowed as i32)
        .count();
    assert_eq!(allowed, 7, "{tests:?}");

    for secret in [PASSWORD, WRONG] {
        assert!(
            !server.logs.contains(secret),
            "the password in the server's log"
        );
    }
    server.stop().await;
}
