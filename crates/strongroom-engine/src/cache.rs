//! In-memory caches of the reveal path: authenticated callers, credential
//! metadata with the current version's *encrypted* envelope, and grants.
//! Never plaintext.
//!
//! Correctness does not rest on these caches being fresh. Every reveal's
//! audit record is committed with a check that the state it was decided on
//! (credential version and status, principal and role, grant, the caller's
//! identity binding) is still the stored state, and a failed check retries
//! without the cache. Caches are dropped per tenant after every local change
//! and on change notices from other servers sharing the database; a
//! generation counter keeps a fill that raced with a change from storing
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
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use strongroom_core::credential::{Credential, StoredVersion};
use strongroom_core::ids::{CredentialId, PrincipalId, TenantId};
use strongroom_core::names::{CredentialName, Environment};
use strongroom_core::policy::Grant;
use strongroom_core::scope::Authenticated;

/// Most cached credentials per tenant before the tenant's cache is reset.
const MAX_CREDENTIALS: usize = 100_000;
/// Most cached callers before the caller cache is reset.
const MAX_CALLERS: usize = 50_000;
/// How long an entry is trusted when no time to live is configured.
pub const DEFAULT_TTL: Duration = Duration::from_secs(5);
/// How long credential metadata is trusted when no time to live is
/// configured (see `Limits::credential_cache_ttl`).
pub const DEFAULT_CREDENTIAL_TTL: Duration = Duration::from_secs(60);

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

/// The caches of one server.
pub struct Caches {
    ttl: Duration,
    credential_ttl: Duration,
    tenants: RwLock<HashMap<TenantId, TenantEntry>>,
    callers: RwLock<HashMap<(String, Option<String>), CallerEntry>>,
    caller_generation: AtomicU64,
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
            ttl,
            credential_ttl,
            tenants: RwLock::default(),
            callers: RwLock::default(),
            caller_generation: AtomicU64::default(),
        }
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
        self.tenants
            .read()
            .ok()?
            .get(&tenant)?
            .by_id
            .get(&id)?
            .fresh(self.credential_ttl)
    }

    /// A cached credential by environment and name.
    pub fn credential_by_path(
        &self,
        tenant: TenantId,
        environment: &Environment,
        name: &CredentialName,
    ) -> Option<Arc<CachedCredential>> {
        let tenants = self.tenants.read().ok()?;
        let entry = tenants.get(&tenant)?;
        entry
            .by_path
            .get(&(environment.clone(), name.clone()))?
            .fresh(self.credential_ttl)
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
        self.tenants
            .read()
            .ok()?
            .get(&tenant)?
            .grants
            .get(&principal)?
            .fresh(self.ttl)
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
        let callers = self.callers.read().ok()?;
        let entry = callers.get(&(identity.to_owned(), hint.map(str::to_owned)))?;
        (entry.at.elapsed() < self.ttl).then(|| Arc::clone(&entry.caller))
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

    /// Applies a change notice.
    pub fn apply(&self, change: strongroom_core::store::Change) {
        use strongroom_core::store::Change;
        match change {
            Change::Credential(t, c) => self.invalidate_credential(t, c),
            Change::Data(t) => self.invalidate_data(t),
            Change::Access(t) => self.invalidate(t),
            Change::Everything => self.invalidate_all(),
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
    pub fn invalidate_credential(&self, tenant: TenantId, id: CredentialId) {
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
    pub fn invalidate_data(&self, tenant: TenantId) {
        if let Ok(mut tenants) = self.tenants.write() {
            tenants.entry(tenant).or_default().clear();
        }
    }

    /// Drops everything cached about `tenant`, callers included.
    pub fn invalidate(&self, tenant: TenantId) {
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
    pub fn invalidate_all(&self) {
        if let Ok(mut tenants) = self.tenants.write() {
            tenants.values_mut().for_each(TenantEntry::clear);
        }
        self.caller_generation.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut callers) = self.callers.write() {
            callers.clear();
        }
    }
}
