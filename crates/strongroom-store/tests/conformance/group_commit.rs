//! Group commit, reveal checks and change notices.
//!
//! Audit-appending writes (`append_audit`, `append_reveal`,
//! `create_credential`, `add_version`) go through a per-tenant committer that
//! runs many jobs in one transaction. These cases check that a reveal is
//! recorded only while the state it was decided on still holds, that a
//! failing job costs only itself, that bursts of concurrent writers keep the
//! chain gapless and exact, and (Postgres) that committed state changes, and
//! only those, are announced to every server through `changes()`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use sqlx::PgPool;
use strongroom_core::Error;
use strongroom_core::audit::{Action, AuditDraft, AuditEvent, ChainVerifier, Outcome};
use strongroom_core::credential::{Credential, CredentialFilter, CredentialStatus};
use strongroom_core::ids::{BindingId, CredentialId, GrantId};
use strongroom_core::page::PageRequest;
use strongroom_core::policy::{Capability, Grant, GrantSubject};
use strongroom_core::principal::{Principal, PrincipalStatus, Role};
use strongroom_core::scope::TenantScope;
use strongroom_core::store::{AuditStore, Change, CredentialStore, RevealCheck, Store};
use strongroom_core::tenant::{TenantSettings, TenantStatus};
use strongroom_core::time::Timestamp;
use strongroom_store::{PgStore, SqliteStore};
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::TryRecvError;

use crate::support::{
    AuditTrail, Code, TestTenant, about, audit_log, code, create_tenant, credential, draft, env,
    grant, mark, marked, operator, pg_store,
};

// ---- helpers ----

/// Runs `futures` concurrently on the current task and returns their outputs
/// in order. Every future runs up to its first wait before any other task
/// does, so jobs queued there reach the committer as one burst.
async fn join_all<'a, T>(futures: Vec<Pin<Box<dyn Future<Output = T> + Send + 'a>>>) -> Vec<T> {
    let mut pending: Vec<Option<Pin<Box<dyn Future<Output = T> + Send + 'a>>>> =
        futures.into_iter().map(Some).collect();
    let mut outputs: Vec<Option<T>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut busy = false;
        for (slot, output) in pending.iter_mut().zip(outputs.iter_mut()) {
            if let Some(future) = slot {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => {
                        *output = Some(value);
                        *slot = None;
                    }
                    Poll::Pending => busy = true,
                }
            }
        }
        if busy { Poll::Pending } else { Poll::Ready(()) }
    })
    .await;
    outputs
        .into_iter()
        .map(|o| o.expect("every future finished"))
        .collect()
}

type Boxed<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The draft of a reveal of `version` of `credential` by `principal`.
pub(crate) fn reveal_draft(
    scope: &TenantScope<'_>,
    credential: &Credential,
    version: u32,
    principal: &Principal,
) -> AuditDraft {
    let mut d = about(scope, Action::CredentialReveal, credential);
    d.version = Some(version);
    d.principal = Some(principal.id);
    d.actor = principal.name.to_string();
    // As the engine's reveal: the event states the purpose its lease keeps.
    d.purpose = Some("conformance".into());
    d
}

pub(crate) fn check(
    credential: CredentialId,
    version: u32,
    principal: &Principal,
    grant: Option<GrantId>,
) -> RevealCheck {
    RevealCheck {
        credential,
        version,
        principal: principal.id,
        role: principal.role,
        grant,
        binding: None,
    }
}

/// Reveals `version` of `credential` as `principal`.
pub(crate) async fn reveal(
    store: &dyn Store,
    t: &TestTenant,
    credential: &Credential,
    version: u32,
    principal: &Principal,
    grant: Option<GrantId>,
) -> strongroom_core::Result<AuditEvent> {
    let scope = t.scope();
    store
        .append_reveal(
            &scope,
            reveal_draft(&scope, credential, version, principal),
            check(credential.id, version, principal, grant),
            Some(std::sync::Arc::new(lease(
                t, credential, version, principal, grant,
            ))),
        )
        .await
}

/// The lease a reveal of `version` of `credential` by `principal` opens.
pub(crate) fn lease(
    t: &TestTenant,
    credential: &Credential,
    version: u32,
    principal: &Principal,
    grant: Option<GrantId>,
) -> strongroom_core::lease::Lease {
    let now = Timestamp::now();
    strongroom_core::lease::Lease {
        id: strongroom_core::ids::LeaseId::generate(),
        tenant: t.id(),
        credential: credential.id,
        credential_name: credential.name.clone(),
        environment: credential.environment.clone(),
        version,
        principal: principal.id,
        grant,
        on_behalf_of: None,
        purpose: Some("conformance".into()),
        ttl: std::time::Duration::from_secs(60),
        issued_at: now,
        expires_at: now.plus(std::time::Duration::from_secs(60)),
        max_expires_at: now.plus(std::time::Duration::from_secs(600)),
        state: strongroom_core::lease::LeaseState::Active,
        ended_at: None,
        end: None,
    }
}

/// A grant of `reveal` on every credential of `dev` to `principal`.
pub(crate) fn reveal_grant(
    t: &TestTenant,
    principal: &Principal,
    expires_at: Option<Timestamp>,
) -> Grant {
    let mut g = grant(
        t,
        GrantSubject::Principal(principal.id),
        "*",
        &["dev"],
        &[Capability::Reveal],
    );
    g.expires_at = expires_at;
    g
}

/// Verifies the whole chain of the scope's tenant: sequences 1..=n without
/// gaps, every link and hash. Returns the log.
pub(crate) async fn verified_log(store: &dyn Store, scope: &TenantScope<'_>) -> Vec<AuditEvent> {
    let log = audit_log(store, scope).await;
    let mut v = ChainVerifier::default();
    for e in &log {
        v.push(e)
            .unwrap_or_else(|b| panic!("chain breaks at {}: {}", b.sequence, b.reason));
    }
    assert_eq!(v.checked(), log.len() as u64);
    assert_eq!(
        log.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        (1..=log.len() as u64).collect::<Vec<_>>()
    );
    log
}

/// Asserts that `event`, as returned to its caller, is stored as such.
fn assert_stored(log: &[AuditEvent], event: &AuditEvent) {
    let stored = usize::try_from(event.sequence - 1)
        .ok()
        .and_then(|i| log.get(i))
        .unwrap_or_else(|| panic!("event {} is not stored", event.sequence));
    assert_eq!(
        stored, event,
        "the stored event differs from the returned one"
    );
}

// ---- 1. a reveal whose check holds ----

/// A reveal whose check holds is recorded as the next event of the chain,
/// exactly as returned, with or without a grant.
pub async fn reveal_with_a_holding_check_is_recorded(store: Arc<dyn Store>) {
    let store = &*store;
    let acme = create_tenant(store, "acme").await;
    let scope = acme.scope();
    let agent = acme.add_principal(store, "agent", Role::Agent).await;
    let c = credential(&scope, "dev", "llm/openai");
    acme.store(store, &c).await.expect("create");
    acme.rotate(store, &c, 1).await.expect("v2");
    // Expiring in the future does not stop it.
    let mut later = credential(&scope, "dev", "llm/later");
    later.expires_at = Some(Timestamp::now().plus(Duration::from_secs(3600)));
    acme.store(store, &later).await.expect("create");
    let g = reveal_grant(
        &acme,
        &agent,
        Some(Timestamp::now().plus(Duration::from_secs(3600))),
    );
    acme.add_grant(store, &g).await;
    let mut trail = AuditTrail::start(store, scope).await;

    let mut returned = Vec::new();
    for (credential, version, principal, grant) in [
        (&c, 2, acme.admin(), None),
        (&c, 2, &agent, Some(g.id)),
        (&later, 1, &agent, Some(g.id)),
    ] {
        let event = reveal(store, &acme, credential, version, principal, grant)
            .await
            .expect("the check holds");
        let stored = trail.expect(Action::CredentialReveal).await;
        assert_eq!(stored, event);
        assert_eq!(event.draft.action, Action::CredentialReveal);
        assert_eq!(event.draft.outcome, Outcome::Allowed);
        assert_eq!(event.draft.credential, Some(credential.id));
        assert_eq!(event.draft.version, Some(version));
        assert_eq!(event.draft.principal, Some(principal.id));
        assert_eq!(event.tenant, acme.id());
        returned.push(event);
    }
    let log = verified_log(store, &scope).await;
    assert_eq!(log.len() as u64, trail.len());
    for e in &returned {
        assert_stored(&log, e);
    }
}

/// The read-only check (what an open use is checked against) judges as the
/// commit does, and writes nothing: a holding check passes; a rotated-away
/// version, a revoked credential and another tenant's credential fail.
pub async fn read_only_reveal_checks_judge_as_commit_does(store: Arc<dyn Store>) {
    let store = &*store;
    let acme = create_tenant(store, "acme").await;
    let beta = create_tenant(store, "beta").await;
    let scope = acme.scope();
    let agent = acme.add_principal(store, "agent", Role::Agent).await;
    let c = credential(&scope, "dev", "llm/openai");
    acme.store(store, &c).await.expect("create");
    let trail = AuditTrail::start(store, scope).await;
    let scope = acme.scope();
    let holding = check(c.id, 1, &agent, None);
    assert_eq!(
        store
            .check_reveals(&scope, std::slice::from_ref(&holding))
            .await
            .expect("check"),
        None
    );
    assert_eq!(
        store.check_reveals(&scope, &[]).await.expect("check"),
        None,
        "no check holds trivially"
    );
    trail.expect_none().await;
    acme.rotate(store, &c, 1).await.expect("v2");
    let why = store
        .check_reveals(&scope, &[check(c.id, 2, &agent, None), holding.clone()])
        .await
        .expect("check");
    assert!(why.is_some(), "the version in use was rotated away");
    assert_eq!(
        store
            .check_reveals(&scope, &[check(c.id, 2, &agent, None)])
            .await
            .expect("check"),
        None
    );
    // Another tenant's scope sees none of acme's rows.
    assert!(
        store
            .check_reveals(&beta.scope(), &[check(c.id, 2, &agent, None)])
            .await
            .expect("check")
            .is_some()
    );
}

// ---- 2. a reveal whose check no longer holds ----

/// Asserts that revealing fails with `FailedPrecondition` and appends nothing.
async fn refused(trail: &AuditTrail<'_>, result: strongroom_core::Result<AuditEvent>, why: &str) {
    assert_eq!(code(result), Code::FailedPrecondition, "{why}");
    trail.expect_none().await;
}

/// A reveal decided on state that has since changed is refused and leaves no
/// event: rotated, revoked, destroyed or expired credential; deleted,
/// expired or unknown grant; disabled principal, changed role, suspended
/// tenant; and a credential, principal or grant of another tenant, which
/// must not be visible. Each refusal is paired with a reveal that passes
/// before the change (or with a control that differs only in the changed
/// state), so it is the change that is refused.
pub async fn stale_reveal_checks_append_nothing(store: Arc<dyn Store>) {
    let store = &*store;
    let acme = create_tenant(store, "acme").await;
    let beta = create_tenant(store, "beta").await;
    let scope = acme.scope();
    let agent = acme.add_principal(store, "agent", Role::Agent).await;
    let c = credential(&scope, "dev", "llm/openai");
    acme.store(store, &c).await.expect("create");
    let mut trail = AuditTrail::start(store, scope).await;
    let admin = acme.admin().clone();

    // Rotated since: the old current version is refused, the new one passes.
    reveal(store, &acme, &c, 1, &agent, None)
        .await
        .expect("v1 is current");
    trail.expect(Action::CredentialReveal).await;
    acme.rotate(store, &c, 1).await.expect("v2");
    trail.expect(Action::CredentialRotate).await;
    refused(
        &trail,
        reveal(store, &acme, &c, 1, &agent, None).await,
        "rotated",
    )
    .await;
    reveal(store, &acme, &c, 2, &agent, None)
        .await
        .expect("v2 is current");
    trail.expect(Action::CredentialReveal).await;
    // Rolled back: the version rolled away from is refused.
    store
        .set_current_version(
            &scope,
            c.id,
            1,
            about(&scope, Action::CredentialRollback, &c),
        )
        .await
        .expect("rollback");
    trail.expect(Action::CredentialRollback).await;
    refused(
        &trail,
        reveal(store, &acme, &c, 2, &agent, None).await,
        "rolled back",
    )
    .await;
    // A version that never was is refused.
    refused(
        &trail,
        reveal(store, &acme, &c, 9, &agent, None).await,
        "unknown version",
    )
    .await;

    // Revoked.
    let revoked = credential(&scope, "dev", "llm/revoked");
    acme.store(store, &revoked).await.expect("create");
    trail.expect(Action::CredentialCreate).await;
    reveal(store, &acme, &revoked, 1, &agent, None)
        .await
        .expect("not yet revoked");
    trail.expect(Action::CredentialReveal).await;
    store
        .revoke_credential(
            &scope,
            revoked.id,
            "leaked",
            about(&scope, Action::CredentialRevoke, &revoked),
        )
        .await
        .expect("revoke");
    trail.expect(Action::CredentialRevoke).await;
    refused(
        &trail,
        reveal(store, &acme, &revoked, 1, &agent, None).await,
        "revoked",
    )
    .await;

    // Destroyed.
    let destroyed = credential(&scope, "dev", "llm/destroyed");
    acme.store(store, &destroyed).await.expect("create");
    trail.expect(Action::CredentialCreate).await;
    reveal(store, &acme, &destroyed, 1, &agent, None)
        .await
        .expect("not yet destroyed");
    trail.expect(Action::CredentialReveal).await;
    store
        .destroy_credential(
            &scope,
            destroyed.id,
            about(&scope, Action::CredentialDestroy, &destroyed),
        )
        .await
        .expect("destroy");
    trail.expect(Action::CredentialDestroy).await;
    refused(
        &trail,
        reveal(store, &acme, &destroyed, 1, &agent, None).await,
        "destroyed",
    )
    .await;

    // Expired: past its expiry, or stored as expired.
    let mut expired = credential(&scope, "dev", "llm/expired");
    expired.expires_at = Some(Timestamp::now().minus(Duration::from_secs(1)));
    acme.store(store, &expired).await.expect("create");
    trail.expect(Action::CredentialCreate).await;
    refused(
        &trail,
        reveal(store, &acme, &expired, 1, &agent, None).await,
        "expired",
    )
    .await;
    let mut marked = credential(&scope, "dev", "llm/marked-expired");
    marked.status = CredentialStatus::Expired;
    acme.store(store, &marked).await.expect("create");
    trail.expect(Action::CredentialCreate).await;
    refused(
        &trail,
        reveal(store, &acme, &marked, 1, &agent, None).await,
        "status expired",
    )
    .await;
    // Never stored.
    refused(
        &trail,
        reveal(
            store,
            &acme,
            &credential(&scope, "dev", "ghost"),
            1,
            &agent,
            None,
        )
        .await,
        "unknown credential",
    )
    .await;

    // Deleted grant.
    let g = reveal_grant(&acme, &agent, None);
    acme.add_grant(store, &g).await;
    trail.expect(Action::GrantCreate).await;
    reveal(store, &acme, &c, 1, &agent, Some(g.id))
        .await
        .expect("the grant exists");
    trail.expect(Action::CredentialReveal).await;
    store
        .delete_grant(&scope, g.id, draft(&scope, Action::GrantRevoke))
        .await
        .expect("delete grant");
    trail.expect(Action::GrantRevoke).await;
    refused(
        &trail,
        reveal(store, &acme, &c, 1, &agent, Some(g.id)).await,
        "deleted grant",
    )
    .await;
    refused(
        &trail,
        reveal(store, &acme, &c, 1, &agent, Some(GrantId::generate())).await,
        "unknown grant",
    )
    .await;
    // Expired grant (and its live twin passes).
    let lapsed = reveal_grant(
        &acme,
        &agent,
        Some(Timestamp::now().minus(Duration::from_secs(1))),
    );
    acme.add_grant(store, &lapsed).await;
    trail.expect(Action::GrantCreate).await;
    refused(
        &trail,
        reveal(store, &acme, &c, 1, &agent, Some(lapsed.id)).await,
        "expired grant",
    )
    .await;
    let live = reveal_grant(
        &acme,
        &agent,
        Some(Timestamp::now().plus(Duration::from_secs(3600))),
    );
    acme.add_grant(store, &live).await;
    trail.expect(Action::GrantCreate).await;
    reveal(store, &acme, &c, 1, &agent, Some(live.id))
        .await
        .expect("the grant is live");
    trail.expect(Action::CredentialReveal).await;

    // Role changed since the decision.
    for role in [Role::Admin, Role::Viewer] {
        let mut stale = check(c.id, 1, &agent, None);
        stale.role = role;
        refused(
            &trail,
            store
                .append_reveal(&scope, reveal_draft(&scope, &c, 1, &agent), stale, None)
                .await,
            "role differs",
        )
        .await;
    }
    // Unknown principal.
    refused(
        &trail,
        reveal(
            store,
            &acme,
            &c,
            1,
            &crate::support::principal(acme.id(), "ghost", Role::Agent),
            None,
        )
        .await,
        "unknown principal",
    )
    .await;

    // Disabled principal, then enabled again.
    store
        .set_principal_status(
            &scope,
            agent.id,
            PrincipalStatus::Disabled,
            draft(&scope, Action::PrincipalStatus),
        )
        .await
        .expect("disable");
    trail.expect(Action::PrincipalStatus).await;
    refused(
        &trail,
        reveal(store, &acme, &c, 1, &agent, None).await,
        "disabled principal",
    )
    .await;
    reveal(store, &acme, &c, 1, &admin, None)
        .await
        .expect("another principal is unaffected");
    trail.expect(Action::CredentialReveal).await;
    store
        .set_principal_status(
            &scope,
            agent.id,
            PrincipalStatus::Active,
            draft(&scope, Action::PrincipalStatus),
        )
        .await
        .expect("enable");
    trail.expect(Action::PrincipalStatus).await;
    reveal(store, &acme, &c, 1, &agent, None)
        .await
        .expect("enabled again");
    trail.expect(Action::CredentialReveal).await;

    // The caller's identity binding: deleted since the decision, bound to
    // another principal, or unknown. The refusals come after enough passing
    // reveals that Postgres takes its one-round-trip path again (the
    // binding's deletion moved the chain head, which sends a few batches
    // down the full path), so both paths' checks are covered.
    let bound = crate::support::binding(acme.id(), agent.id, "spiffe://acme/agent-reveal-check");
    acme.claim(store, "spiffe://acme/agent-reveal-check")
        .await
        .expect("namespace");
    trail.expect(Action::TenantNamespaces).await;
    store
        .create_binding(&scope, &bound, draft(&scope, Action::BindingCreate))
        .await
        .expect("bind");
    trail.expect(Action::BindingCreate).await;
    let with_binding = |binding: BindingId, principal: &Principal| {
        let mut k = check(c.id, 1, principal, None);
        k.binding = Some(binding);
        store.append_reveal(&scope, reveal_draft(&scope, &c, 1, principal), k, None)
    };
    with_binding(bound.id, &agent)
        .await
        .expect("the binding exists");
    trail.expect(Action::CredentialReveal).await;
    refused(
        &trail,
        with_binding(bound.id, &admin).await,
        "binding of another principal",
    )
    .await;
    store
        .delete_binding(&scope, bound.id, draft(&scope, Action::BindingDelete))
        .await
        .expect("delete binding");
    trail.expect(Action::BindingDelete).await;
    for _ in 0..24 {
        reveal(store, &acme, &c, 1, &agent, None)
            .await
            .expect("a reveal that names no binding");
        trail.expect(Action::CredentialReveal).await;
    }
    refused(
        &trail,
        with_binding(bound.id, &agent).await,
        "deleted binding",
    )
    .await;
    refused(
        &trail,
        with_binding(BindingId::generate(), &agent).await,
        "unknown binding",
    )
    .await;

    // Another tenant's credential, principal or grant is not visible, even
    // though each is valid in its own tenant.
    let bscope = beta.scope();
    let foreign = credential(&bscope, "dev", "llm/openai");
    beta.store(store, &foreign).await.expect("create in beta");
    let foreign_grant = reveal_grant(&beta, beta.admin(), None);
    beta.add_grant(store, &foreign_grant).await;
    let beta_trail = AuditTrail::start(store, bscope).await;
    reveal(
        store,
        &beta,
        &foreign,
        1,
        beta.admin(),
        Some(foreign_grant.id),
    )
    .await
    .expect("valid in beta");
    let beta_len = beta_trail.len() + 1;
    let in_acme = |credential: CredentialId, principal: &Principal, grant| {
        let d = reveal_draft(&scope, &c, 1, principal);
        store.append_reveal(&scope, d, check(credential, 1, principal, grant), None)
    };
    refused(
        &trail,
        in_acme(foreign.id, &admin, None).await,
        "credential of another tenant",
    )
    .await;
    refused(
        &trail,
        in_acme(foreign.id, beta.admin(), None).await,
        "credential and principal of another tenant",
    )
    .await;
    refused(
        &trail,
        in_acme(c.id, beta.admin(), None).await,
        "principal of another tenant",
    )
    .await;
    refused(
        &trail,
        in_acme(c.id, &admin, Some(foreign_grant.id)).await,
        "grant of another tenant",
    )
    .await;
    // Nothing landed in beta's chain either.
    assert_eq!(audit_log(store, &bscope).await.len() as u64, beta_len);

    // Suspended tenant, then resumed.
    let op = operator(store).await;
    let platform = op.platform_scope().expect("platform");
    let status = |s| {
        store.set_tenant_status(
            &platform,
            acme.id(),
            s,
            platform.audit(Action::TenantStatus, Outcome::Allowed, "ALLOWED_BY_ROLE"),
        )
    };
    status(TenantStatus::Suspended).await.expect("suspend");
    trail.expect(Action::TenantStatus).await;
    refused(
        &trail,
        reveal(store, &acme, &c, 1, &admin, None).await,
        "tenant suspended",
    )
    .await;
    refused(
        &trail,
        reveal(store, &acme, &c, 1, &agent, None).await,
        "tenant suspended",
    )
    .await;
    status(TenantStatus::Active).await.expect("resume");
    trail.expect(Action::TenantStatus).await;
    reveal(store, &acme, &c, 1, &admin, None)
        .await
        .expect("resumed");
    trail.expect(Action::CredentialReveal).await;

    let log = verified_log(store, &scope).await;
    assert_eq!(log.len() as u64, trail.len());
}

// ---- 3. a burst of concurrent writers ----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Append,
    /// A reveal of a credential nobody rotates.
    RevealStable(usize),
    /// A reveal of version 1 of a credential being rotated.
    RevealRotating(usize),
    /// A rotation expecting `expected` as the latest version.
    Rotate(usize, u32),
    /// A create of `dup/{n}`.
    Create(usize),
}

/// 200 concurrent writers through the committer: appends, reveals, rotations
/// with current and stale expectations, creates with contested names.
/// Exactly the right ones succeed; the chain is 1..=n without gaps and
/// verifies; it holds one event per success and nothing else; no failed
/// create leaves a row; a successful reveal of a rotated version is chained
/// before the rotation.
pub async fn concurrent_group_commit_stays_exact(store: Arc<dyn Store>) {
    const TASKS: usize = 200;
    const NAMES: usize = 8;
    let store = &*store;
    let acme = create_tenant(store, "acme").await;
    let scope = acme.scope();
    let agent = acme.add_principal(store, "agent", Role::Agent).await;
    let g = reveal_grant(&acme, &agent, None);
    acme.add_grant(store, &g).await;
    let mut stable = Vec::new();
    for i in 0..4 {
        let c = credential(&scope, "dev", &format!("stable/{i}"));
        acme.store(store, &c).await.expect("create");
        stable.push(c);
    }
    let mut rotating = Vec::new();
    for i in 0..3 {
        let c = credential(&scope, "dev", &format!("rotating/{i}"));
        acme.store(store, &c).await.expect("create");
        rotating.push(c);
    }
    let setup = audit_log(store, &scope).await.len();
    let setup_credentials = stable.len() + rotating.len();

    let ops: Vec<Op> = (0..TASKS)
        .map(|i| {
            let k = i / 5;
            match i % 5 {
                0 => Op::Append,
                1 => Op::RevealStable(k % stable.len()),
                2 => Op::Rotate(
                    k % rotating.len(),
                    if k.is_multiple_of(2) {
                        1
                    } else {
                        [0, 3][k % 4 / 2]
                    },
                ),
                3 => Op::Create(k % NAMES),
                _ => Op::RevealRotating(k % rotating.len()),
            }
        })
        .collect();
    let creates: Vec<Option<Credential>> = ops
        .iter()
        .map(|op| match op {
            Op::Create(n) => Some(credential(&scope, "dev", &format!("dup/{n}"))),
            _ => None,
        })
        .collect();

    let run = |i: usize, op: Op| -> Boxed<'_, strongroom_core::Result<Option<AuditEvent>>> {
        let (acme, agent, g, stable, rotating, creates) =
            (&acme, &agent, &g, &stable, &rotating, &creates);
        Box::pin(async move {
            // Stagger arrivals over a few milliseconds so jobs land in many
            // batches, interleaved with commits in flight; rotations come
            // from 3 ms on, so some reveals of their version 1 precede them
            // and others follow.
            let k = i / 5;
            let delay = match op {
                Op::Rotate(..) => 3 + k % 5,
                Op::RevealRotating(_) => k % 8,
                _ => (i * 7) % 8,
            };
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay as u64)).await;
            }
            let scope = acme.scope();
            match op {
                Op::Append => {
                    let mut d = draft(&scope, Action::Other);
                    d.detail = marked(format!("burst {i}"));
                    store.append_audit(&scope, d).await.map(Some)
                }
                Op::RevealStable(k) => {
                    let grant = i.is_multiple_of(2).then_some(g.id);
                    reveal(store, acme, &stable[k], 1, agent, grant)
                        .await
                        .map(Some)
                }
                Op::RevealRotating(k) => reveal(store, acme, &rotating[k], 1, agent, None)
                    .await
                    .map(Some),
                Op::Rotate(k, expected) => acme
                    .rotate(store, &rotating[k], expected)
                    .await
                    .map(|_| None),
                Op::Create(_) => {
                    let c = creates[i].as_ref().expect("a create has a credential");
                    acme.store(store, c).await.map(|_| None)
                }
            }
        })
    };
    let results = join_all(ops.iter().enumerate().map(|(i, op)| run(i, *op)).collect()).await;

    let result_code = |r: &strongroom_core::Result<Option<AuditEvent>>| match r {
        Ok(_) => None,
        Err(e) => Some(Code::of(e)),
    };
    let mut successes = 0;
    let mut rotated = vec![0; rotating.len()];
    let mut created = vec![0; NAMES];
    let mut revealed_before_rotation: Vec<(usize, u64)> = Vec::new();
    for (i, (op, r)) in ops.iter().zip(&results).enumerate() {
        let c = result_code(r);
        match *op {
            Op::Append | Op::RevealStable(_) => assert_eq!(c, None, "{i} {op:?}: {r:?}"),
            Op::RevealRotating(k) => match r {
                Ok(e) => {
                    let e = e.as_ref().expect("a reveal returns its event");
                    revealed_before_rotation.push((k, e.sequence));
                }
                Err(_) => assert_eq!(c, Some(Code::FailedPrecondition), "{i} {op:?}: {r:?}"),
            },
            Op::Rotate(k, expected) => {
                if c.is_none() {
                    assert_eq!(expected, 1, "{i}: a stale rotation succeeded");
                    rotated[k] += 1;
                } else {
                    assert_eq!(c, Some(Code::FailedPrecondition), "{i} {op:?}: {r:?}");
                }
            }
            Op::Create(n) => {
                if c.is_none() {
                    created[n] += 1;
                } else {
                    assert_eq!(c, Some(Code::AlreadyExists), "{i} {op:?}: {r:?}");
                }
            }
        }
        if c.is_none() {
            successes += 1;
        }
    }
    assert_eq!(
        rotated,
        vec![1; rotating.len()],
        "one rotation per credential"
    );
    assert_eq!(created, vec![1; NAMES], "one create per name");

    // The chain: 1..=n, verified, exactly one event per success.
    let log = verified_log(store, &scope).await;
    assert_eq!(
        log.len(),
        setup + successes,
        "events != successful operations"
    );
    for r in results.iter().flatten().flatten() {
        assert_stored(&log, r);
    }
    let burst = &log[setup..];
    let count = |action| burst.iter().filter(|e| e.draft.action == action).count();
    let expected_reveals = ops
        .iter()
        .zip(&results)
        .filter(|(op, r)| matches!(op, Op::RevealStable(_) | Op::RevealRotating(_)) && r.is_ok())
        .count();
    assert_eq!(count(Action::Other), TASKS / 5);
    assert_eq!(count(Action::CredentialReveal), expected_reveals);
    assert_eq!(count(Action::CredentialRotate), rotating.len());
    assert_eq!(count(Action::CredentialCreate), NAMES);
    assert_eq!(burst.len(), successes);

    // A reveal of version 1 that succeeded was chained before the rotation
    // that superseded it.
    for (k, sequence) in revealed_before_rotation {
        let rotation = burst
            .iter()
            .find(|e| {
                e.draft.action == Action::CredentialRotate
                    && e.draft.credential == Some(rotating[k].id)
            })
            .expect("the rotation's event");
        assert!(
            sequence < rotation.sequence,
            "a reveal of v1 (#{sequence}) was chained after v2 (#{}) was written",
            rotation.sequence
        );
    }

    // Rotations wrote exactly one version each.
    for c in &rotating {
        let now = store.get_credential(&scope, c.id).await.expect("get");
        assert_eq!((now.current_version, now.latest_version), (2, 2));
        let kept: Vec<u32> = store
            .list_versions(&scope, c.id)
            .await
            .expect("versions")
            .iter()
            .map(|v| v.version)
            .collect();
        assert_eq!(kept, vec![2, 1]);
    }
    // Each name has its winner with its first version; losers left nothing.
    for (i, (c, r)) in creates.iter().zip(&results).enumerate() {
        let Some(c) = c else { continue };
        if r.is_ok() {
            assert_eq!(
                store
                    .find_credential(&scope, &c.environment, &c.name)
                    .await
                    .expect("find")
                    .id,
                c.id
            );
            let v1 = store.get_version(&scope, c.id, 1).await.expect("v1");
            assert_eq!(acme.open(c, &v1), format!("{}-v1", c.name));
        } else {
            assert_eq!(
                code(store.get_credential(&scope, c.id).await),
                Code::NotFound,
                "{i}"
            );
            assert_eq!(
                code(store.get_version(&scope, c.id, 1).await),
                Code::NotFound,
                "{i}"
            );
            assert_eq!(
                code(store.list_versions(&scope, c.id).await),
                Code::NotFound,
                "{i}"
            );
        }
    }
    let listed = store
        .list_credentials(
            &scope,
            &CredentialFilter::default(),
            &PageRequest::first(1000),
        )
        .await
        .expect("list");
    assert_eq!(listed.items.len(), setup_credentials + NAMES);
}

// ---- 4. a failing job costs only itself ----

/// In one burst, jobs that fail (unknown environment, taken name, stale
/// rotation, stale reveal) get their own errors and leave nothing, and the
/// valid jobs around them all commit.
pub async fn failing_jobs_do_not_poison_their_batch(store: Arc<dyn Store>) {
    let store = &*store;
    let acme = create_tenant(store, "acme").await;
    let scope = acme.scope();
    let taken = credential(&scope, "dev", "llm/taken");
    acme.store(store, &taken).await.expect("create");
    let trail = AuditTrail::start(store, scope).await;
    let admin = acme.admin().clone();

    let unknown_env = credential(&scope, "qa", "llm/nowhere");
    let duplicate = credential(&scope, "dev", "llm/taken");
    let fresh = credential(&scope, "dev", "llm/fresh");
    let fresh_again = credential(&scope, "dev", "llm/fresh");
    let valid_create = credential(&scope, "production", "llm/valid");

    let mut jobs: Vec<(&str, Code, Boxed<'_, strongroom_core::Result<()>>)> = vec![
        // The failures first: nothing they did may survive or spoil the rest.
        (
            "unknown environment",
            Code::NotFound,
            Box::pin(async { acme.store(store, &unknown_env).await.map(drop) }),
        ),
        (
            "duplicate name",
            Code::AlreadyExists,
            Box::pin(async { acme.store(store, &duplicate).await.map(drop) }),
        ),
        (
            "stale rotation",
            Code::FailedPrecondition,
            Box::pin(async { acme.rotate(store, &taken, 0).await.map(drop) }),
        ),
        (
            "stale reveal",
            Code::FailedPrecondition,
            Box::pin(async {
                reveal(store, &acme, &taken, 2, &admin, None)
                    .await
                    .map(drop)
            }),
        ),
        (
            "unknown credential",
            Code::NotFound,
            Box::pin(async {
                acme.rotate(store, &credential(&scope, "dev", "ghost"), 1)
                    .await
                    .map(drop)
            }),
        ),
    ];
    let failures = jobs.len();
    for i in 0..8 {
        jobs.push((
            "append",
            Code::Internal,
            Box::pin(async move {
                let mut d = draft(&scope, Action::Other);
                d.detail = marked(format!("valid {i}"));
                store.append_audit(&scope, d).await.map(drop)
            }),
        ));
        jobs.push((
            "reveal",
            Code::Internal,
            Box::pin(async {
                reveal(store, &acme, &taken, 1, &admin, None)
                    .await
                    .map(drop)
            }),
        ));
    }
    jobs.push((
        "create",
        Code::Internal,
        Box::pin(async { acme.store(store, &valid_create).await.map(drop) }),
    ));
    // The same new name twice: exactly one wins.
    jobs.push((
        "contested create",
        Code::AlreadyExists,
        Box::pin(async { acme.store(store, &fresh).await.map(drop) }),
    ));
    jobs.push((
        "contested create",
        Code::AlreadyExists,
        Box::pin(async { acme.store(store, &fresh_again).await.map(drop) }),
    ));
    let (whats, futures): (Vec<_>, Vec<_>) = jobs.into_iter().map(|(w, c, f)| ((w, c), f)).unzip();
    let results = join_all(futures).await;

    let mut contested_wins = 0;
    let mut successes = 0;
    for (i, ((what, failure), r)) in whats.iter().zip(&results).enumerate() {
        if i < failures {
            assert_eq!(
                r.as_ref().map_err(Code::of).err(),
                Some(*failure),
                "{what}: {r:?}"
            );
        } else if *what == "contested create" {
            match r {
                Ok(()) => contested_wins += 1,
                Err(e) => assert_eq!(Code::of(e), *failure, "{what}: {e}"),
            }
        } else {
            r.as_ref()
                .unwrap_or_else(|e| panic!("{what} failed beside failing jobs: {e}"));
        }
        successes += usize::from(r.is_ok());
    }
    assert_eq!(contested_wins, 1);
    assert_eq!(successes, results.len() - failures - 1);

    // Exactly the successes are chained.
    let log = verified_log(store, &scope).await;
    assert_eq!(log.len() as u64, trail.len() + successes as u64);
    let new = &log[trail.len() as usize..];
    let count = |action| new.iter().filter(|e| e.draft.action == action).count();
    assert_eq!(count(Action::Other), 8);
    assert_eq!(count(Action::CredentialReveal), 8);
    assert_eq!(count(Action::CredentialCreate), 2);
    assert_eq!(new.len(), 18);

    // The failures left nothing; the valid creates are whole.
    assert_eq!(
        code(store.get_credential(&scope, unknown_env.id).await),
        Code::NotFound
    );
    assert_eq!(
        code(store.get_credential(&scope, duplicate.id).await),
        Code::NotFound
    );
    assert_eq!(
        code(store.get_version(&scope, duplicate.id, 1).await),
        Code::NotFound
    );
    let now = store.get_credential(&scope, taken.id).await.expect("get");
    assert_eq!((now.current_version, now.latest_version), (1, 1));
    assert_eq!(
        store
            .list_versions(&scope, taken.id)
            .await
            .expect("versions")
            .len(),
        1
    );
    assert_eq!(
        store
            .get_credential(&scope, valid_create.id)
            .await
            .expect("created"),
        valid_create
    );
    let winner = store
        .find_credential(&scope, &env("dev"), &fresh.name)
        .await
        .expect("the contested name has a winner");
    assert!(winner.id == fresh.id || winner.id == fresh_again.id);
    let loser = if winner.id == fresh.id {
        &fresh_again
    } else {
        &fresh
    };
    assert_eq!(
        code(store.get_credential(&scope, loser.id).await),
        Code::NotFound
    );
    assert_eq!(
        code(store.get_version(&scope, loser.id, 1).await),
        Code::NotFound
    );
}

// ---- 5. change notices (Postgres) ----

/// How long a notice may take to arrive.
const PATIENCE: Duration = Duration::from_secs(5);
/// How long to wait to be sure no notice comes.
const QUIET: Duration = Duration::from_millis(250);

/// Waits for the next notice (skipping `Everything`: a listener that
/// (re)connected) and asserts it is `expected`.
async fn expect_change(rx: &mut Receiver<Change>, expected: Change, what: &str) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(Change::Everything)) => {}
            Ok(Ok(change)) => {
                assert_eq!(change, expected, "{what}");
                return;
            }
            Ok(Err(e)) => panic!("{what}: {e}"),
            Err(_) => panic!("{what}: no change notice within {PATIENCE:?}"),
        }
    }
}

/// Asserts that no notice arrives for a while.
async fn expect_quiet(rx: &mut Receiver<Change>, what: &str) {
    if let Ok(notice) = tokio::time::timeout(QUIET, rx.recv()).await {
        panic!("{what}: unexpected notice {notice:?}");
    }
}

/// A state change of `t` that changes nothing (same settings).
async fn touch(store: &dyn Store, t: &TestTenant) {
    let scope = t.scope();
    store
        .update_tenant_settings(
            &scope,
            &TenantSettings::default(),
            draft(&scope, Action::TenantSettings),
        )
        .await
        .expect("update settings");
}

/// Subscribes to `listener`'s notices and waits until they flow: changes `t`
/// through `writer` until the notice arrives (the listener starts on first
/// use and misses what commits before it listens), then drains whatever
/// else arrives.
async fn subscribed(listener: &PgStore, writer: &dyn Store, t: &TestTenant) -> Receiver<Change> {
    let mut rx = listener.changes();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    'flowing: loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no change notice reached the subscriber within {PATIENCE:?}"
        );
        touch(writer, t).await;
        let wait = tokio::time::Instant::now() + Duration::from_millis(250);
        while let Ok(notice) = tokio::time::timeout_at(wait, rx.recv()).await {
            if notice.expect("receive") == Change::Access(t.id()) {
                break 'flowing;
            }
        }
    }
    while tokio::time::timeout(QUIET, rx.recv()).await.is_ok() {}
    rx
}

/// Two servers over one database: a store whose notices are watched and a
/// second store, each with its own pool, both as the app role.
async fn two_servers(admin: &PgPool) -> (Arc<PgStore>, Arc<PgStore>) {
    (pg_store(admin.clone()).await, pg_store(admin.clone()).await)
}

/// Every committed state change made through one server is announced to
/// another server's `changes()`, naming its tenant and what it affects
/// (a credential, the tenant's data, or who its callers are), whichever path
/// wrote it (single-statement mutations and the group committer alike, one
/// notice per credential of a batch); so is a change made through the
/// watching server itself.
pub async fn pg_changes_announce_other_servers_mutations(admin: PgPool) {
    let (a, b) = two_servers(&admin).await;
    let writer: &dyn Store = &*b;
    let acme = create_tenant(writer, "acme").await;
    let beta = create_tenant(writer, "beta").await;
    let scope = acme.scope();
    let agent = acme.add_principal(writer, "agent", Role::Agent).await;
    let c = credential(&scope, "dev", "llm/openai");
    acme.store(writer, &c).await.expect("create");
    let mut rx = subscribed(&a, writer, &acme).await;
    let id = acme.id();

    let credential_change = |c: &Credential| Change::Credential(id, c.id);
    acme.rotate(writer, &c, 1).await.expect("add_version");
    expect_change(&mut rx, credential_change(&c), "add_version").await;
    let g = reveal_grant(&acme, &agent, None);
    acme.add_grant(writer, &g).await;
    expect_change(&mut rx, Change::Data(id), "create_grant").await;
    writer
        .delete_grant(&scope, g.id, draft(&scope, Action::GrantRevoke))
        .await
        .expect("delete grant");
    expect_change(&mut rx, Change::Data(id), "delete_grant").await;
    writer
        .set_principal_status(
            &scope,
            agent.id,
            PrincipalStatus::Disabled,
            draft(&scope, Action::PrincipalStatus),
        )
        .await
        .expect("disable");
    expect_change(&mut rx, Change::Access(id), "set_principal_status").await;
    let other = credential(&scope, "dev", "llm/other");
    acme.store(writer, &other).await.expect("create");
    expect_change(&mut rx, credential_change(&other), "create_credential").await;
    writer
        .revoke_credential(
            &scope,
            c.id,
            "leaked",
            about(&scope, Action::CredentialRevoke, &c),
        )
        .await
        .expect("revoke");
    expect_change(&mut rx, credential_change(&c), "revoke_credential").await;
    writer
        .destroy_credential(
            &scope,
            other.id,
            about(&scope, Action::CredentialDestroy, &other),
        )
        .await
        .expect("destroy");
    expect_change(&mut rx, credential_change(&other), "destroy_credential").await;

    // Another tenant's change names that tenant.
    let bscope = beta.scope();
    let bc = credential(&bscope, "dev", "llm/openai");
    beta.store(writer, &bc).await.expect("create in beta");
    expect_change(
        &mut rx,
        Change::Credential(beta.id(), bc.id),
        "create_credential in beta",
    )
    .await;
    // One batch of creates (with reveals) announces every credential created.
    let batch: Vec<Credential> = (0..3)
        .map(|i| credential(&scope, "dev", &format!("llm/batch-{i}")))
        .collect();
    let mut burst: Vec<Boxed<'_, strongroom_core::Result<()>>> = Vec::new();
    for c in &batch {
        let acme = &acme;
        burst.push(Box::pin(
            async move { acme.store(writer, c).await.map(drop) },
        ));
        burst.push(Box::pin(async move {
            reveal(writer, acme, c, 1, acme.admin(), None)
                .await
                .map(drop)
        }));
    }
    for r in join_all(burst).await {
        // A reveal may be checked before its credential's create commits.
        assert!(
            matches!(r, Ok(()) | Err(Error::FailedPrecondition(_))),
            "{r:?}"
        );
    }
    let mut announced = Vec::new();
    for _ in &batch {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(change)) => announced.push(change),
            other => panic!("a batch of creates: {other:?}"),
        }
    }
    let mut expected: Vec<Change> = batch.iter().map(credential_change).collect();
    let key = |c: &Change| format!("{c:?}");
    announced.sort_by_key(key);
    expected.sort_by_key(key);
    assert_eq!(announced, expected, "a batch of creates");
    // The watching server's own change is not announced back to it (it
    // applied the change when it made it); the other server's next change
    // still is.
    touch(&*a, &acme).await;
    expect_quiet(&mut rx, "a change through the watching server").await;
    touch(writer, &acme).await;
    expect_change(
        &mut rx,
        Change::Access(id),
        "a change through the other server",
    )
    .await;
    expect_quiet(&mut rx, "after the last change").await;

    b.pool().close().await;
    a.pool().close().await;
}

/// A reveal changes no state: neither `append_reveal` (alone or batched,
/// passing or refused) nor an appended reveal or denial event is announced,
/// while the next real change still is, alone.
pub async fn pg_changes_skip_reveals(admin: PgPool) {
    let (a, b) = two_servers(&admin).await;
    let writer: &dyn Store = &*b;
    let acme = create_tenant(writer, "acme").await;
    let scope = acme.scope();
    let admin_principal = acme.admin().clone();
    let c = credential(&scope, "dev", "llm/openai");
    acme.store(writer, &c).await.expect("create");
    let mut rx = subscribed(&a, writer, &acme).await;

    reveal(writer, &acme, &c, 1, &admin_principal, None)
        .await
        .expect("reveal");
    let burst: Vec<Boxed<'_, strongroom_core::Result<AuditEvent>>> = (0..10)
        .map(|i| -> Boxed<'_, _> {
            let version = if i == 9 { 2 } else { 1 };
            let (acme, c, p) = (&acme, &c, &admin_principal);
            Box::pin(async move { reveal(writer, acme, c, version, p, None).await })
        })
        .collect();
    let results = join_all(burst).await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 9);
    assert_eq!(code(results[9].clone()), Code::FailedPrecondition);
    let mut revealed = reveal_draft(&scope, &c, 1, &admin_principal);
    revealed.detail = marked("recorded by append_audit");
    writer
        .append_audit(&scope, revealed)
        .await
        .expect("append a reveal");
    let mut denied = about(&scope, Action::CredentialRevoke, &c);
    denied.outcome = Outcome::Denied;
    denied.reason_code = "DENIED_BY_POLICY".into();
    writer
        .append_audit(&scope, denied)
        .await
        .expect("append a denial");
    expect_quiet(&mut rx, "reveals and denials").await;

    writer
        .revoke_credential(
            &scope,
            c.id,
            "leaked",
            about(&scope, Action::CredentialRevoke, &c),
        )
        .await
        .expect("revoke");
    expect_change(
        &mut rx,
        Change::Credential(acme.id(), c.id),
        "revoke after reveals",
    )
    .await;
    expect_quiet(&mut rx, "after the revoke").await;

    b.pool().close().await;
    a.pool().close().await;
}

/// Subscribing again after every earlier subscriber has gone (and a notice
/// arrived meanwhile) still receives notices.
pub async fn pg_changes_reach_a_later_subscriber(admin: PgPool) {
    let (a, b) = two_servers(&admin).await;
    let writer: &dyn Store = &*b;
    let acme = create_tenant(writer, "acme").await;
    let first = subscribed(&a, writer, &acme).await;
    drop(first);
    // A notice with nobody subscribed.
    touch(writer, &acme).await;
    tokio::time::sleep(QUIET).await;
    let mut rx = subscribed(&a, writer, &acme).await;
    touch(writer, &acme).await;
    expect_change(
        &mut rx,
        Change::Access(acme.id()),
        "a change after subscribing again",
    )
    .await;

    b.pool().close().await;
    a.pool().close().await;
}

/// When the listener's connection is lost, subscribers are told `Everything`
/// (notices may have been missed: drop every cache), and notices flow again
/// once it has reconnected.
pub async fn pg_changes_announce_a_lost_listener(admin: PgPool) {
    let (a, b) = two_servers(&admin).await;
    let writer: &dyn Store = &*b;
    let acme = create_tenant(writer, "acme").await;
    let mut rx = subscribed(&a, writer, &acme).await;

    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND usename = $1 AND query ILIKE 'LISTEN%'",
    )
    .bind(crate::support::APP_LOGIN)
    .fetch_all(&admin)
    .await
    .expect("terminate the listener's connection");
    assert_eq!(killed, vec![true], "exactly one listener connection");
    match tokio::time::timeout(PATIENCE, rx.recv()).await {
        Ok(Ok(Change::Everything)) => {}
        other => panic!("a lost listener must announce Everything, got {other:?}"),
    }
    // Notices flow again after the reconnect.
    drop(rx);
    let mut rx = subscribed(&a, writer, &acme).await;
    touch(writer, &acme).await;
    expect_change(
        &mut rx,
        Change::Access(acme.id()),
        "a change after the reconnect",
    )
    .await;

    b.pool().close().await;
    a.pool().close().await;
}

/// Two servers' committers writing to one tenant at once, each rotating the
/// same credentials in the opposite order and appending, do not deadlock:
/// every rotation either wins or is refused as stale, exactly one wins per
/// credential, and every append commits.
pub async fn pg_two_committers_do_not_deadlock(admin: PgPool) {
    const CREDENTIALS: usize = 16;
    let (a, b) = two_servers(&admin).await;
    let acme = create_tenant(&*a, "acme").await;
    let scope = acme.scope();
    let mut cs = Vec::new();
    for i in 0..CREDENTIALS {
        let c = credential(&scope, "dev", &format!("llm/{i}"));
        acme.store(&*a, &c).await.expect("create");
        cs.push(c);
    }
    let setup = audit_log(&*a, &scope).await.len();

    let mut futures: Vec<Boxed<'_, (bool, strongroom_core::Result<()>)>> = Vec::new();
    for (server, order) in [
        (&*a as &dyn Store, cs.iter().collect::<Vec<_>>()),
        (&*b as &dyn Store, cs.iter().rev().collect::<Vec<_>>()),
    ] {
        for c in order {
            let acme = &acme;
            futures.push(Box::pin(async move {
                (true, acme.rotate(server, c, 1).await.map(drop))
            }));
        }
        for i in 0..8 {
            let scope = &scope;
            futures.push(Box::pin(async move {
                let mut d = draft(scope, Action::Other);
                d.detail = marked(format!("beside rotations {i}"));
                (false, server.append_audit(scope, d).await.map(drop))
            }));
        }
    }
    let results = join_all(futures).await;
    let mut wins = 0;
    for (rotation, r) in &results {
        match (rotation, r) {
            (_, Ok(())) => wins += usize::from(*rotation),
            (true, Err(Error::FailedPrecondition(_))) => {}
            (_, Err(e)) => panic!("a concurrent committer failed: {e}"),
        }
    }
    assert_eq!(wins, CREDENTIALS);
    for c in &cs {
        let now = a.get_credential(&scope, c.id).await.expect("get");
        assert_eq!(now.latest_version, 2);
    }
    let log = verified_log(&*a, &scope).await;
    assert_eq!(log.len(), setup + CREDENTIALS + 16);

    b.pool().close().await;
    a.pool().close().await;
}

/// Open connections of the app login role to this test database.
async fn app_connections(admin: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND usename = $1",
    )
    .bind(crate::support::APP_LOGIN)
    .fetch_one(admin)
    .await
    .expect("count connections")
}

/// A store that has written through its committers is freed when dropped:
/// no committer keeps it (and its pool's connections) alive.
pub async fn pg_dropped_store_releases_its_connections(admin: PgPool) {
    let store = pg_store(admin.clone()).await;
    let acme = create_tenant(&*store, "acme").await;
    let scope = acme.scope();
    let c = credential(&scope, "dev", "llm/openai");
    acme.store(&*store, &c).await.expect("create");
    acme.rotate(&*store, &c, 1).await.expect("rotate");
    reveal(&*store, &acme, &c, 2, acme.admin(), None)
        .await
        .expect("reveal");
    store
        .append_audit(&scope, draft(&scope, Action::Other))
        .await
        .expect("append");
    assert!(app_connections(&admin).await > 0);
    drop(store);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let open = app_connections(&admin).await;
        if open == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{open} connections of a dropped store are still open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---- 6. change notices (SQLite) ----

/// SQLite: `changes()` hands out a receiver, and nothing arrives on it (one
/// database has one server, whose own writes refresh its caches).
pub async fn sqlite_changes_stay_silent(store: Arc<SqliteStore>) {
    let mut rx = store.changes();
    let mut other = store.changes();
    let s: &dyn Store = &*store;
    let acme = create_tenant(s, "acme").await;
    let scope = acme.scope();
    let c = credential(&scope, "dev", "llm/openai");
    acme.store(s, &c).await.expect("create");
    acme.rotate(s, &c, 1).await.expect("rotate");
    touch(s, &acme).await;
    s.revoke_credential(
        &scope,
        c.id,
        "leaked",
        about(&scope, Action::CredentialRevoke, &c),
    )
    .await
    .expect("revoke");
    expect_quiet(&mut rx, "SQLite").await;
    assert_eq!(other.try_recv(), Err(TryRecvError::Empty));
    assert_eq!(store.changes().try_recv(), Err(TryRecvError::Empty));
}

/// Many credentials rotated at once (one batch on Postgres takes them in
/// bulk): each gets exactly its new version, keeps the last `retention`
/// versions, and a second rotation of one credential racing in the same
/// rounds loses with FAILED_PRECONDITION, changing nothing.
pub async fn concurrent_rotations_keep_retention(store: Arc<dyn Store>) {
    const CREDENTIALS: usize = 12;
    const ROUNDS: u32 = 4;
    let store = &*store;
    let acme = crate::support::create_tenant_with(
        store,
        "acme",
        TenantSettings {
            version_retention: 2,
            ..TenantSettings::default()
        },
    )
    .await;
    let scope = acme.scope();
    let mut creds = Vec::new();
    for i in 0..CREDENTIALS {
        let c = credential(&scope, "dev", &format!("bulk/{i}"));
        acme.store(store, &c).await.expect("create");
        creds.push(c);
    }
    let trail = AuditTrail::start(store, scope).await;
    let mut successes = 0u64;
    for round in 1..=ROUNDS {
        // Every credential once, plus a second, racing rotation of the
        // first one from the same expected version.
        let mut futures: Vec<Boxed<'_, strongroom_core::Result<Credential>>> = creds
            .iter()
            .map(|c| {
                Box::pin(acme.rotate(store, c, round))
                    as Boxed<'_, strongroom_core::Result<Credential>>
            })
            .collect();
        futures.push(Box::pin(acme.rotate(store, &creds[0], round)));
        let results = join_all(futures).await;
        let (first, rest) = results.split_at(1);
        let racing = &rest[rest.len() - 1];
        // Exactly one of the two rotations of the first credential wins.
        match (&first[0], racing) {
            (Ok(_), Err(e)) | (Err(e), Ok(_)) => {
                assert_eq!(Code::of(e), Code::FailedPrecondition, "round {round}: {e}");
            }
            other => panic!("round {round}: both or neither rotation won: {other:?}"),
        }
        for (i, r) in rest[..rest.len() - 1].iter().enumerate() {
            let c = r
                .as_ref()
                .unwrap_or_else(|e| panic!("round {round}, credential {}: {e}", i + 1));
            assert_eq!(
                (c.current_version, c.latest_version),
                (round + 1, round + 1)
            );
        }
        successes += CREDENTIALS as u64;
    }
    for c in &creds {
        let now = store.get_credential(&scope, c.id).await.expect("get");
        assert_eq!(
            (now.current_version, now.latest_version),
            (ROUNDS + 1, ROUNDS + 1),
            "{}",
            c.name
        );
        let kept: Vec<u32> = store
            .list_versions(&scope, c.id)
            .await
            .expect("versions")
            .iter()
            .map(|s| s.version)
            .collect();
        assert_eq!(kept, vec![ROUNDS + 1, ROUNDS], "{}", c.name);
        let latest = store
            .get_version(&scope, c.id, ROUNDS + 1)
            .await
            .expect("latest version");
        assert_eq!(latest.version, ROUNDS + 1);
    }
    let log = verified_log(store, &scope).await;
    assert_eq!(log.len() as u64, trail.len() + successes);
    let new = &log[trail.len() as usize..];
    assert!(
        new.iter()
            .all(|e| e.draft.action == Action::CredentialRotate)
    );
}

/// A batch whose wait for the chain-head lock fails (here `lock_timeout`,
/// in production also a cancelled query) fails its jobs, and only those: the
/// connection it ran on must not go back to the pool inside the aborted
/// transaction, or every later batch on it would fail. Appends run without
/// pause from several tasks through a window in which another session holds
/// the head lock, on a store with a single connection. The calls are
/// denials, which take the committer's fast path, so both its statement
/// (which waits for the head lock) and the full path's head read fail in the
/// window; a connection handed back inside its aborted transaction would fail
/// every later call with "current transaction is aborted".
pub async fn pg_failed_head_lock_spoils_no_connection(admin: PgPool) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;
    let tenants_store = pg_store(admin.clone()).await;
    let acme = Arc::new(create_tenant(&*tenants_store, "acme").await);
    let options = crate::support::app_options(&admin)
        .await
        .options([("lock_timeout", "150")]);
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .expect("connect as the app login role");
    let store = Arc::new(PgStore::new(pool));

    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut pumps = Vec::new();
    for task in 0..16 {
        let (store, stop, scope_tenant) =
            (Arc::clone(&store), Arc::clone(&stop), Arc::clone(&acme));
        pumps.push(tokio::spawn(async move {
            let scope = scope_tenant.scope();
            let mut results = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                // Denials: events that change nothing, which the
                // committer's short path takes.
                let mut d = draft(&scope, Action::Other);
                d.outcome = Outcome::Denied;
                d.detail = marked(format!("pump {task} call {i}"));
                let r = store.append_audit(&scope, d).await;
                results.push((started.elapsed(), r.map(drop).map_err(|e| e.to_string())));
                i += 1;
            }
            results
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Another session holds the head lock for a while.
    let mut holder = admin.begin().await.expect("begin");
    sqlx::query("SELECT 1 FROM audit_heads WHERE tenant_id = $1 FOR UPDATE")
        .bind(acme.id().as_uuid())
        .execute(&mut *holder)
        .await
        .expect("lock the head");
    tokio::time::sleep(Duration::from_millis(600)).await;
    holder.rollback().await.expect("release the head");
    let released = started.elapsed();
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, Ordering::SeqCst);
    let mut results = Vec::new();
    for p in pumps {
        results.extend(p.await.expect("pump"));
    }

    let failed = results.iter().filter(|(_, r)| r.is_err()).count();
    assert!(
        failed > 0,
        "the held lock made no batch fail: the case tests nothing"
    );
    // Once a batch that started after the release has had time to finish,
    // everything succeeds.
    let settled = released + Duration::from_millis(300);
    let late: Vec<_> = results.iter().filter(|(at, _)| *at > settled).collect();
    assert!(
        late.len() >= 10,
        "too few calls after the release: {}",
        late.len()
    );
    for (at, r) in &late {
        assert!(
            r.is_ok(),
            "a call {at:?} in failed after the lock was released: {r:?}"
        );
    }
    let ok = results.iter().filter(|(_, r)| r.is_ok()).count();
    let scope = acme.scope();
    let log = verified_log(&*store, &scope).await;
    let pumped = log
        .iter()
        .filter(|e| mark(&e.draft).is_some_and(|d| d.starts_with("pump ")))
        .count();
    assert_eq!(pumped, ok, "exactly the successful calls are in the chain");
}

/// Committers keep their fast path's connection from one batch to the next
/// only while the pool has others idle. Two tenants append without pause on
/// a store with two connections, so both committers always have work: if
/// each kept its connection for as long, nothing else would get one. Reads
/// (and a third tenant's appends) made meanwhile must still complete. The
/// five-second limit only turns a starved call into a failure instead of a
/// hang; it measures nothing.
pub async fn pg_busy_committers_leave_connections_to_others(admin: PgPool) {
    let tenants_store = pg_store(admin.clone()).await;
    let acme = Arc::new(create_tenant(&*tenants_store, "acme").await);
    let beta = Arc::new(create_tenant(&*tenants_store, "beta").await);
    let gamma = create_tenant(&*tenants_store, "gamma").await;
    let options = crate::support::app_options(&admin).await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await
        .expect("connect as the app login role");
    let store = Arc::new(PgStore::new(pool));
    busy_committers_leave_connections(store, acme, beta, gamma).await;
}

/// The same on SQLite, whose short path keeps its connection too.
pub async fn sqlite_busy_committers_leave_connections_to_others(pool: sqlx::SqlitePool) {
    let tenants_store = SqliteStore::new(pool.clone());
    let acme = Arc::new(create_tenant(&tenants_store, "acme").await);
    let beta = Arc::new(create_tenant(&tenants_store, "beta").await);
    let gamma = create_tenant(&tenants_store, "gamma").await;
    let two = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(2)
        .connect_with((*pool.connect_options()).clone())
        .await
        .expect("a second pool on the same database");
    let store = Arc::new(SqliteStore::new(two));
    busy_committers_leave_connections(store, acme, beta, gamma).await;
}

/// Two tenants (`acme`, `beta`) append without pause on `store` (two
/// connections) while `gamma` reads and appends (see
/// [`pg_busy_committers_leave_connections_to_others`]).
async fn busy_committers_leave_connections(
    store: Arc<dyn Store>,
    acme: Arc<TestTenant>,
    beta: Arc<TestTenant>,
    gamma: TestTenant,
) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = Arc::new(AtomicBool::new(false));
    let mut pumps = Vec::new();
    for tenant in [&acme, &beta] {
        for _ in 0..8 {
            let (store, stop, tenant) = (Arc::clone(&store), Arc::clone(&stop), Arc::clone(tenant));
            pumps.push(tokio::spawn(async move {
                let scope = tenant.scope();
                let mut calls = 0u32;
                while !stop.load(Ordering::SeqCst) {
                    let mut d = draft(&scope, Action::Other);
                    d.outcome = Outcome::Denied;
                    store.append_audit(&scope, d).await.expect("append");
                    calls += 1;
                }
                calls
            }));
        }
    }
    // Both committers busy.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let limit = Duration::from_secs(5);
    let scope = gamma.scope();
    for i in 0..5 {
        let read = tokio::time::timeout(limit, store.list_environments(&scope)).await;
        assert!(
            read.is_ok(),
            "read {i} starved while two committers were busy"
        );
        read.expect("in time").expect("list environments");
        let append = tokio::time::timeout(
            limit,
            store.append_audit(&scope, draft(&scope, Action::Other)),
        )
        .await;
        assert!(append.is_ok(), "another tenant's append {i} starved");
        append.expect("in time").expect("append");
    }
    stop.store(true, Ordering::SeqCst);
    for p in pumps {
        assert!(p.await.expect("pump") > 0, "a pump made no call");
    }
    for tenant in [&*acme, &*beta, &gamma] {
        verified_log(&*store, &tenant.scope()).await;
    }
}

/// A committer's connection that the database closed meanwhile (a restart,
/// an administrator's `pg_terminate_backend`) costs no call: the fast path
/// sends the batch once more on a fresh connection. Denials on a
/// one-connection store put the committer on its fast path; then every
/// connection of the store's database is terminated, and the next calls must
/// still succeed and be chained once each.
pub async fn pg_closed_connection_is_retried(admin: PgPool) {
    let tenants_store = pg_store(admin.clone()).await;
    let acme = create_tenant(&*tenants_store, "acme").await;
    let options = crate::support::app_options(&admin).await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .test_before_acquire(false)
        .connect_with(options)
        .await
        .expect("connect as the app login role");
    let store = PgStore::new(pool);
    let scope = acme.scope();
    let denial = |n: &str| {
        let mut d = draft(&scope, Action::Other);
        d.outcome = Outcome::Denied;
        d.detail = marked(n);
        d
    };
    // The first batch reads the head on the full path; the next ones take
    // the fast path on the connection the committer then keeps.
    for i in 0..3 {
        store
            .append_audit(&scope, denial(&format!("before {i}")))
            .await
            .expect("append");
    }
    let killed: Vec<bool> = sqlx::query_scalar(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE usename = '{}' AND datname = current_database()",
        crate::support::APP_LOGIN
    ))
    .fetch_all(&admin)
    .await
    .expect("terminate the store's connections");
    assert!(
        !killed.is_empty(),
        "no connection to terminate: the case tests nothing"
    );
    // Give the server a moment to close them.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 0..3 {
        store
            .append_audit(&scope, denial(&format!("after {i}")))
            .await
            .expect("append after the connection was closed");
    }
    let log = verified_log(&store, &scope).await;
    let details: Vec<&str> = log.iter().filter_map(|e| mark(&e.draft)).collect();
    for n in [
        "before 0", "before 1", "before 2", "after 0", "after 1", "after 2",
    ] {
        assert_eq!(
            details.iter().filter(|d| **d == n).count(),
            1,
            "{n} chained once"
        );
    }
}

// ---- a job the database refuses costs only itself ----

/// Queues one job the database refuses (a trigger raises on its event) in a
/// batch with good ones, while a lock held by `holder` (released when
/// `release` fires) keeps the committer waiting so that they do share a
/// batch: the refused job fails alone, the others commit, and a draft with
/// NUL in its text (which PostgreSQL's `text` refuses) is still recorded,
/// NUL replaced.
async fn refused_job_fails_alone(
    store: Arc<dyn Store>,
    acme: &TestTenant,
    release: tokio::sync::oneshot::Sender<()>,
    holder: tokio::task::JoinHandle<()>,
) {
    let scope = acme.scope();
    // The committer takes this job alone and waits on the held lock; the
    // jobs queued meanwhile form the next batch together.
    let first = {
        let (store, auth) = (Arc::clone(&store), acme.auth.clone());
        tokio::spawn(async move {
            let scope = auth.tenant_scope().expect("scope");
            let mut d = draft(&scope, Action::Other);
            d.detail = marked("first");
            store.append_audit(&scope, d).await.map(drop)
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut calls = Vec::new();
    for i in 0..24 {
        let mut d = draft(&scope, Action::Other);
        d.outcome = Outcome::Denied;
        d.detail = marked(format!("job {i}"));
        match i {
            7 => d.purpose = Some("poison".into()),
            11 => d.purpose = Some("has\0nul".into()),
            _ => {}
        }
        let store = &*store;
        calls.push(async move { (i, store.append_audit(&scope, d).await) });
    }
    let all = futures_join_all(calls);
    let released = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        release.send(()).expect("the holder waits");
        holder.await.expect("holder");
    };
    let (results, ()) = tokio::join!(all, released);
    first.await.expect("first").expect("the first job commits");
    for (i, r) in &results {
        if *i == 7 {
            assert!(r.is_err(), "the refused job must fail");
        } else {
            assert!(r.is_ok(), "job {i} failed with the refused one: {r:?}");
        }
    }
    let log = verified_log(&*store, &scope).await;
    let jobs: Vec<&AuditEvent> = log
        .iter()
        .filter(|e| mark(&e.draft).is_some_and(|d| d.starts_with("job ")))
        .collect();
    assert_eq!(
        jobs.len(),
        23,
        "every job but the refused one is chained once"
    );
    assert!(
        jobs.iter()
            .all(|e| e.draft.purpose.as_deref() != Some("poison"))
    );
    let nul = jobs
        .iter()
        .find(|e| mark(&e.draft) == Some("job 11"))
        .expect("the job with NUL is recorded");
    assert_eq!(nul.draft.purpose.as_deref(), Some("has\u{FFFD}nul"));
}

/// Runs futures at once and collects their outputs in order.
async fn futures_join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut pinned: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, out) in pinned.iter_mut().zip(outputs.iter_mut()) {
            if out.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *out = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs
        .into_iter()
        .map(|o| o.expect("polled to completion"))
        .collect()
}

/// Postgres: the trigger raises on the refused job's event; another session
/// holds the chain-head lock while the batch queues.
pub async fn pg_refused_job_fails_alone(admin: PgPool) {
    let store = pg_store(admin.clone()).await;
    let acme = create_tenant(&*store, "acme").await;
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN IF NEW.purpose = 'poison' THEN RAISE EXCEPTION 'refused by the test'; END IF; \
         RETURN NEW; END $$; \
         CREATE TRIGGER refuse_poison BEFORE INSERT ON audit_events \
         FOR EACH ROW EXECUTE FUNCTION refuse_poison();",
    )
    .execute(&admin)
    .await
    .expect("install the trigger");
    let tenant = acme.id();
    let (locked, is_locked) = tokio::sync::oneshot::channel();
    let (release, on_release) = tokio::sync::oneshot::channel::<()>();
    let holder = tokio::spawn(async move {
        let mut tx = admin.begin().await.expect("begin");
        sqlx::query("SELECT 1 FROM audit_heads WHERE tenant_id = $1 FOR UPDATE")
            .bind(tenant.as_uuid())
            .execute(&mut *tx)
            .await
            .expect("lock the head");
        locked.send(()).expect("signal");
        on_release.await.expect("release");
        tx.rollback().await.expect("rollback");
    });
    is_locked.await.expect("locked");
    refused_job_fails_alone(store, &acme, release, holder).await;
}

/// SQLite: the trigger aborts the refused job's insert; another connection
/// holds the write lock while the batch queues.
pub async fn sqlite_refused_job_fails_alone(pool: sqlx::SqlitePool) {
    sqlx::raw_sql(
        "CREATE TRIGGER refuse_poison BEFORE INSERT ON audit_events \
         WHEN NEW.purpose = 'poison' BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;",
    )
    .execute(&pool)
    .await
    .expect("install the trigger");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::new(pool.clone()));
    let acme = create_tenant(&*store, "acme").await;
    let (locked, is_locked) = tokio::sync::oneshot::channel();
    let (release, on_release) = tokio::sync::oneshot::channel::<()>();
    let holder = tokio::spawn(async move {
        let mut conn = pool.acquire().await.expect("a connection");
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *conn)
            .await
            .expect("take the write lock");
        locked.send(()).expect("signal");
        on_release.await.expect("release");
        sqlx::query("ROLLBACK")
            .execute(&mut *conn)
            .await
            .expect("rollback");
    });
    is_locked.await.expect("locked");
    refused_job_fails_alone(store, &acme, release, holder).await;
}

/// A batch of events that committed on the short path but whose reply was
/// lost is sent once more, and is chained exactly once: whether nothing was
/// written meanwhile (the head is still the batch's last event), or another
/// server appended to the chain before the resend (the batch's last event
/// is found in the chain, not taken for a moved head and written again).
pub async fn pg_batch_resent_after_a_lost_reply_is_chained_once(admin: PgPool) {
    let store = pg_store(admin.clone()).await;
    let other = pg_store(admin.clone()).await;
    let acme = create_tenant(&*store, "acme").await;
    let scope = acme.scope();
    let denial = |n: &str| {
        let mut d = draft(&scope, Action::Other);
        d.outcome = Outcome::Denied;
        d.detail = marked(n);
        d
    };
    // The first batch reads the head on the full path; the next ones take
    // the short path, where the lost reply is injected.
    for i in 0..2 {
        store
            .append_audit(&scope, denial(&format!("warm {i}")))
            .await
            .expect("append");
    }
    for (n, meanwhile) in [("lost alone", false), ("lost then overtaken", true)] {
        let (committed_tx, committed) = tokio::sync::oneshot::channel();
        let (resend_tx, resend) = tokio::sync::oneshot::channel();
        store.lose_next_commit_reply(strongroom_store::LostReply {
            committed: committed_tx,
            resend,
        });
        let (appended, ()) = tokio::join!(store.append_audit(&scope, denial(n)), async {
            committed.await.expect("the batch committed");
            if meanwhile {
                other
                    .append_audit(&scope, denial(&format!("{n}: other server")))
                    .await
                    .expect("another server appends");
            }
            resend_tx.send(()).expect("resend");
        });
        let event = appended.expect("the resent batch is answered");
        assert_eq!(mark(&event.draft), Some(n));
    }
    store
        .append_audit(&scope, denial("after"))
        .await
        .expect("append after");
    let log = verified_log(&*store, &scope).await;
    for n in [
        "warm 0",
        "warm 1",
        "lost alone",
        "lost then overtaken",
        "lost then overtaken: other server",
        "after",
    ] {
        assert_eq!(
            log.iter().filter(|e| mark(&e.draft) == Some(n)).count(),
            1,
            "{n} chained exactly once: {:?}",
            log.iter().map(|e| &e.draft.detail).collect::<Vec<_>>()
        );
    }
}

/// What each case of [`pg_short_path_refuses_what_the_rule_refuses`]
/// changes behind the store's back, and how (SQL run as the superuser,
/// with `{c}`, `{p}`, `{g}`, `{b}`, `{t}` and `{a}` standing for the
/// credential, the revealing principal, its grant, its identity binding,
/// the tenant and the tenant's admin).
const BEHIND_THE_STORE: [(&str, &str); 12] = [
    (
        "rotated",
        "UPDATE credentials SET current_version = 2, latest_version = 2 WHERE id = '{c}'",
    ),
    (
        "revoked",
        "UPDATE credentials SET status = 'revoked' WHERE id = '{c}'",
    ),
    (
        "destroyed",
        "UPDATE credentials SET destroyed_at = 1 WHERE id = '{c}'",
    ),
    (
        "expired",
        "UPDATE credentials SET expires_at = 1 WHERE id = '{c}'",
    ),
    (
        "disabled",
        "UPDATE principals SET status = 'disabled' WHERE id = '{p}'",
    ),
    (
        "role-changed",
        "UPDATE principals SET role = 'viewer' WHERE id = '{p}'",
    ),
    (
        "suspended",
        "UPDATE tenants SET status = 'suspended' WHERE id = '{t}'",
    ),
    ("grant-deleted", "DELETE FROM grants WHERE id = '{g}'"),
    (
        "grant-expired",
        "UPDATE grants SET expires_at = 1 WHERE id = '{g}'",
    ),
    (
        "binding-deleted",
        "DELETE FROM identity_bindings WHERE id = '{b}'",
    ),
    (
        "binding-disabled",
        "UPDATE identity_bindings SET disabled_reason = 'by the test' WHERE id = '{b}'",
    ),
    (
        "binding-moved",
        "UPDATE identity_bindings SET principal_id = '{a}' WHERE id = '{b}'",
    ),
];

/// The reveal-check rule holds on Postgres' one-round-trip path as on the
/// full path. The rule is stated once in Rust (the store's
/// `group_commit::checks`, which the full path applies on both backends)
/// and once in SQL, in the `append_checked_events` function the short path
/// calls; this case keeps the two in step. For each condition of the rule,
/// a fresh tenant's committer reveals until it takes the short path again
/// (the audited writes that set the tenant up moved the chain head, which
/// sends the next batches down the full path), then the state the reveal
/// depends on is changed behind the store's back (no audit event, so the
/// chain head stays where the committer left it and the next batch takes
/// the short path, whose own check must refuse it); that reveal is refused
/// and appends nothing, and so is the next, which the full path checks (a
/// refusal pauses the short path).
pub async fn pg_short_path_refuses_what_the_rule_refuses(admin: PgPool) {
    let store = pg_store(admin.clone()).await;
    short_path_refuses(
        store.clone(),
        |id| format!("'{id}'"),
        |sql| {
            let admin = admin.clone();
            Box::pin(async move { sqlx::raw_sql(&sql).execute(&admin).await.map(drop) })
        },
    )
    .await;
    store.pool().close().await;
}

/// The same on SQLite's short path (the store's `sqlite/events.rs`), which
/// reads the states with the chain head and applies the rule in Rust: a
/// change made behind the store's back is seen by the batch after it.
pub async fn sqlite_short_path_refuses_what_the_rule_refuses(pool: sqlx::SqlitePool) {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::new(pool.clone()));
    short_path_refuses(
        store,
        |id| format!("X'{}'", id.simple()),
        |sql| {
            let pool = pool.clone();
            Box::pin(async move { sqlx::raw_sql(&sql).execute(&pool).await.map(drop) })
        },
    )
    .await;
}

/// Runs each change of [`BEHIND_THE_STORE`] (ids written as `literal`
/// gives them) with `run` between reveals (see
/// [`pg_short_path_refuses_what_the_rule_refuses`]).
async fn short_path_refuses(
    store: Arc<dyn Store>,
    literal: fn(uuid::Uuid) -> String,
    run: impl Fn(String) -> Boxed<'static, Result<(), sqlx::Error>>,
) {
    for (case, change) in BEHIND_THE_STORE {
        let s: &dyn Store = &*store;
        let t = create_tenant(s, &format!("short-{case}")).await;
        let scope = t.scope();
        let agent = t.add_principal(s, "agent", Role::Agent).await;
        let c = credential(&scope, "dev", "llm/openai");
        t.store(s, &c).await.expect("create");
        let g = reveal_grant(&t, &agent, None);
        t.add_grant(s, &g).await;
        let identity = format!("spiffe://test/short-{case}/agent");
        let b = t.bind(s, agent.id, &identity).await.expect("bind");
        let reveal = || {
            let mut k = check(c.id, 1, &agent, Some(g.id));
            k.binding = Some(b.id);
            s.append_reveal(&scope, reveal_draft(&scope, &c, 1, &agent), k, None)
        };
        for _ in 0..24 {
            reveal()
                .await
                .unwrap_or_else(|e| panic!("{case}: a reveal before the change: {e}"));
        }
        let sql = change
            .replace("'{c}'", &literal(c.id.as_uuid()))
            .replace("'{p}'", &literal(agent.id.as_uuid()))
            .replace("'{g}'", &literal(g.id.as_uuid()))
            .replace("'{b}'", &literal(b.id.as_uuid()))
            .replace("'{t}'", &literal(t.id().as_uuid()))
            .replace("'{a}'", &literal(t.admin().id.as_uuid()));
        run(sql).await.unwrap_or_else(|e| panic!("{case}: {e}"));
        let trail = AuditTrail::start(s, scope).await;
        for path in ["short path", "full path"] {
            refused(&trail, reveal().await, &format!("{case} ({path})")).await;
        }
    }
}

/// Text with the characters JSON and SQL treat specially (quotes,
/// backslashes, control characters, non-ASCII, U+2028) is stored exactly
/// as sealed on every path a batch takes (SQLite's short path carries its
/// rows as JSON): the events as returned, in a chain that verifies, and the
/// leases as opened.
pub async fn text_is_stored_as_sealed(store: Arc<dyn Store>) {
    use strongroom_core::lease::LeaseFilter;
    const TEXT: &str = "q\"uote \\back\\\\slash \u{1}\u{1f}\u{7f}\n\r\t \u{fc} \u{1f5dd} \u{2028} ' ; -- %s {}[] null";
    let store = &*store;
    let acme = create_tenant(store, "acme").await;
    let scope = acme.scope();
    let agent = acme.add_principal(store, "agent", Role::Agent).await;
    let g = reveal_grant(&acme, &agent, None);
    acme.add_grant(store, &g).await;
    let c = credential(&scope, "dev", "llm/openai");
    acme.store(store, &c).await.expect("create");
    let mut opened = Vec::new();
    let mut returned = Vec::new();
    // Several bursts: the first after set-up may take the full path, the
    // later ones the backend's short path where it has one.
    for round in 0..4 {
        let mut jobs: Vec<Boxed<'_, strongroom_core::Result<AuditEvent>>> = Vec::new();
        for i in 0..12 {
            if i % 2 == 0 {
                let mut d = reveal_draft(&scope, &c, 1, &agent);
                d.purpose = Some(format!("{TEXT} {round} {i}"));
                d.on_behalf_of = Some(TEXT.into());
                d.detail = marked(TEXT);
                let mut l = lease(&acme, &c, 1, &agent, Some(g.id));
                l.purpose = Some(TEXT.into());
                l.on_behalf_of = Some(format!("{TEXT} {i}"));
                opened.push(l.clone());
                let k = check(c.id, 1, &agent, Some(g.id));
                jobs.push(Box::pin(store.append_reveal(
                    &scope,
                    d,
                    k,
                    Some(Arc::new(l)),
                )));
            } else {
                let mut d = draft(&scope, Action::Other);
                d.outcome = Outcome::Denied;
                d.purpose = Some(TEXT.into());
                d.peer = Some(TEXT.into());
                d.request_id = Some(format!("{TEXT} {round} {i}"));
                d.trace_id = Some(TEXT.into());
                d.detail = marked(TEXT);
                jobs.push(Box::pin(store.append_audit(&scope, d)));
            }
        }
        for r in join_all(jobs).await {
            returned.push(r.expect("append"));
        }
    }
    let log = verified_log(store, &scope).await;
    for e in &returned {
        assert_stored(&log, e);
    }
    let stored = leases_of(store, &acme, LeaseFilter::default()).await;
    assert_eq!(stored.len(), opened.len());
    for l in &opened {
        assert!(stored.contains(l), "lease {} is not stored as opened", l.id);
    }
}

/// `append_checked_events` refuses check arrays the server never sends:
/// a NULL part, a part whose columns differ in length, one part empty and
/// the other not. Each is called directly on the tenant's real chain head,
/// so the call reaches the check; each malformed call would pass, or skip
/// a check it should fail, if the arrays were taken as they are (an active
/// agent's valid reveal with a column too long or too short, a disabled
/// agent behind an empty or NULL credential part). A refused call leaves
/// the head where it was; the well-formed controls commit.
pub async fn pg_malformed_reveal_checks_are_refused(admin: PgPool) {
    let store = pg_store(admin.clone()).await;
    let s: &dyn Store = &*store;
    let t = create_tenant(s, "malformed-checks").await;
    let agent = t.add_principal(s, "agent", Role::Agent).await;
    let gone = t.add_principal(s, "gone", Role::Agent).await;
    let c = credential(&t.scope(), "dev", "llm/openai");
    t.store(s, &c).await.expect("create");
    sqlx::query("UPDATE principals SET status = 'disabled' WHERE id = $1")
        .bind(gone.id.as_uuid())
        .execute(&admin)
        .await
        .expect("disable a principal behind the store's back");
    let (p, q, c, role) = (
        agent.id.as_uuid(),
        gone.id.as_uuid(),
        c.id.as_uuid(),
        "agent",
    );
    let none: Option<uuid::Uuid> = None;
    // k_credential, k_version, k_principal, k_role, k_grant, k_binding
    type Arrays = (
        Option<Vec<uuid::Uuid>>,
        Vec<i64>,
        Option<Vec<uuid::Uuid>>,
        Vec<&'static str>,
        Vec<Option<uuid::Uuid>>,
        Vec<Option<uuid::Uuid>>,
    );
    let cases: Vec<(&str, Arrays, &str)> = vec![
        (
            "a valid reveal",
            (
                Some(vec![c]),
                vec![1],
                Some(vec![p]),
                vec![role],
                vec![none],
                vec![none],
            ),
            "ok",
        ),
        (
            "credential part empty, holder part a disabled principal",
            (
                Some(vec![]),
                vec![],
                Some(vec![q]),
                vec![role],
                vec![none],
                vec![none],
            ),
            "stale",
        ),
        (
            "credential part NULL, holder part a disabled principal",
            (
                None,
                vec![],
                Some(vec![q]),
                vec![role],
                vec![none],
                vec![none],
            ),
            "stale",
        ),
        (
            "holder part NULL",
            (Some(vec![c]), vec![1], None, vec![], vec![], vec![]),
            "stale",
        ),
        (
            "the version column longer than the credential column",
            (
                Some(vec![c]),
                vec![1, 1],
                Some(vec![p]),
                vec![role],
                vec![none],
                vec![none],
            ),
            "stale",
        ),
        (
            "the grant column shorter than the principal column",
            (
                Some(vec![c]),
                vec![1],
                Some(vec![p]),
                vec![role],
                vec![],
                vec![none],
            ),
            "stale",
        ),
        (
            "both parts empty",
            (Some(vec![]), vec![], Some(vec![]), vec![], vec![], vec![]),
            "ok",
        ),
    ];
    for (case, (kc, kv, kp, kr, kg, kb), want) in cases {
        let (sequence, hash): (i64, Vec<u8>) =
            sqlx::query_as("SELECT sequence, hash FROM audit_heads WHERE tenant_id = $1")
                .bind(t.id().as_uuid())
                .fetch_one(&admin)
                .await
                .expect("head");
        // No events and no leases: only the checks and the chain head
        // are bound.
        let got: String = sqlx::query_scalar(
            "SELECT append_checked_events($1, \
               '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', \
               '{}', '{}', '{}', '{}', '{}', '{}', '{}', \
               $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, '{}', \
               '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', \
               '{}', '{}', '{}', '{}', '{}', '{}')",
        )
        .bind(t.id().as_uuid())
        .bind(sequence + 1)
        .bind(vec![7u8; 32])
        .bind(sequence)
        .bind(&hash)
        .bind(Timestamp::now().as_micros())
        .bind(kc)
        .bind(kv)
        .bind(kp)
        .bind(kr)
        .bind(kg)
        .bind(kb)
        .fetch_one(&admin)
        .await
        .unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(got, want, "{case}");
        let (after,): (i64,) =
            sqlx::query_as("SELECT sequence FROM audit_heads WHERE tenant_id = $1")
                .bind(t.id().as_uuid())
                .fetch_one(&admin)
                .await
                .expect("head after");
        let moved = if want == "ok" { sequence + 1 } else { sequence };
        assert_eq!(after, moved, "{case}: the chain head");
    }
    store.pool().close().await;
}

/// The leases of `t` matching `filter`.
pub(crate) async fn leases_of(
    store: &dyn Store,
    t: &TestTenant,
    filter: strongroom_core::lease::LeaseFilter,
) -> Vec<strongroom_core::lease::Lease> {
    store
        .list_leases(&t.scope(), &filter, &PageRequest::first(500))
        .await
        .expect("list leases")
        .items
}

/// A reveal's lease is stored in the commit of its event (many reveals at
/// once, on whichever path the backend takes), and never when its check
/// fails; revoking a credential or a grant ends its leases in the same
/// transaction with a `lease.revoke` event each; renewals and releases act
/// only on their holder's active leases; the sweeper expires the leases
/// that ran out, each with a `lease.expire` event. The chain verifies.
pub async fn leases_commit_with_their_reveals(store: Arc<dyn Store>) {
    use strongroom_core::lease::{LeaseEnd, LeaseFilter, LeaseState};
    let store = &*store;
    let acme = create_tenant(store, "acme").await;
    let scope = acme.scope();
    let agent = acme.add_principal(store, "agent", Role::Agent).await;
    let g = reveal_grant(&acme, &agent, None);
    acme.add_grant(store, &g).await;
    let c = credential(&scope, "dev", "llm/openai");
    acme.store(store, &c).await.expect("create");
    let d = credential(&scope, "dev", "llm/other");
    acme.store(store, &d).await.expect("create");

    let reveals = (0..40)
        .map(|i| {
            let which = if i % 2 == 0 { &c } else { &d };
            Box::pin(reveal(store, &acme, which, 1, &agent, Some(g.id)))
                as Pin<Box<dyn Future<Output = _> + Send + '_>>
        })
        .collect();
    let results: Vec<strongroom_core::Result<AuditEvent>> = join_all(reveals).await;
    for r in results {
        r.expect("reveal");
    }
    let active = LeaseFilter {
        state: Some(LeaseState::Active),
        ..LeaseFilter::default()
    };
    assert_eq!(leases_of(store, &acme, active.clone()).await.len(), 40);
    assert!(
        reveal(store, &acme, &c, 7, &agent, Some(g.id))
            .await
            .is_err(),
        "a stale reveal is refused"
    );
    assert_eq!(
        leases_of(store, &acme, LeaseFilter::default()).await.len(),
        40,
        "a refused reveal stores no lease"
    );

    let (_, ended) = store
        .revoke_credential(
            &scope,
            c.id,
            "leaked",
            about(&scope, Action::CredentialRevoke, &c),
        )
        .await
        .expect("revoke");
    assert_eq!(ended, 20);
    let on_c = leases_of(
        store,
        &acme,
        LeaseFilter {
            credential: Some(c.id),
            ..LeaseFilter::default()
        },
    )
    .await;
    assert!(on_c.iter().all(|l| l.state == LeaseState::Revoked
        && l.end == Some(LeaseEnd::CredentialRevoked)
        && l.ended_at.is_some()));
    let ended = store
        .delete_grant(&scope, g.id, draft(&scope, Action::GrantRevoke))
        .await
        .expect("revoke the grant");
    assert_eq!(ended, 20, "the grant's other leases");
    assert!(leases_of(store, &acme, active.clone()).await.is_empty());

    // Renewal and release: the holder's active lease only.
    let g2 = reveal_grant(&acme, &agent, None);
    acme.add_grant(store, &g2).await;
    reveal(store, &acme, &d, 1, &agent, Some(g2.id))
        .await
        .expect("reveal");
    let held = leases_of(store, &acme, active.clone()).await.remove(0);
    let later = held.expires_at.plus(Duration::from_secs(60));
    assert_eq!(
        code(
            store
                .renew_lease(
                    &scope,
                    held.id,
                    acme.admin().id,
                    later,
                    draft(&scope, Action::LeaseRenew),
                )
                .await
        ),
        Code::NotFound,
        "another principal's lease"
    );
    let renewed = store
        .renew_lease(
            &scope,
            held.id,
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
            held.id,
            agent.id,
            draft(&scope, Action::LeaseRelease),
        )
        .await
        .expect("release");
    assert_eq!(released.state, LeaseState::Released);
    assert_eq!(
        code(
            store
                .release_lease(
                    &scope,
                    held.id,
                    agent.id,
                    draft(&scope, Action::LeaseRelease)
                )
                .await
        ),
        Code::FailedPrecondition,
        "an ended lease"
    );

    // The sweeper: only what ran out.
    reveal(store, &acme, &d, 1, &agent, Some(g2.id))
        .await
        .expect("reveal");
    let due = leases_of(store, &acme, active.clone()).await.remove(0);
    let by = AuditDraft::new(Action::LeaseExpire, Outcome::Allowed, "");
    assert_eq!(
        store
            .expire_leases(due.expires_at.minus(Duration::from_secs(1)), &by, 100)
            .await
            .expect("sweep"),
        0
    );
    assert_eq!(
        store
            .expire_leases(due.expires_at, &by, 100)
            .await
            .expect("sweep"),
        1
    );
    let expired = store.get_lease(&scope, due.id).await.expect("lease");
    assert_eq!(expired.state, LeaseState::Expired);
    assert_eq!(expired.ended_at, Some(due.expires_at));

    let log = verified_log(store, &scope).await;
    let count = |action: Action| log.iter().filter(|e| e.draft.action == action).count();
    assert_eq!(count(Action::LeaseRevoke), 40);
    assert_eq!(count(Action::LeaseRenew), 1);
    assert_eq!(count(Action::LeaseRelease), 1);
    assert_eq!(count(Action::LeaseExpire), 1);
    let expire = log
        .iter()
        .find(|e| e.draft.action == Action::LeaseExpire)
        .expect("the expiry event");
    assert_eq!(
        expire.draft.detail.as_ref().and_then(|d| d.lease()),
        Some(due.id)
    );
}
