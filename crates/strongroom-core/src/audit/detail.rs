//! What an audit event records beyond its columns: a typed value per kind of
//! event, with one canonical encoding that is hashed into the chain, stored,
//! and shown to clients as it is.
//!
//! The encoding is compact JSON: `{"v":1,"kind":"<kind>",<fields>}`, the
//! version first, then the kind, then the kind's fields in the order they
//! are declared here (every field present, `null` when absent). Decoding
//! accepts only that exact form: [`AuditDetail::decode`] re-encodes what it
//! read and refuses any other text, so one value has one encoding and the
//! hash over the text is a hash over the value.
//!
//! No secret value can be recorded: the fields are ids, names, counts,
//! flags, roles and statuses, and the reasons callers gave (text they sent
//! to be recorded).

use serde::{Deserialize, Serialize};

use crate::ids::{AccessRequestId, BindingId, DeliveryId, GrantId, LeaseId, PrincipalId, TenantId};
use crate::lease::LeaseEnd;
use crate::notify::{DeliveryFailure, DeliveryResult};
use crate::policy::Capability;
use crate::principal::{PrincipalStatus, Role};
use crate::tenant::TenantStatus;
use crate::time::Timestamp;

/// The version of the encoding, its `"v"` field.
pub const DETAIL_ENCODING_VERSION: u32 = 1;

/// The detail of an audit event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AuditDetail {
    /// A reveal's lease: its id, its TTL and the grant that allowed it (none
    /// when the role did).
    Lease {
        /// The lease.
        lease_id: LeaseId,
        /// Its TTL in seconds.
        ttl_secs: u64,
        /// The grant that allowed the reveal.
        grant: Option<GrantId>,
    },
    /// A lease was renewed by its holder: its new expiry.
    LeaseRenewed {
        /// The lease.
        lease_id: LeaseId,
        /// The time asked for (or the lease's TTL), in seconds.
        ttl_secs: u64,
        /// When it now ends unless renewed again.
        expires_at: Timestamp,
    },
    /// A lease ended: released, expired or revoked.
    LeaseEnded {
        /// The lease.
        lease_id: LeaseId,
        /// The principal that held it.
        holder: PrincipalId,
        /// When its use ended (for an expired lease, when it ran out,
        /// which may be before the sweeper recorded it).
        ended_at: Timestamp,
        /// Why it ended.
        end: LeaseEnd,
    },
    /// A principal was created with a role.
    Principal {
        /// The principal.
        principal: PrincipalId,
        /// Its role.
        role: Role,
    },
    /// A principal was enabled or disabled by an administrator.
    PrincipalStatus {
        /// The principal.
        principal: PrincipalId,
        /// Its new status.
        status: PrincipalStatus,
        /// The reason given.
        reason: String,
    },
    /// A principal's name, role, environments or description were changed
    /// by an administrator: the fields changed, and the role and
    /// environments after the change.
    PrincipalUpdated {
        /// The principal.
        principal: PrincipalId,
        /// The fields the update named (its mask's paths).
        fields: Vec<String>,
        /// Its role afterwards.
        role: Role,
        /// Its environments afterwards (empty: all).
        environments: Vec<String>,
        /// Whether the change narrowed what it may reach (its leases end).
        narrowed: bool,
    },
    /// A principal was revoked in an emergency: what the revoke cut.
    PrincipalEmergencyRevoke {
        /// The principal.
        principal: PrincipalId,
        /// The reason given.
        reason: String,
        /// Grants of the principal revoked.
        grants_revoked: u32,
        /// Leases of the principal ended.
        leases_ended: u32,
        /// Identity bindings of the principal deleted.
        bindings_deleted: u32,
    },
    /// A credential's metadata was changed (UpdateCredential): the fields
    /// named, never their values.
    CredentialUpdated {
        /// The fields the update named (its mask's paths).
        fields: Vec<String>,
        /// Whether the change narrowed the credential's use (an earlier
        /// expiry, another owner, service or injection template): its
        /// leases end.
        narrowed: bool,
    },
    /// A credential was revoked in an emergency: what the revoke cut.
    CredentialEmergencyRevoke {
        /// The reason given.
        reason: String,
        /// The version that was current when the revoke began.
        revoked_version: u32,
        /// The generated version made current, when the revoke rotated
        /// the credential instead of revoking it as a whole (the revoked
        /// version's value is then destroyed).
        new_version: Option<u32>,
        /// Leases of the credential ended.
        leases_ended: u32,
        /// The grants that allowed the leases ended (kept: a grant's
        /// selector may reach other credentials).
        grants: Vec<GrantId>,
    },
    /// A principal was disabled automatically after repeated denials.
    PrincipalLock {
        /// The principal.
        principal: PrincipalId,
        /// The denials in the window that crossed the threshold.
        denials: u32,
    },
    /// An identity binding was created for a principal.
    Binding {
        /// The binding.
        binding: BindingId,
        /// The principal it binds.
        principal: PrincipalId,
    },
    /// An identity binding was deleted.
    BindingDeleted {
        /// The binding.
        binding: BindingId,
    },
    /// A binding of an identity outside the tenant's namespaces was
    /// refused.
    IdentityAttempt {
        /// The identity pattern asked for, in its text form.
        identity: String,
        /// The principal it was to bind.
        principal: PrincipalId,
    },
    /// A tenant's identity namespaces were assigned.
    Namespaces {
        /// The namespaces, in their text form.
        identity_namespaces: Vec<String>,
    },
    /// A tenant was created.
    Tenant {
        /// Its name.
        name: String,
    },
    /// A tenant was suspended, resumed or shredded.
    TenantStatus {
        /// Its new status.
        status: TenantStatus,
        /// The reason given.
        reason: String,
    },
    /// A tenant was crypto-shredded (platform chain): its name, the reason
    /// given, what was destroyed, and whether its metadata and audit chain
    /// were purged too.
    TenantShred {
        /// The tenant's id.
        tenant: TenantId,
        /// Its name.
        name: String,
        /// The reason given.
        reason: String,
        /// Wrapped key-encryption key versions deleted.
        keys_destroyed: u32,
        /// Sealed values deleted (credential versions and the notifier's
        /// signing secret).
        values_destroyed: u32,
        /// Whether metadata and the tenant's audit chain were deleted too.
        purged: bool,
    },
    /// The reason given for a revoke or a destroy.
    Reason {
        /// The reason.
        reason: String,
    },
    /// A credential was rotated.
    Rotation {
        /// Whether strongroom generated the new value.
        generated: bool,
        /// The reason given, if any.
        reason: Option<String>,
    },
    /// A grant was created.
    Grant {
        /// The grant.
        grant: GrantId,
        /// What it allows, as listed.
        capabilities: Vec<Capability>,
    },
    /// An access request was filed: what it asks for.
    AccessRequestFiled {
        /// The request.
        request: AccessRequestId,
        /// The capability asked for.
        capability: Capability,
        /// The credentials asked for (an exact name or a prefix).
        selector: String,
        /// The environments asked for.
        environments: Vec<String>,
        /// How long, in seconds.
        duration_secs: u64,
        /// When it expires unless decided.
        expires_at: Timestamp,
    },
    /// An access request was approved, denied or expired.
    AccessRequestDecided {
        /// The request.
        request: AccessRequestId,
        /// Who filed it.
        requester: PrincipalId,
        /// The grant an approval created.
        grant: Option<GrantId>,
        /// When that grant ends.
        grant_expires_at: Option<Timestamp>,
        /// The admin's reason.
        reason: String,
    },
    /// A grant was revoked.
    GrantRevoked {
        /// The grant.
        grant: GrantId,
        /// The reason given.
        reason: String,
    },
    /// The first call of a principal a rate limit refused in a window.
    RateLimitFirst {
        /// The call refused.
        rpc: String,
        /// How long the caller was told to wait, in milliseconds.
        retry_after_ms: u64,
    },
    /// The calls a rate limit refused in one window, counted when it ended.
    RateLimitWindow {
        /// Calls refused in the window.
        refused: u64,
        /// The window's length in seconds.
        window_secs: u64,
    },
    /// A principal's denials crossed the tenant's alert threshold.
    DenialAlert {
        /// The principal.
        principal: PrincipalId,
        /// Its denials in the window.
        denials: u32,
        /// The window's length in seconds.
        window_secs: u32,
        /// The tenant's threshold.
        threshold: u32,
        /// Whether the principal is locked for it.
        lock: bool,
    },
    /// Signing a chain's head was refused: it does not extend the head
    /// signed last.
    CheckpointRefused {
        /// The tenant whose chain it is (none for the platform chain).
        tenant: Option<TenantId>,
        /// The head's sequence.
        head_sequence: u64,
        /// The sequence of the head signed last, if any.
        last_signed_sequence: Option<u64>,
        /// What is wrong.
        problem: String,
    },
    /// A text scan: how many findings it reported (never the text, nor what
    /// matched).
    Scan {
        /// Findings reported to the caller.
        findings: u64,
        /// Of those, findings of stored values.
        stored: u64,
        /// The scanned text's length in bytes.
        text_bytes: u64,
    },
    /// Failed authentications of one identity, coalesced into one event.
    FailedAuthentications {
        /// How many.
        count: u64,
    },
    /// A relay use, recorded before the request is sent: where it goes
    /// (never query values, headers or bodies) and the grant that allows
    /// it. On a denial, the grant is absent.
    Inject {
        /// The grant whose destination allows it.
        grant: Option<GrantId>,
        /// Destination host, with `:port` if not the default.
        host: String,
        /// HTTP method.
        method: String,
        /// Normalised path, without the query.
        path: String,
    },
    /// The outcome of a relay use.
    InjectResult {
        /// The grant whose destination allowed it.
        grant: Option<GrantId>,
        /// Destination host, with `:port` if not the default.
        host: String,
        /// HTTP method.
        method: String,
        /// Normalised path, without the query.
        path: String,
        /// The destination's status, if it answered.
        status: Option<u16>,
        /// Request body bytes sent.
        bytes_sent: u64,
        /// Response body bytes received.
        bytes_received: u64,
        /// Milliseconds from authorization to the end of the response.
        duration_ms: u64,
        /// The relay's reason code if it answered itself (timeout,
        /// unreachable destination, body too large).
        relay_error: Option<String>,
    },
    /// A placeholder sent to a destination no grant of its credential
    /// allows.
    PlaceholderMisuse {
        /// The grants giving the caller inject on the credential.
        grants: Vec<GrantId>,
        /// Destination host, with `:port` if not the default.
        host: String,
        /// HTTP method.
        method: String,
        /// Normalised path, without the query.
        path: String,
        /// Whether the grants were revoked for it.
        revoked: bool,
    },
    /// A leak a local tool reported.
    Leak {
        /// The grants giving the caller inject or reveal on the credential.
        grants: Vec<GrantId>,
        /// Where it was seen (`stdout`, `stderr`).
        channel: String,
        /// The form it was seen in (`plain`, `base64`, ...).
        form: String,
        /// Whether the grants were revoked for it.
        revoked: bool,
    },
    /// The rotation monitor reminded the tenant of a credential: which
    /// reminder, the date it is about, and the notifier delivery enqueued
    /// with it (none without a notifier).
    RotationReminder {
        /// `due_soon`, `overdue` or `expired`.
        reminder: String,
        /// The rotation due date (due soon, overdue) or the expiry
        /// (expired) the reminder is about: its window.
        window: Timestamp,
        /// The delivery enqueued for the tenant's notifier.
        delivery: Option<DeliveryId>,
    },
    /// One attempt of the notifier's sender at a webhook delivery: which
    /// delivery and notice, which attempt, the receiver's host (never the
    /// URL's path or query, the body, the signature or the secret), and
    /// what it came to.
    NotificationDelivery {
        /// The delivery (the same on every attempt).
        delivery: DeliveryId,
        /// The notice's event (`access_request.filed`,
        /// `rotation.due_soon`, ...).
        notice: String,
        /// The attempt's number, from 1.
        attempt: u32,
        /// The receiver's host name (or address), as in the notifier URL.
        host: String,
        /// Delivered, failed (retried later) or given up.
        result: DeliveryResult,
        /// The receiver's HTTP status, if it answered.
        status: Option<u16>,
        /// Why it failed, classified; none when delivered.
        failure: Option<DeliveryFailure>,
    },
    /// A tenant was restored from an export file: its name, and the file's
    /// SHA-256 (hex), to match against the export's summary.
    TenantImport {
        /// Its name.
        name: String,
        /// SHA-256 of the whole file, hex.
        file_sha256: String,
    },
}

/// Why a text is not an audit detail's canonical encoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DetailError {
    /// Not JSON of any known kind, or a field is missing or mistyped.
    #[error("not an audit detail: {0}")]
    Malformed(String),
    /// An encoding version this build does not know.
    #[error("unknown audit detail version {0}")]
    Version(u32),
    /// A known detail, but not in its one canonical form.
    #[error("the audit detail is not in its canonical encoding")]
    NotCanonical,
}

/// Passes everything but the first byte on: the enum's own `{`, replaced
/// by the version's.
struct AfterOpeningBrace<'a> {
    out: &'a mut Vec<u8>,
    skipped: bool,
}

impl std::io::Write for AfterOpeningBrace<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let rest = match buf {
            [_, rest @ ..] if !self.skipped => {
                self.skipped = true;
                rest
            }
            _ => buf,
        };
        self.out.extend_from_slice(rest);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The canonical encoding of [`AuditDetail::Lease`], written directly: the
/// detail of every reveal, so the commonest one by far. The same bytes as
/// the serde path (`a_lease_encodes_as_through_serde`): the version, the
/// kind, then the fields in declared order, ids as lowercase hyphenated
/// UUIDs, an absent grant as `null`.
fn encode_lease(lease_id: LeaseId, ttl_secs: u64, grant: Option<GrantId>) -> String {
    let mut buf = uuid::Uuid::encode_buffer();
    // 112 bytes with a grant and the longest TTL.
    let mut out = String::with_capacity(112);
    out.push_str(r#"{"v":1,"kind":"lease","lease_id":""#);
    out.push_str(lease_id.as_uuid().hyphenated().encode_lower(&mut buf));
    out.push_str(r#"","ttl_secs":"#);
    let mut digits = [0u8; 20];
    out.push_str(u64_decimal(ttl_secs, &mut digits));
    out.push_str(r#","grant":"#);
    match grant {
        Some(g) => {
            out.push('"');
            out.push_str(g.as_uuid().hyphenated().encode_lower(&mut buf));
            out.push_str(r#""}"#);
        }
        None => out.push_str("null}"),
    }
    out
}

/// `n` in decimal, as JSON writes an unsigned integer.
fn u64_decimal(mut n: u64, digits: &mut [u8; 20]) -> &str {
    let mut at = digits.len();
    loop {
        at -= 1;
        // A digit: always below 10.
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&digits[at..]).unwrap_or("0")
}

#[derive(Deserialize)]
struct Versioned {
    v: u32,
    #[serde(flatten)]
    detail: AuditDetail,
}

impl AuditDetail {
    /// The canonical encoding, in one allocation: the bytes hashed into the
    /// chain and stored.
    #[allow(clippy::expect_used)]
    pub fn encode(&self) -> String {
        if let Self::Lease {
            lease_id,
            ttl_secs,
            grant,
        } = self
        {
            return encode_lease(*lease_id, *ttl_secs, *grant);
        }
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(br#"{"v":1,"#);
        let mut rest = AfterOpeningBrace {
            out: &mut out,
            skipped: false,
        };
        // Cannot fail: the writer never does, and every field is a string,
        // a number, a bool, an id, null or a list of those (no map keys).
        serde_json::to_writer(&mut rest, self).expect("an audit detail always serializes");
        // serde_json writes UTF-8 only.
        String::from_utf8(out).expect("serde_json writes UTF-8")
    }

    /// Reads a detail from its canonical encoding; any other text (another
    /// version, other spacing or field order, unknown fields) is refused.
    pub fn decode(text: &str) -> Result<Self, DetailError> {
        let versioned: Versioned =
            serde_json::from_str(text).map_err(|e| DetailError::Malformed(e.to_string()))?;
        if versioned.v != DETAIL_ENCODING_VERSION {
            return Err(DetailError::Version(versioned.v));
        }
        if versioned.detail.encode() != text {
            return Err(DetailError::NotCanonical);
        }
        Ok(versioned.detail)
    }

    /// The lease a reveal began, or a lease event renewed or ended.
    pub fn lease(&self) -> Option<LeaseId> {
        match self {
            Self::Lease { lease_id, .. }
            | Self::LeaseRenewed { lease_id, .. }
            | Self::LeaseEnded { lease_id, .. } => Some(*lease_id),
            _ => None,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn uuid(n: u128) -> uuid::Uuid {
        uuid::Uuid::from_u128(n)
    }

    fn every_kind() -> Vec<AuditDetail> {
        let principal = PrincipalId::from_uuid(uuid(2));
        vec![
            AuditDetail::Lease {
                lease_id: LeaseId::from_uuid(uuid(1)),
                ttl_secs: 300,
                grant: Some(GrantId::from_uuid(uuid(3))),
            },
            AuditDetail::Lease {
                lease_id: LeaseId::from_uuid(uuid(1)),
                ttl_secs: 300,
                grant: None,
            },
            AuditDetail::Principal {
                principal,
                role: Role::Agent,
            },
            AuditDetail::PrincipalStatus {
                principal,
                status: PrincipalStatus::Disabled,
                reason: "left \"the\" team\n\u{0}é".into(),
            },
            AuditDetail::PrincipalUpdated {
                principal,
                fields: vec!["role".into(), "environments".into()],
                role: Role::Viewer,
                environments: vec!["prod".into()],
                narrowed: true,
            },
            AuditDetail::PrincipalLock {
                principal,
                denials: 20,
            },
            AuditDetail::CredentialUpdated {
                fields: vec!["owner".into(), "expires_at".into()],
                narrowed: true,
            },
            AuditDetail::CredentialEmergencyRevoke {
                reason: "key leaked".into(),
                revoked_version: 3,
                new_version: Some(4),
                leases_ended: 2,
                grants: vec![GrantId::from_uuid(uuid(3))],
            },
            AuditDetail::CredentialEmergencyRevoke {
                reason: "key leaked".into(),
                revoked_version: 3,
                new_version: None,
                leases_ended: 0,
                grants: vec![],
            },
            AuditDetail::PrincipalEmergencyRevoke {
                principal,
                reason: "key leaked".into(),
                grants_revoked: 2,
                leases_ended: 3,
                bindings_deleted: 1,
            },
            AuditDetail::Binding {
                binding: BindingId::from_uuid(uuid(4)),
                principal,
            },
            AuditDetail::BindingDeleted {
                binding: BindingId::from_uuid(uuid(4)),
            },
            AuditDetail::IdentityAttempt {
                identity: "spiffe://other/x".into(),
                principal,
            },
            AuditDetail::Namespaces {
                identity_namespaces: vec!["spiffe://a/*".into(), "dns:*.a.example".into()],
            },
            AuditDetail::Tenant {
                name: "acme".into(),
            },
            AuditDetail::TenantStatus {
                status: TenantStatus::Suspended,
                reason: "unpaid".into(),
            },
            AuditDetail::Reason {
                reason: "leaked".into(),
            },
            AuditDetail::Rotation {
                generated: true,
                reason: None,
            },
            AuditDetail::Grant {
                grant: GrantId::from_uuid(uuid(3)),
                capabilities: vec![Capability::ReadMetadata, Capability::Reveal],
            },
            AuditDetail::GrantRevoked {
                grant: GrantId::from_uuid(uuid(3)),
                reason: "done".into(),
            },
            AuditDetail::RateLimitFirst {
                rpc: "RevealCredential".into(),
                retry_after_ms: 250,
            },
            AuditDetail::RateLimitWindow {
                refused: 12,
                window_secs: 60,
            },
            AuditDetail::DenialAlert {
                principal,
                denials: 20,
                window_secs: 60,
                threshold: 20,
                lock: true,
            },
            AuditDetail::CheckpointRefused {
                tenant: Some(TenantId::from_uuid(uuid(5))),
                head_sequence: 7,
                last_signed_sequence: None,
                problem: "the stored head is behind the last signed head".into(),
            },
            AuditDetail::FailedAuthentications { count: 3 },
            AuditDetail::Inject {
                grant: Some(GrantId::from_uuid(uuid(3))),
                host: "api.example.test:8443".into(),
                method: "POST".into(),
                path: "/v1/chat".into(),
            },
            AuditDetail::InjectResult {
                grant: None,
                host: "api.example.test".into(),
                method: "GET".into(),
                path: "/".into(),
                status: Some(200),
                bytes_sent: 1,
                bytes_received: 2,
                duration_ms: 3,
                relay_error: Some("upstream_timeout".into()),
            },
            AuditDetail::PlaceholderMisuse {
                grants: vec![GrantId::from_uuid(uuid(3))],
                host: "evil.test".into(),
                method: "GET".into(),
                path: "/".into(),
                revoked: true,
            },
            AuditDetail::Leak {
                grants: vec![],
                channel: "stdout".into(),
                form: "base64".into(),
                revoked: false,
            },
            AuditDetail::RotationReminder {
                reminder: "due_soon".into(),
                window: Timestamp::from_micros(1_000_000),
                delivery: Some(DeliveryId::from_uuid(uuid(9))),
            },
            AuditDetail::NotificationDelivery {
                delivery: DeliveryId::from_uuid(uuid(10)),
                notice: "access_request.filed".into(),
                attempt: 1,
                host: "hooks.example.com".into(),
                result: DeliveryResult::Failed,
                status: Some(500),
                failure: Some(DeliveryFailure::Status),
            },
            AuditDetail::TenantImport {
                name: "acme".into(),
                file_sha256: "ab".repeat(32),
            },
        ]
    }

    #[test]
    fn every_kind_round_trips_through_its_encoding() {
        for detail in every_kind() {
            let text = detail.encode();
            assert!(text.starts_with(r#"{"v":1,"kind":""#), "{text}");
            assert_eq!(AuditDetail::decode(&text).unwrap(), detail, "{text}");
        }
    }

    /// A delivery attempt's detail names the host only, and its result and
    /// failure class in their stable text forms.
    #[test]
    fn a_delivery_attempt_encodes_its_result_and_class() {
        let attempt = AuditDetail::NotificationDelivery {
            delivery: DeliveryId::from_uuid(uuid(10)),
            notice: "access_request.filed".into(),
            attempt: 8,
            host: "hooks.example.com".into(),
            result: DeliveryResult::GivenUp,
            status: None,
            failure: Some(DeliveryFailure::NotSent),
        };
        assert_eq!(
            attempt.encode(),
            r#"{"v":1,"kind":"notification_delivery","delivery":"00000000-0000-0000-0000-00000000000a","notice":"access_request.filed","attempt":8,"host":"hooks.example.com","result":"given_up","status":null,"failure":"not_sent"}"#
        );
        assert_eq!(DeliveryFailure::NotSent.as_str(), "not_sent");
    }

    /// The encoding is hashed into the chain: it must never change for a
    /// value already recorded.
    #[test]
    fn the_encoding_is_pinned() {
        let lease = AuditDetail::Lease {
            lease_id: LeaseId::from_uuid(uuid(1)),
            ttl_secs: 300,
            grant: None,
        };
        assert_eq!(
            lease.encode(),
            r#"{"v":1,"kind":"lease","lease_id":"00000000-0000-0000-0000-000000000001","ttl_secs":300,"grant":null}"#
        );
        let window = AuditDetail::RateLimitWindow {
            refused: 12,
            window_secs: 60,
        };
        assert_eq!(
            window.encode(),
            r#"{"v":1,"kind":"rate_limit_window","refused":12,"window_secs":60}"#
        );
        let grant = AuditDetail::Grant {
            grant: GrantId::from_uuid(uuid(3)),
            capabilities: vec![Capability::ReadMetadata, Capability::Reveal],
        };
        assert_eq!(
            grant.encode(),
            r#"{"v":1,"kind":"grant","grant":"00000000-0000-0000-0000-000000000003","capabilities":["read_metadata","reveal"]}"#
        );
    }

    /// The lease's detail is written by hand; the bytes are the serde
    /// path's, whatever its values.
    #[test]
    fn a_lease_encodes_as_through_serde() {
        fn through_serde(detail: &AuditDetail) -> String {
            let mut out = br#"{"v":1,"#.to_vec();
            let mut rest = AfterOpeningBrace {
                out: &mut out,
                skipped: false,
            };
            serde_json::to_writer(&mut rest, detail).unwrap();
            String::from_utf8(out).unwrap()
        }
        for ttl_secs in [0, 1, 9, 10, 300, 86_400, u64::from(u32::MAX), u64::MAX] {
            for grant in [
                None,
                Some(GrantId::generate()),
                Some(GrantId::from_uuid(uuid(u128::MAX))),
            ] {
                for lease_id in [LeaseId::generate(), LeaseId::from_uuid(uuid(0xabcdef))] {
                    let detail = AuditDetail::Lease {
                        lease_id,
                        ttl_secs,
                        grant,
                    };
                    let text = detail.encode();
                    assert_eq!(text, through_serde(&detail));
                    assert_eq!(AuditDetail::decode(&text).unwrap(), detail);
                }
            }
        }
    }

    /// The text of a lease opened under a grant, pinned: the hash chain
    /// covers it, so it cannot change.
    #[test]
    fn a_lease_with_a_grant_encodes_as_pinned() {
        let detail = AuditDetail::Lease {
            lease_id: LeaseId::from_uuid(uuid(0xc2)),
            ttl_secs: 86_400,
            grant: Some(GrantId::from_uuid(uuid(0x00ab_cdef_0123))),
        };
        let text = r#"{"v":1,"kind":"lease","lease_id":"00000000-0000-0000-0000-0000000000c2","ttl_secs":86400,"grant":"00000000-0000-0000-0000-00abcdef0123"}"#;
        assert_eq!(detail.encode(), text);
        assert_eq!(AuditDetail::decode(text).unwrap(), detail);
    }

    #[test]
    fn only_the_canonical_text_decodes() {
        let canonical = r#"{"v":1,"kind":"failed_authentications","count":3}"#;
        assert_eq!(
            AuditDetail::decode(canonical).unwrap(),
            AuditDetail::FailedAuthentications { count: 3 }
        );
        for other in [
            r#"{"kind":"failed_authentications","v":1,"count":3}"#,
            r#"{"v":1, "kind":"failed_authentications","count":3}"#,
            r#"{"v":1,"kind":"failed_authentications","count":3,"extra":1}"#,
        ] {
            assert_eq!(
                AuditDetail::decode(other),
                Err(DetailError::NotCanonical),
                "{other}"
            );
        }
        assert_eq!(
            AuditDetail::decode(r#"{"v":2,"kind":"failed_authentications","count":3}"#),
            Err(DetailError::Version(2))
        );
        assert!(matches!(
            AuditDetail::decode("count=3"),
            Err(DetailError::Malformed(_))
        ));
        assert!(matches!(
            AuditDetail::decode(r#"{"v":1,"kind":"unknown"}"#),
            Err(DetailError::Malformed(_))
        ));
    }
}
