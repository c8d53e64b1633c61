//! Whether Postgres answers: a probe on a connection of its own, outside
//! the pool (a pool busy with calls is not an outage), and the timeouts
//! the server's connections run under.

use std::str::FromStr;
use std::time::Duration;

use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use strongroom_core::{Error, Result};

/// The timeouts of the server's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PgTimeouts {
    /// Longest wait for a pooled connection (or a new one).
    pub acquire: Duration,
    /// `statement_timeout` of every connection.
    pub statement: Duration,
    /// `lock_timeout` of every connection.
    pub lock: Duration,
}

/// Asks Postgres `SELECT 1` on its own connection, within a time limit.
pub struct PgProbe {
    options: PgConnectOptions,
    limit: Duration,
    connection: Option<PgConnection>,
}

impl std::fmt::Debug for PgProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgProbe")
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl PgProbe {
    /// A probe of the database at `url`, each check bounded by `limit`.
    pub fn new(url: &str, limit: Duration) -> Result<Self> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|_| Error::invalid("database.url", "is not a valid Postgres URL"))?
            .application_name("strongroomd-probe")
            .disable_statement_logging();
        Ok(Self {
            options,
            limit,
            connection: None,
        })
    }

    /// Whether the database answered within the limit. A connection that
    /// failed or timed out is dropped; the next check connects anew.
    pub async fn check(&mut self) -> Result<()> {
        let outcome = tokio::time::timeout(self.limit, async {
            let connection = match &mut self.connection {
                Some(c) => c,
                None => self.connection.insert(self.options.connect().await?),
            };
            sqlx::query("SELECT 1").execute(&mut *connection).await?;
            Ok::<(), sqlx::Error>(())
        })
        .await;
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                self.connection = None;
                Err(Error::Unavailable(
                    format!("the database is unavailable: {e}").into(),
                ))
            }
            Err(_) => {
                self.connection = None;
                Err(Error::Unavailable(
                    format!(
                        "the database did not answer within {} ms",
                        self.limit.as_millis()
                    )
                    .into(),
                ))
            }
        }
    }
}
