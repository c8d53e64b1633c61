//! The rotation monitor's state ([`RotationStore`]): which tenants and
//! credentials it watches, and the reminders it recorded in
//! `rotation_reminders`, one row per (credential, reminder, window).
//!
//! A reminder's row, its notifier delivery, the credential's `expired`
//! status (for an expired one) and its audit events commit in one
//! transaction, under the monitor lock (Postgres: an advisory lock every
//! server shares; SQLite: one server) and the tenant's chain head. The row's
//! key makes a second recording of the same window write nothing, so even a
//! monitor that raced past the lock could not send a reminder twice.

use async_trait::async_trait;
use sqlx::{FromRow, Transaction};
use strongroom_core::ids::{CredentialId, TenantId};
use strongroom_core::rotation::{Monitored, Reminder, ReminderKind, RotationStore};
use strongroom_core::scope::SystemScope;
use strongroom_core::tenant::{Tenant, TenantStatus};
use strongroom_core::time::Timestamp;
use strongroom_core::{Error, Result};
use uuid::Uuid;

use crate::dialect::Dialect;
use crate::error::db;
use crate::rows::{CredentialRow, HeadRow, TenantRow, credential_columns, tenant_columns};
use crate::store::SqlStore;

/// Up to `$2` tenants with ids above `$1`.
const TENANTS: &str = concat!(
    "SELECT ",
    tenant_columns!(),
    " FROM tenants WHERE id > $1 ORDER BY id LIMIT $2"
);

/// Up to `$3` of tenant `$1`'s active, undestroyed credentials with ids
/// above `$2`.
const CREDENTIALS: &str = concat!(
    "SELECT ",
    credential_columns!(),
    " FROM credentials WHERE tenant_id = $1 AND id > $2 AND status = 'active' \
      AND destroyed_at IS NULL ORDER BY id LIMIT $3"
);

/// Tenant `$1`'s reminders of credentials with ids from `$2` to `$3`.
const REMINDERS: &str = "SELECT credential_id, reminder, window_at FROM rotation_reminders \
     WHERE tenant_id = $1 AND credential_id >= $2 AND credential_id <= $3";

/// Records tenant `$1`'s reminder `$3` of credential `$2` for window `$4`
/// (delivery `$5`, at `$6`) unless already recorded.
const INSERT_REMINDER: &str = "INSERT INTO rotation_reminders \
     (tenant_id, credential_id, reminder, window_at, delivery_id, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING";

/// Marks tenant `$1`'s credential `$2` expired at `$3` if it is active and
/// past its expiry.
const EXPIRE: &str = "UPDATE credentials SET status = 'expired', updated_at = $3 \
     WHERE tenant_id = $1 AND id = $2 AND status = 'active' AND expires_at IS NOT NULL \
     AND expires_at <= $3";

/// Enqueues tenant `$1`'s delivery `$2`: event, payload, due at `$5`,
/// created at `$6`.
const INSERT_DELIVERY: &str = "INSERT INTO notification_deliveries \
     (tenant_id, id, event, payload, next_attempt_at, created_at) VALUES ($1, $2, $3, $4, $5, $6)";

#[derive(FromRow)]
pub struct ReminderRow {
    credential_id: Uuid,
    reminder: String,
    window_at: i64,
}

impl<D: Dialect> SqlStore<D> {
    /// Records one reminder inside `tx`; whether it was new.
    async fn record_reminder(
        &self,
        tx: &mut Transaction<'static, D>,
        tenant: TenantId,
        r: &Reminder,
        now: Timestamp,
    ) -> Result<bool> {
        if r.kind == ReminderKind::Expired {
            let marked = D::query(EXPIRE)
                .bind(tenant.as_uuid())
                .bind(r.credential.as_uuid())
                .bind(now.as_micros())
                .execute(&mut **tx)
                .await
                .map_err(db("credential"))?;
            if marked == 0 {
                return Ok(false);
            }
        }
        let inserted = D::query(INSERT_REMINDER)
            .bind(tenant.as_uuid())
            .bind(r.credential.as_uuid())
            .bind(r.kind.as_str())
            .bind(r.window.as_micros())
            .bind(r.delivery.as_ref().map(|d| d.id.as_uuid()))
            .bind(now.as_micros())
            .execute(&mut **tx)
            .await
            .map_err(db("rotation reminder"))?;
        if inserted == 0 {
            return Ok(false);
        }
        if let Some(n) = &r.delivery {
            D::query(INSERT_DELIVERY)
                .bind(tenant.as_uuid())
                .bind(n.id.as_uuid())
                .bind(n.event.as_str())
                .bind(n.payload.as_str())
                .bind(n.created_at.as_micros())
                .bind(n.created_at.as_micros())
                .execute(&mut **tx)
                .await
                .map_err(db("notification delivery"))?;
        }
        for event in &r.events {
            self.append_in(tx, tenant, event.clone()).await?;
        }
        Ok(true)
    }
}

#[async_trait]
impl<D: Dialect> RotationStore for SqlStore<D> {
    async fn monitored_tenants(
        &self,
        _system: &SystemScope,
        after: Option<TenantId>,
        limit: u32,
    ) -> Result<Vec<Tenant>> {
        let mut tx = self.platform_tx(None, false).await?;
        let rows: Vec<TenantRow> = D::query(TENANTS)
            .bind(after.map_or(Uuid::nil(), |t| t.as_uuid()))
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await
            .map_err(db("tenant"))?;
        tx.commit().await.map_err(db("tenant"))?;
        let tenants = rows
            .into_iter()
            .map(Tenant::try_from)
            .collect::<Result<Vec<_>>>()?;
        Ok(tenants)
    }

    async fn monitored_credentials(
        &self,
        _system: &SystemScope,
        tenant: TenantId,
        after: Option<CredentialId>,
        limit: u32,
    ) -> Result<Vec<Monitored>> {
        let mut tx = self.tenant_tx(tenant, false).await?;
        let rows: Vec<CredentialRow> = D::query(CREDENTIALS)
            .bind(tenant.as_uuid())
            .bind(after.map_or(Uuid::nil(), |c| c.as_uuid()))
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await
            .map_err(db("credential"))?;
        let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
            tx.commit().await.map_err(db("credential"))?;
            return Ok(Vec::new());
        };
        let reminders: Vec<ReminderRow> = D::query(REMINDERS)
            .bind(tenant.as_uuid())
            .bind(first.id)
            .bind(last.id)
            .fetch_all(&mut *tx)
            .await
            .map_err(db("rotation reminder"))?;
        tx.commit().await.map_err(db("credential"))?;
        let mut out = rows
            .into_iter()
            .map(|r| {
                Ok(Monitored {
                    credential: r.try_into()?,
                    reminded: Vec::new(),
                })
            })
            .collect::<Result<Vec<Monitored>>>()?;
        for r in reminders {
            let kind = ReminderKind::parse(&r.reminder)
                .ok_or_else(|| Error::internal("stored rotation reminder is not valid"))?;
            if let Some(m) = out
                .iter_mut()
                .find(|m| m.credential.id.as_uuid() == r.credential_id)
            {
                m.reminded.push((kind, Timestamp::from_micros(r.window_at)));
            }
        }
        Ok(out)
    }

    async fn record_reminders(
        &self,
        _system: &SystemScope,
        tenant: TenantId,
        reminders: &[Reminder],
        now: Timestamp,
    ) -> Result<Option<Vec<bool>>> {
        let mut tx = self.tenant_tx(tenant, true).await?;
        if !D::try_monitor_lock(&mut tx).await? {
            return Ok(None);
        }
        let tenant_active: Option<(String,)> = D::query("SELECT status FROM tenants WHERE id = $1")
            .bind(tenant.as_uuid())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db("tenant"))?;
        if tenant_active.is_none_or(|(s,)| s != TenantStatus::Active.as_str()) {
            return Ok(Some(vec![false; reminders.len()]));
        }
        D::query(D::LOCK_TENANT_HEAD)
            .bind(tenant.as_uuid())
            .fetch_one::<HeadRow>(&mut *tx)
            .await
            .map_err(db("audit chain head"))?;
        let mut recorded = Vec::with_capacity(reminders.len());
        for r in reminders {
            recorded.push(self.record_reminder(&mut tx, tenant, r, now).await?);
        }
        tx.commit().await.map_err(db("rotation reminder"))?;
        Ok(Some(recorded))
    }
}
