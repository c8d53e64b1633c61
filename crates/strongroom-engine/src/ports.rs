//! Ports: what the engine needs from the world outside it, as traits the
//! server implements with its adapters, so the engine stays free of files,
//! sockets, gRPC and SQL.
//!
//! The store ([`strongroom_core::store::Store`]) and the clock
//! ([`strongroom_core::time::Clock`]) are ports of the core. The engine's
//! own are here. Each is named for what the engine asks of it, speaks in
//! domain types, reports failure as a [`strongroom_core::Error`], and is
//! driven by an engine operation that decides what to hand it (the engine
//! never learns where it goes). Outbound notifications (webhooks) and the
//! relay's upstream are to follow the same pattern.

use std::future::Future;

use strongroom_core::Result;
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
