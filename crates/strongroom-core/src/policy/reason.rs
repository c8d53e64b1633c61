//! Reason codes: why each audited thing was allowed or refused.

use serde::{Deserialize, Serialize};

/// Why something was allowed or refused: the reason code of every audit
/// event, stable as stored. The first seven are policy decisions (what
/// [`evaluate`](super::evaluate) answers); the rest are recorded by the operations and
/// controls around it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Reason {
    /// Allowed by the principal's role.
    AllowedByRole,
    /// Allowed by a grant.
    AllowedByGrant,
    /// No role default or grant covers the request.
    NoMatchingGrant,
    /// A grant would have covered it, but it has expired.
    GrantExpired,
    /// The principal is confined to other environments.
    EnvironmentNotPermitted,
    /// The principal's role never receives or uses values.
    RoleForbidsValues,
    /// An owner-scoped credential used without acting for its owner.
    OwnerMismatch,
    /// A credential write allowed by policy.
    Allowed,
    /// A platform operation by a configured platform operator.
    PlatformOperator,
    /// Tenant management by other than an admin unconfined to
    /// environments.
    RoleNotAdmin,
    /// A call the principal's role does not permit.
    RoleNotPermitted,
    /// A call by id naming no credential of the tenant.
    CredentialNotFound,
    /// An identity binding outside the tenant's identity namespaces.
    IdentityOutsideNamespaces,
    /// A reveal whose decision went stale twice before it could commit.
    StaleState,
    /// A revoked credential used.
    CredentialRevoked,
    /// An expired credential used.
    CredentialExpired,
    /// A credential whose values were destroyed used.
    CredentialDestroyed,
    /// A credential that is revoked, expired or destroyed rotated.
    CredentialNotUsable,
    /// A version no longer servable (neither current nor previous)
    /// revealed.
    VersionRetired,
    /// A chain head that does not extend the last checkpoint, refused
    /// signing.
    CheckpointRefused,
    /// A verified client certificate that names no identity.
    NoIdentity,
    /// A verified client identity bound to no principal.
    UnknownIdentity,
    /// Calls refused by the denied-call limit.
    DeniedCallLimit,
    /// Calls refused by the call limit.
    CallLimit,
    /// A principal's denials crossed the tenant's alert threshold.
    DenialThreshold,
    /// A lease renewed or released by another principal than its holder.
    NotLeaseHolder,
    /// A relay request to a destination no grant giving inject on the
    /// credential allows (grants without destinations allow none).
    DestinationNotAllowed,
    /// A placeholder sent to a destination its credential's grants do not
    /// allow.
    PlaceholderMisuse,
    /// A leak reported by a local tool.
    LeakReported,
    /// A notifier delivery's attempt failed (a status other than 2xx, or
    /// no answer); it will be tried again.
    DeliveryFailed,
    /// A notifier delivery was given up (out of attempts or time, or
    /// nothing a retry could change).
    DeliveryGivenUp,
    /// The principal was disabled (or emergency-revoked) while a use of a
    /// value was open: the use was cut short.
    PrincipalDisabled,
    /// The grant allowing an open use of a value was revoked: the use was
    /// cut short.
    GrantRevoked,
}

impl Reason {
    /// Stable text form.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::AllowedByRole => "ALLOWED_BY_ROLE",
            Self::AllowedByGrant => "ALLOWED_BY_GRANT",
            Self::NoMatchingGrant => "NO_MATCHING_GRANT",
            Self::GrantExpired => "GRANT_EXPIRED",
            Self::EnvironmentNotPermitted => "ENVIRONMENT_NOT_PERMITTED",
            Self::RoleForbidsValues => "ROLE_FORBIDS_VALUES",
            Self::OwnerMismatch => "OWNER_MISMATCH",
            Self::Allowed => "ALLOWED",
            Self::PlatformOperator => "PLATFORM_OPERATOR",
            Self::RoleNotAdmin => "ROLE_NOT_ADMIN",
            Self::RoleNotPermitted => "ROLE_NOT_PERMITTED",
            Self::CredentialNotFound => "CREDENTIAL_NOT_FOUND",
            Self::IdentityOutsideNamespaces => "IDENTITY_OUTSIDE_NAMESPACES",
            Self::StaleState => "STALE_STATE",
            Self::CredentialRevoked => "CREDENTIAL_REVOKED",
            Self::CredentialExpired => "CREDENTIAL_EXPIRED",
            Self::CredentialDestroyed => "CREDENTIAL_DESTROYED",
            Self::CredentialNotUsable => "CREDENTIAL_NOT_USABLE",
            Self::VersionRetired => "VERSION_RETIRED",
            Self::CheckpointRefused => "CHECKPOINT_REFUSED",
            Self::NoIdentity => "NO_IDENTITY",
            Self::UnknownIdentity => "UNKNOWN_IDENTITY",
            Self::DeniedCallLimit => "DENIED_CALL_LIMIT",
            Self::CallLimit => "CALL_LIMIT",
            Self::DenialThreshold => "DENIAL_THRESHOLD",
            Self::NotLeaseHolder => "NOT_LEASE_HOLDER",
            Self::DestinationNotAllowed => "DESTINATION_NOT_ALLOWED",
            Self::PlaceholderMisuse => "PLACEHOLDER_MISUSE",
            Self::LeakReported => "LEAK_REPORTED",
            Self::DeliveryFailed => "DELIVERY_FAILED",
            Self::DeliveryGivenUp => "DELIVERY_GIVEN_UP",
            Self::PrincipalDisabled => "PRINCIPAL_DISABLED",
            Self::GrantRevoked => "GRANT_REVOKED",
        }
    }

    /// A sentence for the caller.
    pub const fn explain(&self) -> &'static str {
        match self {
            Self::AllowedByRole => "allowed by the principal's role",
            Self::AllowedByGrant => "allowed by a grant",
            Self::NoMatchingGrant => "no grant allows this",
            Self::GrantExpired => "the grant that allowed this has expired",
            Self::EnvironmentNotPermitted => "the principal is not permitted in this environment",
            Self::RoleForbidsValues => "the principal's role never receives credential values",
            Self::OwnerMismatch => {
                "the credential is owner-scoped and the call is not on behalf of its owner"
            }
            Self::Allowed => "allowed",
            Self::PlatformOperator => "allowed for a platform operator",
            Self::RoleNotAdmin => "this needs the admin role, unconfined to environments",
            Self::RoleNotPermitted => "the principal's role does not permit this",
            Self::CredentialNotFound => "no such credential",
            Self::IdentityOutsideNamespaces => {
                "the identity lies outside the tenant's identity namespaces"
            }
            Self::StaleState => "the state the call was decided on changed",
            Self::CredentialRevoked => "credential is revoked",
            Self::CredentialExpired => "credential has expired",
            Self::CredentialDestroyed => "credential values were destroyed",
            Self::CredentialNotUsable => "the credential is revoked, expired or destroyed",
            Self::VersionRetired => "only the current and previous versions can be revealed",
            Self::CheckpointRefused => "the audit chain no longer extends the last checkpoint",
            Self::NoIdentity => "the client certificate names no identity",
            Self::UnknownIdentity => "the client identity is not bound to any principal",
            Self::DeniedCallLimit => "too many denied calls",
            Self::CallLimit => "too many calls",
            Self::DenialThreshold => "repeated denials crossed the alert threshold",
            Self::NotLeaseHolder => "only the principal holding the lease may renew or release it",
            Self::DestinationNotAllowed => {
                "no grant giving inject on the credential allows this destination"
            }
            Self::PlaceholderMisuse => {
                "a placeholder was sent to a destination its credential's grants do not allow"
            }
            Self::LeakReported => "a local tool reported a leaked value",
            Self::DeliveryFailed => "the notifier's receiver did not accept the delivery",
            Self::DeliveryGivenUp => "the notifier delivery was given up",
            Self::PrincipalDisabled => "the principal was disabled",
            Self::GrantRevoked => "the grant that allowed this was revoked",
        }
    }
}
