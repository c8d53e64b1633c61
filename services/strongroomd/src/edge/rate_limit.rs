//! Rate limits: the engine's abuse controls admit the authenticated caller
//! or refuse the call (RESOURCE_EXHAUSTED with a `RetryInfo` for gRPC,
//! saying how long to wait). The check is in memory; only a refusal waits,
//! to be recorded in the tenant's chain.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use strongroom_engine::Engine;

use super::{CallMetrics, Caller, PassOrWait, Protocol, Refusal};

/// Admits calls within their caller's limits.
#[derive(Clone)]
pub struct RateLimitLayer<P> {
    protocol: P,
    engine: Arc<Engine>,
    metrics: Option<Arc<CallMetrics>>,
}

impl<P> RateLimitLayer<P> {
    /// Limits kept by `engine`.
    pub fn new(protocol: P, engine: Arc<Engine>, metrics: Option<Arc<CallMetrics>>) -> Self {
        Self {
            protocol,
            engine,
            metrics,
        }
    }
}

impl<S, P: Clone> tower_layer::Layer<S> for RateLimitLayer<P> {
    type Service = RateLimit<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            layer: self.clone(),
        }
    }
}

/// See [`RateLimitLayer`].
#[derive(Clone)]
pub struct RateLimit<S, P> {
    inner: S,
    layer: RateLimitLayer<P>,
}

impl<S, P, B> tower::Service<http::Request<B>> for RateLimit<S, P>
where
    S: tower::Service<http::Request<B>, Response = http::Response<P::Body>, Error = Infallible>,
    P: Protocol,
{
    type Response = http::Response<P::Body>;
    type Error = Infallible;
    type Future = PassOrWait<S::Future, P::Body>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // Calls that need no caller (health checks) have no limit.
        let Some(caller) = request.extensions().get::<Caller>() else {
            return PassOrWait::Pass {
                inner: self.inner.call(request),
            };
        };
        let Err(refusal) = self.layer.engine.admit(caller.authenticated()) else {
            return PassOrWait::Pass {
                inner: self.inner.call(request),
            };
        };
        let caller = caller.clone();
        let layer = self.layer.clone();
        PassOrWait::Wait {
            waiting: Box::pin(async move {
                let name = layer.protocol.call_name(caller.path());
                let context = caller.context();
                tracing::info!(
                    rpc = name.method,
                    request_id = %context.request_id,
                    principal = caller
                        .authenticated()
                        .principal()
                        .map(|p| tracing::field::display(p.id)),
                    limit = refusal.limit.reason().as_str(),
                    "rate limited"
                );
                layer
                    .engine
                    .record_rate_limited(caller.authenticated(), context, name.method, &refusal)
                    .await;
                let response = layer.protocol.refuse(Refusal::RateLimited(&refusal));
                if let Some(metrics) = &layer.metrics {
                    metrics.refused::<P>(name, layer.protocol.outcome(&response), "rate_limited");
                }
                Ok(response)
            }),
        }
    }
}
