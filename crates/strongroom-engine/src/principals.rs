//! Principals, the identity bindings that authenticate as them, and the
//! identity namespaces bindings must lie in.

use strongroom_core::audit::{Action, AuditDetail, Outcome};
use strongroom_core::ids::{BindingId, PrincipalId, TenantId};
use strongroom_core::names::{Environment, PrincipalName};
use strongroom_core::page::{Page, PageRequest};
use strongroom_core::policy::Reason;
use strongroom_core::principal::{
    BINDING_OUTSIDE_NAMESPACES, IdentityBinding, IdentityPattern, MAX_NAMESPACES, Principal,
    PrincipalStatus, Role, check_namespaces,
};
use strongroom_core::scope::Authenticated;
use strongroom_core::{Error, Result};

use crate::{CallContext, Engine};

impl Engine {
    /// Creates a principal (admin).
    pub async fn create_principal(
        &self,
        caller: &Authenticated,
        ctx: &CallContext,
        name: PrincipalName,
        role: Role,
        environments: Vec<Environment>,
        description: String,
    ) -> Result<Principal> {
        let scope = caller.tenant_scope()?;
        self.require_admin(&scope, ctx, Action::PrincipalCreate)
            .await?;
        if description.len() > 1024 {
            return Err(Error::invalid(
                "description",
                "must be at most 1024 characters",
            ));
        }
        self.ensure_environments(&scope, &environments, "environments")
            .await?;
        let principal = Principal {
            id: PrincipalId::generate(),
            tenant: scope.tenant_id(),
            name,
            role,
            environments,
            description,
            status: PrincipalStatus::Active,
            created_at: self.now(),
        };
        let mut draft = self.draft(
            &scope,
            ctx,
            Action::PrincipalCreate,
            Outcome::Allowed,
            Reason::AllowedByRole,
        );
        draft.detail = Some(AuditDetail::Principal {
            principal: principal.id,
            role,
        });
        self.commit(scope.tenant_id(), draft, |draft| {
            self.store.create_principal(&scope, &principal, draft)
        })
        .await?;
        Ok(principal)
    }

    /// Reads a principal (admin, or the principal itself).
    pub async fn get_principal(
        &self,
        caller: &Authenticated,
        ctx: &CallContext,
        id: PrincipalId,
    ) -> Result<Principal> {
        let scope = caller.tenant_scope()?;
        if scope.principal().id != id {
            self.require_admin(&scope, ctx, Action::PrincipalGet)
                .await?;
        }
        self.store.get_principal(&scope, id).await
    }

    /// Lists principals (admin).
    pub async fn list_principals(
        &self,
        caller: &Authenticated,
        ctx: &CallContext,
        page: &PageRequest,
    ) -> Result<Page<Principal>> {
        let scope = caller.tenant_scope()?;
        self.require_admin(&scope, ctx, Action::PrincipalList)
            .await?;
        self.store.list_principals(&scope, page).await
    }

    /// Enables or disables a principal (admin). An admin cannot disable
    /// itself. Disabling ends the principal's leases; returns the principal
    /// and how many leases ended.
    pub async fn set_principal_status(
        &self,
        caller: &Authenticated,
        ctx: &CallContext,
        id: PrincipalId,
        status: PrincipalStatus,
        reason: &str,
    ) -> Result<(Principal, u32)> {
        let scope = caller.tenant_scope()?;
        self.require_admin(&scope, ctx, Action::PrincipalStatus)
            .await?;
        if id == scope.principal().id && status == PrincipalStatus::Disabled {
            return Err(Error::precondition("a principal cannot disable itself"));
        }
        let mut draft = self.draft(
            &scope,
            ctx,
            Action::PrincipalStatus,
            Outcome::Allowed,
            Reason::AllowedByRole,
        );
        draft.detail = Some(AuditDetail::PrincipalStatus {
            principal: id,
            status,
            reason: reason.to_owned(),
        });
        let principal = self
            .commit(scope.tenant_id(), draft, |draft| {
                self.store.set_principal_status(&scope, id, status, draft)
            })
            .await?;
        if status == PrincipalStatus::Active {
            // An admin has looked at it: its counts start afresh.
            self.abuse.forgive(scope.tenant_id(), id);
        }
        Ok(principal)
    }

    /// Binds an identity (exact or `prefix*`) to a principal (admin).
    pub async fn create_binding(
        &self,
        caller: &Authenticated,
        ctx: &CallContext,
        principal: PrincipalId,
        pattern: IdentityPattern,
    ) -> Result<IdentityBinding> {
        let scope = caller.tenant_scope()?;
        self.require_admin(&scope, ctx, Action::BindingCreate)
            .await?;
        // One refusal, whatever the reason: a pattern no namespace could
        // be (`spiffe://*`, `s*`) or one outside this tenant's namespaces,
        // owned by another tenant or by none. The store checks coverage in
        // the binding's own transaction.
        let refuse = || Error::denied(BINDING_OUTSIDE_NAMESPACES);
        let attempted = pattern.to_text();
        let result = if pattern.scope_problem().is_some() {
            Err(refuse())
        } else {
            let binding = IdentityBinding {
                id: BindingId::generate(),
                tenant: scope.tenant_id(),
                principal,
                pattern,
                created_at: self.now(),
            };
            let mut draft = self.draft(
                &scope,
                ctx,
                Action::BindingCreate,
                Outcome::Allowed,
                Reason::AllowedByRole,
            );
            draft.detail = Some(AuditDetail::Binding {
                binding: binding.id,
                principal,
            });
            self.commit(scope.tenant_id(), draft, |draft| {
                self.store.create_binding(&scope, &binding, draft)
            })
            .await
            .map(|()| binding)
        };
        match result {
            Ok(binding) => Ok(binding),
            Err(Error::PermissionDenied(_)) => {
                let mut denial = self.draft(
                    &scope,
                    ctx,
                    Action::BindingCreate,
                    Outcome::Denied,
                    Reason::IdentityOutsideNamespaces,
                );
                denial.detail = Some(AuditDetail::IdentityAttempt {
                    identity: attempted,
                    principal,
                });
                self.audit_denial(&scope, denial).await;
                Err(refuse())
            }
            Err(e) => Err(e),
        }
    }

    /// Lists identity bindings (admin).
    pub async fn list_bindings(
        &self,
        caller: &Authenticated,
        ctx: &CallContext,
        principal: Option<PrincipalId>,
        page: &PageRequest,
    ) -> Result<Page<IdentityBinding>> {
        let scope = caller.tenant_scope()?;
        self.require_admin(&scope, ctx, Action::BindingList).await?;
        self.store.list_bindings(&scope, principal, page).await
    }

    /// Deletes an identity binding (admin).
    pub async fn delete_binding(
        &self,
        caller: &Authenticated,
        ctx: &CallContext,
        id: BindingId,
    ) -> Result<()> {
        let scope = caller.tenant_scope()?;
        self.require_admin(&scope, ctx, Action::BindingDelete)
            .await?;
        let mut draft = self.draft(
            &scope,
            ctx,
            Action::BindingDelete,
            Outcome::Allowed,
            Reason::AllowedByRole,
        );
        draft.detail = Some(AuditDetail::BindingDeleted { binding: id });
        self.commit(scope.tenant_id(), draft, |draft| {
            self.store.delete_binding(&scope, id, draft)
        })
        .await
    }

    /// Replaces a tenant's identity namespaces (platform operators only).
    pub async fn set_identity_namespaces(
        &self,
        caller: &Authenticated,
        ctx: &CallContext,
        id: TenantId,
        namespaces: Vec<IdentityPattern>,
    ) -> Result<()> {
        let scope = caller.platform_scope()?;
        self.check_assignment(&namespaces)?;
        let mut draft = self.platform_draft(&scope, ctx, Action::TenantNamespaces);
        draft.detail = Some(AuditDetail::Namespaces {
            identity_namespaces: namespaces.iter().map(IdentityPattern::to_text).collect(),
        });
        self.commit(id, draft, |draft| {
            self.store
                .set_identity_namespaces(&scope, id, &namespaces, draft)
        })
        .await
    }

    /// The identity namespaces of the tenants whose ids lie in
    /// `from..=to` (platform operators only).
    pub async fn identity_namespaces(
        &self,
        caller: &Authenticated,
        from: TenantId,
        to: TenantId,
    ) -> Result<Vec<(TenantId, IdentityPattern)>> {
        let scope = caller.platform_scope()?;
        self.store.identity_namespaces(&scope, from, to).await
    }

    /// Checks namespaces an operator assigns: well formed and disjoint
    /// ([`check_namespaces`]), deep enough, and covering no platform
    /// operator.
    pub(crate) fn check_assignment(&self, namespaces: &[IdentityPattern]) -> Result<()> {
        check_namespaces(namespaces, MAX_NAMESPACES, "identity_namespaces")?;
        strongroom_core::principal::check_assignable(
            namespaces,
            self.min_namespace_depth,
            self.authenticator.operators(),
            "identity_namespaces",
        )
    }
}
