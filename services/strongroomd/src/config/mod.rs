//! Typed configuration, read once at start-up: a TOML file, then
//! `STRONGROOM_*` environment variables on top. Every problem is reported with
//! the key that caused it. No secret is ever read from the file: the root key
//! and passphrase come from the environment or from files named here.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use strongroom_core::principal::IdentityPattern;

pub use limits::Limits;
pub use notifier::NotifierConfig;
pub use relay::RelayConfig;
use source::{RawConfig, apply_env, read_file};

mod limits;
pub(crate) mod notifier;
mod relay;
mod source;
#[cfg(test)]
mod tests;

/// A configuration problem, naming the key.
#[derive(Debug, thiserror::Error)]
#[error("configuration key `{key}`: {message}")]
pub struct ConfigError {
    /// The offending key (`database.url`) or environment variable.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

fn bad(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.to_owned(),
        message: message.into(),
    }
}

/// Where the root key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootKeySource {
    /// `STRONGROOM_ROOT_KEY`: 32 bytes as hex or base64.
    Env,
    /// A file holding the key as hex, base64 or 32 raw bytes.
    File(PathBuf),
    /// A file holding a passphrase; the key is derived with Argon2id once at
    /// start-up (salt and parameters stored in the database).
    PassphraseFile(PathBuf),
    /// `STRONGROOM_ROOT_PASSPHRASE`, derived as above.
    PassphraseEnv,
}

/// Where the next root key of a rotation comes from (see
/// `docs/operations.md`, Rotating the root key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextRootKey {
    /// `STRONGROOM_NEXT_ROOT_KEY`: 32 bytes as hex or base64.
    Env,
    /// `root_key.next_file` (`STRONGROOM_NEXT_ROOT_KEY_FILE`): a key file.
    File(PathBuf),
}

/// Which database backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// Postgres at `url`, with a pool of `max_connections`. The role must be a
    /// member of `strongroom_app`, not a superuser (row-level security).
    Postgres {
        /// Connection URL.
        url: String,
        /// Pool size.
        max_connections: u32,
        /// Run migrations at start-up with this (privileged) URL.
        migrate_url: Option<String>,
        /// Where the change listener connects (default `url`): the
        /// database directly when `url` goes through a pooler in
        /// transaction mode, where LISTEN does not work.
        listen_url: Option<String>,
        /// Most pooled connections one tenant's calls hold at once, so one
        /// busy tenant cannot starve the others (at most the connections
        /// for calls less the reserve kept for quiet tenants: see
        /// [`strongroom_store::FairShare`]).
        tenant_max_connections: u32,
    },
    /// SQLite in the file at `path` (migrated at start-up).
    Sqlite {
        /// Database file.
        path: PathBuf,
    },
}

/// The connections of a Postgres pool of `max_connections` left for calls:
/// the change listener keeps one unless it connects to its own
/// `listen_url`.
pub fn call_connections(max_connections: u32, listen_url: Option<&str>) -> u32 {
    let listener = u32::from(listen_url.is_none());
    max_connections.saturating_sub(listener).max(1)
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object a line.
    Json,
    /// Human-readable.
    Text,
}

/// TLS material paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPaths {
    /// Server certificate chain, PEM.
    pub cert: PathBuf,
    /// Server private key, PEM.
    pub key: PathBuf,
    /// CA bundle that client certificates must chain to, PEM.
    pub client_ca: PathBuf,
    /// Certificate revocation lists for client certificates (PEM, one or
    /// more, or one DER CRL), re-read every `crl_reload`; none if unset.
    pub crl: Option<PathBuf>,
    /// How often the TLS files (server certificate and key, client CA
    /// bundle, CRLs) are checked for changes (`tls.crl_reload_ms`).
    pub crl_reload: Duration,
}

/// Signed checkpoints written on a schedule (see `checkpoint_task`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditConfig {
    /// How often the heads of the chains that moved are signed; `None`
    /// turns scheduled checkpoints off.
    pub checkpoint_interval: Option<Duration>,
    /// The append-only file each scheduled checkpoint is written to, one
    /// JSON line each; without it checkpoints are only logged.
    pub checkpoint_file: Option<PathBuf>,
}

/// Rules for the identity namespaces platform operators assign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityConfig {
    /// Least number of path segments before the `*` of a SPIFFE prefix
    /// namespace (`spiffe://td/ns/team-a/*` has 2). Applies to assignments
    /// and to the namespaces the namespaces migration derived.
    pub min_namespace_depth: usize,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            min_namespace_depth: strongroom_core::principal::DEFAULT_MIN_NAMESPACE_DEPTH,
        }
    }
}

/// OpenTelemetry export (off unless an endpoint is set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryConfig {
    /// The OTLP/gRPC collector to export call spans and per-call metrics
    /// to (`http://host:4317`); `None`: nothing is exported.
    pub otlp_endpoint: Option<String>,
    /// How often spans and metrics are sent.
    pub export_interval: Duration,
    /// How long one export may take.
    pub export_timeout: Duration,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            export_interval: Duration::from_secs(10),
            export_timeout: Duration::from_secs(10),
        }
    }
}

/// The operations listener (off unless `metrics.listen` is set): plain
/// HTTP serving `/livez`, `/readyz` and `/metrics`, never credential
/// traffic, so it needs no client certificate (see `ops`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Where it listens (`0.0.0.0:9090`); `None`: no such listener, and
    /// without an OTLP endpoint no metrics at all.
    pub listen: Option<SocketAddr>,
}

/// Interval of scheduled checkpoints when a file is configured without one.
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(300);

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on (port 0 picks a free port).
    pub listen: SocketAddr,
    /// TLS material.
    pub tls: TlsPaths,
    /// Database.
    pub database: Database,
    /// Root key source.
    pub root_key: RootKeySource,
    /// The next root key, held for a rotation (`root_key.next_file`).
    pub next_root_key: Option<NextRootKey>,
    /// How often this server reports the root keys it holds
    /// (`root_key.heartbeat_interval_ms`, default 5 s; a report older than
    /// three intervals is a replica gone).
    pub key_heartbeat: Duration,
    /// Identities allowed to create and manage tenants.
    pub platform_operators: Vec<IdentityPattern>,
    /// Limits.
    pub limits: Limits,
    /// Scheduled audit checkpoints.
    pub audit: AuditConfig,
    /// Identity namespace rules.
    pub identity: IdentityConfig,
    /// Log level filter (`info`, `strongroomd=debug`).
    pub log_level: String,
    /// Log format.
    pub log_format: LogFormat,
    /// OpenTelemetry export.
    pub telemetry: TelemetryConfig,
    /// The operations listener: probes and Prometheus metrics.
    pub metrics: MetricsConfig,
    /// The relay.
    pub relay: RelayConfig,
    /// The webhook notifier's sender.
    pub notifier: NotifierConfig,
}

/// Reads environment variables; a seam so tests need not touch the process
/// environment.
pub trait Env {
    /// The variable's value, if set and not empty.
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl Config {
    /// Loads `path` (if given) and applies environment overrides.
    pub fn load(path: Option<&Path>, env: &dyn Env) -> Result<Self, ConfigError> {
        let raw = read_file(path)?;
        Self::from_raw(raw, env)
    }

    fn from_raw(mut raw: RawConfig, env: &dyn Env) -> Result<Self, ConfigError> {
        apply_env(&mut raw, env)?;
        let Shared {
            database,
            platform_operators,
            identity,
            log_level,
            log_format,
        } = Shared::from_raw(&mut raw)?;

        let listen = raw
            .listen
            .as_deref()
            .unwrap_or("127.0.0.1:7443")
            .parse::<SocketAddr>()
            .map_err(|_| bad("listen", "must be an address like 0.0.0.0:7443"))?;

        let tls = TlsPaths {
            cert: raw
                .tls
                .cert
                .ok_or_else(|| bad("tls.cert", "is required (or STRONGROOM_TLS_CERT)"))?,
            key: raw
                .tls
                .key
                .ok_or_else(|| bad("tls.key", "is required (or STRONGROOM_TLS_KEY)"))?,
            client_ca: raw
                .tls
                .client_ca
                .ok_or_else(|| bad("tls.client_ca", "is required (or STRONGROOM_TLS_CLIENT_CA)"))?,
            crl: raw.tls.crl,
            crl_reload: Duration::from_millis(raw.tls.crl_reload_ms.unwrap_or(5000)),
        };
        if !(Duration::from_millis(100)..=Duration::from_secs(3600)).contains(&tls.crl_reload) {
            return Err(bad("tls.crl_reload_ms", "must be 100 ms to 1 hour"));
        }

        let root_key = match (
            env.var("STRONGROOM_ROOT_KEY").is_some(),
            raw.root_key.file,
            env.var("STRONGROOM_ROOT_PASSPHRASE").is_some(),
            raw.root_key.passphrase_file,
        ) {
            (true, None, false, None) => RootKeySource::Env,
            (false, Some(f), false, None) => RootKeySource::File(f),
            (false, None, true, None) => RootKeySource::PassphraseEnv,
            (false, None, false, Some(f)) => RootKeySource::PassphraseFile(f),
            (false, None, false, None) => {
                return Err(bad(
                    "root_key",
                    "no root key: set STRONGROOM_ROOT_KEY, root_key.file, root_key.passphrase_file or STRONGROOM_ROOT_PASSPHRASE",
                ));
            }
            _ => {
                return Err(bad(
                    "root_key",
                    "more than one root key source is set; choose exactly one",
                ));
            }
        };

        let next_root_key = match (
            env.var("STRONGROOM_NEXT_ROOT_KEY").is_some(),
            raw.root_key.next_file,
        ) {
            (false, None) => None,
            (true, None) => Some(NextRootKey::Env),
            (false, Some(f)) => Some(NextRootKey::File(f)),
            (true, Some(_)) => {
                return Err(bad(
                    "root_key.next_file",
                    "both it and STRONGROOM_NEXT_ROOT_KEY are set; choose one",
                ));
            }
        };
        let key_heartbeat =
            Duration::from_millis(raw.root_key.heartbeat_interval_ms.unwrap_or(5000));
        if !(Duration::from_millis(100)..=Duration::from_secs(60)).contains(&key_heartbeat) {
            return Err(bad(
                "root_key.heartbeat_interval_ms",
                "must be 100 ms to 60 s",
            ));
        }

        let d = Limits::default();
        let limits = Limits {
            max_message_bytes: raw.limits.max_message_bytes.unwrap_or(d.max_message_bytes),
            audit_timeout: raw
                .limits
                .audit_timeout_ms
                .map_or(d.audit_timeout, Duration::from_millis),
            request_timeout: raw
                .limits
                .request_timeout_ms
                .map_or(d.request_timeout, Duration::from_millis),
            default_lease_ttl: raw
                .limits
                .default_lease_ttl_secs
                .map_or(d.default_lease_ttl, Duration::from_secs),
            max_lease_ttl: raw
                .limits
                .max_lease_ttl_secs
                .map_or(d.max_lease_ttl, Duration::from_secs),
            lease_sweep_interval: raw
                .limits
                .lease_sweep_interval_ms
                .map_or(d.lease_sweep_interval, Duration::from_millis),
            rotation_monitor_interval: raw
                .limits
                .rotation_monitor_interval_ms
                .map_or(d.rotation_monitor_interval, Duration::from_millis),
            access_request_ttl: raw
                .limits
                .access_request_ttl_secs
                .map_or(d.access_request_ttl, Duration::from_secs),
            // Unset, the maximum is the default's (7 days) or the
            // server's TTL if that is longer.
            max_access_request_ttl: raw.limits.max_access_request_ttl_secs.map_or_else(
                || {
                    d.max_access_request_ttl.max(
                        raw.limits
                            .access_request_ttl_secs
                            .map_or(d.access_request_ttl, Duration::from_secs),
                    )
                },
                Duration::from_secs,
            ),
            idempotency_retention: raw
                .limits
                .idempotency_retention_secs
                .map_or(d.idempotency_retention, Duration::from_secs),
            max_connections: raw.limits.max_connections.unwrap_or(d.max_connections),
            max_connections_per_identity: raw
                .limits
                .max_connections_per_identity
                .unwrap_or(d.max_connections_per_identity),
            max_connections_per_ip: raw
                .limits
                .max_connections_per_ip
                .unwrap_or(d.max_connections_per_ip),
            max_handshakes: raw.limits.max_handshakes.unwrap_or(d.max_handshakes),
            handshake_timeout: raw
                .limits
                .handshake_timeout_ms
                .map_or(d.handshake_timeout, Duration::from_millis),
            idle_timeout: raw
                .limits
                .idle_timeout_ms
                .map_or(d.idle_timeout, Duration::from_millis),
            max_concurrent_streams: raw
                .limits
                .max_concurrent_streams
                .unwrap_or(d.max_concurrent_streams),
            max_calls_in_flight: raw
                .limits
                .max_calls_in_flight
                .unwrap_or(d.max_calls_in_flight),
            cache_ttl: raw.cache.ttl_ms.map_or(d.cache_ttl, Duration::from_millis),
            credential_cache_ttl: raw
                .cache
                .credential_ttl_ms
                .map_or(d.credential_cache_ttl, Duration::from_millis),
            scan_per_minute: raw.limits.scan_per_minute.unwrap_or(d.scan_per_minute),
            export_kdf_memory_kib: raw
                .limits
                .export_kdf_memory_kib
                .unwrap_or(d.export_kdf_memory_kib),
            export_kdf_passes: raw.limits.export_kdf_passes.unwrap_or(d.export_kdf_passes),
            database_unavailable_after: raw
                .database
                .unavailable_after_ms
                .map_or(d.database_unavailable_after, Duration::from_millis),
            statement_timeout: raw
                .database
                .statement_timeout_ms
                .map_or(d.statement_timeout, Duration::from_millis),
            lock_timeout: raw
                .database
                .lock_timeout_ms
                .map_or(d.lock_timeout, Duration::from_millis),
            shutdown_grace: raw
                .limits
                .shutdown_grace_ms
                .map_or(d.shutdown_grace, Duration::from_millis),
        };
        if !(1024..=4 * 1024 * 1024).contains(&limits.export_kdf_memory_kib) {
            return Err(bad(
                "limits.export_kdf_memory_kib",
                "must be 1024 to 4194304 (KiB)",
            ));
        }
        if !(1..=10).contains(&limits.export_kdf_passes) {
            return Err(bad("limits.export_kdf_passes", "must be 1 to 10"));
        }
        if limits.scan_per_minute > 1_000_000 {
            return Err(bad(
                "limits.scan_per_minute",
                "must be 0-1000000 (0: no limit)",
            ));
        }
        if !(1..=1_000_000).contains(&limits.max_connections) {
            return Err(bad("limits.max_connections", "must be 1-1000000"));
        }
        if !(1..=1_000_000).contains(&limits.max_connections_per_identity) {
            return Err(bad(
                "limits.max_connections_per_identity",
                "must be 1-1000000",
            ));
        }
        if limits.max_connections_per_ip > 1_000_000 {
            return Err(bad(
                "limits.max_connections_per_ip",
                "must be 0-1000000 (0: no cap)",
            ));
        }
        if !(1..=1_000_000).contains(&limits.max_handshakes) {
            return Err(bad("limits.max_handshakes", "must be 1-1000000"));
        }
        if !(Duration::from_millis(100)..=Duration::from_secs(60))
            .contains(&limits.handshake_timeout)
        {
            return Err(bad("limits.handshake_timeout_ms", "must be 100 ms to 60 s"));
        }
        if !(Duration::from_millis(100)..=Duration::from_secs(7 * 24 * 3600))
            .contains(&limits.idle_timeout)
        {
            return Err(bad("limits.idle_timeout_ms", "must be 100 ms to 7 days"));
        }
        if !(1..=65_536).contains(&limits.max_concurrent_streams) {
            return Err(bad("limits.max_concurrent_streams", "must be 1-65536"));
        }
        if !(1..=1_000_000).contains(&limits.max_calls_in_flight) {
            return Err(bad("limits.max_calls_in_flight", "must be 1-1000000"));
        }
        if limits.cache_ttl > Duration::from_secs(300) {
            return Err(bad(
                "cache.ttl_ms",
                "must be at most 300000 (5 minutes); 0 turns the caches off",
            ));
        }
        if limits.credential_cache_ttl > Duration::from_secs(300) {
            return Err(bad(
                "cache.credential_ttl_ms",
                "must be at most 300000 (5 minutes); 0 turns the credential cache off",
            ));
        }
        if !(1024..=64 * 1024 * 1024).contains(&limits.max_message_bytes) {
            return Err(bad("limits.max_message_bytes", "must be 1 KiB to 64 MiB"));
        }
        if limits.audit_timeout.is_zero() {
            return Err(bad("limits.audit_timeout_ms", "must be positive"));
        }
        let second_to_hour = Duration::from_millis(100)..=Duration::from_secs(3600);
        for (key, value) in [
            (
                "database.unavailable_after_ms",
                limits.database_unavailable_after,
            ),
            ("database.statement_timeout_ms", limits.statement_timeout),
            ("database.lock_timeout_ms", limits.lock_timeout),
            ("limits.shutdown_grace_ms", limits.shutdown_grace),
        ] {
            if !second_to_hour.contains(&value) {
                return Err(bad(key, "must be 100 ms to 1 hour"));
            }
        }
        if limits.default_lease_ttl > limits.max_lease_ttl {
            return Err(bad(
                "limits.default_lease_ttl_secs",
                "must not exceed limits.max_lease_ttl_secs",
            ));
        }
        if limits.default_lease_ttl.is_zero() {
            return Err(bad("limits.default_lease_ttl_secs", "must be positive"));
        }
        if !(Duration::from_millis(10)..=Duration::from_secs(3600))
            .contains(&limits.lease_sweep_interval)
        {
            return Err(bad(
                "limits.lease_sweep_interval_ms",
                "must be 10 ms to 1 hour",
            ));
        }
        if !(Duration::from_millis(10)..=Duration::from_secs(3600))
            .contains(&limits.rotation_monitor_interval)
        {
            return Err(bad(
                "limits.rotation_monitor_interval_ms",
                "must be 10 ms to 1 hour",
            ));
        }
        if !(Duration::from_secs(60)..=Duration::from_secs(30 * 24 * 3600))
            .contains(&limits.access_request_ttl)
        {
            return Err(bad(
                "limits.access_request_ttl_secs",
                "must be 60 seconds to 30 days",
            ));
        }
        if !(Duration::from_secs(60)..=Duration::from_secs(30 * 24 * 3600))
            .contains(&limits.max_access_request_ttl)
        {
            return Err(bad(
                "limits.max_access_request_ttl_secs",
                "must be 60 seconds to 30 days",
            ));
        }
        if limits.max_access_request_ttl < limits.access_request_ttl {
            return Err(bad(
                "limits.max_access_request_ttl_secs",
                "must be at least limits.access_request_ttl_secs",
            ));
        }
        if !(Duration::from_secs(60)..=Duration::from_secs(7 * 24 * 3600))
            .contains(&limits.idempotency_retention)
        {
            return Err(bad(
                "limits.idempotency_retention_secs",
                "must be 1 minute to 7 days",
            ));
        }

        if raw.audit.checkpoint_interval_secs == Some(0) {
            return Err(bad("audit.checkpoint_interval_secs", "must be positive"));
        }
        let audit = AuditConfig {
            checkpoint_interval: raw
                .audit
                .checkpoint_interval_secs
                .map(Duration::from_secs)
                .or_else(|| {
                    raw.audit
                        .checkpoint_file
                        .as_ref()
                        .map(|_| DEFAULT_CHECKPOINT_INTERVAL)
                }),
            checkpoint_file: raw.audit.checkpoint_file,
        };

        let telemetry = TelemetryConfig {
            otlp_endpoint: raw.telemetry.otlp_endpoint.filter(|e| !e.is_empty()),
            export_interval: raw.telemetry.otlp_export_interval_ms.map_or(
                TelemetryConfig::default().export_interval,
                Duration::from_millis,
            ),
            ..TelemetryConfig::default()
        };
        if let Some(endpoint) = &telemetry.otlp_endpoint
            && !(endpoint.starts_with("http://") && endpoint.len() > "http://".len())
        {
            return Err(bad(
                "telemetry.otlp_endpoint",
                "must be an http:// URL of an OTLP/gRPC collector (like http://127.0.0.1:4317)",
            ));
        }
        if !(Duration::from_millis(100)..=Duration::from_secs(600))
            .contains(&telemetry.export_interval)
        {
            return Err(bad(
                "telemetry.otlp_export_interval_ms",
                "must be 100 ms to 10 minutes",
            ));
        }

        let metrics = MetricsConfig {
            listen: raw
                .metrics
                .listen
                .as_deref()
                .filter(|l| !l.is_empty())
                .map(|l| {
                    l.parse::<SocketAddr>()
                        .map_err(|_| bad("metrics.listen", "must be an address like 0.0.0.0:9090"))
                })
                .transpose()?,
        };
        if let Some(ops) = metrics.listen
            && ops.port() != 0
            && ops.port() == listen.port()
            && (ops.ip() == listen.ip()
                || ops.ip().is_unspecified()
                || listen.ip().is_unspecified())
        {
            return Err(bad(
                "metrics.listen",
                "must not be the gRPC listener's address (`listen`)",
            ));
        }
        let relay = RelayConfig::from_raw(std::mem::take(&mut raw.relay))?;
        let notifier = NotifierConfig::from_raw(std::mem::take(&mut raw.notifier))?;

        Ok(Config {
            listen,
            tls,
            database,
            root_key,
            next_root_key,
            key_heartbeat,
            platform_operators,
            limits,
            audit,
            identity,
            log_level,
            log_format,
            telemetry,
            metrics,
            relay,
            notifier,
        })
    }
}

/// The part of the configuration every command needs: `migrate` reads only
/// this, so it runs with a database URL and no TLS files or root key.
#[derive(Debug, Clone)]
pub struct Shared {
    /// Database.
    pub database: Database,
    /// Identities allowed to create and manage tenants.
    pub platform_operators: Vec<IdentityPattern>,
    /// Identity namespace rules.
    pub identity: IdentityConfig,
    /// Log level filter.
    pub log_level: String,
    /// Log format.
    pub log_format: LogFormat,
}

impl Shared {
    /// Loads `path` (if given) with environment overrides, validating only
    /// the keys every command needs (database, operators, identity, log).
    pub fn load(path: Option<&Path>, env: &dyn Env) -> Result<Self, ConfigError> {
        let mut raw = read_file(path)?;
        apply_env(&mut raw, env)?;
        Self::from_raw(&mut raw)
    }

    fn from_raw(raw: &mut RawConfig) -> Result<Self, ConfigError> {
        let backend = raw
            .database
            .backend
            .as_deref()
            .unwrap_or(if raw.database.url.is_some() {
                "postgres"
            } else {
                "sqlite"
            });
        let database = match backend {
            "postgres" => {
                let url = raw.database.url.take().ok_or_else(|| {
                    bad(
                        "database.url",
                        "is required for the postgres backend (or STRONGROOM_DATABASE_URL)",
                    )
                })?;
                if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                    return Err(bad("database.url", "must start with postgres://"));
                }
                let max_connections = raw.database.max_connections.unwrap_or(32);
                if !(1..=1024).contains(&max_connections) {
                    return Err(bad("database.max_connections", "must be 1-1024"));
                }
                if let Some(u) = &raw.database.listen_url
                    && !(u.starts_with("postgres://") || u.starts_with("postgresql://"))
                {
                    return Err(bad("database.listen_url", "must start with postgres://"));
                }
                // By default one tenant may hold three quarters of the pool
                // (less the connection the change listener keeps): a single
                // busy tenant keeps most of it, and the rest stays free for
                // the others. All tenants' calls together leave the reserve
                // to quiet tenants, so no one tenant may have more.
                let tenant_max_connections = raw
                    .database
                    .tenant_max_connections
                    .unwrap_or((max_connections.saturating_sub(1) * 3 / 4).max(1));
                let for_calls =
                    call_connections(max_connections, raw.database.listen_url.as_deref());
                let most = for_calls - strongroom_store::pool_reserve(for_calls);
                if !(1..=most).contains(&tenant_max_connections) {
                    return Err(bad(
                        "database.tenant_max_connections",
                        format!(
                            "must be 1 to {most} (database.max_connections, less the change \
                             listener's connection unless database.listen_url is set, less the \
                             quarter of those kept for quiet tenants)"
                        ),
                    ));
                }
                Database::Postgres {
                    url,
                    max_connections,
                    migrate_url: raw.database.migrate_url.take(),
                    listen_url: raw.database.listen_url.take(),
                    tenant_max_connections,
                }
            }
            "sqlite" => Database::Sqlite {
                path: raw
                    .database
                    .sqlite_path
                    .take()
                    .unwrap_or_else(|| PathBuf::from("strongroom.db")),
            },
            _ => {
                return Err(bad(
                    "database.backend",
                    "must be \"postgres\" or \"sqlite\"",
                ));
            }
        };

        let platform_operators = raw
            .platform_operators
            .take()
            .unwrap_or_default()
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| {
                IdentityPattern::parse(s, "platform_operators")
                    .map_err(|e| bad("platform_operators", e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;

        let identity = IdentityConfig {
            min_namespace_depth: raw
                .identity
                .min_namespace_depth
                .unwrap_or(IdentityConfig::default().min_namespace_depth),
        };
        if !(1..=16).contains(&identity.min_namespace_depth) {
            return Err(bad("identity.min_namespace_depth", "must be 1-16"));
        }

        let log_format = match raw.log.format.as_deref().unwrap_or("json") {
            "json" => LogFormat::Json,
            "text" => LogFormat::Text,
            _ => return Err(bad("log.format", "must be \"json\" or \"text\"")),
        };

        Ok(Shared {
            database,
            platform_operators,
            identity,
            log_level: raw.log.level.clone().unwrap_or_else(|| "info".to_owned()),
            log_format,
        })
    }
}
