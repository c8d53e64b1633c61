//! Tenants ([`TenantStore`]): the registry a platform operator manages
//! (created with everything a tenant starts with, in one transaction), each
//! tenant's own record, and its key-encryption keys.

use async_trait::async_trait;
use strongroom_core::Result;
use strongroom_core::audit::{AuditDetail, AuditDraft, GENESIS_HASH};
use strongroom_core::ids::TenantId;
use strongroom_core::page::{Page, PageRequest};
use strongroom_core::scope::{PlatformScope, TenantScope};
use strongroom_core::store::{Change, NewTenant, TenantShredded, TenantStore};
use strongroom_core::tenant::{Tenant, TenantSettings, TenantStatus, WrappedKekRecord};

use crate::chains::append_platform_in;
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
pub(crate) const BY_ID: &str = concat!("SELECT ", tenant_columns!(), " FROM tenants WHERE id = $1");

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
pub(crate) const KEKS: &str = "\
    SELECT tenant_id, version, wrapped, created_at FROM tenant_keks \
    WHERE tenant_id = $1 ORDER BY version";

/// Locks tenant `$1`'s row until commit (a no-op update), returning it.
const LOCK: &str = concat!(
    "UPDATE tenants SET status = status WHERE id = $1 RETURNING ",
    tenant_columns!()
);

/// Marks tenant `$1` shredded with settings `$2`.
const SET_SHREDDED: &str = concat!(
    "UPDATE tenants SET status = 'shredded', settings = $2 WHERE id = $1 RETURNING ",
    tenant_columns!()
);

/// Deletes every wrapped KEK version of tenant `$1`.
const DELETE_KEKS: &str = "DELETE FROM tenant_keks WHERE tenant_id = $1";

/// Deletes the sealed value of every version of tenant `$1`'s credentials.
const DELETE_SEALED_VALUES: &str = "\
    UPDATE credential_versions SET envelope = NULL WHERE tenant_id = $1 AND envelope IS NOT NULL";

/// Marks tenant `$1`'s credentials destroyed at `$2` (their values are).
const MARK_DESTROYED: &str = "\
    UPDATE credentials SET destroyed_at = $2 WHERE tenant_id = $1 AND destroyed_at IS NULL";

/// Whether tenant `$1` still has an audit chain (not purged).
const HAS_CHAIN: &str = "SELECT 1 FROM audit_heads WHERE tenant_id = $1";

/// What a purge deletes of tenant `$1` besides its audit chain, in an
/// order foreign keys allow.
const PURGE: [&str; 11] = [
    "DELETE FROM leases WHERE tenant_id = $1",
    "DELETE FROM access_requests WHERE tenant_id = $1",
    "DELETE FROM notification_deliveries WHERE tenant_id = $1",
    "DELETE FROM idempotency_keys WHERE scope_id = $1",
    "DELETE FROM credential_versions WHERE tenant_id = $1",
    "DELETE FROM credentials WHERE tenant_id = $1",
    "DELETE FROM grants WHERE tenant_id = $1",
    "DELETE FROM identity_bindings WHERE tenant_id = $1",
    "DELETE FROM principals WHERE tenant_id = $1",
    "DELETE FROM environments WHERE tenant_id = $1",
    "DELETE FROM identity_namespaces WHERE tenant_id = $1",
];

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

    async fn shred_tenant(
        &self,
        _scope: &PlatformScope<'_>,
        id: TenantId,
        purge: bool,
        mut audit: AuditDraft,
    ) -> Result<TenantShredded> {
        let mut tx = self.platform_tx(Some(id), true).await?;
        let row: TenantRow = D::query(LOCK)
            .bind(id.as_uuid())
            .fetch_one(&mut *tx)
            .await
            .map_err(db("tenant"))?;
        let tenant = Tenant::try_from(row)?;
        let has_chain = D::query(HAS_CHAIN)
            .bind(id.as_uuid())
            .fetch_optional::<(i32,)>(&mut *tx)
            .await
            .map_err(db("audit chain head"))?
            .is_some();
        if tenant.status == TenantStatus::Shredded && (!purge || !has_chain) {
            // Done before: nothing is written.
            tx.rollback().await.map_err(db("tenant"))?;
            return Ok(TenantShredded {
                tenant,
                keys_destroyed: 0,
                values_destroyed: 0,
                purged: !has_chain,
                repeated: true,
            });
        }
        let keys = D::query(DELETE_KEKS)
            .bind(id.as_uuid())
            .execute(&mut *tx)
            .await
            .map_err(db("tenant key"))?;
        let mut values = D::query(DELETE_SEALED_VALUES)
            .bind(id.as_uuid())
            .execute(&mut *tx)
            .await
            .map_err(db("credential version"))?;
        D::query(MARK_DESTROYED)
            .bind(id.as_uuid())
            .bind(audit.at.as_micros())
            .execute(&mut *tx)
            .await
            .map_err(db("credential"))?;
        let mut settings = if purge {
            TenantSettings::default()
        } else {
            tenant.settings.clone()
        };
        if tenant.settings.notifier.is_some() {
            // The signing secret is sealed under the tenant's KEK.
            settings.notifier = None;
            values += 1;
        }
        let row: TenantRow = D::query(SET_SHREDDED)
            .bind(id.as_uuid())
            .bind(json(&settings)?)
            .fetch_one(&mut *tx)
            .await
            .map_err(db("tenant"))?;
        if purge {
            for sql in PURGE.iter().chain(D::PURGE_SHREDDED_AUDIT.iter()) {
                D::query(sql)
                    .bind(id.as_uuid())
                    .execute(&mut *tx)
                    .await
                    .map_err(db("tenant data"))?;
            }
        }
        let keys_destroyed = u32::try_from(keys).unwrap_or(u32::MAX);
        let values_destroyed = u32::try_from(values).unwrap_or(u32::MAX);
        if let Some(AuditDetail::TenantShred {
            keys_destroyed: k,
            values_destroyed: v,
            purged,
            ..
        }) = &mut audit.detail
        {
            *k = keys_destroyed;
            *v = values_destroyed;
            *purged = purge;
        }
        append_platform_in::<D>(&mut tx, audit).await?;
        D::notify_changes(&mut tx, self.origin, &[Change::Keys(id)]).await?;
        tx.commit().await.map_err(db("tenant"))?;
        Ok(TenantShredded {
            tenant: row.try_into()?,
            keys_destroyed,
            values_destroyed,
            purged: purge,
            repeated: false,
        })
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
