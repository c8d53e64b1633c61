//! The engine's settings, converted from the server's configuration.

use std::time::Duration;

use strongroom_core::tenant::RateLimit;

/// The default ScanText rate limit: 60 scans a minute per principal, in
/// bursts of at most 10.
pub const DEFAULT_SCAN_LIMIT: RateLimit = RateLimit {
    enabled: true,
    per_minute: 60,
    burst: 10,
};

/// How long a `request_id` is remembered by default (see `common.proto`).
pub const DEFAULT_IDEMPOTENCY_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// Each principal's ReportLeak rate limit: 20 reports a minute, in bursts
/// of at most 5 (a report writes alerts and may revoke grants or lock the
/// reporter, so it must not become a way to flood the audit chain).
pub const LEAK_REPORT_LIMIT: RateLimit = RateLimit {
    enabled: true,
    per_minute: 20,
    burst: 5,
};

/// Bounds the engine keeps to: how long an audit record may take, lease
/// lengths, and how long cached state is trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How long a reveal waits for its audit record to be durable before
    /// failing with UNAVAILABLE (and any other audit write before it is
    /// given up).
    pub audit_timeout: Duration,
    /// Lease TTL of a reveal that asks for none.
    pub default_lease_ttl: Duration,
    /// Longest lease TTL granted.
    pub max_lease_ttl: Duration,
    /// How long an access request waits for a decision before it expires,
    /// unless its tenant sets its own (`access_request_ttl_secs`).
    pub access_request_ttl: Duration,
    /// The longest a tenant may set its access requests' TTL to (a TTL set
    /// before the maximum was lowered is cut to it when used).
    pub max_access_request_ttl: Duration,
    /// How long cached callers and grants are trusted after they were read:
    /// the ceiling on how long a change made through another server can go
    /// unseen here if its change notice is lost.
    pub cache_ttl: Duration,
    /// How long cached credential metadata is trusted (every path that uses
    /// a cached credential is checked again where it commits).
    pub credential_cache_ttl: Duration,
    /// Each principal's ScanText rate limit (a scan must not become an
    /// oracle for guessing values).
    pub scan_limit: RateLimit,
    /// How long a call's `request_id` is remembered for retries.
    pub idempotency_retention: Duration,
    /// The Argon2id costs of new export files.
    pub export_kdf: crate::ExportKdf,
}

impl Limits {
    /// How long an access request of a tenant with `settings` waits for a
    /// decision: the tenant's own TTL, else the server's, never beyond the
    /// server's maximum.
    pub fn access_request_ttl(
        &self,
        settings: &strongroom_core::tenant::TenantSettings,
    ) -> Duration {
        settings
            .access_request_ttl_secs
            .map_or(self.access_request_ttl, |s| {
                Duration::from_secs(u64::from(s))
            })
            .min(self.max_access_request_ttl)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            audit_timeout: Duration::from_secs(2),
            default_lease_ttl: Duration::from_secs(3600),
            max_lease_ttl: Duration::from_secs(24 * 3600),
            access_request_ttl: Duration::from_secs(24 * 3600),
            max_access_request_ttl: Duration::from_secs(7 * 24 * 3600),
            cache_ttl: crate::cache::DEFAULT_TTL,
            credential_cache_ttl: crate::cache::DEFAULT_CREDENTIAL_TTL,
            scan_limit: DEFAULT_SCAN_LIMIT,
            idempotency_retention: DEFAULT_IDEMPOTENCY_RETENTION,
            export_kdf: crate::ExportKdf::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strongroom_core::tenant::TenantSettings;

    #[test]
    fn a_tenants_request_ttl_is_its_own_within_the_maximum() {
        let limits = Limits {
            access_request_ttl: Duration::from_secs(3600),
            max_access_request_ttl: Duration::from_secs(7200),
            ..Limits::default()
        };
        let mut settings = TenantSettings::default();
        assert_eq!(
            limits.access_request_ttl(&settings),
            Duration::from_secs(3600)
        );
        settings.access_request_ttl_secs = Some(60);
        assert_eq!(
            limits.access_request_ttl(&settings),
            Duration::from_secs(60)
        );
        // Set before the maximum was lowered: cut to it.
        settings.access_request_ttl_secs = Some(86_400);
        assert_eq!(
            limits.access_request_ttl(&settings),
            Duration::from_secs(7200)
        );
    }
}
