//! AuditService's wire conversions: actions, outcomes and audit events.

use strongroom_core::audit::{Action, AuditDetail, AuditEvent, Outcome};
use strongroom_core::{Error, Result};
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
        Action::PrincipalCreate => P::PrincipalCreate,
        Action::PrincipalGet => P::PrincipalRead,
        Action::PrincipalList => P::PrincipalList,
        Action::PrincipalStatus => P::PrincipalUpdate,
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
        Action::CredentialInject => P::CredentialInject,
        Action::GrantCreate => P::GrantCreate,
        Action::GrantRevoke => P::GrantRevoke,
        Action::LeaseRenew => P::LeaseRenew,
        Action::LeaseRelease => P::LeaseRelease,
        Action::LeaseExpire => P::LeaseExpire,
        Action::LeaseRevoke => P::LeaseRevoke,
        Action::LeaseList => P::LeaseList,
        Action::PolicyCheck => P::AccessCheck,
        Action::AuditQuery => P::AuditQuery,
        Action::AuthenticationFailed => P::AuthenticationFailed,
        Action::AlertRepeatedDenials => P::AlertRepeatedDenials,
        Action::PrincipalLock => P::PrincipalLock,
        Action::RateLimited => P::RateLimited,
        Action::ScanText => P::ScanText,
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
