//! Structured logging, and OpenTelemetry when it is configured.
//!
//! Every log line is built from explicit fields; no request or response
//! body is ever recorded, so no secret can reach a log. With
//! `telemetry.otlp_endpoint` set, the call spans of the request edge
//! (`edge::trace`: names, tenant, principal, request and trace ids, codes)
//! and the per-call metrics (`edge::metrics`) are exported over OTLP/gRPC
//! too, from the same explicit fields. Without it nothing is exported and
//! no exporter exists: a call does no telemetry work beyond its log line.
//! With `metrics.listen` set, the same metrics (the same instruments,
//! read by a second reader) are served in the Prometheus text format at
//! `/metrics` of the operations listener (`ops`).

use std::cell::Cell;
use std::sync::Arc;

use opentelemetry::metrics::Meter;
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{
    InstrumentKind, ManualReader, PeriodicReader, Pipeline, SdkMeterProvider, Temporality,
};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, IdGenerator, RandomIdGenerator, SdkTracerProvider,
};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::{LogFormat, TelemetryConfig};
use crate::edge::{CallMetrics, TraceContext};

/// The target of the call spans, the only spans exported (the log lines
/// of that target are written after their span closed: never span events).
const CALL_SPANS: &str = "strongroomd::edge::trace";

/// What [`init_with_exporters`] started; [`Telemetry::shutdown`] sends
/// what is left.
#[derive(Default)]
pub struct Telemetry {
    tracer: Option<SdkTracerProvider>,
    meter_provider: Option<SdkMeterProvider>,
    meter: Option<Meter>,
    metrics: Option<Arc<CallMetrics>>,
    scrape: Option<Arc<ManualReader>>,
}

impl Telemetry {
    /// The per-call metrics, when an exporter or the metrics listener is
    /// configured.
    pub fn call_metrics(&self) -> Option<Arc<CallMetrics>> {
        self.metrics.clone()
    }

    /// The meter every instrument of the server is made from, when metrics
    /// are configured (OTLP, the metrics listener, or both: every reader
    /// sees the same instruments).
    pub fn meter(&self) -> Option<&Meter> {
        self.meter.as_ref()
    }

    /// The reader `/metrics` collects from, when the metrics listener is
    /// configured.
    pub fn scrape_reader(&self) -> Option<Arc<ManualReader>> {
        self.scrape.clone()
    }

    /// Exports what is still buffered and stops the exporters.
    pub async fn shutdown(self) {
        let Telemetry {
            tracer,
            meter_provider,
            ..
        } = self;
        if tracer.is_none() && meter_provider.is_none() {
            return;
        }
        // Both wait for their export: off the runtime's threads.
        let done = tokio::task::spawn_blocking(move || {
            if let Some(tracer) = tracer
                && let Err(e) = tracer.shutdown()
            {
                tracing::warn!(error = %e, "span export did not finish");
            }
            if let Some(meter) = meter_provider
                && let Err(e) = meter.shutdown()
            {
                tracing::warn!(error = %e, "metrics export did not finish");
            }
        });
        let _ = done.await;
    }
}

/// A [`ManualReader`] shared between the meter provider (which drives it)
/// and the metrics listener (which collects through it on each scrape).
#[derive(Debug)]
pub(crate) struct SharedReader(pub(crate) Arc<ManualReader>);

impl MetricReader for SharedReader {
    fn register_pipeline(&self, pipeline: std::sync::Weak<Pipeline>) {
        self.0.register_pipeline(pipeline);
    }

    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(rm)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: std::time::Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}

/// Installs the global subscriber writing to stdout. `level` is an
/// `EnvFilter` directive (`info`, `strongroomd=debug`); `RUST_LOG` wins when
/// set.
pub fn init(level: &str, format: LogFormat) {
    let filter = log_filter(level);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    let result = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.with_ansi(false).try_init(),
    };
    // A second initialisation (tests) keeps the first subscriber.
    drop(result);
}

fn log_filter(level: &str) -> EnvFilter {
    EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"))
}

/// As [`init`], and with an OTLP endpoint configured, the exporters of
/// spans and metrics too (they connect lazily: a collector that is down
/// costs failed exports, logged, never a refused call); with the metrics
/// listener configured (`scrape`), a reader that `/metrics` collects from.
/// Both readers read the same instruments. Must run on the Tokio runtime
/// that will serve.
pub fn init_with_exporters(
    level: &str,
    format: LogFormat,
    config: &TelemetryConfig,
    scrape: bool,
) -> Result<Telemetry, String> {
    let resource = Resource::builder().with_service_name("strongroomd").build();
    let mut meters = SdkMeterProvider::builder().with_resource(resource.clone());
    let scrape_reader = scrape.then(|| Arc::new(ManualReader::builder().build()));
    if let Some(reader) = &scrape_reader {
        meters = meters.with_reader(SharedReader(Arc::clone(reader)));
    }
    let Some(endpoint) = &config.otlp_endpoint else {
        init(level, format);
        if scrape_reader.is_none() {
            return Ok(Telemetry::default());
        }
        let meter_provider = meters.build();
        let meter = opentelemetry::metrics::MeterProvider::meter(&meter_provider, "strongroomd");
        return Ok(Telemetry {
            tracer: None,
            metrics: Some(Arc::new(CallMetrics::new(&meter))),
            meter: Some(meter),
            meter_provider: Some(meter_provider),
            scrape: scrape_reader,
        });
    };
    let spans = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.clone())
        .with_timeout(config.export_timeout)
        .build()
        .map_err(|e| format!("OTLP span exporter: {e}"))?;
    let tracer_provider = SdkTracerProvider::builder()
        .with_span_processor(
            BatchSpanProcessor::builder(spans)
                .with_batch_config(
                    BatchConfigBuilder::default()
                        .with_scheduled_delay(config.export_interval)
                        .build(),
                )
                .build(),
        )
        .with_id_generator(EdgeIds::default())
        .with_resource(resource)
        .build();
    let metrics = opentelemetry_otlp::MetricExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.clone())
        .with_timeout(config.export_timeout)
        .build()
        .map_err(|e| format!("OTLP metric exporter: {e}"))?;
    let meter_provider = meters
        .with_reader(
            PeriodicReader::builder(metrics)
                .with_interval(config.export_interval)
                .build(),
        )
        .build();
    let meter = opentelemetry::metrics::MeterProvider::meter(&meter_provider, "strongroomd");
    let call_metrics = Arc::new(CallMetrics::new(&meter));

    // Logs keep their own filter (at `info` the log never formats the DEBUG
    // call spans); the exporter sees the call spans only, not log events.
    let spans_layer = tracing_opentelemetry::layer()
        .with_tracer(tracer_provider.tracer("strongroomd"))
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        // A static filter: every other callsite's interest is decided
        // once, not per event.
        .with_filter(
            tracing_subscriber::filter::Targets::new()
                .with_target(CALL_SPANS, tracing::Level::DEBUG),
        );
    let registry = tracing_subscriber::registry().with(spans_layer);
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stdout);
    let result = match format {
        LogFormat::Json => registry
            .with(
                logs.json()
                    .flatten_event(true)
                    .with_filter(log_filter(level)),
            )
            .try_init(),
        LogFormat::Text => registry
            .with(logs.with_ansi(false).with_filter(log_filter(level)))
            .try_init(),
    };
    drop(result);
    tracing::info!(endpoint = %endpoint, "exporting call spans and metrics over OTLP");
    Ok(Telemetry {
        tracer: Some(tracer_provider),
        meter_provider: Some(meter_provider),
        meter: Some(meter),
        metrics: Some(call_metrics),
        scrape: scrape_reader,
    })
}

thread_local! {
    /// The trace id the next root span built on this thread takes (see
    /// [`join_trace`]).
    static NEXT_TRACE_ID: Cell<Option<u128>> = const { Cell::new(None) };
}

/// Span and trace ids for the exported spans: random, except that a call
/// starting a new trace takes the trace id the edge already chose for it
/// (and recorded in its audit events).
#[derive(Debug, Default)]
struct EdgeIds(RandomIdGenerator);

impl IdGenerator for EdgeIds {
    fn new_trace_id(&self) -> TraceId {
        match NEXT_TRACE_ID.with(Cell::take) {
            Some(id) => TraceId::from(id),
            None => self.0.new_trace_id(),
        }
    }

    fn new_span_id(&self) -> SpanId {
        self.0.new_span_id()
    }
}

/// Puts a call's span in the call's trace: as a child of the client's span
/// when the client sent one, else as the root of the new trace the edge
/// started, under the trace id the edge chose.
pub fn join_trace(span: &tracing::Span, trace: &TraceContext) {
    if span.is_disabled() {
        return;
    }
    match trace.parent() {
        Some(parent) => {
            let flags = if parent.sampled {
                TraceFlags::SAMPLED
            } else {
                TraceFlags::default()
            };
            let remote = SpanContext::new(
                TraceId::from(trace.trace_id()),
                SpanId::from(parent.span_id),
                flags,
                true,
                TraceState::default(),
            );
            let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
        }
        None => {
            // Building the span (asking for its context) takes the id, on
            // this thread, at once.
            NEXT_TRACE_ID.with(|next| next.set(Some(trace.trace_id())));
            let _ = span.context();
            NEXT_TRACE_ID.with(|next| next.set(None));
        }
    }
}
