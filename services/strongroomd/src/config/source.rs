//! Where configuration comes from: the TOML file as written (unknown keys
//! refused) and the `STRONGROOM_*` variables laid over it, one per key.

use serde::Deserialize;
use std::path::{Path, PathBuf};

use super::{ConfigError, Env, bad};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) listen: Option<String>,
    pub(super) platform_operators: Option<Vec<String>>,
    #[serde(default)]
    pub(super) tls: RawTls,
    #[serde(default)]
    pub(super) database: RawDatabase,
    #[serde(default)]
    pub(super) root_key: RawRootKey,
    #[serde(default)]
    pub(super) limits: RawLimits,
    #[serde(default)]
    pub(super) audit: RawAudit,
    #[serde(default)]
    pub(super) identity: RawIdentity,
    #[serde(default)]
    pub(super) log: RawLog,
    #[serde(default)]
    pub(super) cache: RawCache,
    #[serde(default)]
    pub(super) telemetry: RawTelemetry,
    #[serde(default)]
    pub(super) metrics: RawMetrics,
    #[serde(default)]
    pub(super) relay: RawRelay,
    #[serde(default)]
    pub(super) notifier: RawNotifier,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNotifier {
    pub(super) poll_interval_ms: Option<u64>,
    pub(super) timeout_ms: Option<u64>,
    pub(super) max_answer_read_bytes: Option<u64>,
    pub(super) claim_hold_secs: Option<u64>,
    pub(super) max_attempts: Option<u32>,
    pub(super) max_age_secs: Option<u64>,
    pub(super) posts_per_turn: Option<u32>,
    pub(super) turn_budget_ms: Option<u64>,
    pub(super) tenants_at_once: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    pub(super) listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRelay {
    pub(super) resolve: Option<Vec<String>>,
    pub(super) allow_internal: Option<Vec<String>>,
    pub(super) upstream_ca: Option<PathBuf>,
    pub(super) max_request_body: Option<u64>,
    pub(super) max_response_body: Option<u64>,
    pub(super) timeout_ms: Option<u64>,
    pub(super) max_in_flight_per_principal: Option<usize>,
    pub(super) max_duration_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTelemetry {
    pub(super) otlp_endpoint: Option<String>,
    pub(super) otlp_export_interval_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCache {
    pub(super) ttl_ms: Option<u64>,
    pub(super) credential_ttl_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAudit {
    pub(super) checkpoint_interval_secs: Option<u64>,
    pub(super) checkpoint_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIdentity {
    pub(super) min_namespace_depth: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) cert: Option<PathBuf>,
    pub(super) key: Option<PathBuf>,
    pub(super) client_ca: Option<PathBuf>,
    pub(super) crl: Option<PathBuf>,
    pub(super) crl_reload_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDatabase {
    pub(super) backend: Option<String>,
    pub(super) url: Option<String>,
    pub(super) migrate_url: Option<String>,
    pub(super) sqlite_path: Option<PathBuf>,
    pub(super) max_connections: Option<u32>,
    pub(super) listen_url: Option<String>,
    pub(super) tenant_max_connections: Option<u32>,
    pub(super) unavailable_after_ms: Option<u64>,
    pub(super) statement_timeout_ms: Option<u64>,
    pub(super) lock_timeout_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRootKey {
    pub(super) file: Option<PathBuf>,
    pub(super) passphrase_file: Option<PathBuf>,
    pub(super) next_file: Option<PathBuf>,
    pub(super) heartbeat_interval_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub(super) max_message_bytes: Option<usize>,
    pub(super) audit_timeout_ms: Option<u64>,
    pub(super) request_timeout_ms: Option<u64>,
    pub(super) default_lease_ttl_secs: Option<u64>,
    pub(super) max_lease_ttl_secs: Option<u64>,
    pub(super) lease_sweep_interval_ms: Option<u64>,
    pub(super) rotation_monitor_interval_ms: Option<u64>,
    pub(super) access_request_ttl_secs: Option<u64>,
    pub(super) max_access_request_ttl_secs: Option<u64>,
    pub(super) idempotency_retention_secs: Option<u64>,
    pub(super) max_connections: Option<usize>,
    pub(super) max_connections_per_identity: Option<usize>,
    pub(super) max_connections_per_ip: Option<usize>,
    pub(super) max_handshakes: Option<usize>,
    pub(super) handshake_timeout_ms: Option<u64>,
    pub(super) idle_timeout_ms: Option<u64>,
    pub(super) max_concurrent_streams: Option<u32>,
    pub(super) max_calls_in_flight: Option<usize>,
    pub(super) scan_per_minute: Option<u32>,
    pub(super) export_kdf_memory_kib: Option<u32>,
    pub(super) export_kdf_passes: Option<u32>,
    pub(super) shutdown_grace_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub(super) level: Option<String>,
    pub(super) format: Option<String>,
}

fn parse_num<T: std::str::FromStr>(key: &str, text: &str) -> Result<T, ConfigError> {
    text.trim()
        .parse()
        .map_err(|_| bad(key, "must be a whole number"))
}

pub(super) fn read_file(path: Option<&Path>) -> Result<RawConfig, ConfigError> {
    Ok(match path {
        None => RawConfig::default(),
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| bad("--config", format!("cannot read {}: {e}", p.display())))?;
            toml::from_str::<RawConfig>(&text)
                .map_err(|e| bad("--config", format!("{}: {}", p.display(), e.message())))?
        }
    })
}

/// Environment overrides, one variable per key.
pub(super) fn apply_env(raw: &mut RawConfig, env: &dyn Env) -> Result<(), ConfigError> {
    if let Some(v) = env.var("STRONGROOM_LISTEN") {
        raw.listen = Some(v);
    }
    if let Some(v) = env.var("STRONGROOM_PLATFORM_OPERATORS") {
        raw.platform_operators = Some(v.split(',').map(|s| s.trim().to_owned()).collect());
    }
    if let Some(v) = env.var("STRONGROOM_TLS_CERT") {
        raw.tls.cert = Some(v.into());
    }
    if let Some(v) = env.var("STRONGROOM_TLS_KEY") {
        raw.tls.key = Some(v.into());
    }
    if let Some(v) = env.var("STRONGROOM_TLS_CLIENT_CA") {
        raw.tls.client_ca = Some(v.into());
    }
    if let Some(v) = env.var("STRONGROOM_TLS_CRL") {
        raw.tls.crl = Some(v.into());
    }
    if let Some(v) = env.var("STRONGROOM_TLS_CRL_RELOAD_MS") {
        raw.tls.crl_reload_ms = Some(parse_num("STRONGROOM_TLS_CRL_RELOAD_MS", &v)?);
    }
    if let Some(v) = env.var("STRONGROOM_DATABASE_BACKEND") {
        raw.database.backend = Some(v);
    }
    if let Some(v) = env.var("STRONGROOM_DATABASE_URL") {
        raw.database.url = Some(v);
    }
    if let Some(v) = env.var("STRONGROOM_DATABASE_MIGRATE_URL") {
        raw.database.migrate_url = Some(v);
    }
    if let Some(v) = env.var("STRONGROOM_SQLITE_PATH") {
        raw.database.sqlite_path = Some(v.into());
    }
    if let Some(v) = env.var("STRONGROOM_DATABASE_MAX_CONNECTIONS") {
        raw.database.max_connections = Some(parse_num("STRONGROOM_DATABASE_MAX_CONNECTIONS", &v)?);
    }
    if let Some(v) = env.var("STRONGROOM_DATABASE_LISTEN_URL") {
        raw.database.listen_url = Some(v);
    }
    if let Some(v) = env.var("STRONGROOM_DATABASE_TENANT_MAX_CONNECTIONS") {
        raw.database.tenant_max_connections =
            Some(parse_num("STRONGROOM_DATABASE_TENANT_MAX_CONNECTIONS", &v)?);
    }
    for (name, slot) in [
        (
            "STRONGROOM_DATABASE_UNAVAILABLE_AFTER_MS",
            &mut raw.database.unavailable_after_ms,
        ),
        (
            "STRONGROOM_DATABASE_STATEMENT_TIMEOUT_MS",
            &mut raw.database.statement_timeout_ms,
        ),
        (
            "STRONGROOM_DATABASE_LOCK_TIMEOUT_MS",
            &mut raw.database.lock_timeout_ms,
        ),
        (
            "STRONGROOM_SHUTDOWN_GRACE_MS",
            &mut raw.limits.shutdown_grace_ms,
        ),
    ] {
        if let Some(v) = env.var(name) {
            *slot = Some(parse_num(name, &v)?);
        }
    }
    if let Some(v) = env.var("STRONGROOM_ROOT_KEY_FILE") {
        raw.root_key.file = Some(v.into());
    }
    if let Some(v) = env.var("STRONGROOM_ROOT_PASSPHRASE_FILE") {
        raw.root_key.passphrase_file = Some(v.into());
    }
    if let Some(v) = env.var("STRONGROOM_NEXT_ROOT_KEY_FILE") {
        raw.root_key.next_file = Some(v.into());
    }
    if let Some(v) = env.var("STRONGROOM_ROOT_KEY_HEARTBEAT_MS") {
        raw.root_key.heartbeat_interval_ms =
            Some(parse_num("STRONGROOM_ROOT_KEY_HEARTBEAT_MS", &v)?);
    }
    if let Some(v) = env.var("STRONGROOM_DEFAULT_LEASE_TTL_SECS") {
        raw.limits.default_lease_ttl_secs =
            Some(parse_num("STRONGROOM_DEFAULT_LEASE_TTL_SECS", &v)?);
    }
    if let Some(v) = env.var("STRONGROOM_MAX_LEASE_TTL_SECS") {
        raw.limits.max_lease_ttl_secs = Some(parse_num("STRONGROOM_MAX_LEASE_TTL_SECS", &v)?);
    }
    if let Some(v) = env.var("STRONGROOM_LEASE_SWEEP_INTERVAL_MS") {
        raw.limits.lease_sweep_interval_ms =
            Some(parse_num("STRONGROOM_LEASE_SWEEP_INTERVAL_MS", &v)?);
    }
    if let Some(v) = env.var("STRONGROOM_ROTATION_MONITOR_INTERVAL_MS") {
        raw.limits.rotation_monitor_interval_ms =
            Some(parse_num("STRONGROOM_ROTATION_MONITOR_INTERVAL_MS", &v)?);
    }
    if let Some(v) = env.var("STRONGROOM_ACCESS_REQUEST_TTL_SECS") {
        raw.limits.access_request_ttl_secs =
            Some(parse_num("STRONGROOM_ACCESS_REQUEST_TTL_SECS", &v)?);
    }
    if let Some(v) = env.var("STRONGROOM_MAX_ACCESS_REQUEST_TTL_SECS") {
        raw.limits.max_access_request_ttl_secs =
            Some(parse_num("STRONGROOM_MAX_ACCESS_REQUEST_TTL_SECS", &v)?);
    }
    if let Some(v) = env.var("STRONGROOM_IDEMPOTENCY_RETENTION_SECS") {
        raw.limits.idempotency_retention_secs =
            Some(parse_num("STRONGROOM_IDEMPOTENCY_RETENTION_SECS", &v)?);
    }
    if let Some(v) = env.var("STRONGROOM_MAX_MESSAGE_BYTES") {
        raw.limits.max_message_bytes = Some(parse_num("STRONGROOM_MAX_MESSAGE_BYTES", &v)?);
    }
    if let Some(v) = env.var("STRONGROOM_AUDIT_TIMEOUT_MS") {
        raw.limits.audit_timeout_ms = Some(parse_num("STRONGROOM_AUDIT_TIMEOUT_MS", &v)?);
    }
    if let Some(v) = env.var("STRONGROOM_MAX_CONNECTIONS") {
        raw.limits.max_connections = Some(parse_num("STRONGROOM_MAX_CONNECTIONS", &v)?);
    }
    if let Some(v) = env.var("STRONGROOM_MAX_CONNECTIONS_PER_IDENTITY") {
        raw.limits.max_connections_per_identity =
            Some(parse_num("STRONGROOM_MAX_CONNECTIONS_PER_IDENTITY", &v)?);
    }
    if let Some(v) = env.var("STRONGROOM_MAX_CONNECTIONS_PER_IP") {
        raw.limits.max_connections_per_ip =
            Some(parse_num("STRONGROOM_MAX_CONNECTIONS_PER_IP", &v)?);
    }
    if let Some(v) = env.var("STRONGROOM_MAX_HANDSHAKES") {
        raw.limits.max_handshakes = Some(parse_num("STRONGROOM_MAX_HANDSHAKES", &v)?);
    }
    if let Some(v) = env.var("STRONGROOM_HANDSHAKE_TIMEOUT_MS") {
        raw.limits.handshake_timeout_ms = Some(parse_num("STRONGROOM_HANDSHAKE_TIMEOUT_MS", &v)?);
    }
    if let Some(v) = env.var("STRONGROOM_IDLE_TIMEOUT_MS") {
        raw.limits.idle_timeout_ms = Some(parse_num("STRONGROOM_IDLE_TIMEOUT_MS", &v)?);
    }
    if let Some(v) = env.var("STRONGROOM_MAX_CONCURRENT_STREAMS") {
        raw.limits.max_concurrent_streams =
            Some(parse_num("STRONGROOM_MAX_CONCURRENT_STREAMS", &v)?);
    }
    if let Some(v) = env.var("STRONGROOM_MAX_CALLS_IN_FLIGHT") {
        raw.limits.max_calls_in_flight = Some(parse_num("STRONGROOM_MAX_CALLS_IN_FLIGHT", &v)?);
    }
    if let Some(v) = env.var("STRONGROOM_SCAN_PER_MINUTE") {
        raw.limits.scan_per_minute = Some(parse_num("STRONGROOM_SCAN_PER_MINUTE", &v)?);
    }
    if let Some(v) = env.var("STRONGROOM_REQUEST_TIMEOUT_MS") {
        raw.limits.request_timeout_ms = Some(parse_num("STRONGROOM_REQUEST_TIMEOUT_MS", &v)?);
    }
    if let Some(v) = env.var("STRONGROOM_EXPORT_KDF_MEMORY_KIB") {
        raw.limits.export_kdf_memory_kib = Some(parse_num("STRONGROOM_EXPORT_KDF_MEMORY_KIB", &v)?);
    }
    if let Some(v) = env.var("STRONGROOM_EXPORT_KDF_PASSES") {
        raw.limits.export_kdf_passes = Some(parse_num("STRONGROOM_EXPORT_KDF_PASSES", &v)?);
    }
    if let Some(v) = env.var("STRONGROOM_OTLP_ENDPOINT") {
        raw.telemetry.otlp_endpoint = Some(v);
    }
    if let Some(v) = env.var("STRONGROOM_OTLP_EXPORT_INTERVAL_MS") {
        raw.telemetry.otlp_export_interval_ms =
            Some(parse_num("STRONGROOM_OTLP_EXPORT_INTERVAL_MS", &v)?);
    }
    if let Some(v) = env.var("STRONGROOM_METRICS_LISTEN") {
        raw.metrics.listen = Some(v);
    }
    if let Some(v) = env.var("STRONGROOM_AUDIT_CHECKPOINT_INTERVAL_SECS") {
        raw.audit.checkpoint_interval_secs =
            Some(parse_num("STRONGROOM_AUDIT_CHECKPOINT_INTERVAL_SECS", &v)?);
    }
    if let Some(v) = env.var("STRONGROOM_AUDIT_CHECKPOINT_FILE") {
        raw.audit.checkpoint_file = Some(v.into());
    }
    if let Some(v) = env.var("STRONGROOM_MIN_NAMESPACE_DEPTH") {
        raw.identity.min_namespace_depth = Some(parse_num("STRONGROOM_MIN_NAMESPACE_DEPTH", &v)?);
    }
    if let Some(v) = env.var("STRONGROOM_CACHE_TTL_MS") {
        raw.cache.ttl_ms = Some(parse_num("STRONGROOM_CACHE_TTL_MS", &v)?);
    }
    if let Some(v) = env.var("STRONGROOM_CACHE_CREDENTIAL_TTL_MS") {
        raw.cache.credential_ttl_ms = Some(parse_num("STRONGROOM_CACHE_CREDENTIAL_TTL_MS", &v)?);
    }
    let list = |v: String| -> Vec<String> {
        v.split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    };
    if let Some(v) = env.var("STRONGROOM_RELAY_RESOLVE") {
        raw.relay.resolve = Some(list(v));
    }
    if let Some(v) = env.var("STRONGROOM_RELAY_ALLOW_INTERNAL") {
        raw.relay.allow_internal = Some(list(v));
    }
    if let Some(v) = env.var("STRONGROOM_RELAY_UPSTREAM_CA") {
        raw.relay.upstream_ca = Some(v.into());
    }
    if let Some(v) = env.var("STRONGROOM_RELAY_MAX_REQUEST_BODY") {
        raw.relay.max_request_body = Some(parse_num("STRONGROOM_RELAY_MAX_REQUEST_BODY", &v)?);
    }
    if let Some(v) = env.var("STRONGROOM_RELAY_MAX_RESPONSE_BODY") {
        raw.relay.max_response_body = Some(parse_num("STRONGROOM_RELAY_MAX_RESPONSE_BODY", &v)?);
    }
    if let Some(v) = env.var("STRONGROOM_RELAY_MAX_DURATION_MS") {
        raw.relay.max_duration_ms = Some(parse_num("STRONGROOM_RELAY_MAX_DURATION_MS", &v)?);
    }
    if let Some(v) = env.var("STRONGROOM_RELAY_TIMEOUT_MS") {
        raw.relay.timeout_ms = Some(parse_num("STRONGROOM_RELAY_TIMEOUT_MS", &v)?);
    }
    if let Some(v) = env.var("STRONGROOM_RELAY_MAX_IN_FLIGHT_PER_PRINCIPAL") {
        raw.relay.max_in_flight_per_principal = Some(parse_num(
            "STRONGROOM_RELAY_MAX_IN_FLIGHT_PER_PRINCIPAL",
            &v,
        )?);
    }
    for (name, slot) in [
        (
            "STRONGROOM_NOTIFIER_POLL_INTERVAL_MS",
            &mut raw.notifier.poll_interval_ms,
        ),
        (
            "STRONGROOM_NOTIFIER_TIMEOUT_MS",
            &mut raw.notifier.timeout_ms,
        ),
        (
            "STRONGROOM_NOTIFIER_MAX_ANSWER_READ_BYTES",
            &mut raw.notifier.max_answer_read_bytes,
        ),
        (
            "STRONGROOM_NOTIFIER_CLAIM_HOLD_SECS",
            &mut raw.notifier.claim_hold_secs,
        ),
        (
            "STRONGROOM_NOTIFIER_MAX_AGE_SECS",
            &mut raw.notifier.max_age_secs,
        ),
        (
            "STRONGROOM_NOTIFIER_TURN_BUDGET_MS",
            &mut raw.notifier.turn_budget_ms,
        ),
        (
            "STRONGROOM_NOTIFIER_TENANTS_AT_ONCE",
            &mut raw.notifier.tenants_at_once,
        ),
    ] {
        if let Some(v) = env.var(name) {
            *slot = Some(parse_num(name, &v)?);
        }
    }
    for (name, slot) in [
        (
            "STRONGROOM_NOTIFIER_MAX_ATTEMPTS",
            &mut raw.notifier.max_attempts,
        ),
        (
            "STRONGROOM_NOTIFIER_POSTS_PER_TURN",
            &mut raw.notifier.posts_per_turn,
        ),
    ] {
        if let Some(v) = env.var(name) {
            *slot = Some(parse_num(name, &v)?);
        }
    }
    if let Some(v) = env.var("STRONGROOM_LOG_LEVEL") {
        raw.log.level = Some(v);
    }
    if let Some(v) = env.var("STRONGROOM_LOG_FORMAT") {
        raw.log.format = Some(v);
    }
    Ok(())
}
