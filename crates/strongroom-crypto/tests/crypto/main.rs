//! Tests of strongroom-crypto's public API, in one test binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod envelope;
mod export;
mod format;
mod kdf;
mod properties;
mod redaction;
mod root_key;
mod support;
