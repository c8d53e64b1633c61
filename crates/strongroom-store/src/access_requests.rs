//! A tenant's access requests ([`AccessRequestStore`]): filed (a pending
//! duplicate of the same requester answered instead), decided (an approval
//! inserts its grant in the same transaction as the status and the event),
//! and expired by the sweeper, tenant by tenant under the same sweep lock
//! as the leases'. Every writer takes the tenant's chain head first, so two
//! servers filing or deciding the same request run one after the other.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::{FromRow, Transaction};
use strongroom_core::access::{
    AccessDecision, AccessRequestFilter, AccessRequestRecord, AccessRequestStatus,
    AccessRequestStore,
};
use strongroom_core::audit::AuditDraft;
use strongroom_core::ids::{AccessRequestId, DeliveryId, GrantId, PrincipalId, TenantId};
use strongroom_core::names::Environment;
use strongroom_core::notify::{Delivery, NewDelivery};
use strongroom_core::page::{Page, PageRequest};
use strongroom_core::policy::{Capability, Destination, Selector};
use strongroom_core::scope::TenantScope;
use strongroom_core::store::Change;
use strongroom_core::time::Timestamp;
use strongroom_core::{Error, Result};
use uuid::Uuid;

use crate::dialect::{Dialect, SqlBuilder};
use crate::error::{db, uuid_cursor};
use crate::rows::{HeadRow, json};
use crate::store::SqlStore;

macro_rules! request_columns {
    () => {
        "tenant_id, id, requester_id, requester_name, selector, environments, capability, \
         destinations, purpose, on_behalf_of, duration_secs, status, same_key, created_at, \
         expires_at, decided_at, decided_by, decision_reason, grant_id"
    };
}

/// Inserts a request: `$1`..`$19` in [`request_columns!`] order.
const INSERT: &str = concat!(
    "INSERT INTO access_requests (",
    request_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
     $18, $19)"
);

/// Tenant `$1`'s request `$2`.
const BY_ID: &str = concat!(
    "SELECT ",
    request_columns!(),
    " FROM access_requests WHERE tenant_id = $1 AND id = $2"
);

/// Tenant `$1`'s pending request of requester `$2` with key `$3`,
/// unexpired at `$4`.
const SAME_PENDING: &str = concat!(
    "SELECT ",
    request_columns!(),
    " FROM access_requests WHERE tenant_id = $1 AND requester_id = $2 AND same_key = $3 \
      AND status = 'pending' AND expires_at > $4 ORDER BY id LIMIT 1"
);

/// Tenant `$1`'s requests (the filters follow).
const REQUESTS: &str = concat!(
    "SELECT ",
    request_columns!(),
    " FROM access_requests WHERE tenant_id = "
);

/// Decides tenant `$1`'s request `$2`: status `$3`, at `$4`, by `$5`,
/// reason `$6`, grant `$7`.
const DECIDE: &str = "UPDATE access_requests SET status = $3, decided_at = $4, decided_by = $5, \
     decision_reason = $6, grant_id = $7 WHERE tenant_id = $1 AND id = $2";

/// Expires up to `$3` of tenant `$1`'s pending requests that ran out by
/// `$2`, each decided when it ran out.
const EXPIRE: &str = concat!(
    "UPDATE access_requests SET status = 'expired', decided_at = expires_at \
     WHERE tenant_id = $1 AND status = 'pending' AND expires_at <= $2 AND id IN \
     (SELECT id FROM access_requests WHERE tenant_id = $1 AND status = 'pending' \
      AND expires_at <= $2 ORDER BY id LIMIT $3) RETURNING ",
    request_columns!()
);

/// Up to `$2` tenants with pending requests that ran out by `$1`.
const DUE_TENANTS: &str = "SELECT DISTINCT tenant_id FROM access_requests \
     WHERE status = 'pending' AND expires_at <= $1 LIMIT $2";

/// Enqueues tenant `$1`'s delivery `$2`: event, payload, due at `$5`,
/// created at `$6`.
const INSERT_DELIVERY: &str = "INSERT INTO notification_deliveries \
     (tenant_id, id, event, payload, next_attempt_at, created_at) VALUES ($1, $2, $3, $4, $5, $6)";

/// Tenant `$1`'s deliveries (the cursor and order follow).
const DELIVERIES: &str = "SELECT id, event, payload, attempts, last_status, last_error, \
     next_attempt_at, delivered_at, created_at FROM notification_deliveries WHERE tenant_id = ";

#[derive(FromRow)]
pub struct DeliveryRow {
    id: Uuid,
    event: String,
    payload: String,
    attempts: i32,
    last_status: Option<i32>,
    last_error: String,
    next_attempt_at: Option<i64>,
    delivered_at: Option<i64>,
    created_at: i64,
}

impl From<DeliveryRow> for Delivery {
    fn from(r: DeliveryRow) -> Self {
        Self {
            id: DeliveryId::from_uuid(r.id),
            event: r.event,
            payload: r.payload,
            attempts: u32::try_from(r.attempts).unwrap_or(0),
            last_status: r.last_status.and_then(|s| u16::try_from(s).ok()),
            last_error: r.last_error,
            next_attempt_at: r.next_attempt_at.map(Timestamp::from_micros),
            delivered_at: r.delivered_at.map(Timestamp::from_micros),
            created_at: Timestamp::from_micros(r.created_at),
        }
    }
}

#[derive(FromRow)]
pub struct RequestRow {
    tenant_id: Uuid,
    id: Uuid,
    requester_id: Uuid,
    requester_name: String,
    selector: String,
    environments: String,
    capability: String,
    destinations: String,
    purpose: String,
    on_behalf_of: Option<String>,
    duration_secs: i64,
    status: String,
    #[allow(dead_code)]
    same_key: String,
    created_at: i64,
    expires_at: i64,
    decided_at: Option<i64>,
    decided_by: Option<Uuid>,
    decision_reason: String,
    grant_id: Option<Uuid>,
}

fn corrupt(what: &str) -> Error {
    Error::internal(format!("stored access request {what} is not valid"))
}

impl TryFrom<RequestRow> for AccessRequestRecord {
    type Error = Error;
    fn try_from(r: RequestRow) -> Result<Self> {
        let capability = match r.capability.as_str() {
            "inject" => Capability::Inject,
            "reveal" => Capability::Reveal,
            _ => return Err(corrupt("capability")),
        };
        Ok(AccessRequestRecord {
            id: AccessRequestId::from_uuid(r.id),
            tenant: TenantId::from_uuid(r.tenant_id),
            requester: PrincipalId::from_uuid(r.requester_id),
            requester_name: r.requester_name,
            selector: Selector::parse(&r.selector, "selector").map_err(|_| corrupt("selector"))?,
            environments: serde_json::from_str::<Vec<Environment>>(&r.environments)
                .map_err(|_| corrupt("environments"))?,
            capability,
            destinations: serde_json::from_str::<Vec<Destination>>(&r.destinations)
                .map_err(|_| corrupt("destinations"))?,
            purpose: r.purpose,
            on_behalf_of: r.on_behalf_of,
            duration: Duration::from_secs(
                u64::try_from(r.duration_secs).map_err(|_| corrupt("duration"))?,
            ),
            status: AccessRequestStatus::parse(&r.status).ok_or_else(|| corrupt("status"))?,
            created_at: Timestamp::from_micros(r.created_at),
            expires_at: Timestamp::from_micros(r.expires_at),
            decided_at: r.decided_at.map(Timestamp::from_micros),
            decided_by: r.decided_by.map(PrincipalId::from_uuid),
            decision_reason: r.decision_reason,
            grant: r.grant_id.map(GrantId::from_uuid),
        })
    }
}

impl<D: Dialect> SqlStore<D> {
    /// Takes tenant's chain head (the lock every writer of its requests
    /// takes first).
    async fn lock_head(tx: &mut Transaction<'static, D>, tenant: TenantId) -> Result<()> {
        D::query(D::LOCK_TENANT_HEAD)
            .bind(tenant.as_uuid())
            .fetch_one::<HeadRow>(&mut **tx)
            .await
            .map_err(db("audit chain head"))?;
        Ok(())
    }

    async fn read_request(
        tx: &mut Transaction<'static, D>,
        tenant: TenantId,
        id: AccessRequestId,
    ) -> Result<AccessRequestRecord> {
        let row: RequestRow = D::query(BY_ID)
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .fetch_one(&mut **tx)
            .await
            .map_err(db("access request"))?;
        row.try_into()
    }

    /// Expires up to `limit` of `tenant`'s requests; `None` if another
    /// server holds the sweep lock.
    async fn expire_tenant_requests(
        &self,
        tenant: TenantId,
        now: Timestamp,
        by: &AuditDraft,
        limit: u32,
    ) -> Result<Option<u32>> {
        let mut tx = self.tenant_tx(tenant, true).await?;
        if !D::try_sweep_lock(&mut tx).await? {
            return Ok(None);
        }
        Self::lock_head(&mut tx, tenant).await?;
        let rows: Vec<RequestRow> = D::query(EXPIRE)
            .bind(tenant.as_uuid())
            .bind(now.as_micros())
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await
            .map_err(db("access request"))?;
        let mut expired = rows
            .into_iter()
            .map(AccessRequestRecord::try_from)
            .collect::<Result<Vec<_>>>()?;
        expired.sort_by_key(|r| r.id.as_uuid());
        let drafts = expired
            .iter()
            .map(|r| {
                let mut d = by.clone();
                d.credential_name = Some(r.selector.to_text());
                d.environment = r.environments.first().map(ToString::to_string);
                d.on_behalf_of.clone_from(&r.on_behalf_of);
                d.detail = Some(strongroom_core::audit::AuditDetail::AccessRequestDecided {
                    request: r.id,
                    requester: r.requester,
                    grant: None,
                    grant_expires_at: None,
                    reason: "not decided in time".to_owned(),
                });
                d
            })
            .collect();
        self.append_all_in(&mut tx, tenant, drafts).await?;
        if !expired.is_empty() {
            D::notify_changes(&mut tx, self.origin, &[Change::Requests(tenant)]).await?;
        }
        tx.commit().await.map_err(db("access request"))?;
        if !expired.is_empty() {
            self.announce_appended(tenant);
        }
        Ok(Some(
            u32::try_from(expired.len()).map_err(|_| Error::internal("too many requests"))?,
        ))
    }
}

#[async_trait]
impl<D: Dialect> AccessRequestStore for SqlStore<D> {
    async fn file_access_request(
        &self,
        scope: &TenantScope<'_>,
        request: &AccessRequestRecord,
        notice: Option<&NewDelivery>,
        now: Timestamp,
        audit: AuditDraft,
    ) -> Result<(AccessRequestRecord, bool)> {
        let tenant = scope.tenant_id();
        if request.tenant != tenant {
            return Err(Error::internal("access request of another tenant"));
        }
        let key = request.same_key();
        let mut tx = self.tenant_tx(tenant, true).await?;
        Self::lock_head(&mut tx, tenant).await?;
        let existing: Option<RequestRow> = D::query(SAME_PENDING)
            .bind(tenant.as_uuid())
            .bind(request.requester.as_uuid())
            .bind(key.as_str())
            .bind(now.as_micros())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db("access request"))?;
        if let Some(row) = existing {
            tx.commit().await.map_err(db("access request"))?;
            return Ok((row.try_into()?, false));
        }
        D::query(INSERT)
            .bind(tenant.as_uuid())
            .bind(request.id.as_uuid())
            .bind(request.requester.as_uuid())
            .bind(request.requester_name.as_str())
            .bind(request.selector.to_text())
            .bind(json(&request.environments)?)
            .bind(request.capability.as_str())
            .bind(json(&request.destinations)?)
            .bind(request.purpose.as_str())
            .bind(request.on_behalf_of.clone())
            .bind(i64::try_from(request.duration.as_secs()).unwrap_or(i64::MAX))
            .bind(AccessRequestStatus::Pending.as_str())
            .bind(key.as_str())
            .bind(request.created_at.as_micros())
            .bind(request.expires_at.as_micros())
            .bind(None::<i64>)
            .bind(None::<Uuid>)
            .bind("")
            .bind(None::<Uuid>)
            .execute(&mut *tx)
            .await
            .map_err(db("access request"))?;
        if let Some(n) = notice {
            D::query(INSERT_DELIVERY)
                .bind(tenant.as_uuid())
                .bind(n.id.as_uuid())
                .bind(n.event.as_str())
                .bind(n.payload.as_str())
                .bind(n.created_at.as_micros())
                .bind(n.created_at.as_micros())
                .execute(&mut *tx)
                .await
                .map_err(db("notification delivery"))?;
        }
        self.append_in(&mut tx, tenant, audit).await?;
        tx.commit().await.map_err(db("access request"))?;
        let mut stored = request.clone();
        stored.status = AccessRequestStatus::Pending;
        Ok((stored, true))
    }

    async fn list_notification_deliveries(
        &self,
        scope: &TenantScope<'_>,
        page: &PageRequest,
    ) -> Result<Page<Delivery>> {
        let tenant = scope.tenant_id();
        let mut q = SqlBuilder::<D>::new(DELIVERIES);
        q.push_bind(tenant.as_uuid());
        if page.after.is_some() {
            let before = uuid_cursor(page.after.as_ref())?;
            q.push(" AND id < ").push_bind(before);
        }
        q.push(" ORDER BY id DESC LIMIT ")
            .push_bind(page.fetch_limit());
        let mut tx = self.tenant_tx(tenant, false).await?;
        let rows: Vec<DeliveryRow> = q
            .fetch_all(&mut *tx)
            .await
            .map_err(db("notification delivery"))?;
        tx.commit().await.map_err(db("notification delivery"))?;
        let items: Vec<Delivery> = rows.into_iter().map(Delivery::from).collect();
        Ok(Page::from_rows(items, page.size, |d| d.id.to_string()))
    }

    async fn get_access_request(
        &self,
        scope: &TenantScope<'_>,
        id: AccessRequestId,
    ) -> Result<AccessRequestRecord> {
        let tenant = scope.tenant_id();
        let mut tx = self.tenant_tx(tenant, false).await?;
        let request = Self::read_request(&mut tx, tenant, id).await?;
        tx.commit().await.map_err(db("access request"))?;
        Ok(request)
    }

    async fn list_access_requests(
        &self,
        scope: &TenantScope<'_>,
        filter: &AccessRequestFilter,
        now: Timestamp,
        page: &PageRequest,
    ) -> Result<Page<AccessRequestRecord>> {
        let tenant = scope.tenant_id();
        let mut q = SqlBuilder::<D>::new(REQUESTS);
        q.push_bind(tenant.as_uuid());
        if page.after.is_some() {
            // Newest first: the next page lies below the cursor.
            let before = uuid_cursor(page.after.as_ref())?;
            q.push(" AND id < ").push_bind(before);
        }
        if let Some(p) = filter.requester {
            q.push(" AND requester_id = ").push_bind(p.as_uuid());
        }
        match filter.status {
            None => {}
            Some(AccessRequestStatus::Pending) => {
                q.push(" AND status = 'pending' AND expires_at > ")
                    .push_bind(now.as_micros());
            }
            Some(AccessRequestStatus::Expired) => {
                q.push(" AND (status = 'expired' OR (status = 'pending' AND expires_at <= ")
                    .push_bind(now.as_micros())
                    .push("))");
            }
            Some(s) => {
                q.push(" AND status = ").push_bind(s.as_str());
            }
        }
        q.push(" ORDER BY id DESC LIMIT ")
            .push_bind(page.fetch_limit());
        let mut tx = self.tenant_tx(tenant, false).await?;
        let rows: Vec<RequestRow> = q.fetch_all(&mut *tx).await.map_err(db("access request"))?;
        tx.commit().await.map_err(db("access request"))?;
        let items = rows
            .into_iter()
            .map(AccessRequestRecord::try_from)
            .collect::<Result<Vec<_>>>()?;
        Ok(Page::from_rows(items, page.size, |r| r.id.to_string()))
    }

    async fn decide_access_request(
        &self,
        scope: &TenantScope<'_>,
        id: AccessRequestId,
        decision: &AccessDecision,
        by: PrincipalId,
        now: Timestamp,
        audit: AuditDraft,
    ) -> Result<AccessRequestRecord> {
        let tenant = scope.tenant_id();
        let mut tx = self.tenant_tx(tenant, true).await?;
        Self::lock_head(&mut tx, tenant).await?;
        let mut request = Self::read_request(&mut tx, tenant, id).await?;
        match request.effective_status(now) {
            AccessRequestStatus::Pending => {}
            AccessRequestStatus::Expired => {
                return Err(Error::precondition(
                    "the access request has expired: nobody answered it in time",
                ));
            }
            s => {
                return Err(Error::precondition(format!(
                    "the access request is not pending (it is {})",
                    s.as_str()
                )));
            }
        }
        let (status, reason, grant) = match decision {
            AccessDecision::Approve(grant) => {
                if grant.access_request != Some(id) || grant.tenant != tenant {
                    return Err(Error::internal("an approval's grant must name its request"));
                }
                crate::grants::insert_in(&mut tx, grant).await?;
                (
                    AccessRequestStatus::Approved,
                    grant.reason.clone(),
                    Some(grant.id),
                )
            }
            AccessDecision::Deny(reason) => (AccessRequestStatus::Denied, reason.clone(), None),
        };
        D::query(DECIDE)
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .bind(status.as_str())
            .bind(now.as_micros())
            .bind(by.as_uuid())
            .bind(reason.as_str())
            .bind(grant.map(|g| g.as_uuid()))
            .execute(&mut *tx)
            .await
            .map_err(db("access request"))?;
        self.append_in(&mut tx, tenant, audit).await?;
        tx.commit().await.map_err(db("access request"))?;
        request.status = status;
        request.decided_at = Some(now);
        request.decided_by = Some(by);
        request.decision_reason = reason;
        request.grant = grant;
        Ok(request)
    }

    async fn expire_access_requests(
        &self,
        now: Timestamp,
        by: &AuditDraft,
        limit: u32,
    ) -> Result<u32> {
        let mut tx = D::begin_lease_sweep(self).await?;
        let tenants: Vec<(Uuid,)> = D::query(DUE_TENANTS)
            .bind(now.as_micros())
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await
            .map_err(db("access request"))?;
        tx.commit().await.map_err(db("access request"))?;
        let mut expired = 0u32;
        for (tenant,) in tenants {
            let left = limit.saturating_sub(expired);
            if left == 0 {
                break;
            }
            match self
                .expire_tenant_requests(TenantId::from_uuid(tenant), now, by, left)
                .await?
            {
                Some(n) => expired += n,
                None => break,
            }
        }
        Ok(expired)
    }
}
