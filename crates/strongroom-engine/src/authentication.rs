//! Authentication of verified peer identities, cached, with failed
//! attempts answered from memory for a moment (see [`crate::cache`]).

use std::sync::Arc;

use strongroom_core::scope::Authenticated;
use strongroom_core::{Error, Result};

use crate::Engine;

impl Engine {
    /// The caller a verified peer identity authenticated as, while the
    /// cache holds it: the path most calls take, without waiting. On
    /// `None`, [`Engine::authenticate`] decides.
    pub fn cached_caller(
        &self,
        identity: &str,
        tenant_hint: Option<&str>,
    ) -> Option<Arc<Authenticated>> {
        self.caches.caller(identity, tenant_hint)
    }

    /// Authenticates a verified peer identity, from the cache when fresh.
    pub async fn authenticate(
        &self,
        identity: &str,
        tenant_hint: Option<&str>,
    ) -> Result<Arc<Authenticated>> {
        if let Some(caller) = self.caches.caller(identity, tenant_hint) {
            return Ok(caller);
        }
        if let Some(error) = self.caches.failed_login(identity, tenant_hint) {
            return Err(error);
        }
        let ticket = self.caches.caller_ticket();
        let caller = match self
            .authenticator
            .authenticate(self.store.as_ref(), identity, tenant_hint)
            .await
        {
            Ok(c) => Arc::new(c),
            Err(e) => {
                if matches!(e, Error::Unauthenticated(_) | Error::PermissionDenied(_)) {
                    self.caches.put_failed_login(identity, tenant_hint, &e);
                }
                return Err(e);
            }
        };
        self.caches
            .put_caller(identity, tenant_hint, ticket, Arc::clone(&caller));
        Ok(caller)
    }
}
