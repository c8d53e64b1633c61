//! Idempotency records (`IdempotencyStore`): a claim is exclusive (also
//! under concurrent claims), completes with a response or is released,
//! is keyed by tenant, caller, call and request id (platform operators'
//! records apart), expires, and is purged across tenants.

use std::sync::Arc;
use std::time::Duration;

use strongroom_core::idempotency::{Claim, RequestKey, RequestRecord};
use strongroom_core::store::Store;
use strongroom_core::time::Timestamp;

use crate::support::create_tenant;

const DAY: Duration = Duration::from_secs(24 * 3600);

fn key(tenant: Option<strongroom_core::ids::TenantId>, principal: &str, id: &str) -> RequestKey {
    RequestKey {
        tenant,
        principal: principal.to_owned(),
        call: "/strongroom.v1.CredentialService/CreateCredential".to_owned(),
        request_id: id.to_owned(),
    }
}

fn existing(claim: Claim) -> RequestRecord {
    match claim {
        Claim::Existing(record) => record,
        Claim::Claimed => panic!("expected an existing record"),
    }
}

pub async fn idempotency_claims_complete_and_release(store: Arc<dyn Store>) {
    let t = create_tenant(store.as_ref(), "idem").await;
    let now = Timestamp::from_micros(1_800_000_000_000_000);
    let k = key(Some(t.id()), &t.admin().id.to_string(), "req-1");
    let fp = [7u8; 32];

    assert_eq!(store.get_request(&k, now).await.unwrap(), None);
    let first = store
        .claim_request(&k, &fp, now, now.plus(DAY))
        .await
        .unwrap();
    assert_eq!(first, Claim::Claimed);
    // A second claim finds the first in progress, whatever its request.
    let later = now.plus(Duration::from_secs(1));
    let pending = existing(
        store
            .claim_request(&k, &[8u8; 32], later, later.plus(DAY))
            .await
            .unwrap(),
    );
    assert_eq!(pending.fingerprint, fp.to_vec());
    assert_eq!(pending.claimed_at, now);
    assert_eq!(pending.response, None);

    // Completing takes the claim's time; a stale one does not match.
    assert!(!store.complete_request(&k, later, b"other").await.unwrap());
    assert!(store.complete_request(&k, now, b"response").await.unwrap());
    assert!(
        !store.complete_request(&k, now, b"again").await.unwrap(),
        "completed once"
    );
    let done = existing(
        store
            .claim_request(&k, &fp, later, later.plus(DAY))
            .await
            .unwrap(),
    );
    assert_eq!(done.response.as_deref(), Some(&b"response"[..]));
    assert_eq!(store.get_request(&k, later).await.unwrap(), Some(done));
    // A completed record is not released.
    store.release_request(&k, now).await.unwrap();
    assert!(store.get_request(&k, later).await.unwrap().is_some());

    // A released claim lets the next call claim the key.
    let k2 = key(Some(t.id()), &t.admin().id.to_string(), "req-2");
    assert_eq!(
        store
            .claim_request(&k2, &fp, now, now.plus(DAY))
            .await
            .unwrap(),
        Claim::Claimed
    );
    store.release_request(&k2, now).await.unwrap();
    assert_eq!(store.get_request(&k2, now).await.unwrap(), None);
    assert_eq!(
        store
            .claim_request(&k2, &fp, later, later.plus(DAY))
            .await
            .unwrap(),
        Claim::Claimed
    );
}

pub async fn idempotency_keys_are_per_tenant_caller_and_call(store: Arc<dyn Store>) {
    let a = create_tenant(store.as_ref(), "idem-a").await;
    let b = create_tenant(store.as_ref(), "idem-b").await;
    let now = Timestamp::from_micros(1_800_000_000_000_000);
    let fp = [1u8; 32];
    let base = key(Some(a.id()), "p-1", "same");
    let mut other_call = base.clone();
    other_call.call = "/strongroom.v1.PolicyService/CreateGrant".to_owned();
    for k in [
        base.clone(),
        key(Some(a.id()), "p-2", "same"),
        key(Some(b.id()), "p-1", "same"),
        key(None, "spiffe://test/operator", "same"),
        other_call,
    ] {
        assert_eq!(
            store
                .claim_request(&k, &fp, now, now.plus(DAY))
                .await
                .unwrap(),
            Claim::Claimed,
            "{k:?}"
        );
        assert!(
            store
                .complete_request(&k, now, k.principal.as_bytes())
                .await
                .unwrap()
        );
    }
    let platform = store
        .get_request(&key(None, "spiffe://test/operator", "same"), now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        platform.response.as_deref(),
        Some(&b"spiffe://test/operator"[..])
    );
}

pub async fn idempotency_records_expire_and_are_purged(store: Arc<dyn Store>) {
    let a = create_tenant(store.as_ref(), "idem-x").await;
    let b = create_tenant(store.as_ref(), "idem-y").await;
    let now = Timestamp::from_micros(1_800_000_000_000_000);
    let hour = Duration::from_secs(3600);
    let short = key(Some(a.id()), "p", "short");
    let long = key(Some(b.id()), "p", "long");
    let op = key(None, "op", "short");
    store
        .claim_request(&short, &[1; 32], now, now.plus(hour))
        .await
        .unwrap();
    assert!(store.complete_request(&short, now, b"r").await.unwrap());
    store
        .claim_request(&op, &[1; 32], now, now.plus(hour))
        .await
        .unwrap();
    store
        .claim_request(&long, &[1; 32], now, now.plus(DAY))
        .await
        .unwrap();

    let after = now.plus(hour);
    assert_eq!(
        store.get_request(&short, after).await.unwrap(),
        None,
        "expired"
    );
    // An expired record does not hold its key, even before the purge.
    assert_eq!(
        store
            .claim_request(&short, &[2; 32], after, after.plus(hour))
            .await
            .unwrap(),
        Claim::Claimed
    );
    let purged = store.purge_requests(after.plus(hour)).await.unwrap();
    assert_eq!(
        purged, 2,
        "the replaced claim and the operator's, of two scopes"
    );
    assert!(store.get_request(&long, after).await.unwrap().is_some());
    assert_eq!(store.purge_requests(after).await.unwrap(), 0);
}

pub async fn idempotency_concurrent_claims_have_one_winner(store: Arc<dyn Store>) {
    let t = create_tenant(store.as_ref(), "idem-race").await;
    let now = Timestamp::from_micros(1_800_000_000_000_000);
    let k = key(Some(t.id()), "p", "race");
    let mut tasks = Vec::new();
    for i in 0..8u8 {
        let store = Arc::clone(&store);
        let k = k.clone();
        tasks.push(tokio::spawn(async move {
            store
                .claim_request(&k, &[i; 32], now, now.plus(DAY))
                .await
                .unwrap()
        }));
    }
    let mut won = 0;
    let mut winner_fp = None;
    for task in tasks {
        match task.await.unwrap() {
            Claim::Claimed => won += 1,
            Claim::Existing(r) => {
                assert_eq!(r.response, None);
                winner_fp.get_or_insert(r.fingerprint.clone());
                assert_eq!(winner_fp.as_ref(), Some(&r.fingerprint), "one record");
            }
        }
    }
    assert_eq!(won, 1);
}
