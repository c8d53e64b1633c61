//! Conversions every service shares: required fields, times and
//! durations, roles, environments, rotation schedules and principals.
//! Requests are parsed once, here and in each service's `convert`
//! module, into validated domain types; every failure names the request
//! field.

use std::time::Duration;

use prost_types::Timestamp as PbTimestamp;
use strongroom_core::credential::RotationPolicy;
use strongroom_core::names::Environment;
use strongroom_core::principal::{Principal, PrincipalStatus, Role};
use strongroom_core::time::Timestamp;
use strongroom_core::{Error, Result};
use strongroom_proto::v1 as pb;

/// A required field.
pub fn required<T>(value: Option<T>, field: &'static str) -> Result<T> {
    value.ok_or_else(|| Error::invalid(field, "is required"))
}

/// An id as its text (lowercase, hyphenated), without the formatting
/// machinery `to_string` goes through: the reveal response carries several.
pub fn id_out(id: uuid::Uuid) -> String {
    let mut buf = uuid::Uuid::encode_buffer();
    id.hyphenated().encode_lower(&mut buf).to_owned()
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

/// An optional domain time as an optional protobuf timestamp.
pub fn opt_time_out(t: Option<Timestamp>) -> Option<PbTimestamp> {
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

/// A rotation schedule as returned.
pub fn rotation_out(r: &RotationPolicy) -> pb::RotationPolicy {
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
