//! Tenant-key rotation: a new KEK version, the background re-wrapping of
//! the tenant's data keys under it, its progress, and retiring an old
//! version.
//!
//! Promises:
//! - `RotateTenantKey` adds version n+1 and makes it current in one
//!   audited transaction; the change notice drops every replica's cached
//!   callers, so their next write seals under it (the keyring unwraps a
//!   version it lacks on first use);
//! - every replica runs the re-wrapping (`rewrap_data_keys`): each data
//!   key (the wrapped DEK in a stored value's envelope, and the notifier's
//!   sealed signing secret) still wrapped by an older version is re-wrapped
//!   by the current one, the payload ciphertext untouched, as a
//!   compare-and-swap on the envelope read, so concurrent re-wrappers and
//!   writes never lose a value; reads open whichever version a value's
//!   envelope names, so they work throughout;
//! - `RetireTenantKey` deletes an old version only while nothing is
//!   wrapped by it (checked in the deleting transaction for values, before
//!   it for the notifier secret) and never the current one.

use std::sync::Arc;

use strongroom_core::audit::{Action, Outcome};
use strongroom_core::ids::TenantId;
use strongroom_core::keys::{KeyScope, TenantRewrap};
use strongroom_core::policy::Reason;
use strongroom_core::scope::{Authenticated, SystemScope};
use strongroom_core::tenant::{Tenant, TenantStatus, WrappedKekRecord};
use strongroom_core::time::Timestamp;
use strongroom_core::{Error, Result};
use strongroom_crypto::{Aad, Envelope, Kek};

use crate::keyring::crypto_error;
use crate::{CallContext, Engine};

/// Values re-wrapped per store round trip.
const REWRAP_BATCH: u32 = 200;

/// Whose keys a call acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyTarget {
    /// The caller's own tenant (a tenant admin).
    Own,
    /// A tenant named by a platform operator.
    Tenant(TenantId),
}

/// One KEK version of a tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyVersionStatus {
    /// The version.
    pub version: u32,
    /// Whether new data keys are wrapped by it.
    pub current: bool,
    /// Stored values whose data key it wraps.
    pub data_keys: u64,
    /// Whether the notifier's signing secret is sealed under it.
    pub notifier_secret: bool,
    /// When it was added.
    pub created_at: Timestamp,
}

/// A tenant's KEK versions and the progress of its latest rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantKeyStatus {
    /// The version new data keys are wrapped by.
    pub current: u32,
    /// Every version kept, oldest first.
    pub versions: Vec<KeyVersionStatus>,
    /// Data keys (and the notifier secret) wrapped by older versions.
    pub pending: u64,
    /// The latest rotation.
    pub rotation: Option<TenantRewrap>,
}

/// The KEK version the notifier's sealed secret names, if there is one.
fn notifier_version(tenant: &Tenant) -> Result<Option<u32>> {
    let Some(n) = &tenant.settings.notifier else {
        return Ok(None);
    };
    let bytes = hex::decode(&n.sealed_secret)
        .map_err(|_| Error::internal("malformed sealed notifier secret"))?;
    Ok(Some(
        Envelope::from_bytes(&bytes)
            .map_err(crypto_error)?
            .kek_version(),
    ))
}

/// Runs `$body` with `$scope` bound to the [`KeyScope`] of `$target` for
/// `$caller`: a tenant admin's own tenant (the admin check audited as
/// `$action`), or the tenant a platform operator names.
macro_rules! with_key_scope {
    ($self:ident, $caller:ident, $ctx:ident, $target:expr, $action:expr, |$scope:ident, $draft:ident| $body:expr) => {{
        match $target {
            KeyTarget::Own => {
                let tenant_scope = $caller.tenant_scope()?;
                $self.require_admin(&tenant_scope, $ctx, $action).await?;
                let $draft = $self.draft(
                    &tenant_scope,
                    $ctx,
                    $action,
                    Outcome::Allowed,
                    Reason::AllowedByRole,
                );
                let $scope = KeyScope::Tenant(&tenant_scope);
                $body
            }
            KeyTarget::Tenant(id) => {
                let platform = $caller.platform_scope()?;
                let $draft = $self.platform_draft(&platform, $ctx, $action);
                let $scope = KeyScope::Platform(&platform, id);
                $body
            }
        }
    }};
}

impl Engine {
    /// KEK `version` of the scope's tenant.
    async fn key_version(&self, scope: KeyScope<'_>, version: u32) -> Result<Arc<Kek>> {
        self.keyring
            .kek(scope.tenant_id(), version, || self.store.tenant_keks(scope))
            .await
    }

    /// Adds a KEK version to the tenant and makes it current; data keys
    /// are re-wrapped under it in the background. Returns the new version
    /// and how many data keys are still wrapped by older ones.
    pub async fn rotate_tenant_key(
        &self,
        caller: &Authenticated,
        ctx: &CallContext,
        target: KeyTarget,
    ) -> Result<(u32, u64)> {
        with_key_scope!(
            self,
            caller,
            ctx,
            target,
            Action::TenantKeyRotate,
            |scope, draft| {
                let tenant = self.store.key_tenant(scope).await?;
                if tenant.status == TenantStatus::Shredded {
                    return Err(Error::precondition("the tenant was shredded"));
                }
                let version = tenant
                    .current_kek_version
                    .checked_add(1)
                    .ok_or_else(|| Error::precondition("no key version is left"))?;
                let kek = Kek::generate().map_err(crypto_error)?;
                let wrapped = self.keyring.wrap(tenant.id, version, &kek)?;
                let record = WrappedKekRecord {
                    tenant: tenant.id,
                    version,
                    wrapped: wrapped.to_bytes(),
                    created_at: self.now(),
                };
                let mut draft = draft;
                draft.version = Some(version);
                self.commit(tenant.id, draft, |draft| {
                    self.store.add_kek_version(scope, &record, draft)
                })
                .await?;
                self.rewrap_wake.notify_waiters();
                let status = self.key_status(scope).await?;
                Ok((version, status.pending))
            }
        )
    }

    /// The tenant's KEK versions and the progress of its latest rotation.
    pub async fn tenant_key_status(
        &self,
        caller: &Authenticated,
        ctx: &CallContext,
        target: KeyTarget,
    ) -> Result<TenantKeyStatus> {
        with_key_scope!(
            self,
            caller,
            ctx,
            target,
            Action::TenantKeyRotate,
            |scope, _draft| self.key_status(scope).await
        )
    }

    async fn key_status(&self, scope: KeyScope<'_>) -> Result<TenantKeyStatus> {
        let tenant = self.store.key_tenant(scope).await?;
        let counts = self.store.data_key_counts(scope).await?;
        let notifier = notifier_version(&tenant)?;
        let keks = self.store.tenant_keks(scope).await?;
        let current = tenant.current_kek_version;
        let versions: Vec<KeyVersionStatus> = keks
            .iter()
            .map(|k| KeyVersionStatus {
                version: k.version,
                current: k.version == current,
                data_keys: counts
                    .iter()
                    .find(|(v, _)| *v == k.version)
                    .map_or(0, |(_, n)| *n),
                notifier_secret: notifier == Some(k.version),
                created_at: k.created_at,
            })
            .collect();
        let pending = counts
            .iter()
            .filter(|(v, _)| *v != current)
            .map(|(_, n)| *n)
            .sum::<u64>()
            + u64::from(notifier.is_some_and(|v| v != current));
        Ok(TenantKeyStatus {
            current,
            versions,
            pending,
            rotation: self.store.tenant_rewrap(scope).await?,
        })
    }

    /// Deletes KEK `version` of the tenant once nothing is wrapped by it.
    pub async fn retire_tenant_key(
        &self,
        caller: &Authenticated,
        ctx: &CallContext,
        target: KeyTarget,
        version: u32,
    ) -> Result<()> {
        if version == 0 {
            return Err(Error::invalid("kek_version", "is required"));
        }
        with_key_scope!(
            self,
            caller,
            ctx,
            target,
            Action::TenantKeyRetire,
            |scope, draft| {
                let tenant = self.store.key_tenant(scope).await?;
                if version == tenant.current_kek_version {
                    return Err(Error::precondition(
                        "the current key version cannot be retired",
                    ));
                }
                if notifier_version(&tenant)? == Some(version) {
                    return Err(Error::precondition(
                        "the notifier's signing secret is still sealed under this key version; wait \
                     for the re-wrapping",
                    ));
                }
                let mut draft = draft;
                draft.version = Some(version);
                let sealed = tenant
                    .settings
                    .notifier
                    .as_ref()
                    .map(|n| n.sealed_secret.clone());
                self.commit(tenant.id, draft, |draft| {
                    self.store
                        .retire_kek(scope, version, sealed.as_deref(), draft)
                })
                .await?;
                self.keyring.evict_version(tenant.id, version);
                Ok(())
            }
        )
    }

    /// Waits until a tenant KEK is added on this server, or `max` passes.
    pub async fn rewrap_wait(&self, max: std::time::Duration) {
        let _ = tokio::time::timeout(max, self.rewrap_wake.notified()).await;
    }

    /// One pass of the background re-wrapping over every open tenant-key
    /// rotation (background task). Returns how many data keys this pass
    /// re-wrapped.
    pub async fn rewrap_data_keys(&self, system: &SystemScope) -> Result<u64> {
        let mut total = 0;
        for open in self.store.open_rewraps(system).await? {
            let scope = KeyScope::System(system, open.tenant);
            match self.rewrap_tenant(scope, open).await {
                Ok(n) => total += n,
                Err(e) => tracing::warn!(
                    tenant = %open.tenant,
                    error = %e,
                    "re-wrapping the tenant's data keys failed; retried on the next pass"
                ),
            }
        }
        Ok(total)
    }

    async fn rewrap_tenant(&self, scope: KeyScope<'_>, open: TenantRewrap) -> Result<u64> {
        let tenant = self.store.key_tenant(scope).await?;
        if tenant.status == TenantStatus::Shredded {
            return Ok(0);
        }
        let current = tenant.current_kek_version;
        let new_kek = self.key_version(scope, current).await?;
        let mut done = 0u64;
        loop {
            let pending = self
                .store
                .pending_data_keys(scope, current, REWRAP_BATCH)
                .await?;
            if pending.is_empty() {
                break;
            }
            let mut replaced = 0u64;
            for p in &pending {
                let envelope = Envelope::from_bytes(&p.envelope).map_err(crypto_error)?;
                let old_kek = self.key_version(scope, envelope.kek_version()).await?;
                let aad = Aad {
                    tenant: tenant.id.as_uuid(),
                    environment: &p.environment,
                    credential: p.credential.as_uuid(),
                    version: p.version,
                };
                let rewrapped = old_kek
                    .rewrap(&new_kek, current, &aad, &envelope)
                    .map_err(crypto_error)?;
                if self
                    .store
                    .replace_data_key(
                        scope,
                        p.credential,
                        p.version,
                        &p.envelope,
                        &rewrapped.to_bytes(),
                        current,
                    )
                    .await?
                {
                    replaced += 1;
                }
            }
            done += replaced;
            if replaced == 0 {
                // Every swap lost to a concurrent writer or re-wrapper:
                // the next pass reads them again.
                return Ok(done);
            }
        }
        if let Some(n) = &tenant.settings.notifier
            && notifier_version(&tenant)? != Some(current)
        {
            let bytes = hex::decode(&n.sealed_secret)
                .map_err(|_| Error::internal("malformed sealed notifier secret"))?;
            let envelope = Envelope::from_bytes(&bytes).map_err(crypto_error)?;
            let old_kek = self.key_version(scope, envelope.kek_version()).await?;
            let aad = crate::notify::secret_aad(tenant.id);
            let rewrapped = old_kek
                .rewrap(&new_kek, current, &aad, &envelope)
                .map_err(crypto_error)?;
            if self
                .store
                .replace_notifier_secret(
                    scope,
                    &n.sealed_secret,
                    &hex::encode(rewrapped.to_bytes()),
                )
                .await?
            {
                done += 1;
            }
            return Ok(done);
        }
        self.store
            .finish_rewrap(scope, open.kek_version, self.now())
            .await?;
        tracing::info!(tenant = %tenant.id, kek_version = current, "tenant data keys re-wrapped");
        Ok(done)
    }
}
