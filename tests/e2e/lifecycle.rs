//! The life of credentials of every type: create, read, list, reveal,
//! resolve, rotate, version history, rollback, revoke and destroy, ending
//! with an intact audit chain; and what a revoked credential refuses.

use std::collections::{BTreeMap, BTreeSet};

use strongroom_e2e::{
    Backend, CertKind, TenantAdmin, TestServer, api_key, api_key_text, assert_free_of,
    audit_events, by_id, expect_code, expect_invalid, grant, path, revealed_value, value,
    verified_event_count,
};
use strongroom_proto::v1 as pb;
use strongroom_proto::v1::credential_value::Value;
use tonic::Code;

on_both_backends!(full_lifecycle, revoked_credential_refuses_use);

/// One credential the lifecycle creates.
struct Fixture {
    environment: &'static str,
    name: &'static str,
    service: &'static str,
    tags: &'static [&'static str],
    kind: pb::CredentialType,
    value: pb::CredentialValue,
    /// The value's secret parts, which no metadata response may carry.
    secrets: Vec<String>,
}

fn fixtures(server: &TestServer) -> Vec<Fixture> {
    let (cert_pem, key_pem) = server
        .ca
        .client_cert("spiffe://e2e.test/edge", CertKind::Spiffe);
    let key_body = key_pem.lines().nth(1).expect("key body");
    let ssh_private = "-----BEGIN OPENSSH PRIVATE KEY-----\n\
                       b3BlbnNzaC1rZXktdjEAAAAAE2VFU1NIUFJJVkFURUtFWUJPRFkx\n\
                       -----END OPENSSH PRIVATE KEY-----\n";
    let f = |environment, name, service, tags, kind, v: Value, secrets: &[&str]| Fixture {
        environment,
        name,
        service,
        tags,
        kind,
        value: value(v).expect("value"),
        secrets: secrets.iter().map(|s| (*s).to_owned()).collect(),
    };
    vec![
        f(
            "dev",
            "llm/openai",
            "openai",
            &["team:ml", "tier=1"],
            pb::CredentialType::ApiKey,
            Value::ApiKey(pb::ApiKey {
                api_key: "sk-e2e-lifecycle-openai-v1".into(),
            }),
            &["sk-e2e-lifecycle-openai-v1"],
        ),
        f(
            "dev",
            "auth/github",
            "github",
            &["team:platform"],
            pb::CredentialType::OauthToken,
            Value::OauthToken(pb::OAuthToken {
                access_token: "gho_e2eLifecycleAccessToken".into(),
                refresh_token: "ghr_e2eLifecycleRefreshToken".into(),
                token_type: "Bearer".into(),
                expires_at: Some(prost_types::Timestamp {
                    seconds: 4_102_444_800,
                    nanos: 123_456_000,
                }),
                scopes: vec!["repo".into(), "read:org".into()],
            }),
            &[
                "gho_e2eLifecycleAccessToken",
                "ghr_e2eLifecycleRefreshToken",
            ],
        ),
        f(
            "dev",
            "web/intranet",
            "intranet",
            &[],
            pb::CredentialType::BasicAuth,
            Value::BasicAuth(pb::BasicAuth {
                username: "svc-intranet".into(),
                password: "e2e-lifecycle-basic-password".into(),
            }),
            &["e2e-lifecycle-basic-password"],
        ),
        f(
            "dev",
            "db/main",
            "postgres",
            &["team:platform"],
            pb::CredentialType::DbConnection,
            Value::DbConnection(pb::DbConnection {
                host: "db.internal.example".into(),
                port: 6432,
                database: "app".into(),
                username: "app_rw".into(),
                password: "e2e-lifecycle-db-password".into(),
                ssl_mode: pb::DbSslMode::VerifyFull as i32,
            }),
            &["e2e-lifecycle-db-password"],
        ),
        f(
            "dev",
            "ssh/deploy",
            "ssh",
            &[],
            pb::CredentialType::SshKey,
            Value::SshKey(pb::SshKey {
                private_key: ssh_private.into(),
                public_key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE2E deploy@e2e".into(),
                passphrase: "e2e-lifecycle-ssh-passphrase".into(),
            }),
            &[
                "b3BlbnNzaC1rZXktdjEAAAAAE2VFU1NIUFJJVkFURUtFWUJPRFkx",
                "e2e-lifecycle-ssh-passphrase",
            ],
        ),
        f(
            "production",
            "tls/edge",
            "edge",
            &["tls"],
            pb::CredentialType::Certificate,
            Value::Certificate(pb::Certificate {
                certificate_pem: cert_pem,
                private_key_pem: key_pem.clone(),
                ca_chain_pem: server.ca.pem().to_owned(),
            }),
            &[key_body],
        ),
        f(
            "production",
            "llm/custom",
            "openai",
            &["team:ml"],
            pb::CredentialType::Custom,
            Value::Custom(pb::CustomSecret {
                fields: [
                    ("client_id".to_owned(), "e2e-lifecycle-client-id".to_owned()),
                    (
                        "client_secret".to_owned(),
                        "e2e-lifecycle-client-secret".to_owned(),
                    ),
                ]
                .into_iter()
                .collect(),
            }),
            &["e2e-lifecycle-client-id", "e2e-lifecycle-client-secret"],
        ),
    ]
}

type Key = (String, String);

fn key(c: &pb::Credential) -> Key {
    (c.environment.clone(), c.name.clone())
}

fn keys(list: &[(&str, &str)]) -> BTreeSet<Key> {
    list.iter()
        .map(|(e, n)| ((*e).to_owned(), (*n).to_owned()))
        .collect()
}

/// Lists with `filter`, following every page; fails on a duplicate.
async fn list_all(admin: &TenantAdmin, filter: pb::ListCredentialsRequest) -> Vec<pb::Credential> {
    let mut creds = admin.client.credentials();
    let mut out: Vec<pb::Credential> = Vec::new();
    let mut token = String::new();
    loop {
        let page = creds
            .list_credentials(pb::ListCredentialsRequest {
                page_token: token,
                ..filter.clone()
            })
            .await
            .expect("list credentials")
            .into_inner();
        out.extend(page.credentials);
        if page.next_page_token.is_empty() {
            return out;
        }
        token = page.next_page_token;
    }
}

async fn listed(admin: &TenantAdmin, filter: pb::ListCredentialsRequest) -> BTreeSet<Key> {
    let list = list_all(admin, filter).await;
    let set: BTreeSet<Key> = list.iter().map(key).collect();
    assert_eq!(set.len(), list.len(), "a credential was listed twice");
    set
}

async fn reveal(
    admin: &TenantAdmin,
    credential: Option<pb::CredentialRef>,
    version: u32,
) -> Result<pb::RevealCredentialResponse, tonic::Status> {
    admin
        .client
        .credentials()
        .reveal_credential(pb::RevealCredentialRequest {
            credential,
            purpose: "e2e lifecycle".into(),
            version,
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn versions(admin: &TenantAdmin, id: &str) -> Vec<pb::CredentialVersion> {
    admin
        .client
        .credentials()
        .list_versions(pb::ListVersionsRequest {
            credential: by_id(id),
            ..Default::default()
        })
        .await
        .expect("list versions")
        .into_inner()
        .versions
}

fn states(versions: &[pb::CredentialVersion]) -> Vec<(u32, pb::CredentialVersionState)> {
    versions
        .iter()
        .map(|v| (v.version, v.state()))
        .collect::<Vec<_>>()
}

async fn full_lifecycle(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = server.tenant("acme").await;
    let mut creds = acme.client.credentials();
    let fixtures = fixtures(&server);
    let all_secrets: Vec<&str> = fixtures
        .iter()
        .flat_map(|f| f.secrets.iter().map(String::as_str))
        .collect();

    // Create one credential of every type.
    let mut ids: BTreeMap<&str, String> = BTreeMap::new();
    for f in &fixtures {
        let response = creds
            .create_credential(pb::CreateCredentialRequest {
                environment: f.environment.into(),
                name: f.name.into(),
                service: f.service.into(),
                value: Some(f.value.clone()),
                tags: f.tags.iter().map(|t| (*t).to_owned()).collect(),
                description: format!("e2e {}", f.name),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("create {}: {e:?}", f.name))
            .into_inner();
        assert_free_of(&response, &all_secrets, "CreateCredentialResponse");
        let c = response.credential.expect("credential");
        assert_eq!(c.credential_type(), f.kind, "{}", f.name);
        assert_eq!(c.current_version, 1, "{}", f.name);
        assert_eq!(c.status(), pb::CredentialStatus::Active, "{}", f.name);
        assert_eq!(c.created_by, acme.principal_id, "{}", f.name);
        assert_eq!(
            (c.environment.as_str(), c.name.as_str()),
            (f.environment, f.name)
        );
        ids.insert(f.name, c.id);
    }
    let duplicate = creds
        .create_credential(pb::CreateCredentialRequest {
            environment: "dev".into(),
            name: "llm/openai".into(),
            service: "openai".into(),
            value: api_key("sk-e2e-lifecycle-duplicate"),
            ..Default::default()
        })
        .await;
    expect_code(duplicate, Code::AlreadyExists, "the same path twice");

    // Get by id and by path: the same metadata, never a value.
    for f in &fixtures {
        let by_id = creds
            .get_credential(pb::GetCredentialRequest {
                credential: by_id(&ids[f.name]),
            })
            .await
            .expect("get by id")
            .into_inner();
        let by_path = creds
            .get_credential(pb::GetCredentialRequest {
                credential: path(f.environment, f.name),
            })
            .await
            .expect("get by path")
            .into_inner();
        assert_free_of(&by_id, &all_secrets, "GetCredentialResponse");
        let c = by_id.credential.clone().expect("credential");
        assert_eq!(by_id, by_path, "{}: by id and by path differ", f.name);
        assert_eq!(c.id, ids[f.name]);
        assert_eq!(c.service, f.service);
        assert_eq!(c.credential_type(), f.kind);
        assert_eq!(
            c.tags.iter().map(String::as_str).collect::<BTreeSet<_>>(),
            f.tags.iter().copied().collect::<BTreeSet<_>>(),
            "{}",
            f.name
        );
    }
    expect_code(
        creds
            .get_credential(pb::GetCredentialRequest {
                credential: path("production", "llm/openai"),
            })
            .await,
        Code::NotFound,
        "a name in the wrong environment",
    );

    // List with each filter.
    let everything = list_all(&acme, pb::ListCredentialsRequest::default()).await;
    for c in &everything {
        assert_free_of(c, &all_secrets, "listed Credential");
    }
    assert_eq!(
        everything.iter().map(key).collect::<BTreeSet<_>>(),
        fixtures
            .iter()
            .map(|f| (f.environment.to_owned(), f.name.to_owned()))
            .collect(),
    );
    let dev = keys(&[
        ("dev", "llm/openai"),
        ("dev", "auth/github"),
        ("dev", "web/intranet"),
        ("dev", "db/main"),
        ("dev", "ssh/deploy"),
    ]);
    assert_eq!(
        listed(
            &acme,
            pb::ListCredentialsRequest {
                environment: "dev".into(),
                ..Default::default()
            }
        )
        .await,
        dev,
        "environment filter"
    );
    assert_eq!(
        listed(
            &acme,
            pb::ListCredentialsRequest {
                service: "openai".into(),
                ..Default::default()
            }
        )
        .await,
        keys(&[("dev", "llm/openai"), ("production", "llm/custom")]),
        "service filter"
    );
    assert_eq!(
        listed(
            &acme,
            pb::ListCredentialsRequest {
                environment: "production".into(),
                service: "openai".into(),
                ..Default::default()
            }
        )
        .await,
        keys(&[("production", "llm/custom")]),
        "environment and service filters together"
    );
    for f in &fixtures {
        assert_eq!(
            listed(
                &acme,
                pb::ListCredentialsRequest {
                    credential_type: f.kind as i32,
                    ..Default::default()
                }
            )
            .await,
            keys(&[(f.environment, f.name)]),
            "type filter {:?}",
            f.kind
        );
    }
    assert_eq!(
        listed(
            &acme,
            pb::ListCredentialsRequest {
                tag: "team:platform".into(),
                ..Default::default()
            }
        )
        .await,
        keys(&[("dev", "auth/github"), ("dev", "db/main")]),
        "tag filter"
    );
    assert_eq!(
        listed(
            &acme,
            pb::ListCredentialsRequest {
                name_prefix: "llm/".into(),
                ..Default::default()
            }
        )
        .await,
        keys(&[("dev", "llm/openai"), ("production", "llm/custom")]),
        "name_prefix filter"
    );
    assert_eq!(
        listed(
            &acme,
            pb::ListCredentialsRequest {
                tag: "no-such-tag".into(),
                ..Default::default()
            }
        )
        .await,
        BTreeSet::new(),
        "a tag nobody carries"
    );

    // Pagination: 5 dev credentials in pages of 2, no duplicate, no gap.
    let mut pages = Vec::new();
    let mut token = String::new();
    loop {
        let page = creds
            .list_credentials(pb::ListCredentialsRequest {
                environment: "dev".into(),
                page_size: 2,
                page_token: token,
                ..Default::default()
            })
            .await
            .expect("list page")
            .into_inner();
        pages.push(page.credentials.iter().map(key).collect::<Vec<_>>());
        assert!(pages.len() <= 5, "pagination does not end: {pages:?}");
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![2, 2, 1],
        "page sizes: {pages:?}"
    );
    let paged: Vec<Key> = pages.concat();
    assert_eq!(
        paged.iter().cloned().collect::<BTreeSet<_>>(),
        dev,
        "pages {pages:?}"
    );
    assert_eq!(
        paged.len(),
        dev.len(),
        "a duplicate across pages: {pages:?}"
    );

    // Reveal every value exactly as stored, with a lease.
    for f in &fixtures {
        let before = std::time::SystemTime::now();
        let revealed = reveal(&acme, by_id(&ids[f.name]), 0)
            .await
            .unwrap_or_else(|e| panic!("reveal {}: {e:?}", f.name));
        assert_eq!(revealed_value(&revealed), &f.value, "{} roundtrip", f.name);
        assert_eq!(revealed.version, 1);
        let lease = revealed.lease.expect("lease");
        assert!(
            uuid::Uuid::parse_str(&lease.lease_id).is_ok(),
            "lease id {:?}",
            lease.lease_id
        );
        let ttl = lease.ttl.expect("lease ttl");
        assert!(ttl.seconds > 0, "lease ttl {ttl:?}");
        let expires = lease.expires_at.expect("lease expiry");
        let now = strongroom_e2e::timestamp(before);
        assert!(
            expires.seconds >= now.seconds + ttl.seconds - 1,
            "lease expiry {expires:?} is not ttl {ttl:?} after {now:?}"
        );
    }
    let short = creds
        .reveal_credential(pb::RevealCredentialRequest {
            credential: path("dev", "llm/openai"),
            lease_ttl: Some(prost_types::Duration {
                seconds: 90,
                nanos: 0,
            }),
            ..Default::default()
        })
        .await
        .expect("reveal with a lease ttl")
        .into_inner();
    assert_eq!(short.lease.and_then(|l| l.ttl).map(|t| t.seconds), Some(90));

    // Reveal single fields.
    let field = |credential, field: &str| {
        let mut creds = creds.clone();
        let field = field.to_owned();
        async move {
            creds
                .reveal_credential(pb::RevealCredentialRequest {
                    credential,
                    field,
                    ..Default::default()
                })
                .await
                .map(tonic::Response::into_inner)
        }
    };
    let password = field(path("dev", "db/main"), "password")
        .await
        .expect("reveal the password field");
    assert_eq!(
        password.revealed,
        Some(pb::reveal_credential_response::Revealed::Field(
            pb::RevealedField {
                field: "password".into(),
                value: "e2e-lifecycle-db-password".into(),
            }
        ))
    );
    assert!(password.lease.is_some(), "a field reveal has a lease too");
    let secret = field(path("production", "llm/custom"), "client_secret")
        .await
        .expect("reveal a custom field");
    assert_eq!(
        secret.revealed,
        Some(pb::reveal_credential_response::Revealed::Field(
            pb::RevealedField {
                field: "client_secret".into(),
                value: "e2e-lifecycle-client-secret".into(),
            }
        ))
    );
    expect_invalid(
        field(path("dev", "db/main"), "no_such_field").await,
        "field",
        "an unknown field",
    );

    // Resolve by service and environment.
    let resolved = creds
        .resolve_credential(pb::ResolveCredentialRequest {
            service: "openai".into(),
            environment: "dev".into(),
            purpose: "e2e resolve".into(),
            ..Default::default()
        })
        .await
        .expect("resolve")
        .into_inner();
    assert_eq!(
        resolved.credential.as_ref().map(|c| c.id.as_str()),
        Some(ids["llm/openai"].as_str())
    );
    assert_eq!(
        resolved.revealed,
        Some(pb::resolve_credential_response::Revealed::Value(
            fixtures[0].value.clone()
        ))
    );
    assert!(resolved.lease.is_some(), "a resolve has a lease");
    let resolved_prod = creds
        .resolve_credential(pb::ResolveCredentialRequest {
            service: "openai".into(),
            environment: "production".into(),
            field: "client_id".into(),
            ..Default::default()
        })
        .await
        .expect("resolve in production")
        .into_inner();
    assert_eq!(
        resolved_prod.revealed,
        Some(pb::resolve_credential_response::Revealed::Field(
            pb::RevealedField {
                field: "client_id".into(),
                value: "e2e-lifecycle-client-id".into(),
            }
        ))
    );
    expect_code(
        creds
            .resolve_credential(pb::ResolveCredentialRequest {
                service: "stripe".into(),
                environment: "dev".into(),
                ..Default::default()
            })
            .await,
        Code::NotFound,
        "resolving a service nobody serves",
    );

    // Rotate with a given value, then with a generated one.
    let openai = ids["llm/openai"].clone();
    let rotated = creds
        .rotate_credential(pb::RotateCredentialRequest {
            credential: by_id(&openai),
            new_value: Some(pb::rotate_credential_request::NewValue::Value(
                pb::CredentialValue {
                    value: Some(Value::ApiKey(pb::ApiKey {
                        api_key: "sk-e2e-lifecycle-openai-v2".into(),
                    })),
                },
            )),
            reason: "scheduled".into(),
            ..Default::default()
        })
        .await
        .expect("rotate with a value")
        .into_inner();
    assert_free_of(
        &rotated,
        &["sk-e2e-lifecycle-openai-v2"],
        "RotateCredentialResponse",
    );
    assert_eq!(rotated.version, 2);
    assert_eq!(rotated.credential.map(|c| c.current_version), Some(2));
    let v2 = reveal(&acme, by_id(&openai), 0).await.expect("reveal v2");
    assert_eq!(v2.version, 2);
    assert_eq!(
        api_key_text(revealed_value(&v2)),
        "sk-e2e-lifecycle-openai-v2"
    );
    expect_invalid(
        creds
            .rotate_credential(pb::RotateCredentialRequest {
                credential: by_id(&openai),
                new_value: Some(pb::rotate_credential_request::NewValue::Value(
                    fixtures[2].value.clone(),
                )),
                ..Default::default()
            })
            .await,
        "value",
        "rotating to a value of another type",
    );

    let generated = creds
        .rotate_credential(pb::RotateCredentialRequest {
            credential: by_id(&openai),
            new_value: Some(pb::rotate_credential_request::NewValue::Generate(
                pb::GenerationPolicy {
                    length: 24,
                    alphabet: pb::GenerationAlphabet::Hex as i32,
                    prefix: "sk-gen-".into(),
                    field: String::new(),
                },
            )),
            reason: "generated".into(),
            ..Default::default()
        })
        .await
        .expect("rotate with a generated value")
        .into_inner();
    assert_eq!(generated.version, 3);
    let v3 = reveal(&acme, by_id(&openai), 0).await.expect("reveal v3");
    assert_eq!(v3.version, 3);
    let v3_text = api_key_text(revealed_value(&v3)).to_owned();
    let random = v3_text
        .strip_prefix("sk-gen-")
        .unwrap_or_else(|| panic!("generated value lacks the prefix: length {}", v3_text.len()));
    assert_eq!(random.len(), 24, "generated length, prefix not counted");
    assert!(
        random
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
        "the generated part is not lowercase hex"
    );
    assert_ne!(v3_text, "sk-e2e-lifecycle-openai-v1");
    assert_ne!(v3_text, "sk-e2e-lifecycle-openai-v2");
    assert_free_of(
        &generated,
        &[&v3_text],
        "RotateCredentialResponse (generated)",
    );

    // A generated password keeps the other fields of the connection.
    creds
        .rotate_credential(pb::RotateCredentialRequest {
            credential: path("dev", "db/main"),
            new_value: Some(pb::rotate_credential_request::NewValue::Generate(
                pb::GenerationPolicy {
                    length: 32,
                    ..Default::default()
                },
            )),
            ..Default::default()
        })
        .await
        .expect("generate a db password");
    let db = reveal(&acme, path("dev", "db/main"), 0)
        .await
        .expect("reveal db");
    match (&revealed_value(&db).value, &fixtures[3].value.value) {
        (Some(Value::DbConnection(new)), Some(Value::DbConnection(old))) => {
            assert_eq!(new.password.len(), 32);
            assert!(new.password.bytes().all(|b| b.is_ascii_alphanumeric()));
            assert_ne!(new.password, old.password);
            assert_eq!(
                pb::DbConnection {
                    password: String::new(),
                    ..new.clone()
                },
                pb::DbConnection {
                    password: String::new(),
                    ..old.clone()
                },
                "a generated password changed other fields"
            );
        }
        other => panic!("unexpected db values {other:?}"),
    }

    // Version history.
    use pb::CredentialVersionState as S;
    let history = versions(&acme, &openai).await;
    assert_eq!(
        states(&history),
        vec![(3, S::Current), (2, S::Previous), (1, S::Retired)]
    );
    assert!(history.iter().all(|v| !v.destroyed));
    assert!(
        history.iter().all(|v| v.created_by == acme.principal_id),
        "{history:?}"
    );

    // An older version on request: PREVIOUS can be revealed, RETIRED not.
    let old = reveal(&acme, by_id(&openai), 2)
        .await
        .expect("reveal the previous version");
    assert_eq!(old.version, 2);
    assert_eq!(
        api_key_text(revealed_value(&old)),
        "sk-e2e-lifecycle-openai-v2"
    );
    expect_code(
        reveal(&acme, by_id(&openai), 1).await,
        Code::FailedPrecondition,
        "revealing a RETIRED version",
    );
    expect_code(
        reveal(&acme, by_id(&openai), 9).await,
        Code::NotFound,
        "revealing a version that never existed",
    );

    // Roll back to version 2.
    let rolled = creds
        .rollback_credential(pb::RollbackCredentialRequest {
            credential: by_id(&openai),
            version: 2,
            reason: "v3 misbehaves".into(),
            ..Default::default()
        })
        .await
        .expect("rollback")
        .into_inner();
    assert_eq!(rolled.credential.map(|c| c.current_version), Some(2));
    let current = reveal(&acme, by_id(&openai), 0)
        .await
        .expect("reveal after rollback");
    assert_eq!(current.version, 2);
    assert_eq!(
        api_key_text(revealed_value(&current)),
        "sk-e2e-lifecycle-openai-v2"
    );
    let history = versions(&acme, &openai).await;
    let current_versions: Vec<u32> = history
        .iter()
        .filter(|v| v.state() == S::Current)
        .map(|v| v.version)
        .collect();
    assert_eq!(current_versions, vec![2], "{:?}", states(&history));

    // Revoke: metadata stays, the value is refused.
    let revoked = creds
        .revoke_credential(pb::RevokeCredentialRequest {
            credential: by_id(&openai),
            reason: "compromised".into(),
        })
        .await
        .expect("revoke")
        .into_inner()
        .credential
        .expect("credential");
    assert_eq!(revoked.status(), pb::CredentialStatus::Revoked);
    assert_eq!(revoked.revoked_reason, "compromised");
    expect_code(
        reveal(&acme, by_id(&openai), 0).await,
        Code::FailedPrecondition,
        "revealing a revoked credential",
    );
    let still = creds
        .get_credential(pb::GetCredentialRequest {
            credential: by_id(&openai),
        })
        .await
        .expect("get a revoked credential")
        .into_inner()
        .credential
        .expect("credential");
    assert_eq!(still.status(), pb::CredentialStatus::Revoked);

    // Destroy: every version's value is gone for good.
    let destroyed = creds
        .destroy_credential(pb::DestroyCredentialRequest {
            credential: by_id(&openai),
            reason: "cleanup".into(),
            ..Default::default()
        })
        .await
        .expect("destroy")
        .into_inner();
    let mut gone = destroyed.destroyed_versions.clone();
    gone.sort_unstable();
    assert_eq!(gone, vec![1, 2, 3]);
    assert!(destroyed.credential.expect("credential").destroyed);
    let history = versions(&acme, &openai).await;
    assert_eq!(history.len(), 3, "destroy keeps the version metadata");
    assert!(
        history.iter().all(|v| v.destroyed),
        "versions not marked destroyed: {history:?}"
    );
    for version in [0, 2, 3] {
        expect_code(
            reveal(&acme, by_id(&openai), version).await,
            Code::FailedPrecondition,
            "revealing a destroyed credential",
        );
    }

    // The other credentials are untouched.
    let github = reveal(&acme, path("dev", "auth/github"), 0)
        .await
        .expect("reveal another credential");
    assert_eq!(revealed_value(&github), &fixtures[1].value);

    // Every step is in the audit chain, which verifies.
    let events = audit_events(
        &acme.client,
        pb::QueryEventsRequest {
            credential_id: openai.clone(),
            ..Default::default()
        },
    )
    .await;
    use pb::AuditAction as A;
    let actions: BTreeSet<i32> = events.iter().map(|e| e.action).collect();
    for action in [
        A::CredentialCreate,
        A::CredentialReveal,
        A::CredentialRotate,
        A::CredentialRollback,
        A::CredentialRevoke,
        A::CredentialDestroy,
    ] {
        assert!(
            actions.contains(&(action as i32)),
            "no {action:?} event for the credential"
        );
    }
    assert!(
        events.iter().all(|e| e.credential_id == openai),
        "the credential filter leaked other events"
    );
    assert!(
        events.iter().any(|e| e.action == A::CredentialReveal as i32
            && e.outcome == pb::AuditOutcome::Denied as i32
            && e.reason_code == "CREDENTIAL_REVOKED"),
        "the refused reveal of the revoked credential is not audited"
    );
    for e in &events {
        assert_free_of(e, &all_secrets, "AuditEvent");
    }
    let checked = verified_event_count(&acme.client).await;
    assert!(checked > 0, "no audit events verified");
    let total = audit_events(&acme.client, pb::QueryEventsRequest::default())
        .await
        .len() as u64;
    assert_eq!(checked, total, "VerifyChain and QueryEvents disagree");

    let status = server.stop().await;
    assert!(status.success(), "strongroomd exited with {status}");
}

async fn revoked_credential_refuses_use(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = server.tenant("acme").await;
    let (agent_id, agent) = server.principal(&acme, "agent", pb::Role::Agent).await;
    let mut creds = acme.client.credentials();
    let id = creds
        .create_credential(pb::CreateCredentialRequest {
            environment: "production".into(),
            name: "payments/stripe".into(),
            service: "stripe".into(),
            value: api_key("sk_live_e2e_revoked"),
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner()
        .credential
        .expect("credential")
        .id;
    grant(
        &acme,
        &agent_id,
        "payments/*",
        &["production"],
        &[pb::Capability::Reveal],
        None,
    )
    .await;
    let agent_reveal = || {
        let mut creds = agent.credentials();
        let id = id.clone();
        async move {
            creds
                .reveal_credential(pb::RevealCredentialRequest {
                    credential: by_id(&id),
                    purpose: "charge a card".into(),
                    ..Default::default()
                })
                .await
        }
    };
    agent_reveal().await.expect("reveal before revocation");

    creds
        .revoke_credential(pb::RevokeCredentialRequest {
            credential: by_id(&id),
            reason: "leaked".into(),
        })
        .await
        .expect("revoke");

    let admin_reveal = creds
        .reveal_credential(pb::RevealCredentialRequest {
            credential: by_id(&id),
            ..Default::default()
        })
        .await;
    expect_code(admin_reveal, Code::FailedPrecondition, "admin reveal");
    expect_code(
        agent_reveal().await,
        Code::FailedPrecondition,
        "agent reveal",
    );
    expect_code(
        creds
            .resolve_credential(pb::ResolveCredentialRequest {
                service: "stripe".into(),
                environment: "production".into(),
                name: "payments/stripe".into(),
                ..Default::default()
            })
            .await,
        Code::FailedPrecondition,
        "resolve by name",
    );
    expect_code(
        creds
            .rotate_credential(pb::RotateCredentialRequest {
                credential: by_id(&id),
                new_value: Some(pb::rotate_credential_request::NewValue::Value(
                    pb::CredentialValue {
                        value: Some(Value::ApiKey(pb::ApiKey {
                            api_key: "sk_live_e2e_after_revoke".into(),
                        })),
                    },
                )),
                ..Default::default()
            })
            .await,
        Code::FailedPrecondition,
        "rotate with a value",
    );
    expect_code(
        creds
            .rotate_credential(pb::RotateCredentialRequest {
                credential: by_id(&id),
                new_value: Some(pb::rotate_credential_request::NewValue::Generate(
                    pb::GenerationPolicy::default(),
                )),
                ..Default::default()
            })
            .await,
        Code::FailedPrecondition,
        "rotate with a generated value",
    );
    expect_code(
        creds
            .rollback_credential(pb::RollbackCredentialRequest {
                credential: by_id(&id),
                version: 1,
                ..Default::default()
            })
            .await,
        Code::FailedPrecondition,
        "rollback",
    );
    let history = versions(&acme, &id).await;
    assert_eq!(
        history.iter().map(|v| v.version).collect::<Vec<_>>(),
        vec![1],
        "a refused rotation wrote a version"
    );
    let c = creds
        .get_credential(pb::GetCredentialRequest {
            credential: by_id(&id),
        })
        .await
        .expect("get")
        .into_inner()
        .credential
        .expect("credential");
    assert_eq!(c.status(), pb::CredentialStatus::Revoked);
    assert_eq!(c.current_version, 1);
}
