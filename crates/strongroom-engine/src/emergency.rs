//! Emergency revoke (compromise recovery): a principal, or a credential,
//! cut off from everything at once, in one audited step.
//!
//! A credential's revoke (`credential.emergency_revoke`) either revokes it
//! as a whole or, when asked to rotate, makes a newly generated value its
//! current version and destroys the value of the version that was current
//! (it can no longer be revealed or rolled back to); either way every lease
//! of the credential ends in the same transaction, and the event records
//! the versions, the leases ended and the grants that allowed them (kept:
//! a grant's selector may reach other credentials). The generated value is
//! never returned: a caller that needs it reveals it afterwards, with the
//! reveal capability, audited and leased like any reveal. Every later
//! reveal, resolve or relay use of the revoked version fails on every
//! server at once (the reveal check at commit reads the stored status and
//! current version); the change notice drops the credential's cached state
//! on every server. A relay use already sent upstream before the revoke
//! committed runs to its end: the relay keeps no cross-server registry of
//! requests in flight to cut.
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
use strongroom_core::credential::StoredVersion;
use strongroom_core::ids::PrincipalId;
use strongroom_core::policy::{Capability, Reason};
use strongroom_core::principal::Role;
use strongroom_core::scope::Authenticated;
use strongroom_core::store::{Change, CredentialRevoked, EmergencyRotation, PrincipalRevoked};
use strongroom_core::value::{CredentialValue, GenerationPolicy};
use strongroom_core::{Error, Precondition, Result};

use crate::credentials::CredentialRef;
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

impl Engine {
    /// Emergency revoke of a credential (tenant admins; one confined to
    /// environments within them): see the module documentation. With `generate` (a
    /// generation policy and the field it fills; empty: the type's secret
    /// field) the credential is rotated to a generated value instead of
    /// revoked. A repeat on a revoked credential with no lease left writes
    /// nothing and returns zero counts.
    pub async fn emergency_revoke_credential(
        &self,
        caller: &Authenticated,
        ctx: &CallContext,
        reference: &CredentialRef,
        reason: &str,
        generate: Option<(GenerationPolicy, String)>,
    ) -> Result<CredentialRevoked> {
        let scope = caller.tenant_scope()?;
        // Admins only; one confined to environments acts within them (the
        // lookup below refuses a credential outside as unseen).
        self.require_role(
            &scope,
            ctx,
            Action::CredentialEmergencyRevoke,
            &[Role::Admin],
        )
        .await?;
        check_reason(reason)?;
        let mut credential = self
            .lookup_authorized(
                &scope,
                ctx,
                reference,
                Action::CredentialEmergencyRevoke,
                Capability::Admin,
            )
            .await?;
        let field = match &generate {
            Some((_, field)) if field.is_empty() => Some(
                CredentialValue::generated_field(credential.kind)
                    .ok_or_else(|| {
                        Error::invalid("generate.field", "is required for this credential type")
                    })?
                    .to_owned(),
            ),
            Some((_, field)) => Some(field.clone()),
            None => None,
        };
        // Optimistic concurrency on the latest version, as for rotations:
        // the version number is bound into the ciphertext.
        for _ in 0..8 {
            let rotation = match (&generate, &field) {
                (Some((policy, _)), Some(field)) => {
                    credential.ensure_usable(self.now())?;
                    let current = self
                        .store
                        .get_version(&scope, credential.id, credential.current_version)
                        .await?;
                    let old = self.open(&scope, &credential, &current).await?;
                    let value = old.with_field(field, policy.generate()?)?;
                    let plaintext = Self::plaintext_within_limit(&scope, &value)?;
                    let kek_version = scope.tenant().current_kek_version;
                    let kek = self.kek(&scope, kek_version).await?;
                    let next = credential.latest_version + 1;
                    Some(EmergencyRotation {
                        version: StoredVersion {
                            credential: credential.id,
                            version: next,
                            envelope: Some(Self::seal(
                                &kek,
                                kek_version,
                                &credential,
                                next,
                                &plaintext,
                            )?),
                            kek_version,
                            created_at: self.now(),
                            created_by: scope.principal().id,
                        },
                        expected_latest: credential.latest_version,
                        retention: scope.tenant().settings.version_retention,
                    })
                }
                _ => None,
            };
            let draft = self.credential_draft(
                &scope,
                ctx,
                Action::CredentialEmergencyRevoke,
                Outcome::Allowed,
                Reason::AllowedByRole,
                &credential,
            );
            match self
                .commit(scope.tenant_id(), draft, |draft| {
                    self.store.emergency_revoke_credential(
                        &scope,
                        credential.id,
                        reason,
                        rotation,
                        draft,
                    )
                })
                .await
            {
                Err(Error::FailedPrecondition(Precondition::VersionRace)) => {
                    self.changed(Change::Credential(scope.tenant_id(), credential.id));
                    credential = self.store.get_credential(&scope, credential.id).await?;
                }
                other => return other,
            }
        }
        Err(Error::Unavailable(
            "too many concurrent rotations; retry".into(),
        ))
    }
}
