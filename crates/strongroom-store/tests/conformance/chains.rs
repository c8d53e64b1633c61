//! Chain heads and the platform-level chain (`ChainStore`): the stored head
//! of each tenant chain is its newest event, readable per tenant and for all
//! tenants at once; platform events are chained gaplessly (also under
//! concurrent appends), hashed under the platform id, and queried newest
//! first with filters and pages.

use std::sync::Arc;

use strongroom_core::audit::{
    Action, AuditDraft, AuditEvent, ChainHead, ChainVerifier, GENESIS_HASH, Outcome, PLATFORM_CHAIN,
};
use strongroom_core::page::PageRequest;
use strongroom_core::store::{AuditFilter, Store};

use crate::support::{audit_log, create_tenant, credential, operator};

fn failed(identity: &str) -> AuditDraft {
    let mut d = AuditDraft::new(
        Action::AuthenticationFailed,
        Outcome::Denied,
        "UNKNOWN_IDENTITY",
    );
    d.actor = identity.to_owned();
    d.peer = Some("127.0.0.1:1".into());
    d
}

fn head_of(log: &[AuditEvent]) -> ChainHead {
    let last = log.last().expect("events");
    ChainHead {
        sequence: last.sequence,
        hash: last.hash,
    }
}

pub async fn chain_heads_and_the_platform_chain(store: Arc<dyn Store>) {
    let store = &*store;
    let a = create_tenant(store, "alpha").await;
    let b = create_tenant(store, "beta").await;
    a.store(store, &credential(&a.scope(), "dev", "c1"))
        .await
        .expect("create");

    let log_a = audit_log(store, &a.scope()).await;
    let log_b = audit_log(store, &b.scope()).await;
    assert_eq!(
        store.audit_head(&a.scope()).await.expect("head"),
        head_of(&log_a)
    );
    assert_eq!(
        store.audit_head(&b.scope()).await.expect("head"),
        head_of(&log_b)
    );
    let all = store.audit_heads(None).await.expect("heads");
    assert_eq!(all.len(), 2);
    assert!(all.contains(&(a.id(), head_of(&log_a))));
    assert!(all.contains(&(b.id(), head_of(&log_b))));
    assert_eq!(
        store.audit_heads(Some(b.id())).await.expect("heads"),
        vec![(b.id(), head_of(&log_b))]
    );

    assert_eq!(
        store.platform_audit_head().await.expect("platform head"),
        ChainHead {
            sequence: 0,
            hash: GENESIS_HASH
        }
    );
    let first = store
        .append_platform_audit(failed("spiffe://x/one"))
        .await
        .expect("append");
    assert_eq!((first.sequence, first.tenant), (1, PLATFORM_CHAIN));
    // Concurrent appends never fork the chain.
    let appends: Vec<_> = (0..8)
        .map(|i| store.append_platform_audit(failed(&format!("spiffe://x/{i}"))))
        .collect();
    for r in futures_join(appends).await {
        r.expect("concurrent append");
    }
    let log = store
        .platform_audit_after(0, 100)
        .await
        .expect("platform log");
    assert_eq!(log.len(), 9);
    let mut v = ChainVerifier::default();
    for e in &log {
        v.push(e)
            .unwrap_or_else(|br| panic!("platform chain breaks at {}: {}", br.sequence, br.reason));
    }
    assert_eq!(
        store.platform_audit_head().await.expect("head"),
        head_of(&log)
    );
    assert_eq!(
        store
            .platform_audit_after(7, 100)
            .await
            .expect("after")
            .len(),
        2
    );

    let op = operator(store).await;
    let scope = op.platform_scope().expect("platform scope");
    let page = store
        .query_platform_audit(&scope, &AuditFilter::default(), &PageRequest::first(5))
        .await
        .expect("query");
    assert_eq!(
        page.items.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        vec![9, 8, 7, 6, 5]
    );
    let rest = store
        .query_platform_audit(
            &scope,
            &AuditFilter::default(),
            &PageRequest {
                size: 5,
                after: page.next.clone(),
            },
        )
        .await
        .expect("next page");
    assert_eq!(
        rest.items.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        vec![4, 3, 2, 1]
    );
    let allowed = store
        .query_platform_audit(
            &scope,
            &AuditFilter {
                outcome: Some(Outcome::Allowed),
                ..AuditFilter::default()
            },
            &PageRequest::first(5),
        )
        .await
        .expect("filtered");
    assert!(allowed.items.is_empty());
    // Tenant chains are untouched by platform events.
    assert_eq!(audit_log(store, &a.scope()).await, log_a);
}

/// Runs `futures` concurrently on the current task and returns their
/// outputs in order.
async fn futures_join<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut pending: Vec<Option<std::pin::Pin<Box<F>>>> =
        futures.into_iter().map(|f| Some(Box::pin(f))).collect();
    let mut outputs: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut busy = false;
        for (slot, output) in pending.iter_mut().zip(outputs.iter_mut()) {
            if let Some(future) = slot {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => {
                        *output = Some(value);
                        *slot = None;
                    }
                    std::task::Poll::Pending => busy = true,
                }
            }
        }
        if busy {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs
        .into_iter()
        .map(|o| o.expect("every future finished"))
        .collect()
}

/// `chain_event_at` reads one event of a tenant's chain (without a caller's
/// scope) or of the platform chain, and nothing of another tenant.
pub async fn chain_event_at_reads_one_event(store: Arc<dyn Store>) {
    let store = &*store;
    let a = create_tenant(store, "alpha").await;
    let b = create_tenant(store, "beta").await;
    a.store(store, &credential(&a.scope(), "dev", "c1"))
        .await
        .expect("create");
    let log_a = audit_log(store, &a.scope()).await;
    for e in &log_a {
        assert_eq!(
            store
                .chain_event_at(Some(a.id()), e.sequence)
                .await
                .expect("event")
                .as_ref(),
            Some(e)
        );
    }
    let past = head_of(&log_a).sequence + 1;
    assert_eq!(
        store
            .chain_event_at(Some(a.id()), past)
            .await
            .expect("none"),
        None
    );
    let log_b = audit_log(store, &b.scope()).await;
    assert_eq!(
        store
            .chain_event_at(Some(b.id()), 1)
            .await
            .expect("event")
            .as_ref(),
        log_b.first()
    );
    assert_ne!(log_a.first(), log_b.first());

    assert_eq!(store.chain_event_at(None, 1).await.expect("none"), None);
    let first = store
        .append_platform_audit(failed("spiffe://x/one"))
        .await
        .expect("append");
    assert_eq!(
        store.chain_event_at(None, 1).await.expect("event"),
        Some(first)
    );
}
