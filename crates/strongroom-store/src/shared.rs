//! The `Store` implementation shared by both backends.
//!
//! The SQL below is portable between Postgres and SQLite (`$N` parameters,
//! `RETURNING`, `ON CONFLICT`); the few differences (row locks, the
//! substring function, how a transaction is bound to a tenant) are hooks each
//! backend provides: `tenant_tx`, `platform_tx`, `LOCK` and `STRPOS`, and
//! for group commit `bulk_mutations`, `fetch_states`, `insert_events`,
//! `notify_changes` and (where `FAST_EVENTS`) `fast_events`. The
//! [`store_impl!`] macro stamps the implementation out for each backend type.

/// Binds one sealed audit event to a query whose placeholders follow
/// [`audit_cols!`], `$tenant` being the chain's id (a tenant's, or the
/// platform chain's). Evaluates to `Result<query>` (the version may not fit).
macro_rules! bind_audit_event {
    ($query:expr, $tenant:expr, $event:expr) => {{
        let event = $event;
        let d = &event.draft;
        (|| -> strongroom_core::Result<_> {
            let seq = i64::try_from(event.sequence)
                .map_err(|_| strongroom_core::Error::internal("audit sequence overflow"))?;
            Ok($query
                .bind($tenant)
                .bind(seq)
                .bind(d.id.as_uuid())
                .bind(d.at.as_micros())
                .bind(d.principal.map(|p| p.as_uuid()))
                .bind(d.actor.as_str())
                .bind(d.on_behalf_of.as_deref())
                .bind(d.action.as_str())
                .bind(d.credential.map(|c| c.as_uuid()))
                .bind(d.credential_name.as_deref())
                .bind(d.version.map(crate::rows::version_i32).transpose()?)
                .bind(d.environment.as_deref())
                .bind(d.purpose.as_deref())
                .bind(d.outcome.as_str())
                .bind(d.reason_code.as_str())
                .bind(d.peer.as_deref())
                .bind(d.request_id.as_deref())
                .bind(d.trace_id.as_deref())
                .bind(d.detail.as_deref())
                .bind(event.prev_hash.as_slice())
                .bind(event.hash.as_slice()))
        })()
    }};
}

pub(crate) use bind_audit_event;

macro_rules! store_impl {
    ($store:ty, $db:ty) => {
        impl $store {
            /// Links `draft` into the tenant's chain inside `tx`: reads the
            /// head (locked on Postgres), seals, inserts, advances the head.
            async fn append_in(
                origin: uuid::Uuid,
                tx: &mut sqlx::Transaction<'static, $db>,
                tenant: strongroom_core::ids::TenantId,
                draft: strongroom_core::audit::AuditDraft,
            ) -> strongroom_core::Result<strongroom_core::audit::AuditEvent> {
                use crate::error::db;
                let head_sql = <$db as crate::dialect::Dialect>::LOCK_TENANT_HEAD;
                let (sequence, hash): (i64, Vec<u8>) = sqlx::query_as(head_sql)
                    .bind(tenant.as_uuid())
                    .fetch_one(&mut **tx)
                    .await
                    .map_err(db("audit chain head"))?;
                let prev: [u8; 32] = hash
                    .as_slice()
                    .try_into()
                    .map_err(|_| strongroom_core::Error::internal("stored audit head hash is not valid"))?;
                let next = u64::try_from(sequence)
                    .map_err(|_| strongroom_core::Error::internal("stored audit sequence is not valid"))?
                    + 1;
                let change = (draft.outcome == strongroom_core::audit::Outcome::Allowed)
                    .then(|| strongroom_core::store::Change::of(tenant, draft.action, draft.credential))
                    .flatten();
                let event = draft.seal(tenant, next, prev);
                let seq = i64::try_from(event.sequence)
                    .map_err(|_| strongroom_core::Error::internal("audit sequence overflow"))?;
                let insert = sqlx::query(concat!(
                    "INSERT INTO audit_events (",
                    crate::rows::audit_columns!(),
                    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)"
                ));
                crate::shared::bind_audit_event!(insert, tenant.as_uuid(), &event)?
                .execute(&mut **tx)
                .await
                .map_err(db("audit event"))?;
                sqlx::query("UPDATE audit_heads SET sequence = $2, hash = $3 WHERE tenant_id = $1")
                    .bind(tenant.as_uuid())
                    .bind(seq)
                    .bind(event.hash.as_slice())
                    .execute(&mut **tx)
                    .await
                    .map_err(db("audit chain head"))?;
                if let Some(change) = change {
                    <$db as crate::dialect::Dialect>::notify_changes(tx, origin, &[change]).await?;
                }
                Ok(event)
            }

            async fn credential_in(
                tx: &mut sqlx::Transaction<'static, $db>,
                tenant: strongroom_core::ids::TenantId,
                id: strongroom_core::ids::CredentialId,
            ) -> strongroom_core::Result<strongroom_core::credential::Credential> {
                let row: crate::rows::CredentialRow = sqlx::query_as(concat!(
                    "SELECT ",
                    crate::rows::credential_columns!(),
                    " FROM credentials WHERE tenant_id = $1 AND id = $2"
                ))
                .bind(tenant.as_uuid())
                .bind(id.as_uuid())
                .fetch_one(&mut **tx)
                .await
                .map_err(crate::error::db("credential"))?;
                row.try_into()
            }
        }

        #[async_trait::async_trait]
        impl strongroom_core::store::MetaStore for $store {
            async fn get_meta(&self, key: &str) -> strongroom_core::Result<Option<Vec<u8>>> {
                sqlx::query_scalar("SELECT value FROM server_meta WHERE key = $1")
                    .bind(key)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(crate::error::db("server metadata"))
            }

            async fn put_meta_if_absent(&self, key: &str, value: &[u8]) -> strongroom_core::Result<bool> {
                let done = sqlx::query(
                    "INSERT INTO server_meta (key, value, created_at) VALUES ($1, $2, $3) ON CONFLICT (key) DO NOTHING",
                )
                .bind(key)
                .bind(value)
                .bind(strongroom_core::time::Timestamp::now().as_micros())
                .execute(&self.pool)
                .await
                .map_err(crate::error::db("server metadata"))?;
                Ok(done.rows_affected() == 1)
            }

        }

        #[async_trait::async_trait]
        impl strongroom_core::store::IdentityStore for $store {
            async fn resolve_identity(
                &self,
                identity: &str,
            ) -> strongroom_core::Result<Vec<strongroom_core::scope::IdentityMatch>> {
                let mut tx = self.platform_tx(None, false).await?;
                let rows: Vec<crate::rows::IdentityMatchRow> = sqlx::query_as(
                    "SELECT b.id AS binding_id, b.kind, b.pattern, p.tenant_id, p.id, p.name, p.role, p.environments, p.description, \
                     p.status, p.created_at, t.name AS t_name, t.status AS t_status, t.settings AS t_settings, \
                     t.current_kek_version AS t_kek, t.created_at AS t_created_at \
                     FROM identity_bindings b \
                     JOIN principals p ON p.tenant_id = b.tenant_id AND p.id = b.principal_id \
                     JOIN tenants t ON t.id = b.tenant_id \
                     WHERE b.disabled_reason IS NULL AND ((b.kind = 'exact' AND b.pattern = $1) \
                        OR (b.kind = 'prefix' AND substr($1, 1, length(b.pattern)) = b.pattern)) \
                       AND EXISTS (SELECT 1 FROM identity_namespaces n WHERE n.tenant_id = b.tenant_id AND ( \
                         (n.kind = 'exact' AND b.kind = 'exact' AND b.pattern = n.pattern) \
                         OR (n.kind = 'prefix' AND substr(b.pattern, 1, length(n.pattern)) = n.pattern)))",
                )
                .bind(identity)
                .fetch_all(&mut *tx)
                .await
                .map_err(crate::error::db("identity binding"))?;
                tx.commit().await.map_err(crate::error::db("identity binding"))?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn set_identity_namespaces(
                &self,
                _scope: &strongroom_core::scope::PlatformScope<'_>,
                id: strongroom_core::ids::TenantId,
                namespaces: &[strongroom_core::principal::IdentityPattern],
                audit: strongroom_core::audit::AuditDraft,
            ) -> strongroom_core::Result<()> {
                use crate::error::db;
                let mut tx = self.platform_tx(Some(id), true).await?;
                <$db as crate::dialect::Dialect>::lock_namespaces(&mut tx, crate::dialect::NamespaceLock::Exclusive).await?;
                let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM tenants WHERE id = $1")
                    .bind(id.as_uuid())
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db("tenant"))?;
                if exists.is_none() {
                    return Err(strongroom_core::Error::not_found("tenant"));
                }
                sqlx::query("DELETE FROM identity_namespaces WHERE tenant_id = $1")
                    .bind(id.as_uuid())
                    .execute(&mut *tx)
                    .await
                    .map_err(db("identity namespace"))?;
                Self::insert_namespaces(&mut tx, id, namespaces, strongroom_core::time::Timestamp::now()).await?;
                // A binding is enabled exactly when a namespace of its
                // tenant covers it.
                sqlx::query(
                    "UPDATE identity_bindings SET disabled_reason = CASE WHEN EXISTS ( \
                       SELECT 1 FROM identity_namespaces n WHERE n.tenant_id = identity_bindings.tenant_id AND ( \
                         (n.kind = 'exact' AND identity_bindings.kind = 'exact' AND identity_bindings.pattern = n.pattern) \
                         OR (n.kind = 'prefix' AND substr(identity_bindings.pattern, 1, length(n.pattern)) = n.pattern))) \
                       THEN NULL ELSE 'outside the tenant''s identity namespaces' END \
                     WHERE tenant_id = $1",
                )
                .bind(id.as_uuid())
                .execute(&mut *tx)
                .await
                .map_err(db("identity binding"))?;
                Self::append_in(self.origin, &mut tx, id, audit).await?;
                tx.commit().await.map_err(db("identity namespace"))?;
                Ok(())
            }

            async fn identity_namespaces(
                &self,
                _scope: &strongroom_core::scope::PlatformScope<'_>,
                from: strongroom_core::ids::TenantId,
                to: strongroom_core::ids::TenantId,
            ) -> strongroom_core::Result<Vec<(strongroom_core::ids::TenantId, strongroom_core::principal::IdentityPattern)>> {
                let mut tx = self.platform_tx(None, false).await?;
                let rows: Vec<(uuid::Uuid, String, String)> = sqlx::query_as(
                    "SELECT tenant_id, kind, pattern FROM identity_namespaces \
                     WHERE tenant_id >= $1 AND tenant_id <= $2 ORDER BY tenant_id, pattern, kind",
                )
                .bind(from.as_uuid())
                .bind(to.as_uuid())
                .fetch_all(&mut *tx)
                .await
                .map_err(crate::error::db("identity namespace"))?;
                tx.commit().await.map_err(crate::error::db("identity namespace"))?;
                rows.into_iter()
                    .map(|(t, kind, pattern)| {
                        Ok((strongroom_core::ids::TenantId::from_uuid(t), crate::rows::pattern(&kind, pattern)?))
                    })
                    .collect()
            }

        }

        #[async_trait::async_trait]
        impl strongroom_core::store::TenantStore for $store {
            async fn create_tenant(
                &self,
                _scope: &strongroom_core::scope::PlatformScope<'_>,
                new: &strongroom_core::store::NewTenant,
                audit: strongroom_core::audit::AuditDraft,
            ) -> strongroom_core::Result<()> {
                use crate::error::db;
                let t = &new.tenant;
                let mut tx = self.platform_tx(Some(t.id), true).await?;
                <$db as crate::dialect::Dialect>::lock_namespaces(&mut tx, crate::dialect::NamespaceLock::Exclusive).await?;
                sqlx::query(concat!("INSERT INTO tenants (", crate::rows::tenant_columns!(), ") VALUES ($1, $2, $3, $4, $5, $6)"))
                    .bind(t.id.as_uuid())
                    .bind(t.name.as_str())
                    .bind(t.status.as_str())
                    .bind(crate::rows::json(&t.settings)?)
                    .bind(crate::rows::version_i32(t.current_kek_version)?)
                    .bind(t.created_at.as_micros())
                    .execute(&mut *tx)
                    .await
                    .map_err(db("tenant"))?;
                sqlx::query("INSERT INTO tenant_keks (tenant_id, version, wrapped, created_at) VALUES ($1, $2, $3, $4)")
                    .bind(t.id.as_uuid())
                    .bind(crate::rows::version_i32(new.kek.version)?)
                    .bind(new.kek.wrapped.as_slice())
                    .bind(new.kek.created_at.as_micros())
                    .execute(&mut *tx)
                    .await
                    .map_err(db("tenant key"))?;
                sqlx::query("INSERT INTO audit_heads (tenant_id, sequence, hash) VALUES ($1, 0, $2)")
                    .bind(t.id.as_uuid())
                    .bind(strongroom_core::audit::GENESIS_HASH.as_slice())
                    .execute(&mut *tx)
                    .await
                    .map_err(db("audit chain head"))?;
                for env in &new.environments {
                    sqlx::query("INSERT INTO environments (tenant_id, name, created_at) VALUES ($1, $2, $3)")
                        .bind(t.id.as_uuid())
                        .bind(env.as_str())
                        .bind(t.created_at.as_micros())
                        .execute(&mut *tx)
                        .await
                        .map_err(db("environment"))?;
                }
                Self::insert_namespaces(&mut tx, t.id, &new.namespaces, t.created_at).await?;
                if let Some((principal, binding)) = &new.admin {
                    Self::insert_principal(&mut tx, principal).await?;
                    Self::insert_binding(&mut tx, binding).await?;
                }
                Self::append_in(self.origin, &mut tx, t.id, audit).await?;
                tx.commit().await.map_err(db("tenant"))?;
                Ok(())
            }

            async fn list_tenants(
                &self,
                _scope: &strongroom_core::scope::PlatformScope<'_>,
                page: &strongroom_core::page::PageRequest,
            ) -> strongroom_core::Result<strongroom_core::page::Page<strongroom_core::tenant::Tenant>> {
                let after = crate::error::uuid_cursor(page.after.as_ref())?;
                let mut tx = self.platform_tx(None, false).await?;
                let rows: Vec<crate::rows::TenantRow> = sqlx::query_as(concat!(
                    "SELECT ", crate::rows::tenant_columns!(), " FROM tenants WHERE id > $1 ORDER BY id LIMIT $2"
                ))
                .bind(after)
                .bind(page.fetch_limit())
                .fetch_all(&mut *tx)
                .await
                .map_err(crate::error::db("tenant"))?;
                tx.commit().await.map_err(crate::error::db("tenant"))?;
                let items = rows
                    .into_iter()
                    .map(TryInto::try_into)
                    .collect::<strongroom_core::Result<Vec<strongroom_core::tenant::Tenant>>>()?;
                Ok(strongroom_core::page::Page::from_rows(items, page.size, |t| t.id.to_string()))
            }

            async fn get_tenant(
                &self,
                _scope: &strongroom_core::scope::PlatformScope<'_>,
                id: strongroom_core::ids::TenantId,
            ) -> strongroom_core::Result<strongroom_core::tenant::Tenant> {
                let mut tx = self.platform_tx(Some(id), false).await?;
                let row: crate::rows::TenantRow = sqlx::query_as(concat!(
                    "SELECT ", crate::rows::tenant_columns!(), " FROM tenants WHERE id = $1"
                ))
                .bind(id.as_uuid())
                .fetch_one(&mut *tx)
                .await
                .map_err(crate::error::db("tenant"))?;
                tx.commit().await.map_err(crate::error::db("tenant"))?;
                row.try_into()
            }

            async fn set_tenant_status(
                &self,
                _scope: &strongroom_core::scope::PlatformScope<'_>,
                id: strongroom_core::ids::TenantId,
                status: strongroom_core::tenant::TenantStatus,
                audit: strongroom_core::audit::AuditDraft,
            ) -> strongroom_core::Result<strongroom_core::tenant::Tenant> {
                let mut tx = self.platform_tx(Some(id), true).await?;
                let row: crate::rows::TenantRow = sqlx::query_as(concat!(
                    "UPDATE tenants SET status = $2 WHERE id = $1 RETURNING ", crate::rows::tenant_columns!()
                ))
                .bind(id.as_uuid())
                .bind(status.as_str())
                .fetch_one(&mut *tx)
                .await
                .map_err(crate::error::db("tenant"))?;
                Self::append_in(self.origin, &mut tx, id, audit).await?;
                tx.commit().await.map_err(crate::error::db("tenant"))?;
                row.try_into()
            }

            async fn tenant(
                &self,
                scope: &strongroom_core::scope::TenantScope<'_>,
            ) -> strongroom_core::Result<strongroom_core::tenant::Tenant> {
                let mut tx = self.tenant_tx(scope.tenant_id(), false).await?;
                let row: crate::rows::TenantRow = sqlx::query_as(concat!(
                    "SELECT ", crate::rows::tenant_columns!(), " FROM tenants WHERE id = $1"
                ))
                .bind(scope.tenant_id().as_uuid())
                .fetch_one(&mut *tx)
                .await
                .map_err(crate::error::db("tenant"))?;
                tx.commit().await.map_err(crate::error::db("tenant"))?;
                row.try_into()
            }

            async fn update_tenant_settings(
                &self,
                scope: &strongroom_core::scope::TenantScope<'_>,
                settings: &strongroom_core::tenant::TenantSettings,
                audit: strongroom_core::audit::AuditDraft,
            ) -> strongroom_core::Result<strongroom_core::tenant::Tenant> {
                let tenant = scope.tenant_id();
                let mut tx = self.tenant_tx(tenant, true).await?;
                let row: crate::rows::TenantRow = sqlx::query_as(concat!(
                    "UPDATE tenants SET settings = $2 WHERE id = $1 RETURNING ", crate::rows::tenant_columns!()
                ))
                .bind(tenant.as_uuid())
                .bind(crate::rows::json(settings)?)
                .fetch_one(&mut *tx)
                .await
                .map_err(crate::error::db("tenant"))?;
                Self::append_in(self.origin, &mut tx, tenant, audit).await?;
                tx.commit().await.map_err(crate::error::db("tenant"))?;
                row.try_into()
            }

            async fn keks(
                &self,
                scope: &strongroom_core::scope::TenantScope<'_>,
            ) -> strongroom_core::Result<Vec<strongroom_core::tenant::WrappedKekRecord>> {
                let mut tx = self.tenant_tx(scope.tenant_id(), false).await?;
                let rows: Vec<crate::rows::KekRow> = sqlx::query_as(
                    "SELECT tenant_id, version, wrapped, created_at FROM tenant_keks WHERE tenant_id = $1 ORDER BY version",
                )
                .bind(scope.tenant_id().as_uuid())
                .fetch_all(&mut *tx)
                .await
                .map_err(crate::error::db("tenant key"))?;
                tx.commit().await.map_err(crate::error::db("tenant key"))?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn add_kek(
                &self,
                scope: &strongroom_core::scope::TenantScope<'_>,
                kek: &strongroom_core::tenant::WrappedKekRecord,
                audit: strongroom_core::audit::AuditDraft,
            ) -> strongroom_core::Result<strongroom_core::tenant::Tenant> {
                use crate::error::db;
                let tenant = scope.tenant_id();
                let mut tx = self.tenant_tx(tenant, true).await?;
                sqlx::query("INSERT INTO tenant_keks (tenant_id, version, wrapped, created_at) VALUES ($1, $2, $3, $4)")
                    .bind(tenant.as_uuid())
                    .bind(crate::rows::version_i32(kek.version)?)
                    .bind(kek.wrapped.as_slice())
                    .bind(kek.created_at.as_micros())
                    .execute(&mut *tx)
                    .await
                    .map_err(db("tenant key"))?;
                let row: crate::rows::TenantRow = sqlx::query_as(concat!(
                    "UPDATE tenants SET current_kek_version = $2 WHERE id = $1 RETURNING ", crate::rows::tenant_columns!()
                ))
                .bind(tenant.as_uuid())
                .bind(crate::rows::version_i32(kek.version)?)
                .fetch_one(&mut *tx)
                .await
                .map_err(db("tenant"))?;
                Self::append_in(self.origin, &mut tx, tenant, audit).await?;
                tx.commit().await.map_err(db("tenant key"))?;
                row.try_into()
            }

        }

        #[async_trait::async_trait]
        impl strongroom_core::store::EnvironmentStore for $store {
            async fn create_environment(
                &self,
                scope: &strongroom_core::scope::TenantScope<'_>,
                environment: &strongroom_core::names::Environment,
                audit: strongroom_core::audit::AuditDraft,
            ) -> strongroom_core::Result<()> {
                let tenant = scope.tenant_id();
                let mut tx = self.tenant_tx(tenant, true).await?;
                sqlx::query("INSERT INTO environments (tenant_id, name, created_at) VALUES ($1, $2, $3)")
                    .bind(tenant.as_uuid())
                    .bind(environment.as_str())
                    .bind(strongroom_core::time::Timestamp::now().as_micros())
                    .execute(&mut *tx)
                    .await
                    .map_err(crate::error::db("environment"))?;
                Self::append_in(self.origin, &mut tx, tenant, audit).await?;
                tx.commit().await.map_err(crate::error::db("environment"))?;
                Ok(())
            }

            async fn list_environments(
                &self,
                scope: &strongroom_core::scope::TenantScope<'_>,
            ) -> strongroom_core::Result<Vec<strongroom_core::names::Environment>> {
                let mut tx = self.tenant_tx(scope.tenant_id(), false).await?;
                let names: Vec<String> =
                    sqlx::query_scalar("SELECT name FROM environments WHERE tenant_id = $1 ORDER BY name")
                        .bind(scope.tenant_id().as_uuid())
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(crate::error::db("environment"))?;
                tx.commit().await.map_err(crate::error::db("environment"))?;
                names
                    .into_iter()
                    .map(|n| {
                        strongroom_core::names::Environment::try_from(n)
                            .map_err(|_| strongroom_core::Error::internal("stored environment is not valid"))
                    })
                    .collect()
            }

            async fn delete_environment(
                &self,
                scope: &strongroom_core::scope::TenantScope<'_>,
                environment: &strongroom_core::names::Environment,
                audit: strongroom_core::audit::AuditDraft,
            ) -> strongroom_core::Result<()> {
                let tenant = scope.tenant_id();
                let mut tx = self.tenant_tx(tenant, true).await?;
                let done = sqlx::query("DELETE FROM environments WHERE tenant_id = $1 AND name = $2")
                    .bind(tenant.as_uuid())
                    .bind(environment.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| {
                        if crate::error::is_fk(&e) {
                            strongroom_core::Error::precondition("the environment still holds credentials")
                        } else {
                            crate::error::db("environment")(e)
                        }
                    })?;
                if done.rows_affected() == 0 {
                    return Err(strongroom_core::Error::not_found("environment"));
                }
                Self::append_in(self.origin, &mut tx, tenant, audit).await?;
                tx.commit().await.map_err(crate::error::db("environment"))?;
                Ok(())
            }

        }

        #[async_trait::async_trait]
        impl strongroom_core::store::PrincipalStore for $store {
            async fn create_principal(
                &self,
                scope: &strongroom_core::scope::TenantScope<'_>,
                principal: &strongroom_core::principal::Principal,
                audit: strongroom_core::audit::AuditDraft,
            ) -> strongroom_core::Result<()> {
                let tenant = scope.tenant_id();
                if principal.tenant != tenant {
                    return Err(strongroom_core::Error::internal("principal of another tenant"));
                }
                let mut tx = self.tenant_tx(tenant, true).await?;
                Self::insert_principal(&mut tx, principal).await?;
                Self::append_in(self.origin, &mut tx, tenant, audit).await?;
                tx.commit().await.map_err(crate::error::db("principal"))?;
                Ok(())
            }

            async fn get_principal(
                &self,
                scope: &strongroom_core::scope::TenantScope<'_>,
                id: strongroom_core::ids::PrincipalId,
            ) -> strongroom_core::Result<strongroom_core::principal::Principal> {
                let mut tx = self.tenant_tx(scope.tenant_id(), false).await?;
                let row: crate::rows::PrincipalRow = sqlx::query_as(concat!(
                    "SELECT ", crate::rows::principal_columns!(), " FROM principals WHERE tenant_id = $1 AND id = $2"
                ))
                .bind(scope.tenant_id().as_uuid())
                .bind(id.as_uuid())
                .fetch_one(&mut *tx)
                .await
                .map_err(crate::error::db("principal"))?;
                tx.commit().await.map_err(crate::error::db("principal"))?;
                row.try_into()
            }

            async fn list_principals(
                &self,
                scope: &strongroom_core::scope::TenantScope<'_>,
                page: &strongroom_core::page::PageRequest,
            ) -> strongroom_core::Result<strongroom_core::page::Page<strongroom_core::principal::Principal>> {
                let after = crate::error::uuid_cursor(page.after.as_ref())?;
                let mut tx = self.tenant_tx(scope.tenant_id(), false).await?;
                let rows: Vec<crate::rows::PrincipalRow> = sqlx::query_as(concat!(
                    "SELECT ", crate::rows::principal_columns!(),
                    " FROM principals WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3"
                ))
                .bind(scope.tenant_id().as_uuid())
                .bind(after)
                .bind(page.fetch_limit())
                .fetch_all(&mut *tx)
                .await
                .map_err(crate::error::db("principal"))?;
                tx.commit().await.map_err(crate::error::db("principal"))?;
                let items = rows
                    .into_iter()
                    .map(TryInto::try_into)
                    .collect::<strongroom_core::Result<Vec<strongroom_core::principal::Principal>>>()?;
                Ok(strongroom_core::page::Page::from_rows(items, page.size, |p| p.id.to_string()))
            }

            async fn set_principal_status(
                &self,
                scope: &strongroom_core::scope::TenantScope<'_>,
                id: strongroom_core::ids::PrincipalId,
                status: strongroom_core::principal::PrincipalStatus,
                audit: strongroom_core::audit::AuditDraft,
            ) -> strongroom_core::Result<strongroom_core::principal::Principal> {
                let tenant = scope.tenant_id();
                let mut tx = self.tenant_tx(tenant, true).await?;
                let row: crate::rows::PrincipalRow = sqlx::query_as(concat!(
                    "UPDATE principals SET status = $3 WHERE tenant_id = $1 AND id = $2 RETURNING ",
                    crate::rows::principal_columns!()
                ))
                .bind(tenant.as_uuid())
                .bind(id.as_uuid())
                .bind(status.as_str())
                .fetch_one(&mut *tx)
                .await
                .map_err(crate::error::db("principal"))?;
                Self::append_in(self.origin, &mut tx, tenant, audit).await?;
                tx.commit().await.map_err(crate::error::db("principal"))?;
                row.try_into()
            }

            async fn create_binding(
                &self,
                scope: &strongroom_core::scope::TenantScope<'_>,
                binding: &strongroom_core::principal::IdentityBinding,
                audit: strongroom_core::audit::AuditDraft,
            ) -> strongroom_core::Result<()> {
                let tenant = scope.tenant_id();
                if binding.tenant != tenant {
                    return Err(strongroom_core::Error::internal("binding of another tenant"));
                }
                let mut tx = self.tenant_tx(tenant, true).await?;
                <$db as crate::dialect::Dialect>::lock_namespaces(&mut tx, crate::dialect::NamespaceLock::Shared).await?;
                Self::insert_binding(&mut tx, binding).await?;
                Self::append_in(self.origin, &mut tx, tenant, audit).await?;
                tx.commit().await.map_err(crate::error::db("identity binding"))?;
                Ok(())
            }

            async fn list_bindings(
                &self,
                scope: &strongroom_core::scope::TenantScope<'_>,
                principal: Option<strongroom_core::ids::PrincipalId>,
                page: &strongroom_core::page::PageRequest,
            ) -> strongroom_core::Result<strongroom_core::page::Page<strongroom_core::principal::IdentityBinding>> {
                let after = crate::error::uuid_cursor(page.after.as_ref())?;
                let mut q = sqlx::QueryBuilder::<$db>::new(concat!(
                    "SELECT ", crate::rows::binding_columns!(), " FROM identity_bindings WHERE tenant_id = "
                ));
                q.push_bind(scope.tenant_id().as_uuid());
                q.push(" AND id > ").push_bind(after);
                if let Some(p) = principal {
                    q.push(" AND principal_id = ").push_bind(p.as_uuid());
                }
                q.push(" ORDER BY id LIMIT ").push_bind(page.fetch_limit());
                let mut tx = self.tenant_tx(scope.tenant_id(), false).await?;
                let rows: Vec<crate::rows::BindingRow> = q
                    .build_query_as()
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(crate::error::db("identity binding"))?;
                tx.commit().await.map_err(crate::error::db("identity binding"))?;
                let items = rows
                    .into_iter()
                    .map(TryInto::try_into)
                    .collect::<strongroom_core::Result<Vec<strongroom_core::principal::IdentityBinding>>>()?;
                Ok(strongroom_core::page::Page::from_rows(items, page.size, |b| b.id.to_string()))
            }

            async fn delete_binding(
                &self,
                scope: &strongroom_core::scope::TenantScope<'_>,
                id: strongroom_core::ids::BindingId,
                audit: strongroom_core::audit::AuditDraft,
            ) -> strongroom_core::Result<()> {
                self.delete_audited(scope.tenant_id(), "DELETE FROM identity_bindings WHERE tenant_id = $1 AND id = $2", id.as_uuid(), "identity binding", audit)
                    .await
            }

        }

        #[async_trait::async_trait]
        impl strongroom_core::store::CredentialStore for $store {
            async fn create_credential(
                &self,
                scope: &strongroom_core::scope::TenantScope<'_>,
                c: &strongroom_core::credential::Credential,
                first: &strongroom_core::credential::StoredVersion,
                audit: strongroom_core::audit::AuditDraft,
            ) -> strongroom_core::Result<()> {
                let tenant = scope.tenant_id();
                if c.tenant != tenant || first.credential != c.id {
                    return Err(strongroom_core::Error::internal("credential of another tenant"));
                }
                let work = crate::group_commit::Work::CreateCredential {
                    credential: Box::new(c.clone()),
                    first: Box::new(first.clone()),
                };
                crate::group_commit::submit(self.committer(tenant)?, work, audit).await?;
                Ok(())
            }

            async fn get_credential(
                &self,
                scope: &strongroom_core::scope::TenantScope<'_>,
                id: strongroom_core::ids::CredentialId,
            ) -> strongroom_core::Result<strongroom_core::credential::Credential> {
                let mut tx = self.tenant_tx(scope.tenant_id(), false).await?;
                let c = Self::credential_in(&mut tx, scope.tenant_id(), id).await?;
                tx.commit().await.map_err(crate::error::db("credential"))?;
                Ok(c)
            }

            async fn find_credential(
                &self,
                scope: &strongroom_core::scope::TenantScope<'_>,
                environment: &strongroom_core::names::Environment,
                name: &strongroom_core::names::CredentialName,
            ) -> strongroom_core::Result<strongroom_core::credential::Credential> {
                let mut tx = self.tenant_tx(scope.tenant_id(), false).await?;
                let row: crate::rows::CredentialRow = sqlx::query_as(concat!(
                    "SELECT ", crate::rows::credential_columns!(),
                    " FROM credentials WHERE tenant_id = $1 AND environment = $2 AND name = $3"
                ))
                .bind(scope.tenant_id().as_uuid())
                .bind(environment.as_str())
                .bind(name.as_str())
                .fetch_one(&mut *tx)
                .await
                .map_err(crate::error::db("credential"))?;
                tx.commit().await.map_err(crate::error::db("credential"))?;
                row.try_into()
            }

            async fn list_credentials(
                &self,
                scope: &strongroom_core::scope::TenantScope<'_>,
                filter: &strongroom_core::credential::CredentialFilter,
                page: &strongroom_core::page::PageRequest,
            ) -> strongroom_core::Result<strongroom_core::page::Page<strongroom_core::credential::Credential>> {
                let after = crate::error::uuid_cursor(page.after.as_ref())?;
                let mut q = sqlx::QueryBuilder::<$db>::new(concat!(
                    "SELECT ", crate::rows::credential_columns!(), " FROM credentials WHERE tenant_id = "
                ));
                q.push_bind(scope.tenant_id().as_uuid());
                q.push(" AND id > ").push_bind(after);
                if let Some(e) = &filter.environment {
                    q.push(" AND environment = ").push_bind(e.as_str().to_owned());
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
                        .push(<$db as crate::dialect::Dialect>::SUBSTRING_POSITION)
                        .push("(tags, ")
                        .push_bind(format!("\"{}\"", t.as_str()))
                        .push(") > 0");
                }
                if let Some(p) = &filter.name_prefix {
                    // length() of the bound text itself: it counts characters
                    // on both backends and is an integer, as Postgres'
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
                            strongroom_core::policy::Selector::Exact(n) => {
                                q.push(" AND name = ").push_bind(n.as_str().to_owned());
                            }
                            strongroom_core::policy::Selector::Prefix(p) if p.is_empty() => {}
                            strongroom_core::policy::Selector::Prefix(p) => {
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
                let mut tx = self.tenant_tx(scope.tenant_id(), false).await?;
                let rows: Vec<crate::rows::CredentialRow> = q
                    .build_query_as()
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(crate::error::db("credential"))?;
                tx.commit().await.map_err(crate::error::db("credential"))?;
                let items = rows
                    .into_iter()
                    .map(TryInto::try_into)
                    .collect::<strongroom_core::Result<Vec<strongroom_core::credential::Credential>>>()?;
                Ok(strongroom_core::page::Page::from_rows(items, page.size, |c| c.id.to_string()))
            }

            async fn add_version(
                &self,
                scope: &strongroom_core::scope::TenantScope<'_>,
                id: strongroom_core::ids::CredentialId,
                expected_latest: u32,
                version: &strongroom_core::credential::StoredVersion,
                retention: u32,
                audit: strongroom_core::audit::AuditDraft,
            ) -> strongroom_core::Result<strongroom_core::credential::Credential> {
                let tenant = scope.tenant_id();
                if version.credential != id || version.version != expected_latest + 1 {
                    return Err(strongroom_core::Error::internal("version number does not follow the latest"));
                }
                let work = crate::group_commit::Work::AddVersion {
                    id,
                    expected_latest,
                    version: Box::new(version.clone()),
                    retention,
                };
                match crate::group_commit::submit(self.committer(tenant)?, work, audit).await? {
                    crate::group_commit::Done::Credential(c, _) => Ok(*c),
                    crate::group_commit::Done::Event(_) => Err(strongroom_core::Error::internal("add_version returned no credential")),
                }
            }

            async fn get_version(
                &self,
                scope: &strongroom_core::scope::TenantScope<'_>,
                id: strongroom_core::ids::CredentialId,
                version: u32,
            ) -> strongroom_core::Result<strongroom_core::credential::StoredVersion> {
                let mut tx = self.tenant_tx(scope.tenant_id(), false).await?;
                let row: crate::rows::VersionRow = sqlx::query_as(concat!(
                    "SELECT ", crate::rows::version_columns!(),
                    " FROM credential_versions WHERE tenant_id = $1 AND credential_id = $2 AND version = $3"
                ))
                .bind(scope.tenant_id().as_uuid())
                .bind(id.as_uuid())
                .bind(crate::rows::version_i32(version)?)
                .fetch_one(&mut *tx)
                .await
                .map_err(crate::error::db("credential version"))?;
                tx.commit().await.map_err(crate::error::db("credential version"))?;
                row.try_into()
            }

            async fn list_versions(
                &self,
                scope: &strongroom_core::scope::TenantScope<'_>,
                id: strongroom_core::ids::CredentialId,
            ) -> strongroom_core::Result<Vec<strongroom_core::credential::StoredVersion>> {
                let mut tx = self.tenant_tx(scope.tenant_id(), false).await?;
                Self::credential_in(&mut tx, scope.tenant_id(), id).await?;
                let rows: Vec<crate::rows::VersionRow> = sqlx::query_as(concat!(
                    "SELECT ", crate::rows::version_columns!(),
                    " FROM credential_versions WHERE tenant_id = $1 AND credential_id = $2 ORDER BY version DESC"
                ))
                .bind(scope.tenant_id().as_uuid())
                .bind(id.as_uuid())
                .fetch_all(&mut *tx)
                .await
                .map_err(crate::error::db("credential version"))?;
                tx.commit().await.map_err(crate::error::db("credential version"))?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn set_current_version(
                &self,
                scope: &strongroom_core::scope::TenantScope<'_>,
                id: strongroom_core::ids::CredentialId,
                version: u32,
                audit: strongroom_core::audit::AuditDraft,
            ) -> strongroom_core::Result<strongroom_core::credential::Credential> {
                let tenant = scope.tenant_id();
                let mut tx = self.tenant_tx(tenant, true).await?;
                let current = Self::credential_in(&mut tx, tenant, id).await?;
                current.ensure_usable(strongroom_core::time::Timestamp::now())?;
                let row: Option<crate::rows::CredentialRow> = sqlx::query_as(concat!(
                    "UPDATE credentials SET current_version = $3, updated_at = $4, \
                     rotated_at = (SELECT v.created_at FROM credential_versions v \
                                   WHERE v.tenant_id = $1 AND v.credential_id = $2 AND v.version = $3) \
                     WHERE tenant_id = $1 AND id = $2 AND EXISTS (SELECT 1 FROM credential_versions v \
                           WHERE v.tenant_id = $1 AND v.credential_id = $2 AND v.version = $3 AND v.envelope IS NOT NULL) \
                     RETURNING ", crate::rows::credential_columns!()
                ))
                .bind(tenant.as_uuid())
                .bind(id.as_uuid())
                .bind(crate::rows::version_i32(version)?)
                .bind(strongroom_core::time::Timestamp::now().as_micros())
                .fetch_optional(&mut *tx)
                .await
                .map_err(crate::error::db("credential"))?;
                let row = row.ok_or_else(|| strongroom_core::Error::not_found("credential version"))?;
                Self::append_in(self.origin, &mut tx, tenant, audit).await?;
                tx.commit().await.map_err(crate::error::db("credential"))?;
                row.try_into()
            }

            async fn revoke_credential(
                &self,
                scope: &strongroom_core::scope::TenantScope<'_>,
                id: strongroom_core::ids::CredentialId,
                reason: &str,
                audit: strongroom_core::audit::AuditDraft,
            ) -> strongroom_core::Result<strongroom_core::credential::Credential> {
                let tenant = scope.tenant_id();
                let now = strongroom_core::time::Timestamp::now().as_micros();
                let mut tx = self.tenant_tx(tenant, true).await?;
                let row: Option<crate::rows::CredentialRow> = sqlx::query_as(concat!(
                    "UPDATE credentials SET status = 'revoked', revoked_at = $3, revoke_reason = $4, updated_at = $3 \
                     WHERE tenant_id = $1 AND id = $2 AND status <> 'revoked' RETURNING ",
                    crate::rows::credential_columns!()
                ))
                .bind(tenant.as_uuid())
                .bind(id.as_uuid())
                .bind(now)
                .bind(reason)
                .fetch_optional(&mut *tx)
                .await
                .map_err(crate::error::db("credential"))?;
                let Some(row) = row else {
                    Self::credential_in(&mut tx, tenant, id).await?;
                    return Err(strongroom_core::Error::precondition("credential is already revoked"));
                };
                Self::append_in(self.origin, &mut tx, tenant, audit).await?;
                tx.commit().await.map_err(crate::error::db("credential"))?;
                row.try_into()
            }

            async fn destroy_credential(
                &self,
                scope: &strongroom_core::scope::TenantScope<'_>,
                id: strongroom_core::ids::CredentialId,
                audit: strongroom_core::audit::AuditDraft,
            ) -> strongroom_core::Result<strongroom_core::credential::Credential> {
                let tenant = scope.tenant_id();
                let now = strongroom_core::time::Timestamp::now().as_micros();
                let mut tx = self.tenant_tx(tenant, true).await?;
                let row: Option<crate::rows::CredentialRow> = sqlx::query_as(concat!(
                    "UPDATE credentials SET destroyed_at = $3, updated_at = $3 \
                     WHERE tenant_id = $1 AND id = $2 AND destroyed_at IS NULL RETURNING ",
                    crate::rows::credential_columns!()
                ))
                .bind(tenant.as_uuid())
                .bind(id.as_uuid())
                .bind(now)
                .fetch_optional(&mut *tx)
                .await
                .map_err(crate::error::db("credential"))?;
                let Some(row) = row else {
                    Self::credential_in(&mut tx, tenant, id).await?;
                    return Err(strongroom_core::Error::precondition("credential values are already destroyed"));
                };
                sqlx::query("UPDATE credential_versions SET envelope = NULL WHERE tenant_id = $1 AND credential_id = $2")
                    .bind(tenant.as_uuid())
                    .bind(id.as_uuid())
                    .execute(&mut *tx)
                    .await
                    .map_err(crate::error::db("credential version"))?;
                Self::append_in(self.origin, &mut tx, tenant, audit).await?;
                tx.commit().await.map_err(crate::error::db("credential"))?;
                row.try_into()
            }

        }

        #[async_trait::async_trait]
        impl strongroom_core::store::GrantStore for $store {
            async fn create_grant(
                &self,
                scope: &strongroom_core::scope::TenantScope<'_>,
                g: &strongroom_core::policy::Grant,
                audit: strongroom_core::audit::AuditDraft,
            ) -> strongroom_core::Result<()> {
                let tenant = scope.tenant_id();
                if g.tenant != tenant {
                    return Err(strongroom_core::Error::internal("grant of another tenant"));
                }
                let (kind, subject) = crate::rows::subject_parts(&g.subject);
                let mut tx = self.tenant_tx(tenant, true).await?;
                sqlx::query(concat!(
                    "INSERT INTO grants (", crate::rows::grant_columns!(),
                    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
                ))
                .bind(tenant.as_uuid())
                .bind(g.id.as_uuid())
                .bind(kind)
                .bind(subject)
                .bind(g.selector.to_text())
                .bind(crate::rows::json(&g.environments)?)
                .bind(i32::from(g.capabilities.bits()))
                .bind(crate::rows::json(&g.destinations)?)
                .bind(g.expires_at.map(|t| t.as_micros()))
                .bind(g.reason.as_str())
                .bind(g.granted_by.as_uuid())
                .bind(g.created_at.as_micros())
                .execute(&mut *tx)
                .await
                .map_err(crate::error::db("grant"))?;
                Self::append_in(self.origin, &mut tx, tenant, audit).await?;
                tx.commit().await.map_err(crate::error::db("grant"))?;
                Ok(())
            }

            async fn get_grant(
                &self,
                scope: &strongroom_core::scope::TenantScope<'_>,
                id: strongroom_core::ids::GrantId,
            ) -> strongroom_core::Result<strongroom_core::policy::Grant> {
                let mut tx = self.tenant_tx(scope.tenant_id(), false).await?;
                let row: crate::rows::GrantRow = sqlx::query_as(concat!(
                    "SELECT ", crate::rows::grant_columns!(), " FROM grants WHERE tenant_id = $1 AND id = $2"
                ))
                .bind(scope.tenant_id().as_uuid())
                .bind(id.as_uuid())
                .fetch_one(&mut *tx)
                .await
                .map_err(crate::error::db("grant"))?;
                tx.commit().await.map_err(crate::error::db("grant"))?;
                row.try_into()
            }

            async fn delete_grant(
                &self,
                scope: &strongroom_core::scope::TenantScope<'_>,
                id: strongroom_core::ids::GrantId,
                audit: strongroom_core::audit::AuditDraft,
            ) -> strongroom_core::Result<()> {
                self.delete_audited(scope.tenant_id(), "DELETE FROM grants WHERE tenant_id = $1 AND id = $2", id.as_uuid(), "grant", audit)
                    .await
            }

            async fn list_grants(
                &self,
                scope: &strongroom_core::scope::TenantScope<'_>,
                filter: &strongroom_core::store::GrantFilter,
                page: &strongroom_core::page::PageRequest,
            ) -> strongroom_core::Result<strongroom_core::page::Page<strongroom_core::policy::Grant>> {
                let after = crate::error::uuid_cursor(page.after.as_ref())?;
                let mut q = sqlx::QueryBuilder::<$db>::new(concat!(
                    "SELECT ", crate::rows::grant_columns!(), " FROM grants WHERE tenant_id = "
                ));
                q.push_bind(scope.tenant_id().as_uuid());
                q.push(" AND id > ").push_bind(after);
                if let Some(p) = filter.principal {
                    q.push(" AND subject_kind = 'principal' AND subject = ").push_bind(p.to_string());
                }
                if let Some(r) = filter.role {
                    q.push(" AND subject_kind = 'role' AND subject = ").push_bind(r.as_str());
                }
                if let Some(e) = &filter.environment {
                    q.push(" AND ")
                        .push(<$db as crate::dialect::Dialect>::SUBSTRING_POSITION)
                        .push("(environments, ")
                        .push_bind(format!("\"{}\"", e.as_str()))
                        .push(") > 0");
                }
                if let Some(envs) = &filter.in_environments {
                    q.push(" AND (1 = 0");
                    for e in envs {
                        q.push(" OR ")
                            .push(<$db as crate::dialect::Dialect>::SUBSTRING_POSITION)
                            .push("(environments, ")
                            .push_bind(format!("\"{}\"", e.as_str()))
                            .push(") > 0");
                    }
                    q.push(")");
                }
                if let Some(n) = &filter.covering {
                    // The selector is the exact name, '*', or 'prefix/*' with
                    // the name under that prefix.
                    q.push(" AND (selector = ")
                        .push_bind(n.as_str().to_owned())
                        .push(" OR selector = '*' OR (substr(selector, length(selector) - 1) = '/*' AND substr(")
                        .push_bind(n.as_str().to_owned())
                        .push(", 1, length(selector) - 1) = substr(selector, 1, length(selector) - 1)))");
                }
                q.push(" ORDER BY id LIMIT ").push_bind(page.fetch_limit());
                let mut tx = self.tenant_tx(scope.tenant_id(), false).await?;
                let rows: Vec<crate::rows::GrantRow> = q
                    .build_query_as()
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(crate::error::db("grant"))?;
                tx.commit().await.map_err(crate::error::db("grant"))?;
                let items = rows
                    .into_iter()
                    .map(TryInto::try_into)
                    .collect::<strongroom_core::Result<Vec<strongroom_core::policy::Grant>>>()?;
                Ok(strongroom_core::page::Page::from_rows(items, page.size, |g| g.id.to_string()))
            }

            async fn grants_for(
                &self,
                scope: &strongroom_core::scope::TenantScope<'_>,
                principal: &strongroom_core::principal::Principal,
            ) -> strongroom_core::Result<Vec<strongroom_core::policy::Grant>> {
                let mut tx = self.tenant_tx(scope.tenant_id(), false).await?;
                let rows: Vec<crate::rows::GrantRow> = sqlx::query_as(concat!(
                    "SELECT ", crate::rows::grant_columns!(),
                    " FROM grants WHERE tenant_id = $1 AND ((subject_kind = 'principal' AND subject = $2) \
                      OR (subject_kind = 'role' AND subject = $3)) ORDER BY id"
                ))
                .bind(scope.tenant_id().as_uuid())
                .bind(principal.id.to_string())
                .bind(principal.role.as_str())
                .fetch_all(&mut *tx)
                .await
                .map_err(crate::error::db("grant"))?;
                tx.commit().await.map_err(crate::error::db("grant"))?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

        }

        #[async_trait::async_trait]
        impl strongroom_core::store::AuditStore for $store {
            async fn append_audit(
                &self,
                scope: &strongroom_core::scope::TenantScope<'_>,
                draft: strongroom_core::audit::AuditDraft,
            ) -> strongroom_core::Result<strongroom_core::audit::AuditEvent> {
                let queue = self.committer(scope.tenant_id())?;
                match crate::group_commit::submit(queue, crate::group_commit::Work::Append, draft).await? {
                    crate::group_commit::Done::Event(e) | crate::group_commit::Done::Credential(_, e) => Ok(e),
                }
            }

            async fn append_reveal(
                &self,
                scope: &strongroom_core::scope::TenantScope<'_>,
                draft: strongroom_core::audit::AuditDraft,
                check: strongroom_core::store::RevealCheck,
            ) -> strongroom_core::Result<strongroom_core::audit::AuditEvent> {
                let queue = self.committer(scope.tenant_id())?;
                match crate::group_commit::submit(queue, crate::group_commit::Work::Reveal(check), draft).await? {
                    crate::group_commit::Done::Event(e) | crate::group_commit::Done::Credential(_, e) => Ok(e),
                }
            }

            fn changes(&self) -> tokio::sync::broadcast::Receiver<strongroom_core::store::Change> {
                <$db as crate::dialect::Dialect>::subscribe_changes(self)
            }

            async fn query_audit(
                &self,
                scope: &strongroom_core::scope::TenantScope<'_>,
                filter: &strongroom_core::store::AuditFilter,
                page: &strongroom_core::page::PageRequest,
            ) -> strongroom_core::Result<strongroom_core::page::Page<strongroom_core::audit::AuditEvent>> {
                let before = match &page.after {
                    None => i64::MAX,
                    Some(t) => t
                        .parse::<i64>()
                        .map_err(|_| strongroom_core::Error::invalid("page_token", "is not a valid page token"))?,
                };
                let mut q = sqlx::QueryBuilder::<$db>::new(concat!(
                    "SELECT ", crate::rows::audit_columns!(), " FROM audit_events WHERE tenant_id = "
                ));
                q.push_bind(scope.tenant_id().as_uuid());
                q.push(" AND sequence < ").push_bind(before);
                if let Some(c) = filter.credential {
                    q.push(" AND credential_id = ").push_bind(c.as_uuid());
                }
                if let Some(p) = filter.principal {
                    q.push(" AND principal_id = ").push_bind(p.as_uuid());
                }
                if let Some(a) = filter.action {
                    q.push(" AND action = ").push_bind(a.as_str());
                }
                if let Some(o) = filter.outcome {
                    q.push(" AND outcome = ").push_bind(o.as_str());
                }
                if let Some(t) = filter.since {
                    q.push(" AND at >= ").push_bind(t.as_micros());
                }
                if let Some(t) = filter.until {
                    q.push(" AND at < ").push_bind(t.as_micros());
                }
                if let Some(envs) = &filter.environments {
                    // An empty list matches nothing (`IN ()` is not SQL).
                    q.push(" AND environment IN (NULL");
                    for e in envs {
                        q.push(", ").push_bind(e.as_str().to_owned());
                    }
                    q.push(")");
                }
                q.push(" ORDER BY sequence DESC LIMIT ").push_bind(page.fetch_limit());
                let mut tx = self.tenant_tx(scope.tenant_id(), false).await?;
                let rows: Vec<crate::rows::AuditRow> = q
                    .build_query_as()
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(crate::error::db("audit event"))?;
                tx.commit().await.map_err(crate::error::db("audit event"))?;
                let items = rows
                    .into_iter()
                    .map(TryInto::try_into)
                    .collect::<strongroom_core::Result<Vec<strongroom_core::audit::AuditEvent>>>()?;
                Ok(strongroom_core::page::Page::from_rows(items, page.size, |e| e.sequence.to_string()))
            }

            async fn audit_after(
                &self,
                scope: &strongroom_core::scope::TenantScope<'_>,
                after: u64,
                limit: u32,
            ) -> strongroom_core::Result<Vec<strongroom_core::audit::AuditEvent>> {
                let mut tx = self.tenant_tx(scope.tenant_id(), false).await?;
                let rows: Vec<crate::rows::AuditRow> = sqlx::query_as(concat!(
                    "SELECT ", crate::rows::audit_columns!(),
                    " FROM audit_events WHERE tenant_id = $1 AND sequence > $2 ORDER BY sequence LIMIT $3"
                ))
                .bind(scope.tenant_id().as_uuid())
                .bind(i64::try_from(after).unwrap_or(i64::MAX))
                .bind(i64::from(limit))
                .fetch_all(&mut *tx)
                .await
                .map_err(crate::error::db("audit event"))?;
                tx.commit().await.map_err(crate::error::db("audit event"))?;
                rows.into_iter().map(TryInto::try_into).collect()
            }
        }

        impl $store {
            /// The committer queue of `tenant` (started on first use).
            fn committer(
                &self,
                tenant: strongroom_core::ids::TenantId,
            ) -> strongroom_core::Result<tokio::sync::mpsc::Sender<crate::group_commit::Job>> {
                let store = self.clone();
                self.committers.queue(tenant, move |mut rx, state| {
                    tokio::spawn(async move {
                        let mut state = state.lock().await;
                        // The connection the short path keeps while this
                        // committer has work (see `commit_batch`).
                        let mut conn = None;
                        while let Some(jobs) = crate::group_commit::next_batch(&mut rx).await {
                            store.commit_batch(tenant, jobs, &mut state, &mut conn).await;
                        }
                    });
                })
            }

            /// Runs one batch and answers every job in it: a batch of events
            /// only, on the head this committer last wrote, takes the
            /// backend's short path where it has one; anything else (or what
            /// the short path hands back) the full path.
            ///
            /// The short path keeps its pooled connection in `conn` from one
            /// batch to the next while the committer has work: a connection
            /// just used is warm in the database server, where the next one
            /// the pool hands out has often been idle longest. It is kept
            /// only while the pool has others idle (checked as each batch
            /// ends, in `fast_events`), handed back before the full path
            /// takes one of its own (a committer never holds two) and after
            /// any error.
            async fn commit_batch(
                &self,
                tenant: strongroom_core::ids::TenantId,
                jobs: Vec<crate::group_commit::Job>,
                state: &mut crate::group_commit::CommitterState,
                conn: &mut Option<sqlx::pool::PoolConnection<$db>>,
            ) {
                let mut works = Vec::with_capacity(jobs.len());
                let mut drafts = Vec::with_capacity(jobs.len());
                let mut replies = Vec::with_capacity(jobs.len());
                for job in jobs {
                    works.push(job.work);
                    drafts.push(job.draft);
                    replies.push(job.reply);
                }
                match state.head.take() {
                    Some(head)
                        if <$db as crate::dialect::Dialect>::FAST_EVENTS
                            && state.fast_pause == 0
                            && crate::group_commit::events_only(&works, &drafts, tenant) =>
                    {
                        match <$db as crate::dialect::Dialect>::fast_events(self, tenant, &works, drafts, head, conn).await {
                            Ok(crate::group_commit::Fast::Committed(events, head)) => {
                                state.head = Some(head);
                                let done = events.into_iter().map(|e| Ok(crate::group_commit::Done::Event(e))).collect();
                                return crate::group_commit::answer(Ok(done), replies);
                            }
                            Ok(crate::group_commit::Fast::Redo(back)) => {
                                state.fast_pause = crate::group_commit::FAST_PAUSE;
                                drafts = back;
                            }
                            Err(e) => {
                                *conn = None;
                                return crate::group_commit::answer(Err(e), replies);
                            }
                        }
                    }
                    _ => state.fast_pause = state.fast_pause.saturating_sub(1),
                }
                *conn = None;
                let jobs = works.len();
                // Kept to run the jobs one by one if the batch fails as a
                // whole (see `retry_singly`).
                let single = (jobs > 1).then(|| (works.clone(), drafts.clone()));
                let result = self.run_batch(tenant, works, drafts, &mut state.head).await;
                match (result, single) {
                    (Err(e), Some((works, drafts))) if crate::group_commit::retry_singly(&e, jobs) => {
                        tracing::warn!(error = %e, jobs, "audit batch failed; committing its jobs one by one");
                        for ((work, draft), reply) in works.into_iter().zip(drafts).zip(replies) {
                            // A caller that gave up (its audit timeout) was
                            // answered unavailable: its job is not written.
                            if reply.is_closed() {
                                continue;
                            }
                            let result = self.run_batch(tenant, vec![work], vec![draft], &mut state.head).await;
                            crate::group_commit::answer(result, vec![reply]);
                        }
                    }
                    (result, _) => crate::group_commit::answer(result, replies),
                }
            }

            /// One transaction for a batch: the mutations first (their row
            /// locks before the chain-head lock, the order every writer
            /// uses), then the head lock, then the reveal checks (seeing every
            /// change committed before the lock), then all events at once.
            /// A job whose mutation or check fails gets its error and no
            /// event; the others commit.
            async fn run_batch(
                &self,
                tenant: strongroom_core::ids::TenantId,
                works: Vec<crate::group_commit::Work>,
                drafts: Vec<strongroom_core::audit::AuditDraft>,
                head_after: &mut Option<crate::group_commit::Head>,
            ) -> strongroom_core::Result<Vec<strongroom_core::Result<crate::group_commit::Done>>> {
                use crate::group_commit::{Done, Work};
                use crate::error::db;
                let mut tx = self.tenant_tx(tenant, true).await?;
                let mut outcomes: Vec<strongroom_core::Result<Option<strongroom_core::credential::Credential>>> =
                    works.iter().map(|_| Ok(None)).collect();
                // Mutations run in one fixed order, not in job order, so two
                // committers of one tenant (two servers on one database) take
                // their row and unique-key locks in the same order and cannot
                // deadlock: rotations by credential id, then creates by
                // environment and name (stable: equal keys keep job order).
                let mut order: Vec<usize> = (0..works.len()).collect();
                order.sort_by_key(|&i| match &works[i] {
                    Work::AddVersion { id, .. } => (0, id.as_uuid(), "", ""),
                    Work::CreateCredential { credential, .. } => {
                        (1, uuid::Uuid::nil(), credential.environment.as_str(), credential.name.as_str())
                    }
                    Work::Append | Work::Reveal(_) => (2, uuid::Uuid::nil(), "", ""),
                });
                // The backend's bulk path first (Postgres: multi-row
                // statements for the batch's creates); the jobs it leaves
                // run one by one below.
                let mut bulk = <$db as crate::dialect::Dialect>::bulk_mutations(&mut tx, tenant, &works).await?;
                for i in order {
                    if let Some(outcome) = bulk[i].take() {
                        outcomes[i] = outcome;
                        continue;
                    }
                    outcomes[i] = match &works[i] {
                        Work::Append | Work::Reveal(_) => continue,
                        Work::CreateCredential { credential, first } => {
                            Self::create_credential_in(&mut tx, tenant, credential, first)
                                .await
                                .map(|()| Some((**credential).clone()))
                        }
                        Work::AddVersion { id, expected_latest, version, retention } => {
                            Self::add_version_in(&mut tx, tenant, *id, *expected_latest, version, *retention)
                                .await
                                .map(Some)
                        }
                    };
                }
                let head_sql = <$db as crate::dialect::Dialect>::LOCK_TENANT_HEAD;
                let (sequence, hash): (i64, Vec<u8>) = sqlx::query_as(head_sql)
                    .bind(tenant.as_uuid())
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db("audit chain head"))?;
                let checks: Vec<(usize, &strongroom_core::store::RevealCheck)> = works
                    .iter()
                    .enumerate()
                    .filter_map(|(i, w)| match w {
                        Work::Reveal(c) => Some((i, c)),
                        _ => None,
                    })
                    .collect();
                if !checks.is_empty() {
                    let ids = crate::group_commit::checks::CheckIds::of(&works);
                    let states = <$db as crate::dialect::Dialect>::read_states(&mut tx, tenant, &ids).await?;
                    let now = strongroom_core::time::Timestamp::now();
                    for (i, check) in checks {
                        if let Some(why) = states.violation(check, now) {
                            outcomes[i] = Err(strongroom_core::Error::precondition(why));
                        }
                    }
                }
                let mut prev: [u8; 32] = hash
                    .as_slice()
                    .try_into()
                    .map_err(|_| strongroom_core::Error::internal("stored audit head hash is not valid"))?;
                let mut next = u64::try_from(sequence)
                    .map_err(|_| strongroom_core::Error::internal("stored audit sequence is not valid"))?;
                let mut events = Vec::with_capacity(drafts.len());
                let mut results = Vec::with_capacity(drafts.len());
                let mut changes = Vec::new();
                for (draft, outcome) in drafts.into_iter().zip(outcomes) {
                    match outcome {
                        Ok(credential) => {
                            if draft.outcome == strongroom_core::audit::Outcome::Allowed
                                && let Some(change) =
                                    strongroom_core::store::Change::of(tenant, draft.action, draft.credential)
                                && !changes.contains(&change)
                            {
                                changes.push(change);
                            }
                            next += 1;
                            let event = draft.seal(tenant, next, prev);
                            prev = event.hash;
                            results.push(Ok(match credential {
                                Some(c) => Done::Credential(Box::new(c), event.clone()),
                                None => Done::Event(event.clone()),
                            }));
                            events.push(event);
                        }
                        Err(e) => results.push(Err(e)),
                    }
                }
                if !events.is_empty() {
                    let head = crate::group_commit::Head { sequence: next, hash: prev };
                    <$db as crate::dialect::Dialect>::insert_events(&mut tx, &events, head, self.origin, &changes).await?;
                }
                // A failed COMMIT leaves the outcome unknown (the server may
                // have committed before the connection broke): answered as
                // unavailable, never run again job by job.
                tx.commit().await.map_err(|e| {
                    tracing::warn!(error = %e, "audit batch commit failed; its outcome is unknown");
                    strongroom_core::Error::Unavailable("the audit log is unavailable".into())
                })?;
                *head_after = Some(crate::group_commit::Head { sequence: next, hash: prev });
                Ok(results)
            }

            /// Stores a new credential and its first version inside a batch.
            /// Expected failures (name taken, unknown environment) leave the
            /// transaction usable: the name conflict is skipped, not raised.
            async fn create_credential_in(
                tx: &mut sqlx::Transaction<'static, $db>,
                tenant: strongroom_core::ids::TenantId,
                c: &strongroom_core::credential::Credential,
                first: &strongroom_core::credential::StoredVersion,
            ) -> strongroom_core::Result<()> {
                use crate::error::db;
                let env: Option<i32> = sqlx::query_scalar("SELECT 1 FROM environments WHERE tenant_id = $1 AND name = $2")
                    .bind(tenant.as_uuid())
                    .bind(c.environment.as_str())
                    .fetch_optional(&mut **tx)
                    .await
                    .map_err(db("environment"))?;
                if env.is_none() {
                    return Err(strongroom_core::Error::not_found("environment"));
                }
                let done = sqlx::query(concat!(
                    "INSERT INTO credentials (", crate::rows::credential_columns!(),
                    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23) \
                     ON CONFLICT (tenant_id, environment, name) DO NOTHING"
                ))
                .bind(tenant.as_uuid())
                .bind(c.id.as_uuid())
                .bind(c.environment.as_str())
                .bind(c.name.as_str())
                .bind(c.service.as_str())
                .bind(c.kind.as_str())
                .bind(c.description.as_str())
                .bind(crate::rows::json(&c.tags)?)
                .bind(crate::rows::json(&c.scopes)?)
                .bind(c.owner.as_deref())
                .bind(c.status.as_str())
                .bind(crate::rows::version_i32(c.current_version)?)
                .bind(crate::rows::version_i32(c.latest_version)?)
                .bind(c.rotated_at.as_micros())
                .bind(c.created_at.as_micros())
                .bind(c.updated_at.as_micros())
                .bind(c.expires_at.map(|t| t.as_micros()))
                .bind(c.revoked_at.map(|t| t.as_micros()))
                .bind(c.revoke_reason.as_deref())
                .bind(c.destroyed_at.map(|t| t.as_micros()))
                .bind(c.rotation.as_ref().map(crate::rows::json).transpose()?)
                .bind(c.injection.as_ref().map(crate::rows::json).transpose()?)
                .bind(c.created_by.as_uuid())
                .execute(&mut **tx)
                .await
                .map_err(db("credential"))?;
                if done.rows_affected() == 0 {
                    return Err(strongroom_core::Error::already_exists("credential"));
                }
                Self::insert_version(tx, tenant, first).await
            }

            /// Adds a version inside a batch: compare-and-set on the latest
            /// version, insert, prune to `retention`.
            async fn add_version_in(
                tx: &mut sqlx::Transaction<'static, $db>,
                tenant: strongroom_core::ids::TenantId,
                id: strongroom_core::ids::CredentialId,
                expected_latest: u32,
                version: &strongroom_core::credential::StoredVersion,
                retention: u32,
            ) -> strongroom_core::Result<strongroom_core::credential::Credential> {
                use crate::error::db;
                let new = crate::rows::version_i32(version.version)?;
                let row: Option<crate::rows::CredentialRow> = sqlx::query_as(concat!(
                    "UPDATE credentials SET current_version = $3, latest_version = $3, rotated_at = $4, updated_at = $4 \
                     WHERE tenant_id = $1 AND id = $2 AND latest_version = $5 AND status = 'active' AND destroyed_at IS NULL \
                     RETURNING ", crate::rows::credential_columns!()
                ))
                .bind(tenant.as_uuid())
                .bind(id.as_uuid())
                .bind(new)
                .bind(version.created_at.as_micros())
                .bind(crate::rows::version_i32(expected_latest)?)
                .fetch_optional(&mut **tx)
                .await
                .map_err(db("credential"))?;
                let Some(row) = row else {
                    let current = match Self::credential_in(tx, tenant, id).await {
                        Err(strongroom_core::Error::NotFound(_)) => return Err(strongroom_core::Error::not_found("credential")),
                        other => other?,
                    };
                    current.ensure_usable(strongroom_core::time::Timestamp::now())?;
                    if current.status != strongroom_core::credential::CredentialStatus::Active {
                        return Err(strongroom_core::Error::precondition("credential is not active"));
                    }
                    return Err(strongroom_core::Error::precondition(
                        "another version was written concurrently; retry",
                    ));
                };
                Self::insert_version(tx, tenant, version).await?;
                let keep_from = i64::from(version.version) - i64::from(retention.max(1));
                sqlx::query("DELETE FROM credential_versions WHERE tenant_id = $1 AND credential_id = $2 AND version <= $3")
                    .bind(tenant.as_uuid())
                    .bind(id.as_uuid())
                    .bind(i32::try_from(keep_from.max(0)).unwrap_or(0))
                    .execute(&mut **tx)
                    .await
                    .map_err(db("credential version"))?;
                row.try_into()
            }
        }

        impl $store {
            /// The identity bindings authentication ignores, oldest first, at
            /// most `limit` (for `strongroomd migrate` to report).
            pub async fn disabled_bindings(
                &self,
                limit: u32,
            ) -> strongroom_core::Result<Vec<strongroom_core::store::DisabledBinding>> {
                let mut tx = self.platform_tx(None, false).await?;
                let rows: Vec<(uuid::Uuid, String, uuid::Uuid, String, String, String)> = sqlx::query_as(
                    "SELECT b.tenant_id, t.name, b.id, b.kind, b.pattern, b.disabled_reason \
                     FROM identity_bindings b JOIN tenants t ON t.id = b.tenant_id \
                     WHERE b.disabled_reason IS NOT NULL ORDER BY b.created_at, b.id LIMIT $1",
                )
                .bind(i64::from(limit))
                .fetch_all(&mut *tx)
                .await
                .map_err(crate::error::db("identity binding"))?;
                tx.commit().await.map_err(crate::error::db("identity binding"))?;
                rows.into_iter()
                    .map(|(tenant, tenant_name, id, kind, pattern, reason)| {
                        Ok(strongroom_core::store::DisabledBinding {
                            tenant: strongroom_core::ids::TenantId::from_uuid(tenant),
                            tenant_name,
                            binding: strongroom_core::ids::BindingId::from_uuid(id),
                            pattern: crate::rows::pattern(&kind, pattern)?,
                            reason,
                        })
                    })
                    .collect()
            }

            /// Deletes the row `sql` selects by (tenant, id) and appends
            /// `audit`, in one transaction; `NotFound` naming `what` if there
            /// was no such row.
            async fn delete_audited(
                &self,
                tenant: strongroom_core::ids::TenantId,
                sql: &'static str,
                id: uuid::Uuid,
                what: &'static str,
                audit: strongroom_core::audit::AuditDraft,
            ) -> strongroom_core::Result<()> {
                let mut tx = self.tenant_tx(tenant, true).await?;
                let done = sqlx::query(sql)
                    .bind(tenant.as_uuid())
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(crate::error::db(what))?;
                if done.rows_affected() == 0 {
                    return Err(strongroom_core::Error::not_found(what));
                }
                Self::append_in(self.origin, &mut tx, tenant, audit).await?;
                tx.commit().await.map_err(crate::error::db(what))?;
                Ok(())
            }

            async fn insert_principal(
                tx: &mut sqlx::Transaction<'static, $db>,
                p: &strongroom_core::principal::Principal,
            ) -> strongroom_core::Result<()> {
                sqlx::query(concat!(
                    "INSERT INTO principals (", crate::rows::principal_columns!(), ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                ))
                .bind(p.tenant.as_uuid())
                .bind(p.id.as_uuid())
                .bind(p.name.as_str())
                .bind(p.role.as_str())
                .bind(crate::rows::json(&p.environments)?)
                .bind(p.description.as_str())
                .bind(p.status.as_str())
                .bind(p.created_at.as_micros())
                .execute(&mut **tx)
                .await
                .map_err(crate::error::db("principal"))?;
                Ok(())
            }

            /// Assigns `namespaces` to `tenant`, refusing any that overlaps
            /// another tenant's. The caller holds the exclusive namespace
            /// lock.
            async fn insert_namespaces(
                tx: &mut sqlx::Transaction<'static, $db>,
                tenant: strongroom_core::ids::TenantId,
                namespaces: &[strongroom_core::principal::IdentityPattern],
                at: strongroom_core::time::Timestamp,
            ) -> strongroom_core::Result<()> {
                use crate::error::db;
                for n in namespaces {
                    let (kind, text) = crate::rows::pattern_parts(n);
                    let hit: Option<i32> = sqlx::query_scalar(
                        "SELECT 1 FROM identity_namespaces WHERE tenant_id <> $1 AND ( \
                           (kind = 'exact' AND $2 = 'exact' AND pattern = $3) \
                           OR (kind = 'prefix' AND substr($3, 1, length(pattern)) = pattern) \
                           OR ($2 = 'prefix' AND substr(pattern, 1, length($3)) = $3)) LIMIT 1",
                    )
                    .bind(tenant.as_uuid())
                    .bind(kind)
                    .bind(text)
                    .fetch_optional(&mut **tx)
                    .await
                    .map_err(db("identity namespace"))?;
                    if hit.is_some() {
                        return Err(strongroom_core::Error::invalid(
                            "identity_namespaces",
                            strongroom_core::principal::NAMESPACE_OVERLAP,
                        ));
                    }
                    sqlx::query(
                        "INSERT INTO identity_namespaces (tenant_id, kind, pattern, created_at) VALUES ($1, $2, $3, $4)",
                    )
                    .bind(tenant.as_uuid())
                    .bind(kind)
                    .bind(text)
                    .bind(at.as_micros())
                    .execute(&mut **tx)
                    .await
                    .map_err(|e| {
                        if crate::error::is_unique(&e) {
                            strongroom_core::Error::invalid(
                                "identity_namespaces",
                                strongroom_core::principal::NAMESPACE_OVERLAP,
                            )
                        } else {
                            db("identity namespace")(e)
                        }
                    })?;
                }
                Ok(())
            }

            async fn insert_binding(
                tx: &mut sqlx::Transaction<'static, $db>,
                b: &strongroom_core::principal::IdentityBinding,
            ) -> strongroom_core::Result<()> {
                let (kind, pattern) = crate::rows::pattern_parts(&b.pattern);
                let covered: Option<i32> = sqlx::query_scalar(
                    "SELECT 1 FROM identity_namespaces WHERE tenant_id = $1 AND ( \
                       (kind = 'exact' AND $2 = 'exact' AND pattern = $3) \
                       OR (kind = 'prefix' AND substr($3, 1, length(pattern)) = pattern)) LIMIT 1",
                )
                .bind(b.tenant.as_uuid())
                .bind(kind)
                .bind(pattern)
                .fetch_optional(&mut **tx)
                .await
                .map_err(crate::error::db("identity namespace"))?;
                if covered.is_none() {
                    return Err(strongroom_core::Error::denied(
                        strongroom_core::principal::BINDING_OUTSIDE_NAMESPACES,
                    ));
                }
                sqlx::query(concat!(
                    "INSERT INTO identity_bindings (", crate::rows::binding_columns!(), ") VALUES ($1, $2, $3, $4, $5, $6)"
                ))
                .bind(b.tenant.as_uuid())
                .bind(b.id.as_uuid())
                .bind(b.principal.as_uuid())
                .bind(kind)
                .bind(pattern)
                .bind(b.created_at.as_micros())
                .execute(&mut **tx)
                .await
                .map_err(|e| {
                    if crate::error::is_fk(&e) {
                        strongroom_core::Error::not_found("principal")
                    } else {
                        crate::error::db("identity binding")(e)
                    }
                })?;
                Ok(())
            }

            async fn insert_version(
                tx: &mut sqlx::Transaction<'static, $db>,
                tenant: strongroom_core::ids::TenantId,
                v: &strongroom_core::credential::StoredVersion,
            ) -> strongroom_core::Result<()> {
                sqlx::query(concat!(
                    "INSERT INTO credential_versions (tenant_id, ", crate::rows::version_columns!(),
                    ") VALUES ($1, $2, $3, $4, $5, $6, $7)"
                ))
                .bind(tenant.as_uuid())
                .bind(v.credential.as_uuid())
                .bind(crate::rows::version_i32(v.version)?)
                .bind(v.envelope.as_deref())
                .bind(crate::rows::version_i32(v.kek_version)?)
                .bind(v.created_at.as_micros())
                .bind(v.created_by.as_uuid())
                .execute(&mut **tx)
                .await
                .map_err(crate::error::db("credential version"))?;
                Ok(())
            }
        }
    };
}

pub(crate) use store_impl;
