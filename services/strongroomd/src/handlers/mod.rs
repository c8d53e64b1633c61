//! gRPC handlers: authenticate the caller, parse the request into domain
//! types, call the engine, convert the result. No business rule lives here.

use std::sync::Arc;
use std::time::Instant;

use prost::Message;
use strongroom_core::Result;
use strongroom_core::policy::Reason;
use strongroom_core::scope::Authenticated;
use tonic::{Request, Status};

use crate::error::to_status;
use crate::tls;
use strongroom_engine::{CallContext, Engine, new_request_id};

mod admin;
mod audit;
mod credential;
mod policy;

pub use admin::AdminHandler;
pub use audit::AuditHandler;
pub use credential::CredentialHandler;
pub use policy::PolicyHandler;

/// What every handler shares.
#[derive(Clone)]
pub struct Shared {
    engine: Arc<Engine>,
    /// Largest accepted request message, in bytes.
    max_message_bytes: usize,
}

/// An authenticated call in progress.
pub(crate) struct Call {
    caller: Arc<Authenticated>,
    ctx: CallContext,
    started: Instant,
}

/// Metadata key naming the tenant when an identity is bound in several.
pub const TENANT_HEADER: &str = "strongroom-tenant";

impl Shared {
    /// Handlers over `engine`, refusing request messages over
    /// `max_message_bytes`.
    pub fn new(engine: Arc<Engine>, max_message_bytes: usize) -> Self {
        Self {
            engine,
            max_message_bytes,
        }
    }

    /// Authenticates the caller from its verified client certificate and
    /// checks the request size.
    pub(crate) async fn begin<T: Message>(
        &self,
        request: &Request<T>,
        rpc: &'static str,
    ) -> Result<Call, Status> {
        let started = Instant::now();
        let request_id = request
            .metadata()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
            .map_or_else(new_request_id, str::to_owned);
        let connection = request.extensions().get::<tls::PeerInfo>();
        let peer = connection.map(|c| c.addr.to_string());
        let identity = connection.and_then(|c| c.identity.as_deref());
        let Some(identity) = identity else {
            tracing::warn!(
                rpc,
                request_id,
                peer,
                "call without a usable client certificate identity"
            );
            self.engine
                .record_failed_authentication("", peer.as_deref(), &request_id, Reason::NoIdentity)
                .await;
            return Err(Status::unauthenticated(
                "a client certificate with an identity is required",
            ));
        };
        // The client certificate's validity now (not expired, not revoked
        // since the handshake) was checked for every call on the connection
        // before any service saw it (`serve::ConnService`).
        let limit = self.max_message_bytes;
        let size = request.get_ref().encoded_len();
        if size > limit {
            return Err(Status::invalid_argument(format!(
                "request: message is {size} bytes, over the limit of {limit} bytes"
            )));
        }
        let hint = request
            .metadata()
            .get(TENANT_HEADER)
            .and_then(|v| v.to_str().ok());
        let caller = match self.engine.authenticate(identity, hint).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(rpc, request_id, peer, identity, error = %e, "authentication refused");
                if matches!(e, strongroom_core::Error::Unauthenticated(_)) {
                    self.engine
                        .record_failed_authentication(
                            identity,
                            peer.as_deref(),
                            &request_id,
                            Reason::UnknownIdentity,
                        )
                        .await;
                }
                return Err(to_status(e, &request_id));
            }
        };
        let ctx = CallContext {
            peer,
            request_id,
            trace_id: None,
        };
        // Rate limits (after authentication: they are per principal).
        if let Err(refusal) = self.engine.admit(&caller, &ctx, rpc).await {
            tracing::info!(
                rpc,
                request_id = %ctx.request_id,
                principal = caller.principal().map(|p| tracing::field::display(p.id)),
                limit = refusal.limit.reason().as_str(),
                "rate limited"
            );
            return Err(crate::error::rate_limited(&refusal));
        }
        Ok(Call {
            caller,
            ctx,
            started,
        })
    }
}

impl Call {
    /// Maps the outcome to a response, logging the call (never its body).
    pub(crate) fn finish<T>(
        &self,
        rpc: &'static str,
        result: Result<T>,
    ) -> Result<tonic::Response<T>, Status> {
        let elapsed_us = self.started.elapsed().as_micros() as u64;
        // Borrowed, so a call logged at a level that is off allocates nothing.
        let tenant = self.caller.tenant().map(|t| t.name.as_str());
        let principal = self
            .caller
            .principal()
            .map(|p| tracing::field::display(p.id));
        match result {
            Ok(v) => {
                tracing::debug!(rpc, request_id = %self.ctx.request_id, tenant, principal, elapsed_us, "ok");
                let mut response = tonic::Response::new(v);
                if let Ok(v) = self.ctx.request_id.parse() {
                    response.metadata_mut().insert("x-request-id", v);
                }
                Ok(response)
            }
            Err(e) => {
                let status = to_status(e, &self.ctx.request_id);
                tracing::info!(
                    rpc,
                    request_id = %self.ctx.request_id,
                    tenant,
                    principal,
                    elapsed_us,
                    code = ?status.code(),
                    "refused"
                );
                Err(status)
            }
        }
    }
}

/// Answers an RPC of the contract that this build does not serve yet.
pub(crate) fn unimplemented(rpc: &str) -> Status {
    Status::unimplemented(format!(
        "{rpc} is not served by this version of strongroomd"
    ))
}

/// Runs one RPC: authenticate, then the body (a `Result` of the response
/// message), then map errors and log.
macro_rules! rpc {
    ($shared:expr, $request:ident, $name:literal, |$call:ident, $req:ident| $body:block) => {{
        let $call = $shared.begin(&$request, $name).await?;
        let $req = $request.into_inner();
        let result: strongroom_core::Result<_> = async { $body }.await;
        $call.finish($name, result)
    }};
}
pub(crate) use rpc;
