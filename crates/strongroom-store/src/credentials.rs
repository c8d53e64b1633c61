//! A tenant's credentials and their sealed versions ([`CredentialStore`]).
//! Creates and rotations are group-committed (see [`crate::group_commit`]):
//! [`create_in`] and [`add_version_in`] are their job-by-job path inside a
//! batch. Rollback, revocation and destruction commit on their own.

use async_trait::async_trait;
use sqlx::Transaction;
use strongroom_core::audit::AuditDraft;
use strongroom_core::credential::{
    Credential, CredentialFilter, CredentialStatus, CredentialUpdate, StoredVersion,
};
use strongroom_core::ids::{CredentialId, TenantId};
use strongroom_core::lease::{LeaseEnd, LeaseHolder};
use strongroom_core::names::{CredentialName, Environment};
use strongroom_core::page::{Page, PageRequest};
use strongroom_core::policy::Selector;
use strongroom_core::scope::TenantScope;
use strongroom_core::store::{CredentialRevoked, CredentialStore, EmergencyRotation};
use strongroom_core::time::Timestamp;
use strongroom_core::{Error, Missing, Precondition, Result};

use crate::dialect::{Dialect, SqlBuilder};
use crate::environments;
use crate::error::{db, uuid_cursor};
use crate::group_commit::{self, Done, Work};
use crate::rows::{
    CredentialRow, VersionRow, credential_columns, json, version_columns, version_i32,
};
use crate::store::SqlStore;

/// Reads tenant `$1`'s credential `$2`.
const BY_ID: &str = concat!(
    "SELECT ",
    credential_columns!(),
    " FROM credentials WHERE tenant_id = $1 AND id = $2"
);

/// Reads tenant `$1`'s credential named `$3` in environment `$2`.
const BY_NAME: &str = concat!(
    "SELECT ",
    credential_columns!(),
    " FROM credentials WHERE tenant_id = $1 AND environment = $2 AND name = $3"
);

/// Tenant `$1`'s credentials (the filters follow).
const CREDENTIALS: &str = concat!(
    "SELECT ",
    credential_columns!(),
    " FROM credentials WHERE tenant_id = "
);

/// Inserts a credential (`$1`..`$23` in [`credential_columns!`] order)
/// unless its name is taken in its environment.
const INSERT: &str = concat!(
    "INSERT INTO credentials (",
    credential_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
     $18, $19, $20, $21, $22, $23) ON CONFLICT (tenant_id, environment, name) DO NOTHING"
);

/// Makes version `$3` (written at `$4`) tenant `$1`'s credential `$2`'s
/// current and latest one if its latest is still `$5` and it is active.
const ADVANCE: &str = concat!(
    "UPDATE credentials SET current_version = $3, latest_version = $3, rotated_at = $4, \
     updated_at = $4 WHERE tenant_id = $1 AND id = $2 AND latest_version = $5 \
     AND status = 'active' AND destroyed_at IS NULL RETURNING ",
    credential_columns!()
);

/// Makes the retained version `$3` tenant `$1`'s credential `$2`'s current
/// one, at `$4`.
const ROLL_BACK: &str = concat!(
    "UPDATE credentials SET current_version = $3, updated_at = $4, \
     rotated_at = (SELECT v.created_at FROM credential_versions v \
                   WHERE v.tenant_id = $1 AND v.credential_id = $2 AND v.version = $3) \
     WHERE tenant_id = $1 AND id = $2 AND EXISTS (SELECT 1 FROM credential_versions v \
           WHERE v.tenant_id = $1 AND v.credential_id = $2 AND v.version = $3 \
           AND v.envelope IS NOT NULL) \
     RETURNING ",
    credential_columns!()
);

/// Revokes tenant `$1`'s credential `$2` at `$3` for reason `$4`, unless it
/// is revoked already.
const REVOKE: &str = concat!(
    "UPDATE credentials SET status = 'revoked', revoked_at = $3, revoke_reason = $4, \
     updated_at = $3 WHERE tenant_id = $1 AND id = $2 AND status <> 'revoked' RETURNING ",
    credential_columns!()
);

/// Sets, on tenant `$1`'s credential `$2`, each metadata column whose flag
/// is 1 (`$3` service `$4`, `$5` description `$6`, `$7` tags `$8`, `$9`
/// scopes `$10`, `$11` owner `$12`, `$13` expiry `$14`, `$15` rotation `$16`,
/// `$17` injection `$18`), and `updated_at` to `$19`: only the columns an
/// update names, so a concurrent rotation or update of other fields is
/// never overwritten.
const UPDATE_METADATA: &str = concat!(
    "UPDATE credentials SET \
     service = CASE WHEN $3 = 1 THEN $4 ELSE service END, \
     description = CASE WHEN $5 = 1 THEN $6 ELSE description END, \
     tags = CASE WHEN $7 = 1 THEN $8 ELSE tags END, \
     scopes = CASE WHEN $9 = 1 THEN $10 ELSE scopes END, \
     owner = CASE WHEN $11 = 1 THEN $12 ELSE owner END, \
     expires_at = CASE WHEN $13 = 1 THEN $14 ELSE expires_at END, \
     status = CASE WHEN $13 = 1 AND status = 'expired' AND ($14 IS NULL OR $14 > $19) \
       THEN 'active' ELSE status END, \
     rotation = CASE WHEN $15 = 1 THEN $16 ELSE rotation END, \
     injection = CASE WHEN $17 = 1 THEN $18 ELSE injection END, \
     updated_at = $19 \
     WHERE tenant_id = $1 AND id = $2 RETURNING ",
    credential_columns!()
);

/// Marks tenant `$1`'s credential `$2` destroyed at `$3`, unless it is
/// destroyed already.
const DESTROY: &str = concat!(
    "UPDATE credentials SET destroyed_at = $3, updated_at = $3 \
     WHERE tenant_id = $1 AND id = $2 AND destroyed_at IS NULL RETURNING ",
    credential_columns!()
);

/// Deletes every stored value of tenant `$1`'s credential `$2`.
const DESTROY_VALUES: &str = "\
    UPDATE credential_versions SET envelope = NULL WHERE tenant_id = $1 AND credential_id = $2";

/// Inserts a version of a credential of tenant `$1`: `$2`..`$7` in
/// [`version_columns!`] order.
const INSERT_VERSION: &str = concat!(
    "INSERT INTO credential_versions (tenant_id, ",
    version_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7)"
);

/// KEK version `$2` of tenant `$1`, if it exists.
const KEK_EXISTS: &str = "SELECT version FROM tenant_keks WHERE tenant_id = $1 AND version = $2";

/// Reads version `$3` of tenant `$1`'s credential `$2`.
const VERSION: &str = concat!(
    "SELECT ",
    version_columns!(),
    " FROM credential_versions WHERE tenant_id = $1 AND credential_id = $2 AND version = $3"
);

/// The retained versions of tenant `$1`'s credential `$2`, newest first.
const VERSIONS: &str = concat!(
    "SELECT ",
    version_columns!(),
    " FROM credential_versions WHERE tenant_id = $1 AND credential_id = $2 \
      ORDER BY version DESC"
);

/// Deletes the versions up to `$3` of tenant `$1`'s credential `$2`.
const PRUNE: &str = "\
    DELETE FROM credential_versions \
    WHERE tenant_id = $1 AND credential_id = $2 AND version <= $3";

#[async_trait]
impl<D: Dialect> CredentialStore for SqlStore<D> {
    async fn create_credential(
        &self,
        scope: &TenantScope<'_>,
        credential: &Credential,
        first: &StoredVersion,
        audit: AuditDraft,
    ) -> Result<()> {
        let tenant = scope.tenant_id();
        if credential.tenant != tenant || first.credential != credential.id {
            return Err(Error::internal("credential of another tenant"));
        }
        let work = Work::CreateCredential {
            credential: Box::new(credential.clone()),
            first: Box::new(first.clone()),
        };
        group_commit::submit(self.committer(tenant)?, work, audit).await?;
        Ok(())
    }

    async fn get_credential(
        &self,
        scope: &TenantScope<'_>,
        id: CredentialId,
    ) -> Result<Credential> {
        let tenant = scope.tenant_id();
        let mut tx = self.tenant_tx(tenant, false).await?;
        let credential = credential_in(&mut tx, tenant, id).await?;
        tx.commit().await.map_err(db("credential"))?;
        Ok(credential)
    }

    async fn find_credential(
        &self,
        scope: &TenantScope<'_>,
        environment: &Environment,
        name: &CredentialName,
    ) -> Result<Credential> {
        let tenant = scope.tenant_id();
        let mut tx = self.tenant_tx(tenant, false).await?;
        let row: CredentialRow = D::query(BY_NAME)
            .bind(tenant.as_uuid())
            .bind(environment.as_str())
            .bind(name.as_str())
            .fetch_one(&mut *tx)
            .await
            .map_err(db("credential"))?;
        tx.commit().await.map_err(db("credential"))?;
        row.try_into()
    }

    async fn list_credentials(
        &self,
        scope: &TenantScope<'_>,
        filter: &CredentialFilter,
        page: &PageRequest,
    ) -> Result<Page<Credential>> {
        let tenant = scope.tenant_id();
        let after = uuid_cursor(page.after.as_ref())?;
        let mut q = SqlBuilder::<D>::new(CREDENTIALS);
        q.push_bind(tenant.as_uuid());
        q.push(" AND id > ").push_bind(after);
        if let Some(e) = &filter.environment {
            q.push(" AND environment = ")
                .push_bind(e.as_str().to_owned());
        }
        if let Some(s) = &filter.service {
            q.push(" AND service = ").push_bind(s.as_str().to_owned());
        }
        if let Some(k) = &filter.kind {
            q.push(" AND kind = ").push_bind(k.as_str());
        }
        if let Some(s) = &filter.status {
            q.push(" AND status = ").push_bind(s.as_str());
        }
        if let Some(t) = &filter.tag {
            q.push(" AND ")
                .push(D::SUBSTRING_POSITION)
                .push("(tags, ")
                .push_bind(format!("\"{}\"", t.as_str()))
                .push(") > 0");
        }
        if let Some(p) = &filter.name_prefix {
            // length() of the bound text itself: it counts characters on
            // both backends and is an integer, as Postgres'
            // substr(text, int, int) needs (a bound i64 has no match).
            q.push(" AND substr(name, 1, length(")
                .push_bind(p.clone())
                .push(")) = ")
                .push_bind(p.clone());
        }
        if filter.unowned_only {
            q.push(" AND owner IS NULL");
        }
        if let Some(reach) = &filter.reach {
            q.push(" AND (1 = 0");
            for r in reach {
                q.push(" OR (environment IN (NULL");
                for e in &r.environments {
                    q.push(", ").push_bind(e.as_str().to_owned());
                }
                q.push(")");
                match &r.selector {
                    Selector::Exact(n) => {
                        q.push(" AND name = ").push_bind(n.as_str().to_owned());
                    }
                    Selector::Prefix(p) if p.is_empty() => {}
                    Selector::Prefix(p) => {
                        q.push(" AND substr(name, 1, length(")
                            .push_bind(p.clone())
                            .push(")) = ")
                            .push_bind(p.clone());
                    }
                }
                q.push(")");
            }
            q.push(")");
        }
        q.push(" ORDER BY id LIMIT ").push_bind(page.fetch_limit());
        let mut tx = self.tenant_tx(tenant, false).await?;
        let rows: Vec<CredentialRow> = q.fetch_all(&mut *tx).await.map_err(db("credential"))?;
        tx.commit().await.map_err(db("credential"))?;
        let items = rows
            .into_iter()
            .map(Credential::try_from)
            .collect::<Result<Vec<_>>>()?;
        Ok(Page::from_rows(items, page.size, |c| c.id.to_string()))
    }

    async fn add_version(
        &self,
        scope: &TenantScope<'_>,
        id: CredentialId,
        expected_latest: u32,
        version: &StoredVersion,
        retention: u32,
        audit: AuditDraft,
    ) -> Result<Credential> {
        let tenant = scope.tenant_id();
        if version.credential != id || version.version != expected_latest + 1 {
            return Err(Error::internal("version number does not follow the latest"));
        }
        let work = Work::AddVersion {
            id,
            expected_latest,
            version: Box::new(version.clone()),
            retention,
        };
        match group_commit::submit(self.committer(tenant)?, work, audit).await? {
            Done::Credential(c, _) => Ok(*c),
            Done::Event(_) => Err(Error::internal("add_version returned no credential")),
        }
    }

    async fn get_version(
        &self,
        scope: &TenantScope<'_>,
        id: CredentialId,
        version: u32,
    ) -> Result<StoredVersion> {
        let tenant = scope.tenant_id();
        let mut tx = self.tenant_tx(tenant, false).await?;
        let row: VersionRow = D::query(VERSION)
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .bind(version_i32(version)?)
            .fetch_one(&mut *tx)
            .await
            .map_err(db("credential version"))?;
        tx.commit().await.map_err(db("credential version"))?;
        row.try_into()
    }

    async fn list_versions(
        &self,
        scope: &TenantScope<'_>,
        id: CredentialId,
    ) -> Result<Vec<StoredVersion>> {
        let tenant = scope.tenant_id();
        let mut tx = self.tenant_tx(tenant, false).await?;
        credential_in(&mut tx, tenant, id).await?;
        let rows: Vec<VersionRow> = D::query(VERSIONS)
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .fetch_all(&mut *tx)
            .await
            .map_err(db("credential version"))?;
        tx.commit().await.map_err(db("credential version"))?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    async fn set_current_version(
        &self,
        scope: &TenantScope<'_>,
        id: CredentialId,
        version: u32,
        audit: AuditDraft,
    ) -> Result<Credential> {
        let tenant = scope.tenant_id();
        let mut tx = self.tenant_tx(tenant, true).await?;
        let current = credential_in(&mut tx, tenant, id).await?;
        current.ensure_usable(Timestamp::now())?;
        let row: Option<CredentialRow> = D::query(ROLL_BACK)
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .bind(version_i32(version)?)
            .bind(Timestamp::now().as_micros())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db("credential"))?;
        let row = row.ok_or_else(|| Error::not_found("credential version"))?;
        self.append_in(&mut tx, tenant, audit).await?;
        tx.commit().await.map_err(db("credential"))?;
        row.try_into()
    }

    async fn revoke_credential(
        &self,
        scope: &TenantScope<'_>,
        id: CredentialId,
        reason: &str,
        audit: AuditDraft,
    ) -> Result<(Credential, u32)> {
        let tenant = scope.tenant_id();
        let now = Timestamp::now().as_micros();
        let mut tx = self.tenant_tx(tenant, true).await?;
        let row: Option<CredentialRow> = D::query(REVOKE)
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .bind(now)
            .bind(reason)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db("credential"))?;
        let Some(row) = row else {
            credential_in(&mut tx, tenant, id).await?;
            return Err(Error::precondition("credential is already revoked"));
        };
        let by = audit.clone();
        self.append_in(&mut tx, tenant, audit).await?;
        let ended = Self::end_leases_in(
            &mut tx,
            tenant,
            LeaseHolder::Credential(id),
            LeaseEnd::CredentialRevoked,
            &by,
        )
        .await?;
        let count = self
            .append_lease_ends(&mut tx, tenant, &ended, LeaseEnd::CredentialRevoked, &by)
            .await?;
        tx.commit().await.map_err(db("credential"))?;
        Ok((row.try_into()?, count))
    }

    async fn update_credential(
        &self,
        scope: &TenantScope<'_>,
        id: CredentialId,
        update: &CredentialUpdate,
        narrowed: bool,
        audit: AuditDraft,
    ) -> Result<(Credential, u32)> {
        let tenant = scope.tenant_id();
        let tags = update.tags.as_ref().map(json).transpose()?;
        let scopes = update.scopes.as_ref().map(json).transpose()?;
        let rotation = match &update.rotation {
            Some(Some(r)) => Some(json(r)?),
            _ => None,
        };
        let injection = match &update.injection {
            Some(Some(t)) => Some(json(t)?),
            _ => None,
        };
        let mut tx = self.tenant_tx(tenant, true).await?;
        let row: CredentialRow = D::query(UPDATE_METADATA)
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .bind(i32::from(update.service.is_some()))
            .bind(update.service.as_ref().map_or("", |s| s.as_str()))
            .bind(i32::from(update.description.is_some()))
            .bind(update.description.as_deref().unwrap_or_default())
            .bind(i32::from(tags.is_some()))
            .bind(tags.clone().unwrap_or_default())
            .bind(i32::from(scopes.is_some()))
            .bind(scopes.clone().unwrap_or_default())
            .bind(i32::from(update.owner.is_some()))
            .bind(update.owner.clone().flatten())
            .bind(i32::from(update.expires_at.is_some()))
            .bind(update.expires_at.flatten().map(|t| t.as_micros()))
            .bind(i32::from(update.rotation.is_some()))
            .bind(rotation)
            .bind(i32::from(update.injection.is_some()))
            .bind(injection)
            .bind(audit.at.as_micros())
            .fetch_one(&mut *tx)
            .await
            .map_err(db("credential"))?;
        let by = audit.clone();
        self.append_in(&mut tx, tenant, audit).await?;
        let ended = if narrowed {
            Self::end_leases_in(
                &mut tx,
                tenant,
                LeaseHolder::Credential(id),
                LeaseEnd::CredentialNarrowed,
                &by,
            )
            .await?
        } else {
            Vec::new()
        };
        let count = self
            .append_lease_ends(&mut tx, tenant, &ended, LeaseEnd::CredentialNarrowed, &by)
            .await?;
        tx.commit().await.map_err(db("credential"))?;
        Ok((row.try_into()?, count))
    }

    async fn emergency_revoke_credential(
        &self,
        scope: &TenantScope<'_>,
        id: CredentialId,
        reason: &str,
        rotation: Option<EmergencyRotation>,
        audit: AuditDraft,
    ) -> Result<CredentialRevoked> {
        self.emergency_revoke_credential_in(scope.tenant_id(), id, reason, rotation, audit)
            .await
    }

    async fn destroy_credential(
        &self,
        scope: &TenantScope<'_>,
        id: CredentialId,
        audit: AuditDraft,
    ) -> Result<Credential> {
        let tenant = scope.tenant_id();
        let now = Timestamp::now().as_micros();
        let mut tx = self.tenant_tx(tenant, true).await?;
        let row: Option<CredentialRow> = D::query(DESTROY)
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .bind(now)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db("credential"))?;
        let Some(row) = row else {
            credential_in(&mut tx, tenant, id).await?;
            return Err(Error::precondition(
                "credential values are already destroyed",
            ));
        };
        D::query(DESTROY_VALUES)
            .bind(tenant.as_uuid())
            .bind(id.as_uuid())
            .execute(&mut *tx)
            .await
            .map_err(db("credential version"))?;
        let by = audit.clone();
        self.append_in(&mut tx, tenant, audit).await?;
        let ended = Self::end_leases_in(
            &mut tx,
            tenant,
            LeaseHolder::Credential(id),
            LeaseEnd::CredentialDestroyed,
            &by,
        )
        .await?;
        self.append_lease_ends(&mut tx, tenant, &ended, LeaseEnd::CredentialDestroyed, &by)
            .await?;
        tx.commit().await.map_err(db("credential"))?;
        row.try_into()
    }
}

/// Reads `tenant`'s credential `id` inside `tx`.
pub(crate) async fn credential_in<D: Dialect>(
    tx: &mut Transaction<'static, D>,
    tenant: TenantId,
    id: CredentialId,
) -> Result<Credential> {
    let row: CredentialRow = D::query(BY_ID)
        .bind(tenant.as_uuid())
        .bind(id.as_uuid())
        .fetch_one(&mut **tx)
        .await
        .map_err(db("credential"))?;
    row.try_into()
}

/// Stores a new credential and its first version inside a batch.
/// Expected failures (name taken, unknown environment) leave the
/// transaction usable: the name conflict is skipped, not raised.
pub(crate) async fn create_in<D: Dialect>(
    tx: &mut Transaction<'static, D>,
    tenant: TenantId,
    c: &Credential,
    first: &StoredVersion,
) -> Result<()> {
    let environment: Option<(i32,)> = D::query(environments::EXISTS)
        .bind(tenant.as_uuid())
        .bind(c.environment.as_str())
        .fetch_optional(&mut **tx)
        .await
        .map_err(db("environment"))?;
    if environment.is_none() {
        return Err(Error::NotFound(Missing::Environment));
    }
    let inserted = D::query(INSERT)
        .bind(tenant.as_uuid())
        .bind(c.id.as_uuid())
        .bind(c.environment.as_str())
        .bind(c.name.as_str())
        .bind(c.service.as_str())
        .bind(c.kind.as_str())
        .bind(c.description.as_str())
        .bind(json(&c.tags)?)
        .bind(json(&c.scopes)?)
        .bind(c.owner.as_deref())
        .bind(c.status.as_str())
        .bind(version_i32(c.current_version)?)
        .bind(version_i32(c.latest_version)?)
        .bind(c.rotated_at.as_micros())
        .bind(c.created_at.as_micros())
        .bind(c.updated_at.as_micros())
        .bind(c.expires_at.map(|t| t.as_micros()))
        .bind(c.revoked_at.map(|t| t.as_micros()))
        .bind(c.revoke_reason.as_deref())
        .bind(c.destroyed_at.map(|t| t.as_micros()))
        .bind(c.rotation.as_ref().map(json).transpose()?)
        .bind(c.injection.as_ref().map(json).transpose()?)
        .bind(c.created_by.as_uuid())
        .execute(&mut **tx)
        .await
        .map_err(db("credential"))?;
    if inserted == 0 {
        return Err(Error::already_exists("credential"));
    }
    insert_version(tx, tenant, first).await
}

/// Adds a version inside a batch: compare-and-set on the latest version,
/// insert, prune to `retention`.
pub(crate) async fn add_version_in<D: Dialect>(
    tx: &mut Transaction<'static, D>,
    tenant: TenantId,
    id: CredentialId,
    expected_latest: u32,
    version: &StoredVersion,
    retention: u32,
) -> Result<Credential> {
    let row: Option<CredentialRow> = D::query(ADVANCE)
        .bind(tenant.as_uuid())
        .bind(id.as_uuid())
        .bind(version_i32(version.version)?)
        .bind(version.created_at.as_micros())
        .bind(version_i32(expected_latest)?)
        .fetch_optional(&mut **tx)
        .await
        .map_err(db("credential"))?;
    let Some(row) = row else {
        let current = match credential_in(tx, tenant, id).await {
            Err(Error::NotFound(_)) => return Err(Error::not_found("credential")),
            other => other?,
        };
        current.ensure_usable(Timestamp::now())?;
        if current.status != CredentialStatus::Active {
            return Err(Error::precondition("credential is not active"));
        }
        return Err(Error::FailedPrecondition(Precondition::VersionRace));
    };
    insert_version(tx, tenant, version).await?;
    let keep_from = i64::from(version.version) - i64::from(retention.max(1));
    D::query(PRUNE)
        .bind(tenant.as_uuid())
        .bind(id.as_uuid())
        .bind(i32::try_from(keep_from.max(0)).unwrap_or(0))
        .execute(&mut **tx)
        .await
        .map_err(db("credential version"))?;
    row.try_into()
}

/// Stores version `v` of one of `tenant`'s credentials.
async fn insert_version<D: Dialect>(
    tx: &mut Transaction<'static, D>,
    tenant: TenantId,
    v: &StoredVersion,
) -> Result<()> {
    // The KEK version the value was sealed under must still exist (a
    // replica may seal under a version being retired): checked, and kept
    // from deletion, until commit.
    if v.envelope.is_some() {
        let found: Option<(i32,)> = D::query(&format!("{KEK_EXISTS}{}", D::FOR_SHARE))
            .bind(tenant.as_uuid())
            .bind(version_i32(v.kek_version)?)
            .fetch_optional(&mut **tx)
            .await
            .map_err(db("tenant key"))?;
        if found.is_none() {
            return Err(Error::precondition(
                "the tenant key version this value was sealed under was retired; retry",
            ));
        }
    }
    D::query(INSERT_VERSION)
        .bind(tenant.as_uuid())
        .bind(v.credential.as_uuid())
        .bind(version_i32(v.version)?)
        .bind(v.envelope.as_deref())
        .bind(version_i32(v.kek_version)?)
        .bind(v.created_at.as_micros())
        .bind(v.created_by.as_uuid())
        .execute(&mut **tx)
        .await
        .map_err(db("credential version"))?;
    Ok(())
}
