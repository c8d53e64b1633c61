//! CredentialService's wire conversions: credential references, typed
//! values (in, and out for reveals only), credential metadata, injection
//! templates and generation policies.

use std::collections::BTreeMap;

use secrecy::{ExposeSecret, SecretString};
use strongroom_core::credential::{
    Credential, CredentialStatus, InjectionTemplate, RotationPolicy, RotationStatus, VersionState,
};
use strongroom_core::names::{CredentialName, Environment, Tag};
use strongroom_core::time::Timestamp;
use strongroom_core::value::{
    Alphabet, ApiKey, BasicAuth, Certificate, CredentialType, CredentialValue, CustomSecret,
    DbConnection, GenerationPolicy, OauthToken, SshKey, SslMode,
};
use strongroom_core::{Error, Result};
use strongroom_engine::CredentialRef;
use strongroom_proto::v1 as pb;

pub use crate::grpc::convert::*;

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
/// (see `Credential::rotation_state`) as of `now` (the engine's clock).
pub fn credential_out(
    c: &Credential,
    tenant_rotation: &RotationPolicy,
    now: Timestamp,
) -> pb::Credential {
    let rotation = c.rotation_state(tenant_rotation, now);
    pb::Credential {
        id: id_out(c.id.as_uuid()),
        environment: c.environment.as_str().to_owned(),
        name: c.name.as_str().to_owned(),
        service: c.service.as_str().to_owned(),
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
        rotation_policy: Some(rotation_out(&rotation.policy)),
        rotation_policy_inherited: rotation.inherited,
        rotation_status: match rotation.status {
            RotationStatus::Healthy => pb::RotationStatus::Healthy,
            RotationStatus::DueSoon => pb::RotationStatus::DueSoon,
            RotationStatus::Overdue => pb::RotationStatus::Overdue,
        } as i32,
        last_rotated_at: Some(time_out(c.rotated_at)),
        rotation_due_at: Some(time_out(rotation.due_at)),
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

/// A scan's findings and redacted text as returned: positions, names and
/// forms, never what matched.
pub fn scan_out(report: strongroom_engine::ScanReport) -> pb::ScanTextResponse {
    use strongroom_engine::FindingSource;
    use strongroom_scan::Form;
    let findings = report
        .findings
        .into_iter()
        .map(|f| {
            let start_offset = f.start as u64;
            let end_offset = f.end as u64;
            match f.source {
                FindingSource::Stored {
                    credential,
                    name,
                    environment,
                    version,
                    form,
                } => pb::ScanFinding {
                    kind: pb::ScanFindingKind::StoredSecret as i32,
                    credential_id: credential.to_string(),
                    credential_name: name.to_string(),
                    environment: environment.to_string(),
                    version,
                    encoding: match form {
                        Form::Plain => pb::ScanEncoding::Plain,
                        Form::Base64 => pb::ScanEncoding::Base64,
                        Form::Base64Url => pb::ScanEncoding::Base64Url,
                        Form::Url => pb::ScanEncoding::Url,
                        Form::Hex => pb::ScanEncoding::Hex,
                        Form::JsonEscaped => pb::ScanEncoding::JsonEscaped,
                    } as i32,
                    start_offset,
                    end_offset,
                    detector: "stored_secret".to_owned(),
                },
                FindingSource::Format(rule) => pb::ScanFinding {
                    kind: pb::ScanFindingKind::KnownTokenFormat as i32,
                    encoding: pb::ScanEncoding::Plain as i32,
                    start_offset,
                    end_offset,
                    detector: rule.as_str().to_owned(),
                    ..Default::default()
                },
            }
        })
        .collect();
    pb::ScanTextResponse {
        findings,
        redacted_text: report.redacted.unwrap_or_default(),
    }
}
