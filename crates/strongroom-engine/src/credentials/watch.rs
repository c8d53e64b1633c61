//! Open uses of values kept to what is still allowed: a relayed response
//! that is still streaming ends once its use stops being allowed, on
//! whichever server the change was made.
//!
//! A [`UseWatch`] follows every change this server applies to its caches
//! ([`Caches::subscribe`](crate::cache::Caches::subscribe): its own commits
//! and other servers' notices alike), from before the use was authorized
//! ([`Engine::use_changes`]), and checks the use again against the store
//! on each change that may concern it (its tenant's principals, bindings,
//! grants, environments, keys or status, or one of its credentials). Each
//! check asks the store whether the use's record would still pass the
//! reveal-check rule ([`AuditStore::check_reveals`], the rule the record was
//! checked by when it was written), and re-runs what authorization decided
//! beside it (the environments the principal may enter, the credential's
//! owner), naming why. It ends a use:
//!
//! - when its principal is disabled (or emergency-revoked) or deleted, or
//!   its tenant suspended: PERMISSION_DENIED, reason `PRINCIPAL_DISABLED`;
//!   when its role changed: `ROLE_NOT_PERMITTED`; when the identity binding
//!   that authenticated the caller is deleted: `UNKNOWN_IDENTITY`; when the
//!   principal may no longer enter the credential's environment:
//!   `ENVIRONMENT_NOT_PERMITTED`; when the credential's owner is no longer
//!   the one the use is on behalf of: `OWNER_MISMATCH`;
//! - when its grant is revoked or expires: PERMISSION_DENIED, reason
//!   `GRANT_REVOKED` or `GRANT_EXPIRED`;
//! - when its credential is revoked, destroyed or expired (an emergency
//!   revoke included), or its tenant shredded: FAILED_PRECONDITION naming
//!   why, reason `CREDENTIAL_REVOKED`, `CREDENTIAL_DESTROYED` or
//!   `CREDENTIAL_EXPIRED`;
//! - when the version in use is no longer the credential's current one (a
//!   rotation, a rollback, an emergency revoke with a generated
//!   replacement): FAILED_PRECONDITION, reason `CREDENTIAL_REVOKED`.
//!
//! Checks are coalesced and paced: the notices waiting are taken together
//! before each check, a watch checks at most once every [`MIN_GAP`] (a
//! notice that comes in between is followed by one more check, so none is
//! lost), and a notice that concerns every tenant ([`Change::Everything`],
//! or notices missed) is checked after a random delay of up to [`JITTER`],
//! so one change does not send every open use to the store at once.
//!
//! Notices can be lost, so a watch also checks again every `cache.ttl_ms`
//! (the bound on how long a change made through another server goes unseen
//! here, whatever happens to the notices), and it looks at the engine's
//! clock every [`EXPIRY_TICK`] for the earliest expiry of its grants and
//! credentials. A check that cannot read the store ends the use only once
//! it has gone unconfirmed for that bound (fail-closed: UNAVAILABLE).

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use strongroom_core::ids::{BindingId, CredentialId, GrantId, PrincipalId, TenantId};
use strongroom_core::names::Environment;
use strongroom_core::policy::Reason;
use strongroom_core::principal::{PrincipalStatus, Role};
use strongroom_core::scope::Authenticated;
use strongroom_core::store::{Change, RevealCheck};
use strongroom_core::tenant::TenantStatus;
use strongroom_core::time::Timestamp;
use strongroom_core::{Error, Precondition, Result, Unusable};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::time::Instant;

use super::inject::Authorized;
use super::reveal::unusable_reason;
use crate::Engine;

/// How often a watch looks at the clock for an expiry.
const EXPIRY_TICK: Duration = Duration::from_secs(1);

/// The least time between two checks of one watch.
pub const MIN_GAP: Duration = Duration::from_millis(250);

/// The most a check on a notice concerning every tenant is put off, at
/// random, so that one such notice does not send every open use of every
/// tenant to the store at the same instant.
pub const JITTER: Duration = Duration::from_millis(500);

/// The changes applied from a moment on, for a use about to be authorized
/// (see [`Engine::use_changes`]).
pub struct UseChanges {
    changes: broadcast::Receiver<Change>,
    since: Instant,
}

impl std::fmt::Debug for UseChanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UseChanges").finish_non_exhaustive()
    }
}

/// One watched use: the credential, the version of it in use, the grant
/// that allows it.
#[derive(Debug, Clone)]
struct Watched {
    credential: CredentialId,
    environment: Environment,
    version: u32,
    grant: GrantId,
}

/// An open use being watched (see [`Engine::watch_use`]).
pub struct UseWatch {
    tenant: TenantId,
    principal: PrincipalId,
    role: Role,
    /// The identity binding that authenticated the caller.
    binding: BindingId,
    /// Whom the use is on behalf of.
    on_behalf_of: Option<String>,
    uses: Vec<Watched>,
    /// The earliest expiry of those grants and credentials, as last read.
    ends_at: Option<Timestamp>,
    changes: broadcast::Receiver<Change>,
    /// When the use was last found allowed (at first: when the changes
    /// began to be followed, before it was authorized).
    confirmed: Instant,
    /// When the clock is next looked at for an expiry.
    tick: Instant,
    /// A check is owed (a notice concerned the use, or one is due).
    pending: bool,
    /// The check owed is for a notice concerning every tenant.
    broad: bool,
    /// No check before this instant (see [`MIN_GAP`]).
    next_check: Instant,
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

    fn denied_because(reason: Reason, why: &str) -> Self {
        Self {
            reason,
            error: Error::denied(format!("the use was ended: {why}")),
        }
    }

    fn unusable(why: Unusable) -> Self {
        Self {
            reason: unusable_reason(why),
            error: Error::FailedPrecondition(Precondition::CredentialUnusable(why)),
        }
    }

    fn unavailable() -> Self {
        Self {
            reason: Reason::StaleState,
            error: Error::Unavailable("the use could not be confirmed as still allowed".into()),
        }
    }
}

/// How far a notice concerns a watched use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Concern {
    /// Not at all.
    No,
    /// It is about the use's tenant or one of its credentials.
    Tenant,
    /// It is about every tenant (or notices were missed).
    Every,
}

impl UseWatch {
    /// How far `change` concerns the use.
    fn concern(&self, change: Result<Change, RecvError>) -> Concern {
        let tenant = self.tenant;
        match change {
            Ok(Change::Credential(t, c)) if t == tenant => {
                if self.uses.iter().any(|u| u.credential == c) {
                    Concern::Tenant
                } else {
                    Concern::No
                }
            }
            Ok(
                Change::Data(t) | Change::Access(t) | Change::Keys(t) | Change::KeyRetired(t, _),
            ) if t == tenant => Concern::Tenant,
            Ok(Change::Everything) | Err(RecvError::Lagged(_)) => Concern::Every,
            Ok(_) | Err(RecvError::Closed) => Concern::No,
        }
    }

    /// Notes that a check is owed for `concern`.
    fn owe(&mut self, concern: Concern) {
        match concern {
            Concern::No => {}
            Concern::Tenant => self.pending = true,
            Concern::Every => {
                self.pending = true;
                self.broad = true;
            }
        }
    }

    /// Takes every notice waiting, noting whether one concerns the use.
    fn drain(&mut self) {
        loop {
            let change = match self.changes.try_recv() {
                Ok(c) => Ok(c),
                Err(TryRecvError::Lagged(n)) => Err(RecvError::Lagged(n)),
                Err(TryRecvError::Empty | TryRecvError::Closed) => return,
            };
            let concern = self.concern(change);
            self.owe(concern);
        }
    }

    /// Returns on a change that may concern the use (or when changes may
    /// have been missed), having noted it.
    async fn concerned(&mut self) {
        loop {
            let change = self.changes.recv().await;
            if change == Err(RecvError::Closed) {
                std::future::pending::<()>().await;
            }
            let concern = self.concern(change);
            if concern != Concern::No {
                self.owe(concern);
                return;
            }
        }
    }

    /// Whether an expiry read last has passed at `now`.
    fn expired(&self, now: Timestamp) -> bool {
        self.ends_at.is_some_and(|at| now >= at)
    }
}

/// A random delay of up to [`JITTER`].
fn jitter() -> Duration {
    let random = RandomState::new().hash_one(Instant::now());
    let most = u64::try_from(JITTER.as_micros()).unwrap_or(u64::MAX).max(1);
    Duration::from_micros(random % most)
}

impl Engine {
    /// Starts following the changes this server applies: call before a use
    /// is authorized and pass the result to [`Engine::watch_use`], so that
    /// no change made after the authorization read its state goes unseen.
    pub fn use_changes(&self) -> UseChanges {
        UseChanges {
            changes: self.caches.subscribe(),
            since: Instant::now(),
        }
    }

    /// Watches the uses `authorized` allowed `caller`, following `changes`
    /// (taken before the authorization): a change made since is checked
    /// before the first wait for one ends.
    pub fn watch_use(
        &self,
        caller: &Authenticated,
        authorized: &Authorized,
        changes: UseChanges,
    ) -> Result<UseWatch> {
        let scope = caller.tenant_scope()?;
        let principal = scope.principal();
        let ends_at = authorized
            .injections
            .iter()
            .flat_map(|i| [i.grant_expires_at, i.credential().expires_at])
            .flatten()
            .min();
        let now = Instant::now();
        Ok(UseWatch {
            tenant: scope.tenant_id(),
            principal: principal.id,
            role: principal.role,
            binding: scope.binding(),
            on_behalf_of: authorized.on_behalf_of().map(str::to_owned),
            uses: authorized
                .injections
                .iter()
                .map(|i| Watched {
                    credential: i.credential().id,
                    environment: i.credential().environment.clone(),
                    version: i.version,
                    grant: i.grant,
                })
                .collect(),
            ends_at,
            changes: changes.changes,
            confirmed: changes.since,
            tick: now + EXPIRY_TICK,
            pending: false,
            broad: false,
            next_check: now,
        })
    }

    /// Checks at once, before anything is sent, if a notice taken since
    /// the changes began to be followed concerns the use, or a check is
    /// due: `Some` with why the use may not begin. A check that cannot be
    /// made then refuses the use (nothing was sent yet).
    pub async fn use_checked_now(
        &self,
        caller: &Authenticated,
        watch: &mut UseWatch,
    ) -> Option<UseEnded> {
        watch.drain();
        let bound = self.limits().cache_ttl.max(EXPIRY_TICK);
        if !(watch.pending || watch.confirmed.elapsed() >= bound || watch.expired(self.now())) {
            return None;
        }
        match self.check_use(caller, watch).await {
            Ok(None) => {
                watch.pending = false;
                watch.broad = false;
                watch.confirmed = Instant::now();
                watch.next_check = Instant::now() + MIN_GAP;
                None
            }
            Ok(Some(ended)) => Some(ended),
            Err(e) => {
                tracing::warn!(error = %e, "a use could not be checked before it began");
                Some(UseEnded::unavailable())
            }
        }
    }

    /// Waits until the watched use may no longer go on, and says why;
    /// never returns while it may. Dropping the future between changes
    /// loses nothing (a check owed stays owed), but a caller should keep
    /// one future for the whole use (a check cut off half-way is started
    /// again).
    pub async fn use_ended(&self, caller: &Authenticated, watch: &mut UseWatch) -> UseEnded {
        let bound = self.limits().cache_ttl.max(EXPIRY_TICK);
        loop {
            if !watch.pending {
                let due = watch.confirmed + bound;
                let tick = watch.tick;
                tokio::select! {
                    () = watch.concerned() => {}
                    () = tokio::time::sleep_until(due) => watch.pending = true,
                    () = tokio::time::sleep_until(tick) => {
                        watch.tick = Instant::now() + EXPIRY_TICK;
                        if watch.expired(self.now()) {
                            watch.pending = true;
                        }
                    }
                }
                if !watch.pending {
                    continue;
                }
            }
            // Paced: not before the gap since the last check has passed
            // (later, at random, for a notice concerning every tenant);
            // what came in meanwhile is taken with it.
            let mut at = watch.next_check;
            if watch.broad {
                at = at.max(Instant::now()) + jitter();
            }
            tokio::time::sleep_until(at).await;
            watch.drain();
            watch.broad = false;
            match self.check_use(caller, watch).await {
                Ok(None) => {
                    watch.pending = false;
                    watch.confirmed = Instant::now();
                    watch.next_check = Instant::now() + MIN_GAP;
                }
                Ok(Some(ended)) => return ended,
                Err(e) => {
                    tracing::warn!(error = %e, "an open use could not be checked again");
                    if watch.confirmed.elapsed() >= bound {
                        return UseEnded::unavailable();
                    }
                    // Owed still, but not again at once.
                    watch.next_check = Instant::now() + EXPIRY_TICK.min(bound / 4).max(MIN_GAP);
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
        match self.store.tenant(&scope).await?.status {
            TenantStatus::Active => {}
            TenantStatus::Suspended => {
                return Ok(Some(UseEnded::denied_because(
                    Reason::PrincipalDisabled,
                    "the tenant was suspended",
                )));
            }
            TenantStatus::Shredded => {
                return Ok(Some(UseEnded {
                    reason: Reason::CredentialDestroyed,
                    error: Error::FailedPrecondition(Precondition::TenantShredded),
                }));
            }
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
        for u in &watch.uses {
            if !principal.may_enter(&u.environment) {
                return Ok(Some(UseEnded::denied(Reason::EnvironmentNotPermitted)));
            }
            let grant = match self.store.get_grant(&scope, u.grant).await {
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
            let credential = match self.store.get_credential(&scope, u.credential).await {
                Ok(c) => c,
                Err(Error::NotFound(_)) => {
                    return Ok(Some(UseEnded::unusable(Unusable::Destroyed)));
                }
                Err(e) => return Err(e),
            };
            if let Some(why) = credential.unusable(now) {
                return Ok(Some(UseEnded::unusable(why)));
            }
            if credential.current_version != u.version {
                return Ok(Some(UseEnded {
                    reason: Reason::CredentialRevoked,
                    error: Error::FailedPrecondition(Precondition::RevealStateChanged(
                        "the credential's value in use was replaced (rotated, rolled back or \
                         revoked)",
                    )),
                }));
            }
            if let Some(owner) = &credential.owner
                && principal.role != Role::Admin
                && watch.on_behalf_of.as_deref() != Some(owner.as_str())
            {
                return Ok(Some(UseEnded::denied(Reason::OwnerMismatch)));
            }
            for at in [grant.expires_at, credential.expires_at]
                .into_iter()
                .flatten()
            {
                ends_at = Some(ends_at.map_or(at, |e| e.min(at)));
            }
        }
        // The rule the use's record was checked by at commit, once more:
        // what the reads above do not name (the identity binding; a change
        // between them) ends the use too.
        let checks: Vec<RevealCheck> = watch
            .uses
            .iter()
            .map(|u| RevealCheck {
                credential: u.credential,
                version: u.version,
                principal: watch.principal,
                role: watch.role,
                grant: Some(u.grant),
                binding: Some(watch.binding),
            })
            .collect();
        if let Some(why) = self.store.check_reveals(&scope, &checks).await? {
            return Ok(Some(if why.contains("binding") {
                UseEnded::denied_because(Reason::UnknownIdentity, why)
            } else {
                UseEnded {
                    reason: Reason::StaleState,
                    error: Error::FailedPrecondition(Precondition::RevealStateChanged(why)),
                }
            }));
        }
        watch.ends_at = ends_at;
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A watch of one use of `credential` in `tenant`, following `rx`.
    fn watch(
        tenant: TenantId,
        credential: CredentialId,
        rx: broadcast::Receiver<Change>,
    ) -> UseWatch {
        let now = Instant::now();
        UseWatch {
            tenant,
            principal: PrincipalId::generate(),
            role: Role::Agent,
            binding: BindingId::generate(),
            on_behalf_of: None,
            uses: vec![Watched {
                credential,
                environment: Environment::parse("dev", "environment").expect("environment"),
                version: 1,
                grant: GrantId::generate(),
            }],
            ends_at: None,
            changes: rx,
            confirmed: now,
            tick: now + EXPIRY_TICK,
            pending: false,
            broad: false,
            next_check: now,
        }
    }

    #[test]
    fn notices_waiting_are_taken_together() {
        let (tx, rx) = broadcast::channel(16);
        let (tenant, credential) = (TenantId::generate(), CredentialId::generate());
        let mut w = watch(tenant, credential, rx);
        let other = TenantId::generate();
        // Another tenant's, and another credential's, concern nothing.
        tx.send(Change::Access(other)).expect("send");
        tx.send(Change::Credential(tenant, CredentialId::generate()))
            .expect("send");
        tx.send(Change::Requests(tenant)).expect("send");
        w.drain();
        assert!(!w.pending && !w.broad);
        // Many of the tenant's: one check owed, and the queue emptied.
        for _ in 0..10 {
            tx.send(Change::Data(tenant)).expect("send");
        }
        tx.send(Change::Credential(tenant, credential))
            .expect("send");
        w.drain();
        assert!(w.pending && !w.broad);
        assert!(w.changes.try_recv().is_err(), "the queue is drained");
    }

    #[test]
    fn a_notice_for_every_tenant_or_a_lag_is_broad() {
        let (tx, rx) = broadcast::channel(2);
        let (tenant, credential) = (TenantId::generate(), CredentialId::generate());
        let mut w = watch(tenant, credential, rx);
        tx.send(Change::Everything).expect("send");
        w.drain();
        assert!(w.pending && w.broad);
        let (tx, rx) = broadcast::channel(2);
        let mut w = watch(tenant, credential, rx);
        for _ in 0..5 {
            tx.send(Change::Requests(TenantId::generate()))
                .expect("send");
        }
        w.drain();
        assert!(w.pending && w.broad, "missed notices may have concerned it");
    }

    #[test]
    fn jitter_stays_below_its_bound() {
        for _ in 0..100 {
            assert!(jitter() < JITTER);
        }
    }
}
