//! The server's deadline for a call: `limits.request_timeout`, or the
//! client's own deadline when it is shorter. A call still running then is
//! dropped (with whatever it was waiting for) and answered
//! DEADLINE_EXCEEDED, as gRPC defines it. A call the client cancels ends
//! with its stream instead.
//!
//! With the server's health (`crate::health`), a call that needs the
//! database is also answered UNAVAILABLE while the database is down: at
//! once when it arrives then, and within `Health::check_every` when the
//! database goes down while it runs (the same timer, re-armed: a call
//! costs no more timers than before).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use crate::health::Health;

use super::{CallMetrics, Protocol, Refusal};

/// Bounds every call in time.
#[derive(Clone)]
pub struct TimeoutLayer<P> {
    protocol: P,
    limit: Duration,
    metrics: Option<Arc<CallMetrics>>,
    health: Option<Arc<Health>>,
}

impl<P> TimeoutLayer<P> {
    /// Calls end after `limit` at the latest.
    pub fn new(protocol: P, limit: Duration, metrics: Option<Arc<CallMetrics>>) -> Self {
        Self {
            protocol,
            limit,
            metrics,
            health: None,
        }
    }

    /// Calls that need the database end UNAVAILABLE while `health` says it
    /// is down.
    pub fn with_health(mut self, health: Option<Arc<Health>>) -> Self {
        self.health = health;
        self
    }
}

impl<S, P: Clone> tower_layer::Layer<S> for TimeoutLayer<P> {
    type Service = Timeout<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        Timeout {
            inner,
            layer: self.clone(),
        }
    }
}

/// See [`TimeoutLayer`].
#[derive(Clone)]
pub struct Timeout<S, P> {
    inner: S,
    layer: TimeoutLayer<P>,
}

impl<S, P, B> tower::Service<http::Request<B>> for Timeout<S, P>
where
    S: tower::Service<http::Request<B>, Response = http::Response<P::Body>, Error = Infallible>,
    P: Protocol,
{
    type Response = http::Response<P::Body>;
    type Error = Infallible;
    type Future = TimeoutFuture<S::Future, P>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let health = self
            .layer
            .health
            .as_ref()
            .filter(|_| self.layer.protocol.needs_caller(request.uri().path()));
        let refused = health.is_some_and(|h| h.database_down());
        let limit = self
            .layer
            .protocol
            .client_deadline(request.headers())
            .map_or(self.layer.limit, |d| d.min(self.layer.limit));
        // Only to name the call in metrics, and only when they are on.
        let path = self
            .layer
            .metrics
            .is_some()
            .then(|| request.uri().path_and_query().cloned())
            .flatten();
        let now = Instant::now();
        let deadline = now + limit;
        let check = health.map(|h| (Arc::clone(h), h.check_every()));
        let first = check
            .as_ref()
            .map_or(deadline, |(_, every)| deadline.min(now + *every));
        TimeoutFuture {
            // A call refused at once is never started.
            inner: (!refused).then(|| self.inner.call(request)),
            sleep: tokio::time::sleep_until(first),
            deadline,
            check,
            protocol: self.layer.protocol.clone(),
            metrics: self.layer.metrics.clone(),
            path,
        }
    }
}

pin_project! {
    /// A call bounded by its deadline.
    pub struct TimeoutFuture<F, P> {
        #[pin]
        inner: Option<F>,
        #[pin]
        sleep: Sleep,
        deadline: Instant,
        // Whether the database is down, checked this often.
        check: Option<(Arc<Health>, Duration)>,
        protocol: P,
        metrics: Option<Arc<CallMetrics>>,
        path: Option<http::uri::PathAndQuery>,
    }
}

impl<F, P> Future for TimeoutFuture<F, P>
where
    F: Future<Output = Result<http::Response<P::Body>, Infallible>>,
    P: Protocol,
{
    type Output = Result<http::Response<P::Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let refusal = match this.inner.as_mut().as_pin_mut() {
            None => (Refusal::DatabaseUnavailable, "database_unavailable"),
            Some(inner) => {
                if let Poll::Ready(response) = inner.poll(cx) {
                    return Poll::Ready(response);
                }
                loop {
                    if this.sleep.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    let now = Instant::now();
                    match this.check.as_ref() {
                        Some((health, _)) if health.database_down() => {
                            break (Refusal::DatabaseUnavailable, "database_unavailable");
                        }
                        Some((_, every)) if now < *this.deadline => {
                            let next = (*this.deadline).min(now + *every);
                            this.sleep.as_mut().reset(next);
                        }
                        _ => break (Refusal::DeadlineExceeded, "deadline_exceeded"),
                    }
                }
            }
        };
        let (refusal, reason) = refusal;
        let response = this.protocol.refuse(refusal);
        if let (Some(metrics), Some(path)) = (this.metrics.as_ref(), this.path.as_ref()) {
            let name = this.protocol.call_name(path.path());
            metrics.refused::<P>(name, this.protocol.outcome(&response), reason);
        }
        Poll::Ready(Ok(response))
    }
}
