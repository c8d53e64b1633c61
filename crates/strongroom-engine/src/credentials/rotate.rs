//! Rotation: a new version, given or generated, made current.

use std::sync::Arc;

use secrecy::SecretString;
use strongroom_core::audit::{Action, AuditDetail, Outcome};
use strongroom_core::credential::{Credential, StoredVersion};
use strongroom_core::policy::{Capability, Reason};
use strongroom_core::scope::Authenticated;
use strongroom_core::store::Change;
use strongroom_core::value::CredentialValue;
use strongroom_core::{Error, Precondition, Result};

use super::{CredentialRef, NewValue};
use crate::cache::CachedCredential;
use crate::{CallContext, Engine};

impl Engine {
    /// Writes a new version (given or generated) and makes it current.
    pub async fn rotate(
        &self,
        caller: &Authenticated,
        ctx: &CallContext,
        reference: &CredentialRef,
        new_value: NewValue,
        reason: &str,
    ) -> Result<Credential> {
        let scope = caller.tenant_scope()?;
        self.refuse_unseen(
            &scope,
            ctx,
            Action::CredentialRotate,
            Capability::Rotate,
            reference,
        )
        .await?;
        // Cached metadata is safe here: the version write is a
        // compare-and-set on the latest version, retried on fresh state.
        let found = self.cached_credential(&scope, reference).await;
        let mut credential = self
            .find_named(&scope, ctx, Action::CredentialRotate, reference, found)
            .await?
            .credential
            .clone();
        if let Err(e) = self
            .authorize(
                &scope,
                ctx,
                Action::CredentialRotate,
                Capability::Rotate,
                &credential.environment,
                &credential.name,
                Some(&credential),
                None,
            )
            .await
        {
            return Err(self.hide_refusal(&scope, &credential, e).await);
        }
        if let Err(e) = credential.ensure_usable(self.now()) {
            let d = self.credential_draft(
                &scope,
                ctx,
                Action::CredentialRotate,
                Outcome::Denied,
                Reason::CredentialNotUsable,
                &credential,
            );
            self.audit_denial(&scope, d).await;
            return Err(e);
        }
        let (value, generated) = match new_value {
            NewValue::Given(v) => {
                if v.credential_type() != credential.kind {
                    return Err(Error::invalid(
                        "value",
                        format!("must be of the credential's type {}", credential.kind),
                    ));
                }
                v.validate().map_err(|e| e.within("value"))?;
                (v, false)
            }
            NewValue::Generated { policy, field } => {
                let field = if field.is_empty() {
                    CredentialValue::generated_field(credential.kind)
                        .ok_or_else(|| {
                            Error::invalid("generate.field", "is required for this credential type")
                        })?
                        .to_owned()
                } else {
                    field
                };
                let secret: SecretString = policy.generate()?;
                let current = self
                    .store
                    .get_version(&scope, credential.id, credential.current_version)
                    .await?;
                let old = self.open(&scope, &credential, &current).await?;
                (old.with_field(&field, secret)?, true)
            }
        };
        let plaintext = Self::plaintext_within_limit(&scope, &value)?;
        let kek_version = scope.tenant().current_kek_version;
        let kek = self.kek(&scope, kek_version).await?;
        let retention = scope.tenant().settings.version_retention;
        // Optimistic concurrency: the version number is bound into the
        // ciphertext, so a lost race re-reads and re-seals.
        for _ in 0..8 {
            let next = credential.latest_version + 1;
            let now = self.now();
            let stored = StoredVersion {
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
                created_at: now,
                created_by: scope.principal().id,
            };
            let mut draft = self.credential_draft(
                &scope,
                ctx,
                Action::CredentialRotate,
                Outcome::Allowed,
                Reason::Allowed,
                &credential,
            );
            draft.version = Some(next);
            draft.detail = Some(AuditDetail::Rotation {
                generated,
                reason: Some(reason.to_owned()).filter(|r| !r.is_empty()),
            });
            match self
                .commit(scope.tenant_id(), draft, |draft| {
                    self.store.add_version(
                        &scope,
                        credential.id,
                        credential.latest_version,
                        &stored,
                        retention,
                        draft,
                    )
                })
                .await
            {
                Ok(written) => {
                    self.caches.replace_credential(
                        scope.tenant_id(),
                        Arc::new(CachedCredential {
                            credential: written.clone(),
                            current: stored,
                        }),
                    );
                    return Ok(written);
                }
                // Refused: the cached credential is stale either way.
                Err(Error::FailedPrecondition(Precondition::VersionRace)) => {
                    self.changed(Change::Credential(scope.tenant_id(), credential.id));
                    credential = self.store.get_credential(&scope, credential.id).await?;
                }
                Err(e) => {
                    self.changed(Change::Credential(scope.tenant_id(), credential.id));
                    return Err(e);
                }
            }
        }
        Err(Error::Unavailable(
            "too many concurrent rotations; retry".into(),
        ))
    }
}
