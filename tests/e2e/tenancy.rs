//! Tenant isolation: nothing of another tenant is visible, guessable or
//! reachable, even at the same path, even by an admin, even with a page
//! token or an id taken from the other tenant.

use std::collections::BTreeSet;

use strongroom_client::Client;
use strongroom_e2e::{
    Backend, TenantAdmin, TestServer, api_key, api_key_text, by_id, expect_code, expect_invalid,
    grant, path, revealed_value,
};
use strongroom_proto::v1 as pb;
use tonic::Code;

on_both_backends!(cross_tenant_reach);

async fn create(admin: &TenantAdmin, environment: &str, name: &str, key: &str) -> String {
    admin
        .client
        .credentials()
        .create_credential(pb::CreateCredentialRequest {
            environment: environment.into(),
            name: name.into(),
            service: "stripe".into(),
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

async fn list_ids(client: &Client, page_token: &str) -> Vec<String> {
    client
        .credentials()
        .list_credentials(pb::ListCredentialsRequest {
            page_token: page_token.into(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .credentials
        .into_iter()
        .map(|c| c.id)
        .collect()
}

/// Every way `client` could reach credential `id`; each must fail exactly
/// as for an id that exists nowhere.
async fn assert_unreachable(client: &Client, id: &str, who: &str) {
    let mut creds = client.credentials();
    let random = uuid::Uuid::now_v7().to_string();
    for target in [id, random.as_str()] {
        let what = |op: &str| format!("{who}: {op} {target}");
        let statuses = vec![
            expect_code(
                creds
                    .get_credential(pb::GetCredentialRequest {
                        credential: by_id(target),
                    })
                    .await,
                Code::NotFound,
                &what("get"),
            ),
            expect_code(
                creds
                    .reveal_credential(pb::RevealCredentialRequest {
                        credential: by_id(target),
                        purpose: "cross-tenant probe".into(),
                        ..Default::default()
                    })
                    .await,
                Code::NotFound,
                &what("reveal"),
            ),
            expect_code(
                creds
                    .rotate_credential(pb::RotateCredentialRequest {
                        credential: by_id(target),
                        new_value: Some(pb::rotate_credential_request::NewValue::Value(
                            api_key("sk_test_cross_tenant_overwrite").expect("value"),
                        )),
                        ..Default::default()
                    })
                    .await,
                Code::NotFound,
                &what("rotate"),
            ),
            expect_code(
                creds
                    .list_versions(pb::ListVersionsRequest {
                        credential: by_id(target),
                        ..Default::default()
                    })
                    .await,
                Code::NotFound,
                &what("list versions"),
            ),
            expect_code(
                creds
                    .rollback_credential(pb::RollbackCredentialRequest {
                        credential: by_id(target),
                        version: 1,
                        ..Default::default()
                    })
                    .await,
                Code::NotFound,
                &what("rollback"),
            ),
            expect_code(
                creds
                    .revoke_credential(pb::RevokeCredentialRequest {
                        credential: by_id(target),
                        reason: "cross-tenant probe".into(),
                    })
                    .await,
                Code::NotFound,
                &what("revoke"),
            ),
            expect_code(
                creds
                    .destroy_credential(pb::DestroyCredentialRequest {
                        credential: by_id(target),
                        reason: "cross-tenant probe".into(),
                        ..Default::default()
                    })
                    .await,
                Code::NotFound,
                &what("destroy"),
            ),
        ];
        for s in statuses {
            assert!(
                !s.message().contains(target) && !s.message().contains("globex"),
                "{who}: the error tells more than not found: {s:?}"
            );
        }
    }
    // Indistinguishable: the same messages for the other tenant's id and a
    // random one.
    let messages = |target: String| {
        let mut creds = creds.clone();
        async move {
            let get = creds
                .get_credential(pb::GetCredentialRequest {
                    credential: by_id(&target),
                })
                .await
                .expect_err("get");
            let reveal = creds
                .reveal_credential(pb::RevealCredentialRequest {
                    credential: by_id(&target),
                    purpose: "cross-tenant probe".into(),
                    ..Default::default()
                })
                .await
                .expect_err("reveal");
            (
                get.code(),
                get.message().to_owned(),
                reveal.code(),
                reveal.message().to_owned(),
            )
        }
    };
    assert_eq!(
        messages(id.to_owned()).await,
        messages(random).await,
        "{who}: another tenant's id is distinguishable from a random one"
    );
}

async fn cross_tenant_reach(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = server.tenant("acme").await;
    let globex = server.tenant("globex").await;

    // The same path in both tenants, plus a few others; globex's first, so
    // acme's ids sort after any globex page cursor.
    let globex_shared = create(
        &globex,
        "production",
        "payments/stripe",
        "sk_live_globex_0001",
    )
    .await;
    for name in ["g/one", "g/two", "g/three", "g/four"] {
        create(&globex, "dev", name, "sk_test_globex_other").await;
    }
    let acme_shared = create(&acme, "production", "payments/stripe", "sk_live_acme_0001").await;
    let mut acme_ids = BTreeSet::from([acme_shared.clone()]);
    for name in ["a/one", "a/two", "a/three"] {
        acme_ids.insert(create(&acme, "dev", name, &format!("sk_test_acme_{}", name.len())).await);
    }

    // acme's agent may reveal everything in acme.
    let (acme_agent_id, acme_agent) = server.principal(&acme, "agent", pb::Role::Agent).await;
    grant(
        &acme,
        &acme_agent_id,
        "*",
        &["dev", "staging", "production"],
        &[
            pb::Capability::List,
            pb::Capability::ReadMetadata,
            pb::Capability::Reveal,
            pb::Capability::Write,
            pb::Capability::Rotate,
            pb::Capability::Admin,
        ],
        None,
    )
    .await;
    let (globex_agent_id, _globex_agent) =
        server.principal(&globex, "agent", pb::Role::Agent).await;
    let globex_grant = grant(
        &globex,
        &globex_agent_id,
        "payments/*",
        &["production"],
        &[pb::Capability::Reveal],
        None,
    )
    .await;

    // The grant works inside acme, so refusals below are about the tenant.
    let own = acme_agent
        .credentials()
        .reveal_credential(pb::RevealCredentialRequest {
            credential: path("production", "payments/stripe"),
            purpose: "own tenant".into(),
            ..Default::default()
        })
        .await
        .expect("agent reveals in its own tenant")
        .into_inner();
    assert_eq!(api_key_text(revealed_value(&own)), "sk_live_acme_0001");
    assert_eq!(own.credential.map(|c| c.id), Some(acme_shared.clone()));

    assert_unreachable(&acme.client, &globex_shared, "acme admin").await;
    assert_unreachable(&acme_agent, &globex_shared, "acme agent").await;

    // Nothing happened to globex's credential.
    let theirs = globex
        .client
        .credentials()
        .reveal_credential(pb::RevealCredentialRequest {
            credential: by_id(&globex_shared),
            ..Default::default()
        })
        .await
        .expect("globex still reveals its credential")
        .into_inner();
    assert_eq!(theirs.version, 1);
    assert_eq!(api_key_text(revealed_value(&theirs)), "sk_live_globex_0001");
    let c = theirs.credential.expect("credential");
    assert_eq!(c.status(), pb::CredentialStatus::Active);
    assert!(!c.destroyed);

    // Lists never show globex items.
    for (who, client) in [("admin", &acme.client), ("agent", &acme_agent)] {
        let ids: BTreeSet<String> = list_ids(client, "").await.into_iter().collect();
        assert_eq!(ids, acme_ids, "acme {who} lists exactly acme's credentials");
    }

    // A page token minted for globex, used by acme, pages through acme only.
    let globex_page = globex
        .client
        .credentials()
        .list_credentials(pb::ListCredentialsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .expect("globex lists")
        .into_inner();
    assert!(!globex_page.next_page_token.is_empty());
    for (who, client) in [("admin", &acme.client), ("agent", &acme_agent)] {
        let rows = list_ids(client, &globex_page.next_page_token).await;
        assert!(
            !rows.is_empty(),
            "acme {who}: nothing after globex's cursor"
        );
        assert!(
            rows.iter().all(|id| acme_ids.contains(id)),
            "acme {who} got foreign rows with globex's page token: {rows:?}"
        );
    }

    // Principals and grants of globex are not there for acme.
    let mut admin = acme.client.admin();
    for principal in [&globex.principal_id, &globex_agent_id] {
        expect_code(
            admin
                .get_principal(pb::GetPrincipalRequest {
                    principal_id: principal.clone(),
                })
                .await,
            Code::NotFound,
            "GetPrincipal with a globex id",
        );
        let grants = acme
            .client
            .policy()
            .list_grants(pb::ListGrantsRequest {
                principal_id: principal.clone(),
                include_expired: true,
                include_revoked: true,
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner().grants);
        match grants {
            Ok(grants) => assert!(grants.is_empty(), "globex grants visible: {grants:?}"),
            Err(s) => assert_eq!(s.code(), Code::NotFound, "{s:?}"),
        }
    }
    let all_grants = acme
        .client
        .policy()
        .list_grants(pb::ListGrantsRequest {
            include_expired: true,
            include_revoked: true,
            ..Default::default()
        })
        .await
        .expect("list grants")
        .into_inner()
        .grants;
    assert!(!all_grants.is_empty(), "acme's own grant is listed");
    assert!(
        all_grants.iter().all(|g| g.id != globex_grant.id),
        "a globex grant is listed for acme"
    );
    let principals = admin
        .list_principals(pb::ListPrincipalsRequest::default())
        .await
        .expect("list principals")
        .into_inner()
        .principals;
    assert!(
        principals
            .iter()
            .all(|p| p.id != globex.principal_id && p.id != globex_agent_id),
        "globex principals listed for acme"
    );

    // A grant for a globex principal cannot be created in acme.
    expect_invalid(
        acme.client
            .policy()
            .create_grant(pb::CreateGrantRequest {
                subject: Some(pb::GrantSubject {
                    subject: Some(pb::grant_subject::Subject::PrincipalId(
                        globex_agent_id.clone(),
                    )),
                }),
                selector: "*".into(),
                environments: vec!["production".into()],
                capabilities: vec![pb::Capability::Reveal as i32],
                ..Default::default()
            })
            .await,
        "subject.principal_id",
        "CreateGrant for a globex principal",
    );

    // Audit of acme holds nothing of globex's credential.
    let events = strongroom_e2e::audit_events(
        &acme.client,
        pb::QueryEventsRequest {
            credential_id: globex_shared.clone(),
            ..Default::default()
        },
    )
    .await;
    assert!(events.is_empty(), "globex credential in acme's audit");
    let everything = strongroom_e2e::audit_events(&acme.client, Default::default()).await;
    assert!(
        everything.iter().all(|e| e.tenant_id == acme.tenant_id),
        "foreign events in acme's audit"
    );
}
