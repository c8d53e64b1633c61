//! Emergency revoke (compromise recovery): a principal, or a credential,
//! cut off from everything at once, in one audited step.
//!
//! A principal's revoke disables it, deletes every grant whose subject it
//! is, ends its leases and deletes its identity bindings in one
//! transaction, with one `principal.emergency_revoke` event counting what
//! it cut (and a `lease.revoke` event per lease ended). The event's change
//! notice drops every cache on this server (through [`Engine::commit`]) and
//! on every other server sharing the database. Value-bearing calls do not
//! wait for the notice: a reveal's or resolve's audit record commits only
//! if, under the chain-head lock the revoke also takes, the principal is
//! still active, its grant and identity binding still exist (the reveal
//! check); so once the revoke has returned, no server hands out a value
//! to that principal, whatever its caches hold. Calls that bear no value
//! are refused as soon as the server's cached caller is dropped (at once
//! here, on other servers when the notice arrives, at the latest after the
//! caller cache's TTL).

use strongroom_core::audit::{Action, Outcome};
use strongroom_core::ids::PrincipalId;
use strongroom_core::policy::Reason;
use strongroom_core::scope::Authenticated;
use strongroom_core::store::PrincipalRevoked;
use strongroom_core::{Error, Result};

use crate::{CallContext, Engine};

/// The longest reason a revoke records.
const MAX_REASON: usize = 1024;

/// Checks the reason an emergency revoke records: required, bounded.
fn check_reason(reason: &str) -> Result<()> {
    if reason.trim().is_empty() {
        return Err(Error::invalid("reason", "is required"));
    }
    if reason.chars().count() > MAX_REASON {
        return Err(Error::invalid(
            "reason",
            format!("must be at most {MAX_REASON} characters"),
        ));
    }
    Ok(())
}

impl Engine {
    /// Emergency revoke of a principal (tenant admins): see the module
    /// documentation. An admin cannot revoke itself. Revoking a principal
    /// that is disabled already and holds nothing more is a no-op: nothing
    /// is written and every count is zero.
    pub async fn emergency_revoke_principal(
        &self,
        caller: &Authenticated,
        ctx: &CallContext,
        id: PrincipalId,
        reason: &str,
    ) -> Result<PrincipalRevoked> {
        let scope = caller.tenant_scope()?;
        self.require_admin(&scope, ctx, Action::PrincipalEmergencyRevoke)
            .await?;
        check_reason(reason)?;
        if id == scope.principal().id {
            return Err(Error::precondition("a principal cannot revoke itself"));
        }
        let draft = self.draft(
            &scope,
            ctx,
            Action::PrincipalEmergencyRevoke,
            Outcome::Allowed,
            Reason::AllowedByRole,
        );
        self.commit(scope.tenant_id(), draft, |draft| {
            self.store
                .emergency_revoke_principal(&scope, id, reason, draft)
        })
        .await
    }
}
