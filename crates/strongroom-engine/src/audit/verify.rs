//! Chain verification: against the stored head and against a checkpoint
//! kept outside the database.
//!
//! Promises:
//! - a verification reads at most `max_events` events (plus two lookups),
//!   whatever the chain's length; a whole chain is verified by continuing
//!   from `next_sequence`;
//! - a checkpoint whose signature does not verify with this deployment's key
//!   is refused (INVALID_ARGUMENT), never trusted.

use strongroom_core::audit::{Action, AuditEvent, ChainBreak, ChainHead, ChainVerifier};
use strongroom_core::page::PageRequest;
use strongroom_core::principal::Role;
use strongroom_core::scope::{Authenticated, PlatformScope, TenantScope};
use strongroom_core::store::AuditFilter;
use strongroom_core::store::Store;
use strongroom_core::{Error, Result};
use strongroom_crypto::{ChainRef, SignedCheckpoint};

use crate::{CallContext, Engine};

use super::{ChainReport, ChainTarget};

/// Events a verification checks when the caller names no bound.
pub const DEFAULT_VERIFY_EVENTS: u32 = 10_000;
/// Most events one verification call checks.
pub const MAX_VERIFY_EVENTS: u32 = 100_000;
/// Events read per store round trip while verifying.
const VERIFY_BATCH: u32 = 1_000;

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

impl Engine {
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
}

/// What a bounded walk found.
struct Walk {
    checked: u64,
    broken: Option<ChainBreak>,
    next_sequence: Option<u64>,
}
