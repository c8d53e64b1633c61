//! Guards against one tenant's admin reaching beyond its environments:
//! admins confined to environments cannot manage the tenant. (Identities
//! beyond the tenant's identity namespaces: see `namespaces.rs`.)

use strongroom_e2e::{Backend, TestServer, expect_code};
use strongroom_proto::v1 as pb;

on_both_backends!(confined_admin_cannot_manage_the_tenant);

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
