//! Requests that need a credential go to the server's relay
//! (`RelayService.Forward`): the head, then the body in chunks; the
//! response comes back the same way and is streamed to the child. The value
//! never reaches this process.

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::{Frame, Incoming};
use strongroom_client::Transport;
use strongroom_proto::v1 as pb;
use strongroom_proto::v1::relay_service_client::RelayServiceClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::routes::RelayRoute;
use super::{Body, BoxError, is_hop_by_hop, text};

/// The largest body chunk one message carries (the contract's bound).
const MAX_CHUNK: usize = 1024 * 1024;

/// The relay client and what every request records in audit.
#[derive(Clone)]
pub(crate) struct Relay {
    pub client: RelayServiceClient<Transport>,
    pub purpose: String,
    pub on_behalf_of: String,
}

impl Relay {
    /// Sends one request through the relay; the relay's own refusals come
    /// back as the HTTP responses it generates (403, 413, 429, 502, 504).
    pub(crate) async fn forward(
        &self,
        url: String,
        parts: http::request::Parts,
        body: Incoming,
        route: RelayRoute,
    ) -> Response<Body> {
        let head = pb::RelayRequestHead {
            method: parts.method.as_str().to_owned(),
            url,
            headers: parts
                .headers
                .iter()
                .filter(|(name, _)| {
                    !is_hop_by_hop(name)
                        && *name != http::header::HOST
                        && *name != http::header::CONTENT_LENGTH
                })
                .map(|(name, value)| pb::HttpHeader {
                    name: name.as_str().to_owned(),
                    value: value.as_bytes().to_vec(),
                })
                .collect(),
            placeholders: route.placeholders,
            inject: route.inject,
            purpose: self.purpose.clone(),
            on_behalf_of: self.on_behalf_of.clone(),
        };
        let (tx, rx) = mpsc::channel(4);
        if tx
            .send(pb::ForwardRequest {
                part: Some(pb::forward_request::Part::Head(head)),
            })
            .await
            .is_err()
        {
            return text(
                StatusCode::BAD_GATEWAY,
                "strongroom run: relay stream closed",
            );
        }
        tokio::spawn(send_body(body, tx));
        let mut client = self.client.clone();
        let mut stream = match client.forward(ReceiverStream::new(rx)).await {
            Ok(response) => response.into_inner(),
            Err(status) => {
                eprintln!(
                    "strongroom run: the relay failed: {}: {}",
                    status.code(),
                    status.message()
                );
                return text(
                    StatusCode::BAD_GATEWAY,
                    &format!("strongroom run: the relay failed: {}", status.code()),
                );
            }
        };
        let head = match stream.message().await {
            Ok(Some(pb::ForwardResponse {
                part: Some(pb::forward_response::Part::Head(head)),
            })) => head,
            Ok(_) => {
                return text(
                    StatusCode::BAD_GATEWAY,
                    "strongroom run: the relay answered without a response head",
                );
            }
            Err(status) => {
                eprintln!(
                    "strongroom run: the relay failed: {}: {}",
                    status.code(),
                    status.message()
                );
                return text(
                    StatusCode::BAD_GATEWAY,
                    &format!("strongroom run: the relay failed: {}", status.code()),
                );
            }
        };
        if let Some(error) = &head.relay_error {
            eprintln!(
                "strongroom run: the relay refused {} {}: {} ({})",
                parts.method,
                parts.uri.path(),
                error.reason,
                error.message
            );
        }
        let Some(status) = u16::try_from(head.status)
            .ok()
            .and_then(|s| StatusCode::from_u16(s).ok())
        else {
            return text(
                StatusCode::BAD_GATEWAY,
                "strongroom run: the relay sent an invalid status",
            );
        };
        let (body_tx, body_rx) = mpsc::channel::<Result<Frame<Bytes>, BoxError>>(4);
        tokio::spawn(async move {
            loop {
                let item = match stream.message().await {
                    Ok(Some(pb::ForwardResponse {
                        part: Some(pb::forward_response::Part::Body(chunk)),
                    })) => Ok(Frame::data(Bytes::from(chunk))),
                    Ok(None) => return,
                    Ok(Some(_)) => Err(BoxError::from("the relay sent a second response head")),
                    Err(status) => Err(BoxError::from(format!("relay: {}", status.code()))),
                };
                let failed = item.is_err();
                if body_tx.send(item).await.is_err() || failed {
                    return;
                }
            }
        });
        let mut response =
            Response::new(StreamBody::new(ReceiverStream::new(body_rx)).boxed_unsync());
        *response.status_mut() = status;
        let keep_length = parts.method == http::Method::HEAD;
        for header in head.headers {
            let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(header.name.as_bytes()),
                HeaderValue::from_bytes(&header.value),
            ) else {
                continue;
            };
            // The body is streamed as it comes (chunked), whatever length
            // the upstream announced; a HEAD response keeps it.
            if is_hop_by_hop(&name) || (name == http::header::CONTENT_LENGTH && !keep_length) {
                continue;
            }
            response.headers_mut().append(name, value);
        }
        response
    }
}

/// Streams the request body to the relay in chunks of at most
/// [`MAX_CHUNK`] bytes; stops when the relay stops listening. If the
/// child's body fails midway the stream is left open, never ended, until the
/// call is dropped (cancelled): a truncated body is never sent as complete.
async fn send_body(mut body: Incoming, tx: mpsc::Sender<pb::ForwardRequest>) {
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            tx.closed().await;
            return;
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        for chunk in data.chunks(MAX_CHUNK) {
            let message = pb::ForwardRequest {
                part: Some(pb::forward_request::Part::Body(chunk.to_vec())),
            };
            if tx.send(message).await.is_err() {
                return;
            }
        }
    }
}
