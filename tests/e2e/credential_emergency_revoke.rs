//! Emergency revoke of a credential (CredentialService.
//! EmergencyRevokeCredential): one call revokes the credential, or rotates
//! it to a generated value and destroys the compromised version's value,
//! and ends every lease of it, in one audited step that reports what it
//! cut (leases, the grants behind them, the versions); the generated value
//! is never returned; a repeat cuts nothing and writes nothing; only tenant
//! admins may call it, and a refused call changes nothing. On two servers
//! sharing Postgres, the revoked version is neither revealed, resolved nor
//! injected by either server right after the call returns, even by a server
//! that never hears the change notice.

use strongroom_client::Client;
use strongroom_e2e::upstream::Upstream;
use strongroom_e2e::{
    Backend, TenantAdmin, TestServer, api_key, api_key_text, assert_free_of, audit_events,
    expect_code, expect_invalid, grant, path, revealed_value, value, verified_event_count,
};
use strongroom_proto::v1 as pb;
use tonic::Code;

use crate::emergency_revoke::{assert_relay_refused, inject_grant, relay_use, two_replicas};

on_both_backends!(
    revoke_cuts_once,
    rotation_replaces_the_compromised_value,
    only_admins_and_valid_requests
);

const SECRET: &str = "sk-credential-emergency-5521";

async fn create(admin: &TenantAdmin, name: &str, service: &str, secret: &str) -> pb::Credential {
    admin
        .client
        .credentials()
        .create_credential(pb::CreateCredentialRequest {
            environment: "dev".into(),
            name: name.into(),
            service: service.into(),
            value: api_key(secret),
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner()
        .credential
        .expect("credential")
}

async fn reveal(
    client: &Client,
    name: &str,
) -> Result<pb::RevealCredentialResponse, tonic::Status> {
    client
        .credentials()
        .reveal_credential(pb::RevealCredentialRequest {
            credential: path("dev", name),
            purpose: "credential emergency revoke test".into(),
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn resolve(
    client: &Client,
    service: &str,
) -> Result<pb::ResolveCredentialResponse, tonic::Status> {
    client
        .credentials()
        .resolve_credential(pb::ResolveCredentialRequest {
            service: service.into(),
            environment: "dev".into(),
            purpose: "credential emergency revoke test".into(),
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn emergency(
    client: &Client,
    name: &str,
    reason: &str,
    generate: Option<pb::GenerationPolicy>,
) -> Result<pb::EmergencyRevokeCredentialResponse, tonic::Status> {
    client
        .credentials()
        .emergency_revoke_credential(pb::EmergencyRevokeCredentialRequest {
            credential: path("dev", name),
            reason: reason.into(),
            generate,
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn events_of(admin: &TenantAdmin, action: pb::AuditAction) -> Vec<pb::AuditEvent> {
    audit_events(
        &admin.client,
        pb::QueryEventsRequest {
            actions: vec![action as i32],
            ..Default::default()
        },
    )
    .await
}

fn assert_refused<T: std::fmt::Debug>(result: Result<T, tonic::Status>, what: &str) {
    match result {
        Ok(r) => panic!("{what}: a value was handed out after the revoke: {r:?}"),
        Err(s) => assert!(
            matches!(
                s.code(),
                Code::FailedPrecondition | Code::PermissionDenied | Code::NotFound
            ),
            "{what}: unexpected refusal {s:?}"
        ),
    }
}

/// An agent with reveal on `llm/*` in dev.
async fn agent(server: &TestServer, admin: &TenantAdmin) -> (String, Client, pb::Grant) {
    let (id, client) = server.principal(admin, "agent", pb::Role::Agent).await;
    let g = grant(
        admin,
        &id,
        "llm/*",
        &["dev"],
        &[pb::Capability::Reveal],
        None,
    )
    .await;
    (id, client, g)
}

async fn revoke_cuts_once(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.tenant("acme").await;
    create(&admin, "llm/openai", "openai", SECRET).await;
    create(&admin, "llm/other", "other", "sk-other-value-0001").await;
    let (agent_id, agent, g) = agent(&server, &admin).await;
    reveal(&agent, "llm/openai").await.expect("reveal");
    resolve(&agent, "openai").await.expect("resolve");
    reveal(&agent, "llm/other").await.expect("reveal another");

    let cut = emergency(&admin.client, "llm/openai", "found in a public repo", None)
        .await
        .expect("emergency revoke");
    let c = cut.credential.clone().expect("credential");
    assert_eq!(c.status, pb::CredentialStatus::Revoked as i32);
    assert_eq!(c.revoked_reason, "found in a public repo");
    assert_eq!((cut.revoked_version, cut.new_version), (1, 0));
    assert_eq!(cut.leases_ended, 2);
    assert_eq!(cut.grant_ids, vec![g.id.clone()]);
    assert_free_of(&cut, &[SECRET], "the response");

    assert_refused(reveal(&agent, "llm/openai").await, "reveal");
    assert_refused(resolve(&agent, "openai").await, "resolve");
    reveal(&agent, "llm/other")
        .await
        .expect("another credential is untouched");
    let leases = admin
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
    let (on_it, others): (Vec<_>, Vec<_>) = leases
        .iter()
        .partition(|l| l.credential_name == "llm/openai");
    assert_eq!(on_it.len(), 2);
    assert!(
        on_it
            .iter()
            .all(|l| l.state == pb::LeaseState::Revoked as i32
                && l.end_reason == "credential_revoked")
    );
    assert!(
        others
            .iter()
            .all(|l| l.state == pb::LeaseState::Active as i32)
    );
    // The grant stays: its selector reaches other credentials.
    let grants = admin
        .client
        .policy()
        .list_grants(pb::ListGrantsRequest {
            principal_id: agent_id.clone(),
            ..Default::default()
        })
        .await
        .expect("list grants")
        .into_inner()
        .grants;
    assert!(grants.iter().any(|x| x.id == g.id), "the grant is kept");

    // One audited step counting what it cut, then a lease.revoke a lease.
    let revokes = events_of(&admin, pb::AuditAction::CredentialEmergencyRevoke).await;
    assert_eq!(revokes.len(), 1);
    let e = &revokes[0];
    assert_eq!(e.credential_name, "llm/openai");
    assert_eq!(e.outcome, pb::AuditOutcome::Allowed as i32);
    for field in [
        "\"kind\":\"credential_emergency_revoke\"".to_owned(),
        "\"reason\":\"found in a public repo\"".to_owned(),
        "\"revoked_version\":1".to_owned(),
        "\"new_version\":null".to_owned(),
        "\"leases_ended\":2".to_owned(),
        format!("\"grants\":[\"{}\"]", g.id),
    ] {
        assert!(e.detail.contains(&field), "{field} not in {}", e.detail);
    }
    let lease_ends = events_of(&admin, pb::AuditAction::LeaseRevoke).await;
    assert_eq!(lease_ends.len(), 2);
    assert!(lease_ends.iter().all(|l| l.sequence > e.sequence));
    let events = verified_event_count(&admin.client).await;

    // A repeat finds nothing left to cut and writes nothing.
    let again = emergency(&admin.client, "llm/openai", "again", None)
        .await
        .expect("repeat");
    assert_eq!((again.leases_ended, again.grant_ids.len()), (0, 0));
    assert_eq!(
        again.credential.expect("credential").revoked_reason,
        "found in a public repo"
    );
    assert_eq!(verified_event_count(&admin.client).await, events);

    let all = audit_events(&admin.client, pb::QueryEventsRequest::default()).await;
    assert!(!format!("{all:?}").contains(SECRET));
    server.stop().await;
}

async fn rotation_replaces_the_compromised_value(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.tenant("acme").await;
    create(&admin, "llm/openai", "openai", SECRET).await;
    let (_, agent, g) = agent(&server, &admin).await;
    reveal(&agent, "llm/openai").await.expect("reveal");

    let cut = emergency(
        &admin.client,
        "llm/openai",
        "rotate it now",
        Some(pb::GenerationPolicy {
            length: 40,
            alphabet: pb::GenerationAlphabet::Hex as i32,
            prefix: "sk-new-".into(),
            field: String::new(),
        }),
    )
    .await
    .expect("rotating emergency revoke");
    let c = cut.credential.clone().expect("credential");
    assert_eq!(c.status, pb::CredentialStatus::Active as i32);
    assert_eq!(c.current_version, 2);
    assert_eq!(
        (cut.revoked_version, cut.new_version, cut.leases_ended),
        (1, 2, 1)
    );
    assert_eq!(cut.grant_ids, vec![g.id.clone()]);
    assert_free_of(&cut, &[SECRET, "sk-new-"], "the response carries no value");

    // The new value, as the policy asked; the old one is gone for good.
    let revealed = reveal(&agent, "llm/openai")
        .await
        .expect("reveal the new value");
    let new = api_key_text(revealed_value(&revealed)).to_owned();
    let random = new.strip_prefix("sk-new-").expect("the prefix");
    assert_eq!(random.len(), 40);
    assert!(random.chars().all(|ch| ch.is_ascii_hexdigit()), "{new}");
    assert_ne!(new, SECRET);
    let old = admin
        .client
        .credentials()
        .reveal_credential(pb::RevealCredentialRequest {
            credential: path("dev", "llm/openai"),
            purpose: "the old version".into(),
            version: 1,
            ..Default::default()
        })
        .await;
    assert_refused(old, "reveal of the revoked version");
    expect_code(
        admin
            .client
            .credentials()
            .rollback_credential(pb::RollbackCredentialRequest {
                credential: path("dev", "llm/openai"),
                version: 1,
                ..Default::default()
            })
            .await,
        Code::NotFound,
        "rollback to the revoked version",
    );
    let events = events_of(&admin, pb::AuditAction::CredentialEmergencyRevoke).await;
    assert_eq!(events.len(), 1);
    assert!(
        events[0].detail.contains("\"new_version\":2"),
        "{}",
        events[0].detail
    );
    let all = audit_events(&admin.client, pb::QueryEventsRequest::default()).await;
    let text = format!("{all:?}");
    assert!(!text.contains(SECRET) && !text.contains(&new));
    server.stop().await;
}

async fn only_admins_and_valid_requests(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.tenant("acme").await;
    create(&admin, "llm/openai", "openai", SECRET).await;
    admin
        .client
        .credentials()
        .create_credential(pb::CreateCredentialRequest {
            environment: "dev".into(),
            name: "llm/ssh".into(),
            service: "ssh".into(),
            value: value(pb::credential_value::Value::SshKey(pb::SshKey {
                private_key: "-----BEGIN OPENSSH PRIVATE KEY-----\nYm91bmRz\n-----END OPENSSH PRIVATE KEY-----\n".into(),
                public_key: "ssh-ed25519 AAAA e2e".into(),
                passphrase: String::new(),
            })),
            ..Default::default()
        })
        .await
        .expect("create an ssh key");
    let (_, agent, _) = agent(&server, &admin).await;
    let (_, viewer) = server.principal(&admin, "viewer", pb::Role::Viewer).await;
    let (_, operator) = server
        .principal(&admin, "operator", pb::Role::Operator)
        .await;
    for (client, who) in [
        (&viewer, "viewer"),
        (&operator, "operator"),
        (&agent, "agent"),
    ] {
        expect_code(
            emergency(client, "llm/openai", "not allowed", None).await,
            Code::PermissionDenied,
            who,
        );
    }
    // An admin confined to another environment does not see it.
    let (_, staging_admin) = server
        .principal_in(&admin, "staging-admin", pb::Role::Admin, &["staging"])
        .await;
    expect_code(
        emergency(&staging_admin, "llm/openai", "not its environment", None).await,
        Code::NotFound,
        "an admin confined to staging",
    );
    expect_invalid(
        emergency(&admin.client, "llm/openai", "", None).await,
        "reason",
        "no reason",
    );
    expect_invalid(
        emergency(&admin.client, "llm/openai", &"x".repeat(1025), None).await,
        "reason",
        "a reason too long",
    );
    expect_invalid(
        admin
            .client
            .credentials()
            .emergency_revoke_credential(pb::EmergencyRevokeCredentialRequest {
                reason: "r".into(),
                ..Default::default()
            })
            .await,
        "credential",
        "no credential",
    );
    let policy = |length: u32, field: &str| {
        Some(pb::GenerationPolicy {
            length,
            field: field.into(),
            ..Default::default()
        })
    };
    expect_invalid(
        emergency(&admin.client, "llm/openai", "r", policy(8, "")).await,
        "generate.length",
        "a generated value too short",
    );
    expect_invalid(
        emergency(&admin.client, "llm/openai", "r", policy(32, "password")).await,
        "generate.field",
        "a field the type does not have",
    );
    expect_invalid(
        emergency(&admin.client, "llm/ssh", "r", policy(32, "")).await,
        "generate.field",
        "a type whose values cannot be generated",
    );
    expect_code(
        emergency(&admin.client, "llm/missing", "r", None).await,
        Code::NotFound,
        "an unknown credential",
    );
    // Nothing changed: still active at version 1, the value as it was.
    let revealed = reveal(&agent, "llm/openai").await.expect("still revealed");
    assert_eq!(api_key_text(revealed_value(&revealed)), SECRET);
    assert_eq!(revealed.credential.expect("credential").current_version, 1);
    let attempts = events_of(&admin, pb::AuditAction::CredentialEmergencyRevoke).await;
    assert!(
        attempts
            .iter()
            .all(|e| e.outcome != pb::AuditOutcome::Allowed as i32),
        "{attempts:?}"
    );
    assert!(
        attempts.len() >= 3,
        "the three refused callers: {attempts:?}"
    );
    // An admin confined to dev acts within dev.
    let (_, dev_admin) = server
        .principal_in(&admin, "dev-admin", pb::Role::Admin, &["dev"])
        .await;
    let cut = emergency(&dev_admin, "llm/ssh", "by a dev admin", None)
        .await
        .expect("a dev admin revokes a dev credential");
    assert_eq!(
        cut.credential.expect("credential").status,
        pb::CredentialStatus::Revoked as i32
    );
    verified_event_count(&admin.client).await;
    server.stop().await;
}

/// The acceptance case for a credential, on two servers sharing Postgres,
/// the replica deaf to change notices: right after the revoke returns
/// through the primary, neither server reveals, resolves or injects the
/// revoked credential (nothing more reaches the upstream); right after a
/// rotating revoke, both reveal and inject the new value only, never the
/// compromised one.
#[tokio::test]
async fn value_bearing_calls_fail_on_both_replicas_at_once() {
    let upstream = Upstream::start(&["*.example.test"]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (primary, replica) = two_replicas(&upstream, &dir, 60_000).await;
    let admin = primary.tenant("acme").await;
    let rotated_secret = "sk-rotated-compromised-8812";
    create(&admin, "llm/openai", "openai", SECRET).await;
    create(&admin, "llm/rotated", "rotated", rotated_secret).await;
    let (agent_id, on_primary, _) = agent(&primary, &admin).await;
    inject_grant(&admin, &agent_id, "llm/*", &upstream).await;
    let on_replica = replica.client("spiffe://e2e.test/acme/agent").await;

    // Both servers cache the credentials and hand them out.
    for (client, which) in [(&on_primary, "primary"), (&on_replica, "replica")] {
        for name in ["llm/openai", "llm/rotated"] {
            reveal(client, name)
                .await
                .unwrap_or_else(|e| panic!("reveal {name} on the {which}: {e:?}"));
            assert_eq!(
                relay_use(client, &upstream, name)
                    .await
                    .unwrap_or_else(|e| panic!("relay {name} on the {which}: {e:?}")),
                200
            );
        }
        resolve(client, "openai").await.expect("resolve");
    }
    let reached = upstream.received().len();
    assert_eq!(reached, 4);

    let cut = emergency(&admin.client, "llm/openai", "compromised", None)
        .await
        .expect("emergency revoke through the primary");
    assert_eq!(cut.leases_ended, 4, "two reveals and two resolves");
    for (client, which) in [(&on_replica, "replica"), (&on_primary, "primary")] {
        assert_refused(
            reveal(client, "llm/openai").await,
            &format!("reveal on the {which}"),
        );
        assert_refused(
            resolve(client, "openai").await,
            &format!("resolve on the {which}"),
        );
        assert_relay_refused(
            relay_use(client, &upstream, "llm/openai").await,
            &upstream,
            reached,
            &format!("relay use on the {which}"),
        );
    }

    // Rotating: the compromised value is never used again, anywhere.
    let cut = emergency(
        &admin.client,
        "llm/rotated",
        "compromised",
        Some(pb::GenerationPolicy::default()),
    )
    .await
    .expect("rotating emergency revoke through the primary");
    assert_eq!((cut.revoked_version, cut.new_version), (1, 2));
    for (client, which) in [(&on_replica, "replica"), (&on_primary, "primary")] {
        let revealed = reveal(client, "llm/rotated")
            .await
            .unwrap_or_else(|e| panic!("reveal on the {which}: {e:?}"));
        let v = api_key_text(revealed_value(&revealed)).to_owned();
        assert_ne!(
            v, rotated_secret,
            "the {which} revealed the revoked version"
        );
        assert_eq!(revealed.version, 2);
        assert_eq!(
            relay_use(client, &upstream, "llm/rotated")
                .await
                .expect("relay use of the new version"),
            200
        );
        let sent = upstream.received().pop().expect("a request");
        assert_eq!(
            sent.header("authorization"),
            Some(format!("Bearer {v}").as_str()),
            "the {which} injected another value than the current one"
        );
    }
    assert!(
        upstream
            .received()
            .iter()
            .skip(reached)
            .all(|r| r.header("authorization") != Some(format!("Bearer {rotated_secret}").as_str())),
        "the compromised value was sent after the revoke"
    );
    verified_event_count(&admin.client).await;
    replica.stop().await;
    primary.stop().await;
}
