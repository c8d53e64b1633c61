//! Crypto-shredding a tenant (AdminService.ShredTenant) with two servers
//! on one Postgres database: afterwards every reveal and resolve of the
//! tenant fails with FAILED_PRECONDITION "the tenant was shredded" on both
//! (each had its key unwrapped and its data cached before), no wrapped KEK
//! and no sealed value of the tenant is left in the database, another
//! tenant is untouched, the shred is recorded once in the platform chain,
//! a repeat writes nothing, and a non-operator or a wrong confirmation is
//! refused without changing anything.

use sqlx::Connection;
use strongroom_client::Client;
use strongroom_e2e::{
    Backend, Options, TenantAdmin, TestServer, admin_url, api_key, expect_code, expect_invalid,
    grant, path,
};
use strongroom_proto::v1 as pb;
use tonic::Code;

const DOOMED_SECRET: &str = "sk-doomed-5b1e0c7f9a";
const OTHER_SECRET: &str = "sk-bystander-77d2a4e1";

/// Stores `app/key` (service `payments`) with `secret` in `dev` and returns
/// the client of an agent that may reveal it.
async fn seeded(server: &TestServer, admin: &TenantAdmin, secret: &str) -> String {
    admin
        .client
        .credentials()
        .create_credential(pb::CreateCredentialRequest {
            environment: "dev".into(),
            name: "app/key".into(),
            service: "payments".into(),
            value: api_key(secret),
            ..Default::default()
        })
        .await
        .expect("create credential");
    let (agent, _) = server.principal(admin, "agent", pb::Role::Agent).await;
    grant(
        admin,
        &agent,
        "app/*",
        &["dev"],
        &[pb::Capability::Reveal, pb::Capability::ReadMetadata],
        None,
    )
    .await;
    format!("spiffe://e2e.test/{}/agent", admin.name)
}

async fn reveal(client: &Client) -> Result<pb::RevealCredentialResponse, tonic::Status> {
    client
        .credentials()
        .reveal_credential(pb::RevealCredentialRequest {
            credential: path("dev", "app/key"),
            purpose: "shred test".into(),
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn resolve(client: &Client) -> Result<pb::ResolveCredentialResponse, tonic::Status> {
    client
        .credentials()
        .resolve_credential(pb::ResolveCredentialRequest {
            service: "payments".into(),
            environment: "dev".into(),
            purpose: "shred test".into(),
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

fn shred_request(tenant_id: &str, confirm: &str, reason: &str) -> pb::ShredTenantRequest {
    pb::ShredTenantRequest {
        tenant_id: tenant_id.into(),
        confirm_name: confirm.into(),
        reason: reason.into(),
        purge: false,
    }
}

async fn shred_events(operator: &Client) -> Vec<pb::AuditEvent> {
    operator
        .audit()
        .query_platform_events(pb::QueryPlatformEventsRequest::default())
        .await
        .expect("query platform events")
        .into_inner()
        .events
        .into_iter()
        .filter(|e| e.action == pb::AuditAction::TenantShred as i32)
        .collect()
}

/// Rows of the tenant left in the database: (wrapped KEKs, credential
/// versions with a sealed value, versions in all).
async fn rows_left(server: &TestServer, tenant_id: &str) -> (i64, i64, i64) {
    let db = server.database.as_deref().expect("postgres");
    let url = format!(
        "{}/{db}",
        admin_url().rsplit_once('/').expect("database url").0
    );
    let mut conn = sqlx::PgConnection::connect(&url)
        .await
        .expect("connect as the superuser");
    let id: uuid::Uuid = tenant_id.parse().expect("tenant id");
    let (keks,): (i64,) = sqlx::query_as("SELECT count(*) FROM tenant_keks WHERE tenant_id = $1")
        .bind(id)
        .fetch_one(&mut conn)
        .await
        .expect("count keks");
    let (sealed, all): (i64, i64) = sqlx::query_as(
        "SELECT count(envelope), count(*) FROM credential_versions WHERE tenant_id = $1",
    )
    .bind(id)
    .fetch_one(&mut conn)
    .await
    .expect("count versions");
    conn.close().await.ok();
    (keks, sealed, all)
}

#[track_caller]
fn assert_shredded<T: std::fmt::Debug>(result: Result<T, tonic::Status>, what: &str) {
    let status = expect_code(result, Code::FailedPrecondition, what);
    assert!(
        status.message().contains("the tenant was shredded"),
        "{what}: {status:?}"
    );
    assert!(!status.message().contains(DOOMED_SECRET));
}

#[tokio::test]
async fn shred_fails_every_reveal_on_every_replica_and_leaves_no_sealed_value() {
    let primary = TestServer::start_with(Options {
        log_level: "info".into(),
        ..Options::new(Backend::Postgres)
    })
    .await;
    let doomed = primary.tenant("doomed").await;
    let other = primary.tenant("bystander").await;
    let doomed_agent = seeded(&primary, &doomed, DOOMED_SECRET).await;
    let other_agent = seeded(&primary, &other, OTHER_SECRET).await;
    let replica = TestServer::start_with(primary.replica_options()).await;
    let servers = [&primary, &replica];
    let mut doomed_clients = Vec::new();
    let mut other_clients = Vec::new();
    for server in servers {
        let d = server.client(&doomed_agent).await;
        let o = server.client(&other_agent).await;
        // Each server unwraps both tenants' keys and caches their data.
        reveal(&d).await.expect("reveal before the shred");
        resolve(&d).await.expect("resolve before the shred");
        reveal(&o).await.expect("other tenant");
        doomed_clients.push(d);
        other_clients.push(o);
    }
    assert_eq!(rows_left(&primary, &doomed.tenant_id).await, (1, 1, 1));
    let operator = primary.operator().await;

    // Refused, changing nothing: a tenant admin, a wrong confirmation, no
    // reason.
    let mut by_admin = shred_request(&doomed.tenant_id, "doomed", "offboarded");
    expect_code(
        doomed.client.admin().shred_tenant(by_admin.clone()).await,
        Code::PermissionDenied,
        "a tenant admin may not shred",
    );
    by_admin.confirm_name = "doomed2".into();
    expect_invalid(
        operator.admin().shred_tenant(by_admin.clone()).await,
        "confirm_name",
        "a wrong confirmation",
    );
    by_admin.confirm_name = other.name.clone();
    expect_invalid(
        operator.admin().shred_tenant(by_admin).await,
        "confirm_name",
        "another tenant's name",
    );
    expect_invalid(
        operator
            .admin()
            .shred_tenant(shred_request(&doomed.tenant_id, "doomed", " "))
            .await,
        "reason",
        "no reason",
    );
    assert!(shred_events(&operator).await.is_empty());
    assert_eq!(rows_left(&primary, &doomed.tenant_id).await, (1, 1, 1));
    for d in &doomed_clients {
        reveal(d)
            .await
            .expect("still revealed after refused shreds");
    }

    // Shred through the replica.
    let replica_operator = replica.operator().await;
    let shredded = replica_operator
        .admin()
        .shred_tenant(shred_request(&doomed.tenant_id, "doomed", "offboarded"))
        .await
        .expect("shred")
        .into_inner();
    let tombstone = shredded.tenant.clone().expect("tenant");
    assert_eq!(tombstone.status, pb::TenantStatus::Shredded as i32);
    assert!(!shredded.purged);

    // Every reveal and resolve of the tenant fails, typed, on both servers,
    // the first one included (the primary learns it by notice or at the
    // reveal's commit).
    for (i, d) in doomed_clients.iter().enumerate() {
        assert_shredded(reveal(d).await, &format!("reveal on server {i}"));
        assert_shredded(resolve(d).await, &format!("resolve on server {i}"));
        assert_shredded(reveal(d).await, &format!("reveal again on server {i}"));
    }
    for server in servers {
        // A fresh connection (no cached caller) too.
        let fresh = server.client(&doomed_agent).await;
        assert_shredded(reveal(&fresh).await, "reveal on a fresh connection");
    }
    // Nothing sealed is left: the root key alone decrypts nothing.
    assert_eq!(rows_left(&primary, &doomed.tenant_id).await, (0, 0, 1));

    // The other tenant is unaffected, on both servers.
    for o in &other_clients {
        let r = reveal(o).await.expect("other tenant still reveals");
        assert_eq!(
            strongroom_e2e::api_key_text(strongroom_e2e::revealed_value(&r)),
            OTHER_SECRET
        );
    }
    assert_eq!(rows_left(&primary, &other.tenant_id).await, (1, 1, 1));

    // Recorded once in the platform chain; a repeat returns the same and
    // writes nothing.
    let events = shred_events(&operator).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(events[0].detail.contains(&doomed.tenant_id));
    let repeat = operator
        .admin()
        .shred_tenant(shred_request(&doomed.tenant_id, "doomed", "again"))
        .await
        .expect("repeat")
        .into_inner();
    assert_eq!(repeat, shredded);
    assert_eq!(shred_events(&operator).await.len(), 1);
    // Metadata stays for platform operators.
    let kept = operator
        .admin()
        .get_tenant(pb::GetTenantRequest {
            tenant_id: doomed.tenant_id.clone(),
        })
        .await
        .expect("get tenant")
        .into_inner()
        .tenant
        .expect("tenant");
    assert_eq!(kept.status, pb::TenantStatus::Shredded as i32);

    for server in servers {
        assert!(!server.logs.contains(DOOMED_SECRET));
    }
    replica.stop().await;
    primary.stop().await;
}
