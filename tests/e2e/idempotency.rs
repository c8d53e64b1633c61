//! Idempotent retries (`request_id`, see `common.proto`): a retry of a
//! create, a grant and a rotation returns the first call's response and
//! writes nothing (no object, version or audit event); the same id with a
//! different request is refused FAILED_PRECONDITION; callers do not
//! collide (a platform operator's calls included); an over-long id is
//! INVALID_ARGUMENT; concurrent calls with one
//! id act once; the stored records hold no form of a value the requests
//! carried; records expire after the retention window and are purged.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use strongroom_client::Client;
use strongroom_e2e::{
    Backend, Options, TenantAdmin, TestServer, api_key, expect_code, expect_invalid, path,
    verified_event_count,
};
use strongroom_proto::v1 as pb;
use tonic::Code;

on_both_backends!(retries_change_nothing, concurrent_retries_act_once);

/// A server with a clock the test moves and a sweeper every 100 ms.
async fn server(backend: Backend) -> TestServer {
    TestServer::start_with(Options {
        test_clock: true,
        env: vec![("STRONGROOM_LEASE_SWEEP_INTERVAL_MS".into(), "100".into())],
        ..Options::new(backend)
    })
    .await
}

fn create_request(name: &str, secret: &str, request_id: &str) -> pb::CreateCredentialRequest {
    pb::CreateCredentialRequest {
        environment: "dev".into(),
        name: name.into(),
        service: "stripe".into(),
        value: api_key(secret),
        description: "payments".into(),
        request_id: request_id.into(),
        ..Default::default()
    }
}

fn grant_request(principal_id: &str, request_id: &str) -> pb::CreateGrantRequest {
    pb::CreateGrantRequest {
        subject: Some(pb::GrantSubject {
            subject: Some(pb::grant_subject::Subject::PrincipalId(
                principal_id.to_owned(),
            )),
        }),
        selector: "stripe/*".into(),
        environments: vec!["dev".into()],
        capabilities: vec![pb::Capability::Reveal as i32],
        reason: "e2e".into(),
        request_id: request_id.into(),
        ..Default::default()
    }
}

fn rotate_request(name: &str, secret: &str, request_id: &str) -> pb::RotateCredentialRequest {
    pb::RotateCredentialRequest {
        credential: path("dev", name),
        new_value: Some(pb::rotate_credential_request::NewValue::Value(
            api_key(secret).expect("value"),
        )),
        reason: "scheduled".into(),
        request_id: request_id.into(),
    }
}

async fn credential_count(client: &Client) -> usize {
    client
        .credentials()
        .list_credentials(pb::ListCredentialsRequest::default())
        .await
        .expect("list credentials")
        .into_inner()
        .credentials
        .len()
}

async fn grant_count(client: &Client) -> usize {
    client
        .policy()
        .list_grants(pb::ListGrantsRequest::default())
        .await
        .expect("list grants")
        .into_inner()
        .grants
        .len()
}

async fn version_count(client: &Client, name: &str) -> usize {
    client
        .credentials()
        .list_versions(pb::ListVersionsRequest {
            credential: path("dev", name),
            ..Default::default()
        })
        .await
        .expect("list versions")
        .into_inner()
        .versions
        .len()
}

/// What the tenant holds: credentials, grants, versions of `name`, and
/// audit events (the chain verified).
async fn state(admin: &TenantAdmin, name: &str) -> (usize, usize, usize, u64) {
    (
        credential_count(&admin.client).await,
        grant_count(&admin.client).await,
        version_count(&admin.client, name).await,
        verified_event_count(&admin.client).await,
    )
}

/// Every stored idempotency record's columns, as bytes.
async fn idempotency_rows(server: &TestServer) -> Vec<Vec<Vec<u8>>> {
    use sqlx::Connection;
    const SQL: &str = "SELECT principal, rpc, request_id, fingerprint, response, \
                       claimed_at, expires_at FROM idempotency_keys";
    type Row = (String, String, String, Vec<u8>, Option<Vec<u8>>, i64, i64);
    let rows: Vec<Row> = match &server.database {
        Some(db) => {
            let url = format!(
                "{}/{db}",
                strongroom_e2e::admin_url().rsplit_once('/').expect("url").0
            );
            let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
            sqlx::query_as(SQL)
                .fetch_all(&mut conn)
                .await
                .expect("dump")
        }
        None => {
            let path = server.dir.path().join("strongroom.db");
            let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
                .await
                .expect("open the SQLite file");
            sqlx::query_as(SQL)
                .fetch_all(&mut conn)
                .await
                .expect("dump")
        }
    };
    rows.into_iter()
        .map(
            |(principal, rpc, request_id, fingerprint, response, claimed, expires)| {
                vec![
                    principal.into_bytes(),
                    rpc.into_bytes(),
                    request_id.into_bytes(),
                    fingerprint,
                    response.unwrap_or_default(),
                    claimed.to_string().into_bytes(),
                    expires.to_string().into_bytes(),
                ]
            },
        )
        .collect()
}

/// Every encoding in which a stored value could show up.
fn forms(secret: &str) -> Vec<Vec<u8>> {
    let bytes = secret.as_bytes();
    let mut out: Vec<Vec<u8>> = vec![
        bytes.to_vec(),
        STANDARD.encode(bytes).into_bytes(),
        STANDARD_NO_PAD.encode(bytes).into_bytes(),
        URL_SAFE.encode(bytes).into_bytes(),
        URL_SAFE_NO_PAD.encode(bytes).into_bytes(),
        hex::encode(bytes).into_bytes(),
        hex::encode_upper(bytes).into_bytes(),
    ];
    // base64 at the other two alignments (the value inside a longer
    // encoded field), without the edge characters that depend on the
    // neighbours.
    for pad in 1..3 {
        let mut shifted = vec![0u8; pad];
        shifted.extend_from_slice(bytes);
        let encoded = STANDARD_NO_PAD.encode(&shifted);
        out.push(encoded.as_bytes()[4..encoded.len() - 4].to_vec());
    }
    out
}

async fn retries_change_nothing(backend: Backend) {
    let server = server(backend).await;
    let acme = server.tenant("acme").await;
    let (agent_id, _agent) = server.principal(&acme, "agent", pb::Role::Agent).await;
    let (_, second_admin) = server.principal(&acme, "admin2", pb::Role::Admin).await;
    let secret = format!("sk_live_IDEM{}", uuid::Uuid::new_v4().simple());
    let rotated = format!("sk_live_ROT{}", uuid::Uuid::new_v4().simple());
    let mut creds = acme.client.credentials();

    // A create, then its retry: the same response, nothing written.
    let first = creds
        .create_credential(create_request("stripe/main", &secret, "create-1"))
        .await
        .expect("create")
        .into_inner();
    let after_create = state(&acme, "stripe/main").await;
    let retry = creds
        .create_credential(create_request("stripe/main", &secret, "create-1"))
        .await
        .expect("retried create")
        .into_inner();
    assert_eq!(
        retry, first,
        "a retry answers the first response, ids included"
    );
    assert_eq!(
        state(&acme, "stripe/main").await,
        after_create,
        "a retry writes nothing"
    );

    // The same id with another request: refused, naming request_id.
    let mut other = create_request("stripe/main", &secret, "create-1");
    other.description = "something else".into();
    let refused = expect_code(
        creds.create_credential(other).await,
        Code::FailedPrecondition,
        "same id, other description",
    );
    assert!(refused.message().contains("request_id"), "{refused:?}");
    // The value takes part in the fingerprint.
    let refused = expect_code(
        creds
            .create_credential(create_request("stripe/main", "sk_live_other", "create-1"))
            .await,
        Code::FailedPrecondition,
        "same id, other value",
    );
    assert!(refused.message().contains("request_id"), "{refused:?}");
    assert_eq!(state(&acme, "stripe/main").await, after_create);

    // Another caller's id does not collide: the second admin's call with
    // "create-1" acts (and, as the name is taken, is refused on its own
    // merits).
    let theirs = second_admin
        .credentials()
        .create_credential(create_request("stripe/other", &secret, "create-1"))
        .await
        .expect("another caller's create-1")
        .into_inner();
    assert_ne!(
        theirs.credential.as_ref().expect("credential").id,
        first.credential.as_ref().expect("credential").id
    );
    expect_code(
        second_admin
            .credentials()
            .create_credential(create_request("stripe/main", &secret, "create-2"))
            .await,
        Code::AlreadyExists,
        "a create of a taken name",
    );
    // A failed call released its id: the same id with a good request acts.
    second_admin
        .credentials()
        .create_credential(create_request("stripe/third", &secret, "create-2"))
        .await
        .expect("the id of a failed call is free again");

    // A grant, then its retry.
    let mut policy = acme.client.policy();
    let grant = policy
        .create_grant(grant_request(&agent_id, "grant-1"))
        .await
        .expect("grant")
        .into_inner();
    let after_grant = state(&acme, "stripe/main").await;
    let again = policy
        .create_grant(grant_request(&agent_id, "grant-1"))
        .await
        .expect("retried grant")
        .into_inner();
    assert_eq!(again, grant);
    assert_eq!(state(&acme, "stripe/main").await, after_grant);
    let mut wider = grant_request(&agent_id, "grant-1");
    wider.environments.push("prod".into());
    expect_code(
        policy.create_grant(wider).await,
        Code::FailedPrecondition,
        "same id, wider grant",
    );

    // A rotation, then its retry: still two versions.
    let rotation = creds
        .rotate_credential(rotate_request("stripe/main", &rotated, "rotate-1"))
        .await
        .expect("rotate")
        .into_inner();
    assert_eq!(rotation.version, 2);
    let after_rotate = state(&acme, "stripe/main").await;
    assert_eq!(after_rotate.2, 2);
    let again = creds
        .rotate_credential(rotate_request("stripe/main", &rotated, "rotate-1"))
        .await
        .expect("retried rotation")
        .into_inner();
    assert_eq!(again, rotation);
    assert_eq!(state(&acme, "stripe/main").await, after_rotate);
    expect_code(
        creds
            .rotate_credential(rotate_request("stripe/main", &secret, "rotate-1"))
            .await,
        Code::FailedPrecondition,
        "same id, other value",
    );

    // An id over 128 characters.
    expect_invalid(
        creds
            .create_credential(create_request("stripe/long", &secret, &"x".repeat(129)))
            .await,
        "request_id",
        "a 129-character request id",
    );
    creds
        .create_credential(create_request("stripe/long", &secret, &"x".repeat(128)))
        .await
        .expect("a 128-character request id");

    // A platform operator's call: a tenant created once.
    let mut operator = server.operator().await.admin();
    let tenant = |name: &str| pb::CreateTenantRequest {
        name: name.into(),
        identity_namespaces: vec![format!("spiffe://e2e.test/{name}/*")],
        request_id: "tenant-1".into(),
        ..Default::default()
    };
    let created = operator
        .create_tenant(tenant("beta"))
        .await
        .expect("create tenant")
        .into_inner();
    let again = operator
        .create_tenant(tenant("beta"))
        .await
        .expect("retried create tenant")
        .into_inner();
    assert_eq!(again, created);
    expect_code(
        operator.create_tenant(tenant("gamma")).await,
        Code::FailedPrecondition,
        "same id, other tenant",
    );
    let tenants = operator
        .list_tenants(pb::ListTenantsRequest::default())
        .await
        .expect("list tenants")
        .into_inner()
        .tenants;
    assert_eq!(tenants.iter().filter(|t| t.name == "beta").count(), 1);
    assert!(!tenants.iter().any(|t| t.name == "gamma"));

    // The records hold no form of either value, in any column.
    let rows = idempotency_rows(&server).await;
    assert!(rows.len() >= 6, "records: {}", rows.len());
    for value in [&secret, &rotated] {
        for form in forms(value) {
            for row in &rows {
                for column in row {
                    assert!(
                        !column.windows(form.len()).any(|w| w == form.as_slice()),
                        "an idempotency record holds a form of a value"
                    );
                }
            }
        }
    }

    // After the retention window the records are purged, and the id acts
    // again (the name is taken now).
    server.advance_clock(Duration::from_secs(25 * 3600));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !idempotency_rows(&server).await.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "records not purged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    expect_code(
        creds
            .create_credential(create_request("stripe/main", &secret, "create-1"))
            .await,
        Code::AlreadyExists,
        "an expired id acts again",
    );
    server.stop().await;
}

async fn concurrent_retries_act_once(backend: Backend) {
    let server = server(backend).await;
    let acme = server.tenant("acme").await;
    let (agent_id, _agent) = server.principal(&acme, "agent", pb::Role::Agent).await;
    let before = grant_count(&acme.client).await;
    let mut calls = Vec::new();
    for _ in 0..8 {
        let mut policy = acme.client.policy();
        let request = grant_request(&agent_id, "race-1");
        calls.push(tokio::spawn(
            async move { policy.create_grant(request).await },
        ));
    }
    let mut ids = Vec::new();
    for call in calls {
        match call.await.expect("task") {
            Ok(response) => ids.push(response.into_inner().grant.expect("grant").id),
            Err(status) => assert_eq!(status.code(), Code::Aborted, "{status:?}"),
        }
    }
    assert!(!ids.is_empty());
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "one grant answered: {ids:?}"
    );
    assert_eq!(
        grant_count(&acme.client).await,
        before + 1,
        "one grant made"
    );
    server.stop().await;
}
