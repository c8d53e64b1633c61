//! PolicyService's wire conversions: capabilities, destinations, grants
//! and access decisions.

use strongroom_core::Error;
use strongroom_core::Result;
use strongroom_core::policy::{Capability, Destination, Grant, GrantSubject, Reason};
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
        destinations: g
            .destinations
            .iter()
            .map(|d| pb::Destination {
                host: d.host.clone(),
                methods: d.methods.clone(),
                path_prefixes: d.path_prefixes.clone(),
                placeholder_headers: d.placeholder_headers.clone(),
                placeholder_query: d.placeholder_query.clone(),
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
        | Reason::DenialThreshold
        | Reason::NotLeaseHolder
        | Reason::DestinationNotAllowed
        | Reason::PlaceholderMisuse
        | Reason::LeakReported => P::Unspecified,
    }
}
