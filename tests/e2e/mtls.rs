//! Mutual TLS: who gets in. No certificate, a certificate from another CA and
//! an expired one are refused in the handshake (and logged); a valid
//! certificate whose identity is bound nowhere is refused as
//! UNAUTHENTICATED; a CN-only certificate bound by its exact CN works.

use std::time::Duration;

use strongroom_e2e::{Backend, CertKind, TestCa, TestServer, expect_code};
use strongroom_proto::v1 as pb;
use strongroom_proto::v1::admin_service_client::AdminServiceClient;
use tonic::Code;

on_both_backends!(
    refused_certificates,
    unknown_identity,
    common_name_identity,
    tenant_header_must_name_a_tenant
);

const REFUSED: &str = "TLS handshake refused";

/// Connects presenting `identity` (or no certificate) and makes one call;
/// asserts that the connection or the call fails at the transport level,
/// never with an answer from a handler.
async fn assert_refused(server: &TestServer, identity: Option<(&str, &str)>, what: &str) {
    let channel = match server.channel(identity).await {
        Err(_) => return,
        Ok(channel) => channel,
    };
    // TLS 1.3 finishes the client side of the handshake before the server
    // has checked the client's certificate, so the refusal may only show on
    // the first call.
    let result = AdminServiceClient::new(channel)
        .who_am_i(pb::WhoAmIRequest {})
        .await;
    match result {
        Ok(r) => panic!("{what}: the call succeeded: {r:?}"),
        Err(s) => assert_transport_failure(&s, what),
    }
}

/// A call that died with its connection (the server closed it after its
/// alert), as opposed to a status a handler answered with.
#[track_caller]
fn assert_transport_failure(status: &tonic::Status, what: &str) {
    assert!(
        matches!(
            status.code(),
            Code::Unavailable | Code::Unknown | Code::Cancelled
        ),
        "{what}: expected a transport failure, got {status:?}"
    );
}

async fn refused_certificates(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = server.tenant("acme").await;
    let wait = Duration::from_secs(10);

    // Control: the admin's own, valid certificate works on a raw channel.
    let (cert, key) = server.ca.client_cert(&acme.identity, CertKind::Spiffe);
    let me = AdminServiceClient::new(
        server
            .channel(Some((&cert, &key)))
            .await
            .expect("connect with a valid certificate"),
    )
    .who_am_i(pb::WhoAmIRequest {})
    .await
    .expect("a valid certificate is accepted")
    .into_inner();
    assert_eq!(me.identity, acme.identity);
    assert_eq!(server.logs.matching(REFUSED).len(), 0);

    // No client certificate at all.
    assert_refused(&server, None, "no client certificate").await;
    server
        .logs
        .wait_for_line(&[REFUSED, "peer sent no certificates"], wait)
        .await;

    // The identity of a bound admin, but signed by another CA.
    let other = TestCa::new("other");
    let (cert, key) = other.client_cert(&acme.identity, CertKind::Spiffe);
    assert_refused(&server, Some((&cert, &key)), "certificate of another CA").await;
    server
        .logs
        .wait_for_line(&[REFUSED, "UnknownIssuer"], wait)
        .await;
    // The same through the typed client.
    let config = server.client_config_from_pem(&cert, &key);
    if let Ok(client) = strongroom_client::Client::connect(&config).await {
        match client.admin().who_am_i(pb::WhoAmIRequest {}).await {
            Ok(r) => panic!("typed client with a foreign certificate: accepted: {r:?}"),
            Err(s) => assert_transport_failure(&s, "typed client with a foreign certificate"),
        }
    }

    // An expired certificate from the server's own CA, for a bound identity.
    let (cert, key) = server.ca.client_cert(&acme.identity, CertKind::Expired);
    assert_refused(&server, Some((&cert, &key)), "expired certificate").await;
    server.logs.wait_for_line(&[REFUSED, "xpired"], wait).await;

    // Refusals never reached a handler.
    assert!(
        !server.logs.contains("authentication refused"),
        "a refused certificate reached authentication"
    );
    let status = server.stop().await;
    assert!(status.success(), "strongroomd exited with {status}");
}

async fn unknown_identity(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = server.tenant("acme").await;
    let nobody = "spiffe://e2e.test/acme/nobody";
    let stranger = server.client(nobody).await;
    let s = expect_code(
        stranger.admin().who_am_i(pb::WhoAmIRequest {}).await,
        Code::Unauthenticated,
        "WhoAmI with an unbound identity",
    );
    assert!(!s.message().contains("acme"), "{s:?}");
    expect_code(
        stranger
            .credentials()
            .list_credentials(pb::ListCredentialsRequest::default())
            .await,
        Code::Unauthenticated,
        "ListCredentials with an unbound identity",
    );
    let lines = server
        .logs
        .wait_for("authentication refused", 2, Duration::from_secs(10))
        .await;
    assert!(
        lines.iter().all(|l| l.contains(nobody)),
        "the refused identity is not logged: {lines:?}"
    );
    // The handshake itself succeeded: this is not a TLS refusal.
    assert!(!server.logs.contains(REFUSED));
    // A binding makes the very same certificate work.
    let p = acme
        .client
        .admin()
        .create_principal(pb::CreatePrincipalRequest {
            name: "late".into(),
            role: pb::Role::Viewer as i32,
            ..Default::default()
        })
        .await
        .expect("create principal")
        .into_inner()
        .principal
        .expect("principal");
    acme.client
        .admin()
        .create_identity_binding(pb::CreateIdentityBindingRequest {
            principal_id: p.id.clone(),
            identity: nobody.into(),
            ..Default::default()
        })
        .await
        .expect("bind");
    let me = stranger
        .admin()
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .expect("WhoAmI once bound")
        .into_inner();
    assert_eq!(me.principal.map(|p| p.id), Some(p.id));
}

async fn common_name_identity(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = server
        .tenant_with("acme", &["billing-worker.acme.internal"])
        .await;
    let cn = "billing-worker.acme.internal";
    let p = acme
        .client
        .admin()
        .create_principal(pb::CreatePrincipalRequest {
            name: "billing-worker".into(),
            role: pb::Role::Operator as i32,
            ..Default::default()
        })
        .await
        .expect("create principal")
        .into_inner()
        .principal
        .expect("principal");
    acme.client
        .admin()
        .create_identity_binding(pb::CreateIdentityBindingRequest {
            principal_id: p.id.clone(),
            identity: cn.into(),
            ..Default::default()
        })
        .await
        .expect("bind the CN");
    let worker =
        strongroom_client::Client::connect(&server.client_config(cn, CertKind::CommonName))
            .await
            .expect("connect with a CN-only certificate");
    let me = worker
        .admin()
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .expect("WhoAmI with a CN-only certificate")
        .into_inner();
    assert_eq!(me.identity, cn);
    assert_eq!(me.principal.map(|x| x.id), Some(p.id));
    assert_eq!(me.tenant.map(|t| t.id), Some(acme.tenant_id.clone()));
    worker
        .credentials()
        .list_credentials(pb::ListCredentialsRequest::default())
        .await
        .expect("an operator may list");

    // Exact means exact: another CN with the bound one as a prefix is not
    // the same identity.
    let near = strongroom_client::Client::connect(
        &server.client_config(&format!("{cn}.evil"), CertKind::CommonName),
    )
    .await
    .expect("connect");
    expect_code(
        near.admin().who_am_i(pb::WhoAmIRequest {}).await,
        Code::Unauthenticated,
        "a CN that only starts with the bound CN",
    );
}

/// A `strongroom-tenant` header that is not a tenant name is refused with
/// INVALID_ARGUMENT naming the header, before anything is looked up; a
/// well-formed one is used as before.
async fn tenant_header_must_name_a_tenant(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = server.tenant("acme").await;
    let admin = acme.identity.as_str();
    for bad in ["Not A Name".to_owned(), "a".repeat(8 * 1024)] {
        let mut config = server.client_config(admin, CertKind::Spiffe);
        config.tenant = Some(bad.clone());
        let client = strongroom_client::Client::connect(&config)
            .await
            .expect("connect");
        let s = expect_code(
            client.admin().who_am_i(pb::WhoAmIRequest {}).await,
            Code::InvalidArgument,
            "WhoAmI with a malformed tenant header",
        );
        assert!(s.message().contains("strongroom-tenant"), "{s:?}");
        assert!(!s.message().contains(&bad), "the header was echoed: {s:?}");
    }
    let mut config = server.client_config(admin, CertKind::Spiffe);
    config.tenant = Some("acme".into());
    let client = strongroom_client::Client::connect(&config)
        .await
        .expect("connect");
    client
        .admin()
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .expect("WhoAmI naming the caller's tenant");
    server.stop().await;
}
