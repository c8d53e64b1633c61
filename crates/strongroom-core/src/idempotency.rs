//! Idempotent retries: what the store keeps of a mutating call that carried
//! a client's `request_id`, so that a retry returns the first call's result
//! instead of acting again.
//!
//! A record is keyed by (tenant, principal, call, request id). It holds a
//! keyed hash of the request (never the request: a database reader cannot
//! test guesses of a value it carried) and, once the call succeeded, the
//! encoded response, which carries no secret material (the calls that opt
//! in answer with metadata only). A record is claimed before the call acts
//! (a unique-keyed insert: of two concurrent calls with the same key, one
//! acts), completed with the response when it succeeded, released when it
//! failed, and purged once its retention window has passed.

use async_trait::async_trait;

use crate::error::Result;
use crate::ids::TenantId;
use crate::time::Timestamp;

/// Whose call a record is: a call of one caller with one request id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestKey {
    /// The caller's tenant; `None` for platform operators' calls.
    pub tenant: Option<TenantId>,
    /// The caller: a principal's id, or a platform operator's identity.
    pub principal: String,
    /// The call (`service/method`).
    pub call: String,
    /// The client's request id (1 to 128 characters).
    pub request_id: String,
}

/// A stored record, as a claim finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// The keyed hash of the first call's request.
    pub fingerprint: Vec<u8>,
    /// When the first call claimed the key: identifies its claim.
    pub claimed_at: Timestamp,
    /// The first call's encoded response; `None` while it is in progress
    /// (or if it ended without recording its outcome).
    pub response: Option<Vec<u8>>,
}

/// The outcome of a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key was free: this call acts, then completes or releases it.
    Claimed,
    /// A call with this key was made before (and its record has not
    /// expired).
    Existing(RequestRecord),
}

/// The storage of idempotency records (see the module documentation).
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Claims `key` for a call whose request has `fingerprint`, at `now`,
    /// kept until `expires_at`; an expired record of the key is replaced.
    /// Of concurrent claims of one key, exactly one is `Claimed`.
    async fn claim_request(
        &self,
        key: &RequestKey,
        fingerprint: &[u8],
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<Claim>;

    /// The record of `key`, if one exists and has not expired at `now`.
    async fn get_request(&self, key: &RequestKey, now: Timestamp) -> Result<Option<RequestRecord>>;

    /// Records `response` for the claim of `key` made at `claimed_at`;
    /// whether that claim was still held.
    async fn complete_request(
        &self,
        key: &RequestKey,
        claimed_at: Timestamp,
        response: &[u8],
    ) -> Result<bool>;

    /// Releases the claim of `key` made at `claimed_at` (its call failed
    /// without acting), so that a retry may act; a completed record stays.
    async fn release_request(&self, key: &RequestKey, claimed_at: Timestamp) -> Result<()>;

    /// Deletes every record (of every tenant) expired at `now`; how many.
    async fn purge_requests(&self, now: Timestamp) -> Result<u64>;
}
