//! Grants and the policy evaluation. Default deny: a principal may do only
//! what its role or a live grant allows, and a role that forbids values (the
//! viewer) caps every grant.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::error::{Error, Result};
use crate::ids::{GrantId, PrincipalId, TenantId};
use crate::names::{CredentialName, Environment};
use crate::principal::{Principal, Role};
use crate::time::Timestamp;

mod reason;

pub use reason::Reason;

/// Something a principal may do with a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    /// See that it exists in listings.
    List,
    /// Read its metadata.
    ReadMetadata,
    /// Use it through the relay without receiving the value.
    Inject,
    /// Receive the value.
    Reveal,
    /// Create it or change its metadata.
    Write,
    /// Write new versions, roll back.
    Rotate,
    /// Revoke, destroy, and manage grants on it.
    Admin,
}

impl Capability {
    /// Every capability, in bit order.
    pub const ALL: [Capability; 7] = [
        Self::List,
        Self::ReadMetadata,
        Self::Inject,
        Self::Reveal,
        Self::Write,
        Self::Rotate,
        Self::Admin,
    ];

    const fn bit(&self) -> u8 {
        match self {
            Self::List => 1,
            Self::ReadMetadata => 1 << 1,
            Self::Inject => 1 << 2,
            Self::Reveal => 1 << 3,
            Self::Write => 1 << 4,
            Self::Rotate => 1 << 5,
            Self::Admin => 1 << 6,
        }
    }

    /// Stable text form, as stored.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::List => "list",
            Self::ReadMetadata => "read_metadata",
            Self::Inject => "inject",
            Self::Reveal => "reveal",
            Self::Write => "write",
            Self::Rotate => "rotate",
            Self::Admin => "admin",
        }
    }

    /// Whether using this capability hands out (or uses) the value.
    pub const fn touches_value(&self) -> bool {
        matches!(self, Self::Inject | Self::Reveal)
    }
}

/// A set of capabilities. Granting a stronger capability implies the weaker
/// ones it needs: `reveal` implies `inject`; every capability implies
/// `read_metadata` and `list`; `admin` implies all.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Capabilities(u8);

impl Capabilities {
    /// No capability.
    pub const NONE: Capabilities = Capabilities(0);
    /// Every capability.
    pub const ALL: Capabilities = Capabilities(0x7f);

    /// The set of exactly the given capabilities (no implication applied).
    pub fn of(caps: &[Capability]) -> Self {
        Self(caps.iter().fold(0, |acc, c| acc | c.bit()))
    }

    /// This set with implied capabilities added.
    #[must_use]
    pub fn closure(self) -> Self {
        let mut bits = self.0;
        if bits & Capability::Admin.bit() != 0 {
            return Self::ALL;
        }
        if bits & Capability::Reveal.bit() != 0 {
            bits |= Capability::Inject.bit();
        }
        if bits != 0 {
            bits |= Capability::ReadMetadata.bit() | Capability::List.bit();
        }
        Self(bits)
    }

    /// Whether `cap` is in the set (after implication).
    pub fn allows(&self, cap: Capability) -> bool {
        self.closure().0 & cap.bit() != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }

    /// The capabilities as listed (no implication applied).
    pub fn iter(&self) -> impl Iterator<Item = Capability> + '_ {
        Capability::ALL
            .into_iter()
            .filter(|c| self.0 & c.bit() != 0)
    }

    /// The raw bits, as stored.
    pub const fn bits(&self) -> u8 {
        self.0
    }

    /// From stored bits; unknown bits are dropped.
    pub const fn from_bits(bits: u8) -> Self {
        Self(bits & 0x7f)
    }
}

impl fmt::Debug for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.iter().map(|c| c.as_str()))
            .finish()
    }
}

/// Which credential names a grant covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Selector {
    /// Exactly this name.
    Exact(CredentialName),
    /// Every name under this prefix: `llm/*` covers `llm/openai` and
    /// `llm/a/b`; `*` alone covers everything.
    Prefix(String),
}

impl Selector {
    /// Parses `llm/openai`, `llm/*` or `*`.
    pub fn parse(text: &str, field: &'static str) -> Result<Self> {
        if text == "*" {
            return Ok(Self::Prefix(String::new()));
        }
        if let Some(prefix) = text.strip_suffix("/*") {
            CredentialName::parse(prefix, field)?;
            return Ok(Self::Prefix(format!("{prefix}/")));
        }
        if text.contains('*') {
            return Err(Error::invalid(
                field,
                "a selector is an exact name, a prefix ending in '/*', or '*'",
            ));
        }
        Ok(Self::Exact(CredentialName::parse(text, field)?))
    }

    /// Whether `name` is covered.
    pub fn matches(&self, name: &CredentialName) -> bool {
        match self {
            Self::Exact(n) => n == name,
            Self::Prefix(p) => name.as_str().starts_with(p.as_str()),
        }
    }

    /// The text form it was parsed from.
    pub fn to_text(&self) -> String {
        match self {
            Self::Exact(n) => n.to_string(),
            Self::Prefix(p) if p.is_empty() => "*".to_owned(),
            Self::Prefix(p) => format!("{p}*"),
        }
    }
}

/// Who a grant is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GrantSubject {
    /// One principal.
    Principal(PrincipalId),
    /// Every principal with this role.
    Role(Role),
}

/// Where the relay may inject a credential.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Destination {
    /// Host name, exact or `*.example.com` (any subdomain, not the apex),
    /// optionally with `:port` (without one, only the scheme's default
    /// port).
    pub host: String,
    /// Allowed HTTP methods, upper case; empty means any.
    pub methods: Vec<String>,
    /// Allowed path prefixes, matched on segment boundaries against the
    /// normalised path (see [`crate::net::path_has_prefix`]); empty means
    /// any.
    pub path_prefixes: Vec<String>,
    /// Header names (lower case) whose values may carry a placeholder of a
    /// credential this grant covers, besides the slot its injection
    /// template names; see [`crate::placeholder`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placeholder_headers: Vec<String>,
    /// Query parameter names whose values may carry a placeholder, besides
    /// the slot the credential's injection template names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placeholder_query: Vec<String>,
}

impl Destination {
    /// Checks the host pattern, methods and path prefixes.
    pub fn validate(&self) -> Result<()> {
        if self.host_pattern().is_none() {
            return Err(Error::invalid(
                "destinations.host",
                "must be a host name or '*.domain', optionally with ':port'",
            ));
        }
        for m in &self.methods {
            if m.is_empty() || m.len() > 16 || !m.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(Error::invalid(
                    "destinations.methods",
                    "must be upper-case HTTP methods",
                ));
            }
        }
        for p in &self.path_prefixes {
            if !p.starts_with('/') {
                return Err(Error::invalid(
                    "destinations.path_prefixes",
                    "must start with '/'",
                ));
            }
            if crate::net::normalize_path(p).is_none() {
                return Err(Error::invalid(
                    "destinations.path_prefixes",
                    "must be a path that normalises (no '..' above the root, no encoded '/')",
                ));
            }
        }
        for h in &self.placeholder_headers {
            if h.is_empty()
                || h.len() > 128
                || !h
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            {
                return Err(Error::invalid(
                    "destinations.placeholder_headers",
                    "must be lower-case header names (letters, digits, '-', '_')",
                ));
            }
            if matches!(
                h.as_str(),
                "host" | "content-length" | "transfer-encoding" | "connection" | "cookie"
            ) {
                return Err(Error::invalid(
                    "destinations.placeholder_headers",
                    "may not name host, framing or cookie headers",
                ));
            }
        }
        for q in &self.placeholder_query {
            if q.is_empty()
                || q.len() > 128
                || !q.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'[' | b']')
                })
            {
                return Err(Error::invalid(
                    "destinations.placeholder_query",
                    "must be query parameter names (letters, digits, '-', '_', '.', '[', ']')",
                ));
            }
        }
        if self.placeholder_headers.len() > 16 || self.placeholder_query.len() > 16 {
            return Err(Error::invalid(
                "destinations.placeholder_headers",
                "at most 16 header and 16 query parameter names",
            ));
        }
        Ok(())
    }

    /// The host pattern (normalised, `*.` kept) and the port, if one is
    /// given; `None` if the pattern is not valid.
    pub fn host_pattern(&self) -> Option<(String, Option<u16>)> {
        let (host, port) = match self.host.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => {
                if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                let port: u16 = p.parse().ok().filter(|p| *p != 0)?;
                (h, Some(port))
            }
            Some(_) => return None,
            None => (self.host.as_str(), None),
        };
        let (wildcard, bare) = match host.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, host),
        };
        let bare = crate::net::normalize_host(bare)?;
        Some((if wildcard { format!("*.{bare}") } else { bare }, port))
    }

    /// Whether a request with `method` to `target` (parsed and normalised)
    /// is allowed: HTTPS only (a credential never travels in clear), host
    /// (exact or subdomain of a wildcard), port (the given one, else 443),
    /// method, and path prefix on segment boundaries.
    pub fn allows(&self, target: &crate::net::RequestTarget, method: &str) -> bool {
        let Some((pattern, port)) = self.host_pattern() else {
            return false;
        };
        target.scheme == crate::net::Scheme::Https
            && crate::net::host_matches(&pattern, &target.host)
            && port.unwrap_or(443) == target.port
            && (self.methods.is_empty() || self.methods.iter().any(|m| m == method))
            && (self.path_prefixes.is_empty()
                || self
                    .path_prefixes
                    .iter()
                    .any(|p| crate::net::path_has_prefix(&target.path, p)))
    }
}

/// A grant: binds a subject to credentials (by selector, in environments) with
/// capabilities, optionally until `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Id.
    pub id: GrantId,
    /// Owning tenant.
    pub tenant: TenantId,
    /// Who it is for.
    pub subject: GrantSubject,
    /// Which credential names.
    pub selector: Selector,
    /// Which environments (at least one).
    pub environments: Vec<Environment>,
    /// What it allows.
    pub capabilities: Capabilities,
    /// Where injection may go (for `inject`); empty means no destination.
    pub destinations: Vec<Destination>,
    /// Denies from this time on.
    pub expires_at: Option<Timestamp>,
    /// Why it was granted.
    pub reason: String,
    /// Who granted it.
    pub granted_by: PrincipalId,
    /// Creation time.
    pub created_at: Timestamp,
    /// The access request whose approval created it, if one did.
    pub access_request: Option<crate::ids::AccessRequestId>,
}

impl Grant {
    /// Whether it covers `principal` (directly or by role).
    pub fn applies_to(&self, principal: &Principal) -> bool {
        match self.subject {
            GrantSubject::Principal(id) => id == principal.id,
            GrantSubject::Role(role) => role == principal.role,
        }
    }

    /// Whether it covers the credential `name` in `environment`.
    pub fn covers(&self, environment: &Environment, name: &CredentialName) -> bool {
        self.environments.contains(environment) && self.selector.matches(name)
    }

    /// Whether it has expired as of `now`.
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }
}

/// The outcome of a policy check. Built only by [`evaluate`] (other
/// crates read it but cannot build one), so a decision that names a grant
/// always carries that grant's expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Decision {
    /// Whether the request is allowed.
    pub allowed: bool,
    /// Why.
    pub reason: Reason,
    /// The grant that allowed it, if a grant did.
    pub grant: Option<GrantId>,
    /// When that grant expires, if it does (what a lease opened on this
    /// decision may not outlast).
    pub grant_expires_at: Option<Timestamp>,
}

impl Decision {
    fn allow(reason: Reason, grant: Option<&Grant>) -> Self {
        Self {
            allowed: true,
            reason,
            grant: grant.map(|g| g.id),
            grant_expires_at: grant.and_then(|g| g.expires_at),
        }
    }

    fn deny(reason: Reason) -> Self {
        Self {
            allowed: false,
            reason,
            grant: None,
            grant_expires_at: None,
        }
    }

    /// `Ok` if allowed, else a `PermissionDenied` explaining why.
    pub fn ensure(&self) -> Result<()> {
        if self.allowed {
            Ok(())
        } else {
            Err(Error::denied(self.reason.explain()))
        }
    }
}

/// What a principal asks to do.
#[derive(Debug, Clone, Copy)]
pub struct AccessRequest<'a> {
    /// The capability needed.
    pub capability: Capability,
    /// The credential's environment.
    pub environment: &'a Environment,
    /// The credential's name.
    pub name: &'a CredentialName,
    /// The credential's owner, if owner-scoped.
    pub owner: Option<&'a str>,
    /// The end user the caller acts for, if stated.
    pub on_behalf_of: Option<&'a str>,
}

/// The capabilities a role has on every credential of its tenant.
pub const fn role_defaults(role: Role) -> Capabilities {
    match role {
        Role::Admin => Capabilities::ALL,
        Role::Operator => Capabilities(
            Capability::List.bit()
                | Capability::ReadMetadata.bit()
                | Capability::Write.bit()
                | Capability::Rotate.bit(),
        ),
        Role::Viewer => Capabilities(Capability::List.bit() | Capability::ReadMetadata.bit()),
        Role::Agent => Capabilities::NONE,
    }
}

/// A part of the tenant a principal reaches with one capability: names the
/// selector covers, in these environments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reach {
    /// The environments.
    pub environments: Vec<Environment>,
    /// The names.
    pub selector: Selector,
}

/// Where `principal` may use `capability` on credentials that are not
/// owner-scoped, as of `now`: `None` for everywhere, else the union of the
/// reaches (empty: nowhere). [`evaluate`] allows the capability on a
/// credential exactly when it lies in this set (owner rules aside), so a
/// listing can be filtered by it before it is paged.
pub fn reach(
    principal: &Principal,
    grants: &[Grant],
    capability: Capability,
    now: Timestamp,
) -> Option<Vec<Reach>> {
    if principal.role == Role::Viewer && capability.touches_value() {
        return Some(Vec::new());
    }
    if role_defaults(principal.role).allows(capability) {
        if principal.environments.is_empty() {
            return None;
        }
        return Some(vec![Reach {
            environments: principal.environments.clone(),
            selector: Selector::Prefix(String::new()),
        }]);
    }
    Some(
        grants
            .iter()
            .filter(|g| {
                g.applies_to(principal) && g.capabilities.allows(capability) && !g.is_expired(now)
            })
            .map(|g| Reach {
                environments: g
                    .environments
                    .iter()
                    .filter(|e| principal.may_enter(e))
                    .cloned()
                    .collect(),
                selector: g.selector.clone(),
            })
            .filter(|r| !r.environments.is_empty())
            .collect(),
    )
}

/// Decides whether `principal` may do `request`, given the tenant's `grants`
/// (any subset that includes every grant applying to the principal). Pure and
/// allocation-free; default deny.
pub fn evaluate(
    principal: &Principal,
    grants: &[Grant],
    request: &AccessRequest<'_>,
    now: Timestamp,
) -> Decision {
    let cap = request.capability;
    if !principal.may_enter(request.environment) {
        return Decision::deny(Reason::EnvironmentNotPermitted);
    }
    if principal.role == Role::Viewer && cap.touches_value() {
        return Decision::deny(Reason::RoleForbidsValues);
    }
    if let Some(owner) = request.owner {
        let acting_for_owner = request.on_behalf_of == Some(owner);
        if cap.touches_value() && principal.role != Role::Admin && !acting_for_owner {
            return Decision::deny(Reason::OwnerMismatch);
        }
    }
    if role_defaults(principal.role).allows(cap) {
        return Decision::allow(Reason::AllowedByRole, None);
    }
    let mut saw_expired = false;
    for grant in grants {
        if !grant.applies_to(principal)
            || !grant.capabilities.allows(cap)
            || !grant.covers(request.environment, request.name)
        {
            continue;
        }
        if grant.is_expired(now) {
            saw_expired = true;
            continue;
        }
        return Decision::allow(Reason::AllowedByGrant, Some(grant));
    }
    Decision::deny(if saw_expired {
        Reason::GrantExpired
    } else {
        Reason::NoMatchingGrant
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::principal::PrincipalStatus;

    fn env(s: &str) -> Environment {
        Environment::parse(s, "environment").unwrap()
    }

    fn name(s: &str) -> CredentialName {
        CredentialName::parse(s, "name").unwrap()
    }

    fn principal(role: Role, envs: &[&str]) -> Principal {
        Principal {
            id: PrincipalId::generate(),
            tenant: TenantId::generate(),
            name: crate::names::PrincipalName::parse("p", "name").unwrap(),
            role,
            environments: envs.iter().map(|e| env(e)).collect(),
            description: String::new(),
            status: PrincipalStatus::Active,
            created_at: Timestamp::now(),
        }
    }

    fn grant(p: &Principal, selector: &str, envs: &[&str], caps: &[Capability]) -> Grant {
        Grant {
            id: GrantId::generate(),
            tenant: p.tenant,
            subject: GrantSubject::Principal(p.id),
            selector: Selector::parse(selector, "selector").unwrap(),
            environments: envs.iter().map(|e| env(e)).collect(),
            capabilities: Capabilities::of(caps),
            destinations: vec![],
            expires_at: None,
            reason: String::new(),
            granted_by: PrincipalId::generate(),
            access_request: None,
            created_at: Timestamp::now(),
        }
    }

    fn ask(p: &Principal, grants: &[Grant], cap: Capability, e: &str, n: &str) -> Decision {
        let (e, n) = (env(e), name(n));
        evaluate(
            p,
            grants,
            &AccessRequest {
                capability: cap,
                environment: &e,
                name: &n,
                owner: None,
                on_behalf_of: None,
            },
            Timestamp::now(),
        )
    }

    #[test]
    fn agent_is_denied_by_default() {
        let agent = principal(Role::Agent, &[]);
        let d = ask(&agent, &[], Capability::Reveal, "dev", "llm/openai");
        assert_eq!(d.reason, Reason::NoMatchingGrant);
        assert!(!d.allowed);
    }

    #[test]
    fn grant_allows_only_its_selector_environment_and_capability() {
        let agent = principal(Role::Agent, &[]);
        let g = grant(&agent, "llm/*", &["dev"], &[Capability::Inject]);
        let grants = [g.clone()];
        assert!(ask(&agent, &grants, Capability::Inject, "dev", "llm/openai").allowed);
        assert!(
            ask(
                &agent,
                &grants,
                Capability::ReadMetadata,
                "dev",
                "llm/openai"
            )
            .allowed
        );
        assert!(!ask(&agent, &grants, Capability::Reveal, "dev", "llm/openai").allowed);
        assert!(
            !ask(
                &agent,
                &grants,
                Capability::Inject,
                "production",
                "llm/openai"
            )
            .allowed
        );
        assert!(!ask(&agent, &grants, Capability::Inject, "dev", "llmx/openai").allowed);
        assert!(
            !ask(
                &agent,
                &grants,
                Capability::Inject,
                "dev",
                "payments/stripe"
            )
            .allowed
        );
        let other = principal(Role::Agent, &[]);
        assert!(!ask(&other, &grants, Capability::Inject, "dev", "llm/openai").allowed);
        assert_eq!(
            ask(&agent, &grants, Capability::Inject, "dev", "llm/openai").grant,
            Some(g.id)
        );
    }

    /// The decision carries the expiry of the grant that allowed it (what
    /// a reveal's lease may not outlast), and none when the role allowed it.
    #[test]
    fn a_decision_carries_its_grants_expiry() {
        let agent = principal(Role::Agent, &[]);
        let later = Timestamp::now().plus(std::time::Duration::from_secs(60));
        let mut g = grant(&agent, "llm/openai", &["dev"], &[Capability::Reveal]);
        g.expires_at = Some(later);
        let d = ask(
            &agent,
            &[g.clone()],
            Capability::Reveal,
            "dev",
            "llm/openai",
        );
        assert_eq!((d.grant, d.grant_expires_at), (Some(g.id), Some(later)));
        g.expires_at = None;
        let d = ask(
            &agent,
            &[g.clone()],
            Capability::Reveal,
            "dev",
            "llm/openai",
        );
        assert_eq!((d.grant, d.grant_expires_at), (Some(g.id), None));
        let admin = principal(Role::Admin, &[]);
        let d = ask(&admin, &[], Capability::Reveal, "dev", "llm/openai");
        assert_eq!((d.grant, d.grant_expires_at), (None, None));
        let d = ask(&agent, &[], Capability::Reveal, "dev", "llm/openai");
        assert_eq!(d.grant_expires_at, None);
    }

    #[test]
    fn expired_grant_denies_with_reason() {
        let agent = principal(Role::Agent, &[]);
        let mut g = grant(&agent, "llm/openai", &["dev"], &[Capability::Reveal]);
        g.expires_at = Some(Timestamp::now().minus(std::time::Duration::from_secs(1)));
        let d = ask(&agent, &[g], Capability::Reveal, "dev", "llm/openai");
        assert_eq!((d.allowed, d.reason), (false, Reason::GrantExpired));
    }

    #[test]
    fn viewer_never_gets_values_even_with_a_grant() {
        let viewer = principal(Role::Viewer, &[]);
        let g = grant(&viewer, "*", &["dev"], &[Capability::Reveal]);
        let d = ask(&viewer, &[g], Capability::Reveal, "dev", "llm/openai");
        assert_eq!(d.reason, Reason::RoleForbidsValues);
        assert!(ask(&viewer, &[], Capability::ReadMetadata, "dev", "x").allowed);
    }

    #[test]
    fn environment_confinement_beats_role() {
        let admin = principal(Role::Admin, &["dev"]);
        assert!(ask(&admin, &[], Capability::Reveal, "dev", "x").allowed);
        let d = ask(&admin, &[], Capability::Reveal, "production", "x");
        assert_eq!(d.reason, Reason::EnvironmentNotPermitted);
    }

    #[test]
    fn selectors() {
        assert!(
            Selector::parse("llm/*", "s")
                .unwrap()
                .matches(&name("llm/a/b"))
        );
        assert!(!Selector::parse("llm/*", "s").unwrap().matches(&name("llm")));
        assert!(Selector::parse("*", "s").unwrap().matches(&name("x")));
        assert!(Selector::parse("l*m", "s").is_err());
        assert_eq!(Selector::parse("llm/*", "s").unwrap().to_text(), "llm/*");
    }

    #[test]
    fn destinations() {
        use crate::net::RequestTarget;
        let d = Destination {
            host: "*.openai.com".into(),
            methods: vec!["POST".into()],
            path_prefixes: vec!["/v1".into()],
            ..Default::default()
        };
        let allows = |d: &Destination, url: &str, method: &str| {
            d.allows(&RequestTarget::parse(url).unwrap(), method)
        };
        assert!(allows(&d, "https://api.openai.com/v1/chat", "POST"));
        assert!(allows(&d, "https://API.OpenAI.com./v1", "POST"));
        assert!(!allows(&d, "https://openai.com/v1/chat", "POST"));
        assert!(!allows(&d, "https://evilopenai.com/v1/chat", "POST"));
        assert!(!allows(&d, "https://api.openai.com/v1/chat", "GET"));
        assert!(!allows(&d, "https://api.openai.com/v2/chat", "POST"));
        assert!(!allows(&d, "https://api.openai.com/v10/chat", "POST"));
        assert!(!allows(&d, "https://api.openai.com/v1/../v2", "POST"));
        assert!(!allows(&d, "https://api.openai.com/v1/%2e%2e/v2", "POST"));
        assert!(!allows(&d, "https://api.openai.com:8443/v1/chat", "POST"));
        assert!(!allows(&d, "http://api.openai.com/v1/chat", "POST"));
        let with_port = Destination {
            host: "api.example.test:8443".into(),
            methods: vec![],
            path_prefixes: vec![],
            ..Default::default()
        };
        assert!(with_port.validate().is_ok());
        assert!(allows(&with_port, "https://api.example.test:8443/x", "GET"));
        assert!(!allows(&with_port, "https://api.example.test/x", "GET"));
        for bad in [
            "",
            "*.",
            "a b",
            "api.test:",
            "api.test:0",
            "api.test:x",
            "*.*.a",
        ] {
            let d = Destination {
                host: bad.into(),
                methods: vec![],
                path_prefixes: vec![],
                ..Default::default()
            };
            assert!(d.validate().is_err(), "{bad}");
        }
    }

    /// Whether `reach` (as `reach()` returns it) covers (environment, name).
    fn in_reach(reach: &Option<Vec<Reach>>, e: &Environment, n: &CredentialName) -> bool {
        match reach {
            None => true,
            Some(rs) => rs
                .iter()
                .any(|r| r.environments.contains(e) && r.selector.matches(n)),
        }
    }

    proptest::proptest! {
        /// A listing filtered by `reach` holds exactly what `evaluate`
        /// allows, for every role, confinement, grant set and capability.
        #[test]
        fn reach_is_what_evaluate_allows(
            role in 0usize..4,
            confined in proptest::collection::vec(0usize..3, 0..3),
            grants in proptest::collection::vec(
                (0usize..4, proptest::collection::vec(0usize..3, 1..3), 0usize..7, proptest::bool::ANY, proptest::bool::ANY),
                0..5,
            ),
            cap in 0usize..7,
        ) {
            let envs = ["dev", "staging", "production"];
            let selectors = ["*", "llm/*", "llm/openai", "tools/*"];
            let names = ["llm/openai", "llm/anthropic", "tools/git", "db/main"];
            let caps = [
                Capability::List, Capability::ReadMetadata, Capability::Inject,
                Capability::Reveal, Capability::Write, Capability::Rotate, Capability::Admin,
            ];
            let role = [Role::Admin, Role::Operator, Role::Viewer, Role::Agent][role];
            let confined: Vec<&str> = confined.iter().map(|i| envs[*i]).collect();
            let p = principal(role, &confined);
            let now = Timestamp::now();
            let grants: Vec<Grant> = grants
                .iter()
                .map(|(sel, ge, gc, expired, other)| {
                    let ge: Vec<&str> = ge.iter().map(|i| envs[*i]).collect();
                    let mut g = grant(&p, selectors[*sel], &ge, &[caps[*gc]]);
                    if *expired {
                        g.expires_at = Some(Timestamp::from_micros(now.as_micros() - 1));
                    }
                    if *other {
                        g.subject = GrantSubject::Principal(PrincipalId::generate());
                    }
                    g
                })
                .collect();
            let cap = caps[cap];
            let r = reach(&p, &grants, cap, now);
            for e in envs {
                for n in names {
                    let (e, n) = (env(e), name(n));
                    let allowed = evaluate(
                        &p,
                        &grants,
                        &AccessRequest { capability: cap, environment: &e, name: &n, owner: None, on_behalf_of: None },
                        now,
                    )
                    .allowed;
                    proptest::prop_assert_eq!(allowed, in_reach(&r, &e, &n), "{:?} {} {}", cap, e, n);
                }
            }
        }
    }
}
