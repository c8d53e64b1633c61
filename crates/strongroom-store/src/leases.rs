//! A tenant's leases ([`LeaseStore`]). A reveal's lease is inserted in the
//! commit of the reveal's audit event (the group committer's full path
//! calls [`insert_in`]; Postgres' one-round-trip path passes the leases to
//! `append_checked_events`); revocations end leases in their own
//! transaction ([`SqlStore::end_leases_in`]); the sweeper expires them
//! tenant by tenant, one sweeper at a time across servers.

use async_trait::async_trait;
use sqlx::Transaction;
use strongroom_core::audit::{AuditDraft, AuditEvent, ChainHead};
use strongroom_core::ids::{LeaseId, PrincipalId, TenantId};
use strongroom_core::lease::{Lease, LeaseEnd, LeaseFilter, LeaseHolder, LeaseStore};
use strongroom_core::page::{Page, PageRequest};
use strongroom_core::scope::TenantScope;
use strongroom_core::time::Timestamp;
use strongroom_core::{Error, Result};

use crate::dialect::{Dialect, SqlBuilder, insert_chunks};
use crate::error::{db, uuid_cursor};
use crate::group_commit::Head;
use crate::rows::{HeadRow, LeaseRow, lease_columns, version_i32};
use crate::store::SqlStore;

/// A lease's columns as its reveal's event holds them (`e`), in the order
/// of [`lease_columns`], without the state and end.
macro_rules! event_lease_columns {
    () => {
        "e.tenant_id, e.lease_id, e.credential_id, e.credential_name, e.environment, e.version, \
         e.principal_id, e.lease_grant, e.on_behalf_of, e.purpose, e.lease_ttl_secs, \
         e.lease_issued_at, e.lease_expires_at, e.lease_max_expires_at"
    };
}

/// The reveal events (`e`, with their tenant's head `h`) whose lease has
/// no row yet: active leases nothing has changed since the reveal. The
/// events before the sweeper's mark all have theirs (migration
/// 20261211010001), which bounds the search by the expiry index.
macro_rules! unstored_leases {
    () => {
        " FROM audit_events e, audit_heads h \
         WHERE h.tenant_id = e.tenant_id AND e.lease_id IS NOT NULL \
         AND e.lease_expires_at > h.leases_swept_through \
         AND NOT EXISTS (SELECT 1 FROM leases m WHERE m.tenant_id = e.tenant_id AND m.id = e.lease_id)"
    };
}

/// Every lease, as rows of [`lease_columns`] named `l`: its row in
/// `leases` if it has one, else its reveal's event (a reveal records its
/// lease in its event; the lease gets a row when something first changes
/// it, see [`STORE_BY_ID`]).
macro_rules! leases_from {
    () => {
        concat!(
            "(SELECT ",
            lease_columns!(),
            " FROM leases UNION ALL SELECT ",
            event_lease_columns!(),
            ", 'active', NULL, NULL",
            unstored_leases!(),
            ") AS l"
        )
    };
}

/// [`leases_from`], for the export.
pub(crate) const LEASES_FROM: &str = leases_from!();

/// Reads tenant `$1`'s lease `$2`.
const BY_ID: &str = concat!(
    "SELECT ",
    lease_columns!(),
    " FROM ",
    leases_from!(),
    " WHERE tenant_id = $1 AND id = $2"
);

/// Tenant `$1`'s leases (the filters follow).
const LEASES: &str = concat!(
    "SELECT ",
    lease_columns!(),
    " FROM ",
    leases_from!(),
    " WHERE tenant_id = "
);

/// Gives tenant `$1`'s leases that have none a row, copied from their
/// event, as active; the condition on `e` naming which (`$2`) follows.
/// Runs under the tenant's chain-head lock, as every lease writer.
macro_rules! store_leases {
    ($which:literal) => {
        concat!(
            "INSERT INTO leases (",
            lease_columns!(),
            ") SELECT ",
            event_lease_columns!(),
            ", 'active', NULL, NULL",
            unstored_leases!(),
            " AND e.tenant_id = $1 AND ",
            $which
        )
    };
}

/// Gives tenant `$1`'s lease `$2` its row, if it has none.
const STORE_BY_ID: &str = store_leases!("e.lease_id = $2");
/// As [`STORE_BY_ID`], the leases on credential `$2`.
const STORE_BY_CREDENTIAL: &str = store_leases!("e.credential_id = $2");
/// As [`STORE_BY_ID`], the leases grant `$2` allowed.
const STORE_BY_GRANT: &str = store_leases!("e.lease_grant = $2");
/// As [`STORE_BY_ID`], the leases principal `$2` holds.
const STORE_BY_PRINCIPAL: &str = store_leases!("e.principal_id = $2");

/// Stores up to `$3` of tenant `$1`'s leases without a row that ran out by
/// `$2`, as expired when they ran out, the earliest first.
const EXPIRE_UNSTORED: &str = concat!(
    "INSERT INTO leases (",
    lease_columns!(),
    ") SELECT ",
    event_lease_columns!(),
    ", 'expired', e.lease_expires_at, 'expired'",
    unstored_leases!(),
    " AND e.tenant_id = $1 AND e.lease_expires_at <= $2 \
     ORDER BY e.lease_expires_at LIMIT $3 RETURNING ",
    lease_columns!()
);

/// Moves tenant `$1`'s sweeper mark to `$2` (every lease that ran out by
/// then has its row) and its next due time to the first expiry after it.
const MARK_SWEPT: &str = "UPDATE audit_heads SET leases_swept_through = $2, \
     leases_due_at = (SELECT min(e.lease_expires_at) FROM audit_events e \
     WHERE e.tenant_id = $1 AND e.lease_id IS NOT NULL AND e.lease_expires_at > $2) \
     WHERE tenant_id = $1";

/// Moves tenant `$1`'s active lease `$2` of principal `$3` to expire at
/// `$4`.
const RENEW: &str = concat!(
    "UPDATE leases SET expires_at = $4 \
     WHERE tenant_id = $1 AND id = $2 AND principal_id = $3 AND state = 'active' \
     RETURNING ",
    lease_columns!()
);

/// Ends tenant `$1`'s active lease `$2` of principal `$3` as released at
/// `$4`.
const RELEASE: &str = concat!(
    "UPDATE leases SET state = 'released', ended_at = $4, end_reason = 'released' \
     WHERE tenant_id = $1 AND id = $2 AND principal_id = $3 AND state = 'active' \
     RETURNING ",
    lease_columns!()
);

/// Revokes tenant `$1`'s active leases on credential `$2`, at `$3`, for
/// reason `$4`.
const REVOKE_BY_CREDENTIAL: &str = concat!(
    "UPDATE leases SET state = 'revoked', ended_at = $3, end_reason = $4 \
     WHERE tenant_id = $1 AND credential_id = $2 AND state = 'active' RETURNING ",
    lease_columns!()
);

/// As [`REVOKE_BY_CREDENTIAL`], the leases grant `$2` allowed.
const REVOKE_BY_GRANT: &str = concat!(
    "UPDATE leases SET state = 'revoked', ended_at = $3, end_reason = $4 \
     WHERE tenant_id = $1 AND grant_id = $2 AND state = 'active' RETURNING ",
    lease_columns!()
);

/// As [`REVOKE_BY_CREDENTIAL`], the leases principal `$2` holds.
const REVOKE_BY_PRINCIPAL: &str = concat!(
    "UPDATE leases SET state = 'revoked', ended_at = $3, end_reason = $4 \
     WHERE tenant_id = $1 AND principal_id = $2 AND state = 'active' RETURNING ",
    lease_columns!()
);

/// Expires up to `$3` of tenant `$1`'s active leases that ran out by `$2`;
/// each ended when it ran out.
const EXPIRE: &str = concat!(
    "UPDATE leases SET state = 'expired', ended_at = expires_at, end_reason = 'expired' \
     WHERE tenant_id = $1 AND state = 'active' AND expires_at <= $2 AND id IN \
     (SELECT id FROM leases WHERE tenant_id = $1 AND state = 'active' AND expires_at <= $2 \
      ORDER BY id LIMIT $3) RETURNING ",
    lease_columns!()
);

/// Up to `$2` tenants with active leases that ran out by `$1`: stored
/// ones, or (the head's due time) ones their events record.
const DUE_TENANTS: &str = "SELECT tenant_id FROM leases \
     WHERE state = 'active' AND expires_at <= $1 \
     UNION SELECT tenant_id FROM audit_heads WHERE leases_due_at <= $1 LIMIT $2";

/// The insert of a batch's leases, before its rows.
const INSERT: &str = concat!("INSERT INTO leases (", lease_columns!(), ") VALUES ");

/// Leases' TTL in whole seconds, as stored.
pub(crate) fn ttl_secs(lease: &Lease) -> i64 {
    i64::try_from(lease.ttl.as_secs()).unwrap_or(i64::MAX)
}

/// Inserts `leases` (new, active, all of `tenant`) in `tx`, in statements of a few fixed
/// shapes ([`insert_chunks`]).
pub(crate) async fn insert_in<D: Dialect>(
    tx: &mut Transaction<'static, D>,
    tenant: TenantId,
    leases: &[&Lease],
) -> Result<()> {
    // Every lease is of the batch's tenant (SQLite has no row-level
    // security to refuse one that is not).
    if leases.iter().any(|l| l.tenant != tenant) {
        return Err(Error::internal("a lease of another tenant in the batch"));
    }
    let mut rest = leases;
    for size in insert_chunks(leases.len()) {
        let (chunk, after) = rest.split_at(size);
        insert_rows(tx, chunk).await?;
        rest = after;
    }
    Ok(())
}

/// One INSERT of `leases`: its text depends only on how many there are.
async fn insert_rows<D: Dialect>(
    tx: &mut Transaction<'static, D>,
    leases: &[&Lease],
) -> Result<()> {
    let mut q = SqlBuilder::<D>::new(INSERT);
    for (i, l) in leases.iter().enumerate() {
        q.push(if i == 0 { "(" } else { ", (" });
        q.push_bind(l.tenant.as_uuid())
            .push(", ")
            .push_bind(l.id.as_uuid())
            .push(", ")
            .push_bind(l.credential.as_uuid())
            .push(", ")
            .push_bind(l.credential_name.as_str().to_owned())
            .push(", ")
            .push_bind(l.environment.as_str().to_owned())
            .push(", ")
            .push_bind(version_i32(l.version)?)
            .push(", ")
            .push_bind(l.principal.as_uuid())
            .push(", ")
            .push_bind(l.grant.map(|g| g.as_uuid()))
            .push(", ")
            .push_bind(l.on_behalf_of.clone())
            .push(", ")
            .push_bind(l.purpose.clone())
            .push(", ")
            .push_bind(ttl_secs(l))
            .push(", ")
            .push_bind(l.issued_at.as_micros())
            .push(", ")
            .push_bind(l.expires_at.as_micros())
            .push(", ")
            .push_bind(l.max_expires_at.as_micros())
            .push(", 'active', NULL, NULL)");
    }
    q.fetch_all::<(i32,)>(&mut **tx)
        .await
        .map_err(db("lease"))?;
    Ok(())
}

impl<D: Dialect> SqlStore<D> {
    /// Ends the active leases `holder` names as `end` at the time of `by`
    /// (the event of the revocation), in `tx`; returns them, for
    /// [`SqlStore::append_lease_ends`]. Runs after the revocation's own
    /// event took the chain-head lock: a reveal's lease commits under that
    /// lock, so every lease opened before the revocation is seen here, and
    /// every reveal after it is refused by its check. Lease rows are locked
    /// after the head by every writer (renewals, releases, the sweeper).
    pub(crate) async fn end_leases_in(
        tx: &mut Transaction<'static, D>,
        tenant: TenantId,
        holder: LeaseHolder,
        end: LeaseEnd,
        by: &AuditDraft,
    ) -> Result<Vec<Lease>> {
        let (store, sql, id) = match holder {
            LeaseHolder::Credential(c) => (STORE_BY_CREDENTIAL, REVOKE_BY_CREDENTIAL, c.as_uuid()),
            LeaseHolder::Grant(g) => (STORE_BY_GRANT, REVOKE_BY_GRANT, g.as_uuid()),
            LeaseHolder::Principal(p) => (STORE_BY_PRINCIPAL, REVOKE_BY_PRINCIPAL, p.as_uuid()),
        };
        // The leases only their events record get their rows first, so
        // that one update ends every active lease.
        D::query(store)
            .bind(tenant.as_uuid())
            .bind(id)
            .execute(&mut **tx)
            .await
            .map_err(db("lease"))?;
        let rows: Vec<LeaseRow> = D::query(sql)
            .bind(tenant.as_uuid())
            .bind(id)
            .bind(by.at.as_micros())
            .bind(end.as_str())
            .fetch_all(&mut **tx)
            .await
            .map_err(db("lease"))?;
        let mut ended = rows
            .into_iter()
            .map(Lease::try_from)
            .collect::<Result<Vec<_>>>()?;
        ended.sort_by_key(|l| l.id.as_uuid());
        Ok(ended)
    }

    /// Appends a lease event for each of `ended` (ended `end` by `by`),
    /// in `tx`; returns how many.
    pub(crate) async fn append_lease_ends(
        &self,
        tx: &mut Transaction<'static, D>,
        tenant: TenantId,
        ended: &[Lease],
        end: LeaseEnd,
        by: &AuditDraft,
    ) -> Result<u32> {
        let drafts = ended.iter().map(|l| l.end_draft(by, end, by.at)).collect();
        self.append_all_in(tx, tenant, drafts).await?;
        u32::try_from(ended.len()).map_err(|_| Error::internal("too many leases"))
    }

    /// Links `drafts` into `tenant`'s chain inside `tx`, in order, with one
    /// insert: events that announce no change (lease events).
    pub(crate) async fn append_all_in(
        &self,
        tx: &mut Transaction<'static, D>,
        tenant: TenantId,
        drafts: Vec<AuditDraft>,
    ) -> Result<Vec<AuditEvent>> {
        if drafts.is_empty() {
            return Ok(Vec::new());
        }
        let head: HeadRow = D::query(D::LOCK_TENANT_HEAD)
            .bind(tenant.as_uuid())
            .fetch_one(&mut **tx)
            .await
            .map_err(db("audit chain head"))?;
        let head = Head::from(ChainHead::try_from(head)?);
        let (events, head) = head.seal(tenant, drafts);
        D::insert_events(tx, &events, head, self.origin, &[]).await?;
        Ok(events)
    }

    /// Updates one lease of `holder` with `sql` (`$1` tenant, `$2` lease,
    /// `$3` holder, `$4` a time) and appends `audit`, in one transaction;
    /// `NotFound` if the holder has no such lease, `FailedPrecondition` if
    /// it has ended.
    async fn change_lease(
        &self,
        scope: &TenantScope<'_>,
        sql: &'static str,
        id: LeaseId,
        holder: PrincipalId,
        at: Timestamp,
        audit: AuditDraft,
    ) -> Result<Lease> {
        let tenant = scope.tenant_id();
        let mut tx = self.tenant_tx(tenant, true).await?;
        // The event first: the head's lock before the lease's row (the
        // order every lease writer takes); nothing commits unless the
        // lease was still active.
        self.append_in(&mut tx, tenant, audit).await?;
        D::query(STORE_BY_ID)
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .execute(&mut *tx)
            .await
            .map_err(db("lease"))?;
        let row: Option<LeaseRow> = D::query(sql)
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .bind(holder.as_uuid())
            .bind(at.as_micros())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db("lease"))?;
        let Some(row) = row else {
            let found: Option<LeaseRow> = D::query(BY_ID)
                .bind(tenant.as_uuid())
                .bind(id.as_uuid())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db("lease"))?;
            return Err(match found {
                Some(l) if l.principal_id == holder.as_uuid() => {
                    Error::precondition(format!("the lease has ended ({})", l.state))
                }
                _ => Error::not_found("lease"),
            });
        };
        tx.commit().await.map_err(db("lease"))?;
        row.try_into()
    }

    /// Expires the due leases of one tenant (up to `limit`), with their
    /// events; `None` if another server is sweeping.
    async fn expire_tenant(
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
        // The head's lock before the leases' rows, as every lease writer.
        D::query(D::LOCK_TENANT_HEAD)
            .bind(tenant.as_uuid())
            .fetch_one::<HeadRow>(&mut *tx)
            .await
            .map_err(db("audit chain head"))?;
        // First the leases only their events record, the earliest first;
        // then the sweeper's mark moves past them: to `now` if that was all
        // of them, else to just before the last one's expiry (others may
        // run out at the same time).
        let mut rows: Vec<LeaseRow> = D::query(EXPIRE_UNSTORED)
            .bind(tenant.as_uuid())
            .bind(now.as_micros())
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await
            .map_err(db("lease"))?;
        let all = rows.len() < limit as usize;
        let mark = match rows.iter().map(|r| r.expires_at).max() {
            Some(last) if !all => last - 1,
            _ => now.as_micros(),
        };
        D::query(MARK_SWEPT)
            .bind(tenant.as_uuid())
            .bind(mark)
            .execute(&mut *tx)
            .await
            .map_err(db("lease"))?;
        let left = limit.saturating_sub(u32::try_from(rows.len()).unwrap_or(limit));
        if left > 0 {
            rows.extend(
                D::query(EXPIRE)
                    .bind(tenant.as_uuid())
                    .bind(now.as_micros())
                    .bind(i64::from(left))
                    .fetch_all::<LeaseRow>(&mut *tx)
                    .await
                    .map_err(db("lease"))?,
            );
        }
        let mut expired = rows
            .into_iter()
            .map(Lease::try_from)
            .collect::<Result<Vec<_>>>()?;
        expired.sort_by_key(|l| l.id.as_uuid());
        let drafts = expired
            .iter()
            .map(|l| l.end_draft(by, LeaseEnd::Expired, l.expires_at))
            .collect();
        self.append_all_in(&mut tx, tenant, drafts).await?;
        tx.commit().await.map_err(db("lease"))?;
        Ok(Some(
            u32::try_from(expired.len()).map_err(|_| Error::internal("too many leases"))?,
        ))
    }
}

#[async_trait]
impl<D: Dialect> LeaseStore for SqlStore<D> {
    async fn get_lease(&self, scope: &TenantScope<'_>, id: LeaseId) -> Result<Lease> {
        let tenant = scope.tenant_id();
        let mut tx = self.tenant_tx(tenant, false).await?;
        let row: LeaseRow = D::query(BY_ID)
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .fetch_one(&mut *tx)
            .await
            .map_err(db("lease"))?;
        tx.commit().await.map_err(db("lease"))?;
        row.try_into()
    }

    async fn list_leases(
        &self,
        scope: &TenantScope<'_>,
        filter: &LeaseFilter,
        page: &PageRequest,
    ) -> Result<Page<Lease>> {
        let tenant = scope.tenant_id();
        let after = uuid_cursor(page.after.as_ref())?;
        let mut q = SqlBuilder::<D>::new(LEASES);
        q.push_bind(tenant.as_uuid());
        q.push(" AND id > ").push_bind(after);
        if let Some(c) = filter.credential {
            q.push(" AND credential_id = ").push_bind(c.as_uuid());
        }
        if let Some(p) = filter.principal {
            q.push(" AND principal_id = ").push_bind(p.as_uuid());
        }
        if let Some(s) = filter.state {
            q.push(" AND state = ").push_bind(s.as_str());
        }
        if let Some(environments) = &filter.environments {
            // An empty list matches nothing (`IN ()` is not SQL).
            q.push(" AND environment IN (NULL");
            for e in environments {
                q.push(", ").push_bind(e.as_str().to_owned());
            }
            q.push(")");
        }
        q.push(" ORDER BY id LIMIT ").push_bind(page.fetch_limit());
        let mut tx = self.tenant_tx(tenant, false).await?;
        let rows: Vec<LeaseRow> = q.fetch_all(&mut *tx).await.map_err(db("lease"))?;
        tx.commit().await.map_err(db("lease"))?;
        let items = rows
            .into_iter()
            .map(Lease::try_from)
            .collect::<Result<Vec<_>>>()?;
        Ok(Page::from_rows(items, page.size, |l| l.id.to_string()))
    }

    async fn renew_lease(
        &self,
        scope: &TenantScope<'_>,
        id: LeaseId,
        holder: PrincipalId,
        expires_at: Timestamp,
        audit: AuditDraft,
    ) -> Result<Lease> {
        self.change_lease(scope, RENEW, id, holder, expires_at, audit)
            .await
    }

    async fn release_lease(
        &self,
        scope: &TenantScope<'_>,
        id: LeaseId,
        holder: PrincipalId,
        audit: AuditDraft,
    ) -> Result<Lease> {
        let at = audit.at;
        self.change_lease(scope, RELEASE, id, holder, at, audit)
            .await
    }

    async fn expire_leases(&self, now: Timestamp, by: &AuditDraft, limit: u32) -> Result<u32> {
        let mut tx = D::begin_lease_sweep(self).await?;
        let tenants: Vec<(uuid::Uuid,)> = D::query(DUE_TENANTS)
            .bind(now.as_micros())
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await
            .map_err(db("lease"))?;
        tx.commit().await.map_err(db("lease"))?;
        let mut expired = 0u32;
        for (tenant,) in tenants {
            let left = limit.saturating_sub(expired);
            if left == 0 {
                break;
            }
            match self
                .expire_tenant(TenantId::from_uuid(tenant), now, by, left)
                .await?
            {
                Some(n) => expired += n,
                // Another server is sweeping: it finishes the pass.
                None => break,
            }
        }
        Ok(expired)
    }
}
