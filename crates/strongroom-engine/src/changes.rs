//! Keeping cached state true to the store: what a change makes stale is
//! dropped.

use strongroom_core::ids::{CredentialId, TenantId};
use strongroom_core::scope::TenantScope;

use crate::Engine;

impl Engine {
    /// Drops cached callers (and data) of `tenant` after a change of who
    /// they are.
    pub(crate) fn callers_changed(&self, tenant: TenantId) {
        self.caches.invalidate(tenant);
    }

    /// Drops cached state of the scope's tenant after a local change of who
    /// its callers are, so the next call sees it.
    pub(crate) fn changed(&self, scope: &TenantScope<'_>) {
        self.forget_failed_logins();
        self.caches.invalidate(scope.tenant_id());
    }

    /// Drops the scope's tenant's cached credentials and grants after a
    /// local change of them.
    pub(crate) fn data_changed(&self, scope: &TenantScope<'_>) {
        self.caches.invalidate_data(scope.tenant_id());
    }

    /// Drops one cached credential after a local change of it.
    pub(crate) fn credential_changed(&self, scope: &TenantScope<'_>, id: CredentialId) {
        self.caches.invalidate_credential(scope.tenant_id(), id);
    }
}
