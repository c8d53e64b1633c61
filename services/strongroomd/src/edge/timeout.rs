//! The server's deadline for a call: `limits.request_timeout`, or the
//! client's own deadline when it is shorter. A call still running then is
//! dropped (with whatever it was waiting for) and answered
//! DEADLINE_EXCEEDED, as gRPC defines it. A call the client cancels ends
//! with its stream instead.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::Sleep;

use super::{CallMetrics, Protocol, Refusal};

/// Bounds every call in time.
#[derive(Clone)]
pub struct TimeoutLayer<P> {
    protocol: P,
    limit: Duration,
    metrics: Option<Arc<CallMetrics>>,
}

impl<P> TimeoutLayer<P> {
    /// Calls end after `limit` at the latest.
    pub fn new(protocol: P, limit: Duration, metrics: Option<Arc<CallMetrics>>) -> Self {
        Self {
            protocol,
            limit,
            metrics,
        }
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
        TimeoutFuture {
            inner: self.inner.call(request),
            sleep: tokio::time::sleep(limit),
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
        inner: F,
        #[pin]
        sleep: Sleep,
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
        let this = self.project();
        if let Poll::Ready(response) = this.inner.poll(cx) {
            return Poll::Ready(response);
        }
        if this.sleep.poll(cx).is_pending() {
            return Poll::Pending;
        }
        let response = this.protocol.refuse(Refusal::DeadlineExceeded);
        if let (Some(metrics), Some(path)) = (this.metrics.as_ref(), this.path.as_ref()) {
            let name = this.protocol.call_name(path.path());
            metrics.refused::<P>(name, this.protocol.outcome(&response), "deadline_exceeded");
        }
        Poll::Ready(Ok(response))
    }
}
