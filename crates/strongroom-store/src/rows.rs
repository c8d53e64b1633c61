//! Rows as both backends store them: each table's column list (in the
//! order its row type and its inserts use), the row types read, their
//! conversion to domain types, and [`EventRow`], the one place an audit
//! event becomes the values of its columns. Stored text is parsed again on
//! the way out, so a corrupted row surfaces as an internal error instead of
//! an invalid domain value.
//!
//! The column lists are macros (each expands to one string literal) so the
//! statements of the aggregate modules can be `const`s built with
//! `concat!`.

use sqlx::FromRow;
use strongroom_core::audit::{
    Action, AuditDetail, AuditDraft, AuditEvent, ChainHead, EventFormat, Outcome,
};
use strongroom_core::credential::{
    Credential, CredentialStatus, InjectionTemplate, RotationPolicy, StoredVersion,
};
use strongroom_core::ids::{
    AccessRequestId, BindingId, CredentialId, EventId, GrantId, PrincipalId, TenantId,
};
use strongroom_core::names::{
    CredentialName, Environment, PrincipalName, ServiceLabel, Tag, TenantName,
};
use strongroom_core::policy::{Capabilities, Destination, Grant, GrantSubject, Selector};
use strongroom_core::principal::{
    IdentityBinding, IdentityPattern, Principal, PrincipalStatus, Role,
};
use strongroom_core::store::DisabledBinding;
use strongroom_core::tenant::{Tenant, TenantSettings, TenantStatus, WrappedKekRecord};
use strongroom_core::time::Timestamp;
use strongroom_core::value::CredentialType;
use strongroom_core::{Error, Result};
use uuid::Uuid;

fn corrupt(what: &str) -> Error {
    Error::internal(format!("stored {what} is not valid"))
}

fn ts(v: i64) -> Timestamp {
    Timestamp::from_micros(v)
}

fn u32_of(v: i32, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| corrupt(what))
}

pub(crate) fn json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::internal(format!("serialize: {e}")))
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|_| corrupt(what))
}

pub(crate) fn version_i32(v: u32) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::invalid("version", "is out of range"))
}

/// The columns of `tenants`, as [`TenantRow`] reads them.
macro_rules! tenant_columns {
    () => {
        "id, name, status, settings, current_kek_version, created_at"
    };
}
pub(crate) use tenant_columns;

#[derive(FromRow)]
pub struct TenantRow {
    pub id: Uuid,
    pub name: String,
    pub status: String,
    pub settings: String,
    pub current_kek_version: i32,
    pub created_at: i64,
}

impl TryFrom<TenantRow> for Tenant {
    type Error = Error;
    fn try_from(r: TenantRow) -> Result<Self> {
        Ok(Tenant {
            id: TenantId::from_uuid(r.id),
            name: TenantName::try_from(r.name).map_err(|_| corrupt("tenant name"))?,
            status: TenantStatus::parse(&r.status).map_err(|_| corrupt("tenant status"))?,
            settings: from_json::<TenantSettings>(&r.settings, "tenant settings")?,
            current_kek_version: u32_of(r.current_kek_version, "kek version")?,
            created_at: ts(r.created_at),
        })
    }
}

#[derive(FromRow)]
pub struct KekRow {
    pub tenant_id: Uuid,
    pub version: i32,
    pub wrapped: Vec<u8>,
    pub created_at: i64,
}

impl TryFrom<KekRow> for WrappedKekRecord {
    type Error = Error;
    fn try_from(r: KekRow) -> Result<Self> {
        Ok(WrappedKekRecord {
            tenant: TenantId::from_uuid(r.tenant_id),
            version: u32_of(r.version, "kek version")?,
            wrapped: r.wrapped,
            created_at: ts(r.created_at),
        })
    }
}

/// The columns of `principals`, as [`PrincipalRow`] reads them.
macro_rules! principal_columns {
    () => {
        "tenant_id, id, name, role, environments, description, status, created_at"
    };
}
pub(crate) use principal_columns;

#[derive(FromRow)]
pub struct PrincipalRow {
    pub tenant_id: Uuid,
    pub id: Uuid,
    pub name: String,
    pub role: String,
    pub environments: String,
    pub description: String,
    pub status: String,
    pub created_at: i64,
}

impl TryFrom<PrincipalRow> for Principal {
    type Error = Error;
    fn try_from(r: PrincipalRow) -> Result<Self> {
        Ok(Principal {
            id: PrincipalId::from_uuid(r.id),
            tenant: TenantId::from_uuid(r.tenant_id),
            name: PrincipalName::try_from(r.name).map_err(|_| corrupt("principal name"))?,
            role: Role::parse(&r.role).map_err(|_| corrupt("role"))?,
            environments: from_json::<Vec<Environment>>(&r.environments, "principal environments")?,
            description: r.description,
            status: PrincipalStatus::parse(&r.status).map_err(|_| corrupt("principal status"))?,
            created_at: ts(r.created_at),
        })
    }
}

/// A binding joined with its principal and tenant, for authentication.
#[derive(FromRow)]
pub struct IdentityMatchRow {
    pub binding_id: Uuid,
    pub kind: String,
    pub pattern: String,
    #[sqlx(flatten)]
    pub principal: PrincipalRow,
    pub t_name: String,
    pub t_status: String,
    pub t_settings: String,
    pub t_kek: i32,
    pub t_created_at: i64,
}

impl TryFrom<IdentityMatchRow> for strongroom_core::scope::IdentityMatch {
    type Error = Error;
    fn try_from(r: IdentityMatchRow) -> Result<Self> {
        let tenant = Tenant::try_from(TenantRow {
            id: r.principal.tenant_id,
            name: r.t_name,
            status: r.t_status,
            settings: r.t_settings,
            current_kek_version: r.t_kek,
            created_at: r.t_created_at,
        })?;
        Ok(Self {
            tenant,
            pattern: pattern(&r.kind, r.pattern)?,
            principal: Principal::try_from(r.principal)?,
            binding: BindingId::from_uuid(r.binding_id),
        })
    }
}

pub(crate) fn pattern(kind: &str, text: String) -> Result<IdentityPattern> {
    match kind {
        "exact" => Ok(IdentityPattern::Exact(text)),
        "prefix" => Ok(IdentityPattern::Prefix(text)),
        _ => Err(corrupt("binding kind")),
    }
}

pub(crate) fn pattern_parts(p: &IdentityPattern) -> (&'static str, &str) {
    match p {
        IdentityPattern::Exact(e) => ("exact", e.as_str()),
        IdentityPattern::Prefix(p) => ("prefix", p.as_str()),
    }
}

/// The columns of `identity_bindings` that [`BindingRow`] reads (and a new
/// binding is inserted with).
macro_rules! binding_columns {
    () => {
        "tenant_id, id, principal_id, kind, pattern, created_at"
    };
}
pub(crate) use binding_columns;

#[derive(FromRow)]
pub struct BindingRow {
    pub tenant_id: Uuid,
    pub id: Uuid,
    pub principal_id: Uuid,
    pub kind: String,
    pub pattern: String,
    pub created_at: i64,
}

impl TryFrom<BindingRow> for IdentityBinding {
    type Error = Error;
    fn try_from(r: BindingRow) -> Result<Self> {
        Ok(IdentityBinding {
            id: BindingId::from_uuid(r.id),
            tenant: TenantId::from_uuid(r.tenant_id),
            principal: PrincipalId::from_uuid(r.principal_id),
            pattern: pattern(&r.kind, r.pattern)?,
            created_at: ts(r.created_at),
        })
    }
}

/// The columns of `credentials`, as [`CredentialRow`] reads them.
macro_rules! credential_columns {
    () => {
        "tenant_id, id, environment, name, service, kind, description, tags, scopes, owner, \
         status, current_version, latest_version, rotated_at, created_at, updated_at, \
         expires_at, revoked_at, revoke_reason, destroyed_at, rotation, injection, created_by"
    };
}
pub(crate) use credential_columns;

#[derive(FromRow)]
pub struct CredentialRow {
    pub tenant_id: Uuid,
    pub id: Uuid,
    pub environment: String,
    pub name: String,
    pub service: String,
    pub kind: String,
    pub description: String,
    pub tags: String,
    pub scopes: String,
    pub owner: Option<String>,
    pub status: String,
    pub current_version: i32,
    pub latest_version: i32,
    pub rotated_at: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub revoke_reason: Option<String>,
    pub destroyed_at: Option<i64>,
    pub rotation: Option<String>,
    pub injection: Option<String>,
    pub created_by: Uuid,
}

impl TryFrom<CredentialRow> for Credential {
    type Error = Error;
    fn try_from(r: CredentialRow) -> Result<Self> {
        Ok(Credential {
            id: CredentialId::from_uuid(r.id),
            tenant: TenantId::from_uuid(r.tenant_id),
            environment: Environment::try_from(r.environment)
                .map_err(|_| corrupt("environment"))?,
            name: CredentialName::try_from(r.name).map_err(|_| corrupt("credential name"))?,
            service: ServiceLabel::try_from(r.service).map_err(|_| corrupt("service"))?,
            kind: CredentialType::parse(&r.kind).map_err(|_| corrupt("credential type"))?,
            description: r.description,
            tags: from_json::<Vec<Tag>>(&r.tags, "tags")?,
            scopes: from_json::<Vec<String>>(&r.scopes, "scopes")?,
            owner: r.owner,
            status: CredentialStatus::parse(&r.status).map_err(|_| corrupt("status"))?,
            current_version: u32_of(r.current_version, "version")?,
            latest_version: u32_of(r.latest_version, "version")?,
            rotated_at: ts(r.rotated_at),
            created_at: ts(r.created_at),
            updated_at: ts(r.updated_at),
            expires_at: r.expires_at.map(ts),
            revoked_at: r.revoked_at.map(ts),
            revoke_reason: r.revoke_reason,
            destroyed_at: r.destroyed_at.map(ts),
            rotation: r
                .rotation
                .map(|t| from_json::<RotationPolicy>(&t, "rotation policy"))
                .transpose()?,
            injection: r
                .injection
                .map(|t| from_json::<InjectionTemplate>(&t, "injection template"))
                .transpose()?,
            created_by: PrincipalId::from_uuid(r.created_by),
        })
    }
}

/// The columns of `credential_versions` but its tenant, as [`VersionRow`]
/// reads them.
macro_rules! version_columns {
    () => {
        "credential_id, version, envelope, kek_version, created_at, created_by"
    };
}
pub(crate) use version_columns;

#[derive(FromRow)]
pub struct VersionRow {
    pub credential_id: Uuid,
    pub version: i32,
    pub envelope: Option<Vec<u8>>,
    pub kek_version: i32,
    pub created_at: i64,
    pub created_by: Uuid,
}

impl TryFrom<VersionRow> for StoredVersion {
    type Error = Error;
    fn try_from(r: VersionRow) -> Result<Self> {
        Ok(StoredVersion {
            credential: CredentialId::from_uuid(r.credential_id),
            version: u32_of(r.version, "version")?,
            envelope: r.envelope,
            kek_version: u32_of(r.kek_version, "kek version")?,
            created_at: ts(r.created_at),
            created_by: PrincipalId::from_uuid(r.created_by),
        })
    }
}

/// The columns of `grants`, as [`GrantRow`] reads them.
macro_rules! grant_columns {
    () => {
        "tenant_id, id, subject_kind, subject, selector, environments, capabilities, \
         destinations, expires_at, reason, granted_by, created_at, access_request_id"
    };
}
pub(crate) use grant_columns;

#[derive(FromRow)]
pub struct GrantRow {
    pub tenant_id: Uuid,
    pub id: Uuid,
    pub subject_kind: String,
    pub subject: String,
    pub selector: String,
    pub environments: String,
    pub capabilities: i32,
    pub destinations: String,
    pub expires_at: Option<i64>,
    pub reason: String,
    pub granted_by: Uuid,
    pub created_at: i64,
    pub access_request_id: Option<Uuid>,
}

pub(crate) fn subject_parts(s: &GrantSubject) -> (&'static str, String) {
    match s {
        GrantSubject::Principal(p) => ("principal", p.to_string()),
        GrantSubject::Role(r) => ("role", r.as_str().to_owned()),
    }
}

impl TryFrom<GrantRow> for Grant {
    type Error = Error;
    fn try_from(r: GrantRow) -> Result<Self> {
        let subject = match r.subject_kind.as_str() {
            "principal" => GrantSubject::Principal(
                PrincipalId::parse(&r.subject, "subject").map_err(|_| corrupt("grant subject"))?,
            ),
            "role" => {
                GrantSubject::Role(Role::parse(&r.subject).map_err(|_| corrupt("grant role"))?)
            }
            _ => return Err(corrupt("grant subject kind")),
        };
        Ok(Grant {
            id: GrantId::from_uuid(r.id),
            tenant: TenantId::from_uuid(r.tenant_id),
            subject,
            selector: Selector::parse(&r.selector, "selector").map_err(|_| corrupt("selector"))?,
            environments: from_json::<Vec<Environment>>(&r.environments, "grant environments")?,
            capabilities: Capabilities::from_bits(
                u8::try_from(r.capabilities).map_err(|_| corrupt("capabilities"))?,
            ),
            destinations: from_json::<Vec<Destination>>(&r.destinations, "destinations")?,
            expires_at: r.expires_at.map(ts),
            reason: r.reason,
            granted_by: PrincipalId::from_uuid(r.granted_by),
            access_request: r.access_request_id.map(AccessRequestId::from_uuid),
            created_at: ts(r.created_at),
        })
    }
}

/// The columns of `audit_events` and `platform_audit_events`, as
/// [`AuditRow`] reads them and [`EventRow`] holds them.
macro_rules! audit_columns {
    () => {
        "tenant_id, sequence, id, at, principal_id, actor, on_behalf_of, action, credential_id, \
         credential_name, version, environment, purpose, outcome, reason_code, peer, request_id, \
         trace_id, detail, prev_hash, hash, format"
    };
}
pub(crate) use audit_columns;

#[derive(FromRow)]
pub struct AuditRow {
    pub tenant_id: Uuid,
    pub sequence: i64,
    pub id: Uuid,
    pub at: i64,
    pub principal_id: Option<Uuid>,
    pub actor: String,
    pub on_behalf_of: Option<String>,
    pub action: String,
    pub credential_id: Option<Uuid>,
    pub credential_name: Option<String>,
    pub version: Option<i32>,
    pub environment: Option<String>,
    pub purpose: Option<String>,
    pub outcome: String,
    pub reason_code: String,
    pub peer: Option<String>,
    pub request_id: Option<String>,
    pub trace_id: Option<String>,
    pub detail: Option<String>,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
    pub format: i32,
}

fn hash32(bytes: &[u8]) -> Result<[u8; 32]> {
    bytes.try_into().map_err(|_| corrupt("audit hash"))
}

impl TryFrom<AuditRow> for AuditEvent {
    type Error = Error;
    fn try_from(r: AuditRow) -> Result<Self> {
        let format = EventFormat::from_number(r.format).ok_or_else(|| corrupt("audit format"))?;
        // A format-2 detail that is not a canonical encoding is kept as
        // text, untyped: the event then fails verification rather than
        // hiding the rest of its chain.
        let detail = match (format, r.detail.as_deref()) {
            (EventFormat::V2, Some(text)) => AuditDetail::decode(text).ok(),
            _ => None,
        };
        Ok(AuditEvent {
            tenant: TenantId::from_uuid(r.tenant_id),
            sequence: u64::try_from(r.sequence).map_err(|_| corrupt("audit sequence"))?,
            format,
            detail_text: r.detail,
            draft: AuditDraft {
                id: EventId::from_uuid(r.id),
                at: ts(r.at),
                principal: r.principal_id.map(PrincipalId::from_uuid),
                actor: r.actor,
                on_behalf_of: r.on_behalf_of,
                action: Action::parse(&r.action).ok_or_else(|| corrupt("audit action"))?,
                credential: r.credential_id.map(CredentialId::from_uuid),
                credential_name: r.credential_name,
                version: r.version.map(|v| u32_of(v, "version")).transpose()?,
                environment: r.environment,
                purpose: r.purpose,
                outcome: Outcome::parse(&r.outcome).ok_or_else(|| corrupt("audit outcome"))?,
                reason_code: r.reason_code,
                peer: r.peer,
                request_id: r.request_id,
                trace_id: r.trace_id,
                detail,
            },
            prev_hash: hash32(&r.prev_hash)?,
            hash: hash32(&r.hash)?,
        })
    }
}

/// One sealed audit event as the values of its columns, in
/// [`audit_columns!`] order: every insert of events (one at a time, or a
/// batch's on either backend) binds these, destructured, so a column added
/// here fails to compile until every insert binds it.
pub(crate) struct EventRow<'a> {
    /// The chain: the tenant's id, or the platform chain's.
    pub chain: Uuid,
    pub sequence: i64,
    pub id: Uuid,
    pub at: i64,
    pub principal: Option<Uuid>,
    pub actor: &'a str,
    pub on_behalf_of: Option<&'a str>,
    pub action: &'static str,
    pub credential: Option<Uuid>,
    pub credential_name: Option<&'a str>,
    pub version: Option<i32>,
    pub environment: Option<&'a str>,
    pub purpose: Option<&'a str>,
    pub outcome: &'static str,
    pub reason_code: &'a str,
    pub peer: Option<&'a str>,
    pub request_id: Option<&'a str>,
    pub trace_id: Option<&'a str>,
    pub detail: Option<&'a str>,
    pub prev_hash: &'a [u8],
    pub hash: &'a [u8],
    pub format: i32,
}

impl<'a> EventRow<'a> {
    /// The columns of `event` (its sequence or version may not fit).
    pub fn of(event: &'a AuditEvent) -> Result<Self> {
        let d = &event.draft;
        Ok(Self {
            chain: event.tenant.as_uuid(),
            sequence: i64::try_from(event.sequence)
                .map_err(|_| Error::internal("audit sequence overflow"))?,
            id: d.id.as_uuid(),
            at: d.at.as_micros(),
            principal: d.principal.map(|p| p.as_uuid()),
            actor: d.actor.as_str(),
            on_behalf_of: d.on_behalf_of.as_deref(),
            action: d.action.as_str(),
            credential: d.credential.map(|c| c.as_uuid()),
            credential_name: d.credential_name.as_deref(),
            version: d.version.map(version_i32).transpose()?,
            environment: d.environment.as_deref(),
            purpose: d.purpose.as_deref(),
            outcome: d.outcome.as_str(),
            reason_code: d.reason_code.as_str(),
            peer: d.peer.as_deref(),
            request_id: d.request_id.as_deref(),
            trace_id: d.trace_id.as_deref(),
            detail: event.detail_text.as_deref(),
            prev_hash: event.prev_hash.as_slice(),
            hash: event.hash.as_slice(),
            format: event.format.number(),
        })
    }
}

/// A chain head as stored: `(sequence, hash)`.
#[derive(FromRow)]
pub struct HeadRow {
    pub sequence: i64,
    pub hash: Vec<u8>,
}

impl TryFrom<HeadRow> for ChainHead {
    type Error = Error;
    fn try_from(r: HeadRow) -> Result<Self> {
        Ok(ChainHead {
            sequence: u64::try_from(r.sequence).map_err(|_| corrupt("audit sequence"))?,
            hash: hash32(&r.hash)?,
        })
    }
}

/// A tenant chain's head with its tenant.
#[derive(FromRow)]
pub struct ChainHeadRow {
    pub tenant_id: Uuid,
    pub sequence: i64,
    pub hash: Vec<u8>,
}

impl TryFrom<ChainHeadRow> for (TenantId, ChainHead) {
    type Error = Error;
    fn try_from(r: ChainHeadRow) -> Result<Self> {
        let head = ChainHead::try_from(HeadRow {
            sequence: r.sequence,
            hash: r.hash,
        })?;
        Ok((TenantId::from_uuid(r.tenant_id), head))
    }
}

/// An identity namespace with its tenant.
#[derive(FromRow)]
pub struct NamespaceRow {
    pub tenant_id: Uuid,
    pub kind: String,
    pub pattern: String,
}

impl TryFrom<NamespaceRow> for (TenantId, IdentityPattern) {
    type Error = Error;
    fn try_from(r: NamespaceRow) -> Result<Self> {
        Ok((
            TenantId::from_uuid(r.tenant_id),
            pattern(&r.kind, r.pattern)?,
        ))
    }
}

/// A disabled identity binding with its tenant's name and the reason.
#[derive(FromRow)]
pub struct DisabledBindingRow {
    pub tenant_id: Uuid,
    pub tenant_name: String,
    pub id: Uuid,
    pub kind: String,
    pub pattern: String,
    pub disabled_reason: String,
}

impl TryFrom<DisabledBindingRow> for DisabledBinding {
    type Error = Error;
    fn try_from(r: DisabledBindingRow) -> Result<Self> {
        Ok(DisabledBinding {
            tenant: TenantId::from_uuid(r.tenant_id),
            tenant_name: r.tenant_name,
            binding: BindingId::from_uuid(r.id),
            pattern: pattern(&r.kind, r.pattern)?,
            reason: r.disabled_reason,
        })
    }
}

/// An identity namespace the namespaces migration derived, with its
/// tenant's name.
#[derive(FromRow)]
pub struct DerivedNamespaceRow {
    pub tenant_id: Uuid,
    pub tenant_name: String,
    pub kind: String,
    pub pattern: String,
}

/// The columns of `leases`, as [`LeaseRow`] reads them.
macro_rules! lease_columns {
    () => {
        "tenant_id, id, credential_id, credential_name, environment, version, principal_id, \
         grant_id, on_behalf_of, purpose, ttl_secs, issued_at, expires_at, max_expires_at, \
         state, ended_at, end_reason"
    };
}
pub(crate) use lease_columns;

#[derive(FromRow)]
pub struct LeaseRow {
    pub tenant_id: Uuid,
    pub id: Uuid,
    pub credential_id: Uuid,
    pub credential_name: String,
    pub environment: String,
    pub version: i32,
    pub principal_id: Uuid,
    pub grant_id: Option<Uuid>,
    pub on_behalf_of: Option<String>,
    pub purpose: Option<String>,
    pub ttl_secs: i64,
    pub issued_at: i64,
    pub expires_at: i64,
    pub max_expires_at: i64,
    pub state: String,
    pub ended_at: Option<i64>,
    pub end_reason: Option<String>,
}

impl TryFrom<LeaseRow> for strongroom_core::lease::Lease {
    type Error = Error;
    fn try_from(r: LeaseRow) -> Result<Self> {
        use strongroom_core::lease::{Lease, LeaseEnd, LeaseState};
        Ok(Lease {
            id: strongroom_core::ids::LeaseId::from_uuid(r.id),
            tenant: TenantId::from_uuid(r.tenant_id),
            credential: CredentialId::from_uuid(r.credential_id),
            credential_name: CredentialName::parse(&r.credential_name, "name")
                .map_err(|_| corrupt("lease credential name"))?,
            environment: Environment::parse(&r.environment, "environment")
                .map_err(|_| corrupt("lease environment"))?,
            version: u32_of(r.version, "lease version")?,
            principal: PrincipalId::from_uuid(r.principal_id),
            grant: r.grant_id.map(GrantId::from_uuid),
            on_behalf_of: r.on_behalf_of,
            purpose: r.purpose,
            ttl: std::time::Duration::from_secs(
                u64::try_from(r.ttl_secs).map_err(|_| corrupt("lease ttl"))?,
            ),
            issued_at: ts(r.issued_at),
            expires_at: ts(r.expires_at),
            max_expires_at: ts(r.max_expires_at),
            state: LeaseState::parse(&r.state).ok_or_else(|| corrupt("lease state"))?,
            ended_at: r.ended_at.map(ts),
            end: r
                .end_reason
                .map(|e| LeaseEnd::parse(&e).ok_or_else(|| corrupt("lease end")))
                .transpose()?,
        })
    }
}
