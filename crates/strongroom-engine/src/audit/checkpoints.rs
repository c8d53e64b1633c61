//! Signed checkpoints of chain heads.
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
//!   and appends an alert to the platform chain.

use std::collections::HashMap;

use std::sync::Arc;

use strongroom_core::audit::{Action, AuditDetail, AuditDraft, ChainHead, Outcome};
use strongroom_core::ids::TenantId;
use strongroom_core::policy::Reason;
use strongroom_core::principal::Role;
use strongroom_core::scope::{Authenticated, SystemScope};
use strongroom_core::{Error, Result};
use strongroom_crypto::{ChainRef, SignedCheckpoint, SigningKey};

use crate::ports::CheckpointSink;
use crate::{CallContext, Engine};

use super::ChainTarget;

/// Why a head is not signed: it does not extend the last signed one.
const NOT_EXTENDING: &str = "the audit chain no longer extends the last checkpoint";

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
            .get_or_try_init(|| async { self.keyring.checkpoint_signing_key().map(Arc::new) })
            .await?;
        Ok(Arc::clone(key))
    }

    /// Records `checkpoint` as the last head signed for its chain (start-up,
    /// from the checkpoint file, by the checkpoint task), if its signature
    /// verifies with this server's key. Returns whether it was taken.
    pub async fn seed_signed_head(
        &self,
        _system: &SystemScope,
        checkpoint: &SignedCheckpoint,
    ) -> Result<bool> {
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
    async fn sign_head(&self, chain: ChainRef, head: ChainHead) -> Result<SignedCheckpoint> {
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
        let signed = key.sign(chain, head.sequence, head.hash, self.now().as_micros());
        state.last.insert(chain, head);
        state.refused.remove(&chain);
        Ok(signed)
    }

    /// The stored head of `chain`.
    pub(crate) async fn current_head(&self, chain: ChainRef) -> Result<ChainHead> {
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
    pub(crate) async fn extension_problem(
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
    pub(crate) async fn head_problem(
        &self,
        chain: ChainRef,
        head: ChainHead,
    ) -> Result<Option<&'static str>> {
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
    pub(crate) async fn alert_checkpoint_refused(
        &self,
        chain: ChainRef,
        head: ChainHead,
        last: Option<ChainHead>,
        problem: &str,
    ) {
        let mut draft = AuditDraft::new_at(
            Action::Other,
            Outcome::Error,
            Reason::CheckpointRefused.as_str(),
            self.now(),
        );
        draft.actor = SystemScope::ACTOR.to_owned();
        draft.detail = Some(AuditDetail::CheckpointRefused {
            tenant: tenant_of(chain),
            head_sequence: head.sequence,
            last_signed_sequence: last.map(|l| l.sequence),
            problem: problem.to_owned(),
        });
        self.record_platform(draft, "a refused checkpoint").await;
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
    /// last one signed (see the module's promises).
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
        self.sign_head(chain, head).await
    }

    /// The stored head of every chain, each tenant's and the platform's, as
    /// (chain, head) pairs: for the scheduled checkpoint task, which reads
    /// them without a caller.
    async fn chain_heads(&self, _system: &SystemScope) -> Result<Vec<(ChainRef, ChainHead)>> {
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

    /// Signs the head of every chain that moved since `schedule` last kept
    /// it and hands the checkpoints to `sink`, for the scheduled checkpoint
    /// task. A head that does not extend its chain's last signed one is
    /// refused (an error logged and an alert appended to the platform
    /// chain, once per refused head); the other chains are still signed.
    /// Returns how many were kept.
    pub async fn checkpoint_moved_chains(
        &self,
        system: &SystemScope,
        schedule: &mut CheckpointSchedule,
        sink: &mut impl CheckpointSink,
    ) -> Result<usize> {
        let mut signed = Vec::new();
        for (chain, head) in self.chain_heads(system).await? {
            if head.sequence == 0 || schedule.kept.get(&chain) == Some(&head) {
                continue;
            }
            if let Ok(checkpoint) = self.sign_head(chain, head).await {
                signed.push(checkpoint);
            }
        }
        if signed.is_empty() {
            return Ok(0);
        }
        sink.keep(&signed).await?;
        // The heads signed (read again if another call signed a newer one
        // meanwhile).
        schedule.kept.extend(signed.iter().map(|s| {
            let c = &s.checkpoint;
            (
                c.chain,
                ChainHead {
                    sequence: c.sequence,
                    hash: c.hash,
                },
            )
        }));
        Ok(signed.len())
    }
}

/// What the scheduled checkpoints have kept: the head last handed to the
/// sink per chain, so a chain that did not move is not signed again.
#[derive(Debug, Default)]
pub struct CheckpointSchedule {
    kept: HashMap<ChainRef, ChainHead>,
}
