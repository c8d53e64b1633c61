//! The domain core of strongroom.
//!
//! Everything here is free of I/O, gRPC and SQL: domain newtypes parsed at the
//! edge, typed credential values that redact themselves, principals and roles,
//! grants and the default-deny policy evaluation, the audit event and its
//! per-tenant hash chain, and the storage trait that backends implement.
//!
//! Tenant data is reachable only through a [`scope::TenantScope`], and a scope
//! can only be obtained from an [`scope::Authenticated`] caller produced by the
//! [`scope::Authenticator`].
#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod access;
pub mod audit;
pub mod chains;
pub mod credential;
pub mod error;
pub mod export;
pub mod idempotency;
pub mod ids;
pub mod keys;
pub mod lease;
pub mod names;
pub mod net;
pub mod notify;
pub mod page;
pub mod placeholder;
pub mod policy;
pub mod principal;
pub mod rotation;
pub mod scope;
pub mod store;
pub mod tenant;
pub mod time;
pub mod value;

pub use error::{Error, Missing, Precondition, Result, Unusable};
