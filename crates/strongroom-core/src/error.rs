//! The core error type: a small, fixed set of codes shared by every layer.
//!
//! Messages are written for the caller and never carry secret material. The
//! server maps each variant to exactly one gRPC status code.

use std::borrow::Cow;
use std::fmt;

/// Result alias for the core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in a strongroom operation.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum Error {
    /// The request is malformed; `field` names the offending field.
    #[error("invalid {field}: {message}")]
    InvalidArgument {
        /// The request field (dotted path) that failed validation.
        field: Cow<'static, str>,
        /// Why it failed, without echoing secret input.
        message: Cow<'static, str>,
    },
    /// The named thing does not exist in the caller's tenant (or the caller
    /// may not know that it exists).
    #[error("{0} not found")]
    NotFound(Missing),
    /// A thing with the same unique key already exists.
    #[error("{0} already exists")]
    AlreadyExists(Cow<'static, str>),
    /// The caller is authenticated but not allowed to do this.
    #[error("permission denied: {0}")]
    PermissionDenied(Cow<'static, str>),
    /// The caller could not be authenticated.
    #[error("unauthenticated: {0}")]
    Unauthenticated(Cow<'static, str>),
    /// The target is in a state that forbids the operation (revoked, expired,
    /// destroyed, suspended, concurrently modified).
    #[error("failed precondition: {0}")]
    FailedPrecondition(Precondition),
    /// The caller exceeded a rate limit or quota.
    #[error("resource exhausted: {0}")]
    ResourceExhausted(Cow<'static, str>),
    /// A dependency (the database, the audit log) is unavailable; retrying
    /// later may succeed.
    #[error("unavailable: {0}")]
    Unavailable(Cow<'static, str>),
    /// The operation is part of the API but not served by this build.
    #[error("unimplemented: {0}")]
    Unimplemented(Cow<'static, str>),
    /// An internal failure. The message is for server logs; the caller only
    /// sees a generic message and a request id.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// An `InvalidArgument` for `field`.
    pub fn invalid(
        field: impl Into<Cow<'static, str>>,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self::InvalidArgument {
            field: field.into(),
            message: message.into(),
        }
    }

    /// A `NotFound` naming what was looked for.
    pub fn not_found(what: impl Into<Cow<'static, str>>) -> Self {
        Self::NotFound(Missing::Other(what.into()))
    }

    /// An `AlreadyExists` naming what collided.
    pub fn already_exists(what: impl Into<Cow<'static, str>>) -> Self {
        Self::AlreadyExists(what.into())
    }

    /// A `PermissionDenied` with a reason the caller may see.
    pub fn denied(reason: impl Into<Cow<'static, str>>) -> Self {
        Self::PermissionDenied(reason.into())
    }

    /// A `FailedPrecondition` with a reason the caller may see.
    pub fn precondition(reason: impl Into<Cow<'static, str>>) -> Self {
        Self::FailedPrecondition(Precondition::Other(reason.into()))
    }

    /// An `Internal` error carrying a message for the server log only.
    pub fn internal(message: impl std::fmt::Display) -> Self {
        Self::Internal(message.to_string())
    }

    /// Prefixes the field of an `InvalidArgument` with `parent.`, so nested
    /// validation reports the full path (`value.db_connection.port`).
    #[must_use]
    pub fn within(self, parent: &str) -> Self {
        match self {
            Self::InvalidArgument { field, message } => Self::InvalidArgument {
                field: format!("{parent}.{field}").into(),
                message,
            },
            other => other,
        }
    }
}

/// What was not found. A layer that acts on which thing is missing matches
/// a variant of its own, never the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    /// The environment named by a write (a credential created in an
    /// environment the tenant does not have).
    Environment,
    /// Anything else, named for the caller.
    Other(Cow<'static, str>),
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Environment => f.write_str("environment"),
            Self::Other(what) => f.write_str(what),
        }
    }
}

/// Why the target's state forbids an operation. A layer that acts on the
/// reason (a retry, a stale decision) matches a variant of its own, never
/// the text; the text is what the caller sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// Another writer added a version first (a lost compare-and-set on the
    /// latest version): re-read and retry.
    VersionRace,
    /// The state a reveal was decided on (the credential's version and
    /// status, the principal, the grant, the identity binding) no longer
    /// holds where its audit record commits; says what changed.
    RevealStateChanged(&'static str),
    /// The credential's value may not be used (revealed, resolved,
    /// injected): it is revoked, past its `expires_at`, or its values were
    /// destroyed.
    CredentialUnusable(Unusable),
    /// The tenant was crypto-shredded: its keys are destroyed and no value
    /// of it can be used again.
    TenantShredded,
    /// Any other, described for the caller.
    Other(Cow<'static, str>),
}

impl fmt::Display for Precondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::VersionRace => f.write_str("another version was written concurrently; retry"),
            Self::RevealStateChanged(why) => f.write_str(why),
            Self::CredentialUnusable(why) => f.write_str(why.as_str()),
            Self::TenantShredded => f.write_str("the tenant was shredded"),
            Self::Other(why) => f.write_str(why),
        }
    }
}

/// Why a credential's value may not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unusable {
    /// Revoked by an operator.
    Revoked,
    /// Past its `expires_at`.
    Expired,
    /// Its values were destroyed.
    Destroyed,
}

impl Unusable {
    /// What the caller is told.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Revoked => "credential is revoked",
            Self::Expired => "credential has expired",
            Self::Destroyed => "credential values were destroyed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_reasons_read_as_the_text_callers_always_saw() {
        assert_eq!(
            Error::NotFound(Missing::Environment).to_string(),
            "environment not found"
        );
        assert_eq!(
            Error::not_found("credential").to_string(),
            "credential not found"
        );
        assert_eq!(
            Error::FailedPrecondition(Precondition::VersionRace).to_string(),
            "failed precondition: another version was written concurrently; retry"
        );
        assert_eq!(
            Error::FailedPrecondition(Precondition::RevealStateChanged("the grant was revoked"))
                .to_string(),
            "failed precondition: the grant was revoked"
        );
    }
}
