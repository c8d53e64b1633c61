//! Load shedding: at most `limits.max_calls_in_flight` calls in flight
//! server-wide. A call beyond it is refused at once (UNAVAILABLE for gRPC:
//! the client may retry after a backoff) instead of queueing for the
//! database behind calls that are already late.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use super::{CallMetrics, Protocol, Refusal};

/// Caps the calls in flight.
#[derive(Clone)]
pub struct ShedLayer<P> {
    protocol: P,
    max: usize,
    in_flight: Arc<AtomicUsize>,
    metrics: Option<Arc<CallMetrics>>,
}

impl<P> ShedLayer<P> {
    /// At most `max` calls in flight.
    pub fn new(protocol: P, max: usize, metrics: Option<Arc<CallMetrics>>) -> Self {
        Self {
            protocol,
            max,
            in_flight: Arc::new(AtomicUsize::new(0)),
            metrics,
        }
    }
}

impl<S, P: Clone> tower_layer::Layer<S> for ShedLayer<P> {
    type Service = Shed<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        Shed {
            inner,
            layer: self.clone(),
        }
    }
}

/// See [`ShedLayer`].
#[derive(Clone)]
pub struct Shed<S, P> {
    inner: S,
    layer: ShedLayer<P>,
}

/// One call counted in flight until dropped.
pub struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<S, P, B> tower::Service<http::Request<B>> for Shed<S, P>
where
    S: tower::Service<http::Request<B>, Response = http::Response<P::Body>, Error = Infallible>,
    P: Protocol,
{
    type Response = http::Response<P::Body>;
    type Error = Infallible;
    type Future = ShedFuture<S::Future, P::Body>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let in_flight = &self.layer.in_flight;
        if in_flight.fetch_add(1, Ordering::Relaxed) >= self.layer.max {
            in_flight.fetch_sub(1, Ordering::Relaxed);
            let protocol = &self.layer.protocol;
            let response = protocol.refuse(Refusal::Overloaded);
            if let Some(metrics) = &self.layer.metrics {
                let name = protocol.call_name(request.uri().path());
                metrics.refused::<P>(name, protocol.outcome(&response), "overloaded");
            }
            return ShedFuture::Refused {
                response: Some(response),
            };
        }
        ShedFuture::Admitted {
            inner: self.inner.call(request),
            _slot: InFlight(Arc::clone(in_flight)),
        }
    }
}

pin_project! {
    /// A call holding a slot, or refused.
    #[project = ShedProj]
    #[allow(missing_docs)] // the projection pin_project_lite generates
    pub enum ShedFuture<F, B> {
        /// Admitted: the slot is held until the response is ready.
        Admitted { #[pin] inner: F, _slot: InFlight },
        /// Refused.
        Refused { response: Option<http::Response<B>> },
    }
}

impl<F, B> Future for ShedFuture<F, B>
where
    F: Future<Output = Result<http::Response<B>, Infallible>>,
{
    type Output = Result<http::Response<B>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ShedProj::Admitted { inner, .. } => inner.poll(cx),
            ShedProj::Refused { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                None => Poll::Pending,
            },
        }
    }
}
