//! Grants, and the questions they answer: may this principal do this, and
//! what may it use.

use strongroom_core::audit::{Action, AuditDetail, Outcome};
use strongroom_core::credential::{Credential, CredentialFilter};
use strongroom_core::ids::{GrantId, PrincipalId};
use strongroom_core::names::{CredentialName, Environment};
use strongroom_core::page::{Page, PageRequest};
use strongroom_core::policy::{
    AccessRequest, Capabilities, Capability, Decision, Destination, Grant, GrantSubject, Reason,
    Selector, evaluate,
};
use strongroom_core::principal::{Principal, Role};
use strongroom_core::scope::{Authenticated, TenantScope};
use strongroom_core::store::GrantFilter;
use strongroom_core::time::Timestamp;
use strongroom_core::{Error, Result};

use crate::{CallContext, Engine};

/// A grant to create.
#[derive(Debug, Clone)]
pub struct NewGrant {
    /// Who for.
    pub subject: GrantSubject,
    /// Which names.
    pub selector: Selector,
    /// Which environments.
    pub environments: Vec<Environment>,
    /// What it allows.
    pub capabilities: Capabilities,
    /// Where injection may go.
    pub destinations: Vec<Destination>,
    /// Until when.
    pub expires_at: Option<Timestamp>,
    /// Why.
    pub reason: String,
}

impl Engine {
    /// Creates a grant (admin).
    pub async fn create_grant(
        &self,
        caller: &Authenticated,
        ctx: &CallContext,
        new: NewGrant,
    ) -> Result<Grant> {
        let scope = caller.tenant_scope()?;
        self.require_admin(&scope, ctx, Action::GrantCreate).await?;
        if new.environments.is_empty() {
            return Err(Error::invalid(
                "environments",
                "at least one environment is required",
            ));
        }
        if new.capabilities.is_empty() {
            return Err(Error::invalid(
                "capabilities",
                "at least one capability is required",
            ));
        }
        for d in &new.destinations {
            d.validate()?;
        }
        if new.destinations.len() > 32 {
            return Err(Error::invalid("destinations", "at most 32"));
        }
        let values = new.capabilities.iter().any(|c| c.touches_value());
        if new.capabilities.iter().any(|c| c == Capability::Inject) && new.destinations.is_empty() {
            return Err(Error::invalid(
                "destinations",
                "at least one destination is required when granting inject",
            ));
        }
        if new.expires_at.is_some_and(|t| t <= self.now()) {
            return Err(Error::invalid("expires_at", "must be in the future"));
        }
        self.ensure_environments(&scope, &new.environments, "environments")
            .await?;
        let subject_role = match new.subject {
            GrantSubject::Role(role) => role,
            GrantSubject::Principal(id) => match self.store.get_principal(&scope, id).await {
                Err(Error::NotFound(_)) => {
                    return Err(Error::invalid(
                        "subject.principal_id",
                        "no such principal in this tenant",
                    ));
                }
                other => other?.role,
            },
        };
        if values && subject_role == Role::Viewer {
            return Err(Error::invalid(
                "capabilities",
                "inject and reveal cannot be granted to viewers: they never receive values",
            ));
        }
        let grant = Grant {
            id: GrantId::generate(),
            tenant: scope.tenant_id(),
            subject: new.subject,
            selector: new.selector,
            environments: new.environments,
            capabilities: new.capabilities,
            destinations: new.destinations,
            expires_at: new.expires_at,
            reason: new.reason,
            granted_by: scope.principal().id,
            created_at: self.now(),
            access_request: None,
        };
        let mut draft = self.draft(
            &scope,
            ctx,
            Action::GrantCreate,
            Outcome::Allowed,
            Reason::AllowedByRole,
        );
        draft.credential_name = Some(grant.selector.to_text());
        draft.detail = Some(AuditDetail::Grant {
            grant: grant.id,
            capabilities: grant.capabilities.iter().collect(),
        });
        self.commit(scope.tenant_id(), draft, |draft| {
            self.store.create_grant(&scope, &grant, draft)
        })
        .await?;
        Ok(grant)
    }

    /// Revokes a grant (admin), ending the leases it allowed; returns it
    /// as it was, and how many leases ended.
    pub async fn revoke_grant(
        &self,
        caller: &Authenticated,
        ctx: &CallContext,
        id: GrantId,
        reason: &str,
    ) -> Result<(Grant, u32)> {
        let scope = caller.tenant_scope()?;
        self.require_admin(&scope, ctx, Action::GrantRevoke).await?;
        let grant = self.store.get_grant(&scope, id).await?;
        let mut draft = self.draft(
            &scope,
            ctx,
            Action::GrantRevoke,
            Outcome::Allowed,
            Reason::AllowedByRole,
        );
        draft.credential_name = Some(grant.selector.to_text());
        draft.detail = Some(AuditDetail::GrantRevoked {
            grant: id,
            reason: reason.to_owned(),
        });
        let ended = self
            .commit(scope.tenant_id(), draft, |draft| {
                self.store.delete_grant(&scope, id, draft)
            })
            .await?;
        Ok((grant, ended))
    }

    /// Explains whether `principal` may do `capability` on the named
    /// credential (admins for anyone; any principal for itself).
    #[allow(clippy::too_many_arguments)]
    pub async fn check_access(
        &self,
        caller: &Authenticated,
        ctx: &CallContext,
        principal: Option<PrincipalId>,
        capability: Capability,
        environment: &Environment,
        name: &CredentialName,
        on_behalf_of: Option<&str>,
    ) -> Result<(Principal, Decision)> {
        let scope = caller.tenant_scope()?;
        let subject = self.subject(&scope, ctx, principal).await?;
        let owner = match self.store.find_credential(&scope, environment, name).await {
            Ok(c) => c.owner,
            Err(Error::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        let grants = self.grants_for(&scope, &subject).await?;
        // Whether a credential is owner-scoped (and by whom) is metadata: a
        // caller that may not read the credential's metadata is answered as
        // if it were not.
        let caller_sees_metadata = (scope.principal().role == Role::Admin
            && scope.principal().environments.is_empty())
            || evaluate(
                &subject,
                &grants,
                &AccessRequest {
                    capability: Capability::ReadMetadata,
                    environment,
                    name,
                    owner: None,
                    on_behalf_of: None,
                },
                self.now(),
            )
            .allowed;
        let owner = owner.filter(|_| caller_sees_metadata);
        let decision = evaluate(
            &subject,
            &grants,
            &AccessRequest {
                capability,
                environment,
                name,
                owner: owner.as_deref(),
                on_behalf_of,
            },
            self.now(),
        );
        Ok((subject, decision))
    }

    /// Lists grants (admin, operator, viewer).
    pub async fn list_grants(
        &self,
        caller: &Authenticated,
        ctx: &CallContext,
        filter: &GrantFilter,
        page: &PageRequest,
    ) -> Result<Page<Grant>> {
        let scope = caller.tenant_scope()?;
        let own = filter.principal == Some(scope.principal().id);
        if !own {
            self.require_role(
                &scope,
                ctx,
                Action::PolicyCheck,
                &[Role::Admin, Role::Operator, Role::Viewer],
            )
            .await?;
        }
        // A principal confined to environments sees only the grants that
        // reach into them (chosen by the query, so the page token points at
        // nothing else), and those only as far as they reach into them.
        let principal = scope.principal();
        let confined = GrantFilter {
            in_environments: (!principal.environments.is_empty())
                .then(|| principal.environments.clone()),
            ..filter.clone()
        };
        let mut grants = self.store.list_grants(&scope, &confined, page).await?;
        if !principal.environments.is_empty() {
            for g in &mut grants.items {
                g.environments.retain(|e| principal.may_enter(e));
            }
            grants.retain(|g| !g.environments.is_empty(), |g| g.id.to_string());
        }
        Ok(grants)
    }

    /// Lists the credentials `principal` may use with `capability`, with the
    /// grant that allows each (admins for anyone; any principal for itself).
    pub async fn list_accessible(
        &self,
        caller: &Authenticated,
        ctx: &CallContext,
        principal: Option<PrincipalId>,
        capability: Capability,
        environment: Option<Environment>,
        page: &PageRequest,
    ) -> Result<Page<(Credential, Decision)>> {
        let scope = caller.tenant_scope()?;
        let subject = self.subject(&scope, ctx, principal).await?;
        let listing = self.listing(&scope, &subject, capability).await?;
        // Only what the subject reaches is read, so the page's token points
        // at nothing else (owner-scoped credentials aside, left out below).
        let filter = listing.narrow(CredentialFilter {
            environment,
            // Values of owner-scoped credentials are used only on behalf of
            // their owner, which a listing does not state.
            unowned_only: capability.touches_value() && subject.role != Role::Admin,
            ..CredentialFilter::default()
        });
        let listed = self.store.list_credentials(&scope, &filter, page).await?;
        let mut decided = Page {
            items: listed
                .items
                .into_iter()
                .map(|c| {
                    let d = listing.decide(&c, true);
                    (c, d)
                })
                .collect(),
            next: listed.next,
        };
        decided.retain(|(_, d)| d.allowed, |(c, _)| c.id.to_string());
        Ok(decided)
    }

    /// The principal a policy question is about: the caller itself, or
    /// (for an admin) another principal of its tenant.
    async fn subject(
        &self,
        scope: &TenantScope<'_>,
        ctx: &CallContext,
        principal: Option<PrincipalId>,
    ) -> Result<Principal> {
        match principal {
            None => Ok(scope.principal().clone()),
            Some(id) if id == scope.principal().id => Ok(scope.principal().clone()),
            Some(id) => {
                self.require_admin(scope, ctx, Action::PolicyCheck).await?;
                self.store.get_principal(scope, id).await
            }
        }
    }
}
