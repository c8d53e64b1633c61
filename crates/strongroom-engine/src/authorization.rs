//! Authorization: roles, policy decisions on credentials, and the denials
//! they audit; what a caller may learn of what exists.

use std::ops::Deref;
use std::sync::Arc;

use strongroom_core::audit::{Action, Outcome};
use strongroom_core::credential::{Credential, CredentialFilter};
use strongroom_core::names::{CredentialName, Environment};
use strongroom_core::policy::{AccessRequest, Capability, Decision, Grant, Reason, evaluate};
use strongroom_core::principal::{Principal, Role};
use strongroom_core::scope::TenantScope;
use strongroom_core::time::Timestamp;
use strongroom_core::{Error, Result};

use crate::CredentialRef;
use crate::{CallContext, Engine};

/// Grants as a decision reads them: none when the principal's role has the
/// capability anyway (so nothing is read), else the principal's grants.
pub(crate) struct Grants(Option<Arc<Vec<Grant>>>);

impl Deref for Grants {
    type Target = [Grant];

    fn deref(&self) -> &[Grant] {
        self.0.as_deref().map_or(&[], Vec::as_slice)
    }
}

/// What one principal may find in a listing, decided the same way for every
/// listing: the store's query leaves out what the principal does not reach
/// (so neither a page nor its token holds anything of it), and each
/// credential read is decided again.
pub(crate) struct Listing<'a> {
    principal: &'a Principal,
    grants: Grants,
    capability: Capability,
    now: Timestamp,
}

impl Listing<'_> {
    /// `filter`, narrowed to what the principal reaches.
    pub(crate) fn narrow(&self, filter: CredentialFilter) -> CredentialFilter {
        CredentialFilter {
            reach: strongroom_core::policy::reach(
                self.principal,
                &self.grants,
                self.capability,
                self.now,
            ),
            ..filter
        }
    }

    /// The decision on a listed credential; its owner counts when
    /// `with_owner` (using a value on behalf of no one).
    pub(crate) fn decide(&self, credential: &Credential, with_owner: bool) -> Decision {
        evaluate(
            self.principal,
            &self.grants,
            &AccessRequest {
                capability: self.capability,
                environment: &credential.environment,
                name: &credential.name,
                owner: credential.owner.as_deref().filter(|_| with_owner),
                on_behalf_of: None,
            },
            self.now,
        )
    }

    /// Whether the principal may find `credential` (its owner aside).
    pub(crate) fn shows(&self, credential: &Credential) -> bool {
        self.decide(credential, false).allowed
    }
}

impl Engine {
    /// The grants that apply to `principal` (directly and by role), cached:
    /// the one way the engine reads grants.
    pub(crate) async fn grants_for(
        &self,
        scope: &TenantScope<'_>,
        principal: &Principal,
    ) -> Result<Arc<Vec<Grant>>> {
        let tenant = scope.tenant_id();
        if let Some(g) = self.caches.grants(tenant, principal.id) {
            return Ok(g);
        }
        let ticket = self.caches.ticket(tenant);
        let grants = Arc::new(self.store.grants_for(scope, principal).await?);
        self.caches
            .put_grants(tenant, ticket, principal.id, Arc::clone(&grants));
        Ok(grants)
    }

    /// The grants that can decide whether `principal` may `capability`.
    pub(crate) async fn grants_deciding(
        &self,
        scope: &TenantScope<'_>,
        principal: &Principal,
        capability: Capability,
    ) -> Result<Grants> {
        if strongroom_core::policy::role_defaults(principal.role).allows(capability) {
            return Ok(Grants(None));
        }
        Ok(Grants(Some(self.grants_for(scope, principal).await?)))
    }

    /// How `principal` lists credentials with `capability` now.
    pub(crate) async fn listing<'a>(
        &self,
        scope: &TenantScope<'_>,
        principal: &'a Principal,
        capability: Capability,
    ) -> Result<Listing<'a>> {
        Ok(Listing {
            principal,
            grants: self.grants_deciding(scope, principal, capability).await?,
            capability,
            now: self.now(),
        })
    }

    /// Requires the admin role for a tenant-management action; denials are
    /// audited.
    pub(crate) async fn require_admin(
        &self,
        scope: &TenantScope<'_>,
        ctx: &CallContext,
        action: Action,
    ) -> Result<()> {
        // Tenant management (principals, bindings, grants, environments,
        // settings) needs an admin confined to no environment: a confined
        // admin could otherwise grant itself or a new principal access
        // beyond its environments.
        let principal = scope.principal();
        if principal.role == Role::Admin && principal.environments.is_empty() {
            return Ok(());
        }
        self.audit_denial(
            scope,
            self.draft(scope, ctx, action, Outcome::Denied, Reason::RoleNotAdmin),
        )
        .await;
        Err(Error::denied(
            "this needs the admin role, unconfined to environments",
        ))
    }

    /// Requires one of `roles`; denials are audited.
    pub(crate) async fn require_role(
        &self,
        scope: &TenantScope<'_>,
        ctx: &CallContext,
        action: Action,
        roles: &[Role],
    ) -> Result<()> {
        if roles.contains(&scope.principal().role) {
            return Ok(());
        }
        self.audit_denial(
            scope,
            self.draft(
                scope,
                ctx,
                action,
                Outcome::Denied,
                Reason::RoleNotPermitted,
            ),
        )
        .await;
        Err(Error::denied("the principal's role does not permit this"))
    }

    /// Evaluates policy for `capability` on `credential`; a denial is audited
    /// and returned as PERMISSION_DENIED.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn authorize(
        &self,
        scope: &TenantScope<'_>,
        ctx: &CallContext,
        action: Action,
        capability: Capability,
        environment: &Environment,
        name: &CredentialName,
        credential: Option<&Credential>,
        on_behalf_of: Option<&str>,
    ) -> Result<Decision> {
        let principal = scope.principal();
        let grants = self.grants_deciding(scope, principal, capability).await?;
        let decision = evaluate(
            principal,
            &grants,
            &AccessRequest {
                capability,
                environment,
                name,
                owner: credential.and_then(|c| c.owner.as_deref()),
                on_behalf_of,
            },
            self.now(),
        );
        if !decision.allowed {
            let mut d = self.draft(scope, ctx, action, Outcome::Denied, decision.reason);
            d.credential = credential.map(|c| c.id);
            d.credential_name = Some(name.to_string());
            d.environment = Some(environment.to_string());
            d.on_behalf_of = on_behalf_of.map(str::to_owned);
            self.audit_denial(scope, d).await;
        }
        decision.ensure()?;
        Ok(decision)
    }

    /// Whether policy allows the caller `capability` at `environment` /
    /// `name`, owner aside (decided without looking anything up).
    pub(crate) async fn allows(
        &self,
        scope: &TenantScope<'_>,
        capability: Capability,
        environment: &Environment,
        name: &CredentialName,
    ) -> Result<bool> {
        let principal = scope.principal();
        let grants = self.grants_deciding(scope, principal, capability).await?;
        Ok(evaluate(
            principal,
            &grants,
            &AccessRequest {
                capability,
                environment,
                name,
                owner: None,
                on_behalf_of: None,
            },
            self.now(),
        )
        .allowed)
    }

    /// Whether the caller may learn that a credential at `environment` /
    /// `name` exists: it holds read_metadata there. A caller that may not is
    /// answered NOT_FOUND for existing and missing credentials alike.
    pub(crate) async fn may_see(
        &self,
        scope: &TenantScope<'_>,
        environment: &Environment,
        name: &CredentialName,
    ) -> Result<bool> {
        self.allows(scope, Capability::ReadMetadata, environment, name)
            .await
    }

    /// The answer to a refusal on an existing credential: NOT_FOUND, the
    /// same as for a missing one, when the caller may not see it.
    pub(crate) async fn hide_refusal(
        &self,
        scope: &TenantScope<'_>,
        credential: &Credential,
        error: Error,
    ) -> Error {
        if !matches!(error, Error::PermissionDenied(_)) {
            return error;
        }
        match self
            .may_see(scope, &credential.environment, &credential.name)
            .await
        {
            Ok(true) => error,
            _ => credential_not_found(),
        }
    }

    /// Looks up a credential named by a call. A miss is answered like a
    /// refusal the caller may not tell apart from it: NOT_FOUND; and, for a
    /// call by id, audited and counted against the caller's denied-call
    /// limit as a denial is (by path, [`Self::refuse_unseen`] has already
    /// audited and counted every refusal the caller could not tell from a
    /// miss), so that neither the limits nor a lock tell an existing id from
    /// a missing one.
    pub(crate) async fn find_named<T>(
        &self,
        scope: &TenantScope<'_>,
        ctx: &CallContext,
        action: Action,
        reference: &CredentialRef,
        found: Result<T>,
    ) -> Result<T> {
        match found {
            Err(Error::NotFound(_)) => {
                // The id is not recorded: it names nothing of this tenant
                // (it may be another tenant's).
                if let CredentialRef::Id(_) = reference {
                    let d = self.draft(
                        scope,
                        ctx,
                        action,
                        Outcome::Denied,
                        Reason::CredentialNotFound,
                    );
                    self.audit_denial(scope, d).await;
                }
                Err(credential_not_found())
            }
            other => other,
        }
    }

    /// Refuses, before any lookup, a call by path that the caller may not
    /// make there and may not learn anything about: the denial is audited
    /// and answered NOT_FOUND whether or not the credential exists. Calls
    /// by id are decided after the lookup (an id names nothing until then).
    pub(crate) async fn refuse_unseen(
        &self,
        scope: &TenantScope<'_>,
        ctx: &CallContext,
        action: Action,
        capability: Capability,
        reference: &CredentialRef,
    ) -> Result<()> {
        let CredentialRef::Path(environment, name) = reference else {
            return Ok(());
        };
        if self.allows(scope, capability, environment, name).await?
            || self.may_see(scope, environment, name).await?
        {
            return Ok(());
        }
        self.authorize(
            scope,
            ctx,
            action,
            capability,
            environment,
            name,
            None,
            None,
        )
        .await
        .map(drop)
        .map_err(|_| credential_not_found())
    }
}

/// The answer for a credential that does not exist, or that the caller may
/// not know exists: one code and one message for both.
pub(crate) fn credential_not_found() -> Error {
    Error::not_found("credential")
}

/// A lookup's NOT_FOUND, whatever it named, as [`credential_not_found`].
pub(crate) fn hide_missing(error: Error) -> Error {
    match error {
        Error::NotFound(_) => credential_not_found(),
        other => other,
    }
}
