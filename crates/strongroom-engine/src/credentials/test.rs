//! `TestCredential`: whether a `db_connection` works, by connecting to its
//! database through the server's [`DatabaseProbe`]. The caller needs inject
//! or reveal (either lets it use the value); the use is audited
//! (`credential.test`) durably, with the state it was decided on checked,
//! before the values leave the engine. The answer is a classified outcome,
//! never a value or the database's own words.

use std::time::{Duration, Instant};

use strongroom_core::audit::{Action, Outcome};
use strongroom_core::credential::CredentialStatus;
use strongroom_core::policy::{Capability, Reason};
use strongroom_core::scope::Authenticated;
use strongroom_core::store::{Change, RevealCheck};
use strongroom_core::value::{CredentialType, CredentialValue};
use strongroom_core::{Error, Precondition, Result};

use super::CredentialRef;
use crate::ports::DatabaseTestOutcome;
use crate::{CallContext, Engine};

/// The default and the longest time a test may take.
pub const TEST_TIMEOUT: (Duration, Duration) = (Duration::from_secs(5), Duration::from_secs(30));

/// What a credential test found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialTested {
    /// The version tested (the current one).
    pub version: u32,
    /// Connected, or why not.
    pub outcome: DatabaseTestOutcome,
    /// How long the connection attempt took.
    pub latency: Duration,
}

impl Engine {
    /// Tests a `db_connection` credential by connecting to its database
    /// within `timeout` (default 5 s, at most 30 s). FAILED_PRECONDITION
    /// for other types and for credentials that cannot be used; refusals as
    /// for a reveal (NOT_FOUND when the caller may not see it).
    pub async fn test_credential(
        &self,
        caller: &Authenticated,
        ctx: &CallContext,
        reference: &CredentialRef,
        timeout: Option<Duration>,
    ) -> Result<CredentialTested> {
        let scope = caller.tenant_scope()?;
        let Some(probe) = self.database_probe.clone() else {
            return Err(Error::Unimplemented(
                "this server cannot test credentials".into(),
            ));
        };
        let timeout = timeout.unwrap_or(TEST_TIMEOUT.0);
        if timeout.is_zero() || timeout > TEST_TIMEOUT.1 {
            return Err(Error::invalid(
                "timeout",
                "must be more than 0 and at most 30 s",
            ));
        }
        self.refuse_unseen(
            &scope,
            ctx,
            Action::CredentialTest,
            Capability::Inject,
            reference,
        )
        .await?;
        let found = self.cached_credential(&scope, reference).await;
        let cached = self
            .find_named(&scope, ctx, Action::CredentialTest, reference, found)
            .await?;
        let credential = &cached.credential;
        // Inject or reveal: either lets the caller use the value.
        let capability = if self
            .allows(
                &scope,
                Capability::Inject,
                &credential.environment,
                &credential.name,
            )
            .await?
        {
            Capability::Inject
        } else {
            Capability::Reveal
        };
        let decision = match self
            .authorize(
                &scope,
                ctx,
                Action::CredentialTest,
                capability,
                &credential.environment,
                &credential.name,
                Some(credential),
                None,
            )
            .await
        {
            Ok(d) => d,
            Err(e) => return Err(self.hide_refusal(&scope, credential, e).await),
        };
        if credential.kind != CredentialType::DbConnection {
            return Err(Error::precondition(
                "only db_connection credentials can be tested",
            ));
        }
        if let Err(e) = credential.ensure_usable(self.now()) {
            let code = match credential.effective_status(self.now()) {
                CredentialStatus::Revoked => Reason::CredentialRevoked,
                CredentialStatus::Expired => Reason::CredentialExpired,
                CredentialStatus::Active => Reason::CredentialDestroyed,
            };
            let d = self.credential_draft(
                &scope,
                ctx,
                Action::CredentialTest,
                Outcome::Denied,
                code,
                credential,
            );
            self.audit_denial(&scope, d).await;
            return Err(e);
        }
        let value = self.open(&scope, credential, &cached.current).await?;
        let CredentialValue::DbConnection(target) = &value else {
            return Err(Error::internal("a db_connection holds another value type"));
        };
        let mut draft = self.credential_draft(
            &scope,
            ctx,
            Action::CredentialTest,
            Outcome::Allowed,
            decision.reason,
            credential,
        );
        draft.version = Some(credential.current_version);
        let check = RevealCheck {
            credential: credential.id,
            version: credential.current_version,
            principal: scope.principal().id,
            role: scope.principal().role,
            grant: decision.grant,
            binding: Some(scope.binding()),
        };
        // Fail closed: the values are used only once the use is recorded,
        // and only if the state it was decided on still holds.
        match self
            .durable(self.store.append_reveal(&scope, draft, check, None))
            .await
        {
            Ok(_) => {}
            Err(Error::FailedPrecondition(Precondition::RevealStateChanged(_))) => {
                self.changed(Change::Access(scope.tenant_id()));
                self.refuse_shredded(&scope).await?;
                return Err(Error::precondition(
                    "the credential or the caller's access changed during the test; retry",
                ));
            }
            Err(e) => return Err(e),
        }
        let started = Instant::now();
        let outcome = probe
            .connect(scope.tenant().name.as_str(), target, timeout)
            .await;
        let latency = started.elapsed();
        match &outcome {
            DatabaseTestOutcome::Connected { .. } => tracing::info!(
                tenant = %scope.tenant_id(),
                credential_id = %credential.id,
                latency_ms = latency.as_millis() as u64,
                "credential test connected"
            ),
            DatabaseTestOutcome::Failed(why) => tracing::info!(
                tenant = %scope.tenant_id(),
                credential_id = %credential.id,
                failure = why.as_str(),
                "credential test failed"
            ),
        }
        Ok(CredentialTested {
            version: credential.current_version,
            outcome,
            latency,
        })
    }
}
