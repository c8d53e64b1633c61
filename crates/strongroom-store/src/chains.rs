//! [`ChainStore`](strongroom_core::chains::ChainStore) for both backends:
//! reading chain heads, and the platform-level chain (its own tables,
//! outside tenant row-level security; see migration
//! `20261206000002_audit_checkpoints`). One append at a time: each locks the
//! platform head (Postgres `FOR UPDATE`; SQLite's write lock), so the chain
//! never forks. Platform events are rare (failed authentication, coalesced
//! by the server), so they skip the group committer.

/// Reads a `(sequence, hash)` row as a chain head.
pub(crate) fn head_of(
    sequence: i64,
    hash: &[u8],
) -> strongroom_core::Result<strongroom_core::audit::ChainHead> {
    Ok(strongroom_core::audit::ChainHead {
        sequence: u64::try_from(sequence)
            .map_err(|_| strongroom_core::Error::internal("stored audit sequence is not valid"))?,
        hash: hash
            .try_into()
            .map_err(|_| strongroom_core::Error::internal("stored audit head hash is not valid"))?,
    })
}

macro_rules! chain_store_impl {
    ($store:ty, $db:ty) => {
        #[async_trait::async_trait]
        impl strongroom_core::chains::ChainStore for $store {
            async fn audit_head(
                &self,
                scope: &strongroom_core::scope::TenantScope<'_>,
            ) -> strongroom_core::Result<strongroom_core::audit::ChainHead> {
                let mut tx = self.tenant_tx(scope.tenant_id(), false).await?;
                let (sequence, hash): (i64, Vec<u8>) =
                    sqlx::query_as("SELECT sequence, hash FROM audit_heads WHERE tenant_id = $1")
                        .bind(scope.tenant_id().as_uuid())
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(crate::error::db("audit chain head"))?;
                tx.commit().await.map_err(crate::error::db("audit chain head"))?;
                crate::chains::head_of(sequence, &hash)
            }

            async fn audit_heads(
                &self,
                tenant: Option<strongroom_core::ids::TenantId>,
            ) -> strongroom_core::Result<
                Vec<(strongroom_core::ids::TenantId, strongroom_core::audit::ChainHead)>,
            > {
                let mut tx = self.platform_tx(None, false).await?;
                let rows: Vec<(uuid::Uuid, i64, Vec<u8>)> = match tenant {
                    Some(t) => sqlx::query_as(
                        "SELECT tenant_id, sequence, hash FROM audit_heads WHERE tenant_id = $1",
                    )
                    .bind(t.as_uuid())
                    .fetch_all(&mut *tx)
                    .await,
                    None => sqlx::query_as(
                        "SELECT tenant_id, sequence, hash FROM audit_heads ORDER BY tenant_id",
                    )
                    .fetch_all(&mut *tx)
                    .await,
                }
                .map_err(crate::error::db("audit chain head"))?;
                tx.commit().await.map_err(crate::error::db("audit chain head"))?;
                rows.into_iter()
                    .map(|(t, s, h)| {
                        Ok((
                            strongroom_core::ids::TenantId::from_uuid(t),
                            crate::chains::head_of(s, &h)?,
                        ))
                    })
                    .collect()
            }

            async fn chain_event_at(
                &self,
                tenant: Option<strongroom_core::ids::TenantId>,
                sequence: u64,
            ) -> strongroom_core::Result<Option<strongroom_core::audit::AuditEvent>> {
                let sequence = i64::try_from(sequence).unwrap_or(i64::MAX);
                let row: Option<crate::rows::AuditRow> = match tenant {
                    Some(t) => {
                        let mut tx = self.tenant_tx(t, false).await?;
                        let row = sqlx::query_as(concat!(
                            "SELECT ", crate::rows::audit_columns!(),
                            " FROM audit_events WHERE tenant_id = $1 AND sequence = $2"
                        ))
                        .bind(t.as_uuid())
                        .bind(sequence)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(crate::error::db("audit event"))?;
                        tx.commit().await.map_err(crate::error::db("audit event"))?;
                        row
                    }
                    None => {
                        // Platform mode: row-level security shows the
                        // platform chain to nothing else.
                        let mut tx = self.platform_tx(None, false).await?;
                        let row = sqlx::query_as(concat!(
                            "SELECT ", crate::rows::audit_columns!(),
                            " FROM platform_audit_events WHERE sequence = $1"
                        ))
                        .bind(sequence)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(crate::error::db("platform audit event"))?;
                        tx.commit().await.map_err(crate::error::db("platform audit event"))?;
                        row
                    }
                };
                row.map(TryInto::try_into).transpose()
            }

            async fn append_platform_audit(
                &self,
                draft: strongroom_core::audit::AuditDraft,
            ) -> strongroom_core::Result<strongroom_core::audit::AuditEvent> {
                use crate::error::db;
                let mut tx = self.platform_tx(None, true).await?;
                let head_sql = <$db as crate::dialect::Dialect>::LOCK_PLATFORM_HEAD;
                let (sequence, hash): (i64, Vec<u8>) = sqlx::query_as(head_sql)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db("platform audit chain head"))?;
                let head = crate::chains::head_of(sequence, &hash)?;
                let event = draft.seal(
                    strongroom_core::audit::PLATFORM_CHAIN,
                    head.sequence + 1,
                    head.hash,
                );
                let seq = i64::try_from(event.sequence)
                    .map_err(|_| strongroom_core::Error::internal("audit sequence overflow"))?;
                let insert = sqlx::query(concat!(
                    "INSERT INTO platform_audit_events (",
                    crate::rows::audit_columns!(),
                    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)"
                ));
                crate::shared::bind_audit_event!(insert, event.tenant.as_uuid(), &event)?
                .execute(&mut *tx)
                .await
                .map_err(db("platform audit event"))?;
                sqlx::query("UPDATE platform_audit_heads SET sequence = $1, hash = $2 WHERE id = 1")
                    .bind(seq)
                    .bind(event.hash.as_slice())
                    .execute(&mut *tx)
                    .await
                    .map_err(db("platform audit chain head"))?;
                tx.commit().await.map_err(db("platform audit event"))?;
                Ok(event)
            }

            async fn platform_audit_head(
                &self,
            ) -> strongroom_core::Result<strongroom_core::audit::ChainHead> {
                // Platform mode: row-level security shows the platform
                // chain to nothing else.
                let mut tx = self.platform_tx(None, false).await?;
                let (sequence, hash): (i64, Vec<u8>) =
                    sqlx::query_as("SELECT sequence, hash FROM platform_audit_heads WHERE id = 1")
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(crate::error::db("platform audit chain head"))?;
                tx.commit().await.map_err(crate::error::db("platform audit chain head"))?;
                crate::chains::head_of(sequence, &hash)
            }

            async fn platform_audit_after(
                &self,
                after: u64,
                limit: u32,
            ) -> strongroom_core::Result<Vec<strongroom_core::audit::AuditEvent>> {
                let mut tx = self.platform_tx(None, false).await?;
                let rows: Vec<crate::rows::AuditRow> = sqlx::query_as(concat!(
                    "SELECT ", crate::rows::audit_columns!(),
                    " FROM platform_audit_events WHERE sequence > $1 ORDER BY sequence LIMIT $2"
                ))
                .bind(i64::try_from(after).unwrap_or(i64::MAX))
                .bind(i64::from(limit))
                .fetch_all(&mut *tx)
                .await
                .map_err(crate::error::db("platform audit event"))?;
                tx.commit().await.map_err(crate::error::db("platform audit event"))?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn query_platform_audit(
                &self,
                _scope: &strongroom_core::scope::PlatformScope<'_>,
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
                    "SELECT ", crate::rows::audit_columns!(), " FROM platform_audit_events WHERE sequence < "
                ));
                q.push_bind(before);
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
                q.push(" ORDER BY sequence DESC LIMIT ").push_bind(page.fetch_limit());
                let mut tx = self.platform_tx(None, false).await?;
                let rows: Vec<crate::rows::AuditRow> = q
                    .build_query_as()
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(crate::error::db("platform audit event"))?;
                tx.commit().await.map_err(crate::error::db("platform audit event"))?;
                let items = rows
                    .into_iter()
                    .map(TryInto::try_into)
                    .collect::<strongroom_core::Result<Vec<strongroom_core::audit::AuditEvent>>>()?;
                Ok(strongroom_core::page::Page::from_rows(items, page.size, |e| e.sequence.to_string()))
            }
        }
    };
}

pub(crate) use chain_store_impl;
