//! Connecting to the server with the global options.

use std::time::Duration;

use strongroom_client::{Client, ClientConfig};

use crate::Error;
use crate::cli::Connection;

/// Connects with mutual TLS. Certificate, key and CA are required; the
/// endpoint is https only (checked when parsed, and again by the client).
pub(crate) async fn connect(connection: &Connection) -> Result<Client, Error> {
    let missing = |what: &str, flag: &str, var: &str| {
        Error::Usage(format!("no {what}: give --{flag} or set {var}"))
    };
    let config = ClientConfig {
        endpoint: connection.endpoint.clone(),
        ca: connection
            .ca
            .clone()
            .ok_or_else(|| missing("server CA", "ca", "STRONGROOM_CA"))?,
        cert: connection
            .cert
            .clone()
            .ok_or_else(|| missing("client certificate", "cert", "STRONGROOM_CERT"))?,
        key: connection
            .key
            .clone()
            .ok_or_else(|| missing("client key", "key", "STRONGROOM_KEY"))?,
        domain: None,
        tenant: connection.tenant.clone(),
        connect_timeout: Duration::from_secs(10),
    };
    Ok(Client::connect(&config).await?)
}
