//! The limits that protect the server (`[limits]` and its `STRONGROOM_*`
//! overrides, read in `source.rs`): message size, timeouts, lease,
//! access-request and retry-record times, connection and concurrency
//! bounds, cache lifetimes, the scan rate, the export's key-derivation
//! costs, the database's timeouts; and their conversion into the engine's
//! limits.

use std::time::Duration;

/// Limits that protect the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted request message, in bytes; larger requests are
    /// refused with INVALID_ARGUMENT.
    pub max_message_bytes: usize,
    /// How long a reveal waits for its audit record to be durable before
    /// failing with UNAVAILABLE.
    pub audit_timeout: Duration,
    /// Time limit of one call.
    pub request_timeout: Duration,
    /// Lease TTL of a reveal that asks for none.
    pub default_lease_ttl: Duration,
    /// Longest lease TTL granted, and longest a lease can last, renewals
    /// included.
    pub max_lease_ttl: Duration,
    /// How often the lease sweeper looks for leases that ran out
    /// (`limits.lease_sweep_interval_ms`, default 10 s).
    pub lease_sweep_interval: Duration,
    /// How often the rotation monitor marks expired credentials and looks
    /// for reminders due (`limits.rotation_monitor_interval_ms`, default
    /// 60 s; 10 ms to 1 hour).
    pub rotation_monitor_interval: Duration,
    /// How long an access request waits for a decision before it expires
    /// (`limits.access_request_ttl_secs`, default 24 h), for tenants that
    /// set none of their own.
    pub access_request_ttl: Duration,
    /// The longest access request TTL a tenant may set
    /// (`limits.max_access_request_ttl_secs`, default 7 days or
    /// `limits.access_request_ttl_secs` if longer; 60 seconds to 30 days, at
    /// least `limits.access_request_ttl_secs`).
    pub max_access_request_ttl: Duration,
    /// How long a call's `request_id` is remembered for idempotent retries
    /// (`limits.idempotency_retention_secs`, default 24 h; 1 minute to 7
    /// days). Expired records are purged by the lease sweeper's loop.
    pub idempotency_retention: Duration,
    /// Open client connections that completed their mutual-TLS handshake;
    /// a connection beyond the cap is closed (as soon as it is accepted when
    /// the cap is already reached).
    pub max_connections: usize,
    /// Open connections of one client identity (the SPIFFE ID or common
    /// name of its certificate), so that one workload cannot take every
    /// slot; a connection beyond it is closed after its handshake.
    pub max_connections_per_identity: usize,
    /// Connections from one client address (an IPv6 client: its /64),
    /// counted from the moment they are accepted, handshakes included; a
    /// connection beyond it is closed as soon as it is accepted, before any
    /// TLS work. 0 turns the cap off.
    pub max_connections_per_ip: usize,
    /// TLS handshakes in progress, counted apart from `max_connections` so
    /// that connections which never complete a handshake cannot take the
    /// slots of authenticated clients; a connection beyond it is closed as
    /// soon as it is accepted.
    pub max_handshakes: usize,
    /// Time a new connection has to complete its TLS handshake.
    pub handshake_timeout: Duration,
    /// A connection with no call in progress and none started for this long
    /// is closed (HTTP/2 GOAWAY); keepalive pings are not calls. A
    /// connection on which a response has waited this long for the client
    /// to take its data is dropped.
    pub idle_timeout: Duration,
    /// Concurrent HTTP/2 streams (calls) per connection, advertised to the
    /// client in the server's SETTINGS.
    pub max_concurrent_streams: u32,
    /// Calls in flight server-wide; a call beyond it is refused at once
    /// (UNAVAILABLE) rather than queued.
    pub max_calls_in_flight: usize,
    /// How long cached callers, grants and credentials are trusted after
    /// they were read (`cache.ttl_ms`): the ceiling on how long a change
    /// made through another server can go unseen here if its change notice
    /// is lost.
    pub cache_ttl: Duration,
    /// How long cached credential metadata is trusted (`cache.
    /// credential_ttl_ms`). Every path that uses a cached credential is
    /// checked again where it commits (a reveal's audit record re-reads the
    /// credential's status and version; a rotation is a compare-and-set on
    /// the latest version), so this bound may be longer than `cache_ttl`
    /// without widening who may do what; a shorter one costs reveals a
    /// reload of each credential that often.
    pub credential_cache_ttl: Duration,
    /// ScanText calls a minute per principal (`limits.scan_per_minute`), in
    /// bursts of at most a sixth of it (1 to 10); 0 turns the limit off.
    pub scan_per_minute: u32,
    /// Argon2id memory of new export files' key, in KiB
    /// (`limits.export_kdf_memory_kib`, default 65536 = 64 MiB; 1024 to
    /// 4194304).
    pub export_kdf_memory_kib: u32,
    /// Argon2id passes of new export files' key (`limits.export_kdf_passes`,
    /// default 3; 1 to 10).
    pub export_kdf_passes: u32,
    /// Database outages (`database.unavailable_after_ms`): once the
    /// database has failed to answer for this long, calls that need it are
    /// answered UNAVAILABLE (those in flight included) and health turns
    /// NOT_SERVING; a pooled connection is waited for at most this long.
    pub database_unavailable_after: Duration,
    /// Postgres `statement_timeout` of the server's connections
    /// (`database.statement_timeout_ms`).
    pub statement_timeout: Duration,
    /// Postgres `lock_timeout` of the server's connections
    /// (`database.lock_timeout_ms`).
    pub lock_timeout: Duration,
    /// How long a draining server (SIGTERM) waits for its calls in flight
    /// before it exits anyway (`limits.shutdown_grace_ms`).
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: 1024 * 1024,
            audit_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(15),
            default_lease_ttl: Duration::from_secs(3600),
            max_lease_ttl: Duration::from_secs(24 * 3600),
            lease_sweep_interval: Duration::from_secs(10),
            rotation_monitor_interval: Duration::from_secs(60),
            access_request_ttl: Duration::from_secs(24 * 3600),
            max_access_request_ttl: Duration::from_secs(7 * 24 * 3600),
            idempotency_retention: strongroom_engine::DEFAULT_IDEMPOTENCY_RETENTION,
            max_connections: 4096,
            max_connections_per_identity: 64,
            max_connections_per_ip: 256,
            max_handshakes: 128,
            handshake_timeout: Duration::from_secs(3),
            idle_timeout: Duration::from_secs(600),
            max_concurrent_streams: 256,
            max_calls_in_flight: 4096,
            cache_ttl: strongroom_engine::cache::DEFAULT_TTL,
            credential_cache_ttl: strongroom_engine::cache::DEFAULT_CREDENTIAL_TTL,
            scan_per_minute: 60,
            export_kdf_memory_kib: 64 * 1024,
            export_kdf_passes: 3,
            database_unavailable_after: Duration::from_secs(2),
            statement_timeout: Duration::from_secs(5),
            lock_timeout: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(20),
        }
    }
}

impl Limits {
    /// The engine's share of the limits.
    pub fn engine(&self) -> strongroom_engine::Limits {
        strongroom_engine::Limits {
            audit_timeout: self.audit_timeout,
            default_lease_ttl: self.default_lease_ttl,
            max_lease_ttl: self.max_lease_ttl,
            access_request_ttl: self.access_request_ttl,
            max_access_request_ttl: self.max_access_request_ttl,
            cache_ttl: self.cache_ttl,
            credential_cache_ttl: self.credential_cache_ttl,
            scan_limit: strongroom_core::tenant::RateLimit {
                enabled: self.scan_per_minute > 0,
                per_minute: self.scan_per_minute.max(1),
                burst: (self.scan_per_minute / 6).clamp(1, 10),
            },
            idempotency_retention: self.idempotency_retention,
            export_kdf: strongroom_engine::ExportKdf {
                memory_kib: self.export_kdf_memory_kib,
                passes: self.export_kdf_passes,
            },
        }
    }
}
