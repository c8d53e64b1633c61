//! UpdateCredential end to end: each field the mask names changes and no
//! other (not the value, version or status); a path that is not updatable,
//! a repeated or missing mask, and every malformed field are refused naming
//! the field, and a refused call changes nothing and records no update;
//! changes that narrow the credential's use (owner, service, injection
//! template, an expiry moved earlier) end its leases and take effect on the
//! very next call; every update is audited with the fields it changed,
//! never their values; only callers with write may update.

use std::time::{Duration, SystemTime};

use strongroom_client::Client;
use strongroom_e2e::{
    Backend, TenantAdmin, TestServer, api_key, audit_events, expect_code, expect_invalid, grant,
    path, timestamp,
};
use strongroom_proto::v1 as pb;
use tonic::Code;

on_both_backends!(update_credential, refused_updates_change_nothing);

const SECRET: &str = "sk-update-credential-93f1";

async fn create(admin: &TenantAdmin) -> pb::Credential {
    admin
        .client
        .credentials()
        .create_credential(pb::CreateCredentialRequest {
            environment: "dev".into(),
            name: "llm/openai".into(),
            service: "openai".into(),
            value: api_key(SECRET),
            description: "first".into(),
            tags: vec!["team:a".into()],
            scopes: vec!["read".into()],
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner()
        .credential
        .expect("credential")
}

async fn update(
    client: &Client,
    with: pb::Credential,
    paths: &[&str],
) -> Result<pb::UpdateCredentialResponse, tonic::Status> {
    client
        .credentials()
        .update_credential(pb::UpdateCredentialRequest {
            credential: path("dev", "llm/openai"),
            update: Some(with),
            update_mask: Some(prost_types::FieldMask {
                paths: paths.iter().map(|p| (*p).to_owned()).collect(),
            }),
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn get(admin: &TenantAdmin) -> pb::Credential {
    admin
        .client
        .credentials()
        .get_credential(pb::GetCredentialRequest {
            credential: path("dev", "llm/openai"),
        })
        .await
        .expect("get")
        .into_inner()
        .credential
        .expect("credential")
}

async fn reveal(client: &Client, on_behalf_of: &str) -> Result<pb::Lease, tonic::Status> {
    client
        .credentials()
        .reveal_credential(pb::RevealCredentialRequest {
            credential: path("dev", "llm/openai"),
            purpose: "update e2e".into(),
            on_behalf_of: on_behalf_of.into(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().lease.expect("a lease"))
}

async fn lease_state(admin: &TenantAdmin, lease: &pb::Lease) -> (i32, String) {
    let leases = admin
        .client
        .credentials()
        .list_leases(pb::ListLeasesRequest {
            principal_id: lease.principal_id.clone(),
            page_size: 500,
            ..Default::default()
        })
        .await
        .expect("list leases")
        .into_inner()
        .leases;
    let l = leases
        .into_iter()
        .find(|l| l.lease_id == lease.lease_id)
        .expect("the lease");
    (l.state, l.end_reason)
}

async fn update_events(admin: &TenantAdmin) -> Vec<pb::AuditEvent> {
    audit_events(
        &admin.client,
        pb::QueryEventsRequest {
            actions: vec![pb::AuditAction::CredentialUpdate as i32],
            outcome: pb::AuditOutcome::Allowed as i32,
            ..Default::default()
        },
    )
    .await
}

/// The fields of `c` an update never changes.
fn fixed(c: &pb::Credential) -> (String, String, String, i32, u32, i32, bool) {
    (
        c.id.clone(),
        c.environment.clone(),
        c.name.clone(),
        c.credential_type,
        c.current_version,
        c.status,
        c.destroyed,
    )
}

async fn update_credential(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.tenant("acme").await;
    let created = create(&admin).await;
    let (agent_id, agent) = server.principal(&admin, "agent", pb::Role::Agent).await;
    grant(
        &admin,
        &agent_id,
        "llm/*",
        &["dev"],
        &[pb::Capability::Reveal],
        None,
    )
    .await;
    let lease = reveal(&agent, "").await.expect("reveal");

    // Description, tags, scopes, rotation policy: only those change; they
    // narrow nothing, the lease is kept.
    let day = 86_400;
    let changed = update(
        &admin.client,
        pb::Credential {
            description: "desc-after-9c1".into(),
            tags: vec!["team:b".into(), "tier=1".into()],
            scopes: vec!["read".into(), "write".into()],
            rotation_policy: Some(pb::RotationPolicy {
                period: Some(prost_types::Duration {
                    seconds: 30 * day,
                    nanos: 0,
                }),
                reminder: Some(prost_types::Duration {
                    seconds: 7 * day,
                    nanos: 0,
                }),
            }),
            // Not in the mask: ignored.
            service: "ignored".into(),
            owner: "ignored".into(),
            ..Default::default()
        },
        &["description", "tags", "scopes", "rotation_policy"],
    )
    .await
    .expect("update");
    assert_eq!(changed.leases_ended, 0);
    let c = changed.credential.expect("credential");
    assert_eq!(c.description, "desc-after-9c1");
    assert_eq!(c.tags, vec!["team:b".to_owned(), "tier=1".to_owned()]);
    assert_eq!(c.scopes, vec!["read".to_owned(), "write".to_owned()]);
    assert!(!c.rotation_policy_inherited);
    assert_eq!(
        c.rotation_policy
            .as_ref()
            .and_then(|r| r.period)
            .map(|d| d.seconds),
        Some(30 * day)
    );
    assert_eq!((c.service.as_str(), c.owner.as_str()), ("openai", ""));
    assert_eq!(fixed(&c), fixed(&created));
    assert_eq!(get(&admin).await, c);
    assert_eq!(
        lease_state(&admin, &lease).await.0,
        pb::LeaseState::Active as i32
    );
    reveal(&agent, "").await.expect("still revealed");

    // The event names the fields, never their values.
    let events = update_events(&admin).await;
    assert_eq!(events.len(), 1);
    let detail = &events[0].detail;
    assert!(
        detail.contains(
            "\"fields\":[\"description\",\"tags\",\"scopes\",\"rotation_policy\"],\"narrowed\":false"
        ),
        "{detail}"
    );
    assert_eq!(events[0].credential_name, "llm/openai");
    assert!(!format!("{:?}", events[0]).contains("desc-after-9c1"));
    assert!(!format!("{:?}", events[0]).contains("team:b"));

    // The service label: what ResolveCredential finds. It narrows: the
    // agent's leases end; the old label no longer resolves.
    let lease = reveal(&agent, "").await.expect("reveal");
    let changed = update(
        &admin.client,
        pb::Credential {
            service: "openai-eu".into(),
            ..Default::default()
        },
        &["service"],
    )
    .await
    .expect("update the service");
    assert!(changed.leases_ended >= 1);
    assert_eq!(
        lease_state(&admin, &lease).await,
        (
            pb::LeaseState::Revoked as i32,
            "credential_narrowed".to_owned()
        )
    );
    let resolve = |service: &'static str| {
        let agent = agent.clone();
        async move {
            agent
                .credentials()
                .resolve_credential(pb::ResolveCredentialRequest {
                    service: service.into(),
                    environment: "dev".into(),
                    purpose: "update e2e".into(),
                    ..Default::default()
                })
                .await
        }
    };
    resolve("openai-eu")
        .await
        .expect("resolve by the new label");
    expect_code(resolve("openai").await, Code::NotFound, "the old label");

    // The injection template.
    let changed = update(
        &admin.client,
        pb::Credential {
            injection_template: Some(pb::InjectionTemplate {
                template: Some(pb::injection_template::Template::Header(
                    pb::HeaderInjection {
                        name: "X-Api-Key".into(),
                        field: "api_key".into(),
                        prefix: "Token ".into(),
                    },
                )),
            }),
            ..Default::default()
        },
        &["injection_template"],
    )
    .await
    .expect("update the template");
    assert!(matches!(
        changed
            .credential
            .expect("credential")
            .injection_template
            .and_then(|t| t.template),
        Some(pb::injection_template::Template::Header(h)) if h.name == "X-Api-Key" && h.prefix == "Token "
    ));

    // The owner: from the next call on, revealed only for that user (or to
    // admins); the leases taken for anyone else end.
    let lease = reveal(&agent, "").await.expect("reveal");
    let changed = update(
        &admin.client,
        pb::Credential {
            owner: "alice@example.com".into(),
            ..Default::default()
        },
        &["owner"],
    )
    .await
    .expect("update the owner");
    assert_eq!(changed.leases_ended, 1);
    assert_eq!(
        lease_state(&admin, &lease).await.0,
        pb::LeaseState::Revoked as i32
    );
    assert!(
        reveal(&agent, "").await.is_err(),
        "revealed for nobody after the owner was set"
    );
    reveal(&agent, "alice@example.com")
        .await
        .expect("revealed for its owner");

    // An expiry in the future, then moved into the past: expired at once.
    // Whole seconds: the server keeps microseconds.
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after the epoch")
        .as_secs();
    let later = SystemTime::UNIX_EPOCH + Duration::from_secs(now + 3600);
    let c = update(
        &admin.client,
        pb::Credential {
            expires_at: Some(timestamp(later)),
            ..Default::default()
        },
        &["expires_at"],
    )
    .await
    .expect("set an expiry")
    .credential
    .expect("credential");
    assert_eq!(c.expires_at, Some(timestamp(later)));
    assert_eq!(c.status, pb::CredentialStatus::Active as i32);
    let lease = reveal(&agent, "alice@example.com").await.expect("reveal");
    let past = SystemTime::now() - Duration::from_secs(60);
    let changed = update(
        &admin.client,
        pb::Credential {
            expires_at: Some(timestamp(past)),
            ..Default::default()
        },
        &["expires_at"],
    )
    .await
    .expect("expire it");
    assert_eq!(changed.leases_ended, 1);
    assert_eq!(
        changed.credential.expect("credential").status,
        pb::CredentialStatus::Expired as i32
    );
    assert_eq!(
        lease_state(&admin, &lease).await.0,
        pb::LeaseState::Revoked as i32
    );
    expect_code(
        reveal(&agent, "alice@example.com").await,
        Code::FailedPrecondition,
        "reveal of an expired credential",
    );

    // Clearing: owner, expiry, rotation policy, template back to defaults.
    let c = update(
        &admin.client,
        pb::Credential::default(),
        &[
            "owner",
            "expires_at",
            "rotation_policy",
            "injection_template",
        ],
    )
    .await
    .expect("clear")
    .credential
    .expect("credential");
    assert_eq!(c.owner, "");
    assert_eq!(c.expires_at, None);
    assert!(c.rotation_policy_inherited);
    assert_eq!(c.injection_template, None);
    assert_eq!(c.status, pb::CredentialStatus::Active as i32);
    reveal(&agent, "").await.expect("revealed again");

    // Write is needed: an agent with reveal only, a viewer.
    let (_, viewer) = server.principal(&admin, "viewer", pb::Role::Viewer).await;
    for (client, who) in [(&agent, "agent"), (&viewer, "viewer")] {
        let refused = update(
            client,
            pb::Credential {
                description: "nope".into(),
                ..Default::default()
            },
            &["description"],
        )
        .await;
        match refused {
            Ok(r) => panic!("{who} updated: {r:?}"),
            Err(s) => assert!(
                matches!(s.code(), Code::PermissionDenied | Code::NotFound),
                "{who}: {s:?}"
            ),
        }
    }
    assert_eq!(get(&admin).await.description, "desc-after-9c1");
    let all = audit_events(&admin.client, pb::QueryEventsRequest::default()).await;
    assert!(!format!("{all:?}").contains(SECRET));
    server.stop().await;
}

async fn refused_updates_change_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.tenant("acme").await;
    create(&admin).await;
    let before = get(&admin).await;
    let one = |p: &str| vec![p.to_owned()];
    let cases: Vec<(pb::Credential, Vec<String>, &str)> = vec![
        (pb::Credential::default(), vec![], "update_mask"),
        (pb::Credential::default(), one("name"), "update_mask"),
        (pb::Credential::default(), one("value"), "update_mask"),
        (pb::Credential::default(), one("status"), "update_mask"),
        (pb::Credential::default(), one("Description"), "update_mask"),
        (
            pb::Credential::default(),
            vec!["tags".into(), "tags".into()],
            "update_mask",
        ),
        (
            pb::Credential {
                tags: vec!["not a tag!".into()],
                ..Default::default()
            },
            one("tags"),
            "update.tags",
        ),
        (
            pb::Credential {
                scopes: vec![String::new()],
                ..Default::default()
            },
            one("scopes"),
            "update.scopes",
        ),
        (
            pb::Credential {
                service: "Not A Label".into(),
                ..Default::default()
            },
            one("service"),
            "update.service",
        ),
        (
            pb::Credential {
                expires_at: Some(prost_types::Timestamp {
                    seconds: 1,
                    nanos: -5,
                }),
                ..Default::default()
            },
            one("expires_at"),
            "update.expires_at",
        ),
        (
            pb::Credential {
                rotation_policy: Some(pb::RotationPolicy {
                    period: Some(prost_types::Duration {
                        seconds: 10 * 86_400,
                        nanos: 0,
                    }),
                    reminder: Some(prost_types::Duration {
                        seconds: 20 * 86_400,
                        nanos: 0,
                    }),
                }),
                ..Default::default()
            },
            one("rotation_policy"),
            "update.rotation_policy.reminder",
        ),
        (
            pb::Credential {
                rotation_policy: Some(pb::RotationPolicy {
                    period: Some(prost_types::Duration {
                        seconds: -1,
                        nanos: 0,
                    }),
                    reminder: None,
                }),
                ..Default::default()
            },
            one("rotation_policy"),
            "update.rotation_policy.period",
        ),
        (
            pb::Credential {
                injection_template: Some(pb::InjectionTemplate {
                    template: Some(pb::injection_template::Template::Header(
                        pb::HeaderInjection {
                            name: "bad header".into(),
                            field: "api_key".into(),
                            prefix: String::new(),
                        },
                    )),
                }),
                ..Default::default()
            },
            one("injection_template"),
            "update.injection_template.header.name",
        ),
        (
            pb::Credential {
                owner: "a\u{7}b".into(),
                ..Default::default()
            },
            one("owner"),
            "update.owner",
        ),
    ];
    for (with, paths, field) in cases {
        let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
        // A valid change rides along with the invalid one: nothing of it
        // may be applied either.
        let mut with = with;
        with.description = "must not be applied".into();
        let mut refs = refs;
        if field != "update_mask" {
            refs.push("description");
        }
        expect_invalid(
            update(&admin.client, with, &refs).await,
            field,
            &format!("{paths:?}"),
        );
    }
    expect_invalid(
        admin
            .client
            .credentials()
            .update_credential(pb::UpdateCredentialRequest {
                credential: None,
                update: Some(pb::Credential::default()),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["description".into()],
                }),
            })
            .await,
        "credential",
        "no credential",
    );
    expect_code(
        admin
            .client
            .credentials()
            .update_credential(pb::UpdateCredentialRequest {
                credential: path("dev", "llm/missing"),
                update: Some(pb::Credential::default()),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["description".into()],
                }),
            })
            .await,
        Code::NotFound,
        "an unknown credential",
    );
    assert_eq!(get(&admin).await, before, "a refused update changed it");
    assert!(update_events(&admin).await.is_empty());
    server.stop().await;
}

/// On two servers sharing Postgres, the replica deaf to change notices
/// (a lost notice) with a short cache time to live: an expiry moved into
/// the past through the primary fails the replica's next reveal at once
/// (the reveal check at commit reads the stored expiry); a new owner, which
/// the check does not read, takes effect on the deaf replica within the
/// cache time to live.
#[tokio::test]
async fn narrowing_reaches_a_deaf_replica_within_the_ttl() {
    const TTL_MS: u64 = 2000;
    let upstream = strongroom_e2e::upstream::Upstream::start(&["*.example.test"]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (primary, replica) = crate::emergency_revoke::two_replicas(&upstream, &dir, TTL_MS).await;
    let admin = primary.tenant("acme").await;
    create(&admin).await;
    admin
        .client
        .credentials()
        .create_credential(pb::CreateCredentialRequest {
            environment: "dev".into(),
            name: "llm/owned".into(),
            service: "owned".into(),
            value: api_key("sk-owned-value-7700"),
            ..Default::default()
        })
        .await
        .expect("create");
    let (agent_id, _) = primary.principal(&admin, "agent", pb::Role::Agent).await;
    grant(
        &admin,
        &agent_id,
        "llm/*",
        &["dev"],
        &[pb::Capability::Reveal],
        None,
    )
    .await;
    let on_replica = replica.client("spiffe://e2e.test/acme/agent").await;
    let reveal_owned = || async {
        on_replica
            .credentials()
            .reveal_credential(pb::RevealCredentialRequest {
                credential: path("dev", "llm/owned"),
                purpose: "update e2e".into(),
                ..Default::default()
            })
            .await
    };
    reveal(&on_replica, "")
        .await
        .expect("reveal on the replica");
    reveal_owned().await.expect("reveal on the replica");

    let past = SystemTime::now() - Duration::from_secs(60);
    update(
        &admin.client,
        pb::Credential {
            expires_at: Some(timestamp(past)),
            ..Default::default()
        },
        &["expires_at"],
    )
    .await
    .expect("expire it through the primary");
    expect_code(
        reveal(&on_replica, "").await,
        Code::FailedPrecondition,
        "reveal on the deaf replica right after the expiry moved into the past",
    );

    admin
        .client
        .credentials()
        .update_credential(pb::UpdateCredentialRequest {
            credential: path("dev", "llm/owned"),
            update: Some(pb::Credential {
                owner: "alice@example.com".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["owner".into()],
            }),
        })
        .await
        .expect("set the owner through the primary");
    let changed = std::time::Instant::now();
    loop {
        if let Err(s) = reveal_owned().await {
            assert!(
                matches!(s.code(), Code::PermissionDenied | Code::NotFound),
                "unexpected refusal {s:?}"
            );
            break;
        }
        assert!(
            changed.elapsed() <= Duration::from_millis(TTL_MS + 1500),
            "the deaf replica still revealed the owned credential for anyone after {:?}",
            changed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    replica.stop().await;
    primary.stop().await;
}
