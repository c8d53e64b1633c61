//! The notifier sender's part of the delivery log (`NotificationStore`):
//! finding the tenants with deliveries due, claiming a tenant's due
//! deliveries (each attempt counted, held from other claims until the hold
//! passes), recording an attempt only under its own claim, and concurrent
//! claims taking each delivery once.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use strongroom_core::audit::Action;
use strongroom_core::ids::DeliveryId;
use strongroom_core::notify::{Delivery, DeliveryAttempt};
use strongroom_core::page::PageRequest;
use strongroom_core::principal::Role;
use strongroom_core::store::Store;
use strongroom_core::time::Timestamp;

use crate::access_requests::{notice, request};
use crate::support::{AuditTrail, TestTenant, create_tenant, draft};

const HOLD: Duration = Duration::from_secs(120);

/// Files a request of a new agent of `t` with its notice; the notice.
async fn enqueue(s: &dyn Store, t: &TestTenant, n: usize) -> Vec<DeliveryId> {
    let agent = t.add_principal(s, &format!("agent-{n}"), Role::Agent).await;
    let mut ids = Vec::new();
    for i in 0..n {
        let r = request(t, agent.id, &format!("llm/{i}/*"));
        let scope = t.scope();
        let notice = notice(&r);
        ids.push(notice.id);
        let (_, new) = s
            .file_access_request(
                &scope,
                &r,
                Some(&notice),
                r.created_at,
                draft(&scope, Action::AccessRequestFile),
            )
            .await
            .expect("file a request");
        assert!(new);
    }
    ids
}

async fn logged(s: &dyn Store, t: &TestTenant, id: DeliveryId) -> Delivery {
    s.list_notification_deliveries(&t.scope(), &PageRequest::first(100))
        .await
        .expect("list deliveries")
        .items
        .into_iter()
        .find(|d| d.id == id)
        .expect("the delivery is logged")
}

/// An attempt's audit event.
fn event(t: &TestTenant) -> strongroom_core::audit::AuditDraft {
    draft(&t.scope(), Action::NotificationDelivery)
}

fn later(by: Duration) -> Timestamp {
    Timestamp::now().plus(by)
}

/// Due tenants are those with a delivery due (not another's); a claim
/// counts the attempt and holds the delivery from further claims until the
/// hold passes (then it is claimed again, as after a sender died); a stale
/// claim's record is refused; a delivered one is final and no longer due;
/// a failed one is due again at its next attempt.
pub async fn claims_count_hold_and_record<S: Store>(store: Arc<S>) {
    let s: &dyn Store = &*store;
    let t = create_tenant(s, "acme").await;
    let other = create_tenant(s, "globex").await;
    let ids = enqueue(s, &t, 2).await;
    let now = later(Duration::from_secs(1));

    let before = Timestamp::now().minus(Duration::from_secs(3600));
    assert!(
        s.due_notification_tenants(before, 10)
            .await
            .expect("due")
            .is_empty(),
        "nothing is due before it was enqueued"
    );
    let due = s.due_notification_tenants(now, 10).await.expect("due");
    assert_eq!(due, vec![t.id()], "only the tenant with deliveries due");
    assert!(
        s.claim_notification_deliveries(other.id(), now, now.plus(HOLD), 10)
            .await
            .expect("claim")
            .is_empty(),
        "another tenant claims none of them"
    );

    let first = s
        .claim_notification_deliveries(t.id(), now, now.plus(HOLD), 1)
        .await
        .expect("claim");
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].attempts, 1, "the claim counts the attempt");
    assert_eq!(first[0].next_attempt_at, Some(now.plus(HOLD)));
    let second = s
        .claim_notification_deliveries(t.id(), now, now.plus(HOLD), 10)
        .await
        .expect("claim");
    assert_eq!(second.len(), 1, "the held one is not claimed again");
    assert_ne!(second[0].id, first[0].id);
    assert!(
        s.claim_notification_deliveries(t.id(), now, now.plus(HOLD), 10)
            .await
            .expect("claim")
            .is_empty()
    );
    assert!(
        s.due_notification_tenants(now, 10)
            .await
            .expect("due")
            .is_empty(),
        "held deliveries are not due"
    );

    // The first one's sender died: after the hold it is claimed again,
    // as attempt 2, and the first claim's record is refused.
    let after = now.plus(HOLD);
    let again = s
        .claim_notification_deliveries(t.id(), after, after.plus(HOLD), 1)
        .await
        .expect("claim after the hold");
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 2);
    let stale = DeliveryAttempt {
        id: again[0].id,
        attempt: 1,
        status: Some(200),
        error: String::new(),
        next_attempt_at: None,
        delivered_at: Some(after),
    };
    let mut trail = AuditTrail::start(s, t.scope()).await;
    assert!(
        !s.record_notification_attempt(t.id(), &stale, event(&t))
            .await
            .expect("record"),
        "a superseded claim records nothing"
    );
    trail.expect_none().await;
    let delivered = DeliveryAttempt {
        attempt: 2,
        ..stale.clone()
    };
    assert!(
        s.record_notification_attempt(t.id(), &delivered, event(&t))
            .await
            .expect("record")
    );
    trail.expect(Action::NotificationDelivery).await;
    assert!(
        !s.record_notification_attempt(t.id(), &delivered, event(&t))
            .await
            .expect("record"),
        "a delivered one is final"
    );
    trail.expect_none().await;
    let d = logged(s, &t, again[0].id).await;
    assert_eq!(d.attempts, 2);
    assert_eq!(d.last_status, Some(200));
    assert_eq!(d.last_error, "");
    assert_eq!(d.next_attempt_at, None);
    assert_eq!(d.delivered_at, Some(after));

    // The other one failed: due again at its next attempt, not before.
    let other_id = ids
        .iter()
        .copied()
        .find(|id| *id != again[0].id)
        .expect("the other delivery");
    let retry_at = now.plus(Duration::from_secs(5));
    let failed = DeliveryAttempt {
        id: other_id,
        attempt: 1,
        status: Some(500),
        error: "the receiver answered 500".into(),
        next_attempt_at: Some(retry_at),
        delivered_at: None,
    };
    assert!(
        s.record_notification_attempt(t.id(), &failed, event(&t))
            .await
            .expect("record")
    );
    let d = logged(s, &t, other_id).await;
    assert_eq!(d.attempts, 1);
    assert_eq!(d.last_status, Some(500));
    assert_eq!(d.last_error, "the receiver answered 500");
    assert_eq!(d.next_attempt_at, Some(retry_at));
    assert_eq!(d.delivered_at, None);
    assert!(
        s.claim_notification_deliveries(t.id(), now, now.plus(HOLD), 10)
            .await
            .expect("claim")
            .is_empty(),
        "not due before its next attempt"
    );
    let retried = s
        .claim_notification_deliveries(t.id(), retry_at, retry_at.plus(HOLD), 10)
        .await
        .expect("claim the retry");
    assert_eq!(retried.len(), 1);
    assert_eq!(retried[0].id, other_id);
    assert_eq!(retried[0].attempts, 2);
    assert_eq!(
        retried[0].last_error, "the receiver answered 500",
        "the claim keeps the last outcome"
    );
    // Given up: never due again.
    let given_up = DeliveryAttempt {
        id: other_id,
        attempt: 2,
        status: None,
        error: "refused; gave up after 2 attempts".into(),
        next_attempt_at: None,
        delivered_at: None,
    };
    assert!(
        s.record_notification_attempt(t.id(), &given_up, event(&t))
            .await
            .expect("record")
    );
    let far = now.plus(Duration::from_secs(30 * 24 * 3600));
    assert!(
        s.due_notification_tenants(far, 10)
            .await
            .expect("due")
            .is_empty(),
        "delivered and given-up deliveries are never due"
    );

    let (tenant, keks) = s.notifier_tenant(t.id()).await.expect("notifier tenant");
    assert_eq!(tenant.id, t.id());
    assert!(!keks.is_empty());
    assert!(keks.iter().all(|k| k.tenant == t.id()));
}

/// Claims running at once take every due delivery exactly once (Postgres:
/// rows being claimed are skipped; SQLite: write transactions run one at a
/// time).
pub async fn concurrent_claims_take_each_once<S: Store>(store: Arc<S>) {
    let s: &dyn Store = &*store;
    let t = create_tenant(s, "acme").await;
    let ids: HashSet<DeliveryId> = enqueue(s, &t, 12).await.into_iter().collect();
    let now = later(Duration::from_secs(1));
    let tenant = t.id();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let claimed = store
                    .claim_notification_deliveries(tenant, now, now.plus(HOLD), 2)
                    .await
                    .expect("claim");
                if claimed.is_empty() {
                    return mine;
                }
                mine.extend(claimed.into_iter().map(|d| (d.id, d.attempts)));
            }
        }));
    }
    let mut seen = Vec::new();
    for task in tasks {
        seen.extend(task.await.expect("claimer"));
    }
    assert_eq!(
        seen.len(),
        ids.len(),
        "each delivery claimed once: {seen:?}"
    );
    assert!(seen.iter().all(|(_, attempts)| *attempts == 1));
    let claimed: HashSet<DeliveryId> = seen.iter().map(|(id, _)| *id).collect();
    assert_eq!(claimed, ids);
}

/// Due tenants come oldest due delivery first (not in id or insertion
/// order), so past the limit the tenants waiting longest are served, and a
/// tenant just served (its next attempt later) falls behind the others.
pub async fn due_tenants_oldest_first<S: Store>(store: Arc<S>) {
    let s: &dyn Store = &*store;
    let a = create_tenant(s, "acme").await;
    let b = create_tenant(s, "globex").await;
    let c = create_tenant(s, "initech").await;
    enqueue(s, &c, 1).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    enqueue(s, &a, 1).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    enqueue(s, &b, 1).await;
    let now = later(Duration::from_secs(1));
    assert_eq!(
        s.due_notification_tenants(now, 10).await.expect("due"),
        vec![c.id(), a.id(), b.id()],
        "oldest due delivery first"
    );
    assert_eq!(
        s.due_notification_tenants(now, 2).await.expect("due"),
        vec![c.id(), a.id()],
        "the limit keeps the longest waiting"
    );
    let claimed = s
        .claim_notification_deliveries(c.id(), now, now.plus(HOLD), 10)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    let failed = DeliveryAttempt {
        id: claimed[0].id,
        attempt: 1,
        status: Some(500),
        error: "the receiver answered 500".into(),
        next_attempt_at: Some(now),
        delivered_at: None,
    };
    assert!(
        s.record_notification_attempt(c.id(), &failed, event(&c))
            .await
            .expect("record")
    );
    assert_eq!(
        s.due_notification_tenants(now, 2).await.expect("due"),
        vec![a.id(), b.id()],
        "a tenant just served falls behind"
    );
}
