//! Idempotent retries of mutating calls (the contract's `request_id`).
//!
//! A call that carries a request id claims the key (tenant, caller, call,
//! request id) before it acts ([`Engine::claim_retry`]): the store's
//! unique-keyed insert lets exactly one of concurrent calls with the same
//! key act. The claim holds a fingerprint of the request, an HMAC-SHA256
//! under a key derived from the root key (never the request, so a database
//! reader cannot test guesses of a value it carried). The call that acted
//! records its encoded response ([`Engine::complete_retry`]), or releases
//! the claim if it failed without acting ([`Engine::release_retry`]). A
//! later call with the key then gets, within the retention window
//! (`Limits::idempotency_retention`):
//!
//! - the same request: the recorded response, and nothing is written;
//! - a different request: FAILED_PRECONDITION naming `request_id`;
//! - while the first call is still running: it waits up to
//!   [`IN_PROGRESS_WAIT`] for the outcome, then is told the call is in
//!   progress (the server answers ABORTED: retry);
//! - a claim older than [`OUTCOME_UNKNOWN_AFTER`] that recorded nothing
//!   (the server stopped between the mutation's commit and the record of
//!   its response, or the first call failed with its outcome unknown):
//!   FAILED_PRECONDITION saying the outcome is unknown. It never acts a
//!   second time.
//!
//! The response is recorded after the mutation commits, in its own
//! transaction (not in the mutation's commit): that gap is the window in
//! which a crash leaves an outcome unknown, as above.

use std::time::Duration;

use strongroom_core::idempotency::{Claim, RequestKey};
use strongroom_core::scope::{Authenticated, SystemScope};
use strongroom_core::time::Timestamp;
use strongroom_core::{Error, Result};

use crate::Engine;

/// Longest request id (see `common.proto`).
pub const MAX_REQUEST_ID_CHARS: usize = 128;

/// How long a retry waits for a concurrent first call with its key to
/// finish before it is told the call is in progress.
pub const IN_PROGRESS_WAIT: Duration = Duration::from_secs(2);

/// How often a waiting retry looks again.
const POLL: Duration = Duration::from_millis(25);

/// A claim older than this that recorded no response belongs to a call
/// that will not record one (every call ends well within it).
pub const OUTCOME_UNKNOWN_AFTER: Duration = Duration::from_secs(60);

/// What a call with a request id does.
#[derive(Debug)]
pub enum Retry {
    /// Act, then [`Engine::complete_retry`] or [`Engine::release_retry`].
    Act(HeldClaim),
    /// Answer the first call's recorded response, and do nothing else.
    Replay(Vec<u8>),
    /// A call with the same key and request is still running: retry
    /// later.
    InProgress,
}

/// A claim this call holds on its key.
#[derive(Debug)]
pub struct HeldClaim {
    key: RequestKey,
    claimed_at: Timestamp,
}

impl Engine {
    /// Claims `request_id` of `caller`'s call `call`, whose request (in
    /// a deterministic encoding, the request id left out) is `request`;
    /// `None` when `request_id` is empty (no deduplication). See the
    /// module documentation.
    pub async fn claim_retry(
        &self,
        caller: &Authenticated,
        call: &str,
        request_id: &str,
        request: &[u8],
    ) -> Result<Option<Retry>> {
        if request_id.is_empty() {
            return Ok(None);
        }
        if request_id.chars().count() > MAX_REQUEST_ID_CHARS {
            return Err(Error::invalid(
                "request_id",
                "must be at most 128 characters",
            ));
        }
        if request_id.chars().any(char::is_control) {
            return Err(Error::invalid(
                "request_id",
                "must not contain control characters",
            ));
        }
        let key = RequestKey {
            tenant: caller.tenant().map(|t| t.id),
            principal: match caller.principal() {
                Some(p) => p.id.to_string(),
                None => caller.identity().to_owned(),
            },
            call: call.to_owned(),
            request_id: request_id.to_owned(),
        };
        let fingerprint = self.keyring.fingerprint(&[call.as_bytes(), request])?;
        let waited_since = tokio::time::Instant::now();
        loop {
            let now = self.now();
            let expires_at = now.plus(self.limits.idempotency_retention);
            let record = match self
                .store
                .claim_request(&key, &fingerprint, now, expires_at)
                .await?
            {
                Claim::Claimed => {
                    return Ok(Some(Retry::Act(HeldClaim {
                        key,
                        claimed_at: now,
                    })));
                }
                Claim::Existing(record) => record,
            };
            if !strongroom_crypto::constant_time_eq(&record.fingerprint, &fingerprint) {
                return Err(Error::precondition(
                    "request_id: already used for a different request \
                     (within the retention window); use a new request_id",
                ));
            }
            if let Some(response) = record.response {
                return Ok(Some(Retry::Replay(response)));
            }
            if now.minus(OUTCOME_UNKNOWN_AFTER) > record.claimed_at {
                return Err(Error::precondition(
                    "request_id: the first call with this request_id ended \
                     without recording its outcome; check whether it took \
                     effect, then use a new request_id",
                ));
            }
            if waited_since.elapsed() >= IN_PROGRESS_WAIT {
                return Ok(Some(Retry::InProgress));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Records `response` (the call's encoded response, which must carry
    /// no secret material) as the outcome of `claim`. A failure is logged:
    /// the call acted, and its answer stands; a retry then finds the
    /// outcome unknown.
    pub async fn complete_retry(&self, claim: HeldClaim, response: &[u8]) {
        match self
            .store
            .complete_request(&claim.key, claim.claimed_at, response)
            .await
        {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                call = %claim.key.call,
                "an idempotency claim was gone when its response was recorded"
            ),
            Err(e) => tracing::error!(
                call = %claim.key.call,
                error = %e,
                "could not record a call's response for retries"
            ),
        }
    }

    /// Releases `claim`: its call failed without acting, so a retry may
    /// act. A failure is logged (a retry then finds the outcome unknown).
    pub async fn release_retry(&self, claim: HeldClaim) {
        if let Err(e) = self
            .store
            .release_request(&claim.key, claim.claimed_at)
            .await
        {
            tracing::error!(
                call = %claim.key.call,
                error = %e,
                "could not release an idempotency claim"
            );
        }
    }

    /// Purges the idempotency records whose retention window has passed
    /// (every tenant's); how many. Run by the server's sweeper.
    pub async fn purge_retries(&self, _system: &SystemScope) -> Result<u64> {
        self.store.purge_requests(self.now()).await
    }
}
