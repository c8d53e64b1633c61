//! RelayService: agents' HTTP requests forwarded with credentials added,
//! so values never leave this process (see `proto/strongroom/v1/relay.proto`).
//!
//! One `Forward` call, in order:
//!
//! 1. the head is read and checked ([`head::parse`]): the URL parsed and
//!    its path normalised, framing and hop-by-hop headers dropped;
//! 2. the caller's requests in flight through the relay are counted
//!    (`relay.max_in_flight_per_principal`; beyond, 429);
//! 3. the uses are found: credentials named for template injection, and
//!    each declared placeholder the head actually carries;
//! 4. the engine authorizes every use against the grants' destinations and
//!    records each durably (`credential.inject`) before anything is sent;
//!    a refusal is answered 403 (a placeholder's raises the alert);
//! 5. the destination is resolved and checked ([`upstream`]), connected to
//!    (or a pooled connection reused), and sent the request built by
//!    [`head::upstream_request`], the body streamed from the call;
//! 6. the response head and body come back with every injected value
//!    replaced by its placeholder ([`scrub`]), and the outcome is recorded
//!    (`credential.inject_result`). A response still streaming when its
//!    use stops being allowed (principal disabled, grant revoked or
//!    expired, credential revoked, destroyed or expired, on any server:
//!    the engine's `UseWatch`) is cut short: the call ends
//!    PERMISSION_DENIED or FAILED_PRECONDITION saying why, and the outcome
//!    records `cut_short` with the reason.
//!
//! The work runs in its own task, bounded by `relay.timeout` for the
//! response head and between body chunks (504 when it passes) and between
//! the request body's parts from the agent (408), not by the edge's request
//! timeout: a streamed response may take longer. Nothing here logs a header
//! value, a query or a body.

pub mod head;
pub mod scrub;
pub mod upstream;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::Frame;
use strongroom_core::Error;
use strongroom_core::ids::PrincipalId;
use strongroom_core::net::Scheme;
use strongroom_engine::{
    Authorized, Engine, InjectionDecision, InjectionOutcome, InjectionRequest, InjectionUse,
    UseChanges, UseEnded, UseKind,
};
use strongroom_proto::v1 as pb;
use strongroom_proto::v1::relay_service_server::RelayService;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::config::RelayConfig;
use crate::grpc::Call;
use crate::grpc::status::to_status;
use upstream::{Destination, Upstream, UpstreamBody, UpstreamError};

/// Largest body chunk sent back in one message.
const CHUNK: usize = 64 * 1024;

/// Counts each principal's requests in flight.
#[derive(Default)]
struct InFlight {
    counts: Mutex<HashMap<PrincipalId, usize>>,
}

/// One request counted until dropped.
struct InFlightSlot {
    of: Arc<InFlight>,
    principal: PrincipalId,
}

impl InFlight {
    fn acquire(self: &Arc<Self>, principal: PrincipalId, max: usize) -> Option<InFlightSlot> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(principal).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(InFlightSlot {
            of: Arc::clone(self),
            principal,
        })
    }
}

impl Drop for InFlightSlot {
    fn drop(&mut self) {
        let mut counts = self.of.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.principal) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.principal);
            }
        }
    }
}

/// Serves RelayService.
#[derive(Clone)]
pub struct RelayHandler {
    engine: Arc<Engine>,
    upstream: Arc<Upstream>,
    config: Arc<RelayConfig>,
    in_flight: Arc<InFlight>,
}

impl RelayHandler {
    /// A relay over `engine` with `config`'s settings.
    pub fn new(
        engine: Arc<Engine>,
        config: &RelayConfig,
    ) -> Result<Self, upstream::UpstreamSetupError> {
        Ok(Self {
            engine,
            upstream: Arc::new(Upstream::new(config)?),
            config: Arc::new(config.clone()),
            in_flight: Arc::new(InFlight::default()),
        })
    }
}

type Out = mpsc::Sender<Result<pb::ForwardResponse, Status>>;

/// The relay's own answer: `status` with `relay_error` set.
fn refusal(status: u16, reason: &str, message: &str) -> pb::ForwardResponse {
    pb::ForwardResponse {
        part: Some(pb::forward_response::Part::Head(pb::RelayResponseHead {
            status: u32::from(status),
            headers: vec![pb::HttpHeader {
                name: "content-type".into(),
                value: b"text/plain; charset=utf-8".to_vec(),
            }],
            relay_error: Some(pb::RelayError {
                reason: reason.to_owned(),
                message: message.to_owned(),
            }),
        })),
    }
}

/// Why a credential's value may not be used, when that is the refusal's
/// reason.
fn unusable(reason: strongroom_core::policy::Reason) -> Option<strongroom_core::Unusable> {
    use strongroom_core::Unusable;
    use strongroom_core::policy::Reason;
    match reason {
        Reason::CredentialRevoked => Some(Unusable::Revoked),
        Reason::CredentialExpired => Some(Unusable::Expired),
        Reason::CredentialDestroyed => Some(Unusable::Destroyed),
        _ => None,
    }
}

fn refusal_message(reason: &str) -> &'static str {
    match reason {
        "destination_not_allowed" => {
            "no grant giving inject on the credential allows this destination, method and path"
        }
        "placeholder_over_http" => "credentials are only sent over https",
        "placeholder_not_allowed_here" => {
            "a placeholder may only stand where the credential's injection template puts the \
             value, or in a header or query parameter the grant's destination lists"
        }
        "no_credential" => "the request names no credential to inject and carries no placeholder",
        "internal_address" => {
            "the destination resolves to an internal address not allowed by the server"
        }
        "too_many_in_flight" => "too many requests in flight through the relay for this caller",
        "body_too_large" => "the request body is over the relay's limit",
        "response_too_large" => "the response body is over the relay's limit",
        "upstream_timeout" => "the destination did not answer in time",
        "upstream_tls" => "the destination's TLS certificate could not be verified",
        "upstream_encoding" => {
            "the destination sent an encoded (compressed) body, which cannot be scrubbed"
        }
        "body_timeout" => "the request body did not arrive in time",
        _ => "the destination could not be reached",
    }
}

#[tonic::async_trait]
impl RelayService for RelayHandler {
    async fn describe_injection(
        &self,
        request: Request<pb::DescribeInjectionRequest>,
    ) -> Result<Response<pb::DescribeInjectionResponse>, Status> {
        let call = Call::of(&request)?;
        let req = request.into_inner();
        let result = async {
            if req.credentials.len() > 64 {
                return Err(Error::invalid("credentials", "at most 64"));
            }
            let refs = req
                .credentials
                .iter()
                .cloned()
                .map(|r| head::parse_ref(r, "credentials"))
                .collect::<Result<Vec<_>, _>>()?;
            let infos = self.engine.describe_injection(call.caller(), &refs).await?;
            Ok(pb::DescribeInjectionResponse {
                credentials: req
                    .credentials
                    .into_iter()
                    .zip(infos)
                    .map(|(r, i)| pb::InjectionDescription {
                        credential: Some(r),
                        allowed: i.allowed,
                        destinations: convert_policy_destinations(&i.destinations),
                        has_template: i.has_template,
                        reason: i.reason.to_owned(),
                    })
                    .collect(),
            })
        }
        .await;
        call.finish(result)
    }

    type ForwardStream = ReceiverStream<Result<pb::ForwardResponse, Status>>;

    async fn forward(
        &self,
        request: Request<Streaming<pb::ForwardRequest>>,
    ) -> Result<Response<Self::ForwardStream>, Status> {
        let call = Call::of(&request)?;
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(4);
        let relay = self.clone();
        // The call's future is kept small (its large inner futures are
        // boxed where they are awaited): `spawn` moves it, and a future of
        // several KB moved per request cost about a fifth of the relay's
        // CPU (BENCHMARKS.md).
        tokio::spawn(relay.forward_call(call, inbound, tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn report_leak(
        &self,
        request: Request<pb::ReportLeakRequest>,
    ) -> Result<Response<pb::ReportLeakResponse>, Status> {
        let call = Call::of(&request)?;
        let req = request.into_inner();
        let result = async {
            let r = req
                .credential
                .ok_or_else(|| Error::invalid("credential", "is required"))?;
            let r = head::parse_ref(r, "credential")?;
            let word = |text: &str, field: &'static str, max: usize| {
                if text.is_empty()
                    || text.len() > max
                    || !text
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                {
                    return Err(Error::invalid(
                        field,
                        format!("must be 1-{max} lower-case letters, digits or '_'"),
                    ));
                }
                Ok(())
            };
            word(&req.channel, "channel", 64)?;
            word(&req.form, "form", 32)?;
            if req.purpose.len() > 1024 {
                return Err(Error::invalid("purpose", "at most 1024 characters"));
            }
            let revoked = self
                .engine
                .report_leak(
                    call.caller_shared(),
                    call.ctx(),
                    &r,
                    &req.channel,
                    &req.form,
                    &req.purpose,
                )
                .await?;
            Ok(pb::ReportLeakResponse {
                grant_revoked: revoked,
            })
        }
        .await;
        call.finish(result)
    }
}

impl RelayHandler {
    /// Raises the placeholder alert for a request refused before its uses
    /// were decided (429, 413), if it carries a declared placeholder.
    async fn alert_early(&self, call: &Call, head: &head::Head, why: &str) {
        let carried: Vec<_> = head
            .placeholders
            .iter()
            .filter(|(p, _)| head.carries(p))
            .map(|(_, r)| r.clone())
            .collect();
        if !carried.is_empty() {
            self.engine
                .alert_refused_placeholders(
                    call.caller(),
                    call.ctx(),
                    &carried,
                    Some((&head.target, head.method.as_str())),
                    why,
                )
                .await;
        }
    }

    async fn forward_call(self, call: Call, mut inbound: Streaming<pb::ForwardRequest>, tx: Out) {
        let first = match tokio::time::timeout(self.config.timeout, inbound.message()).await {
            Ok(Ok(Some(m))) => m,
            Ok(Ok(None)) => {
                let _ = tx
                    .send(Err(Status::invalid_argument("head: is required")))
                    .await;
                return;
            }
            Ok(Err(status)) => {
                let _ = tx.send(Err(status)).await;
                return;
            }
            Err(_) => {
                let _ = tx
                    .send(Err(Status::deadline_exceeded("no request head in time")))
                    .await;
                return;
            }
        };
        let Some(pb::forward_request::Part::Head(raw)) = first.part else {
            let _ = tx
                .send(Err(Status::invalid_argument(
                    "head: the first message must be the request head",
                )))
                .await;
            return;
        };
        // Placeholders are looked for first: a request carrying one is a
        // canary whatever refuses it (a malformed head, 429, 413).
        let carried = head::raw_carried(&raw);
        let head = match head::parse(raw) {
            Ok(h) => h,
            Err(e) => {
                if !carried.is_empty() {
                    Box::pin(self.engine.alert_refused_placeholders(
                        call.caller(),
                        call.ctx(),
                        &carried,
                        None,
                        "invalid_head",
                    ))
                    .await;
                }
                let _ = tx.send(Err(to_status(e, &call.ctx().request_id))).await;
                return;
            }
        };
        let Ok(scope) = call.caller().tenant_scope() else {
            let _ = tx
                .send(Err(Status::permission_denied(
                    "the relay acts for tenant principals",
                )))
                .await;
            return;
        };
        let principal = scope.principal().id;
        let Some(slot) = self
            .in_flight
            .acquire(principal, self.config.max_in_flight_per_principal)
        else {
            Box::pin(self.alert_early(&call, &head, "too_many_in_flight")).await;
            let _ = tx
                .send(Ok(refusal(
                    429,
                    "too_many_in_flight",
                    refusal_message("too_many_in_flight"),
                )))
                .await;
            return;
        };
        if head
            .content_length
            .is_some_and(|n| n > self.config.max_request_body)
        {
            Box::pin(self.alert_early(&call, &head, "body_too_large")).await;
            let _ = tx
                .send(Ok(refusal(
                    413,
                    "body_too_large",
                    refusal_message("body_too_large"),
                )))
                .await;
            return;
        }
        let mut uses: Vec<InjectionUse> = head
            .inject
            .iter()
            .map(|r| InjectionUse {
                credential: r.clone(),
                kind: UseKind::Template,
                slots: vec![],
            })
            .collect();
        for (p, r) in &head.placeholders {
            let slots = head.slots(p);
            if !slots.is_empty() {
                uses.push(InjectionUse {
                    credential: r.clone(),
                    kind: UseKind::Placeholder(p.clone()),
                    slots,
                });
            }
        }
        if uses.is_empty() {
            let _ = tx
                .send(Ok(refusal(
                    403,
                    "no_credential",
                    refusal_message("no_credential"),
                )))
                .await;
            return;
        }
        let has_placeholder = uses
            .iter()
            .any(|u| matches!(u.kind, UseKind::Placeholder(_)));
        let started = Instant::now();
        let request = InjectionRequest {
            target: head.target.clone(),
            method: head.method.as_str().to_owned(),
            purpose: head.purpose.clone(),
            on_behalf_of: head.on_behalf_of.clone(),
            uses,
        };
        // Changes are followed from before the authorization reads the
        // state it decides on: one made after that read is seen by the
        // use's watch (one made before it, by the check its record passes
        // at commit).
        let changes = self.engine.use_changes();
        let authorized = match Box::pin(self.engine.authorize_injection(
            call.caller(),
            call.ctx(),
            &request,
        ))
        .await
        {
            Ok(InjectionDecision::Allowed(a)) => a,
            Ok(InjectionDecision::Refused(refused)) => {
                // A credential whose value may not be used (revoked,
                // expired, destroyed) is refused as reveal and resolve
                // refuse it: FAILED_PRECONDITION, saying why.
                if let Some(why) = unusable(refused.reason) {
                    let e = Error::FailedPrecondition(
                        strongroom_core::Precondition::CredentialUnusable(why),
                    );
                    let _ = tx.send(Err(to_status(e, &call.ctx().request_id))).await;
                    return;
                }
                let reason = if head.target.scheme == Scheme::Http && has_placeholder {
                    "placeholder_over_http"
                } else if refused.reason == strongroom_core::policy::Reason::PlaceholderMisuse {
                    "placeholder_not_allowed_here"
                } else {
                    "destination_not_allowed"
                };
                tracing::info!(
                    host = %head.target.host,
                    method = %head.method,
                    path = %head.target.path,
                    reason,
                    "relay request refused"
                );
                let _ = tx
                    .send(Ok(refusal(403, reason, refusal_message(reason))))
                    .await;
                return;
            }
            Err(e) => {
                let _ = tx.send(Err(to_status(e, &call.ctx().request_id))).await;
                return;
            }
        };
        let outcome = Box::pin(self.send(
            scope.tenant(),
            &head,
            &authorized,
            changes,
            inbound,
            &tx,
            &call,
        ))
        .await;
        let outcome = InjectionOutcome {
            duration: started.elapsed(),
            ..outcome
        };
        // The agent's call ends here (and stops counting as in flight);
        // the outcome's record follows.
        drop(tx);
        drop(slot);
        tracing::info!(
            host = %head.target.host,
            method = %head.method,
            path = %head.target.path,
            status = outcome.status,
            relay_error = outcome.relay_error.as_deref(),
            "relay request forwarded"
        );
        Box::pin(self.engine.record_injection_result(
            call.caller(),
            call.ctx(),
            &authorized,
            &outcome,
        ))
        .await;
    }

    /// Connects, sends, and streams the response back; the outcome.
    #[allow(clippy::too_many_arguments)]
    async fn send(
        &self,
        tenant: &strongroom_core::tenant::Tenant,
        head: &head::Head,
        authorized: &Authorized,
        changes: UseChanges,
        mut inbound: Streaming<pb::ForwardRequest>,
        tx: &Out,
        call: &Call,
    ) -> InjectionOutcome {
        let mut outcome = InjectionOutcome::default();
        // The whole use, response body included, ends by this instant
        // (`relay.max_duration_ms`): a dripping response cannot keep it
        // open for ever.
        let deadline = tokio::time::Instant::now() + self.config.max_duration;
        let fail = |outcome: &mut InjectionOutcome, status: u16, reason: &str| {
            outcome.relay_error = Some(reason.to_owned());
            refusal(status, reason, refusal_message(reason))
        };
        // Watched with the changes followed since before the authorization,
        // so none is missed: the response ends once the use stops being
        // allowed.
        let mut watch = match self.engine.watch_use(call.caller(), authorized, changes) {
            Ok(w) => w,
            Err(e) => {
                outcome.relay_error = Some("internal".into());
                let _ = tx.send(Err(to_status(e, &call.ctx().request_id))).await;
                return outcome;
            }
        };
        // One slot of the agent's stream is kept for the last message of a
        // use that ends early (cut short, or failed mid-body): sending it
        // never waits on an agent that stopped reading, so the use, and the
        // record of how it ended, are not held open by it.
        let mut last = tx.reserve().await.ok();
        let finish = |last: &mut Option<mpsc::Permit<'_, _>>, message| match last.take() {
            Some(permit) => permit.send(message),
            None => {
                let _ = tx.try_send(message);
            }
        };
        let destination = Destination::of(tenant, &head.target);
        // The scrubbing (the engine's cached one, compiled on a miss) is
        // made ready while the connection is taken or made.
        let (scrubber, connection) = tokio::join!(
            scrub::Scrubber::build(&self.engine, authorized),
            self.upstream.connection(&destination)
        );
        let mut sender = match connection {
            Ok(s) => s,
            Err(e) => {
                let (reason, status) = e.reason();
                if let UpstreamError::Internal(kind) = e {
                    tracing::warn!(host = %head.target.host, port = head.target.port, kind = %kind, "relay destination refused: internal address");
                }
                let _ = tx.send(Ok(fail(&mut outcome, status, reason))).await;
                return outcome;
            }
        };
        // The body: none if the call's stream ends after the head, else
        // streamed from it, bounded by relay.max_request_body.
        let first = match tokio::time::timeout(self.config.timeout, inbound.message()).await {
            Ok(Ok(m)) => m,
            Ok(Err(status)) => {
                let _ = tx.send(Err(status)).await;
                outcome.relay_error = Some("client_error".into());
                return outcome;
            }
            Err(_) => {
                let _ = tx.send(Ok(fail(&mut outcome, 408, "body_timeout"))).await;
                return outcome;
            }
        };
        let sent = Arc::new(AtomicU64::new(0));
        let too_large = Arc::new(AtomicBool::new(false));
        let stalled = Arc::new(AtomicBool::new(false));
        // Whether the body is still being read from the agent: the wait for
        // the response head counts from the end of the body (a slow agent
        // is answered 408 by the body's own timeout, not 504).
        let pumping = Arc::new(AtomicBool::new(false));
        let body: UpstreamBody = match first {
            None => Empty::<Bytes>::new()
                .map_err(|never| match never {})
                .boxed(),
            Some(first) => {
                let (btx, brx) = mpsc::channel::<Result<Frame<Bytes>, BoxError>>(4);
                let max = self.config.max_request_body;
                let idle = self.config.timeout;
                let (sent, too_large, stalled) = (
                    Arc::clone(&sent),
                    Arc::clone(&too_large),
                    Arc::clone(&stalled),
                );
                pumping.store(true, Ordering::Relaxed);
                let done = Pumped(Arc::clone(&pumping));
                tokio::spawn(async move {
                    let _done = done;
                    let mut next = Some(first);
                    loop {
                        // Each further part of the body must come within
                        // relay.timeout: an agent that stops sending does
                        // not hold the upstream connection (and its slot)
                        // open.
                        let message = match next.take() {
                            Some(m) => m,
                            None => match tokio::time::timeout(idle, inbound.message()).await {
                                Ok(Ok(Some(m))) => m,
                                Ok(Ok(None)) => return,
                                Ok(Err(_)) => {
                                    let _ =
                                        btx.send(Err("the client's stream failed".into())).await;
                                    return;
                                }
                                Err(_) => {
                                    stalled.store(true, Ordering::Relaxed);
                                    let _ = btx.send(Err("the client's body stalled".into())).await;
                                    return;
                                }
                            },
                        };
                        let Some(pb::forward_request::Part::Body(chunk)) = message.part else {
                            let _ = btx.send(Err("a second request head".into())).await;
                            return;
                        };
                        let total = sent.fetch_add(chunk.len() as u64, Ordering::Relaxed)
                            + chunk.len() as u64;
                        if total > max {
                            too_large.store(true, Ordering::Relaxed);
                            let _ = btx.send(Err("request body over the limit".into())).await;
                            return;
                        }
                        if btx.send(Ok(Frame::data(Bytes::from(chunk)))).await.is_err() {
                            return;
                        }
                    }
                });
                StreamBody::new(ReceiverStream::new(brx)).boxed()
            }
        };
        let request = match head::upstream_request(head, authorized, sender.is_h2(), body) {
            Ok(r) => r,
            Err(_) => {
                let _ = tx
                    .send(Ok(fail(&mut outcome, 502, "invalid_credential_value")))
                    .await;
                return outcome;
            }
        };
        let cut = |outcome: &mut InjectionOutcome, ended: UseEnded| {
            tracing::info!(
                host = %head.target.host,
                reason = ended.reason.as_str(),
                "relayed response cut short: its use is no longer allowed"
            );
            outcome.relay_error = Some("cut_short".into());
            outcome.cut_short = Some(ended.reason);
            Err(to_status(ended.error, &call.ctx().request_id))
        };
        // Nothing has gone upstream yet: a change noticed since the
        // authorization (while connecting, or waiting for the body's first
        // part) is checked to its end before the request, values in it, is
        // sent.
        if let Some(ended) = self.engine.use_checked_now(call.caller(), &mut watch).await {
            drop(request);
            drop(sender);
            finish(&mut last, cut(&mut outcome, ended));
            return outcome;
        }
        // One future for the wait for the response and its whole body: it
        // returns once the use may no longer go on (principal disabled or
        // deleted, tenant suspended, binding deleted, grant revoked or
        // expired, credential revoked, destroyed, expired or its value in
        // use replaced, on any server).
        let ended = self.engine.use_ended(call.caller(), &mut watch);
        tokio::pin!(ended);
        let answered = {
            let send = sender.send(request);
            tokio::pin!(send);
            loop {
                let waited = tokio::select! {
                    // The end first: nothing more goes out once it is due.
                    biased;
                    ended = &mut ended => break Err(Some(ended)),
                    waited = tokio::time::timeout(self.config.timeout, &mut send) => waited,
                };
                match waited {
                    Ok(r) => break Ok(r),
                    Err(_) if pumping.load(Ordering::Relaxed) => {}
                    Err(_) => break Err(None),
                }
            }
        };
        let answered = match answered {
            Ok(r) => Ok(r),
            Err(None) => Err(()),
            Err(Some(ended)) => {
                // The request (and its connection) go first.
                drop(sender);
                outcome.bytes_sent = sent.load(Ordering::Relaxed);
                finish(&mut last, cut(&mut outcome, ended));
                return outcome;
            }
        };
        let response = match answered {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => {
                let (status, reason) = if too_large.load(Ordering::Relaxed) {
                    (413, "body_too_large")
                } else if stalled.load(Ordering::Relaxed) {
                    (408, "body_timeout")
                } else {
                    (502, "upstream_unreachable")
                };
                outcome.bytes_sent = sent.load(Ordering::Relaxed);
                let _ = tx.send(Ok(fail(&mut outcome, status, reason))).await;
                return outcome;
            }
            Err(_) => {
                outcome.bytes_sent = sent.load(Ordering::Relaxed);
                let _ = tx
                    .send(Ok(fail(&mut outcome, 504, "upstream_timeout")))
                    .await;
                return outcome;
            }
        };
        outcome.status = Some(response.status().as_u16());
        let (parts, mut body) = response.into_parts();
        if parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n > self.config.max_response_body)
        {
            let _ = tx
                .send(Ok(fail(&mut outcome, 502, "response_too_large")))
                .await;
            return outcome;
        }
        // A body encoded despite `Accept-Encoding: identity` could not be
        // scrubbed: it is not passed on (fail closed). The same for a
        // transfer coding other than chunked (`Transfer-Encoding: gzip,
        // chunked`: hyper removes the chunking, not the compression).
        if encoded(&parts.headers) {
            let _ = tx
                .send(Ok(fail(&mut outcome, 502, "upstream_encoding")))
                .await;
            return outcome;
        }
        if !scrubber.is_ready() {
            // Fail closed: nothing unscrubbed goes back.
            let _ = tx
                .send(Err(Status::internal("the response could not be scrubbed")))
                .await;
            outcome.relay_error = Some("scrubber".into());
            return outcome;
        }
        // Names are scrubbed too (an upstream may echo a value as a header
        // name); one whose scrubbed form is no header name is dropped.
        let headers = parts
            .headers
            .iter()
            .filter(|(n, _)| !head::RESPONSE_DROPPED.contains(&n.as_str()))
            .filter_map(|(n, v)| {
                Some(pb::HttpHeader {
                    name: scrubber.name(n.as_str())?,
                    value: scrubber.whole(v.as_bytes()),
                })
            })
            .collect();
        let head_message = pb::ForwardResponse {
            part: Some(pb::forward_response::Part::Head(pb::RelayResponseHead {
                status: u32::from(parts.status.as_u16()),
                headers,
                relay_error: None,
            })),
        };
        if tx.send(Ok(head_message)).await.is_err() {
            return outcome;
        }
        let mut stream = scrubber.stream();
        let mut received: u64 = 0;
        // Sized by what arrives (no 64 KiB buffer for a small response).
        let mut out = Vec::new();
        // The last message of a response that ends early, sent once the
        // destination's body and connection are let go.
        let mut ending: Option<Result<pb::ForwardResponse, Status>> = None;
        let complete = loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                outcome.relay_error = Some("max_duration".into());
                ending = Some(Err(Status::deadline_exceeded(
                    "the response passed the relay's total duration limit",
                )));
                break false;
            }
            let next = tokio::select! {
                // The end first: nothing more goes out once it is due.
                biased;
                ended = &mut ended => {
                    ending = Some(cut(&mut outcome, ended));
                    break false;
                }
                next = tokio::time::timeout(self.config.timeout.min(left), body.frame()) => next,
            };
            let frame = match next {
                Ok(Some(Ok(f))) => f,
                Ok(None) => break true,
                Ok(Some(Err(_))) => {
                    outcome.relay_error = Some("upstream_unreachable".into());
                    ending = Some(Err(Status::unavailable(
                        "the destination's response failed mid-body",
                    )));
                    break false;
                }
                Err(_) if tokio::time::Instant::now() >= deadline => continue,
                Err(_) => {
                    outcome.relay_error = Some("upstream_timeout".into());
                    ending = Some(Err(Status::deadline_exceeded(
                        "the destination stopped sending its response",
                    )));
                    break false;
                }
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            received += data.len() as u64;
            if received > self.config.max_response_body {
                outcome.relay_error = Some("response_too_large".into());
                ending = Some(Err(Status::resource_exhausted(
                    "the response body is over the relay's limit",
                )));
                break false;
            }
            out.reserve(data.len().min(CHUNK));
            for piece in data.chunks(CHUNK) {
                stream.push(piece, &mut out);
            }
            if !out.is_empty() {
                let chunk = std::mem::take(&mut out);
                // An agent that stops reading still has its use ended.
                let sent = tokio::select! {
                    // The end first: nothing more goes out once it is due.
                    biased;
                    ended = &mut ended => {
                        ending = Some(cut(&mut outcome, ended));
                        break false;
                    }
                    sent = tx.send(Ok(body_message(chunk))) => sent,
                };
                if sent.is_err() {
                    break false;
                }
            }
        };
        outcome.bytes_received = received;
        outcome.bytes_sent = sent.load(Ordering::Relaxed);
        if let Some(message) = ending {
            // The destination's body and connection first, then the last
            // message, which never waits (its slot is kept).
            drop(body);
            drop(sender);
            finish(&mut last, message);
            return outcome;
        }
        if complete {
            stream.flush(&mut out);
            if !out.is_empty() {
                let _ = tx.send(Ok(body_message(out))).await;
            }
            self.upstream.put_back(&destination, sender);
        }
        outcome
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Marks the request body as read to its end (or failed) when dropped.
struct Pumped(Arc<AtomicBool>);

impl Drop for Pumped {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

/// Whether a response's body is encoded in a way the scrubber cannot see
/// through: a `Content-Encoding` other than `identity`, or a
/// `Transfer-Encoding` with any coding but `chunked` (which hyper removes).
fn encoded(headers: &http::HeaderMap) -> bool {
    let content = headers
        .get_all(http::header::CONTENT_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .any(|c| !c.is_empty() && !c.eq_ignore_ascii_case(b"identity"));
    let transfer = headers
        .get_all(http::header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .any(|c| !c.is_empty() && !c.eq_ignore_ascii_case(b"chunked"));
    content || transfer
}

fn convert_policy_destinations(
    ds: &[strongroom_core::policy::Destination],
) -> Vec<pb::Destination> {
    ds.iter()
        .map(|d| pb::Destination {
            host: d.host.clone(),
            methods: d.methods.clone(),
            path_prefixes: d.path_prefixes.clone(),
            placeholder_headers: d.placeholder_headers.clone(),
            placeholder_query: d.placeholder_query.clone(),
        })
        .collect()
}

fn body_message(chunk: Vec<u8>) -> pb::ForwardResponse {
    pb::ForwardResponse {
        part: Some(pb::forward_response::Part::Body(chunk)),
    }
}
