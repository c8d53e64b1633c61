//! Emergency revoke of a principal or of a credential: everything it
//! holds, cut in one transaction.
//!
//! Locks are taken in the order every revocation takes them: the
//! principal's row, the rows deleted (its grants, its identity bindings),
//! the tenant's chain head, then the lease rows ended. The head is locked
//! before the leases are ended so that the event, which counts them, is
//! linked after every reveal that committed a lease before it, and every
//! later reveal's check (under the same head lock) sees the principal
//! disabled, its grants and bindings gone.

use strongroom_core::audit::{AuditDetail, AuditDraft};
use strongroom_core::credential::{Credential, CredentialStatus};
use strongroom_core::ids::{CredentialId, PrincipalId, TenantId};
use strongroom_core::lease::{LeaseEnd, LeaseHolder};
use strongroom_core::store::{CredentialRevoked, EmergencyRotation, PrincipalRevoked};
use strongroom_core::{Error, Precondition, Result};

use crate::credentials::add_version_in;
use crate::dialect::Dialect;
use crate::error::db;
use crate::principals::{DISABLE, PRINCIPAL};
use crate::rows::{CredentialRow, HeadRow, PrincipalRow, credential_columns, version_i32};
use crate::store::SqlStore;

/// Deletes every grant of tenant `$1` whose subject is principal `$2`.
const DELETE_GRANTS: &str =
    "DELETE FROM grants WHERE tenant_id = $1 AND subject_kind = 'principal' AND subject = $2";

/// Deletes every identity binding of tenant `$1` to principal `$2`.
const DELETE_BINDINGS: &str =
    "DELETE FROM identity_bindings WHERE tenant_id = $1 AND principal_id = $2";

/// Locks tenant `$1`'s credential `$2` (a write that changes nothing) and
/// reads it: the first lock of a credential's revocation.
const LOCK_CREDENTIAL: &str = concat!(
    "UPDATE credentials SET updated_at = updated_at WHERE tenant_id = $1 AND id = $2 RETURNING ",
    credential_columns!()
);

/// Revokes tenant `$1`'s credential `$2` at `$3` for reason `$4`.
const REVOKE_CREDENTIAL: &str = concat!(
    "UPDATE credentials SET status = 'revoked', revoked_at = $3, revoke_reason = $4, \
     updated_at = $3 WHERE tenant_id = $1 AND id = $2 RETURNING ",
    credential_columns!()
);

/// Destroys the value of version `$3` of tenant `$1`'s credential `$2`.
const DESTROY_VERSION: &str = "UPDATE credential_versions SET envelope = NULL \
     WHERE tenant_id = $1 AND credential_id = $2 AND version = $3";

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

impl<D: Dialect> SqlStore<D> {
    /// See [`CredentialStore::emergency_revoke_credential`](strongroom_core::store::CredentialStore::emergency_revoke_credential).
    /// Locks in the revocation order: the credential's row (and, rotating,
    /// its versions), the chain head, then the lease rows ended.
    pub(crate) async fn emergency_revoke_credential_in(
        &self,
        tenant: TenantId,
        id: CredentialId,
        reason: &str,
        rotation: Option<EmergencyRotation>,
        mut audit: AuditDraft,
    ) -> Result<CredentialRevoked> {
        let mut tx = self.tenant_tx(tenant, true).await?;
        let before: Credential = D::query(LOCK_CREDENTIAL)
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .fetch_one::<CredentialRow>(&mut *tx)
            .await
            .map_err(db("credential"))?
            .try_into()?;
        let revoked_version = before.current_version;
        let (after, new_version, changed) = match &rotation {
            Some(r) => {
                before.ensure_usable(audit.at)?;
                if before.latest_version != r.expected_latest
                    || r.version.version != r.expected_latest + 1
                    || r.version.credential != id
                {
                    return Err(Error::FailedPrecondition(Precondition::VersionRace));
                }
                let after = add_version_in(
                    &mut tx,
                    tenant,
                    id,
                    r.expected_latest,
                    &r.version,
                    r.retention,
                )
                .await?;
                // The compromised value can no longer be revealed or
                // rolled back to.
                D::query(DESTROY_VERSION)
                    .bind(tenant.as_uuid())
                    .bind(id.as_uuid())
                    .bind(version_i32(revoked_version)?)
                    .execute(&mut *tx)
                    .await
                    .map_err(db("credential version"))?;
                (after, Some(r.version.version), true)
            }
            None if before.status == CredentialStatus::Revoked => (before, None, false),
            None => {
                let after: Credential = D::query(REVOKE_CREDENTIAL)
                    .bind(tenant.as_uuid())
                    .bind(id.as_uuid())
                    .bind(audit.at.as_micros())
                    .bind(reason)
                    .fetch_one::<CredentialRow>(&mut *tx)
                    .await
                    .map_err(db("credential"))?
                    .try_into()?;
                (after, None, true)
            }
        };
        D::query(D::LOCK_TENANT_HEAD)
            .bind(tenant.as_uuid())
            .fetch_one::<HeadRow>(&mut *tx)
            .await
            .map_err(db("audit chain head"))?;
        let by = audit.clone();
        let ended = Self::end_leases_in(
            &mut tx,
            tenant,
            LeaseHolder::Credential(id),
            LeaseEnd::CredentialRevoked,
            &by,
        )
        .await?;
        let mut grants: Vec<_> = ended.iter().filter_map(|l| l.grant).collect();
        grants.sort_by_key(|g| g.as_uuid());
        grants.dedup();
        let revoked = CredentialRevoked {
            credential: after,
            revoked_version,
            new_version,
            leases_ended: count(ended.len() as u64, "leases")?,
            grants,
        };
        if !changed && revoked.leases_ended == 0 {
            // A repeat: nothing is left to cut, nothing is written.
            tx.rollback().await.map_err(db("credential"))?;
            return Ok(revoked);
        }
        audit.version = Some(revoked_version);
        audit.detail = Some(AuditDetail::CredentialEmergencyRevoke {
            reason: reason.to_owned(),
            revoked_version,
            new_version,
            leases_ended: revoked.leases_ended,
            grants: revoked.grants.clone(),
        });
        self.append_in(&mut tx, tenant, audit).await?;
        self.append_lease_ends(&mut tx, tenant, &ended, LeaseEnd::CredentialRevoked, &by)
            .await?;
        tx.commit().await.map_err(db("credential"))?;
        Ok(revoked)
    }
}
