//! A tenant's grants ([`GrantStore`]): who (a principal or a role) may do
//! what with the credentials a selector names, in which environments, until
//! when.

use async_trait::async_trait;
use sqlx::Transaction;
use strongroom_core::audit::AuditDraft;
use strongroom_core::ids::GrantId;
use strongroom_core::lease::{LeaseEnd, LeaseHolder};
use strongroom_core::page::{Page, PageRequest};
use strongroom_core::policy::Grant;
use strongroom_core::principal::Principal;
use strongroom_core::scope::TenantScope;
use strongroom_core::store::{GrantFilter, GrantStore};
use strongroom_core::{Error, Result};

use crate::dialect::{Dialect, SqlBuilder};
use crate::error::{db, uuid_cursor};
use crate::rows::{GrantRow, grant_columns, json, subject_parts};
use crate::store::SqlStore;

/// Inserts a grant: `$1`..`$13` in [`grant_columns!`] order.
const INSERT: &str = concat!(
    "INSERT INTO grants (",
    grant_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
);

/// Reads tenant `$1`'s grant `$2`.
const BY_ID: &str = concat!(
    "SELECT ",
    grant_columns!(),
    " FROM grants WHERE tenant_id = $1 AND id = $2"
);

/// Tenant `$1`'s grants (the filters follow).
const GRANTS: &str = concat!(
    "SELECT ",
    grant_columns!(),
    " FROM grants WHERE tenant_id = "
);

/// Tenant `$1`'s grants to principal `$2` (its id as text) or to its role
/// `$3`.
const FOR_SUBJECT: &str = concat!(
    "SELECT ",
    grant_columns!(),
    " FROM grants WHERE tenant_id = $1 AND ((subject_kind = 'principal' AND subject = $2) \
      OR (subject_kind = 'role' AND subject = $3)) ORDER BY id"
);

/// Deletes tenant `$1`'s grant `$2`.
const DELETE: &str = "DELETE FROM grants WHERE tenant_id = $1 AND id = $2";

/// Inserts `grant` in `tx` (a grant created, or an approval's).
pub(crate) async fn insert_in<D: Dialect>(
    tx: &mut Transaction<'static, D>,
    grant: &Grant,
) -> Result<()> {
    let (kind, subject) = subject_parts(&grant.subject);
    D::query(INSERT)
        .bind(grant.tenant.as_uuid())
        .bind(grant.id.as_uuid())
        .bind(kind)
        .bind(subject)
        .bind(grant.selector.to_text())
        .bind(json(&grant.environments)?)
        .bind(i32::from(grant.capabilities.bits()))
        .bind(json(&grant.destinations)?)
        .bind(grant.expires_at.map(|t| t.as_micros()))
        .bind(grant.reason.as_str())
        .bind(grant.granted_by.as_uuid())
        .bind(grant.created_at.as_micros())
        .bind(grant.access_request.map(|r| r.as_uuid()))
        .execute(&mut **tx)
        .await
        .map_err(db("grant"))?;
    Ok(())
}

#[async_trait]
impl<D: Dialect> GrantStore for SqlStore<D> {
    async fn create_grant(
        &self,
        scope: &TenantScope<'_>,
        grant: &Grant,
        audit: AuditDraft,
    ) -> Result<()> {
        let tenant = scope.tenant_id();
        if grant.tenant != tenant {
            return Err(Error::internal("grant of another tenant"));
        }
        let mut tx = self.tenant_tx(tenant, true).await?;
        insert_in(&mut tx, grant).await?;
        self.append_in(&mut tx, tenant, audit).await?;
        tx.commit().await.map_err(db("grant"))?;
        Ok(())
    }

    async fn get_grant(&self, scope: &TenantScope<'_>, id: GrantId) -> Result<Grant> {
        let tenant = scope.tenant_id();
        let mut tx = self.tenant_tx(tenant, false).await?;
        let row: GrantRow = D::query(BY_ID)
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .fetch_one(&mut *tx)
            .await
            .map_err(db("grant"))?;
        tx.commit().await.map_err(db("grant"))?;
        row.try_into()
    }

    async fn delete_grant(
        &self,
        scope: &TenantScope<'_>,
        id: GrantId,
        audit: AuditDraft,
    ) -> Result<u32> {
        let tenant = scope.tenant_id();
        let mut tx = self.tenant_tx(tenant, true).await?;
        let deleted = D::query(DELETE)
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .execute(&mut *tx)
            .await
            .map_err(db("grant"))?;
        if deleted == 0 {
            return Err(Error::not_found("grant"));
        }
        let by = audit.clone();
        self.append_in(&mut tx, tenant, audit).await?;
        let ended = Self::end_leases_in(
            &mut tx,
            tenant,
            LeaseHolder::Grant(id),
            LeaseEnd::GrantRevoked,
            &by,
        )
        .await?;
        let count = self
            .append_lease_ends(&mut tx, tenant, &ended, LeaseEnd::GrantRevoked, &by)
            .await?;
        tx.commit().await.map_err(db("grant"))?;
        Ok(count)
    }

    async fn list_grants(
        &self,
        scope: &TenantScope<'_>,
        filter: &GrantFilter,
        page: &PageRequest,
    ) -> Result<Page<Grant>> {
        let tenant = scope.tenant_id();
        let after = uuid_cursor(page.after.as_ref())?;
        let mut q = SqlBuilder::<D>::new(GRANTS);
        q.push_bind(tenant.as_uuid());
        q.push(" AND id > ").push_bind(after);
        if let Some(p) = filter.principal {
            q.push(" AND subject_kind = 'principal' AND subject = ")
                .push_bind(p.to_string());
        }
        if let Some(r) = filter.role {
            q.push(" AND subject_kind = 'role' AND subject = ")
                .push_bind(r.as_str());
        }
        if let Some(e) = &filter.environment {
            q.push(" AND ")
                .push(D::SUBSTRING_POSITION)
                .push("(environments, ")
                .push_bind(format!("\"{}\"", e.as_str()))
                .push(") > 0");
        }
        if let Some(environments) = &filter.in_environments {
            q.push(" AND (1 = 0");
            for e in environments {
                q.push(" OR ")
                    .push(D::SUBSTRING_POSITION)
                    .push("(environments, ")
                    .push_bind(format!("\"{}\"", e.as_str()))
                    .push(") > 0");
            }
            q.push(")");
        }
        if let Some(n) = &filter.covering {
            // The selector is the exact name, '*', or 'prefix/*' with the
            // name under that prefix.
            q.push(" AND (selector = ")
                .push_bind(n.as_str().to_owned())
                .push(
                    " OR selector = '*' OR (substr(selector, length(selector) - 1) = '/*' \
                     AND substr(",
                )
                .push_bind(n.as_str().to_owned())
                .push(", 1, length(selector) - 1) = substr(selector, 1, length(selector) - 1)))");
        }
        q.push(" ORDER BY id LIMIT ").push_bind(page.fetch_limit());
        let mut tx = self.tenant_tx(tenant, false).await?;
        let rows: Vec<GrantRow> = q.fetch_all(&mut *tx).await.map_err(db("grant"))?;
        tx.commit().await.map_err(db("grant"))?;
        let items = rows
            .into_iter()
            .map(Grant::try_from)
            .collect::<Result<Vec<_>>>()?;
        Ok(Page::from_rows(items, page.size, |g| g.id.to_string()))
    }

    async fn grants_for(
        &self,
        scope: &TenantScope<'_>,
        principal: &Principal,
    ) -> Result<Vec<Grant>> {
        let tenant = scope.tenant_id();
        let mut tx = self.tenant_tx(tenant, false).await?;
        let rows: Vec<GrantRow> = D::query(FOR_SUBJECT)
            .bind(tenant.as_uuid())
            .bind(principal.id.to_string())
            .bind(principal.role.as_str())
            .fetch_all(&mut *tx)
            .await
            .map_err(db("grant"))?;
        tx.commit().await.map_err(db("grant"))?;
        rows.into_iter().map(TryInto::try_into).collect()
    }
}
