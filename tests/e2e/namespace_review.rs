//! The rules a deployment adds to identity namespaces: SPIFFE prefix
//! namespaces at least `identity.min_namespace_depth` path segments deep
//! (default 2: `spiffe://td/ns/team-a/*`, never `spiffe://td/ns/*`), none
//! covering a platform operator, and the namespaces the namespaces
//! migration derived from old bindings printed for review, the too shallow
//! ones removed and their bindings disabled.

use std::collections::BTreeSet;

use strongroom_client::Client;
use strongroom_e2e::{Backend, CertKind, Options, TestServer, expect_code};
use strongroom_proto::v1 as pb;

on_both_backends!(
    namespace_depth_is_enforced_at_assignment,
    namespaces_never_cover_platform_operators,
    migration_removes_shallow_derived_namespaces
);

/// The options of a server with the default namespace depth (the suite
/// otherwise configures 1 for its `spiffe://e2e.test/NAME/*` layout).
fn default_depth(backend: Backend) -> Options {
    let mut options = Options::new(backend);
    options
        .env
        .push(("STRONGROOM_MIN_NAMESPACE_DEPTH".into(), String::new()));
    options
}

async fn create(
    operator: &Client,
    name: &str,
    namespaces: &[&str],
) -> Result<String, tonic::Status> {
    operator
        .admin()
        .create_tenant(pb::CreateTenantRequest {
            name: name.into(),
            identity_namespaces: namespaces.iter().map(|n| (*n).to_owned()).collect(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().tenant.expect("tenant").id)
}

async fn assign(
    operator: &Client,
    tenant_id: &str,
    namespaces: &[&str],
) -> Result<(), tonic::Status> {
    operator
        .admin()
        .set_identity_namespaces(pb::SetIdentityNamespacesRequest {
            tenant_id: tenant_id.into(),
            identity_namespaces: namespaces.iter().map(|n| (*n).to_owned()).collect(),
        })
        .await
        .map(drop)
}

async fn namespace_depth_is_enforced_at_assignment(backend: Backend) {
    let server = TestServer::start_with(default_depth(backend)).await;
    let operator = server.operator().await;
    for shallow in ["spiffe://cluster.local/ns/*", "spiffe://cluster.local/x/*"] {
        let status = expect_code(
            create(&operator, "shallow", &[shallow]).await,
            tonic::Code::InvalidArgument,
            shallow,
        );
        assert!(
            status.message().contains("identity_namespaces")
                && status.message().contains("min_namespace_depth"),
            "{shallow}: {status:?}"
        );
    }
    // Deep enough, exact identities and common-name patterns are fine.
    let team = create(
        &operator,
        "team-a",
        &[
            "spiffe://cluster.local/ns/team-a/*",
            "spiffe://cluster.local/x",
            "team-a-*",
        ],
    )
    .await
    .expect("a namespace two segments deep");
    let status = expect_code(
        assign(&operator, &team, &["spiffe://cluster.local/ns/*"]).await,
        tonic::Code::InvalidArgument,
        "SetIdentityNamespaces too shallow",
    );
    assert!(
        status.message().contains("identity_namespaces")
            && status.message().contains("min_namespace_depth"),
        "{status:?}"
    );
    assign(&operator, &team, &["spiffe://cluster.local/ns/team-a/sa/*"])
        .await
        .expect("deeper still");
    server.stop().await;

    // The depth is configuration: with 1, the broader namespace is allowed.
    let mut options = Options::new(backend);
    options
        .env
        .push(("STRONGROOM_MIN_NAMESPACE_DEPTH".into(), "1".into()));
    let server = TestServer::start_with(options).await;
    let operator = server.operator().await;
    create(&operator, "shallow", &["spiffe://cluster.local/ns/*"])
        .await
        .expect("depth 1 configured");
    server.stop().await;
}

async fn namespaces_never_cover_platform_operators(backend: Backend) {
    let mut options = Options::new(backend);
    options.env.push((
        "STRONGROOM_PLATFORM_OPERATORS".into(),
        format!(
            "{},spiffe://e2e.test/ops/team/*,ops-admin",
            strongroom_e2e::OPERATOR
        ),
    ));
    let server = TestServer::start_with(options).await;
    let operator = server.operator().await;
    let acme = server.tenant("acme").await;
    // The refusal for an overlap with another tenant, for comparison.
    let mut messages = BTreeSet::new();
    messages.insert(
        expect_code(
            create(&operator, "other", &["spiffe://e2e.test/acme/x/*"]).await,
            tonic::Code::InvalidArgument,
            "overlap with acme",
        )
        .message()
        .to_owned(),
    );
    for covering in [
        strongroom_e2e::OPERATOR,
        "spiffe://e2e.test/ops/*",
        "spiffe://e2e.test/ops/team/*",
        "spiffe://e2e.test/ops/team/x/*",
        "spiffe://e2e.test/ops/team/x",
        "ops-*",
        "ops-admin",
    ] {
        messages.insert(
            expect_code(
                create(&operator, "grab", &[covering]).await,
                tonic::Code::InvalidArgument,
                covering,
            )
            .message()
            .to_owned(),
        );
        messages.insert(
            expect_code(
                assign(
                    &operator,
                    &acme.tenant_id,
                    &["spiffe://e2e.test/acme/*", covering],
                )
                .await,
                tonic::Code::InvalidArgument,
                covering,
            )
            .message()
            .to_owned(),
        );
    }
    assert_eq!(messages.len(), 1, "refusal texts differ: {messages:?}");
    // So acme's admin cannot bind an operator's identity.
    let (agent, _) = server.principal(&acme, "agent", pb::Role::Agent).await;
    expect_code(
        acme.client
            .admin()
            .create_identity_binding(pb::CreateIdentityBindingRequest {
                principal_id: agent,
                identity: strongroom_e2e::OPERATOR.into(),
                ..Default::default()
            })
            .await,
        tonic::Code::PermissionDenied,
        "binding the operator",
    );
    // Neighbours of the operators' identities are assignable.
    create(
        &operator,
        "neighbour",
        &[
            "spiffe://e2e.test/opsx/*",
            "spiffe://e2e.test/ops/other/*",
            "opsy-*",
        ],
    )
    .await
    .expect("no operator inside");
    server.stop().await;
}

/// A binding as stored before namespaces: kind, pattern (a prefix without
/// its `*`), creation time.
type LegacyBinding = (&'static str, &'static str, i64);

/// The migration that introduced identity namespaces.
const NAMESPACES_MIGRATION: i64 = 20261206000001;

/// Old bindings whose derived namespaces are too shallow for the default
/// depth: `strongroomd migrate` removes those namespaces, disables and
/// reports their bindings, and prints every derived namespace with its
/// tenant, marking prefix ones for review.
async fn migration_removes_shallow_derived_namespaces(backend: Backend) {
    let id = |u: uuid::Uuid| match backend {
        Backend::Postgres => format!("'{u}'"),
        Backend::Sqlite => format!("X'{}'", u.simple()),
    };
    let genesis = match backend {
        Backend::Postgres => "decode(repeat('00', 32), 'hex')",
        Backend::Sqlite => "zeroblob(32)",
    };
    let legacy: [(&str, &[LegacyBinding]); 4] = [
        (
            "squat",
            &[
                ("prefix", "spiffe://cluster.local/ns/", 500),
                ("exact", "spiffe://cluster.local/ns/kube-system/sa/x", 600),
            ],
        ),
        ("teamb", &[("prefix", "spiffe://other.td/ns/team-b/", 700)]),
        ("single", &[("exact", "spiffe://third.td/ns/c/sa/w", 800)]),
        // A platform operator's identity, bound in a tenant before upgrading.
        ("opgrab", &[("exact", strongroom_e2e::OPERATOR, 900)]),
    ];
    let mut seed = String::new();
    let mut tenants = std::collections::BTreeMap::new();
    let mut bindings = std::collections::BTreeMap::new();
    for (tenant, patterns) in legacy {
        let (t, p) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
        tenants.insert(tenant, t.to_string());
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
    let mut options = default_depth(backend);
    options.env.push((
        "STRONGROOM_PLATFORM_OPERATORS".into(),
        strongroom_e2e::OPERATOR.into(),
    ));
    options.seed_before = Some((NAMESPACES_MIGRATION, seed));
    let server = TestServer::start_with(options).await;
    let out = &server.migrate_output;

    // Every derived namespace, with its tenant and id; the shallow one
    // removed, the prefix one marked for review, the exact one plain.
    let derived: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("derived identity namespace:"))
        .collect();
    let line = |tenant: &str, namespace: &str| {
        derived
            .iter()
            .find(|l| {
                l.contains(&format!("tenant={tenant} tenant_id={} ", tenants[tenant]))
                    && l.contains(&format!("namespace={namespace}"))
            })
            .copied()
            .unwrap_or_else(|| panic!("{tenant}'s {namespace} is not printed: {out}"))
    };
    assert!(
        line("squat", "spiffe://cluster.local/ns/*").contains(" removed:"),
        "{out}"
    );
    let teamb = line("teamb", "spiffe://other.td/ns/team-b/*");
    assert!(
        teamb.contains(" review:") && !teamb.contains("removed"),
        "{out}"
    );
    let single = line("single", "spiffe://third.td/ns/c/sa/w");
    assert!(
        !single.contains("review") && !single.contains("removed"),
        "{out}"
    );
    assert!(
        line("opgrab", strongroom_e2e::OPERATOR).contains(" removed:"),
        "{out}"
    );
    assert_eq!(derived.len(), 4, "{out}");

    // The squatter's bindings are disabled and reported like the too-broad
    // ones.
    let disabled: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("disabled identity binding:"))
        .collect();
    for pattern in [
        "spiffe://cluster.local/ns/",
        "spiffe://cluster.local/ns/kube-system/sa/x",
    ] {
        assert!(
            disabled.iter().any(|l| l.contains("tenant=squat ")
                && l.contains(&format!("binding_id={} ", bindings[pattern]))
                && l.contains("min_namespace_depth")),
            "{pattern} is not reported: {out}"
        );
    }
    assert!(
        disabled.iter().any(|l| l.contains("tenant=opgrab ")
            && l.contains(&format!(
                "binding_id={} ",
                bindings[strongroom_e2e::OPERATOR]
            ))
            && l.contains("platform operator")),
        "the operator's binding is not reported: {out}"
    );
    assert_eq!(disabled.len(), 3, "{out}");

    // Authentication ignores them; the reviewed tenants keep theirs.
    let whose = |identity: &'static str| {
        let server = &server;
        async move {
            let client = Client::connect(&server.client_config(identity, CertKind::Spiffe))
                .await
                .expect("connect");
            client
                .admin()
                .who_am_i(pb::WhoAmIRequest {})
                .await
                .map(tonic::Response::into_inner)
        }
    };
    for identity in [
        "spiffe://cluster.local/ns/team-c/sa/y",
        "spiffe://cluster.local/ns/kube-system/sa/x",
    ] {
        expect_code(
            whose(identity).await,
            tonic::Code::Unauthenticated,
            identity,
        );
    }
    for (identity, tenant) in [
        ("spiffe://other.td/ns/team-b/sa/z", "teamb"),
        ("spiffe://third.td/ns/c/sa/w", "single"),
    ] {
        let me = whose(identity).await.expect(identity);
        assert_eq!(me.tenant.map(|t| t.name).as_deref(), Some(tenant));
    }
    let operator = server.operator().await;
    // The operator's identity belongs to no tenant.
    let me = operator
        .admin()
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .expect("who am i")
        .into_inner();
    assert!(me.tenant.is_none(), "{me:?}");
    let listed = operator
        .admin()
        .list_tenants(pb::ListTenantsRequest::default())
        .await
        .expect("list tenants")
        .into_inner()
        .tenants;
    let namespaces = |name: &str| {
        listed
            .iter()
            .find(|t| t.name == name)
            .map(|t| t.identity_namespaces.clone())
            .unwrap_or_else(|| panic!("{name} not listed"))
    };
    assert!(namespaces("squat").is_empty());
    assert!(namespaces("opgrab").is_empty());
    assert_eq!(
        namespaces("teamb"),
        vec!["spiffe://other.td/ns/team-b/*".to_owned()]
    );
    // The server names the derived namespaces at start-up too.
    server
        .logs
        .wait_for_line(
            &[
                "derived from bindings by the migration",
                "spiffe://other.td/ns/team-b/*",
            ],
            std::time::Duration::from_secs(5),
        )
        .await;
    server.stop().await;
}
