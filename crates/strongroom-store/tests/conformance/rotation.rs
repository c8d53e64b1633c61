//! The rotation monitor's state (`RotationStore`): the tenants and
//! credentials it watches (active and undestroyed, with the reminders
//! already recorded), and reminders recorded once per (credential, kind,
//! window) with their delivery and events in one transaction; an expired
//! reminder marks its credential expired, and is skipped once it is not
//! active.

use std::sync::Arc;
use std::time::Duration;

use strongroom_core::audit::{Action, AuditDetail, Outcome};
use strongroom_core::credential::{Credential, CredentialStatus};
use strongroom_core::ids::DeliveryId;
use strongroom_core::notify::NewDelivery;
use strongroom_core::page::PageRequest;
use strongroom_core::rotation::{Reminder, ReminderKind};
use strongroom_core::scope::{SystemScope, SystemTask};
use strongroom_core::store::Store;
use strongroom_core::time::Timestamp;

use crate::support::{AuditTrail, TestTenant, about, audit_log, create_tenant, credential};

const MONITOR: SystemScope = SystemScope::for_task(SystemTask::RotationMonitor);

/// A reminder of `kind` about `c` for `window`, with a delivery when
/// `notify`.
fn reminder(
    c: &Credential,
    kind: ReminderKind,
    window: Timestamp,
    now: Timestamp,
    notify: bool,
) -> Reminder {
    let delivery = notify.then(|| NewDelivery {
        id: DeliveryId::generate(),
        event: kind.event().to_owned(),
        payload: format!(r#"{{"credential_id":"{}"}}"#, c.id),
        created_at: now,
    });
    let stamp = |action| {
        let mut d = MONITOR.audit_at(action, Outcome::Allowed, "", now);
        d.credential = Some(c.id);
        d.credential_name = Some(c.name.to_string());
        d.environment = Some(c.environment.to_string());
        d
    };
    let mut events = Vec::new();
    if kind == ReminderKind::Expired {
        events.push(stamp(Action::CredentialExpire));
    }
    let mut r = stamp(Action::CredentialRotationReminder);
    r.detail = Some(AuditDetail::RotationReminder {
        reminder: kind.as_str().to_owned(),
        window,
        delivery: delivery.as_ref().map(|d| d.id),
    });
    events.push(r);
    Reminder {
        credential: c.id,
        kind,
        window,
        delivery,
        events,
    }
}

async fn deliveries(s: &dyn Store, t: &TestTenant) -> Vec<strongroom_core::notify::Delivery> {
    s.list_notification_deliveries(&t.scope(), &PageRequest::first(100))
        .await
        .expect("list deliveries")
        .items
}

/// Reminders are recorded once per window, each with its delivery and its
/// event in the tenant's chain; the listing shows what was recorded; a new
/// window records again; another tenant's credentials are not touched.
pub async fn reminders_once_per_window<S: Store>(store: Arc<S>) {
    let s: &dyn Store = &*store;
    let t = create_tenant(s, "acme").await;
    let other = create_tenant(s, "globex").await;
    let c = credential(&t.scope(), "dev", "db/main");
    t.store(s, &c).await.expect("store");
    let theirs = credential(&other.scope(), "dev", "db/main");
    other.store(s, &theirs).await.expect("store");

    let tenants = s
        .monitored_tenants(&MONITOR, None, 100)
        .await
        .expect("tenants");
    let ids: Vec<_> = tenants.iter().map(|t| t.id).collect();
    assert!(ids.contains(&t.id()) && ids.contains(&other.id()));
    let first = s
        .monitored_tenants(&MONITOR, None, 1)
        .await
        .expect("tenants");
    assert_eq!(first.len(), 1);
    let rest = s
        .monitored_tenants(&MONITOR, Some(first[0].id), 100)
        .await
        .expect("tenants");
    assert!(!rest.iter().any(|x| x.id == first[0].id), "paged by id");

    let now = Timestamp::now();
    let due = now.plus(Duration::from_secs(86_400));
    let mut trail = AuditTrail::start(s, t.scope()).await;
    let recorded = s
        .record_reminders(
            &MONITOR,
            t.id(),
            &[reminder(&c, ReminderKind::DueSoon, due, now, true)],
            now,
        )
        .await
        .expect("record")
        .expect("the lock is free");
    assert_eq!(recorded, vec![true]);
    let event = trail.expect(Action::CredentialRotationReminder).await;
    assert_eq!(event.draft.credential, Some(c.id));
    assert_eq!(deliveries(s, &t).await.len(), 1);
    assert_eq!(
        deliveries(s, &t).await[0].event,
        "credential.rotation_due_soon"
    );

    // The same window again (a restarted or second monitor): nothing.
    let again = s
        .record_reminders(
            &MONITOR,
            t.id(),
            &[reminder(&c, ReminderKind::DueSoon, due, now, true)],
            now,
        )
        .await
        .expect("record")
        .expect("the lock is free");
    assert_eq!(again, vec![false]);
    trail.expect_none().await;
    assert_eq!(deliveries(s, &t).await.len(), 1);

    let watched = s
        .monitored_credentials(&MONITOR, t.id(), None, 100)
        .await
        .expect("credentials");
    assert_eq!(watched.len(), 1, "only the tenant's own");
    assert_eq!(watched[0].credential.id, c.id);
    assert!(watched[0].was_reminded(ReminderKind::DueSoon, due));
    assert!(!watched[0].was_reminded(ReminderKind::Overdue, due));

    // Overdue in the same window, and due soon in a new one (after a
    // rotation), both record; without a notifier, no delivery.
    let later = due.plus(Duration::from_secs(86_400 * 30));
    let both = s
        .record_reminders(
            &MONITOR,
            t.id(),
            &[
                reminder(&c, ReminderKind::Overdue, due, now, false),
                reminder(&c, ReminderKind::DueSoon, later, now, true),
            ],
            now,
        )
        .await
        .expect("record")
        .expect("the lock is free");
    assert_eq!(both, vec![true, true]);
    assert_eq!(deliveries(s, &t).await.len(), 2);
    let theirs_watched = s
        .monitored_credentials(&MONITOR, other.id(), None, 100)
        .await
        .expect("credentials");
    assert_eq!(theirs_watched.len(), 1);
    assert!(theirs_watched[0].reminded.is_empty());
    assert!(deliveries(s, &other).await.is_empty());
}

/// An expired reminder marks the credential expired with a
/// `credential.expire` event before the reminder's; a credential no longer
/// active (revoked, or already expired) records nothing; the listing holds
/// active, undestroyed credentials only, paged by id.
pub async fn expiry_marks_the_credential_once<S: Store>(store: Arc<S>) {
    let s: &dyn Store = &*store;
    let t = create_tenant(s, "acme").await;
    let now = Timestamp::now();
    let mut c = credential(&t.scope(), "dev", "pay/stripe");
    c.expires_at = Some(now.plus(Duration::from_secs(60)));
    t.store(s, &c).await.expect("store");
    let revoked = credential(&t.scope(), "dev", "old/key");
    t.store(s, &revoked).await.expect("store");
    let scope = t.scope();
    s.revoke_credential(
        &scope,
        revoked.id,
        "retired",
        about(&scope, Action::CredentialRevoke, &revoked),
    )
    .await
    .expect("revoke");

    let before = s
        .monitored_credentials(&MONITOR, t.id(), None, 100)
        .await
        .expect("credentials");
    assert_eq!(
        before.iter().map(|m| m.credential.id).collect::<Vec<_>>(),
        vec![c.id],
        "revoked credentials are not watched"
    );

    // Not yet past its expiry: nothing is marked or recorded.
    let early = s
        .record_reminders(
            &MONITOR,
            t.id(),
            &[reminder(
                &c,
                ReminderKind::Expired,
                c.expires_at.expect("expiry"),
                now,
                true,
            )],
            now,
        )
        .await
        .expect("record")
        .expect("lock");
    assert_eq!(early, vec![false]);

    let after = now.plus(Duration::from_secs(120));
    let chain = audit_log(s, &scope).await.len();
    let window = c.expires_at.expect("expiry");
    let recorded = s
        .record_reminders(
            &MONITOR,
            t.id(),
            &[
                reminder(&c, ReminderKind::Expired, window, after, true),
                reminder(&revoked, ReminderKind::Expired, window, after, true),
            ],
            after,
        )
        .await
        .expect("record")
        .expect("lock");
    assert_eq!(recorded, vec![true, false]);
    let new: Vec<_> = audit_log(s, &scope)
        .await
        .into_iter()
        .skip(chain)
        .map(|e| (e.draft.action, e.draft.credential))
        .collect();
    assert_eq!(
        new,
        vec![
            (Action::CredentialExpire, Some(c.id)),
            (Action::CredentialRotationReminder, Some(c.id)),
        ]
    );
    let trail = AuditTrail::start(s, t.scope()).await;
    let stored = s.get_credential(&scope, c.id).await.expect("get");
    assert_eq!(stored.status, CredentialStatus::Expired);
    assert_eq!(deliveries(s, &t).await.len(), 1);
    assert!(
        s.monitored_credentials(&MONITOR, t.id(), None, 100)
            .await
            .expect("credentials")
            .is_empty(),
        "an expired credential is no longer watched"
    );
    let again = s
        .record_reminders(
            &MONITOR,
            t.id(),
            &[reminder(&c, ReminderKind::Expired, window, after, true)],
            after,
        )
        .await
        .expect("record")
        .expect("lock");
    assert_eq!(again, vec![false]);
    trail.expect_none().await;

    // Moving its expiry into the future makes it active again (as it read
    // before it was marked), and watched.
    let update = strongroom_core::credential::CredentialUpdate {
        expires_at: Some(Some(after.plus(Duration::from_secs(3600)))),
        ..Default::default()
    };
    let mut extend = about(&scope, Action::CredentialUpdate, &c);
    extend.at = after;
    let (revived, _) = s
        .update_credential(&scope, c.id, &update, false, extend)
        .await
        .expect("extend");
    assert_eq!(revived.status, CredentialStatus::Active);
    assert_eq!(
        s.monitored_credentials(&MONITOR, t.id(), None, 100)
            .await
            .expect("credentials")
            .len(),
        1
    );
    s.revoke_credential(
        &scope,
        c.id,
        "done",
        about(&scope, Action::CredentialRevoke, &c),
    )
    .await
    .expect("revoke");

    // Paging by id.
    let mut ids = Vec::new();
    for n in 0..3 {
        let x = credential(&t.scope(), "dev", &format!("page/{n}"));
        t.store(s, &x).await.expect("store");
        ids.push(x.id);
    }
    ids.sort_by_key(|id| id.as_uuid());
    let first = s
        .monitored_credentials(&MONITOR, t.id(), None, 2)
        .await
        .expect("page");
    let second = s
        .monitored_credentials(&MONITOR, t.id(), Some(first[1].credential.id), 2)
        .await
        .expect("page");
    let seen: Vec<_> = first
        .iter()
        .chain(second.iter())
        .map(|m| m.credential.id)
        .collect();
    assert_eq!(seen, ids);
}
