//! Tenant isolation as a property, checked against a model. Random sequences
//! of operations by two tenants (creating, rotating, rolling back, revoking
//! and destroying credentials, creating and deleting grants, looking things
//! up by id and by name, including ids of the other tenant) run against the
//! store and a plain in-memory model. After every step the store's
//! observable results (outcome codes, returned records, listings, retained
//! versions, audit chains) must equal the model's; in particular no tenant
//! ever observes or changes the other's data.
//!
//! The runner is driven by hand so each case can run async inside one
//! `#[sqlx::test]` database; a failing case is shrunk the way proptest does
//! (simplify while it fails, complicate when it passes).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use strongroom_core::audit::Action;
use strongroom_core::credential::{Credential, CredentialFilter, CredentialStatus, StoredVersion};
use strongroom_core::ids::{CredentialId, GrantId};
use strongroom_core::policy::{Capabilities, Capability, Grant, GrantSubject, Selector};
use strongroom_core::principal::Role;
use strongroom_core::store::{GrantFilter, Store};
use strongroom_core::tenant::TenantSettings;
use strongroom_core::time::Timestamp;

use crate::support::{
    Code, TestTenant, about, all_items, audit_log, cname, create_tenant_with, credential, draft,
    env,
};

/// Environments drawn from; `qa` does not exist.
const ENVS: [&str; 3] = ["dev", "staging", "qa"];
const NAMES: [&str; 3] = ["llm/openai", "llm/anthropic", "payments/stripe"];
const SELECTORS: [&str; 3] = ["llm/openai", "llm/*", "*"];
const RETENTION: u32 = 2;
/// Cases per run (unless `PROPTEST_CASES` says otherwise).
const CASES: u32 = 16;
const MAX_SHRINK_STEPS: u32 = 200;

/// One operation by tenant `actor` (0 or 1). `target` picks among every
/// credential or grant id ever used, of either tenant.
#[derive(Debug, Clone)]
enum Op {
    Create {
        actor: usize,
        env: usize,
        name: usize,
    },
    Rotate {
        actor: usize,
        target: usize,
    },
    Rollback {
        actor: usize,
        target: usize,
        back: u32,
    },
    Revoke {
        actor: usize,
        target: usize,
    },
    Destroy {
        actor: usize,
        target: usize,
    },
    Get {
        actor: usize,
        target: usize,
    },
    Find {
        actor: usize,
        env: usize,
        name: usize,
    },
    Versions {
        actor: usize,
        target: usize,
    },
    GrantCreate {
        actor: usize,
        selector: usize,
        env: usize,
    },
    GrantDelete {
        actor: usize,
        target: usize,
    },
    GrantGet {
        actor: usize,
        target: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let actor = || 0..2usize;
    let pick = || 0..3usize;
    let target = || 0..8usize;
    prop_oneof![
        4 => (actor(), pick(), pick()).prop_map(|(actor, env, name)| Op::Create { actor, env, name }),
        3 => (actor(), target()).prop_map(|(actor, target)| Op::Rotate { actor, target }),
        1 => (actor(), target(), 0..3u32).prop_map(|(actor, target, back)| Op::Rollback { actor, target, back }),
        1 => (actor(), target()).prop_map(|(actor, target)| Op::Revoke { actor, target }),
        1 => (actor(), target()).prop_map(|(actor, target)| Op::Destroy { actor, target }),
        2 => (actor(), target()).prop_map(|(actor, target)| Op::Get { actor, target }),
        2 => (actor(), pick(), pick()).prop_map(|(actor, env, name)| Op::Find { actor, env, name }),
        1 => (actor(), target()).prop_map(|(actor, target)| Op::Versions { actor, target }),
        2 => (actor(), pick(), pick()).prop_map(|(actor, selector, env)| Op::GrantCreate { actor, selector, env }),
        1 => (actor(), target()).prop_map(|(actor, target)| Op::GrantDelete { actor, target }),
        1 => (actor(), target()).prop_map(|(actor, target)| Op::GrantGet { actor, target }),
    ]
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(op(), 1..28)
}

/// What the model knows of a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cred {
    tenant: usize,
    env: &'static str,
    name: &'static str,
    status: CredentialStatus,
    destroyed: bool,
    current: u32,
    latest: u32,
    /// Retained versions, oldest first.
    versions: Vec<u32>,
}

impl Cred {
    /// Whether its value may be used (and so rotated or rolled back).
    fn usable(&self) -> bool {
        self.status == CredentialStatus::Active && !self.destroyed
    }

    /// Its retained versions as listed: (version, has a value), newest first.
    fn listed_versions(&self) -> Vec<(u32, bool)> {
        self.versions
            .iter()
            .rev()
            .map(|v| (*v, !self.destroyed))
            .collect()
    }
}

/// What a listing shows of a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Listed {
    id: CredentialId,
    env: String,
    name: String,
    status: CredentialStatus,
    destroyed: bool,
    current: u32,
    latest: u32,
}

impl Listed {
    fn of(c: &Credential) -> Self {
        Self {
            id: c.id,
            env: c.environment.to_string(),
            name: c.name.to_string(),
            status: c.status,
            destroyed: c.destroyed_at.is_some(),
            current: c.current_version,
            latest: c.latest_version,
        }
    }
}

/// Stored versions as (version, has a value); a version of another
/// credential shows as version 0.
fn stored_versions(id: CredentialId, stored: &[StoredVersion]) -> Vec<(u32, bool)> {
    stored
        .iter()
        .map(|v| {
            let version = if v.credential == id { v.version } else { 0 };
            (version, v.envelope.is_some())
        })
        .collect()
}

/// The model: what each tenant must observe.
#[derive(Debug)]
struct Model {
    credentials: BTreeMap<CredentialId, Cred>,
    /// Every credential id a create was attempted with, successful or not.
    attempted: Vec<CredentialId>,
    /// Live grants and their tenant.
    grants: BTreeMap<GrantId, usize>,
    /// Every grant id ever created.
    grant_ids: Vec<GrantId>,
    /// Events in each tenant's chain.
    audit: [u64; 2],
    /// Ids no create ever used.
    phantom: (CredentialId, GrantId),
}

impl Model {
    fn new() -> Self {
        Self {
            credentials: BTreeMap::new(),
            attempted: Vec::new(),
            grants: BTreeMap::new(),
            grant_ids: Vec::new(),
            // Each tenant's creation is its first event.
            audit: [1, 1],
            phantom: (CredentialId::generate(), GrantId::generate()),
        }
    }

    fn credential_target(&self, i: usize) -> CredentialId {
        if self.attempted.is_empty() {
            self.phantom.0
        } else {
            self.attempted[i % self.attempted.len()]
        }
    }

    fn grant_target(&self, i: usize) -> GrantId {
        if self.grant_ids.is_empty() {
            self.phantom.1
        } else {
            self.grant_ids[i % self.grant_ids.len()]
        }
    }

    /// The credential as tenant `actor` may see it.
    fn visible(&self, actor: usize, id: CredentialId) -> Option<&Cred> {
        self.credentials.get(&id).filter(|c| c.tenant == actor)
    }

    fn visible_mut(&mut self, actor: usize, id: CredentialId) -> Result<&mut Cred, String> {
        self.credentials
            .get_mut(&id)
            .filter(|c| c.tenant == actor)
            .ok_or_else(|| {
                format!("the store changed {id}, which the model says tenant {actor} cannot see")
            })
    }

    fn find(&self, actor: usize, env: &str, name: &str) -> Option<CredentialId> {
        self.credentials
            .iter()
            .find(|(_, c)| c.tenant == actor && c.env == env && c.name == name)
            .map(|(id, _)| *id)
    }

    /// Tenant `actor`'s credentials as listed, in creation (id) order.
    fn listing(&self, actor: usize) -> Vec<Listed> {
        self.credentials
            .iter()
            .filter(|(_, c)| c.tenant == actor)
            .map(|(id, c)| Listed {
                id: *id,
                env: c.env.to_owned(),
                name: c.name.to_owned(),
                status: c.status,
                destroyed: c.destroyed,
                current: c.current,
                latest: c.latest,
            })
            .collect()
    }

    /// What `get` by tenant `actor` must return.
    fn get(&self, actor: usize, id: CredentialId) -> Result<Listed, Code> {
        self.listing(actor)
            .into_iter()
            .find(|l| l.id == id)
            .ok_or(Code::NotFound)
    }

    /// Whether grant `id` lives in tenant `actor`.
    fn owns_grant(&self, actor: usize, id: GrantId) -> Result<(), Code> {
        if self.grants.get(&id) == Some(&actor) {
            Ok(())
        } else {
            Err(Code::NotFound)
        }
    }
}

fn outcome<T>(result: &strongroom_core::Result<T>) -> Result<(), Code> {
    result.as_ref().map(|_| ()).map_err(Code::of)
}

macro_rules! ensure_eq {
    ($got:expr, $expected:expr, $($what:tt)+) => {{
        let (got, expected) = (&$got, &$expected);
        if got != expected {
            return Err(format!("{}: store {:?}, model {:?}", format!($($what)+), got, expected));
        }
    }};
}

/// A stand-in for a credential the actor knows only by id (perhaps another
/// tenant's): what it sends is the id.
fn shell(t: &TestTenant, model: &Model, id: CredentialId) -> Credential {
    let known = model.credentials.get(&id);
    let mut c = credential(
        &t.scope(),
        known.map_or("dev", |c| c.env),
        known.map_or("x", |c| c.name),
    );
    c.id = id;
    c
}

/// Applies `op` to the store and the model and compares what it returned.
async fn apply(
    store: &dyn Store,
    tenants: &[TestTenant; 2],
    model: &mut Model,
    op: &Op,
) -> Result<(), String> {
    match *op {
        Op::Create {
            actor,
            env: e,
            name: n,
        } => {
            let t = &tenants[actor];
            let c = credential(&t.scope(), ENVS[e], NAMES[n]);
            model.attempted.push(c.id);
            let expected = if ENVS[e] == "qa" {
                Err(Code::NotFound)
            } else if model.find(actor, ENVS[e], NAMES[n]).is_some() {
                Err(Code::AlreadyExists)
            } else {
                Ok(())
            };
            let got = t.store(store, &c).await;
            ensure_eq!(outcome(&got), expected, "create");
            if expected.is_ok() {
                let cred = Cred {
                    tenant: actor,
                    env: ENVS[e],
                    name: NAMES[n],
                    status: CredentialStatus::Active,
                    destroyed: false,
                    current: 1,
                    latest: 1,
                    versions: vec![1],
                };
                model.credentials.insert(c.id, cred);
                model.audit[actor] += 1;
            }
        }
        Op::Rotate { actor, target } => {
            let t = &tenants[actor];
            let id = model.credential_target(target);
            // An attacker knows the id and even the latest version number.
            let latest = model.credentials.get(&id).map_or(1, |c| c.latest);
            let expected = match model.visible(actor, id) {
                None => Err(Code::NotFound),
                Some(c) if !c.usable() => Err(Code::FailedPrecondition),
                Some(_) => Ok(()),
            };
            let got = t.rotate(store, &shell(t, model, id), latest).await;
            ensure_eq!(outcome(&got), expected, "rotate");
            if let Ok(updated) = got {
                let c = model.visible_mut(actor, id)?;
                c.latest += 1;
                c.current = c.latest;
                c.versions.push(c.latest);
                let pruned_up_to = c.latest.saturating_sub(RETENTION);
                c.versions.retain(|v| *v > pruned_up_to);
                ensure_eq!(
                    Ok(Listed::of(&updated)),
                    model.get(actor, id),
                    "rotate returned"
                );
                ensure_eq!(
                    updated.tenant,
                    t.id(),
                    "rotate returned a foreign credential"
                );
                model.audit[actor] += 1;
            }
        }
        Op::Rollback {
            actor,
            target,
            back,
        } => {
            let t = &tenants[actor];
            let scope = t.scope();
            let id = model.credential_target(target);
            let version = model
                .credentials
                .get(&id)
                .map_or(1, |c| c.latest.saturating_sub(back).max(1));
            let expected = match model.visible(actor, id) {
                None => Err(Code::NotFound),
                Some(c) if !c.usable() => Err(Code::FailedPrecondition),
                Some(c) if !c.versions.contains(&version) => Err(Code::NotFound),
                Some(_) => Ok(()),
            };
            let draft = about(&scope, Action::CredentialRollback, &shell(t, model, id));
            let got = store.set_current_version(&scope, id, version, draft).await;
            ensure_eq!(outcome(&got), expected, "rollback to {version}");
            if let Ok(rolled) = got {
                model.visible_mut(actor, id)?.current = version;
                ensure_eq!(
                    Ok(Listed::of(&rolled)),
                    model.get(actor, id),
                    "rollback returned"
                );
                ensure_eq!(
                    rolled.tenant,
                    t.id(),
                    "rollback returned a foreign credential"
                );
                model.audit[actor] += 1;
            }
        }
        Op::Revoke { actor, target } => {
            let t = &tenants[actor];
            let scope = t.scope();
            let id = model.credential_target(target);
            let expected = match model.visible(actor, id) {
                None => Err(Code::NotFound),
                Some(c) if c.status == CredentialStatus::Revoked => Err(Code::FailedPrecondition),
                Some(_) => Ok(()),
            };
            let draft = about(&scope, Action::CredentialRevoke, &shell(t, model, id));
            let got = store.revoke_credential(&scope, id, "model", draft).await;
            ensure_eq!(outcome(&got), expected, "revoke");
            if let Ok((revoked, _)) = got {
                model.visible_mut(actor, id)?.status = CredentialStatus::Revoked;
                ensure_eq!(
                    Ok(Listed::of(&revoked)),
                    model.get(actor, id),
                    "revoke returned"
                );
                ensure_eq!(
                    revoked.tenant,
                    t.id(),
                    "revoke returned a foreign credential"
                );
                model.audit[actor] += 1;
            }
        }
        Op::Destroy { actor, target } => {
            let t = &tenants[actor];
            let scope = t.scope();
            let id = model.credential_target(target);
            let expected = match model.visible(actor, id) {
                None => Err(Code::NotFound),
                Some(c) if c.destroyed => Err(Code::FailedPrecondition),
                Some(_) => Ok(()),
            };
            let draft = about(&scope, Action::CredentialDestroy, &shell(t, model, id));
            let got = store.destroy_credential(&scope, id, draft).await;
            ensure_eq!(outcome(&got), expected, "destroy");
            if let Ok(destroyed) = got {
                model.visible_mut(actor, id)?.destroyed = true;
                ensure_eq!(
                    Ok(Listed::of(&destroyed)),
                    model.get(actor, id),
                    "destroy returned"
                );
                ensure_eq!(
                    destroyed.tenant,
                    t.id(),
                    "destroy returned a foreign credential"
                );
                model.audit[actor] += 1;
            }
        }
        Op::Get { actor, target } => {
            let t = &tenants[actor];
            let id = model.credential_target(target);
            let got = store.get_credential(&t.scope(), id).await;
            if let Ok(c) = &got {
                ensure_eq!(c.tenant, t.id(), "get returned a foreign credential");
            }
            let got = got.as_ref().map(Listed::of).map_err(Code::of);
            ensure_eq!(got, model.get(actor, id), "get");
        }
        Op::Find {
            actor,
            env: e,
            name: n,
        } => {
            let t = &tenants[actor];
            let got = store
                .find_credential(&t.scope(), &env(ENVS[e]), &cname(NAMES[n]))
                .await
                .map(|c| (c.id, c.tenant))
                .map_err(|e| Code::of(&e));
            let expected = model
                .find(actor, ENVS[e], NAMES[n])
                .map(|id| (id, t.id()))
                .ok_or(Code::NotFound);
            ensure_eq!(got, expected, "find");
        }
        Op::Versions { actor, target } => {
            let t = &tenants[actor];
            let id = model.credential_target(target);
            let got = store
                .list_versions(&t.scope(), id)
                .await
                .map(|vs| stored_versions(id, &vs))
                .map_err(|e| Code::of(&e));
            let expected = model
                .visible(actor, id)
                .map(Cred::listed_versions)
                .ok_or(Code::NotFound);
            ensure_eq!(got, expected, "list_versions");
        }
        Op::GrantCreate {
            actor,
            selector,
            env: e,
        } => {
            let t = &tenants[actor];
            let scope = t.scope();
            let g = Grant {
                id: GrantId::generate(),
                tenant: t.id(),
                subject: GrantSubject::Role(Role::Agent),
                selector: Selector::parse(SELECTORS[selector], "selector")
                    .map_err(|e| e.to_string())?,
                environments: vec![env(ENVS[e])],
                capabilities: Capabilities::of(&[Capability::Inject]),
                destinations: vec![],
                expires_at: None,
                reason: "model".into(),
                granted_by: t.admin().id,
                access_request: None,
                created_at: Timestamp::now(),
            };
            let got = store
                .create_grant(&scope, &g, draft(&scope, Action::GrantCreate))
                .await;
            ensure_eq!(outcome(&got), Ok(()), "create grant");
            model.grants.insert(g.id, actor);
            model.grant_ids.push(g.id);
            model.audit[actor] += 1;
        }
        Op::GrantDelete { actor, target } => {
            let scope = tenants[actor].scope();
            let id = model.grant_target(target);
            let expected = model.owns_grant(actor, id);
            let got = store
                .delete_grant(&scope, id, draft(&scope, Action::GrantRevoke))
                .await;
            ensure_eq!(outcome(&got), expected, "delete grant");
            if got.is_ok() {
                model.grants.remove(&id);
                model.audit[actor] += 1;
            }
        }
        Op::GrantGet { actor, target } => {
            let t = &tenants[actor];
            let id = model.grant_target(target);
            let got = store
                .get_grant(&t.scope(), id)
                .await
                .map(|g| (g.id, g.tenant))
                .map_err(|e| Code::of(&e));
            let expected = model.owns_grant(actor, id).map(|()| (id, t.id()));
            ensure_eq!(got, expected, "get grant");
        }
    }
    Ok(())
}

/// Compares both tenants' listings, retained versions and audit chains with
/// the model.
async fn observe(
    store: &dyn Store,
    tenants: &[TestTenant; 2],
    model: &Model,
) -> Result<(), String> {
    for (i, t) in tenants.iter().enumerate() {
        let scope = t.scope();
        let listed = all_items(3, |page| async move {
            store
                .list_credentials(&scope, &CredentialFilter::default(), &page)
                .await
        })
        .await;
        if let Some(c) = listed.iter().find(|c| c.tenant != t.id()) {
            return Err(format!("tenant {i} lists a foreign credential {}", c.id));
        }
        let listed: Vec<Listed> = listed.iter().map(Listed::of).collect();
        ensure_eq!(listed, model.listing(i), "tenant {i} credentials");
        for (id, c) in model.credentials.iter().filter(|(_, c)| c.tenant == i) {
            let stored = store
                .list_versions(&scope, *id)
                .await
                .map_err(|e| format!("versions of {id}: {e}"))?;
            ensure_eq!(
                stored_versions(*id, &stored),
                c.listed_versions(),
                "tenant {i} versions of {id}"
            );
        }

        let grants = all_items(2, |page| async move {
            store
                .list_grants(&scope, &GrantFilter::default(), &page)
                .await
        })
        .await;
        if grants.iter().any(|g| g.tenant != t.id()) {
            return Err(format!("tenant {i} lists a foreign grant"));
        }
        let grants: BTreeSet<GrantId> = grants.iter().map(|g| g.id).collect();
        let expected: BTreeSet<GrantId> = model
            .grants
            .iter()
            .filter(|(_, owner)| **owner == i)
            .map(|(id, _)| *id)
            .collect();
        ensure_eq!(grants, expected, "tenant {i} grants");

        let log = audit_log(store, &scope).await;
        if log.iter().any(|e| e.tenant != t.id()) {
            return Err(format!("tenant {i} reads foreign audit events"));
        }
        let sequences: Vec<u64> = log.iter().map(|e| e.sequence).collect();
        ensure_eq!(
            sequences,
            (1..=model.audit[i]).collect::<Vec<u64>>(),
            "tenant {i} audit chain"
        );
    }
    Ok(())
}

/// Runs one generated case on two fresh tenants named after `case`.
async fn run_case(store: &dyn Store, case: u32, ops: &[Op]) -> Result<(), String> {
    let settings = TenantSettings {
        version_retention: RETENTION,
        ..TenantSettings::default()
    };
    let tenants = [
        create_tenant_with(store, &format!("model-{case}-a"), settings.clone()).await,
        create_tenant_with(store, &format!("model-{case}-b"), settings).await,
    ];
    let mut model = Model::new();
    for (step, op) in ops.iter().enumerate() {
        apply(store, &tenants, &mut model, op)
            .await
            .map_err(|e| format!("step {step} {op:?}: {e}"))?;
        observe(store, &tenants, &model)
            .await
            .map_err(|e| format!("after step {step} {op:?}: {e}"))?;
    }
    Ok(())
}

/// The property, for one store: every generated sequence agrees with the
/// model; a failure is shrunk to a minimal sequence and reported.
pub async fn tenant_isolation_matches_the_model(store: Arc<dyn Store>) {
    let store = &*store;
    // PROPTEST_CASES runs more cases for a deeper search.
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(CASES);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let mut case = 0;
    for _ in 0..cases {
        let mut tree = ops().new_tree(&mut runner).expect("generate a case");
        case += 1;
        let Err(first) = run_case(store, case, &tree.current()).await else {
            continue;
        };
        let mut minimal = (tree.current(), first);
        let mut steps = 0;
        let mut more = tree.simplify();
        while more && steps < MAX_SHRINK_STEPS {
            steps += 1;
            case += 1;
            match run_case(store, case, &tree.current()).await {
                Err(failure) => {
                    minimal = (tree.current(), failure);
                    more = tree.simplify();
                }
                Ok(()) => more = tree.complicate(),
            }
        }
        panic!(
            "tenant isolation differs from the model (shrunk in {steps} steps)\n{}\nops: {:#?}",
            minimal.1, minimal.0
        );
    }
}
