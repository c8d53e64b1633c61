//! In-memory caches of the reveal path: authenticated callers (and, for a
//! moment, failed authentications), credential metadata with the current
//! version's *encrypted* envelope, and grants. Never plaintext.
//!
//! Correctness does not rest on these caches being fresh. Every reveal's
//! audit record is committed with a check that the state it was decided on
//! (credential version and status, principal and role, grant, the caller's
//! identity binding) is still the stored state, and a failed check retries
//! without the cache. What a change makes stale is dropped by one path,
//! [`Caches::apply`], fed the [`Change`] every local commit reports (see
//! `Engine::commit`) and the notices of other servers sharing the database;
//! a generation counter keeps a fill that raced with a change from storing
//! stale data.
//!
//! Notices can be lost without anyone noticing (a pooler in transaction
//! mode, a half-open listener connection), and operations other than
//! reveals (writes, rotations, administration) are decided on cached state
//! without a check at commit. So every entry is also trusted for at most
//! the configured time to live (`cache.ttl_ms`) after it was read from the
//! store: that bounds how long a change made through another server can go
//! unseen here, whatever happens to the notices. Credential metadata gets a
//! bound of its own (`cache.credential_ttl_ms`, longer by default): every
//! path that uses a cached credential is checked again where it commits.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use strongroom_core::Error;
use strongroom_core::credential::{Credential, StoredVersion};
use strongroom_core::ids::{CredentialId, PrincipalId, TenantId};
use strongroom_core::names::{CredentialName, Environment};
use strongroom_core::policy::Grant;
use strongroom_core::scope::Authenticated;
use strongroom_core::store::Change;
use tokio::sync::broadcast;

use crate::scan::ScanIndexes;
use crate::scrubbing::ScrubCache;

/// Most cached credentials per tenant before the tenant's cache is reset.
const MAX_CREDENTIALS: usize = 100_000;
/// Most cached callers before the caller cache is reset.
const MAX_CALLERS: usize = 50_000;
/// How long an entry is trusted when no time to live is configured.
pub const DEFAULT_TTL: Duration = Duration::from_secs(5);
/// How long credential metadata is trusted when no time to live is
/// configured (see `Limits::credential_cache_ttl`).
pub const DEFAULT_CREDENTIAL_TTL: Duration = Duration::from_secs(60);
/// How long a failed authentication is answered from memory. Changes of
/// principals or bindings forget every failure at once (local ones and
/// those announced by other servers); were a notice lost, this bounds how
/// long a change goes unseen.
const FAILED_LOGIN_TTL: Duration = Duration::from_secs(1);
/// Changes held for followers of [`Caches::subscribe`] that have not read
/// them yet; one further behind is told it lagged.
const NOTICES: usize = 1024;
/// Most failed authentications remembered; past this the memory starts
/// afresh.
const FAILED_LOGINS_MAX: usize = 10_000;

/// An identity and the tenant it named, as a caller presents them.
type CallerKey = (String, Option<String>);

/// A cached value and when it was read from the store (the start of the
/// fill that loaded it).
struct Stamped<T> {
    value: Arc<T>,
    at: Instant,
}

impl<T> Clone for Stamped<T> {
    fn clone(&self) -> Self {
        Self {
            value: Arc::clone(&self.value),
            at: self.at,
        }
    }
}

impl<T> Stamped<T> {
    /// The value, if it was read less than `ttl` ago.
    fn fresh(&self, ttl: Duration) -> Option<Arc<T>> {
        (self.at.elapsed() < ttl).then(|| Arc::clone(&self.value))
    }
}

/// A credential's metadata and its current version, still encrypted.
#[derive(Debug)]
pub struct CachedCredential {
    /// Metadata.
    pub credential: Credential,
    /// The current version (sealed envelope).
    pub current: StoredVersion,
}

#[derive(Default)]
struct TenantEntry {
    generation: u64,
    by_id: HashMap<CredentialId, Stamped<CachedCredential>>,
    by_path: HashMap<(Environment, CredentialName), Stamped<CachedCredential>>,
    grants: HashMap<PrincipalId, Stamped<Vec<Grant>>>,
}

impl TenantEntry {
    /// Stores `cached`, read from the store at `at`, under its id and path
    /// (resetting a full cache).
    fn insert(&mut self, cached: Arc<CachedCredential>, at: Instant) {
        if self.by_id.len() >= MAX_CREDENTIALS {
            self.by_id.clear();
            self.by_path.clear();
        }
        let key = (
            cached.credential.environment.clone(),
            cached.credential.name.clone(),
        );
        let stamped = Stamped { value: cached, at };
        self.by_id
            .insert(stamped.value.credential.id, stamped.clone());
        self.by_path.insert(key, stamped);
    }

    /// Drops every cached credential and grant; racing fills that started
    /// before are discarded.
    fn clear(&mut self) {
        self.generation += 1;
        self.by_id.clear();
        self.by_path.clear();
        self.grants.clear();
    }
}

struct CallerEntry {
    caller: Arc<Authenticated>,
    tenant: Option<TenantId>,
    at: Instant,
}

/// The caches whose lookups are counted (see [`CacheCounts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheKind {
    /// Authenticated callers.
    Callers,
    /// Grants of a principal.
    Grants,
    /// Credential metadata and sealed current versions.
    Credentials,
}

impl CacheKind {
    /// Every kind, in [`CacheCounts`] order.
    pub const ALL: [CacheKind; 3] = [
        CacheKind::Callers,
        CacheKind::Grants,
        CacheKind::Credentials,
    ];

    /// The kind's name, as metrics label it.
    pub fn name(self) -> &'static str {
        match self {
            CacheKind::Callers => "callers",
            CacheKind::Grants => "grants",
            CacheKind::Credentials => "credentials",
        }
    }
}

/// Lookups of each cache since start-up: `(hits, misses)` indexed as
/// [`CacheKind::ALL`]. A miss is a lookup that found nothing fresh.
pub type CacheCounts = [(u64, u64); 3];

/// The lookup counters: relaxed atomic increments, nothing else on the
/// lookup path.
#[derive(Debug, Default)]
struct Lookups([(AtomicU64, AtomicU64); 3]);

impl Lookups {
    fn count<T>(&self, kind: CacheKind, found: Option<T>) -> Option<T> {
        let (hits, misses) = &self.0[kind as usize];
        if found.is_some() { hits } else { misses }.fetch_add(1, Ordering::Relaxed);
        found
    }

    fn snapshot(&self) -> CacheCounts {
        let read = |(h, m): &(AtomicU64, AtomicU64)| {
            (h.load(Ordering::Relaxed), m.load(Ordering::Relaxed))
        };
        [read(&self.0[0]), read(&self.0[1]), read(&self.0[2])]
    }
}

/// The caches of one server.
pub struct Caches {
    lookups: Lookups,
    ttl: Duration,
    credential_ttl: Duration,
    tenants: RwLock<HashMap<TenantId, TenantEntry>>,
    callers: RwLock<HashMap<CallerKey, CallerEntry>>,
    caller_generation: AtomicU64,
    /// Authentications that failed, by identity and tenant header, kept for
    /// [`FAILED_LOGIN_TTL`]: a caller repeating a refused call costs no
    /// database query each time (such calls come before any rate limit).
    failed_logins: Mutex<HashMap<CallerKey, (Instant, Error)>>,
    /// The leak-scanning automata of tenants (see `crate::scan`).
    scans: ScanIndexes,
    /// The relay's compiled response scrubbings (see `crate::scrubbing`).
    scrubs: ScrubCache,
    /// Every change applied, repeated to whoever follows them: the long
    /// uses of values (a relayed response) check again on each (see
    /// `crate::credentials::watch`).
    notices: broadcast::Sender<Change>,
}

impl Default for Caches {
    fn default() -> Self {
        Self::new(DEFAULT_TTL, DEFAULT_CREDENTIAL_TTL)
    }
}

/// A snapshot of the generations a fill started at, and when.
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    tenant: u64,
    at: Instant,
}

/// The caller-cache generation a fill started at, and when.
#[derive(Debug, Clone, Copy)]
pub struct CallerTicket {
    generation: u64,
    at: Instant,
}

impl Caches {
    /// Empty caches whose callers and grants are trusted for `ttl` after
    /// they were read from the store, and credentials for `credential_ttl`
    /// (zero: nothing of the kind is cached).
    pub fn new(ttl: Duration, credential_ttl: Duration) -> Self {
        Self {
            lookups: Lookups::default(),
            ttl,
            credential_ttl,
            tenants: RwLock::default(),
            callers: RwLock::default(),
            caller_generation: AtomicU64::default(),
            failed_logins: Mutex::default(),
            scans: ScanIndexes::default(),
            scrubs: ScrubCache::default(),
            notices: broadcast::channel(NOTICES).0,
        }
    }

    /// The changes applied from now on, local and other servers' alike. A
    /// follower that falls behind is told it lagged: changes were missed.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.notices.subscribe()
    }

    /// The tenant's generation now; pass it back when storing what was
    /// loaded after this call.
    pub fn ticket(&self, tenant: TenantId) -> Ticket {
        let at = Instant::now();
        let generation = self
            .tenants
            .read()
            .ok()
            .and_then(|t| t.get(&tenant).map(|e| e.generation))
            .unwrap_or(0);
        Ticket {
            tenant: generation,
            at,
        }
    }

    /// A cached credential by id.
    pub fn credential_by_id(
        &self,
        tenant: TenantId,
        id: CredentialId,
    ) -> Option<Arc<CachedCredential>> {
        let found = (|| {
            self.tenants
                .read()
                .ok()?
                .get(&tenant)?
                .by_id
                .get(&id)?
                .fresh(self.credential_ttl)
        })();
        self.lookups.count(CacheKind::Credentials, found)
    }

    /// A cached credential by environment and name.
    pub fn credential_by_path(
        &self,
        tenant: TenantId,
        environment: &Environment,
        name: &CredentialName,
    ) -> Option<Arc<CachedCredential>> {
        let found = (|| {
            let tenants = self.tenants.read().ok()?;
            let entry = tenants.get(&tenant)?;
            entry
                .by_path
                .get(&(environment.clone(), name.clone()))?
                .fresh(self.credential_ttl)
        })();
        self.lookups.count(CacheKind::Credentials, found)
    }

    /// Stores a loaded credential unless the tenant changed since `ticket`.
    pub fn put_credential(&self, tenant: TenantId, ticket: Ticket, cached: Arc<CachedCredential>) {
        let Ok(mut tenants) = self.tenants.write() else {
            return;
        };
        let entry = tenants.entry(tenant).or_default();
        if entry.generation == ticket.tenant {
            entry.insert(cached, ticket.at);
        }
    }

    /// Cached grants of a principal (direct and by role).
    pub fn grants(&self, tenant: TenantId, principal: PrincipalId) -> Option<Arc<Vec<Grant>>> {
        let found = (|| {
            self.tenants
                .read()
                .ok()?
                .get(&tenant)?
                .grants
                .get(&principal)?
                .fresh(self.ttl)
        })();
        self.lookups.count(CacheKind::Grants, found)
    }

    /// Stores loaded grants unless the tenant changed since `ticket`.
    pub fn put_grants(
        &self,
        tenant: TenantId,
        ticket: Ticket,
        principal: PrincipalId,
        grants: Arc<Vec<Grant>>,
    ) {
        let Ok(mut tenants) = self.tenants.write() else {
            return;
        };
        let entry = tenants.entry(tenant).or_default();
        if entry.generation == ticket.tenant {
            entry.grants.insert(
                principal,
                Stamped {
                    value: grants,
                    at: ticket.at,
                },
            );
        }
    }

    /// The caller-cache generation now (see [`Caches::put_caller`]).
    pub fn caller_ticket(&self) -> CallerTicket {
        CallerTicket {
            at: Instant::now(),
            generation: self.caller_generation.load(Ordering::SeqCst),
        }
    }

    /// A cached caller for `identity` (and tenant hint), if fresh.
    pub fn caller(&self, identity: &str, hint: Option<&str>) -> Option<Arc<Authenticated>> {
        let found = (|| {
            let callers = self.callers.read().ok()?;
            let entry = callers.get(&(identity.to_owned(), hint.map(str::to_owned)))?;
            (entry.at.elapsed() < self.ttl).then(|| Arc::clone(&entry.caller))
        })();
        self.lookups.count(CacheKind::Callers, found)
    }

    /// Hits and misses of each cache since start-up.
    pub fn lookups(&self) -> CacheCounts {
        self.lookups.snapshot()
    }

    /// Stores an authenticated caller unless anything changed since
    /// `ticket`.
    pub fn put_caller(
        &self,
        identity: &str,
        hint: Option<&str>,
        ticket: CallerTicket,
        caller: Arc<Authenticated>,
    ) {
        let Ok(mut callers) = self.callers.write() else {
            return;
        };
        if self.caller_generation.load(Ordering::SeqCst) != ticket.generation {
            return;
        }
        if callers.len() >= MAX_CALLERS {
            callers.clear();
        }
        let tenant = caller.tenant().map(|t| t.id);
        callers.insert(
            (identity.to_owned(), hint.map(str::to_owned)),
            CallerEntry {
                caller,
                tenant,
                at: ticket.at,
            },
        );
    }

    /// A failed authentication of `identity` (with `hint`) still fresh in
    /// memory.
    pub fn failed_login(&self, identity: &str, hint: Option<&str>) -> Option<Error> {
        let failures = self.failed_logins.lock().ok()?;
        let (at, error) = failures.get(&(identity.to_owned(), hint.map(str::to_owned)))?;
        (at.elapsed() < FAILED_LOGIN_TTL).then(|| error.clone())
    }

    /// Remembers a failed authentication of `identity` (with `hint`).
    pub fn put_failed_login(&self, identity: &str, hint: Option<&str>, error: &Error) {
        if let Ok(mut failures) = self.failed_logins.lock() {
            if failures.len() >= FAILED_LOGINS_MAX {
                failures.clear();
            }
            failures.insert(
                (identity.to_owned(), hint.map(str::to_owned)),
                (Instant::now(), error.clone()),
            );
        }
    }

    /// Drops what `change` makes stale: the one way anything cached is
    /// invalidated, for the changes this server commits and the notices of
    /// others alike.
    pub fn apply(&self, change: Change) {
        self.scrubs.apply(change);
        match change {
            Change::Credential(t, c) => {
                self.scans.invalidate(t);
                self.invalidate_credential(t, c);
            }
            Change::Data(t) => self.invalidate_data(t),
            // Nothing cached depends on access requests.
            Change::Requests(_) => {}
            Change::Access(t) | Change::Keys(t) | Change::KeyRetired(t, _) => {
                self.forget_failed_logins();
                self.scans.invalidate(t);
                self.invalidate(t);
            }
            Change::Everything => {
                self.forget_failed_logins();
                self.scans.invalidate_all();
                self.invalidate_all();
            }
        }
        // Nobody following is no failure.
        let _ = self.notices.send(change);
    }

    /// The relay's compiled scrubbings.
    pub(crate) fn scrubs(&self) -> &ScrubCache {
        &self.scrubs
    }

    /// The leak-scanning automata.
    pub(crate) fn scan_indexes(&self) -> &ScanIndexes {
        &self.scans
    }

    /// Forgets every failed authentication (who a caller is may have
    /// changed).
    fn forget_failed_logins(&self) {
        if let Ok(mut failures) = self.failed_logins.lock() {
            failures.clear();
        }
    }

    /// Replaces a credential's entry with the state this server just wrote
    /// (racing fills of the tenant discard what they loaded). Should another
    /// write overtake it, the entry is stale, which reveals detect at commit
    /// and rotations at their compare-and-set.
    pub fn replace_credential(&self, tenant: TenantId, cached: Arc<CachedCredential>) {
        let Ok(mut tenants) = self.tenants.write() else {
            return;
        };
        let entry = tenants.entry(tenant).or_default();
        entry.generation += 1;
        entry.insert(cached, Instant::now());
    }

    /// Drops one cached credential (and makes racing fills of the tenant
    /// discard what they loaded).
    fn invalidate_credential(&self, tenant: TenantId, id: CredentialId) {
        if let Ok(mut tenants) = self.tenants.write() {
            let entry = tenants.entry(tenant).or_default();
            entry.generation += 1;
            if let Some(c) = entry.by_id.remove(&id) {
                let c = &c.value.credential;
                entry
                    .by_path
                    .remove(&(c.environment.clone(), c.name.clone()));
            }
        }
    }

    /// Drops a tenant's cached credentials and grants, keeping its callers.
    fn invalidate_data(&self, tenant: TenantId) {
        if let Ok(mut tenants) = self.tenants.write() {
            tenants.entry(tenant).or_default().clear();
        }
    }

    /// Drops everything cached about `tenant`, callers included.
    fn invalidate(&self, tenant: TenantId) {
        if let Ok(mut tenants) = self.tenants.write() {
            tenants.entry(tenant).or_default().clear();
        }
        self.caller_generation.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut callers) = self.callers.write() {
            callers.retain(|_, e| e.tenant != Some(tenant));
        }
    }

    /// Drops everything (a change notice may have been missed, or an
    /// identity binding changed, which can move identities between tenants).
    fn invalidate_all(&self) {
        if let Ok(mut tenants) = self.tenants.write() {
            tenants.values_mut().for_each(TenantEntry::clear);
        }
        self.caller_generation.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut callers) = self.callers.write() {
            callers.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denied() -> Error {
        Error::Unauthenticated("the client identity is not bound to any principal".into())
    }

    /// Grants cached for a principal of `tenant`.
    fn cache_grants(caches: &Caches, tenant: TenantId, principal: PrincipalId) {
        let ticket = caches.ticket(tenant);
        caches.put_grants(tenant, ticket, principal, Arc::new(Vec::new()));
    }

    #[test]
    fn changes_of_who_callers_are_forget_failed_logins_and_others_keep_them() {
        let caches = Caches::default();
        let tenant = TenantId::generate();
        let remembered = |c: &Caches| c.failed_login("spiffe://td/x", None).is_some();
        caches.put_failed_login("spiffe://td/x", None, &denied());
        assert!(remembered(&caches));
        assert!(caches.failed_login("spiffe://td/x", Some("acme")).is_none());
        caches.apply(Change::Data(tenant));
        caches.apply(Change::Credential(tenant, CredentialId::generate()));
        assert!(
            remembered(&caches),
            "grants and credentials say nothing of callers"
        );
        caches.apply(Change::Access(tenant));
        assert!(!remembered(&caches));
        caches.put_failed_login("spiffe://td/x", None, &denied());
        caches.apply(Change::Everything);
        assert!(!remembered(&caches));
    }

    #[test]
    fn a_change_drops_what_it_makes_stale_in_its_tenant_only() {
        let caches = Caches::default();
        let (acme, other) = (TenantId::generate(), TenantId::generate());
        let principal = PrincipalId::generate();
        cache_grants(&caches, acme, principal);
        cache_grants(&caches, other, principal);
        caches.apply(Change::Credential(acme, CredentialId::generate()));
        assert!(
            caches.grants(acme, principal).is_some(),
            "a credential change keeps grants"
        );
        caches.apply(Change::Data(acme));
        assert!(caches.grants(acme, principal).is_none());
        assert!(caches.grants(other, principal).is_some());
        cache_grants(&caches, acme, principal);
        caches.apply(Change::Access(other));
        assert!(caches.grants(acme, principal).is_some());
        assert!(caches.grants(other, principal).is_none());
        caches.apply(Change::Everything);
        assert!(caches.grants(acme, principal).is_none());
    }

    #[test]
    fn a_fill_that_raced_with_a_change_is_not_kept() {
        let caches = Caches::default();
        let tenant = TenantId::generate();
        let principal = PrincipalId::generate();
        let ticket = caches.ticket(tenant);
        caches.apply(Change::Data(tenant));
        caches.put_grants(tenant, ticket, principal, Arc::new(Vec::new()));
        assert!(caches.grants(tenant, principal).is_none());
    }
}
