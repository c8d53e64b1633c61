//! Emergency revoke of a principal: everything it holds, cut in one
//! transaction.
//!
//! Locks are taken in the order every revocation takes them: the
//! principal's row, the rows deleted (its grants, its identity bindings),
//! the tenant's chain head, then the lease rows ended. The head is locked
//! before the leases are ended so that the event, which counts them, is
//! linked after every reveal that committed a lease before it, and every
//! later reveal's check (under the same head lock) sees the principal
//! disabled, its grants and bindings gone.

use strongroom_core::audit::{AuditDetail, AuditDraft};
use strongroom_core::ids::{PrincipalId, TenantId};
use strongroom_core::lease::{LeaseEnd, LeaseHolder};
use strongroom_core::store::PrincipalRevoked;
use strongroom_core::{Error, Result};

use crate::dialect::Dialect;
use crate::error::db;
use crate::principals::{DISABLE, PRINCIPAL};
use crate::rows::{HeadRow, PrincipalRow};
use crate::store::SqlStore;

/// Deletes every grant of tenant `$1` whose subject is principal `$2`.
const DELETE_GRANTS: &str =
    "DELETE FROM grants WHERE tenant_id = $1 AND subject_kind = 'principal' AND subject = $2";

/// Deletes every identity binding of tenant `$1` to principal `$2`.
const DELETE_BINDINGS: &str =
    "DELETE FROM identity_bindings WHERE tenant_id = $1 AND principal_id = $2";

fn count(n: u64, what: &str) -> Result<u32> {
    u32::try_from(n).map_err(|_| Error::internal(format!("too many {what}")))
}

impl<D: Dialect> SqlStore<D> {
    /// See [`PrincipalStore::emergency_revoke_principal`](strongroom_core::store::PrincipalStore::emergency_revoke_principal).
    pub(crate) async fn emergency_revoke(
        &self,
        tenant: TenantId,
        id: PrincipalId,
        reason: &str,
        mut audit: AuditDraft,
    ) -> Result<PrincipalRevoked> {
        let mut tx = self.tenant_tx(tenant, true).await?;
        let disabled: Option<PrincipalRow> = D::query(DISABLE)
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db("principal"))?;
        let was_active = disabled.is_some();
        let row = match disabled {
            Some(row) => row,
            // Disabled already (or absent: not found).
            None => D::query(PRINCIPAL)
                .bind(tenant.as_uuid())
                .bind(id.as_uuid())
                .fetch_one(&mut *tx)
                .await
                .map_err(db("principal"))?,
        };
        let grants = D::query(DELETE_GRANTS)
            .bind(tenant.as_uuid())
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(db("grant"))?;
        let bindings = D::query(DELETE_BINDINGS)
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .execute(&mut *tx)
            .await
            .map_err(db("identity binding"))?;
        D::query(D::LOCK_TENANT_HEAD)
            .bind(tenant.as_uuid())
            .fetch_one::<HeadRow>(&mut *tx)
            .await
            .map_err(db("audit chain head"))?;
        let by = audit.clone();
        let ended = Self::end_leases_in(
            &mut tx,
            tenant,
            LeaseHolder::Principal(id),
            LeaseEnd::PrincipalDisabled,
            &by,
        )
        .await?;
        let revoked = PrincipalRevoked {
            principal: row.try_into()?,
            grants_revoked: count(grants, "grants")?,
            leases_ended: count(ended.len() as u64, "leases")?,
            bindings_deleted: count(bindings, "identity bindings")?,
        };
        if !was_active
            && revoked.grants_revoked == 0
            && revoked.leases_ended == 0
            && revoked.bindings_deleted == 0
        {
            // A repeat: nothing is left to cut, nothing is written.
            tx.rollback().await.map_err(db("principal"))?;
            return Ok(revoked);
        }
        audit.detail = Some(AuditDetail::PrincipalEmergencyRevoke {
            principal: id,
            reason: reason.to_owned(),
            grants_revoked: revoked.grants_revoked,
            leases_ended: revoked.leases_ended,
            bindings_deleted: revoked.bindings_deleted,
        });
        self.append_in(&mut tx, tenant, audit).await?;
        self.append_lease_ends(&mut tx, tenant, &ended, LeaseEnd::PrincipalDisabled, &by)
            .await?;
        tx.commit().await.map_err(db("principal"))?;
        Ok(revoked)
    }
}
