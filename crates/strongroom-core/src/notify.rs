//! The webhook notifier's delivery log: a notice to send, written in the
//! same transaction as what it is about, and what became of its attempts.

use crate::ids::DeliveryId;
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
