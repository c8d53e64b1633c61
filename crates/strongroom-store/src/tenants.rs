//! Tenants ([`TenantStore`]): the registry a platform operator manages
//! (created with everything a tenant starts with, in one transaction), each
//! tenant's own record, and its key-encryption keys.

use async_trait::async_trait;
use strongroom_core::Result;
use strongroom_core::audit::{AuditDraft, GENESIS_HASH};
use strongroom_core::ids::TenantId;
use strongroom_core::page::{Page, PageRequest};
use strongroom_core::scope::{PlatformScope, TenantScope};
use strongroom_core::store::{NewTenant, TenantStore};
use strongroom_core::tenant::{Tenant, TenantSettings, TenantStatus, WrappedKekRecord};

use crate::dialect::{Dialect, NamespaceLock};
use crate::error::{db, uuid_cursor};
use crate::rows::{KekRow, TenantRow, json, tenant_columns, version_i32};
use crate::store::SqlStore;
use crate::{environments, identity, principals};

/// Inserts a tenant: `$1`..`$6` in [`tenant_columns!`] order.
const INSERT: &str = concat!(
    "INSERT INTO tenants (",
    tenant_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6)"
);

/// Reads tenant `$1`.
const BY_ID: &str = concat!("SELECT ", tenant_columns!(), " FROM tenants WHERE id = $1");

/// A page of `$2` tenants with ids above `$1`.
const PAGE: &str = concat!(
    "SELECT ",
    tenant_columns!(),
    " FROM tenants WHERE id > $1 ORDER BY id LIMIT $2"
);

/// Sets tenant `$1`'s status to `$2`.
const SET_STATUS: &str = concat!(
    "UPDATE tenants SET status = $2 WHERE id = $1 RETURNING ",
    tenant_columns!()
);

/// Sets tenant `$1`'s settings to `$2`.
const SET_SETTINGS: &str = concat!(
    "UPDATE tenants SET settings = $2 WHERE id = $1 RETURNING ",
    tenant_columns!()
);

/// Makes KEK version `$2` tenant `$1`'s current one.
const SET_CURRENT_KEK: &str = concat!(
    "UPDATE tenants SET current_kek_version = $2 WHERE id = $1 RETURNING ",
    tenant_columns!()
);

/// Adds KEK version `$2` (wrapped `$3`, created at `$4`) to tenant `$1`.
const INSERT_KEK: &str = "\
    INSERT INTO tenant_keks (tenant_id, version, wrapped, created_at) VALUES ($1, $2, $3, $4)";

/// Every KEK version of tenant `$1`, oldest first.
const KEKS: &str = "\
    SELECT tenant_id, version, wrapped, created_at FROM tenant_keks \
    WHERE tenant_id = $1 ORDER BY version";

/// Starts tenant `$1`'s audit chain at the genesis hash `$2`.
const INSERT_HEAD: &str = "INSERT INTO audit_heads (tenant_id, sequence, hash) VALUES ($1, 0, $2)";

#[async_trait]
impl<D: Dialect> TenantStore for SqlStore<D> {
    async fn create_tenant(
        &self,
        _scope: &PlatformScope<'_>,
        new: &NewTenant,
        audit: AuditDraft,
    ) -> Result<()> {
        let t = &new.tenant;
        let mut tx = self.platform_tx(Some(t.id), true).await?;
        D::lock_namespaces(&mut tx, NamespaceLock::Exclusive).await?;
        D::query(INSERT)
            .bind(t.id.as_uuid())
            .bind(t.name.as_str())
            .bind(t.status.as_str())
            .bind(json(&t.settings)?)
            .bind(version_i32(t.current_kek_version)?)
            .bind(t.created_at.as_micros())
            .execute(&mut *tx)
            .await
            .map_err(db("tenant"))?;
        insert_kek(&mut tx, t.id, &new.kek).await?;
        D::query(INSERT_HEAD)
            .bind(t.id.as_uuid())
            .bind(GENESIS_HASH.as_slice())
            .execute(&mut *tx)
            .await
            .map_err(db("audit chain head"))?;
        for environment in &new.environments {
            environments::insert(&mut tx, t.id, environment, t.created_at).await?;
        }
        identity::insert_namespaces(&mut tx, t.id, &new.namespaces, t.created_at).await?;
        if let Some((principal, binding)) = &new.admin {
            principals::insert_principal(&mut tx, principal).await?;
            principals::insert_binding(&mut tx, binding).await?;
        }
        self.append_in(&mut tx, t.id, audit).await?;
        tx.commit().await.map_err(db("tenant"))?;
        Ok(())
    }

    async fn list_tenants(
        &self,
        _scope: &PlatformScope<'_>,
        page: &PageRequest,
    ) -> Result<Page<Tenant>> {
        let after = uuid_cursor(page.after.as_ref())?;
        let mut tx = self.platform_tx(None, false).await?;
        let rows: Vec<TenantRow> = D::query(PAGE)
            .bind(after)
            .bind(page.fetch_limit())
            .fetch_all(&mut *tx)
            .await
            .map_err(db("tenant"))?;
        tx.commit().await.map_err(db("tenant"))?;
        let items = rows
            .into_iter()
            .map(Tenant::try_from)
            .collect::<Result<Vec<_>>>()?;
        Ok(Page::from_rows(items, page.size, |t| t.id.to_string()))
    }

    async fn get_tenant(&self, _scope: &PlatformScope<'_>, id: TenantId) -> Result<Tenant> {
        let mut tx = self.platform_tx(Some(id), false).await?;
        let row: TenantRow = D::query(BY_ID)
            .bind(id.as_uuid())
            .fetch_one(&mut *tx)
            .await
            .map_err(db("tenant"))?;
        tx.commit().await.map_err(db("tenant"))?;
        row.try_into()
    }

    async fn set_tenant_status(
        &self,
        _scope: &PlatformScope<'_>,
        id: TenantId,
        status: TenantStatus,
        audit: AuditDraft,
    ) -> Result<Tenant> {
        let mut tx = self.platform_tx(Some(id), true).await?;
        let row: TenantRow = D::query(SET_STATUS)
            .bind(id.as_uuid())
            .bind(status.as_str())
            .fetch_one(&mut *tx)
            .await
            .map_err(db("tenant"))?;
        self.append_in(&mut tx, id, audit).await?;
        tx.commit().await.map_err(db("tenant"))?;
        row.try_into()
    }

    async fn tenant(&self, scope: &TenantScope<'_>) -> Result<Tenant> {
        let tenant = scope.tenant_id();
        let mut tx = self.tenant_tx(tenant, false).await?;
        let row: TenantRow = D::query(BY_ID)
            .bind(tenant.as_uuid())
            .fetch_one(&mut *tx)
            .await
            .map_err(db("tenant"))?;
        tx.commit().await.map_err(db("tenant"))?;
        row.try_into()
    }

    async fn update_tenant_settings(
        &self,
        scope: &TenantScope<'_>,
        settings: &TenantSettings,
        audit: AuditDraft,
    ) -> Result<Tenant> {
        let tenant = scope.tenant_id();
        let mut tx = self.tenant_tx(tenant, true).await?;
        let row: TenantRow = D::query(SET_SETTINGS)
            .bind(tenant.as_uuid())
            .bind(json(settings)?)
            .fetch_one(&mut *tx)
            .await
            .map_err(db("tenant"))?;
        self.append_in(&mut tx, tenant, audit).await?;
        tx.commit().await.map_err(db("tenant"))?;
        row.try_into()
    }

    async fn keks(&self, scope: &TenantScope<'_>) -> Result<Vec<WrappedKekRecord>> {
        let tenant = scope.tenant_id();
        let mut tx = self.tenant_tx(tenant, false).await?;
        let rows: Vec<KekRow> = D::query(KEKS)
            .bind(tenant.as_uuid())
            .fetch_all(&mut *tx)
            .await
            .map_err(db("tenant key"))?;
        tx.commit().await.map_err(db("tenant key"))?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    async fn add_kek(
        &self,
        scope: &TenantScope<'_>,
        kek: &WrappedKekRecord,
        audit: AuditDraft,
    ) -> Result<Tenant> {
        let tenant = scope.tenant_id();
        let mut tx = self.tenant_tx(tenant, true).await?;
        insert_kek(&mut tx, tenant, kek).await?;
        let row: TenantRow = D::query(SET_CURRENT_KEK)
            .bind(tenant.as_uuid())
            .bind(version_i32(kek.version)?)
            .fetch_one(&mut *tx)
            .await
            .map_err(db("tenant"))?;
        self.append_in(&mut tx, tenant, audit).await?;
        tx.commit().await.map_err(db("tenant key"))?;
        row.try_into()
    }
}

/// Adds `kek` to `tenant`'s KEK versions.
pub(crate) async fn insert_kek<D: Dialect>(
    tx: &mut sqlx::Transaction<'static, D>,
    tenant: TenantId,
    kek: &WrappedKekRecord,
) -> Result<()> {
    D::query(INSERT_KEK)
        .bind(tenant.as_uuid())
        .bind(version_i32(kek.version)?)
        .bind(kek.wrapped.as_slice())
        .bind(kek.created_at.as_micros())
        .execute(&mut **tx)
        .await
        .map_err(db("tenant key"))?;
    Ok(())
}
