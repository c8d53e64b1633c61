//! strongroomd, the strongroom server: configuration, start-up, the gRPC
//! handlers over mutual TLS and the application service they call.
//!
//! `main` only parses the command line; everything else is here so tests can
//! build an [`app::App`] on port 0.

pub mod abuse;
pub mod app;
pub mod cache;
pub mod checkpoint_task;
pub mod config;
pub mod convert;
pub mod dev;
pub mod error;
pub mod handlers;
pub mod serve;
pub mod telemetry;
pub mod tls;
pub mod vault;
