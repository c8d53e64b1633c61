//! The tenant's webhook notifier setting: an https URL and a write-only
//! signing secret, sealed under the tenant's keys and never returned.

use strongroom_e2e::{Backend, TenantAdmin, TestServer, expect_code};
use strongroom_proto::v1 as pb;
use tonic::Code;

on_both_backends!(notifier_setting_is_write_only_and_validated);

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
                    signing_secret: secret.to_vec().into(),
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
