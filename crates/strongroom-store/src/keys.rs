//! [`KeyStore`]: key rotation's rows. Replicas' reports in
//! `replica_heartbeats` (not tenant data, like `server_meta`); tenant KEKs
//! re-wrapped in place; each tenant's latest KEK rotation in
//! `tenant_key_rewraps`; data keys re-wrapped in `credential_versions`.
//! Every replacement is a compare-and-swap on the bytes read, so concurrent
//! re-wrappers (every replica runs the background task) and writes racing
//! with them never lose a value; a lost swap is simply read again.

use async_trait::async_trait;
use sqlx::Transaction;
use strongroom_core::audit::AuditDraft;
use strongroom_core::ids::{CredentialId, TenantId};
use strongroom_core::keys::{KeyScope, KeyStore, PendingDataKey, ReplicaReport, TenantRewrap};
use strongroom_core::scope::SystemScope;
use strongroom_core::tenant::{Tenant, TenantSettings, WrappedKekRecord};
use strongroom_core::time::Timestamp;
use strongroom_core::{Error, Result};
use uuid::Uuid;

use crate::dialect::Dialect;
use crate::error::db;
use crate::rows::{KekRow, TenantRow, json, tenant_columns, version_i32};
use crate::store::SqlStore;

/// Stores replica `$1`'s report.
const REPORT: &str = "\
    INSERT INTO replica_heartbeats (replica, addr, current_key, next_key, wraps_with, seen_at) \
    VALUES ($1, $2, $3, $4, $5, $6) \
    ON CONFLICT (replica) DO UPDATE SET addr = excluded.addr, \
      current_key = excluded.current_key, next_key = excluded.next_key, \
      wraps_with = excluded.wraps_with, seen_at = excluded.seen_at";

/// Reports made at or after `$1`.
const LIVE: &str = "\
    SELECT replica, addr, current_key, next_key, wraps_with, seen_at \
    FROM replica_heartbeats WHERE seen_at >= $1 ORDER BY replica";

/// Forgets replica `$1`.
const FORGET: &str = "DELETE FROM replica_heartbeats WHERE replica = $1";

/// Stores `$2` under key `$1` at `$3`, replacing any value.
const SET_META: &str = "\
    INSERT INTO server_meta (key, value, created_at) VALUES ($1, $2, $3) \
    ON CONFLICT (key) DO UPDATE SET value = excluded.value";

/// Every KEK version of tenant `$1`, oldest first.
const KEKS: &str = "\
    SELECT tenant_id, version, wrapped, created_at FROM tenant_keks \
    WHERE tenant_id = $1 ORDER BY version";

/// Replaces KEK `$2` of tenant `$1` by `$4` if it is still `$3`.
const REPLACE_KEK: &str = "\
    UPDATE tenant_keks SET wrapped = $4 WHERE tenant_id = $1 AND version = $2 AND wrapped = $3";

/// Tenant `$1`.
const TENANT: &str = concat!("SELECT ", tenant_columns!(), " FROM tenants WHERE id = $1");

/// Adds KEK version `$2` (wrapped `$3`, created at `$4`) to tenant `$1`.
const INSERT_KEK: &str = "\
    INSERT INTO tenant_keks (tenant_id, version, wrapped, created_at) VALUES ($1, $2, $3, $4)";

/// Makes KEK version `$2` tenant `$1`'s current one if `$3` still is.
const SET_CURRENT: &str = concat!(
    "UPDATE tenants SET current_kek_version = $2 WHERE id = $1 AND current_kek_version = $3 \
     RETURNING ",
    tenant_columns!()
);

/// Opens tenant `$1`'s rotation to `$2` at `$3`.
const OPEN_REWRAP: &str = "\
    INSERT INTO tenant_key_rewraps (tenant_id, kek_version, started_at, finished_at) \
    VALUES ($1, $2, $3, NULL) \
    ON CONFLICT (tenant_id) DO UPDATE SET kek_version = excluded.kek_version, \
      started_at = excluded.started_at, finished_at = NULL";

/// Tenant `$1`'s latest rotation.
const REWRAP: &str = "\
    SELECT tenant_id, kek_version, started_at, finished_at FROM tenant_key_rewraps \
    WHERE tenant_id = $1";

/// Every open rotation.
const OPEN_REWRAPS: &str = "\
    SELECT tenant_id, kek_version, started_at, finished_at FROM tenant_key_rewraps \
    WHERE finished_at IS NULL ORDER BY tenant_id";

/// Finishes tenant `$1`'s rotation to `$2` at `$3`.
const FINISH_REWRAP: &str = "\
    UPDATE tenant_key_rewraps SET finished_at = $3 \
    WHERE tenant_id = $1 AND kek_version = $2 AND finished_at IS NULL";

/// Up to `$3` of tenant `$1`'s stored values wrapped by a version other
/// than `$2`.
const PENDING: &str = "\
    SELECT v.credential_id, c.environment, v.version, v.envelope \
    FROM credential_versions v \
    JOIN credentials c ON c.tenant_id = v.tenant_id AND c.id = v.credential_id \
    WHERE v.tenant_id = $1 AND v.kek_version <> $2 AND v.envelope IS NOT NULL \
    ORDER BY v.credential_id, v.version LIMIT $3";

/// Replaces the envelope of version `$3` of credential `$2` of tenant `$1`
/// by `$5` (KEK version `$6`) if it is still `$4`.
const REPLACE_DATA_KEY: &str = "\
    UPDATE credential_versions SET envelope = $5, kek_version = $6 \
    WHERE tenant_id = $1 AND credential_id = $2 AND version = $3 AND envelope = $4";

/// Stored values per KEK version of tenant `$1`.
const COUNTS: &str = "\
    SELECT kek_version, COUNT(*) FROM credential_versions \
    WHERE tenant_id = $1 AND envelope IS NOT NULL GROUP BY kek_version ORDER BY kek_version";

/// Stored values of tenant `$1` wrapped by KEK version `$2`.
const COUNT_VERSION: &str = "\
    SELECT COUNT(*) FROM credential_versions \
    WHERE tenant_id = $1 AND kek_version = $2 AND envelope IS NOT NULL";

/// Replaces tenant `$1`'s settings text `$2` by `$3`.
const REPLACE_SETTINGS: &str = "UPDATE tenants SET settings = $3 WHERE id = $1 AND settings = $2";

/// Tenant `$1`'s settings text.
const SETTINGS: &str = "SELECT settings FROM tenants WHERE id = $1";

/// Deletes KEK version `$2` of tenant `$1`.
const DELETE_KEK: &str = "DELETE FROM tenant_keks WHERE tenant_id = $1 AND version = $2";

pub(crate) type ReportRow = (String, String, String, Option<String>, String, i64);
pub(crate) type RewrapRow = (Uuid, i32, i64, Option<i64>);
pub(crate) type PendingRow = (Uuid, String, i32, Vec<u8>);

fn rewrap_of(r: RewrapRow) -> Result<TenantRewrap> {
    Ok(TenantRewrap {
        tenant: TenantId::from_uuid(r.0),
        kek_version: u32::try_from(r.1).map_err(|_| Error::internal("corrupt kek version"))?,
        started_at: Timestamp::from_micros(r.2),
        finished_at: r.3.map(Timestamp::from_micros),
    })
}

fn version_of(v: i32) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::internal("corrupt kek version"))
}

impl<D: Dialect> SqlStore<D> {
    /// A transaction over the scope's tenant: bound to it for a tenant
    /// admin, a platform transaction bound to it otherwise.
    async fn keys_tx(&self, scope: KeyScope<'_>, write: bool) -> Result<Transaction<'static, D>> {
        match scope {
            KeyScope::Tenant(s) => self.tenant_tx(s.tenant_id(), write).await,
            KeyScope::Platform(_, t) | KeyScope::System(_, t) => {
                self.platform_tx(Some(t), write).await
            }
        }
    }
}

#[async_trait]
impl<D: Dialect> KeyStore for SqlStore<D> {
    async fn report_replica(&self, r: &ReplicaReport) -> Result<()> {
        let mut conn = self.pool.acquire().await.map_err(db("replica report"))?;
        D::query(REPORT)
            .bind(r.replica.as_str())
            .bind(r.addr.as_str())
            .bind(r.current_key.as_str())
            .bind(r.next_key.as_deref())
            .bind(r.wraps_with.as_str())
            .bind(r.seen_at.as_micros())
            .execute(&mut *conn)
            .await
            .map_err(db("replica report"))?;
        Ok(())
    }

    async fn live_replicas(&self, since: Timestamp) -> Result<Vec<ReplicaReport>> {
        let mut conn = self.pool.acquire().await.map_err(db("replica report"))?;
        let rows: Vec<ReportRow> = D::query(LIVE)
            .bind(since.as_micros())
            .fetch_all(&mut *conn)
            .await
            .map_err(db("replica report"))?;
        Ok(rows
            .into_iter()
            .map(|r| ReplicaReport {
                replica: r.0,
                addr: r.1,
                current_key: r.2,
                next_key: r.3,
                wraps_with: r.4,
                seen_at: Timestamp::from_micros(r.5),
            })
            .collect())
    }

    async fn forget_replica(&self, replica: &str) -> Result<()> {
        let mut conn = self.pool.acquire().await.map_err(db("replica report"))?;
        D::query(FORGET)
            .bind(replica)
            .execute(&mut *conn)
            .await
            .map_err(db("replica report"))?;
        Ok(())
    }

    async fn set_meta(&self, key: &str, value: &[u8]) -> Result<()> {
        let mut conn = self.pool.acquire().await.map_err(db("server metadata"))?;
        D::query(SET_META)
            .bind(key)
            .bind(value)
            .bind(Timestamp::now().as_micros())
            .execute(&mut *conn)
            .await
            .map_err(db("server metadata"))?;
        Ok(())
    }

    async fn tenant_keks(&self, scope: KeyScope<'_>) -> Result<Vec<WrappedKekRecord>> {
        let mut tx = self.keys_tx(scope, false).await?;
        let rows: Vec<KekRow> = D::query(KEKS)
            .bind(scope.tenant_id().as_uuid())
            .fetch_all(&mut *tx)
            .await
            .map_err(db("tenant key"))?;
        tx.commit().await.map_err(db("tenant key"))?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    async fn replace_kek(
        &self,
        scope: KeyScope<'_>,
        version: u32,
        old: &[u8],
        new: &[u8],
    ) -> Result<bool> {
        let mut tx = self.keys_tx(scope, true).await?;
        let n = D::query(REPLACE_KEK)
            .bind(scope.tenant_id().as_uuid())
            .bind(version_i32(version)?)
            .bind(old)
            .bind(new)
            .execute(&mut *tx)
            .await
            .map_err(db("tenant key"))?;
        tx.commit().await.map_err(db("tenant key"))?;
        Ok(n == 1)
    }

    async fn add_kek_version(
        &self,
        scope: KeyScope<'_>,
        kek: &WrappedKekRecord,
        audit: AuditDraft,
    ) -> Result<Tenant> {
        let tenant = scope.tenant_id();
        if kek.tenant != tenant || kek.version < 2 {
            return Err(Error::internal(
                "a KEK version for another tenant or below 2",
            ));
        }
        let mut tx = self.keys_tx(scope, true).await?;
        let row: TenantRow = D::query(TENANT)
            .bind(tenant.as_uuid())
            .fetch_one(&mut *tx)
            .await
            .map_err(db("tenant"))?;
        if version_of(row.current_kek_version)? + 1 != kek.version {
            return Err(Error::precondition(
                "the tenant's key version changed meanwhile; retry",
            ));
        }
        D::query(INSERT_KEK)
            .bind(tenant.as_uuid())
            .bind(version_i32(kek.version)?)
            .bind(kek.wrapped.as_slice())
            .bind(kek.created_at.as_micros())
            .execute(&mut *tx)
            .await
            .map_err(db("tenant key"))?;
        let row: Option<TenantRow> = D::query(SET_CURRENT)
            .bind(tenant.as_uuid())
            .bind(version_i32(kek.version)?)
            .bind(version_i32(kek.version - 1)?)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db("tenant"))?;
        let row = row.ok_or_else(|| {
            Error::precondition("the tenant's key version changed meanwhile; retry")
        })?;
        D::query(OPEN_REWRAP)
            .bind(tenant.as_uuid())
            .bind(version_i32(kek.version)?)
            .bind(kek.created_at.as_micros())
            .execute(&mut *tx)
            .await
            .map_err(db("tenant key rotation"))?;
        self.append_in(&mut tx, tenant, audit).await?;
        tx.commit().await.map_err(db("tenant key"))?;
        row.try_into()
    }

    async fn key_tenant(&self, scope: KeyScope<'_>) -> Result<Tenant> {
        let mut tx = self.keys_tx(scope, false).await?;
        let row: Option<TenantRow> = D::query(TENANT)
            .bind(scope.tenant_id().as_uuid())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db("tenant"))?;
        tx.commit().await.map_err(db("tenant"))?;
        row.ok_or_else(|| Error::not_found("tenant"))?.try_into()
    }

    async fn tenant_rewrap(&self, scope: KeyScope<'_>) -> Result<Option<TenantRewrap>> {
        let mut tx = self.keys_tx(scope, false).await?;
        let row: Option<RewrapRow> = D::query(REWRAP)
            .bind(scope.tenant_id().as_uuid())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db("tenant key rotation"))?;
        tx.commit().await.map_err(db("tenant key rotation"))?;
        row.map(rewrap_of).transpose()
    }

    async fn open_rewraps(&self, _system: &SystemScope) -> Result<Vec<TenantRewrap>> {
        let mut tx = self.platform_tx(None, false).await?;
        let rows: Vec<RewrapRow> = D::query(OPEN_REWRAPS)
            .fetch_all(&mut *tx)
            .await
            .map_err(db("tenant key rotation"))?;
        tx.commit().await.map_err(db("tenant key rotation"))?;
        rows.into_iter().map(rewrap_of).collect()
    }

    async fn finish_rewrap(
        &self,
        scope: KeyScope<'_>,
        kek_version: u32,
        at: Timestamp,
    ) -> Result<()> {
        let mut tx = self.keys_tx(scope, true).await?;
        D::query(FINISH_REWRAP)
            .bind(scope.tenant_id().as_uuid())
            .bind(version_i32(kek_version)?)
            .bind(at.as_micros())
            .execute(&mut *tx)
            .await
            .map_err(db("tenant key rotation"))?;
        tx.commit().await.map_err(db("tenant key rotation"))?;
        Ok(())
    }

    async fn pending_data_keys(
        &self,
        scope: KeyScope<'_>,
        current: u32,
        limit: u32,
    ) -> Result<Vec<PendingDataKey>> {
        let mut tx = self.keys_tx(scope, false).await?;
        let rows: Vec<PendingRow> = D::query(PENDING)
            .bind(scope.tenant_id().as_uuid())
            .bind(version_i32(current)?)
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await
            .map_err(db("credential version"))?;
        tx.commit().await.map_err(db("credential version"))?;
        rows.into_iter()
            .map(|(credential, environment, version, envelope)| {
                Ok(PendingDataKey {
                    credential: CredentialId::from_uuid(credential),
                    environment,
                    version: version_of(version)?,
                    envelope,
                })
            })
            .collect()
    }

    async fn replace_data_key(
        &self,
        scope: KeyScope<'_>,
        credential: CredentialId,
        version: u32,
        old: &[u8],
        new: &[u8],
        kek_version: u32,
    ) -> Result<bool> {
        let mut tx = self.keys_tx(scope, true).await?;
        let n = D::query(REPLACE_DATA_KEY)
            .bind(scope.tenant_id().as_uuid())
            .bind(credential.as_uuid())
            .bind(version_i32(version)?)
            .bind(old)
            .bind(new)
            .bind(version_i32(kek_version)?)
            .execute(&mut *tx)
            .await
            .map_err(db("credential version"))?;
        tx.commit().await.map_err(db("credential version"))?;
        Ok(n == 1)
    }

    async fn data_key_counts(&self, scope: KeyScope<'_>) -> Result<Vec<(u32, u64)>> {
        let mut tx = self.keys_tx(scope, false).await?;
        let rows: Vec<(i32, i64)> = D::query(COUNTS)
            .bind(scope.tenant_id().as_uuid())
            .fetch_all(&mut *tx)
            .await
            .map_err(db("credential version"))?;
        tx.commit().await.map_err(db("credential version"))?;
        rows.into_iter()
            .map(|(v, n)| Ok((version_of(v)?, u64::try_from(n).unwrap_or(0))))
            .collect()
    }

    async fn replace_notifier_secret(
        &self,
        scope: KeyScope<'_>,
        old: &str,
        new: &str,
    ) -> Result<bool> {
        let tenant = scope.tenant_id();
        let mut tx = self.keys_tx(scope, true).await?;
        let (text,): (String,) = D::query(SETTINGS)
            .bind(tenant.as_uuid())
            .fetch_one(&mut *tx)
            .await
            .map_err(db("tenant"))?;
        let mut settings: TenantSettings =
            serde_json::from_str(&text).map_err(|_| Error::internal("corrupt tenant settings"))?;
        match settings.notifier.as_mut() {
            Some(n) if n.sealed_secret == old => n.sealed_secret = new.to_owned(),
            _ => return Ok(false),
        }
        let n = D::query(REPLACE_SETTINGS)
            .bind(tenant.as_uuid())
            .bind(text.as_str())
            .bind(json(&settings)?)
            .execute(&mut *tx)
            .await
            .map_err(db("tenant"))?;
        tx.commit().await.map_err(db("tenant"))?;
        Ok(n == 1)
    }

    async fn retire_kek(
        &self,
        scope: KeyScope<'_>,
        version: u32,
        notifier_secret: Option<&str>,
        audit: AuditDraft,
    ) -> Result<()> {
        let tenant = scope.tenant_id();
        let mut tx = self.keys_tx(scope, true).await?;
        // The tenant row locked: no key rotation or notifier change
        // commits meanwhile.
        let row: TenantRow = D::query(&format!("{TENANT}{}", D::FOR_UPDATE))
            .bind(tenant.as_uuid())
            .fetch_one(&mut *tx)
            .await
            .map_err(db("tenant"))?;
        if version_of(row.current_kek_version)? == version {
            return Err(Error::precondition(
                "the current key version cannot be retired",
            ));
        }
        let settings: TenantSettings = serde_json::from_str(&row.settings)
            .map_err(|_| Error::internal("corrupt tenant settings"))?;
        if settings.notifier.as_ref().map(|n| n.sealed_secret.as_str()) != notifier_secret {
            return Err(Error::precondition(
                "the notifier's signing secret changed meanwhile; retry",
            ));
        }
        // Deleted first: the KEK row is then locked, so a value writer that
        // sealed under this version (it checks the row `FOR SHARE` in its
        // transaction) either committed before, and is counted below, or
        // finds the version gone and fails.
        let deleted = D::query(DELETE_KEK)
            .bind(tenant.as_uuid())
            .bind(version_i32(version)?)
            .execute(&mut *tx)
            .await
            .map_err(db("tenant key"))?;
        if deleted == 0 {
            return Err(Error::not_found("key version"));
        }
        let (n,): (i64,) = D::query(COUNT_VERSION)
            .bind(tenant.as_uuid())
            .bind(version_i32(version)?)
            .fetch_one(&mut *tx)
            .await
            .map_err(db("credential version"))?;
        if n > 0 {
            return Err(Error::precondition(format!(
                "{n} data keys are still wrapped by this key version; wait for the re-wrapping"
            )));
        }
        self.append_in(&mut tx, tenant, audit).await?;
        tx.commit().await.map_err(db("tenant key"))?;
        Ok(())
    }
}
