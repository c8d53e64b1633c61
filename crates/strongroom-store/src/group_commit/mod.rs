//! Group commit. Writes that append to a tenant's audit chain (every reveal,
//! denial, create and rotation) are queued to one committer task per tenant,
//! which runs everything queued in one transaction: one chain-head lock, one
//! multi-row insert of audit events, one commit. Each caller waits for the
//! commit that holds its event, so an event is durable before its caller
//! proceeds; many callers share one commit instead of queueing on the head
//! lock one commit at a time.
//!
//! This module holds the queue (jobs, the per-tenant registry of
//! committers, batching and answering); `committer` runs a batch on either
//! backend, taking the dialect's bulk and one-round-trip paths where it has
//! them; `checks` is the reveal-check rule every batch applies.

pub(crate) mod checks;
mod committer;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use strongroom_core::audit::{AuditDraft, AuditEvent};
use strongroom_core::credential::{Credential, StoredVersion};
use strongroom_core::ids::{CredentialId, TenantId};
use strongroom_core::lease::Lease;
use strongroom_core::store::RevealCheck;
use strongroom_core::{Error, Result};
use tokio::sync::{mpsc, oneshot};

/// Most jobs in one transaction (bounded by the statement's parameter
/// limit: 21 parameters an event).
pub(crate) const MAX_BATCH: usize = 512;

/// What a job does besides appending its audit event.
#[derive(Clone)]
pub enum Work {
    /// Only the event.
    Append,
    /// The event of a reveal, with the lease it opens, if the check still
    /// holds.
    Reveal(RevealCheck, Option<Arc<Lease>>),
    /// Stores a new credential with its first version.
    CreateCredential {
        credential: Box<Credential>,
        first: Box<StoredVersion>,
    },
    /// Adds a version (compare-and-set on the latest) and prunes.
    AddVersion {
        id: CredentialId,
        expected_latest: u32,
        version: Box<StoredVersion>,
        retention: u32,
    },
}

/// The tenant's audit chain head as its committer last wrote it: lets a
/// batch seal its events before reading the head, the write checking that
/// the head is still this one.
#[derive(Debug, Clone, Copy)]
pub struct Head {
    pub sequence: u64,
    pub hash: [u8; 32],
}

impl Head {
    /// Seals `drafts` in order after this head: the events, and the head
    /// after the last of them.
    pub(crate) fn seal(
        self,
        tenant: TenantId,
        drafts: impl IntoIterator<Item = AuditDraft>,
    ) -> (Vec<AuditEvent>, Head) {
        let mut head = self;
        let events = drafts
            .into_iter()
            .map(|d| {
                head.sequence += 1;
                let e = d.seal(tenant, head.sequence, head.hash);
                head.hash = e.hash;
                e
            })
            .collect();
        (events, head)
    }
}

impl From<strongroom_core::audit::ChainHead> for Head {
    fn from(h: strongroom_core::audit::ChainHead) -> Self {
        Head {
            sequence: h.sequence,
            hash: h.hash,
        }
    }
}

/// What a committer remembers between batches.
#[derive(Debug, Default)]
pub(crate) struct CommitterState {
    /// The head after this committer's last commit; `None` after a failure
    /// or when another writer moved it.
    pub head: Option<Head>,
    /// Batches left before the fast path is tried again after a miss
    /// (another server or writer moved the head meanwhile).
    pub fast_pause: u32,
}

/// Batches to skip the fast path for after it missed.
pub(crate) const FAST_PAUSE: u32 = 16;

/// The outcome of a batch of events on the fast path.
pub enum Fast {
    /// Committed: the events, and the head after them.
    Committed(Vec<AuditEvent>, Head),
    /// Nothing kept (the head moved, or a reveal check failed): the drafts
    /// back, in job order, for the full path.
    Redo(Vec<AuditDraft>),
}

/// Whether a batch may take the fast path: only events, none of which
/// announces a change.
pub(crate) fn events_only(works: &[Work], drafts: &[AuditDraft], tenant: TenantId) -> bool {
    works
        .iter()
        .all(|w| matches!(w, Work::Append | Work::Reveal(..)))
        && drafts.iter().all(|d| {
            d.outcome != strongroom_core::audit::Outcome::Allowed
                || strongroom_core::store::Change::of(tenant, d.action, d.credential, d.version)
                    .is_none()
        })
}

/// A job's outcome when the dialect's bulk path decided it (see
/// [`crate::dialect::Dialect::bulk_mutations`]): `None` if it left the job
/// to the job-by-job path.
pub type Outcome = Option<Result<Option<Credential>>>;

/// A job's result.
pub(crate) enum Done {
    /// The appended event.
    Event(AuditEvent),
    /// The credential as written, and the event.
    Credential(Box<Credential>, AuditEvent),
}

pub(crate) struct Job {
    pub work: Work,
    pub draft: AuditDraft,
    pub reply: oneshot::Sender<Result<Done>>,
}

/// What a tenant's committer keeps between batches, shared by the
/// committers that follow one another for the tenant (a committer stops
/// whenever its queue runs dry).
pub(crate) type SharedState = std::sync::Arc<tokio::sync::Mutex<CommitterState>>;

struct Entry {
    queue: mpsc::WeakSender<Job>,
    state: SharedState,
}

/// Told of every audit batch a store's committers ran (for the server's
/// metrics): how many jobs it held and how long it took to run and answer,
/// commit included. Called once per batch, on the committer's task: it
/// must not block.
pub trait BatchObserver: Send + Sync {
    /// A batch of `jobs` ran in `elapsed`.
    fn batch(&self, jobs: usize, elapsed: std::time::Duration);
}

/// The committer queues of one store, one per tenant.
#[derive(Default)]
pub(crate) struct Committers {
    /// Told of every batch, once set (see [`crate::SqlStore::observe_batches`]).
    pub(crate) observer: std::sync::OnceLock<std::sync::Arc<dyn BatchObserver>>,
    /// Weak, so a committer (whose task holds a clone of its store) stops
    /// once no caller waits on it, instead of keeping the store and its pool
    /// alive for as long as the runtime runs; the next job starts a new one,
    /// which takes over the state (after the one before has let go of it).
    queues: Mutex<HashMap<TenantId, Entry>>,
}

impl Committers {
    /// The queue of `tenant`, starting its committer with `spawn` if absent.
    pub fn queue(
        &self,
        tenant: TenantId,
        spawn: impl FnOnce(mpsc::Receiver<Job>, SharedState),
    ) -> Result<mpsc::Sender<Job>> {
        let mut queues = self
            .queues
            .lock()
            .map_err(|_| Error::internal("committer registry poisoned"))?;
        if let Some(q) = queues.get(&tenant).and_then(|e| e.queue.upgrade())
            && !q.is_closed()
        {
            return Ok(q);
        }
        let state = queues
            .get(&tenant)
            .map(|e| std::sync::Arc::clone(&e.state))
            .unwrap_or_default();
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        spawn(rx, std::sync::Arc::clone(&state));
        queues.insert(
            tenant,
            Entry {
                queue: tx.downgrade(),
                state,
            },
        );
        Ok(tx)
    }
}

/// Sends a job and waits for the commit that holds it. A job whose data
/// the database would refuse is refused here, before it can share a batch.
pub(crate) async fn submit(
    queue: mpsc::Sender<Job>,
    work: Work,
    draft: AuditDraft,
) -> Result<Done> {
    if let Work::CreateCredential { credential, .. } = &work {
        storable(credential)?;
    }
    let (reply, wait) = oneshot::channel();
    queue
        .send(Job { work, draft, reply })
        .await
        .map_err(|_| Error::Unavailable("the audit committer stopped".into()))?;
    wait.await
        .map_err(|_| Error::Unavailable("the audit committer stopped".into()))?
}

/// Refuses a credential whose text the database would refuse (NUL, which
/// PostgreSQL's `text` cannot hold). The request edge refuses such input
/// first; this keeps one bad job from failing a whole batch.
fn storable(c: &Credential) -> Result<()> {
    let Credential {
        description,
        tags,
        scopes,
        owner,
        revoke_reason,
        ..
    } = c;
    let texts = [description.as_str()]
        .into_iter()
        .chain(tags.iter().map(|t| t.as_str()))
        .chain(scopes.iter().map(String::as_str))
        .chain(owner.as_deref())
        .chain(revoke_reason.as_deref());
    for text in texts {
        if text.contains('\0') {
            return Err(Error::invalid("credential", "must not contain NUL"));
        }
    }
    Ok(())
}

/// Whether a batch that failed as a whole should be run again job by job:
/// any failure but an unavailable database may be one job's fault (data the
/// database refused), and the others must not fail with it.
pub(crate) fn retry_singly(error: &Error, jobs: usize) -> bool {
    jobs > 1 && !matches!(error, Error::Unavailable(_))
}

/// Takes the first queued job and whatever else is already queued (up to
/// [`MAX_BATCH`]).
pub(crate) async fn next_batch(rx: &mut mpsc::Receiver<Job>) -> Option<Vec<Job>> {
    let first = rx.recv().await?;
    let mut jobs = Vec::with_capacity(64);
    jobs.push(first);
    while jobs.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(job) => jobs.push(job),
            Err(_) => break,
        }
    }
    Some(jobs)
}

/// Answers the jobs of a batch with its results, or all with its error.
pub(crate) fn answer(
    result: Result<Vec<Result<Done>>>,
    replies: Vec<oneshot::Sender<Result<Done>>>,
) {
    match result {
        Ok(results) => {
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(result);
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "audit batch failed");
            fail_all(replies, &e);
        }
    }
}

/// Answers every job of a batch that failed as a whole.
pub(crate) fn fail_all(replies: Vec<oneshot::Sender<Result<Done>>>, error: &Error) {
    for reply in replies {
        let _ = reply.send(Err(error.clone()));
    }
}
