//! Identity namespaces: a platform operator assigns each tenant the
//! identities its admins may bind. A tenant admin cannot capture identities
//! outside them (`spiffe://*`, `s*`, another team's workloads), refusals
//! reveal nothing of other tenants, and overlapping assignments are refused
//! even when they race.

use std::collections::BTreeSet;

use strongroom_client::Client;
use strongroom_e2e::{Backend, CertKind, Options, TestServer, expect_code};
use strongroom_proto::v1 as pb;

on_both_backends!(
    capture_is_refused,
    namespace_moves_take_their_bindings_along,
    overlapping_assignments_race,
    namespace_rules_at_creation,
    migration_derives_namespaces_and_disables_broad_bindings
);

async fn bind(
    client: &Client,
    principal_id: &str,
    identity: &str,
) -> Result<pb::CreateIdentityBindingResponse, tonic::Status> {
    client
        .admin()
        .create_identity_binding(pb::CreateIdentityBindingRequest {
            principal_id: principal_id.into(),
            identity: identity.into(),
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn who(client: &Client) -> Result<pb::WhoAmIResponse, tonic::Status> {
    client
        .admin()
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .map(tonic::Response::into_inner)
}

async fn set_namespaces(
    operator: &Client,
    tenant_id: &str,
    namespaces: &[String],
) -> Result<pb::SetIdentityNamespacesResponse, tonic::Status> {
    operator
        .admin()
        .set_identity_namespaces(pb::SetIdentityNamespacesRequest {
            tenant_id: tenant_id.into(),
            identity_namespaces: namespaces.to_vec(),
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn bare_tenant(
    operator: &Client,
    name: &str,
    namespaces: &[String],
) -> Result<pb::Tenant, tonic::Status> {
    operator
        .admin()
        .create_tenant(pb::CreateTenantRequest {
            name: name.into(),
            identity_namespaces: namespaces.to_vec(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().tenant.expect("tenant"))
}

async fn capture_is_refused(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = server
        .tenant_with("acme", &["spiffe://mesh/ns/acme/*"])
        .await;
    let globex = server
        .tenant_with("globex", &["spiffe://mesh/ns/globex/*", "globex-*"])
        .await;
    let (acme_agent, _) = server.principal(&acme, "agent", pb::Role::Agent).await;
    let (globex_agent, _) = server.principal(&globex, "agent", pb::Role::Agent).await;
    bind(&acme.client, &acme_agent, "spiffe://mesh/ns/acme/sa/*")
        .await
        .expect("acme binds inside its namespace");

    // globex's admin can bind nothing outside globex's namespaces: not the
    // whole mesh, not every identity starting with `s`, not acme's
    // workloads (bound or not), not identities no tenant owns. Every
    // refusal is the same code and the same message, so none says whether
    // another tenant owns the identity.
    let mut messages = BTreeSet::new();
    for identity in [
        "spiffe://*",
        "s*",
        "spiffe://mesh/*",
        "spiffe://mesh/ns/*",
        "spiffe://mesh/ns/acme/*",
        "spiffe://mesh/ns/acme/sa/worker",
        "spiffe://mesh/ns/acme/sa/*",
        "spiffe://mesh/ns/acme/other",
        "spiffe://mesh/ns/nobody/sa/x",
        "spiffe://mesh/ns/globex",
        "spiffe://mesh/ns/globex*",
        "spiffe://e2e.test/acme/admin",
        "globex*",
        "acme-worker",
    ] {
        let status = expect_code(
            bind(&globex.client, &globex_agent, identity).await,
            tonic::Code::PermissionDenied,
            identity,
        );
        messages.insert(status.message().to_owned());
    }
    assert_eq!(messages.len(), 1, "refusals differ: {messages:?}");
    // Each attempt is in globex's audit chain.
    let denied = globex
        .client
        .audit()
        .query_events(pb::QueryEventsRequest {
            actions: vec![pb::AuditAction::IdentityBindingCreate as i32],
            outcome: pb::AuditOutcome::Denied as i32,
            ..Default::default()
        })
        .await
        .expect("query audit")
        .into_inner()
        .events;
    assert_eq!(denied.len(), 14, "{denied:?}");
    assert!(
        denied
            .iter()
            .all(|e| e.reason_code == "IDENTITY_OUTSIDE_NAMESPACES")
    );

    // Unbound workloads of another team do not authenticate as globex's
    // principal: acme's stays acme's, the others are nobody's.
    let acme_worker = server.client("spiffe://mesh/ns/acme/sa/worker").await;
    let me = who(&acme_worker).await.expect("acme's workload");
    assert_eq!(me.tenant.map(|t| t.name), Some("acme".to_owned()));
    assert_eq!(me.principal.map(|p| p.id), Some(acme_agent.clone()));
    for stranger in [
        "spiffe://mesh/ns/nobody/sa/x",
        "spiffe://mesh/ns/acme-x/sa/y",
    ] {
        expect_code(
            who(&server.client(stranger).await).await,
            tonic::Code::Unauthenticated,
            stranger,
        );
    }
    let cn = Client::connect(&server.client_config("s-anything", CertKind::CommonName))
        .await
        .expect("connect");
    expect_code(
        who(&cn).await,
        tonic::Code::Unauthenticated,
        "CN s-anything",
    );

    // Inside its namespaces globex binds and authenticates as usual.
    bind(
        &globex.client,
        &globex_agent,
        "spiffe://mesh/ns/globex/sa/*",
    )
    .await
    .expect("globex SPIFFE pattern");
    bind(&globex.client, &globex_agent, "globex-builder")
        .await
        .expect("globex CN");
    let own = server.client("spiffe://mesh/ns/globex/sa/w").await;
    assert_eq!(
        who(&own)
            .await
            .expect("globex workload")
            .principal
            .map(|p| p.id),
        Some(globex_agent.clone())
    );

    // Tenant admins cannot assign namespaces; operators see them.
    expect_code(
        set_namespaces(
            &globex.client,
            &globex.tenant_id,
            &["spiffe://mesh/ns/*".into()],
        )
        .await,
        tonic::Code::PermissionDenied,
        "a tenant admin assigning namespaces",
    );
    let operator = server.operator().await;
    let shown = operator
        .admin()
        .get_tenant(pb::GetTenantRequest {
            tenant_id: globex.tenant_id.clone(),
        })
        .await
        .expect("get tenant")
        .into_inner()
        .tenant
        .expect("tenant");
    assert_eq!(
        shown.identity_namespaces,
        vec![
            "globex-*".to_owned(),
            "spiffe://e2e.test/globex/*".to_owned(),
            "spiffe://mesh/ns/globex/*".to_owned()
        ]
    );
    let listed = operator
        .admin()
        .list_tenants(pb::ListTenantsRequest::default())
        .await
        .expect("list tenants")
        .into_inner()
        .tenants;
    let acme_listed = listed.iter().find(|t| t.name == "acme").expect("acme");
    assert_eq!(
        acme_listed.identity_namespaces,
        vec![
            "spiffe://e2e.test/acme/*".to_owned(),
            "spiffe://mesh/ns/acme/*".to_owned()
        ]
    );
    server.stop().await;
}

async fn namespace_moves_take_their_bindings_along(backend: Backend) {
    let server = TestServer::start(backend).await;
    let operator = server.operator().await;
    let acme = server
        .tenant_with("acme", &["spiffe://mesh/ns/shared/*"])
        .await;
    let globex = server.tenant("globex").await;
    let (acme_agent, _) = server.principal(&acme, "agent", pb::Role::Agent).await;
    let (globex_agent, _) = server.principal(&globex, "agent", pb::Role::Agent).await;
    bind(&acme.client, &acme_agent, "spiffe://mesh/ns/shared/*")
        .await
        .expect("acme binds");
    let worker = server.client("spiffe://mesh/ns/shared/sa/w").await;
    assert_eq!(
        who(&worker).await.expect("acme").principal.map(|p| p.id),
        Some(acme_agent.clone())
    );
    // While acme holds it, globex cannot be given it.
    expect_code(
        set_namespaces(
            &operator,
            &globex.tenant_id,
            &[
                "spiffe://e2e.test/globex/*".into(),
                "spiffe://mesh/ns/shared/sa/*".into(),
            ],
        )
        .await,
        tonic::Code::InvalidArgument,
        "overlapping acme's namespace",
    );
    // Taken from acme, its binding stops working at once...
    set_namespaces(
        &operator,
        &acme.tenant_id,
        &["spiffe://e2e.test/acme/*".into()],
    )
    .await
    .expect("narrow acme");
    expect_code(
        who(&worker).await,
        tonic::Code::Unauthenticated,
        "a binding outside its tenant's namespaces",
    );
    // ...and given to globex, the workload becomes globex's alone: no
    // identity is matched in two tenants.
    set_namespaces(
        &operator,
        &globex.tenant_id,
        &[
            "spiffe://e2e.test/globex/*".into(),
            "spiffe://mesh/ns/shared/*".into(),
        ],
    )
    .await
    .expect("give globex the namespace");
    bind(
        &globex.client,
        &globex_agent,
        "spiffe://mesh/ns/shared/sa/*",
    )
    .await
    .expect("globex binds");
    assert_eq!(
        who(&worker).await.expect("globex").principal.map(|p| p.id),
        Some(globex_agent.clone())
    );
    // acme's admin can no longer bind there.
    expect_code(
        bind(&acme.client, &acme_agent, "spiffe://mesh/ns/shared/sa/w").await,
        tonic::Code::PermissionDenied,
        "acme binding what is now globex's",
    );
    server.stop().await;
}

async fn overlapping_assignments_race(backend: Backend) {
    const PAIRS: usize = 20;
    let server = TestServer::start(backend).await;
    let operator = server.operator().await;
    let wide = |i: usize| vec![format!("spiffe://race.test/ns/p{i}/*")];
    let narrow = |i: usize| vec![format!("spiffe://race.test/ns/p{i}/sa/x")];

    // Assignments to existing tenants, every pair racing at once.
    let mut pairs = Vec::new();
    for i in 0..PAIRS {
        let a = bare_tenant(&operator, &format!("a{i}"), &[])
            .await
            .expect("a");
        let b = bare_tenant(&operator, &format!("b{i}"), &[])
            .await
            .expect("b");
        pairs.push((a.id, b.id));
    }
    let mut races = Vec::new();
    for (i, (a, b)) in pairs.into_iter().enumerate() {
        let operator = operator.clone();
        let (wide, narrow) = (wide(i), narrow(i));
        races.push(tokio::spawn(async move {
            tokio::join!(
                set_namespaces(&operator, &a, &wide),
                set_namespaces(&operator, &b, &narrow)
            )
        }));
    }
    let mut refusals = BTreeSet::new();
    for (i, race) in races.into_iter().enumerate() {
        let (a, b) = race.await.expect("race task");
        assert_eq!(
            usize::from(a.is_ok()) + usize::from(b.is_ok()),
            1,
            "pair {i}: exactly one assignment must succeed: {a:?} / {b:?}"
        );
        for r in [a, b] {
            if let Err(s) = r {
                assert_eq!(s.code(), tonic::Code::InvalidArgument, "{s:?}");
                refusals.insert(s.message().to_owned());
            }
        }
    }

    // New tenants created with overlapping namespaces, racing likewise.
    let mut races = Vec::new();
    for i in 0..PAIRS {
        let operator = operator.clone();
        let (wide, narrow) = (
            vec![format!("spiffe://race.test/new/p{i}/*")],
            vec![format!("spiffe://race.test/new/p{i}/sa/*")],
        );
        let (c, d) = (format!("c{i}"), format!("d{i}"));
        races.push(tokio::spawn(async move {
            tokio::join!(
                bare_tenant(&operator, &c, &wide),
                bare_tenant(&operator, &d, &narrow)
            )
        }));
    }
    for (i, race) in races.into_iter().enumerate() {
        let (c, d) = race.await.expect("race task");
        assert_eq!(
            usize::from(c.is_ok()) + usize::from(d.is_ok()),
            1,
            "new pair {i}: exactly one creation must succeed: {c:?} / {d:?}"
        );
        for r in [c, d] {
            if let Err(s) = r {
                assert_eq!(s.code(), tonic::Code::InvalidArgument, "{s:?}");
                refusals.insert(s.message().to_owned());
            }
        }
    }

    // The refusal reads the same whether the overlap is with another
    // tenant or within the request itself.
    let lone = bare_tenant(&operator, "lone", &[]).await.expect("lone");
    let within = expect_code(
        set_namespaces(
            &operator,
            &lone.id,
            &[
                "spiffe://race.test/lone/*".into(),
                "spiffe://race.test/lone/sa/x".into(),
            ],
        )
        .await,
        tonic::Code::InvalidArgument,
        "overlap within the request",
    );
    refusals.insert(within.message().to_owned());
    let within_create = expect_code(
        bare_tenant(&operator, "lone2", &["lone2-*".into(), "lone2-a-*".into()]).await,
        tonic::Code::InvalidArgument,
        "overlap within a creation",
    );
    refusals.insert(within_create.message().to_owned());
    assert_eq!(refusals.len(), 1, "refusal texts differ: {refusals:?}");
    server.stop().await;
}

async fn namespace_rules_at_creation(backend: Backend) {
    let server = TestServer::start(backend).await;
    let operator = server.operator().await;
    for bad in [
        "spiffe://*",
        "spiffe://td/*",
        "spiffe://td*",
        "spiffe://td/ns*",
        "s*",
        "spiffe:*",
        "team*",
    ] {
        let status = expect_code(
            bare_tenant(&operator, "bad", &[bad.into()]).await,
            tonic::Code::InvalidArgument,
            bad,
        );
        assert!(
            status.message().contains("identity_namespaces"),
            "{bad}: {status:?}"
        );
    }
    // The first admin's identity must lie inside the namespaces given.
    let status = expect_code(
        operator
            .admin()
            .create_tenant(pb::CreateTenantRequest {
                name: "outside".into(),
                initial_admin: Some(pb::InitialAdmin {
                    name: "admin".into(),
                    identity: "spiffe://e2e.test/elsewhere/admin".into(),
                }),
                identity_namespaces: vec!["spiffe://e2e.test/outside/*".into()],
                ..Default::default()
            })
            .await,
        tonic::Code::InvalidArgument,
        "admin outside the namespaces",
    );
    assert!(
        status.message().contains("initial_admin.identity"),
        "{status:?}"
    );
    let status = expect_code(
        operator
            .admin()
            .create_tenant(pb::CreateTenantRequest {
                name: "none".into(),
                initial_admin: Some(pb::InitialAdmin {
                    name: "admin".into(),
                    identity: "spiffe://e2e.test/none/admin".into(),
                }),
                ..Default::default()
            })
            .await,
        tonic::Code::InvalidArgument,
        "admin without namespaces",
    );
    assert!(
        status.message().contains("initial_admin.identity"),
        "{status:?}"
    );
    // The first admin is named `admin` when no name is given.
    let created = operator
        .admin()
        .create_tenant(pb::CreateTenantRequest {
            name: "unnamed-admin".into(),
            initial_admin: Some(pb::InitialAdmin {
                name: String::new(),
                identity: "spiffe://e2e.test/unnamed/admin".into(),
            }),
            identity_namespaces: vec!["spiffe://e2e.test/unnamed/*".into()],
            ..Default::default()
        })
        .await
        .expect("create a tenant whose admin has no name")
        .into_inner();
    assert_eq!(created.admin.expect("admin").name, "admin");
    // Too many namespaces.
    let many: Vec<String> = (0..33).map(|i| format!("spiffe://td/ns/{i}/*")).collect();
    expect_code(
        bare_tenant(&operator, "many", &many).await,
        tonic::Code::InvalidArgument,
        "33 namespaces",
    );
    server.stop().await;
}

/// A binding as stored before namespaces: kind, pattern (a prefix without
/// its `*`), creation time.
type LegacyBinding = (&'static str, &'static str, i64);

/// The migration that introduced identity namespaces.
const NAMESPACES_MIGRATION: i64 = 20261206000001;

/// Bindings made before namespaces existed: the migration gives each tenant
/// the namespaces its bindings imply, disables the bindings too broad to be
/// a namespace or overlapping an older binding of another tenant, and
/// `strongroomd migrate` names them; authentication ignores them.
async fn migration_derives_namespaces_and_disables_broad_bindings(backend: Backend) {
    let id = |u: uuid::Uuid| match backend {
        Backend::Postgres => format!("'{u}'"),
        Backend::Sqlite => format!("X'{}'", u.simple()),
    };
    let genesis = match backend {
        Backend::Postgres => "decode(repeat('00', 32), 'hex')",
        Backend::Sqlite => "zeroblob(32)",
    };
    let mut seed = String::new();
    let mut principals = std::collections::BTreeMap::new();
    let mut bindings = std::collections::BTreeMap::new();
    // (tenant, [(kind, stored pattern, created_at)]): prefix patterns are
    // stored without their `*`.
    let legacy: [(&str, &[LegacyBinding]); 5] = [
        ("victim", &[("exact", "spiffe://mesh/ns/victim/sa/w", 1000)]),
        ("wide", &[("prefix", "spiffe://", 500)]),
        ("greedy", &[("prefix", "s", 600)]),
        (
            "team",
            &[
                ("prefix", "spiffe://mesh/ns/team/", 700),
                ("exact", "spiffe://mesh/ns/team/sa/x", 800),
            ],
        ),
        (
            "late",
            &[
                ("prefix", "spiffe://mesh/ns/team/sa/", 900),
                ("prefix", "late-", 950),
            ],
        ),
    ];
    for (tenant, patterns) in legacy {
        let (t, p) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
        principals.insert(tenant, p.to_string());
        seed += &format!(
            "INSERT INTO tenants (id, name, status, settings, current_kek_version, created_at) \
             VALUES ({}, '{tenant}', 'active', '{{}}', 1, 1);\n\
             INSERT INTO audit_heads (tenant_id, sequence, hash) VALUES ({}, 0, {genesis});\n\
             INSERT INTO principals (tenant_id, id, name, role, environments, description, status, created_at) \
             VALUES ({}, {}, 'agent', 'agent', '[]', '', 'active', 1);\n",
            id(t),
            id(t),
            id(t),
            id(p)
        );
        for (kind, pattern, at) in patterns {
            let b = uuid::Uuid::now_v7();
            bindings.insert(*pattern, b.to_string());
            seed += &format!(
                "INSERT INTO identity_bindings (tenant_id, id, principal_id, kind, pattern, created_at) \
                 VALUES ({}, {}, {}, '{kind}', '{pattern}', {at});\n",
                id(t),
                id(b),
                id(p)
            );
        }
    }
    let mut options = Options::new(backend);
    options.seed_before = Some((NAMESPACES_MIGRATION, seed));
    let server = TestServer::start_with(options).await;

    // `strongroomd migrate` names each disabled binding, its tenant and id,
    // and nothing else.
    let report: Vec<&str> = server
        .migrate_output
        .lines()
        .filter(|l| l.starts_with("disabled identity binding:"))
        .collect();
    for (tenant, identity, pattern) in [
        ("wide", "spiffe://*", "spiffe://"),
        ("greedy", "s*", "s"),
        (
            "late",
            "spiffe://mesh/ns/team/sa/*",
            "spiffe://mesh/ns/team/sa/",
        ),
    ] {
        let binding = &bindings[pattern];
        assert!(
            report
                .iter()
                .any(|l| l.contains(&format!("tenant={tenant} "))
                    && l.contains(&format!("binding_id={binding} "))
                    && l.contains(&format!("identity={identity} "))),
            "{tenant}'s {identity} is not reported: {}",
            server.migrate_output
        );
    }
    assert_eq!(report.len(), 3, "{}", server.migrate_output);
    // The server names them in its log at start-up too.
    for pattern in ["spiffe://", "s", "spiffe://mesh/ns/team/sa/"] {
        server
            .logs
            .wait_for_line(
                &["identity binding disabled", &bindings[pattern]],
                std::time::Duration::from_secs(5),
            )
            .await;
    }

    // Authentication ignores the disabled bindings: the victim's workload is
    // the victim's (not ambiguous with `spiffe://*`), the team's workloads
    // the team's, and what only the broad bindings matched is nobody's.
    let whose = |identity: &'static str, kind: CertKind| {
        let server = &server;
        async move {
            let client = Client::connect(&server.client_config(identity, kind))
                .await
                .expect("connect");
            who(&client).await
        }
    };
    for (identity, kind, tenant) in [
        ("spiffe://mesh/ns/victim/sa/w", CertKind::Spiffe, "victim"),
        ("spiffe://mesh/ns/team/sa/y", CertKind::Spiffe, "team"),
        ("spiffe://mesh/ns/team/sa/x", CertKind::Spiffe, "team"),
        ("late-worker", CertKind::CommonName, "late"),
    ] {
        let me = whose(identity, kind).await.expect(identity);
        assert_eq!(
            me.tenant.map(|t| t.name).as_deref(),
            Some(tenant),
            "{identity}"
        );
        assert_eq!(me.principal.map(|p| p.id), Some(principals[tenant].clone()));
    }
    for (identity, kind) in [
        ("spiffe://mesh/ns/other/sa/z", CertKind::Spiffe),
        ("s-anything", CertKind::CommonName),
    ] {
        expect_code(
            whose(identity, kind).await,
            tonic::Code::Unauthenticated,
            identity,
        );
    }

    // Each tenant got the namespaces its valid bindings imply, the
    // narrower ones folded into the wider.
    let operator = server.operator().await;
    let tenants = operator
        .admin()
        .list_tenants(pb::ListTenantsRequest::default())
        .await
        .expect("list tenants")
        .into_inner()
        .tenants;
    let namespaces = |name: &str| {
        tenants
            .iter()
            .find(|t| t.name == name)
            .map(|t| t.identity_namespaces.clone())
            .unwrap_or_else(|| panic!("{name} not listed"))
    };
    assert_eq!(
        namespaces("victim"),
        vec!["spiffe://mesh/ns/victim/sa/w".to_owned()]
    );
    assert_eq!(
        namespaces("team"),
        vec!["spiffe://mesh/ns/team/*".to_owned()]
    );
    assert_eq!(namespaces("late"), vec!["late-*".to_owned()]);
    assert!(namespaces("wide").is_empty());
    assert!(namespaces("greedy").is_empty());
    server.stop().await;
}
