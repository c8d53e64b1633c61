//! The webhook notifier's delivery log: a notice to send, written in the
//! same transaction as what it is about, and what became of its attempts;
//! the sender's store port ([`NotificationStore`]).

use crate::error::Result;
use crate::ids::{DeliveryId, TenantId};
use crate::tenant::{Tenant, WrappedKekRecord};
use crate::time::Timestamp;

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

    /// Records what `attempt` came to; `false` (nothing written) if the
    /// delivery was claimed again since, or was delivered.
    async fn record_notification_attempt(
        &self,
        tenant: TenantId,
        attempt: &DeliveryAttempt,
    ) -> Result<bool>;

    /// `tenant` and its wrapped KEKs, for the sender to open the tenant's
    /// signing secret.
    async fn notifier_tenant(&self, tenant: TenantId) -> Result<(Tenant, Vec<WrappedKekRecord>)>;
}
