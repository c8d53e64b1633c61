//! Guards against one tenant's admin reaching beyond its tenant or its
//! environments: identities owned by another tenant cannot be bound, an
//! identity matched in two tenants is not resolved by specificity, admins
//! confined to environments cannot manage the tenant, and a certificate
//! common name cannot pose as a SPIFFE ID.

use strongroom_client::Client;
use strongroom_e2e::{Backend, CertKind, TestServer, expect_code};
use strongroom_proto::v1 as pb;

on_both_backends!(
    identities_owned_elsewhere_cannot_be_bound,
    confined_admin_cannot_manage_the_tenant
);

async fn bind(
    client: &Client,
    principal_id: &str,
    identity: &str,
) -> Result<pb::CreateIdentityBindingResponse, tonic::Status> {
    client
        .admin()
        .create_identity_binding(pb::CreateIdentityBindingRequest {
            principal_id: principal_id.into(),
            identity: identity.into(),
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn identities_owned_elsewhere_cannot_be_bound(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = server.tenant("acme").await;
    let globex = server.tenant("globex").await;
    let (acme_agent, _) = server.principal(&acme, "agent", pb::Role::Agent).await;
    let (globex_agent, _) = server.principal(&globex, "agent", pb::Role::Agent).await;
    // acme owns every workload under its namespace.
    bind(&acme.client, &acme_agent, "spiffe://mesh/ns/acme/*")
        .await
        .expect("acme prefix");
    // globex can neither capture one of them with a narrower binding, nor
    // take them all with a wider one.
    for identity in [
        "spiffe://mesh/ns/acme/sa/worker",
        "spiffe://mesh/ns/acme/sa/*",
        "spiffe://mesh/*",
    ] {
        expect_code(
            bind(&globex.client, &globex_agent, identity).await,
            tonic::Code::FailedPrecondition,
            identity,
        );
    }
    // acme's workload still authenticates as acme's agent.
    let worker = server.client("spiffe://mesh/ns/acme/sa/worker").await;
    let me = worker
        .admin()
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .expect("who am i")
        .into_inner();
    assert_eq!(me.principal.map(|p| p.id), Some(acme_agent.clone()));
    assert_eq!(me.tenant.map(|t| t.name), Some("acme".to_owned()));
    // Unrelated identities bind fine.
    bind(&globex.client, &globex_agent, "spiffe://mesh/ns/globex/*")
        .await
        .expect("globex prefix");
    // A common name posing as a SPIFFE ID is no identity at all.
    let posing = strongroom_client::Client::connect(
        &server.client_config("spiffe://mesh/ns/acme/sa/worker", CertKind::CommonName),
    )
    .await
    .expect("connect");
    expect_code(
        posing.admin().who_am_i(pb::WhoAmIRequest {}).await,
        tonic::Code::Unauthenticated,
        "CN posing as a SPIFFE ID",
    );
    server.stop().await;
}

async fn confined_admin_cannot_manage_the_tenant(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = server.tenant("acme").await;
    let (_, dev_admin) = server
        .principal_in(&acme, "dev-admin", pb::Role::Admin, &["dev"])
        .await;
    // It may not create an unconfined principal, grant, or change settings.
    expect_code(
        dev_admin
            .admin()
            .create_principal(pb::CreatePrincipalRequest {
                name: "helper".into(),
                role: pb::Role::Agent as i32,
                ..Default::default()
            })
            .await,
        tonic::Code::PermissionDenied,
        "create principal",
    );
    expect_code(
        dev_admin
            .policy()
            .create_grant(pb::CreateGrantRequest {
                subject: Some(pb::GrantSubject {
                    subject: Some(pb::grant_subject::Subject::Role(pb::Role::Agent as i32)),
                }),
                selector: "*".into(),
                environments: vec!["production".into()],
                capabilities: vec![pb::Capability::Reveal as i32],
                ..Default::default()
            })
            .await,
        tonic::Code::PermissionDenied,
        "create grant",
    );
    // It still manages credentials in its own environment, and only there.
    dev_admin
        .credentials()
        .create_credential(pb::CreateCredentialRequest {
            environment: "dev".into(),
            name: "llm/openai".into(),
            service: "openai".into(),
            value: strongroom_e2e::api_key("sk-dev-admin-value"),
            ..Default::default()
        })
        .await
        .expect("create in dev");
    expect_code(
        dev_admin
            .credentials()
            .create_credential(pb::CreateCredentialRequest {
                environment: "production".into(),
                name: "llm/openai".into(),
                service: "openai".into(),
                value: strongroom_e2e::api_key("sk-dev-admin-value"),
                ..Default::default()
            })
            .await,
        tonic::Code::PermissionDenied,
        "create in production",
    );
    server.stop().await;
}
