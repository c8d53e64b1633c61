//! Postgres records a reveal's lease in the reveal's own audit event
//! (migration 20261211010001) until something changes it; the lease gets
//! its row in `leases` then. These cases check that every lease operation
//! sees a lease recorded that way as it sees a stored one, and that the
//! sweeper's mark never hides a lease that ran out. The behaviour on both
//! backends is `group_commit::leases_commit_with_their_reveals`.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use strongroom_core::audit::{Action, AuditDraft, Outcome};
use strongroom_core::credential::Credential;
use strongroom_core::export::ExportScope;
use strongroom_core::ids::{GrantId, TenantId};
use strongroom_core::lease::{Lease, LeaseEnd, LeaseFilter, LeaseState};
use strongroom_core::page::PageRequest;
use strongroom_core::principal::{Principal, Role};
use strongroom_core::store::Store;
use strongroom_core::time::Timestamp;

use crate::group_commit::{check, lease, leases_of, reveal_draft, reveal_grant, verified_log};
use crate::support::{TestTenant, about, create_tenant, credential, draft, pg_store};

/// Reveals version 1 of `credential` as `agent` under `grant`; returns the
/// lease it opened.
async fn reveal(
    store: &dyn Store,
    t: &TestTenant,
    credential: &Credential,
    agent: &Principal,
    grant: GrantId,
) -> Lease {
    let scope = t.scope();
    let l = lease(t, credential, 1, agent, Some(grant));
    store
        .append_reveal(
            &scope,
            reveal_draft(&scope, credential, 1, agent),
            check(credential.id, 1, agent, Some(grant)),
            Some(Arc::new(l.clone())),
        )
        .await
        .expect("reveal");
    l
}

/// `(rows in leases, reveal events recording a lease)` of `tenant`, read
/// as the superuser.
async fn stored(admin: &PgPool, tenant: TenantId) -> (i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM leases WHERE tenant_id = $1), \
         (SELECT count(*) FROM audit_events WHERE tenant_id = $1 AND lease_id IS NOT NULL)",
    )
    .bind(tenant.as_uuid())
    .fetch_one(admin)
    .await
    .expect("count leases")
}

/// A reveal's lease lives in its event until it changes: read, listed and
/// paged with the stored ones; renewed, released and revoked (each giving
/// it its row); expired by the sweeper a few at a time; exported as a row.
pub async fn pg_reveal_leases_live_in_their_events(admin: PgPool) {
    let store = pg_store(admin.clone()).await;
    let store: &dyn Store = &*store;
    let acme = create_tenant(store, "acme").await;
    let scope = acme.scope();
    let agent = acme.add_principal(store, "agent", Role::Agent).await;
    let g = reveal_grant(&acme, &agent, None);
    acme.add_grant(store, &g).await;
    let c = credential(&scope, "dev", "llm/openai");
    acme.store(store, &c).await.expect("create");
    let d = credential(&scope, "dev", "llm/other");
    acme.store(store, &d).await.expect("create");

    let mut on_c = Vec::new();
    let mut on_d = Vec::new();
    for _ in 0..6 {
        on_c.push(reveal(store, &acme, &c, &agent, g.id).await);
        on_d.push(reveal(store, &acme, &d, &agent, g.id).await);
    }
    assert_eq!(
        stored(&admin, acme.id()).await,
        (0, 12),
        "every lease is recorded by its reveal's event alone"
    );

    // Read and listed as a stored lease would be.
    for l in on_c.iter().chain(&on_d) {
        assert_eq!(&store.get_lease(&scope, l.id).await.expect("lease"), l);
    }
    let by_c = leases_of(
        store,
        &acme,
        LeaseFilter {
            credential: Some(c.id),
            ..LeaseFilter::default()
        },
    )
    .await;
    assert_eq!(by_c, on_c, "by credential, in id order");

    // A renewal and a release give their lease its row.
    let later = on_c[0].expires_at.plus(Duration::from_secs(30));
    let renewed = store
        .renew_lease(
            &scope,
            on_c[0].id,
            agent.id,
            later,
            draft(&scope, Action::LeaseRenew),
        )
        .await
        .expect("renew");
    assert_eq!(renewed.expires_at, later);
    let released = store
        .release_lease(
            &scope,
            on_c[1].id,
            agent.id,
            draft(&scope, Action::LeaseRelease),
        )
        .await
        .expect("release");
    assert_eq!(released.state, LeaseState::Released);
    assert_eq!(stored(&admin, acme.id()).await, (2, 12));

    // Pages over stored leases and recorded ones together, in id order.
    let mut paged = Vec::new();
    let mut page = PageRequest::first(5);
    loop {
        let got = store
            .list_leases(&scope, &LeaseFilter::default(), &page)
            .await
            .expect("list");
        paged.extend(got.items);
        match got.next {
            Some(cursor) => {
                page = PageRequest {
                    size: 5,
                    after: Some(cursor),
                }
            }
            None => break,
        }
    }
    let mut all: Vec<_> = on_c.iter().chain(&on_d).map(|l| l.id).collect();
    all.sort_by_key(|id| id.as_uuid());
    assert_eq!(paged.iter().map(|l| l.id).collect::<Vec<_>>(), all);
    assert_eq!(paged.iter().find(|l| l.id == on_c[0].id), Some(&renewed));
    assert_eq!(paged.iter().find(|l| l.id == on_c[1].id), Some(&released));

    // Revoking a credential ends the leases its events record.
    let (_, ended) = store
        .revoke_credential(
            &scope,
            d.id,
            "leaked",
            about(&scope, Action::CredentialRevoke, &d),
        )
        .await
        .expect("revoke");
    assert_eq!(ended, 6);
    for l in &on_d {
        let now = store.get_lease(&scope, l.id).await.expect("lease");
        assert_eq!(now.state, LeaseState::Revoked);
        assert_eq!(now.end, Some(LeaseEnd::CredentialRevoked));
    }
    assert_eq!(stored(&admin, acme.id()).await, (8, 12));

    // The sweeper expires what ran out, two at a time: its mark moves
    // past each pass's leases, and no lease is skipped or expired twice.
    let by = AuditDraft::new(Action::LeaseExpire, Outcome::Allowed, "");
    let before = on_c[2].expires_at.minus(Duration::from_secs(1));
    assert_eq!(store.expire_leases(before, &by, 2).await.expect("sweep"), 0);
    let far = renewed.expires_at.plus(Duration::from_secs(1));
    let mut swept = Vec::new();
    loop {
        let n = store.expire_leases(far, &by, 2).await.expect("sweep");
        assert!(n <= 2, "a pass expires at most its limit");
        if n == 0 {
            break;
        }
        swept.push(n);
    }
    assert_eq!(
        swept.iter().sum::<u32>(),
        5,
        "the renewed lease and four more"
    );
    for l in &on_c[2..] {
        let now = store.get_lease(&scope, l.id).await.expect("lease");
        assert_eq!(now.state, LeaseState::Expired);
        assert_eq!(now.ended_at, Some(l.expires_at), "ended when it ran out");
    }
    assert_eq!(
        store
            .get_lease(&scope, on_c[0].id)
            .await
            .expect("lease")
            .ended_at,
        Some(later)
    );
    assert_eq!(stored(&admin, acme.id()).await, (12, 12));

    // A lease that ran out before the sweeper's mark when its batch
    // commits (decided before the sweeper passed, committed after) gets
    // its row with its event, so the sweeper still finds it.
    sqlx::query("UPDATE audit_heads SET leases_swept_through = $2 WHERE tenant_id = $1")
        .bind(acme.id().as_uuid())
        .bind(Timestamp::now().plus(Duration::from_secs(3600)).as_micros())
        .execute(&admin)
        .await
        .expect("move the mark");
    // The sweeper's events moved the chain head past the committer's, so
    // the next reveals take the full path (a row each) until the committer
    // tries its short path again: the first reveal there is recorded by its
    // event, and gets the row the mark calls for as well.
    let mut late = Vec::new();
    while stored(&admin, acme.id()).await.1 == 12 {
        assert!(late.len() < 64, "the short path is taken again");
        late.push(reveal(store, &acme, &c, &agent, g.id).await);
    }
    let total = 12 + late.len() as i64;
    assert_eq!(stored(&admin, acme.id()).await, (total, 13));
    assert_eq!(
        store.expire_leases(far, &by, 100).await.expect("sweep"),
        late.len() as u32,
        "the late leases"
    );
    for l in &late {
        assert_eq!(
            store.get_lease(&scope, l.id).await.expect("lease").state,
            LeaseState::Expired
        );
    }

    let log = verified_log(store, &scope).await;
    let count = |action: Action| log.iter().filter(|e| e.draft.action == action).count();
    assert_eq!(count(Action::LeaseExpire), 5 + late.len());
    assert_eq!(count(Action::LeaseRevoke), 6);

    // The export holds every lease as a row, recorded ones included.
    let one = reveal(store, &acme, &c, &agent, g.id).await;
    let rows = store
        .export_rows(ExportScope::Tenant(&scope))
        .await
        .expect("export");
    let leases = rows
        .tables
        .iter()
        .find(|t| t.table == "leases")
        .expect("the leases table");
    assert_eq!(leases.rows.len() as i64, total + 1);
    let id = strongroom_core::export::Cell::Uuid(one.id.as_uuid());
    assert!(
        leases.rows.iter().any(|r| r.first() == Some(&id)),
        "the lease only its event records"
    );
}

/// A tenant whose leases only their events record is found by the
/// sweeper among other tenants (its chain head's due time), and a pass
/// that finds nothing due moves its mark on. The schema refuses an event
/// with only some of a lease's columns, or a lease id recorded twice.
pub async fn pg_sweeper_finds_recorded_leases_of_every_tenant(admin: PgPool) {
    let store = pg_store(admin.clone()).await;
    let store: &dyn Store = &*store;
    let mut opened = Vec::new();
    for name in ["acme", "umbrella", "initech"] {
        let t = create_tenant(store, name).await;
        let scope = t.scope();
        let agent = t.add_principal(store, "agent", Role::Agent).await;
        let g = reveal_grant(&t, &agent, None);
        t.add_grant(store, &g).await;
        let c = credential(&scope, "dev", "llm/openai");
        t.store(store, &c).await.expect("create");
        let l = reveal(store, &t, &c, &agent, g.id).await;
        opened.push((t, l));
    }
    let due_at: Vec<Option<i64>> =
        sqlx::query_scalar("SELECT leases_due_at FROM audit_heads ORDER BY tenant_id")
            .fetch_all(&admin)
            .await
            .expect("due times");
    assert!(due_at.iter().all(Option::is_some), "{due_at:?}");

    let by = AuditDraft::new(Action::LeaseExpire, Outcome::Allowed, "");
    let latest = opened
        .iter()
        .map(|(_, l)| l.expires_at)
        .max()
        .expect("leases");
    assert_eq!(
        store.expire_leases(latest, &by, 100).await.expect("sweep"),
        3
    );
    for (t, l) in &opened {
        let now = store.get_lease(&t.scope(), l.id).await.expect("lease");
        assert_eq!(now.state, LeaseState::Expired);
    }
    let marks: Vec<(i64, Option<i64>)> = sqlx::query_as(
        "SELECT leases_swept_through, leases_due_at FROM audit_heads ORDER BY tenant_id",
    )
    .fetch_all(&admin)
    .await
    .expect("marks");
    assert!(
        marks
            .iter()
            .all(|&(swept, due)| swept == latest.as_micros() && due.is_none()),
        "{marks:?}"
    );
    assert_eq!(
        store.expire_leases(latest, &by, 100).await.expect("sweep"),
        0
    );

    // An event records all of a lease's columns or none, and no lease id
    // twice.
    let (t, l) = &opened[0];
    let insert = |lease: uuid::Uuid, expires: Option<i64>| {
        sqlx::query(
            "INSERT INTO audit_events (tenant_id, sequence, id, at, actor, action, outcome, \
             reason_code, prev_hash, hash, lease_id, lease_ttl_secs, lease_issued_at, \
             lease_expires_at, lease_max_expires_at, format) \
             VALUES ($1, 1000000, $2, 0, 'test', 'credential.reveal', 'allowed', 'OK', \
             '\\x00', '\\x00', $3, 60, 0, $4, 600, 2)",
        )
        .bind(t.id().as_uuid())
        .bind(uuid::Uuid::new_v4())
        .bind(lease)
        .bind(expires)
        .execute(&admin)
    };
    let code = |r: Result<_, sqlx::Error>| match r {
        Err(sqlx::Error::Database(e)) => e.code().map(|c| c.to_string()),
        other => panic!("not refused: {other:?}"),
    };
    let fresh = uuid::Uuid::new_v4();
    assert_eq!(code(insert(fresh, None).await).as_deref(), Some("23514"));
    assert_eq!(
        code(insert(l.id.as_uuid(), Some(60)).await).as_deref(),
        Some("23505")
    );
}
