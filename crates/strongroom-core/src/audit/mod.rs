//! Audit events and the per-tenant hash chain.
//!
//! Every event stores the hash of the tenant's previous event; an event's own
//! hash covers that link and every field, so removing, inserting, reordering
//! or editing any event breaks verification at that point. An event never
//! carries a secret value: there is no field that could hold one.
//!
//! Each event records the format it was hashed in ([`EventFormat`]): events
//! written by earlier builds (format 1, with free-text detail) verify by the
//! rule they were written under, new events (format 2) hash their typed
//! detail's canonical encoding ([`AuditDetail`]) under their own domain tag.

mod detail;
mod hasher;

pub use detail::{AuditDetail, DETAIL_ENCODING_VERSION, DetailError};

use serde::{Deserialize, Serialize};

use crate::ids::{CredentialId, EventId, PrincipalId, TenantId};
use crate::time::Timestamp;
use hasher::Hasher;

/// The hash a tenant's first event links to.
pub const GENESIS_HASH: [u8; 32] = [0u8; 32];

/// The tenant id under which the platform-level chain (events with no
/// tenant: failed authentication) is hashed. No tenant has it.
pub const PLATFORM_CHAIN: TenantId = TenantId::from_uuid(uuid::Uuid::nil());

/// A chain's head as stored: the sequence and hash of its newest event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainHead {
    /// Sequence of the newest event (0 for an empty chain).
    pub sequence: u64,
    /// Its hash ([`GENESIS_HASH`] for an empty chain).
    pub hash: [u8; 32],
}

/// What was done. Stable dotted names, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Action {
    /// A tenant was created.
    TenantCreate,
    /// A tenant was suspended, resumed or shredded.
    TenantStatus,
    /// Tenant settings changed.
    TenantSettings,
    /// A tenant KEK version was added.
    TenantKeyRotate,
    /// A tenant's identity namespaces were assigned by a platform operator.
    TenantNamespaces,
    /// A tenant was crypto-shredded by a platform operator: its keys and
    /// sealed values destroyed (platform chain).
    TenantShred,
    /// A credential was tested (TestCredential: the server connected with
    /// its values), recorded before the values are used.
    CredentialTest,
    /// A principal was created.
    PrincipalCreate,
    /// A principal was read (recorded when refused).
    PrincipalGet,
    /// Principals were listed (recorded when refused).
    PrincipalList,
    /// A principal was enabled or disabled.
    PrincipalStatus,
    /// A principal's name, role, environments or description changed.
    PrincipalUpdate,
    /// A principal was revoked in an emergency: disabled, its grants
    /// revoked, its leases ended and its identity bindings deleted at once.
    PrincipalEmergencyRevoke,
    /// An identity binding was created.
    BindingCreate,
    /// Identity bindings were listed (recorded when refused).
    BindingList,
    /// An identity binding was deleted.
    BindingDelete,
    /// An environment was created.
    EnvironmentCreate,
    /// An environment was deleted.
    EnvironmentDelete,
    /// A credential was created.
    CredentialCreate,
    /// A credential's metadata was read.
    CredentialGet,
    /// Credentials were listed.
    CredentialList,
    /// A credential's value was revealed.
    CredentialReveal,
    /// A credential was rotated.
    CredentialRotate,
    /// A credential was rolled back.
    CredentialRollback,
    /// A credential was revoked.
    CredentialRevoke,
    /// A credential's values were destroyed.
    CredentialDestroy,
    /// A credential's metadata changed (UpdateCredential): the fields
    /// named, never their values.
    CredentialUpdate,
    /// A credential was revoked in an emergency: revoked (or its current
    /// version replaced by a generated value and destroyed), its leases
    /// ended, at once.
    CredentialEmergencyRevoke,
    /// A credential was injected by the relay (recorded before the request
    /// is sent).
    CredentialInject,
    /// The outcome of a relay use (status, bytes, duration).
    CredentialInjectResult,
    /// A placeholder was sent through the relay to a destination its
    /// credential's grants do not allow.
    AlertPlaceholderMisuse,
    /// A local tool reported a credential's value in its output.
    AlertLeak,
    /// A grant was created.
    GrantCreate,
    /// A grant was revoked.
    GrantRevoke,
    /// A lease was renewed by its holder.
    LeaseRenew,
    /// A lease was released by its holder.
    LeaseRelease,
    /// A lease ran out and was expired by the server's sweeper.
    LeaseExpire,
    /// A lease ended because its credential, grant or principal was
    /// revoked.
    LeaseRevoke,
    /// Leases were listed (recorded when refused).
    LeaseList,
    /// An access request was filed.
    AccessRequestFile,
    /// An access request was approved (a grant created with it).
    AccessRequestApprove,
    /// An access request was denied.
    AccessRequestDeny,
    /// An access request nobody answered in time was expired by the
    /// server's sweeper.
    AccessRequestExpire,
    /// Access requests were read or listed (recorded when refused).
    AccessRequestList,
    /// An access check was asked for.
    PolicyCheck,
    /// The audit log was read.
    AuditQuery,
    /// A verified client identity was bound to no principal (platform
    /// chain).
    AuthenticationFailed,
    /// A principal's denials crossed the tenant's alert threshold.
    AlertRepeatedDenials,
    /// A principal was locked (disabled) automatically after repeated
    /// denials.
    PrincipalLock,
    /// Calls of a principal were refused by a rate limit (counted per
    /// window, not one event a call).
    RateLimited,
    /// A text was scanned for leaked secrets (the findings counted, never
    /// the text).
    ScanText,
    /// The rotation monitor marked a credential past its `expires_at` as
    /// expired.
    CredentialExpire,
    /// The rotation monitor reminded the tenant of a credential due soon,
    /// overdue or expired (once per window).
    CredentialRotationReminder,
    /// The rotation status overview was read (recorded when refused).
    RotationOverview,
    /// Every tenant KEK was re-wrapped under a new root key (platform
    /// chain).
    KeyRotateRoot,
    /// A tenant's old KEK version, no longer wrapping any data key, was
    /// deleted.
    TenantKeyRetire,
    /// A tenant was exported (an encrypted export file was written).
    TenantExport,
    /// A tenant was restored from an export (recorded in the platform
    /// chain and, after the imported head, in the tenant's chain).
    TenantImport,
    /// The notifier's sender made one attempt at a webhook delivery
    /// (delivered, failed and retried, or given up), recorded with the
    /// attempt.
    NotificationDelivery,
    /// Anything else (named in `reason_code`).
    Other,
}

impl Action {
    /// Every action.
    pub const ALL: [Action; 60] = [
        Self::TenantCreate,
        Self::TenantStatus,
        Self::TenantSettings,
        Self::TenantKeyRotate,
        Self::TenantNamespaces,
        Self::PrincipalCreate,
        Self::PrincipalGet,
        Self::PrincipalList,
        Self::PrincipalStatus,
        Self::PrincipalUpdate,
        Self::PrincipalEmergencyRevoke,
        Self::BindingCreate,
        Self::BindingList,
        Self::BindingDelete,
        Self::EnvironmentCreate,
        Self::EnvironmentDelete,
        Self::CredentialCreate,
        Self::CredentialGet,
        Self::CredentialList,
        Self::CredentialReveal,
        Self::CredentialRotate,
        Self::CredentialRollback,
        Self::CredentialRevoke,
        Self::CredentialDestroy,
        Self::CredentialUpdate,
        Self::CredentialEmergencyRevoke,
        Self::CredentialInject,
        Self::CredentialInjectResult,
        Self::AlertPlaceholderMisuse,
        Self::AlertLeak,
        Self::GrantCreate,
        Self::GrantRevoke,
        Self::LeaseRenew,
        Self::LeaseRelease,
        Self::LeaseExpire,
        Self::LeaseRevoke,
        Self::LeaseList,
        Self::AccessRequestFile,
        Self::AccessRequestApprove,
        Self::AccessRequestDeny,
        Self::AccessRequestExpire,
        Self::AccessRequestList,
        Self::PolicyCheck,
        Self::AuditQuery,
        Self::AuthenticationFailed,
        Self::AlertRepeatedDenials,
        Self::PrincipalLock,
        Self::RateLimited,
        Self::ScanText,
        Self::CredentialExpire,
        Self::CredentialRotationReminder,
        Self::RotationOverview,
        Self::KeyRotateRoot,
        Self::TenantKeyRetire,
        Self::TenantExport,
        Self::TenantImport,
        Self::Other,
        Self::TenantShred,
        Self::CredentialTest,
        Self::NotificationDelivery,
    ];

    /// Stable text form.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::TenantCreate => "tenant.create",
            Self::TenantStatus => "tenant.status",
            Self::TenantSettings => "tenant.settings",
            Self::TenantKeyRotate => "tenant.key_rotate",
            Self::TenantNamespaces => "tenant.namespaces",
            Self::TenantShred => "tenant.shred",
            Self::CredentialTest => "credential.test",
            Self::PrincipalCreate => "principal.create",
            Self::PrincipalGet => "principal.get",
            Self::PrincipalList => "principal.list",
            Self::PrincipalStatus => "principal.status",
            Self::PrincipalUpdate => "principal.update",
            Self::PrincipalEmergencyRevoke => "principal.emergency_revoke",
            Self::BindingCreate => "binding.create",
            Self::BindingList => "binding.list",
            Self::BindingDelete => "binding.delete",
            Self::EnvironmentCreate => "environment.create",
            Self::EnvironmentDelete => "environment.delete",
            Self::CredentialCreate => "credential.create",
            Self::CredentialGet => "credential.get",
            Self::CredentialList => "credential.list",
            Self::CredentialReveal => "credential.reveal",
            Self::CredentialRotate => "credential.rotate",
            Self::CredentialRollback => "credential.rollback",
            Self::CredentialRevoke => "credential.revoke",
            Self::CredentialDestroy => "credential.destroy",
            Self::CredentialUpdate => "credential.update",
            Self::CredentialEmergencyRevoke => "credential.emergency_revoke",
            Self::CredentialInject => "credential.inject",
            Self::CredentialInjectResult => "credential.inject_result",
            Self::AlertPlaceholderMisuse => "alert.placeholder_misuse",
            Self::AlertLeak => "alert.leak",
            Self::GrantCreate => "grant.create",
            Self::GrantRevoke => "grant.revoke",
            Self::LeaseRenew => "lease.renew",
            Self::LeaseRelease => "lease.release",
            Self::LeaseExpire => "lease.expire",
            Self::LeaseRevoke => "lease.revoke",
            Self::LeaseList => "lease.list",
            Self::AccessRequestFile => "access_request.file",
            Self::AccessRequestApprove => "access_request.approve",
            Self::AccessRequestDeny => "access_request.deny",
            Self::AccessRequestExpire => "access_request.expire",
            Self::AccessRequestList => "access_request.list",
            Self::PolicyCheck => "policy.check",
            Self::AuditQuery => "audit.query",
            Self::AuthenticationFailed => "auth.failed",
            Self::AlertRepeatedDenials => "alert.repeated_denials",
            Self::PrincipalLock => "principal.lock",
            Self::RateLimited => "rate_limited",
            Self::ScanText => "scan.text",
            Self::CredentialExpire => "credential.expire",
            Self::CredentialRotationReminder => "credential.rotation_reminder",
            Self::RotationOverview => "rotation.overview",
            Self::KeyRotateRoot => "key.rotate_root",
            Self::TenantKeyRetire => "tenant.key_retire",
            Self::TenantExport => "tenant.export",
            Self::TenantImport => "tenant.import",
            Self::NotificationDelivery => "notification.delivery",
            Self::Other => "other",
        }
    }

    /// Parses the stable text form.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == text)
    }

    /// Whether an allowed event of this action records a change of stored
    /// state (so caches of the tenant must be refreshed), as opposed to a
    /// read, a use or a check.
    pub const fn changes_state(&self) -> bool {
        !matches!(
            self,
            Self::PrincipalGet
                | Self::PrincipalList
                | Self::BindingList
                | Self::CredentialGet
                | Self::CredentialList
                | Self::CredentialReveal
                | Self::CredentialInject
                | Self::CredentialTest
                | Self::LeaseRenew
                | Self::LeaseRelease
                | Self::LeaseExpire
                | Self::LeaseRevoke
                | Self::LeaseList
                | Self::AccessRequestFile
                | Self::AccessRequestList
                | Self::CredentialInjectResult
                | Self::AlertPlaceholderMisuse
                | Self::AlertLeak
                | Self::PolicyCheck
                | Self::AuditQuery
                | Self::AuthenticationFailed
                | Self::AlertRepeatedDenials
                | Self::RateLimited
                | Self::ScanText
                | Self::CredentialRotationReminder
                | Self::RotationOverview
                | Self::TenantExport
                | Self::NotificationDelivery
        )
    }
}

/// How the attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Outcome {
    /// Done.
    Allowed,
    /// Refused by policy.
    Denied,
    /// Failed.
    Error,
}

impl Outcome {
    /// Stable text form.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Denied => "denied",
            Self::Error => "error",
        }
    }

    /// Parses the stable text form.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "allowed" => Some(Self::Allowed),
            "denied" => Some(Self::Denied),
            "error" => Some(Self::Error),
            _ => None,
        }
    }
}

/// An event before the store links it into the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditDraft {
    /// Event id.
    pub id: EventId,
    /// When it happened.
    pub at: Timestamp,
    /// The acting principal (none for platform operations by an operator
    /// without a tenant principal).
    pub principal: Option<PrincipalId>,
    /// The acting principal's name, or the platform operator's identity.
    pub actor: String,
    /// End user the caller acted for.
    pub on_behalf_of: Option<String>,
    /// What was done.
    pub action: Action,
    /// Credential involved.
    pub credential: Option<CredentialId>,
    /// Its name (or the name asked for).
    pub credential_name: Option<String>,
    /// Version involved.
    pub version: Option<u32>,
    /// Environment involved.
    pub environment: Option<String>,
    /// The stated purpose.
    pub purpose: Option<String>,
    /// How it ended.
    pub outcome: Outcome,
    /// A stable reason code (`ALLOWED_BY_GRANT`, `NO_MATCHING_GRANT`, ...).
    pub reason_code: String,
    /// Caller's address.
    pub peer: Option<String>,
    /// The request id.
    pub request_id: Option<String>,
    /// Trace id.
    pub trace_id: Option<String>,
    /// Further non-secret details (target ids, a lease, counts), typed.
    pub detail: Option<AuditDetail>,
}

/// Replaces each NUL of `text` with U+FFFD.
fn replace_nul_in(text: &mut String) {
    if text.contains('\0') {
        *text = text.replace('\0', "\u{FFFD}");
    }
}

impl AuditDraft {
    /// Replaces NUL in every text field with U+FFFD.
    fn replace_nul(&mut self) {
        let Self {
            id: _,
            at: _,
            principal: _,
            actor,
            on_behalf_of,
            action: _,
            credential: _,
            credential_name,
            version: _,
            environment,
            purpose,
            outcome: _,
            reason_code,
            peer,
            request_id,
            trace_id,
            // Typed; its encoding escapes NUL.
            detail: _,
        } = self;
        replace_nul_in(actor);
        replace_nul_in(reason_code);
        for text in [
            on_behalf_of,
            credential_name,
            environment,
            purpose,
            peer,
            request_id,
            trace_id,
        ]
        .into_iter()
        .flatten()
        {
            replace_nul_in(text);
        }
    }

    /// A draft with the given action and outcome, now, everything else empty.
    pub fn new(action: Action, outcome: Outcome, reason_code: impl Into<String>) -> Self {
        Self::new_at(action, outcome, reason_code, Timestamp::now())
    }

    /// A draft with the given action and outcome at `at` (the time of the
    /// operation's clock), everything else empty.
    pub fn new_at(
        action: Action,
        outcome: Outcome,
        reason_code: impl Into<String>,
        at: Timestamp,
    ) -> Self {
        Self {
            id: EventId::generate(),
            at,
            principal: None,
            actor: String::new(),
            on_behalf_of: None,
            action,
            credential: None,
            credential_name: None,
            version: None,
            environment: None,
            purpose: None,
            outcome,
            reason_code: reason_code.into(),
            peer: None,
            request_id: None,
            trace_id: None,
            detail: None,
        }
    }

    /// Links the draft into the chain as event `sequence` of `tenant` after
    /// an event with hash `prev_hash`.
    ///
    /// Every sealed event can be stored: a NUL in any text (which
    /// PostgreSQL's `text` refuses, failing the whole commit) becomes U+FFFD
    /// before the hash is taken. Requests with NUL are refused at the edge;
    /// this keeps a record that slipped through from costing the others of
    /// its batch, or itself, its place in the chain.
    ///
    /// The event is of the current format ([`EventFormat::CURRENT`]); its
    /// detail is encoded once, for the hash and for storage.
    pub fn seal(mut self, tenant: TenantId, sequence: u64, prev_hash: [u8; 32]) -> AuditEvent {
        self.replace_nul();
        let detail_text = self.detail.as_ref().map(AuditDetail::encode);
        let mut event = AuditEvent {
            tenant,
            sequence,
            format: EventFormat::CURRENT,
            draft: self,
            detail_text,
            prev_hash,
            hash: [0u8; 32],
        };
        event.hash = event.hash_over(event.detail_text.as_deref());
        event
    }
}

/// The rule an event was written and hashed under, stored with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventFormat {
    /// Earlier builds: the detail is free text, hashed as it is, under the
    /// domain tag `strongroom/audit/v1`.
    V1,
    /// The detail is an [`AuditDetail`], hashed as its canonical encoding,
    /// under the domain tag `strongroom/audit/v2`.
    V2,
}

impl EventFormat {
    /// The format new events are written in.
    pub const CURRENT: EventFormat = EventFormat::V2;

    /// The number stored.
    pub const fn number(&self) -> i32 {
        match self {
            Self::V1 => 1,
            Self::V2 => 2,
        }
    }

    /// The format of a stored number.
    pub fn from_number(number: i32) -> Option<Self> {
        match number {
            1 => Some(Self::V1),
            2 => Some(Self::V2),
            _ => None,
        }
    }

    const fn domain_tag(&self) -> &'static [u8] {
        match self {
            Self::V1 => b"strongroom/audit/v1",
            Self::V2 => b"strongroom/audit/v2",
        }
    }
}

/// An event as stored: a draft linked into its tenant's chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// Owning tenant.
    pub tenant: TenantId,
    /// Position in the tenant's chain, from 1.
    pub sequence: u64,
    /// The rule it was hashed under.
    pub format: EventFormat,
    /// The event's fields (for a format-1 event, `draft.detail` is none: its
    /// detail is the free text in `detail_text`).
    pub draft: AuditDraft,
    /// The detail as recorded and stored: for format 2 the canonical
    /// encoding of `draft.detail`, for format 1 the text earlier builds
    /// wrote.
    pub detail_text: Option<String>,
    /// Hash of the previous event (`GENESIS_HASH` for the first).
    pub prev_hash: [u8; 32],
    /// Hash of this event.
    pub hash: [u8; 32],
}

impl AuditEvent {
    /// The hash this event should have: SHA-256 over its format's domain
    /// tag, the previous hash, the tenant, the sequence and every field, each
    /// length-prefixed so no two different events encode alike. The detail
    /// is, for format 2, the canonical encoding of the typed `draft.detail`
    /// (so a stored text that is not that encoding does not verify); for
    /// format 1, the recorded text.
    pub fn compute_hash(&self) -> [u8; 32] {
        match self.format {
            EventFormat::V1 => self.hash_over(self.detail_text.as_deref()),
            EventFormat::V2 => {
                let encoded = self.draft.detail.as_ref().map(AuditDetail::encode);
                self.hash_over(encoded.as_deref())
            }
        }
    }

    /// Whether the recorded detail text is what the hash covers: for
    /// format 2, the canonical encoding of the typed detail (format 1 hashes
    /// the text itself).
    pub fn detail_text_is_its_encoding(&self) -> bool {
        match self.format {
            EventFormat::V1 => self.draft.detail.is_none(),
            EventFormat::V2 => {
                self.detail_text.as_deref()
                    == self
                        .draft
                        .detail
                        .as_ref()
                        .map(AuditDetail::encode)
                        .as_deref()
            }
        }
    }

    fn hash_over(&self, detail: Option<&str>) -> [u8; 32] {
        let d = &self.draft;
        let mut h = Hasher::new();
        h.bytes(self.format.domain_tag());
        h.bytes(&self.prev_hash);
        h.bytes(self.tenant.as_uuid().as_bytes());
        h.bytes(&self.sequence.to_be_bytes());
        h.bytes(d.id.as_uuid().as_bytes());
        h.bytes(&d.at.as_micros().to_be_bytes());
        let principal = d.principal.map(|p| p.as_uuid());
        h.opt(principal.as_ref().map(|p| p.as_bytes().as_slice()));
        h.bytes(d.actor.as_bytes());
        h.opt(d.on_behalf_of.as_deref().map(str::as_bytes));
        h.bytes(d.action.as_str().as_bytes());
        let credential = d.credential.map(|c| c.as_uuid());
        h.opt(credential.as_ref().map(|c| c.as_bytes().as_slice()));
        h.opt(d.credential_name.as_deref().map(str::as_bytes));
        let version = d.version.map(u32::to_be_bytes);
        h.opt(version.as_ref().map(<[u8; 4]>::as_slice));
        h.opt(d.environment.as_deref().map(str::as_bytes));
        h.opt(d.purpose.as_deref().map(str::as_bytes));
        h.bytes(d.outcome.as_str().as_bytes());
        h.bytes(d.reason_code.as_bytes());
        h.opt(d.peer.as_deref().map(str::as_bytes));
        h.opt(d.request_id.as_deref().map(str::as_bytes));
        h.opt(d.trace_id.as_deref().map(str::as_bytes));
        h.opt(detail.map(str::as_bytes));
        let out = h.finish();
        let mut hash = [0u8; 32];
        hash.copy_from_slice(out.as_ref());
        hash
    }
}

/// Where a chain verification stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    /// The sequence number of the first event that does not verify (or that
    /// is missing).
    pub sequence: u64,
    /// What is wrong.
    pub reason: &'static str,
}

/// Incremental verifier of a tenant's chain; feed events in sequence order.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    expected_sequence: u64,
    prev_hash: [u8; 32],
    checked: u64,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self {
            expected_sequence: 1,
            prev_hash: GENESIS_HASH,
            checked: 0,
        }
    }
}

impl ChainVerifier {
    /// A verifier that continues a chain at `next_sequence`, after an event
    /// whose hash is `prev_hash` (already verified, or checked by the
    /// caller).
    pub fn resume(next_sequence: u64, prev_hash: [u8; 32]) -> Self {
        Self {
            expected_sequence: next_sequence,
            prev_hash,
            checked: 0,
        }
    }

    /// The sequence the next event must have.
    pub fn expected_sequence(&self) -> u64 {
        self.expected_sequence
    }

    /// Checks the next event: its sequence follows, it links to the previous
    /// hash, and its own hash matches its contents.
    pub fn push(&mut self, event: &AuditEvent) -> Result<(), ChainBreak> {
        if event.sequence != self.expected_sequence {
            return Err(ChainBreak {
                sequence: self.expected_sequence,
                reason: "event missing or out of order",
            });
        }
        if event.prev_hash != self.prev_hash {
            return Err(ChainBreak {
                sequence: event.sequence,
                reason: "link to the previous event does not match",
            });
        }
        if event.compute_hash() != event.hash || !event.detail_text_is_its_encoding() {
            return Err(ChainBreak {
                sequence: event.sequence,
                reason: "event contents do not match its hash",
            });
        }
        self.prev_hash = event.hash;
        self.expected_sequence += 1;
        self.checked += 1;
        Ok(())
    }

    /// Events verified so far.
    pub fn checked(&self) -> u64 {
        self.checked
    }

    /// Hash of the last verified event (the chain head).
    pub fn head(&self) -> [u8; 32] {
        self.prev_hash
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<AuditEvent> {
        let tenant = TenantId::generate();
        let mut prev = GENESIS_HASH;
        (1..=n)
            .map(|seq| {
                let mut d = AuditDraft::new(
                    Action::CredentialReveal,
                    Outcome::Allowed,
                    "ALLOWED_BY_GRANT",
                );
                d.credential_name = Some(format!("c{seq}"));
                let e = d.seal(tenant, seq, prev);
                prev = e.hash;
                e
            })
            .collect()
    }

    fn verify(events: &[AuditEvent]) -> Result<u64, ChainBreak> {
        let mut v = ChainVerifier::default();
        for e in events {
            v.push(e)?;
        }
        Ok(v.checked())
    }

    fn uuid(n: u128) -> uuid::Uuid {
        uuid::Uuid::from_u128(n)
    }

    /// Event `sequence` of a fixed test chain, without its detail.
    fn fixed_draft(sequence: u64) -> AuditDraft {
        let mut d = AuditDraft::new_at(
            Action::CredentialReveal,
            Outcome::Allowed,
            "ALLOWED_BY_GRANT",
            Timestamp::from_micros(1_700_000_000_000_000 + sequence as i64),
        );
        d.id = EventId::from_uuid(uuid(0xe0 + u128::from(sequence)));
        d.principal = Some(PrincipalId::from_uuid(uuid(2)));
        d.actor = "alice".into();
        d.credential = Some(CredentialId::from_uuid(uuid(3)));
        d.credential_name = Some("db/password".into());
        d.version = Some(4);
        d.environment = Some("prod".into());
        d.peer = Some("127.0.0.1:5000".into());
        d
    }

    /// Event 1 as an earlier build wrote it: format 1, free-text detail.
    fn format_1_event() -> AuditEvent {
        let mut e = AuditEvent {
            tenant: TenantId::from_uuid(uuid(0xa1)),
            sequence: 1,
            format: EventFormat::V1,
            draft: fixed_draft(1),
            detail_text: Some("lease=00000000-0000-0000-0000-0000000000c1 ttl_secs=300".into()),
            prev_hash: GENESIS_HASH,
            hash: [0u8; 32],
        };
        e.hash = e.compute_hash();
        e
    }

    /// Event 2, written now after event 1: format 2, a lease.
    fn format_2_event(prev_hash: [u8; 32]) -> AuditEvent {
        let mut d = fixed_draft(2);
        d.detail = Some(AuditDetail::Lease {
            lease_id: crate::ids::LeaseId::from_uuid(uuid(0xc2)),
            ttl_secs: 300,
            grant: None,
        });
        d.seal(TenantId::from_uuid(uuid(0xa1)), 2, prev_hash)
    }

    /// The hashes of both formats are pinned (computed independently of
    /// this code): format 1 as earlier builds wrote it, so their chains keep
    /// verifying; format 2 so its encoding cannot drift.
    #[test]
    fn both_formats_hash_as_pinned() {
        let first = format_1_event();
        assert_eq!(
            hex::encode(first.hash),
            "55812eb95f5e18d2e0d1251ee5d28e8f10e24ede3123468ea8817843935444e5"
        );
        let second = format_2_event(first.hash);
        assert_eq!(second.format, EventFormat::V2);
        assert_eq!(
            second.detail_text.as_deref(),
            Some(
                r#"{"v":1,"kind":"lease","lease_id":"00000000-0000-0000-0000-0000000000c2","ttl_secs":300,"grant":null}"#
            )
        );
        assert_eq!(
            hex::encode(second.hash),
            "696b28abc73c167678d1a5d03493f48ef3539e46bf94086b4f1241a949cb6f94"
        );
    }

    #[test]
    fn a_chain_of_format_1_then_format_2_verifies_and_tampering_is_detected() {
        let first = format_1_event();
        let second = format_2_event(first.hash);
        let third = format_2_event(second.hash);
        let third = {
            let mut d = third.draft;
            d.id = EventId::from_uuid(uuid(0xe3));
            d.seal(second.tenant, 3, second.hash)
        };
        let intact = vec![first, second, third];
        assert_eq!(verify(&intact), Ok(3));

        let mut v1_text = intact.clone();
        v1_text[0].detail_text = Some("lease=x ttl_secs=3000".into());
        assert_eq!(verify(&v1_text).unwrap_err().sequence, 1);

        let mut v2_typed = intact.clone();
        v2_typed[1].draft.detail = Some(AuditDetail::Lease {
            lease_id: crate::ids::LeaseId::from_uuid(uuid(0xc2)),
            ttl_secs: 3000,
            grant: None,
        });
        assert_eq!(verify(&v2_typed).unwrap_err().sequence, 2);

        let mut v2_text = intact.clone();
        v2_text[1].detail_text = v2_text[1]
            .detail_text
            .as_ref()
            .map(|t| t.replace("300", "3000"));
        assert_eq!(verify(&v2_text).unwrap_err().sequence, 2);

        // Claiming the other format changes the domain tag: no match.
        let mut v1_as_v2 = intact.clone();
        v1_as_v2[0].format = EventFormat::V2;
        assert_eq!(verify(&v1_as_v2).unwrap_err().sequence, 1);
        let mut v2_as_v1 = intact;
        v2_as_v1[2].format = EventFormat::V1;
        v2_as_v1[2].draft.detail = None;
        assert_eq!(verify(&v2_as_v1).unwrap_err().sequence, 3);
    }

    #[test]
    fn intact_chain_verifies() {
        assert_eq!(verify(&chain(5)), Ok(5));
    }

    #[test]
    fn edit_removal_insertion_and_reorder_are_detected() {
        let mut edited = chain(5);
        edited[2].draft.outcome = Outcome::Denied;
        assert_eq!(verify(&edited).unwrap_err().sequence, 3);

        let mut removed = chain(5);
        removed.remove(1);
        assert_eq!(verify(&removed).unwrap_err().sequence, 2);

        let mut reordered = chain(5);
        reordered.swap(1, 2);
        assert_eq!(verify(&reordered).unwrap_err().sequence, 2);

        // A forged event re-sealed with correct hash but wrong link.
        let mut forged = chain(5);
        let d = forged[3].draft.clone();
        forged[3] = d.seal(forged[3].tenant, 4, [7u8; 32]);
        assert_eq!(verify(&forged).unwrap_err().sequence, 4);
    }
}
