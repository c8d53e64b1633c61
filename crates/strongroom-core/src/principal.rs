//! Principals (authenticated callers), their roles, and the identity bindings
//! that map mTLS identities to them.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ids::{BindingId, PrincipalId, TenantId};
use crate::names::{Environment, PrincipalName};
use crate::time::Timestamp;

/// A principal's role: its tenant-wide default rights. Grants add to them,
/// except where the role forbids (a viewer never receives a value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Manages the tenant: principals, bindings, environments, grants, every
    /// credential.
    Admin,
    /// Manages credentials (create, rotate, revoke) and reads metadata; needs a
    /// grant to receive values.
    Operator,
    /// Reads metadata only; never receives or injects a value.
    Viewer,
    /// An AI agent, skill, tool or service: nothing by default, only what
    /// grants allow.
    Agent,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 4] = [Self::Admin, Self::Operator, Self::Viewer, Self::Agent];

    /// Stable text form, as stored.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Operator => "operator",
            Self::Viewer => "viewer",
            Self::Agent => "agent",
        }
    }

    /// Parses the stable text form.
    pub fn parse(text: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == text)
            .ok_or_else(|| Error::invalid("role", "unknown role"))
    }
}

/// Whether a principal may authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrincipalStatus {
    /// May authenticate.
    Active,
    /// Refused at authentication.
    Disabled,
}

impl PrincipalStatus {
    /// Stable text form, as stored.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Disabled => "disabled",
        }
    }

    /// Parses the stable text form.
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "active" => Ok(Self::Active),
            "disabled" => Ok(Self::Disabled),
            _ => Err(Error::invalid("status", "unknown principal status")),
        }
    }
}

/// An authenticated caller of a tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Id within the tenant.
    pub id: PrincipalId,
    /// Owning tenant.
    pub tenant: TenantId,
    /// Name, unique within the tenant.
    pub name: PrincipalName,
    /// Role.
    pub role: Role,
    /// Environments it is confined to; empty means all.
    pub environments: Vec<Environment>,
    /// Free text.
    pub description: String,
    /// Active or disabled.
    pub status: PrincipalStatus,
    /// Creation time.
    pub created_at: Timestamp,
}

impl Principal {
    /// Whether the principal may touch anything in `environment`.
    pub fn may_enter(&self, environment: &Environment) -> bool {
        self.environments.is_empty() || self.environments.contains(environment)
    }
}

/// An identity as presented in a client certificate: a SPIFFE ID from the URI
/// SAN, else the subject CN.
pub type PeerIdentity = str;

/// How a binding matches an identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum IdentityPattern {
    /// Exactly this identity.
    Exact(String),
    /// Any identity starting with this text; written with a trailing `*`
    /// (`spiffe://cluster.local/ns/team-a/sa/*`).
    Prefix(String),
}

impl IdentityPattern {
    /// Parses `text`: a trailing `*` makes a prefix pattern; `*` anywhere else
    /// is rejected. At most 512 characters, printable ASCII, no spaces.
    pub fn parse(text: &str, field: &'static str) -> Result<Self> {
        if text.is_empty() {
            return Err(Error::invalid(field, "must not be empty"));
        }
        if text.len() > 512 {
            return Err(Error::invalid(field, "must be at most 512 characters"));
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::invalid(
                field,
                "must be printable ASCII without spaces",
            ));
        }
        match text.strip_suffix('*') {
            Some(prefix) if prefix.contains('*') => Err(Error::invalid(
                field,
                "'*' is allowed only at the end of a pattern",
            )),
            Some("") => Err(Error::invalid(
                field,
                "a pattern must have a prefix before '*'",
            )),
            Some(prefix) => Ok(Self::Prefix(prefix.to_owned())),
            None if text.contains('*') => Err(Error::invalid(
                field,
                "'*' is allowed only at the end of a pattern",
            )),
            None => Ok(Self::Exact(text.to_owned())),
        }
    }

    /// Whether `identity` matches.
    pub fn matches(&self, identity: &str) -> bool {
        match self {
            Self::Exact(e) => e == identity,
            Self::Prefix(p) => identity.starts_with(p.as_str()),
        }
    }

    /// How specific a match is: an exact match beats any prefix, a longer
    /// prefix beats a shorter one.
    pub fn specificity(&self) -> usize {
        match self {
            Self::Exact(_) => usize::MAX,
            Self::Prefix(p) => p.len(),
        }
    }

    /// The text form (prefix patterns end in `*`).
    pub fn to_text(&self) -> String {
        match self {
            Self::Exact(e) => e.clone(),
            Self::Prefix(p) => format!("{p}*"),
        }
    }
}

/// Maps identities matching `pattern` to a principal of a tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityBinding {
    /// Id.
    pub id: BindingId,
    /// Owning tenant.
    pub tenant: TenantId,
    /// The principal the identity authenticates as.
    pub principal: PrincipalId,
    /// Which identities match.
    pub pattern: IdentityPattern,
    /// Creation time.
    pub created_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let p = IdentityPattern::parse("spiffe://cluster.local/ns/team-a/sa/*", "identity");
        assert!(matches!(p, Ok(IdentityPattern::Prefix(_))));
        let p = p.unwrap_or_else(|e| panic!("{e}"));
        assert!(p.matches("spiffe://cluster.local/ns/team-a/sa/builder"));
        assert!(!p.matches("spiffe://cluster.local/ns/team-b/sa/builder"));
        assert!(IdentityPattern::parse("a*b", "identity").is_err());
        assert!(IdentityPattern::parse("*", "identity").is_err());
        assert!(IdentityPattern::parse("a b", "identity").is_err());
        assert_eq!(
            IdentityPattern::parse("agent-1", "identity"),
            Ok(IdentityPattern::Exact("agent-1".into()))
        );
    }
}
