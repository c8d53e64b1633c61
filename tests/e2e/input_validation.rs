//! Bad input is refused with INVALID_ARGUMENT naming the offending field,
//! and leaves no trace: no credential, no version, no audit event.

use strongroom_e2e::{
    Backend, Options, TenantAdmin, TestServer, api_key, expect_invalid, path, value,
    verified_event_count,
};
use strongroom_proto::v1 as pb;
use strongroom_proto::v1::credential_value::Value;

on_both_backends!(bad_input_is_refused_and_changes_nothing);

/// What the store holds, as far as a tenant admin can see.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    credentials: Vec<(String, u32)>,
    audit_events: u64,
}

async fn snapshot(admin: &TenantAdmin) -> Snapshot {
    let listed = admin
        .client
        .credentials()
        .list_credentials(pb::ListCredentialsRequest {
            page_size: 500,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert!(listed.next_page_token.is_empty());
    Snapshot {
        credentials: listed
            .credentials
            .into_iter()
            .map(|c| (c.id, c.current_version))
            .collect(),
        audit_events: verified_event_count(&admin.client).await,
    }
}

fn create(
    environment: &str,
    name: &str,
    v: Option<pb::CredentialValue>,
) -> pb::CreateCredentialRequest {
    pb::CreateCredentialRequest {
        environment: environment.into(),
        name: name.into(),
        service: "openai".into(),
        value: v,
        ..Default::default()
    }
}

async fn bad_input_is_refused_and_changes_nothing(backend: Backend) {
    let mut options = Options::new(backend);
    options
        .env
        .push(("STRONGROOM_MAX_MESSAGE_BYTES".into(), "65536".into()));
    let server = TestServer::start_with(options).await;
    let acme = server.tenant("acme").await;
    let mut creds = acme.client.credentials();
    acme.client
        .admin()
        .update_tenant_settings(pb::UpdateTenantSettingsRequest {
            settings: Some(pb::TenantSettings {
                max_value_size_bytes: 1024,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["max_value_size_bytes".into()],
            }),
        })
        .await
        .expect("lower the value size limit");
    // Under the limit is fine.
    creds
        .create_credential(create("dev", "ok/small", api_key(&"s".repeat(512))))
        .await
        .expect("a 512-byte key fits");
    let before = snapshot(&acme).await;
    assert_eq!(before.credentials.len(), 1);

    let good = || api_key("sk-e2e-validation-good");
    let cases: Vec<(&str, &str, pb::CreateCredentialRequest)> = vec![
        ("empty name", "name", create("dev", "", good())),
        ("name with //", "name", create("dev", "a//b", good())),
        ("name with ..", "name", create("dev", "../x", good())),
        ("name with a leading /", "name", create("dev", "/x", good())),
        ("no value", "value", create("dev", "x/none", None)),
        (
            "a value without a type",
            "value",
            create("dev", "x/empty", Some(pb::CredentialValue { value: None })),
        ),
        (
            "an empty api key",
            "value.api_key.api_key",
            create("dev", "x/empty-key", api_key("")),
        ),
        (
            "db_connection without password",
            "value.db_connection.password",
            create(
                "dev",
                "db/main",
                value(Value::DbConnection(pb::DbConnection {
                    host: "db.internal".into(),
                    port: 5432,
                    database: "app".into(),
                    username: "app".into(),
                    password: String::new(),
                    ssl_mode: 0,
                })),
            ),
        ),
        (
            "unknown environment",
            "environment",
            create("qa", "x/y", good()),
        ),
        (
            "malformed environment",
            "environment",
            create("Dev", "x/y", good()),
        ),
        (
            "empty service",
            "service",
            pb::CreateCredentialRequest {
                service: String::new(),
                ..create("dev", "x/y", good())
            },
        ),
        (
            "value over the tenant's size limit",
            "value",
            create("dev", "x/big", api_key(&"k".repeat(2048))),
        ),
        (
            "message over the server's size limit",
            "request",
            // Within every field's bound, over the message limit.
            create("dev", "x/huge", api_key(&"k".repeat(100 * 1024))),
        ),
    ];
    for (what, field, request) in cases {
        let status = expect_invalid(creds.create_credential(request).await, field, what);
        assert!(
            !status.message().contains("sk-e2e-validation-good"),
            "{what}: the value is echoed: {status:?}"
        );
    }

    // Rotation is validated the same way.
    expect_invalid(
        creds
            .rotate_credential(pb::RotateCredentialRequest {
                credential: path("dev", "ok/small"),
                new_value: Some(pb::rotate_credential_request::NewValue::Value(
                    api_key(&"k".repeat(2048)).expect("value"),
                )),
                ..Default::default()
            })
            .await,
        "value",
        "rotating to a value over the size limit",
    );
    expect_invalid(
        creds
            .rotate_credential(pb::RotateCredentialRequest {
                credential: path("dev", "ok/small"),
                new_value: None,
                ..Default::default()
            })
            .await,
        "value",
        "rotating to nothing",
    );

    // Bad page tokens.
    // Not base64; "v1" without a cursor; "foo:bar"; "v1:garbage".
    for token in ["not a token!", "djE", "Zm9vOmJhcg", "djE6Z2FyYmFnZQ"] {
        expect_invalid(
            creds
                .list_credentials(pb::ListCredentialsRequest {
                    page_token: token.into(),
                    ..Default::default()
                })
                .await,
            "page_token",
            "a malformed page token",
        );
    }

    assert_eq!(snapshot(&acme).await, before, "bad input changed the store");

    // An unknown capability.
    let (agent_id, _agent) = server.principal(&acme, "agent", pb::Role::Agent).await;
    let before = snapshot(&acme).await;
    expect_invalid(
        acme.client
            .policy()
            .create_grant(pb::CreateGrantRequest {
                subject: Some(pb::GrantSubject {
                    subject: Some(pb::grant_subject::Subject::PrincipalId(agent_id.clone())),
                }),
                selector: "*".into(),
                environments: vec!["dev".into()],
                capabilities: vec![pb::Capability::Reveal as i32, 99],
                ..Default::default()
            })
            .await,
        "capabilities",
        "an unknown capability",
    );
    let grants = acme
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
    assert!(grants.is_empty(), "a refused grant was stored: {grants:?}");

    assert_eq!(snapshot(&acme).await, before, "bad input changed the store");
}
