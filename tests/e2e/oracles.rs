//! No existence oracle, and confinement that holds for every read.
//!
//! A caller without read_metadata on a name (an agent in its own
//! environment with grants on other names; principals confined to `dev` asking for
//! production) gets the same code and message for an existing and a missing
//! credential, from every call that names one. A `dev`-confined principal's
//! lists, grants and audit reads contain nothing of production.

use strongroom_e2e::{Backend, TestServer, api_key, by_id, grant, path};
use strongroom_proto::v1 as pb;
use tonic::Status;

on_both_backends!(
    refusals_do_not_tell_existing_from_missing,
    confined_reads_hold_nothing_of_production,
    limits_do_not_tell_existing_from_missing
);

async fn create(admin: &strongroom_e2e::TenantAdmin, environment: &str, name: &str) -> String {
    admin
        .client
        .credentials()
        .create_credential(pb::CreateCredentialRequest {
            environment: environment.into(),
            name: name.into(),
            service: "oracle".into(),
            value: api_key(&format!("sk-oracle-{environment}")),
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner()
        .credential
        .expect("credential")
        .id
}

/// Code and message of a call that must fail.
fn refusal<T: std::fmt::Debug>(
    result: Result<tonic::Response<T>, Status>,
    what: &str,
) -> (tonic::Code, String) {
    let status = result.expect_err(what);
    (status.code(), status.message().to_owned())
}

/// Every call that names a credential, as `who`, for `reference`: the
/// refusals, in order.
async fn refusals(
    client: &strongroom_client::Client,
    reference: Option<pb::CredentialRef>,
    service_env: Option<(&str, &str)>,
) -> Vec<(tonic::Code, String)> {
    let mut creds = client.credentials();
    let mut out = vec![
        refusal(
            creds
                .get_credential(pb::GetCredentialRequest {
                    credential: reference.clone(),
                })
                .await,
            "get",
        ),
        refusal(
            creds
                .reveal_credential(pb::RevealCredentialRequest {
                    credential: reference.clone(),
                    purpose: "probe".into(),
                    ..Default::default()
                })
                .await,
            "reveal",
        ),
        refusal(
            creds
                .list_versions(pb::ListVersionsRequest {
                    credential: reference.clone(),
                    ..Default::default()
                })
                .await,
            "list versions",
        ),
        refusal(
            creds
                .rotate_credential(pb::RotateCredentialRequest {
                    credential: reference.clone(),
                    new_value: Some(pb::rotate_credential_request::NewValue::Value(
                        pb::CredentialValue {
                            value: Some(pb::credential_value::Value::ApiKey(pb::ApiKey {
                                api_key: "sk-oracle-rotated".into(),
                            })),
                        },
                    )),
                    ..Default::default()
                })
                .await,
            "rotate",
        ),
        refusal(
            creds
                .rollback_credential(pb::RollbackCredentialRequest {
                    credential: reference.clone(),
                    version: 1,
                    ..Default::default()
                })
                .await,
            "rollback",
        ),
        refusal(
            creds
                .revoke_credential(pb::RevokeCredentialRequest {
                    credential: reference.clone(),
                    reason: "probe".into(),
                })
                .await,
            "revoke",
        ),
        refusal(
            creds
                .destroy_credential(pb::DestroyCredentialRequest {
                    credential: reference.clone(),
                    reason: "probe".into(),
                    ..Default::default()
                })
                .await,
            "destroy",
        ),
    ];
    if let Some((environment, name)) = service_env {
        out.push(refusal(
            creds
                .resolve_credential(pb::ResolveCredentialRequest {
                    service: "oracle".into(),
                    environment: environment.into(),
                    name: name.into(),
                    purpose: "probe".into(),
                    ..Default::default()
                })
                .await,
            "resolve",
        ));
    }
    out
}

async fn refusals_do_not_tell_existing_from_missing(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = server.tenant("acme").await;
    let dev_id = create(&acme, "dev", "app/key").await;
    let prod_id = create(&acme, "production", "app/key").await;

    // An agent in its own environment, with grants on other names only.
    let (agent_id, agent) = server
        .principal_in(&acme, "agent", pb::Role::Agent, &["dev"])
        .await;
    grant(
        &acme,
        &agent_id,
        "other/*",
        &["dev"],
        &[pb::Capability::Reveal],
        None,
    )
    .await;
    // Principals confined to dev, whose roles read metadata.
    let (_, viewer) = server
        .principal_in(&acme, "viewer", pb::Role::Viewer, &["dev"])
        .await;
    let (_, operator) = server
        .principal_in(&acme, "operator", pb::Role::Operator, &["dev"])
        .await;
    let missing_id = uuid::Uuid::now_v7().to_string();
    // The probes below are many denials: a roomy denied-call limit keeps
    // them answered one like another (the limit counts misses and refusals
    // alike; `abuse.rs` tests it).
    acme.client
        .admin()
        .update_tenant_settings(pb::UpdateTenantSettingsRequest {
            settings: Some(pb::TenantSettings {
                denied_call_limit: Some(pb::RateLimit {
                    enabled: true,
                    per_minute: 100_000,
                    burst: 10_000,
                }),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["denied_call_limit".into()],
            }),
        })
        .await
        .expect("raise the denied-call limit");

    let probes: [(&str, &strongroom_client::Client, &str, &str); 3] = [
        ("agent in its environment", &agent, "dev", &dev_id),
        ("dev viewer in production", &viewer, "production", &prod_id),
        (
            "dev operator in production",
            &operator,
            "production",
            &prod_id,
        ),
    ];
    for (who, client, environment, existing_id) in probes {
        let existing = refusals(
            client,
            path(environment, "app/key"),
            Some((environment, "app/key")),
        )
        .await;
        let missing = refusals(
            client,
            path(environment, "app/ghost"),
            Some((environment, "app/ghost")),
        )
        .await;
        assert_eq!(existing, missing, "{who}: by path");
        assert!(
            existing
                .iter()
                .all(|(code, _)| *code == tonic::Code::NotFound
                    || *code == tonic::Code::PermissionDenied),
            "{who}: {existing:?}"
        );
        assert!(
            existing
                .iter()
                .any(|(code, _)| *code == tonic::Code::NotFound),
            "{who}: {existing:?}"
        );
        let existing = refusals(client, by_id(existing_id), None).await;
        let missing = refusals(client, by_id(&missing_id), None).await;
        assert_eq!(existing, missing, "{who}: by id");
    }

    // Each refusal of an existing credential is still audited.
    let events = strongroom_e2e::audit_events(
        &acme.client,
        pb::QueryEventsRequest {
            principal_id: agent_id.clone(),
            outcome: pb::AuditOutcome::Denied as i32,
            page_size: 500,
            ..Default::default()
        },
    )
    .await;
    assert!(
        events
            .iter()
            .any(|e| e.credential_id == dev_id && e.action() == pb::AuditAction::CredentialReveal),
        "the agent's refused reveal is not audited: {events:#?}"
    );
    server.stop().await;
}

async fn confined_reads_hold_nothing_of_production(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = server.tenant("acme").await;
    let dev_id = create(&acme, "dev", "app/key").await;
    let prod_id = create(&acme, "production", "billing/prod-only-name").await;
    // A grant reaching both environments, and production activity with
    // recognisable text.
    let (agent_id, agent) = server.principal(&acme, "agent", pb::Role::Agent).await;
    grant(
        &acme,
        &agent_id,
        "*",
        &["dev", "production"],
        &[pb::Capability::Reveal, pb::Capability::ReadMetadata],
        None,
    )
    .await;
    for (environment, name) in [("production", "billing/prod-only-name"), ("dev", "app/key")] {
        agent
            .credentials()
            .reveal_credential(pb::RevealCredentialRequest {
                credential: path(environment, name),
                purpose: format!("purpose-in-{environment}"),
                on_behalf_of: format!("user-in-{environment}"),
                ..Default::default()
            })
            .await
            .expect("reveal");
    }

    // More on both sides, so pages of one continue; and a grant that
    // reaches production only.
    let mut prod_ids = vec![prod_id.clone()];
    for i in 0..3 {
        prod_ids.push(create(&acme, "production", &format!("billing/prod-only-{i}")).await);
        create(&acme, "dev", &format!("app/more-{i}")).await;
    }
    let prod_grant = grant(
        &acme,
        &agent_id,
        "billing/*",
        &["production"],
        &[pb::Capability::List],
        None,
    )
    .await
    .id;
    // Grants are paged in creation order: one after the hidden grant, so a
    // page ending at the hidden one has a token.
    grant(
        &acme,
        &agent_id,
        "app/*",
        &["dev"],
        &[pb::Capability::List],
        None,
    )
    .await;

    for role in [pb::Role::Viewer, pb::Role::Operator, pb::Role::Admin] {
        let name = format!(
            "dev-{}",
            role.as_str_name().to_lowercase().replace('_', "-")
        );
        let (_, confined) = server.principal_in(&acme, &name, role, &["dev"]).await;
        let who = format!("{role:?} confined to dev");
        let listed = confined
            .credentials()
            .list_credentials(pb::ListCredentialsRequest {
                page_size: 500,
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner();
        assert!(
            listed.credentials.iter().any(|c| c.id == dev_id),
            "{who}: dev is listed"
        );
        let grants = confined
            .policy()
            .list_grants(pb::ListGrantsRequest {
                page_size: 500,
                ..Default::default()
            })
            .await
            .map(tonic::Response::into_inner);
        let accessible = confined
            .policy()
            .list_accessible_credentials(pb::ListAccessibleCredentialsRequest {
                capability: pb::Capability::ReadMetadata as i32,
                page_size: 500,
                ..Default::default()
            })
            .await
            .expect("list accessible")
            .into_inner();
        let events = confined
            .audit()
            .query_events(pb::QueryEventsRequest {
                page_size: 500,
                ..Default::default()
            })
            .await
            .expect("query events")
            .into_inner();
        assert!(
            events.events.iter().any(|e| e.credential_id == dev_id),
            "{who}: dev events are visible"
        );
        let everything = format!("{listed:?}{grants:?}{accessible:?}{events:?}");
        for needle in [
            "production",
            prod_id.as_str(),
            "prod-only-name",
            "purpose-in-production",
            "user-in-production",
        ] {
            assert!(
                !everything.contains(needle),
                "{who}: a read shows {needle:?}"
            );
        }
        if let Ok(grants) = grants {
            assert!(
                grants.grants.iter().any(|g| g.environments == ["dev"]),
                "{who}: the two-environment grant shows as far as dev"
            );
        }

        // Page tokens, one item a page, point at nothing of production.
        let mut hidden: Vec<&str> = prod_ids.iter().map(String::as_str).collect();
        hidden.push(&prod_grant);
        for environment in ["", "production"] {
            let (tokens, ids) = credential_pages(&confined, environment).await;
            if environment == "production" {
                assert!(tokens.is_empty(), "{who}: production pages: {tokens:?}");
                assert!(ids.is_empty(), "{who}: production items: {ids:?}");
            } else {
                // Paging one by one lists everything the caller may see.
                let mut all: Vec<String> =
                    listed.credentials.iter().map(|c| c.id.clone()).collect();
                all.sort();
                let mut ids = ids;
                ids.sort();
                assert_eq!(ids, all, "{who}: pages of one list everything visible");
            }
            assert_free_of_ids(&tokens, &hidden, &who);
        }
        let tokens = grant_page_tokens(&confined).await;
        assert_free_of_ids(&tokens, &hidden, &who);
    }
    server.stop().await;
}

/// Decodes a page token to its cursor text.
fn cursor(token: &str) -> String {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .expect("a page token is base64");
    String::from_utf8(bytes).expect("a page token is text")
}

#[track_caller]
fn assert_free_of_ids(cursors: &[String], hidden: &[&str], who: &str) {
    for c in cursors {
        for id in hidden {
            assert!(!c.contains(id), "{who}: a page token names {id}: {c}");
        }
    }
}

/// Lists credentials one a page (optionally in one environment): every page
/// token's cursor, and every item's id.
async fn credential_pages(
    client: &strongroom_client::Client,
    environment: &str,
) -> (Vec<String>, Vec<String>) {
    let mut cursors = Vec::new();
    let mut ids = Vec::new();
    let mut token = String::new();
    for _ in 0..50 {
        let page = client
            .credentials()
            .list_credentials(pb::ListCredentialsRequest {
                environment: environment.into(),
                page_size: 1,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner();
        ids.extend(page.credentials.into_iter().map(|c| c.id));
        if page.next_page_token.is_empty() {
            return (cursors, ids);
        }
        cursors.push(cursor(&page.next_page_token));
        token = page.next_page_token;
    }
    panic!("the listing did not end");
}

/// Lists grants one a page, returning every page token's cursor.
async fn grant_page_tokens(client: &strongroom_client::Client) -> Vec<String> {
    let mut cursors = Vec::new();
    let mut token = String::new();
    for _ in 0..50 {
        let Ok(page) = client
            .policy()
            .list_grants(pb::ListGrantsRequest {
                page_size: 1,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
        else {
            return cursors;
        };
        let page = page.into_inner();
        if page.next_page_token.is_empty() {
            return cursors;
        }
        cursors.push(cursor(&page.next_page_token));
        token = page.next_page_token;
    }
    panic!("the listing did not end");
}

/// Answers to `n` reveals of `reference`, as codes.
async fn probe_codes(
    client: &strongroom_client::Client,
    reference: Option<pb::CredentialRef>,
    n: usize,
) -> Vec<tonic::Code> {
    let mut codes = Vec::new();
    for _ in 0..n {
        let answer = client
            .credentials()
            .reveal_credential(pb::RevealCredentialRequest {
                credential: reference.clone(),
                purpose: "probe".into(),
                ..Default::default()
            })
            .await;
        codes.push(answer.map_or_else(|s| s.code(), |_| tonic::Code::Ok));
    }
    codes
}

/// The denied-call limit (on by default) counts a refused existing
/// credential and a missing one alike: two agents probing, one an existing
/// credential, the other a missing one, are limited after the same number
/// of calls, by id and by path.
async fn limits_do_not_tell_existing_from_missing(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = server.tenant("acme").await;
    let existing = create(&acme, "dev", "app/key").await;
    let missing = uuid::Uuid::now_v7().to_string();
    let mut n = 0;
    for (label, hit, miss) in [
        ("by id", by_id(&existing), by_id(&missing)),
        ("by path", path("dev", "app/key"), path("dev", "app/ghost")),
    ] {
        n += 1;
        let (_, a) = server
            .principal(&acme, &format!("prober-a{n}"), pb::Role::Agent)
            .await;
        let (_, b) = server
            .principal(&acme, &format!("prober-b{n}"), pb::Role::Agent)
            .await;
        let on_existing = probe_codes(&a, hit, 30).await;
        let on_missing = probe_codes(&b, miss, 30).await;
        assert!(
            on_existing.contains(&tonic::Code::ResourceExhausted),
            "{label}: 30 refusals were never limited: {on_existing:?}"
        );
        assert_eq!(on_existing, on_missing, "{label}");
    }
    server.stop().await;
}
