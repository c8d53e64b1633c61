//! strongroomd, the strongroom server: configuration, start-up, the
//! transport over mutual TLS ([`serve`], [`tls`]), the request edge every
//! call passes ([`edge`]) and the gRPC services behind it ([`grpc`]) that
//! drive the engine (`strongroom-engine`), and the operations listener
//! for probes and Prometheus ([`ops`]).
//!
//! `main` only parses the command line; everything else is here so tests can
//! build an [`app::App`] on port 0.

pub mod app;
pub mod checkpoint_task;
pub mod config;
pub mod database_test;
pub mod dev;
pub mod edge;
pub mod grpc;
pub mod health;
pub mod notifier;
pub mod ops;
pub mod relay;
pub mod serve;
pub mod telemetry;
#[cfg(feature = "test-clock")]
pub mod test_clock;
pub mod tls;

// The test clock lets whoever can write a file move the server's time
// (and with it expiry): it exists for the end-to-end tests only.
#[cfg(all(feature = "test-clock", not(debug_assertions)))]
compile_error!(
    "the `test-clock` feature is for debug builds of the end-to-end tests only; release builds of strongroomd never carry it"
);
