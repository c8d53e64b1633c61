//! Idempotent retries at the gRPC edge: the one place where a mutating
//! call's `request_id` is honoured (see `common.proto` and
//! `strongroom_engine::Retry`).
//!
//! A handler opts in by writing its body with the `idempotent` form of the
//! `rpc!` macro, naming the handler (`self`) and the name its body uses for
//! it (`this`, since the body may outlive the call, see below):
//!
//! ```ignore
//! rpc!(idempotent self, request, |this, call, req| {
//!     /* as any handler body, with `this` for `self` */
//! })
//! ```
//!
//! and by listing its request type in the `request_ids!` list below (it
//! must have a `string request_id` field). Nothing else changes:
//!
//! 1. the request, its `request_id` cleared, is encoded (prost encodes a
//!    message the same way every time: fields in order, maps as BTreeMap)
//!    and fingerprinted by the engine (HMAC-SHA256 under a key derived from
//!    the root key), keyed by tenant, caller, call path and request id;
//! 2. a retry of a call that succeeded is answered with the first call's
//!    response, decoded from its record: nothing runs and nothing is
//!    written (no object, version or audit event);
//! 3. the same request id with a different request is FAILED_PRECONDITION,
//!    a first call still running is ABORTED (retry), an outcome that was
//!    never recorded is FAILED_PRECONDITION;
//! 4. otherwise the body runs in a task of its own, so a call whose client
//!    goes away or whose deadline passes still finishes and records its
//!    outcome: its response (on success), or the release of its claim (on
//!    an error that shows it did not act). UNAVAILABLE and INTERNAL errors
//!    may come after a commit (an audit write that timed out, a lost
//!    connection), so their claims are kept: a retry is told the outcome
//!    is unknown rather than acting twice.
//!
//! Only calls whose responses carry no secret material may opt in: the
//! response is stored as it is (CreateCredential and RotateCredential
//! answer with metadata only). A streaming call (ImportTenant) cannot.

use std::future::Future;

use prost::Message;
use strongroom_core::Error;
use strongroom_engine::{Engine, Retry};
use tonic::Status;
use tracing::Instrument;
use zeroize::Zeroizing;

use super::Call;
use strongroom_proto::v1 as pb;

/// A request with a `request_id` field.
pub(crate) trait RequestId: Message + Clone + Send + 'static {
    /// The request id field.
    fn request_id_mut(&mut self) -> &mut String;
}

/// Implements [`RequestId`] for requests with a `request_id` field.
macro_rules! request_ids {
    ($($request:ty),* $(,)?) => {
        $(impl RequestId for $request {
            fn request_id_mut(&mut self) -> &mut String {
                &mut self.request_id
            }
        })*
    };
}

// Every request of the contract with a `request_id`, except ImportTenant's
// (a stream). Listing one here does not make its RPC idempotent; its
// handler opts in with `rpc!(idempotent ...)`.
request_ids!(
    pb::CreateTenantRequest,
    pb::CreatePrincipalRequest,
    pb::CreateIdentityBindingRequest,
    pb::CreateEnvironmentRequest,
    pb::RotateRootKeyRequest,
    pb::RotateTenantKeyRequest,
    pb::RetireTenantKeyRequest,
    pb::CreateCredentialRequest,
    pb::RotateCredentialRequest,
    pb::RollbackCredentialRequest,
    pb::EmergencyRevokeCredentialRequest,
    pb::CreateGrantRequest,
    pb::FileAccessRequestRequest,
    pb::ApproveAccessRequestRequest,
);

/// Whether an error shows that the call did not act, so its claim may be
/// released for a retry to act. An error that may come after a commit
/// (an audit write that timed out, a lost connection, an internal failure)
/// does not.
fn did_not_act(error: &Error) -> bool {
    !matches!(error, Error::Unavailable(_) | Error::Internal(_))
}

/// Runs `body` for `call` and `req` once per request id (see the module
/// documentation). `engine` fingerprints and records.
pub(crate) async fn run<Req, Resp, F, Fut>(
    engine: &std::sync::Arc<Engine>,
    call: Call,
    req: Req,
    body: F,
) -> Result<tonic::Response<Resp>, Status>
where
    Req: RequestId,
    Resp: Message + Default + Send + 'static,
    F: FnOnce(Call, Req) -> Fut + Send + 'static,
    Fut: Future<Output = strongroom_core::Result<Resp>> + Send + 'static,
{
    let (request_id, encoded) = {
        let mut canonical = req.clone();
        let request_id = std::mem::take(canonical.request_id_mut());
        // The encoding may hold a value: wiped when dropped.
        (request_id, Zeroizing::new(canonical.encode_to_vec()))
    };
    let claim = engine
        .claim_retry(call.caller(), call.edge.path(), &request_id, &encoded)
        .await;
    drop(encoded);
    let claim = match claim {
        Ok(None) => return call.finish(body(call.clone(), req).await),
        Ok(Some(Retry::Act(claim))) => claim,
        Ok(Some(Retry::Replay(response))) => {
            let decoded = Resp::decode(response.as_slice())
                .map_err(|e| Error::internal(format!("a recorded response does not decode: {e}")));
            return call.finish(decoded);
        }
        Ok(Some(Retry::InProgress)) => {
            return Err(Status::aborted(
                "request_id: a call with this request_id is in progress; retry after a backoff",
            ));
        }
        Err(e) => return call.finish(Err(e)),
    };
    let engine = std::sync::Arc::clone(engine);
    let inner = call.clone();
    let task = tokio::spawn(
        async move {
            let result = body(inner, req).await;
            match &result {
                Ok(response) => {
                    engine
                        .complete_retry(claim, &response.encode_to_vec())
                        .await
                }
                Err(e) if did_not_act(e) => engine.release_retry(claim).await,
                Err(_) => {}
            }
            result
        }
        .instrument(tracing::Span::current()),
    );
    match task.await {
        Ok(result) => call.finish(result),
        Err(e) => call.finish(Err(Error::internal(format!(
            "an idempotent call's task ended: {e}"
        )))),
    }
}
