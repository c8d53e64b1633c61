//! Root-key rotation, online: every tenant KEK (every version) re-wrapped
//! under the next root key while the servers go on serving, without
//! re-encrypting any credential data.
//!
//! Promises:
//! - every replica reports, on a heartbeat, the ids of the root keys it
//!   holds and the one it wraps new KEKs with (`report_root_keys`); a
//!   rotation is refused (FAILED_PRECONDITION naming them) while a replica
//!   seen within the liveness window (three heartbeats) lacks the next key;
//! - the rotation is recorded as started (server metadata
//!   `root_key_rotation`) before any KEK is touched; each replica, on its
//!   next heartbeat, wraps new KEKs by the next key, and the KEKs are
//!   re-wrapped only once every live replica reports so;
//! - every re-wrap is a compare-and-swap per KEK version and skips a KEK
//!   the next key already opens, so an interrupted rotation is resumed by
//!   calling again (with the same next key: one unfinished rotation to
//!   another key is refused, as its KEKs would open with neither);
//! - reveals never fail during it: a server holding both keys opens a KEK
//!   wrapped by either, and the KEKs themselves (so the data keys) are
//!   unchanged;
//! - the derived keys (checkpoint signing seed, request-fingerprint key)
//!   are kept: wrapped by the next key in `root_key_derived_keys`, so
//!   checkpoints signed before verify after, and idempotency records keep
//!   answering retries across the rotation;
//! - last, the key check is replaced by the next key's: from then on a
//!   server started with the old key alone is refused.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use strongroom_core::audit::{Action, AuditDetail};
use strongroom_core::keys::{DERIVED_KEYS, KeyScope, ROOT_ROTATION, ReplicaReport};
use strongroom_core::page::{MAX_PAGE_SIZE, PageRequest};
use strongroom_core::scope::{Authenticated, SystemScope};
use strongroom_core::store::meta;
use strongroom_core::{Error, Result};
use strongroom_crypto::{KeyCheck, RootKey, WrappedDerivedKeys, WrappedKek};

use crate::keyring::crypto_error;
use crate::{CallContext, Engine};

/// How often a replica reports its root keys unless configured.
pub const DEFAULT_KEY_HEARTBEAT: Duration = Duration::from_secs(5);

/// A rotation's state, stored as JSON in server metadata (not secret: key
/// ids only).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct RotationState {
    /// The key id rotated from.
    from: String,
    /// The key id rotated to.
    to: String,
    /// Whether the key check was replaced.
    done: bool,
}

/// What a completed root-key rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootRotation {
    /// The id of the root key replaced.
    pub previous_key_id: String,
    /// The id of the root key now in use.
    pub new_key_id: String,
    /// KEK versions this call re-wrapped.
    pub keys_rewrapped: u32,
    /// Tenants whose KEKs were checked.
    pub tenants: u32,
}

impl Engine {
    async fn rotation_state(&self) -> Result<Option<RotationState>> {
        match self.store.get_meta(ROOT_ROTATION).await? {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|_| Error::internal("corrupt root-key rotation state")),
            None => Ok(None),
        }
    }

    async fn set_rotation_state(&self, state: &RotationState) -> Result<()> {
        let bytes = serde_json::to_vec(state)
            .map_err(|e| Error::internal(format!("rotation state: {e}")))?;
        self.store.set_meta(ROOT_ROTATION, &bytes).await
    }

    /// This replica's report of its root keys (background task, every
    /// heartbeat). A rotation to this server's next
    /// key that has started switches its wrapping to that key first.
    pub async fn report_root_keys(&self, _system: &SystemScope) -> Result<()> {
        self.report_keys().await
    }

    async fn report_keys(&self) -> Result<()> {
        let (replica, addr) = &self.replica;
        if let (Some(state), Some(next)) = (self.rotation_state().await?, self.keyring.next())
            && state.to == next.key_id()
        {
            self.keyring.switch_to_next();
        }
        let report = ReplicaReport {
            replica: replica.to_owned(),
            addr: addr.to_owned(),
            current_key: self.keyring.current().key_id(),
            next_key: self.keyring.next().map(|k| k.key_id()),
            wraps_with: self.keyring.wrapping().key_id(),
            seen_at: self.now(),
        };
        self.store.report_replica(&report).await
    }

    /// Removes this replica's report (it stops).
    pub async fn forget_replica(&self, _system: &SystemScope) -> Result<()> {
        self.store.forget_replica(&self.replica.0).await
    }

    /// This replica's id (random per start) and listening address.
    pub fn replica(&self) -> (&str, &str) {
        (&self.replica.0, &self.replica.1)
    }

    async fn live_replicas(&self) -> Result<Vec<ReplicaReport>> {
        let window = self.key_heartbeat.saturating_mul(3);
        let since = self.now().minus(window);
        self.store.live_replicas(since).await
    }

    /// Re-wraps every tenant KEK under this server's next root key and
    /// makes it the key the database checks (platform operators). See the
    /// module's promises.
    pub async fn rotate_root_key(
        &self,
        caller: &Authenticated,
        ctx: &CallContext,
    ) -> Result<RootRotation> {
        let scope = caller.platform_scope()?;
        let current = std::sync::Arc::clone(self.keyring.current());
        let next = self.keyring.next().cloned().ok_or_else(|| {
            Error::precondition(
                "this server holds no next root key: configure root_key.next_file (or \
                 STRONGROOM_NEXT_ROOT_KEY) on every replica first",
            )
        })?;
        let (from, to) = (current.key_id(), next.key_id());
        let check = self
            .store
            .get_meta(meta::KEY_CHECK)
            .await?
            .map(KeyCheck::from_bytes)
            .ok_or_else(|| Error::internal("no key check is stored"))?;
        let state = self.rotation_state().await?;
        if next.verify(&check).is_ok() {
            // The key check was replaced but the rotation not marked done
            // (interrupted between the two): finish it.
            if let Some(state) = state.filter(|s| !s.done && s.to == to) {
                return self
                    .finish_root_rotation(&scope, &current, &next, state)
                    .await;
            }
            return Err(Error::precondition(format!(
                "the root key in use is already {to}: replace root_key.file by the next key's \
                 file and remove root_key.next_file on every replica"
            )));
        }
        current.verify(&check).map_err(crypto_error)?;
        if let Some(state) = state
            && !state.done
            && state.to != to
        {
            return Err(Error::precondition(format!(
                "an unfinished rotation to root key {} must be resumed first: configure that key \
                 as root_key.next_file and call again",
                state.to
            )));
        }
        let live = self.live_replicas().await?;
        let missing: Vec<String> = live
            .iter()
            .filter(|r| !r.holds(&to))
            .map(|r| format!("{} ({})", r.replica, r.addr))
            .collect();
        if !missing.is_empty() {
            return Err(Error::precondition(format!(
                "live replicas lack the next root key {to}: {}",
                missing.join(", ")
            )));
        }
        self.set_rotation_state(&RotationState {
            from: from.clone(),
            to: to.clone(),
            done: false,
        })
        .await?;
        self.keyring.switch_to_next();
        self.report_keys().await?;
        self.await_switch(&to).await?;

        // Twice: the second pass finds any KEK added, by a replica that had
        // not switched yet, while the first ran.
        let mut rewrapped = 0u32;
        let mut tenants = BTreeSet::new();
        for _ in 0..2 {
            let (n, _) = self
                .rewrap_pass(&scope, &current, &next, &mut tenants)
                .await?;
            rewrapped += n;
        }
        // The derived keys, kept: wrapped by the next key.
        let keep = match self.store.get_meta(DERIVED_KEYS).await? {
            Some(bytes) => {
                let wrapped = WrappedDerivedKeys::from_bytes(bytes);
                if next.unwrap_derived(&wrapped).is_ok() {
                    None
                } else {
                    let derived = current.unwrap_derived(&wrapped).map_err(crypto_error)?;
                    Some(next.wrap_derived(&derived).map_err(crypto_error)?)
                }
            }
            None => Some(
                next.wrap_derived(self.keyring.derived()?)
                    .map_err(crypto_error)?,
            ),
        };
        if let Some(wrapped) = keep {
            self.store
                .set_meta(DERIVED_KEYS, &wrapped.to_bytes())
                .await?;
        }

        let mut draft = self.platform_draft(&scope, ctx, Action::KeyRotateRoot);
        draft.detail = Some(AuditDetail::Reason {
            reason: format!(
                "root key {from} -> {to}: {rewrapped} KEK versions re-wrapped over {} tenants",
                tenants.len()
            ),
        });
        self.store.append_platform_audit(draft).await?;
        let check = next.key_check().map_err(crypto_error)?;
        self.store
            .set_meta(meta::KEY_CHECK, &check.to_bytes())
            .await?;
        let mut done = self
            .finish_root_rotation(
                &scope,
                &current,
                &next,
                RotationState {
                    from,
                    to,
                    done: false,
                },
            )
            .await?;
        done.keys_rewrapped += rewrapped;
        done.tenants = done
            .tenants
            .max(u32::try_from(tenants.len()).unwrap_or(u32::MAX));
        Ok(done)
    }

    /// The last step, after the key check was replaced (from then on no
    /// server starts with the old key alone): re-wraps any KEK still
    /// wrapped by the old key (added by a replica that had not switched),
    /// then proves every KEK opens with the next key, and only then marks
    /// the rotation done. Resumed by calling RotateRootKey again.
    async fn finish_root_rotation(
        &self,
        scope: &strongroom_core::scope::PlatformScope<'_>,
        current: &RootKey,
        next: &RootKey,
        state: RotationState,
    ) -> Result<RootRotation> {
        let mut tenants = BTreeSet::new();
        let (rewrapped, _) = self.rewrap_pass(scope, current, next, &mut tenants).await?;
        let (_, unopened) = self.rewrap_pass(scope, next, next, &mut tenants).await?;
        if unopened > 0 {
            return Err(Error::internal(format!(
                "{unopened} KEK versions do not open with root key {} after re-wrapping; call \
                 again to resume",
                state.to
            )));
        }
        self.set_rotation_state(&RotationState {
            done: true,
            ..state.clone()
        })
        .await?;
        let (from, to) = (state.from, state.to);
        tracing::info!(from = %from, to = %to, rewrapped, "root key rotated");
        Ok(RootRotation {
            previous_key_id: from,
            new_key_id: to,
            keys_rewrapped: rewrapped,
            tenants: u32::try_from(tenants.len()).unwrap_or(u32::MAX),
        })
    }

    /// One pass over every tenant's KEKs: each one `next` does not open is
    /// re-wrapped from `current` to `next` (compare-and-swap). With
    /// `current` = `next` it re-wraps nothing and only counts. Returns the
    /// KEK versions re-wrapped and those `next` still does not open.
    async fn rewrap_pass(
        &self,
        scope: &strongroom_core::scope::PlatformScope<'_>,
        current: &RootKey,
        next: &RootKey,
        tenants: &mut BTreeSet<strongroom_core::ids::TenantId>,
    ) -> Result<(u32, u32)> {
        let verify_only = std::ptr::eq(current, next);
        let (mut rewrapped, mut unopened) = (0u32, 0u32);
        let mut page = PageRequest {
            size: MAX_PAGE_SIZE,
            after: None,
        };
        loop {
            let found = self.store.list_tenants(scope, &page).await?;
            for tenant in &found.items {
                tenants.insert(tenant.id);
                let key_scope = KeyScope::Platform(scope, tenant.id);
                for kek in self.store.tenant_keks(key_scope).await? {
                    let wrapped = WrappedKek::from_bytes(kek.wrapped.clone());
                    let id = tenant.id.as_uuid();
                    if next.unwrap_kek(id, kek.version, &wrapped).is_ok() {
                        continue;
                    }
                    if verify_only {
                        unopened += 1;
                        continue;
                    }
                    let new = current
                        .rewrap_kek(next, id, kek.version, &wrapped)
                        .map_err(crypto_error)?;
                    if self
                        .store
                        .replace_kek(key_scope, kek.version, &kek.wrapped, &new.to_bytes())
                        .await?
                    {
                        rewrapped += 1;
                    }
                }
            }
            match found.next {
                Some(after) => page.after = Some(after),
                None => break,
            }
        }
        Ok((rewrapped, unopened))
    }

    /// Waits until every live replica reports wrapping new KEKs by `to`
    /// (at most three heartbeats); FAILED_PRECONDITION naming the others.
    async fn await_switch(&self, to: &str) -> Result<()> {
        let deadline = tokio::time::Instant::now() + self.key_heartbeat.saturating_mul(3);
        loop {
            let live = self.live_replicas().await?;
            let lagging: Vec<String> = live
                .iter()
                .filter(|r| r.wraps_with != to)
                .map(|r| format!("{} ({})", r.replica, r.addr))
                .collect();
            if lagging.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::precondition(format!(
                    "replicas have not switched to the next root key yet: {}; call again to \
                     resume",
                    lagging.join(", ")
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
