//! A tenant's principals and the identity bindings that authenticate them
//! ([`PrincipalStore`]). A binding is created only inside one of its
//! tenant's identity namespaces, checked under the shared namespace lock so
//! no concurrent assignment takes the namespace away meanwhile.

use async_trait::async_trait;
use sqlx::Transaction;
use strongroom_core::audit::AuditDraft;
use strongroom_core::ids::{BindingId, PrincipalId};
use strongroom_core::lease::{LeaseEnd, LeaseHolder};
use strongroom_core::page::{Page, PageRequest};
use strongroom_core::principal::{
    BINDING_OUTSIDE_NAMESPACES, IdentityBinding, Principal, PrincipalStatus,
};
use strongroom_core::scope::TenantScope;
use strongroom_core::store::{PrincipalRevoked, PrincipalStore};
use strongroom_core::{Error, Result};

use crate::dialect::{Dialect, NamespaceLock, SqlBuilder};
use crate::error::{db, is_fk, uuid_cursor};
use crate::rows::{
    BindingRow, PrincipalRow, binding_columns, json, pattern_parts, principal_columns,
};
use crate::store::SqlStore;

/// Inserts a principal: `$1`..`$8` in [`principal_columns!`] order.
const INSERT: &str = concat!(
    "INSERT INTO principals (",
    principal_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
);

/// Reads tenant `$1`'s principal `$2`.
const BY_ID: &str = concat!(
    "SELECT ",
    principal_columns!(),
    " FROM principals WHERE tenant_id = $1 AND id = $2"
);

/// A page of `$3` of tenant `$1`'s principals with ids above `$2`.
const PAGE: &str = concat!(
    "SELECT ",
    principal_columns!(),
    " FROM principals WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3"
);

/// Sets tenant `$1`'s principal `$2`'s status to `$3`.
const SET_STATUS: &str = concat!(
    "UPDATE principals SET status = $3 WHERE tenant_id = $1 AND id = $2 RETURNING ",
    principal_columns!()
);

/// Sets tenant `$1`'s principal `$2`'s name `$3`, role `$4`, environments
/// `$5` and description `$6`.
const UPDATE: &str = concat!(
    "UPDATE principals SET name = $3, role = $4, environments = $5, description = $6 \
     WHERE tenant_id = $1 AND id = $2 RETURNING ",
    principal_columns!()
);

/// Whether a namespace of tenant `$1` covers the pattern of kind `$2` and
/// text `$3`.
const COVERED: &str = "\
    SELECT 1 FROM identity_namespaces WHERE tenant_id = $1 AND ( \
      (kind = 'exact' AND $2 = 'exact' AND pattern = $3) \
      OR (kind = 'prefix' AND substr($3, 1, length(pattern)) = pattern)) LIMIT 1";

/// Inserts a binding: `$1`..`$6` in [`binding_columns!`] order.
const INSERT_BINDING: &str = concat!(
    "INSERT INTO identity_bindings (",
    binding_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6)"
);

/// Tenant `$1`'s bindings (the filters follow).
const BINDINGS: &str = concat!(
    "SELECT ",
    binding_columns!(),
    " FROM identity_bindings WHERE tenant_id = "
);

/// Disables tenant `$1`'s principal `$2` unless it is disabled already.
pub(crate) const DISABLE: &str = concat!(
    "UPDATE principals SET status = 'disabled' WHERE tenant_id = $1 AND id = $2 \
     AND status <> 'disabled' RETURNING ",
    principal_columns!()
);

/// Reads tenant `$1`'s principal `$2`.
pub(crate) const PRINCIPAL: &str = BY_ID;

/// Deletes tenant `$1`'s binding `$2`.
const DELETE_BINDING: &str = "DELETE FROM identity_bindings WHERE tenant_id = $1 AND id = $2";

#[async_trait]
impl<D: Dialect> PrincipalStore for SqlStore<D> {
    async fn create_principal(
        &self,
        scope: &TenantScope<'_>,
        principal: &Principal,
        audit: AuditDraft,
    ) -> Result<()> {
        let tenant = scope.tenant_id();
        if principal.tenant != tenant {
            return Err(Error::internal("principal of another tenant"));
        }
        let mut tx = self.tenant_tx(tenant, true).await?;
        insert_principal(&mut tx, principal).await?;
        self.append_in(&mut tx, tenant, audit).await?;
        tx.commit().await.map_err(db("principal"))?;
        Ok(())
    }

    async fn get_principal(&self, scope: &TenantScope<'_>, id: PrincipalId) -> Result<Principal> {
        let tenant = scope.tenant_id();
        let mut tx = self.tenant_tx(tenant, false).await?;
        let row: PrincipalRow = D::query(BY_ID)
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .fetch_one(&mut *tx)
            .await
            .map_err(db("principal"))?;
        tx.commit().await.map_err(db("principal"))?;
        row.try_into()
    }

    async fn list_principals(
        &self,
        scope: &TenantScope<'_>,
        page: &PageRequest,
    ) -> Result<Page<Principal>> {
        let tenant = scope.tenant_id();
        let after = uuid_cursor(page.after.as_ref())?;
        let mut tx = self.tenant_tx(tenant, false).await?;
        let rows: Vec<PrincipalRow> = D::query(PAGE)
            .bind(tenant.as_uuid())
            .bind(after)
            .bind(page.fetch_limit())
            .fetch_all(&mut *tx)
            .await
            .map_err(db("principal"))?;
        tx.commit().await.map_err(db("principal"))?;
        let items = rows
            .into_iter()
            .map(Principal::try_from)
            .collect::<Result<Vec<_>>>()?;
        Ok(Page::from_rows(items, page.size, |p| p.id.to_string()))
    }

    async fn set_principal_status(
        &self,
        scope: &TenantScope<'_>,
        id: PrincipalId,
        status: PrincipalStatus,
        audit: AuditDraft,
    ) -> Result<(Principal, u32)> {
        let tenant = scope.tenant_id();
        let mut tx = self.tenant_tx(tenant, true).await?;
        let row: PrincipalRow = D::query(SET_STATUS)
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .bind(status.as_str())
            .fetch_one(&mut *tx)
            .await
            .map_err(db("principal"))?;
        let by = audit.clone();
        self.append_in(&mut tx, tenant, audit).await?;
        let ended = if status == PrincipalStatus::Active {
            Vec::new()
        } else {
            Self::end_leases_in(
                &mut tx,
                tenant,
                LeaseHolder::Principal(id),
                LeaseEnd::PrincipalDisabled,
                &by,
            )
            .await?
        };
        let count = self
            .append_lease_ends(&mut tx, tenant, &ended, LeaseEnd::PrincipalDisabled, &by)
            .await?;
        tx.commit().await.map_err(db("principal"))?;
        Ok((row.try_into()?, count))
    }

    async fn update_principal(
        &self,
        scope: &TenantScope<'_>,
        principal: &Principal,
        narrowed: bool,
        audit: AuditDraft,
    ) -> Result<(Principal, u32)> {
        let tenant = scope.tenant_id();
        if principal.tenant != tenant {
            return Err(Error::internal("principal of another tenant"));
        }
        let mut tx = self.tenant_tx(tenant, true).await?;
        let row: PrincipalRow = D::query(UPDATE)
            .bind(tenant.as_uuid())
            .bind(principal.id.as_uuid())
            .bind(principal.name.as_str())
            .bind(principal.role.as_str())
            .bind(json(&principal.environments)?)
            .bind(principal.description.as_str())
            .fetch_one(&mut *tx)
            .await
            .map_err(db("principal"))?;
        let by = audit.clone();
        self.append_in(&mut tx, tenant, audit).await?;
        let ended = if narrowed {
            Self::end_leases_in(
                &mut tx,
                tenant,
                LeaseHolder::Principal(principal.id),
                LeaseEnd::PrincipalNarrowed,
                &by,
            )
            .await?
        } else {
            Vec::new()
        };
        let count = self
            .append_lease_ends(&mut tx, tenant, &ended, LeaseEnd::PrincipalNarrowed, &by)
            .await?;
        tx.commit().await.map_err(db("principal"))?;
        Ok((row.try_into()?, count))
    }

    async fn create_binding(
        &self,
        scope: &TenantScope<'_>,
        binding: &IdentityBinding,
        audit: AuditDraft,
    ) -> Result<()> {
        let tenant = scope.tenant_id();
        if binding.tenant != tenant {
            return Err(Error::internal("binding of another tenant"));
        }
        let mut tx = self.tenant_tx(tenant, true).await?;
        D::lock_namespaces(&mut tx, NamespaceLock::Shared).await?;
        insert_binding(&mut tx, binding).await?;
        self.append_in(&mut tx, tenant, audit).await?;
        tx.commit().await.map_err(db("identity binding"))?;
        Ok(())
    }

    async fn list_bindings(
        &self,
        scope: &TenantScope<'_>,
        principal: Option<PrincipalId>,
        page: &PageRequest,
    ) -> Result<Page<IdentityBinding>> {
        let tenant = scope.tenant_id();
        let after = uuid_cursor(page.after.as_ref())?;
        let mut q = SqlBuilder::<D>::new(BINDINGS);
        q.push_bind(tenant.as_uuid());
        q.push(" AND id > ").push_bind(after);
        if let Some(p) = principal {
            q.push(" AND principal_id = ").push_bind(p.as_uuid());
        }
        q.push(" ORDER BY id LIMIT ").push_bind(page.fetch_limit());
        let mut tx = self.tenant_tx(tenant, false).await?;
        let rows: Vec<BindingRow> = q
            .fetch_all(&mut *tx)
            .await
            .map_err(db("identity binding"))?;
        tx.commit().await.map_err(db("identity binding"))?;
        let items = rows
            .into_iter()
            .map(IdentityBinding::try_from)
            .collect::<Result<Vec<_>>>()?;
        Ok(Page::from_rows(items, page.size, |b| b.id.to_string()))
    }

    async fn delete_binding(
        &self,
        scope: &TenantScope<'_>,
        id: BindingId,
        audit: AuditDraft,
    ) -> Result<()> {
        let tenant = scope.tenant_id();
        self.delete_audited(
            tenant,
            DELETE_BINDING,
            id.as_uuid(),
            "identity binding",
            audit,
        )
        .await
    }

    async fn emergency_revoke_principal(
        &self,
        scope: &TenantScope<'_>,
        id: PrincipalId,
        reason: &str,
        audit: AuditDraft,
    ) -> Result<PrincipalRevoked> {
        self.emergency_revoke(scope.tenant_id(), id, reason, audit)
            .await
    }
}

/// Stores `p`.
pub(crate) async fn insert_principal<D: Dialect>(
    tx: &mut Transaction<'static, D>,
    p: &Principal,
) -> Result<()> {
    D::query(INSERT)
        .bind(p.tenant.as_uuid())
        .bind(p.id.as_uuid())
        .bind(p.name.as_str())
        .bind(p.role.as_str())
        .bind(json(&p.environments)?)
        .bind(p.description.as_str())
        .bind(p.status.as_str())
        .bind(p.created_at.as_micros())
        .execute(&mut **tx)
        .await
        .map_err(db("principal"))?;
    Ok(())
}

/// Stores `b` if one of its tenant's namespaces covers its pattern
/// (`PermissionDenied` otherwise; `NotFound` if its principal is absent).
/// The caller holds a namespace lock.
pub(crate) async fn insert_binding<D: Dialect>(
    tx: &mut Transaction<'static, D>,
    b: &IdentityBinding,
) -> Result<()> {
    let (kind, pattern) = pattern_parts(&b.pattern);
    let covered: Option<(i32,)> = D::query(COVERED)
        .bind(b.tenant.as_uuid())
        .bind(kind)
        .bind(pattern)
        .fetch_optional(&mut **tx)
        .await
        .map_err(db("identity namespace"))?;
    if covered.is_none() {
        return Err(Error::denied(BINDING_OUTSIDE_NAMESPACES));
    }
    D::query(INSERT_BINDING)
        .bind(b.tenant.as_uuid())
        .bind(b.id.as_uuid())
        .bind(b.principal.as_uuid())
        .bind(kind)
        .bind(pattern)
        .bind(b.created_at.as_micros())
        .execute(&mut **tx)
        .await
        .map_err(|e| {
            if is_fk(&e) {
                Error::not_found("principal")
            } else {
                db("identity binding")(e)
            }
        })?;
    Ok(())
}
