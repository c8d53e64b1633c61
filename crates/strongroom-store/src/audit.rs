//! A tenant's audit chain ([`AuditStore`]). Appends and reveals go through
//! the tenant's group committer (see [`crate::group_commit`]); a mutation
//! that commits on its own links its event with [`SqlStore::append_in`],
//! in its own transaction, under the same chain-head lock. Committed
//! changes are announced by the dialect ([`AuditStore::changes`]).

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::Transaction;
use strongroom_core::audit::{AuditDraft, AuditEvent, ChainHead, ChainVerifier, Outcome};
use strongroom_core::ids::TenantId;
use strongroom_core::lease::Lease;
use strongroom_core::page::{Page, PageRequest};
use strongroom_core::scope::TenantScope;
use strongroom_core::store::{AuditFilter, AuditStore, Change, RevealCheck};
use strongroom_core::time::Timestamp;
use strongroom_core::{Error, Result};
use tokio::sync::broadcast;

use crate::dialect::{Dialect, SqlBuilder, Stmt};
use crate::error::db;
use crate::group_commit::checks::CheckIds;
use crate::group_commit::{self, Done, Work};
use crate::rows::{AuditRow, EventRow, HeadRow, audit_columns};
use crate::store::SqlStore;

/// Inserts one event of tenant `$1`'s chain: `$1`..`$21` in
/// [`audit_columns!`] order.
const INSERT: &str = concat!(
    "INSERT INTO audit_events (",
    audit_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
     $18, $19, $20, $21, $22)"
);

/// Advances tenant `$1`'s chain head to sequence `$2`, hash `$3`.
const ADVANCE_HEAD: &str = "UPDATE audit_heads SET sequence = $2, hash = $3 WHERE tenant_id = $1";

/// Tenant `$1`'s events (the filters follow).
const EVENTS: &str = concat!(
    "SELECT ",
    audit_columns!(),
    " FROM audit_events WHERE tenant_id = "
);

/// Up to `$3` of tenant `$1`'s events after sequence `$2`, in order.
const AFTER: &str = concat!(
    "SELECT ",
    audit_columns!(),
    " FROM audit_events WHERE tenant_id = $1 AND sequence > $2 ORDER BY sequence LIMIT $3"
);

#[async_trait]
impl<D: Dialect> AuditStore for SqlStore<D> {
    async fn append_audit(&self, scope: &TenantScope<'_>, draft: AuditDraft) -> Result<AuditEvent> {
        let queue = self.committer(scope.tenant_id())?;
        match group_commit::submit(queue, Work::Append, draft).await? {
            Done::Event(e) | Done::Credential(_, e) => Ok(e),
        }
    }

    async fn append_reveal(
        &self,
        scope: &TenantScope<'_>,
        draft: AuditDraft,
        check: RevealCheck,
        lease: Option<Arc<Lease>>,
    ) -> Result<AuditEvent> {
        if let Some(l) = &lease
            && l.tenant != scope.tenant_id()
        {
            return Err(Error::internal("lease of another tenant"));
        }
        let queue = self.committer(scope.tenant_id())?;
        let work = Work::Reveal(check, lease);
        match group_commit::submit(queue, work, draft).await? {
            Done::Event(e) | Done::Credential(_, e) => Ok(e),
        }
    }

    async fn check_reveals(
        &self,
        scope: &TenantScope<'_>,
        checks: &[RevealCheck],
    ) -> Result<Option<&'static str>> {
        if checks.is_empty() {
            return Ok(None);
        }
        let tenant = scope.tenant_id();
        let mut tx = self.tenant_tx(tenant, false).await?;
        let states = D::read_states(&mut tx, tenant, &CheckIds::of_checks(checks)).await?;
        tx.commit().await.map_err(db("reveal check"))?;
        let now = Timestamp::now();
        Ok(checks.iter().find_map(|c| states.violation(c, now)))
    }

    fn changes(&self) -> broadcast::Receiver<Change> {
        D::subscribe_changes(self)
    }

    fn appended(&self) -> broadcast::Receiver<TenantId> {
        self.appended.subscribe()
    }

    async fn query_audit(
        &self,
        scope: &TenantScope<'_>,
        filter: &AuditFilter,
        page: &PageRequest,
    ) -> Result<Page<AuditEvent>> {
        let tenant = scope.tenant_id();
        let before = sequence_cursor(page)?;
        let mut q = SqlBuilder::<D>::new(EVENTS);
        q.push_bind(tenant.as_uuid());
        q.push(" AND sequence < ").push_bind(before);
        if let Some(c) = filter.credential {
            q.push(" AND credential_id = ").push_bind(c.as_uuid());
        }
        if let Some(p) = filter.principal {
            q.push(" AND principal_id = ").push_bind(p.as_uuid());
        }
        push_common_filters(&mut q, filter);
        if let Some(environments) = &filter.environments {
            // An empty list matches nothing (`IN ()` is not SQL).
            q.push(" AND environment IN (NULL");
            for e in environments {
                q.push(", ").push_bind(e.as_str().to_owned());
            }
            q.push(")");
        }
        q.push(" ORDER BY sequence DESC LIMIT ")
            .push_bind(page.fetch_limit());
        let mut tx = self.tenant_tx(tenant, false).await?;
        let rows: Vec<AuditRow> = q.fetch_all(&mut *tx).await.map_err(db("audit event"))?;
        tx.commit().await.map_err(db("audit event"))?;
        events_page(rows, page)
    }

    async fn audit_after(
        &self,
        scope: &TenantScope<'_>,
        after: u64,
        limit: u32,
    ) -> Result<Vec<AuditEvent>> {
        let tenant = scope.tenant_id();
        let mut tx = self.tenant_tx(tenant, false).await?;
        let rows: Vec<AuditRow> = D::query(AFTER)
            .bind(tenant.as_uuid())
            .bind(i64::try_from(after).unwrap_or(i64::MAX))
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await
            .map_err(db("audit event"))?;
        tx.commit().await.map_err(db("audit event"))?;
        rows.into_iter().map(TryInto::try_into).collect()
    }
}

/// Events read per round trip while an imported chain is verified.
const VERIFY_BATCH: i64 = 1_000;

/// Verifies `tenant`'s whole chain as written in `tx` (an import, before
/// it commits): every event linked to the one before and matching its
/// hash from the first, and the head equal to the last event.
/// `InvalidArgument` naming the first broken sequence otherwise.
pub(crate) async fn verify_chain_in<D: Dialect>(
    tx: &mut Transaction<'static, D>,
    tenant: TenantId,
) -> Result<()> {
    let broken = |sequence: u64, reason: &str| {
        Error::invalid(
            "chunk",
            format!(
                "the export's audit chain does not verify at sequence {sequence} ({reason}); \
                 nothing was imported"
            ),
        )
    };
    let head: HeadRow = D::query(D::LOCK_TENANT_HEAD)
        .bind(tenant.as_uuid())
        .fetch_one(&mut **tx)
        .await
        .map_err(db("audit chain head"))?;
    let head = ChainHead::try_from(head)?;
    let mut verifier = ChainVerifier::default();
    loop {
        let after = verifier.expected_sequence() - 1;
        let rows: Vec<AuditRow> = D::query(AFTER)
            .bind(tenant.as_uuid())
            .bind(i64::try_from(after).unwrap_or(i64::MAX))
            .bind(VERIFY_BATCH)
            .fetch_all(&mut **tx)
            .await
            .map_err(db("audit event"))?;
        if rows.is_empty() {
            break;
        }
        for row in rows {
            let event = AuditEvent::try_from(row)
                .map_err(|_| broken(verifier.expected_sequence(), "an event does not parse"))?;
            verifier
                .push(&event)
                .map_err(|b| broken(b.sequence, b.reason))?;
        }
    }
    let last = verifier.expected_sequence() - 1;
    if last != head.sequence || verifier.head() != head.hash {
        return Err(broken(
            last.max(head.sequence),
            "the head is not the last event",
        ));
    }
    Ok(())
}

impl<D: Dialect> SqlStore<D> {
    /// Links `draft` into `tenant`'s chain inside `tx`: reads the head
    /// (locked until commit on Postgres), seals, inserts, advances the head,
    /// and announces the change an allowed event makes.
    pub(crate) async fn append_in(
        &self,
        tx: &mut Transaction<'static, D>,
        tenant: TenantId,
        draft: AuditDraft,
    ) -> Result<AuditEvent> {
        let head: HeadRow = D::query(D::LOCK_TENANT_HEAD)
            .bind(tenant.as_uuid())
            .fetch_one(&mut **tx)
            .await
            .map_err(db("audit chain head"))?;
        let head = ChainHead::try_from(head)?;
        let change = (draft.outcome == Outcome::Allowed)
            .then(|| Change::of(tenant, draft.action, draft.credential, draft.version))
            .flatten();
        let event = draft.seal(tenant, head.sequence + 1, head.hash);
        let row = EventRow::of(&event)?;
        let sequence = row.sequence;
        bind_event(D::query(INSERT), row)
            .execute(&mut **tx)
            .await
            .map_err(db("audit event"))?;
        D::query(ADVANCE_HEAD)
            .bind(tenant.as_uuid())
            .bind(sequence)
            .bind(event.hash.as_slice())
            .execute(&mut **tx)
            .await
            .map_err(db("audit chain head"))?;
        if let Some(change) = change {
            D::notify_changes(tx, self.origin, &[change]).await?;
        }
        // Just before the caller commits: a follower that reads too early
        // finds it on its next look (see `AuditStore::appended`).
        self.announce_appended(tenant);
        Ok(event)
    }
}

/// Binds one event's columns as the next 21 parameters of `stmt`.
pub(crate) fn bind_event<'q, D: Dialect>(stmt: Stmt<'q, D>, row: EventRow<'q>) -> Stmt<'q, D> {
    let EventRow {
        chain,
        sequence,
        id,
        at,
        principal,
        actor,
        on_behalf_of,
        action,
        credential,
        credential_name,
        version,
        environment,
        purpose,
        outcome,
        reason_code,
        peer,
        request_id,
        trace_id,
        detail,
        prev_hash,
        hash,
        format,
    } = row;
    stmt.bind(chain)
        .bind(sequence)
        .bind(id)
        .bind(at)
        .bind(principal)
        .bind(actor)
        .bind(on_behalf_of)
        .bind(action)
        .bind(credential)
        .bind(credential_name)
        .bind(version)
        .bind(environment)
        .bind(purpose)
        .bind(outcome)
        .bind(reason_code)
        .bind(peer)
        .bind(request_id)
        .bind(trace_id)
        .bind(detail)
        .bind(prev_hash)
        .bind(hash)
        .bind(format)
}

/// The sequence a page of events (newest first) starts below.
pub(crate) fn sequence_cursor(page: &PageRequest) -> Result<i64> {
    match &page.after {
        None => Ok(i64::MAX),
        Some(t) => t
            .parse::<i64>()
            .map_err(|_| Error::invalid("page_token", "is not a valid page token")),
    }
}

/// Adds the filters that apply to both chains (action, outcome, time) to
/// an event query.
pub(crate) fn push_common_filters<D: Dialect>(q: &mut SqlBuilder<'_, D>, filter: &AuditFilter) {
    if let Some(a) = filter.action {
        q.push(" AND action = ").push_bind(a.as_str());
    }
    if let Some(o) = filter.outcome {
        q.push(" AND outcome = ").push_bind(o.as_str());
    }
    if let Some(t) = filter.since {
        q.push(" AND at >= ").push_bind(t.as_micros());
    }
    if let Some(t) = filter.until {
        q.push(" AND at < ").push_bind(t.as_micros());
    }
}

/// A page of events read newest first, its cursor their sequence.
pub(crate) fn events_page(rows: Vec<AuditRow>, page: &PageRequest) -> Result<Page<AuditEvent>> {
    let items = rows
        .into_iter()
        .map(AuditEvent::try_from)
        .collect::<Result<Vec<_>>>()?;
    Ok(Page::from_rows(items, page.size, |e| {
        e.sequence.to_string()
    }))
}
