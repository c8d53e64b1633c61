//! The request edge: what every call goes through before a service sees
//! it, whatever protocol carries it. It speaks `http::Request` and
//! `http::Response` through tower, never a protocol's own types: the gRPC
//! services (`crate::grpc`) sit behind it today, the HTTP relay will sit
//! behind it the same way. What differs between protocols (how a refusal is
//! answered, where a client puts its deadline, how a response tells its
//! outcome) is asked of a [`Protocol`].
//!
//! The transport (`crate::serve`) hands each call over with the
//! connection's verified peer (`tls::PeerInfo`) as a request extension,
//! after checking that the client certificate is still valid. Then the
//! stack built by [`stack`] runs, outermost first:
//!
//! 1. [`timeout`]: the server's deadline (the client's, if shorter) bounds
//!    everything below, so no layer or service can hold a call longer.
//! 2. [`shed`]: calls in flight are capped server-wide; a call beyond the
//!    cap is refused at once, before it costs a cache lookup or a database
//!    connection.
//! 3. [`authenticate`]: the request id, the trace context and the verified
//!    identity (with the tenant hint) become the typed [`Caller`], inserted
//!    as a request extension; nothing below runs for a caller that is not
//!    authenticated. Health checks and reflection need no caller.
//! 4. [`rate_limit`]: the engine's abuse controls admit the caller (limits
//!    are per principal, so after authentication).
//! 5. [`trace`]: a span per admitted call (rpc, tenant, principal, request
//!    id, trace id; never a body), its log line and its metrics.
//! 6. [`body_limit`]: the request body is cut off past the size limit,
//!    ending with the protocol's error for it.
//!
//! Every layer's future is a plain state machine; only the rare paths that
//! wait for the engine (a caller not in the cache, a refusal to record)
//! are boxed.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::PathAndQuery;
use pin_project_lite::pin_project;
use strongroom_core::scope::Authenticated;
use strongroom_engine::{CallContext, Engine};

pub mod authenticate;
pub mod body_limit;
pub mod call;
mod ids;
pub mod metrics;
pub mod rate_limit;
pub mod shed;
pub mod timeout;
pub mod trace;
pub mod trace_context;

pub use call::{REQUEST_ID_HEADER, TENANT_HEADER};
pub use metrics::CallMetrics;
pub use trace_context::TraceContext;

/// An error a request body can end with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A response future of the edge's slow paths.
pub type BoxResponse<B> =
    Pin<Box<dyn Future<Output = Result<http::Response<B>, Infallible>> + Send>>;

pin_project! {
    /// The future of a layer that usually passes the call on at once and
    /// sometimes has to wait for the engine first (boxed: rare).
    #[project = PassOrWaitProj]
    #[allow(missing_docs)] // the projection pin_project_lite generates
    pub enum PassOrWait<F, B> {
        /// Passed on to the inner service.
        Pass { #[pin] inner: F },
        /// Waiting for the engine, then answered or passed on.
        Wait { waiting: BoxResponse<B> },
    }
}

impl<F, B> Future for PassOrWait<F, B>
where
    F: Future<Output = Result<http::Response<B>, Infallible>>,
{
    type Output = Result<http::Response<B>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            PassOrWaitProj::Pass { inner } => inner.poll(cx),
            PassOrWaitProj::Wait { waiting } => waiting.as_mut().poll(cx),
        }
    }
}

/// What the edge needs to know of the protocol a call came in with.
pub trait Protocol: Clone + Send + Sync + 'static {
    /// The body of the protocol's responses.
    type Body: Send + 'static;

    /// The protocol's name in metrics (`rpc.system`).
    const SYSTEM: &'static str;

    /// The answer to a call the edge refuses.
    fn refuse(&self, refusal: Refusal<'_>) -> http::Response<Self::Body>;

    /// The deadline the client gave its call, if it sent one.
    fn client_deadline(&self, headers: &http::HeaderMap) -> Option<Duration>;

    /// Whether a call to `path` needs an authenticated caller (health
    /// checks and reflection do not).
    fn needs_caller(&self, path: &str) -> bool;

    /// The service and method a call to `path` is for;
    /// [`CallName::UNKNOWN`] when the server serves no such method.
    fn call_name<'a>(&self, path: &'a str) -> CallName<'a>;

    /// The outcome a response reports.
    fn outcome(&self, response: &http::Response<Self::Body>) -> Outcome;

    /// The most bytes one message of a call to `path` may hold, when the
    /// server's limit is `configured`: the limit itself, except for the few
    /// methods whose contract takes larger messages.
    fn max_message_bytes(&self, path: &str, configured: usize) -> usize {
        let _ = path;
        configured
    }

    /// The most bytes the request body of a call to `path` may hold when a
    /// message may hold `max_message_bytes` (the protocol's framing
    /// included). A call that streams a body of many messages (the relay's
    /// Forward) is bounded by its service instead, message by message and
    /// in total.
    fn body_limit(&self, path: &str, max_message_bytes: usize) -> usize;

    /// The error a request body over the limit ends with.
    fn body_too_large(&self, max_message_bytes: usize) -> BoxError;
}

/// Why the edge refused a call.
#[derive(Debug)]
pub enum Refusal<'a> {
    /// The client certificate carries no usable identity.
    NoIdentity,
    /// Authentication refused the identity (or could not decide).
    Authentication {
        /// Why.
        error: strongroom_core::Error,
        /// The call's request id, for an internal error's message.
        request_id: &'a str,
    },
    /// A rate limit of the caller.
    RateLimited(&'a strongroom_engine::abuse::Refusal),
    /// The server has as many calls in flight as it takes.
    Overloaded,
    /// The call's deadline passed.
    DeadlineExceeded,
    /// The call needs the database, which does not answer.
    DatabaseUnavailable,
}

/// A call's service and method (`strongroom.v1.CredentialService`,
/// `RevealCredential`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallName<'a> {
    /// The service.
    pub service: &'a str,
    /// The method.
    pub method: &'a str,
}

impl CallName<'_> {
    /// A call to a method the server does not serve: its path is never
    /// repeated (it is free text chosen by the client).
    pub const UNKNOWN: CallName<'static> = CallName {
        service: "unknown",
        method: "unknown",
    };
}

/// How a call ended, in the protocol's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The protocol's code (a gRPC status code).
    pub code: i32,
    /// Its name (`PermissionDenied`).
    pub name: &'static str,
    /// Whether the call succeeded.
    pub ok: bool,
    /// When the call was refused for who the caller is or what it may do,
    /// why (`unauthenticated`, `permission_denied`, `rate_limited`).
    pub denial: Option<&'static str>,
}

/// The authenticated caller of a call and the call's facts, inserted as a
/// request extension by [`authenticate`]: services take it from there and
/// never authenticate themselves. Cloning it is cheap.
#[derive(Clone)]
pub struct Caller(Arc<CallerParts>);

struct CallerParts {
    authenticated: Arc<Authenticated>,
    context: CallContext,
    trace: TraceContext,
    path: PathAndQuery,
}

impl Caller {
    pub(crate) fn new(
        authenticated: Arc<Authenticated>,
        context: CallContext,
        trace: TraceContext,
        path: PathAndQuery,
    ) -> Self {
        Self(Arc::new(CallerParts {
            authenticated,
            context,
            trace,
            path,
        }))
    }

    /// Who is calling.
    pub fn authenticated(&self) -> &Arc<Authenticated> {
        &self.0.authenticated
    }

    /// The call's facts for audit: peer, request id, trace id.
    pub fn context(&self) -> &CallContext {
        &self.0.context
    }

    /// The call's trace context.
    pub fn trace(&self) -> &TraceContext {
        &self.0.trace
    }

    /// The request path the call was made to.
    pub fn path(&self) -> &str {
        self.0.path.path()
    }
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("identity", &self.0.authenticated.identity())
            .field("request_id", &self.0.context.request_id)
            .finish_non_exhaustive()
    }
}

/// The edge's limits.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The server's deadline for one call.
    pub request_timeout: Duration,
    /// Calls in flight server-wide.
    pub max_calls_in_flight: usize,
    /// Largest request message, in bytes.
    pub max_message_bytes: usize,
    /// Whether the database answers: while it does not, calls that need it
    /// are answered UNAVAILABLE (see `crate::health`).
    pub health: Option<Arc<crate::health::Health>>,
}

/// The edge's stack over `service` (see the module documentation for the
/// order and why).
pub type Stack<P, S> = timeout::Timeout<
    shed::Shed<
        authenticate::Authenticate<
            rate_limit::RateLimit<trace::Trace<body_limit::BodyLimit<S, P>, P>, P>,
            P,
        >,
        P,
    >,
    P,
>;

/// Builds the edge in front of `service`. `metrics` is `None` when no
/// exporter is configured: then no call does any metrics work.
pub fn stack<P: Protocol, S>(
    protocol: P,
    settings: Settings,
    engine: Arc<Engine>,
    metrics: Option<Arc<CallMetrics>>,
    service: S,
) -> Stack<P, S> {
    tower::ServiceBuilder::new()
        // Outermost: the deadline covers every layer below, authentication
        // (which may wait for the store) included.
        .layer(
            timeout::TimeoutLayer::new(protocol.clone(), settings.request_timeout, metrics.clone())
                .with_health(settings.health),
        )
        // Before any work for the call: a refused call costs a counter.
        .layer(shed::ShedLayer::new(
            protocol.clone(),
            settings.max_calls_in_flight,
            metrics.clone(),
        ))
        // Everything below knows who is calling.
        .layer(authenticate::AuthenticateLayer::new(
            protocol.clone(),
            Arc::clone(&engine),
            metrics.clone(),
        ))
        // Per principal: needs the caller.
        .layer(rate_limit::RateLimitLayer::new(
            protocol.clone(),
            engine,
            metrics.clone(),
        ))
        // Only admitted calls get a span: its fields name the caller.
        .layer(trace::TraceLayer::new(protocol.clone(), metrics))
        // Last: the service reads the body.
        .layer(body_limit::BodyLimitLayer::new(
            protocol,
            settings.max_message_bytes,
        ))
        .service(service)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use http_body_util::BodyExt as _;
    use hyper::body::Bytes;
    use tokio::sync::Semaphore;
    use tower::Service as _;
    use tower_layer::Layer as _;

    use super::*;

    /// A protocol answering refusals with plain HTTP statuses.
    #[derive(Clone)]
    struct Plain;

    impl Protocol for Plain {
        type Body = &'static str;
        const SYSTEM: &'static str = "test";

        fn refuse(&self, refusal: Refusal<'_>) -> http::Response<&'static str> {
            let (status, body) = match refusal {
                Refusal::Overloaded => (503, "overloaded"),
                Refusal::DeadlineExceeded => (504, "deadline"),
                _ => (401, "refused"),
            };
            let mut response = http::Response::new(body);
            *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
            response
        }

        fn client_deadline(&self, _headers: &http::HeaderMap) -> Option<Duration> {
            None
        }

        fn needs_caller(&self, _path: &str) -> bool {
            false
        }

        fn call_name<'a>(&self, path: &'a str) -> CallName<'a> {
            CallName {
                service: "",
                method: path,
            }
        }

        fn outcome(&self, response: &http::Response<&'static str>) -> Outcome {
            Outcome {
                code: i32::from(response.status().as_u16()),
                name: "",
                ok: response.status().is_success(),
                denial: None,
            }
        }

        fn body_limit(&self, _path: &str, max_message_bytes: usize) -> usize {
            max_message_bytes
        }

        fn body_too_large(&self, max_message_bytes: usize) -> BoxError {
            format!("over {max_message_bytes}").into()
        }
    }

    /// A service whose calls finish once `gate` gives them a permit.
    #[derive(Clone)]
    struct Gated(Arc<Semaphore>);

    impl<B: Send + 'static> tower::Service<http::Request<B>> for Gated {
        type Response = http::Response<&'static str>;
        type Error = Infallible;
        type Future = BoxResponse<&'static str>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _request: http::Request<B>) -> Self::Future {
            let gate = Arc::clone(&self.0);
            Box::pin(async move {
                let _permit = gate.acquire().await;
                Ok(http::Response::new("served"))
            })
        }
    }

    fn request() -> http::Request<()> {
        http::Request::new(())
    }

    #[tokio::test]
    async fn calls_beyond_the_cap_are_refused_at_once_and_slots_come_back() {
        let gate = Arc::new(Semaphore::new(0));
        let mut shed = shed::ShedLayer::new(Plain, 2, None).layer(Gated(Arc::clone(&gate)));
        let first = tokio::spawn(shed.call(request()));
        let second = tokio::spawn(shed.call(request()));
        let refused = shed.call(request()).await.unwrap();
        assert_eq!(refused.status(), 503);
        gate.add_permits(2);
        assert_eq!(first.await.unwrap().unwrap().status(), 200);
        assert_eq!(second.await.unwrap().unwrap().status(), 200);
        gate.add_permits(1);
        assert_eq!(shed.call(request()).await.unwrap().status(), 200);
    }

    #[tokio::test]
    async fn a_call_past_its_deadline_is_answered_by_the_protocol() {
        let gate = Arc::new(Semaphore::new(0));
        let mut timeout = timeout::TimeoutLayer::new(Plain, Duration::from_millis(20), None)
            .layer(Gated(Arc::clone(&gate)));
        let response = timeout.call(request()).await.unwrap();
        assert_eq!(response.status(), 504);
        gate.add_permits(1);
        let response = timeout.call(request()).await.unwrap();
        assert_eq!(response.status(), 200);
    }

    /// Reads the request body to its end.
    #[derive(Clone)]
    struct ReadBody;

    impl<B> tower::Service<http::Request<B>> for ReadBody
    where
        B: hyper::body::Body<Data = Bytes, Error = BoxError> + Send + 'static,
    {
        type Response = Result<Bytes, String>;
        type Error = Infallible;
        type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: http::Request<B>) -> Self::Future {
            Box::pin(async move {
                Ok(match request.into_body().collect().await {
                    Ok(body) => Ok(body.to_bytes()),
                    Err(e) => Err(e.to_string()),
                })
            })
        }
    }

    #[tokio::test]
    async fn a_body_over_the_limit_ends_with_the_protocols_error() {
        let mut limited = body_limit::BodyLimitLayer::new(Plain, 4).layer(ReadBody);
        let body = |text: &'static str| {
            http::Request::new(http_body_util::Full::new(Bytes::from_static(
                text.as_bytes(),
            )))
        };
        let read = limited.call(body("four")).await.unwrap();
        assert_eq!(read.unwrap(), "four");
        let read = limited.call(body("fives")).await.unwrap();
        assert_eq!(read.unwrap_err(), "over 4");
    }
}
