//! The Prometheus text exposition format (version 0.0.4) of what the
//! metrics SDK collected: the same instruments the OTLP exporter sends,
//! named as Prometheus names OpenTelemetry metrics (dots to underscores,
//! the unit as a suffix, `_total` on counters). Labels are the
//! instruments' own attributes, which carry names and codes only.

use std::fmt::Write as _;

use opentelemetry::KeyValue;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, Metric, MetricData, ResourceMetrics};

/// The content type of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `metrics` in the text format.
pub fn encode(metrics: &ResourceMetrics) -> String {
    let mut out = String::with_capacity(8 * 1024);
    for scope in metrics.scope_metrics() {
        for metric in scope.metrics() {
            match metric.data() {
                AggregatedMetrics::F64(data) => write_metric(&mut out, metric, data),
                AggregatedMetrics::U64(data) => write_metric(&mut out, metric, data),
                AggregatedMetrics::I64(data) => write_metric(&mut out, metric, data),
            }
        }
    }
    out
}

/// A sample value as Prometheus writes it.
trait Sample: Copy {
    fn write(self, out: &mut String);
}

impl Sample for f64 {
    fn write(self, out: &mut String) {
        if self.is_nan() {
            out.push_str("NaN");
        } else if self.is_infinite() {
            out.push_str(if self > 0.0 { "+Inf" } else { "-Inf" });
        } else {
            let _ = write!(out, "{self}");
        }
    }
}

impl Sample for u64 {
    fn write(self, out: &mut String) {
        let _ = write!(out, "{self}");
    }
}

impl Sample for i64 {
    fn write(self, out: &mut String) {
        let _ = write!(out, "{self}");
    }
}

fn write_metric<T: Sample>(out: &mut String, metric: &Metric, data: &MetricData<T>) {
    let base = base_name(metric.name(), metric.unit());
    match data {
        MetricData::Gauge(gauge) => {
            header(out, &base, metric.description(), "gauge");
            for point in gauge.data_points() {
                sample(out, &base, point.attributes(), None, point.value());
            }
        }
        MetricData::Sum(sum) => {
            let (name, kind) = if sum.is_monotonic() {
                (format!("{base}_total"), "counter")
            } else {
                (base, "gauge")
            };
            header(out, &name, metric.description(), kind);
            for point in sum.data_points() {
                sample(out, &name, point.attributes(), None, point.value());
            }
        }
        MetricData::Histogram(histogram) => {
            header(out, &base, metric.description(), "histogram");
            let bucket = format!("{base}_bucket");
            for point in histogram.data_points() {
                let mut cumulative = 0u64;
                for (bound, count) in point.bounds().zip(point.bucket_counts()) {
                    cumulative += count;
                    let mut le = String::new();
                    bound.write(&mut le);
                    sample(out, &bucket, point.attributes(), Some(&le), cumulative);
                }
                sample(
                    out,
                    &bucket,
                    point.attributes(),
                    Some("+Inf"),
                    point.count(),
                );
                sample(
                    out,
                    &format!("{base}_sum"),
                    point.attributes(),
                    None,
                    point.sum(),
                );
                sample(
                    out,
                    &format!("{base}_count"),
                    point.attributes(),
                    None,
                    point.count(),
                );
            }
        }
        // The server makes no exponential histograms.
        MetricData::ExponentialHistogram(_) => {}
    }
}

/// The Prometheus name of an instrument: `rpc.server.duration` in `ms`
/// becomes `rpc_server_duration_milliseconds`.
fn base_name(name: &str, unit: &str) -> String {
    let mut base = sanitize(name);
    let suffix = match unit {
        "ms" => "milliseconds",
        "s" => "seconds",
        "By" => "bytes",
        _ => "",
    };
    if !suffix.is_empty() && !base.ends_with(suffix) {
        base.push('_');
        base.push_str(suffix);
    }
    base
}

/// Letters, digits and underscores only (a leading digit prefixed).
fn sanitize(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

fn header(out: &mut String, name: &str, description: &str, kind: &str) {
    if !description.is_empty() {
        let _ = writeln!(
            out,
            "# HELP {name} {}",
            description.replace('\\', "\\\\").replace('\n', "\\n")
        );
    }
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample<'a, T: Sample>(
    out: &mut String,
    name: &str,
    attributes: impl Iterator<Item = &'a KeyValue>,
    le: Option<&str>,
    value: T,
) {
    out.push_str(name);
    let mut first = true;
    let mut label = |out: &mut String, key: &str, value: &str| {
        out.push(if first { '{' } else { ',' });
        first = false;
        out.push_str(&sanitize(key));
        out.push_str("=\"");
        for c in value.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    };
    for kv in attributes {
        label(out, kv.key.as_str(), &kv.value.as_str());
    }
    if let Some(le) = le {
        label(out, "le", le);
    }
    if !first {
        out.push('}');
    }
    out.push(' ');
    value.write(out);
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry_sdk::metrics::reader::MetricReader as _;
    use opentelemetry_sdk::metrics::{ManualReader, SdkMeterProvider};
    use std::sync::Arc;

    fn scrape(record: impl FnOnce(&opentelemetry::metrics::Meter)) -> String {
        let reader = Arc::new(ManualReader::builder().build());
        let provider = SdkMeterProvider::builder()
            .with_reader(crate::telemetry::SharedReader(Arc::clone(&reader)))
            .build();
        let meter = provider.meter("test");
        record(&meter);
        let mut collected = ResourceMetrics::default();
        reader.collect(&mut collected).expect("collect");
        encode(&collected)
    }

    #[test]
    fn counters_histograms_and_gauges_in_the_text_format() {
        let text = scrape(|meter| {
            let calls = meter.u64_counter("strongroom.rpc.calls").build();
            calls.add(2, &[KeyValue::new("rpc.method", "Reveal\"x\\")]);
            let duration = meter
                .f64_histogram("rpc.server.duration")
                .with_unit("ms")
                .with_boundaries(vec![1.0, 10.0])
                .build();
            duration.record(0.5, &[]);
            duration.record(5.0, &[]);
            duration.record(50.0, &[]);
            let _gauge = meter
                .u64_observable_gauge("strongroom.db.pool.connections")
                .with_callback(|g| g.observe(3, &[KeyValue::new("state", "idle")]))
                .build();
        });
        assert!(text.contains("# TYPE strongroom_rpc_calls_total counter\n"));
        assert!(text.contains("strongroom_rpc_calls_total{rpc_method=\"Reveal\\\"x\\\\\"} 2\n"));
        assert!(text.contains("# TYPE rpc_server_duration_milliseconds histogram\n"));
        assert!(text.contains("rpc_server_duration_milliseconds_bucket{le=\"1\"} 1\n"));
        assert!(text.contains("rpc_server_duration_milliseconds_bucket{le=\"10\"} 2\n"));
        assert!(text.contains("rpc_server_duration_milliseconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("rpc_server_duration_milliseconds_sum 55.5\n"));
        assert!(text.contains("rpc_server_duration_milliseconds_count 3\n"));
        assert!(text.contains("# TYPE strongroom_db_pool_connections gauge\n"));
        assert!(text.contains("strongroom_db_pool_connections{state=\"idle\"} 3\n"));
    }
}
