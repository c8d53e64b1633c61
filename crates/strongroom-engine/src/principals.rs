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

/// What [`Engine::update_principal`] changes: each field that is set.
#[derive(Debug, Clone, Default)]
pub struct PrincipalUpdate {
    /// A new name.
    pub name: Option<PrincipalName>,
    /// A new role.
    pub role: Option<Role>,
    /// New environments (empty: all).
    pub environments: Option<Vec<Environment>>,
    /// A new description.
    pub description: Option<String>,
}

impl PrincipalUpdate {
    /// The fields it sets, by their names in the contract.
    fn fields(&self) -> Vec<String> {
        [
            ("name", self.name.is_some()),
            ("role", self.role.is_some()),
            ("environments", self.environments.is_some()),
            ("description", self.description.is_some()),
        ]
        .into_iter()
        .filter(|(_, set)| *set)
        .map(|(f, _)| f.to_owned())
        .collect()
    }
}

/// Whether going from `before` to `after` takes away anything the
/// principal could reach: any change of role but to admin (the roles
/// other than admin do different things, none more than another), or an
/// environment it could enter and no longer may.
fn narrows(before: &Principal, after: &Principal) -> bool {
    let role = before.role != after.role && after.role != Role::Admin;
    let environments = !after.environments.is_empty()
        && (before.environments.is_empty()
            || before
                .environments
                .iter()
                .any(|e| !after.environments.contains(e)));
    role || environments
}

impl Engine {
    /// Changes a principal's name, role, environments or description
    /// (admin). An admin cannot change its own role or environments.
    /// Narrowing what the principal may reach (its role, or taking away an
    /// environment) ends its leases in the same commit; returns the
    /// principal and how many leases ended. Its cached state is dropped on
    /// every server (the change is announced).
    pub async fn update_principal(
        &self,
        caller: &Authenticated,
        ctx: &CallContext,
        id: PrincipalId,
        update: PrincipalUpdate,
    ) -> Result<(Principal, u32)> {
        let scope = caller.tenant_scope()?;
        self.require_admin(&scope, ctx, Action::PrincipalUpdate)
            .await?;
        let fields = update.fields();
        if fields.is_empty() {
            return Err(Error::invalid("update_mask", "names no field to update"));
        }
        if update
            .description
            .as_ref()
            .is_some_and(|d| d.chars().count() > 1024)
        {
            return Err(Error::invalid(
                "update.description",
                "must be at most 1024 characters",
            ));
        }
        if id == scope.principal().id && (update.role.is_some() || update.environments.is_some()) {
            return Err(Error::precondition(
                "a principal cannot change its own role or environments",
            ));
        }
        if let Some(environments) = &update.environments {
            self.ensure_environments(&scope, environments, "update.environments")
                .await?;
        }
        let before = self.store.get_principal(&scope, id).await?;
        let mut after = before.clone();
        if let Some(name) = update.name {
            after.name = name;
        }
        if let Some(role) = update.role {
            after.role = role;
        }
        if let Some(environments) = update.environments {
            after.environments = environments;
        }
        if let Some(description) = update.description {
            after.description = description;
        }
        let narrowed = narrows(&before, &after);
        let mut draft = self.draft(
            &scope,
            ctx,
            Action::PrincipalUpdate,
            Outcome::Allowed,
            Reason::AllowedByRole,
        );
        draft.detail = Some(AuditDetail::PrincipalUpdated {
            principal: id,
            fields,
            role: after.role,
            environments: after
                .environments
                .iter()
                .map(|e| e.as_str().to_owned())
                .collect(),
            narrowed,
        });
        self.commit(scope.tenant_id(), draft, |draft| {
            self.store.update_principal(&scope, &after, narrowed, draft)
        })
        .await
    }

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
