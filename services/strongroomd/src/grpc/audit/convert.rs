//! AuditService's wire conversions: actions, outcomes and audit events.

use strongroom_core::audit::{Action, AuditDetail, AuditEvent, Outcome};
use strongroom_core::time::Timestamp;
use strongroom_core::{Error, Result};
use strongroom_engine::{AuditSummary, LeaseUsage};
use strongroom_proto::v1 as pb;

pub use crate::grpc::convert::*;

fn action_out(a: Action) -> pb::AuditAction {
    use pb::AuditAction as P;
    match a {
        Action::TenantCreate => P::TenantCreate,
        Action::TenantStatus => P::TenantSuspend,
        Action::TenantSettings => P::TenantSettingsUpdate,
        Action::TenantKeyRotate => P::KeyRotateTenant,
        Action::TenantNamespaces => P::TenantNamespacesUpdate,
        Action::TenantShred => P::TenantShred,
        Action::CredentialTest => P::CredentialTest,
        Action::PrincipalCreate => P::PrincipalCreate,
        Action::PrincipalGet => P::PrincipalRead,
        Action::PrincipalList => P::PrincipalList,
        Action::PrincipalStatus | Action::PrincipalUpdate => P::PrincipalUpdate,
        Action::PrincipalEmergencyRevoke => P::PrincipalEmergencyRevoke,
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
        Action::CredentialUpdate => P::CredentialUpdate,
        Action::CredentialEmergencyRevoke => P::CredentialEmergencyRevoke,
        Action::CredentialInject => P::CredentialInject,
        Action::CredentialInjectResult => P::CredentialInjectResult,
        Action::AlertPlaceholderMisuse => P::AlertPlaceholderMisuse,
        Action::AlertLeak => P::AlertLeak,
        Action::GrantCreate => P::GrantCreate,
        Action::GrantRevoke => P::GrantRevoke,
        Action::LeaseRenew => P::LeaseRenew,
        Action::LeaseRelease => P::LeaseRelease,
        Action::LeaseExpire => P::LeaseExpire,
        Action::LeaseRevoke => P::LeaseRevoke,
        Action::LeaseList => P::LeaseList,
        Action::AccessRequestFile => P::AccessRequestFile,
        Action::AccessRequestApprove => P::AccessRequestApprove,
        Action::AccessRequestDeny => P::AccessRequestDeny,
        Action::AccessRequestExpire => P::AccessRequestExpire,
        Action::AccessRequestList => P::AccessRequestList,
        Action::PolicyCheck => P::AccessCheck,
        Action::AuditQuery => P::AuditQuery,
        Action::AuthenticationFailed => P::AuthenticationFailed,
        Action::AlertRepeatedDenials => P::AlertRepeatedDenials,
        Action::PrincipalLock => P::PrincipalLock,
        Action::RateLimited => P::RateLimited,
        Action::ScanText => P::ScanText,
        Action::CredentialExpire => P::CredentialExpire,
        Action::CredentialRotationReminder => P::CredentialRotationReminder,
        Action::RotationOverview => P::RotationOverview,
        Action::KeyRotateRoot => P::KeyRotateRoot,
        Action::TenantKeyRetire => P::KeyRetireTenant,
        Action::TenantExport => P::TenantExport,
        Action::TenantImport => P::TenantImport,
        Action::NotificationDelivery => P::NotificationDelivery,
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

/// The relay details of an inject or inject-result event.
fn relay_out(detail: &AuditDetail) -> Option<pb::RelayUse> {
    match detail {
        AuditDetail::Inject {
            host, method, path, ..
        } => Some(pb::RelayUse {
            host: host.clone(),
            method: method.clone(),
            path: path.clone(),
            ..Default::default()
        }),
        AuditDetail::InjectResult {
            host,
            method,
            path,
            status,
            bytes_sent,
            bytes_received,
            duration_ms,
            relay_error,
            ..
        } => Some(pb::RelayUse {
            host: host.clone(),
            method: method.clone(),
            path: path.clone(),
            status_code: status.map(u32::from).unwrap_or_default(),
            bytes_sent: *bytes_sent,
            bytes_received: *bytes_received,
            duration_ms: *duration_ms,
            relay_error: relay_error.clone().unwrap_or_default(),
        }),
        AuditDetail::PlaceholderMisuse {
            host, method, path, ..
        } => Some(pb::RelayUse {
            host: host.clone(),
            method: method.clone(),
            path: path.clone(),
            ..Default::default()
        }),
        _ => None,
    }
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
        relay: d.detail.as_ref().and_then(relay_out),
        prev_hash: e.prev_hash.to_vec(),
        hash: e.hash.to_vec(),
        detail: e.detail_text.clone().unwrap_or_default(),
    }
}

fn lease_usage_out(u: &LeaseUsage) -> pb::LeaseUsage {
    pb::LeaseUsage {
        started: u.started,
        released: u.released,
        expired: u.expired,
        revoked: u.revoked,
        open: u.open,
        time_in_use: Some(duration_out(std::time::Duration::from_micros(
            u.in_use_micros,
        ))),
    }
}

/// A summary as returned.
pub fn summary_out(s: &AuditSummary) -> pb::SummaryResponse {
    pb::SummaryResponse {
        total_events: s.total,
        failed_events: s.failed,
        by_credential: s
            .by_credential
            .iter()
            .map(|c| pb::CredentialActivity {
                credential_id: c.credential.to_string(),
                credential_name: c.name.clone(),
                environment: c.environment.clone(),
                events: c.events,
                uses: c.uses,
                failed: c.failed,
                last_access_at: c.last_access.map(|(at, _)| time_out(at)),
                last_principal_id: c
                    .last_access
                    .and_then(|(_, p)| p)
                    .map(|p| p.to_string())
                    .unwrap_or_default(),
                leases: Some(lease_usage_out(&c.leases)),
            })
            .collect(),
        by_principal: s
            .by_principal
            .iter()
            .map(|p| pb::PrincipalActivity {
                principal_id: p.principal.to_string(),
                principal_name: p.name.clone(),
                events: p.events,
                failed: p.failed,
                last_access_at: Some(time_out(p.last_at)),
            })
            .collect(),
        last_access_at: s.last_access.map(time_out),
        leases: Some(lease_usage_out(&s.leases)),
    }
}

/// The stable JSON form of an event (docs/audit-events.md): every key
/// always present, `null` where the event has no value; `action` and
/// `outcome` in their recorded text; `detail` the typed detail as an
/// object (or, for events of format 1, its text).
pub fn event_json(e: &pb::AuditEvent) -> String {
    fn text(s: &str) -> serde_json::Value {
        if s.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::Value::String(s.to_owned())
        }
    }
    let time = e.time.as_ref().map(time_in);
    let action = pb::AuditAction::try_from(e.action)
        .ok()
        .and_then(|a| action_in(a as i32).ok().flatten())
        .map_or("other", |a| a.as_str());
    let outcome = match pb::AuditOutcome::try_from(e.outcome) {
        Ok(pb::AuditOutcome::Allowed) => "allowed",
        Ok(pb::AuditOutcome::Denied) => "denied",
        _ => "error",
    };
    let detail = if e.detail.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str::<serde_json::Value>(&e.detail)
            .ok()
            .filter(serde_json::Value::is_object)
            .unwrap_or_else(|| serde_json::Value::String(e.detail.clone()))
    };
    let value = serde_json::json!({
        "schema": 1,
        "sequence": e.sequence,
        "id": e.id,
        "time": time.map(rfc3339),
        "time_micros": time.map(|t| t.as_micros()),
        "tenant_id": e.tenant_id,
        "principal_id": text(&e.principal_id),
        "principal_name": text(&e.principal_name),
        "on_behalf_of": text(&e.on_behalf_of),
        "action": action,
        "outcome": outcome,
        "reason_code": text(&e.reason_code),
        "credential_id": text(&e.credential_id),
        "credential_name": text(&e.credential_name),
        "version": (e.version != 0).then_some(e.version),
        "environment": text(&e.environment),
        "purpose": text(&e.purpose),
        "peer_address": text(&e.peer_address),
        "request_id": text(&e.request_id),
        "trace_id": text(&e.trace_id),
        "lease_id": text(&e.lease_id),
        "detail": detail,
        "prev_hash": hex::encode(&e.prev_hash),
        "hash": hex::encode(&e.hash),
    });
    value.to_string()
}

/// `t` in RFC 3339, UTC, with microseconds: `2026-12-07T10:00:00.000000Z`.
pub fn rfc3339(t: Timestamp) -> String {
    let micros = t.as_micros();
    let secs = micros.div_euclid(1_000_000);
    let sub = micros.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let day_secs = secs.rem_euclid(86_400);
    // Days since 1970-01-01 to a civil date (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{sub:06}Z",
        day_secs / 3_600,
        day_secs % 3_600 / 60,
        day_secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(
            rfc3339(Timestamp::from_micros(0)),
            "1970-01-01T00:00:00.000000Z"
        );
        // 2000-02-29T12:34:56.789012Z (a leap day).
        assert_eq!(
            rfc3339(Timestamp::from_micros(951_827_696_789_012)),
            "2000-02-29T12:34:56.789012Z"
        );
        assert_eq!(
            rfc3339(Timestamp::from_micros(1_796_601_600_000_000)),
            "2026-12-07T00:00:00.000000Z"
        );
    }
}
