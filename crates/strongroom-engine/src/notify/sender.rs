//! The notifier's sender: finds the tenants with deliveries due (by the
//! engine's clock, the one waiting longest first) and starts a turn for
//! each without one in flight ([`NotifierTurns`]; a tick waits for no
//! turn, so a slow receiver delays only its own tenant). A turn claims the
//! tenant's due deliveries one at a time (the store holds a claimed
//! delivery for [`SenderSettings::claim_hold`], so no other server sends it
//! meanwhile), starts no post after [`SenderSettings::turn_budget`], signs
//! each with the tenant's opened signing secret, hands it to the
//! [`WebhookPoster`], and records what the attempt came to: the status or a
//! short reason (never the receiver's body), and the next attempt after the
//! backoff ([`super::retry_delay`]), or none once delivered or given up
//! ([`SenderSettings::max_attempts`] attempts, or
//! [`SenderSettings::max_age`] after it was enqueued). Each recorded
//! attempt is a `notification.delivery` event in the tenant's audit chain,
//! written in the same commit: the delivery, its notice, the attempt's
//! number, the receiver's host, and the result with its status or failure
//! class.
//!
//! Generic over the event: whatever enqueued a delivery (access requests,
//! rotation reminders), its `event` and JSON `payload` are sent as they
//! are, in the envelope of [`super::signed`] (which carries the delivery's
//! id and event inside the signed body). Log lines name the tenant,
//! the delivery, the event, the attempt and the outcome; never the secret,
//! the signature or the body.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use strongroom_core::Result;
use strongroom_core::audit::{Action, AuditDetail, AuditDraft, Outcome};
use strongroom_core::ids::TenantId;
use strongroom_core::net::RequestTarget;
use strongroom_core::notify::{Delivery, DeliveryAttempt, DeliveryFailure, DeliveryResult};
use strongroom_core::policy::Reason;
use strongroom_core::scope::SystemScope;
use strongroom_core::tenant::{Tenant, TenantStatus, WrappedKekRecord};
use strongroom_core::time::Timestamp;

use super::{DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, retry_delay};
use crate::Engine;
use crate::ports::{WebhookOutcome, WebhookPost, WebhookPoster};

/// The default of [`SenderSettings::claim_hold`].
pub const CLAIM_HOLD: Duration = Duration::from_secs(120);

/// The default of [`SenderSettings::max_age`].
pub const MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// The default of [`SenderSettings::posts_per_turn`].
pub const POSTS_PER_TURN: u32 = 32;

/// The default of [`SenderSettings::turn_budget`].
pub const TURN_BUDGET: Duration = Duration::from_secs(10);

/// The default of [`SenderSettings::tenants_at_once`].
pub const TENANTS_AT_ONCE: usize = 16;

/// Tenants looked at per tick.
const TENANTS_PER_TICK: u32 = 100;

/// The sender's bounds (the server's `[notifier]` settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderSettings {
    /// How long a claim holds a delivery from other servers: well past the
    /// longest one post may take (a turn claims one delivery at a time,
    /// just before posting it). A sender that dies mid-attempt leaves the
    /// delivery due again after this.
    pub claim_hold: Duration,
    /// Most attempts at one delivery.
    pub max_attempts: u32,
    /// After this long since it was enqueued, a delivery that failed is
    /// given up whatever its attempts.
    pub max_age: Duration,
    /// Most posts in one tenant's turn (so one tenant's backlog does not
    /// hold back the others').
    pub posts_per_turn: u32,
    /// After this long in a turn, no new post is started for that tenant:
    /// a receiver that never answers holds its tenant's turn for at most
    /// this and one post's timeout. The rest waits for the tenant's next
    /// turn.
    pub turn_budget: Duration,
    /// Tenants' turns in flight at once.
    pub tenants_at_once: usize,
}

impl Default for SenderSettings {
    fn default() -> Self {
        Self {
            claim_hold: CLAIM_HOLD,
            max_attempts: super::MAX_ATTEMPTS,
            max_age: MAX_AGE,
            posts_per_turn: POSTS_PER_TURN,
            turn_budget: TURN_BUDGET,
            tenants_at_once: TENANTS_AT_ONCE,
        }
    }
}

/// What turns did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendPass {
    /// Deliveries answered 2xx.
    pub delivered: u32,
    /// Attempts that failed and will be tried again.
    pub retrying: u32,
    /// Deliveries given up.
    pub given_up: u32,
}

/// The sender's tenants' turns in flight: at most one per tenant and
/// [`SenderSettings::tenants_at_once`] in all. A tick
/// ([`Engine::start_notifier_turns`]) starts turns for the due tenants
/// without one and never waits for a turn to end, so a tenant whose
/// receiver is slow delays no other's deliveries. Dropping it aborts the
/// turns (their claimed deliveries are due again after the claim's hold).
#[derive(Debug, Default)]
pub struct NotifierTurns {
    running: tokio::task::JoinSet<SendPass>,
    tenants: HashMap<tokio::task::Id, TenantId>,
    settings: SenderSettings,
}

impl NotifierTurns {
    /// No turn in flight; turns bounded by `settings`.
    pub fn new(settings: SenderSettings) -> Self {
        Self {
            settings,
            ..Self::default()
        }
    }

    /// The bounds of the turns.
    pub fn settings(&self) -> &SenderSettings {
        &self.settings
    }

    /// How many turns are in flight.
    pub fn len(&self) -> usize {
        self.running.len()
    }

    /// Whether no turn is in flight.
    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    /// Whether `tenant` has a turn in flight.
    pub fn serving(&self, tenant: TenantId) -> bool {
        self.tenants.values().any(|t| *t == tenant)
    }

    /// Waits for the next turn to end and returns what it did (a turn that
    /// panicked counts nothing); `None` at once if none is in flight.
    pub async fn next_done(&mut self) -> Option<SendPass> {
        let done = self.running.join_next_with_id().await?;
        Some(self.settle(done))
    }

    /// What the turns that ended meanwhile did, without waiting.
    pub fn take_done(&mut self) -> SendPass {
        let mut pass = SendPass::default();
        while let Some(done) = self.running.try_join_next_with_id() {
            let turn = self.settle(done);
            pass.add(turn);
        }
        pass
    }

    fn settle(
        &mut self,
        done: std::result::Result<(tokio::task::Id, SendPass), tokio::task::JoinError>,
    ) -> SendPass {
        match done {
            Ok((id, turn)) => {
                self.tenants.remove(&id);
                turn
            }
            Err(e) => {
                self.tenants.remove(&e.id());
                SendPass::default()
            }
        }
    }
}

impl SendPass {
    /// Adds a turn's counts.
    pub fn add(&mut self, t: SendPass) {
        self.delivered += t.delivered;
        self.retrying += t.retrying;
        self.given_up += t.given_up;
    }
}

/// What the engine decided about one claimed delivery before posting.
enum Prepared {
    /// Post it.
    Post {
        body: Vec<u8>,
        headers: Vec<(&'static str, String)>,
    },
    /// Do not: fail the attempt for `reason`, and give up at once if
    /// `fatal` (nothing a retry could change).
    Fail { reason: String, fatal: bool },
}

/// What one attempt came to: what the store records, and its failure class
/// for the audit event.
struct Attempted {
    record: DeliveryAttempt,
    failure: Option<DeliveryFailure>,
}

impl Engine {
    /// Wakes the sender (this server enqueued a delivery).
    pub(crate) fn wake_notifier(&self) {
        self.notifier_wake.notify_one();
    }

    /// Returns when this server enqueued a delivery since the last call
    /// returned (at once if it did meanwhile): the sender's prompt wake-up,
    /// beside its polling.
    pub async fn notification_enqueued(&self) {
        self.notifier_wake.notified().await;
    }

    /// One tick of the sender: finds the due tenants (up to a bounded
    /// number, the one waiting longest first) and starts a turn in `turns`
    /// for each that has none in flight, while fewer than
    /// [`SenderSettings::tenants_at_once`] are; returns how many it
    /// started, without waiting for any. A turn claims the tenant's due
    /// deliveries one at a time, posts each through `poster` and records it
    /// with its audit event, up to [`SenderSettings::posts_per_turn`], and
    /// starts no post after [`SenderSettings::turn_budget`]. A store error
    /// ends that tenant's turn (logged; a later tick starts another);
    /// finding the due tenants failing ends the tick.
    pub async fn start_notifier_turns<P: WebhookPoster + 'static>(
        self: &Arc<Self>,
        system: &SystemScope,
        poster: &Arc<P>,
        turns: &mut NotifierTurns,
    ) -> Result<usize> {
        let settings = turns.settings;
        if turns.len() >= settings.tenants_at_once {
            return Ok(0);
        }
        let tenants = self
            .store
            .due_notification_tenants(self.now(), TENANTS_PER_TICK)
            .await?;
        let mut started = 0;
        for tenant in tenants {
            if turns.len() >= settings.tenants_at_once {
                break;
            }
            if turns.serving(tenant) {
                continue;
            }
            let engine = Arc::clone(self);
            let poster = Arc::clone(poster);
            let system = *system;
            let handle = turns.running.spawn(async move {
                let mut turn = SendPass::default();
                let sent = engine
                    .send_tenant(&system, &settings, tenant, &*poster, &mut turn)
                    .await;
                if let Err(e) = sent {
                    tracing::warn!(tenant = %tenant, error = %e, "a notifier turn failed");
                }
                turn
            });
            turns.tenants.insert(handle.id(), tenant);
            started += 1;
        }
        Ok(started)
    }

    /// One tenant's turn: its due deliveries claimed one at a time (none
    /// is claimed unless it is posted at once), until none is due,
    /// `posts_per_turn` were posted, or `turn_budget` passed.
    async fn send_tenant<P: WebhookPoster>(
        &self,
        system: &SystemScope,
        settings: &SenderSettings,
        tenant: TenantId,
        poster: &P,
        pass: &mut SendPass,
    ) -> Result<()> {
        let started = tokio::time::Instant::now();
        let mut loaded: Option<(Tenant, Vec<WrappedKekRecord>)> = None;
        for _ in 0..settings.posts_per_turn {
            if started.elapsed() >= settings.turn_budget {
                tracing::debug!(tenant = %tenant, "a notifier turn ran out of time");
                return Ok(());
            }
            let now = self.now();
            let claimed = self
                .store
                .claim_notification_deliveries(tenant, now, now.plus(settings.claim_hold), 1)
                .await?;
            let Some(delivery) = claimed.into_iter().next() else {
                return Ok(());
            };
            if loaded.is_none() {
                loaded = Some(self.store.notifier_tenant(tenant).await?);
            }
            let Some((record, keks)) = &loaded else {
                return Ok(());
            };
            let attempt = self
                .attempt(settings, record, keks, &delivery, poster)
                .await;
            let event = attempt_event(system, record, &delivery, &attempt, self.now());
            self.record(tenant, &delivery, &attempt.record, event, pass)
                .await?;
        }
        Ok(())
    }

    /// Signs `delivery` for `tenant` as of now, or says why it cannot be
    /// sent.
    async fn prepare(
        &self,
        tenant: &Tenant,
        keks: &[WrappedKekRecord],
        delivery: &Delivery,
    ) -> Prepared {
        if tenant.status != TenantStatus::Active {
            return Prepared::Fail {
                reason: "the tenant is not active".into(),
                fatal: tenant.status == TenantStatus::Shredded,
            };
        }
        let Some(notifier) = &tenant.settings.notifier else {
            return Prepared::Fail {
                reason: "the tenant has no notifier set".into(),
                fatal: true,
            };
        };
        let secret = match self
            .open_notifier_secret(tenant.id, notifier, keks.to_vec())
            .await
        {
            Ok(s) => s,
            Err(_) => {
                return Prepared::Fail {
                    reason: "the signing secret could not be opened".into(),
                    fatal: false,
                };
            }
        };
        match signed_post(&secret, tenant.id, delivery, self.now()) {
            Some((body, headers)) => Prepared::Post { body, headers },
            None => Prepared::Fail {
                reason: "the stored notice is not JSON".into(),
                fatal: true,
            },
        }
    }

    /// One attempt at `delivery` (claimed as attempt `delivery.attempts`):
    /// what to record.
    async fn attempt<P: WebhookPoster>(
        &self,
        settings: &SenderSettings,
        tenant: &Tenant,
        keks: &[WrappedKekRecord],
        delivery: &Delivery,
        poster: &P,
    ) -> Attempted {
        let outcome = match self.prepare(tenant, keks, delivery).await {
            Prepared::Post { body, headers } => {
                // `prepare` checked there is one.
                let url = tenant
                    .settings
                    .notifier
                    .as_ref()
                    .map(|n| n.url.as_str())
                    .unwrap_or_default();
                if url.starts_with("https://") {
                    poster
                        .post(WebhookPost {
                            tenant: tenant.id,
                            tenant_name: tenant.name.as_str(),
                            delivery: delivery.id,
                            url,
                            body: &body,
                            headers: &headers,
                        })
                        .await
                } else {
                    // Settings only take https URLs; one that slipped in is
                    // never posted to.
                    WebhookOutcome::Failed {
                        reason: "refused: the notifier URL is not https".into(),
                        class: DeliveryFailure::Refused,
                    }
                }
            }
            Prepared::Fail { reason, fatal } => {
                return Attempted {
                    record: settle(settings, delivery, self.now(), None, reason, fatal),
                    failure: Some(DeliveryFailure::NotSent),
                };
            }
        };
        attempt_of(settings, delivery, outcome, self.now())
    }

    /// Records `attempt` with its audit `event` and logs it (ids, the
    /// event, the status, our own reason; nothing the receiver said).
    async fn record(
        &self,
        tenant: TenantId,
        delivery: &Delivery,
        attempt: &DeliveryAttempt,
        event: AuditDraft,
        pass: &mut SendPass,
    ) -> Result<()> {
        let kept = self
            .store
            .record_notification_attempt(tenant, attempt, event)
            .await?;
        if !kept {
            tracing::warn!(
                tenant = %tenant,
                delivery = %delivery.id,
                attempt = attempt.attempt,
                "a notifier delivery was claimed again before its attempt was recorded"
            );
            return Ok(());
        }
        let status = attempt.status.map(u32::from).unwrap_or(0);
        if attempt.delivered_at.is_some() {
            pass.delivered += 1;
            tracing::info!(
                tenant = %tenant,
                delivery = %delivery.id,
                event = %delivery.event,
                attempt = attempt.attempt,
                status,
                "notifier delivery delivered"
            );
        } else if attempt.next_attempt_at.is_some() {
            pass.retrying += 1;
            tracing::warn!(
                tenant = %tenant,
                delivery = %delivery.id,
                event = %delivery.event,
                attempt = attempt.attempt,
                status,
                error = %attempt.error,
                "notifier delivery failed; retrying"
            );
        } else {
            pass.given_up += 1;
            tracing::warn!(
                tenant = %tenant,
                delivery = %delivery.id,
                event = %delivery.event,
                attempt = attempt.attempt,
                status,
                error = %attempt.error,
                "notifier delivery given up"
            );
        }
        Ok(())
    }
}

/// The sender's default polling interval: what bounds how late a delivery
/// due by the clock (a retry, or one another server enqueued) is sent.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// A signed delivery's body and its headers.
type SignedPost = (Vec<u8>, Vec<(&'static str, String)>);

/// The body and headers of `delivery` for `tenant`, signed under `secret`
/// at `at`; `None` if its stored payload is not JSON. The event and data
/// are the delivery's own, whatever enqueued it.
fn signed_post(
    secret: &[u8],
    tenant: TenantId,
    delivery: &Delivery,
    at: Timestamp,
) -> Option<SignedPost> {
    let data = serde_json::from_str::<serde_json::Value>(&delivery.payload).ok()?;
    let signed = super::signed(secret, tenant, delivery.id, &delivery.event, &data, at);
    Some((
        signed.body,
        vec![
            (TIMESTAMP_HEADER, signed.timestamp),
            (SIGNATURE_HEADER, signed.signature),
            (DELIVERY_HEADER, delivery.id.to_string()),
            (EVENT_HEADER, delivery.event.clone()),
        ],
    ))
}

/// What to record of `delivery`'s attempt (claimed as attempt
/// `delivery.attempts`) that came to `outcome` at `now`.
fn attempt_of(
    settings: &SenderSettings,
    delivery: &Delivery,
    outcome: WebhookOutcome,
    now: Timestamp,
) -> Attempted {
    match outcome {
        WebhookOutcome::Delivered { status } => Attempted {
            record: DeliveryAttempt {
                id: delivery.id,
                attempt: delivery.attempts,
                status: Some(status),
                error: String::new(),
                next_attempt_at: None,
                delivered_at: Some(now),
            },
            failure: None,
        },
        WebhookOutcome::Answered { status } => {
            let reason = if (300..400).contains(&status) {
                format!("the receiver answered {status} (redirects are not followed)")
            } else {
                format!("the receiver answered {status}")
            };
            Attempted {
                record: settle(settings, delivery, now, Some(status), reason, false),
                failure: Some(DeliveryFailure::Status),
            }
        }
        WebhookOutcome::Failed { reason, class } => Attempted {
            record: settle(settings, delivery, now, None, reason, false),
            failure: Some(class),
        },
    }
}

/// The `notification.delivery` event of `attempt` at `delivery` for
/// `tenant`: the delivery, its notice, the attempt's number, the
/// receiver's host (from the tenant's notifier URL; never its path or
/// query), and the result with its status or failure class. Allowed when
/// delivered, an error otherwise.
fn attempt_event(
    system: &SystemScope,
    tenant: &Tenant,
    delivery: &Delivery,
    attempt: &Attempted,
    now: Timestamp,
) -> AuditDraft {
    let record = &attempt.record;
    let (result, outcome, reason) = if record.delivered_at.is_some() {
        (DeliveryResult::Delivered, Outcome::Allowed, Reason::Allowed)
    } else if record.next_attempt_at.is_some() {
        (
            DeliveryResult::Failed,
            Outcome::Error,
            Reason::DeliveryFailed,
        )
    } else {
        (
            DeliveryResult::GivenUp,
            Outcome::Error,
            Reason::DeliveryGivenUp,
        )
    };
    let host = tenant
        .settings
        .notifier
        .as_ref()
        .and_then(|n| RequestTarget::parse(&n.url).ok())
        .map(|t| t.host)
        .unwrap_or_default();
    let mut event = system.audit_at(Action::NotificationDelivery, outcome, reason.as_str(), now);
    event.detail = Some(AuditDetail::NotificationDelivery {
        delivery: delivery.id,
        notice: delivery.event.clone(),
        attempt: record.attempt,
        host,
        result,
        status: record.status,
        failure: attempt.failure,
    });
    event
}

/// A failed attempt at `now`: retried after the backoff, or given up
/// (`fatal`, out of attempts, or older than the settings' `max_age`).
fn settle(
    settings: &SenderSettings,
    delivery: &Delivery,
    now: Timestamp,
    status: Option<u16>,
    reason: String,
    fatal: bool,
) -> DeliveryAttempt {
    let next = if fatal || now >= delivery.created_at.plus(settings.max_age) {
        None
    } else {
        retry_delay(delivery.attempts, settings.max_attempts).map(|d| now.plus(d))
    };
    let error = if next.is_none() {
        format!(
            "{reason}; gave up after {} attempt{}",
            delivery.attempts,
            if delivery.attempts == 1 { "" } else { "s" }
        )
    } else {
        reason
    };
    DeliveryAttempt {
        id: delivery.id,
        attempt: delivery.attempts,
        status,
        error,
        next_attempt_at: next,
        delivered_at: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strongroom_core::ids::DeliveryId;

    const AT: i64 = 1_796_601_600;

    /// Today's bounds.
    const S: SenderSettings = SenderSettings {
        claim_hold: CLAIM_HOLD,
        max_attempts: super::super::MAX_ATTEMPTS,
        max_age: MAX_AGE,
        posts_per_turn: POSTS_PER_TURN,
        turn_budget: TURN_BUDGET,
        tenants_at_once: TENANTS_AT_ONCE,
    };

    fn delivery(attempts: u32, created_at: Timestamp) -> Delivery {
        Delivery {
            id: DeliveryId::generate(),
            event: "rotation.due_soon".into(),
            payload: r#"{"credential":"llm/openai","due_at":1796601600}"#.into(),
            attempts,
            last_status: None,
            last_error: String::new(),
            next_attempt_at: Some(created_at),
            delivered_at: None,
            created_at,
        }
    }

    #[test]
    fn any_event_is_signed_with_its_own_payload_and_headers() {
        let at = Timestamp::from_unix(AT, 0);
        let tenant = TenantId::generate();
        let d = delivery(1, at);
        let (body, headers) = signed_post(b"whsec-unit", tenant, &d, at).expect("json payload");
        let header = |n: &str| {
            headers
                .iter()
                .find(|(name, _)| *name == n)
                .map(|(_, v)| v.clone())
                .expect("header")
        };
        assert_eq!(header(DELIVERY_HEADER), d.id.to_string());
        assert_eq!(header(EVENT_HEADER), "rotation.due_soon");
        assert_eq!(header(TIMESTAMP_HEADER), AT.to_string());
        assert_eq!(
            strongroom_crypto::webhook::verify(
                b"whsec-unit",
                &header(TIMESTAMP_HEADER),
                &body,
                &header(SIGNATURE_HEADER),
                AT + 1
            ),
            Ok(())
        );
        let json: serde_json::Value = serde_json::from_slice(&body).expect("body");
        assert_eq!(json["event"], "rotation.due_soon");
        assert_eq!(
            json["id"],
            d.id.to_string(),
            "the id is in the signed body, as the header says"
        );
        assert_eq!(json["tenant_id"], tenant.to_string());
        assert_eq!(json["sent_at"], AT);
        assert_eq!(json["data"]["credential"], "llm/openai");
        let text = String::from_utf8(body).expect("utf8");
        assert!(
            !text.contains("whsec-unit"),
            "the secret is not in the body"
        );
        let mut bad = d.clone();
        bad.payload = "not json".into();
        assert!(signed_post(b"whsec-unit", tenant, &bad, at).is_none());
    }

    #[test]
    fn a_2xx_is_delivered_and_ends_the_retries() {
        let at = Timestamp::from_unix(AT, 0);
        let d = delivery(2, at);
        let a = attempt_of(&S, &d, WebhookOutcome::Delivered { status: 204 }, at);
        assert_eq!(a.failure, None);
        let a = a.record;
        assert_eq!(a.attempt, 2);
        assert_eq!(a.status, Some(204));
        assert_eq!(a.error, "");
        assert_eq!(a.delivered_at, Some(at));
        assert_eq!(a.next_attempt_at, None);
    }

    #[test]
    fn failures_back_off_then_give_up() {
        let at = Timestamp::from_unix(AT, 0);
        let first = attempt_of(
            &S,
            &delivery(1, at),
            WebhookOutcome::Answered { status: 500 },
            at,
        )
        .record;
        assert_eq!(first.status, Some(500));
        assert_eq!(first.error, "the receiver answered 500");
        assert_eq!(first.next_attempt_at, Some(at.plus(Duration::from_secs(5))));
        assert_eq!(first.delivered_at, None);

        let redirect = attempt_of(
            &S,
            &delivery(3, at),
            WebhookOutcome::Answered { status: 302 },
            at,
        )
        .record;
        assert!(redirect.error.contains("redirects are not followed"));
        assert_eq!(
            redirect.next_attempt_at,
            Some(at.plus(Duration::from_secs(20)))
        );

        let refused = attempt_of(
            &S,
            &delivery(1, at),
            WebhookOutcome::Failed {
                reason: "refused: internal".into(),
                class: DeliveryFailure::Refused,
            },
            at,
        );
        assert_eq!(refused.failure, Some(DeliveryFailure::Refused));
        let refused = refused.record;
        assert_eq!(refused.status, None);
        assert_eq!(refused.error, "refused: internal");
        assert!(refused.next_attempt_at.is_some());

        let last = attempt_of(
            &S,
            &delivery(super::super::MAX_ATTEMPTS, at),
            WebhookOutcome::Answered { status: 503 },
            at,
        )
        .record;
        assert_eq!(last.next_attempt_at, None, "attempts are bounded");
        assert!(
            last.error.ends_with("gave up after 8 attempts"),
            "{}",
            last.error
        );

        let old = attempt_of(
            &S,
            &delivery(2, at),
            WebhookOutcome::Answered { status: 503 },
            at.plus(MAX_AGE),
        )
        .record;
        assert_eq!(old.next_attempt_at, None, "age is bounded");

        let fatal = settle(&S, &delivery(1, at), at, None, "no notifier".into(), true);
        assert_eq!(fatal.next_attempt_at, None);
        assert_eq!(fatal.error, "no notifier; gave up after 1 attempt");
    }

    /// Tighter bounds give up sooner: after `max_attempts`, or once
    /// `max_age` passed since the delivery was enqueued.
    #[test]
    fn the_settings_bound_the_retries() {
        let at = Timestamp::from_unix(AT, 0);
        let tight = SenderSettings {
            max_attempts: 2,
            max_age: Duration::from_secs(60),
            ..S
        };
        let answered = WebhookOutcome::Answered { status: 500 };
        let first = attempt_of(&tight, &delivery(1, at), answered.clone(), at).record;
        assert_eq!(first.next_attempt_at, Some(at.plus(Duration::from_secs(5))));
        let second = attempt_of(&tight, &delivery(2, at), answered.clone(), at).record;
        assert_eq!(second.next_attempt_at, None);
        assert!(second.error.ends_with("gave up after 2 attempts"));
        let late = attempt_of(
            &tight,
            &delivery(1, at),
            answered,
            at.plus(Duration::from_secs(60)),
        )
        .record;
        assert_eq!(late.next_attempt_at, None, "past max_age");
    }

    /// An attempt's audit event names the delivery, its notice, the
    /// attempt and the receiver's host, never the URL's path or query.
    #[test]
    fn an_attempt_is_audited_with_the_host_only() {
        use strongroom_core::scope::SystemTask;
        use strongroom_core::tenant::{NotifierSetting, TenantSettings};
        let at = Timestamp::from_unix(AT, 0);
        let system = SystemScope::for_task(SystemTask::NotifierSender);
        let mut tenant = Tenant {
            settings: TenantSettings {
                notifier: Some(NotifierSetting {
                    url: "https://hooks.example.com:8443/in?token=t0k3n".into(),
                    sealed_secret: "00".into(),
                }),
                ..TenantSettings::default()
            },
            id: TenantId::generate(),
            name: strongroom_core::names::TenantName::parse("acme", "name").expect("a name"),
            status: TenantStatus::Active,
            current_kek_version: 1,
            created_at: at,
        };
        let d = delivery(1, at);
        let failed = attempt_of(&S, &d, WebhookOutcome::Answered { status: 500 }, at);
        let event = attempt_event(&system, &tenant, &d, &failed, at);
        assert_eq!(event.action, Action::NotificationDelivery);
        assert_eq!(event.outcome, Outcome::Error);
        assert_eq!(event.reason_code, "DELIVERY_FAILED");
        let text = event.detail.as_ref().expect("a detail").encode();
        assert!(text.contains(r#""host":"hooks.example.com""#), "{text}");
        assert!(
            text.contains(r#""result":"failed","status":500,"failure":"status""#),
            "{text}"
        );
        assert!(!text.contains("t0k3n") && !text.contains("/in"), "{text}");
        let given_up = attempt_of(&S, &d, WebhookOutcome::Delivered { status: 200 }, at);
        let event = attempt_event(&system, &tenant, &d, &given_up, at);
        assert_eq!(event.outcome, Outcome::Allowed);
        tenant.settings.notifier = None;
        let fatal = Attempted {
            record: settle(&S, &d, at, None, "no notifier".into(), true),
            failure: Some(DeliveryFailure::NotSent),
        };
        let event = attempt_event(&system, &tenant, &d, &fatal, at);
        assert_eq!(event.reason_code, "DELIVERY_GIVEN_UP");
        assert!(
            event
                .detail
                .expect("a detail")
                .encode()
                .contains(r#""host":"","result":"given_up""#)
        );
    }
}
