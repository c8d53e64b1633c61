//! Chain heads and the platform chain ([`ChainStore`]): reading chain
//! heads, and the platform-level chain of events that belong to no tenant
//! (its own tables, outside tenant row-level security; see migration
//! `20261206000002_audit_checkpoints`). One append at a time: each locks
//! the platform head (the dialect's [`Dialect::LOCK_PLATFORM_HEAD`]), so
//! the chain never forks. Platform events are rare (failed authentication,
//! coalesced by the server), so they skip the group committer.

use async_trait::async_trait;
use strongroom_core::Result;
use strongroom_core::audit::{AuditDraft, AuditEvent, ChainHead, PLATFORM_CHAIN};
use strongroom_core::chains::ChainStore;
use strongroom_core::ids::TenantId;
use strongroom_core::page::{Page, PageRequest};
use strongroom_core::scope::{PlatformScope, TenantScope};
use strongroom_core::store::AuditFilter;

use crate::audit::{bind_event, events_page, push_common_filters, sequence_cursor};
use crate::dialect::{Dialect, SqlBuilder};
use crate::error::db;
use crate::rows::{AuditRow, ChainHeadRow, EventRow, HeadRow, audit_columns};
use crate::store::SqlStore;

/// Tenant `$1`'s chain head.
const HEAD: &str = "SELECT sequence, hash FROM audit_heads WHERE tenant_id = $1";

/// Tenant `$1`'s chain head, with its tenant.
const TENANT_HEAD: &str = "SELECT tenant_id, sequence, hash FROM audit_heads WHERE tenant_id = $1";

/// Every tenant's chain head, by tenant.
const HEADS: &str = "SELECT tenant_id, sequence, hash FROM audit_heads ORDER BY tenant_id";

/// Event `$2` of tenant `$1`'s chain.
const EVENT_AT: &str = concat!(
    "SELECT ",
    audit_columns!(),
    " FROM audit_events WHERE tenant_id = $1 AND sequence = $2"
);

/// The platform chain's head.
const PLATFORM_HEAD: &str = "SELECT sequence, hash FROM platform_audit_heads WHERE id = 1";

/// Inserts one platform event: `$1`..`$22` in [`audit_columns!`] order.
const PLATFORM_INSERT: &str = concat!(
    "INSERT INTO platform_audit_events (",
    audit_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
     $18, $19, $20, $21, $22)"
);

/// Advances the platform chain's head to sequence `$1`, hash `$2`.
const PLATFORM_ADVANCE: &str =
    "UPDATE platform_audit_heads SET sequence = $1, hash = $2 WHERE id = 1";

/// Platform event `$1`.
const PLATFORM_EVENT_AT: &str = concat!(
    "SELECT ",
    audit_columns!(),
    " FROM platform_audit_events WHERE sequence = $1"
);

/// Up to `$2` platform events after sequence `$1`, in order.
const PLATFORM_AFTER: &str = concat!(
    "SELECT ",
    audit_columns!(),
    " FROM platform_audit_events WHERE sequence > $1 ORDER BY sequence LIMIT $2"
);

/// Platform events before sequence `$1` (the filters follow).
const PLATFORM_EVENTS: &str = concat!(
    "SELECT ",
    audit_columns!(),
    " FROM platform_audit_events WHERE sequence < "
);

#[async_trait]
impl<D: Dialect> ChainStore for SqlStore<D> {
    async fn audit_head(&self, scope: &TenantScope<'_>) -> Result<ChainHead> {
        let tenant = scope.tenant_id();
        let mut tx = self.tenant_tx(tenant, false).await?;
        let head: HeadRow = D::query(HEAD)
            .bind(tenant.as_uuid())
            .fetch_one(&mut *tx)
            .await
            .map_err(db("audit chain head"))?;
        tx.commit().await.map_err(db("audit chain head"))?;
        head.try_into()
    }

    async fn audit_heads(&self, tenant: Option<TenantId>) -> Result<Vec<(TenantId, ChainHead)>> {
        let mut tx = self.platform_tx(None, false).await?;
        let rows: Vec<ChainHeadRow> = match tenant {
            Some(t) => {
                D::query(TENANT_HEAD)
                    .bind(t.as_uuid())
                    .fetch_all(&mut *tx)
                    .await
            }
            None => D::query(HEADS).fetch_all(&mut *tx).await,
        }
        .map_err(db("audit chain head"))?;
        tx.commit().await.map_err(db("audit chain head"))?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    async fn chain_event_at(
        &self,
        tenant: Option<TenantId>,
        sequence: u64,
    ) -> Result<Option<AuditEvent>> {
        let sequence = i64::try_from(sequence).unwrap_or(i64::MAX);
        let row: Option<AuditRow> = match tenant {
            Some(t) => {
                let mut tx = self.tenant_tx(t, false).await?;
                let row = D::query(EVENT_AT)
                    .bind(t.as_uuid())
                    .bind(sequence)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db("audit event"))?;
                tx.commit().await.map_err(db("audit event"))?;
                row
            }
            None => {
                // Platform mode: row-level security shows the platform
                // chain to nothing else.
                let mut tx = self.platform_tx(None, false).await?;
                let row = D::query(PLATFORM_EVENT_AT)
                    .bind(sequence)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db("platform audit event"))?;
                tx.commit().await.map_err(db("platform audit event"))?;
                row
            }
        };
        row.map(TryInto::try_into).transpose()
    }

    async fn append_platform_audit(&self, draft: AuditDraft) -> Result<AuditEvent> {
        let mut tx = self.platform_tx(None, true).await?;
        let event = self.append_platform_in(&mut tx, draft).await?;
        tx.commit().await.map_err(db("platform audit event"))?;
        Ok(event)
    }

    async fn platform_audit_head(&self) -> Result<ChainHead> {
        // Platform mode: row-level security shows the platform chain to
        // nothing else.
        let mut tx = self.platform_tx(None, false).await?;
        let head: HeadRow = D::query(PLATFORM_HEAD)
            .fetch_one(&mut *tx)
            .await
            .map_err(db("platform audit chain head"))?;
        tx.commit().await.map_err(db("platform audit chain head"))?;
        head.try_into()
    }

    async fn platform_audit_after(&self, after: u64, limit: u32) -> Result<Vec<AuditEvent>> {
        let mut tx = self.platform_tx(None, false).await?;
        let rows: Vec<AuditRow> = D::query(PLATFORM_AFTER)
            .bind(i64::try_from(after).unwrap_or(i64::MAX))
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await
            .map_err(db("platform audit event"))?;
        tx.commit().await.map_err(db("platform audit event"))?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    async fn query_platform_audit(
        &self,
        _scope: &PlatformScope<'_>,
        filter: &AuditFilter,
        page: &PageRequest,
    ) -> Result<Page<AuditEvent>> {
        let before = sequence_cursor(page)?;
        let mut q = SqlBuilder::<D>::new(PLATFORM_EVENTS);
        q.push_bind(before);
        push_common_filters(&mut q, filter);
        q.push(" ORDER BY sequence DESC LIMIT ")
            .push_bind(page.fetch_limit());
        let mut tx = self.platform_tx(None, false).await?;
        let rows: Vec<AuditRow> = q
            .fetch_all(&mut *tx)
            .await
            .map_err(db("platform audit event"))?;
        tx.commit().await.map_err(db("platform audit event"))?;
        events_page(rows, page)
    }
}

impl<D: Dialect> SqlStore<D> {
    /// Links `draft` into the platform chain inside `tx` (a platform
    /// transaction): reads the head (locked until commit on Postgres),
    /// seals, inserts and advances the head.
    pub(crate) async fn append_platform_in(
        &self,
        tx: &mut sqlx::Transaction<'static, D>,
        draft: AuditDraft,
    ) -> Result<AuditEvent> {
        let head: HeadRow = D::query(D::LOCK_PLATFORM_HEAD)
            .fetch_one(&mut **tx)
            .await
            .map_err(db("platform audit chain head"))?;
        let head = ChainHead::try_from(head)?;
        let event = draft.seal(PLATFORM_CHAIN, head.sequence + 1, head.hash);
        let row = EventRow::of(&event)?;
        let sequence = row.sequence;
        bind_event(D::query(PLATFORM_INSERT), row)
            .execute(&mut **tx)
            .await
            .map_err(db("platform audit event"))?;
        D::query(PLATFORM_ADVANCE)
            .bind(sequence)
            .bind(event.hash.as_slice())
            .execute(&mut **tx)
            .await
            .map_err(db("platform audit chain head"))?;
        Ok(event)
    }
}
