//! Write coalescing for gRPC connections.
//!
//! HTTP/2 flushes its connection whenever the connection task runs, and with
//! many calls in flight on one connection that is after nearly every frame:
//! each call's response (or request) then costs its own system call, TCP
//! segment and TLS record. [`Coalescing`] keeps what is written until a
//! flush, and a flush first lets the tasks that are ready run once (one
//! yield), so what they write leaves together.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Kept bytes beyond which a write first hands them on.
const LIMIT: usize = 64 * 1024;

/// A stream whose writes are kept until a flush (see the module docs).
#[derive(Debug)]
pub struct Coalescing<T> {
    inner: T,
    /// Written and not yet handed on; `sent` bytes of it already were.
    out: Vec<u8>,
    sent: usize,
    /// Whether the pending flush has yielded once already.
    yielded: bool,
}

impl<T> Coalescing<T> {
    /// Wraps `inner`.
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            out: Vec::new(),
            sent: 0,
            yielded: false,
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<T: AsyncWrite + Unpin> Coalescing<T> {
    /// Hands every kept byte on.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.out.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.out.clear();
        self.sent = 0;
        // One large frame must not keep its buffer for the connection's life.
        if self.out.capacity() > LIMIT {
            self.out = Vec::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Coalescing<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalescing<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.out.len() >= LIMIT {
            ready!(this.poll_drain(cx))?;
        }
        if this.out.is_empty() && buf.len() >= LIMIT {
            // Large enough to leave on its own: no copy.
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        }
        this.out.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.out.len() >= LIMIT {
            ready!(this.poll_drain(cx))?;
        }
        let mut n = 0;
        for b in bufs {
            this.out.extend_from_slice(b);
            n += b.len();
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.sent < this.out.len() && !this.yielded {
            // The runtime polls a task that woke itself after the tasks
            // already queued: they add their frames first.
            this.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        ready!(this.poll_drain(cx))?;
        this.yielded = false;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn writes_arrive_whole_and_in_order_after_flush() {
        let (a, mut b) = tokio::io::duplex(1 << 20);
        let mut w = Coalescing::new(a);
        let mut expected = Vec::new();
        // Past the limit, so some writes hand bytes on before the flush.
        for i in 0..20_000u32 {
            let chunk = i.to_le_bytes();
            w.write_all(&chunk).await.expect("write");
            expected.extend_from_slice(&chunk);
        }
        // And one write larger than the limit, which goes straight through.
        let large: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        w.write_all(&large).await.expect("write");
        expected.extend_from_slice(&large);
        w.flush().await.expect("flush");
        let mut got = vec![0; expected.len()];
        b.read_exact(&mut got).await.expect("read");
        assert_eq!(got, expected);
    }

    #[tokio::test]
    async fn nothing_leaves_before_a_flush_under_the_limit() {
        let (a, mut b) = tokio::io::duplex(1 << 16);
        let mut w = Coalescing::new(a);
        w.write_all(b"frame").await.expect("write");
        let mut buf = [0u8; 5];
        let early =
            tokio::time::timeout(std::time::Duration::from_millis(50), b.read_exact(&mut buf))
                .await;
        assert!(early.is_err(), "bytes left before the flush");
        w.flush().await.expect("flush");
        b.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"frame");
    }
}
