//! The relay's response scrubbing, compiled once per set of values and
//! reused: compiling every encoded form of a value into an automaton costs
//! far more than forwarding a request, so the compiled [`KnownValues`] of
//! the values a request sends are kept and shared by later requests that
//! send the same values.
//!
//! Rules kept here:
//! - an entry is keyed by the tenant and the (credential, version) of each
//!   use, in request order; a rotation makes a new version, so its requests
//!   miss the old entry naturally. A hit is used only if the entry's values
//!   are exactly the request's (a changed injection template composes other
//!   secrets from the same version): otherwise the entry is rebuilt;
//! - what each value is replaced by (a placeholder, unique per run, or
//!   `[strongroom:ENV/NAME]`) is not part of the compiled automaton: it is
//!   the request's own, so runs with different placeholders share an entry;
//! - entries are dropped by the same changes that drop the credential
//!   caches ([`Caches::apply`](crate::cache::Caches::apply)): a credential
//!   written, rotated, rolled back, revoked or destroyed (here or, by change
//!   notice, on another server), a tenant's callers changed, or everything;
//! - the cache is bounded: at most [`MAX_ENTRIES`] entries and
//!   [`MAX_BYTES`] of automata in all, at most [`MAX_TENANT_BYTES`] for one
//!   tenant, least recently used out first, and entries unused for
//!   [`IDLE`] dropped;
//! - the copies of values an entry keeps (to check hits) are wiped when it
//!   is dropped; the automaton's tables are freed, not wiped (see
//!   `strongroom-scan`);
//! - concurrent requests missing the same entry compile it once;
//! - a failure to compile is not cached, and the request it was for fails
//!   closed (its response is not passed on).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use strongroom_core::ids::{CredentialId, TenantId};
use strongroom_core::store::Change;
use strongroom_scan::KnownValues;
use tokio::sync::OnceCell;
use zeroize::Zeroizing;

use crate::Engine;
use crate::credentials::{Authorized, scrub_pairs};

/// Values shorter than this are not scrubbed: a handful of bytes would
/// match ordinary text everywhere.
pub const MIN_SCRUBBED_LEN: usize = 6;

/// Most entries kept.
pub const MAX_ENTRIES: usize = 4096;

/// Most bytes of automata kept in all.
pub const MAX_BYTES: usize = 64 * 1024 * 1024;

/// Most bytes of automata kept for one tenant.
pub const MAX_TENANT_BYTES: usize = 16 * 1024 * 1024;

/// Entries unused this long are dropped.
pub const IDLE: Duration = Duration::from_secs(600);

/// The scrubbing of one response: the values' compiled forms (shared) and
/// what each value is replaced by (this request's). `known` is `None` when
/// the values could not be compiled: nothing may be passed on then.
/// `Debug` shows counts only.
pub struct Scrubbing {
    /// Every encoded form of the values; label `i` is value `i`.
    pub known: Option<Arc<KnownValues>>,
    /// What value `i` is replaced by.
    pub replacements: Vec<String>,
}

impl std::fmt::Debug for Scrubbing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scrubbing")
            .field("known", &self.known)
            .field("replacements", &self.replacements.len())
            .finish()
    }
}

/// Which uses an entry was compiled for.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    tenant: TenantId,
    uses: Vec<(CredentialId, u32)>,
}

/// A compiled (or compiling) entry.
struct Entry {
    /// The values compiled, to check a hit against (wiped when dropped).
    values: Arc<Vec<Zeroizing<String>>>,
    compiled: Arc<OnceCell<Arc<KnownValues>>>,
    /// The automaton's size once compiled (0 before).
    bytes: usize,
    /// When it was last used, for the idle limit.
    used: Instant,
    /// The cache's use count when it was last used, for eviction order.
    order: u64,
}

/// The compiled scrubbings of recent requests (see the module's rules).
#[derive(Default)]
pub(crate) struct ScrubCache {
    entries: Mutex<Entries>,
}

/// The entries and the count of uses.
#[derive(Default)]
struct Entries {
    map: HashMap<Key, Entry>,
    uses: u64,
}

impl ScrubCache {
    fn entries(&self) -> std::sync::MutexGuard<'_, Entries> {
        // The map holds whole values after any panic.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Drops what `change` makes stale.
    pub(crate) fn apply(&self, change: Change) {
        let entries = &mut self.entries().map;
        match change {
            Change::Credential(t, c) => {
                entries.retain(|k, _| k.tenant != t || k.uses.iter().all(|(id, _)| *id != c));
            }
            Change::Access(t) | Change::Keys(t) | Change::KeyRetired(t, _) => {
                entries.retain(|k, _| k.tenant != t);
            }
            Change::Everything => entries.clear(),
            // Grants, environments and access requests do not change values.
            Change::Data(_) | Change::Requests(_) => {}
        }
    }

    /// How many entries are kept.
    pub(crate) fn len(&self) -> usize {
        self.entries().map.len()
    }

    /// The entry's cell for `key` holding `values`: the existing one if its
    /// values are the same, else a new one (replacing it).
    fn cell(
        &self,
        key: &Key,
        values: &Arc<Vec<Zeroizing<String>>>,
    ) -> Arc<OnceCell<Arc<KnownValues>>> {
        let mut guard = self.entries();
        guard.uses += 1;
        let order = guard.uses;
        let entries = &mut guard.map;
        let now = Instant::now();
        if let Some(e) = entries.get_mut(key)
            && e.values.as_slice() == values.as_slice()
        {
            e.used = now;
            e.order = order;
            return Arc::clone(&e.compiled);
        }
        let compiled = Arc::new(OnceCell::new());
        entries.insert(
            key.clone(),
            Entry {
                values: Arc::clone(values),
                compiled: Arc::clone(&compiled),
                bytes: 0,
                used: now,
                order,
            },
        );
        compiled
    }

    /// Records the size of `key`'s compiled entry and evicts what the
    /// bounds call for.
    fn compiled(&self, key: &Key, compiled: &Arc<OnceCell<Arc<KnownValues>>>, bytes: usize) {
        let entries = &mut self.entries().map;
        match entries.get_mut(key) {
            Some(e) if Arc::ptr_eq(&e.compiled, compiled) => e.bytes = bytes,
            _ => return,
        }
        let now = Instant::now();
        entries.retain(|_, e| now.duration_since(e.used) < IDLE);
        loop {
            let total: usize = entries.values().map(|e| e.bytes).sum();
            let tenant: usize = entries
                .iter()
                .filter(|(k, _)| k.tenant == key.tenant)
                .map(|(_, e)| e.bytes)
                .sum();
            let over_tenant = tenant > MAX_TENANT_BYTES;
            if !over_tenant && total <= MAX_BYTES && entries.len() <= MAX_ENTRIES {
                return;
            }
            // The least recently used (of the tenant, when it is over its
            // share), never the one just compiled unless it alone is over.
            let victim = entries
                .iter()
                .filter(|(k, _)| !over_tenant || k.tenant == key.tenant)
                .filter(|(k, _)| *k != key)
                .min_by_key(|(_, e)| e.order)
                .map(|(k, _)| k.clone());
            match victim {
                Some(k) => {
                    entries.remove(&k);
                }
                None => {
                    entries.remove(key);
                    return;
                }
            }
        }
    }

    /// Forgets a failed compilation of `key`.
    fn failed(&self, key: &Key, compiled: &Arc<OnceCell<Arc<KnownValues>>>) {
        let entries = &mut self.entries().map;
        if entries
            .get(key)
            .is_some_and(|e| Arc::ptr_eq(&e.compiled, compiled))
        {
            entries.remove(key);
        }
    }
}

impl Engine {
    /// The scrubbing of the values `authorized` sends: compiled on a
    /// blocking thread on a miss, shared on a hit (see the module's rules).
    pub async fn scrubbing(&self, authorized: &Authorized) -> Scrubbing {
        let pairs = scrub_pairs(authorized);
        let replacements: Vec<String> = pairs.iter().map(|(_, r)| r.clone()).collect();
        let values: Arc<Vec<Zeroizing<String>>> =
            Arc::new(pairs.into_iter().map(|(v, _)| v).collect());
        let Some(tenant) = authorized.injections.first().map(|i| i.credential().tenant) else {
            return Scrubbing {
                known: compile(Arc::clone(&values)).await,
                replacements,
            };
        };
        let key = Key {
            tenant,
            uses: authorized
                .injections
                .iter()
                .map(|i| (i.credential().id, i.version))
                .collect(),
        };
        let cache = self.caches.scrubs();
        let cell = cache.cell(&key, &values);
        let mut fresh = false;
        let known = cell
            .get_or_try_init(|| {
                fresh = true;
                async { compile(Arc::clone(&values)).await.ok_or(()) }
            })
            .await;
        match known {
            Ok(known) => {
                if fresh {
                    cache.compiled(&key, &cell, known.memory_usage());
                }
                Scrubbing {
                    known: Some(Arc::clone(known)),
                    replacements,
                }
            }
            Err(()) => {
                cache.failed(&key, &cell);
                Scrubbing {
                    known: None,
                    replacements,
                }
            }
        }
    }

    /// How many compiled scrubbings are kept (for tests and metrics).
    pub fn scrubbings_cached(&self) -> usize {
        self.caches.scrubs().len()
    }
}

/// Compiles `values` (label `i` for value `i`) on a blocking thread.
async fn compile(values: Arc<Vec<Zeroizing<String>>>) -> Option<Arc<KnownValues>> {
    let built = tokio::task::spawn_blocking(move || {
        KnownValues::new(
            values.iter().enumerate().map(|(i, v)| (i, v.as_bytes())),
            MIN_SCRUBBED_LEN,
        )
    })
    .await;
    match built {
        Ok(Ok(known)) => Some(Arc::new(known)),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "the relay could not build its scrubber");
            None
        }
        Err(e) => {
            tracing::error!(error = %e, "the relay's scrubber build failed");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(tenant: TenantId, uses: &[(CredentialId, u32)]) -> Key {
        Key {
            tenant,
            uses: uses.to_vec(),
        }
    }

    fn values(v: &[&str]) -> Arc<Vec<Zeroizing<String>>> {
        Arc::new(v.iter().map(|s| Zeroizing::new((*s).to_owned())).collect())
    }

    #[test]
    fn hits_need_the_same_values_and_changes_drop_entries() {
        let cache = ScrubCache::default();
        let (t, u) = (TenantId::generate(), TenantId::generate());
        let (c, d) = (CredentialId::generate(), CredentialId::generate());
        let a = cache.cell(&key(t, &[(c, 1)]), &values(&["value-one"]));
        let again = cache.cell(&key(t, &[(c, 1)]), &values(&["value-one"]));
        assert!(Arc::ptr_eq(&a, &again), "same key and values: a hit");
        let other = cache.cell(&key(t, &[(c, 1)]), &values(&["value-two"]));
        assert!(!Arc::ptr_eq(&a, &other), "other values: rebuilt");
        cache.cell(&key(t, &[(c, 2)]), &values(&["value-two"]));
        cache.cell(&key(t, &[(d, 1)]), &values(&["value-three"]));
        cache.cell(&key(u, &[(c, 1)]), &values(&["value-one"]));
        assert_eq!(cache.len(), 4);
        cache.apply(Change::Data(t));
        assert_eq!(cache.len(), 4);
        cache.apply(Change::Credential(t, c));
        assert_eq!(cache.len(), 2, "both versions of c in t dropped");
        cache.apply(Change::Access(u));
        assert_eq!(cache.len(), 1);
        cache.apply(Change::Everything);
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn a_tenant_over_its_share_loses_its_least_recently_used() {
        let cache = ScrubCache::default();
        let (t, u) = (TenantId::generate(), TenantId::generate());
        let other = key(u, &[(CredentialId::generate(), 1)]);
        let cell = cache.cell(&other, &values(&["other-tenant"]));
        cache.compiled(&other, &cell, 1024);
        let mut keys = Vec::new();
        for _ in 0..5 {
            let k = key(t, &[(CredentialId::generate(), 1)]);
            let cell = cache.cell(&k, &values(&["some-value"]));
            cache.compiled(&k, &cell, MAX_TENANT_BYTES / 4);
            keys.push(k);
        }
        let entries = &cache.entries().map;
        assert!(!entries.contains_key(&keys[0]), "the oldest went");
        assert!(keys[1..].iter().all(|k| entries.contains_key(k)));
        assert!(entries.contains_key(&other), "another tenant's stays");
    }
}
