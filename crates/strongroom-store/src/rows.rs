//! Rows as both backends store them, and their conversion to domain types.
//! Stored text is parsed again on the way out, so a corrupted row surfaces as
//! an internal error instead of an invalid domain value.

use sqlx::FromRow;
use strongroom_core::audit::{Action, AuditDraft, AuditEvent, Outcome};
use strongroom_core::credential::{
    Credential, CredentialStatus, InjectionTemplate, RotationPolicy, StoredVersion,
};
use strongroom_core::ids::{BindingId, CredentialId, EventId, GrantId, PrincipalId, TenantId};
use strongroom_core::names::{
    CredentialName, Environment, PrincipalName, ServiceLabel, Tag, TenantName,
};
use strongroom_core::policy::{Capabilities, Destination, Grant, GrantSubject, Selector};
use strongroom_core::principal::{
    IdentityBinding, IdentityPattern, Principal, PrincipalStatus, Role,
};
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

#[derive(FromRow)]
pub(crate) struct TenantRow {
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
pub(crate) struct KekRow {
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

#[derive(FromRow)]
pub(crate) struct PrincipalRow {
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
pub(crate) struct IdentityMatchRow {
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

#[derive(FromRow)]
pub(crate) struct BindingRow {
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

#[derive(FromRow)]
pub(crate) struct CredentialRow {
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

#[derive(FromRow)]
pub(crate) struct VersionRow {
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

#[derive(FromRow)]
pub(crate) struct GrantRow {
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
            created_at: ts(r.created_at),
        })
    }
}

#[derive(FromRow)]
pub(crate) struct AuditRow {
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
}

fn hash32(bytes: &[u8]) -> Result<[u8; 32]> {
    bytes.try_into().map_err(|_| corrupt("audit hash"))
}

impl TryFrom<AuditRow> for AuditEvent {
    type Error = Error;
    fn try_from(r: AuditRow) -> Result<Self> {
        Ok(AuditEvent {
            tenant: TenantId::from_uuid(r.tenant_id),
            sequence: u64::try_from(r.sequence).map_err(|_| corrupt("audit sequence"))?,
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
                detail: r.detail,
            },
            prev_hash: hash32(&r.prev_hash)?,
            hash: hash32(&r.hash)?,
        })
    }
}
