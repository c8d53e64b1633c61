//! Authorization: default deny for agents, grants that expire, environment
//! confinement, and viewers who never receive a value. Every denial is
//! audited with its reason.

use std::time::{Duration, SystemTime};

use strongroom_client::Client;
use strongroom_e2e::{
    Backend, TenantAdmin, TestServer, api_key, api_key_text, assert_free_of, audit_events, by_id,
    expect_code, expect_invalid, grant, path, revealed_value, value,
};
use strongroom_proto::v1 as pb;
use strongroom_proto::v1::credential_value::Value;
use tonic::Code;

on_both_backends!(
    agent_without_grant,
    expired_grant,
    environment_confinement,
    viewer_never_sees_values,
    refused_admin_reads_are_audited_as_themselves,
);

async fn create(admin: &TenantAdmin, environment: &str, name: &str, key: &str) -> String {
    admin
        .client
        .credentials()
        .create_credential(pb::CreateCredentialRequest {
            environment: environment.into(),
            name: name.into(),
            service: "openai".into(),
            value: api_key(key),
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner()
        .credential
        .expect("credential")
        .id
}

async fn reveal(
    client: &Client,
    credential: Option<pb::CredentialRef>,
    purpose: &str,
) -> Result<pb::RevealCredentialResponse, tonic::Status> {
    client
        .credentials()
        .reveal_credential(pb::RevealCredentialRequest {
            credential,
            purpose: purpose.into(),
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

/// The DENIED audit events caused by `principal_id`.
async fn denials(admin: &TenantAdmin, principal_id: &str) -> Vec<pb::AuditEvent> {
    let events = audit_events(
        &admin.client,
        pb::QueryEventsRequest {
            principal_id: principal_id.into(),
            outcome: pb::AuditOutcome::Denied as i32,
            ..Default::default()
        },
    )
    .await;
    for e in &events {
        assert_eq!(e.principal_id, principal_id, "principal filter ignored");
        assert_eq!(
            e.outcome(),
            pb::AuditOutcome::Denied,
            "outcome filter ignored"
        );
    }
    events
}

/// Asserts that a denied reveal of `credential_id` with `reason` is audited.
#[track_caller]
fn assert_denial(events: &[pb::AuditEvent], credential_id: &str, reason: &str) {
    assert!(
        events
            .iter()
            .any(|e| e.action() == pb::AuditAction::CredentialReveal
                && e.credential_id == credential_id
                && e.reason_code == reason),
        "no DENIED reveal of {credential_id} with reason {reason} in {events:#?}"
    );
}

async fn agent_without_grant(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = server.tenant("acme").await;
    let (agent_id, agent) = server.principal(&acme, "agent", pb::Role::Agent).await;
    let id = create(&acme, "dev", "llm/openai", "sk-e2e-policy-no-grant").await;
    assert!(denials(&acme, &agent_id).await.is_empty());

    let denied = expect_code(
        reveal(&agent, by_id(&id), "summarise tickets").await,
        // Without read_metadata the agent may not learn that it exists.
        Code::NotFound,
        "agent reveal without a grant",
    );
    assert!(!denied.message().contains("sk-e2e-policy-no-grant"));
    let events = denials(&acme, &agent_id).await;
    assert_denial(&events, &id, "NO_MATCHING_GRANT");
    let e = events
        .iter()
        .find(|e| e.reason_code == "NO_MATCHING_GRANT")
        .expect("denial");
    assert_eq!(e.credential_name, "llm/openai");
    assert_eq!(e.environment, "dev");
    assert_eq!(e.tenant_id, acme.tenant_id);

    // A grant for something else does not help.
    grant(
        &acme,
        &agent_id,
        "tools/*",
        &["dev"],
        &[pb::Capability::Reveal],
        None,
    )
    .await;
    expect_code(
        reveal(&agent, path("dev", "llm/openai"), "summarise tickets").await,
        Code::NotFound,
        "agent reveal with a grant for other names",
    );

    // With a matching grant, the purpose is still required of an agent.
    grant(
        &acme,
        &agent_id,
        "llm/*",
        &["dev"],
        &[pb::Capability::Reveal],
        None,
    )
    .await;
    for purpose in ["", "   "] {
        expect_invalid(
            reveal(&agent, by_id(&id), purpose).await,
            "purpose",
            "agent reveal without a purpose",
        );
    }
    let ok = reveal(&agent, by_id(&id), "summarise tickets")
        .await
        .expect("agent reveal with grant and purpose");
    assert_eq!(api_key_text(revealed_value(&ok)), "sk-e2e-policy-no-grant");
    let allowed = audit_events(
        &acme.client,
        pb::QueryEventsRequest {
            principal_id: agent_id.clone(),
            outcome: pb::AuditOutcome::Allowed as i32,
            ..Default::default()
        },
    )
    .await;
    assert!(
        allowed
            .iter()
            .any(|e| e.action() == pb::AuditAction::CredentialReveal
                && e.credential_id == id
                && e.purpose == "summarise tickets"),
        "the allowed reveal and its purpose are not audited: {allowed:#?}"
    );
}

async fn expired_grant(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = server.tenant("acme").await;
    let (agent_id, agent) = server.principal(&acme, "agent", pb::Role::Agent).await;
    let id = create(&acme, "dev", "llm/openai", "sk-e2e-policy-expiring").await;
    let expires = SystemTime::now() + Duration::from_secs(2);
    grant(
        &acme,
        &agent_id,
        "llm/openai",
        &["dev"],
        &[pb::Capability::Reveal],
        Some(expires),
    )
    .await;

    let ok = reveal(&agent, by_id(&id), "before expiry")
        .await
        .expect("reveal while the grant is valid");
    assert!(
        SystemTime::now() < expires,
        "too slow: the grant expired before it could be used"
    );
    assert_eq!(api_key_text(revealed_value(&ok)), "sk-e2e-policy-expiring");

    // Wait until the expiry has passed, in small steps.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while SystemTime::now() <= expires + Duration::from_millis(50) {
        assert!(tokio::time::Instant::now() < deadline, "clock stuck");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    expect_code(
        reveal(&agent, by_id(&id), "after expiry").await,
        Code::NotFound,
        "reveal with an expired grant",
    );
    assert_denial(&denials(&acme, &agent_id).await, &id, "GRANT_EXPIRED");

    // Expired grants are not listed unless asked for.
    let mut policy = acme.client.policy();
    let listed = policy
        .list_grants(pb::ListGrantsRequest {
            principal_id: agent_id.clone(),
            ..Default::default()
        })
        .await
        .expect("list grants")
        .into_inner()
        .grants;
    assert!(listed.is_empty(), "an expired grant is listed: {listed:?}");
    let with_expired = policy
        .list_grants(pb::ListGrantsRequest {
            principal_id: agent_id.clone(),
            include_expired: true,
            ..Default::default()
        })
        .await
        .expect("list grants")
        .into_inner()
        .grants;
    assert_eq!(with_expired.len(), 1);

    // A grant already in the past is refused.
    let past = strongroom_e2e::timestamp(SystemTime::now() - Duration::from_secs(60));
    expect_invalid(
        policy
            .create_grant(pb::CreateGrantRequest {
                subject: Some(pb::GrantSubject {
                    subject: Some(pb::grant_subject::Subject::PrincipalId(agent_id.clone())),
                }),
                selector: "llm/openai".into(),
                environments: vec!["dev".into()],
                capabilities: vec![pb::Capability::Reveal as i32],
                expires_at: Some(past),
                ..Default::default()
            })
            .await,
        "expires_at",
        "a grant expiring in the past",
    );
}

async fn environment_confinement(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = server.tenant("acme").await;
    let (agent_id, agent) = server
        .principal_in(&acme, "dev-agent", pb::Role::Agent, &["dev"])
        .await;
    let dev = create(&acme, "dev", "app/key", "sk-e2e-policy-dev").await;
    let prod = create(&acme, "production", "app/key", "sk-e2e-policy-prod").await;
    grant(
        &acme,
        &agent_id,
        "app/*",
        &["dev", "production"],
        &[pb::Capability::Reveal],
        None,
    )
    .await;

    let ok = reveal(&agent, by_id(&dev), "dev work")
        .await
        .expect("reveal in the permitted environment");
    assert_eq!(api_key_text(revealed_value(&ok)), "sk-e2e-policy-dev");
    for credential in [by_id(&prod), path("production", "app/key")] {
        let s = expect_code(
            reveal(&agent, credential, "dev work").await,
            Code::NotFound,
            "reveal outside the confinement",
        );
        assert!(!s.message().contains("sk-e2e-policy-prod"));
    }
    expect_code(
        agent
            .credentials()
            .resolve_credential(pb::ResolveCredentialRequest {
                service: "openai".into(),
                environment: "production".into(),
                purpose: "dev work".into(),
                ..Default::default()
            })
            .await,
        Code::PermissionDenied,
        "resolve outside the confinement",
    );
    assert_denial(
        &denials(&acme, &agent_id).await,
        &prod,
        "ENVIRONMENT_NOT_PERMITTED",
    );
}

async fn viewer_never_sees_values(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = server.tenant("acme").await;
    let (viewer_id, viewer) = server.principal(&acme, "auditor", pb::Role::Viewer).await;
    let secrets = [
        "sk-e2e-viewer-api-key",
        "e2e-viewer-db-password",
        "e2e-viewer-custom-field",
    ];
    let values = [
        ("llm/openai", api_key(secrets[0])),
        (
            "db/main",
            value(Value::DbConnection(pb::DbConnection {
                host: "db.internal".into(),
                port: 5432,
                database: "app".into(),
                username: "app".into(),
                password: secrets[1].into(),
                ssl_mode: 0,
            })),
        ),
        (
            "misc/custom",
            value(Value::Custom(pb::CustomSecret {
                fields: [("token".to_owned(), secrets[2].to_owned())]
                    .into_iter()
                    .collect(),
            })),
        ),
    ];
    let mut ids = Vec::new();
    for (name, v) in values {
        let id = acme
            .client
            .credentials()
            .create_credential(pb::CreateCredentialRequest {
                environment: "production".into(),
                name: name.into(),
                service: "svc".into(),
                value: v,
                ..Default::default()
            })
            .await
            .expect("create")
            .into_inner()
            .credential
            .expect("credential")
            .id;
        ids.push(id);
    }

    // An explicit reveal grant for the viewer: either refused outright (the
    // contract says reveal cannot be granted to a viewer) or powerless.
    let granted = acme
        .client
        .policy()
        .create_grant(pb::CreateGrantRequest {
            subject: Some(pb::GrantSubject {
                subject: Some(pb::grant_subject::Subject::PrincipalId(viewer_id.clone())),
            }),
            selector: "*".into(),
            environments: vec!["production".into()],
            capabilities: vec![pb::Capability::Reveal as i32],
            ..Default::default()
        })
        .await;
    if let Err(s) = &granted {
        assert!(
            matches!(
                s.code(),
                Code::InvalidArgument | Code::PermissionDenied | Code::FailedPrecondition
            ),
            "{s:?}"
        );
    }

    // Metadata: list, get and versions work and carry no value.
    let mut creds = viewer.credentials();
    let list = creds
        .list_credentials(pb::ListCredentialsRequest::default())
        .await
        .expect("viewer lists")
        .into_inner();
    assert_eq!(list.credentials.len(), 3, "viewer sees every credential");
    assert_free_of(&list, &secrets, "ListCredentialsResponse");
    for id in &ids {
        let got = creds
            .get_credential(pb::GetCredentialRequest {
                credential: by_id(id),
            })
            .await
            .expect("viewer gets")
            .into_inner();
        assert_eq!(
            got.credential.as_ref().map(|c| c.id.as_str()),
            Some(id.as_str())
        );
        assert_free_of(&got, &secrets, "GetCredentialResponse");
        let versions = creds
            .list_versions(pb::ListVersionsRequest {
                credential: by_id(id),
                ..Default::default()
            })
            .await
            .expect("viewer lists versions")
            .into_inner();
        assert_free_of(&versions, &secrets, "ListVersionsResponse");
    }
    let by_path = creds
        .get_credential(pb::GetCredentialRequest {
            credential: path("production", "db/main"),
        })
        .await
        .expect("viewer gets by path")
        .into_inner();
    assert_free_of(&by_path, &secrets, "GetCredentialResponse by path");

    // Values: never, in any form.
    for id in &ids {
        let s = expect_code(
            reveal(&viewer, by_id(id), "audit").await,
            Code::PermissionDenied,
            "viewer reveal",
        );
        assert!(secrets.iter().all(|x| !s.message().contains(x)));
    }
    expect_code(
        creds
            .reveal_credential(pb::RevealCredentialRequest {
                credential: path("production", "db/main"),
                field: "password".into(),
                purpose: "audit".into(),
                ..Default::default()
            })
            .await,
        Code::PermissionDenied,
        "viewer field reveal",
    );
    expect_code(
        creds
            .resolve_credential(pb::ResolveCredentialRequest {
                service: "svc".into(),
                environment: "production".into(),
                name: "llm/openai".into(),
                purpose: "audit".into(),
                ..Default::default()
            })
            .await,
        Code::PermissionDenied,
        "viewer resolve",
    );
    expect_code(
        creds
            .rotate_credential(pb::RotateCredentialRequest {
                credential: by_id(&ids[0]),
                new_value: Some(pb::rotate_credential_request::NewValue::Value(
                    api_key("sk-e2e-viewer-overwrite").expect("value"),
                )),
                ..Default::default()
            })
            .await,
        Code::PermissionDenied,
        "viewer rotate",
    );
    let events = denials(&acme, &viewer_id).await;
    assert_denial(&events, &ids[0], "ROLE_FORBIDS_VALUES");
    for e in &events {
        assert_free_of(e, &secrets, "AuditEvent");
    }
}

/// Reading another principal, listing principals and listing identity
/// bindings need the admin role; each refusal is audited under the action
/// that was refused, never as a creation.
async fn refused_admin_reads_are_audited_as_themselves(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = server.tenant("acme").await;
    let (agent_id, agent) = server.principal(&acme, "agent", pb::Role::Agent).await;
    let mut admin_service = agent.admin();
    expect_code(
        admin_service
            .get_principal(pb::GetPrincipalRequest {
                principal_id: acme.principal_id.clone(),
            })
            .await,
        Code::PermissionDenied,
        "an agent reads the admin principal",
    );
    // Its own principal it may read, unaudited.
    admin_service
        .get_principal(pb::GetPrincipalRequest {
            principal_id: agent_id.clone(),
        })
        .await
        .expect("the agent reads its own principal");
    expect_code(
        admin_service
            .list_principals(pb::ListPrincipalsRequest::default())
            .await,
        Code::PermissionDenied,
        "an agent lists principals",
    );
    expect_code(
        admin_service
            .list_identity_bindings(pb::ListIdentityBindingsRequest::default())
            .await,
        Code::PermissionDenied,
        "an agent lists identity bindings",
    );

    let events = denials(&acme, &agent_id).await;
    let seen: Vec<(pb::AuditAction, &str)> = events
        .iter()
        .map(|e| (e.action(), e.reason_code.as_str()))
        .collect();
    for action in [
        pb::AuditAction::PrincipalRead,
        pb::AuditAction::PrincipalList,
        pb::AuditAction::IdentityBindingList,
    ] {
        assert_eq!(
            seen.iter().filter(|(a, _)| *a == action).count(),
            1,
            "one refusal audited as {action:?}: {seen:?}"
        );
        assert!(
            seen.contains(&(action, "ROLE_NOT_ADMIN")),
            "{action:?} refused for the role: {seen:?}"
        );
    }
    assert_eq!(seen.len(), 3, "nothing else was refused: {seen:?}");
    assert!(
        !seen.iter().any(|(a, _)| matches!(
            a,
            pb::AuditAction::PrincipalCreate | pb::AuditAction::IdentityBindingCreate
        )),
        "no refusal is recorded as a creation: {seen:?}"
    );
    // The audit filter finds them by their action too.
    let listed = audit_events(
        &acme.client,
        pb::QueryEventsRequest {
            actions: vec![pb::AuditAction::IdentityBindingList as i32],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].principal_id, agent_id);
    server.stop().await;
}
