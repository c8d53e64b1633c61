//! strongroomd, the strongroom server: configuration, start-up and the gRPC
//! handlers over mutual TLS that drive the engine (`strongroom-engine`).
//!
//! `main` only parses the command line; everything else is here so tests can
//! build an [`app::App`] on port 0.

pub mod app;
pub mod checkpoint_task;
pub mod config;
pub mod convert;
pub mod dev;
pub mod error;
pub mod handlers;
pub mod serve;
pub mod telemetry;
pub mod tls;
