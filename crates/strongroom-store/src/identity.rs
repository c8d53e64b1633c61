//! Which tenant and principal an identity stands for ([`IdentityStore`]):
//! the identity namespaces assigned to tenants (no two tenants' overlap,
//! checked under the namespace lock), the resolution of an identity through
//! the enabled bindings those namespaces cover, and the reports and review
//! `strongroomd migrate` runs over both.

use async_trait::async_trait;
use sqlx::Transaction;
use strongroom_core::audit::AuditDraft;
use strongroom_core::ids::TenantId;
use strongroom_core::principal::{IdentityPattern, NAMESPACE_OVERLAP};
use strongroom_core::scope::{IdentityMatch, PlatformScope};
use strongroom_core::store::{DisabledBinding, IdentityStore};
use strongroom_core::time::Timestamp;
use strongroom_core::{Error, Result};

use crate::dialect::{Dialect, NamespaceLock};
use crate::error::{db, is_unique};
use crate::rows::{
    DerivedNamespaceRow, DisabledBindingRow, IdentityMatchRow, NamespaceRow, pattern, pattern_parts,
};
use crate::store::SqlStore;

/// The enabled bindings matching identity `$1` that a namespace of their
/// tenant covers, with their principals and tenants.
const RESOLVE: &str = "\
    SELECT b.id AS binding_id, b.kind, b.pattern, p.tenant_id, p.id, p.name, p.role, \
           p.environments, p.description, p.status, p.created_at, t.name AS t_name, \
           t.status AS t_status, t.settings AS t_settings, t.current_kek_version AS t_kek, \
           t.created_at AS t_created_at \
    FROM identity_bindings b \
    JOIN principals p ON p.tenant_id = b.tenant_id AND p.id = b.principal_id \
    JOIN tenants t ON t.id = b.tenant_id \
    WHERE b.disabled_reason IS NULL AND ((b.kind = 'exact' AND b.pattern = $1) \
       OR (b.kind = 'prefix' AND substr($1, 1, length(b.pattern)) = b.pattern)) \
      AND EXISTS (SELECT 1 FROM identity_namespaces n WHERE n.tenant_id = b.tenant_id AND ( \
        (n.kind = 'exact' AND b.kind = 'exact' AND b.pattern = n.pattern) \
        OR (n.kind = 'prefix' AND substr(b.pattern, 1, length(n.pattern)) = n.pattern)))";

/// Whether tenant `$1` exists.
const TENANT_EXISTS: &str = "SELECT 1 FROM tenants WHERE id = $1";

/// Removes tenant `$1`'s namespaces.
const DELETE_ALL: &str = "DELETE FROM identity_namespaces WHERE tenant_id = $1";

/// Enables exactly those of tenant `$1`'s bindings that one of its
/// namespaces covers.
const ENABLE_COVERED: &str = "\
    UPDATE identity_bindings SET disabled_reason = CASE WHEN EXISTS ( \
      SELECT 1 FROM identity_namespaces n WHERE n.tenant_id = identity_bindings.tenant_id AND ( \
        (n.kind = 'exact' AND identity_bindings.kind = 'exact' \
         AND identity_bindings.pattern = n.pattern) \
        OR (n.kind = 'prefix' \
         AND substr(identity_bindings.pattern, 1, length(n.pattern)) = n.pattern))) \
      THEN NULL ELSE 'outside the tenant''s identity namespaces' END \
    WHERE tenant_id = $1";

/// The namespaces of the tenants with ids from `$1` to `$2`.
const RANGE: &str = "\
    SELECT tenant_id, kind, pattern FROM identity_namespaces \
    WHERE tenant_id >= $1 AND tenant_id <= $2 ORDER BY tenant_id, pattern, kind";

/// A namespace of another tenant than `$1` that overlaps the namespace of
/// kind `$2` and text `$3`, if any.
const OVERLAPPING: &str = "\
    SELECT 1 FROM identity_namespaces WHERE tenant_id <> $1 AND ( \
      (kind = 'exact' AND $2 = 'exact' AND pattern = $3) \
      OR (kind = 'prefix' AND substr($3, 1, length(pattern)) = pattern) \
      OR ($2 = 'prefix' AND substr(pattern, 1, length($3)) = $3)) LIMIT 1";

/// Assigns the namespace of kind `$2` and text `$3` to tenant `$1` at `$4`.
const INSERT: &str = "\
    INSERT INTO identity_namespaces (tenant_id, kind, pattern, created_at) \
    VALUES ($1, $2, $3, $4)";

/// The first `$1` disabled bindings, oldest first, with their tenants'
/// names.
const DISABLED_BINDINGS: &str = "\
    SELECT b.tenant_id, t.name AS tenant_name, b.id, b.kind, b.pattern, b.disabled_reason \
    FROM identity_bindings b JOIN tenants t ON t.id = b.tenant_id \
    WHERE b.disabled_reason IS NOT NULL ORDER BY b.created_at, b.id LIMIT $1";

/// The namespaces the namespaces migration derived, by tenant name.
const DERIVED: &str = "\
    SELECT n.tenant_id, t.name AS tenant_name, n.kind, n.pattern FROM identity_namespaces n \
    JOIN tenants t ON t.id = n.tenant_id WHERE n.derived \
    ORDER BY t.name, n.pattern, n.kind";

/// Removes the namespace of kind `$1` and text `$2`.
const DELETE_ONE: &str = "DELETE FROM identity_namespaces WHERE kind = $1 AND pattern = $2";

/// Disables, with reason `$2`, tenant `$1`'s enabled bindings that no
/// namespace of the tenant covers.
const DISABLE_UNCOVERED: &str = "\
    UPDATE identity_bindings SET disabled_reason = $2 \
    WHERE tenant_id = $1 AND disabled_reason IS NULL AND NOT EXISTS ( \
      SELECT 1 FROM identity_namespaces n WHERE n.tenant_id = identity_bindings.tenant_id AND ( \
        (n.kind = 'exact' AND identity_bindings.kind = 'exact' \
         AND identity_bindings.pattern = n.pattern) \
        OR (n.kind = 'prefix' \
         AND substr(identity_bindings.pattern, 1, length(n.pattern)) = n.pattern)))";

/// A namespace the migration derived from a tenant's bindings, not yet
/// confirmed by a platform operator (`SetIdentityNamespaces` clears the
/// mark).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DerivedNamespace {
    /// Owning tenant.
    pub tenant: TenantId,
    /// Its name.
    pub tenant_name: String,
    /// The namespace.
    pub pattern: IdentityPattern,
    /// Whether it was removed as too broad (its bindings are disabled).
    pub removed: bool,
}

#[async_trait]
impl<D: Dialect> IdentityStore for SqlStore<D> {
    async fn resolve_identity(&self, identity: &str) -> Result<Vec<IdentityMatch>> {
        let mut tx = self.platform_tx(None, false).await?;
        let rows: Vec<IdentityMatchRow> = D::query(RESOLVE)
            .bind(identity)
            .fetch_all(&mut *tx)
            .await
            .map_err(db("identity binding"))?;
        tx.commit().await.map_err(db("identity binding"))?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    async fn set_identity_namespaces(
        &self,
        _scope: &PlatformScope<'_>,
        id: TenantId,
        namespaces: &[IdentityPattern],
        audit: AuditDraft,
    ) -> Result<()> {
        let mut tx = self.platform_tx(Some(id), true).await?;
        D::lock_namespaces(&mut tx, NamespaceLock::Exclusive).await?;
        let exists: Option<(i32,)> = D::query(TENANT_EXISTS)
            .bind(id.as_uuid())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db("tenant"))?;
        if exists.is_none() {
            return Err(Error::not_found("tenant"));
        }
        D::query(DELETE_ALL)
            .bind(id.as_uuid())
            .execute(&mut *tx)
            .await
            .map_err(db("identity namespace"))?;
        insert_namespaces(&mut tx, id, namespaces, Timestamp::now()).await?;
        // A binding is enabled exactly when a namespace of its tenant
        // covers it.
        D::query(ENABLE_COVERED)
            .bind(id.as_uuid())
            .execute(&mut *tx)
            .await
            .map_err(db("identity binding"))?;
        self.append_in(&mut tx, id, audit).await?;
        tx.commit().await.map_err(db("identity namespace"))?;
        Ok(())
    }

    async fn identity_namespaces(
        &self,
        _scope: &PlatformScope<'_>,
        from: TenantId,
        to: TenantId,
    ) -> Result<Vec<(TenantId, IdentityPattern)>> {
        let mut tx = self.platform_tx(None, false).await?;
        let rows: Vec<NamespaceRow> = D::query(RANGE)
            .bind(from.as_uuid())
            .bind(to.as_uuid())
            .fetch_all(&mut *tx)
            .await
            .map_err(db("identity namespace"))?;
        tx.commit().await.map_err(db("identity namespace"))?;
        rows.into_iter().map(TryInto::try_into).collect()
    }
}

impl<D: Dialect> SqlStore<D> {
    /// The identity bindings authentication ignores, oldest first, at most
    /// `limit` (for `strongroomd migrate` to report).
    pub async fn disabled_bindings(&self, limit: u32) -> Result<Vec<DisabledBinding>> {
        let mut tx = self.platform_tx(None, false).await?;
        let rows: Vec<DisabledBindingRow> = D::query(DISABLED_BINDINGS)
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await
            .map_err(db("identity binding"))?;
        tx.commit().await.map_err(db("identity binding"))?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    /// Reviews the identity namespaces the namespaces migration derived
    /// from existing bindings: removes those `problem` finds fault with (see
    /// `strongroom_core::principal::derived_namespace_problem`: too broad
    /// for the deployment's `identity.min_namespace_depth`, or covering a
    /// platform operator), disabling the bindings of their tenants that no
    /// remaining namespace covers with the reason `too broad: PROBLEM`, and
    /// returns every derived namespace (the removed ones marked), by tenant
    /// name. The depth is configuration, so this runs after the SQL
    /// migrations (from `strongroomd migrate` and at start-up) rather than
    /// inside them; it is idempotent.
    pub async fn review_derived_namespaces(
        &self,
        problem: impl Fn(&IdentityPattern) -> Option<String>,
    ) -> Result<Vec<DerivedNamespace>> {
        let mut tx = self.platform_tx(None, true).await?;
        D::lock_namespaces(&mut tx, NamespaceLock::Exclusive).await?;
        let rows: Vec<DerivedNamespaceRow> = D::query(DERIVED)
            .fetch_all(&mut *tx)
            .await
            .map_err(db("identity namespace"))?;
        let mut found = Vec::with_capacity(rows.len());
        for row in rows {
            let tenant = TenantId::from_uuid(row.tenant_id);
            let pattern = pattern(&row.kind, row.pattern)?;
            let problem = problem(&pattern);
            if let Some(problem) = &problem {
                let (kind, text) = pattern_parts(&pattern);
                D::query(DELETE_ONE)
                    .bind(kind)
                    .bind(text)
                    .execute(&mut *tx)
                    .await
                    .map_err(db("identity namespace"))?;
                D::bind_tenant(&mut tx, tenant).await?;
                D::query(DISABLE_UNCOVERED)
                    .bind(tenant.as_uuid())
                    .bind(format!("too broad: {problem}"))
                    .execute(&mut *tx)
                    .await
                    .map_err(db("identity binding"))?;
            }
            found.push(DerivedNamespace {
                tenant,
                tenant_name: row.tenant_name,
                pattern,
                removed: problem.is_some(),
            });
        }
        tx.commit().await.map_err(db("identity namespace"))?;
        Ok(found)
    }
}

/// Refuses (ALREADY_EXISTS) if any namespace stored for `tenant` overlaps
/// another tenant's: a restored tenant's, written as they were. The caller
/// holds the exclusive namespace lock.
pub(crate) async fn refuse_overlaps<D: Dialect>(
    tx: &mut Transaction<'static, D>,
    tenant: TenantId,
) -> Result<()> {
    let mine: Vec<(String, String)> =
        D::query("SELECT kind, pattern FROM identity_namespaces WHERE tenant_id = $1")
            .bind(tenant.as_uuid())
            .fetch_all(&mut **tx)
            .await
            .map_err(db("identity namespace"))?;
    for (kind, text) in mine {
        let overlap: Option<(i32,)> = D::query(OVERLAPPING)
            .bind(tenant.as_uuid())
            .bind(kind.as_str())
            .bind(text.as_str())
            .fetch_optional(&mut **tx)
            .await
            .map_err(db("identity namespace"))?;
        if overlap.is_some() {
            return Err(Error::already_exists(
                "an identity namespace of the tenant (another tenant's overlaps it)",
            ));
        }
    }
    Ok(())
}

/// Assigns `namespaces` to `tenant`, refusing any that overlaps another
/// tenant's. The caller holds the exclusive namespace lock.
pub(crate) async fn insert_namespaces<D: Dialect>(
    tx: &mut Transaction<'static, D>,
    tenant: TenantId,
    namespaces: &[IdentityPattern],
    at: Timestamp,
) -> Result<()> {
    for n in namespaces {
        let (kind, text) = pattern_parts(n);
        let overlap: Option<(i32,)> = D::query(OVERLAPPING)
            .bind(tenant.as_uuid())
            .bind(kind)
            .bind(text)
            .fetch_optional(&mut **tx)
            .await
            .map_err(db("identity namespace"))?;
        if overlap.is_some() {
            return Err(Error::invalid("identity_namespaces", NAMESPACE_OVERLAP));
        }
        D::query(INSERT)
            .bind(tenant.as_uuid())
            .bind(kind)
            .bind(text)
            .bind(at.as_micros())
            .execute(&mut **tx)
            .await
            .map_err(|e| {
                if is_unique(&e) {
                    Error::invalid("identity_namespaces", NAMESPACE_OVERLAP)
                } else {
                    db("identity namespace")(e)
                }
            })?;
    }
    Ok(())
}
