//! The notifier's sender: the background task that sends due webhook
//! deliveries (the engine decides which, signs them and records each
//! attempt: `Engine::start_notifier_turns`), and the HTTP client it posts
//! them with ([`WebhookClient`], the engine's `WebhookPoster` port).
//!
//! The client is the relay's ([`Upstream`], its own instance and pool, from
//! the same `relay` settings): the receiver's name is resolved by
//! `relay.resolve` or DNS and refused if any address is internal, unless
//! that `host:port` is in `relay.allow_internal` (for every tenant, or as
//! `tenant/host:port` for the delivery's tenant); it connects to an
//! address it checked (never a second lookup); HTTPS only, the receiver's
//! certificate verified against the system roots and `relay.upstream_ca`.
//! A post has `notifier.timeout_ms` until the answer's head, follows no
//! redirect (a 3xx is a failed attempt), reads at most
//! `notifier.max_answer_read_bytes` of the answer's body within a second
//! more and keeps only its status.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use strongroom_core::net::{RequestTarget, Scheme};
use strongroom_core::notify::DeliveryFailure;
use strongroom_core::scope::{SystemScope, SystemTask};
use strongroom_engine::Engine;
use strongroom_engine::notify::{NotifierTurns, SendPass};
use strongroom_engine::ports::{WebhookOutcome, WebhookPost, WebhookPoster};
use tokio::sync::watch;

use crate::config::notifier::ANSWER_READ_TIME;
use crate::config::{NotifierConfig, RelayConfig};
use crate::relay::upstream::{
    Destination, Upstream, UpstreamBody, UpstreamError, UpstreamSetupError,
};

/// Posts webhook deliveries over the relay's checked client.
pub struct WebhookClient {
    upstream: Upstream,
    /// How long one post may take until the answer's head: resolving,
    /// connecting, the TLS handshake, sending and the head.
    timeout: Duration,
    /// How much of an answer's body is read (then dropped): enough to
    /// reuse the connection after a short answer, never kept.
    max_answer_read: usize,
}

impl WebhookClient {
    /// A client with the relay's resolution, allow-list and roots, and the
    /// notifier's timeout and answer bound.
    pub fn new(relay: &RelayConfig, notifier: &NotifierConfig) -> Result<Self, UpstreamSetupError> {
        let mut config = relay.clone();
        config.timeout = config.timeout.min(notifier.timeout);
        Ok(Self {
            upstream: Upstream::new(&config)?,
            timeout: notifier.timeout,
            max_answer_read: notifier.max_answer_read,
        })
    }

    async fn send(&self, post: WebhookPost<'_>) -> WebhookOutcome {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let no_answer = || {
            let within = if self.timeout.subsec_millis() == 0 {
                format!("{} s", self.timeout.as_secs())
            } else {
                format!("{} ms", self.timeout.as_millis())
            };
            failed(
                &format!("no answer within {within}"),
                DeliveryFailure::Timeout,
            )
        };
        let Ok(target) = RequestTarget::parse(post.url) else {
            return failed(
                "refused: the notifier URL is not valid",
                DeliveryFailure::Refused,
            );
        };
        if target.scheme != Scheme::Https {
            return failed(
                "refused: the notifier URL is not https",
                DeliveryFailure::Refused,
            );
        }
        let destination = Destination {
            tenant: post.tenant,
            tenant_name: post.tenant_name.to_owned(),
            https: true,
            host: target.host.clone(),
            port: target.port,
        };
        let mut sender =
            match tokio::time::timeout_at(deadline, self.upstream.connection(&destination)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    let (reason, class) = describe(e, &target);
                    return failed(&reason, class);
                }
                Err(_) => return no_answer(),
            };
        let authority = target.authority();
        let path = target.path_and_query();
        let mut builder = http::Request::builder().method(http::Method::POST);
        builder = if sender.is_h2() {
            builder.uri(format!("https://{authority}{path}"))
        } else {
            builder
                .uri(path.as_str())
                .header(http::header::HOST, authority.as_str())
        };
        builder = builder
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, "strongroom-notifier");
        for (name, value) in post.headers {
            builder = builder.header(*name, value.as_str());
        }
        let body: UpstreamBody = Full::new(Bytes::copy_from_slice(post.body))
            .map_err(|never| match never {})
            .boxed();
        let Ok(request) = builder.body(body) else {
            return failed(
                "the request could not be built",
                DeliveryFailure::Connection,
            );
        };
        let response = match tokio::time::timeout_at(deadline, sender.send(request)).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => {
                return failed(
                    "the connection failed before an answer",
                    DeliveryFailure::Connection,
                );
            }
            Err(_) => return no_answer(),
        };
        let status = response.status().as_u16();
        // Read (and drop) a bounded part of the answer, within a bounded
        // time, so a short one leaves the connection reusable; nothing of it
        // is kept, and the status stands whatever the body does.
        let read = Limited::new(response.into_body(), self.max_answer_read).collect();
        if let Ok(Ok(_)) = tokio::time::timeout(ANSWER_READ_TIME, read).await {
            self.upstream.put_back(&destination, sender);
        }
        if (200..300).contains(&status) {
            WebhookOutcome::Delivered { status }
        } else {
            WebhookOutcome::Answered { status }
        }
    }
}

impl WebhookPoster for WebhookClient {
    async fn post(&self, post: WebhookPost<'_>) -> WebhookOutcome {
        self.send(post).await
    }
}

fn failed(reason: &str, class: DeliveryFailure) -> WebhookOutcome {
    WebhookOutcome::Failed {
        reason: reason.to_owned(),
        class,
    }
}

/// A short reason for a refused or failed connection, naming the host and
/// port (never the URL's path or query, which may carry a token), and its
/// class.
fn describe(e: UpstreamError, target: &RequestTarget) -> (String, DeliveryFailure) {
    let at = format!("{}:{}", target.host, target.port);
    match e {
        UpstreamError::Internal(kind) => (
            format!(
                "refused: {at} resolves to an internal address ({kind}) not allowed by \
                 relay.allow_internal"
            ),
            DeliveryFailure::Refused,
        ),
        UpstreamError::Resolve => (
            format!("{at} does not resolve"),
            DeliveryFailure::Unresolved,
        ),
        UpstreamError::Unreachable => {
            (format!("{at} is unreachable"), DeliveryFailure::Unreachable)
        }
        UpstreamError::Tls => (
            format!("TLS with {at} failed (certificate not trusted?)"),
            DeliveryFailure::Tls,
        ),
        UpstreamError::Timeout => (
            format!("{at} did not answer in time"),
            DeliveryFailure::Timeout,
        ),
    }
}

/// Sends due deliveries until the server stops, within the `notifier`
/// settings: a tick when this server enqueued one (at once), and every
/// `poll_interval` (retries come due by the
/// engine's clock; other servers enqueue too). A tick starts a turn for
/// each due tenant without one in flight and waits for none
/// (`Engine::start_notifier_turns`), so a tenant whose receiver is slow
/// delays no other tenant's deliveries. A failed tick is logged and the
/// next one tries again. Each turn's outcomes are counted in
/// `strongroom.notifier.deliveries` (`outcome`: `delivered`, `retrying`,
/// `given_up`; no tenant label) when the server has a meter. Stopping
/// aborts the turns in flight (a claimed delivery is due again after the
/// claim's hold).
pub async fn run(
    engine: Arc<Engine>,
    client: WebhookClient,
    notifier: NotifierConfig,
    meter: Option<opentelemetry::metrics::Meter>,
    mut stopping: watch::Receiver<bool>,
) {
    let system = SystemScope::for_task(SystemTask::NotifierSender);
    let client = Arc::new(client);
    let counter = meter.map(|m| {
        m.u64_counter("strongroom.notifier.deliveries")
            .with_unit("{attempt}")
            .with_description("Webhook notifier attempts, by outcome")
            .build()
    });
    let count = |turn: SendPass| {
        if let Some(counter) = &counter {
            for (outcome, n) in [
                ("delivered", turn.delivered),
                ("retrying", turn.retrying),
                ("given_up", turn.given_up),
            ] {
                if n > 0 {
                    counter.add(
                        u64::from(n),
                        &[opentelemetry::KeyValue::new("outcome", outcome)],
                    );
                }
            }
        }
        if turn != SendPass::default() {
            tracing::debug!(
                delivered = turn.delivered,
                retrying = turn.retrying,
                given_up = turn.given_up,
                "notifier turn"
            );
        }
    };
    let mut turns = NotifierTurns::new(notifier.sender);
    let mut ticks = tokio::time::interval(notifier.poll_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = engine.notification_enqueued() => {}
            Some(turn) = turns.next_done(), if !turns.is_empty() => {
                count(turn);
                continue;
            }
            _ = stopping.changed() => return,
        }
        count(turns.take_done());
        if let Err(e) = engine
            .start_notifier_turns(&system, &client, &mut turns)
            .await
        {
            tracing::warn!(error = %e, "the notifier tick failed");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use strongroom_core::ids::{DeliveryId, TenantId};

    async fn post(client: &WebhookClient, url: &str) -> WebhookOutcome {
        client
            .post(WebhookPost {
                tenant: TenantId::generate(),
                tenant_name: "acme",
                delivery: DeliveryId::generate(),
                url,
                body: b"{}",
                headers: &[],
            })
            .await
    }

    /// Plain HTTP and internal addresses (not allowed) are refused before
    /// any connection is opened.
    #[tokio::test]
    async fn http_and_internal_addresses_are_refused_before_connecting() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let client =
            WebhookClient::new(&RelayConfig::default(), &NotifierConfig::default()).unwrap();
        let WebhookOutcome::Failed { reason, class } =
            post(&client, &format!("http://127.0.0.1:{port}/hook")).await
        else {
            panic!("plain http was posted");
        };
        assert_eq!(reason, "refused: the notifier URL is not https");
        assert_eq!(class, DeliveryFailure::Refused);
        let WebhookOutcome::Failed { reason, class } = post(
            &client,
            &format!("https://127.0.0.1:{port}/hook?token=t0k3n"),
        )
        .await
        else {
            panic!("a loopback address was posted");
        };
        assert!(
            reason.starts_with("refused: 127.0.0.1:") && reason.contains("loopback"),
            "{reason}"
        );
        assert!(!reason.contains("t0k3n"), "the query is not in the reason");
        assert_eq!(class, DeliveryFailure::Refused);
        let accepted = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
        assert!(accepted.is_err(), "a connection was opened");
    }
}
