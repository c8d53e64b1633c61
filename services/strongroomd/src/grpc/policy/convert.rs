//! PolicyService's wire conversions: capabilities, destinations, grants
//! and access decisions.

use strongroom_core::Error;
use strongroom_core::Result;
use strongroom_core::access::{AccessRequestRecord, AccessRequestStatus};
use strongroom_core::policy::{Capability, Destination, Grant, GrantSubject, Reason, Selector};
use strongroom_proto::v1 as pb;

pub use crate::grpc::convert::*;

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

pub fn capability_out(c: Capability) -> pb::Capability {
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
                placeholder_headers: d
                    .placeholder_headers
                    .into_iter()
                    .map(|h| h.to_ascii_lowercase())
                    .collect(),
                placeholder_query: d.placeholder_query,
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
        destinations: g.destinations.iter().map(destination_out).collect(),
        expires_at: opt_time_out(g.expires_at),
        reason: g.reason.clone(),
        granted_by: g.granted_by.to_string(),
        created_at: Some(time_out(g.created_at)),
        access_request_id: g.access_request.map(|r| r.to_string()).unwrap_or_default(),
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
        | Reason::DenialThreshold
        | Reason::NotLeaseHolder
        | Reason::DestinationNotAllowed
        | Reason::PlaceholderMisuse
        | Reason::LeakReported
        | Reason::DeliveryFailed
        | Reason::DeliveryGivenUp
        | Reason::PrincipalDisabled
        | Reason::GrantRevoked => P::Unspecified,
    }
}

/// A request status as its enum.
pub fn request_status_out(s: AccessRequestStatus) -> pb::AccessRequestStatus {
    use pb::AccessRequestStatus as P;
    match s {
        AccessRequestStatus::Pending => P::Pending,
        AccessRequestStatus::Approved => P::Approved,
        AccessRequestStatus::Denied => P::Denied,
        AccessRequestStatus::Expired => P::Expired,
    }
}

/// Parses a request status filter (unspecified: any).
pub fn request_status_in(v: i32, field: &'static str) -> Result<Option<AccessRequestStatus>> {
    use pb::AccessRequestStatus as P;
    match P::try_from(v) {
        Ok(P::Unspecified) => Ok(None),
        Ok(P::Pending) => Ok(Some(AccessRequestStatus::Pending)),
        Ok(P::Approved) => Ok(Some(AccessRequestStatus::Approved)),
        Ok(P::Denied) => Ok(Some(AccessRequestStatus::Denied)),
        Ok(P::Expired) => Ok(Some(AccessRequestStatus::Expired)),
        Err(_) => Err(Error::invalid(field, "unknown status")),
    }
}

fn destination_out(d: &Destination) -> pb::Destination {
    pb::Destination {
        host: d.host.clone(),
        methods: d.methods.clone(),
        path_prefixes: d.path_prefixes.clone(),
        placeholder_headers: d.placeholder_headers.clone(),
        placeholder_query: d.placeholder_query.clone(),
    }
}

/// An access request as returned (its status as the engine read it now).
pub fn access_request_out(r: &AccessRequestRecord) -> pb::AccessRequest {
    let credential = match (&r.selector, r.environments.as_slice()) {
        (Selector::Exact(name), [environment]) => Some(pb::CredentialPath {
            environment: environment.to_string(),
            name: name.to_string(),
        }),
        _ => None,
    };
    pb::AccessRequest {
        id: r.id.to_string(),
        requester_id: r.requester.to_string(),
        requester_name: r.requester_name.clone(),
        credential,
        capability: capability_out(r.capability) as i32,
        purpose: r.purpose.clone(),
        on_behalf_of: r.on_behalf_of.clone().unwrap_or_default(),
        requested_duration: Some(duration_out(r.duration)),
        destinations: r.destinations.iter().map(destination_out).collect(),
        status: request_status_out(r.status) as i32,
        created_at: Some(time_out(r.created_at)),
        decided_at: opt_time_out(r.decided_at),
        decided_by: r.decided_by.map(|p| p.to_string()).unwrap_or_default(),
        decision_reason: r.decision_reason.clone(),
        grant_id: r.grant.map(|g| g.to_string()).unwrap_or_default(),
        selector: r.selector.to_text(),
        environments: r.environments.iter().map(ToString::to_string).collect(),
        expires_at: Some(time_out(r.expires_at)),
    }
}

/// A notifier delivery as returned.
pub fn delivery_out(d: &strongroom_core::notify::Delivery) -> pb::NotificationDelivery {
    pb::NotificationDelivery {
        id: d.id.to_string(),
        event: d.event.clone(),
        payload_json: d.payload.clone(),
        attempts: d.attempts,
        last_status: d.last_status.map_or(0, u32::from),
        last_error: d.last_error.clone(),
        next_attempt_at: d.next_attempt_at.map(time_out),
        delivered_at: d.delivered_at.map(time_out),
        created_at: Some(time_out(d.created_at)),
    }
}
