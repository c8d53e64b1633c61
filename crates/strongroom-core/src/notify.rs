//! The webhook notifier's delivery log: a notice to send, written in the
//! same transaction as what it is about, and what became of its attempts;
//! the sender's store port ([`NotificationStore`]).

use serde::{Deserialize, Serialize};

use crate::audit::AuditDraft;
use crate::error::Result;
use crate::ids::{DeliveryId, TenantId};
use crate::tenant::{Tenant, WrappedKekRecord};
use crate::time::Timestamp;

/// What one attempt at a delivery came to, as its audit event records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryResult {
    /// The receiver answered 2xx.
    Delivered,
    /// The attempt failed; another is due after the backoff.
    Failed,
    /// The attempt failed and no other will be made.
    GivenUp,
}

/// Why an attempt at a delivery failed, classified (never the receiver's
/// body, never the URL's path or query).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryFailure {
    /// The receiver answered with a status other than 2xx (a redirect
    /// included: none is followed).
    Status,
    /// Refused before connecting: not an https URL, or an internal
    /// address the relay's policy does not allow.
    Refused,
    /// The receiver's name did not resolve.
    Unresolved,
    /// No connection could be opened.
    Unreachable,
    /// The TLS handshake failed (an untrusted certificate).
    Tls,
    /// No answer within the notifier's timeout.
    Timeout,
    /// The connection failed before an answer.
    Connection,
    /// Not posted: the tenant is not active, has no notifier, its signing
    /// secret could not be opened, or the stored notice is not JSON.
    NotSent,
}

impl DeliveryFailure {
    /// The stable text form, as in the audit detail.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::Refused => "refused",
            Self::Unresolved => "unresolved",
            Self::Unreachable => "unreachable",
            Self::Tls => "tls",
            Self::Timeout => "timeout",
            Self::Connection => "connection",
            Self::NotSent => "not_sent",
        }
    }
}

/// A delivery to enqueue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    /// Its id.
    pub id: DeliveryId,
    /// The event it tells of (`access_request.filed`).
    pub event: String,
    /// The notice's data as JSON: never a value.
    pub payload: String,
    /// When it was enqueued; its first attempt is due then.
    pub created_at: Timestamp,
}

/// A delivery as logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Its id.
    pub id: DeliveryId,
    /// The event it tells of.
    pub event: String,
    /// The notice's data as JSON.
    pub payload: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// The HTTP status of the last attempt, if it got one.
    pub last_status: Option<u16>,
    /// Why the last attempt failed (empty if it did not): a status or a
    /// connection error, never the receiver's body.
    pub last_error: String,
    /// When the next attempt is due; `None` once delivered or given up.
    pub next_attempt_at: Option<Timestamp>,
    /// When it was delivered (a 2xx answer).
    pub delivered_at: Option<Timestamp>,
    /// When it was enqueued.
    pub created_at: Timestamp,
}

/// What one attempt at a delivery came to, as the sender records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryAttempt {
    /// The delivery.
    pub id: DeliveryId,
    /// The attempt's number, as its claim counted it (from 1): the record
    /// is kept only if no later claim counted another since.
    pub attempt: u32,
    /// The receiver's HTTP status, if it answered.
    pub status: Option<u16>,
    /// Why it failed (empty if delivered): a status or a connection error,
    /// never the receiver's body.
    pub error: String,
    /// When the next attempt is due; `None` once delivered or given up.
    pub next_attempt_at: Option<Timestamp>,
    /// When it was delivered (a 2xx answer).
    pub delivered_at: Option<Timestamp>,
}

/// The notifier sender's part of the store: which tenants have deliveries
/// due, claiming a tenant's due deliveries for one attempt each, and
/// recording what the attempts came to. Only the server's own background
/// sender calls it (the engine's `start_notifier_turns`, which takes a
/// `SystemScope`): no caller reaches it, so it takes tenant ids, and works
/// in transactions bound to that tenant.
#[async_trait::async_trait]
pub trait NotificationStore: Send + Sync {
    /// Up to `limit` tenants with deliveries due at `now`, the one whose
    /// oldest due delivery is oldest first.
    async fn due_notification_tenants(&self, now: Timestamp, limit: u32) -> Result<Vec<TenantId>>;

    /// Claims up to `limit` of `tenant`'s deliveries due at `now`, oldest
    /// due first, in one committed step: each one's attempt is counted and
    /// its next attempt moved to `hold_until`, so no other server claims it
    /// while this one sends (on Postgres, rows another server is claiming
    /// are skipped, not waited for); a sender that dies mid-attempt leaves
    /// it due again at `hold_until`. Returns the claimed deliveries with
    /// `attempts` the number of this attempt.
    async fn claim_notification_deliveries(
        &self,
        tenant: TenantId,
        now: Timestamp,
        hold_until: Timestamp,
        limit: u32,
    ) -> Result<Vec<Delivery>>;

    /// Records what `attempt` came to and links `event` (its
    /// `notification.delivery` audit event) into the tenant's chain in the
    /// same commit; `false` (nothing written, no event) if the delivery was
    /// claimed again since, or was delivered.
    async fn record_notification_attempt(
        &self,
        tenant: TenantId,
        attempt: &DeliveryAttempt,
        event: AuditDraft,
    ) -> Result<bool>;

    /// `tenant` and its wrapped KEKs, for the sender to open the tenant's
    /// signing secret.
    async fn notifier_tenant(&self, tenant: TenantId) -> Result<(Tenant, Vec<WrappedKekRecord>)>;
}
