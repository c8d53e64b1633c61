//! The storage ports. Backends (Postgres, SQLite) implement one port per
//! aggregate ([`MetaStore`], [`IdentityStore`], [`TenantStore`],
//! [`EnvironmentStore`], [`PrincipalStore`], [`CredentialStore`],
//! [`GrantStore`], [`AuditStore`], [`ChainStore`], [`LeaseStore`],
//! [`AccessRequestStore`], [`IdempotencyStore`] and [`RotationStore`]);
//! [`Store`] is all of
//! them, implemented for any type that implements each, and what the server
//! holds (`Arc<dyn Store>`). One conformance suite checks that the backends
//! behave alike.
//!
//! Every method that touches tenant data takes a [`TenantScope`] and confines
//! itself to that tenant. Every mutating method takes the [`AuditDraft`] of
//! the mutation and commits it, linked into the tenant's hash chain, in the
//! same transaction: either both are stored or neither is.

use std::sync::Arc;

use async_trait::async_trait;

pub use crate::access::AccessRequestStore;
use crate::audit::{Action, AuditDraft, AuditEvent, Outcome};
pub use crate::chains::ChainStore;
use crate::credential::{Credential, CredentialFilter, CredentialUpdate, StoredVersion};
use crate::error::Result;
pub use crate::idempotency::IdempotencyStore;
use crate::ids::{BindingId, CredentialId, GrantId, PrincipalId, TenantId};
pub use crate::keys::KeyStore;
use crate::lease::Lease;
pub use crate::lease::LeaseStore;
use crate::names::{CredentialName, Environment};
use crate::page::{Page, PageRequest};
use crate::policy::Grant;
use crate::principal::{IdentityBinding, IdentityPattern, Principal, PrincipalStatus, Role};
pub use crate::rotation::RotationStore;
use crate::scope::{IdentityMatch, PlatformScope, TenantScope};
use crate::tenant::{Tenant, TenantSettings, TenantStatus, WrappedKekRecord};
use crate::time::Timestamp;

/// Everything a new tenant starts with, stored in one transaction.
#[derive(Debug, Clone)]
pub struct NewTenant {
    /// The tenant (its `current_kek_version` must be the KEK's version).
    pub tenant: Tenant,
    /// Its first KEK, wrapped by the root key.
    pub kek: WrappedKekRecord,
    /// Its initial environments.
    pub environments: Vec<Environment>,
    /// Its first admin principal and the identity binding for it, if any
    /// (the binding must lie inside `namespaces`).
    pub admin: Option<(Principal, IdentityBinding)>,
    /// The identity namespaces assigned to it: the identities its admins
    /// may bind. None may overlap another tenant's.
    pub namespaces: Vec<IdentityPattern>,
}

/// What a crypto-shred of a tenant did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantShredded {
    /// The tenant as it is now (status `Shredded`).
    pub tenant: Tenant,
    /// Wrapped KEK versions deleted by this call.
    pub keys_destroyed: u32,
    /// Sealed values deleted by this call.
    pub values_destroyed: u32,
    /// Whether the tenant's metadata and audit chain are purged.
    pub purged: bool,
    /// True if the tenant was shredded (and purged, if asked) already and
    /// nothing was written.
    pub repeated: bool,
}

/// An identity binding that authentication ignores (the namespace migration
/// found it too broad or overlapping another tenant's binding, or it lies
/// outside its tenant's namespaces), as `strongroomd migrate` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisabledBinding {
    /// Owning tenant.
    pub tenant: TenantId,
    /// Its name.
    pub tenant_name: String,
    /// The binding.
    pub binding: BindingId,
    /// Its pattern.
    pub pattern: IdentityPattern,
    /// Why it is disabled.
    pub reason: String,
}

/// Filters for listing grants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrantFilter {
    /// Only grants for this principal directly.
    pub principal: Option<PrincipalId>,
    /// Only grants for this role.
    pub role: Option<Role>,
    /// Only grants whose selector covers this credential name.
    pub covering: Option<CredentialName>,
    /// Only grants that include this environment.
    pub environment: Option<Environment>,
    /// Only grants that include one of these environments (what a principal
    /// confined to them sees).
    pub in_environments: Option<Vec<Environment>>,
}

/// Filters for querying audit events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only events about this credential.
    pub credential: Option<CredentialId>,
    /// Only events by this principal.
    pub principal: Option<PrincipalId>,
    /// Only this action.
    pub action: Option<Action>,
    /// Only this outcome.
    pub outcome: Option<Outcome>,
    /// Only events at or after this time.
    pub since: Option<Timestamp>,
    /// Only events before this time.
    pub until: Option<Timestamp>,
    /// Only events in one of these environments (events of no environment
    /// are left out too): what a principal confined to environments sees.
    pub environments: Option<Vec<Environment>>,
}

/// What must still hold, at the moment a reveal's audit record commits, for
/// the reveal to be returned: the state the caller's decision was based on
/// (possibly read from a cache) is still the stored state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevealCheck {
    /// The credential revealed.
    pub credential: CredentialId,
    /// The version revealed: must still be the current one.
    pub version: u32,
    /// The acting principal: must still be active, with this role, in an
    /// active tenant.
    pub principal: PrincipalId,
    /// The principal's role when authorized.
    pub role: Role,
    /// The grant that allowed it, if a grant did: must still exist and not
    /// have expired.
    pub grant: Option<GrantId>,
    /// The identity binding that authenticated the caller, if known: must
    /// still exist and still bind the principal (a binding deleted on
    /// another server stops the caller's reveals even while that server's
    /// cached caller is fresh).
    pub binding: Option<BindingId>,
}

/// A notice of committed changes, saying how much cached state it affects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// One credential changed (written, rotated, rolled back, revoked,
    /// destroyed).
    Credential(TenantId, CredentialId),
    /// A tenant's grants or environments changed.
    Data(TenantId),
    /// Who the tenant's callers are changed (principals, identity bindings,
    /// tenant status, settings or keys): cached callers must go too.
    Access(TenantId),
    /// The tenant was shredded: its keys are destroyed. Every server forgets
    /// its unwrapped keys, as well as its cached callers and data.
    Keys(TenantId),
    /// An access request of the tenant was decided or expired: nothing
    /// cached depends on it, but waiting requesters wake.
    Requests(TenantId),
    /// A tenant's KEK version was retired: every server forgets its
    /// unwrapped key, and drops what [`Change::Access`] drops.
    KeyRetired(TenantId, u32),
    /// Changes may have been missed: every cache must be dropped.
    Everything,
}

impl Change {
    /// The notice an allowed event of `action` about `credential` (and,
    /// for a key retirement, KEK `version`) calls for, if any.
    pub fn of(
        tenant: TenantId,
        action: Action,
        credential: Option<CredentialId>,
        version: Option<u32>,
    ) -> Option<Change> {
        if !action.changes_state() {
            return None;
        }
        if let (Action::TenantKeyRetire, Some(v)) = (action, version) {
            return Some(Change::KeyRetired(tenant, v));
        }
        Some(match (action, credential) {
            (
                Action::CredentialCreate
                | Action::CredentialRotate
                | Action::CredentialRollback
                | Action::CredentialRevoke
                | Action::CredentialDestroy
                | Action::CredentialUpdate
                | Action::CredentialEmergencyRevoke
                | Action::CredentialExpire,
                Some(id),
            ) => Change::Credential(tenant, id),
            (Action::TenantShred, _) => Change::Keys(tenant),
            (Action::AccessRequestDeny | Action::AccessRequestExpire, _) => {
                Change::Requests(tenant)
            }
            (
                Action::GrantCreate
                | Action::GrantRevoke
                | Action::AccessRequestApprove
                | Action::EnvironmentCreate
                | Action::EnvironmentDelete,
                _,
            ) => Change::Data(tenant),
            // A binding can move an identity between tenants: every
            // server must drop every cached caller. An emergency revoke
            // deletes bindings too.
            (
                Action::BindingCreate
                | Action::BindingDelete
                | Action::PrincipalEmergencyRevoke
                | Action::TenantCreate
                | Action::TenantImport
                | Action::TenantNamespaces,
                _,
            ) => Change::Everything,
            _ => Change::Access(tenant),
        })
    }

    /// The text form sent between servers.
    pub fn to_text(&self) -> String {
        match self {
            Change::Credential(t, c) => format!("c {t} {c}"),
            Change::Data(t) => format!("d {t}"),
            Change::Access(t) => format!("a {t}"),
            Change::Requests(t) => format!("r {t}"),
            Change::Keys(t) => format!("k {t}"),
            Change::KeyRetired(t, v) => format!("k {t} {v}"),
            Change::Everything => "*".to_owned(),
        }
    }

    /// Parses [`Change::to_text`]; anything unreadable means everything.
    pub fn parse(text: &str) -> Change {
        let mut parts = text.split(' ');
        let kind = parts.next();
        let tenant = parts.next().and_then(|t| t.parse::<TenantId>().ok());
        let third = parts.next();
        if let (Some("k"), Some(t), Some(Ok(v))) = (kind, tenant, third.map(str::parse::<u32>)) {
            return Change::KeyRetired(t, v);
        }
        let credential = third.and_then(|c| c.parse::<CredentialId>().ok());
        match (kind, tenant, credential) {
            (Some("c"), Some(t), Some(c)) => Change::Credential(t, c),
            (Some("d"), Some(t), None) if third.is_none() => Change::Data(t),
            (Some("a"), Some(t), None) if third.is_none() => Change::Access(t),
            (Some("r"), Some(t), None) if third.is_none() => Change::Requests(t),
            (Some("k"), Some(t), None) if third.is_none() => Change::Keys(t),
            _ => Change::Everything,
        }
    }
}

/// Well-known keys of server-wide metadata.
pub mod meta {
    /// The root key's key-check value.
    pub const KEY_CHECK: &str = "root_key_check";
    /// Argon2id parameters when the root key is derived from a passphrase.
    pub const KDF_PARAMS: &str = "root_key_kdf_params";
}

/// Every storage port: what a backend implements (Postgres, SQLite, and
/// wrappers such as the pool share), and what the server holds as
/// `Arc<dyn Store>`. Implemented for every type that implements each
/// aggregate's port; the methods are those of the ports, one per aggregate.
pub trait Store:
    MetaStore
    + IdentityStore
    + TenantStore
    + EnvironmentStore
    + PrincipalStore
    + CredentialStore
    + GrantStore
    + AuditStore
    + ChainStore
    + LeaseStore
    + AccessRequestStore
    + IdempotencyStore
    + RotationStore
    + crate::notify::NotificationStore
    + KeyStore
    + crate::export::ExportStore
    + Send
    + Sync
    + 'static
{
}

impl<T> Store for T where
    T: MetaStore
        + IdentityStore
        + TenantStore
        + EnvironmentStore
        + PrincipalStore
        + CredentialStore
        + GrantStore
        + AuditStore
        + ChainStore
        + LeaseStore
        + AccessRequestStore
        + IdempotencyStore
        + RotationStore
        + crate::notify::NotificationStore
        + KeyStore
        + crate::export::ExportStore
        + Send
        + Sync
        + 'static
{
}

/// Server-wide metadata: small values that belong to no tenant (the root
/// key's check value, its derivation parameters).
#[async_trait]
pub trait MetaStore: Send + Sync {
    /// Reads a server-wide metadata value (not tenant data; never secret).
    async fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>>;

    /// Stores a server-wide metadata value unless the key exists; returns
    /// whether it was stored.
    async fn put_meta_if_absent(&self, key: &str, value: &[u8]) -> Result<bool>;
}

/// Which tenant and principal an identity stands for: the identity
/// namespaces assigned to tenants, and the resolution of an identity
/// through the bindings those namespaces cover.
#[async_trait]
pub trait IdentityStore: Send + Sync {
    /// Finds the principals whose identity bindings match `identity`, with
    /// their tenants. Used only by the authenticator. Only enabled bindings
    /// that one of their tenant's identity namespaces covers count, so an
    /// identity resolves into no tenant but the one its namespace belongs
    /// to.
    async fn resolve_identity(&self, identity: &str) -> Result<Vec<IdentityMatch>>;

    /// Replaces the identity namespaces of tenant `id`, under the same lock
    /// and with the same overlap refusal as [`TenantStore::create_tenant`].
    /// The tenant's bindings no longer inside its namespaces are disabled
    /// (and those inside them again enabled) in the same transaction.
    async fn set_identity_namespaces(
        &self,
        scope: &PlatformScope<'_>,
        id: TenantId,
        namespaces: &[IdentityPattern],
        audit: AuditDraft,
    ) -> Result<()>;

    /// The identity namespaces of the tenants whose ids lie in `from..=to`,
    /// by tenant id then pattern.
    async fn identity_namespaces(
        &self,
        scope: &PlatformScope<'_>,
        from: TenantId,
        to: TenantId,
    ) -> Result<Vec<(TenantId, IdentityPattern)>>;
}

/// Tenants: the registry a platform operator manages, each tenant's own
/// record (status, settings) and its key-encryption keys.
#[async_trait]
pub trait TenantStore: Send + Sync {
    /// Creates a tenant with its first KEK, environments, identity
    /// namespaces and admin. `AlreadyExists` if the name is taken;
    /// `InvalidArgument` with [`crate::principal::NAMESPACE_OVERLAP`] if a
    /// namespace overlaps another tenant's (checked under a lock, so two
    /// concurrent assignments of overlapping namespaces cannot both succeed).
    async fn create_tenant(
        &self,
        scope: &PlatformScope<'_>,
        new: &NewTenant,
        audit: AuditDraft,
    ) -> Result<()>;

    /// Lists tenants, oldest first.
    async fn list_tenants(
        &self,
        scope: &PlatformScope<'_>,
        page: &PageRequest,
    ) -> Result<Page<Tenant>>;

    /// Reads one tenant by id.
    async fn get_tenant(&self, scope: &PlatformScope<'_>, id: TenantId) -> Result<Tenant>;

    /// Suspends, resumes or marks a tenant shredded; the event goes into that
    /// tenant's chain.
    async fn set_tenant_status(
        &self,
        scope: &PlatformScope<'_>,
        id: TenantId,
        status: TenantStatus,
        audit: AuditDraft,
    ) -> Result<Tenant>;

    /// Crypto-shreds tenant `id`, in one transaction: deletes every wrapped
    /// KEK version and every sealed value of the tenant (credential
    /// versions' envelopes, the notifier's sealed signing secret), marks
    /// its credentials destroyed and the tenant `Shredded`, announces
    /// [`Change::Keys`] to every server, and links `audit` (its detail
    /// [`AuditDetail::TenantShred`](crate::audit::AuditDetail::TenantShred)
    /// filled with the counts) into the platform chain. With `purge`, the
    /// tenant's metadata (credentials, grants, principals and bindings,
    /// environments, namespaces, leases, access requests, deliveries,
    /// idempotency records) and its audit chain (events, head,
    /// checkpoints) are deleted too; the tenant row stays as a tombstone.
    /// A tenant already shredded (and purged, if `purge`) is left as it is
    /// and nothing is written (`repeated`). `NotFound` if absent.
    async fn shred_tenant(
        &self,
        scope: &PlatformScope<'_>,
        id: TenantId,
        purge: bool,
        audit: AuditDraft,
    ) -> Result<TenantShredded>;

    /// The scope's tenant as stored now.
    async fn tenant(&self, scope: &TenantScope<'_>) -> Result<Tenant>;

    /// Replaces the tenant's settings.
    async fn update_tenant_settings(
        &self,
        scope: &TenantScope<'_>,
        settings: &TenantSettings,
        audit: AuditDraft,
    ) -> Result<Tenant>;

    /// Every KEK version of the tenant, wrapped.
    async fn keks(&self, scope: &TenantScope<'_>) -> Result<Vec<WrappedKekRecord>>;

    /// Adds a KEK version and makes it current.
    async fn add_kek(
        &self,
        scope: &TenantScope<'_>,
        kek: &WrappedKekRecord,
        audit: AuditDraft,
    ) -> Result<Tenant>;
}

/// A tenant's environments (`dev`, `production`, ...), which hold its
/// credentials.
#[async_trait]
pub trait EnvironmentStore: Send + Sync {
    /// Adds an environment. `AlreadyExists` if present.
    async fn create_environment(
        &self,
        scope: &TenantScope<'_>,
        environment: &Environment,
        audit: AuditDraft,
    ) -> Result<()>;

    /// The tenant's environments, by name.
    async fn list_environments(&self, scope: &TenantScope<'_>) -> Result<Vec<Environment>>;

    /// Removes an environment. `FailedPrecondition` while credentials live in
    /// it, `NotFound` if absent.
    async fn delete_environment(
        &self,
        scope: &TenantScope<'_>,
        environment: &Environment,
        audit: AuditDraft,
    ) -> Result<()>;
}

/// A tenant's principals and the identity bindings that authenticate them.
#[async_trait]
pub trait PrincipalStore: Send + Sync {
    /// Adds a principal. `AlreadyExists` if its name is taken.
    async fn create_principal(
        &self,
        scope: &TenantScope<'_>,
        principal: &Principal,
        audit: AuditDraft,
    ) -> Result<()>;

    /// Reads a principal.
    async fn get_principal(&self, scope: &TenantScope<'_>, id: PrincipalId) -> Result<Principal>;

    /// Lists principals, oldest first.
    async fn list_principals(
        &self,
        scope: &TenantScope<'_>,
        page: &PageRequest,
    ) -> Result<Page<Principal>>;

    /// Enables or disables a principal. Disabling it ends its active
    /// leases in the same transaction, each with a `lease.revoke` event;
    /// returns the principal and how many leases ended.
    async fn set_principal_status(
        &self,
        scope: &TenantScope<'_>,
        id: PrincipalId,
        status: PrincipalStatus,
        audit: AuditDraft,
    ) -> Result<(Principal, u32)>;

    /// Stores `principal`'s name, role, environments and description (an
    /// existing principal of the tenant: `NotFound` otherwise,
    /// `AlreadyExists` if another has the name). With `narrowed`, its
    /// active leases end in the same transaction, each with a
    /// `lease.revoke` event; returns the principal as stored and how many
    /// leases ended.
    async fn update_principal(
        &self,
        scope: &TenantScope<'_>,
        principal: &Principal,
        narrowed: bool,
        audit: AuditDraft,
    ) -> Result<(Principal, u32)>;

    /// Adds an identity binding. `AlreadyExists` if the tenant already binds
    /// the same pattern; `NotFound` if the principal is absent;
    /// `PermissionDenied` with
    /// [`crate::principal::BINDING_OUTSIDE_NAMESPACES`] unless one of the
    /// tenant's identity namespaces covers the pattern (checked in the
    /// transaction, against concurrent namespace changes).
    async fn create_binding(
        &self,
        scope: &TenantScope<'_>,
        binding: &IdentityBinding,
        audit: AuditDraft,
    ) -> Result<()>;

    /// Lists bindings, optionally of one principal, oldest first.
    async fn list_bindings(
        &self,
        scope: &TenantScope<'_>,
        principal: Option<PrincipalId>,
        page: &PageRequest,
    ) -> Result<Page<IdentityBinding>>;

    /// Deletes a binding.
    async fn delete_binding(
        &self,
        scope: &TenantScope<'_>,
        id: BindingId,
        audit: AuditDraft,
    ) -> Result<()>;

    /// Emergency revoke of a principal, in one transaction: disables it,
    /// deletes every grant whose subject it is, ends its active leases
    /// (each with a `lease.revoke` event) and deletes its identity
    /// bindings. `audit` is committed with the counts filled into its
    /// detail ([`AuditDetail::PrincipalEmergencyRevoke`](crate::audit::AuditDetail::PrincipalEmergencyRevoke),
    /// with `reason`). A principal already disabled with nothing left to
    /// cut is left as it is and nothing is written (all counts zero).
    async fn emergency_revoke_principal(
        &self,
        scope: &TenantScope<'_>,
        id: PrincipalId,
        reason: &str,
        audit: AuditDraft,
    ) -> Result<PrincipalRevoked>;
}

/// What an emergency revoke of a principal cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrincipalRevoked {
    /// The principal as it is now (disabled).
    pub principal: Principal,
    /// Grants deleted.
    pub grants_revoked: u32,
    /// Leases ended.
    pub leases_ended: u32,
    /// Identity bindings deleted.
    pub bindings_deleted: u32,
}

/// What an emergency revoke of a credential cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialRevoked {
    /// The credential as it is now: revoked, or (rotated) active at its new
    /// version.
    pub credential: Credential,
    /// The version that was current when the revoke began.
    pub revoked_version: u32,
    /// The generated version made current, when the revoke rotated.
    pub new_version: Option<u32>,
    /// Leases of the credential ended.
    pub leases_ended: u32,
    /// The grants that allowed the leases ended, each once, sorted.
    pub grants: Vec<GrantId>,
}

/// The generated version an emergency revoke makes current instead of
/// revoking the credential as a whole.
#[derive(Debug, Clone)]
pub struct EmergencyRotation {
    /// The new version: `expected_latest + 1`, sealed.
    pub version: StoredVersion,
    /// The latest version the engine saw (a compare-and-set, as for
    /// [`CredentialStore::add_version`]).
    pub expected_latest: u32,
    /// The tenant's version retention.
    pub retention: u32,
}

/// A tenant's credentials: their metadata and their sealed versions.
#[async_trait]
pub trait CredentialStore: Send + Sync {
    /// Stores a new credential with its first version (number 1).
    /// `AlreadyExists` if the name is taken in that environment; `NotFound`
    /// if the environment does not exist.
    async fn create_credential(
        &self,
        scope: &TenantScope<'_>,
        credential: &Credential,
        first: &StoredVersion,
        audit: AuditDraft,
    ) -> Result<()>;

    /// Reads a credential's metadata by id.
    async fn get_credential(&self, scope: &TenantScope<'_>, id: CredentialId)
    -> Result<Credential>;

    /// Reads a credential's metadata by environment and name.
    async fn find_credential(
        &self,
        scope: &TenantScope<'_>,
        environment: &Environment,
        name: &CredentialName,
    ) -> Result<Credential>;

    /// Lists credentials matching `filter`, ordered by id (creation order).
    async fn list_credentials(
        &self,
        scope: &TenantScope<'_>,
        filter: &CredentialFilter,
        page: &PageRequest,
    ) -> Result<Page<Credential>>;

    /// Adds `version` (which must be `expected_latest + 1`) and makes it
    /// current, then deletes all but the newest `retention` versions.
    /// `FailedPrecondition` if another writer added a version first (the
    /// caller re-reads and retries) or the credential is not active.
    async fn add_version(
        &self,
        scope: &TenantScope<'_>,
        id: CredentialId,
        expected_latest: u32,
        version: &StoredVersion,
        retention: u32,
        audit: AuditDraft,
    ) -> Result<Credential>;

    /// Reads one stored version. `NotFound` if pruned or never written.
    async fn get_version(
        &self,
        scope: &TenantScope<'_>,
        id: CredentialId,
        version: u32,
    ) -> Result<StoredVersion>;

    /// The retained versions, newest first.
    async fn list_versions(
        &self,
        scope: &TenantScope<'_>,
        id: CredentialId,
    ) -> Result<Vec<StoredVersion>>;

    /// Makes a retained version current again (rollback).
    async fn set_current_version(
        &self,
        scope: &TenantScope<'_>,
        id: CredentialId,
        version: u32,
        audit: AuditDraft,
    ) -> Result<Credential>;

    /// Marks a credential revoked with a reason, ending its active leases in
    /// the same transaction (each with a `lease.revoke` event); returns the
    /// credential and how many leases ended.
    async fn revoke_credential(
        &self,
        scope: &TenantScope<'_>,
        id: CredentialId,
        reason: &str,
        audit: AuditDraft,
    ) -> Result<(Credential, u32)>;

    /// Changes the metadata fields `update` sets (and `updated_at`, to
    /// `audit.at`), only those columns, in one transaction with `audit`;
    /// when `narrowed`, the credential's active leases end in it too
    /// (`credential_narrowed`, each with a `lease.revoke` event). Returns the
    /// credential and how many leases ended.
    async fn update_credential(
        &self,
        scope: &TenantScope<'_>,
        id: CredentialId,
        update: &CredentialUpdate,
        narrowed: bool,
        audit: AuditDraft,
    ) -> Result<(Credential, u32)>;

    /// Emergency revoke of a credential, in one transaction: without
    /// `rotation`, marks it revoked; with it, adds the generated version,
    /// makes it current and destroys the value of the version that was
    /// current. Either way every active lease of the credential ends
    /// (`credential_revoked`, each with a `lease.revoke` event) and
    /// `audit` is committed with what was cut filled into its detail
    /// ([`AuditDetail::CredentialEmergencyRevoke`](crate::audit::AuditDetail::CredentialEmergencyRevoke),
    /// with `reason`). A credential revoked already with no lease left is
    /// left as it is and nothing is written (counts zero). A rotation of a
    /// credential that is not usable is `FailedPrecondition`; a lost race on
    /// the latest version is `Precondition::VersionRace`.
    async fn emergency_revoke_credential(
        &self,
        scope: &TenantScope<'_>,
        id: CredentialId,
        reason: &str,
        rotation: Option<EmergencyRotation>,
        audit: AuditDraft,
    ) -> Result<CredentialRevoked>;

    /// Deletes every stored value of a credential, keeping its metadata;
    /// its active leases end in the same transaction.
    async fn destroy_credential(
        &self,
        scope: &TenantScope<'_>,
        id: CredentialId,
        audit: AuditDraft,
    ) -> Result<Credential>;
}

/// A tenant's grants: who may do what with which credentials.
#[async_trait]
pub trait GrantStore: Send + Sync {
    /// Stores a grant.
    async fn create_grant(
        &self,
        scope: &TenantScope<'_>,
        grant: &Grant,
        audit: AuditDraft,
    ) -> Result<()>;

    /// Reads a grant.
    async fn get_grant(&self, scope: &TenantScope<'_>, id: GrantId) -> Result<Grant>;

    /// Deletes a grant, ending the active leases it allowed in the same
    /// transaction (each with a `lease.revoke` event); returns how many
    /// ended.
    async fn delete_grant(
        &self,
        scope: &TenantScope<'_>,
        id: GrantId,
        audit: AuditDraft,
    ) -> Result<u32>;

    /// Lists grants matching `filter`, oldest first.
    async fn list_grants(
        &self,
        scope: &TenantScope<'_>,
        filter: &GrantFilter,
        page: &PageRequest,
    ) -> Result<Page<Grant>>;

    /// Every grant whose subject is `principal` or its role (expired ones
    /// included: evaluation reports them).
    async fn grants_for(
        &self,
        scope: &TenantScope<'_>,
        principal: &Principal,
    ) -> Result<Vec<Grant>>;
}

/// A tenant's audit chain: appending events (every reveal and denial, each
/// checked at commit where it must be), querying them, and the notices of
/// committed state changes that caches follow.
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Links `draft` into the tenant's chain and stores it durably.
    async fn append_audit(&self, scope: &TenantScope<'_>, draft: AuditDraft) -> Result<AuditEvent>;

    /// Links a reveal's `draft` into the chain and stores it durably, with
    /// the reveal's `lease` if any, in the same transaction verifying
    /// `check` against the stored state; `FailedPrecondition` (and nothing
    /// stored) if the check fails, so a decision taken on stale cached
    /// state is never acted on.
    async fn append_reveal(
        &self,
        scope: &TenantScope<'_>,
        draft: AuditDraft,
        check: RevealCheck,
        lease: Option<Arc<Lease>>,
    ) -> Result<AuditEvent>;

    /// Whether every one of `checks` still holds against the stored state,
    /// by the same rule [`AuditStore::append_reveal`] applies at commit, but
    /// writing nothing: `Some` with why the first that fails no longer
    /// holds. What an open use of a value is checked against while it goes
    /// on.
    async fn check_reveals(
        &self,
        scope: &TenantScope<'_>,
        checks: &[RevealCheck],
    ) -> Result<Option<&'static str>>;

    /// Notices of committed state changes (from this process and, on a
    /// shared database, from other servers), for cache invalidation.
    fn changes(&self) -> tokio::sync::broadcast::Receiver<Change>;

    /// Wake-ups for readers following a chain: the tenant whose chain may
    /// have grown, sent as this process's appends commit (an event linked
    /// in a transaction of its own may be announced just before its
    /// commit). A hint only: a follower re-reads the chain from its last
    /// sequence on each, and still polls, so a lost or early wake-up only
    /// delays it. Other servers' appends arrive by polling.
    fn appended(&self) -> tokio::sync::broadcast::Receiver<TenantId>;

    /// Queries events, newest first.
    async fn query_audit(
        &self,
        scope: &TenantScope<'_>,
        filter: &AuditFilter,
        page: &PageRequest,
    ) -> Result<Page<AuditEvent>>;

    /// Up to `limit` events with sequence greater than `after`, in order,
    /// for chain verification and streaming.
    async fn audit_after(
        &self,
        scope: &TenantScope<'_>,
        after: u64,
        limit: u32,
    ) -> Result<Vec<AuditEvent>>;
}

#[cfg(test)]
mod change_tests {
    use super::*;

    #[test]
    fn a_key_retirement_names_its_version_and_travels_as_text() {
        let t = TenantId::generate();
        let c = Change::of(t, Action::TenantKeyRetire, None, Some(3));
        assert_eq!(c, Some(Change::KeyRetired(t, 3)));
        let c = c.unwrap_or(Change::Everything);
        assert_eq!(Change::parse(&c.to_text()), c);
        let other = Change::Credential(t, CredentialId::generate());
        assert_eq!(Change::parse(&other.to_text()), other);
        assert_eq!(Change::parse(&format!("k {t} x")), Change::Everything);
        assert_eq!(Change::parse(&Change::Keys(t).to_text()), Change::Keys(t));
    }
}
