//! The gRPC services behind the request edge (`crate::edge`): one module
//! per service, each with its wire conversions (`convert`), the one
//! error-to-status mapping ([`status`]), and what the edge needs to know of
//! gRPC ([`Grpc`]). A handler takes the authenticated caller the edge put
//! in the request, parses the request into domain types, calls the engine
//! and converts the result. No business rule lives here.

use std::sync::Arc;
use std::time::Duration;

use strongroom_core::Result;
use strongroom_core::scope::Authenticated;
use strongroom_engine::{CallContext, Engine};
use tonic::{Code, Status};

use crate::edge::{self, BoxError, CallName, Outcome, Refusal};

mod admin;
mod audit;
pub mod convert;
mod credential;
pub(crate) mod idempotent;
mod policy;
mod routes;
pub mod status;

pub use admin::AdminHandler;
pub use audit::AuditHandler;
pub use credential::CredentialHandler;
pub use edge::TENANT_HEADER;
pub use policy::PolicyHandler;
pub use routes::{GrpcEdge, routes};
use status::to_status;

/// What every handler shares.
#[derive(Clone)]
pub struct Shared {
    engine: Arc<Engine>,
    /// Turns true when the server starts shutting down: long-lived
    /// streams end then (UNAVAILABLE), so draining does not wait on them.
    stopping: tokio::sync::watch::Receiver<bool>,
}

impl Shared {
    /// Handlers over `engine`; streams end when `stopping` turns true.
    pub fn new(engine: Arc<Engine>, stopping: tokio::sync::watch::Receiver<bool>) -> Self {
        Self { engine, stopping }
    }
}

/// An authenticated call in progress: the caller the edge authenticated.
#[derive(Clone)]
pub(crate) struct Call {
    caller: Arc<Authenticated>,
    edge: edge::Caller,
}

impl Call {
    /// The caller the edge put in `request`. Every strongroom RPC passes
    /// the edge's authentication, so a request without one is refused
    /// (fails closed).
    pub(crate) fn of<T>(request: &tonic::Request<T>) -> Result<Call, Status> {
        match request.extensions().get::<edge::Caller>() {
            Some(edge) => Ok(Call {
                caller: Arc::clone(edge.authenticated()),
                edge: edge.clone(),
            }),
            None => {
                tracing::error!("a call reached its service without an authenticated caller");
                Err(Status::unauthenticated("the caller is not authenticated"))
            }
        }
    }

    /// The authenticated caller.
    pub(crate) fn caller(&self) -> &Authenticated {
        &self.caller
    }

    /// The authenticated caller, shared (for the rate limiters' records).
    pub(crate) fn caller_shared(&self) -> &Arc<Authenticated> {
        &self.caller
    }

    /// The call's facts for audit.
    pub(crate) fn ctx(&self) -> &CallContext {
        self.edge.context()
    }

    /// The response, or the status of the error (the edge logs the call).
    pub(crate) fn finish<T>(&self, result: Result<T>) -> Result<tonic::Response<T>, Status> {
        result
            .map(tonic::Response::new)
            .map_err(|e| to_status(e, &self.edge.context().request_id))
    }
}

/// Runs one RPC: the caller from the edge, then the body (a `Result` of the
/// response message), then errors mapped to statuses.
macro_rules! rpc {
    ($request:ident, |$call:ident, $req:ident| $body:block) => {{
        let $call = crate::grpc::Call::of(&$request)?;
        let $req = $request.into_inner();
        let result: strongroom_core::Result<_> = async { $body }.await;
        $call.finish(result)
    }};
    // A mutating call that takes `request_id`, run once per request id
    // (see `idempotent`): the body names the handler `$this`, as it runs
    // in a task of its own.
    (idempotent $handler:expr, $request:ident, |$this:ident, $call:ident, $req:ident| $body:block) => {{
        let $call = crate::grpc::Call::of(&$request)?;
        let $req = $request.into_inner();
        let $this = ::std::clone::Clone::clone($handler);
        let engine = ::std::sync::Arc::clone(&$this.0.engine);
        crate::grpc::idempotent::run(&engine, $call, $req, move |$call, $req| async move {
            let $this = &$this;
            let result: strongroom_core::Result<_> = async { $body }.await;
            result
        })
        .await
    }};
}
pub(crate) use rpc;

/// gRPC as the edge sees it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Grpc;

/// A gRPC message's frame header: a compression flag and a length.
const FRAME_HEADER_BYTES: usize = 5;

/// Where a trailers-only response (a refusal) puts its status.
const GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");

/// Where a client puts its deadline.
const GRPC_TIMEOUT: http::HeaderName = http::HeaderName::from_static("grpc-timeout");

/// ScanText, the one method whose messages may exceed the server's message
/// limit.
const SCAN_TEXT_PATH: &str = "/strongroom.v1.CredentialService/ScanText";

/// The largest ScanText request: its longest text and room for the other
/// fields.
pub const SCAN_TEXT_MAX_MESSAGE_BYTES: usize = strongroom_engine::MAX_SCAN_TEXT_BYTES + 64 * 1024;

/// The tenant import, whose streamed body is bounded by the import itself
/// (`admin::transfer::MAX_IMPORT_BYTES`; each message by the decoder).
const IMPORT_TENANT: &str = "/strongroom.v1.AdminService/ImportTenant";

/// The relay's streaming call, whose body the relay bounds itself.
const RELAY_FORWARD: &str = "/strongroom.v1.RelayService/Forward";

/// The package of strongroom's own services, which need a caller.
const STRONGROOM_PREFIX: &str = "/strongroom.v1.";

impl edge::Protocol for Grpc {
    type Body = tonic::body::Body;

    const SYSTEM: &'static str = "grpc";

    fn refuse(&self, refusal: Refusal<'_>) -> http::Response<Self::Body> {
        let status = match refusal {
            Refusal::NoIdentity => {
                Status::unauthenticated("a client certificate with an identity is required")
            }
            Refusal::Authentication { error, request_id } => to_status(error, request_id),
            Refusal::RateLimited(refusal) => status::rate_limited(refusal),
            Refusal::Overloaded => Status::unavailable(
                "the server has as many calls in flight as it takes; retry after a backoff",
            ),
            // The server's own deadline (the client's, or the request
            // timeout) passed: DEADLINE_EXCEEDED, as gRPC defines it.
            Refusal::DeadlineExceeded => {
                Status::deadline_exceeded("the call did not finish within its deadline")
            }
            Refusal::DatabaseUnavailable => {
                Status::unavailable("the database is unavailable; retry after a backoff")
            }
        };
        status.into_http()
    }

    fn client_deadline(&self, headers: &http::HeaderMap) -> Option<Duration> {
        grpc_timeout(headers)
    }

    fn needs_caller(&self, path: &str) -> bool {
        path.starts_with(STRONGROOM_PREFIX)
    }

    fn call_name<'a>(&self, path: &'a str) -> CallName<'a> {
        // Only the methods the server serves name themselves: a path is
        // text the client chose, and names end up in metric labels and
        // logs.
        if !known_methods().contains(path) {
            return CallName::UNKNOWN;
        }
        let path = path.strip_prefix('/').unwrap_or(path);
        match path.split_once('/') {
            Some((service, method)) => CallName { service, method },
            None => CallName::UNKNOWN,
        }
    }

    fn outcome(&self, response: &http::Response<Self::Body>) -> Outcome {
        // A refusal is a trailers-only response: its status is in the
        // head. A response with a message is OK: every strongroom RPC
        // answers one message or an error.
        let code = response
            .headers()
            .get(&GRPC_STATUS)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i32>().ok())
            .map_or(Code::Ok, Code::from_i32);
        outcome(code)
    }

    fn max_message_bytes(&self, path: &str, configured: usize) -> usize {
        if path == SCAN_TEXT_PATH {
            configured.max(SCAN_TEXT_MAX_MESSAGE_BYTES)
        } else {
            configured
        }
    }

    fn body_limit(&self, path: &str, max_message_bytes: usize) -> usize {
        if path == RELAY_FORWARD || path == IMPORT_TENANT {
            return usize::MAX;
        }
        max_message_bytes.saturating_add(FRAME_HEADER_BYTES)
    }

    fn body_too_large(&self, max_message_bytes: usize) -> BoxError {
        // tonic finds the status in the body's error and answers it.
        Box::new(Status::invalid_argument(format!(
            "request: message is over the limit of {max_message_bytes} bytes"
        )))
    }
}

/// The outcome of a call answered with `code`.
fn outcome(code: Code) -> Outcome {
    let (name, denial) = match code {
        Code::Ok => ("Ok", None),
        Code::Cancelled => ("Cancelled", None),
        Code::Unknown => ("Unknown", None),
        Code::InvalidArgument => ("InvalidArgument", None),
        Code::DeadlineExceeded => ("DeadlineExceeded", None),
        Code::NotFound => ("NotFound", None),
        Code::AlreadyExists => ("AlreadyExists", None),
        Code::PermissionDenied => ("PermissionDenied", Some("permission_denied")),
        Code::ResourceExhausted => ("ResourceExhausted", Some("rate_limited")),
        Code::FailedPrecondition => ("FailedPrecondition", None),
        Code::Aborted => ("Aborted", None),
        Code::OutOfRange => ("OutOfRange", None),
        Code::Unimplemented => ("Unimplemented", None),
        Code::Internal => ("Internal", None),
        Code::Unavailable => ("Unavailable", None),
        Code::DataLoss => ("DataLoss", None),
        Code::Unauthenticated => ("Unauthenticated", Some("unauthenticated")),
    };
    Outcome {
        code: code as i32,
        name,
        ok: code == Code::Ok,
        denial,
    }
}

/// The client's deadline from the `grpc-timeout` header (`<digits><unit>`,
/// at most 8 digits), if it sent a valid one.
fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get(&GRPC_TIMEOUT)?.to_str().ok()?;
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The path (`/package.Service/Method`) of every method the server
/// serves: the contract's services, health and reflection, read from their
/// generated descriptor sets once.
fn known_methods() -> &'static std::collections::HashSet<String> {
    static KNOWN: std::sync::LazyLock<std::collections::HashSet<String>> =
        std::sync::LazyLock::new(|| {
            use prost::Message as _;
            let mut known = std::collections::HashSet::new();
            for encoded in [
                strongroom_proto::FILE_DESCRIPTOR_SET,
                tonic_health::pb::FILE_DESCRIPTOR_SET,
                tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            ] {
                let Ok(set) = prost_types::FileDescriptorSet::decode(encoded) else {
                    continue;
                };
                for file in set.file {
                    let package = file.package();
                    for service in &file.service {
                        for method in &service.method {
                            known.insert(format!(
                                "/{package}.{}/{}",
                                service.name(),
                                method.name()
                            ));
                        }
                    }
                }
            }
            known
        });
    &KNOWN
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::Protocol;

    #[test]
    fn grpc_timeout_header() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(grpc_timeout(&headers), None);
        for (text, expected) in [
            ("5S", Some(Duration::from_secs(5))),
            ("250m", Some(Duration::from_millis(250))),
            ("2M", Some(Duration::from_secs(120))),
            ("1H", Some(Duration::from_secs(3600))),
            ("7u", Some(Duration::from_micros(7))),
            ("9n", Some(Duration::from_nanos(9))),
            ("123456789S", None),
            ("S", None),
            ("5x", None),
            ("-5S", None),
        ] {
            headers.insert("grpc-timeout", http::HeaderValue::from_static(text));
            assert_eq!(grpc_timeout(&headers), expected, "{text}");
        }
    }

    #[test]
    fn names_and_outcomes() {
        let name = Grpc.call_name("/strongroom.v1.CredentialService/RevealCredential");
        assert_eq!(name.service, "strongroom.v1.CredentialService");
        assert_eq!(name.method, "RevealCredential");
        let health = Grpc.call_name("/grpc.health.v1.Health/Check");
        assert_eq!(
            (health.service, health.method),
            ("grpc.health.v1.Health", "Check")
        );
        let reflection =
            Grpc.call_name("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo");
        assert_eq!(reflection.method, "ServerReflectionInfo");
        for path in [
            "/strongroom.v1.CredentialService/sk-live-free-text",
            "/strongroom.v1.NoSuchService/RevealCredential",
            "/no-slash",
            "",
            "/strongroom.v1.CredentialService/RevealCredential/more",
        ] {
            assert_eq!(Grpc.call_name(path), CallName::UNKNOWN, "{path}");
        }
        assert!(Grpc.needs_caller("/strongroom.v1.AdminService/WhoAmI"));
        assert!(!Grpc.needs_caller("/grpc.health.v1.Health/Check"));
        let refused = Grpc.refuse(Refusal::Overloaded);
        assert_eq!(Grpc.outcome(&refused).code, Code::Unavailable as i32);
        let denied = Grpc.refuse(Refusal::NoIdentity);
        let outcome = Grpc.outcome(&denied);
        assert_eq!(outcome.denial, Some("unauthenticated"));
        assert!(!outcome.ok);
        let ok = http::Response::new(tonic::body::Body::empty());
        assert!(Grpc.outcome(&ok).ok);
    }
}
