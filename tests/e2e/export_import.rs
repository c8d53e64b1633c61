//! Encrypted export and import of a tenant: from a SQLite server into a
//! Postgres one (and back), every value, version, grant, binding and audit
//! link intact; a changed, cut or wrongly unlocked file, and an import over
//! an existing tenant, refused with nothing written; no passphrase or value
//! in either server's log.

use strongroom_e2e::{
    Backend, Options, TenantAdmin, TestServer, api_key, expect_code, grant, path, revealed_value,
    value, verified_event_count,
};
use strongroom_proto::v1 as pb;
use strongroom_proto::v1::credential_value::Value;
use tonic::Code;

const PASSPHRASE: &str = "export-e2e-passphrase-Quokka-7731";

/// Values the tenant holds: (environment, name, versions in order).
fn fixtures() -> Vec<(&'static str, &'static str, &'static str, Vec<Value>)> {
    let key = |k: &str| Value::ApiKey(pb::ApiKey { api_key: k.into() });
    vec![
        (
            "production",
            "llm/openai",
            "openai",
            vec![
                key("sk-export-e2e-openai-v1"),
                key("sk-export-e2e-openai-v2"),
                key("sk-export-e2e-openai-v3"),
            ],
        ),
        (
            "dev",
            "web/intranet",
            "intranet",
            vec![
                Value::BasicAuth(pb::BasicAuth {
                    username: "svc-intranet".into(),
                    password: "export-e2e-basic-password-1".into(),
                }),
                Value::BasicAuth(pb::BasicAuth {
                    username: "svc-intranet".into(),
                    password: "export-e2e-basic-password-2".into(),
                }),
            ],
        ),
        (
            "production",
            "db/main",
            "postgres",
            vec![Value::DbConnection(pb::DbConnection {
                host: "db.internal.example".into(),
                port: 6432,
                database: "app".into(),
                username: "app_rw".into(),
                password: "export-e2e-db-password".into(),
                ssl_mode: pb::DbSslMode::VerifyFull as i32,
            })],
        ),
    ]
}

/// Every secret text the fixtures hold.
fn secrets() -> Vec<&'static str> {
    vec![
        PASSPHRASE,
        "sk-export-e2e-openai-v1",
        "sk-export-e2e-openai-v2",
        "sk-export-e2e-openai-v3",
        "export-e2e-basic-password-1",
        "export-e2e-basic-password-2",
        "export-e2e-db-password",
        "export-e2e-notifier-secret-0123456789",
    ]
}

async fn server(backend: Backend) -> TestServer {
    let mut options = Options::new(backend);
    // Small Argon2id costs: a debug build runs them.
    options
        .env
        .push(("STRONGROOM_EXPORT_KDF_MEMORY_KIB".into(), "1024".into()));
    options
        .env
        .push(("STRONGROOM_EXPORT_KDF_PASSES".into(), "1".into()));
    TestServer::start_with(options).await
}

/// Fills tenant `acme`: the fixtures, an agent with a reveal grant on
/// `llm/*` in production, a notifier; returns the admin and the agent's id.
async fn populate(server: &TestServer) -> (TenantAdmin, String) {
    let admin = server.tenant("acme").await;
    let mut creds = admin.client.credentials();
    for (environment, name, service, versions) in fixtures() {
        creds
            .create_credential(pb::CreateCredentialRequest {
                environment: environment.into(),
                name: name.into(),
                service: service.into(),
                value: value(versions[0].clone()),
                ..Default::default()
            })
            .await
            .expect("create");
        for v in &versions[1..] {
            creds
                .rotate_credential(pb::RotateCredentialRequest {
                    credential: path(environment, name),
                    new_value: Some(pb::rotate_credential_request::NewValue::Value(
                        pb::CredentialValue {
                            value: Some(v.clone()),
                        },
                    )),
                    reason: "e2e".into(),
                    ..Default::default()
                })
                .await
                .expect("rotate");
        }
    }
    let (agent, agent_client) = server.principal(&admin, "agent", pb::Role::Agent).await;
    grant(
        &admin,
        &agent,
        "llm/*",
        &["production"],
        &[pb::Capability::Reveal],
        None,
    )
    .await;
    // A reveal, so the export carries a lease and the agent's events.
    reveal(&agent_client, "production", "llm/openai", 0)
        .await
        .expect("the agent reveals through its grant");
    admin
        .client
        .admin()
        .update_tenant_settings(pb::UpdateTenantSettingsRequest {
            settings: Some(pb::TenantSettings {
                notifier: Some(pb::Notifier {
                    url: "https://hooks.example.com/strongroom".into(),
                    signing_secret: b"export-e2e-notifier-secret-0123456789".to_vec(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["notifier".into()],
            }),
        })
        .await
        .expect("set the notifier");
    (admin, agent)
}

async fn reveal(
    client: &strongroom_client::Client,
    environment: &str,
    name: &str,
    version: u32,
) -> Result<pb::CredentialValue, tonic::Status> {
    client
        .credentials()
        .reveal_credential(pb::RevealCredentialRequest {
            credential: path(environment, name),
            purpose: "export e2e".into(),
            version,
            ..Default::default()
        })
        .await
        .map(|r| revealed_value(&r.into_inner()).clone())
}

/// What an export stream sent.
struct Exported {
    file: Vec<u8>,
    progress: usize,
    summary: pb::ExportSummary,
}

async fn export(
    client: &strongroom_client::Client,
    passphrase: &str,
    tenant_id: &str,
) -> Result<Exported, tonic::Status> {
    let mut stream = client
        .admin()
        .export_tenant(pb::ExportTenantRequest {
            passphrase: passphrase.into(),
            tenant_id: tenant_id.into(),
        })
        .await?
        .into_inner();
    let mut file = Vec::new();
    let mut progress = 0;
    let mut summary = None;
    while let Some(m) = stream.message().await? {
        match m.part.expect("a part") {
            pb::export_tenant_response::Part::Chunk(c) => {
                assert!(summary.is_none(), "chunks come before the summary");
                file.extend_from_slice(&c);
            }
            pb::export_tenant_response::Part::Progress(_) => progress += 1,
            pb::export_tenant_response::Part::Summary(s) => summary = Some(s),
        }
    }
    Ok(Exported {
        file,
        progress,
        summary: summary.expect("the summary comes last"),
    })
}

async fn import(
    client: &strongroom_client::Client,
    file: &[u8],
    passphrase: &str,
) -> Result<pb::ImportTenantResponse, tonic::Status> {
    let mut messages = vec![pb::ImportTenantRequest {
        part: Some(pb::import_tenant_request::Part::Header(
            pb::ImportTenantHeader {
                passphrase: passphrase.into(),
                ..Default::default()
            },
        )),
    }];
    for piece in file.chunks(200 * 1024) {
        messages.push(pb::ImportTenantRequest {
            part: Some(pb::import_tenant_request::Part::Chunk(piece.to_vec())),
        });
    }
    client
        .admin()
        .import_tenant(tokio_stream::iter(messages))
        .await
        .map(tonic::Response::into_inner)
}

async fn tenant_count(server: &TestServer) -> usize {
    server
        .operator()
        .await
        .admin()
        .list_tenants(pb::ListTenantsRequest::default())
        .await
        .expect("list tenants")
        .into_inner()
        .tenants
        .len()
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .to_vec()
}

/// Every value revealable on `server` by `client` (current and previous
/// versions), by (environment, name, version).
async fn values(client: &strongroom_client::Client) -> Vec<(String, pb::CredentialValue)> {
    let mut out = Vec::new();
    for (environment, name, _, versions) in fixtures() {
        let latest = versions.len() as u32;
        for version in [latest, latest.saturating_sub(1)] {
            if version == 0 {
                continue;
            }
            let v = reveal(client, environment, name, version)
                .await
                .unwrap_or_else(|e| panic!("reveal {environment}/{name} v{version}: {e:?}"));
            assert_eq!(
                v.value.as_ref(),
                Some(&versions[version as usize - 1]),
                "{environment}/{name} v{version}"
            );
            out.push((format!("{environment}/{name}#{version}"), v));
        }
    }
    out
}

async fn versions_of(client: &strongroom_client::Client) -> Vec<pb::ListVersionsResponse> {
    let mut out = Vec::new();
    for (environment, name, _, _) in fixtures() {
        out.push(
            client
                .credentials()
                .list_versions(pb::ListVersionsRequest {
                    credential: path(environment, name),
                    ..Default::default()
                })
                .await
                .expect("list versions")
                .into_inner(),
        );
    }
    out
}

#[tokio::test]
async fn sqlite_export_restores_into_postgres() {
    let source = server(Backend::Sqlite).await;
    let (admin, agent) = populate(&source).await;
    let before = values(&admin.client).await;
    let versions_before = versions_of(&admin.client).await;

    // Refused exports: a short passphrase, a caller who is not an admin.
    expect_code(
        export(&admin.client, "too-short", "").await.map(|_| ()),
        Code::InvalidArgument,
        "a short passphrase",
    );
    let agent_client = source.client("spiffe://e2e.test/acme/agent").await;
    expect_code(
        export(&agent_client, PASSPHRASE, "").await.map(|_| ()),
        Code::PermissionDenied,
        "an agent exports",
    );
    let events_before = verified_event_count(&admin.client).await;

    let exported = export(&admin.client, PASSPHRASE, "").await.expect("export");
    let summary = &exported.summary;
    assert_eq!(summary.size_bytes, exported.file.len() as u64);
    assert_eq!(summary.sha256, sha256(&exported.file));
    assert_eq!(summary.format, 1);
    assert!(
        exported.progress >= 2,
        "progress messages: {}",
        exported.progress
    );
    let counts = summary.counts.expect("counts");
    assert_eq!(counts.credentials, 3);
    assert_eq!(counts.versions, 6);
    assert_eq!(counts.principals, 2);
    assert_eq!(counts.grants, 1);
    // The export's own event comes after the rows it read.
    assert_eq!(counts.audit_events, events_before);
    for s in secrets() {
        assert!(
            !exported.file.windows(s.len()).any(|w| w == s.as_bytes()),
            "{s} appears in the file"
        );
    }
    // An operator exports any tenant by id; a tenant admin only their own.
    let operator_export = export(&source.operator().await, PASSPHRASE, &admin.tenant_id)
        .await
        .expect("operator export");
    assert_eq!(
        operator_export.summary.counts,
        summary.counts.map(|mut c| {
            c.audit_events += 1;
            c
        })
    );
    expect_code(
        export(&admin.client, PASSPHRASE, &uuid::Uuid::new_v4().to_string())
            .await
            .map(|_| ()),
        Code::InvalidArgument,
        "an admin names another tenant",
    );

    let target = server(Backend::Postgres).await;
    let operator = target.operator().await;

    // A wrong passphrase, a flipped byte, a cut file: refused, nothing
    // written.
    let wrong = import(
        &operator,
        &exported.file,
        "export-e2e-passphrase-Quokka-7732",
    )
    .await;
    let status = wrong.expect_err("a wrong passphrase");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("wrong passphrase"), "{status:?}");
    for at in [exported.file.len() / 2, exported.file.len() - 1, 40] {
        let mut flipped = exported.file.clone();
        flipped[at] ^= 0x20;
        let status = import(&operator, &flipped, PASSPHRASE)
            .await
            .expect_err("a flipped byte");
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "flip at {at}: {status:?}"
        );
        assert!(
            status.message().contains("fails authentication")
                || status.message().contains("not a strongroom export")
                || status.message().contains("wrong passphrase"),
            "flip at {at}: {status:?}"
        );
    }
    let cut = import(
        &operator,
        &exported.file[..exported.file.len() - 100],
        PASSPHRASE,
    )
    .await
    .expect_err("a cut file");
    assert_eq!(cut.code(), Code::InvalidArgument, "{cut:?}");
    assert!(cut.message().contains("fails authentication"), "{cut:?}");
    assert_eq!(
        tenant_count(&target).await,
        0,
        "a refused import wrote a tenant"
    );
    // Only platform operators import.
    let stranger = target.client("spiffe://e2e.test/acme/admin").await;
    assert!(import(&stranger, &exported.file, PASSPHRASE).await.is_err());
    assert_eq!(tenant_count(&target).await, 0);

    let imported = import(&operator, &exported.file, PASSPHRASE)
        .await
        .expect("import");
    let tenant = imported.tenant.expect("tenant");
    assert_eq!(tenant.id, admin.tenant_id, "the tenant keeps its id");
    assert_eq!(tenant.name, "acme");
    assert_eq!(imported.counts, summary.counts);

    // The admin and the agent, by their identities, on the new server.
    let restored_admin = target.client("spiffe://e2e.test/acme/admin").await;
    let after = values(&restored_admin).await;
    assert_eq!(after, before, "every value reveals identically");
    assert_eq!(versions_of(&restored_admin).await, versions_before);
    let restored_agent = target.client("spiffe://e2e.test/acme/agent").await;
    let v = reveal(&restored_agent, "production", "llm/openai", 0)
        .await
        .expect("the agent reveals through its imported grant");
    assert_eq!(v.value, Some(fixtures()[0].3[2].clone()));
    expect_code(
        reveal(&restored_agent, "production", "db/main", 0).await,
        // Refused as unseen: no grant reaches it.
        Code::NotFound,
        "no grant for db/main",
    );
    let grants = restored_admin
        .policy()
        .list_grants(pb::ListGrantsRequest {
            principal_id: agent.clone(),
            ..Default::default()
        })
        .await
        .expect("grants")
        .into_inner()
        .grants;
    assert_eq!(grants.len(), 1);
    // The chain verifies end to end: the imported events, the import and
    // the reveals since.
    let checked = verified_event_count(&restored_admin).await;
    assert!(checked > events_before + 1, "{checked} events checked");
    let settings = restored_admin
        .admin()
        .get_tenant_settings(pb::GetTenantSettingsRequest {})
        .await
        .expect("settings")
        .into_inner()
        .settings
        .expect("settings");
    let notifier = settings.notifier.expect("the notifier came along");
    assert!(notifier.signing_secret_set);
    assert_eq!(notifier.url, "https://hooks.example.com/strongroom");
    // A credential written after the import seals under the new key.
    restored_admin
        .credentials()
        .create_credential(pb::CreateCredentialRequest {
            environment: "dev".into(),
            name: "after/import".into(),
            service: "openai".into(),
            value: api_key("sk-export-e2e-after-import"),
            ..Default::default()
        })
        .await
        .expect("create after import");

    // Again over the tenant that now exists: refused.
    let again = import(&operator, &exported.file, PASSPHRASE)
        .await
        .expect_err("an import over an existing tenant");
    assert_eq!(again.code(), Code::AlreadyExists, "{again:?}");

    // The import is recorded in the platform chain.
    let platform = operator
        .audit()
        .query_platform_events(pb::QueryPlatformEventsRequest {
            page_size: 100,
            ..Default::default()
        })
        .await
        .expect("platform events")
        .into_inner();
    assert_eq!(
        platform
            .events
            .iter()
            .filter(|e| e.action() == pb::AuditAction::TenantImport)
            .count(),
        1
    );

    let source_logs = source.logs.lines().join("\n");
    let target_logs = target.logs.lines().join("\n");
    for s in secrets() {
        assert!(!source_logs.contains(s), "{s} in the source's log");
        assert!(!target_logs.contains(s), "{s} in the target's log");
    }
    assert!(target.logs.contains("tenant import progress"));
    target.stop().await;
    source.stop().await;
}

#[tokio::test]
async fn postgres_export_restores_into_sqlite() {
    let source = server(Backend::Postgres).await;
    let (admin, _) = populate(&source).await;
    let before = values(&admin.client).await;
    let exported = export(&admin.client, PASSPHRASE, "").await.expect("export");
    let target = server(Backend::Sqlite).await;
    import(&target.operator().await, &exported.file, PASSPHRASE)
        .await
        .expect("import");
    let restored = target.client("spiffe://e2e.test/acme/admin").await;
    assert_eq!(values(&restored).await, before);
    verified_event_count(&restored).await;
    target.stop().await;
    source.stop().await;
}
