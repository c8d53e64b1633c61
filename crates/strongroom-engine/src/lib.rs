//! The strongroom engine: every operation strongroom offers, independent of
//! gRPC and SQL. The server's handlers parse requests into domain types and
//! drive the one application type, [`Engine`]; each operation is authorized
//! (default deny), encrypted or decrypted, stored and audited here.
//!
//! One file per concern, each adding its own `impl Engine` block: tenants,
//! principals (with identity bindings and namespaces), environments,
//! credentials (reveals and rotations apart), grants and audit; and the
//! shared parts they use: authentication, authorization, the audit writer,
//! the keyring and the caches with the changes that invalidate them. What
//! the engine needs from outside (the store, the clock, where checkpoints
//! are kept) are ports: traits the server implements (see [`ports`]).
//!
//! Promises kept in this crate:
//! - a value is decrypted only for the call that returns or uses it, and is
//!   never cached in plaintext (only unwrapped tenant KEKs are kept, in
//!   zeroizing memory); the one thing derived from values that is kept
//!   beyond a call is a tenant's leak-scanning automaton (see `scan.rs`),
//!   which reports positions and names, never values;
//! - every reveal, every denial and every mutation is audited; a reveal whose
//!   audit record is not durable within the configured time fails with
//!   UNAVAILABLE and returns nothing (fail-closed).

use std::sync::Arc;

use strongroom_core::scope::{Authenticator, SystemScope, SystemTask};
use strongroom_core::store::Store;
use strongroom_core::time::{Clock, Timestamp};
use strongroom_crypto::RootKey;

use crate::abuse::AbuseGuard;
use crate::cache::Caches;

pub mod abuse;
mod access_requests;
mod audit;
mod audit_log;
mod authentication;
mod authorization;
pub mod cache;
mod changes;
mod context;
mod credentials;
mod emergency;
mod environments;
mod export;
mod grants;
mod idempotency;
mod keyring;
mod leases;
pub mod notify;
pub mod ports;
mod principals;
mod root_rotation;
mod rotation;
mod scan;
mod scrubbing;
mod settings;
mod tenant_keys;
mod tenants;

pub use access_requests::{DECISION_POLL, Narrowing, NewAccessRequest};
pub use audit::{
    AuditFeed, AuditSummary, ChainReport, ChainTarget, CheckpointSchedule, CredentialActivity,
    DEFAULT_SUMMARY_TOP, DEFAULT_VERIFY_EVENTS, FAILED_AUTH_PER_SECOND, FAILED_AUTH_WINDOW,
    FEED_BATCH, FEED_POLL, LeaseUsage, MAX_SUMMARY_TOP, MAX_VERIFY_EVENTS, PrincipalActivity,
    SummaryQuery, VerifyOptions,
};
pub use context::{CallContext, new_request_id};
pub use credentials::CredentialTested;
pub use credentials::{
    Authorized, CredentialRef, Injection, InjectionDecision, InjectionInfo, InjectionOutcome,
    InjectionRef, InjectionRequest, InjectionUse, Lease, Material, NewCredential, NewValue,
    Refused, RevealOptions, Revealed, RevealedCredential, RevealedValue, UseChanges, UseEnded,
    UseKind, UseWatch, scrub_pairs,
};
pub use export::{
    DataCounts, ExportFile, ExportKdf, MIN_PASSPHRASE_CHARS, Phase, Progress, ProgressSink,
};
pub use grants::NewGrant;
pub use idempotency::{
    HeldClaim, IN_PROGRESS_WAIT, MAX_REQUEST_ID_CHARS, OUTCOME_UNKNOWN_AFTER, Retry,
};
pub use principals::PrincipalUpdate;
pub use root_rotation::{DEFAULT_KEY_HEARTBEAT, RootRotation};
pub use rotation::{OverviewStatus, RotationCounts, RotationOverview, RotationOverviewFilter};
pub use scan::{
    FindingSource, MAX_SCAN_TEXT_BYTES, MIN_SCAN_VALUE_BYTES, ScanFinding, ScanOptions, ScanReport,
};
pub use scrubbing::{MIN_SCRUBBED_LEN, Scrubbing};
pub use settings::{DEFAULT_IDEMPOTENCY_RETENTION, Limits};
pub use tenant_keys::{KeyTarget, KeyVersionStatus, TenantKeyStatus};
pub use tenants::NotifierChange;

/// The strongroom engine: the one application type every operation hangs on.
pub struct Engine {
    store: Arc<dyn Store>,
    /// The root key and the unwrapped tenant keys.
    keyring: Arc<keyring::Keyring>,
    limits: Limits,
    /// Where every operation takes the current time from.
    clock: Arc<dyn Clock>,
    authenticator: Authenticator,
    caches: Arc<Caches>,
    /// The checkpoint signing key, derived from the root key on first use.
    checkpoint_key: tokio::sync::OnceCell<Arc<strongroom_crypto::SigningKey>>,
    /// The last head signed per chain (checkpoints only extend it).
    signed_heads: audit::SignedHeads,
    /// Coalesces failed authentications before they reach the platform
    /// chain.
    failed_auth: audit::FailedAuthLog,
    abuse: Arc<AbuseGuard>,
    /// How often replicas report their root keys (a report older than
    /// three of these is a replica gone).
    key_heartbeat: std::time::Duration,
    /// Wakes the background re-wrapping of data keys (a tenant KEK was
    /// added).
    rewrap_wake: tokio::sync::Notify,
    /// This replica's id (random per start) and listening address, as its
    /// root-key reports name it.
    replica: (String, String),
    /// Least depth of a SPIFFE prefix namespace an operator may assign.
    min_namespace_depth: usize,
    /// Wakes the notifier's sender when this server enqueues a delivery.
    notifier_wake: tokio::sync::Notify,
    /// How `TestCredential` reaches a database, if the server gave one.
    database_probe: Option<Arc<dyn ports::DatabaseProbe>>,
    /// The exports and imports running (bounded, one export per tenant).
    transfers: export::Transfers,
}

impl Engine {
    /// An engine over `store`, unwrapping tenant keys with `root`, taking
    /// the current time from `clock` (the system's, `SystemClock`, in
    /// production).
    ///
    /// Must be called inside a Tokio runtime: it starts the task that drops
    /// cached state when the store announces a change.
    pub fn new(
        store: Arc<dyn Store>,
        root: Arc<RootKey>,
        limits: Limits,
        authenticator: Authenticator,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let caches = Arc::new(Caches::new(limits.cache_ttl, limits.credential_cache_ttl));
        let keyring = Arc::new(keyring::Keyring::new(root));
        changes::spawn_listener(
            &store,
            Arc::downgrade(&caches),
            Arc::downgrade(&keyring),
            SystemScope::for_task(SystemTask::ChangeListener),
        );
        let abuse = Arc::new(AbuseGuard::default());
        abuse::spawn_sweeper(
            Arc::downgrade(&abuse),
            Arc::clone(&store),
            limits.audit_timeout,
            Arc::clone(&clock),
        );
        Self {
            store,
            keyring,
            limits,
            clock,
            authenticator,
            caches,
            checkpoint_key: tokio::sync::OnceCell::new(),
            signed_heads: audit::SignedHeads::default(),
            failed_auth: audit::FailedAuthLog::default(),
            abuse,
            key_heartbeat: DEFAULT_KEY_HEARTBEAT,
            rewrap_wake: tokio::sync::Notify::new(),
            replica: (uuid::Uuid::new_v4().to_string(), String::new()),
            min_namespace_depth: strongroom_core::principal::DEFAULT_MIN_NAMESPACE_DEPTH,
            notifier_wake: tokio::sync::Notify::new(),
            database_probe: None,
            transfers: export::Transfers::default(),
        }
    }

    /// Adds the next root key of a rotation (`root_key.next_file`);
    /// `wrap_next`: the database's key check matches it (the rotation
    /// completed), so new KEKs are wrapped by it from the start.
    #[must_use]
    pub fn with_next_root_key(self, next: Arc<RootKey>, wrap_next: bool) -> Self {
        self.keyring.set_next(next, wrap_next);
        self
    }

    /// Uses the derived keys kept across root-key rotations.
    #[must_use]
    pub fn with_derived_keys(self, derived: strongroom_crypto::DerivedKeys) -> Self {
        self.keyring.set_derived(derived);
        self
    }

    /// Names this replica's listening address in its root-key reports.
    #[must_use]
    pub fn with_replica_addr(mut self, addr: String) -> Self {
        self.replica.1 = addr;
        self
    }

    /// Sets how often replicas report their root keys
    /// (`root_key.heartbeat_interval_ms`).
    #[must_use]
    pub fn with_key_heartbeat(mut self, every: std::time::Duration) -> Self {
        self.key_heartbeat = every;
        self
    }

    /// Sets the least number of path segments before the `*` of a SPIFFE
    /// prefix namespace operators may assign (`identity.min_namespace_depth`).
    #[must_use]
    pub fn with_min_namespace_depth(mut self, depth: usize) -> Self {
        self.min_namespace_depth = depth;
        self
    }

    /// Sets how `TestCredential` reaches PostgreSQL databases (without it,
    /// the call is UNIMPLEMENTED).
    #[must_use]
    pub fn with_database_probe(mut self, probe: Arc<dyn ports::DatabaseProbe>) -> Self {
        self.database_probe = Some(probe);
        self
    }

    /// The current time, as every operation of this engine sees it.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The abuse controls' state.
    pub(crate) fn abuse(&self) -> &AbuseGuard {
        &self.abuse
    }

    /// The authenticator (platform-operator patterns).
    pub fn authenticator(&self) -> &Authenticator {
        &self.authenticator
    }

    /// Hits and misses of the caches since start-up (see
    /// [`cache::CacheKind`]), for the server's metrics.
    pub fn cache_lookups(&self) -> cache::CacheCounts {
        self.caches.lookups()
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// How often replicas report their root keys.
    pub fn key_heartbeat(&self) -> std::time::Duration {
        self.key_heartbeat
    }

    /// The configured limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }
}
