//! Fixtures of the conformance suite: a store of each backend, tenants
//! created the way the server creates them (through a platform scope, then
//! authenticated as their admin), credentials with real envelopes, and small
//! assertion helpers for error codes, audit trails and pagination.

use std::future::Future;
use std::sync::Arc;

use secrecy::SecretString;
use sqlx::postgres::PgPoolOptions;
use strongroom_core::Error;
use strongroom_core::audit::{Action, AuditDetail, AuditDraft, AuditEvent, Outcome};
use strongroom_core::credential::{Credential, CredentialStatus, StoredVersion};
use strongroom_core::ids::{BindingId, CredentialId, GrantId, PrincipalId, TenantId};
use strongroom_core::names::{
    CredentialName, DEFAULT_ENVIRONMENTS, Environment, PrincipalName, ServiceLabel, Tag, TenantName,
};
use strongroom_core::page::{Page, PageRequest};
use strongroom_core::policy::{Capabilities, Capability, Grant, GrantSubject, Selector};
use strongroom_core::principal::{
    IdentityBinding, IdentityPattern, Principal, PrincipalStatus, Role,
};
use strongroom_core::scope::{Authenticated, Authenticator, TenantScope};
use strongroom_core::store::{NewTenant, Store};
use strongroom_core::tenant::{Tenant, TenantSettings, TenantStatus, WrappedKekRecord};
use strongroom_core::time::Timestamp;
use strongroom_core::value::{ApiKey, CredentialType, CredentialValue};
use strongroom_crypto::{Aad, Envelope, Kek, RootKey};
use strongroom_store::{APP_ROLE, PgPool, PgStore};

/// The identity the suite's authenticator treats as a platform operator.
pub const OPERATOR: &str = "spiffe://test/operator";

/// The login role the Postgres store connects as: a plain member of
/// [`APP_ROLE`], as in production.
pub const APP_LOGIN: &str = "strongroom_test_server";

/// A Postgres store for the database behind `admin` (a `#[sqlx::test]`
/// superuser pool), connected as [`APP_LOGIN`] so row-level security is in
/// force. Fails the test if [`PgStore::check_role`] does not pass.
pub async fn pg_store(admin: PgPool) -> Arc<PgStore> {
    let app = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(app_options(&admin).await)
        .await
        .expect("connect as the app login role");
    let store = PgStore::new(app);
    store
        .check_role()
        .await
        .expect("the app login role must be subject to row-level security");
    Arc::new(store)
}

/// Connect options for the database behind `admin` as [`APP_LOGIN`]
/// (created if absent).
pub async fn app_options(admin: &PgPool) -> sqlx::postgres::PgConnectOptions {
    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(admin)
        .await
        .expect("current database");
    // Roles are cluster-wide and tests run concurrently: tolerate losing the
    // race to create it.
    sqlx::query(&format!(
        "DO $$ BEGIN CREATE ROLE {APP_LOGIN} LOGIN IN ROLE {APP_ROLE}; \
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
    ))
    .execute(admin)
    .await
    .expect("create the app login role");
    admin
        .connect_options()
        .as_ref()
        .clone()
        .username(APP_LOGIN)
        .database(&database)
}

/// The suite's authenticator: [`OPERATOR`] is a platform operator.
pub fn authenticator() -> Authenticator {
    Authenticator::new(vec![
        IdentityPattern::parse(OPERATOR, "operator").expect("operator pattern"),
    ])
}

/// Authenticates [`OPERATOR`].
pub async fn operator(store: &dyn Store) -> Authenticated {
    authenticator()
        .authenticate(store, OPERATOR, None)
        .await
        .expect("the operator authenticates")
}

/// Authenticates `identity` without a tenant hint.
pub async fn authenticate(
    store: &dyn Store,
    identity: &str,
) -> strongroom_core::Result<Authenticated> {
    authenticator().authenticate(store, identity, None).await
}

/// The stable code of an error, to compare outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    Unauthenticated,
    FailedPrecondition,
    ResourceExhausted,
    Unavailable,
    Unimplemented,
    Internal,
}

impl Code {
    pub fn of(e: &Error) -> Code {
        match e {
            Error::InvalidArgument { .. } => Code::InvalidArgument,
            Error::NotFound(_) => Code::NotFound,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::PermissionDenied(_) => Code::PermissionDenied,
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::ResourceExhausted(_) => Code::ResourceExhausted,
            Error::Unavailable(_) => Code::Unavailable,
            Error::Unimplemented(_) => Code::Unimplemented,
            Error::Internal(_) => Code::Internal,
        }
    }
}

/// The code of a result that must be an error.
pub fn code<T: std::fmt::Debug>(result: strongroom_core::Result<T>) -> Code {
    match result {
        Ok(value) => panic!("expected an error, got Ok({value:?})"),
        Err(e) => Code::of(&e),
    }
}

/// Parses test literals.
pub fn env(text: &str) -> Environment {
    Environment::parse(text, "environment").expect("environment literal")
}

pub fn cname(text: &str) -> CredentialName {
    CredentialName::parse(text, "name").expect("credential name literal")
}

pub fn tag(text: &str) -> Tag {
    Tag::parse(text, "tag").expect("tag literal")
}

pub fn service(text: &str) -> ServiceLabel {
    ServiceLabel::parse(text, "service").expect("service literal")
}

pub fn pattern(text: &str) -> IdentityPattern {
    IdentityPattern::parse(text, "pattern").expect("identity pattern literal")
}

/// A tenant of the suite, authenticated as its admin.
pub struct TestTenant {
    /// The admin, authenticated with its identity.
    pub auth: Authenticated,
    /// The admin's identity.
    pub admin_identity: String,
    /// The tenant's KEK (version 1), to seal and open envelopes.
    pub kek: Kek,
}

impl TestTenant {
    /// The admin's scope.
    pub fn scope(&self) -> TenantScope<'_> {
        self.auth.tenant_scope().expect("the tenant is active")
    }

    pub fn id(&self) -> TenantId {
        self.scope().tenant_id()
    }

    pub fn tenant(&self) -> &Tenant {
        self.scope().tenant()
    }

    pub fn admin(&self) -> &Principal {
        self.scope().principal()
    }

    /// Seals `secret` as an API key for version `version` of `credential`,
    /// bound to its tenant, environment, id and version.
    pub fn seal(&self, credential: &Credential, version: u32, secret: &str) -> StoredVersion {
        let value = CredentialValue::ApiKey(ApiKey {
            api_key: SecretString::from(secret.to_owned()),
        });
        let plaintext = value.to_plaintext().expect("serialize value");
        let envelope = self
            .kek
            .seal(1, &aad(credential, version), &plaintext)
            .expect("seal");
        StoredVersion {
            credential: credential.id,
            version,
            envelope: Some(envelope.to_bytes()),
            kek_version: 1,
            created_at: Timestamp::now(),
            created_by: self.admin().id,
        }
    }

    /// Opens a stored version sealed by [`TestTenant::seal`] and returns its
    /// API key.
    pub fn open(&self, credential: &Credential, stored: &StoredVersion) -> String {
        let bytes = stored.envelope.as_deref().expect("the version has a value");
        let envelope = Envelope::from_bytes(bytes).expect("parse envelope");
        let plaintext = self
            .kek
            .open(&aad(credential, stored.version), &envelope)
            .expect("open envelope");
        let value = CredentialValue::from_plaintext(&plaintext).expect("parse value");
        value.field("api_key").expect("api key field").to_string()
    }

    /// Stores `credential` with a sealed first version; returns the version.
    pub async fn store(
        &self,
        store: &dyn Store,
        credential: &Credential,
    ) -> strongroom_core::Result<StoredVersion> {
        let first = self.seal(credential, 1, &format!("{}-v1", credential.name));
        let scope = self.scope();
        store
            .create_credential(
                &scope,
                credential,
                &first,
                about(&scope, Action::CredentialCreate, credential),
            )
            .await?;
        Ok(first)
    }

    /// Adds version `latest + 1` to `credential` (expecting `latest`), with
    /// the tenant's retention.
    pub async fn rotate(
        &self,
        store: &dyn Store,
        credential: &Credential,
        latest: u32,
    ) -> strongroom_core::Result<Credential> {
        let scope = self.scope();
        let version = self.seal(
            credential,
            latest + 1,
            &format!("{}-v{}", credential.name, latest + 1),
        );
        let mut draft = about(&scope, Action::CredentialRotate, credential);
        draft.version = Some(latest + 1);
        store
            .add_version(
                &scope,
                credential.id,
                latest,
                &version,
                self.tenant().settings.version_retention,
                draft,
            )
            .await
    }

    /// Creates a principal (no binding).
    pub async fn add_principal(&self, store: &dyn Store, name: &str, role: Role) -> Principal {
        let scope = self.scope();
        let p = principal(self.id(), name, role);
        store
            .create_principal(&scope, &p, draft(&scope, Action::PrincipalCreate))
            .await
            .expect("create principal");
        p
    }

    /// Stores `grant` (one of this tenant's, made by [`grant`]).
    pub async fn add_grant(&self, store: &dyn Store, grant: &Grant) {
        let scope = self.scope();
        store
            .create_grant(&scope, grant, draft(&scope, Action::GrantCreate))
            .await
            .expect("create grant");
    }

    /// Binds `pattern` to `principal`, first adding the pattern to the
    /// tenant's identity namespaces unless one covers it already.
    pub async fn bind(
        &self,
        store: &dyn Store,
        principal: PrincipalId,
        pattern_text: &str,
    ) -> strongroom_core::Result<IdentityBinding> {
        self.claim(store, pattern_text).await?;
        self.bind_only(store, principal, pattern_text).await
    }

    /// Adds `pattern_text` to the tenant's identity namespaces unless one
    /// covers it already (`InvalidArgument` if another tenant's overlaps).
    pub async fn claim(
        &self,
        store: &dyn Store,
        pattern_text: &str,
    ) -> strongroom_core::Result<()> {
        let wanted = pattern(pattern_text);
        let op = operator(store).await;
        let platform = op.platform_scope().expect("platform scope");
        let mut namespaces: Vec<IdentityPattern> = store
            .identity_namespaces(&platform, self.id(), self.id())
            .await?
            .into_iter()
            .map(|(_, n)| n)
            .collect();
        if namespaces.iter().any(|n| n.covers(&wanted)) {
            return Ok(());
        }
        namespaces.push(wanted);
        store
            .set_identity_namespaces(
                &platform,
                self.id(),
                &namespaces,
                platform.audit(
                    Action::TenantNamespaces,
                    Outcome::Allowed,
                    "PLATFORM_OPERATOR",
                ),
            )
            .await
    }

    /// Binds `pattern` to `principal` as it is: the tenant's namespaces
    /// must cover it.
    pub async fn bind_only(
        &self,
        store: &dyn Store,
        principal: PrincipalId,
        pattern_text: &str,
    ) -> strongroom_core::Result<IdentityBinding> {
        let scope = self.scope();
        let b = binding(self.id(), principal, pattern_text);
        store
            .create_binding(&scope, &b, draft(&scope, Action::BindingCreate))
            .await?;
        Ok(b)
    }
}

fn aad(credential: &Credential, version: u32) -> Aad<'_> {
    Aad {
        tenant: credential.tenant.as_uuid(),
        environment: credential.environment.as_str(),
        credential: credential.id.as_uuid(),
        version,
    }
}

/// A grant of `t`'s admin to `subject` of `caps` on the credentials
/// `selector` names in `environments`, without expiry (not stored).
pub fn grant(
    t: &TestTenant,
    subject: GrantSubject,
    selector: &str,
    environments: &[&str],
    caps: &[Capability],
) -> Grant {
    Grant {
        id: GrantId::generate(),
        tenant: t.id(),
        subject,
        selector: Selector::parse(selector, "selector").expect("selector literal"),
        environments: environments.iter().map(|e| env(e)).collect(),
        capabilities: Capabilities::of(caps),
        destinations: vec![],
        expires_at: None,
        reason: format!("{selector} for the conformance suite"),
        granted_by: t.admin().id,
        created_at: Timestamp::now(),
        access_request: None,
    }
}

/// A principal of `tenant` (not stored).
pub fn principal(tenant: TenantId, name: &str, role: Role) -> Principal {
    Principal {
        id: PrincipalId::generate(),
        tenant,
        name: PrincipalName::parse(name, "name").expect("principal name literal"),
        role,
        environments: vec![],
        description: format!("{name} of the conformance suite"),
        status: PrincipalStatus::Active,
        created_at: Timestamp::now(),
    }
}

/// A binding of `pattern_text` to `principal` (not stored).
pub fn binding(tenant: TenantId, principal: PrincipalId, pattern_text: &str) -> IdentityBinding {
    IdentityBinding {
        id: BindingId::generate(),
        tenant,
        principal,
        pattern: pattern(pattern_text),
        created_at: Timestamp::now(),
    }
}

/// Everything a new tenant named `name` starts with, and its KEK.
pub fn new_tenant(name: &str, settings: TenantSettings) -> (NewTenant, Kek, String) {
    let id = TenantId::generate();
    let now = Timestamp::now();
    let kek = Kek::generate().expect("generate KEK");
    let root = RootKey::generate().expect("generate root key");
    let wrapped = root
        .wrap_kek(id.as_uuid(), 1, &kek)
        .expect("wrap KEK")
        .to_bytes();
    let admin = principal(id, "admin", Role::Admin);
    let identity = format!("spiffe://test/{name}/admin");
    let admin_binding = binding(id, admin.id, &identity);
    let new = NewTenant {
        tenant: Tenant {
            id,
            name: TenantName::parse(name, "name").expect("tenant name literal"),
            status: TenantStatus::Active,
            settings,
            current_kek_version: 1,
            created_at: now,
        },
        kek: WrappedKekRecord {
            tenant: id,
            version: 1,
            wrapped,
            created_at: now,
        },
        environments: DEFAULT_ENVIRONMENTS.iter().map(|e| env(e)).collect(),
        admin: Some((admin, admin_binding)),
        namespaces: vec![IdentityPattern::Prefix(format!("spiffe://test/{name}/"))],
    };
    (new, kek, identity)
}

/// Creates a tenant with default settings through the platform scope and
/// authenticates as its admin.
pub async fn create_tenant(store: &dyn Store, name: &str) -> TestTenant {
    create_tenant_with(store, name, TenantSettings::default()).await
}

/// As [`create_tenant`], with `settings`.
pub async fn create_tenant_with(
    store: &dyn Store,
    name: &str,
    settings: TenantSettings,
) -> TestTenant {
    let (new, kek, admin_identity) = new_tenant(name, settings);
    let op = operator(store).await;
    let platform = op.platform_scope().expect("platform scope");
    store
        .create_tenant(
            &platform,
            &new,
            platform.audit(Action::TenantCreate, Outcome::Allowed, "ALLOWED_BY_ROLE"),
        )
        .await
        .expect("create tenant");
    let auth = authenticate(store, &admin_identity)
        .await
        .expect("the admin authenticates");
    assert_eq!(auth.tenant().map(|t| t.id), Some(new.tenant.id));
    TestTenant {
        auth,
        admin_identity,
        kek,
    }
}

/// A credential of the scope's tenant (not stored), with every optional
/// field empty; tests change fields as needed.
pub fn credential(scope: &TenantScope<'_>, environment: &str, name: &str) -> Credential {
    let now = Timestamp::now();
    Credential {
        id: CredentialId::generate(),
        tenant: scope.tenant_id(),
        environment: env(environment),
        name: cname(name),
        service: service("openai"),
        kind: CredentialType::ApiKey,
        description: String::new(),
        tags: vec![],
        scopes: vec![],
        owner: None,
        status: CredentialStatus::Active,
        current_version: 1,
        latest_version: 1,
        rotated_at: now,
        created_at: now,
        updated_at: now,
        expires_at: None,
        revoked_at: None,
        revoke_reason: None,
        destroyed_at: None,
        rotation: None,
        injection: None,
        created_by: scope.principal().id,
    }
}

/// An allowed-by-role audit draft of the scope's principal.
pub fn draft(scope: &TenantScope<'_>, action: Action) -> AuditDraft {
    scope.audit(action, Outcome::Allowed, "ALLOWED_BY_ROLE")
}

/// A detail that tells test events apart: a reason with the given text.
pub fn marked(text: impl Into<String>) -> Option<AuditDetail> {
    Some(AuditDetail::Reason {
        reason: text.into(),
    })
}

/// The text of a detail made by [`marked`].
pub fn mark(draft: &AuditDraft) -> Option<&str> {
    match &draft.detail {
        Some(AuditDetail::Reason { reason }) => Some(reason),
        _ => None,
    }
}

/// A draft about `credential`.
pub fn about(scope: &TenantScope<'_>, action: Action, credential: &Credential) -> AuditDraft {
    let mut d = draft(scope, action);
    d.credential = Some(credential.id);
    d.credential_name = Some(credential.name.to_string());
    d.environment = Some(credential.environment.to_string());
    d
}

/// Every event of the scope's tenant, in chain order.
pub async fn audit_log(store: &dyn Store, scope: &TenantScope<'_>) -> Vec<AuditEvent> {
    store
        .audit_after(scope, 0, 100_000)
        .await
        .expect("read the audit log")
}

/// Follows one tenant's audit chain: every successful mutation must append
/// exactly one event, every failed one none.
pub struct AuditTrail<'a> {
    store: &'a dyn Store,
    scope: TenantScope<'a>,
    seen: u64,
}

impl<'a> AuditTrail<'a> {
    pub async fn start(store: &'a dyn Store, scope: TenantScope<'a>) -> Self {
        let seen = audit_log(store, &scope).await.len() as u64;
        Self { store, scope, seen }
    }

    /// Asserts that exactly one event was appended since the last check, for
    /// `action`, in this tenant, with the next sequence number, followed
    /// only by the `lease.revoke` events of the leases a revocation ended.
    pub async fn expect(&mut self, action: Action) -> AuditEvent {
        let new = self
            .store
            .audit_after(&self.scope, self.seen, 100)
            .await
            .expect("read new audit events");
        let ended = new
            .iter()
            .skip(1)
            .take_while(|e| e.draft.action == Action::LeaseRevoke)
            .count();
        let actions: Vec<Action> = new
            .iter()
            .take(new.len() - ended)
            .map(|e| e.draft.action)
            .collect();
        assert_eq!(actions, vec![action], "expected exactly one new event");
        let event = new.into_iter().next().expect("one event");
        assert_eq!(event.sequence, self.seen + 1);
        assert_eq!(event.tenant, self.scope.tenant_id());
        self.seen += 1 + ended as u64;
        event
    }

    /// Asserts that nothing was appended since the last check.
    pub async fn expect_none(&self) {
        let new = self
            .store
            .audit_after(&self.scope, self.seen, 100)
            .await
            .expect("read new audit events");
        let actions: Vec<Action> = new.iter().map(|e| e.draft.action).collect();
        assert!(
            actions.is_empty(),
            "a failed call left audit events: {actions:?}"
        );
    }

    /// Events seen so far (the chain's length).
    pub fn len(&self) -> u64 {
        self.seen
    }
}

/// Fetches every page of a listing the way a client does: each next page is
/// requested with the token the previous one handed out. Asserts that every
/// page but the last is full and that the last one hands out no token.
pub async fn all_pages<T, F, Fut>(size: u32, mut fetch: F) -> Vec<Vec<T>>
where
    F: FnMut(PageRequest) -> Fut,
    Fut: Future<Output = strongroom_core::Result<Page<T>>>,
{
    let mut pages = Vec::new();
    let mut request = PageRequest::first(size);
    loop {
        let page = fetch(request).await.expect("list a page");
        let token = page.next_token();
        let count = page.items.len();
        pages.push(page.items);
        if token.is_empty() {
            break;
        }
        assert_eq!(
            count, size as usize,
            "a page before the last one is not full"
        );
        assert!(pages.len() < 1_000, "pagination does not end");
        request = PageRequest::parse(size, &token).expect("parse the page token");
    }
    pages
}

/// All pages of [`all_pages`], flattened.
pub async fn all_items<T, F, Fut>(size: u32, fetch: F) -> Vec<T>
where
    F: FnMut(PageRequest) -> Fut,
    Fut: Future<Output = strongroom_core::Result<Page<T>>>,
{
    all_pages(size, fetch).await.into_iter().flatten().collect()
}
