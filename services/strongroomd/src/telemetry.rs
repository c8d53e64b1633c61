//! Structured logging. Every log line is built from explicit fields; no
//! request or response body is ever recorded, so no secret can reach a log.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber writing to stdout. `level` is an
/// `EnvFilter` directive (`info`, `strongroomd=debug`); `RUST_LOG` wins when
/// set.
pub fn init(level: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
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
