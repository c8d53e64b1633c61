//! Access requests (`AccessRequestStore`): filing with duplicates
//! collapsed, decisions committed with their event (and, for an approval,
//! the grant naming the request), the FAILED_PRECONDITION of a request no
//! longer pending or past its expiry, the sweeper's expiry with its events,
//! and the listing's filters and pages (newest first).

use std::sync::Arc;
use std::time::Duration;

use strongroom_core::access::{
    AccessDecision, AccessRequestFilter, AccessRequestRecord, AccessRequestStatus,
};
use strongroom_core::audit::{Action, AuditDetail, Outcome};
use strongroom_core::ids::{AccessRequestId, DeliveryId, PrincipalId};
use strongroom_core::notify::NewDelivery;
use strongroom_core::page::PageRequest;
use strongroom_core::policy::{Capability, GrantSubject, Selector};
use strongroom_core::principal::Role;
use strongroom_core::scope::{SystemScope, SystemTask};
use strongroom_core::store::Store;
use strongroom_core::time::Timestamp;

use crate::support::{AuditTrail, Code, TestTenant, code, create_tenant, draft, env, grant};

/// A pending reveal request of `requester` for `selector` in `dev` (not
/// stored), expiring an hour after it was filed.
pub fn request(t: &TestTenant, requester: PrincipalId, selector: &str) -> AccessRequestRecord {
    let now = Timestamp::now();
    AccessRequestRecord {
        id: AccessRequestId::generate(),
        tenant: t.id(),
        requester,
        requester_name: "agent".into(),
        selector: Selector::parse(selector, "selector").expect("selector literal"),
        environments: vec![env("dev")],
        capability: Capability::Reveal,
        destinations: vec![],
        purpose: "conformance".into(),
        on_behalf_of: Some("alice".into()),
        duration: Duration::from_secs(600),
        status: AccessRequestStatus::Pending,
        created_at: now,
        expires_at: now.plus(Duration::from_secs(3600)),
        decided_at: None,
        decided_by: None,
        decision_reason: String::new(),
        grant: None,
    }
}

async fn file(
    s: &dyn Store,
    t: &TestTenant,
    r: &AccessRequestRecord,
    now: Timestamp,
) -> (AccessRequestRecord, bool) {
    let scope = t.scope();
    s.file_access_request(
        &scope,
        r,
        Some(&notice(r)),
        now,
        draft(&scope, Action::AccessRequestFile),
    )
    .await
    .expect("file a request")
}

/// The notifier delivery telling of `r`.
pub fn notice(r: &AccessRequestRecord) -> NewDelivery {
    NewDelivery {
        id: DeliveryId::generate(),
        event: "access_request.filed".into(),
        payload: format!(r#"{{"access_request_id":"{}"}}"#, r.id),
        created_at: r.created_at,
    }
}

/// A new request's notice is enqueued with it (due at once, no attempt
/// yet); a collapsed duplicate enqueues nothing; the log lists newest
/// first, in pages, and only the tenant's own.
pub async fn filing_enqueues_a_delivery<S: Store>(store: Arc<S>) {
    let s: &dyn Store = &*store;
    let t = create_tenant(s, "acme").await;
    let other = create_tenant(s, "globex").await;
    let agent = t.add_principal(s, "agent", Role::Agent).await;
    let first = request(&t, agent.id, "llm/*");
    let (_, new) = file(s, &t, &first, first.created_at).await;
    assert!(new);
    let (_, new) = file(s, &t, &request(&t, agent.id, "llm/*"), first.created_at).await;
    assert!(!new, "a duplicate collapses");
    let second = request(&t, agent.id, "db/*");
    file(s, &t, &second, second.created_at).await;

    let page = s
        .list_notification_deliveries(&t.scope(), &PageRequest::first(1))
        .await
        .expect("list");
    assert_eq!(page.items.len(), 1);
    let newest = &page.items[0];
    assert_eq!(newest.event, "access_request.filed");
    assert!(newest.payload.contains(&second.id.to_string()));
    assert_eq!(newest.attempts, 0);
    assert_eq!(newest.next_attempt_at, Some(second.created_at));
    assert_eq!(newest.delivered_at, None);
    let token = page.next.clone().expect("a second page");
    let rest = s
        .list_notification_deliveries(
            &t.scope(),
            &PageRequest {
                size: 1,
                after: Some(token),
            },
        )
        .await
        .expect("list");
    assert_eq!(rest.items.len(), 1);
    assert!(rest.items[0].payload.contains(&first.id.to_string()));
    assert!(rest.next.is_none());
    let none = s
        .list_notification_deliveries(&other.scope(), &PageRequest::first(10))
        .await
        .expect("list");
    assert!(none.items.is_empty(), "another tenant's log is its own");
}

pub async fn file_collapses_duplicates<S: Store>(store: Arc<S>) {
    let s: &dyn Store = &*store;
    let t = create_tenant(s, "acme").await;
    let agent = t.add_principal(s, "agent", Role::Agent).await;
    let mut trail = AuditTrail::start(s, t.scope()).await;

    let first = request(&t, agent.id, "llm/*");
    let (stored, new) = file(s, &t, &first, first.created_at).await;
    assert!(new);
    assert_eq!(stored.id, first.id);
    trail.expect(Action::AccessRequestFile).await;
    let got = s
        .get_access_request(&t.scope(), first.id)
        .await
        .expect("get");
    assert_eq!(got, first, "stored as filed");

    // The same thing again: the pending one, nothing written.
    let again = request(&t, agent.id, "llm/*");
    let (stored, new) = file(s, &t, &again, again.created_at).await;
    assert!(!new);
    assert_eq!(stored.id, first.id);
    trail.expect_none().await;

    // Another capability, selector, end user or requester is another
    // request.
    let mut inject = request(&t, agent.id, "llm/*");
    inject.capability = Capability::Inject;
    assert!(file(s, &t, &inject, inject.created_at).await.1);
    let mut other_user = request(&t, agent.id, "llm/*");
    other_user.on_behalf_of = Some("bob".into());
    assert!(file(s, &t, &other_user, other_user.created_at).await.1);
    let other = t.add_principal(s, "other", Role::Agent).await;
    assert!(
        file(s, &t, &request(&t, other.id, "llm/*"), Timestamp::now())
            .await
            .1
    );

    // Once the pending one has expired, the same thing is new again.
    let later = first.expires_at.plus(Duration::from_secs(1));
    let (_, new) = file(s, &t, &request(&t, agent.id, "llm/*"), later).await;
    assert!(new, "an expired request does not collapse a new one");

    // Another tenant sees none of it.
    let u = create_tenant(s, "umbrella").await;
    assert_eq!(
        code(s.get_access_request(&u.scope(), first.id).await),
        Code::NotFound
    );
}

pub async fn approval_commits_grant_and_event<S: Store>(store: Arc<S>) {
    let s: &dyn Store = &*store;
    let t = create_tenant(s, "acme").await;
    let agent = t.add_principal(s, "agent", Role::Agent).await;
    let scope = t.scope();
    let r = request(&t, agent.id, "llm/openai");
    file(s, &t, &r, r.created_at).await;
    let mut trail = AuditTrail::start(s, t.scope()).await;

    let now = Timestamp::now();
    let mut g = grant(
        &t,
        GrantSubject::Principal(agent.id),
        "llm/openai",
        &["dev"],
        &[Capability::Reveal],
    );
    g.expires_at = Some(now.plus(Duration::from_secs(300)));
    g.access_request = Some(r.id);
    let decided = s
        .decide_access_request(
            &scope,
            r.id,
            &AccessDecision::Approve(Box::new(g.clone())),
            t.admin().id,
            now,
            draft(&scope, Action::AccessRequestApprove),
        )
        .await
        .expect("approve");
    assert_eq!(decided.status, AccessRequestStatus::Approved);
    assert_eq!(decided.grant, Some(g.id));
    assert_eq!(decided.decided_by, Some(t.admin().id));
    trail.expect(Action::AccessRequestApprove).await;
    let stored = s.get_grant(&scope, g.id).await.expect("the grant");
    assert_eq!(stored.access_request, Some(r.id));
    assert_eq!(stored.expires_at, g.expires_at);
    assert_eq!(
        s.get_access_request(&scope, r.id).await.expect("get"),
        decided
    );

    // Decided once: a second decision fails and writes nothing.
    let mut again = g.clone();
    again.id = strongroom_core::ids::GrantId::generate();
    assert_eq!(
        code(
            s.decide_access_request(
                &scope,
                r.id,
                &AccessDecision::Approve(Box::new(again.clone())),
                t.admin().id,
                now,
                draft(&scope, Action::AccessRequestApprove),
            )
            .await
        ),
        Code::FailedPrecondition
    );
    assert_eq!(code(s.get_grant(&scope, again.id).await), Code::NotFound);
    trail.expect_none().await;
    assert_eq!(
        code(
            s.decide_access_request(
                &scope,
                AccessRequestId::generate(),
                &AccessDecision::Deny("no".into()),
                t.admin().id,
                now,
                draft(&scope, Action::AccessRequestDeny),
            )
            .await
        ),
        Code::NotFound
    );
    trail.expect_none().await;
}

pub async fn denial_and_expiry<S: Store>(store: Arc<S>) {
    let s: &dyn Store = &*store;
    let t = create_tenant(s, "acme").await;
    let agent = t.add_principal(s, "agent", Role::Agent).await;
    let scope = t.scope();
    let denied = request(&t, agent.id, "llm/*");
    file(s, &t, &denied, denied.created_at).await;
    let stale = request(&t, agent.id, "payments/*");
    file(s, &t, &stale, stale.created_at).await;
    let mut trail = AuditTrail::start(s, t.scope()).await;

    let now = Timestamp::now();
    let decided = s
        .decide_access_request(
            &scope,
            denied.id,
            &AccessDecision::Deny("not now".into()),
            t.admin().id,
            now,
            draft(&scope, Action::AccessRequestDeny),
        )
        .await
        .expect("deny");
    assert_eq!(decided.status, AccessRequestStatus::Denied);
    assert_eq!(decided.decision_reason, "not now");
    assert_eq!(decided.grant, None);
    trail.expect(Action::AccessRequestDeny).await;

    // Past its expiry a pending request cannot be decided, before and
    // after the sweeper marks it.
    let late = stale.expires_at.plus(Duration::from_secs(1));
    let approve_late = || {
        let mut g = grant(
            &t,
            GrantSubject::Principal(agent.id),
            "payments/*",
            &["dev"],
            &[Capability::Reveal],
        );
        g.access_request = Some(stale.id);
        g
    };
    assert_eq!(
        code(
            s.decide_access_request(
                &scope,
                stale.id,
                &AccessDecision::Approve(Box::new(approve_late())),
                t.admin().id,
                late,
                draft(&scope, Action::AccessRequestApprove),
            )
            .await
        ),
        Code::FailedPrecondition
    );
    trail.expect_none().await;

    let system = SystemScope::for_task(SystemTask::LeaseSweeper);
    let by = system.audit_at(
        Action::AccessRequestExpire,
        Outcome::Allowed,
        "ALLOWED",
        late,
    );
    assert_eq!(
        s.expire_access_requests(stale.expires_at.minus(Duration::from_secs(1)), &by, 100)
            .await
            .expect("an early sweep"),
        0
    );
    assert_eq!(
        s.expire_access_requests(late, &by, 100)
            .await
            .expect("sweep"),
        1,
        "only the pending request that ran out"
    );
    let event = trail.expect(Action::AccessRequestExpire).await;
    assert!(matches!(
        event.draft.detail,
        Some(AuditDetail::AccessRequestDecided { request, grant: None, .. }) if request == stale.id
    ));
    let swept = s.get_access_request(&scope, stale.id).await.expect("get");
    assert_eq!(swept.status, AccessRequestStatus::Expired);
    assert_eq!(swept.decided_at, Some(stale.expires_at));
    assert_eq!(
        s.expire_access_requests(late, &by, 100)
            .await
            .expect("again"),
        0
    );
    trail.expect_none().await;
}

/// Every request `filter` lists at `now`, page by page (one a page).
async fn listed(
    s: &dyn Store,
    t: &TestTenant,
    filter: AccessRequestFilter,
    now: Timestamp,
) -> Vec<AccessRequestId> {
    let mut ids = Vec::new();
    let mut page = PageRequest::parse(1, "").expect("page");
    loop {
        let got = s
            .list_access_requests(&t.scope(), &filter, now, &page)
            .await
            .expect("list");
        ids.extend(got.items.iter().map(|r| r.id));
        let token = got.next_token();
        if token.is_empty() {
            return ids;
        }
        page = PageRequest::parse(1, &token).expect("next page");
    }
}

pub async fn list_filters_and_pages<S: Store>(store: Arc<S>) {
    let s: &dyn Store = &*store;
    let t = create_tenant(s, "acme").await;
    let a = t.add_principal(s, "agent-a", Role::Agent).await;
    let b = t.add_principal(s, "agent-b", Role::Agent).await;
    let scope = t.scope();
    let mut filed = Vec::new();
    for (i, who) in [a.id, b.id, a.id, a.id].into_iter().enumerate() {
        let r = request(&t, who, &format!("svc{i}/*"));
        file(s, &t, &r, r.created_at).await;
        filed.push(r);
        // Ids are time-ordered: one a millisecond keeps the order plain.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    s.decide_access_request(
        &scope,
        filed[2].id,
        &AccessDecision::Deny("no".into()),
        t.admin().id,
        Timestamp::now(),
        draft(&scope, Action::AccessRequestDeny),
    )
    .await
    .expect("deny");

    let now = Timestamp::now();
    let newest_first: Vec<_> = filed.iter().rev().map(|r| r.id).collect();
    assert_eq!(
        listed(s, &t, AccessRequestFilter::default(), now).await,
        newest_first
    );
    assert_eq!(
        listed(
            s,
            &t,
            AccessRequestFilter {
                requester: Some(a.id),
                status: Some(AccessRequestStatus::Pending),
            },
            now
        )
        .await,
        vec![filed[3].id, filed[0].id]
    );
    assert_eq!(
        listed(
            s,
            &t,
            AccessRequestFilter {
                requester: None,
                status: Some(AccessRequestStatus::Denied),
            },
            now
        )
        .await,
        vec![filed[2].id]
    );
    // Past their expiry, pending requests list as expired before any sweep.
    let later = filed[0].expires_at.plus(Duration::from_secs(3600));
    assert_eq!(
        listed(
            s,
            &t,
            AccessRequestFilter {
                requester: None,
                status: Some(AccessRequestStatus::Expired),
            },
            later
        )
        .await,
        vec![filed[3].id, filed[1].id, filed[0].id]
    );
    assert!(
        listed(
            s,
            &t,
            AccessRequestFilter {
                requester: None,
                status: Some(AccessRequestStatus::Pending),
            },
            later
        )
        .await
        .is_empty()
    );
}
