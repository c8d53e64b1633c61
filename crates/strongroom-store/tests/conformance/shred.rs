//! Crypto-shredding a tenant (`TenantStore::shred_tenant`): no wrapped KEK
//! and no sealed value of the tenant is left in its tables, so the root key
//! alone decrypts nothing of it; its metadata and audit chain stay unless
//! purged; other tenants are untouched; a repeat writes nothing.

use std::sync::Arc;

use strongroom_core::audit::{Action, AuditDetail, Outcome};
use strongroom_core::credential::CredentialFilter;
use strongroom_core::page::PageRequest;
use strongroom_core::principal::Role;
use strongroom_core::store::Store;
use strongroom_core::tenant::{NotifierSetting, TenantSettings, TenantStatus};
use strongroom_core::{Error, Precondition};

use crate::support::*;

fn shred_draft(
    platform: &strongroom_core::scope::PlatformScope<'_>,
    tenant: &TestTenant,
) -> strongroom_core::audit::AuditDraft {
    let mut d = platform.audit(Action::TenantShred, Outcome::Allowed, "PLATFORM_OPERATOR");
    d.detail = Some(AuditDetail::TenantShred {
        tenant: tenant.id(),
        name: tenant.tenant().name.to_string(),
        reason: "offboarded".into(),
        keys_destroyed: 0,
        values_destroyed: 0,
        purged: false,
    });
    d
}

/// Every sealed value and wrapped key of the tenant, as the tenant's own
/// (stale) scope can still read them: (KEK rows, versions with a value,
/// versions in all, whether a notifier secret is stored).
async fn sealed_left(store: &dyn Store, t: &TestTenant) -> (usize, usize, usize, bool) {
    let scope = t.scope();
    let keks = store.keks(&scope).await.expect("keks").len();
    let credentials = store
        .list_credentials(
            &scope,
            &CredentialFilter::default(),
            &PageRequest::first(100),
        )
        .await
        .expect("list credentials")
        .items;
    let (mut sealed, mut versions) = (0, 0);
    for c in &credentials {
        for v in store.list_versions(&scope, c.id).await.expect("versions") {
            versions += 1;
            sealed += usize::from(v.envelope.is_some());
        }
    }
    let notifier = store
        .tenant(&scope)
        .await
        .expect("tenant")
        .settings
        .notifier
        .is_some();
    (keks, sealed, versions, notifier)
}

pub async fn shred_destroys_keys_and_sealed_values(store: Arc<dyn Store>) {
    let store = &*store;
    let settings = TenantSettings {
        notifier: Some(NotifierSetting {
            url: "https://hooks.example.com/x".into(),
            sealed_secret: "00aa11bb22cc".into(),
        }),
        ..TenantSettings::default()
    };
    let doomed = create_tenant_with(store, "doomed", settings).await;
    let other = create_tenant(store, "bystander").await;
    for t in [&doomed, &other] {
        let a = credential(&t.scope(), "dev", "app/a");
        t.store(store, &a).await.expect("store a");
        t.rotate(store, &a, 1).await.expect("rotate a");
        let b = credential(&t.scope(), "production", "db/main");
        t.store(store, &b).await.expect("store b");
    }
    assert_eq!(sealed_left(store, &doomed).await, (1, 3, 3, true));
    let op = operator(store).await;
    let platform = op.platform_scope().expect("platform");
    let platform_before = store.platform_audit_head().await.expect("head").sequence;
    let chain_before = audit_log(store, &doomed.scope()).await.len();

    let shredded = store
        .shred_tenant(
            &platform,
            doomed.id(),
            false,
            shred_draft(&platform, &doomed),
        )
        .await
        .expect("shred");
    assert_eq!(shredded.tenant.status, TenantStatus::Shredded);
    assert_eq!(
        (shredded.keys_destroyed, shredded.values_destroyed),
        (1, 4),
        "one KEK; three credential versions and the notifier secret"
    );
    assert!(!shredded.purged && !shredded.repeated);
    assert_eq!(shredded.tenant.settings.notifier, None);

    // Nothing sealed is left: no wrapped KEK, no envelope, no notifier
    // secret. The versions (metadata) stay, marked destroyed.
    assert_eq!(sealed_left(store, &doomed).await, (0, 0, 3, false));
    let credentials = store
        .list_credentials(
            &doomed.scope(),
            &CredentialFilter::default(),
            &PageRequest::first(100),
        )
        .await
        .expect("list")
        .items;
    assert_eq!(credentials.len(), 2, "metadata stays");
    assert!(credentials.iter().all(|c| c.destroyed_at.is_some()));
    assert_eq!(
        audit_log(store, &doomed.scope()).await.len(),
        chain_before,
        "the tenant's chain stays, and the shred is not in it"
    );

    // Recorded once in the platform chain, with the counts.
    let platform_events = store
        .platform_audit_after(platform_before, 100)
        .await
        .expect("platform events");
    assert_eq!(platform_events.len(), 1);
    assert_eq!(platform_events[0].draft.action, Action::TenantShred);
    match &platform_events[0].draft.detail {
        Some(AuditDetail::TenantShred {
            tenant,
            keys_destroyed,
            values_destroyed,
            purged,
            ..
        }) => {
            assert_eq!(*tenant, doomed.id());
            assert_eq!((*keys_destroyed, *values_destroyed, *purged), (1, 4, false));
        }
        other => panic!("unexpected detail {other:?}"),
    }

    // Its admin's scope is refused with the typed reason.
    let again = authenticate(store, &doomed.admin_identity)
        .await
        .expect("authenticates");
    assert!(matches!(
        again.tenant_scope(),
        Err(Error::FailedPrecondition(Precondition::TenantShredded))
    ));

    // The other tenant is untouched.
    assert_eq!(sealed_left(store, &other).await, (1, 3, 3, false));
    let scope = other.scope();
    let a = store
        .find_credential(&scope, &env("dev"), &cname("app/a"))
        .await
        .expect("find");
    let v2 = store.get_version(&scope, a.id, 2).await.expect("v2");
    assert_eq!(other.open(&a, &v2), "app/a-v2");

    // A repeat writes nothing.
    let repeat = store
        .shred_tenant(
            &platform,
            doomed.id(),
            false,
            shred_draft(&platform, &doomed),
        )
        .await
        .expect("repeat");
    assert!(repeat.repeated);
    assert_eq!(repeat.tenant, shredded.tenant);
    assert_eq!(
        store.platform_audit_head().await.expect("head").sequence,
        platform_before + 1
    );
}

pub async fn shred_with_purge_deletes_metadata_and_chain(store: Arc<dyn Store>) {
    let store = &*store;
    let doomed = create_tenant(store, "doomed").await;
    let other = create_tenant(store, "bystander").await;
    for t in [&doomed, &other] {
        let a = credential(&t.scope(), "dev", "app/a");
        t.store(store, &a).await.expect("store a");
        t.add_principal(store, "agent", Role::Agent).await;
    }
    let op = operator(store).await;
    let platform = op.platform_scope().expect("platform");
    // First without purge, then with it: the second call still purges.
    store
        .shred_tenant(
            &platform,
            doomed.id(),
            false,
            shred_draft(&platform, &doomed),
        )
        .await
        .expect("shred");
    let purged = store
        .shred_tenant(
            &platform,
            doomed.id(),
            true,
            shred_draft(&platform, &doomed),
        )
        .await
        .expect("purge");
    assert!(purged.purged && !purged.repeated);
    assert_eq!((purged.keys_destroyed, purged.values_destroyed), (0, 0));
    assert_eq!(
        purged.tenant.status,
        TenantStatus::Shredded,
        "the tombstone stays"
    );

    let scope = doomed.scope();
    assert_eq!(sealed_left(store, &doomed).await, (0, 0, 0, false));
    assert!(
        store
            .list_principals(&scope, &PageRequest::first(100))
            .await
            .expect("principals")
            .items
            .is_empty()
    );
    assert!(audit_log(store, &doomed.scope()).await.is_empty());
    assert!(
        store
            .audit_heads(Some(doomed.id()))
            .await
            .expect("heads")
            .is_empty(),
        "the purged chain has no head"
    );
    assert_eq!(
        store
            .get_tenant(&platform, doomed.id())
            .await
            .expect("tombstone")
            .status,
        TenantStatus::Shredded
    );
    // Repeated: nothing written.
    let head = store.platform_audit_head().await.expect("head").sequence;
    let repeat = store
        .shred_tenant(
            &platform,
            doomed.id(),
            true,
            shred_draft(&platform, &doomed),
        )
        .await
        .expect("repeat");
    assert!(repeat.repeated && repeat.purged);
    assert_eq!(
        store.platform_audit_head().await.expect("head").sequence,
        head
    );

    // The other tenant keeps everything.
    assert_eq!(sealed_left(store, &other).await, (1, 1, 1, false));
    assert_eq!(
        store
            .list_principals(&other.scope(), &PageRequest::first(100))
            .await
            .expect("principals")
            .items
            .len(),
        2
    );
    assert!(!audit_log(store, &other.scope()).await.is_empty());
}

pub async fn shred_of_a_missing_tenant_is_not_found(store: Arc<dyn Store>) {
    let store = &*store;
    let ghost = create_tenant(store, "ghost").await;
    let op = operator(store).await;
    let platform = op.platform_scope().expect("platform");
    let missing = strongroom_core::ids::TenantId::generate();
    let mut d = shred_draft(&platform, &ghost);
    d.detail = None;
    assert_eq!(
        code(store.shred_tenant(&platform, missing, false, d).await),
        Code::NotFound
    );
}
