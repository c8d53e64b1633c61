//! Ports: what the engine needs from the world outside it, as traits the
//! server implements with its adapters, so the engine stays free of files,
//! sockets, gRPC and SQL.
//!
//! The store ([`strongroom_core::store::Store`]) and the clock
//! ([`strongroom_core::time::Clock`]) are ports of the core. The engine's
//! own are here. Each is named for what the engine asks of it, speaks in
//! domain types, reports failure as a [`strongroom_core::Error`], and is
//! driven by an engine operation that decides what to hand it (the engine
//! never learns where it goes). The notifier's webhooks go out through
//! [`WebhookPoster`]; the relay's upstream is to follow the same pattern.

use std::future::Future;

use strongroom_core::Result;
use strongroom_core::ids::{DeliveryId, TenantId};
use strongroom_crypto::SignedCheckpoint;

/// Where signed checkpoints are kept outside the database, so a database
/// owner cannot rewrite a chain without it showing (the server: appended to
/// the checkpoint file, then fsynced, and logged).
pub trait CheckpointSink: Send {
    /// Keeps `checkpoints` durably before returning `Ok`; on an error none
    /// of them counts as kept (they are handed over again next time).
    fn keep(&mut self, checkpoints: &[SignedCheckpoint])
    -> impl Future<Output = Result<()>> + Send;
}

/// One signed webhook delivery to post: everything the HTTP request
/// carries, decided by the engine.
#[derive(Clone, Copy)]
pub struct WebhookPost<'a> {
    /// The tenant whose notifier it is.
    pub tenant: TenantId,
    /// Its name (what a tenant-scoped `relay.allow_internal` entry names).
    pub tenant_name: &'a str,
    /// The delivery (for log lines).
    pub delivery: DeliveryId,
    /// The tenant's notifier URL (`https://` only).
    pub url: &'a str,
    /// The JSON body, exactly as signed.
    pub body: &'a [u8],
    /// The headers to send with it, besides the content type: the
    /// timestamp, the signature, the delivery id and the event.
    pub headers: &'a [(&'static str, String)],
}

impl std::fmt::Debug for WebhookPost<'_> {
    /// Without the body or the headers (the signature).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookPost")
            .field("tenant", &self.tenant)
            .field("delivery", &self.delivery)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// What posting a delivery came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookOutcome {
    /// The receiver answered 2xx.
    Delivered {
        /// Its status.
        status: u16,
    },
    /// The receiver answered anything else (a redirect included: none is
    /// followed).
    Answered {
        /// Its status.
        status: u16,
    },
    /// No answer: refused before connecting (an internal address, not
    /// HTTPS), unreachable, an untrusted certificate, a timeout. `reason`
    /// is short and the poster's own words: never the receiver's body,
    /// never the signature.
    Failed {
        /// Why.
        reason: String,
        /// The reason's class, as the attempt's audit event records it.
        class: strongroom_core::notify::DeliveryFailure,
    },
}

/// Posts webhook deliveries (the server: over HTTPS only, to an address it
/// resolved and checked against the internal-address policy, verifying the
/// receiver's certificate, within a bounded time, following no redirect,
/// reading a bounded part of the answer and keeping only its status).
pub trait WebhookPoster: Send + Sync {
    /// Posts `post` once.
    fn post(&self, post: WebhookPost<'_>) -> impl Future<Output = WebhookOutcome> + Send;
}

/// How a connection test of a `db_connection` ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseTestOutcome {
    /// Connected and authenticated; the server's version, as it reports
    /// it.
    Connected {
        /// `server_version`, e.g. `15.8`.
        server_version: String,
    },
    /// It did not work, for this reason.
    Failed(DatabaseFailure),
}

/// Why a connection test failed, classified; never a value, never the
/// server's own message (it may echo what it was sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseFailure {
    /// No connection: not resolved, refused, or no answer within the time.
    Unreachable,
    /// The stored TLS mode could not be satisfied.
    Tls,
    /// The server refused the user name or password.
    Authentication,
    /// Authenticated, but the database does not exist.
    DatabaseMissing,
    /// The destination is an internal address the server's policy does not
    /// allow; nothing was sent.
    RefusedByPolicy,
    /// Anything else.
    Other,
}

impl DatabaseFailure {
    /// A short text for humans.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Unreachable => "unreachable",
            Self::Tls => "tls",
            Self::Authentication => "authentication failed",
            Self::DatabaseMissing => "database missing",
            Self::RefusedByPolicy => "refused by the internal-address policy",
            Self::Other => "other failure",
        }
    }
}

/// Connects to a PostgreSQL database the way a `db_connection` says, for
/// `TestCredential` (the server: sqlx, its destination checked by the
/// relay's internal-address policy first). Gets the values only for the
/// call; must not log them.
pub trait DatabaseProbe: Send + Sync {
    /// Connects to `target` for the tenant named `tenant` (the allow-list
    /// may be scoped by tenant), within `timeout` in all, and closes again.
    fn connect<'a>(
        &'a self,
        tenant: &'a str,
        target: &'a strongroom_core::value::DbConnection,
        timeout: std::time::Duration,
    ) -> std::pin::Pin<Box<dyn Future<Output = DatabaseTestOutcome> + Send + 'a>>;
}
