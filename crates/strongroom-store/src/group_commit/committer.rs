//! The committer: one task per tenant with queued jobs, running each batch
//! on either backend. A batch of events only, on the head the committer
//! last wrote, takes the dialect's one-round-trip path where it has one
//! ([`Dialect::fast_events`]); anything else, and whatever that path hands
//! back, takes the full path: one transaction with the dialect's bulk
//! mutations, the job-by-job mutations, the chain-head lock, the reveal
//! checks and one insert of every event.

use sqlx::pool::PoolConnection;
use strongroom_core::audit::ChainHead;
use strongroom_core::audit::{AuditDraft, Outcome};
use strongroom_core::credential::Credential;
use strongroom_core::ids::TenantId;
use strongroom_core::lease::Lease;
use strongroom_core::store::{Change, RevealCheck};
use strongroom_core::time::Timestamp;
use strongroom_core::{Error, Precondition, Result};
use tokio::sync::mpsc;

use super::checks::CheckIds;
use super::{
    CommitterState, Done, FAST_PAUSE, Fast, Head, Job, Work, answer, events_only, next_batch,
    retry_singly,
};
use crate::credentials;
use crate::dialect::Dialect;
use crate::error::db;
use crate::leases;
use crate::rows::HeadRow;
use crate::store::SqlStore;

impl<D: Dialect> SqlStore<D> {
    /// The committer queue of `tenant` (its committer started on first
    /// use).
    pub(crate) fn committer(&self, tenant: TenantId) -> Result<mpsc::Sender<Job>> {
        let store = self.clone();
        self.committers.queue(tenant, move |mut rx, state| {
            tokio::spawn(async move {
                let mut state = state.lock().await;
                // The connection the short path keeps while this committer
                // has work (see `commit_batch`).
                let mut conn = None;
                while let Some(jobs) = next_batch(&mut rx).await {
                    let started = std::time::Instant::now();
                    let count = jobs.len();
                    store
                        .commit_batch(tenant, jobs, &mut state, &mut conn)
                        .await;
                    if let Some(observer) = store.committers.observer.get() {
                        observer.batch(count, started.elapsed());
                    }
                }
            });
        })
    }

    /// Runs one batch and answers every job in it: a batch of events only,
    /// on the head this committer last wrote, takes the backend's short
    /// path where it has one; anything else (or what the short path hands
    /// back) the full path.
    ///
    /// The short path keeps its pooled connection in `conn` from one batch
    /// to the next while the committer has work: a connection just used is
    /// warm in the database server, where the next one the pool hands out
    /// has often been idle longest. It is kept only while the pool has
    /// others idle (checked as each batch ends, in `fast_events`), handed
    /// back before the full path takes one of its own (a committer never
    /// holds two) and after any error.
    async fn commit_batch(
        &self,
        tenant: TenantId,
        jobs: Vec<Job>,
        state: &mut CommitterState,
        conn: &mut Option<PoolConnection<D>>,
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
                if D::FAST_EVENTS
                    && state.fast_pause == 0
                    && events_only(&works, &drafts, tenant) =>
            {
                match D::fast_events(self, tenant, &works, drafts, head, conn).await {
                    Ok(Fast::Committed(events, head)) => {
                        state.head = Some(head);
                        self.announce_appended(tenant);
                        let done = events.into_iter().map(|e| Ok(Done::Event(e))).collect();
                        return answer(Ok(done), replies);
                    }
                    Ok(Fast::Redo(back)) => {
                        state.fast_pause = FAST_PAUSE;
                        drafts = back;
                    }
                    Err(e) => {
                        *conn = None;
                        return answer(Err(e), replies);
                    }
                }
            }
            _ => state.fast_pause = state.fast_pause.saturating_sub(1),
        }
        *conn = None;
        let jobs = works.len();
        // The batch borrows its jobs, so they are still here to run one by
        // one if it fails as a whole (see `retry_singly`).
        let result = self
            .run_batch(tenant, &works, &drafts, &mut state.head)
            .await;
        match result {
            Err(e) if retry_singly(&e, jobs) => {
                tracing::warn!(error = %e, jobs, "audit batch failed; committing its jobs one by one");
                for (i, reply) in replies.into_iter().enumerate() {
                    // A caller that gave up (its audit timeout) was answered
                    // unavailable: its job is not written.
                    if reply.is_closed() {
                        continue;
                    }
                    let result = self
                        .run_batch(tenant, &works[i..=i], &drafts[i..=i], &mut state.head)
                        .await;
                    answer(result, vec![reply]);
                }
            }
            result => answer(result, replies),
        }
        // Whatever committed (a failed batch wakes followers needlessly).
        self.announce_appended(tenant);
    }

    /// One transaction for a batch: the mutations first (their row locks
    /// before the chain-head lock, the order every writer uses), then the
    /// head lock, then the reveal checks (seeing every change committed
    /// before the lock), then all events at once. A job whose mutation or
    /// check fails gets its error and no event; the others commit.
    async fn run_batch(
        &self,
        tenant: TenantId,
        works: &[Work],
        drafts: &[AuditDraft],
        head_after: &mut Option<Head>,
    ) -> Result<Vec<Result<Done>>> {
        let mut tx = self.tenant_tx(tenant, true).await?;
        let mut outcomes: Vec<Result<Option<Credential>>> =
            works.iter().map(|_| Ok(None)).collect();
        // Mutations run in one fixed order, not in job order, so two
        // committers of one tenant (two servers on one database) take their
        // row and unique-key locks in the same order and cannot deadlock:
        // rotations by credential id, then creates by environment and name
        // (stable: equal keys keep job order).
        let mut order: Vec<usize> = (0..works.len()).collect();
        order.sort_by_key(|&i| match &works[i] {
            Work::AddVersion { id, .. } => (0, id.as_uuid(), "", ""),
            Work::CreateCredential { credential, .. } => (
                1,
                uuid::Uuid::nil(),
                credential.environment.as_str(),
                credential.name.as_str(),
            ),
            Work::Append | Work::Reveal(..) => (2, uuid::Uuid::nil(), "", ""),
        });
        // The backend's bulk path first (Postgres: multi-row statements for
        // the batch's rotations and creates); the jobs it leaves run one by
        // one below.
        let mut bulk = D::bulk_mutations(&mut tx, tenant, works).await?;
        for i in order {
            if let Some(outcome) = bulk[i].take() {
                outcomes[i] = outcome;
                continue;
            }
            outcomes[i] = match &works[i] {
                Work::Append | Work::Reveal(..) => continue,
                Work::CreateCredential { credential, first } => {
                    credentials::create_in(&mut tx, tenant, credential, first)
                        .await
                        .map(|()| Some((**credential).clone()))
                }
                Work::AddVersion {
                    id,
                    expected_latest,
                    version,
                    retention,
                } => credentials::add_version_in(
                    &mut tx,
                    tenant,
                    *id,
                    *expected_latest,
                    version,
                    *retention,
                )
                .await
                .map(Some),
            };
        }
        let head: HeadRow = D::query(D::LOCK_TENANT_HEAD)
            .bind(tenant.as_uuid())
            .fetch_one(&mut *tx)
            .await
            .map_err(db("audit chain head"))?;
        let head = ChainHead::try_from(head)?;
        let checks: Vec<(usize, &RevealCheck)> = works
            .iter()
            .enumerate()
            .filter_map(|(i, w)| match w {
                Work::Reveal(c, _) => Some((i, c)),
                _ => None,
            })
            .collect();
        if !checks.is_empty() {
            let states = D::read_states(&mut tx, tenant, &CheckIds::of(works)).await?;
            let now = Timestamp::now();
            for (i, check) in checks {
                if let Some(why) = states.violation(check, now) {
                    outcomes[i] = Err(Error::FailedPrecondition(Precondition::RevealStateChanged(
                        why,
                    )));
                }
            }
        }
        // The leases of the reveals that passed their checks, in the same
        // commit as their events.
        let leases: Vec<&Lease> = works
            .iter()
            .zip(&outcomes)
            .filter_map(|(w, outcome)| match (w, outcome) {
                (Work::Reveal(_, Some(lease)), Ok(_)) => Some(&**lease),
                _ => None,
            })
            .collect();
        leases::insert_in(&mut tx, tenant, &leases).await?;
        let mut prev = head.hash;
        let mut next = head.sequence;
        let mut events = Vec::with_capacity(drafts.len());
        let mut results = Vec::with_capacity(drafts.len());
        let mut changes = Vec::new();
        for (draft, outcome) in drafts.iter().zip(outcomes) {
            match outcome {
                Ok(credential) => {
                    if draft.outcome == Outcome::Allowed
                        && let Some(change) =
                            Change::of(tenant, draft.action, draft.credential, draft.version)
                        && !changes.contains(&change)
                    {
                        changes.push(change);
                    }
                    next += 1;
                    let event = draft.clone().seal(tenant, next, prev);
                    prev = event.hash;
                    // Paired with its event once the events are written.
                    results.push(Ok(credential));
                    events.push(event);
                }
                Err(e) => results.push(Err(e)),
            }
        }
        let head = Head {
            sequence: next,
            hash: prev,
        };
        if !events.is_empty() {
            D::insert_events(&mut tx, &events, head, self.origin, &changes).await?;
        }
        // A failed COMMIT leaves the outcome unknown (the server may have
        // committed before the connection broke): answered as unavailable,
        // never run again job by job.
        tx.commit().await.map_err(|e| {
            tracing::warn!(error = %e, "audit batch commit failed; its outcome is unknown");
            Error::Unavailable("the audit log is unavailable".into())
        })?;
        *head_after = Some(head);
        let mut events = events.into_iter();
        Ok(results
            .into_iter()
            .map(|result| {
                result.and_then(|credential| {
                    // One event was sealed for each job that passed.
                    let event = events
                        .next()
                        .ok_or_else(|| Error::internal("audit batch lost an event"))?;
                    Ok(match credential {
                        Some(c) => Done::Credential(Box::new(c), event),
                        None => Done::Event(event),
                    })
                })
            })
            .collect())
    }
}
