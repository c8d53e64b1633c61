//! The tenant's webhook notifier setting: an https URL and a write-only
//! signing secret, sealed under the tenant's keys and never returned.

use strongroom_e2e::{Backend, TenantAdmin, TestServer, expect_code};
use strongroom_proto::v1 as pb;
use tonic::Code;

on_both_backends!(
    notifier_setting_is_write_only_and_validated,
    filing_logs_a_delivery_admins_list
);

async fn set_notifier(
    admin: &TenantAdmin,
    url: &str,
    secret: &[u8],
) -> Result<pb::TenantSettings, tonic::Status> {
    admin
        .client
        .admin()
        .update_tenant_settings(pb::UpdateTenantSettingsRequest {
            settings: Some(pb::TenantSettings {
                notifier: Some(pb::Notifier {
                    url: url.into(),
                    signing_secret: secret.to_vec(),
                    signing_secret_set: false,
                }),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["notifier".into()],
            }),
        })
        .await
        .map(|r| r.into_inner().settings.expect("settings"))
}

async fn current(admin: &TenantAdmin) -> pb::TenantSettings {
    admin
        .client
        .admin()
        .get_tenant_settings(pb::GetTenantSettingsRequest {})
        .await
        .expect("get settings")
        .into_inner()
        .settings
        .expect("settings")
}

/// Setting a notifier stores the URL and seals the secret: reads show the
/// URL and `signing_secret_set`, never the secret; a plain-http, over-long
/// or user-info URL and a short secret are refused naming the field; a URL
/// change without a secret keeps the secret; an empty URL removes it; the
/// other settings are untouched; the audit event does not carry the secret.
async fn notifier_setting_is_write_only_and_validated(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.tenant("acme").await;
    assert!(current(&admin).await.notifier.is_none());

    let secret = b"whsec-0123456789abcdef-notifier";
    let s = set_notifier(&admin, "https://hooks.example.com/strongroom", secret)
        .await
        .expect("set notifier");
    let n = s.notifier.expect("notifier");
    assert_eq!(n.url, "https://hooks.example.com/strongroom");
    assert!(n.signing_secret.is_empty(), "the secret is never returned");
    assert!(n.signing_secret_set);
    assert_eq!(s.version_retention, 10, "other settings untouched");
    let read = current(&admin).await.notifier.expect("notifier");
    assert!(read.signing_secret.is_empty());
    assert!(read.signing_secret_set);

    for (url, secret, field) in [
        (
            "http://hooks.example.com/",
            &secret[..],
            "settings.notifier.url",
        ),
        (
            "https://user:pw@hooks.example.com/",
            &secret[..],
            "settings.notifier.url",
        ),
        ("https:///nohost", &secret[..], "settings.notifier.url"),
        (
            "https://hooks.example.com/",
            b"short",
            "settings.notifier.signing_secret",
        ),
    ] {
        let e = expect_code(
            set_notifier(&admin, url, secret).await,
            Code::InvalidArgument,
            url,
        );
        assert!(e.message().contains(field), "{url}: {}", e.message());
    }
    let long = format!("https://hooks.example.com/{}", "a".repeat(2048));
    expect_code(
        set_notifier(&admin, &long, secret).await,
        Code::InvalidArgument,
        "long url",
    );

    // A new URL without a secret keeps the sealed one.
    let s = set_notifier(&admin, "https://other.example.com/hook", b"")
        .await
        .expect("move notifier");
    let n = s.notifier.expect("notifier");
    assert_eq!(n.url, "https://other.example.com/hook");
    assert!(n.signing_secret_set);

    // Clearing it.
    let s = set_notifier(&admin, "", b"").await.expect("clear");
    assert!(s.notifier.is_none());
    // Without a notifier, a URL alone is refused: a secret is needed.
    let e = expect_code(
        set_notifier(&admin, "https://hooks.example.com/", b"").await,
        Code::InvalidArgument,
        "no secret",
    );
    assert!(e.message().contains("settings.notifier.signing_secret"));

    let logs = server.logs.clone();
    let status = server.stop().await;
    assert!(status.success(), "strongroomd exited with {status}");
    let needle = std::str::from_utf8(secret).expect("utf8");
    assert!(
        !logs.lines().iter().any(|l| l.contains(needle)),
        "the signing secret is in the server log"
    );
}

/// With a notifier set, a filed request logs one delivery (a collapsed
/// duplicate none) that admins list, newest first: the notice's data (who,
/// for whom, what, why) and no value; nothing has been attempted (no sender
/// yet). Others may not list the log.
async fn filing_logs_a_delivery_admins_list(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.tenant("acme").await;
    admin
        .client
        .credentials()
        .create_credential(pb::CreateCredentialRequest {
            environment: "dev".into(),
            name: "llm/openai".into(),
            service: "openai".into(),
            value: strongroom_e2e::api_key("sk-notifier-value-7f3a9c"),
            ..Default::default()
        })
        .await
        .expect("create");
    set_notifier(
        &admin,
        "https://hooks.example.com/",
        b"whsec-0123456789abcdef",
    )
    .await
    .expect("set notifier");
    let (agent_id, agent) = server.principal(&admin, "agent", pb::Role::Agent).await;
    let filing = pb::FileAccessRequestRequest {
        credential: Some(pb::CredentialPath {
            environment: "dev".into(),
            name: "llm/openai".into(),
        }),
        capability: pb::Capability::Reveal as i32,
        purpose: "nightly report".into(),
        on_behalf_of: "alice@example.com".into(),
        ..Default::default()
    };
    let filed = agent
        .policy()
        .file_access_request(filing.clone())
        .await
        .expect("file")
        .into_inner();
    let request_id = filed.access_request.expect("request").id;
    let again = agent
        .policy()
        .file_access_request(filing)
        .await
        .expect("file again")
        .into_inner();
    assert!(again.existing, "the duplicate collapses");

    let listed = admin
        .client
        .policy()
        .list_notification_deliveries(pb::ListNotificationDeliveriesRequest {
            page_size: 10,
            page_token: String::new(),
        })
        .await
        .expect("list deliveries")
        .into_inner();
    assert_eq!(listed.deliveries.len(), 1, "{listed:?}");
    let d = &listed.deliveries[0];
    assert_eq!(d.event, "access_request.filed");
    let data: serde_json::Value = serde_json::from_str(&d.payload_json).expect("json");
    assert_eq!(data["access_request_id"], request_id.as_str());
    assert_eq!(data["requester_id"], agent_id.as_str());
    assert_eq!(data["on_behalf_of"], "alice@example.com");
    assert_eq!(data["purpose"], "nightly report");
    assert_eq!(data["capability"], "reveal");
    assert!(!d.payload_json.contains("sk-notifier-value-7f3a9c"));
    assert_eq!(d.attempts, 0);
    assert!(d.next_attempt_at.is_some());
    assert!(d.delivered_at.is_none());

    expect_code(
        agent
            .policy()
            .list_notification_deliveries(pb::ListNotificationDeliveriesRequest::default())
            .await,
        Code::PermissionDenied,
        "an agent lists the delivery log",
    );
}
