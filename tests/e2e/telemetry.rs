//! Trace context and OpenTelemetry: a call that comes with a W3C
//! `traceparent` continues the client's trace (its trace id in the call's
//! audit event and, with an exporter configured, in the server's exported
//! span); other calls start a new trace, recorded the same way. With
//! `telemetry.otlp_endpoint` set, call spans and per-call metrics reach an
//! OTLP collector (here one in the test), without any secret value.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{Metric, metric};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use strongroom_e2e::{Backend, Options, TenantAdmin, TestServer, api_key, audit_events, path};
use strongroom_proto::v1 as pb;
use tonic::Code;

on_both_backends!(audit_events_carry_the_callers_trace);

const CLIENT_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CLIENT_SPAN: &str = "b7ad6b7169203331";

/// A reveal request carrying `traceparent` (if any).
fn reveal(traceparent: Option<&str>) -> tonic::Request<pb::RevealCredentialRequest> {
    let mut request = tonic::Request::new(pb::RevealCredentialRequest {
        credential: path("dev", "llm/openai"),
        purpose: "telemetry".into(),
        ..Default::default()
    });
    if let Some(value) = traceparent {
        request
            .metadata_mut()
            .insert("traceparent", value.parse().expect("metadata value"));
    }
    request
}

/// The trace ids of the tenant's reveal events, oldest first.
async fn reveal_trace_ids(acme: &TenantAdmin) -> Vec<String> {
    let mut ids: Vec<String> = audit_events(
        &acme.client,
        pb::QueryEventsRequest {
            actions: vec![pb::AuditAction::CredentialReveal as i32],
            ..Default::default()
        },
    )
    .await
    .into_iter()
    .map(|e| e.trace_id)
    .collect();
    ids.reverse();
    ids
}

/// Creates `llm/openai` in `dev` holding `secret`.
async fn create_secret(acme: &TenantAdmin, secret: &str) {
    acme.client
        .credentials()
        .create_credential(pb::CreateCredentialRequest {
            environment: "dev".into(),
            name: "llm/openai".into(),
            service: "openai".into(),
            value: api_key(secret),
            ..Default::default()
        })
        .await
        .expect("create");
}

/// Without an exporter too: the client's trace is continued, a malformed
/// header is ignored (a new trace), and no header starts a new trace; every
/// reveal's audit event records its trace id.
async fn audit_events_carry_the_callers_trace(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = server.tenant("acme").await;
    create_secret(&acme, "sk-e2e-trace-secret").await;
    let mut creds = acme.client.credentials();
    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    creds
        .reveal_credential(reveal(Some(&traceparent)))
        .await
        .expect("reveal with a traceparent");
    // Upper-case hex is not W3C's: ignored, never refused.
    let malformed = traceparent.to_uppercase();
    creds
        .reveal_credential(reveal(Some(&malformed)))
        .await
        .expect("reveal with a malformed traceparent");
    creds
        .reveal_credential(reveal(None))
        .await
        .expect("reveal without a traceparent");
    let ids = reveal_trace_ids(&acme).await;
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert_eq!(ids[0], CLIENT_TRACE, "the client's trace is continued");
    for (i, id) in ids.iter().enumerate().skip(1) {
        assert_eq!(id.len(), 32, "call {i}: a W3C trace id: {id:?}");
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
            "call {i}: {id:?}"
        );
        assert_ne!(id, CLIENT_TRACE, "call {i} starts a new trace");
        assert_ne!(id, &"0".repeat(32), "call {i}");
    }
    assert_ne!(ids[1], ids[2], "each call without a trace starts its own");
    let status = server.stop().await;
    assert!(status.success(), "strongroomd exited with {status}");
}

/// What the collector received.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    metrics: Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.spans.lock().expect("spans").push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.metrics
            .lock()
            .expect("metrics")
            .push(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

impl Collector {
    /// Serves OTLP/gRPC on a free loopback port; returns its address.
    async fn start(&self) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the collector");
        let addr = listener.local_addr().expect("collector address");
        let server = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(self.clone()))
            .add_service(MetricsServiceServer::new(self.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
        tokio::spawn(server);
        addr
    }

    fn spans(&self) -> Vec<Span> {
        self.spans
            .lock()
            .expect("spans")
            .iter()
            .flat_map(|r| &r.resource_spans)
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| s.spans.clone())
            .collect()
    }

    fn metrics(&self) -> Vec<Metric> {
        self.metrics
            .lock()
            .expect("metrics")
            .iter()
            .flat_map(|r| &r.resource_metrics)
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| s.metrics.clone())
            .collect()
    }

    /// Every byte received, encoded as sent, and as Debug text.
    fn everything(&self) -> (Vec<u8>, String) {
        let mut bytes = Vec::new();
        let mut text = String::new();
        for r in self.spans.lock().expect("spans").iter() {
            bytes.extend(r.encode_to_vec());
            text.push_str(&format!("{r:?}"));
        }
        for r in self.metrics.lock().expect("metrics").iter() {
            bytes.extend(r.encode_to_vec());
            text.push_str(&format!("{r:?}"));
        }
        (bytes, text)
    }
}

/// Polls `found` every 50 ms for up to 15 s.
async fn eventually<T>(what: &str, mut found: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(t) = found() {
            return t;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the collector received no {what} within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn string_attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attributes.iter().find(|a| a.key == key).and_then(|a| {
        match a.value.as_ref().and_then(|v| v.value.as_ref()) {
            Some(any_value::Value::StringValue(s)) => Some(s.as_str()),
            _ => None,
        }
    })
}

fn int_attribute(attributes: &[KeyValue], key: &str) -> Option<i64> {
    attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| match a.value.as_ref() {
            Some(AnyValue {
                value: Some(any_value::Value::IntValue(i)),
            }) => Some(*i),
            _ => None,
        })
}

/// The attribute sets of a metric's data points.
fn data_point_attributes(metric: &Metric) -> Vec<Vec<KeyValue>> {
    match &metric.data {
        Some(metric::Data::Sum(s)) => s.data_points.iter().map(|p| p.attributes.clone()).collect(),
        Some(metric::Data::Histogram(h)) => {
            h.data_points.iter().map(|p| p.attributes.clone()).collect()
        }
        _ => Vec::new(),
    }
}

/// Whether a data point of metric `name` has all of `expected`.
fn has_point(metrics: &[Metric], name: &str, expected: &[(&str, &str)], code: i64) -> bool {
    metrics.iter().filter(|m| m.name == name).any(|m| {
        data_point_attributes(m).iter().any(|attributes| {
            int_attribute(attributes, "rpc.grpc.status_code") == Some(code)
                && expected
                    .iter()
                    .all(|(k, v)| string_attribute(attributes, k) == Some(v))
        })
    })
}

/// With an OTLP endpoint: the reveal's span reaches the collector in the
/// client's trace, under the client's span, with the trace id its audit
/// event records; a call without a trace gets a root span under the trace
/// id its audit event records; per-call metrics (latency, outcome by code,
/// denials) arrive; no secret value is in anything exported. At the
/// default log level (`info`): spans do not depend on the log.
#[tokio::test]
async fn call_spans_and_metrics_are_exported_over_otlp() {
    let collector = Collector::default();
    let endpoint = collector.start().await;
    let mut options = Options::new(Backend::Sqlite);
    options.log_level = "info".into();
    options.env.extend([
        (
            "STRONGROOM_OTLP_ENDPOINT".to_owned(),
            format!("http://{endpoint}"),
        ),
        (
            "STRONGROOM_OTLP_EXPORT_INTERVAL_MS".to_owned(),
            "200".to_owned(),
        ),
    ]);
    let server = TestServer::start_with(options).await;
    let acme = server.tenant("acme").await;
    let secret = format!("sk-e2eOTLP{}", uuid::Uuid::new_v4().simple());
    create_secret(&acme, &secret).await;
    let mut creds = acme.client.credentials();
    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let revealed = creds
        .reveal_credential(reveal(Some(&traceparent)))
        .await
        .expect("reveal with a traceparent")
        .into_inner();
    assert_eq!(
        strongroom_e2e::api_key_text(strongroom_e2e::revealed_value(&revealed)),
        secret
    );
    creds
        .reveal_credential(reveal(None))
        .await
        .expect("reveal without a traceparent");
    // A denial: an identity bound to no principal.
    let stranger = server.client("spiffe://e2e.test/acme/stranger").await;
    let refused = stranger
        .credentials()
        .reveal_credential(reveal(None))
        .await
        .expect_err("a stranger is not authenticated");
    assert_eq!(refused.code(), Code::Unauthenticated);

    let ids = reveal_trace_ids(&acme).await;
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert_eq!(
        ids[0], CLIENT_TRACE,
        "the audit event has the client's trace"
    );
    let new_trace = ids[1].clone();
    assert_ne!(new_trace, CLIENT_TRACE);

    let client_trace = hex(CLIENT_TRACE);
    let span = eventually("span of the traced reveal", || {
        collector
            .spans()
            .into_iter()
            .find(|s| s.trace_id == client_trace)
    })
    .await;
    assert_eq!(
        span.parent_span_id,
        hex(CLIENT_SPAN),
        "under the client's span"
    );
    assert_eq!(
        span.name,
        "strongroom.v1.CredentialService/RevealCredential"
    );
    assert_eq!(
        span.kind,
        opentelemetry_proto::tonic::trace::v1::span::SpanKind::Server as i32
    );
    assert_eq!(
        string_attribute(&span.attributes, "rpc"),
        Some("RevealCredential")
    );
    assert_eq!(string_attribute(&span.attributes, "tenant"), Some("acme"));
    assert_eq!(
        string_attribute(&span.attributes, "trace_id"),
        Some(CLIENT_TRACE)
    );
    assert_eq!(
        string_attribute(&span.attributes, "principal"),
        Some(acme.principal_id.as_str())
    );
    assert!(string_attribute(&span.attributes, "request_id").is_some_and(|r| !r.is_empty()));
    assert_eq!(
        int_attribute(&span.attributes, "rpc.grpc.status_code"),
        Some(0)
    );

    let new_trace_bytes = hex(&new_trace);
    let root = eventually("span of the untraced reveal", || {
        collector
            .spans()
            .into_iter()
            .find(|s| s.trace_id == new_trace_bytes)
    })
    .await;
    assert!(root.parent_span_id.is_empty(), "a new trace: a root span");
    assert_eq!(
        root.name,
        "strongroom.v1.CredentialService/RevealCredential"
    );

    let reveal_method = [
        ("rpc.system", "grpc"),
        ("rpc.service", "strongroom.v1.CredentialService"),
        ("rpc.method", "RevealCredential"),
    ];
    eventually("reveal metrics", || {
        let metrics = collector.metrics();
        (has_point(&metrics, "rpc.server.duration", &reveal_method, 0)
            && has_point(&metrics, "strongroom.rpc.calls", &reveal_method, 0))
        .then_some(())
    })
    .await;
    let denial = [
        ("rpc.method", "RevealCredential"),
        ("reason", "unauthenticated"),
    ];
    eventually("the denial", || {
        has_point(
            &collector.metrics(),
            "strongroom.rpc.denials",
            &denial,
            Code::Unauthenticated as i64,
        )
        .then_some(())
    })
    .await;

    let (bytes, text) = collector.everything();
    assert!(!bytes.is_empty());
    for needle in [secret.as_str(), &secret[3..]] {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
            "a secret value was exported"
        );
        assert!(!text.contains(needle), "a secret value was exported");
    }
    assert!(!server.logs.contains(&secret), "a secret value was logged");
    let status = server.stop().await;
    assert!(status.success(), "strongroomd exited with {status}");
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}
