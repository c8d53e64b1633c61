//! UpdatePrincipal end to end: the fields the mask names change and no
//! others; a mask path that is not updatable is refused naming it, and a
//! refused call changes nothing; narrowing a principal's environments or
//! role ends its leases at once and takes effect on its very next call
//! (its cached state is dropped); widening keeps them; an admin cannot
//! change its own role; every update is audited with what it changed.

use strongroom_client::Client;
use strongroom_e2e::{
    Backend, TenantAdmin, TestServer, api_key, assert_free_of, audit_events, expect_code,
    expect_invalid, grant, path,
};
use strongroom_proto::v1 as pb;
use tonic::Code;

on_both_backends!(update_principal);

const SECRETS: [&str; 2] = ["sk-update-dev-2b7f", "sk-update-stg-c41e"];

async fn create(admin: &TenantAdmin, environment: &str, secret: &str) {
    admin
        .client
        .credentials()
        .create_credential(pb::CreateCredentialRequest {
            environment: environment.into(),
            name: "svc/key".into(),
            service: "svc".into(),
            value: api_key(secret),
            ..Default::default()
        })
        .await
        .expect("create a credential");
}

async fn reveal(client: &Client, environment: &str) -> Result<pb::Lease, tonic::Status> {
    client
        .credentials()
        .reveal_credential(pb::RevealCredentialRequest {
            credential: path(environment, "svc/key"),
            purpose: "update e2e".into(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().lease.expect("a lease"))
}

async fn update(
    admin: &TenantAdmin,
    id: &str,
    principal: pb::Principal,
    paths: &[&str],
) -> Result<pb::UpdatePrincipalResponse, tonic::Status> {
    admin
        .client
        .admin()
        .update_principal(pb::UpdatePrincipalRequest {
            principal_id: id.into(),
            update: Some(principal),
            update_mask: Some(prost_types::FieldMask {
                paths: paths.iter().map(|p| (*p).to_owned()).collect(),
            }),
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn get(admin: &TenantAdmin, id: &str) -> pb::Principal {
    admin
        .client
        .admin()
        .get_principal(pb::GetPrincipalRequest {
            principal_id: id.into(),
        })
        .await
        .expect("get principal")
        .into_inner()
        .principal
        .expect("principal")
}

async fn active_leases(admin: &TenantAdmin, principal: &str) -> Vec<pb::Lease> {
    admin
        .client
        .credentials()
        .list_leases(pb::ListLeasesRequest {
            principal_id: principal.into(),
            state: pb::LeaseState::Active as i32,
            page_size: 500,
            ..Default::default()
        })
        .await
        .expect("list leases")
        .into_inner()
        .leases
}

async fn update_principal(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = server.tenant("acme").await;
    create(&acme, "dev", SECRETS[0]).await;
    create(&acme, "staging", SECRETS[1]).await;
    let (agent_id, agent) = server.principal(&acme, "agent", pb::Role::Agent).await;
    grant(
        &acme,
        &agent_id,
        "svc/*",
        &["dev", "staging"],
        &[pb::Capability::Reveal],
        None,
    )
    .await;
    let (_, viewer) = server.principal(&acme, "viewer", pb::Role::Viewer).await;

    // Name and description: only those change; leases are kept.
    let dev_lease = reveal(&agent, "dev").await.expect("reveal in dev");
    let renamed = update(
        &acme,
        &agent_id,
        pb::Principal {
            name: "agent-7".into(),
            description: "the build agent".into(),
            role: pb::Role::Admin as i32,
            environments: vec!["staging".into()],
            ..Default::default()
        },
        &["name", "description"],
    )
    .await
    .expect("update name and description");
    assert_eq!(renamed.leases_ended, 0);
    let p = renamed.principal.expect("principal");
    assert_eq!(p.name, "agent-7");
    assert_eq!(p.description, "the build agent");
    assert_eq!(p.role, pb::Role::Agent as i32, "role not in the mask");
    assert!(p.environments.is_empty(), "environments not in the mask");
    assert_eq!(get(&acme, &agent_id).await, p);
    assert_eq!(active_leases(&acme, &agent_id).await.len(), 1);

    // Refused: an unknown path (named), a repeated one, none, a non-admin
    // caller, an admin changing its own role, an unknown environment. None
    // changes anything.
    let before = get(&acme, &agent_id).await;
    let unknown = expect_invalid(
        update(&acme, &agent_id, pb::Principal::default(), &["status"]).await,
        "update_mask",
        "an unknown path",
    );
    assert!(unknown.message().contains("'status'"), "{unknown:?}");
    expect_invalid(
        update(
            &acme,
            &agent_id,
            pb::Principal::default(),
            &["description", "description"],
        )
        .await,
        "update_mask",
        "a repeated path",
    );
    expect_invalid(
        update(&acme, &agent_id, pb::Principal::default(), &[]).await,
        "update_mask",
        "no path",
    );
    expect_invalid(
        update(
            &acme,
            &agent_id,
            pb::Principal {
                environments: vec!["nowhere".into()],
                ..Default::default()
            },
            &["environments"],
        )
        .await,
        "update.environments",
        "an unknown environment",
    );
    expect_invalid(
        update(
            &acme,
            &agent_id,
            pb::Principal {
                name: "no spaces allowed".into(),
                ..Default::default()
            },
            &["name", "description"],
        )
        .await,
        "update.name",
        "a bad name",
    );
    let by_viewer = viewer
        .admin()
        .update_principal(pb::UpdatePrincipalRequest {
            principal_id: agent_id.clone(),
            update: Some(pb::Principal {
                description: "x".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["description".into()],
            }),
        })
        .await;
    expect_code(by_viewer, Code::PermissionDenied, "a viewer updates");
    let own = update(
        &acme,
        &acme.principal_id,
        pb::Principal {
            role: pb::Role::Viewer as i32,
            ..Default::default()
        },
        &["role"],
    )
    .await;
    expect_code(own, Code::FailedPrecondition, "an admin demotes itself");
    assert_eq!(get(&acme, &agent_id).await, before, "nothing changed");
    assert_eq!(active_leases(&acme, &agent_id).await.len(), 1);

    // Narrowed to staging: the dev lease ends at once, and the next reveal
    // in dev is refused while staging still works.
    let narrowed = update(
        &acme,
        &agent_id,
        pb::Principal {
            environments: vec!["staging".into()],
            ..Default::default()
        },
        &["environments"],
    )
    .await
    .expect("narrow the environments");
    assert_eq!(narrowed.leases_ended, 1);
    assert!(active_leases(&acme, &agent_id).await.is_empty());
    let ended = acme
        .client
        .credentials()
        .list_leases(pb::ListLeasesRequest {
            principal_id: agent_id.clone(),
            ..Default::default()
        })
        .await
        .expect("list leases")
        .into_inner()
        .leases;
    let ended = ended
        .iter()
        .find(|l| l.lease_id == dev_lease.lease_id)
        .expect("the dev lease");
    assert_eq!(ended.end_reason, "principal_narrowed");
    assert!(reveal(&agent, "dev").await.is_err(), "dev is out of reach");
    let staging_lease = reveal(&agent, "staging").await.expect("reveal in staging");

    // Widened back to every environment: leases are kept.
    let widened = update(
        &acme,
        &agent_id,
        pb::Principal::default(),
        &["environments"],
    )
    .await
    .expect("widen");
    assert_eq!(widened.leases_ended, 0);
    assert_eq!(active_leases(&acme, &agent_id).await.len(), 1);
    reveal(&agent, "dev").await.expect("dev again");

    // A role change ends every lease; a viewer never receives a value.
    let demoted = update(
        &acme,
        &agent_id,
        pb::Principal {
            role: pb::Role::Viewer as i32,
            ..Default::default()
        },
        &["role"],
    )
    .await
    .expect("change the role");
    assert_eq!(demoted.leases_ended, 2);
    assert!(active_leases(&acme, &agent_id).await.is_empty());
    assert!(
        reveal(&agent, "staging").await.is_err(),
        "a viewer never receives a value"
    );

    // Audited: one principal.update event per update, with what changed;
    // lease.revoke events for the leases it ended; no value anywhere.
    let events = audit_events(&acme.client, pb::QueryEventsRequest::default()).await;
    let updates: Vec<&pb::AuditEvent> = events
        .iter()
        .filter(|e| {
            e.action == pb::AuditAction::PrincipalUpdate as i32
                && e.outcome == pb::AuditOutcome::Allowed as i32
                && e.detail.contains("principal_updated")
        })
        .collect();
    assert_eq!(updates.len(), 4, "four updates were allowed");
    let newest = updates.first().expect("an update");
    let detail: serde_json::Value = serde_json::from_str(&newest.detail).expect("JSON detail");
    assert_eq!(detail["principal"], agent_id.as_str());
    assert_eq!(detail["fields"], serde_json::json!(["role"]));
    assert_eq!(detail["role"], "viewer");
    assert_eq!(detail["narrowed"], true);
    let revoked = events
        .iter()
        .filter(|e| e.action == pb::AuditAction::LeaseRevoke as i32)
        .count();
    assert_eq!(revoked, 3);
    assert!(
        events.iter().any(|e| e.lease_id == staging_lease.lease_id
            && e.action == pb::AuditAction::LeaseRevoke as i32)
    );
    for e in &events {
        assert_free_of(e, &SECRETS, "an audit event");
    }
    assert!(
        events
            .iter()
            .any(|e| e.action == pb::AuditAction::PrincipalUpdate as i32
                && e.outcome == pb::AuditOutcome::Denied as i32),
        "the viewer's attempt is recorded"
    );
    server.stop().await;
}
