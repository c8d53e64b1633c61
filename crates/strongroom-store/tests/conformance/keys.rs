//! Key rotation's storage (`KeyStore`): replicas' reports and their
//! liveness; tenant KEKs replaced only from the bytes read; a KEK version
//! added (the next one only) with its rotation opened and audited; data
//! keys still wrapped by an older version found, replaced from the bytes
//! read, counted per version; the notifier secret swapped; retiring refused
//! while anything uses a version, then deleting it.

use std::sync::Arc;
use std::time::Duration;

use strongroom_core::audit::Action;
use strongroom_core::keys::{KeyScope, ReplicaReport};
use strongroom_core::scope::{SystemScope, SystemTask};
use strongroom_core::store::Store;
use strongroom_core::tenant::{NotifierSetting, WrappedKekRecord};
use strongroom_core::time::Timestamp;

use crate::support::{Code, code, create_tenant, credential, draft, operator};

pub async fn replicas_report_and_expire(store: Arc<dyn Store>) {
    let t0 = Timestamp::from_micros(1_800_000_000_000_000);
    let a = ReplicaReport {
        replica: "a".into(),
        addr: "10.0.0.1:8443".into(),
        current_key: "k1".into(),
        next_key: Some("k2".into()),
        wraps_with: "k1".into(),
        seen_at: t0,
    };
    let b = ReplicaReport {
        replica: "b".into(),
        next_key: None,
        seen_at: t0.plus(Duration::from_secs(10)),
        ..a.clone()
    };
    store.report_replica(&a).await.unwrap();
    store.report_replica(&b).await.unwrap();
    assert_eq!(
        store.live_replicas(t0).await.unwrap(),
        vec![a.clone(), b.clone()]
    );
    let since = t0.plus(Duration::from_secs(5));
    assert_eq!(store.live_replicas(since).await.unwrap(), vec![b.clone()]);
    // A later report replaces the earlier one.
    let a2 = ReplicaReport {
        wraps_with: "k2".into(),
        seen_at: t0.plus(Duration::from_secs(20)),
        ..a.clone()
    };
    store.report_replica(&a2).await.unwrap();
    assert_eq!(
        store.live_replicas(since).await.unwrap(),
        vec![a2.clone(), b.clone()]
    );
    assert!(a2.holds("k2") && a2.holds("k1") && !b.holds("k2"));
    store.forget_replica("b").await.unwrap();
    assert_eq!(store.live_replicas(t0).await.unwrap(), vec![a2]);

    store.set_meta("rotation-test", b"one").await.unwrap();
    store.set_meta("rotation-test", b"two").await.unwrap();
    assert_eq!(
        store.get_meta("rotation-test").await.unwrap(),
        Some(b"two".to_vec())
    );
}

pub async fn kek_rotation_and_retirement(store: Arc<dyn Store>) {
    let acme = create_tenant(store.as_ref(), "acme").await;
    let other = create_tenant(store.as_ref(), "other").await;
    let op = operator(store.as_ref()).await;
    let platform = op.platform_scope().unwrap();
    let scope = acme.scope();
    let system = SystemScope::for_task(SystemTask::KeyRotation);
    let own = KeyScope::Tenant(&scope);
    let by_operator = KeyScope::Platform(&platform, acme.id());
    let background = KeyScope::System(&system, acme.id());

    // Root-key rotation's swap: only from the bytes read.
    let keks = store.tenant_keks(by_operator).await.unwrap();
    assert_eq!(keks.len(), 1);
    let old = keks[0].wrapped.clone();
    assert!(!store.replace_kek(own, 1, &[9; 61], &[7; 61]).await.unwrap());
    assert!(
        store
            .replace_kek(by_operator, 1, &old, &[7; 61])
            .await
            .unwrap()
    );
    assert!(
        !store
            .replace_kek(by_operator, 1, &old, &[8; 61])
            .await
            .unwrap()
    );
    assert_eq!(
        store.tenant_keks(own).await.unwrap()[0].wrapped,
        vec![7; 61]
    );
    assert_ne!(
        store
            .tenant_keks(KeyScope::Platform(&platform, other.id()))
            .await
            .unwrap()[0]
            .wrapped,
        vec![7; 61],
        "another tenant's KEK is untouched"
    );

    // Two values sealed under version 1.
    let db = credential(&scope, "production", "db");
    let first = acme.store(store.as_ref(), &db).await.unwrap();
    acme.rotate(store.as_ref(), &db, 1).await.unwrap();
    assert_eq!(store.data_key_counts(own).await.unwrap(), vec![(1, 2)]);
    assert!(store.tenant_rewrap(own).await.unwrap().is_none());

    // Only the next version can be added; it opens a rotation, audited.
    let record = |version: u32| WrappedKekRecord {
        tenant: acme.id(),
        version,
        wrapped: vec![version as u8; 61],
        created_at: Timestamp::from_micros(1_000),
    };
    assert_eq!(
        code(
            store
                .add_kek_version(own, &record(3), draft(&scope, Action::TenantKeyRotate))
                .await
        ),
        Code::FailedPrecondition
    );
    let tenant = store
        .add_kek_version(own, &record(2), draft(&scope, Action::TenantKeyRotate))
        .await
        .unwrap();
    assert_eq!(tenant.current_kek_version, 2);
    assert_eq!(
        store
            .key_tenant(background)
            .await
            .unwrap()
            .current_kek_version,
        2
    );
    let open = store.open_rewraps(&system).await.unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!((open[0].tenant, open[0].kek_version), (acme.id(), 2));
    assert!(open[0].finished_at.is_none());

    // Retiring version 1 is refused while values use it; the current
    // version never retires.
    assert_eq!(
        code(
            store
                .retire_kek(own, 1, None, draft(&scope, Action::TenantKeyRetire))
                .await
        ),
        Code::FailedPrecondition
    );
    assert_eq!(
        code(
            store
                .retire_kek(own, 2, None, draft(&scope, Action::TenantKeyRetire))
                .await
        ),
        Code::FailedPrecondition
    );

    // The pending data keys, replaced from the bytes read.
    let pending = store.pending_data_keys(background, 2, 1).await.unwrap();
    assert_eq!(pending.len(), 1, "the limit holds");
    let pending = store.pending_data_keys(background, 2, 10).await.unwrap();
    assert_eq!(pending.len(), 2);
    assert_eq!(pending[0].credential, db.id);
    assert_eq!(pending[0].environment, "production");
    assert_eq!(pending[0].envelope, first.envelope.clone().unwrap());
    for p in &pending {
        assert!(
            !store
                .replace_data_key(background, p.credential, p.version, b"stale", b"new", 2)
                .await
                .unwrap()
        );
        let mut new = p.envelope.clone();
        new.push(0);
        assert!(
            store
                .replace_data_key(background, p.credential, p.version, &p.envelope, &new, 2)
                .await
                .unwrap()
        );
    }
    assert!(
        store
            .pending_data_keys(background, 2, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.data_key_counts(own).await.unwrap(), vec![(2, 2)]);
    assert_eq!(
        store
            .data_key_counts(KeyScope::Platform(&platform, other.id()))
            .await
            .unwrap(),
        vec![]
    );

    store
        .finish_rewrap(background, 2, Timestamp::from_micros(2_000))
        .await
        .unwrap();
    assert!(store.open_rewraps(&system).await.unwrap().is_empty());
    assert_eq!(
        store.tenant_rewrap(own).await.unwrap().unwrap().finished_at,
        Some(Timestamp::from_micros(2_000))
    );

    // Retired once unused; gone from the tenant's KEKs, audited.
    store
        .retire_kek(by_operator, 1, None, draft(&scope, Action::TenantKeyRetire))
        .await
        .unwrap();
    assert_eq!(
        store
            .tenant_keks(own)
            .await
            .unwrap()
            .iter()
            .map(|k| k.version)
            .collect::<Vec<_>>(),
        vec![2]
    );
    assert_eq!(
        code(
            store
                .retire_kek(own, 1, None, draft(&scope, Action::TenantKeyRetire))
                .await
        ),
        Code::NotFound
    );
    // A value sealed under the retired version (by a replica that missed
    // the retirement) is refused, never stranded.
    assert_eq!(
        code(acme.rotate(store.as_ref(), &db, 2).await.map(|_| ())),
        Code::FailedPrecondition
    );
    assert_eq!(store.data_key_counts(own).await.unwrap(), vec![(2, 2)]);
    let events = crate::support::audit_log(store.as_ref(), &scope).await;
    assert!(
        events
            .iter()
            .any(|e| e.draft.action == Action::TenantKeyRetire)
    );
    assert!(
        events
            .iter()
            .any(|e| e.draft.action == Action::TenantKeyRotate)
    );
}

pub async fn notifier_secret_is_swapped_from_the_value_read(store: Arc<dyn Store>) {
    let acme = create_tenant(store.as_ref(), "acme").await;
    let scope = acme.scope();
    let own = KeyScope::Tenant(&scope);
    assert!(
        !store
            .replace_notifier_secret(own, "aa", "bb")
            .await
            .unwrap(),
        "no notifier"
    );
    let mut settings = acme.tenant().settings.clone();
    settings.notifier = Some(NotifierSetting {
        url: "https://hooks.example.com/x".into(),
        sealed_secret: "aa".into(),
    });
    store
        .update_tenant_settings(&scope, &settings, draft(&scope, Action::TenantSettings))
        .await
        .unwrap();
    assert!(
        !store
            .replace_notifier_secret(own, "cc", "bb")
            .await
            .unwrap()
    );
    assert!(
        store
            .replace_notifier_secret(own, "aa", "bb")
            .await
            .unwrap()
    );
    let t = store.key_tenant(own).await.unwrap();
    let n = t.settings.notifier.unwrap();
    assert_eq!(n.sealed_secret, "bb");
    assert_eq!(n.url, "https://hooks.example.com/x");

    // Retiring checks, in its transaction, that the notifier secret is the
    // one the caller found sealed under another version.
    let record = WrappedKekRecord {
        tenant: acme.id(),
        version: 2,
        wrapped: vec![2; 61],
        created_at: Timestamp::from_micros(1_000),
    };
    store
        .add_kek_version(own, &record, draft(&scope, Action::TenantKeyRotate))
        .await
        .unwrap();
    assert_eq!(
        code(
            store
                .retire_kek(own, 1, Some("aa"), draft(&scope, Action::TenantKeyRetire))
                .await
        ),
        Code::FailedPrecondition
    );
    assert_eq!(store.tenant_keks(own).await.unwrap().len(), 2);
    store
        .retire_kek(own, 1, Some("bb"), draft(&scope, Action::TenantKeyRetire))
        .await
        .unwrap();
    assert_eq!(store.tenant_keks(own).await.unwrap().len(), 1);
}
