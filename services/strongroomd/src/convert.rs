//! Conversions between the protobuf messages and the domain types. Requests
//! are parsed here, once, into validated domain types; every failure names the
//! request field.

use std::collections::BTreeMap;
use std::time::Duration;

use prost_types::Timestamp as PbTimestamp;
use secrecy::{ExposeSecret, SecretString};
use strongroom_core::audit::{Action, AuditDetail, AuditEvent, Outcome};
use strongroom_core::credential::{
    Credential, CredentialStatus, InjectionTemplate, RotationPolicy, RotationStatus, VersionState,
};
use strongroom_core::ids::TenantId;
use strongroom_core::names::{CredentialName, Environment, ServiceLabel, Tag};
use strongroom_core::policy::{Capability, Destination, Grant, GrantSubject, Reason};
use strongroom_core::principal::{
    IdentityBinding, IdentityPattern, Principal, PrincipalStatus, Role,
};
use strongroom_core::tenant::{DenialAlert, RateLimit, Tenant, TenantSettings, TenantStatus};
use strongroom_core::time::Timestamp;
use strongroom_core::value::{
    Alphabet, ApiKey, BasicAuth, Certificate, CredentialType, CredentialValue, CustomSecret,
    DbConnection, GenerationPolicy, OauthToken, SshKey, SslMode,
};
use strongroom_core::{Error, Result};
use strongroom_proto::v1 as pb;

use strongroom_engine::CredentialRef;

/// A required field.
pub fn required<T>(value: Option<T>, field: &'static str) -> Result<T> {
    value.ok_or_else(|| Error::invalid(field, "is required"))
}

/// A protobuf timestamp as a domain time.
pub fn time_in(t: &PbTimestamp) -> Timestamp {
    Timestamp::from_unix(t.seconds, t.nanos)
}

/// A domain time as a protobuf timestamp.
pub fn time_out(t: Timestamp) -> PbTimestamp {
    let (seconds, nanos) = t.to_unix();
    PbTimestamp { seconds, nanos }
}

fn opt_time_out(t: Option<Timestamp>) -> Option<PbTimestamp> {
    t.map(time_out)
}

/// A protobuf duration as a std duration; negative is an error.
pub fn duration_in(d: &prost_types::Duration, field: &'static str) -> Result<Duration> {
    if d.seconds < 0 || d.nanos < 0 {
        return Err(Error::invalid(field, "must not be negative"));
    }
    Ok(Duration::new(d.seconds as u64, d.nanos as u32))
}

/// A std duration as a protobuf duration.
pub fn duration_out(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: d.subsec_nanos() as i32,
    }
}

/// Parses a credential reference (`credential` field).
pub fn credential_ref(r: Option<pb::CredentialRef>) -> Result<CredentialRef> {
    let r = required(r, "credential")?;
    match required(r.by, "credential")? {
        pb::credential_ref::By::Id(id) => Ok(CredentialRef::Id(
            strongroom_core::ids::CredentialId::parse(&id, "credential.id")?,
        )),
        pb::credential_ref::By::Path(p) => Ok(CredentialRef::Path(
            Environment::parse(&p.environment, "credential.path.environment")?,
            CredentialName::parse(&p.name, "credential.path.name")?,
        )),
    }
}

fn secret(text: String) -> SecretString {
    SecretString::from(text)
}

fn opt_secret(text: String) -> Option<SecretString> {
    (!text.is_empty()).then(|| SecretString::from(text))
}

/// Parses a typed value (`value` field). Schema validation happens in the
/// engine.
pub fn value_in(v: Option<pb::CredentialValue>) -> Result<CredentialValue> {
    use pb::credential_value::Value;
    let v = required(v, "value")?;
    Ok(match required(v.value, "value")? {
        Value::ApiKey(k) => CredentialValue::ApiKey(ApiKey {
            api_key: secret(k.api_key),
        }),
        Value::OauthToken(t) => CredentialValue::OauthToken(OauthToken {
            access_token: secret(t.access_token),
            refresh_token: opt_secret(t.refresh_token),
            token_type: if t.token_type.is_empty() {
                "Bearer".into()
            } else {
                t.token_type
            },
            expires_at: t.expires_at.as_ref().map(time_in),
            scopes: t.scopes,
        }),
        Value::BasicAuth(b) => CredentialValue::BasicAuth(BasicAuth {
            username: b.username,
            password: secret(b.password),
        }),
        Value::DbConnection(d) => {
            let ssl_mode = match pb::DbSslMode::try_from(d.ssl_mode) {
                Ok(pb::DbSslMode::Unspecified) | Ok(pb::DbSslMode::Prefer) => SslMode::Prefer,
                Ok(pb::DbSslMode::Disable) => SslMode::Disable,
                Ok(pb::DbSslMode::Require) => SslMode::Require,
                Ok(pb::DbSslMode::VerifyCa) => SslMode::VerifyCa,
                Ok(pb::DbSslMode::VerifyFull) => SslMode::VerifyFull,
                Err(_) => {
                    return Err(Error::invalid(
                        "value.db_connection.ssl_mode",
                        "unknown mode",
                    ));
                }
            };
            CredentialValue::DbConnection(DbConnection {
                host: d.host,
                port: u16::try_from(d.port)
                    .map_err(|_| Error::invalid("value.db_connection.port", "must be 1-65535"))?,
                database: d.database,
                username: d.username,
                password: secret(d.password),
                ssl_mode,
            })
        }
        Value::SshKey(k) => CredentialValue::SshKey(SshKey {
            private_key: secret(k.private_key),
            public_key: k.public_key,
            passphrase: opt_secret(k.passphrase),
        }),
        Value::Certificate(c) => CredentialValue::Certificate(Certificate {
            certificate_pem: c.certificate_pem,
            private_key_pem: secret(c.private_key_pem),
            ca_chain_pem: c.ca_chain_pem,
        }),
        Value::Custom(c) => CredentialValue::Custom(CustomSecret {
            fields: c
                .fields
                .into_iter()
                .map(|(k, v)| (k, secret(v)))
                .collect::<BTreeMap<_, _>>(),
        }),
    })
}

/// A typed value as the protobuf message returned by a reveal. Exposes
/// secret material: only for a reveal response.
pub fn value_out(v: &CredentialValue) -> pb::CredentialValue {
    use pb::credential_value::Value;
    let value = match v {
        CredentialValue::ApiKey(k) => Value::ApiKey(pb::ApiKey {
            api_key: k.api_key.expose_secret().to_owned(),
        }),
        CredentialValue::OauthToken(t) => Value::OauthToken(pb::OAuthToken {
            access_token: t.access_token.expose_secret().to_owned(),
            refresh_token: t
                .refresh_token
                .as_ref()
                .map(|r| r.expose_secret().to_owned())
                .unwrap_or_default(),
            token_type: t.token_type.clone(),
            expires_at: opt_time_out(t.expires_at),
            scopes: t.scopes.clone(),
        }),
        CredentialValue::BasicAuth(b) => Value::BasicAuth(pb::BasicAuth {
            username: b.username.clone(),
            password: b.password.expose_secret().to_owned(),
        }),
        CredentialValue::DbConnection(d) => Value::DbConnection(pb::DbConnection {
            host: d.host.clone(),
            port: u32::from(d.port),
            database: d.database.clone(),
            username: d.username.clone(),
            password: d.password.expose_secret().to_owned(),
            ssl_mode: match d.ssl_mode {
                SslMode::Disable => pb::DbSslMode::Disable,
                SslMode::Prefer => pb::DbSslMode::Prefer,
                SslMode::Require => pb::DbSslMode::Require,
                SslMode::VerifyCa => pb::DbSslMode::VerifyCa,
                SslMode::VerifyFull => pb::DbSslMode::VerifyFull,
            } as i32,
        }),
        CredentialValue::SshKey(k) => Value::SshKey(pb::SshKey {
            private_key: k.private_key.expose_secret().to_owned(),
            public_key: k.public_key.clone(),
            passphrase: k
                .passphrase
                .as_ref()
                .map(|p| p.expose_secret().to_owned())
                .unwrap_or_default(),
        }),
        CredentialValue::Certificate(c) => Value::Certificate(pb::Certificate {
            certificate_pem: c.certificate_pem.clone(),
            private_key_pem: c.private_key_pem.expose_secret().to_owned(),
            ca_chain_pem: c.ca_chain_pem.clone(),
        }),
        CredentialValue::Custom(c) => Value::Custom(pb::CustomSecret {
            fields: c
                .fields
                .iter()
                .map(|(k, v)| (k.clone(), v.expose_secret().to_owned()))
                .collect(),
        }),
    };
    pb::CredentialValue { value: Some(value) }
}

/// Parses the credential type filter.
pub fn credential_type_in(v: i32, field: &'static str) -> Result<Option<CredentialType>> {
    use pb::CredentialType as P;
    Ok(
        match P::try_from(v).map_err(|_| Error::invalid(field, "unknown credential type"))? {
            P::Unspecified => None,
            P::ApiKey => Some(CredentialType::ApiKey),
            P::OauthToken => Some(CredentialType::OauthToken),
            P::BasicAuth => Some(CredentialType::BasicAuth),
            P::DbConnection => Some(CredentialType::DbConnection),
            P::SshKey => Some(CredentialType::SshKey),
            P::Certificate => Some(CredentialType::Certificate),
            P::Custom => Some(CredentialType::Custom),
        },
    )
}

fn credential_type_out(t: CredentialType) -> pb::CredentialType {
    use pb::CredentialType as P;
    match t {
        CredentialType::ApiKey => P::ApiKey,
        CredentialType::OauthToken => P::OauthToken,
        CredentialType::BasicAuth => P::BasicAuth,
        CredentialType::DbConnection => P::DbConnection,
        CredentialType::SshKey => P::SshKey,
        CredentialType::Certificate => P::Certificate,
        CredentialType::Custom => P::Custom,
    }
}

/// Parses the credential status filter.
pub fn credential_status_in(v: i32, field: &'static str) -> Result<Option<CredentialStatus>> {
    use pb::CredentialStatus as P;
    Ok(
        match P::try_from(v).map_err(|_| Error::invalid(field, "unknown status"))? {
            P::Unspecified => None,
            P::Active => Some(CredentialStatus::Active),
            P::Expired => Some(CredentialStatus::Expired),
            P::Revoked => Some(CredentialStatus::Revoked),
        },
    )
}

fn credential_status_out(s: CredentialStatus) -> pb::CredentialStatus {
    match s {
        CredentialStatus::Active => pb::CredentialStatus::Active,
        CredentialStatus::Expired => pb::CredentialStatus::Expired,
        CredentialStatus::Revoked => pb::CredentialStatus::Revoked,
    }
}

/// Parses tags.
pub fn tags_in(tags: Vec<String>) -> Result<Vec<Tag>> {
    if tags.len() > 32 {
        return Err(Error::invalid("tags", "at most 32 tags"));
    }
    tags.iter().map(|t| Tag::parse(t, "tags")).collect()
}

/// Parses scopes.
pub fn scopes_in(scopes: Vec<String>) -> Result<Vec<String>> {
    if scopes.len() > 64 || scopes.iter().any(|s| s.is_empty() || s.len() > 256) {
        return Err(Error::invalid(
            "scopes",
            "at most 64 scopes of 1-256 characters",
        ));
    }
    Ok(scopes)
}

/// Parses a rotation policy.
pub fn rotation_in(r: Option<pb::RotationPolicy>) -> Result<Option<RotationPolicy>> {
    let Some(r) = r else { return Ok(None) };
    let day = 86_400;
    let period = r
        .period
        .as_ref()
        .map(|d| duration_in(d, "rotation_policy.period"))
        .transpose()?
        .map_or(90, |d| d.as_secs() / day);
    let reminder = r
        .reminder
        .as_ref()
        .map(|d| duration_in(d, "rotation_policy.reminder"))
        .transpose()?
        .map_or(14, |d| d.as_secs() / day);
    Ok(Some(RotationPolicy {
        period_days: u32::try_from(period).unwrap_or(u32::MAX),
        reminder_days: u32::try_from(reminder).unwrap_or(u32::MAX),
    }))
}

fn rotation_out(r: &RotationPolicy) -> pb::RotationPolicy {
    let day = 86_400u64;
    pb::RotationPolicy {
        period: Some(duration_out(Duration::from_secs(
            u64::from(r.period_days) * day,
        ))),
        reminder: Some(duration_out(Duration::from_secs(
            u64::from(r.reminder_days) * day,
        ))),
    }
}

/// Parses an injection template.
pub fn injection_in(t: Option<pb::InjectionTemplate>) -> Result<Option<InjectionTemplate>> {
    use pb::injection_template::Template;
    let Some(t) = t else { return Ok(None) };
    let Some(t) = t.template else { return Ok(None) };
    let header_name_ok = |n: &str| {
        !n.is_empty()
            && n.len() <= 128
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    Ok(Some(match t {
        Template::Bearer(b) => InjectionTemplate::Bearer {
            field: if b.field.is_empty() {
                "api_key".into()
            } else {
                b.field
            },
        },
        Template::Basic(_) => InjectionTemplate::Basic,
        Template::Header(h) => {
            if !header_name_ok(&h.name) {
                return Err(Error::invalid(
                    "injection_template.header.name",
                    "must be a header name",
                ));
            }
            InjectionTemplate::Header {
                name: h.name,
                field: required(
                    Some(h.field).filter(|f| !f.is_empty()),
                    "injection_template.header.field",
                )?,
                prefix: h.prefix,
            }
        }
        Template::QueryParameter(q) => {
            if !header_name_ok(&q.name) {
                return Err(Error::invalid(
                    "injection_template.query_parameter.name",
                    "must be a parameter name",
                ));
            }
            InjectionTemplate::Query {
                name: q.name,
                field: required(
                    Some(q.field).filter(|f| !f.is_empty()),
                    "injection_template.query_parameter.field",
                )?,
            }
        }
    }))
}

fn injection_out(t: &InjectionTemplate) -> pb::InjectionTemplate {
    use pb::injection_template::Template;
    pb::InjectionTemplate {
        template: Some(match t {
            InjectionTemplate::Bearer { field } => Template::Bearer(pb::BearerInjection {
                field: field.clone(),
            }),
            InjectionTemplate::Basic => Template::Basic(pb::BasicInjection {}),
            InjectionTemplate::Header {
                name,
                field,
                prefix,
            } => Template::Header(pb::HeaderInjection {
                name: name.clone(),
                field: field.clone(),
                prefix: prefix.clone(),
            }),
            InjectionTemplate::Query { name, field } => {
                Template::QueryParameter(pb::QueryParameterInjection {
                    name: name.clone(),
                    field: field.clone(),
                })
            }
        }),
    }
}

/// Credential metadata as returned to callers, with its status and rotation
/// status as of `now` (the engine's clock).
pub fn credential_out(
    c: &Credential,
    tenant_rotation: &RotationPolicy,
    now: Timestamp,
) -> pb::Credential {
    let policy = c.rotation.unwrap_or(*tenant_rotation);
    let status = policy.status(c.rotated_at, now);
    pb::Credential {
        id: c.id.to_string(),
        environment: c.environment.to_string(),
        name: c.name.to_string(),
        service: c.service.to_string(),
        credential_type: credential_type_out(c.kind) as i32,
        description: c.description.clone(),
        tags: c.tags.iter().map(ToString::to_string).collect(),
        scopes: c.scopes.clone(),
        owner: c.owner.clone().unwrap_or_default(),
        status: credential_status_out(c.effective_status(now)) as i32,
        current_version: c.current_version,
        created_at: Some(time_out(c.created_at)),
        updated_at: Some(time_out(c.updated_at)),
        expires_at: opt_time_out(c.expires_at),
        revoked_at: opt_time_out(c.revoked_at),
        revoked_reason: c.revoke_reason.clone().unwrap_or_default(),
        destroyed: c.destroyed_at.is_some(),
        rotation_policy: Some(rotation_out(&policy)),
        rotation_policy_inherited: c.rotation.is_none(),
        rotation_status: match status {
            RotationStatus::Healthy => pb::RotationStatus::Healthy,
            RotationStatus::DueSoon => pb::RotationStatus::DueSoon,
            RotationStatus::Overdue => pb::RotationStatus::Overdue,
        } as i32,
        last_rotated_at: Some(time_out(c.rotated_at)),
        rotation_due_at: Some(time_out(
            c.rotated_at
                .plus(Duration::from_secs(u64::from(policy.period_days) * 86_400)),
        )),
        injection_template: c.injection.as_ref().map(injection_out),
        created_by: c.created_by.to_string(),
    }
}

/// A version's state.
pub fn version_state_out(s: VersionState) -> pb::CredentialVersionState {
    match s {
        VersionState::Current => pb::CredentialVersionState::Current,
        VersionState::Previous => pb::CredentialVersionState::Previous,
        VersionState::Retired => pb::CredentialVersionState::Retired,
    }
}

/// Parses a generation policy.
pub fn generation_in(g: pb::GenerationPolicy) -> Result<(GenerationPolicy, String)> {
    use pb::GenerationAlphabet as A;
    let alphabet = match A::try_from(g.alphabet)
        .map_err(|_| Error::invalid("generate.alphabet", "unknown alphabet"))?
    {
        A::Unspecified | A::Alphanumeric => Alphabet::Alphanumeric,
        A::Hex => Alphabet::Hex,
        A::Base64url => Alphabet::Base64Url,
        A::Printable => Alphabet::Printable,
    };
    let policy = GenerationPolicy {
        length: if g.length == 0 { 32 } else { g.length as usize },
        alphabet,
        prefix: g.prefix,
    };
    policy.validate()?;
    Ok((policy, g.field))
}

/// Parses a role enum.
pub fn role_in(v: i32, field: &'static str) -> Result<Role> {
    match pb::Role::try_from(v) {
        Ok(pb::Role::Admin) => Ok(Role::Admin),
        Ok(pb::Role::Operator) => Ok(Role::Operator),
        Ok(pb::Role::Viewer) => Ok(Role::Viewer),
        Ok(pb::Role::Agent) => Ok(Role::Agent),
        Ok(pb::Role::Unspecified) => Err(Error::invalid(field, "is required")),
        Err(_) => Err(Error::invalid(field, "unknown role")),
    }
}

/// A role as its enum.
pub fn role_out(r: Role) -> pb::Role {
    match r {
        Role::Admin => pb::Role::Admin,
        Role::Operator => pb::Role::Operator,
        Role::Viewer => pb::Role::Viewer,
        Role::Agent => pb::Role::Agent,
    }
}

/// Parses environment names.
pub fn environments_in(envs: &[String], field: &'static str) -> Result<Vec<Environment>> {
    let mut out: Vec<Environment> = Vec::with_capacity(envs.len());
    for e in envs {
        let env = Environment::parse(e, field)?;
        if !out.contains(&env) {
            out.push(env);
        }
    }
    Ok(out)
}

/// A principal as returned.
pub fn principal_out(p: &Principal) -> pb::Principal {
    pb::Principal {
        id: p.id.to_string(),
        name: p.name.to_string(),
        role: role_out(p.role) as i32,
        environments: p.environments.iter().map(ToString::to_string).collect(),
        description: p.description.clone(),
        status: match p.status {
            PrincipalStatus::Active => pb::PrincipalStatus::Active,
            PrincipalStatus::Disabled => pb::PrincipalStatus::Disabled,
        } as i32,
        status_reason: String::new(),
        created_at: Some(time_out(p.created_at)),
        updated_at: None,
        created_by: String::new(),
        last_seen_at: None,
    }
}

/// A tenant as returned.
pub fn tenant_out(t: &Tenant) -> pb::Tenant {
    pb::Tenant {
        id: t.id.to_string(),
        name: t.name.to_string(),
        description: String::new(),
        status: match t.status {
            TenantStatus::Active => pb::TenantStatus::Active,
            TenantStatus::Suspended => pb::TenantStatus::Suspended,
            TenantStatus::Shredded => pb::TenantStatus::Shredded,
        } as i32,
        status_reason: String::new(),
        created_at: Some(time_out(t.created_at)),
        status_changed_at: None,
        kek_version: t.current_kek_version,
        identity_namespaces: Vec::new(),
    }
}

/// A tenant as returned to platform operators, with its identity
/// namespaces (of `namespaces`, which may hold other tenants').
pub fn tenant_with_namespaces(
    t: &Tenant,
    namespaces: &[(TenantId, IdentityPattern)],
) -> pb::Tenant {
    pb::Tenant {
        identity_namespaces: namespaces
            .iter()
            .filter(|(id, _)| *id == t.id)
            .map(|(_, n)| n.to_text())
            .collect(),
        ..tenant_out(t)
    }
}

/// Tenant settings as returned.
pub fn settings_out(
    s: &TenantSettings,
    default_ttl: Duration,
    max_ttl: Duration,
) -> pb::TenantSettings {
    pb::TenantSettings {
        version_retention: s.version_retention,
        default_rotation_policy: Some(rotation_out(&s.rotation)),
        max_value_size_bytes: s.max_value_bytes,
        default_lease_ttl: Some(duration_out(default_ttl)),
        max_lease_ttl: Some(duration_out(max_ttl)),
        denied_call_limit: Some(rate_limit_out(s.denied_call_limit)),
        call_limit: Some(rate_limit_out(s.call_limit)),
        denial_alert: Some(pb::DenialAlert {
            threshold: s.denial_alert.threshold,
            window: Some(duration_out(Duration::from_secs(u64::from(
                s.denial_alert.window_secs,
            )))),
            auto_lock: s.denial_alert.auto_lock,
        }),
    }
}

fn rate_limit_out(l: RateLimit) -> pb::RateLimit {
    pb::RateLimit {
        enabled: l.enabled,
        per_minute: l.per_minute,
        burst: l.burst,
    }
}

/// A rate limit as given.
pub fn rate_limit_in(l: pb::RateLimit) -> RateLimit {
    RateLimit {
        enabled: l.enabled,
        per_minute: l.per_minute,
        burst: l.burst,
    }
}

/// A denial alert as given (bounds are checked with the settings); an
/// absent window keeps `current`'s.
pub fn denial_alert_in(a: pb::DenialAlert, current: DenialAlert) -> Result<DenialAlert> {
    let window = match a.window {
        None => current.window_secs,
        Some(d) => {
            if d.nanos != 0 || d.seconds < 0 {
                return Err(Error::invalid(
                    "settings.denial_alert.window",
                    "must be whole seconds",
                ));
            }
            u32::try_from(d.seconds).unwrap_or(u32::MAX)
        }
    };
    Ok(DenialAlert {
        threshold: a.threshold,
        window_secs: window,
        auto_lock: a.auto_lock,
    })
}

/// An identity binding as returned.
pub fn binding_out(b: &IdentityBinding) -> pb::IdentityBinding {
    pb::IdentityBinding {
        id: b.id.to_string(),
        principal_id: b.principal.to_string(),
        identity: b.pattern.to_text(),
        pattern: matches!(b.pattern, IdentityPattern::Prefix(_)),
        created_at: Some(time_out(b.created_at)),
        created_by: String::new(),
    }
}

/// Parses a capability enum.
pub fn capability_in(v: i32, field: &'static str) -> Result<Capability> {
    use pb::Capability as P;
    match P::try_from(v) {
        Ok(P::List) => Ok(Capability::List),
        Ok(P::ReadMetadata) => Ok(Capability::ReadMetadata),
        Ok(P::Inject) => Ok(Capability::Inject),
        Ok(P::Reveal) => Ok(Capability::Reveal),
        Ok(P::Write) => Ok(Capability::Write),
        Ok(P::Rotate) => Ok(Capability::Rotate),
        Ok(P::Admin) => Ok(Capability::Admin),
        Ok(P::Unspecified) => Err(Error::invalid(field, "is required")),
        Err(_) => Err(Error::invalid(field, "unknown capability")),
    }
}

fn capability_out(c: Capability) -> pb::Capability {
    use pb::Capability as P;
    match c {
        Capability::List => P::List,
        Capability::ReadMetadata => P::ReadMetadata,
        Capability::Inject => P::Inject,
        Capability::Reveal => P::Reveal,
        Capability::Write => P::Write,
        Capability::Rotate => P::Rotate,
        Capability::Admin => P::Admin,
    }
}

/// Parses destinations.
pub fn destinations_in(ds: Vec<pb::Destination>) -> Result<Vec<Destination>> {
    ds.into_iter()
        .map(|d| {
            let d = Destination {
                host: d.host.to_ascii_lowercase(),
                methods: d.methods,
                path_prefixes: d.path_prefixes,
            };
            d.validate()?;
            Ok(d)
        })
        .collect()
}

/// A grant as returned.
pub fn grant_out(g: &Grant) -> pb::Grant {
    use pb::grant_subject::Subject;
    pb::Grant {
        id: g.id.to_string(),
        subject: Some(pb::GrantSubject {
            subject: Some(match g.subject {
                GrantSubject::Principal(p) => Subject::PrincipalId(p.to_string()),
                GrantSubject::Role(r) => Subject::Role(role_out(r) as i32),
            }),
        }),
        selector: g.selector.to_text(),
        environments: g.environments.iter().map(ToString::to_string).collect(),
        capabilities: g
            .capabilities
            .iter()
            .map(|c| capability_out(c) as i32)
            .collect(),
        destinations: g
            .destinations
            .iter()
            .map(|d| pb::Destination {
                host: d.host.clone(),
                methods: d.methods.clone(),
                path_prefixes: d.path_prefixes.clone(),
            })
            .collect(),
        expires_at: opt_time_out(g.expires_at),
        reason: g.reason.clone(),
        granted_by: g.granted_by.to_string(),
        created_at: Some(time_out(g.created_at)),
        access_request_id: String::new(),
        revoked_at: None,
        revoked_by: String::new(),
        revoked_reason: String::new(),
    }
}

/// A decision reason as its enum.
pub fn reason_out(r: Reason) -> pb::AccessReason {
    use pb::AccessReason as P;
    match r {
        Reason::AllowedByRole => P::AllowedByRole,
        Reason::AllowedByGrant => P::AllowedByGrant,
        Reason::NoMatchingGrant => P::NoMatchingGrant,
        Reason::GrantExpired => P::GrantExpired,
        Reason::EnvironmentNotPermitted => P::EnvironmentNotPermitted,
        Reason::RoleForbidsValues => P::RoleForbidsValues,
        Reason::OwnerMismatch => P::OwnerMismatch,
        // Not policy decisions: never the answer of a check.
        Reason::Allowed
        | Reason::PlatformOperator
        | Reason::RoleNotAdmin
        | Reason::RoleNotPermitted
        | Reason::CredentialNotFound
        | Reason::IdentityOutsideNamespaces
        | Reason::StaleState
        | Reason::CredentialRevoked
        | Reason::CredentialExpired
        | Reason::CredentialDestroyed
        | Reason::CredentialNotUsable
        | Reason::VersionRetired
        | Reason::CheckpointRefused
        | Reason::NoIdentity
        | Reason::UnknownIdentity
        | Reason::DeniedCallLimit
        | Reason::CallLimit
        | Reason::DenialThreshold => P::Unspecified,
    }
}

fn action_out(a: Action) -> pb::AuditAction {
    use pb::AuditAction as P;
    match a {
        Action::TenantCreate => P::TenantCreate,
        Action::TenantStatus => P::TenantSuspend,
        Action::TenantSettings => P::TenantSettingsUpdate,
        Action::TenantKeyRotate => P::KeyRotateTenant,
        Action::TenantNamespaces => P::TenantNamespacesUpdate,
        Action::PrincipalCreate => P::PrincipalCreate,
        Action::PrincipalGet => P::PrincipalRead,
        Action::PrincipalList => P::PrincipalList,
        Action::PrincipalStatus => P::PrincipalUpdate,
        Action::BindingCreate => P::IdentityBindingCreate,
        Action::BindingList => P::IdentityBindingList,
        Action::BindingDelete => P::IdentityBindingDelete,
        Action::EnvironmentCreate => P::EnvironmentCreate,
        Action::EnvironmentDelete => P::EnvironmentDelete,
        Action::CredentialCreate => P::CredentialCreate,
        Action::CredentialGet => P::CredentialReadMetadata,
        Action::CredentialList => P::CredentialList,
        Action::CredentialReveal => P::CredentialReveal,
        Action::CredentialRotate => P::CredentialRotate,
        Action::CredentialRollback => P::CredentialRollback,
        Action::CredentialRevoke => P::CredentialRevoke,
        Action::CredentialDestroy => P::CredentialDestroy,
        Action::CredentialInject => P::CredentialInject,
        Action::GrantCreate => P::GrantCreate,
        Action::GrantRevoke => P::GrantRevoke,
        Action::PolicyCheck => P::AccessCheck,
        Action::AuditQuery => P::AuditQuery,
        Action::AuthenticationFailed => P::AuthenticationFailed,
        Action::AlertRepeatedDenials => P::AlertRepeatedDenials,
        Action::PrincipalLock => P::PrincipalLock,
        Action::RateLimited => P::RateLimited,
        Action::Other => P::Unspecified,
    }
}

/// Parses an audit action filter.
pub fn action_in(v: i32) -> Result<Option<Action>> {
    let p =
        pb::AuditAction::try_from(v).map_err(|_| Error::invalid("actions", "unknown action"))?;
    if p == pb::AuditAction::Unspecified {
        return Ok(None);
    }
    Action::ALL
        .into_iter()
        .find(|a| action_out(*a) == p)
        .map(Some)
        .ok_or_else(|| Error::invalid("actions", "no events of this action are recorded yet"))
}

/// Parses an audit outcome filter.
pub fn outcome_in(v: i32) -> Result<Option<Outcome>> {
    use pb::AuditOutcome as P;
    Ok(
        match P::try_from(v).map_err(|_| Error::invalid("outcome", "unknown outcome"))? {
            P::Unspecified => None,
            P::Allowed => Some(Outcome::Allowed),
            P::Denied => Some(Outcome::Denied),
            P::Error => Some(Outcome::Error),
        },
    )
}

/// An audit event as returned. Carries no secret: events have none.
pub fn event_out(e: &AuditEvent) -> pb::AuditEvent {
    let d = &e.draft;
    pb::AuditEvent {
        sequence: e.sequence,
        id: d.id.to_string(),
        time: Some(time_out(d.at)),
        tenant_id: e.tenant.to_string(),
        principal_id: d.principal.map(|p| p.to_string()).unwrap_or_default(),
        principal_name: d.actor.clone(),
        on_behalf_of: d.on_behalf_of.clone().unwrap_or_default(),
        action: action_out(d.action) as i32,
        credential_id: d.credential.map(|c| c.to_string()).unwrap_or_default(),
        credential_name: d.credential_name.clone().unwrap_or_default(),
        version: d.version.unwrap_or_default(),
        environment: d.environment.clone().unwrap_or_default(),
        purpose: d.purpose.clone().unwrap_or_default(),
        outcome: match d.outcome {
            Outcome::Allowed => pb::AuditOutcome::Allowed,
            Outcome::Denied => pb::AuditOutcome::Denied,
            Outcome::Error => pb::AuditOutcome::Error,
        } as i32,
        reason_code: d.reason_code.clone(),
        peer_address: d.peer.clone().unwrap_or_default(),
        request_id: d.request_id.clone().unwrap_or_default(),
        trace_id: d.trace_id.clone().unwrap_or_default(),
        lease_id: d
            .detail
            .as_ref()
            .and_then(AuditDetail::lease)
            .map(|l| l.to_string())
            .unwrap_or_default(),
        object_id: String::new(),
        relay: None,
        prev_hash: e.prev_hash.to_vec(),
        hash: e.hash.to_vec(),
        detail: e.detail_text.clone().unwrap_or_default(),
    }
}

/// Parses a service label.
pub fn service_in(s: &str, field: &'static str) -> Result<ServiceLabel> {
    ServiceLabel::parse(s, field)
}
