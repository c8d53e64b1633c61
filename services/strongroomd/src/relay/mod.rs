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
mod send;
pub mod upstream;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use strongroom_core::Error;
use strongroom_core::ids::PrincipalId;
use strongroom_core::net::Scheme;
use strongroom_engine::{
    Engine, InjectionDecision, InjectionOutcome, InjectionRequest, InjectionUse, UseKind,
};
use strongroom_proto::v1 as pb;
use strongroom_proto::v1::relay_service_server::RelayService;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::config::RelayConfig;
use crate::grpc::Call;
use crate::grpc::status::to_status;
use upstream::Upstream;

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
