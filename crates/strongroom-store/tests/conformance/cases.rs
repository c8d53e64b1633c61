//! The conformance cases. Each is written once against `dyn Store` and runs
//! against every backend (see `main.rs`). They use only the public API: a
//! platform scope creates tenants, and tenant data is reached through the
//! scope of an authenticated admin.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use strongroom_core::audit::{
    Action, AuditDraft, AuditEvent, ChainVerifier, GENESIS_HASH, Outcome,
};
use strongroom_core::credential::{
    Credential, CredentialFilter, CredentialStatus, InjectionTemplate, RotationPolicy,
};
use strongroom_core::ids::{CredentialId, GrantId, PrincipalId, TenantId};
use strongroom_core::names::PrincipalName;
use strongroom_core::page::PageRequest;
use strongroom_core::policy::{Capability, Destination, Grant, GrantSubject, Reach, Selector};
use strongroom_core::principal::{IdentityPattern, PrincipalStatus, Role};
use strongroom_core::store::{AuditFilter, GrantFilter, Store};
use strongroom_core::tenant::{TenantSettings, TenantStatus, WrappedKekRecord};
use strongroom_core::time::Timestamp;
use strongroom_core::value::CredentialType;

use crate::support::{
    AuditTrail, Code, OPERATOR, about, all_items, all_pages, audit_log, authenticate,
    authenticator, binding, cname, code, create_tenant, create_tenant_with, credential, draft, env,
    grant, marked, new_tenant, operator, pattern, principal, service, tag,
};

fn ids(credentials: &[Credential]) -> Vec<CredentialId> {
    credentials.iter().map(|c| c.id).collect()
}

fn grant_ids(grants: &[Grant]) -> Vec<GrantId> {
    grants.iter().map(|g| g.id).collect()
}

fn retention(n: u32) -> TenantSettings {
    TenantSettings {
        version_retention: n,
        ..TenantSettings::default()
    }
}

// ---- identity resolution ----

async fn resolves_to(store: &dyn Store, identity: &str, expected: PrincipalId, tenant: TenantId) {
    let auth = authenticate(store, identity)
        .await
        .unwrap_or_else(|e| panic!("{identity} must authenticate: {e}"));
    assert_eq!(auth.principal().map(|p| p.id), Some(expected), "{identity}");
    assert_eq!(auth.identity(), identity);
    assert_eq!(
        auth.tenant_scope().expect("tenant scope").tenant_id(),
        tenant
    );
    assert!(auth.platform_scope().is_err());
}

/// Exact and prefix bindings resolve to their principal, the most specific
/// one wins, and an identity bound nowhere is unauthenticated.
pub async fn identity_resolution(store: Arc<dyn Store>) {
    let store = &*store;
    let acme = create_tenant(store, "acme").await;
    let builder = acme.add_principal(store, "builder", Role::Agent).await;
    let team = acme.add_principal(store, "team-a", Role::Agent).await;
    let cluster = acme.add_principal(store, "cluster", Role::Viewer).await;
    let odd = acme.add_principal(store, "odd", Role::Agent).await;
    acme.bind(store, builder.id, "spiffe://x/ns/a/sa/builder")
        .await
        .expect("bind");
    acme.bind(store, team.id, "spiffe://x/ns/a/sa/*")
        .await
        .expect("bind");
    acme.bind(store, cluster.id, "spiffe://x/ns/*")
        .await
        .expect("bind");
    // SQL wildcards in a pattern are literal text.
    acme.bind(store, odd.id, "spiffe://q/%_/*")
        .await
        .expect("bind");

    // Exact beats both prefixes; the longer prefix beats the shorter.
    let t = acme.id();
    resolves_to(store, "spiffe://x/ns/a/sa/builder", builder.id, t).await;
    resolves_to(store, "spiffe://x/ns/a/sa/builder2", team.id, t).await;
    resolves_to(store, "spiffe://x/ns/a/sa/builde", team.id, t).await;
    resolves_to(store, "spiffe://x/ns/a/sa/deployer", team.id, t).await;
    resolves_to(store, "spiffe://x/ns/b/sa/deployer", cluster.id, t).await;
    resolves_to(store, "spiffe://q/%_/tool", odd.id, t).await;
    resolves_to(store, &acme.admin_identity, acme.admin().id, t).await;

    for unknown in [
        "spiffe://x/ns",
        "spiffe://y/ns/a/sa/builder",
        "spiffe://q/ab/tool",
        "spiffe://q/%x/tool",
        "SPIFFE://x/ns/a/sa/builder",
    ] {
        assert_eq!(
            code(authenticate(store, unknown).await),
            Code::Unauthenticated,
            "{unknown}"
        );
    }
    assert_eq!(code(authenticate(store, "").await), Code::Unauthenticated);
}

/// A disabled principal is refused at authentication, and accepted again
/// once enabled.
pub async fn disabled_principal_is_denied(store: Arc<dyn Store>) {
    let store = &*store;
    let acme = create_tenant(store, "acme").await;
    let scope = acme.scope();
    acme.claim(store, "spiffe://x/*").await.expect("namespace");
    let mut trail = AuditTrail::start(store, scope).await;
    let agent = acme.add_principal(store, "agent", Role::Agent).await;
    trail.expect(Action::PrincipalCreate).await;
    acme.bind(store, agent.id, "spiffe://x/agent")
        .await
        .expect("bind");
    trail.expect(Action::BindingCreate).await;
    assert!(authenticate(store, "spiffe://x/agent").await.is_ok());

    let (disabled, _) = store
        .set_principal_status(
            &scope,
            agent.id,
            PrincipalStatus::Disabled,
            draft(&scope, Action::PrincipalStatus),
        )
        .await
        .expect("disable");
    trail.expect(Action::PrincipalStatus).await;
    assert_eq!(disabled.status, PrincipalStatus::Disabled);
    assert_eq!(
        store
            .get_principal(&scope, agent.id)
            .await
            .expect("get")
            .status,
        PrincipalStatus::Disabled
    );
    assert_eq!(
        code(authenticate(store, "spiffe://x/agent").await),
        Code::PermissionDenied
    );

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
    let auth = authenticate(store, "spiffe://x/agent")
        .await
        .expect("enabled again");
    assert_eq!(auth.principal().map(|p| p.id), Some(agent.id));

    assert_eq!(
        code(
            store
                .set_principal_status(
                    &scope,
                    PrincipalId::generate(),
                    PrincipalStatus::Disabled,
                    draft(&scope, Action::PrincipalStatus)
                )
                .await
        ),
        Code::NotFound
    );
    trail.expect_none().await;
}

/// An identity can be bound in one tenant only: a binding must lie inside
/// its tenant's identity namespaces (refused with one fixed message
/// otherwise, whoever owns the identity), namespaces of two tenants never
/// overlap, and bindings outside a tenant's namespaces are ignored by
/// authentication.
pub async fn identity_belongs_to_one_tenant(store: Arc<dyn Store>) {
    let store = &*store;
    let alpha = create_tenant(store, "alpha").await;
    let beta = create_tenant(store, "beta").await;
    let alpha_agent = alpha.add_principal(store, "agent", Role::Agent).await;
    let beta_agent = beta.add_principal(store, "agent", Role::Agent).await;
    alpha
        .bind(store, alpha_agent.id, "spiffe://shared/*")
        .await
        .expect("bind");
    // beta cannot be given an overlapping namespace, wider or narrower.
    for text in [
        "spiffe://shared/agent",
        "spiffe://shared/sub/*",
        "spiffe://*",
    ] {
        assert_eq!(
            beta.claim(store, text).await,
            Err(strongroom_core::Error::invalid(
                "identity_namespaces",
                strongroom_core::principal::NAMESPACE_OVERLAP
            )),
            "{text}"
        );
    }
    // Nor bind there: the same refusal whether alpha owns the identity or
    // nobody does.
    for text in [
        "spiffe://shared/agent",
        "spiffe://shared/*",
        "spiffe://nobody/x",
    ] {
        assert_eq!(
            beta.bind_only(store, beta_agent.id, text).await.err(),
            Some(strongroom_core::Error::denied(
                strongroom_core::principal::BINDING_OUTSIDE_NAMESPACES
            )),
            "{text}"
        );
    }
    let auth = authenticator();
    let agent = auth
        .authenticate(store, "spiffe://shared/agent", None)
        .await
        .expect("alpha's");
    assert_eq!(agent.principal().map(|p| p.id), Some(alpha_agent.id));
    // Naming another tenant finds nothing.
    assert_eq!(
        code(
            auth.authenticate(store, "spiffe://shared/agent", Some("beta"))
                .await
        ),
        Code::Unauthenticated
    );
    // Taking the namespace from alpha disables its binding at once.
    let op = operator(store).await;
    let platform = op.platform_scope().expect("platform scope");
    store
        .set_identity_namespaces(
            &platform,
            alpha.id(),
            &[IdentityPattern::Prefix("spiffe://test/alpha/".into())],
            platform.audit(
                Action::TenantNamespaces,
                Outcome::Allowed,
                "PLATFORM_OPERATOR",
            ),
        )
        .await
        .expect("narrow alpha");
    assert_eq!(
        code(
            auth.authenticate(store, "spiffe://shared/agent", None)
                .await
        ),
        Code::Unauthenticated
    );
    // Given to beta, the identity is beta's alone.
    beta.bind(store, beta_agent.id, "spiffe://shared/*")
        .await
        .expect("beta binds");
    let agent = auth
        .authenticate(store, "spiffe://shared/agent", None)
        .await
        .expect("beta's");
    assert_eq!(agent.principal().map(|p| p.id), Some(beta_agent.id));
}

/// Identity namespaces: assigned per tenant and read back by tenant-id
/// range; one overlapping another tenant's is refused (wider, narrower or
/// equal) and leaves the tenant's namespaces as they were; replacing them
/// disables the bindings left outside and enables those inside again; an
/// unknown tenant is NotFound.
pub async fn identity_namespaces_are_exclusive(store: Arc<dyn Store>) {
    let store = &*store;
    let alpha = create_tenant(store, "alpha").await;
    let beta = create_tenant(store, "beta").await;
    let op = operator(store).await;
    let platform = op.platform_scope().expect("platform scope");
    let set = |tenant: TenantId, texts: &[&str]| {
        let namespaces: Vec<IdentityPattern> = texts
            .iter()
            .map(|t| IdentityPattern::parse(t, "n").expect("pattern"))
            .collect();
        async move {
            store
                .set_identity_namespaces(
                    &platform,
                    tenant,
                    &namespaces,
                    platform.audit(
                        Action::TenantNamespaces,
                        Outcome::Allowed,
                        "PLATFORM_OPERATOR",
                    ),
                )
                .await
        }
    };
    let read = |tenant: TenantId| async move {
        store
            .identity_namespaces(&platform, tenant, tenant)
            .await
            .expect("read namespaces")
            .into_iter()
            .map(|(t, n)| {
                assert_eq!(t, tenant);
                n.to_text()
            })
            .collect::<Vec<_>>()
    };
    set(
        alpha.id(),
        &["spiffe://test/alpha/*", "spiffe://mesh/ns/a/*", "alpha-*"],
    )
    .await
    .expect("alpha");
    assert_eq!(
        read(alpha.id()).await,
        vec!["alpha-*", "spiffe://mesh/ns/a/*", "spiffe://test/alpha/*"]
    );
    let overlap = Err(strongroom_core::Error::invalid(
        "identity_namespaces",
        strongroom_core::principal::NAMESPACE_OVERLAP,
    ));
    for text in [
        "spiffe://mesh/ns/a/*",
        "spiffe://mesh/ns/a/sa/*",
        "spiffe://mesh/ns/a/sa/x",
        "spiffe://mesh/ns/*",
        "alpha-x",
    ] {
        assert_eq!(
            set(beta.id(), &["spiffe://test/beta/*", text]).await,
            overlap,
            "{text}"
        );
        assert_eq!(
            read(beta.id()).await,
            vec!["spiffe://test/beta/*"],
            "{text}"
        );
    }
    // Siblings do not overlap.
    set(
        beta.id(),
        &["spiffe://test/beta/*", "spiffe://mesh/ns/ab/*", "alpha.*"],
    )
    .await
    .expect("beta");
    // Both tenants in one range read, each with its own.
    let (low, high) = if alpha.id() < beta.id() {
        (alpha.id(), beta.id())
    } else {
        (beta.id(), alpha.id())
    };
    let both = store
        .identity_namespaces(&platform, low, high)
        .await
        .expect("range");
    assert_eq!(both.len(), 6);
    assert_eq!(
        code(set(TenantId::generate(), &["spiffe://test/nobody/*"]).await),
        Code::NotFound
    );

    // A binding outside the namespaces is refused; one left outside by a
    // change is disabled, and enabled again when a namespace covers it.
    let agent = alpha.add_principal(store, "agent", Role::Agent).await;
    assert_eq!(
        alpha
            .bind_only(store, agent.id, "spiffe://mesh/ns/ab/x")
            .await
            .err(),
        Some(strongroom_core::Error::denied(
            strongroom_core::principal::BINDING_OUTSIDE_NAMESPACES
        ))
    );
    alpha
        .bind_only(store, agent.id, "spiffe://mesh/ns/a/sa/*")
        .await
        .expect("inside");
    let worker = "spiffe://mesh/ns/a/sa/w";
    assert!(authenticate(store, worker).await.is_ok());
    set(alpha.id(), &["spiffe://test/alpha/*"])
        .await
        .expect("narrow");
    assert_eq!(
        code(authenticate(store, worker).await),
        Code::Unauthenticated
    );
    set(
        alpha.id(),
        &["spiffe://test/alpha/*", "spiffe://mesh/ns/a/sa/*"],
    )
    .await
    .expect("widen");
    assert!(authenticate(store, worker).await.is_ok());
}

/// A platform operator bound to no principal gets the platform scope and no
/// tenant scope; a tenant admin gets no platform scope.
pub async fn platform_operator_has_no_tenant(store: Arc<dyn Store>) {
    let store = &*store;
    let acme = create_tenant(store, "acme").await;
    let op = operator(store).await;
    assert!(op.is_platform_operator());
    assert!(op.principal().is_none());
    assert!(op.tenant().is_none());
    assert!(op.platform_scope().is_ok());
    assert_eq!(code(op.tenant_scope()), Code::PermissionDenied);
    assert!(!acme.auth.is_platform_operator());
    assert_eq!(code(acme.auth.platform_scope()), Code::PermissionDenied);
}

// ---- tenants ----

/// A tenant name is unique; the refused tenant leaves nothing behind.
pub async fn duplicate_tenant_name_is_rejected(store: Arc<dyn Store>) {
    let store = &*store;
    let acme = create_tenant(store, "acme").await;
    let op = operator(store).await;
    let platform = op.platform_scope().expect("platform");
    let (mut again, _, _) = new_tenant("acme", TenantSettings::default());
    // A different admin identity, so only the tenant name collides.
    if let Some((_, b)) = &mut again.admin {
        b.pattern = pattern("spiffe://test/acme-2/admin");
    }
    let result = store
        .create_tenant(
            &platform,
            &again,
            platform.audit(Action::TenantCreate, Outcome::Allowed, "ALLOWED_BY_ROLE"),
        )
        .await;
    assert_eq!(code(result), Code::AlreadyExists);
    assert_eq!(
        code(store.get_tenant(&platform, again.tenant.id).await),
        Code::NotFound
    );
    let tenants = store
        .list_tenants(&platform, &PageRequest::default())
        .await
        .expect("list");
    assert_eq!(
        tenants.items.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![acme.id()]
    );
    assert_eq!(
        code(authenticate(store, "spiffe://test/acme-2/admin").await),
        Code::Unauthenticated
    );
    // The first tenant is untouched: one event, its creation.
    let log = audit_log(store, &acme.scope()).await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].draft.action, Action::TenantCreate);
}

/// Tenants list oldest first, in pages, with no duplicate or gap.
pub async fn tenants_list_in_pages(store: Arc<dyn Store>) {
    let store = &*store;
    let mut created = Vec::new();
    for i in 0..5 {
        created.push(create_tenant(store, &format!("tenant-{i}")).await.id());
    }
    let op = operator(store).await;
    let platform = op.platform_scope().expect("platform");
    let pages = all_pages(2, |page| async move {
        store.list_tenants(&platform, &page).await
    })
    .await;
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![2, 2, 1]
    );
    let listed: Vec<_> = pages.into_iter().flatten().collect();
    assert_eq!(listed.iter().map(|t| t.id).collect::<Vec<_>>(), created);
    for (i, t) in listed.iter().enumerate() {
        assert_eq!(t.name.as_str(), format!("tenant-{i}"));
        assert_eq!(t.status, TenantStatus::Active);
        assert_eq!(&store.get_tenant(&platform, t.id).await.expect("get"), t);
    }
    // Exactly divisible: no empty trailing page.
    let pages = all_pages(5, |page| async move {
        store.list_tenants(&platform, &page).await
    })
    .await;
    assert_eq!(pages.len(), 1);
}

/// A suspended tenant's principals authenticate but get no tenant scope;
/// resuming restores it. Both changes are in the tenant's chain.
pub async fn suspended_tenant_loses_its_scope(store: Arc<dyn Store>) {
    let store = &*store;
    let acme = create_tenant(store, "acme").await;
    let mut trail = AuditTrail::start(store, acme.scope()).await;
    let op = operator(store).await;
    let platform = op.platform_scope().expect("platform");
    let status_draft = || platform.audit(Action::TenantStatus, Outcome::Allowed, "ALLOWED_BY_ROLE");

    let suspended = store
        .set_tenant_status(
            &platform,
            acme.id(),
            TenantStatus::Suspended,
            status_draft(),
        )
        .await
        .expect("suspend");
    assert_eq!(suspended.status, TenantStatus::Suspended);
    trail.expect(Action::TenantStatus).await;
    assert_eq!(
        store
            .get_tenant(&platform, acme.id())
            .await
            .expect("get")
            .status,
        TenantStatus::Suspended
    );
    let again = authenticate(store, &acme.admin_identity)
        .await
        .expect("authenticates");
    assert_eq!(
        again.tenant().map(|t| t.status),
        Some(TenantStatus::Suspended)
    );
    assert_eq!(code(again.tenant_scope()), Code::PermissionDenied);

    store
        .set_tenant_status(&platform, acme.id(), TenantStatus::Active, status_draft())
        .await
        .expect("resume");
    trail.expect(Action::TenantStatus).await;
    let resumed = authenticate(store, &acme.admin_identity)
        .await
        .expect("authenticates");
    assert_eq!(
        resumed.tenant_scope().expect("scope").tenant_id(),
        acme.id()
    );
    assert_eq!(
        code(
            store
                .set_tenant_status(
                    &platform,
                    TenantId::generate(),
                    TenantStatus::Suspended,
                    status_draft()
                )
                .await
        ),
        Code::NotFound
    );
    trail.expect_none().await;
}

// ---- environments ----

/// Environments are created, listed and deleted; duplicates are refused,
/// and one that still holds a credential cannot be deleted.
pub async fn environments_lifecycle(store: Arc<dyn Store>) {
    let store = &*store;
    let acme = create_tenant(store, "acme").await;
    let scope = acme.scope();
    let mut trail = AuditTrail::start(store, scope).await;
    let names = || async { store.list_environments(&scope).await.expect("list") };
    assert_eq!(
        names().await,
        vec![env("dev"), env("production"), env("staging")]
    );

    store
        .create_environment(&scope, &env("qa"), draft(&scope, Action::EnvironmentCreate))
        .await
        .expect("create qa");
    trail.expect(Action::EnvironmentCreate).await;
    assert_eq!(
        names().await,
        vec![env("dev"), env("production"), env("qa"), env("staging")]
    );
    assert_eq!(
        code(
            store
                .create_environment(&scope, &env("qa"), draft(&scope, Action::EnvironmentCreate))
                .await
        ),
        Code::AlreadyExists
    );
    trail.expect_none().await;

    store
        .delete_environment(&scope, &env("qa"), draft(&scope, Action::EnvironmentDelete))
        .await
        .expect("delete qa");
    trail.expect(Action::EnvironmentDelete).await;
    assert_eq!(
        names().await,
        vec![env("dev"), env("production"), env("staging")]
    );
    assert_eq!(
        code(
            store
                .delete_environment(&scope, &env("qa"), draft(&scope, Action::EnvironmentDelete))
                .await
        ),
        Code::NotFound
    );
    trail.expect_none().await;

    let c = credential(&scope, "staging", "llm/openai");
    acme.store(store, &c).await.expect("create credential");
    trail.expect(Action::CredentialCreate).await;
    assert_eq!(
        code(
            store
                .delete_environment(
                    &scope,
                    &env("staging"),
                    draft(&scope, Action::EnvironmentDelete)
                )
                .await
        ),
        Code::FailedPrecondition
    );
    trail.expect_none().await;
    assert_eq!(
        names().await,
        vec![env("dev"), env("production"), env("staging")]
    );
    assert_eq!(
        store
            .find_credential(&scope, &env("staging"), &c.name)
            .await
            .expect("still there"),
        c
    );
    assert_eq!(
        store
            .list_versions(&scope, c.id)
            .await
            .expect("versions")
            .len(),
        1
    );
}

// ---- principals and bindings ----

/// Principals and bindings are created, read, listed in pages and deleted;
/// names and patterns are unique, bindings need an existing principal.
pub async fn principals_and_bindings(store: Arc<dyn Store>) {
    let store = &*store;
    let acme = create_tenant(store, "acme").await;
    let scope = acme.scope();
    acme.claim(store, "spiffe://x/*").await.expect("namespace");
    let mut trail = AuditTrail::start(store, scope).await;
    let mut all = vec![acme.admin().clone()];
    for (i, role) in Role::ALL.iter().chain(&[Role::Agent]).enumerate() {
        let p = acme
            .add_principal(store, &format!("p{i}@example.com"), *role)
            .await;
        trail.expect(Action::PrincipalCreate).await;
        assert_eq!(store.get_principal(&scope, p.id).await.expect("get"), p);
        all.push(p);
    }
    let listed = all_pages(4, |page| async move {
        store.list_principals(&scope, &page).await
    })
    .await;
    assert_eq!(listed.iter().map(Vec::len).collect::<Vec<_>>(), vec![4, 2]);
    assert_eq!(listed.into_iter().flatten().collect::<Vec<_>>(), all);

    let mut dup = principal(acme.id(), "p0@example.com", Role::Viewer);
    assert_eq!(
        code(
            store
                .create_principal(&scope, &dup, draft(&scope, Action::PrincipalCreate))
                .await
        ),
        Code::AlreadyExists
    );
    dup.name = PrincipalName::parse("fresh", "name").expect("name");
    dup.id = all[1].id;
    assert_eq!(
        code(
            store
                .create_principal(&scope, &dup, draft(&scope, Action::PrincipalCreate))
                .await
        ),
        Code::AlreadyExists,
        "a principal id is unique too"
    );
    assert_eq!(
        code(store.get_principal(&scope, PrincipalId::generate()).await),
        Code::NotFound
    );
    trail.expect_none().await;

    let agent = &all[4];
    let b1 = acme
        .bind(store, agent.id, "spiffe://x/agent")
        .await
        .expect("bind");
    trail.expect(Action::BindingCreate).await;
    let b2 = acme
        .bind(store, agent.id, "spiffe://x/agents/*")
        .await
        .expect("bind");
    trail.expect(Action::BindingCreate).await;
    assert_eq!(
        code(acme.bind(store, all[2].id, "spiffe://x/agent").await),
        Code::AlreadyExists
    );
    assert_eq!(
        code(
            acme.bind(store, PrincipalId::generate(), "spiffe://x/nobody")
                .await
        ),
        Code::NotFound
    );
    trail.expect_none().await;
    assert_eq!(
        code(authenticate(store, "spiffe://x/nobody").await),
        Code::Unauthenticated
    );

    let of_agent = store
        .list_bindings(&scope, Some(agent.id), &PageRequest::default())
        .await
        .expect("list");
    assert_eq!(of_agent.items, vec![b1.clone(), b2.clone()]);
    let every = all_items(1, |page| async move {
        store.list_bindings(&scope, None, &page).await
    })
    .await;
    assert_eq!(every.len(), 3);
    assert_eq!(every[0].principal, acme.admin().id);
    assert_eq!(&every[1..], &[b1.clone(), b2.clone()]);

    assert!(authenticate(store, "spiffe://x/agent").await.is_ok());
    store
        .delete_binding(&scope, b1.id, draft(&scope, Action::BindingDelete))
        .await
        .expect("delete");
    trail.expect(Action::BindingDelete).await;
    assert_eq!(
        code(authenticate(store, "spiffe://x/agent").await),
        Code::Unauthenticated
    );
    assert_eq!(
        code(
            store
                .delete_binding(&scope, b1.id, draft(&scope, Action::BindingDelete))
                .await
        ),
        Code::NotFound
    );
    trail.expect_none().await;
    let of_agent = store
        .list_bindings(&scope, Some(agent.id), &PageRequest::default())
        .await
        .expect("list");
    assert_eq!(of_agent.items, vec![b2]);
    let via_prefix = authenticate(store, "spiffe://x/agents/7")
        .await
        .expect("prefix");
    assert_eq!(via_prefix.principal().map(|p| p.id), Some(agent.id));
}

// ---- credentials ----

/// A credential round-trips every field, is found by id and by
/// (environment, name), and its first version opens with the tenant KEK.
pub async fn credential_create_get_find(store: Arc<dyn Store>) {
    let store = &*store;
    let acme = create_tenant(store, "acme").await;
    let scope = acme.scope();
    let mut trail = AuditTrail::start(store, scope).await;
    let mut c = credential(&scope, "production", "llm/openai");
    c.description = "the OpenAI key of the support bot".into();
    c.tags = vec![tag("team:ml"), tag("tier=1")];
    c.scopes = vec!["chat.completions".into(), "embeddings".into()];
    c.owner = Some("user-42".into());
    c.expires_at = Some(Timestamp::now().plus(Duration::from_secs(86_400)));
    c.rotation = Some(RotationPolicy {
        period_days: 30,
        reminder_days: 7,
    });
    c.injection = Some(InjectionTemplate::Header {
        name: "x-api-key".into(),
        field: "api_key".into(),
        prefix: String::new(),
    });
    let first = acme.store(store, &c).await.expect("create");
    let event = trail.expect(Action::CredentialCreate).await;
    assert_eq!(event.draft.credential, Some(c.id));

    assert_eq!(store.get_credential(&scope, c.id).await.expect("get"), c);
    assert_eq!(
        store
            .find_credential(&scope, &env("production"), &cname("llm/openai"))
            .await
            .expect("find"),
        c
    );
    let stored = store.get_version(&scope, c.id, 1).await.expect("version 1");
    assert_eq!(stored, first);
    assert_eq!(acme.open(&c, &stored), "llm/openai-v1");
    assert_eq!(
        store.list_versions(&scope, c.id).await.expect("versions"),
        vec![first]
    );

    assert_eq!(
        code(store.find_credential(&scope, &env("dev"), &c.name).await),
        Code::NotFound
    );
    assert_eq!(
        code(
            store
                .find_credential(&scope, &env("production"), &cname("llm/openai2"))
                .await
        ),
        Code::NotFound
    );
    assert_eq!(
        code(store.get_credential(&scope, CredentialId::generate()).await),
        Code::NotFound
    );
    assert_eq!(
        code(store.get_version(&scope, c.id, 2).await),
        Code::NotFound
    );
    assert_eq!(
        code(store.list_versions(&scope, CredentialId::generate()).await),
        Code::NotFound
    );
}

/// A name is unique per (tenant, environment): taken twice in one
/// environment is refused and leaves nothing; another environment or another
/// tenant may use it.
pub async fn credential_names_are_unique_per_environment(store: Arc<dyn Store>) {
    let store = &*store;
    let acme = create_tenant(store, "acme").await;
    let other = create_tenant(store, "other").await;
    let scope = acme.scope();
    let mut trail = AuditTrail::start(store, scope).await;
    let first = credential(&scope, "dev", "llm/openai");
    acme.store(store, &first).await.expect("create");
    trail.expect(Action::CredentialCreate).await;

    let twin = credential(&scope, "dev", "llm/openai");
    assert_eq!(code(acme.store(store, &twin).await), Code::AlreadyExists);
    trail.expect_none().await;
    assert_eq!(
        code(store.get_credential(&scope, twin.id).await),
        Code::NotFound
    );
    assert_eq!(
        code(store.get_version(&scope, twin.id, 1).await),
        Code::NotFound
    );
    assert_eq!(
        store
            .find_credential(&scope, &env("dev"), &first.name)
            .await
            .expect("find")
            .id,
        first.id
    );
    // The original's version is untouched.
    assert_eq!(
        acme.open(
            &first,
            &store.get_version(&scope, first.id, 1).await.expect("v1")
        ),
        "llm/openai-v1"
    );

    let staging = credential(&scope, "staging", "llm/openai");
    acme.store(store, &staging)
        .await
        .expect("another environment");
    trail.expect(Action::CredentialCreate).await;
    let elsewhere = credential(&other.scope(), "dev", "llm/openai");
    other
        .store(store, &elsewhere)
        .await
        .expect("another tenant");

    let listed = store
        .list_credentials(
            &scope,
            &CredentialFilter::default(),
            &PageRequest::default(),
        )
        .await
        .expect("list");
    assert_eq!(ids(&listed.items), vec![first.id, staging.id]);
    let theirs = store
        .list_credentials(
            &other.scope(),
            &CredentialFilter::default(),
            &PageRequest::default(),
        )
        .await
        .expect("list");
    assert_eq!(ids(&theirs.items), vec![elsewhere.id]);
    assert_eq!(
        store
            .find_credential(&other.scope(), &env("dev"), &first.name)
            .await
            .expect("find")
            .id,
        elsewhere.id
    );
}

/// A create into an unknown environment fails with `NotFound` and leaves no
/// credential, no version and no audit event.
pub async fn failed_create_leaves_nothing(store: Arc<dyn Store>) {
    let store = &*store;
    let acme = create_tenant(store, "acme").await;
    let scope = acme.scope();
    let mut trail = AuditTrail::start(store, scope).await;
    let before = audit_log(store, &scope).await;
    let c = credential(&scope, "qa", "llm/openai");
    assert_eq!(code(acme.store(store, &c).await), Code::NotFound);
    trail.expect_none().await;
    assert_eq!(audit_log(store, &scope).await, before);
    assert_eq!(
        code(store.get_credential(&scope, c.id).await),
        Code::NotFound
    );
    assert_eq!(
        code(store.find_credential(&scope, &env("qa"), &c.name).await),
        Code::NotFound
    );
    assert_eq!(
        code(store.get_version(&scope, c.id, 1).await),
        Code::NotFound
    );
    assert_eq!(
        code(store.list_versions(&scope, c.id).await),
        Code::NotFound
    );
    let listed = store
        .list_credentials(
            &scope,
            &CredentialFilter::default(),
            &PageRequest::default(),
        )
        .await
        .expect("list");
    assert!(listed.items.is_empty());

    // Nothing half-written blocks the same credential once the environment
    // exists.
    store
        .create_environment(&scope, &env("qa"), draft(&scope, Action::EnvironmentCreate))
        .await
        .expect("create qa");
    trail.expect(Action::EnvironmentCreate).await;
    acme.store(store, &c).await.expect("create in qa");
    trail.expect(Action::CredentialCreate).await;
    assert_eq!(store.get_credential(&scope, c.id).await.expect("get"), c);
}

/// Every listing filter selects exactly the matching credentials, alone and
/// combined, and never another tenant's.
pub async fn credential_list_filters(store: Arc<dyn Store>) {
    let store = &*store;
    let acme = create_tenant(store, "acme").await;
    let other = create_tenant(store, "other").await;
    let scope = acme.scope();
    let make = |environment: &str, name: &str, svc: &str, kind: CredentialType, tags: &[&str]| {
        let mut c = credential(&scope, environment, name);
        c.service = service(svc);
        c.kind = kind;
        c.tags = tags.iter().map(|t| tag(t)).collect();
        c
    };
    let c1 = make(
        "dev",
        "llm/openai",
        "openai",
        CredentialType::ApiKey,
        &["team:ml", "prod-ready"],
    );
    let mut c2 = make(
        "dev",
        "llm/anthropic",
        "anthropic",
        CredentialType::ApiKey,
        &["team:ml"],
    );
    c2.owner = Some("alice".into());
    let c3 = make(
        "staging",
        "llm/openai",
        "openai",
        CredentialType::ApiKey,
        &[],
    );
    let c4 = make(
        "dev",
        "payments/stripe",
        "stripe",
        CredentialType::BasicAuth,
        &["team:pay"],
    );
    let c5 = make(
        "production",
        "db/main",
        "postgres",
        CredentialType::DbConnection,
        &["team:ml"],
    );
    let c6 = make(
        "dev",
        "llmx/openai",
        "openai",
        CredentialType::ApiKey,
        &["team:mlx"],
    );
    let c7 = make(
        "dev",
        "llm/old",
        "openai",
        CredentialType::ApiKey,
        &["team:ml"],
    );
    let all = [&c1, &c2, &c3, &c4, &c5, &c6, &c7];
    for c in all {
        acme.store(store, c).await.expect("create");
    }
    store
        .revoke_credential(
            &scope,
            c7.id,
            "retired",
            about(&scope, Action::CredentialRevoke, &c7),
        )
        .await
        .expect("revoke");
    // Another tenant's credential that would match every filter.
    let mut theirs = credential(&other.scope(), "dev", "llm/openai");
    theirs.tags = vec![tag("team:ml")];
    other.store(store, &theirs).await.expect("create theirs");

    let list = |filter: CredentialFilter| async move {
        let items = all_items(2, |page| {
            let filter = filter.clone();
            async move { store.list_credentials(&scope, &filter, &page).await }
        })
        .await;
        assert!(items.iter().all(|c| c.tenant == scope.tenant_id()));
        ids(&items)
    };
    let f = CredentialFilter::default;
    assert_eq!(list(f()).await, all.map(|c| c.id).to_vec());
    assert_eq!(
        list(CredentialFilter {
            environment: Some(env("dev")),
            ..f()
        })
        .await,
        vec![c1.id, c2.id, c4.id, c6.id, c7.id]
    );
    assert_eq!(
        list(CredentialFilter {
            environment: Some(env("production")),
            ..f()
        })
        .await,
        vec![c5.id]
    );
    assert_eq!(
        list(CredentialFilter {
            service: Some(service("openai")),
            ..f()
        })
        .await,
        vec![c1.id, c3.id, c6.id, c7.id]
    );
    assert_eq!(
        list(CredentialFilter {
            kind: Some(CredentialType::BasicAuth),
            ..f()
        })
        .await,
        vec![c4.id]
    );
    assert_eq!(
        list(CredentialFilter {
            kind: Some(CredentialType::Custom),
            ..f()
        })
        .await,
        vec![]
    );
    assert_eq!(
        list(CredentialFilter {
            status: Some(CredentialStatus::Revoked),
            ..f()
        })
        .await,
        vec![c7.id]
    );
    assert_eq!(
        list(CredentialFilter {
            status: Some(CredentialStatus::Active),
            ..f()
        })
        .await,
        vec![c1.id, c2.id, c3.id, c4.id, c5.id, c6.id]
    );
    // A tag matches whole tags only: team:ml is not team:mlx.
    assert_eq!(
        list(CredentialFilter {
            tag: Some(tag("team:ml")),
            ..f()
        })
        .await,
        vec![c1.id, c2.id, c5.id, c7.id]
    );
    assert_eq!(
        list(CredentialFilter {
            tag: Some(tag("team")),
            ..f()
        })
        .await,
        vec![]
    );
    assert_eq!(
        list(CredentialFilter {
            name_prefix: Some("llm/".into()),
            ..f()
        })
        .await,
        vec![c1.id, c2.id, c3.id, c7.id]
    );
    assert_eq!(
        list(CredentialFilter {
            name_prefix: Some("llm".into()),
            ..f()
        })
        .await,
        vec![c1.id, c2.id, c3.id, c6.id, c7.id]
    );
    assert_eq!(
        list(CredentialFilter {
            name_prefix: Some("LLM".into()),
            ..f()
        })
        .await,
        vec![]
    );
    assert_eq!(
        list(CredentialFilter {
            name_prefix: Some("%".into()),
            ..f()
        })
        .await,
        vec![]
    );
    assert_eq!(
        list(CredentialFilter {
            environment: Some(env("dev")),
            service: Some(service("openai")),
            kind: Some(CredentialType::ApiKey),
            status: Some(CredentialStatus::Active),
            tag: Some(tag("team:ml")),
            name_prefix: Some("llm/".into()),
            reach: Some(vec![Reach {
                environments: vec![env("dev")],
                selector: Selector::parse("llm/*", "selector").expect("selector"),
            }]),
            unowned_only: true,
        })
        .await,
        vec![c1.id]
    );
    let mut unowned: Vec<_> = list(f()).await;
    unowned.retain(|id| *id != c2.id);
    assert_eq!(
        list(CredentialFilter {
            unowned_only: true,
            ..f()
        })
        .await,
        unowned
    );
    // A reach covers its environments and names only; none covers nothing.
    let reach = |envs: &[&str], selector: &str| Reach {
        environments: envs.iter().map(|e| env(e)).collect(),
        selector: Selector::parse(selector, "selector").expect("selector"),
    };
    let all = list(f()).await;
    for (reaches, label) in [
        (vec![], "nothing"),
        (vec![reach(&["dev"], "*")], "dev"),
        (vec![reach(&["production"], "*")], "production"),
        (vec![reach(&["dev", "production"], "llm/*")], "llm/*"),
        (
            vec![reach(&["dev"], "llm/openai"), reach(&["production"], "*")],
            "two",
        ),
    ] {
        let mut expected = Vec::new();
        for id in &all {
            let c = store.get_credential(&scope, *id).await.expect("get");
            if reaches
                .iter()
                .any(|r| r.environments.contains(&c.environment) && r.selector.matches(&c.name))
            {
                expected.push(*id);
            }
        }
        assert_eq!(
            list(CredentialFilter {
                reach: Some(reaches.clone()),
                ..f()
            })
            .await,
            expected,
            "{label}"
        );
    }
}

/// Listing more than one page returns every credential once, in creation
/// order, whatever the page size, with and without a filter.
pub async fn credential_list_pages(store: Arc<dyn Store>) {
    let store = &*store;
    let acme = create_tenant(store, "acme").await;
    let other = create_tenant(store, "other").await;
    let scope = acme.scope();
    let mut created = Vec::new();
    let mut batch_a = Vec::new();
    for i in 0..23 {
        let group = if i % 2 == 0 { "a" } else { "b" };
        let c = credential(&scope, "dev", &format!("batch/{group}/{i:02}"));
        acme.store(store, &c).await.expect("create");
        // Interleave another tenant's rows between ours.
        other
            .store(
                store,
                &credential(&other.scope(), "dev", &format!("batch/{group}/{i:02}")),
            )
            .await
            .expect("create theirs");
        if group == "a" {
            batch_a.push(c.id);
        }
        created.push(c.id);
    }
    for size in [1, 5, 22, 23, 24, 500] {
        let pages = all_pages(size, |page| async move {
            store
                .list_credentials(&scope, &CredentialFilter::default(), &page)
                .await
        })
        .await;
        let expected_pages = 23_usize.div_ceil(size as usize);
        assert_eq!(pages.len(), expected_pages, "page size {size}");
        let listed: Vec<_> = pages.into_iter().flatten().collect();
        assert_eq!(ids(&listed), created, "page size {size}");
        let unique: HashSet<_> = listed.iter().map(|c| c.id).collect();
        assert_eq!(unique.len(), 23);
    }
    let filter = CredentialFilter {
        name_prefix: Some("batch/a/".into()),
        ..CredentialFilter::default()
    };
    let pages = all_pages(4, |page| {
        let filter = filter.clone();
        async move { store.list_credentials(&scope, &filter, &page).await }
    })
    .await;
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![4, 4, 4]
    );
    assert_eq!(ids(&pages.concat()), batch_a);
    // A malformed cursor is an invalid argument, not an internal error.
    let bad = PageRequest {
        size: 5,
        after: Some("not-a-uuid".into()),
    };
    assert_eq!(
        code(
            store
                .list_credentials(&scope, &CredentialFilter::default(), &bad)
                .await
        ),
        Code::InvalidArgument
    );
}

// ---- versions ----

/// With retention N, writing versions keeps exactly the newest N.
pub async fn retention_keeps_the_last_n(store: Arc<dyn Store>) {
    let store = &*store;
    let acme = create_tenant_with(store, "acme", retention(3)).await;
    let scope = acme.scope();
    let mut trail = AuditTrail::start(store, scope).await;
    let c = credential(&scope, "dev", "llm/openai");
    acme.store(store, &c).await.expect("create");
    trail.expect(Action::CredentialCreate).await;
    for v in 2..=7u32 {
        let updated = acme.rotate(store, &c, v - 1).await.expect("add version");
        trail.expect(Action::CredentialRotate).await;
        assert_eq!((updated.current_version, updated.latest_version), (v, v));
        assert_eq!(
            store.get_credential(&scope, c.id).await.expect("get"),
            updated
        );
        let kept: Vec<u32> = store
            .list_versions(&scope, c.id)
            .await
            .expect("versions")
            .iter()
            .map(|s| s.version)
            .collect();
        let expected: Vec<u32> = (v.saturating_sub(2).max(1)..=v).rev().collect();
        assert_eq!(kept, expected, "after writing version {v}");
    }
    assert_eq!(
        code(store.get_version(&scope, c.id, 4).await),
        Code::NotFound
    );
    assert_eq!(
        code(store.get_version(&scope, c.id, 1).await),
        Code::NotFound
    );
    for v in 5..=7 {
        let stored = store.get_version(&scope, c.id, v).await.expect("retained");
        assert_eq!(acme.open(&c, &stored), format!("llm/openai-v{v}"));
    }
}

/// A writer that lost the race (stale `expected_latest`) is refused and
/// writes nothing.
pub async fn stale_add_version_writes_nothing(store: Arc<dyn Store>) {
    let store = &*store;
    let acme = create_tenant(store, "acme").await;
    let scope = acme.scope();
    let mut trail = AuditTrail::start(store, scope).await;
    let c = credential(&scope, "dev", "llm/openai");
    acme.store(store, &c).await.expect("create");
    trail.expect(Action::CredentialCreate).await;
    acme.rotate(store, &c, 1).await.expect("version 2");
    trail.expect(Action::CredentialRotate).await;
    let before = store.get_credential(&scope, c.id).await.expect("get");
    let versions_before = store.list_versions(&scope, c.id).await.expect("versions");

    for stale in [1, 0, 5] {
        assert_eq!(
            code(acme.rotate(store, &c, stale).await),
            Code::FailedPrecondition,
            "expected latest {stale}"
        );
    }
    trail.expect_none().await;
    assert_eq!(
        store.get_credential(&scope, c.id).await.expect("get"),
        before
    );
    assert_eq!(
        store.list_versions(&scope, c.id).await.expect("versions"),
        versions_before
    );
    assert_eq!(
        acme.open(&c, &store.get_version(&scope, c.id, 2).await.expect("v2")),
        "llm/openai-v2"
    );
    assert_eq!(
        code(store.get_version(&scope, c.id, 6).await),
        Code::NotFound
    );
    assert_eq!(
        code(
            acme.rotate(store, &credential(&scope, "dev", "ghost"), 1)
                .await
        ),
        Code::NotFound
    );
    trail.expect_none().await;
}

/// Rollback makes a retained version current again; a pruned one is
/// `NotFound`. Writing after a rollback continues from the latest version.
pub async fn rollback_to_retained_versions_only(store: Arc<dyn Store>) {
    let store = &*store;
    let acme = create_tenant_with(store, "acme", retention(3)).await;
    let scope = acme.scope();
    let c = credential(&scope, "dev", "llm/openai");
    acme.store(store, &c).await.expect("create");
    for v in 1..5 {
        acme.rotate(store, &c, v).await.expect("rotate");
    }
    let mut trail = AuditTrail::start(store, scope).await;

    let v3 = store.get_version(&scope, c.id, 3).await.expect("v3");
    let rolled = store
        .set_current_version(
            &scope,
            c.id,
            3,
            about(&scope, Action::CredentialRollback, &c),
        )
        .await
        .expect("rollback to 3");
    trail.expect(Action::CredentialRollback).await;
    assert_eq!((rolled.current_version, rolled.latest_version), (3, 5));
    assert_eq!(rolled.rotated_at, v3.created_at);
    assert_eq!(
        store.get_credential(&scope, c.id).await.expect("get"),
        rolled
    );

    for pruned in [1, 2, 6, 99] {
        assert_eq!(
            code(
                store
                    .set_current_version(
                        &scope,
                        c.id,
                        pruned,
                        about(&scope, Action::CredentialRollback, &c)
                    )
                    .await
            ),
            Code::NotFound,
            "version {pruned}"
        );
    }
    trail.expect_none().await;
    assert_eq!(
        store.get_credential(&scope, c.id).await.expect("get"),
        rolled
    );

    let next = acme
        .rotate(store, &c, 5)
        .await
        .expect("write after rollback");
    trail.expect(Action::CredentialRotate).await;
    assert_eq!((next.current_version, next.latest_version), (6, 6));
    let kept: Vec<u32> = store
        .list_versions(&scope, c.id)
        .await
        .expect("versions")
        .iter()
        .map(|s| s.version)
        .collect();
    assert_eq!(kept, vec![6, 5, 4]);
    store
        .set_current_version(
            &scope,
            c.id,
            5,
            about(&scope, Action::CredentialRollback, &c),
        )
        .await
        .expect("rollback to 5");
    trail.expect(Action::CredentialRollback).await;
}

/// Revocation marks the credential, once; a revoked credential takes no new
/// version and no rollback.
pub async fn revoke_lifecycle(store: Arc<dyn Store>) {
    let store = &*store;
    let acme = create_tenant(store, "acme").await;
    let scope = acme.scope();
    let c = credential(&scope, "dev", "llm/openai");
    acme.store(store, &c).await.expect("create");
    acme.rotate(store, &c, 1).await.expect("v2");
    let mut trail = AuditTrail::start(store, scope).await;

    let (revoked, _) = store
        .revoke_credential(
            &scope,
            c.id,
            "leaked in a log",
            about(&scope, Action::CredentialRevoke, &c),
        )
        .await
        .expect("revoke");
    trail.expect(Action::CredentialRevoke).await;
    assert_eq!(revoked.status, CredentialStatus::Revoked);
    assert_eq!(revoked.revoke_reason.as_deref(), Some("leaked in a log"));
    assert!(revoked.revoked_at.is_some());
    assert_eq!(
        store.get_credential(&scope, c.id).await.expect("get"),
        revoked
    );
    assert_eq!(
        revoked
            .ensure_usable(Timestamp::now())
            .map_err(|e| Code::of(&e)),
        Err(Code::FailedPrecondition)
    );

    let versions = store.list_versions(&scope, c.id).await.expect("versions");
    assert_eq!(
        code(
            store
                .revoke_credential(
                    &scope,
                    c.id,
                    "again",
                    about(&scope, Action::CredentialRevoke, &c)
                )
                .await
        ),
        Code::FailedPrecondition
    );
    assert_eq!(
        code(acme.rotate(store, &c, 2).await),
        Code::FailedPrecondition
    );
    assert_eq!(
        code(
            store
                .set_current_version(
                    &scope,
                    c.id,
                    1,
                    about(&scope, Action::CredentialRollback, &c)
                )
                .await
        ),
        Code::FailedPrecondition
    );
    assert_eq!(
        code(
            store
                .revoke_credential(
                    &scope,
                    CredentialId::generate(),
                    "x",
                    about(&scope, Action::CredentialRevoke, &c)
                )
                .await
        ),
        Code::NotFound
    );
    trail.expect_none().await;
    assert_eq!(
        store.get_credential(&scope, c.id).await.expect("get"),
        revoked
    );
    assert_eq!(
        store.list_versions(&scope, c.id).await.expect("versions"),
        versions
    );
}

/// Destruction drops every stored value and keeps the metadata.
pub async fn destroy_keeps_metadata(store: Arc<dyn Store>) {
    let store = &*store;
    let acme = create_tenant(store, "acme").await;
    let scope = acme.scope();
    let c = credential(&scope, "dev", "llm/openai");
    acme.store(store, &c).await.expect("create");
    acme.rotate(store, &c, 1).await.expect("v2");
    acme.rotate(store, &c, 2).await.expect("v3");
    let keep = credential(&scope, "dev", "llm/anthropic");
    acme.store(store, &keep).await.expect("create another");
    let mut trail = AuditTrail::start(store, scope).await;
    let before = store.get_credential(&scope, c.id).await.expect("get");

    let destroyed = store
        .destroy_credential(&scope, c.id, about(&scope, Action::CredentialDestroy, &c))
        .await
        .expect("destroy");
    trail.expect(Action::CredentialDestroy).await;
    assert!(destroyed.destroyed_at.is_some());
    assert_eq!(
        Credential {
            destroyed_at: None,
            updated_at: before.updated_at,
            ..destroyed.clone()
        },
        before,
        "metadata is kept"
    );
    assert_eq!(
        store
            .find_credential(&scope, &c.environment, &c.name)
            .await
            .expect("find"),
        destroyed
    );
    let versions = store.list_versions(&scope, c.id).await.expect("versions");
    assert_eq!(
        versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        vec![3, 2, 1]
    );
    assert!(versions.iter().all(|v| v.envelope.is_none()));
    assert_eq!(
        store
            .get_version(&scope, c.id, 2)
            .await
            .expect("v2")
            .envelope,
        None
    );

    assert_eq!(
        code(
            store
                .destroy_credential(&scope, c.id, about(&scope, Action::CredentialDestroy, &c))
                .await
        ),
        Code::FailedPrecondition
    );
    assert_eq!(
        code(acme.rotate(store, &c, 3).await),
        Code::FailedPrecondition
    );
    assert_eq!(
        code(
            store
                .set_current_version(
                    &scope,
                    c.id,
                    2,
                    about(&scope, Action::CredentialRollback, &c)
                )
                .await
        ),
        Code::FailedPrecondition
    );
    trail.expect_none().await;
    // Another credential keeps its value.
    let kept = store.get_version(&scope, keep.id, 1).await.expect("kept");
    assert_eq!(acme.open(&keep, &kept), "llm/anthropic-v1");
}

// ---- grants ----

/// Grants round-trip, are deleted once, and list by principal, role,
/// environment and covered name exactly as the policy matches them.
pub async fn grants_lifecycle_and_filters(store: Arc<dyn Store>) {
    let store = &*store;
    let acme = create_tenant(store, "acme").await;
    let other = create_tenant(store, "other").await;
    let scope = acme.scope();
    let p = acme.add_principal(store, "agent-p", Role::Agent).await;
    let q = acme.add_principal(store, "agent-q", Role::Agent).await;
    let mut trail = AuditTrail::start(store, scope).await;

    let mut g1 = grant(
        &acme,
        GrantSubject::Principal(p.id),
        "llm/openai",
        &["dev"],
        &[Capability::Reveal],
    );
    g1.reason = "support bot".into();
    let mut g2 = grant(
        &acme,
        GrantSubject::Principal(p.id),
        "llm/*",
        &["dev", "staging"],
        &[Capability::Inject],
    );
    g2.destinations = vec![Destination {
        host: "*.openai.com".into(),
        methods: vec!["POST".into()],
        path_prefixes: vec!["/v1/".into()],
        ..Default::default()
    }];
    g2.expires_at = Some(Timestamp::now().plus(Duration::from_secs(3600)));
    let g3 = grant(
        &acme,
        GrantSubject::Role(Role::Agent),
        "*",
        &["production"],
        &[Capability::List],
    );
    let g4 = grant(
        &acme,
        GrantSubject::Principal(q.id),
        "payments/*",
        &["dev"],
        &[Capability::Rotate, Capability::ReadMetadata],
    );
    let g5 = grant(
        &acme,
        GrantSubject::Role(Role::Operator),
        "llmx/openai",
        &["staging"],
        &[Capability::Admin],
    );
    let grants = [&g1, &g2, &g3, &g4, &g5];
    for g in grants {
        acme.add_grant(store, g).await;
        trail.expect(Action::GrantCreate).await;
        assert_eq!(&store.get_grant(&scope, g.id).await.expect("get"), g);
    }
    // Another tenant's grant that would match every filter.
    let theirs = grant(
        &other,
        GrantSubject::Role(Role::Agent),
        "*",
        &["dev", "staging", "production"],
        &[Capability::Admin],
    );
    other.add_grant(store, &theirs).await;

    let list = |filter: GrantFilter| async move {
        let items = all_items(2, |page| {
            let filter = filter.clone();
            async move { store.list_grants(&scope, &filter, &page).await }
        })
        .await;
        assert!(items.iter().all(|g| g.tenant == scope.tenant_id()));
        grant_ids(&items)
    };
    let f = GrantFilter::default;
    assert_eq!(list(f()).await, grants.map(|g| g.id).to_vec());
    assert_eq!(
        list(GrantFilter {
            principal: Some(p.id),
            ..f()
        })
        .await,
        vec![g1.id, g2.id]
    );
    assert_eq!(
        list(GrantFilter {
            principal: Some(q.id),
            ..f()
        })
        .await,
        vec![g4.id]
    );
    assert_eq!(
        list(GrantFilter {
            principal: Some(acme.admin().id),
            ..f()
        })
        .await,
        vec![]
    );
    assert_eq!(
        list(GrantFilter {
            role: Some(Role::Agent),
            ..f()
        })
        .await,
        vec![g3.id]
    );
    assert_eq!(
        list(GrantFilter {
            role: Some(Role::Operator),
            ..f()
        })
        .await,
        vec![g5.id]
    );
    assert_eq!(
        list(GrantFilter {
            role: Some(Role::Viewer),
            ..f()
        })
        .await,
        vec![]
    );
    assert_eq!(
        list(GrantFilter {
            environment: Some(env("dev")),
            ..f()
        })
        .await,
        vec![g1.id, g2.id, g4.id]
    );
    assert_eq!(
        list(GrantFilter {
            environment: Some(env("staging")),
            ..f()
        })
        .await,
        vec![g2.id, g5.id]
    );
    assert_eq!(
        list(GrantFilter {
            environment: Some(env("de")),
            ..f()
        })
        .await,
        vec![]
    );
    assert_eq!(
        list(GrantFilter {
            principal: Some(p.id),
            environment: Some(env("staging")),
            ..f()
        })
        .await,
        vec![g2.id]
    );
    // `covering` agrees with the policy's own selector matching.
    for name in [
        "llm/openai",
        "llm/anthropic",
        "llm/a/b",
        "llm",
        "llmx/openai",
        "payments/stripe",
        "paymentsx",
        "other",
    ] {
        let n = cname(name);
        let expected: Vec<GrantId> = grants
            .iter()
            .filter(|g| g.selector.matches(&n))
            .map(|g| g.id)
            .collect();
        assert_eq!(
            list(GrantFilter {
                covering: Some(n),
                ..f()
            })
            .await,
            expected,
            "covering {name}"
        );
    }
    assert_eq!(
        list(GrantFilter {
            covering: Some(cname("llm/openai")),
            ..f()
        })
        .await,
        vec![g1.id, g2.id, g3.id],
        "exact, llm/* and *"
    );
    assert_eq!(
        list(GrantFilter {
            covering: Some(cname("llmx/openai")),
            ..f()
        })
        .await,
        vec![g3.id, g5.id],
        "llm/* does not cover llmx/"
    );

    store
        .delete_grant(&scope, g1.id, draft(&scope, Action::GrantRevoke))
        .await
        .expect("delete");
    trail.expect(Action::GrantRevoke).await;
    assert_eq!(code(store.get_grant(&scope, g1.id).await), Code::NotFound);
    assert_eq!(
        code(
            store
                .delete_grant(&scope, g1.id, draft(&scope, Action::GrantRevoke))
                .await
        ),
        Code::NotFound
    );
    assert_eq!(
        code(store.get_grant(&scope, GrantId::generate()).await),
        Code::NotFound
    );
    trail.expect_none().await;
    assert_eq!(list(f()).await, vec![g2.id, g3.id, g4.id, g5.id]);
}

/// `grants_for` returns a principal's direct grants and its role's, and
/// nobody else's.
pub async fn grants_for_direct_and_role(store: Arc<dyn Store>) {
    let store = &*store;
    let acme = create_tenant(store, "acme").await;
    let other = create_tenant(store, "other").await;
    let scope = acme.scope();
    let p = acme.add_principal(store, "agent-p", Role::Agent).await;
    let q = acme.add_principal(store, "agent-q", Role::Agent).await;
    let op = acme.add_principal(store, "operator", Role::Operator).await;
    let mut expired = grant(
        &acme,
        GrantSubject::Principal(p.id),
        "llm/old",
        &["dev"],
        &[Capability::Reveal],
    );
    expired.expires_at = Some(Timestamp::now().minus(Duration::from_secs(60)));
    let direct = grant(
        &acme,
        GrantSubject::Principal(p.id),
        "llm/*",
        &["dev"],
        &[Capability::Inject],
    );
    let agents = grant(
        &acme,
        GrantSubject::Role(Role::Agent),
        "*",
        &["dev"],
        &[Capability::List],
    );
    let for_q = grant(
        &acme,
        GrantSubject::Principal(q.id),
        "*",
        &["dev"],
        &[Capability::Reveal],
    );
    let operators = grant(
        &acme,
        GrantSubject::Role(Role::Operator),
        "*",
        &["dev"],
        &[Capability::Reveal],
    );
    for g in [&expired, &direct, &agents, &for_q, &operators] {
        acme.add_grant(store, g).await;
    }
    // The other tenant grants its agents too, and even names p's id.
    for g in [
        grant(
            &other,
            GrantSubject::Role(Role::Agent),
            "*",
            &["dev"],
            &[Capability::Admin],
        ),
        grant(
            &other,
            GrantSubject::Principal(p.id),
            "*",
            &["dev"],
            &[Capability::Admin],
        ),
    ] {
        other.add_grant(store, &g).await;
    }

    let of =
        |who| async move { grant_ids(&store.grants_for(&scope, who).await.expect("grants_for")) };
    assert_eq!(
        of(&p).await,
        vec![expired.id, direct.id, agents.id],
        "expired grants included"
    );
    assert_eq!(of(&q).await, vec![agents.id, for_q.id]);
    assert_eq!(of(&op).await, vec![operators.id]);
    assert_eq!(of(acme.admin()).await, vec![]);
}

// ---- audit ----

/// Every mutation appends exactly one event; the chain is 1..=n without
/// gaps, verifies end to end, and stores every field as given.
pub async fn audit_chain_records_every_mutation(store: Arc<dyn Store>) {
    let store = &*store;
    let acme = create_tenant_with(store, "acme", retention(2)).await;
    let scope = acme.scope();
    let mut trail = AuditTrail::start(store, scope).await;
    assert_eq!(trail.len(), 1, "the tenant's creation is its first event");
    acme.claim(store, "spiffe://x/*").await.expect("namespace");
    trail.expect(Action::TenantNamespaces).await;

    store
        .update_tenant_settings(&scope, &retention(5), draft(&scope, Action::TenantSettings))
        .await
        .expect("settings");
    trail.expect(Action::TenantSettings).await;
    assert_eq!(
        store
            .tenant(&scope)
            .await
            .expect("tenant")
            .settings
            .version_retention,
        5
    );
    let kek2 = WrappedKekRecord {
        tenant: acme.id(),
        version: 2,
        wrapped: vec![1; 60],
        created_at: Timestamp::now(),
    };
    let t = store
        .add_kek(&scope, &kek2, draft(&scope, Action::TenantKeyRotate))
        .await
        .expect("kek");
    trail.expect(Action::TenantKeyRotate).await;
    assert_eq!(t.current_kek_version, 2);
    assert_eq!(
        store
            .keks(&scope)
            .await
            .expect("keks")
            .iter()
            .map(|k| k.version)
            .collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert_eq!(
        code(
            store
                .add_kek(&scope, &kek2, draft(&scope, Action::TenantKeyRotate))
                .await
        ),
        Code::AlreadyExists
    );
    trail.expect_none().await;

    store
        .create_environment(&scope, &env("qa"), draft(&scope, Action::EnvironmentCreate))
        .await
        .expect("env");
    trail.expect(Action::EnvironmentCreate).await;
    let p = acme.add_principal(store, "agent", Role::Agent).await;
    trail.expect(Action::PrincipalCreate).await;
    let b = acme
        .bind(store, p.id, "spiffe://x/agent")
        .await
        .expect("bind");
    trail.expect(Action::BindingCreate).await;
    store
        .set_principal_status(
            &scope,
            p.id,
            PrincipalStatus::Disabled,
            draft(&scope, Action::PrincipalStatus),
        )
        .await
        .expect("disable");
    trail.expect(Action::PrincipalStatus).await;
    store
        .delete_binding(&scope, b.id, draft(&scope, Action::BindingDelete))
        .await
        .expect("unbind");
    trail.expect(Action::BindingDelete).await;
    let c = credential(&scope, "qa", "llm/openai");
    acme.store(store, &c).await.expect("create");
    trail.expect(Action::CredentialCreate).await;
    acme.rotate(store, &c, 1).await.expect("rotate");
    trail.expect(Action::CredentialRotate).await;
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
    let g = grant(
        &acme,
        GrantSubject::Principal(p.id),
        "llm/*",
        &["qa"],
        &[Capability::Inject],
    );
    acme.add_grant(store, &g).await;
    trail.expect(Action::GrantCreate).await;
    store
        .delete_grant(&scope, g.id, draft(&scope, Action::GrantRevoke))
        .await
        .expect("ungrant");
    trail.expect(Action::GrantRevoke).await;
    store
        .revoke_credential(
            &scope,
            c.id,
            "done",
            about(&scope, Action::CredentialRevoke, &c),
        )
        .await
        .expect("revoke");
    trail.expect(Action::CredentialRevoke).await;
    store
        .destroy_credential(&scope, c.id, about(&scope, Action::CredentialDestroy, &c))
        .await
        .expect("destroy");
    trail.expect(Action::CredentialDestroy).await;

    // A fully populated draft round-trips field by field.
    let mut full = AuditDraft::new(
        Action::CredentialReveal,
        Outcome::Denied,
        "NO_MATCHING_GRANT",
    );
    full.principal = Some(p.id);
    full.actor = "agent".into();
    full.on_behalf_of = Some("user-7".into());
    full.credential = Some(c.id);
    full.credential_name = Some(c.name.to_string());
    full.version = Some(2);
    full.environment = Some("qa".into());
    full.purpose = Some("answer a ticket".into());
    full.peer = Some("10.0.0.7:50123".into());
    full.request_id = Some("req-1".into());
    full.trace_id = Some("0af7651916cd43dd8448eb211c80319c".into());
    full.detail = Some(strongroom_core::audit::AuditDetail::Lease {
        lease_id: strongroom_core::ids::LeaseId::generate(),
        ttl_secs: 300,
        grant: Some(strongroom_core::ids::GrantId::generate()),
    });
    let appended = store
        .append_audit(&scope, full.clone())
        .await
        .expect("append");
    assert_eq!(trail.expect(Action::CredentialReveal).await, appended);
    assert_eq!(appended.draft, full);

    store
        .delete_environment(
            &scope,
            &env("staging"),
            draft(&scope, Action::EnvironmentDelete),
        )
        .await
        .expect("delete env");
    trail.expect(Action::EnvironmentDelete).await;

    let log = audit_log(store, &scope).await;
    let n = trail.len();
    assert_eq!(log.len() as u64, n);
    assert_eq!(
        log.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        (1..=n).collect::<Vec<_>>()
    );
    assert_eq!(log[0].draft.action, Action::TenantCreate);
    assert_eq!(log[0].draft.actor, format!("platform:{}", OPERATOR));
    assert_eq!(log[0].prev_hash, GENESIS_HASH);
    let mut verifier = ChainVerifier::default();
    for e in &log {
        assert_eq!(e.tenant, acme.id());
        verifier
            .push(e)
            .unwrap_or_else(|b| panic!("chain breaks at {}: {}", b.sequence, b.reason));
    }
    assert_eq!(verifier.checked(), n);
    assert_eq!(verifier.head(), log.last().expect("events").hash);

    // Reading in slices gives the same events.
    let mut sliced = Vec::new();
    let mut after = 0;
    loop {
        let chunk = store.audit_after(&scope, after, 4).await.expect("slice");
        if chunk.is_empty() {
            break;
        }
        assert!(chunk.len() <= 4);
        after = chunk.last().expect("chunk").sequence;
        sliced.extend(chunk);
    }
    assert_eq!(sliced, log);
}

/// `query_audit` filters by action, outcome, credential, principal and time,
/// newest first, in pages without gaps.
pub async fn audit_query_filters_and_pages(store: Arc<dyn Store>) {
    let store = &*store;
    let acme = create_tenant(store, "acme").await;
    let scope = acme.scope();
    let p = acme.add_principal(store, "agent", Role::Agent).await;
    let c1 = credential(&scope, "dev", "llm/openai");
    let c2 = credential(&scope, "dev", "llm/anthropic");
    acme.store(store, &c1).await.expect("create");
    acme.store(store, &c2).await.expect("create");
    let mid = Timestamp::now();
    for i in 0..6u32 {
        let target = if i % 2 == 0 { &c1 } else { &c2 };
        let (outcome, reason) = if i % 3 == 0 {
            (Outcome::Denied, "NO_MATCHING_GRANT")
        } else {
            (Outcome::Allowed, "ALLOWED_BY_GRANT")
        };
        let mut d = AuditDraft::new(Action::CredentialReveal, outcome, reason);
        d.principal = Some(p.id);
        d.actor = "agent".into();
        d.credential = Some(target.id);
        d.environment = match i {
            3 => Some("production".into()),
            _ if i % 2 == 0 => Some("dev".into()),
            _ => None,
        };
        d.at = mid.plus(Duration::from_secs(u64::from(i) + 1));
        store.append_audit(&scope, d).await.expect("append");
    }
    let log = audit_log(store, &scope).await;
    assert_eq!(log.len(), 10);

    let query = |filter: AuditFilter| async move {
        let items = all_items(3, |page| {
            let filter = filter.clone();
            async move { store.query_audit(&scope, &filter, &page).await }
        })
        .await;
        items.iter().map(|e| e.sequence).collect::<Vec<u64>>()
    };
    let expect = |keep: &dyn Fn(&AuditEvent) -> bool| {
        log.iter()
            .rev()
            .filter(|e| keep(e))
            .map(|e| e.sequence)
            .collect::<Vec<u64>>()
    };
    let f = AuditFilter::default;
    assert_eq!(
        query(f()).await,
        (1..=10).rev().collect::<Vec<u64>>(),
        "newest first, all pages"
    );
    let pages = all_pages(4, |page| async move {
        store
            .query_audit(&scope, &AuditFilter::default(), &page)
            .await
    })
    .await;
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![4, 4, 2]
    );
    assert_eq!(
        query(AuditFilter {
            action: Some(Action::CredentialReveal),
            ..f()
        })
        .await,
        expect(&|e| e.draft.action == Action::CredentialReveal)
    );
    assert_eq!(
        query(AuditFilter {
            action: Some(Action::CredentialCreate),
            ..f()
        })
        .await,
        vec![4, 3]
    );
    assert!(
        query(AuditFilter {
            action: Some(Action::GrantCreate),
            ..f()
        })
        .await
        .is_empty()
    );
    assert_eq!(
        query(AuditFilter {
            outcome: Some(Outcome::Denied),
            ..f()
        })
        .await,
        expect(&|e| e.draft.outcome == Outcome::Denied)
    );
    assert_eq!(
        query(AuditFilter {
            outcome: Some(Outcome::Denied),
            ..f()
        })
        .await
        .len(),
        2
    );
    assert_eq!(
        query(AuditFilter {
            credential: Some(c1.id),
            ..f()
        })
        .await,
        expect(&|e| e.draft.credential == Some(c1.id))
    );
    // Confinement: only events in the listed environments, never events of
    // no environment.
    for envs in [
        vec![env("dev")],
        vec![env("dev"), env("production")],
        vec![],
    ] {
        let names: Vec<String> = envs.iter().map(ToString::to_string).collect();
        assert_eq!(
            query(AuditFilter {
                environments: Some(envs.clone()),
                ..f()
            })
            .await,
            expect(&|e| e
                .draft
                .environment
                .as_ref()
                .is_some_and(|x| names.contains(x))),
            "environments {names:?}"
        );
    }
    let dev_only = query(AuditFilter {
        environments: Some(vec![env("dev")]),
        ..f()
    })
    .await;
    assert!(dev_only.len() >= 3 && dev_only.len() < 10, "{dev_only:?}");
    assert_eq!(
        query(AuditFilter {
            principal: Some(p.id),
            ..f()
        })
        .await,
        expect(&|e| e.draft.principal == Some(p.id))
    );
    assert_eq!(
        query(AuditFilter {
            principal: Some(p.id),
            ..f()
        })
        .await
        .len(),
        6
    );
    assert_eq!(
        query(AuditFilter {
            principal: Some(acme.admin().id),
            ..f()
        })
        .await,
        expect(&|e| e.draft.principal == Some(acme.admin().id))
    );
    let since = mid.plus(Duration::from_secs(3));
    let until = mid.plus(Duration::from_secs(5));
    assert_eq!(
        query(AuditFilter {
            since: Some(since),
            until: Some(until),
            ..f()
        })
        .await,
        expect(&|e| e.draft.at >= since && e.draft.at < until)
    );
    assert_eq!(
        query(AuditFilter {
            since: Some(since),
            until: Some(until),
            ..f()
        })
        .await
        .len(),
        2
    );
    assert_eq!(
        query(AuditFilter {
            credential: Some(c2.id),
            outcome: Some(Outcome::Allowed),
            action: Some(Action::CredentialReveal),
            principal: Some(p.id),
            ..f()
        })
        .await,
        expect(&|e| e.draft.credential == Some(c2.id)
            && e.draft.outcome == Outcome::Allowed
            && e.draft.action == Action::CredentialReveal)
    );
    let bad = PageRequest {
        size: 5,
        after: Some("x".into()),
    };
    assert_eq!(
        code(
            store
                .query_audit(&scope, &AuditFilter::default(), &bad)
                .await
        ),
        Code::InvalidArgument
    );
}

/// Each tenant has its own chain from sequence 1; writes in one never show
/// in or disturb the other.
pub async fn audit_chains_are_per_tenant(store: Arc<dyn Store>) {
    let store = &*store;
    let a = create_tenant(store, "alpha").await;
    let b = create_tenant(store, "beta").await;
    let mut trail_a = AuditTrail::start(store, a.scope()).await;
    let mut trail_b = AuditTrail::start(store, b.scope()).await;
    assert_eq!((trail_a.len(), trail_b.len()), (1, 1));
    for i in 0..3 {
        let ca = credential(&a.scope(), "dev", &format!("c{i}"));
        a.store(store, &ca).await.expect("create in a");
        trail_a.expect(Action::CredentialCreate).await;
        trail_b.expect_none().await;
        if i == 1 {
            let cb = credential(&b.scope(), "dev", "only-b");
            b.store(store, &cb).await.expect("create in b");
            trail_b.expect(Action::CredentialCreate).await;
            trail_a.expect_none().await;
        }
    }
    let log_a = audit_log(store, &a.scope()).await;
    let log_b = audit_log(store, &b.scope()).await;
    assert_eq!(
        log_a.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert_eq!(
        log_b.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert!(log_a.iter().all(|e| e.tenant == a.id()));
    assert!(log_b.iter().all(|e| e.tenant == b.id()));
    assert_eq!(log_a[0].prev_hash, GENESIS_HASH);
    assert_eq!(log_b[0].prev_hash, GENESIS_HASH);
    assert_ne!(log_a[0].hash, log_b[0].hash);
    for log in [&log_a, &log_b] {
        let mut v = ChainVerifier::default();
        for e in log {
            v.push(e)
                .unwrap_or_else(|br| panic!("chain breaks at {}: {}", br.sequence, br.reason));
        }
    }
    let queried = store
        .query_audit(&a.scope(), &AuditFilter::default(), &PageRequest::default())
        .await
        .expect("query");
    assert_eq!(queried.items.len(), 4);
    assert!(queried.items.iter().all(|e| e.tenant == a.id()));
}

// ---- isolation through the API ----

/// A tenant cannot read, find, list, rotate, roll back, revoke or destroy
/// another tenant's credential, by id or by name; none of the attempts
/// changes anything.
pub async fn cross_tenant_credentials_are_invisible(store: Arc<dyn Store>) {
    let store = &*store;
    let a = create_tenant(store, "alpha").await;
    let b = create_tenant(store, "beta").await;
    let (sa, sb) = (a.scope(), b.scope());
    let cb = credential(&sb, "dev", "payments/stripe");
    b.store(store, &cb).await.expect("create b");
    b.rotate(store, &cb, 1).await.expect("rotate b");
    let shared_b = credential(&sb, "dev", "llm/openai");
    b.store(store, &shared_b).await.expect("create b");
    let shared_a = credential(&sa, "dev", "llm/openai");
    a.store(store, &shared_a).await.expect("create a");
    let b_before = store.get_credential(&sb, cb.id).await.expect("b");
    let b_versions = store.list_versions(&sb, cb.id).await.expect("b versions");
    let trail_a = AuditTrail::start(store, sa).await;
    let trail_b = AuditTrail::start(store, sb).await;

    assert_eq!(code(store.get_credential(&sa, cb.id).await), Code::NotFound);
    assert_eq!(
        code(store.find_credential(&sa, &env("dev"), &cb.name).await),
        Code::NotFound
    );
    assert_eq!(
        store
            .find_credential(&sa, &env("dev"), &cname("llm/openai"))
            .await
            .expect("own")
            .id,
        shared_a.id,
        "the same name resolves to the caller's own credential"
    );
    let listed = store
        .list_credentials(&sa, &CredentialFilter::default(), &PageRequest::default())
        .await
        .expect("list");
    assert_eq!(ids(&listed.items), vec![shared_a.id]);
    assert_eq!(code(store.list_versions(&sa, cb.id).await), Code::NotFound);
    assert_eq!(code(store.get_version(&sa, cb.id, 1).await), Code::NotFound);
    assert_eq!(code(store.get_version(&sa, cb.id, 2).await), Code::NotFound);
    // A's scope, B's credential id: every write is NotFound.
    let forged = Credential {
        tenant: a.id(),
        ..cb.clone()
    };
    assert_eq!(code(a.rotate(store, &forged, 2).await), Code::NotFound);
    assert_eq!(
        code(
            store
                .set_current_version(&sa, cb.id, 1, about(&sa, Action::CredentialRollback, &cb))
                .await
        ),
        Code::NotFound
    );
    assert_eq!(
        code(
            store
                .revoke_credential(
                    &sa,
                    cb.id,
                    "hostile",
                    about(&sa, Action::CredentialRevoke, &cb)
                )
                .await
        ),
        Code::NotFound
    );
    assert_eq!(
        code(
            store
                .destroy_credential(&sa, cb.id, about(&sa, Action::CredentialDestroy, &cb))
                .await
        ),
        Code::NotFound
    );
    // A credential claiming to be B's cannot be created through A's scope.
    let planted = credential(&sb, "dev", "planted");
    let first = b.seal(&planted, 1, "x");
    assert!(
        store
            .create_credential(
                &sa,
                &planted,
                &first,
                about(&sa, Action::CredentialCreate, &planted)
            )
            .await
            .is_err()
    );
    trail_a.expect_none().await;
    trail_b.expect_none().await;

    assert_eq!(store.get_credential(&sb, cb.id).await.expect("b"), b_before);
    assert_eq!(
        store.list_versions(&sb, cb.id).await.expect("b versions"),
        b_versions
    );
    assert_eq!(
        code(store.find_credential(&sb, &env("dev"), &planted.name).await),
        Code::NotFound
    );
    assert_eq!(b.open(&cb, &b_versions[0]), "payments/stripe-v2");
    let b_listed = store
        .list_credentials(&sb, &CredentialFilter::default(), &PageRequest::default())
        .await
        .expect("list b");
    assert_eq!(ids(&b_listed.items), vec![cb.id, shared_b.id]);
    trail_b.expect_none().await;
    trail_a.expect_none().await;
}

/// A tenant cannot see or change another tenant's principals, bindings,
/// grants, environments, keys or audit events.
pub async fn cross_tenant_principals_grants_and_audit_are_invisible(store: Arc<dyn Store>) {
    let store = &*store;
    let a = create_tenant(store, "alpha").await;
    let b = create_tenant(store, "beta").await;
    let (sa, sb) = (a.scope(), b.scope());
    let b_agent = b.add_principal(store, "agent", Role::Agent).await;
    let b_binding = b
        .bind(store, b_agent.id, "spiffe://beta/agent")
        .await
        .expect("bind");
    let b_grant = grant(
        &b,
        GrantSubject::Principal(b_agent.id),
        "*",
        &["dev"],
        &[Capability::Reveal],
    );
    b.add_grant(store, &b_grant).await;
    store
        .create_environment(
            &sb,
            &env("beta-only"),
            draft(&sb, Action::EnvironmentCreate),
        )
        .await
        .expect("env");
    let cb = credential(&sb, "dev", "llm/openai");
    b.store(store, &cb).await.expect("credential");
    let b_log = audit_log(store, &sb).await;
    let trail_a = AuditTrail::start(store, sa).await;

    // Principals.
    assert_eq!(
        code(store.get_principal(&sa, b_agent.id).await),
        Code::NotFound
    );
    assert_eq!(
        code(store.get_principal(&sa, b.admin().id).await),
        Code::NotFound
    );
    let principals = store
        .list_principals(&sa, &PageRequest::default())
        .await
        .expect("list");
    assert_eq!(principals.items, vec![a.admin().clone()]);
    assert_eq!(
        code(
            store
                .set_principal_status(
                    &sa,
                    b_agent.id,
                    PrincipalStatus::Disabled,
                    draft(&sa, Action::PrincipalStatus)
                )
                .await
        ),
        Code::NotFound
    );
    // Bindings.
    let bindings = store
        .list_bindings(&sa, None, &PageRequest::default())
        .await
        .expect("list");
    assert!(bindings.items.iter().all(|x| x.tenant == a.id()));
    assert_eq!(bindings.items.len(), 1);
    assert!(
        store
            .list_bindings(&sa, Some(b_agent.id), &PageRequest::default())
            .await
            .expect("list")
            .items
            .is_empty()
    );
    assert_eq!(
        code(
            store
                .delete_binding(&sa, b_binding.id, draft(&sa, Action::BindingDelete))
                .await
        ),
        Code::NotFound
    );
    let hijack = binding(a.id(), b_agent.id, "spiffe://test/alpha/hijack");
    assert_eq!(
        code(
            store
                .create_binding(&sa, &hijack, draft(&sa, Action::BindingCreate))
                .await
        ),
        Code::NotFound,
        "a binding cannot point at another tenant's principal"
    );
    // Grants.
    assert_eq!(code(store.get_grant(&sa, b_grant.id).await), Code::NotFound);
    assert_eq!(
        code(
            store
                .delete_grant(&sa, b_grant.id, draft(&sa, Action::GrantRevoke))
                .await
        ),
        Code::NotFound
    );
    assert!(
        store
            .list_grants(&sa, &GrantFilter::default(), &PageRequest::default())
            .await
            .expect("list")
            .items
            .is_empty()
    );
    assert!(
        store
            .grants_for(&sa, &b_agent)
            .await
            .expect("grants_for")
            .is_empty()
    );
    let planted = grant(
        &b,
        GrantSubject::Role(Role::Agent),
        "*",
        &["dev"],
        &[Capability::Admin],
    );
    assert!(
        store
            .create_grant(&sa, &planted, draft(&sa, Action::GrantCreate))
            .await
            .is_err()
    );
    let planted_principal = principal(b.id(), "planted", Role::Admin);
    assert!(
        store
            .create_principal(&sa, &planted_principal, draft(&sa, Action::PrincipalCreate))
            .await
            .is_err()
    );
    // Environments and keys.
    assert!(
        !store
            .list_environments(&sa)
            .await
            .expect("envs")
            .contains(&env("beta-only"))
    );
    assert_eq!(
        code(
            store
                .delete_environment(
                    &sa,
                    &env("beta-only"),
                    draft(&sa, Action::EnvironmentDelete)
                )
                .await
        ),
        Code::NotFound
    );
    assert!(
        store
            .keks(&sa)
            .await
            .expect("keks")
            .iter()
            .all(|k| k.tenant == a.id())
    );
    assert_eq!(store.tenant(&sa).await.expect("tenant").id, a.id());
    // Audit.
    let log_a = audit_log(store, &sa).await;
    assert!(log_a.iter().all(|e| e.tenant == a.id()));
    for filter in [
        AuditFilter {
            credential: Some(cb.id),
            ..AuditFilter::default()
        },
        AuditFilter {
            principal: Some(b.admin().id),
            ..AuditFilter::default()
        },
        AuditFilter {
            action: Some(Action::GrantCreate),
            ..AuditFilter::default()
        },
    ] {
        let found = store
            .query_audit(&sa, &filter, &PageRequest::default())
            .await
            .expect("query");
        assert!(
            found.items.is_empty(),
            "{filter:?} shows another tenant's events"
        );
    }
    trail_a.expect_none().await;

    // B is untouched.
    assert_eq!(audit_log(store, &sb).await, b_log);
    assert_eq!(
        store.get_principal(&sb, b_agent.id).await.expect("b agent"),
        b_agent
    );
    assert_eq!(
        store.get_grant(&sb, b_grant.id).await.expect("b grant"),
        b_grant
    );
    assert!(
        store
            .list_environments(&sb)
            .await
            .expect("envs")
            .contains(&env("beta-only"))
    );
    let still = authenticate(store, "spiffe://beta/agent")
        .await
        .expect("b's binding still works");
    assert_eq!(still.principal().map(|p| p.id), Some(b_agent.id));
    assert_eq!(
        code(store.get_principal(&sb, planted_principal.id).await),
        Code::NotFound
    );
    assert_eq!(code(store.get_grant(&sb, planted.id).await), Code::NotFound);
}

/// A page token taken from one tenant's listing, used in another tenant,
/// continues only over the caller's own rows.
pub async fn foreign_page_tokens_return_only_own_rows(store: Arc<dyn Store>) {
    let store = &*store;
    let a = create_tenant(store, "alpha").await;
    let b = create_tenant(store, "beta").await;
    let (sa, sb) = (a.scope(), b.scope());
    let mut a_creds = Vec::new();
    let mut a_grants = Vec::new();
    let mut a_principals = vec![a.admin().id];
    for i in 0..4 {
        let cb = credential(&sb, "dev", &format!("b{i}"));
        b.store(store, &cb).await.expect("b");
        let ca = credential(&sa, "dev", &format!("a{i}"));
        a.store(store, &ca).await.expect("a");
        a_creds.push(ca.id);
        let gb = grant(
            &b,
            GrantSubject::Role(Role::Agent),
            "*",
            &["dev"],
            &[Capability::List],
        );
        b.add_grant(store, &gb).await;
        let ga = grant(
            &a,
            GrantSubject::Role(Role::Agent),
            "*",
            &["dev"],
            &[Capability::List],
        );
        a.add_grant(store, &ga).await;
        a_grants.push(ga.id);
        b.add_principal(store, &format!("b{i}"), Role::Agent).await;
        a_principals.push(
            a.add_principal(store, &format!("a{i}"), Role::Agent)
                .await
                .id,
        );
    }
    let b_token = |next: Option<String>| PageRequest {
        size: 50,
        after: next,
    };

    let b_page = store
        .list_credentials(&sb, &CredentialFilter::default(), &PageRequest::first(1))
        .await
        .expect("b page");
    let from_b = store
        .list_credentials(&sa, &CredentialFilter::default(), &b_token(b_page.next))
        .await
        .expect("a with b's token");
    assert!(from_b.items.iter().all(|c| c.tenant == a.id()));
    assert!(!from_b.items.is_empty());
    assert!(ids(&from_b.items).iter().all(|id| a_creds.contains(id)));

    let b_page = store
        .list_grants(&sb, &GrantFilter::default(), &PageRequest::first(1))
        .await
        .expect("b page");
    let from_b = store
        .list_grants(&sa, &GrantFilter::default(), &b_token(b_page.next))
        .await
        .expect("a grants");
    assert!(!from_b.items.is_empty());
    assert!(
        from_b
            .items
            .iter()
            .all(|g| g.tenant == a.id() && a_grants.contains(&g.id))
    );

    let b_page = store
        .list_principals(&sb, &PageRequest::first(1))
        .await
        .expect("b page");
    let from_b = store
        .list_principals(&sa, &b_token(b_page.next))
        .await
        .expect("a principals");
    assert!(!from_b.items.is_empty());
    assert!(
        from_b
            .items
            .iter()
            .all(|p| p.tenant == a.id() && a_principals.contains(&p.id))
    );

    let b_page = store
        .list_bindings(&sb, None, &PageRequest::first(1))
        .await
        .expect("b page");
    let from_b = store
        .list_bindings(&sa, None, &b_token(b_page.next))
        .await
        .expect("a bindings");
    assert!(from_b.items.iter().all(|x| x.tenant == a.id()));

    let b_page = store
        .query_audit(&sb, &AuditFilter::default(), &PageRequest::first(1))
        .await
        .expect("b page");
    let from_b = store
        .query_audit(&sa, &AuditFilter::default(), &b_token(b_page.next))
        .await
        .expect("a audit");
    assert!(!from_b.items.is_empty());
    assert!(from_b.items.iter().all(|e| e.tenant == a.id()));
}

// ---- concurrency and server metadata ----

/// Concurrent writers stay consistent: of several rotations expecting the
/// same latest version exactly one wins and the rest write nothing, and
/// concurrent audit appends keep the chain gapless.
pub async fn concurrent_writers_stay_consistent(store: Arc<dyn Store>) {
    let store = &*store;
    let acme = create_tenant(store, "acme").await;
    let scope = acme.scope();
    let c = credential(&scope, "dev", "llm/openai");
    acme.store(store, &c).await.expect("create");
    let mut trail = AuditTrail::start(store, scope).await;

    let (r1, r2, r3, r4) = tokio::join!(
        acme.rotate(store, &c, 1),
        acme.rotate(store, &c, 1),
        acme.rotate(store, &c, 1),
        acme.rotate(store, &c, 1),
    );
    let outcomes = [r1, r2, r3, r4].map(|r| r.map(|c| c.latest_version).map_err(|e| Code::of(&e)));
    assert_eq!(
        outcomes.iter().filter(|o| **o == Ok(2)).count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| **o == Err(Code::FailedPrecondition))
            .count(),
        3,
        "{outcomes:?}"
    );
    trail.expect(Action::CredentialRotate).await;
    let kept: Vec<u32> = store
        .list_versions(&scope, c.id)
        .await
        .expect("versions")
        .iter()
        .map(|v| v.version)
        .collect();
    assert_eq!(kept, vec![2, 1]);

    let append = |i: u32| {
        let mut d = draft(&scope, Action::Other);
        d.detail = marked(format!("concurrent {i}"));
        store.append_audit(&scope, d)
    };
    let (a1, a2, a3, a4, a5, a6) = tokio::join!(
        append(1),
        append(2),
        append(3),
        append(4),
        append(5),
        append(6)
    );
    let mut sequences: Vec<u64> = [a1, a2, a3, a4, a5, a6]
        .into_iter()
        .map(|r| r.expect("append").sequence)
        .collect();
    sequences.sort_unstable();
    let start = trail.len() + 1;
    assert_eq!(sequences, (start..start + 6).collect::<Vec<_>>());
    let log = audit_log(store, &scope).await;
    let mut v = ChainVerifier::default();
    for e in &log {
        v.push(e)
            .unwrap_or_else(|b| panic!("chain breaks at {}: {}", b.sequence, b.reason));
    }
    assert_eq!(v.checked(), trail.len() + 6);
}

/// Server-wide metadata is written once: the first value stays.
pub async fn server_meta_is_written_once(store: Arc<dyn Store>) {
    use strongroom_core::store::meta;
    let store = &*store;
    let check = strongroom_crypto::RootKey::generate()
        .and_then(|k| k.key_check())
        .expect("key check")
        .to_bytes();
    assert_eq!(store.get_meta(meta::KEY_CHECK).await.expect("get"), None);
    assert!(
        store
            .put_meta_if_absent(meta::KEY_CHECK, &check)
            .await
            .expect("put")
    );
    assert!(
        !store
            .put_meta_if_absent(meta::KEY_CHECK, b"another root key")
            .await
            .expect("put again")
    );
    assert_eq!(
        store.get_meta(meta::KEY_CHECK).await.expect("get"),
        Some(check)
    );
    assert_eq!(store.get_meta(meta::KDF_PARAMS).await.expect("get"), None);
    assert!(
        store
            .put_meta_if_absent(meta::KDF_PARAMS, b"{}")
            .await
            .expect("put")
    );
    assert_eq!(
        store.get_meta(meta::KDF_PARAMS).await.expect("get"),
        Some(b"{}".to_vec())
    );
}
