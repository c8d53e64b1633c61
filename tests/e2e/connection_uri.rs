//! A `db_connection` credential revealed as its virtual field `uri`: a
//! connection URI that connects, as given, to a PostgreSQL that checks
//! passwords, though the user name, password and database name hold every
//! character URI syntax reserves; through `RevealCredential` (audited as a
//! reveal of the credential) and through `strongroom run --env
//! DATABASE_URL=sr://dev/db/main#uri` with psql as the child.

use sqlx::Connection as _;
use strongroom_e2e::cli::{CliIdentity, finish};
use strongroom_e2e::pg_cluster::PgCluster;
use strongroom_e2e::{Backend, TenantAdmin, TestServer, audit_events, expect_code, grant, path};
use strongroom_proto::v1 as pb;

/// A password with `@`, `/`, `:`, `%`, a space and more.
const PASSWORD: &str = "p@ss/w:rd%20 x?#[]&=+'\"";
const USER: &str = "app@user:1";
const DATABASE: &str = "app db/1";

async fn store_connection(admin: &TenantAdmin, port: u16) {
    admin
        .client
        .credentials()
        .create_credential(pb::CreateCredentialRequest {
            environment: "dev".into(),
            name: "db/main".into(),
            service: "postgres".into(),
            value: Some(pb::CredentialValue {
                value: Some(pb::credential_value::Value::DbConnection(
                    pb::DbConnection {
                        host: "127.0.0.1".into(),
                        port: u32::from(port),
                        database: DATABASE.into(),
                        username: USER.into(),
                        password: PASSWORD.into(),
                        ssl_mode: pb::DbSslMode::Disable as i32,
                    },
                )),
            }),
            ..Default::default()
        })
        .await
        .expect("create the db_connection");
}

#[tokio::test]
async fn uri_field_connects_as_given() {
    let cluster = PgCluster::start().await;
    cluster.create_login(USER, PASSWORD, DATABASE).await;
    let server = TestServer::start(Backend::Postgres).await;
    let acme = server.tenant("acme").await;
    let (agent_id, agent) = server.principal(&acme, "agent", pb::Role::Agent).await;
    store_connection(&acme, cluster.port).await;

    // Without reveal, the field is refused like the value.
    expect_code(
        agent
            .credentials()
            .reveal_credential(pb::RevealCredentialRequest {
                credential: path("dev", "db/main"),
                purpose: "connect".into(),
                field: "uri".into(),
                ..Default::default()
            })
            .await,
        tonic::Code::NotFound,
        "no grant",
    );
    grant(
        &acme,
        &agent_id,
        "db/*",
        &["dev"],
        &[pb::Capability::Reveal],
        None,
    )
    .await;
    let revealed = agent
        .credentials()
        .reveal_credential(pb::RevealCredentialRequest {
            credential: path("dev", "db/main"),
            purpose: "connect".into(),
            field: "uri".into(),
            ..Default::default()
        })
        .await
        .expect("reveal the uri")
        .into_inner();
    let uri = match revealed.revealed {
        Some(pb::reveal_credential_response::Revealed::Field(f)) => {
            assert_eq!(f.field, "uri");
            f.value
        }
        other => panic!("expected the uri field, got {other:?}"),
    };
    assert!(uri.starts_with("postgres://app%40user%3A1:"), "{uri:?}");
    assert!(uri.ends_with("?sslmode=disable"));
    assert!(!uri.contains(PASSWORD), "the password is encoded");

    // The URI as given connects, as that user, to that database.
    let mut conn = sqlx::PgConnection::connect(&uri)
        .await
        .unwrap_or_else(|e| panic!("connect with the revealed uri: {e}"));
    let (user, database): (String, String) =
        sqlx::query_as("SELECT current_user::text, current_database()::text")
            .fetch_one(&mut conn)
            .await
            .expect("query");
    assert_eq!((user.as_str(), database.as_str()), (USER, DATABASE));
    conn.close().await.ok();
    // The cluster checks passwords: a wrong one is refused.
    let wrong = uri.replacen("%40ss", "%40sx", 1);
    assert!(sqlx::PgConnection::connect(&wrong).await.is_err());

    // Audited as a reveal of the credential.
    let reveals = audit_events(
        &acme.client,
        pb::QueryEventsRequest {
            principal_id: agent_id.clone(),
            actions: vec![pb::AuditAction::CredentialReveal as i32],
            ..Default::default()
        },
    )
    .await;
    assert!(
        reveals.iter().any(
            |e| e.outcome == pb::AuditOutcome::Allowed as i32 && e.credential_name == "db/main"
        ),
        "{reveals:?}"
    );

    // `strongroom run` puts the URI in the child's environment; psql
    // connects with it as given.
    let cli = CliIdentity::new(&server, "spiffe://e2e.test/acme/agent");
    let run = finish(cli.command([
        "run",
        "--env",
        "DATABASE_URL=sr://dev/db/main#uri",
        "--purpose",
        "e2e uri",
        "--",
        "sh",
        "-c",
        "psql \"$DATABASE_URL\" -X -tAc \"SELECT 'as ' || current_user || ' in ' || current_database()\"",
    ]))
    .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.stdout.contains(&format!("as {USER} in {DATABASE}")),
        "{run:?}"
    );
    for out in [&run.stdout, &run.stderr] {
        assert!(!out.contains(PASSWORD));
        assert!(!out.contains(&uri));
    }
    assert!(!server.logs.contains(PASSWORD));
    assert!(!server.logs.contains(&uri));
    server.stop().await;
}
