//! The notifier's reusable part: what a webhook delivery says and how it is
//! signed and retried, independent of what it notifies about (access
//! requests now; rotation reminders later) and of how it is sent (the
//! server's HTTP client, which applies the relay's internal-address
//! policy).
//!
//! A delivery is a JSON body `{"schema":1,"id":"<delivery id>",
//! "event":"<event>","tenant_id":…,"sent_at":<unix seconds>,"data":{…}}`
//! with the headers [`TIMESTAMP_HEADER`] and [`SIGNATURE_HEADER`] (see
//! `strongroom_crypto::webhook`). The id and the event are inside the
//! signed body (a receiver dedupes on the body's id: a replay cannot carry
//! a fresh one); [`DELIVERY_HEADER`] and [`EVENT_HEADER`] repeat them,
//! unsigned, as conveniences. It never carries a value: the data are
//! ids, names, selectors, capabilities, destinations and the reasons people
//! gave.
//!
//! The tenant's notifier (URL and signing secret) is a tenant setting; its
//! secret is sealed under the tenant's KEK with [`seal_secret`] and opened
//! only to sign a delivery (the sender, `sender.rs`).

use std::time::Duration;

use serde::Serialize;
use strongroom_core::Result;
use strongroom_core::ids::DeliveryId;
use strongroom_core::notify::NewDelivery;
use strongroom_core::tenant::{NotifierSetting, WrappedKekRecord};
use strongroom_crypto::{Aad, Envelope, Kek};
use zeroize::Zeroizing;

use crate::Engine;
use crate::keyring::crypto_error;

mod sender;

pub use sender::{
    CLAIM_HOLD, MAX_AGE, NotifierTurns, POLL_INTERVAL, POSTS_PER_TURN, SendPass, SenderSettings,
    TENANTS_AT_ONCE, TURN_BUDGET,
};
use strongroom_core::access::AccessRequestRecord;
use strongroom_core::ids::TenantId;
use strongroom_core::time::Timestamp;

/// The header carrying the delivery's time, in unix seconds.
pub const TIMESTAMP_HEADER: &str = "Strongroom-Timestamp";

/// The header carrying `v1=<hex HMAC-SHA256>` of `timestamp "." body`.
pub const SIGNATURE_HEADER: &str = "Strongroom-Signature";

/// The header repeating the delivery's id (the body's `id`, the same on
/// every attempt). Not signed: a receiver dedupes on the body's `id`.
pub const DELIVERY_HEADER: &str = "Strongroom-Delivery";

/// The header repeating the delivery's event (the body's `event`; not
/// signed).
pub const EVENT_HEADER: &str = "Strongroom-Event";

/// The body's schema version.
pub const NOTICE_SCHEMA: u32 = 1;

/// Most attempts at one delivery, by default
/// ([`SenderSettings::max_attempts`]).
pub const MAX_ATTEMPTS: u32 = 8;

/// How long to wait after failed attempt `attempt` (1-based) before the
/// next one: 5 s doubling each time, at most an hour; `None` once
/// `max_attempts` have failed.
pub fn retry_delay(attempt: u32, max_attempts: u32) -> Option<Duration> {
    if attempt == 0 || attempt >= max_attempts {
        return None;
    }
    let secs = 5u64.saturating_mul(1u64 << (attempt - 1).min(20));
    Some(Duration::from_secs(secs.min(3600)))
}

/// What an approver needs to decide on an access request: who, for whom,
/// what, where, why, how long, until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccessRequestNotice {
    /// The request.
    pub access_request_id: String,
    /// Who asked (principal id).
    pub requester_id: String,
    /// Its name.
    pub requester_name: String,
    /// The end user it acts for, if any.
    pub on_behalf_of: Option<String>,
    /// The credentials asked for (a name or a selector).
    pub credential: String,
    /// In which environments.
    pub environments: Vec<String>,
    /// `inject` or `reveal`.
    pub capability: String,
    /// Where injection would go (hosts with their methods and paths).
    pub destinations: Vec<strongroom_core::policy::Destination>,
    /// Why.
    pub purpose: String,
    /// How long access is wanted, in seconds.
    pub duration_secs: u64,
    /// When the request expires unless decided (unix seconds).
    pub expires_at: i64,
    /// When it was filed (unix seconds).
    pub created_at: i64,
}

impl AccessRequestNotice {
    /// The notice of `request`.
    pub fn of(request: &AccessRequestRecord) -> Self {
        Self {
            access_request_id: request.id.to_string(),
            requester_id: request.requester.to_string(),
            requester_name: request.requester_name.clone(),
            on_behalf_of: request.on_behalf_of.clone(),
            credential: request.selector.to_text(),
            environments: request
                .environments
                .iter()
                .map(ToString::to_string)
                .collect(),
            capability: request.capability.as_str().to_owned(),
            destinations: request.destinations.clone(),
            purpose: request.purpose.clone(),
            duration_secs: request.duration.as_secs(),
            expires_at: request.expires_at.to_unix().0,
            created_at: request.created_at.to_unix().0,
        }
    }
}

/// What a sealed signing secret is bound to: its tenant, and a pseudo
/// environment no environment name can take (`#notifier`), so it cannot be
/// swapped with a credential value.
pub(crate) fn secret_aad(tenant: TenantId) -> Aad<'static> {
    Aad {
        tenant: tenant.as_uuid(),
        environment: "#notifier",
        credential: tenant.as_uuid(),
        version: 0,
    }
}

/// Seals a notifier signing secret for `tenant` under `kek` (version
/// `kek_version`): the hex envelope stored in the tenant's settings.
pub(crate) fn seal_secret(
    kek: &Kek,
    kek_version: u32,
    tenant: TenantId,
    secret: &[u8],
) -> Result<String> {
    let envelope = kek
        .seal(kek_version, &secret_aad(tenant), secret)
        .map_err(crypto_error)?;
    Ok(hex::encode(envelope.to_bytes()))
}

impl Engine {
    /// Opens `tenant`'s notifier signing secret, its KEK unwrapped from
    /// `keks` (the tenant's wrapped KEKs) unless the keyring holds it.
    pub(crate) async fn open_notifier_secret(
        &self,
        tenant: TenantId,
        notifier: &NotifierSetting,
        keks: Vec<WrappedKekRecord>,
    ) -> Result<Zeroizing<Vec<u8>>> {
        let bytes = hex::decode(&notifier.sealed_secret)
            .map_err(|_| strongroom_core::Error::internal("malformed sealed notifier secret"))?;
        let envelope = Envelope::from_bytes(&bytes).map_err(crypto_error)?;
        let kek = self
            .keyring
            .kek(tenant, envelope.kek_version(), || async move { Ok(keks) })
            .await?;
        kek.open(&secret_aad(tenant), &envelope)
            .map_err(crypto_error)
    }
}

/// The event of a new access request's notice.
pub const ACCESS_REQUEST_FILED: &str = "access_request.filed";

/// The delivery that tells of `request`, filed at `now`.
pub fn access_request_delivery(request: &AccessRequestRecord, now: Timestamp) -> NewDelivery {
    NewDelivery {
        id: DeliveryId::generate(),
        event: ACCESS_REQUEST_FILED.to_owned(),
        payload: serde_json::to_string(&AccessRequestNotice::of(request)).unwrap_or_default(),
        created_at: now,
    }
}

/// What a credential's owner needs to act on a rotation reminder: which
/// credential, where, whose, its state and its dates; never a value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RotationNotice {
    /// The credential.
    pub credential_id: String,
    /// Its name.
    pub credential_name: String,
    /// Its environment.
    pub environment: String,
    /// Its service label.
    pub service: String,
    /// The end user owning it, if owner-scoped.
    pub owner: Option<String>,
    /// The reminder: `due_soon`, `overdue` or `expired`.
    pub status: String,
    /// When the current value was set (unix seconds).
    pub last_rotated_at: i64,
    /// When the next rotation is due (unix seconds).
    pub next_due_at: i64,
    /// When it expires or expired (unix seconds), if ever.
    pub expires_at: Option<i64>,
    /// The rotation period in force, in days.
    pub period_days: u32,
    /// The reminder window in force, in days.
    pub reminder_days: u32,
}

impl RotationNotice {
    /// The notice of `kind` about `credential` under `state`.
    pub fn of(
        credential: &strongroom_core::credential::Credential,
        state: &strongroom_core::credential::RotationState,
        kind: strongroom_core::rotation::ReminderKind,
    ) -> Self {
        Self {
            credential_id: credential.id.to_string(),
            credential_name: credential.name.to_string(),
            environment: credential.environment.to_string(),
            service: credential.service.to_string(),
            owner: credential.owner.clone(),
            status: kind.as_str().to_owned(),
            last_rotated_at: credential.rotated_at.to_unix().0,
            next_due_at: state.due_at.to_unix().0,
            expires_at: credential.expires_at.map(|t| t.to_unix().0),
            period_days: state.policy.period_days,
            reminder_days: state.policy.reminder_days,
        }
    }
}

/// The delivery that tells of `notice`, enqueued at `now`.
pub fn rotation_delivery(
    notice: &RotationNotice,
    kind: strongroom_core::rotation::ReminderKind,
    now: Timestamp,
) -> NewDelivery {
    NewDelivery {
        id: DeliveryId::generate(),
        event: kind.event().to_owned(),
        payload: serde_json::to_string(notice).unwrap_or_default(),
        created_at: now,
    }
}

#[derive(Serialize)]
struct Body<'a, T: Serialize> {
    schema: u32,
    id: String,
    event: &'a str,
    tenant_id: String,
    sent_at: i64,
    data: &'a T,
}

/// A signed delivery: its body and the two headers' values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedDelivery {
    /// The JSON body, exactly as signed.
    pub body: Vec<u8>,
    /// [`TIMESTAMP_HEADER`]'s value.
    pub timestamp: String,
    /// [`SIGNATURE_HEADER`]'s value.
    pub signature: String,
}

/// The body of delivery `id`, of `event` about `data` for `tenant` at
/// `at`, signed under `secret`.
pub fn signed<T: Serialize>(
    secret: &[u8],
    tenant: TenantId,
    id: DeliveryId,
    event: &str,
    data: &T,
    at: Timestamp,
) -> SignedDelivery {
    let sent_at = at.to_unix().0;
    let body = serde_json::to_vec(&Body {
        schema: NOTICE_SCHEMA,
        id: id.to_string(),
        event,
        tenant_id: tenant.to_string(),
        sent_at,
        data,
    })
    .unwrap_or_default();
    let signature = strongroom_crypto::webhook::sign(secret, sent_at, &body);
    SignedDelivery {
        body,
        timestamp: sent_at.to_string(),
        signature,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strongroom_core::access::AccessRequestStatus;
    use strongroom_core::ids::{AccessRequestId, PrincipalId};
    use strongroom_core::names::Environment;
    use strongroom_core::policy::{Capability, Destination, Selector};

    #[test]
    fn a_sealed_secret_opens_only_as_its_tenants_notifier_secret() {
        let kek = Kek::generate().expect("kek");
        let tenant = TenantId::generate();
        let sealed = seal_secret(&kek, 1, tenant, b"whsec-0123456789abcdef").expect("seal");
        assert!(!sealed.contains(&hex::encode(b"whsec-0123456789abcdef")));
        let envelope = Envelope::from_bytes(&hex::decode(&sealed).expect("hex")).expect("env");
        let opened = kek.open(&secret_aad(tenant), &envelope).expect("open");
        assert_eq!(&opened[..], b"whsec-0123456789abcdef");
        assert!(
            kek.open(&secret_aad(TenantId::generate()), &envelope)
                .is_err(),
            "bound to its tenant"
        );
    }

    #[test]
    fn backoff_doubles_to_a_bound() {
        let delays: Vec<_> = (1..=MAX_ATTEMPTS)
            .map(|a| retry_delay(a, MAX_ATTEMPTS))
            .collect();
        assert_eq!(delays[0], Some(Duration::from_secs(5)));
        assert_eq!(delays[1], Some(Duration::from_secs(10)));
        assert_eq!(delays[6], Some(Duration::from_secs(320)));
        assert_eq!(delays[7], None, "attempts are bounded");
        assert_eq!(retry_delay(0, MAX_ATTEMPTS), None);
        assert_eq!(retry_delay(2, 2), None, "a lower bound gives up sooner");
        assert_eq!(retry_delay(20, 32), Some(Duration::from_secs(3600)));
    }

    #[test]
    fn a_notice_says_what_an_approver_needs_and_verifies() {
        let at = Timestamp::from_unix(1_796_601_600, 0);
        let request = AccessRequestRecord {
            id: AccessRequestId::generate(),
            tenant: TenantId::generate(),
            requester: PrincipalId::generate(),
            requester_name: "build-agent".into(),
            selector: Selector::parse("llm/*", "selector").expect("selector"),
            environments: vec![Environment::parse("dev", "environment").expect("env")],
            capability: Capability::Inject,
            destinations: vec![Destination {
                host: "api.openai.com".into(),
                methods: vec!["POST".into()],
                path_prefixes: vec!["/v1".into()],
                ..Default::default()
            }],
            purpose: "summarise tickets".into(),
            on_behalf_of: Some("alice".into()),
            duration: Duration::from_secs(3600),
            status: AccessRequestStatus::Pending,
            created_at: at,
            expires_at: at.plus(Duration::from_secs(86_400)),
            decided_at: None,
            decided_by: None,
            decision_reason: String::new(),
            grant: None,
        };
        let id = DeliveryId::generate();
        let d = signed(
            b"secret",
            request.tenant,
            id,
            "access_request.filed",
            &AccessRequestNotice::of(&request),
            at,
        );
        let body: serde_json::Value = serde_json::from_slice(&d.body).expect("json");
        assert_eq!(body["event"], "access_request.filed");
        assert_eq!(body["id"], id.to_string(), "the id is signed");
        assert_eq!(body["data"]["credential"], "llm/*");
        assert_eq!(body["data"]["capability"], "inject");
        assert_eq!(body["data"]["on_behalf_of"], "alice");
        assert_eq!(body["data"]["purpose"], "summarise tickets");
        assert_eq!(body["data"]["duration_secs"], 3600);
        assert_eq!(body["data"]["expires_at"], 1_796_601_600 + 86_400);
        assert_eq!(body["data"]["destinations"][0]["host"], "api.openai.com");
        assert_eq!(
            strongroom_crypto::webhook::verify(
                b"secret",
                &d.timestamp,
                &d.body,
                &d.signature,
                1_796_601_600
            ),
            Ok(())
        );
    }
}
