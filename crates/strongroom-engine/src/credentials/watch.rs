//! Open uses of values kept to what is still allowed: a relayed response
//! that is still streaming ends once its use stops being allowed, on
//! whichever server the change was made.
//!
//! A [`UseWatch`] follows every change this server applies to its caches
//! ([`Caches::subscribe`](crate::cache::Caches::subscribe): its own commits
//! and other servers' notices alike) and checks the use again against the
//! store on each change that may concern it (its tenant's principals,
//! grants, keys, or one of its credentials). It ends a use:
//!
//! - when its principal is disabled (or emergency-revoked), or its role
//!   changed: PERMISSION_DENIED, reason `PRINCIPAL_DISABLED` or
//!   `ROLE_NOT_PERMITTED`;
//! - when its grant is revoked or expires: PERMISSION_DENIED, reason
//!   `GRANT_REVOKED` or `GRANT_EXPIRED`;
//! - when its credential is revoked, destroyed or expired (an emergency
//!   revoke included), or its tenant shredded: FAILED_PRECONDITION naming
//!   why, reason `CREDENTIAL_REVOKED`, `CREDENTIAL_DESTROYED` or
//!   `CREDENTIAL_EXPIRED`.
//!
//! Notices can be lost, so a watch also checks again every `cache.ttl_ms`
//! (the bound on how long a change made through another server goes unseen
//! here, whatever happens to the notices), and it looks at the engine's
//! clock every [`EXPIRY_TICK`] for the earliest expiry of its grants and
//! credentials. A check that cannot read the store ends the use only once
//! it has gone unconfirmed for that bound (fail-closed: UNAVAILABLE).

use std::time::Duration;

use strongroom_core::ids::{CredentialId, GrantId, PrincipalId, TenantId};
use strongroom_core::policy::Reason;
use strongroom_core::principal::{PrincipalStatus, Role};
use strongroom_core::scope::Authenticated;
use strongroom_core::store::Change;
use strongroom_core::tenant::TenantStatus;
use strongroom_core::time::Timestamp;
use strongroom_core::{Error, Precondition, Result, Unusable};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use super::inject::Authorized;
use super::reveal::unusable_reason;
use crate::Engine;

/// How often a watch looks at the clock for an expiry.
const EXPIRY_TICK: Duration = Duration::from_secs(1);

/// An open use being watched (see [`Engine::watch_use`]).
pub struct UseWatch {
    tenant: TenantId,
    principal: PrincipalId,
    role: Role,
    /// Each use's credential and the grant that allows it.
    uses: Vec<(CredentialId, GrantId)>,
    /// The earliest expiry of those grants and credentials, as last read.
    ends_at: Option<Timestamp>,
    changes: broadcast::Receiver<Change>,
    /// When the use was last found allowed.
    confirmed: Instant,
    /// When the clock is next looked at for an expiry.
    tick: Instant,
}

impl std::fmt::Debug for UseWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UseWatch")
            .field("tenant", &self.tenant)
            .field("principal", &self.principal)
            .field("uses", &self.uses)
            .field("ends_at", &self.ends_at)
            .finish_non_exhaustive()
    }
}

/// Why an open use ended before its response did.
#[derive(Debug)]
pub struct UseEnded {
    /// What the outcome's record says (its reason code).
    pub reason: Reason,
    /// What the caller is answered: never a value.
    pub error: Error,
}

impl UseEnded {
    fn denied(reason: Reason) -> Self {
        Self {
            reason,
            error: Error::denied(format!("the use was ended: {}", reason.explain())),
        }
    }

    fn unusable(why: Unusable) -> Self {
        Self {
            reason: unusable_reason(why),
            error: Error::FailedPrecondition(Precondition::CredentialUnusable(why)),
        }
    }
}

impl UseWatch {
    /// Returns on a change that may concern the use (or when changes may
    /// have been missed).
    async fn concerned(&mut self) {
        let tenant = self.tenant;
        loop {
            match self.changes.recv().await {
                Ok(Change::Credential(t, c)) if t == tenant => {
                    if self.uses.iter().any(|(u, _)| *u == c) {
                        return;
                    }
                }
                Ok(
                    Change::Data(t)
                    | Change::Access(t)
                    | Change::Keys(t)
                    | Change::KeyRetired(t, _),
                ) if t == tenant => return,
                Ok(Change::Everything) | Err(RecvError::Lagged(_)) => return,
                Ok(_) => {}
                Err(RecvError::Closed) => std::future::pending::<()>().await,
            }
        }
    }
}

impl Engine {
    /// Starts watching the uses `authorized` allowed `caller`, from now
    /// on: call before anything is sent, so no change is missed.
    pub fn watch_use(&self, caller: &Authenticated, authorized: &Authorized) -> Result<UseWatch> {
        let scope = caller.tenant_scope()?;
        let principal = scope.principal();
        let ends_at = authorized
            .injections
            .iter()
            .flat_map(|i| [i.grant_expires_at, i.credential().expires_at])
            .flatten()
            .min();
        Ok(UseWatch {
            tenant: scope.tenant_id(),
            principal: principal.id,
            role: principal.role,
            uses: authorized
                .injections
                .iter()
                .map(|i| (i.credential().id, i.grant))
                .collect(),
            ends_at,
            changes: self.caches.subscribe(),
            confirmed: Instant::now(),
            tick: Instant::now() + EXPIRY_TICK,
        })
    }

    /// Waits until the watched use may no longer go on, and says why;
    /// never returns while it may. Dropping the future between changes
    /// loses nothing, but a caller should keep one future for the whole use
    /// (a check cut off half-way is started again).
    pub async fn use_ended(&self, caller: &Authenticated, watch: &mut UseWatch) -> UseEnded {
        let bound = self.limits().cache_ttl.max(EXPIRY_TICK);
        loop {
            let due = watch.confirmed + bound;
            let tick = watch.tick;
            let check = tokio::select! {
                () = watch.concerned() => true,
                () = tokio::time::sleep_until(due) => true,
                () = tokio::time::sleep_until(tick) => {
                    watch.tick = Instant::now() + EXPIRY_TICK;
                    watch.ends_at.is_some_and(|at| self.now() >= at)
                }
            };
            if !check {
                continue;
            }
            match self.check_use(caller, watch).await {
                Ok(None) => watch.confirmed = Instant::now(),
                Ok(Some(ended)) => return ended,
                Err(e) => {
                    tracing::warn!(error = %e, "an open use could not be checked again");
                    if watch.confirmed.elapsed() >= bound {
                        return UseEnded {
                            reason: Reason::StaleState,
                            error: Error::Unavailable(
                                "the use could not be confirmed as still allowed".into(),
                            ),
                        };
                    }
                    // Not again at once.
                    tokio::time::sleep(EXPIRY_TICK.min(bound / 4)).await;
                }
            }
        }
    }

    /// Checks the watched use against the stored state (never the caches):
    /// `Some` with why it may not go on.
    async fn check_use(
        &self,
        caller: &Authenticated,
        watch: &mut UseWatch,
    ) -> Result<Option<UseEnded>> {
        let scope = caller.tenant_scope()?;
        let now = self.now();
        if self.store.tenant(&scope).await?.status == TenantStatus::Shredded {
            return Ok(Some(UseEnded {
                reason: Reason::CredentialDestroyed,
                error: Error::FailedPrecondition(Precondition::TenantShredded),
            }));
        }
        let principal = match self.store.get_principal(&scope, watch.principal).await {
            Ok(p) => p,
            Err(Error::NotFound(_)) => {
                return Ok(Some(UseEnded::denied(Reason::PrincipalDisabled)));
            }
            Err(e) => return Err(e),
        };
        if principal.status != PrincipalStatus::Active {
            return Ok(Some(UseEnded::denied(Reason::PrincipalDisabled)));
        }
        if principal.role != watch.role {
            return Ok(Some(UseEnded::denied(Reason::RoleNotPermitted)));
        }
        let mut ends_at: Option<Timestamp> = None;
        for (credential, grant) in &watch.uses {
            let grant = match self.store.get_grant(&scope, *grant).await {
                Ok(g) => g,
                Err(Error::NotFound(_)) => return Ok(Some(UseEnded::denied(Reason::GrantRevoked))),
                Err(e) => return Err(e),
            };
            if grant.expires_at.is_some_and(|at| now >= at) {
                return Ok(Some(UseEnded::denied(Reason::GrantExpired)));
            }
            if !grant.applies_to(&principal) {
                return Ok(Some(UseEnded::denied(Reason::NoMatchingGrant)));
            }
            let credential = match self.store.get_credential(&scope, *credential).await {
                Ok(c) => c,
                Err(Error::NotFound(_)) => {
                    return Ok(Some(UseEnded::unusable(Unusable::Destroyed)));
                }
                Err(e) => return Err(e),
            };
            if let Some(why) = credential.unusable(now) {
                return Ok(Some(UseEnded::unusable(why)));
            }
            for at in [grant.expires_at, credential.expires_at]
                .into_iter()
                .flatten()
            {
                ends_at = Some(ends_at.map_or(at, |e| e.min(at)));
            }
        }
        watch.ends_at = ends_at;
        Ok(None)
    }
}
