//! Secret values never reach the server's log: not on create, reveal,
//! resolve or rotate, not in any error, not even at debug level, and not
//! encoded as base64 or hex.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use strongroom_e2e::{
    Backend, CertKind, TestServer, api_key, api_key_text, by_id, expect_code, grant, path,
    revealed_value, value,
};
use strongroom_proto::v1 as pb;
use strongroom_proto::v1::credential_value::Value;
use tonic::Code;

on_both_backends!(secrets_never_logged);

/// A distinctive secret: found in a log only if it leaked.
fn secret(label: &str) -> String {
    format!("e2eLOG{label}{}", uuid::Uuid::new_v4().simple())
}

/// The forms in which a leaked secret could show up in a JSON log line.
fn forms(secret: &str) -> Vec<String> {
    let bytes = secret.as_bytes();
    let mut out = vec![
        secret.to_owned(),
        secret.replace('\n', "\\n"),
        STANDARD.encode(bytes),
        STANDARD_NO_PAD.encode(bytes),
        URL_SAFE.encode(bytes),
        URL_SAFE_NO_PAD.encode(bytes),
        bytes.iter().map(|b| format!("{b:02x}")).collect(),
    ];
    out.sort();
    out.dedup();
    out
}

async fn secrets_never_logged(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = server.tenant("acme").await;
    let (agent_id, agent) = server.principal(&acme, "agent", pb::Role::Agent).await;
    let mut creds = acme.client.credentials();

    let api = secret("api");
    let access = secret("access");
    let refresh = secret("refresh");
    let basic = secret("basic");
    let db = secret("db");
    let ssh_body = secret("sshbody");
    let ssh_pass = secret("sshpass");
    let custom_a = secret("customA");
    let custom_b = secret("customB");
    let ssh_private = format!(
        "-----BEGIN OPENSSH PRIVATE KEY-----\n{ssh_body}\n-----END OPENSSH PRIVATE KEY-----\n"
    );
    let (cert_pem, key_pem) = server
        .ca
        .client_cert("spiffe://e2e.test/log", CertKind::Spiffe);
    let mut secrets: Vec<String> = vec![
        api.clone(),
        access.clone(),
        refresh.clone(),
        basic.clone(),
        db.clone(),
        ssh_body.clone(),
        ssh_pass.clone(),
        custom_a.clone(),
        custom_b.clone(),
        ssh_private.clone(),
        key_pem.clone(),
    ];
    secrets.extend(
        key_pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .map(str::to_owned),
    );

    let fixtures = [
        ("llm/openai", "openai", api_key(&api)),
        (
            "auth/github",
            "github",
            value(Value::OauthToken(pb::OAuthToken {
                access_token: access.clone(),
                refresh_token: refresh.clone(),
                token_type: "Bearer".into(),
                ..Default::default()
            })),
        ),
        (
            "web/intranet",
            "intranet",
            value(Value::BasicAuth(pb::BasicAuth {
                username: "svc".into(),
                password: basic.clone(),
            })),
        ),
        (
            "db/main",
            "postgres",
            value(Value::DbConnection(pb::DbConnection {
                host: "db.internal".into(),
                port: 5432,
                database: "app".into(),
                username: "app".into(),
                password: db.clone(),
                ssl_mode: 0,
            })),
        ),
        (
            "ssh/deploy",
            "ssh",
            value(Value::SshKey(pb::SshKey {
                private_key: ssh_private.clone(),
                public_key: String::new(),
                passphrase: ssh_pass.clone(),
            })),
        ),
        (
            "tls/edge",
            "edge",
            value(Value::Certificate(pb::Certificate {
                certificate_pem: cert_pem,
                private_key_pem: key_pem.clone(),
                ca_chain_pem: String::new(),
            })),
        ),
        (
            "misc/custom",
            "custom",
            value(Value::Custom(pb::CustomSecret {
                fields: [
                    ("client_id".to_owned(), custom_a.clone()),
                    ("client_secret".to_owned(), custom_b.clone()),
                ]
                .into_iter()
                .collect(),
            })),
        ),
    ];
    let mut ids = Vec::new();
    for (name, service, v) in &fixtures {
        let c = creds
            .create_credential(pb::CreateCredentialRequest {
                environment: "dev".into(),
                name: (*name).into(),
                service: (*service).into(),
                value: v.clone(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("create {name}: {e:?}"))
            .into_inner()
            .credential
            .expect("credential");
        ids.push(c.id);
    }

    // Reveal everything, whole and by field, as admin and as agent.
    grant(
        &acme,
        &agent_id,
        "*",
        &["dev"],
        &[pb::Capability::Reveal],
        None,
    )
    .await;
    for id in &ids {
        for client in [&acme.client, &agent] {
            client
                .credentials()
                .reveal_credential(pb::RevealCredentialRequest {
                    credential: by_id(id),
                    purpose: "log check".into(),
                    ..Default::default()
                })
                .await
                .expect("reveal");
        }
    }
    for (name, field) in [
        ("db/main", "password"),
        ("db/main", "url"),
        ("misc/custom", "client_secret"),
        ("web/intranet", "password"),
        ("ssh/deploy", "passphrase"),
        ("auth/github", "refresh_token"),
    ] {
        creds
            .reveal_credential(pb::RevealCredentialRequest {
                credential: path("dev", name),
                field: field.into(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("reveal {name}#{field}: {e:?}"));
    }
    for (service, field) in [("postgres", "password"), ("openai", "")] {
        agent
            .credentials()
            .resolve_credential(pb::ResolveCredentialRequest {
                service: service.into(),
                environment: "dev".into(),
                field: field.into(),
                purpose: "log check".into(),
                ..Default::default()
            })
            .await
            .expect("resolve");
    }

    // Rotate: given, generated (then revealed), and a generated custom field.
    let rotated = secret("rotated");
    secrets.push(rotated.clone());
    creds
        .rotate_credential(pb::RotateCredentialRequest {
            credential: path("dev", "llm/openai"),
            new_value: Some(pb::rotate_credential_request::NewValue::Value(
                api_key(&rotated).expect("value"),
            )),
            reason: "log check".into(),
            ..Default::default()
        })
        .await
        .expect("rotate with a value");
    creds
        .rotate_credential(pb::RotateCredentialRequest {
            credential: path("dev", "llm/openai"),
            new_value: Some(pb::rotate_credential_request::NewValue::Generate(
                pb::GenerationPolicy {
                    length: 40,
                    prefix: "sk-gen-".into(),
                    ..Default::default()
                },
            )),
            ..Default::default()
        })
        .await
        .expect("rotate with a generated value");
    let generated = creds
        .reveal_credential(pb::RevealCredentialRequest {
            credential: path("dev", "llm/openai"),
            ..Default::default()
        })
        .await
        .expect("reveal the generated value")
        .into_inner();
    let generated = api_key_text(revealed_value(&generated)).to_owned();
    secrets.push(generated.clone());
    secrets.push(generated.trim_start_matches("sk-gen-").to_owned());
    creds
        .rotate_credential(pb::RotateCredentialRequest {
            credential: path("dev", "misc/custom"),
            new_value: Some(pb::rotate_credential_request::NewValue::Generate(
                pb::GenerationPolicy {
                    length: 32,
                    field: "client_secret".into(),
                    ..Default::default()
                },
            )),
            ..Default::default()
        })
        .await
        .expect("generate a custom field");
    let custom = creds
        .reveal_credential(pb::RevealCredentialRequest {
            credential: path("dev", "misc/custom"),
            field: "client_secret".into(),
            ..Default::default()
        })
        .await
        .expect("reveal the generated field")
        .into_inner();
    match custom.revealed {
        Some(pb::reveal_credential_response::Revealed::Field(f)) => secrets.push(f.value),
        other => panic!("unexpected {other:?}"),
    }

    // Errors that carry secrets in their requests.
    let refused = secret("refused");
    secrets.push(refused.clone());
    let failing: Vec<(Code, pb::CreateCredentialRequest)> = vec![
        (
            Code::AlreadyExists,
            pb::CreateCredentialRequest {
                environment: "dev".into(),
                name: "llm/openai".into(),
                service: "openai".into(),
                value: api_key(&refused),
                ..Default::default()
            },
        ),
        (
            Code::InvalidArgument,
            pb::CreateCredentialRequest {
                environment: "dev".into(),
                name: "bad//name".into(),
                service: "openai".into(),
                value: api_key(&refused),
                ..Default::default()
            },
        ),
        (
            Code::InvalidArgument,
            pb::CreateCredentialRequest {
                environment: "nowhere".into(),
                name: "x/y".into(),
                service: "openai".into(),
                value: value(Value::DbConnection(pb::DbConnection {
                    host: "h".into(),
                    port: 1,
                    database: "d".into(),
                    username: "u".into(),
                    password: refused.clone(),
                    ssl_mode: 0,
                })),
                ..Default::default()
            },
        ),
        (
            Code::InvalidArgument,
            pb::CreateCredentialRequest {
                environment: "dev".into(),
                name: "x/big".into(),
                service: "openai".into(),
                value: api_key(&refused.repeat(2000)),
                ..Default::default()
            },
        ),
    ];
    for (code, request) in failing {
        expect_code(
            creds.create_credential(request).await,
            code,
            "failing create",
        );
    }
    expect_code(
        creds
            .rotate_credential(pb::RotateCredentialRequest {
                credential: path("dev", "llm/openai"),
                new_value: Some(pb::rotate_credential_request::NewValue::Value(
                    value(Value::BasicAuth(pb::BasicAuth {
                        username: "u".into(),
                        password: refused.clone(),
                    }))
                    .expect("value"),
                )),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "rotate to another type",
    );
    expect_code(
        creds
            .reveal_credential(pb::RevealCredentialRequest {
                credential: path("dev", "db/main"),
                field: "nope".into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "reveal an unknown field",
    );
    expect_code(
        agent
            .credentials()
            .reveal_credential(pb::RevealCredentialRequest {
                credential: path("dev", "db/main"),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "agent reveal without purpose",
    );
    expect_code(
        agent
            .credentials()
            .reveal_credential(pb::RevealCredentialRequest {
                credential: path("production", "db/main"),
                purpose: "log check".into(),
                ..Default::default()
            })
            .await,
        Code::NotFound,
        "reveal of a missing credential",
    );
    let stranger = server.client("spiffe://e2e.test/acme/stranger").await;
    expect_code(
        stranger
            .credentials()
            .create_credential(pb::CreateCredentialRequest {
                environment: "dev".into(),
                name: "x/z".into(),
                service: "openai".into(),
                value: api_key(&refused),
                ..Default::default()
            })
            .await,
        Code::Unauthenticated,
        "create by an unbound identity",
    );

    // Everything the server printed, up to its exit.
    let logs = server.logs.clone();
    let status = server.stop().await;
    assert!(status.success(), "strongroomd exited with {status}");
    let lines = logs.lines();
    // The log is not empty or filtered: debug lines of the calls are there.
    assert!(
        lines.iter().any(|l| l.contains("\"DEBUG\"")),
        "no debug lines"
    );
    for needle in [
        "RevealCredential",
        "ResolveCredential",
        "RotateCredential",
        "refused",
        "authentication refused",
        "acme",
    ] {
        assert!(
            lines.iter().any(|l| l.contains(needle)),
            "no log line mentions {needle:?}: the check would be vacuous"
        );
    }
    for s in &secrets {
        for form in forms(s) {
            if let Some(line) = lines.iter().find(|l| l.contains(&form)) {
                panic!("a secret (form {form:?}) is in the server log: {line}");
            }
        }
    }
}
