//! A tenant's environments ([`EnvironmentStore`]), which hold its
//! credentials: one cannot be removed while it holds any.

use async_trait::async_trait;
use sqlx::Transaction;
use strongroom_core::audit::AuditDraft;
use strongroom_core::ids::TenantId;
use strongroom_core::names::Environment;
use strongroom_core::scope::TenantScope;
use strongroom_core::store::EnvironmentStore;
use strongroom_core::time::Timestamp;
use strongroom_core::{Error, Missing, Result};

use crate::dialect::Dialect;
use crate::error::{db, is_fk};
use crate::store::SqlStore;

/// Adds environment `$2` to tenant `$1`, created at `$3`.
const INSERT: &str = "INSERT INTO environments (tenant_id, name, created_at) VALUES ($1, $2, $3)";

/// Tenant `$1`'s environment names, in order.
const NAMES: &str = "SELECT name FROM environments WHERE tenant_id = $1 ORDER BY name";

/// Removes tenant `$1`'s environment `$2` (refused while credentials refer
/// to it).
const DELETE: &str = "DELETE FROM environments WHERE tenant_id = $1 AND name = $2";

/// Whether tenant `$1` has environment `$2`.
pub(crate) const EXISTS: &str = "SELECT 1 FROM environments WHERE tenant_id = $1 AND name = $2";

#[async_trait]
impl<D: Dialect> EnvironmentStore for SqlStore<D> {
    async fn create_environment(
        &self,
        scope: &TenantScope<'_>,
        environment: &Environment,
        audit: AuditDraft,
    ) -> Result<()> {
        let tenant = scope.tenant_id();
        let mut tx = self.tenant_tx(tenant, true).await?;
        insert(&mut tx, tenant, environment, Timestamp::now()).await?;
        self.append_in(&mut tx, tenant, audit).await?;
        tx.commit().await.map_err(db("environment"))?;
        Ok(())
    }

    async fn list_environments(&self, scope: &TenantScope<'_>) -> Result<Vec<Environment>> {
        let tenant = scope.tenant_id();
        let mut tx = self.tenant_tx(tenant, false).await?;
        let names: Vec<(String,)> = D::query(NAMES)
            .bind(tenant.as_uuid())
            .fetch_all(&mut *tx)
            .await
            .map_err(db("environment"))?;
        tx.commit().await.map_err(db("environment"))?;
        names
            .into_iter()
            .map(|(name,)| {
                Environment::try_from(name)
                    .map_err(|_| Error::internal("stored environment is not valid"))
            })
            .collect()
    }

    async fn delete_environment(
        &self,
        scope: &TenantScope<'_>,
        environment: &Environment,
        audit: AuditDraft,
    ) -> Result<()> {
        let tenant = scope.tenant_id();
        let mut tx = self.tenant_tx(tenant, true).await?;
        let deleted = D::query(DELETE)
            .bind(tenant.as_uuid())
            .bind(environment.as_str())
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                if is_fk(&e) {
                    Error::precondition("the environment still holds credentials")
                } else {
                    db("environment")(e)
                }
            })?;
        if deleted == 0 {
            return Err(Error::NotFound(Missing::Environment));
        }
        self.append_in(&mut tx, tenant, audit).await?;
        tx.commit().await.map_err(db("environment"))?;
        Ok(())
    }
}

/// Adds `environment` to `tenant`, created at `at`.
pub(crate) async fn insert<D: Dialect>(
    tx: &mut Transaction<'static, D>,
    tenant: TenantId,
    environment: &Environment,
    at: Timestamp,
) -> Result<()> {
    D::query(INSERT)
        .bind(tenant.as_uuid())
        .bind(environment.as_str())
        .bind(at.as_micros())
        .execute(&mut **tx)
        .await
        .map_err(db("environment"))?;
    Ok(())
}
