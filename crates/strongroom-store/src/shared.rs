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
                self.append_in(&mut tx, tenant, audit).await?;
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
                self.append_in(&mut tx, tenant, audit).await?;
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
                self.append_in(&mut tx, tenant, audit).await?;
                tx.commit().await.map_err(crate::error::db("credential"))?;
                row.try_into()
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
