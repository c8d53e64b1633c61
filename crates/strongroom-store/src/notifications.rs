//! The notifier sender's part of the delivery log ([`NotificationStore`]):
//! finding the tenants with deliveries due (a read across tenants, as the
//! lease sweeper's), claiming a tenant's due deliveries in one committed
//! `UPDATE` (on Postgres the rows are picked `FOR UPDATE SKIP LOCKED`, so
//! two servers claiming at once take different rows, and each claimed row's
//! next attempt moves past the send's time so no later claim takes it while
//! it is sent), and recording each attempt under its claim's number, with
//! its `notification.delivery` audit event in the same commit.

use async_trait::async_trait;
use strongroom_core::audit::AuditDraft;
use strongroom_core::ids::TenantId;
use strongroom_core::notify::{Delivery, DeliveryAttempt, NotificationStore};
use strongroom_core::tenant::{Tenant, WrappedKekRecord};
use strongroom_core::time::Timestamp;
use strongroom_core::{Error, Result};
use uuid::Uuid;

use crate::access_requests::DeliveryRow;
use crate::dialect::Dialect;
use crate::error::db;
use crate::rows::{KekRow, TenantRow};
use crate::store::SqlStore;

/// Up to `$2` tenants with deliveries due at `$1`, the one whose oldest due
/// delivery is oldest first (so, past the limit, every tenant's turn comes:
/// a tenant served falls behind the ones still waiting).
const DUE_TENANTS: &str = "SELECT tenant_id FROM notification_deliveries \
     WHERE next_attempt_at IS NOT NULL AND next_attempt_at <= $1 \
     GROUP BY tenant_id ORDER BY MIN(next_attempt_at), tenant_id LIMIT $2";

/// Claims up to `$4` of tenant `$1`'s deliveries due at `$2`, holding each
/// until `$3`; the picking `SELECT` is followed by the dialect's
/// [`Dialect::SKIP_LOCKED`] and a closing parenthesis, then [`RETURNING`].
const CLAIM: &str = "UPDATE notification_deliveries \
     SET attempts = attempts + 1, next_attempt_at = $3 \
     WHERE tenant_id = $1 AND id IN (SELECT id FROM notification_deliveries \
     WHERE tenant_id = $1 AND next_attempt_at IS NOT NULL AND next_attempt_at <= $2 \
     ORDER BY next_attempt_at, id LIMIT $4";

/// What a claim returns.
const RETURNING: &str = ") RETURNING id, event, payload, attempts, last_status, last_error, \
     next_attempt_at, delivered_at, created_at";

/// Records attempt `$3` of tenant `$1`'s delivery `$2`: status `$4`, error
/// `$5`, next attempt `$6`, delivered `$7`; only while no later claim
/// counted another attempt and it is not delivered.
const RECORD: &str = "UPDATE notification_deliveries \
     SET last_status = $4, last_error = $5, next_attempt_at = $6, delivered_at = $7 \
     WHERE tenant_id = $1 AND id = $2 AND attempts = $3 AND delivered_at IS NULL";

#[async_trait]
impl<D: Dialect> NotificationStore for SqlStore<D> {
    async fn due_notification_tenants(&self, now: Timestamp, limit: u32) -> Result<Vec<TenantId>> {
        let mut tx = D::begin_lease_sweep(self).await?;
        let rows: Vec<(Uuid,)> = D::query(DUE_TENANTS)
            .bind(now.as_micros())
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await
            .map_err(db("notification delivery"))?;
        tx.commit().await.map_err(db("notification delivery"))?;
        Ok(rows
            .into_iter()
            .map(|(t,)| TenantId::from_uuid(t))
            .collect())
    }

    async fn claim_notification_deliveries(
        &self,
        tenant: TenantId,
        now: Timestamp,
        hold_until: Timestamp,
        limit: u32,
    ) -> Result<Vec<Delivery>> {
        if hold_until <= now {
            return Err(Error::internal("a claim must hold its deliveries"));
        }
        let sql = format!("{CLAIM}{}{RETURNING}", D::SKIP_LOCKED);
        let mut tx = self.tenant_tx(tenant, true).await?;
        let rows: Vec<DeliveryRow> = D::query(&sql)
            .bind(tenant.as_uuid())
            .bind(now.as_micros())
            .bind(hold_until.as_micros())
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await
            .map_err(db("notification delivery"))?;
        tx.commit().await.map_err(db("notification delivery"))?;
        let mut claimed: Vec<Delivery> = rows.into_iter().map(Delivery::from).collect();
        claimed.sort_by_key(|d| d.id.as_uuid());
        Ok(claimed)
    }

    async fn record_notification_attempt(
        &self,
        tenant: TenantId,
        attempt: &DeliveryAttempt,
        event: AuditDraft,
    ) -> Result<bool> {
        let number = i32::try_from(attempt.attempt)
            .map_err(|_| Error::internal("attempt number out of range"))?;
        let mut tx = self.tenant_tx(tenant, true).await?;
        let done = D::query(RECORD)
            .bind(tenant.as_uuid())
            .bind(attempt.id.as_uuid())
            .bind(number)
            .bind(attempt.status.map(i32::from))
            .bind(attempt.error.as_str())
            .bind(attempt.next_attempt_at.map(|t| t.as_micros()))
            .bind(attempt.delivered_at.map(|t| t.as_micros()))
            .execute(&mut *tx)
            .await
            .map_err(db("notification delivery"))?;
        if done == 0 {
            return Ok(false);
        }
        self.append_in(&mut tx, tenant, event).await?;
        tx.commit().await.map_err(db("notification delivery"))?;
        Ok(true)
    }

    async fn notifier_tenant(&self, tenant: TenantId) -> Result<(Tenant, Vec<WrappedKekRecord>)> {
        let mut tx = self.tenant_tx(tenant, false).await?;
        let row: TenantRow = D::query(crate::tenants::BY_ID)
            .bind(tenant.as_uuid())
            .fetch_one(&mut *tx)
            .await
            .map_err(db("tenant"))?;
        let keks: Vec<KekRow> = D::query(crate::tenants::KEKS)
            .bind(tenant.as_uuid())
            .fetch_all(&mut *tx)
            .await
            .map_err(db("tenant key"))?;
        tx.commit().await.map_err(db("tenant"))?;
        Ok((
            row.try_into()?,
            keks.into_iter()
                .map(TryInto::try_into)
                .collect::<Result<_>>()?,
        ))
    }
}
