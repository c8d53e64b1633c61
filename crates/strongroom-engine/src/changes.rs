//! Keeping cached state true to the store. Every write commits its audit
//! record with it, and the record says what changed
//! ([`Change::of`] its action, tenant and credential): that change, the
//! same one the store announces to other servers, is what this server's
//! caches drop, through [`Engine::commit`]. Notices from other servers take
//! the same path ([`Caches::apply`]). No write chooses what to invalidate.

use std::future::Future;
use std::sync::{Arc, Weak};

use strongroom_core::Result;
use strongroom_core::audit::AuditDraft;
use strongroom_core::ids::TenantId;
use strongroom_core::scope::SystemScope;
use strongroom_core::store::{Change, Store};

use crate::Engine;
use crate::cache::Caches;
use crate::keyring::Keyring;

impl Engine {
    /// Commits a write of `tenant`'s state: `write` stores it together with
    /// `draft`, its audit record, in one transaction; once it is committed,
    /// what the change the record reports makes stale is dropped, so the
    /// next call sees the write.
    pub(crate) async fn commit<T, F>(
        &self,
        tenant: TenantId,
        draft: AuditDraft,
        write: impl FnOnce(AuditDraft) -> F,
    ) -> Result<T>
    where
        F: Future<Output = Result<T>>,
    {
        let change = Change::of(tenant, draft.action, draft.credential, draft.version);
        let written = write(draft).await?;
        if let Some(change) = change {
            if let Change::Keys(t) = change {
                self.keyring.evict_tenant(t);
            }
            self.caches.apply(change);
        }
        Ok(written)
    }

    /// Drops what `change` makes stale, for a change committed on a path
    /// other than [`Engine::commit`] (a principal locked by the abuse
    /// controls) or learnt from a refused commit (a reveal decided on
    /// state that changed since).
    pub(crate) fn changed(&self, change: Change) {
        self.caches.apply(change);
    }

    /// Drops cached callers (and data) of `tenant` after a change of who
    /// they are (a principal locked by the abuse controls).
    pub(crate) fn callers_changed(&self, tenant: TenantId) {
        self.changed(Change::Access(tenant));
    }
}

/// Applies the store's change notices (from other servers sharing the
/// database) to `caches` until the caches are dropped, as the background
/// task `system`; notices that may have been missed drop everything. A
/// shredded tenant's unwrapped keys are forgotten from `keyring` (every
/// tenant's, when notices may have been missed: one of them may have been
/// a shred); a retired KEK version's notice evicts that version.
pub(crate) fn spawn_listener(
    store: &Arc<dyn Store>,
    caches: Weak<Caches>,
    keyring: Weak<Keyring>,
    system: SystemScope,
) {
    let mut changes = store.changes();
    tokio::spawn(async move {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            let change = changes.recv().await;
            let Some(caches) = caches.upgrade() else {
                return;
            };
            let keyring = keyring.upgrade();
            match change {
                Ok(change) => {
                    if let Some(keyring) = &keyring {
                        match change {
                            Change::Keys(t) => keyring.evict_tenant(t),
                            Change::KeyRetired(t, v) => keyring.evict_version(t, v),
                            Change::Everything => keyring.evict_all(),
                            _ => {}
                        }
                    }
                    caches.apply(change);
                }
                Err(RecvError::Lagged(missed)) => {
                    if let Some(keyring) = &keyring {
                        keyring.evict_all();
                    }
                    tracing::warn!(
                        task = system.task().as_str(),
                        missed,
                        "change notices were missed: every cache is dropped"
                    );
                    caches.apply(Change::Everything);
                }
                Err(RecvError::Closed) => return,
            }
        }
    });
}
