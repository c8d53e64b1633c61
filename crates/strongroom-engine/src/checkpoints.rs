//! Tamper evidence beyond the hash links: signed checkpoints of chain heads,
//! chain verification against the stored head and against a checkpoint kept
//! outside the database, and the platform-level chain of events that belong
//! to no tenant (failed authentication).
//!
//! Promises:
//! - the signing key is derived from the root key (see
//!   `RootKey::checkpoint_signing_key`) and exists only in this process's
//!   memory; nothing in the database takes part, so a database owner cannot
//!   swap it, and every replica with the same root key has the same key;
//! - the server signs a chain head only if it extends the last head it
//!   signed for that chain (kept in memory, seeded at start-up from the
//!   checkpoint file): sequence not lower, and the last signed event still
//!   stored with its hash and contents. Otherwise it refuses, logs an error
//!   and appends an alert to the platform chain;
//! - a verification reads at most `max_events` events (plus two lookups),
//!   whatever the chain's length; a whole chain is verified by continuing
//!   from `next_sequence`;
//! - a checkpoint whose signature does not verify with this deployment's key
//!   is refused (INVALID_ARGUMENT), never trusted;
//! - failed authentications cost the database at most one event per
//!   identity per [`FAILED_AUTH_WINDOW`], and at most
//!   [`FAILED_AUTH_PER_SECOND`] events a second overall; the failures in
//!   between are counted into the identity's next event, or into one
//!   written by [`Engine::flush_failed_authentications`] once its window has
//!   passed. Flushed events count against the same per-second limit (the
//!   rest are counted under `*`), and identities are tracked by their first
//!   512 characters, so the coalescer's memory is bounded too.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use strongroom_core::audit::ChainHead;
use strongroom_crypto::{ChainRef, SignedCheckpoint, SigningKey};

use super::*;

/// Why a head is not signed: it does not extend the last signed one.
const NOT_EXTENDING: &str = "the audit chain no longer extends the last checkpoint";
/// Reason code of the platform alert written when a head is refused.
const CHECKPOINT_REFUSED: &str = "CHECKPOINT_REFUSED";
/// Longest presented identity tracked (and recorded) by the failed
/// authentication coalescer, in characters.
const FAILED_AUTH_IDENTITY_CHARS: usize = 512;

/// Events a verification checks when the caller names no bound.
pub const DEFAULT_VERIFY_EVENTS: u32 = 10_000;
/// Most events one verification call checks.
pub const MAX_VERIFY_EVENTS: u32 = 100_000;
/// Events read per store round trip while verifying.
const VERIFY_BATCH: u32 = 1_000;

/// Repeated failed authentications of one identity within this window are
/// coalesced into one platform event.
pub const FAILED_AUTH_WINDOW: Duration = Duration::from_secs(5);
/// Most failed-authentication events written per second, all identities
/// together; failures beyond it are counted under the identity `*`.
pub const FAILED_AUTH_PER_SECOND: u32 = 20;
/// Most identities tracked at once; beyond it, failures are counted under
/// `*`.
const FAILED_AUTH_TRACKED: usize = 10_000;

/// Which chain a checkpoint or verification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainTarget {
    /// The caller's own tenant chain.
    OwnTenant,
    /// A tenant's chain, named by a platform operator.
    Tenant(TenantId),
    /// The platform-level chain (platform operators).
    Platform,
}

/// What a verification checks.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// The chain.
    pub target: ChainTarget,
    /// First sequence to check (1 = the first event).
    pub from_sequence: u64,
    /// Most events to check in this call.
    pub max_events: u32,
    /// A checkpoint exported earlier, to check the chain against.
    pub checkpoint: Option<SignedCheckpoint>,
}

/// A chain being read: a tenant's (through its scope) or the platform's.
enum Chain<'a> {
    Tenant(TenantScope<'a>),
    Platform(PlatformScope<'a>),
}

impl Chain<'_> {
    fn reference(&self) -> ChainRef {
        match self {
            Chain::Tenant(scope) => ChainRef::Tenant(scope.tenant_id().as_uuid()),
            Chain::Platform(_) => ChainRef::Platform,
        }
    }

    async fn head(&self, store: &dyn Store) -> Result<ChainHead> {
        match self {
            Chain::Tenant(scope) => store.audit_head(scope).await,
            Chain::Platform(_) => store.platform_audit_head().await,
        }
    }

    async fn after(&self, store: &dyn Store, after: u64, limit: u32) -> Result<Vec<AuditEvent>> {
        match self {
            Chain::Tenant(scope) => store.audit_after(scope, after, limit).await,
            Chain::Platform(_) => store.platform_audit_after(after, limit).await,
        }
    }

    /// The event at `sequence`, if stored.
    async fn at(&self, store: &dyn Store, sequence: u64) -> Result<Option<AuditEvent>> {
        let found = self.after(store, sequence.saturating_sub(1), 1).await?;
        Ok(found.into_iter().next().filter(|e| e.sequence == sequence))
    }

    /// The newest stored event at or before `sequence`.
    async fn last_up_to(&self, store: &dyn Store, sequence: u64) -> Result<Option<AuditEvent>> {
        let page = PageRequest {
            size: 1,
            after: Some(sequence.saturating_add(1).to_string()),
        };
        let filter = AuditFilter::default();
        let found = match self {
            Chain::Tenant(scope) => store.query_audit(scope, &filter, &page).await?,
            Chain::Platform(scope) => store.query_platform_audit(scope, &filter, &page).await?,
        };
        Ok(found.items.into_iter().next())
    }
}

/// The last head signed per chain, and the last head refused (so one
/// refusal alerts once).
#[derive(Default)]
pub(crate) struct SignedHeads {
    inner: tokio::sync::Mutex<SignedHeadsState>,
}

#[derive(Default)]
struct SignedHeadsState {
    last: HashMap<ChainRef, ChainHead>,
    refused: HashMap<ChainRef, ChainHead>,
}

fn tenant_of(chain: ChainRef) -> Option<TenantId> {
    match chain {
        ChainRef::Tenant(id) => Some(TenantId::from_uuid(id)),
        ChainRef::Platform => None,
    }
}

fn chain_name(chain: ChainRef) -> String {
    match chain {
        ChainRef::Tenant(id) => format!("tenant {id}"),
        ChainRef::Platform => "platform".to_owned(),
    }
}

impl Engine {
    /// The deployment's checkpoint signing key, derived from the root key.
    pub async fn checkpoint_key(&self) -> Result<Arc<SigningKey>> {
        let key = self
            .checkpoint_key
            .get_or_try_init(|| async {
                self.root
                    .checkpoint_signing_key()
                    .map(Arc::new)
                    .map_err(crypto_error)
            })
            .await?;
        Ok(Arc::clone(key))
    }

    /// Records `checkpoint` as the last head signed for its chain (start-up,
    /// from the checkpoint file), if its signature verifies with this
    /// server's key. Returns whether it was taken.
    pub async fn seed_signed_head(&self, checkpoint: &SignedCheckpoint) -> Result<bool> {
        let key = self.checkpoint_key().await?;
        let c = &checkpoint.checkpoint;
        if c.key_id != key.key_id() || checkpoint.verify(&key.public_key()).is_err() {
            return Ok(false);
        }
        let mut state = self.signed_heads.inner.lock().await;
        state.last.insert(
            c.chain,
            ChainHead {
                sequence: c.sequence,
                hash: c.hash,
            },
        );
        Ok(true)
    }

    /// Signs `head` of `chain` if it extends the last head signed for that
    /// chain; otherwise refuses (FAILED_PRECONDITION), logs an error and
    /// appends an alert to the platform chain (once per refused head).
    /// Signing is serialized, so two concurrent calls cannot sign out of
    /// order; a `head` read before a newer one was signed is read again.
    pub async fn sign_chain_head(
        &self,
        chain: ChainRef,
        head: ChainHead,
    ) -> Result<SignedCheckpoint> {
        let key = self.checkpoint_key().await?;
        let mut state = self.signed_heads.inner.lock().await;
        let last = state.last.get(&chain).copied();
        // A head read before another call signed a newer one is stale, not
        // moved back: read it again (under the lock, so it is current).
        let head = match last {
            Some(l) if head.sequence < l.sequence => self.current_head(chain).await?,
            _ => head,
        };
        let problem = match last {
            None => self.head_problem(chain, head).await?,
            Some(last) => match self.extension_problem(chain, last, head).await? {
                Some(p) => Some(p),
                None => self.head_problem(chain, head).await?,
            },
        };
        if let Some(problem) = problem {
            tracing::error!(
                chain = %chain_name(chain),
                head_sequence = head.sequence,
                last_signed_sequence = last.map(|l| l.sequence),
                problem,
                "refusing to sign an audit chain head: {NOT_EXTENDING}"
            );
            let first = state.refused.insert(chain, head) != Some(head);
            drop(state);
            if first {
                self.alert_checkpoint_refused(chain, head, last, problem)
                    .await;
            }
            return Err(Error::precondition(NOT_EXTENDING));
        }
        let signed = key.sign(
            chain,
            head.sequence,
            head.hash,
            Timestamp::now().as_micros(),
        );
        state.last.insert(chain, head);
        state.refused.remove(&chain);
        Ok(signed)
    }

    /// The stored head of `chain`.
    async fn current_head(&self, chain: ChainRef) -> Result<ChainHead> {
        match tenant_of(chain) {
            Some(id) => self
                .store
                .audit_heads(Some(id))
                .await?
                .into_iter()
                .next()
                .map(|(_, head)| head)
                .ok_or_else(|| Error::not_found("tenant")),
            None => self.store.platform_audit_head().await,
        }
    }

    /// Why `head` does not extend `last`, if it does not: a lower sequence,
    /// another hash at the same sequence, or the last signed event no
    /// longer stored as it was signed.
    async fn extension_problem(
        &self,
        chain: ChainRef,
        last: ChainHead,
        head: ChainHead,
    ) -> Result<Option<&'static str>> {
        if head.sequence < last.sequence {
            return Ok(Some("the stored head is behind the last signed head"));
        }
        if head.sequence == last.sequence && head.hash != last.hash {
            return Ok(Some("the stored head differs from the last signed head"));
        }
        if last.sequence == 0 {
            return Ok(None);
        }
        Ok(
            match self
                .store
                .chain_event_at(tenant_of(chain), last.sequence)
                .await?
            {
                None => Some("the last signed event is missing"),
                Some(e) if e.hash != last.hash => Some("the last signed event has another hash"),
                Some(e) if e.compute_hash() != e.hash => {
                    Some("the last signed event's contents do not match its hash")
                }
                Some(_) => None,
            },
        )
    }

    /// Why the stored `head` is not to be signed, if it is not: its event is
    /// missing, or differs from it.
    async fn head_problem(&self, chain: ChainRef, head: ChainHead) -> Result<Option<&'static str>> {
        if head.sequence == 0 {
            return Ok(None);
        }
        Ok(
            match self
                .store
                .chain_event_at(tenant_of(chain), head.sequence)
                .await?
            {
                None => Some("the head event is missing"),
                Some(e) if e.hash != head.hash || e.compute_hash() != e.hash => {
                    Some("the head event does not match the stored head")
                }
                Some(_) => None,
            },
        )
    }

    /// Appends the alert of a refused head to the platform chain; a failure
    /// to record is logged.
    async fn alert_checkpoint_refused(
        &self,
        chain: ChainRef,
        head: ChainHead,
        last: Option<ChainHead>,
        problem: &str,
    ) {
        let mut draft = AuditDraft::new(Action::Other, Outcome::Error, CHECKPOINT_REFUSED);
        draft.actor = "strongroomd".to_owned();
        draft.detail = Some(format!(
            "chain={} head_sequence={} last_signed_sequence={} problem={problem}",
            chain_name(chain),
            head.sequence,
            last.map_or(0, |l| l.sequence),
        ));
        match tokio::time::timeout(
            self.limits.audit_timeout,
            self.store.append_platform_audit(draft),
        )
        .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "could not record a refused checkpoint"),
            Err(_) => tracing::error!("recording a refused checkpoint timed out"),
        }
    }

    /// The public keys checkpoints are signed with, as (key id, key). Any
    /// authenticated caller.
    pub async fn checkpoint_public_keys(
        &self,
        _caller: &Authenticated,
    ) -> Result<Vec<(String, [u8; strongroom_crypto::PUBLIC_KEY_LEN])>> {
        let key = self.checkpoint_key().await?;
        Ok(vec![(key.key_id().to_owned(), key.public_key())])
    }

    /// Signs the current head of `target`'s chain: the caller's own tenant
    /// (admin role), or, for a platform operator, any tenant or the platform
    /// chain. Refused (FAILED_PRECONDITION) if the head does not extend the
    /// last one signed (see [`Engine::sign_chain_head`]).
    pub async fn export_checkpoint(
        &self,
        caller: &Authenticated,
        ctx: &CallContext,
        target: ChainTarget,
    ) -> Result<SignedCheckpoint> {
        let (chain, head) = match target {
            ChainTarget::OwnTenant => {
                let scope = caller.tenant_scope()?;
                self.require_role(&scope, ctx, Action::AuditQuery, &[Role::Admin])
                    .await?;
                (
                    ChainRef::Tenant(scope.tenant_id().as_uuid()),
                    self.store.audit_head(&scope).await?,
                )
            }
            ChainTarget::Tenant(id) => {
                caller.platform_scope()?;
                let (_, head) = self
                    .store
                    .audit_heads(Some(id))
                    .await?
                    .into_iter()
                    .next()
                    .ok_or_else(|| Error::not_found("tenant"))?;
                (ChainRef::Tenant(id.as_uuid()), head)
            }
            ChainTarget::Platform => {
                caller.platform_scope()?;
                (ChainRef::Platform, self.store.platform_audit_head().await?)
            }
        };
        self.sign_chain_head(chain, head).await
    }

    /// Signs the head of every chain, for the scheduled checkpoint task:
    /// each tenant's and the platform's, as (chain, head) pairs.
    pub async fn chain_heads(&self) -> Result<Vec<(ChainRef, ChainHead)>> {
        let mut heads: Vec<(ChainRef, ChainHead)> = self
            .store
            .audit_heads(None)
            .await?
            .into_iter()
            .map(|(t, h)| (ChainRef::Tenant(t.as_uuid()), h))
            .collect();
        heads.push((ChainRef::Platform, self.store.platform_audit_head().await?));
        Ok(heads)
    }

    /// Verifies a chain (admin, operator or viewer of the tenant; the
    /// platform chain: a platform operator): from `from_sequence`, at most
    /// `max_events` events, each linked to the one before and matching its
    /// hash; the newest against the stored head; and, given a checkpoint,
    /// that the chain still holds the checkpoint's head. Reports the first
    /// missing, altered or unlinked sequence.
    pub async fn verify_chain(
        &self,
        caller: &Authenticated,
        ctx: &CallContext,
        options: &VerifyOptions,
    ) -> Result<ChainReport> {
        let chain = match options.target {
            ChainTarget::Platform => Chain::Platform(caller.platform_scope()?),
            ChainTarget::Tenant(_) => {
                return Err(Error::invalid(
                    "tenant_id",
                    "a tenant's chain is verified by its own principals",
                ));
            }
            ChainTarget::OwnTenant => {
                let scope = caller.tenant_scope()?;
                self.require_role(
                    &scope,
                    ctx,
                    Action::AuditQuery,
                    &[Role::Admin, Role::Operator, Role::Viewer],
                )
                .await?;
                Chain::Tenant(scope)
            }
        };
        let store = self.store.as_ref();
        // Checked first: a forged or altered checkpoint is refused outright.
        if let Some(checkpoint) = &options.checkpoint {
            let key = self.checkpoint_key().await?;
            if checkpoint.checkpoint.key_id != key.key_id() {
                return Err(Error::invalid("checkpoint", "signed by an unknown key"));
            }
            if checkpoint.verify(&key.public_key()).is_err() {
                return Err(Error::invalid(
                    "checkpoint",
                    "the signature does not verify with this server's checkpoint key",
                ));
            }
            if checkpoint.checkpoint.chain != chain.reference() {
                return Err(Error::invalid("checkpoint", "is for another chain"));
            }
        }
        let head = chain.head(store).await?;
        let max_events = options.max_events.clamp(1, MAX_VERIFY_EVENTS);
        let from = options.from_sequence.max(1);
        if from > head.sequence.saturating_add(1) {
            return Err(Error::invalid("from_sequence", "is beyond the chain head"));
        }
        let mut walk = Self::walk_chain(&chain, store, head, from, max_events).await?;
        if walk.broken.is_none() && walk.next_sequence.is_none() {
            walk.broken = Self::check_past_head(&chain, store, head).await?;
        }
        let mut report = ChainReport {
            checked: walk.checked,
            broken: walk.broken,
            head,
            next_sequence: walk.next_sequence,
            checkpoint_matched: false,
        };
        if let Some(checkpoint) = &options.checkpoint {
            match Self::check_checkpoint(&chain, store, head, checkpoint).await? {
                None => report.checkpoint_matched = true,
                Some(b) => {
                    if report
                        .broken
                        .as_ref()
                        .is_none_or(|w| b.sequence < w.sequence)
                    {
                        report.broken = Some(b);
                    }
                    report.next_sequence = None;
                }
            }
        }
        Ok(report)
    }

    /// Walks the chain from `from`, at most `max_events` events, up to the
    /// stored `head`; then compares the newest event with the head.
    async fn walk_chain(
        chain: &Chain<'_>,
        store: &dyn Store,
        head: ChainHead,
        from: u64,
        max_events: u32,
    ) -> Result<Walk> {
        let broken = |sequence, reason| Walk {
            checked: 0,
            broken: Some(ChainBreak { sequence, reason }),
            next_sequence: None,
        };
        let mut verifier = if from == 1 {
            ChainVerifier::default()
        } else {
            // Continuing: the event before `from` anchors the link; its own
            // hash is re-checked, its link was checked by the call before.
            match chain.at(store, from - 1).await? {
                None => return Ok(broken(from - 1, "event missing")),
                Some(prev) if prev.compute_hash() != prev.hash => {
                    return Ok(broken(from - 1, "event contents do not match its hash"));
                }
                Some(prev) => ChainVerifier::resume(from, prev.hash),
            }
        };
        let mut remaining = max_events;
        let mut after = from - 1;
        let mut reached_end = false;
        while remaining > 0 {
            let limit = remaining.min(VERIFY_BATCH);
            // Events appended after the head was read are left out.
            let batch: Vec<AuditEvent> = chain
                .after(store, after, limit)
                .await?
                .into_iter()
                .filter(|e| e.sequence <= head.sequence)
                .collect();
            for event in &batch {
                if let Err(b) = verifier.push(event) {
                    return Ok(Walk {
                        checked: verifier.checked(),
                        broken: Some(b),
                        next_sequence: None,
                    });
                }
            }
            remaining -= u32::try_from(batch.len()).unwrap_or(limit).min(limit);
            match batch.last() {
                Some(last) if batch.len() == limit as usize && last.sequence < head.sequence => {
                    after = last.sequence;
                }
                _ => {
                    reached_end = true;
                    break;
                }
            }
        }
        if !reached_end && verifier.expected_sequence() <= head.sequence {
            return Ok(Walk {
                checked: verifier.checked(),
                broken: None,
                next_sequence: Some(verifier.expected_sequence()),
            });
        }
        let checked = verifier.checked();
        let end = |reason| Walk {
            checked,
            broken: Some(ChainBreak {
                sequence: verifier.expected_sequence().min(head.sequence),
                reason,
            }),
            next_sequence: None,
        };
        if verifier.expected_sequence() <= head.sequence {
            // The newest events are gone: the stored head is further on.
            return Ok(end("event missing: the stored chain head is further on"));
        }
        if verifier.head() != head.hash {
            return Ok(end("the newest event does not match the stored chain head"));
        }
        Ok(Walk {
            checked,
            broken: None,
            next_sequence: None,
        })
    }

    /// Whether events are stored past the stored `head` (the head row was
    /// moved back over them): the first such sequence. An event appended
    /// since `head` was read moved the head with it in its transaction, so
    /// the head is read again before calling it a break.
    async fn check_past_head(
        chain: &Chain<'_>,
        store: &dyn Store,
        head: ChainHead,
    ) -> Result<Option<ChainBreak>> {
        let Some(past) = chain
            .after(store, head.sequence, 1)
            .await?
            .into_iter()
            .next()
        else {
            return Ok(None);
        };
        if chain.head(store).await?.sequence >= past.sequence {
            return Ok(None);
        }
        Ok(Some(ChainBreak {
            sequence: head.sequence + 1,
            reason: "events are stored past the stored chain head",
        }))
    }

    /// Whether the chain still holds `checkpoint`'s head event with its
    /// hash and contents, and the stored `head` is not behind it; if not,
    /// the first missing or altered sequence.
    async fn check_checkpoint(
        chain: &Chain<'_>,
        store: &dyn Store,
        head: ChainHead,
        checkpoint: &SignedCheckpoint,
    ) -> Result<Option<ChainBreak>> {
        let signed = &checkpoint.checkpoint;
        if signed.sequence == 0 {
            return Ok(None);
        }
        let behind = (head.sequence < signed.sequence).then(|| ChainBreak {
            sequence: head.sequence + 1,
            reason: "the stored chain head is behind the checkpoint",
        });
        match chain.at(store, signed.sequence).await? {
            Some(event) if event.hash == signed.hash && event.compute_hash() == event.hash => {
                Ok(behind)
            }
            Some(event) if event.hash == signed.hash => Ok(Some(ChainBreak {
                sequence: signed.sequence,
                reason: "event contents do not match its hash",
            })),
            Some(_) => Ok(Some(ChainBreak {
                sequence: signed.sequence,
                reason: "the event differs from the one the checkpoint signed",
            })),
            None => {
                let first_missing = chain
                    .last_up_to(store, signed.sequence)
                    .await?
                    .map_or(1, |e| e.sequence + 1);
                Ok(Some(ChainBreak {
                    sequence: first_missing,
                    reason: "event missing: the checkpoint signed a longer chain",
                }))
            }
        }
    }

    /// Records a failed authentication (a verified certificate whose
    /// identity is bound nowhere, or that names no identity) in the platform
    /// chain, coalescing repeats (see the module's promises). A failure to
    /// record is logged; the refusal stands either way.
    pub async fn record_failed_authentication(
        &self,
        identity: &str,
        peer: Option<&str>,
        request_id: &str,
        reason: &'static str,
    ) {
        let Some(failure) = self
            .failed_auth
            .admit(identity, peer, reason, Instant::now())
        else {
            return;
        };
        self.append_failed_authentication(failure, Some(request_id))
            .await;
    }

    /// Records the failures coalesced since each identity's last event,
    /// once its window has passed without a new event (so the last burst of
    /// an identity is counted too). Run every [`FAILED_AUTH_WINDOW`] by the
    /// server.
    pub async fn flush_failed_authentications(&self) {
        for failure in self.failed_auth.due(Instant::now()) {
            self.append_failed_authentication(failure, None).await;
        }
    }

    async fn append_failed_authentication(&self, failure: Failure, request_id: Option<&str>) {
        let mut draft = AuditDraft::new(
            Action::AuthenticationFailed,
            Outcome::Denied,
            failure.reason,
        );
        // The presented identity is the caller's text: stored without
        // control characters and bounded, like any free text.
        draft.actor = failure
            .identity
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .take(FAILED_AUTH_IDENTITY_CHARS)
            .collect();
        draft.peer = failure.peer;
        draft.request_id = request_id.map(str::to_owned);
        draft.detail = Some(format!("count={}", failure.count));
        match tokio::time::timeout(
            self.limits.audit_timeout,
            self.store.append_platform_audit(draft),
        )
        .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "could not record a failed authentication"),
            Err(_) => tracing::error!("recording a failed authentication timed out"),
        }
    }

    /// Platform events, newest first (platform operators).
    pub async fn query_platform_events(
        &self,
        caller: &Authenticated,
        filter: &AuditFilter,
        page: &PageRequest,
    ) -> Result<Page<AuditEvent>> {
        let scope = caller.platform_scope()?;
        self.store.query_platform_audit(&scope, filter, page).await
    }
}

/// What a bounded walk found.
struct Walk {
    checked: u64,
    broken: Option<ChainBreak>,
    next_sequence: Option<u64>,
}

/// Failed authentications seen recently, to coalesce them.
#[derive(Default)]
pub(crate) struct FailedAuthLog {
    inner: Mutex<FailedAuthState>,
}

#[derive(Default)]
struct FailedAuthState {
    identities: HashMap<String, Tracked>,
    /// The current one-second window and the events written in it.
    second: Option<Instant>,
    written: u32,
}

/// One identity's failures since its last event.
struct Tracked {
    /// When its last event was written.
    at: Instant,
    /// Failures since, not yet recorded.
    suppressed: u64,
    /// The latest failure's reason and peer.
    reason: &'static str,
    peer: Option<String>,
}

/// A platform event to write: the failures of one identity.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Failure {
    identity: String,
    peer: Option<String>,
    reason: &'static str,
    count: u64,
}

impl FailedAuthLog {
    /// Whether a failure of `identity` at `now` is to be written now: if so,
    /// the event (under the identity `*` once the overall rate or the
    /// tracking limit is reached) with the failures it stands for.
    fn admit(
        &self,
        identity: &str,
        peer: Option<&str>,
        reason: &'static str,
        now: Instant,
    ) -> Option<Failure> {
        let identity = truncated(identity, FAILED_AUTH_IDENTITY_CHARS);
        let mut state = self.inner.lock().ok()?;
        let state = &mut *state;
        if state
            .second
            .is_none_or(|s| now.duration_since(s) >= Duration::from_secs(1))
        {
            state.second = Some(now);
            state.written = 0;
        }
        if state.identities.len() >= FAILED_AUTH_TRACKED {
            state
                .identities
                .retain(|_, t| t.suppressed > 0 || now.duration_since(t.at) < FAILED_AUTH_WINDOW);
        }
        let mut key = identity;
        if state.written >= FAILED_AUTH_PER_SECOND
            || (state.identities.len() >= FAILED_AUTH_TRACKED
                && !state.identities.contains_key(identity))
        {
            key = "*";
        }
        let count = match state.identities.get_mut(key) {
            None => {
                state.identities.insert(
                    key.to_owned(),
                    Tracked {
                        at: now,
                        suppressed: 0,
                        reason,
                        peer: peer.map(str::to_owned),
                    },
                );
                1
            }
            Some(t) if now.duration_since(t.at) >= FAILED_AUTH_WINDOW => {
                let count = t.suppressed + 1;
                t.at = now;
                t.suppressed = 0;
                count
            }
            Some(t) => {
                t.suppressed += 1;
                t.reason = reason;
                t.peer = peer.map(str::to_owned);
                return None;
            }
        };
        state.written += 1;
        Some(Failure {
            identity: key.to_owned(),
            peer: peer.map(str::to_owned),
            reason,
            count,
        })
    }

    /// The coalesced failures whose window has passed, as events to write,
    /// within what is left of the current second's write limit; the rest
    /// are counted under `*`, written by a later flush. Forgets identities
    /// with nothing left to record.
    fn due(&self, now: Instant) -> Vec<Failure> {
        let Ok(mut state) = self.inner.lock() else {
            return Vec::new();
        };
        let state = &mut *state;
        if state
            .second
            .is_none_or(|s| now.duration_since(s) >= Duration::from_secs(1))
        {
            state.second = Some(now);
            state.written = 0;
        }
        let mut out = Vec::new();
        let mut over: Option<Tracked> = None;
        let written = &mut state.written;
        state.identities.retain(|identity, t| {
            if now.duration_since(t.at) < FAILED_AUTH_WINDOW {
                return true;
            }
            if t.suppressed > 0 {
                if *written < FAILED_AUTH_PER_SECOND {
                    *written += 1;
                    out.push(Failure {
                        identity: identity.clone(),
                        peer: t.peer.take(),
                        reason: t.reason,
                        count: t.suppressed,
                    });
                } else {
                    let o = over.get_or_insert(Tracked {
                        at: now,
                        suppressed: 0,
                        reason: t.reason,
                        peer: None,
                    });
                    o.suppressed += t.suppressed;
                    o.reason = t.reason;
                    o.peer = t.peer.take();
                }
            }
            false
        });
        if let Some(o) = over {
            match state.identities.get_mut("*") {
                Some(t) => {
                    t.suppressed += o.suppressed;
                    t.reason = o.reason;
                    t.peer = o.peer;
                }
                None => {
                    state.identities.insert("*".to_owned(), o);
                }
            }
        }
        out
    }
}

/// The first `chars` characters of `text`.
fn truncated(text: &str, chars: usize) -> &str {
    text.char_indices()
        .nth(chars)
        .map_or(text, |(i, _)| &text[..i])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail(log: &FailedAuthLog, identity: &str, at: Instant) -> Option<(String, u64)> {
        log.admit(identity, Some("127.0.0.1:1"), "UNKNOWN_IDENTITY", at)
            .map(|f| (f.identity, f.count))
    }

    #[test]
    fn repeated_failures_are_coalesced_and_counted() {
        let log = FailedAuthLog::default();
        let t0 = Instant::now();
        assert_eq!(fail(&log, "a", t0), Some(("a".into(), 1)));
        for i in 1..10 {
            assert_eq!(fail(&log, "a", t0 + Duration::from_millis(i * 10)), None);
        }
        assert_eq!(fail(&log, "b", t0), Some(("b".into(), 1)));
        assert_eq!(
            fail(&log, "a", t0 + FAILED_AUTH_WINDOW),
            Some(("a".into(), 10))
        );
    }

    #[test]
    fn the_last_burst_is_flushed_once_its_window_passed() {
        let log = FailedAuthLog::default();
        let t0 = Instant::now();
        assert!(fail(&log, "a", t0).is_some());
        assert!(fail(&log, "b", t0).is_some());
        for _ in 0..3 {
            assert_eq!(fail(&log, "a", t0), None);
        }
        assert!(log.due(t0).is_empty(), "the window has not passed");
        let due = log.due(t0 + FAILED_AUTH_WINDOW);
        assert_eq!(
            due.iter()
                .map(|f| (f.identity.as_str(), f.count))
                .collect::<Vec<_>>(),
            vec![("a", 3)],
            "only what was not recorded yet"
        );
        assert!(log.due(t0 + FAILED_AUTH_WINDOW * 2).is_empty());
        // Forgotten: the next failure is recorded at once.
        assert!(fail(&log, "a", t0 + FAILED_AUTH_WINDOW * 2).is_some());
    }

    #[test]
    fn identities_are_tracked_by_a_bounded_prefix() {
        let log = FailedAuthLog::default();
        let t0 = Instant::now();
        let base = "é".repeat(FAILED_AUTH_IDENTITY_CHARS);
        let (first, _) = fail(&log, &format!("{base}a"), t0).expect("recorded");
        assert_eq!(first.chars().count(), FAILED_AUTH_IDENTITY_CHARS);
        assert_eq!(first, base);
        // Another identity with the same prefix is the same tracked entry.
        assert_eq!(fail(&log, &format!("{base}b"), t0), None);
        let state = log.inner.lock().unwrap();
        assert!(
            state
                .identities
                .keys()
                .all(|k| k.chars().count() <= FAILED_AUTH_IDENTITY_CHARS)
        );
    }

    #[test]
    fn flushed_events_count_against_the_write_limit() {
        let log = FailedAuthLog::default();
        let t0 = Instant::now();
        let n = 2 * FAILED_AUTH_PER_SECOND as usize;
        // 20 identities in one second, 20 in the next: all written.
        for i in 0..n {
            let at = t0 + Duration::from_secs(if i < n / 2 { 0 } else { 1 });
            assert!(fail(&log, &format!("id{i}"), at).is_some());
        }
        // One more failure each, coalesced.
        for i in 0..n {
            assert_eq!(
                fail(&log, &format!("id{i}"), t0 + Duration::from_millis(2500)),
                None
            );
        }
        let flush_at = t0 + FAILED_AUTH_WINDOW + Duration::from_secs(1);
        let due = log.due(flush_at);
        assert_eq!(
            due.len(),
            FAILED_AUTH_PER_SECOND as usize,
            "one second's limit"
        );
        // The limit is spent for this second: a new identity goes to `*`.
        assert_eq!(fail(&log, "late", flush_at), None);
        assert!(log.due(flush_at).is_empty());
        // The rest were counted under `*` and are written later, nothing lost.
        let later = log.due(flush_at + FAILED_AUTH_WINDOW);
        assert_eq!(
            later
                .iter()
                .map(|f| (f.identity.as_str(), f.count))
                .collect::<Vec<_>>(),
            vec![("*", n as u64 / 2 + 1)]
        );
        let total: u64 = due.iter().chain(&later).map(|f| f.count).sum();
        assert_eq!(total, n as u64 + 1);
    }

    #[test]
    fn the_overall_rate_is_bounded() {
        let log = FailedAuthLog::default();
        let t0 = Instant::now();
        let written = (0..1000)
            .filter(|i| fail(&log, &format!("id{i}"), t0).is_some())
            .count();
        // FAILED_AUTH_PER_SECOND identities, then one event under `*`.
        assert_eq!(written, FAILED_AUTH_PER_SECOND as usize + 1);
    }
}
