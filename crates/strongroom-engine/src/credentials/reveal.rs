//! Reveals: a credential's value (or one field) with a lease, audited and
//! failing closed.

use std::sync::Arc;
use std::time::Duration;

use strongroom_core::audit::{Action, AuditDetail, Outcome};
use strongroom_core::credential::{Credential, CredentialFilter, CredentialStatus};
use strongroom_core::ids::LeaseId;
use strongroom_core::lease::LeaseState;
use strongroom_core::names::{CredentialName, Environment, ServiceLabel};
use strongroom_core::page::PageRequest;
use strongroom_core::policy::{Capability, Reason};
use strongroom_core::principal::Role;
use strongroom_core::scope::{Authenticated, TenantScope};
use strongroom_core::store::{Change, RevealCheck};
use strongroom_core::time::Timestamp;
use strongroom_core::value::CredentialValue;
use strongroom_core::{Error, Precondition, Result};

use super::CredentialRef;
use crate::authorization::{credential_not_found, hide_missing};
use crate::cache::CachedCredential;
use crate::{CallContext, Engine};

/// Options of a reveal.
#[derive(Debug, Clone, Default)]
pub struct RevealOptions {
    /// Why the value is needed (required for agents).
    pub purpose: String,
    /// End user the caller acts for.
    pub on_behalf_of: Option<String>,
    /// Return only this field.
    pub field: Option<String>,
    /// Reveal this version instead of the current one.
    pub version: Option<u32>,
    /// Requested lease TTL.
    pub lease_ttl: Option<Duration>,
}

pub use strongroom_core::lease::Lease;

/// The result of a reveal. The value is dropped (and zeroized) with it.
#[derive(Debug)]
pub struct Revealed {
    /// The credential's metadata (the cache's entry it was revealed from,
    /// shared, not copied).
    pub credential: RevealedCredential,
    /// The version revealed.
    pub version: u32,
    /// The whole value, or one field of it.
    pub value: RevealedValue,
    /// The lease (shared with the audit batch that stored it).
    pub lease: Arc<Lease>,
}

/// The metadata of a revealed credential: the cache's entry it was
/// revealed from, shared. Dereferences to the [`Credential`].
#[derive(Clone)]
pub struct RevealedCredential(Arc<CachedCredential>);

impl std::fmt::Debug for RevealedCredential {
    // The metadata only: the sealed version beside it is not shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.credential.fmt(f)
    }
}

impl std::ops::Deref for RevealedCredential {
    type Target = Credential;

    fn deref(&self) -> &Credential {
        &self.0.credential
    }
}

/// A revealed value or a single field. `Debug` never shows the value.
pub enum RevealedValue {
    /// The whole typed value.
    Whole(CredentialValue),
    /// One named field.
    Field(String, zeroize::Zeroizing<String>),
}

impl std::fmt::Debug for RevealedValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Whole(v) => write!(f, "Whole({v:?})"),
            Self::Field(name, _) => write!(f, "Field({name:?}, [REDACTED])"),
        }
    }
}

/// Why a reveal did not complete.
enum RevealFailure {
    /// The state it was decided on changed before its audit record
    /// committed; retry without caches.
    Stale,
    /// Any other error.
    Failed(Error),
}

impl From<Error> for RevealFailure {
    fn from(e: Error) -> Self {
        Self::Failed(e)
    }
}

impl Engine {
    /// Returns a credential's value (or one field), with a lease. Audited;
    /// fails closed if the audit record cannot be written. Decided on cached
    /// state when available; the audit commit verifies that state and a
    /// stale decision is retried once on fresh state.
    pub async fn reveal(
        &self,
        caller: &Authenticated,
        ctx: &CallContext,
        reference: &CredentialRef,
        options: &RevealOptions,
    ) -> Result<Revealed> {
        let scope = caller.tenant_scope()?;
        require_purpose(&scope, options)?;
        self.refuse_unseen(
            &scope,
            ctx,
            Action::CredentialReveal,
            Capability::Reveal,
            reference,
        )
        .await?;
        let found = self.cached_credential(&scope, reference).await;
        let cached = self
            .find_named(&scope, ctx, Action::CredentialReveal, reference, found)
            .await?;
        self.reveal_cached(&scope, ctx, reference, cached, options)
            .await
    }

    /// Reveals `cached`, found for `reference`. A decision that went stale
    /// before its commit (the state it was taken on changed) drops what is
    /// cached of the tenant and is taken once more on fresh state; stale
    /// again, it is refused for good.
    async fn reveal_cached(
        &self,
        scope: &TenantScope<'_>,
        ctx: &CallContext,
        reference: &CredentialRef,
        cached: Arc<CachedCredential>,
        options: &RevealOptions,
    ) -> Result<Revealed> {
        match self.reveal_found(scope, ctx, cached, options).await {
            Ok(r) => return Ok(r),
            Err(RevealFailure::Failed(e)) => return Err(e),
            Err(RevealFailure::Stale) => {
                self.changed(Change::Access(scope.tenant_id()));
                self.refuse_shredded(scope).await?;
            }
        }
        let fresh = self
            .load_credential(scope, reference)
            .await
            .map_err(hide_missing)?;
        match self
            .reveal_found(scope, ctx, Arc::clone(&fresh), options)
            .await
        {
            Ok(r) => Ok(r),
            Err(RevealFailure::Failed(e)) => Err(e),
            Err(RevealFailure::Stale) => {
                // Refused for good: the state changed again between the
                // fresh read and the commit. Recorded like any refusal.
                let mut d = self.credential_draft(
                    scope,
                    ctx,
                    Action::CredentialReveal,
                    Outcome::Denied,
                    Reason::StaleState,
                    &fresh.credential,
                );
                d.purpose = Some(options.purpose.clone()).filter(|p| !p.is_empty());
                d.on_behalf_of.clone_from(&options.on_behalf_of);
                self.audit_denial(scope, d).await;
                Err(Error::precondition(
                    "the credential or the caller's access changed during the reveal; retry",
                ))
            }
        }
    }

    /// Decides, opens and audits one reveal of `cached`: the value only if
    /// its audit record committed with the state it was decided on.
    async fn reveal_found(
        &self,
        scope: &TenantScope<'_>,
        ctx: &CallContext,
        cached: Arc<CachedCredential>,
        options: &RevealOptions,
    ) -> std::result::Result<Revealed, RevealFailure> {
        let credential = &cached.credential;
        let principal = scope.principal();
        let decision = match self
            .authorize(
                scope,
                ctx,
                Action::CredentialReveal,
                Capability::Reveal,
                &credential.environment,
                &credential.name,
                Some(credential),
                options.on_behalf_of.as_deref(),
            )
            .await
        {
            Ok(d) => d,
            Err(e) => return Err(self.hide_refusal(scope, credential, e).await.into()),
        };
        if let Some(why) = credential.unusable(self.now()) {
            let code = unusable_reason(why);
            let d = self.credential_draft(
                scope,
                ctx,
                Action::CredentialReveal,
                Outcome::Denied,
                code,
                credential,
            );
            self.audit_denial(scope, d).await;
            return Err(Error::FailedPrecondition(Precondition::CredentialUnusable(why)).into());
        }
        let version = options.version.unwrap_or(credential.current_version);
        let older;
        let stored = if version == credential.current_version {
            &cached.current
        } else {
            // Only the CURRENT and PREVIOUS versions are servable; a RETIRED
            // one is refused like any other unusable state.
            let versions = self.store.list_versions(scope, credential.id).await?;
            let previous = versions
                .iter()
                .map(|v| v.version)
                .find(|v| *v != credential.current_version);
            if previous != Some(version) && versions.iter().any(|v| v.version == version) {
                let mut d = self.credential_draft(
                    scope,
                    ctx,
                    Action::CredentialReveal,
                    Outcome::Denied,
                    Reason::VersionRetired,
                    credential,
                );
                d.version = Some(version);
                self.audit_denial(scope, d).await;
                return Err(Error::precondition(
                    "only the current and previous versions can be revealed",
                )
                .into());
            }
            older = self
                .store
                .get_version(scope, credential.id, version)
                .await?;
            &older
        };
        let value = self.open(scope, credential, stored).await?;
        let revealed = match &options.field {
            None => RevealedValue::Whole(value),
            Some(field) => {
                let text = value
                    .field(field)
                    .ok_or_else(|| Error::invalid("field", "this credential has no such field"))?;
                RevealedValue::Field(field.clone(), text)
            }
        };
        let ttl = options
            .lease_ttl
            .unwrap_or(self.limits.default_lease_ttl)
            .min(self.limits.max_lease_ttl)
            .max(Duration::from_secs(1));
        let now = self.now();
        // The lease lasts at most the longest lease time, and never beyond
        // the credential's or the grant's expiry (the grant the decision
        // was taken on: its expiry comes with the decision).
        let max_expires_at = [credential.expires_at, decision.grant_expires_at]
            .into_iter()
            .flatten()
            .fold(now.plus(self.limits.max_lease_ttl), Timestamp::min);
        let lease = Arc::new(Lease {
            id: LeaseId::generate(),
            tenant: scope.tenant_id(),
            credential: credential.id,
            credential_name: credential.name.clone(),
            environment: credential.environment.clone(),
            version,
            principal: principal.id,
            grant: decision.grant,
            on_behalf_of: options.on_behalf_of.as_deref().map(without_nul),
            purpose: Some(options.purpose.as_str())
                .filter(|p| !p.is_empty())
                .map(without_nul),
            ttl,
            issued_at: now,
            expires_at: now.plus(ttl).min(max_expires_at),
            max_expires_at,
            state: LeaseState::Active,
            ended_at: None,
            end: None,
        });
        let mut draft = self.credential_draft(
            scope,
            ctx,
            Action::CredentialReveal,
            Outcome::Allowed,
            decision.reason,
            credential,
        );
        draft.version = Some(version);
        draft.purpose = Some(options.purpose.clone()).filter(|p| !p.is_empty());
        draft.on_behalf_of.clone_from(&options.on_behalf_of);
        draft.detail = Some(AuditDetail::Lease {
            lease_id: lease.id,
            ttl_secs: ttl.as_secs(),
            grant: decision.grant,
        });
        let check = RevealCheck {
            credential: credential.id,
            version: credential.current_version,
            principal: principal.id,
            role: principal.role,
            grant: decision.grant,
            binding: Some(scope.binding()),
        };
        // Fail closed: the value is returned only once its audit record is
        // durable, and only if the state it was decided on still holds.
        match self
            .durable(
                self.store
                    .append_reveal(scope, draft, check, Some(Arc::clone(&lease))),
            )
            .await
        {
            Ok(_) => {}
            Err(Error::FailedPrecondition(Precondition::RevealStateChanged(_))) => {
                return Err(RevealFailure::Stale);
            }
            Err(e) => return Err(e.into()),
        }
        Ok(Revealed {
            credential: RevealedCredential(Arc::clone(&cached)),
            version,
            value: revealed,
            lease,
        })
    }

    /// Reveals the one credential of `service` in `environment` (or the one
    /// named `name`): "give me the Stripe key for production".
    pub async fn resolve(
        &self,
        caller: &Authenticated,
        ctx: &CallContext,
        service: &ServiceLabel,
        environment: &Environment,
        name: Option<&CredentialName>,
        options: &RevealOptions,
    ) -> Result<Revealed> {
        let scope = caller.tenant_scope()?;
        require_purpose(&scope, options)?;
        if !scope.principal().may_enter(environment) {
            let mut d = self.draft(
                &scope,
                ctx,
                Action::CredentialReveal,
                Outcome::Denied,
                Reason::EnvironmentNotPermitted,
            );
            d.environment = Some(environment.to_string());
            self.audit_denial(&scope, d).await;
            return Err(Error::denied(Reason::EnvironmentNotPermitted.explain()));
        }
        let credential = if let Some(name) = name {
            let reference = CredentialRef::Path(environment.clone(), name.clone());
            self.refuse_unseen(
                &scope,
                ctx,
                Action::CredentialReveal,
                Capability::Reveal,
                &reference,
            )
            .await?;
            let c = self
                .store
                .find_credential(&scope, environment, name)
                .await
                .map_err(hide_missing)?;
            if &c.service != service {
                return Err(credential_not_found());
            }
            c
        } else {
            // Only credentials the caller may list count: how many serve
            // the service must not leak to a caller without access.
            let listing = self
                .listing(&scope, scope.principal(), Capability::List)
                .await?;
            let filter = listing.narrow(CredentialFilter {
                environment: Some(environment.clone()),
                service: Some(service.clone()),
                ..CredentialFilter::default()
            });
            let mut page = self
                .store
                .list_credentials(&scope, &filter, &PageRequest::first(100))
                .await?;
            // Revoked credentials serve nothing; an expired one (marked so
            // or not yet) is found and refused as expired, unless a usable
            // one serves the service too.
            let now = self.now();
            page.items
                .retain(|c| listing.shows(c) && c.status != CredentialStatus::Revoked);
            let usable = page
                .items
                .iter()
                .filter(|c| c.unusable(now).is_none())
                .count();
            if usable == 1 {
                page.items.retain(|c| c.unusable(now).is_none());
            }
            match (usable, page.items.len()) {
                (_, 0) => {
                    return Err(Error::not_found(
                        "credential for that service and environment",
                    ));
                }
                (0 | 1, _) => page.items.remove(0),
                _ => {
                    return Err(Error::precondition(
                        "several credentials serve that service in that environment; name one",
                    ));
                }
            }
        };
        let reference = CredentialRef::Id(credential.id);
        let cached = self.cached_credential(&scope, &reference).await?;
        self.reveal_cached(&scope, ctx, &reference, cached, options)
            .await
    }
}

/// `text` as a lease stores it: NUL (which the request edge refuses, and
/// Postgres' text cannot hold) replaced, as audit events replace it.
fn without_nul(text: &str) -> String {
    if text.contains('\0') {
        text.replace('\0', "\u{FFFD}")
    } else {
        text.to_owned()
    }
}

/// Agents must say why they need a value; checked before anything is
/// looked up, so the answer does not depend on what exists.
fn require_purpose(scope: &TenantScope<'_>, options: &RevealOptions) -> Result<()> {
    if scope.principal().role == Role::Agent && options.purpose.trim().is_empty() {
        return Err(Error::invalid("purpose", "is required for agents"));
    }
    Ok(())
}

/// The reason code of a refusal to use a credential's value.
pub(crate) fn unusable_reason(why: strongroom_core::Unusable) -> Reason {
    match why {
        strongroom_core::Unusable::Revoked => Reason::CredentialRevoked,
        strongroom_core::Unusable::Expired => Reason::CredentialExpired,
        strongroom_core::Unusable::Destroyed => Reason::CredentialDestroyed,
    }
}
