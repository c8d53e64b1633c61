//! The fail-closed audit writer and the drafts of the engine's events.
//!
//! Promises: an audit write that is not durable within
//! `limits.audit_timeout` fails with UNAVAILABLE, so the operation it
//! records returns nothing (a reveal returns no value); a denial whose
//! record fails is logged and stands. The mapping of store failures and
//! timeouts is made in one place, [`Engine::durable`].

use std::future::Future;

use strongroom_core::audit::{Action, AuditDraft, AuditEvent, Outcome};
use strongroom_core::credential::Credential;
use strongroom_core::policy::Reason;
use strongroom_core::scope::{PlatformScope, TenantScope};
use strongroom_core::{Error, Precondition, Result};

use crate::{CallContext, Engine};

impl Engine {
    /// Waits for an audit write to be durable within the configured time.
    /// A store failure or a timeout is logged and answered UNAVAILABLE; a
    /// reveal check that failed (nothing was stored: the state the reveal
    /// was decided on changed) is returned as it is, for the reveal to
    /// decide again.
    pub(crate) async fn durable<T>(&self, write: impl Future<Output = Result<T>>) -> Result<T> {
        match tokio::time::timeout(self.limits.audit_timeout, write).await {
            Ok(Ok(written)) => Ok(written),
            Ok(Err(e @ Error::FailedPrecondition(Precondition::RevealStateChanged(_)))) => Err(e),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "audit write failed");
                Err(Error::Unavailable("the audit log is unavailable".into()))
            }
            Err(_) => {
                tracing::error!("audit write timed out");
                Err(Error::Unavailable("the audit log is unavailable".into()))
            }
        }
    }

    /// Appends an audit event to the scope's tenant chain, failing with
    /// UNAVAILABLE if it is not durable within the configured time.
    pub(crate) async fn audit(
        &self,
        scope: &TenantScope<'_>,
        draft: AuditDraft,
    ) -> Result<AuditEvent> {
        self.durable(self.store.append_audit(scope, draft)).await
    }

    /// Appends an event that belongs to no tenant to the platform chain; a
    /// failure to record `what` is logged, and what it records stands.
    pub(crate) async fn record_platform(&self, draft: AuditDraft, what: &str) {
        if let Err(e) = self.durable(self.store.append_platform_audit(draft)).await {
            tracing::error!(error = %e, "could not record {what}");
        }
    }

    /// Records a denial; a failure to record it is logged, and the denial
    /// stands.
    pub(crate) async fn audit_denial(&self, scope: &TenantScope<'_>, draft: AuditDraft) {
        if let Err(e) = self.audit(scope, draft.clone()).await {
            tracing::error!(error = %e, "could not record a denial");
        }
        self.denial_noted(scope, &draft).await;
    }

    /// The draft of this call's event, attributed to the scope's principal.
    pub(crate) fn draft(
        &self,
        scope: &TenantScope<'_>,
        ctx: &CallContext,
        action: Action,
        outcome: Outcome,
        reason: Reason,
    ) -> AuditDraft {
        ctx.stamp(scope.audit_at(action, outcome, reason.as_str(), self.now()))
    }

    /// The draft of this call's platform operation, allowed for the
    /// operator.
    pub(crate) fn platform_draft(
        &self,
        scope: &PlatformScope<'_>,
        ctx: &CallContext,
        action: Action,
    ) -> AuditDraft {
        ctx.stamp(scope.audit_at(
            action,
            Outcome::Allowed,
            Reason::PlatformOperator.as_str(),
            self.now(),
        ))
    }

    /// The draft of this call's event about `credential`.
    pub(crate) fn credential_draft(
        &self,
        scope: &TenantScope<'_>,
        ctx: &CallContext,
        action: Action,
        outcome: Outcome,
        reason: Reason,
        credential: &Credential,
    ) -> AuditDraft {
        let mut d = self.draft(scope, ctx, action, outcome, reason);
        d.credential = Some(credential.id);
        d.credential_name = Some(credential.name.as_str().to_owned());
        d.environment = Some(credential.environment.as_str().to_owned());
        d
    }
}
