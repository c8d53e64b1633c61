//! Authentication and the scopes that gate every store call.
//!
//! A [`TenantScope`] is the only key to tenant data: every tenant-scoped store
//! method takes one, and it can only be borrowed from an [`Authenticated`]
//! caller, which only the [`Authenticator`] produces from a verified peer
//! identity. Platform operations (creating tenants) likewise need a
//! [`PlatformScope`], only given to identities the server's configuration
//! names as platform operators. The server's own background work (scheduled
//! checkpoints, flushing coalesced failed authentications, applying change
//! notices) acts with a [`SystemScope`] of its own, which no caller can
//! obtain: nothing turns an [`Authenticated`] into one.

use crate::audit::{Action, AuditDraft, Outcome};
use crate::error::{Error, Precondition, Result};
use crate::ids::{BindingId, TenantId};
use crate::principal::{IdentityPattern, Principal, PrincipalStatus};
use crate::store::Store;
use crate::tenant::{Tenant, TenantStatus};
use crate::time::Timestamp;

/// A principal of a tenant, as authenticated.
#[derive(Debug, Clone)]
struct Membership {
    tenant: Tenant,
    principal: Principal,
    binding: BindingId,
}

/// A caller whose identity was verified and resolved.
#[derive(Debug, Clone)]
pub struct Authenticated {
    identity: String,
    platform_operator: bool,
    membership: Option<Membership>,
}

impl Authenticated {
    /// The verified identity (SPIFFE ID or certificate CN).
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Whether the server's configuration names this identity a platform
    /// operator.
    pub fn is_platform_operator(&self) -> bool {
        self.platform_operator
    }

    /// The principal the identity is bound to, if any.
    pub fn principal(&self) -> Option<&Principal> {
        self.membership.as_ref().map(|m| &m.principal)
    }

    /// The principal's tenant, if any.
    pub fn tenant(&self) -> Option<&Tenant> {
        self.membership.as_ref().map(|m| &m.tenant)
    }

    /// The identity binding that resolved the identity to its principal,
    /// if any (a reveal's commit checks that it still exists).
    pub fn binding(&self) -> Option<BindingId> {
        self.membership.as_ref().map(|m| m.binding)
    }

    /// The scope for tenant data. Fails with `PermissionDenied` if the
    /// identity is not bound to a principal, or its tenant is suspended;
    /// with `FailedPrecondition` ([`Precondition::TenantShredded`]) if its
    /// tenant was shredded.
    pub fn tenant_scope(&self) -> Result<TenantScope<'_>> {
        let m = self.membership.as_ref().ok_or_else(|| {
            Error::denied("this identity is not bound to a principal of any tenant")
        })?;
        match m.tenant.status {
            TenantStatus::Active => {}
            TenantStatus::Shredded => {
                return Err(Error::FailedPrecondition(Precondition::TenantShredded));
            }
            TenantStatus::Suspended => return Err(Error::denied("the tenant is not active")),
        }
        Ok(TenantScope {
            tenant: &m.tenant,
            principal: &m.principal,
            binding: m.binding,
        })
    }

    /// The scope for platform operations. Fails with `PermissionDenied`
    /// unless the identity is a configured platform operator.
    pub fn platform_scope(&self) -> Result<PlatformScope<'_>> {
        if !self.platform_operator {
            return Err(Error::denied("only platform operators may do this"));
        }
        Ok(PlatformScope {
            identity: &self.identity,
        })
    }
}

/// Access to one tenant's data on behalf of one of its principals.
#[derive(Debug, Clone, Copy)]
pub struct TenantScope<'a> {
    tenant: &'a Tenant,
    principal: &'a Principal,
    binding: BindingId,
}

impl<'a> TenantScope<'a> {
    /// The tenant every query of this scope is confined to.
    pub fn tenant_id(&self) -> TenantId {
        self.tenant.id
    }

    /// The tenant, as of authentication.
    pub fn tenant(&self) -> &'a Tenant {
        self.tenant
    }

    /// The acting principal.
    pub fn principal(&self) -> &'a Principal {
        self.principal
    }

    /// The identity binding that authenticated the acting principal.
    pub fn binding(&self) -> BindingId {
        self.binding
    }

    /// An audit draft attributed to the acting principal, now.
    pub fn audit(&self, action: Action, outcome: Outcome, reason_code: &str) -> AuditDraft {
        self.audit_at(action, outcome, reason_code, Timestamp::now())
    }

    /// An audit draft attributed to the acting principal, at `at`.
    pub fn audit_at(
        &self,
        action: Action,
        outcome: Outcome,
        reason_code: &str,
        at: Timestamp,
    ) -> AuditDraft {
        let mut draft = AuditDraft::new_at(action, outcome, reason_code, at);
        draft.principal = Some(self.principal.id);
        draft.actor = self.principal.name.as_str().to_owned();
        draft
    }
}

/// Access to platform operations (tenant lifecycle) by a platform operator.
#[derive(Debug, Clone, Copy)]
pub struct PlatformScope<'a> {
    identity: &'a str,
}

impl PlatformScope<'_> {
    /// The operator's identity.
    pub fn identity(&self) -> &str {
        self.identity
    }

    /// An audit draft attributed to the operator, now.
    pub fn audit(&self, action: Action, outcome: Outcome, reason_code: &str) -> AuditDraft {
        self.audit_at(action, outcome, reason_code, Timestamp::now())
    }

    /// An audit draft attributed to the operator, at `at`.
    pub fn audit_at(
        &self,
        action: Action,
        outcome: Outcome,
        reason_code: &str,
        at: Timestamp,
    ) -> AuditDraft {
        let mut draft = AuditDraft::new_at(action, outcome, reason_code, at);
        draft.actor = format!("platform:{}", self.identity);
        draft
    }
}

/// The server acting on its own account, in one of its background tasks.
///
/// There is no way from a caller to a system scope: an [`Authenticated`]
/// caller yields tenant and platform scopes only, and the server's request
/// path holds nothing else. The server makes one for each background task
/// it starts ([`SystemScope::for_task`]), and the engine's operations for
/// background work (signing every chain's head, flushing failed
/// authentications) take one, so no request can reach them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SystemScope {
    task: SystemTask,
}

/// The server's background tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SystemTask {
    /// Signs the heads of the chains that moved, on a schedule.
    Checkpoints,
    /// Records coalesced failed authentications once their window passed.
    FailedAuthentications,
    /// Applies change notices from other servers to the caches.
    ChangeListener,
    /// Records the refusals of ended rate-limit windows and trims the abuse
    /// controls' state.
    AbuseSweeper,
    /// Expires leases that ran out.
    LeaseSweeper,
    /// Marks expired credentials and sends rotation reminders.
    RotationMonitor,
    /// Sends the notifier's due webhook deliveries.
    NotifierSender,
    /// Reports this replica's root keys and re-wraps data keys under new
    /// tenant KEK versions.
    KeyRotation,
}

impl SystemTask {
    /// Stable text form (for logs).
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Checkpoints => "checkpoints",
            Self::FailedAuthentications => "failed_authentications",
            Self::ChangeListener => "change_listener",
            Self::AbuseSweeper => "abuse_sweeper",
            Self::LeaseSweeper => "lease_sweeper",
            Self::RotationMonitor => "rotation_monitor",
            Self::NotifierSender => "notifier_sender",
            Self::KeyRotation => "key_rotation",
        }
    }
}

impl SystemScope {
    /// The scope of the background task `task`, for the server's start-up
    /// to hand to the task it spawns; never made on a request's path.
    pub const fn for_task(task: SystemTask) -> Self {
        Self { task }
    }

    /// The task acting.
    pub const fn task(&self) -> SystemTask {
        self.task
    }

    /// The actor the server's own audit events name.
    pub const ACTOR: &'static str = "strongroomd";

    /// An audit draft attributed to the server itself, at `at`.
    pub fn audit_at(
        &self,
        action: Action,
        outcome: Outcome,
        reason_code: &str,
        at: Timestamp,
    ) -> AuditDraft {
        let mut draft = AuditDraft::new_at(action, outcome, reason_code, at);
        draft.actor = Self::ACTOR.to_owned();
        draft
    }
}

/// A candidate principal for an identity, as found by the store.
#[derive(Debug, Clone)]
pub struct IdentityMatch {
    /// The principal's tenant.
    pub tenant: Tenant,
    /// The principal.
    pub principal: Principal,
    /// The binding's pattern.
    pub pattern: IdentityPattern,
    /// The binding's id.
    pub binding: BindingId,
}

/// Turns verified peer identities into [`Authenticated`] callers.
#[derive(Debug, Clone, Default)]
pub struct Authenticator {
    operators: Vec<IdentityPattern>,
}

impl Authenticator {
    /// An authenticator that treats identities matching `operators` as
    /// platform operators.
    pub fn new(operators: Vec<IdentityPattern>) -> Self {
        Self { operators }
    }

    /// The identity patterns of platform operators.
    pub fn operators(&self) -> &[IdentityPattern] {
        &self.operators
    }

    /// Resolves `identity` (already verified by the transport) to its
    /// principal. The most specific binding wins (exact over prefix, longer
    /// prefix over shorter). If equally specific bindings of different
    /// principals match, the caller must name its tenant (`tenant_hint`);
    /// otherwise authentication fails rather than guess.
    ///
    /// Fails with `Unauthenticated` for an identity bound nowhere (and not a
    /// platform operator), `PermissionDenied` for a disabled principal.
    pub async fn authenticate(
        &self,
        store: &dyn Store,
        identity: &str,
        tenant_hint: Option<&str>,
    ) -> Result<Authenticated> {
        if identity.is_empty() {
            return Err(Error::Unauthenticated(
                "the client certificate names no identity".into(),
            ));
        }
        let platform_operator = self.operators.iter().any(|p| p.matches(identity));
        let candidates = store.resolve_identity(identity).await?;
        let membership = Self::choose(identity, candidates, tenant_hint)?;
        if membership.is_none() && !platform_operator {
            return Err(Error::Unauthenticated(
                "the client identity is not bound to any principal".into(),
            ));
        }
        if let Some(m) = &membership
            && m.principal.status != PrincipalStatus::Active
        {
            return Err(Error::denied("the principal is disabled"));
        }
        Ok(Authenticated {
            identity: identity.to_owned(),
            platform_operator,
            membership,
        })
    }

    fn choose(
        identity: &str,
        candidates: Vec<IdentityMatch>,
        tenant_hint: Option<&str>,
    ) -> Result<Option<Membership>> {
        // The store pre-filters; re-check here so a backend bug cannot
        // widen a binding.
        let candidates: Vec<IdentityMatch> = candidates
            .into_iter()
            .filter(|c| c.pattern.matches(identity))
            .filter(|c| tenant_hint.is_none_or(|hint| hint == c.tenant.name.as_str()))
            .collect();
        // An identity matched in more than one tenant is never resolved by
        // specificity: one tenant's admin must not capture another tenant's
        // workloads with a narrower binding. The caller names its tenant.
        if let Some(first) = candidates.first()
            && candidates.iter().any(|c| c.tenant.id != first.tenant.id)
        {
            return Err(Error::denied(
                "the client identity matches principals in more than one tenant; name the tenant in the strongroom-tenant header",
            ));
        }
        // Within one tenant the most specific binding wins; equally
        // specific bindings of different principals are ambiguous.
        let mut best: Option<IdentityMatch> = None;
        let mut ambiguous = false;
        for c in candidates {
            match &best {
                None => best = Some(c),
                Some(b) if c.pattern.specificity() > b.pattern.specificity() => {
                    best = Some(c);
                    ambiguous = false;
                }
                Some(b)
                    if c.pattern.specificity() == b.pattern.specificity()
                        && c.principal.id != b.principal.id =>
                {
                    ambiguous = true;
                }
                Some(_) => {}
            }
        }
        if ambiguous {
            return Err(Error::denied(
                "the client identity matches several principals equally; remove one of the bindings",
            ));
        }
        Ok(best.map(|m| Membership {
            tenant: m.tenant,
            principal: m.principal,
            binding: m.binding,
        }))
    }
}

/// Outcome-neutral helper: the draft for a denied attempt by this scope's
/// principal.
pub fn denial(scope: &TenantScope<'_>, action: Action, reason_code: &str) -> AuditDraft {
    scope.audit(action, Outcome::Denied, reason_code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::PrincipalId;
    use crate::names::{PrincipalName, TenantName};
    use crate::principal::Role;
    use crate::tenant::TenantSettings;
    use crate::time::Timestamp;

    fn candidate(tenant: &Tenant, pattern: &str) -> IdentityMatch {
        IdentityMatch {
            tenant: tenant.clone(),
            principal: Principal {
                id: PrincipalId::generate(),
                tenant: tenant.id,
                name: PrincipalName::parse("agent", "name").unwrap_or_else(|e| panic!("{e}")),
                role: Role::Agent,
                environments: Vec::new(),
                description: String::new(),
                status: PrincipalStatus::Active,
                created_at: Timestamp::now(),
            },
            pattern: IdentityPattern::parse(pattern, "identity").unwrap_or_else(|e| panic!("{e}")),
            binding: crate::ids::BindingId::generate(),
        }
    }

    fn tenant(name: &str) -> Tenant {
        Tenant {
            id: TenantId::generate(),
            name: TenantName::parse(name, "name").unwrap_or_else(|e| panic!("{e}")),
            status: TenantStatus::Active,
            settings: TenantSettings::default(),
            current_kek_version: 1,
            created_at: Timestamp::now(),
        }
    }

    /// Identity namespaces keep new bindings of two tenants apart; bindings
    /// from before them could still match one identity in two tenants.
    /// Such an identity is never resolved by specificity: the caller must
    /// name its tenant.
    #[test]
    fn identity_in_two_tenants_needs_a_hint() {
        let (alpha, beta) = (tenant("alpha"), tenant("beta"));
        let id = "spiffe://shared/ns/a/tool";
        let both = || {
            vec![
                candidate(&alpha, "spiffe://shared/ns/*"),
                candidate(&beta, "spiffe://shared/ns/a/tool"),
            ]
        };
        assert!(matches!(
            Authenticator::choose(id, both(), None),
            Err(Error::PermissionDenied(_))
        ));
        let chosen = Authenticator::choose(id, both(), Some("alpha"))
            .unwrap_or_else(|e| panic!("{e}"))
            .map(|m| m.tenant.id);
        assert_eq!(chosen, Some(alpha.id));
        let chosen = Authenticator::choose(id, both(), Some("beta"))
            .unwrap_or_else(|e| panic!("{e}"))
            .map(|m| m.tenant.id);
        assert_eq!(chosen, Some(beta.id));
        assert!(matches!(
            Authenticator::choose(id, both(), Some("gamma")),
            Ok(None)
        ));
    }
}
