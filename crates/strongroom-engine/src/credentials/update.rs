//! UpdateCredential: a credential's metadata (service, description, tags,
//! scopes, owner, expiry, rotation policy, injection template), changed
//! without a new version.
//!
//! Only the fields the update names are written (the store sets those
//! columns alone, so a concurrent rotation is never undone). The
//! `credential.update` event names the fields, never their values. The
//! event's change drops the credential's cached state here at once and, by
//! the change notice, on every other server (at the latest after the cache
//! time to live if a notice is lost). A change that narrows the
//! credential's use (an earlier expiry, another owner, service or injection
//! template) ends its leases in the same commit; an expiry moved into the
//! past also fails every later reveal at once on every server, because the
//! reveal check at commit reads the stored expiry.

use strongroom_core::audit::{Action, AuditDetail, Outcome};
use strongroom_core::credential::{Credential, CredentialUpdate};
use strongroom_core::policy::{Capability, Reason};
use strongroom_core::scope::Authenticated;
use strongroom_core::{Error, Result};

use super::CredentialRef;
use crate::{CallContext, Engine};

/// The longest description an update sets.
const MAX_DESCRIPTION: usize = 1024;
/// The longest owner an update sets.
const MAX_OWNER: usize = 256;

/// Checks what the wire conversion cannot: bounds on the free text, the
/// rotation policy's bounds. Fields are named as in the request.
fn validate(update: &CredentialUpdate) -> Result<()> {
    if update.fields().is_empty() {
        return Err(Error::invalid("update_mask", "names no field to update"));
    }
    if update
        .description
        .as_ref()
        .is_some_and(|d| d.chars().count() > MAX_DESCRIPTION)
    {
        return Err(Error::invalid(
            "update.description",
            format!("must be at most {MAX_DESCRIPTION} characters"),
        ));
    }
    if let Some(Some(owner)) = &update.owner
        && (owner.chars().count() > MAX_OWNER || owner.chars().any(char::is_control))
    {
        return Err(Error::invalid(
            "update.owner",
            format!("must be at most {MAX_OWNER} characters, without control characters"),
        ));
    }
    if let Some(Some(r)) = &update.rotation {
        if !(1..=3650).contains(&r.period_days) {
            return Err(Error::invalid(
                "update.rotation_policy.period",
                "must be 1-3650 days",
            ));
        }
        if r.reminder_days >= r.period_days {
            return Err(Error::invalid(
                "update.rotation_policy.reminder",
                "must be shorter than the period",
            ));
        }
    }
    Ok(())
}

impl Engine {
    /// Changes a credential's metadata (requires write on it): see the
    /// module documentation. Returns the credential as stored afterwards and
    /// how many of its leases the update ended. Nothing is written when any
    /// field is refused.
    pub async fn update_credential(
        &self,
        caller: &Authenticated,
        ctx: &CallContext,
        reference: &CredentialRef,
        update: CredentialUpdate,
    ) -> Result<(Credential, u32)> {
        let scope = caller.tenant_scope()?;
        validate(&update)?;
        let credential = self
            .lookup_authorized(
                &scope,
                ctx,
                reference,
                Action::CredentialUpdate,
                Capability::Write,
            )
            .await?;
        let narrowed = update.narrows(&credential);
        let mut draft = self.credential_draft(
            &scope,
            ctx,
            Action::CredentialUpdate,
            Outcome::Allowed,
            Reason::Allowed,
            &credential,
        );
        draft.detail = Some(AuditDetail::CredentialUpdated {
            fields: update.fields(),
            narrowed,
        });
        self.commit(scope.tenant_id(), draft, |draft| {
            self.store
                .update_credential(&scope, credential.id, &update, narrowed, draft)
        })
        .await
    }
}
