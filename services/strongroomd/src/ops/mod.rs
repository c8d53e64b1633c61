//! The operations listener (`metrics.listen`, off by default): plain
//! HTTP/1.1 on its own port for the kubelet and Prometheus, carrying no
//! credential traffic, no tenant data and no credential name (SPEC §4):
//!
//! - `GET /livez`: 200 while the process serves; it never asks the
//!   database, so a database outage does not get the pod restarted;
//! - `GET /readyz`: 200 when the server takes calls: not draining, and its
//!   database answering the health monitor's probes (`crate::health`, the
//!   same state gRPC health reports); 503 otherwise;
//! - `GET /metrics`: the server's metrics in the Prometheus text format,
//!   collected on each scrape from the same instruments the OTLP exporter
//!   sends (`telemetry`).
//!
//! Anything else is 404 (405 for a method other than GET or HEAD); request
//! bodies are never read.
//!
//! The kubelet's probes must never wait behind slow clients (a probe that
//! times out restarts the pod), so the listener accepts every connection at
//! once and never queues one: a connection beyond [`MAX_CONNECTIONS`], or
//! beyond [`MAX_CONNECTIONS_PER_ADDRESS`] from one client address, is
//! closed as soon as it is accepted. A connection serves one request (no
//! keep-alive), has [`HEADER_TIMEOUT`] to send its head and
//! [`CONNECTION_TIMEOUT`] in all, so a slot is never held long. The chart's
//! NetworkPolicy limits who reaches the port at all.

mod instruments;
pub mod prometheus;

pub use instruments::{BatchMetrics, observe_caches, observe_crls, observe_pool};

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use opentelemetry_sdk::metrics::ManualReader;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::reader::MetricReader as _;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::health::Health;

/// Connections the listener serves at once; one more is closed at once.
pub const MAX_CONNECTIONS: usize = 256;

/// Connections one client address holds at once; one more is closed at
/// once (the kubelet probes from its node's address, Prometheus from its
/// pod's: a slow client elsewhere does not take their slots).
pub const MAX_CONNECTIONS_PER_ADDRESS: usize = 8;

/// Time a connection has to send its request's head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(1);

/// Time a connection may last in all, its response included.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// The open connections of each client address.
#[derive(Default)]
struct PerAddress(Mutex<HashMap<IpAddr, usize>>);

/// One connection counted under its address until dropped.
struct AddressSlot {
    counts: Arc<PerAddress>,
    ip: IpAddr,
}

impl PerAddress {
    fn acquire(self: &Arc<Self>, ip: IpAddr) -> Option<AddressSlot> {
        // An IPv4 client reached over IPv6 counts as its IPv4 address.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            IpAddr::V4(_) => ip,
        };
        let mut open = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(ip).or_insert(0);
        if *count >= MAX_CONNECTIONS_PER_ADDRESS {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            counts: Arc::clone(self),
            ip,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.counts.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// What the listener answers from.
#[derive(Clone)]
pub struct Ops {
    health: Arc<Health>,
    scrape: Option<Arc<ManualReader>>,
}

impl Ops {
    /// Answers readiness from `health`, and `/metrics` from `scrape`.
    pub fn new(health: Arc<Health>, scrape: Option<Arc<ManualReader>>) -> Self {
        Self { health, scrape }
    }

    /// Serves `listener` until the task is dropped or aborted.
    pub async fn serve(self, listener: TcpListener) {
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let per_address = Arc::new(PerAddress::default());
        let mut refused = 0u64;
        let mut logged: Option<Instant> = None;
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "operations listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let slots = Arc::clone(&slots)
                .try_acquire_owned()
                .ok()
                .zip(per_address.acquire(peer.ip()));
            let Some(slots) = slots else {
                // Closed at once, never queued.
                drop(stream);
                refused += 1;
                if logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                    tracing::warn!(
                        %peer,
                        refused,
                        max_connections = MAX_CONNECTIONS,
                        max_connections_per_address = MAX_CONNECTIONS_PER_ADDRESS,
                        "operations listener: connection closed, too many open connections"
                    );
                    logged = Some(Instant::now());
                    refused = 0;
                }
                continue;
            };
            let ops = self.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let ops = ops.clone();
                    async move { Ok::<_, Infallible>(ops.answer(&request).await) }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .keep_alive(false)
                    .serve_connection(TokioIo::new(stream), service);
                match tokio::time::timeout(CONNECTION_TIMEOUT, connection).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "operations listener: connection ended");
                    }
                    Err(_) => tracing::debug!("operations listener: connection timed out"),
                }
                drop(slots);
            });
        }
    }

    async fn answer(&self, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
        }
        match request.uri().path() {
            "/livez" => text(StatusCode::OK, "ok\n"),
            "/readyz" => match self.ready() {
                Ok(()) => text(StatusCode::OK, "ok\n"),
                Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, why),
            },
            "/metrics" => self.metrics(),
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    fn ready(&self) -> Result<(), &'static str> {
        if self.health.draining() {
            return Err("draining\n");
        }
        if self.health.database_down() {
            return Err("database unavailable\n");
        }
        Ok(())
    }

    fn metrics(&self) -> Response<Full<Bytes>> {
        let Some(reader) = &self.scrape else {
            return text(StatusCode::NOT_FOUND, "no metrics\n");
        };
        let mut collected = ResourceMetrics::default();
        if let Err(e) = reader.collect(&mut collected) {
            tracing::warn!(error = %e, "metrics could not be collected");
            return text(StatusCode::SERVICE_UNAVAILABLE, "metrics unavailable\n");
        }
        let mut response = Response::new(Full::new(Bytes::from(prometheus::encode(&collected))));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(prometheus::CONTENT_TYPE),
        );
        response
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Binds the operations listener at `addr`.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, crate::app::StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|error| crate::app::StartError::Listen { addr, error })
}
