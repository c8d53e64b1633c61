//! Review of the identity namespaces the namespaces migration derived from
//! existing bindings: those too broad for the deployment's
//! `identity.min_namespace_depth`, or covering a platform operator, are
//! removed (their bindings disabled), the rest listed for a platform operator to review. The depth is
//! configuration, so this runs after the SQL migrations (from `strongroomd
//! migrate` and at start-up) rather than inside them; it is idempotent.

use strongroom_core::ids::TenantId;
use strongroom_core::principal::IdentityPattern;

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

macro_rules! namespace_review_impl {
    ($store:ty, $db:ty) => {
        impl $store {
            /// Removes the derived namespaces `problem` finds fault with
            /// (see `strongroom_core::principal::derived_namespace_problem`),
            /// disabling the bindings of their tenants that no remaining
            /// namespace covers with the reason `too broad: PROBLEM`, and
            /// returns every derived namespace (the removed ones marked), by
            /// tenant name.
            pub async fn review_derived_namespaces(
                &self,
                problem: impl Fn(&strongroom_core::principal::IdentityPattern) -> Option<String>,
            ) -> strongroom_core::Result<Vec<crate::namespaces::DerivedNamespace>> {
                use crate::error::db;
                let mut tx = self.platform_tx(None, true).await?;
                <$db as crate::dialect::Dialect>::lock_namespaces(&mut tx, crate::dialect::NamespaceLock::Exclusive).await?;
                let rows: Vec<(uuid::Uuid, String, String, String)> = sqlx::query_as(
                    "SELECT n.tenant_id, t.name, n.kind, n.pattern FROM identity_namespaces n \
                     JOIN tenants t ON t.id = n.tenant_id WHERE n.derived \
                     ORDER BY t.name, n.pattern, n.kind",
                )
                .fetch_all(&mut *tx)
                .await
                .map_err(db("identity namespace"))?;
                let mut found = Vec::with_capacity(rows.len());
                for (tenant, tenant_name, kind, text) in rows {
                    let tenant = strongroom_core::ids::TenantId::from_uuid(tenant);
                    let pattern = crate::rows::pattern(&kind, text)?;
                    let problem = problem(&pattern);
                    if let Some(problem) = &problem {
                        let (kind, text) = crate::rows::pattern_parts(&pattern);
                        sqlx::query("DELETE FROM identity_namespaces WHERE kind = $1 AND pattern = $2")
                            .bind(kind)
                            .bind(text)
                            .execute(&mut *tx)
                            .await
                            .map_err(db("identity namespace"))?;
                        <$db as crate::dialect::Dialect>::bind_tenant(&mut tx, tenant).await?;
                        sqlx::query(
                            "UPDATE identity_bindings SET disabled_reason = $2 \
                             WHERE tenant_id = $1 AND disabled_reason IS NULL AND NOT EXISTS ( \
                               SELECT 1 FROM identity_namespaces n WHERE n.tenant_id = identity_bindings.tenant_id AND ( \
                                 (n.kind = 'exact' AND identity_bindings.kind = 'exact' AND identity_bindings.pattern = n.pattern) \
                                 OR (n.kind = 'prefix' AND substr(identity_bindings.pattern, 1, length(n.pattern)) = n.pattern)))",
                        )
                        .bind(tenant.as_uuid())
                        .bind(format!("too broad: {problem}"))
                        .execute(&mut *tx)
                        .await
                        .map_err(db("identity binding"))?;
                    }
                    found.push(crate::namespaces::DerivedNamespace {
                        tenant,
                        tenant_name,
                        pattern,
                        removed: problem.is_some(),
                    });
                }
                tx.commit().await.map_err(db("identity namespace"))?;
                Ok(found)
            }
        }
    };
}
pub(crate) use namespace_review_impl;
