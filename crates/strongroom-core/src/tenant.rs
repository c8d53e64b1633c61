//! Tenants and their settings.

use serde::{Deserialize, Serialize};

use crate::credential::RotationPolicy;
use crate::error::{Error, Result};
use crate::ids::TenantId;
use crate::names::TenantName;
use crate::time::Timestamp;

/// Whether a tenant is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantStatus {
    /// Served.
    Active,
    /// Every call of its principals is refused until resumed.
    Suspended,
    /// Its keys were destroyed; its data is unrecoverable.
    Shredded,
}

impl TenantStatus {
    /// Stable text form, as stored.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Suspended => "suspended",
            Self::Shredded => "shredded",
        }
    }

    /// Parses the stable text form.
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "active" => Ok(Self::Active),
            "suspended" => Ok(Self::Suspended),
            "shredded" => Ok(Self::Shredded),
            _ => Err(Error::invalid("status", "unknown tenant status")),
        }
    }
}

/// Longest accepted notifier URL, in characters.
pub const NOTIFIER_URL_MAX: usize = 2048;

/// Shortest and longest accepted notifier signing secret, in bytes.
pub const NOTIFIER_SECRET_LEN: std::ops::RangeInclusive<usize> = 16..=256;

/// The tenant's webhook notifier: where notices (a new access request) are
/// posted, and the signing secret, sealed under the tenant's current KEK
/// (never stored, returned, logged or audited in the clear).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifierSetting {
    /// An `https` URL, at most [`NOTIFIER_URL_MAX`] characters.
    pub url: String,
    /// The signing secret's envelope, hex (see the engine's notifier
    /// sealing).
    pub sealed_secret: String,
}

impl std::fmt::Debug for NotifierSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifierSetting")
            .field("url", &self.url)
            .field("sealed_secret", &"<sealed>")
            .finish()
    }
}

/// Checks a notifier URL: `https`, a host, no user information, at most
/// [`NOTIFIER_URL_MAX`] characters. Errors name `field`.
pub fn validate_notifier_url(url: &str, field: &'static str) -> Result<()> {
    if url.len() > NOTIFIER_URL_MAX {
        return Err(Error::invalid(field, "must be at most 2048 characters"));
    }
    let Some(rest) = url.strip_prefix("https://") else {
        return Err(Error::invalid(field, "must be an https:// URL"));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() {
        return Err(Error::invalid(field, "must name a host"));
    }
    if authority.contains('@') {
        return Err(Error::invalid(field, "must not carry user information"));
    }
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(Error::invalid(
            field,
            "must not contain spaces or control characters",
        ));
    }
    Ok(())
}

/// Per-tenant settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TenantSettings {
    /// How many versions of each credential are kept (1-100, default 10).
    pub version_retention: u32,
    /// Largest accepted serialized value, in bytes (default 64 KiB).
    pub max_value_bytes: u32,
    /// Default rotation schedule of credentials without their own.
    pub rotation: RotationPolicy,
    /// Limit on each principal's denied calls; beyond it every call of the
    /// principal is refused for a while. On by default.
    pub denied_call_limit: RateLimit,
    /// Limit on each principal's calls, denied or not. Off by default.
    pub call_limit: RateLimit,
    /// When repeated denials of one principal raise an alert (and,
    /// optionally, lock it).
    pub denial_alert: DenialAlert,
    /// Whether a leak (a placeholder sent to a destination its grants do
    /// not allow, or a leak a tool reports) revokes the grants involved at
    /// once. Off by default.
    pub revoke_grant_on_leak: bool,
    /// The webhook notifier, if any.
    pub notifier: Option<NotifierSetting>,
    /// How long this tenant's access requests wait for a decision before
    /// they expire, in seconds ([`ACCESS_REQUEST_TTL_SECS`]); `None` takes
    /// the server's default. The server's maximum bounds it when it is set
    /// and when it is used.
    pub access_request_ttl_secs: Option<u32>,
}

/// The bounds of a tenant's access request TTL, in seconds: 1 minute to 30
/// days (the server's maximum may be lower).
pub const ACCESS_REQUEST_TTL_SECS: std::ops::RangeInclusive<u32> = 60..=30 * 24 * 3600;

impl Default for TenantSettings {
    fn default() -> Self {
        Self {
            version_retention: 10,
            max_value_bytes: 64 * 1024,
            rotation: RotationPolicy::default(),
            denied_call_limit: RateLimit {
                enabled: true,
                per_minute: 60,
                burst: 20,
            },
            call_limit: RateLimit {
                enabled: false,
                per_minute: 600,
                burst: 100,
            },
            denial_alert: DenialAlert::default(),
            revoke_grant_on_leak: false,
            notifier: None,
            access_request_ttl_secs: None,
        }
    }
}

/// A per-principal rate limit: `per_minute` calls a minute on average, in
/// bursts of at most `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    /// Whether the limit applies.
    pub enabled: bool,
    /// Sustained rate, calls a minute (1 to 1,000,000).
    pub per_minute: u32,
    /// Largest burst (1 to 1,000,000).
    pub burst: u32,
}

impl RateLimit {
    fn validate(&self, field: &'static str) -> Result<()> {
        if !(1..=1_000_000).contains(&self.per_minute) {
            return Err(Error::invalid(
                format!("settings.{field}.per_minute"),
                "must be 1-1000000",
            ));
        }
        if !(1..=1_000_000).contains(&self.burst) {
            return Err(Error::invalid(
                format!("settings.{field}.burst"),
                "must be 1-1000000",
            ));
        }
        Ok(())
    }
}

/// When repeated denials raise an alert event in the audit chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DenialAlert {
    /// Denials of one principal within the window that raise the alert
    /// (1 to 100,000; default 20).
    pub threshold: u32,
    /// The window, in seconds (1 to 3600; default 60). Also the window over
    /// which rate-limit refusals are counted into one audit event.
    pub window_secs: u32,
    /// Whether the alert also disables the principal until an admin
    /// enables it again (default off). Admins are never locked.
    pub auto_lock: bool,
}

impl Default for DenialAlert {
    fn default() -> Self {
        Self {
            threshold: 20,
            window_secs: 60,
            auto_lock: false,
        }
    }
}

impl TenantSettings {
    /// Checks bounds.
    pub fn validate(&self) -> Result<()> {
        if !(1..=100).contains(&self.version_retention) {
            return Err(Error::invalid(
                "settings.version_retention",
                "must be 1-100",
            ));
        }
        if !(64..=1024 * 1024).contains(&self.max_value_bytes) {
            return Err(Error::invalid(
                "settings.max_value_bytes",
                "must be 64 B to 1 MiB",
            ));
        }
        self.denied_call_limit.validate("denied_call_limit")?;
        self.call_limit.validate("call_limit")?;
        if !(1..=100_000).contains(&self.denial_alert.threshold) {
            return Err(Error::invalid(
                "settings.denial_alert.threshold",
                "must be 1-100000",
            ));
        }
        if !(1..=3600).contains(&self.denial_alert.window_secs) {
            return Err(Error::invalid(
                "settings.denial_alert.window",
                "must be 1 second to 1 hour",
            ));
        }
        if let Some(ttl) = self.access_request_ttl_secs
            && !ACCESS_REQUEST_TTL_SECS.contains(&ttl)
        {
            return Err(Error::invalid(
                "settings.access_request_ttl",
                "must be 60 seconds to 30 days",
            ));
        }
        if let Some(n) = &self.notifier {
            validate_notifier_url(&n.url, "settings.notifier.url")?;
        }
        self.rotation.validate().map_err(|e| e.within("settings"))
    }
}

/// A tenant: the isolation boundary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    /// Id.
    pub id: TenantId,
    /// Unique name.
    pub name: TenantName,
    /// Served or not.
    pub status: TenantStatus,
    /// Settings.
    pub settings: TenantSettings,
    /// The KEK version new data keys are wrapped with.
    pub current_kek_version: u32,
    /// Creation time.
    pub created_at: Timestamp,
}

/// One version of a tenant's key-encryption key, wrapped by the root key.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedKekRecord {
    /// Owning tenant.
    pub tenant: TenantId,
    /// KEK version, from 1.
    pub version: u32,
    /// The wrapped key bytes.
    pub wrapped: Vec<u8>,
    /// Creation time.
    pub created_at: Timestamp,
}

impl std::fmt::Debug for WrappedKekRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WrappedKekRecord")
            .field("tenant", &self.tenant)
            .field("version", &self.version)
            .field("wrapped_len", &self.wrapped.len())
            .finish()
    }
}

#[cfg(test)]
mod notifier_tests {
    use super::*;

    #[test]
    #[allow(clippy::expect_used)]
    fn an_access_request_ttl_is_a_minute_to_30_days_or_none() {
        for ok in [None, Some(60), Some(30 * 24 * 3600)] {
            let s = TenantSettings {
                access_request_ttl_secs: ok,
                ..TenantSettings::default()
            };
            assert!(s.validate().is_ok(), "{ok:?}");
        }
        for bad in [0, 59, 30 * 24 * 3600 + 1] {
            let s = TenantSettings {
                access_request_ttl_secs: Some(bad),
                ..TenantSettings::default()
            };
            assert!(s.validate().is_err(), "{bad}");
        }
        // Settings stored before the field existed read as the server's
        // default.
        let old: TenantSettings =
            serde_json::from_str(r#"{"version_retention":10}"#).expect("old settings");
        assert_eq!(old.access_request_ttl_secs, None);
    }

    #[test]
    fn notifier_urls_are_https_with_a_host() {
        for ok in ["https://hooks.example.com/x", "https://10.0.0.1:8443"] {
            assert!(validate_notifier_url(ok, "url").is_ok(), "{ok}");
        }
        let long = format!("https://h.example/{}", "a".repeat(NOTIFIER_URL_MAX));
        for bad in [
            "http://hooks.example.com/",
            "https://",
            "https:///path",
            "https://u:p@hooks.example.com/",
            "https://hooks.example.com/a b",
            long.as_str(),
        ] {
            assert!(validate_notifier_url(bad, "url").is_err(), "{bad}");
        }
    }

    #[test]
    fn notifier_debug_hides_the_sealed_secret() {
        let n = NotifierSetting {
            url: "https://hooks.example.com/".into(),
            sealed_secret: "deadbeefcafe".into(),
        };
        let text = format!("{n:?}");
        assert!(text.contains("hooks.example.com"));
        assert!(!text.contains("deadbeefcafe"));
    }
}
