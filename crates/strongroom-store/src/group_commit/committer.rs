//! The committer: one task per tenant with queued jobs, running each batch
//! on either backend. A batch of events only, on the head the committer
//! last wrote (or the one the batch before it in flight will leave), takes
//! the dialect's one-round-trip path where it has one
//! ([`Dialect::fast_events`]), two batches in flight at most; anything
//! else, and whatever that path hands back, takes the full path: one transaction with the dialect's bulk
//! mutations, the job-by-job mutations, the chain-head lock, the reveal
//! checks and one insert of every event.

use sqlx::pool::PoolConnection;
use std::collections::VecDeque;
use strongroom_core::audit::ChainHead;
use strongroom_core::audit::{AuditDraft, Outcome};
use strongroom_core::credential::Credential;
use strongroom_core::ids::TenantId;
use strongroom_core::lease::Lease;
use strongroom_core::store::{Change, RevealCheck};
use strongroom_core::time::Timestamp;
use strongroom_core::{Error, Precondition, Result};

use tokio::sync::{mpsc, oneshot};

use super::checks::CheckIds;
use super::{
    CommitterState, Done, FAST_PAUSE, Fast, Head, Job, MAX_FLIGHTS, Work, answer, events_only,
    fail_all, next_batch, retry_singly, seal,
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
        self.committers.queue(tenant, move |rx, state| {
            tokio::spawn(async move {
                let mut state = state.lock().await;
                store.run_committer(tenant, rx, &mut state).await;
            });
        })
    }

    /// Runs a tenant's batches until its queue closes. A batch of events
    /// only, on a head this committer knows, takes the backend's short path
    /// where it has one; anything else (or what the short path hands back)
    /// the full path.
    ///
    /// On the short path the next batch does not wait for the one before
    /// to be answered: it is sealed on the head that batch will leave and
    /// sent at once ([`MAX_FLIGHTS`] at a time), so the database has it
    /// while the first waits for its commit (Postgres' function inserts its
    /// leases before it waits for the chain-head lock). Batches land in the
    /// order they were sent. If one does not commit, every batch after it
    /// finds the head moved (the database checks it under the lock) and
    /// comes back too; they all then take the full path, in order, after
    /// the ones in flight have landed. A batch that cannot take the short
    /// path waits until nothing is in flight.
    ///
    /// The short path keeps one pooled connection (`conn`) from one batch
    /// to the next while the committer has work: a connection just used is
    /// warm in the database server, where the next one the pool hands out
    /// has often been idle longest. It is kept only while the pool has
    /// others idle (checked as each batch ends, in `fast_events`), handed
    /// back before the full path takes one of its own and after any error;
    /// the second batch in flight takes one from the pool.
    async fn run_committer(
        &self,
        tenant: TenantId,
        mut rx: mpsc::Receiver<Job>,
        state: &mut CommitterState,
    ) {
        let mut conn: Option<PoolConnection<D>> = None;
        let mut flights: VecDeque<Flight<D>> = VecDeque::with_capacity(MAX_FLIGHTS);
        // A batch that cannot follow the ones in flight: it runs once they
        // have landed.
        let mut waiting: Option<Batch> = None;
        let mut open = true;
        loop {
            let room = open && waiting.is_none() && flights.len() < MAX_FLIGHTS;
            let Some(front) = flights.front_mut() else {
                let batch = match waiting.take() {
                    Some(batch) => batch,
                    None if open => match next_batch(&mut rx).await {
                        Some(jobs) => Batch::of(jobs),
                        None => break,
                    },
                    None => break,
                };
                match state.head.take() {
                    Some(head) if self.fast_allowed(tenant, state, &batch) => {
                        flights.push_back(self.take_off(tenant, batch, head, conn.take(), false));
                    }
                    head => {
                        state.head = head;
                        state.fast_pause = state.fast_pause.saturating_sub(1);
                        conn = None;
                        let started = std::time::Instant::now();
                        let count = batch.replies.len();
                        self.full_path(tenant, batch, state).await;
                        self.observe(count, started);
                    }
                }
                continue;
            };
            tokio::select! {
                biased;
                landed = &mut front.task => {
                    if let Some(flight) = flights.pop_front() {
                        self.land(tenant, flight, landed, state, &mut conn, &mut flights).await;
                    }
                }
                jobs = next_batch(&mut rx), if room => match jobs {
                    Some(jobs) => {
                        let batch = Batch::of(jobs);
                        let after = flights.back().map(|f| f.head_after);
                        match after {
                            Some(head) if self.fast_allowed(tenant, state, &batch) => {
                                // The kept connection is idle only when
                                // nothing is in flight: the second batch
                                // takes one from the pool.
                                flights.push_back(self.take_off(tenant, batch, head, None, true));
                            }
                            _ => waiting = Some(batch),
                        }
                    }
                    None => open = false,
                },
            }
        }
    }

    /// Whether `batch` may take the short path (given a head to seal it
    /// on).
    fn fast_allowed(&self, tenant: TenantId, state: &CommitterState, batch: &Batch) -> bool {
        D::FAST_EVENTS && state.fast_pause == 0 && events_only(&batch.works, &batch.drafts, tenant)
    }

    /// Seals `batch` on `head` and sends it on the short path, on `conn`
    /// if the committer kept one.
    fn take_off(
        &self,
        tenant: TenantId,
        batch: Batch,
        head: Head,
        conn: Option<PoolConnection<D>>,
        behind: bool,
    ) -> Flight<D> {
        let Batch {
            works,
            drafts,
            replies,
        } = batch;
        let (events, head_after) = seal(tenant, drafts, head);
        let store = self.clone();
        let task = tokio::spawn(async move {
            let mut held = conn;
            let outcome = D::fast_events(&store, tenant, &works, events, head, &mut held).await;
            (outcome, held, works)
        });
        Flight {
            task,
            replies,
            head_after,
            behind,
            started: std::time::Instant::now(),
        }
    }

    /// Answers a batch that left the short path. One that committed sets
    /// the head and may hand its connection on; one that did not commit,
    /// or whose outcome is unknown, first lets every batch sent after it
    /// land (they were sealed on the head it would have left), then each
    /// of them is settled in order.
    async fn land(
        &self,
        tenant: TenantId,
        flight: Flight<D>,
        landed: Landed<D>,
        state: &mut CommitterState,
        conn: &mut Option<PoolConnection<D>>,
        flights: &mut VecDeque<Flight<D>>,
    ) {
        if matches!(&landed, Ok((Ok(Fast::Committed(..)), _, _))) {
            let mut landed = landed;
            // Kept only while nothing else is in flight: a connection held
            // idle while this committer's next batch waits for one from the
            // pool could, across committers, leave the pool with none.
            if conn.is_none()
                && flights.is_empty()
                && let Ok((_, held, _)) = &mut landed
            {
                *conn = held.take();
            }
            return self.settle(tenant, flight, landed, state).await;
        }
        *conn = None;
        let mut later = Vec::with_capacity(flights.len());
        while let Some(mut next) = flights.pop_front() {
            let next_landed = (&mut next.task).await;
            later.push((next, next_landed));
        }
        self.settle(tenant, flight, landed, state).await;
        for (next, next_landed) in later {
            self.settle(tenant, next, next_landed, state).await;
        }
    }

    /// Answers one batch back from the short path: committed, handed back
    /// (the full path runs it), failed, or its task lost.
    async fn settle(
        &self,
        tenant: TenantId,
        flight: Flight<D>,
        landed: Landed<D>,
        state: &mut CommitterState,
    ) {
        let Flight {
            replies,
            started,
            behind,
            ..
        } = flight;
        let count = replies.len();
        match landed {
            Ok((Ok(Fast::Committed(events, head)), _, _)) => {
                state.head = Some(head);
                self.announce_appended(tenant);
                let done = events.into_iter().map(|e| Ok(Done::Event(e))).collect();
                answer(Ok(done), replies);
            }
            Ok((Ok(Fast::Redo(mut drafts)), _, works)) => {
                // Handed back: nothing of it was written, so the head this
                // committer knows (the one the batch before it left, if
                // that one committed) still holds. A batch sent behind
                // another may only have reached the head lock first: it
                // is sent once more on that head before it takes the full
                // path (which a failing reveal check needs, to name it).
                if behind
                    && state.fast_pause == 0
                    && let Some(head) = state.head.take()
                {
                    let (events, _) = seal(tenant, drafts, head);
                    let mut held = None;
                    match D::fast_events(self, tenant, &works, events, head, &mut held).await {
                        Ok(Fast::Committed(events, head)) => {
                            state.head = Some(head);
                            self.announce_appended(tenant);
                            let done = events.into_iter().map(|e| Ok(Done::Event(e))).collect();
                            answer(Ok(done), replies);
                            return self.observe(count, started);
                        }
                        Ok(Fast::Redo(back)) => drafts = back,
                        Err(e) => {
                            answer(Err(e), replies);
                            return self.observe(count, started);
                        }
                    }
                }
                state.head = None;
                state.fast_pause = FAST_PAUSE;
                let batch = Batch {
                    works,
                    drafts,
                    replies,
                };
                self.full_path(tenant, batch, state).await;
            }
            Ok((Err(e), _, _)) => {
                state.head = None;
                answer(Err(e), replies);
            }
            Err(e) => {
                state.head = None;
                tracing::error!(error = %e, "audit batch task failed");
                fail_all(replies, &Error::internal("audit batch task failed"));
            }
        }
        self.observe(count, started);
    }

    /// Tells the store's observer of a batch of `count` jobs started at
    /// `started`.
    fn observe(&self, count: usize, started: std::time::Instant) {
        if let Some(observer) = self.committers.observer.get() {
            observer.batch(count, started.elapsed());
        }
    }

    /// Runs one batch on the full path (one transaction; its jobs one by
    /// one if it fails as a whole) and answers every job in it.
    async fn full_path(&self, tenant: TenantId, batch: Batch, state: &mut CommitterState) {
        let Batch {
            works,
            drafts,
            replies,
        } = batch;
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
        leases::insert_in(&mut tx, &leases).await?;
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

/// A batch's jobs, taken apart.
struct Batch {
    works: Vec<Work>,
    drafts: Vec<AuditDraft>,
    replies: Vec<oneshot::Sender<Result<Done>>>,
}

impl Batch {
    fn of(jobs: Vec<Job>) -> Self {
        let mut batch = Batch {
            works: Vec::with_capacity(jobs.len()),
            drafts: Vec::with_capacity(jobs.len()),
            replies: Vec::with_capacity(jobs.len()),
        };
        for job in jobs {
            batch.works.push(job.work);
            batch.drafts.push(job.draft);
            batch.replies.push(job.reply);
        }
        batch
    }
}

/// What a batch sent on the short path comes back with: its outcome, the
/// connection it ran on (if it may be kept), and its jobs' work (for the
/// full path, should it be handed back).
type Landed<D> = std::result::Result<FlightOutput<D>, tokio::task::JoinError>;

/// What a batch's task on the short path gives back (see [`Landed`]).
type FlightOutput<D> = (Result<Fast>, Option<PoolConnection<D>>, Vec<Work>);

/// A batch sent on the short path and not yet answered.
struct Flight<D: Dialect> {
    task: tokio::task::JoinHandle<FlightOutput<D>>,
    replies: Vec<oneshot::Sender<Result<Done>>>,
    /// The head the batch leaves if it commits: the next batch is sealed
    /// on it.
    head_after: Head,
    /// Sent while another batch was in flight: it may have reached the
    /// chain-head lock before that one and found the head not yet moved.
    behind: bool,
    started: std::time::Instant,
}
