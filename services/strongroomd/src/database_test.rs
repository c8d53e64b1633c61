//! The engine's [`DatabaseProbe`] for `TestCredential`: connects to the
//! PostgreSQL database a `db_connection` names, with sqlx connect options
//! built from its parts (never a formatted URL, never logged: statement
//! logging is off), its TLS mode as stored, bounded by the call's timeout.
//!
//! The destination passes the relay's internal-address policy first (the
//! relay's resolver: `relay.resolve`, then DNS, every address checked,
//! `relay.allow_internal` for every tenant or the caller's): an internal
//! address not allowed is refused before anything is sent, so the test is
//! no way around the relay's SSRF rule. The connection goes only to an
//! address that was checked (never a second lookup of the name, which could
//! answer differently).
//!
//! Failures are classified from sqlx's error kinds and the server's SQLSTATE
//! codes, never from messages (a server may echo what it was sent).
//!
//! This build's sqlx speaks no TLS: a stored mode that requires TLS
//! (`require`, `verify-ca`, `verify-full`) is reported as a TLS failure
//! without connecting, and `prefer` connects without it.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use secrecy::ExposeSecret as _;
use sqlx::ConnectOptions as _;
use sqlx::Connection as _;
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use strongroom_core::value::{DbConnection, SslMode};
use strongroom_engine::ports::{DatabaseFailure, DatabaseProbe, DatabaseTestOutcome};

use crate::config::RelayConfig;
use crate::relay::upstream::{Upstream, UpstreamError, UpstreamSetupError};

/// Connects to `db_connection` databases for credential tests, under the
/// relay's internal-address policy.
pub struct DatabaseTester {
    upstream: Upstream,
}

impl DatabaseTester {
    /// A tester resolving and checking destinations as the relay configured
    /// by `config` does.
    pub fn new(config: &RelayConfig) -> Result<Self, UpstreamSetupError> {
        Ok(Self {
            upstream: Upstream::new(config)?,
        })
    }

    async fn attempt(&self, tenant: &str, target: &DbConnection) -> DatabaseTestOutcome {
        let host = target
            .host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(&target.host);
        let addresses = match self
            .upstream
            .resolve_checked(tenant, host, target.port)
            .await
        {
            Ok(a) => a,
            Err(UpstreamError::Internal(_)) => {
                return DatabaseTestOutcome::Failed(DatabaseFailure::RefusedByPolicy);
            }
            Err(_) => return DatabaseTestOutcome::Failed(DatabaseFailure::Unreachable),
        };
        if matches!(
            target.ssl_mode,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
        ) {
            // No TLS in this build: nothing is sent, so the answer tells
            // nothing of what listens at the address either.
            return DatabaseTestOutcome::Failed(DatabaseFailure::Tls);
        }
        let hosts: Vec<String> = addresses.iter().map(|a| a.ip().to_string()).collect();
        let mut last = DatabaseFailure::Unreachable;
        for connect_to in hosts {
            let options = PgConnectOptions::new()
                .host(&connect_to)
                .port(target.port)
                .username(&target.username)
                .password(target.password.expose_secret())
                .database(&target.database)
                .ssl_mode(ssl_mode(target.ssl_mode))
                .application_name("strongroom-credential-test")
                .disable_statement_logging();
            match sqlx::PgConnection::connect_with(&options).await {
                Ok(mut conn) => {
                    let version: Result<(String,), _> =
                        sqlx::query_as("SELECT current_setting('server_version')")
                            .fetch_one(&mut conn)
                            .await;
                    conn.close().await.ok();
                    return match version {
                        Ok((server_version,)) => DatabaseTestOutcome::Connected { server_version },
                        Err(e) => DatabaseTestOutcome::Failed(classify(&e)),
                    };
                }
                Err(e) => {
                    last = classify(&e);
                    // Another address may answer; any other failure is the
                    // database's answer.
                    if last != DatabaseFailure::Unreachable {
                        break;
                    }
                }
            }
        }
        DatabaseTestOutcome::Failed(last)
    }
}

impl DatabaseProbe for DatabaseTester {
    fn connect<'a>(
        &'a self,
        tenant: &'a str,
        target: &'a DbConnection,
        timeout: Duration,
    ) -> Pin<Box<dyn Future<Output = DatabaseTestOutcome> + Send + 'a>> {
        Box::pin(async move {
            tokio::time::timeout(timeout, self.attempt(tenant, target))
                .await
                .unwrap_or(DatabaseTestOutcome::Failed(DatabaseFailure::Unreachable))
        })
    }
}

/// sqlx's TLS mode for a stored one.
fn ssl_mode(mode: SslMode) -> PgSslMode {
    match mode {
        SslMode::Disable => PgSslMode::Disable,
        SslMode::Prefer => PgSslMode::Prefer,
        SslMode::Require => PgSslMode::Require,
        SslMode::VerifyCa => PgSslMode::VerifyCa,
        SslMode::VerifyFull => PgSslMode::VerifyFull,
    }
}

/// The class of a connection failure, from its kind and SQLSTATE only.
fn classify(e: &sqlx::Error) -> DatabaseFailure {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut => DatabaseFailure::Unreachable,
        sqlx::Error::Tls(_) => DatabaseFailure::Tls,
        sqlx::Error::Database(db) => match db.code().as_deref() {
            // invalid_password, invalid_authorization_specification
            Some("28P01" | "28000") => DatabaseFailure::Authentication,
            // invalid_catalog_name
            Some("3D000") => DatabaseFailure::DatabaseMissing,
            _ => DatabaseFailure::Other,
        },
        _ => DatabaseFailure::Other,
    }
}
