//! Authentication of verified peer identities, cached, with failed
//! attempts answered from memory for a moment.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use strongroom_core::scope::Authenticated;
use strongroom_core::{Error, Result};

use crate::Engine;

/// Failed authentications: when, and the answer.
pub(crate) type FailedLogins =
    std::sync::Mutex<HashMap<(String, Option<String>), (std::time::Instant, Error)>>;

/// How long a failed authentication is answered from memory. Local changes
/// of principals or bindings forget every failure at once; changes made
/// through another server are seen within this time.
const FAILED_LOGIN_TTL: Duration = Duration::from_secs(1);

/// Most failed authentications remembered; past this the memory starts
/// afresh.
const FAILED_LOGINS_MAX: usize = 10_000;

impl Engine {
    /// Authenticates a verified peer identity, from the cache when fresh.
    pub async fn authenticate(
        &self,
        identity: &str,
        tenant_hint: Option<&str>,
    ) -> Result<Arc<Authenticated>> {
        if let Some(caller) = self.caches.caller(identity, tenant_hint) {
            return Ok(caller);
        }
        let key = (identity.to_owned(), tenant_hint.map(str::to_owned));
        if let Some(error) = self.recent_failure(&key) {
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
                    self.remember_failure(key, &e);
                }
                return Err(e);
            }
        };
        self.caches
            .put_caller(identity, tenant_hint, ticket, Arc::clone(&caller));
        Ok(caller)
    }

    /// A failed authentication of `key` still fresh in memory.
    pub(crate) fn recent_failure(&self, key: &(String, Option<String>)) -> Option<Error> {
        let failures = self.failed_logins.lock().ok()?;
        let (at, error) = failures.get(key)?;
        (at.elapsed() < FAILED_LOGIN_TTL).then(|| error.clone())
    }

    pub(crate) fn remember_failure(&self, key: (String, Option<String>), error: &Error) {
        if let Ok(mut failures) = self.failed_logins.lock() {
            if failures.len() >= FAILED_LOGINS_MAX {
                failures.clear();
            }
            failures.insert(key, (std::time::Instant::now(), error.clone()));
        }
    }

    /// Forgets every failed authentication (principals or bindings changed).
    pub(crate) fn forget_failed_logins(&self) {
        if let Ok(mut failures) = self.failed_logins.lock() {
            failures.clear();
        }
    }
}
