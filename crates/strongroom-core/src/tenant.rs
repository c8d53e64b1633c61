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

/// Per-tenant settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TenantSettings {
    /// How many versions of each credential are kept (1-100, default 10).
    pub version_retention: u32,
    /// Largest accepted serialized value, in bytes (default 64 KiB).
    pub max_value_bytes: u32,
    /// Default rotation schedule of credentials without their own.
    pub rotation: RotationPolicy,
}

impl Default for TenantSettings {
    fn default() -> Self {
        Self {
            version_retention: 10,
            max_value_bytes: 64 * 1024,
            rotation: RotationPolicy::default(),
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
