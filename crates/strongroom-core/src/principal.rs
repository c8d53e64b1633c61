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

/// The characters a common-name pattern's `*` may follow.
pub const CN_PATTERN_SEPARATORS: [char; 6] = ['.', '-', '_', ':', '/', '@'];

/// The scheme of SPIFFE IDs.
const SPIFFE_SCHEME: &str = "spiffe://";

/// The one answer to a tenant admin whose identity binding is refused
/// because of the identity it names: the same whether the identity is
/// malformed, outside the tenant's namespaces, or owned by another tenant,
/// so the refusal reveals nothing of other tenants.
pub const BINDING_OUTSIDE_NAMESPACES: &str = "the identity is not inside this tenant's identity namespaces; a platform operator assigns them";

/// The one answer to a platform operator whose namespace assignment
/// overlaps: the same whether the overlap is within the request or with
/// another tenant's namespaces.
pub const NAMESPACE_OVERLAP: &str =
    "identity namespaces must not overlap one another nor any other tenant's identity namespaces";

impl IdentityPattern {
    /// Parses `text` as an identity namespace (or a binding inside one):
    /// [`IdentityPattern::parse`], then [`IdentityPattern::scope_problem`].
    pub fn parse_scoped(text: &str, field: &'static str) -> Result<Self> {
        let pattern = Self::parse(text, field)?;
        match pattern.scope_problem() {
            Some(problem) => Err(Error::invalid(field, problem)),
            None => Ok(pattern),
        }
    }

    /// Why this pattern cannot be an identity namespace, if it cannot.
    ///
    /// A SPIFFE pattern (`spiffe://…`) needs a trust domain and at least one
    /// path segment, with no empty segment; a prefix pattern's `*` follows a
    /// `/`: `spiffe://td/ns/*` is the broadest. Any other text is a
    /// certificate common name: exact, or a prefix whose `*` follows one of
    /// [`CN_PATTERN_SEPARATORS`] preceded by a character that is not one
    /// (`team-a-*`, `agents.team-a.*`), and which cannot cover SPIFFE IDs
    /// (`spiffe:*` is refused).
    pub fn scope_problem(&self) -> Option<&'static str> {
        let (text, prefix) = match self {
            Self::Exact(e) => (e.as_str(), false),
            Self::Prefix(p) => (p.as_str(), true),
        };
        if let Some(rest) = text.strip_prefix(SPIFFE_SCHEME) {
            let Some((domain, path)) = rest.split_once('/') else {
                return Some("a SPIFFE ID pattern needs a trust domain and a path");
            };
            if domain.is_empty() {
                return Some("a SPIFFE ID pattern needs a trust domain");
            }
            if path.is_empty() {
                return Some(
                    "a SPIFFE ID pattern needs at least one path segment after the trust domain",
                );
            }
            let segments = if prefix {
                let Some(segments) = path.strip_suffix('/') else {
                    return Some("in a SPIFFE ID pattern '*' must follow a '/'");
                };
                segments
            } else {
                path
            };
            if segments.split('/').any(str::is_empty) {
                return Some("a SPIFFE ID has no empty path segments");
            }
            return None;
        }
        if !prefix {
            return None;
        }
        if text.starts_with("spiffe:") || SPIFFE_SCHEME.starts_with(text) {
            return Some("a common-name pattern cannot cover SPIFFE IDs");
        }
        let mut chars = text.chars().rev();
        let last = chars.next();
        let before = chars.next();
        match (last, before) {
            (Some(l), Some(b))
                if CN_PATTERN_SEPARATORS.contains(&l) && !CN_PATTERN_SEPARATORS.contains(&b) =>
            {
                None
            }
            _ => Some(
                "in a common-name pattern '*' must follow one of . - _ : / @, after some other character",
            ),
        }
    }

    /// Whether some identity matches both patterns: equal exact identities,
    /// an exact identity under a prefix, or one prefix starting with the
    /// other.
    pub fn overlaps(&self, other: &IdentityPattern) -> bool {
        match (self, other) {
            (Self::Exact(a), Self::Exact(b)) => a == b,
            (Self::Exact(e), Self::Prefix(p)) | (Self::Prefix(p), Self::Exact(e)) => {
                e.starts_with(p.as_str())
            }
            (Self::Prefix(a), Self::Prefix(b)) => {
                a.starts_with(b.as_str()) || b.starts_with(a.as_str())
            }
        }
    }

    /// Whether every identity `inner` matches also matches `self` (a
    /// namespace covering a binding).
    pub fn covers(&self, inner: &IdentityPattern) -> bool {
        match (self, inner) {
            (Self::Exact(a), Self::Exact(b)) => a == b,
            (Self::Exact(_), Self::Prefix(_)) => false,
            (Self::Prefix(p), Self::Exact(x) | Self::Prefix(x)) => x.starts_with(p.as_str()),
        }
    }
}

/// Most identity namespaces one tenant may have.
pub const MAX_NAMESPACES: usize = 32;

/// Parses identity namespaces as given on the wire: at most
/// [`MAX_NAMESPACES`], each as [`IdentityPattern::parse`], then
/// [`check_namespaces`].
pub fn parse_namespaces(texts: &[String], field: &'static str) -> Result<Vec<IdentityPattern>> {
    if texts.len() > MAX_NAMESPACES {
        return Err(Error::invalid(
            field,
            format!("at most {MAX_NAMESPACES} items"),
        ));
    }
    let namespaces = texts
        .iter()
        .map(|t| IdentityPattern::parse(t, field))
        .collect::<Result<Vec<_>>>()?;
    check_namespaces(&namespaces, MAX_NAMESPACES, field)?;
    Ok(namespaces)
}

/// Checks a set of identity namespaces given together: each well formed
/// (see [`IdentityPattern::scope_problem`]), at most `max` of them, and no
/// two overlapping ([`NAMESPACE_OVERLAP`] otherwise).
pub fn check_namespaces(
    namespaces: &[IdentityPattern],
    max: usize,
    field: &'static str,
) -> Result<()> {
    if namespaces.len() > max {
        return Err(Error::invalid(field, format!("at most {max} items")));
    }
    for (i, n) in namespaces.iter().enumerate() {
        if let Some(problem) = n.scope_problem() {
            return Err(Error::invalid(field, problem));
        }
        if namespaces[..i].iter().any(|m| m.overlaps(n)) {
            return Err(Error::invalid(field, NAMESPACE_OVERLAP));
        }
    }
    Ok(())
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

    fn pat(text: &str) -> IdentityPattern {
        IdentityPattern::parse(text, "identity").unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn namespace_validity() {
        for good in [
            "spiffe://td/ns/*",
            "spiffe://cluster.local/ns/team-a/*",
            "spiffe://cluster.local/ns/team-a/sa/builder",
            "spiffe://td/x",
            "team-a-*",
            "agents.team-a.*",
            "worker@team-a.*",
            "billing-worker.acme.internal",
            "s",
        ] {
            assert_eq!(pat(good).scope_problem(), None, "{good}");
            assert!(IdentityPattern::parse_scoped(good, "n").is_ok(), "{good}");
        }
        for bad in [
            "spiffe://*",
            "spiffe://td/*",
            "spiffe://td*",
            "spiffe:///ns/*",
            "spiffe://td/ns*",
            "spiffe://td/ns/a*",
            "spiffe://td//*",
            "spiffe://td/ns//*",
            "spiffe://td",
            "spiffe://td/",
            "spiffe://td/ns/",
            "spiffe://td//x",
            "s*",
            "sp*",
            "spiffe*",
            "spiffe:*",
            "spiffe:/*",
            "spiffe:x.*",
            "team*",
            "-*",
            "team--*",
            ".*",
        ] {
            assert!(pat(bad).scope_problem().is_some(), "{bad} is accepted");
            assert!(
                matches!(
                    IdentityPattern::parse_scoped(bad, "n"),
                    Err(Error::InvalidArgument { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn namespace_problems_say_why() {
        let why = |text: &str| pat(text).scope_problem().unwrap_or_default();
        assert!(why("spiffe://td/*").contains("path segment"));
        assert!(why("spiffe://*").contains("trust domain"));
        assert!(why("spiffe://td/ns*").contains("follow a '/'"));
        assert!(why("spiffe:*").contains("cannot cover SPIFFE IDs"));
        assert!(why("s*").contains("cannot cover SPIFFE IDs"));
        assert!(why("team*").contains("must follow one of"));
    }

    #[test]
    fn overlap_and_cover() {
        let a = pat("spiffe://td/ns/a/*");
        let a_sa = pat("spiffe://td/ns/a/sa/*");
        let a_x = pat("spiffe://td/ns/a/x");
        let ab = pat("spiffe://td/ns/ab/*");
        // A prefix and a longer prefix under it overlap, either way round.
        assert!(a.overlaps(&a_sa) && a_sa.overlaps(&a));
        // An exact identity under a prefix overlaps it.
        assert!(a.overlaps(&a_x) && a_x.overlaps(&a));
        assert!(!a_sa.overlaps(&a_x));
        // `*` after `/` keeps sibling segments apart.
        assert!(!a.overlaps(&ab) && !ab.overlaps(&a));
        assert!(a.overlaps(&a));
        assert!(a_x.overlaps(&pat("spiffe://td/ns/a/x")));
        assert!(!a_x.overlaps(&pat("spiffe://td/ns/a/y")));
        assert!(pat("team-a-*").overlaps(&pat("team-a-b-*")));
        assert!(!pat("team-a-*").overlaps(&pat("team-a.*")));
        // Covering: a namespace covers what lies inside it, not beyond.
        assert!(a.covers(&a_sa) && a.covers(&a_x) && a.covers(&a));
        assert!(!a_sa.covers(&a) && !a.covers(&ab));
        assert!(!a.covers(&pat("spiffe://*")) && !a.covers(&pat("s*")));
        assert!(a_x.covers(&a_x) && !a_x.covers(&pat("spiffe://td/ns/a/x/*")));
    }

    #[test]
    fn namespace_sets() {
        let set = |texts: &[&str]| texts.iter().map(|t| pat(t)).collect::<Vec<_>>();
        assert!(
            check_namespaces(
                &set(&["spiffe://td/ns/a/*", "spiffe://td/ns/b/*", "a-*"]),
                8,
                "n"
            )
            .is_ok()
        );
        assert_eq!(
            check_namespaces(&set(&["spiffe://td/ns/a/*", "spiffe://td/ns/a/x"]), 8, "n"),
            Err(Error::invalid("n", NAMESPACE_OVERLAP))
        );
        assert!(check_namespaces(&set(&["spiffe://td/*"]), 8, "n").is_err());
        assert!(check_namespaces(&set(&["a-*", "b-*"]), 1, "n").is_err());
    }
}
