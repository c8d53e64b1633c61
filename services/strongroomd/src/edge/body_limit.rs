//! The request size limit: a request body is read only up to the
//! protocol's limit for `limits.max_message_bytes` (for gRPC, one message
//! and its frame header: every strongroom RPC takes one request message,
//! and the one streaming import reads only its first). Past it the body
//! ends with the protocol's error (INVALID_ARGUMENT naming the limit for
//! gRPC), before the rest is read or decoded. The relay's Forward streams
//! a request body of many messages: the protocol leaves it unbounded here,
//! and the relay bounds each message (the decoder's limit) and the total
//! (`relay.max_request_body`, answered 413).

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::body::{Body, Buf, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::{BoxError, Protocol};

/// Limits request bodies.
#[derive(Clone)]
pub struct BodyLimitLayer<P> {
    protocol: P,
    max_message_bytes: usize,
}

impl<P> BodyLimitLayer<P> {
    /// Messages of at most `max_message_bytes`.
    pub fn new(protocol: P, max_message_bytes: usize) -> Self {
        Self {
            protocol,
            max_message_bytes,
        }
    }
}

impl<S, P: Clone> tower_layer::Layer<S> for BodyLimitLayer<P> {
    type Service = BodyLimit<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        BodyLimit {
            inner,
            layer: self.clone(),
        }
    }
}

/// See [`BodyLimitLayer`].
#[derive(Clone)]
pub struct BodyLimit<S, P> {
    inner: S,
    layer: BodyLimitLayer<P>,
}

impl<S, P, B> tower::Service<http::Request<B>> for BodyLimit<S, P>
where
    S: tower::Service<http::Request<Limited<B, P>>, Error = Infallible>,
    P: Protocol,
{
    type Response = S::Response;
    type Error = Infallible;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let protocol = self.layer.protocol.clone();
        let max_message_bytes = self.layer.max_message_bytes;
        let remaining = protocol.body_limit(request.uri().path(), max_message_bytes);
        self.inner.call(request.map(|body| Limited {
            body,
            remaining,
            max_message_bytes,
            protocol,
        }))
    }
}

pin_project! {
    /// A request body that ends with the protocol's error past the limit.
    pub struct Limited<B, P> {
        #[pin]
        body: B,
        remaining: usize,
        max_message_bytes: usize,
        protocol: P,
    }
}

impl<B, P> Body for Limited<B, P>
where
    B: Body,
    B::Error: Into<BoxError>,
    P: Protocol,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = match this.body.poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(Some(Ok(frame))) => frame,
        };
        if let Some(data) = frame.data_ref() {
            let len = data.remaining();
            if len > *this.remaining {
                *this.remaining = 0;
                return Poll::Ready(Some(Err(this
                    .protocol
                    .body_too_large(*this.max_message_bytes))));
            }
            *this.remaining -= len;
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
