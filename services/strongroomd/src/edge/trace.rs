//! A span per admitted call, its log line, its metrics, and the request id
//! echoed in the response (`x-request-id`).
//!
//! The span (`rpc`) records the call's names, tenant, principal, request id
//! and trace id, and its outcome: explicit fields only, never a request or
//! response body. It is a DEBUG span: at the default `info` log level, with
//! no exporter, it is never built (a disabled callsite costs a load and a
//! compare). With an OTLP exporter it is exported, continuing the client's
//! trace when the call came with a `traceparent` (see
//! [`crate::telemetry::join_trace`]).
//!
//! Each call logs one line when its response is ready: `ok` at DEBUG,
//! `refused` (with its code) at INFO.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use pin_project_lite::pin_project;
use tracing::Span;
use tracing::field::{Empty, display};

use super::call::REQUEST_ID;
use super::{CallMetrics, Caller, Protocol};

/// Traces admitted calls.
#[derive(Clone)]
pub struct TraceLayer<P> {
    protocol: P,
    metrics: Option<Arc<CallMetrics>>,
}

impl<P> TraceLayer<P> {
    /// Spans, log lines and (when `metrics` is set: an exporter is
    /// configured) metrics.
    pub fn new(protocol: P, metrics: Option<Arc<CallMetrics>>) -> Self {
        Self { protocol, metrics }
    }
}

impl<S, P: Clone> tower_layer::Layer<S> for TraceLayer<P> {
    type Service = Trace<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        Trace {
            inner,
            layer: self.clone(),
        }
    }
}

/// See [`TraceLayer`].
#[derive(Clone)]
pub struct Trace<S, P> {
    inner: S,
    layer: TraceLayer<P>,
}

impl<S, P, B> tower::Service<http::Request<B>> for Trace<S, P>
where
    S: tower::Service<http::Request<B>, Response = http::Response<P::Body>, Error = Infallible>,
    P: Protocol,
{
    type Response = http::Response<P::Body>;
    type Error = Infallible;
    type Future = TraceFuture<S::Future, P>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // Health checks and reflection have no caller and are not traced.
        let Some(caller) = request.extensions().get::<Caller>().cloned() else {
            return TraceFuture {
                inner: self.inner.call(request),
                call: None,
            };
        };
        let protocol = &self.layer.protocol;
        let name = protocol.call_name(caller.path());
        let authenticated = caller.authenticated();
        let context = caller.context();
        let span = tracing::debug_span!(
            "rpc",
            otel.name = caller.path().trim_start_matches('/'),
            otel.kind = "server",
            rpc.system = P::SYSTEM,
            rpc.service = name.service,
            rpc = name.method,
            tenant = authenticated.tenant().map(|t| t.name.as_str()),
            principal = authenticated.principal().map(|p| display(p.id)),
            request_id = %context.request_id,
            trace_id = context.trace_id.as_deref(),
            rpc.grpc.status_code = Empty,
        );
        if self.layer.metrics.is_some() {
            crate::telemetry::join_trace(&span, caller.trace());
        }
        let inner = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        TraceFuture {
            inner,
            call: Some(Traced {
                protocol: protocol.clone(),
                metrics: self.layer.metrics.clone(),
                caller,
                span,
                started: Instant::now(),
            }),
        }
    }
}

/// An admitted call in progress.
pub struct Traced<P> {
    protocol: P,
    metrics: Option<Arc<CallMetrics>>,
    caller: Caller,
    span: Span,
    started: Instant,
}

pin_project! {
    /// A call, inside its span when it has one.
    pub struct TraceFuture<F, P> {
        #[pin]
        inner: F,
        call: Option<Traced<P>>,
    }
}

impl<F, P> Future for TraceFuture<F, P>
where
    F: Future<Output = Result<http::Response<P::Body>, Infallible>>,
    P: Protocol,
{
    type Output = Result<http::Response<P::Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(traced) = this.call.as_ref() else {
            return this.inner.poll(cx);
        };
        let polled = {
            let _entered = traced.span.enter();
            this.inner.poll(cx)
        };
        let Poll::Ready(Ok(mut response)) = polled else {
            return polled;
        };
        if let Some(traced) = this.call.take() {
            traced.finish(&mut response);
        }
        Poll::Ready(Ok(response))
    }
}

impl<P: Protocol> Traced<P> {
    /// Logs and measures the call whose response is `response`, and echoes
    /// its request id there.
    fn finish(self, response: &mut http::Response<P::Body>) {
        let elapsed = self.started.elapsed();
        let context = self.caller.context();
        if let Ok(value) = http::HeaderValue::from_str(&context.request_id) {
            response.headers_mut().insert(REQUEST_ID, value);
        }
        let outcome = self.protocol.outcome(response);
        let name = self.protocol.call_name(self.caller.path());
        let rpc = name.method;
        self.span.record("rpc.grpc.status_code", outcome.code);
        let elapsed_us = elapsed.as_micros() as u64;
        // Borrowed, so a line at a level that is off allocates nothing.
        let authenticated = self.caller.authenticated();
        let tenant = authenticated.tenant().map(|t| t.name.as_str());
        let principal = authenticated.principal().map(|p| display(p.id));
        let request_id = &context.request_id;
        if outcome.ok {
            tracing::debug!(rpc, request_id = %request_id, tenant, principal, elapsed_us, "ok");
        } else {
            tracing::info!(
                rpc,
                request_id = %request_id,
                tenant,
                principal,
                elapsed_us,
                code = outcome.name,
                "refused"
            );
        }
        if let Some(metrics) = &self.metrics {
            metrics.finished::<P>(name, outcome, elapsed);
        }
    }
}
