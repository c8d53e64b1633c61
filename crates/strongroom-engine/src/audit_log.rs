//! The fail-closed audit writer and the drafts of the engine's events.

use strongroom_core::audit::{Action, AuditDraft, AuditEvent, Outcome};
use strongroom_core::credential::Credential;
use strongroom_core::policy::Reason;
use strongroom_core::scope::{PlatformScope, TenantScope};
use strongroom_core::{Error, Result};

use crate::{CallContext, Engine};

impl Engine {
    /// Appends an audit event, failing with UNAVAILABLE if it is not durable
    /// within the configured time.
    pub(crate) async fn audit(
        &self,
        scope: &TenantScope<'_>,
        draft: AuditDraft,
    ) -> Result<AuditEvent> {
        match tokio::time::timeout(
            self.limits.audit_timeout,
            self.store.append_audit(scope, draft),
        )
        .await
        {
            Ok(Ok(event)) => Ok(event),
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
        ctx.stamp(scope.audit(action, outcome, reason.as_str()))
    }

    /// The draft of this call's platform operation, allowed for the
    /// operator.
    pub(crate) fn platform_draft(
        &self,
        scope: &PlatformScope<'_>,
        ctx: &CallContext,
        action: Action,
    ) -> AuditDraft {
        ctx.stamp(scope.audit(action, Outcome::Allowed, Reason::PlatformOperator.as_str()))
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
        d.credential_name = Some(credential.name.to_string());
        d.environment = Some(credential.environment.to_string());
        d
    }
}
