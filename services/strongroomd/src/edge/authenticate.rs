//! Authentication: the verified identity of the connection's client
//! certificate (with the tenant the client named, if any) becomes an
//! [`Authenticated`](strongroom_core::scope::Authenticated) caller through
//! the engine, inserted with the call's facts (request id, peer, trace) as
//! the request extension [`Caller`]. A call without a usable identity, or
//! whose identity the engine refuses, is answered here (UNAUTHENTICATED for
//! gRPC) and recorded as a failed authentication; nothing below runs for it.
//!
//! The certificate's validity now (not expired, not revoked since the
//! handshake) was checked by the transport before the edge saw the call.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use strongroom_core::policy::Reason;
use strongroom_engine::{CallContext, Engine};

use super::trace_context::TraceContext;
use super::{CallMetrics, Caller, PassOrWait, Protocol, Refusal, call};
use crate::tls::PeerInfo;

/// Authenticates every call that needs a caller.
#[derive(Clone)]
pub struct AuthenticateLayer<P> {
    protocol: P,
    engine: Arc<Engine>,
    metrics: Option<Arc<CallMetrics>>,
}

impl<P> AuthenticateLayer<P> {
    /// Callers authenticated by `engine`.
    pub fn new(protocol: P, engine: Arc<Engine>, metrics: Option<Arc<CallMetrics>>) -> Self {
        Self {
            protocol,
            engine,
            metrics,
        }
    }
}

impl<S, P: Clone> tower_layer::Layer<S> for AuthenticateLayer<P> {
    type Service = Authenticate<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticate {
            inner,
            layer: self.clone(),
        }
    }
}

/// See [`AuthenticateLayer`].
#[derive(Clone)]
pub struct Authenticate<S, P> {
    inner: S,
    layer: AuthenticateLayer<P>,
}

impl<S, P, B> tower::Service<http::Request<B>> for Authenticate<S, P>
where
    S: tower::Service<http::Request<B>, Response = http::Response<P::Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    P: Protocol,
    B: Send + 'static,
{
    type Response = http::Response<P::Body>;
    type Error = Infallible;
    type Future = PassOrWait<S::Future, P::Body>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        if !self.layer.protocol.needs_caller(request.uri().path()) {
            return PassOrWait::Pass {
                inner: self.inner.call(request),
            };
        }
        let headers = request.headers();
        let request_id = call::request_id(headers);
        let trace = TraceContext::from_headers(headers);
        let connection = request.extensions().get::<PeerInfo>();
        let peer = connection.map(|c| c.addr.to_string());
        let identity = connection.and_then(|c| c.identity.clone());
        let context = CallContext {
            peer,
            request_id,
            trace_id: Some(trace.trace_id_hex()),
        };
        let path = request
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        let hint = call::tenant_hint(headers);
        if let Some(identity) = &identity
            && let Ok(hint) = hint
            && let Some(authenticated) = self.layer.engine.cached_caller(identity, hint)
        {
            request
                .extensions_mut()
                .insert(Caller::new(authenticated, context, trace, path));
            return PassOrWait::Pass {
                inner: self.inner.call(request),
            };
        }
        // Not in the cache, or no identity: wait for the engine.
        let hint = hint.map(|h| h.map(str::to_owned));
        let layer = self.layer.clone();
        // The clone that was made ready goes with the call; this service
        // keeps the fresh one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        PassOrWait::Wait {
            waiting: Box::pin(async move {
                let name = layer.protocol.call_name(path.path());
                let rpc = name.method;
                let request_id = context.request_id.as_str();
                let peer = context.peer.as_deref();
                let Some(identity) = identity else {
                    tracing::warn!(
                        rpc,
                        request_id,
                        peer,
                        "call without a usable client certificate identity"
                    );
                    layer
                        .engine
                        .record_failed_authentication("", peer, request_id, Reason::NoIdentity)
                        .await;
                    return Ok(layer.refused(name, Refusal::NoIdentity));
                };
                let hint = match hint {
                    Ok(hint) => hint,
                    Err(error) => {
                        let refusal = Refusal::Authentication { error, request_id };
                        return Ok(layer.refused(name, refusal));
                    }
                };
                match layer.engine.authenticate(&identity, hint.as_deref()).await {
                    Ok(authenticated) => {
                        request.extensions_mut().insert(Caller::new(
                            authenticated,
                            context,
                            trace,
                            path,
                        ));
                        inner.call(request).await
                    }
                    Err(error) => {
                        let identity = &*identity;
                        tracing::warn!(rpc, request_id, peer, identity, error = %error, "authentication refused");
                        if matches!(error, strongroom_core::Error::Unauthenticated(_)) {
                            layer
                                .engine
                                .record_failed_authentication(
                                    identity,
                                    peer,
                                    request_id,
                                    Reason::UnknownIdentity,
                                )
                                .await;
                        }
                        let refusal = Refusal::Authentication { error, request_id };
                        Ok(layer.refused(name, refusal))
                    }
                }
            }),
        }
    }
}

impl<P: Protocol> AuthenticateLayer<P> {
    /// The protocol's answer to `refusal`, counted.
    fn refused(&self, name: super::CallName<'_>, refusal: Refusal<'_>) -> http::Response<P::Body> {
        let response = self.protocol.refuse(refusal);
        if let Some(metrics) = &self.metrics {
            metrics.refused::<P>(name, self.protocol.outcome(&response), "unauthenticated");
        }
        response
    }
}
