//! Steps 5 and 6 of a `Forward` call (see the module above): connecting
//! to the checked destination, sending the request with its body streamed
//! from the call, and streaming the scrubbed response back while the use
//! stays allowed; the outcome it records.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::Frame;
use strongroom_engine::{Authorized, InjectionOutcome, UseChanges, UseEnded};
use strongroom_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::upstream::{Destination, UpstreamBody, UpstreamError};
use super::{Out, RelayHandler, head, refusal, refusal_message, scrub};
use crate::grpc::Call;
use crate::grpc::status::to_status;

/// Largest body chunk sent back in one message.
const CHUNK: usize = 64 * 1024;

impl RelayHandler {
    /// Connects, sends, and streams the response back; the outcome.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn send(
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
                // The body's own timeout can end the pumping an instant
                // before this wait gives up, before the request has seen
                // the body fail: a body that stalled is still the agent's
                // 408, not the upstream's 504.
                let (status, reason) = if stalled.load(Ordering::Relaxed) {
                    (408, "body_timeout")
                } else {
                    (504, "upstream_timeout")
                };
                let _ = tx.send(Ok(fail(&mut outcome, status, reason))).await;
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

fn body_message(chunk: Vec<u8>) -> pb::ForwardResponse {
    pb::ForwardResponse {
        part: Some(pb::forward_response::Part::Body(chunk)),
    }
}
