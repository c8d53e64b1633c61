//! Environments of a tenant.

use strongroom_core::audit::{Action, Outcome};
use strongroom_core::names::Environment;
use strongroom_core::policy::Reason;
use strongroom_core::scope::{Authenticated, TenantScope};
use strongroom_core::{Error, Result};

use crate::{CallContext, Engine};

impl Engine {
    /// Adds an environment (admin).
    pub async fn create_environment(
        &self,
        caller: &Authenticated,
        ctx: &CallContext,
        environment: Environment,
    ) -> Result<()> {
        let scope = caller.tenant_scope()?;
        self.require_admin(&scope, ctx, Action::EnvironmentCreate)
            .await?;
        let mut draft = self.draft(
            &scope,
            ctx,
            Action::EnvironmentCreate,
            Outcome::Allowed,
            Reason::AllowedByRole,
        );
        draft.environment = Some(environment.to_string());
        self.commit(scope.tenant_id(), draft, |draft| {
            self.store.create_environment(&scope, &environment, draft)
        })
        .await
    }

    /// Lists environments (any principal of the tenant).
    pub async fn list_environments(&self, caller: &Authenticated) -> Result<Vec<Environment>> {
        let scope = caller.tenant_scope()?;
        let mut envs = self.store.list_environments(&scope).await?;
        let principal = scope.principal();
        envs.retain(|e| principal.may_enter(e));
        Ok(envs)
    }

    /// Removes an empty environment (admin).
    pub async fn delete_environment(
        &self,
        caller: &Authenticated,
        ctx: &CallContext,
        environment: Environment,
    ) -> Result<()> {
        let scope = caller.tenant_scope()?;
        self.require_admin(&scope, ctx, Action::EnvironmentDelete)
            .await?;
        let mut draft = self.draft(
            &scope,
            ctx,
            Action::EnvironmentDelete,
            Outcome::Allowed,
            Reason::AllowedByRole,
        );
        draft.environment = Some(environment.to_string());
        self.commit(scope.tenant_id(), draft, |draft| {
            self.store.delete_environment(&scope, &environment, draft)
        })
        .await
    }

    /// Refuses (naming `field`) environments the tenant does not have.
    pub(crate) async fn ensure_environments(
        &self,
        scope: &TenantScope<'_>,
        wanted: &[Environment],
        field: &'static str,
    ) -> Result<()> {
        if wanted.is_empty() {
            return Ok(());
        }
        let known = self.store.list_environments(scope).await?;
        if let Some(missing) = wanted.iter().find(|e| !known.contains(e)) {
            return Err(Error::invalid(
                field,
                format!("unknown environment '{missing}'"),
            ));
        }
        Ok(())
    }
}
