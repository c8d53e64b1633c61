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
//! Anything else is 404 (405 for a method other than GET or HEAD). The
//! listener bounds its connections ([`MAX_CONNECTIONS`]) and the time to
//! read a request's head ([`HEADER_TIMEOUT`]); request bodies are never
//! read.

mod instruments;
pub mod prometheus;

pub use instruments::{BatchMetrics, observe_caches, observe_pool};

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

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

/// Connections the listener serves at once; more wait to be accepted.
pub const MAX_CONNECTIONS: usize = 64;

/// Time a connection has to send a request's head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

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
        loop {
            let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                return;
            };
            let (stream, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "operations listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let ops = self.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let ops = ops.clone();
                    async move { Ok::<_, Infallible>(ops.answer(&request).await) }
                });
                let served = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                if let Err(e) = served {
                    tracing::debug!(error = %e, "operations listener: connection ended");
                }
                drop(slot);
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
