//! Credential metadata, versions and their lifecycle states.

use serde::{Deserialize, Serialize};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::ids::{CredentialId, PrincipalId, TenantId};
use crate::names::{CredentialName, Environment, ServiceLabel, Tag};
use crate::time::Timestamp;
use crate::value::CredentialType;

/// Lifecycle status of a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialStatus {
    /// Usable.
    Active,
    /// Past its `expires_at`; refused.
    Expired,
    /// Revoked by an operator; refused.
    Revoked,
}

impl CredentialStatus {
    /// Stable text form, as stored.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
        }
    }

    /// Parses the stable text form.
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "active" => Ok(Self::Active),
            "expired" => Ok(Self::Expired),
            "revoked" => Ok(Self::Revoked),
            _ => Err(Error::invalid("status", "unknown credential status")),
        }
    }
}

/// The state of one version relative to the credential's current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionState {
    /// The version reveals and injections use.
    Current,
    /// The most recent version other than the current one: what a rollback
    /// usually returns to.
    Previous,
    /// Any older retained version.
    Retired,
}

/// How a credential is added to an outbound request by the relay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum InjectionTemplate {
    /// `Authorization: Bearer <field>`.
    Bearer {
        /// Value field to use (`api_key`, `access_token`).
        field: String,
    },
    /// `Authorization: Basic base64(username:password)`.
    Basic,
    /// A named header, with an optional prefix before the value.
    Header {
        /// Header name.
        name: String,
        /// Value field to use.
        field: String,
        /// Text put before the value (`Token `).
        prefix: String,
    },
    /// A query parameter.
    Query {
        /// Parameter name.
        name: String,
        /// Value field to use.
        field: String,
    },
}

/// What an injection template adds to a request, once rendered with a
/// value. Holds secret material: `Debug` shows names only.
pub enum Injected {
    /// Set this header (replacing any the agent sent under that name).
    Header {
        /// Header name.
        name: String,
        /// Header value (secret).
        value: zeroize::Zeroizing<String>,
    },
    /// Set this query parameter (replacing any the agent sent).
    Query {
        /// Parameter name.
        name: String,
        /// Its value, not yet percent-encoded (secret).
        value: zeroize::Zeroizing<String>,
    },
}

impl std::fmt::Debug for Injected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Header { name, .. } => write!(f, "Header({name:?}, [REDACTED])"),
            Self::Query { name, .. } => write!(f, "Query({name:?}, [REDACTED])"),
        }
    }
}

impl InjectionTemplate {
    /// The template a credential of `kind` gets when it names none:
    /// bearer for API keys and OAuth tokens, basic for username and
    /// password; other types have none.
    pub fn default_for(kind: CredentialType) -> Option<Self> {
        match kind {
            CredentialType::ApiKey | CredentialType::OauthToken => Some(Self::Bearer {
                field: String::new(),
            }),
            CredentialType::BasicAuth => Some(Self::Basic),
            _ => None,
        }
    }

    /// The slot this template puts a value in, where a placeholder of the
    /// credential may stand: (header name, lower case) or (query parameter
    /// name). Bearer and basic name `authorization`.
    pub fn slot(&self) -> (Option<String>, Option<String>) {
        match self {
            Self::Bearer { .. } | Self::Basic => (Some("authorization".to_owned()), None),
            Self::Header { name, .. } => (Some(name.to_ascii_lowercase()), None),
            Self::Query { name, .. } => (None, Some(name.clone())),
        }
    }

    /// The field used when a template or a placeholder names none: the
    /// type's one secret a request carries (`api_key`, `access_token`,
    /// `password`), or a custom value's only field.
    pub fn default_field(value: &crate::value::CredentialValue) -> Option<String> {
        use crate::value::CredentialValue as V;
        match value {
            V::ApiKey(_) => Some("api_key".into()),
            V::OauthToken(_) => Some("access_token".into()),
            V::BasicAuth(_) | V::DbConnection(_) => Some("password".into()),
            V::Custom(c) if c.fields.len() == 1 => c.fields.keys().next().cloned(),
            _ => None,
        }
    }

    /// The template rendered with `value`: what to add to the request and
    /// the secret texts it carries (each field value sent, and the header
    /// value if it differs), for response scrubbing. `None` if a field the
    /// template needs is missing.
    pub fn render(
        &self,
        value: &crate::value::CredentialValue,
    ) -> Option<(Injected, Vec<zeroize::Zeroizing<String>>)> {
        use base64::Engine as _;
        let field_of = |field: &str| {
            let name = if field.is_empty() {
                Self::default_field(value)?
            } else {
                field.to_owned()
            };
            value.field(&name)
        };
        match self {
            Self::Bearer { field } => {
                let secret = field_of(field)?;
                let header = zeroize::Zeroizing::new(format!("Bearer {}", secret.as_str()));
                Some((
                    Injected::Header {
                        name: "authorization".into(),
                        value: header,
                    },
                    vec![secret],
                ))
            }
            Self::Basic => {
                let user = value.field("username")?;
                let password = value.field("password")?;
                let pair =
                    zeroize::Zeroizing::new(format!("{}:{}", user.as_str(), password.as_str()));
                let encoded = zeroize::Zeroizing::new(
                    base64::engine::general_purpose::STANDARD.encode(pair.as_bytes()),
                );
                let header = zeroize::Zeroizing::new(format!("Basic {}", encoded.as_str()));
                Some((
                    Injected::Header {
                        name: "authorization".into(),
                        value: header,
                    },
                    vec![password, encoded],
                ))
            }
            Self::Header {
                name,
                field,
                prefix,
            } => {
                let secret = field_of(field)?;
                let header = zeroize::Zeroizing::new(format!("{prefix}{}", secret.as_str()));
                Some((
                    Injected::Header {
                        name: name.to_ascii_lowercase(),
                        value: header,
                    },
                    vec![secret],
                ))
            }
            Self::Query { name, field } => {
                let secret = field_of(field)?;
                Some((
                    Injected::Query {
                        name: name.clone(),
                        value: secret.clone(),
                    },
                    vec![secret],
                ))
            }
        }
    }
}

/// When a credential should be rotated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationPolicy {
    /// Rotate this long after the current version was written.
    pub period_days: u32,
    /// Start reminding this long before the period ends.
    pub reminder_days: u32,
}

impl Default for RotationPolicy {
    fn default() -> Self {
        Self {
            period_days: 90,
            reminder_days: 14,
        }
    }
}

/// Rotation health of a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RotationStatus {
    /// Not due yet.
    Healthy,
    /// Within the reminder window.
    DueSoon,
    /// Past the rotation period.
    Overdue,
}

impl RotationPolicy {
    /// Checks bounds: period 1-3650 days, reminder shorter than the period.
    pub fn validate(&self) -> Result<()> {
        if !(1..=3650).contains(&self.period_days) {
            return Err(Error::invalid("rotation.period_days", "must be 1-3650"));
        }
        if self.reminder_days >= self.period_days {
            return Err(Error::invalid(
                "rotation.reminder_days",
                "must be shorter than the period",
            ));
        }
        Ok(())
    }

    /// When a credential whose current version was written at `rotated_at`
    /// is due for rotation.
    pub fn due_at(&self, rotated_at: Timestamp) -> Timestamp {
        rotated_at.plus(Duration::from_secs(86_400) * self.period_days)
    }

    /// The status of a credential whose current version was written at
    /// `rotated_at`, as of `now`.
    pub fn status(&self, rotated_at: Timestamp, now: Timestamp) -> RotationStatus {
        let day = Duration::from_secs(86_400);
        let due = self.due_at(rotated_at);
        let remind = due.minus(day * self.reminder_days);
        if now >= due {
            RotationStatus::Overdue
        } else if now >= remind {
            RotationStatus::DueSoon
        } else {
            RotationStatus::Healthy
        }
    }
}

/// A credential's metadata: everything but its value. Viewers see this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// Id, unique within the tenant.
    pub id: CredentialId,
    /// Owning tenant.
    pub tenant: TenantId,
    /// The environment it lives in.
    pub environment: Environment,
    /// Path-like name, unique per (tenant, environment).
    pub name: CredentialName,
    /// Service label (`openai`).
    pub service: ServiceLabel,
    /// Type of its value.
    pub kind: CredentialType,
    /// Free text.
    pub description: String,
    /// Tags for filtering.
    pub tags: Vec<Tag>,
    /// Scopes the credential grants at its service (informational).
    pub scopes: Vec<String>,
    /// The end user owning it, if owner-scoped.
    pub owner: Option<String>,
    /// Lifecycle status.
    pub status: CredentialStatus,
    /// The version reveals use.
    pub current_version: u32,
    /// The highest version number ever written.
    pub latest_version: u32,
    /// When the current version was written (for rotation status).
    pub rotated_at: Timestamp,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last metadata or version change.
    pub updated_at: Timestamp,
    /// Refused after this time.
    pub expires_at: Option<Timestamp>,
    /// When it was revoked.
    pub revoked_at: Option<Timestamp>,
    /// Why it was revoked.
    pub revoke_reason: Option<String>,
    /// When its values were destroyed (metadata is kept for audit).
    pub destroyed_at: Option<Timestamp>,
    /// Rotation schedule; `None` uses the tenant default.
    pub rotation: Option<RotationPolicy>,
    /// How the relay injects it.
    pub injection: Option<InjectionTemplate>,
    /// Who created it.
    pub created_by: PrincipalId,
}

/// Where a credential stands with its rotation schedule at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationState {
    /// The schedule in force: the credential's own, else its tenant's
    /// default.
    pub policy: RotationPolicy,
    /// Whether `policy` is the tenant's default.
    pub inherited: bool,
    /// When the current version is due for rotation.
    pub due_at: Timestamp,
    /// Healthy, due soon or overdue.
    pub status: RotationStatus,
}

impl Credential {
    /// Its rotation as of `now`, under its own schedule or, when it has
    /// none, under `tenant_default`.
    pub fn rotation_state(&self, tenant_default: &RotationPolicy, now: Timestamp) -> RotationState {
        let policy = self.rotation.unwrap_or(*tenant_default);
        RotationState {
            policy,
            inherited: self.rotation.is_none(),
            due_at: policy.due_at(self.rotated_at),
            status: policy.status(self.rotated_at, now),
        }
    }

    /// The status as of `now`: an active credential past `expires_at` reads
    /// as expired.
    pub fn effective_status(&self, now: Timestamp) -> CredentialStatus {
        match (self.status, self.expires_at) {
            (CredentialStatus::Active, Some(at)) if now >= at => CredentialStatus::Expired,
            (status, _) => status,
        }
    }

    /// Fails with `FailedPrecondition` unless the credential's value may be
    /// used now: not revoked, not expired, not destroyed.
    pub fn ensure_usable(&self, now: Timestamp) -> Result<()> {
        match self.unusable(now) {
            None => Ok(()),
            Some(why) => Err(Error::FailedPrecondition(
                crate::error::Precondition::CredentialUnusable(why),
            )),
        }
    }

    /// Why the credential's value may not be used now, if it may not:
    /// destroyed first, then revoked, then expired.
    pub fn unusable(&self, now: Timestamp) -> Option<crate::error::Unusable> {
        use crate::error::Unusable;
        if self.destroyed_at.is_some() {
            return Some(Unusable::Destroyed);
        }
        match self.effective_status(now) {
            CredentialStatus::Active => None,
            CredentialStatus::Revoked => Some(Unusable::Revoked),
            CredentialStatus::Expired => Some(Unusable::Expired),
        }
    }
}

/// One stored version of a credential's value, still encrypted.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredVersion {
    /// The credential.
    pub credential: CredentialId,
    /// Version number, from 1.
    pub version: u32,
    /// The sealed envelope; `None` once destroyed.
    pub envelope: Option<Vec<u8>>,
    /// The tenant KEK version that wrapped its data key.
    pub kek_version: u32,
    /// When it was written.
    pub created_at: Timestamp,
    /// Who wrote it.
    pub created_by: PrincipalId,
}

impl std::fmt::Debug for StoredVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredVersion")
            .field("credential", &self.credential)
            .field("version", &self.version)
            .field("envelope_len", &self.envelope.as_ref().map(Vec::len))
            .field("kek_version", &self.kek_version)
            .field("created_at", &self.created_at)
            .finish()
    }
}

impl StoredVersion {
    /// This version's state given the credential's current version and the
    /// retained version numbers.
    pub fn state(&self, current: u32, previous: Option<u32>) -> VersionState {
        if self.version == current {
            VersionState::Current
        } else if Some(self.version) == previous {
            VersionState::Previous
        } else {
            VersionState::Retired
        }
    }
}

/// A change of a credential's metadata (UpdateCredential): each field that
/// is `Some` is set (an inner `None` clears an optional field); the value,
/// name, environment, type and lifecycle are never changed by it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CredentialUpdate {
    /// A new service label.
    pub service: Option<ServiceLabel>,
    /// A new description.
    pub description: Option<String>,
    /// New tags.
    pub tags: Option<Vec<Tag>>,
    /// New scopes.
    pub scopes: Option<Vec<String>>,
    /// A new owner, or none (not owner-scoped).
    pub owner: Option<Option<String>>,
    /// A new expiry, or none (never expires).
    pub expires_at: Option<Option<Timestamp>>,
    /// A rotation policy of its own, or none (the tenant default).
    pub rotation: Option<Option<RotationPolicy>>,
    /// An injection template, or none (the type's default).
    pub injection: Option<Option<InjectionTemplate>>,
}

impl CredentialUpdate {
    /// The fields it sets, by their names in the contract, in a fixed
    /// order.
    pub fn fields(&self) -> Vec<String> {
        [
            ("service", self.service.is_some()),
            ("description", self.description.is_some()),
            ("tags", self.tags.is_some()),
            ("scopes", self.scopes.is_some()),
            ("owner", self.owner.is_some()),
            ("expires_at", self.expires_at.is_some()),
            ("rotation_policy", self.rotation.is_some()),
            ("injection_template", self.injection.is_some()),
        ]
        .into_iter()
        .filter(|(_, set)| *set)
        .map(|(f, _)| f.to_owned())
        .collect()
    }

    /// `credential` with the update applied (and `updated_at` set to `at`).
    pub fn applied_to(&self, credential: &Credential, at: Timestamp) -> Credential {
        let mut c = credential.clone();
        if let Some(v) = &self.service {
            c.service = v.clone();
        }
        if let Some(v) = &self.description {
            c.description.clone_from(v);
        }
        if let Some(v) = &self.tags {
            c.tags.clone_from(v);
        }
        if let Some(v) = &self.scopes {
            c.scopes.clone_from(v);
        }
        if let Some(v) = &self.owner {
            c.owner.clone_from(v);
        }
        if let Some(v) = self.expires_at {
            c.expires_at = v;
        }
        if let Some(v) = self.rotation {
            c.rotation = v;
        }
        if let Some(v) = &self.injection {
            c.injection.clone_from(v);
        }
        c.updated_at = at;
        c
    }

    /// Whether the update narrows the use of `before`: an expiry set or
    /// moved earlier, another owner (set, changed or cleared: a lease held
    /// for the old owner must not outlive it), another service label (what
    /// ResolveCredential finds) or another injection template (how the
    /// relay sends it). Description, tags, scopes and the rotation policy
    /// narrow nothing.
    pub fn narrows(&self, before: &Credential) -> bool {
        let expiry = self
            .expires_at
            .is_some_and(|after| match (before.expires_at, after) {
                (_, None) => false,
                (None, Some(_)) => true,
                (Some(b), Some(a)) => a < b,
            });
        let owner = self.owner.as_ref().is_some_and(|o| *o != before.owner);
        let service = self.service.as_ref().is_some_and(|s| *s != before.service);
        let injection = self
            .injection
            .as_ref()
            .is_some_and(|t| *t != before.injection);
        expiry || owner || service || injection
    }
}

/// Filters for listing credentials; every set field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CredentialFilter {
    /// Only this environment.
    pub environment: Option<Environment>,
    /// Only this service.
    pub service: Option<ServiceLabel>,
    /// Only this type.
    pub kind: Option<CredentialType>,
    /// Only this stored status.
    pub status: Option<CredentialStatus>,
    /// Only credentials carrying this tag.
    pub tag: Option<Tag>,
    /// Only names starting with this text.
    pub name_prefix: Option<String>,
    /// Only credentials inside one of these reaches (see
    /// [`crate::policy::reach`]): what a caller may see, decided in the query
    /// so that pages and their tokens hold nothing else. `None`: no limit.
    pub reach: Option<Vec<crate::policy::Reach>>,
    /// Only credentials that are not owner-scoped.
    pub unowned_only: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_state_uses_the_tenant_default_only_without_a_schedule_of_its_own() {
        let day = 86_400;
        let rotated_at = Timestamp::from_unix(1_000 * day, 0);
        let tenant = RotationPolicy {
            period_days: 30,
            reminder_days: 5,
        };
        let own = RotationPolicy {
            period_days: 10,
            reminder_days: 2,
        };
        let state = |rotation: Option<RotationPolicy>, days_later: i64| {
            let credential = Credential {
                rotation,
                rotated_at,
                ..Credential::example()
            };
            credential.rotation_state(&tenant, Timestamp::from_unix((1_000 + days_later) * day, 0))
        };
        let inherited = state(None, 26);
        assert!(inherited.inherited);
        assert_eq!(inherited.policy, tenant);
        assert_eq!(inherited.due_at, Timestamp::from_unix(1_030 * day, 0));
        assert_eq!(inherited.status, RotationStatus::DueSoon);
        assert_eq!(state(None, 1).status, RotationStatus::Healthy);
        let own_state = state(Some(own), 26);
        assert!(!own_state.inherited);
        assert_eq!(own_state.due_at, Timestamp::from_unix(1_010 * day, 0));
        assert_eq!(own_state.status, RotationStatus::Overdue);
    }

    impl Credential {
        fn example() -> Self {
            let at = Timestamp::from_unix(0, 0);
            Credential {
                id: CredentialId::from_uuid(uuid::Uuid::nil()),
                tenant: TenantId::from_uuid(uuid::Uuid::nil()),
                environment: Environment::parse("dev", "environment")
                    .unwrap_or_else(|_| unreachable!()),
                name: CredentialName::parse("a/b", "name").unwrap_or_else(|_| unreachable!()),
                service: ServiceLabel::parse("svc", "service").unwrap_or_else(|_| unreachable!()),
                kind: crate::value::CredentialType::ApiKey,
                description: String::new(),
                tags: Vec::new(),
                scopes: Vec::new(),
                owner: None,
                status: CredentialStatus::Active,
                current_version: 1,
                latest_version: 1,
                rotated_at: at,
                created_at: at,
                updated_at: at,
                expires_at: None,
                revoked_at: None,
                revoke_reason: None,
                destroyed_at: None,
                rotation: None,
                injection: None,
                created_by: PrincipalId::from_uuid(uuid::Uuid::nil()),
            }
        }
    }
}
