//! The relay's HTTP client: resolves a destination itself (DNS, or the
//! static `relay.resolve` entries), refuses it if any address it resolves
//! to is internal (unless that exact `host:port` is in
//! `relay.allow_internal` for every tenant or for the request's tenant),
//! refuses a non-HTTPS destination before any connection, connects to an address it checked (never a
//! second lookup), verifies the destination's certificate against the
//! system roots plus `relay.upstream_ca` with the checked host as the TLS
//! server name, and speaks HTTP/2 or HTTP/1.1 as ALPN decides. Connections
//! are pooled per tenant and destination (scheme, host, port): a pooled
//! connection was made to a checked address of that destination, and no
//! connection carries two tenants' requests (a destination that ties
//! authentication to the connection cannot mix them up). At most
//! [`MAX_IDLE`] idle HTTP/1.1 connections are kept in all.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use strongroom_core::net::{AllowList, Internal, Scheme, classify};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{self, pki_types::ServerName};

use crate::config::RelayConfig;

/// The request body type sent upstream.
pub type UpstreamBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// Idle HTTP/1.1 connections kept per destination.
const MAX_IDLE_PER_DESTINATION: usize = 32;

/// Idle HTTP/1.1 connections kept in all.
pub const MAX_IDLE: usize = 1024;

/// Why a request could not be sent (or answered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamError {
    /// The destination resolves to an internal address not allowed.
    Internal(Internal),
    /// The name does not resolve.
    Resolve,
    /// No address accepted a connection, or the connection failed.
    Unreachable,
    /// The TLS handshake failed (certificate not trusted, wrong name).
    Tls,
    /// No answer in time.
    Timeout,
}

impl UpstreamError {
    /// The relay's reason code and HTTP status for it.
    pub fn reason(&self) -> (&'static str, u16) {
        match self {
            Self::Internal(_) => ("internal_address", 403),
            Self::Resolve | Self::Unreachable => ("upstream_unreachable", 502),
            Self::Tls => ("upstream_tls", 502),
            Self::Timeout => ("upstream_timeout", 504),
        }
    }
}

/// Where a pooled connection goes, and for which tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Destination {
    /// The tenant whose requests it carries.
    pub tenant: strongroom_core::ids::TenantId,
    /// Its name (what `relay.allow_internal` entries are scoped by).
    pub tenant_name: String,
    /// `https` or `http`.
    pub https: bool,
    /// Host (normalised).
    pub host: String,
    /// Port.
    pub port: u16,
}

/// A connection's request sender.
pub enum Sender {
    /// HTTP/1.1: one request at a time; back to the pool when done.
    H1(http1::SendRequest<UpstreamBody>),
    /// HTTP/2: shared.
    H2(http2::SendRequest<UpstreamBody>),
}

impl Sender {
    /// Whether this is an HTTP/2 connection.
    pub fn is_h2(&self) -> bool {
        matches!(self, Self::H2(_))
    }

    /// Sends `request`, waiting for the connection to be ready.
    pub async fn send(
        &mut self,
        request: http::Request<UpstreamBody>,
    ) -> hyper::Result<http::Response<Incoming>> {
        match self {
            Self::H1(s) => {
                s.ready().await?;
                s.send_request(request).await
            }
            Self::H2(s) => {
                s.ready().await?;
                s.send_request(request).await
            }
        }
    }
}

/// The relay's client.
pub struct Upstream {
    resolve: HashMap<(String, u16), Vec<IpAddr>>,
    allow_internal: AllowList,
    tls: TlsConnector,
    timeout: Duration,
    h1: Mutex<Idle>,
    h2: Mutex<HashMap<Destination, http2::SendRequest<UpstreamBody>>>,
}

/// Idle HTTP/1.1 connections by destination, with their count.
#[derive(Default)]
struct Idle {
    by_destination: HashMap<Destination, Vec<http1::SendRequest<UpstreamBody>>>,
    count: usize,
}

/// Why the relay's TLS settings could not be built.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UpstreamSetupError(pub String);

impl Upstream {
    /// A client with `config`'s resolution, allow-list, roots and timeout.
    pub fn new(config: &RelayConfig) -> Result<Self, UpstreamSetupError> {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for cert in native.certs {
            // A system root rustls cannot use is skipped, as browsers do.
            let _ = roots.add(cert);
        }
        if let Some(path) = &config.upstream_ca {
            use rustls::pki_types::{CertificateDer, pem::PemObject};
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(|e| {
                    UpstreamSetupError(format!("relay.upstream_ca {}: {e}", path.display()))
                })?
                .collect::<Result<_, _>>()
                .map_err(|e| {
                    UpstreamSetupError(format!("relay.upstream_ca {}: {e}", path.display()))
                })?;
            if certs.is_empty() {
                return Err(UpstreamSetupError(format!(
                    "relay.upstream_ca {}: no certificate in the file",
                    path.display()
                )));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| {
                    UpstreamSetupError(format!("relay.upstream_ca {}: {e}", path.display()))
                })?;
            }
        }
        let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| UpstreamSetupError(format!("relay TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            resolve: config.resolve.clone(),
            allow_internal: config.allow_internal.clone(),
            tls: TlsConnector::from(Arc::new(tls)),
            timeout: config.timeout,
            h1: Mutex::new(Idle::default()),
            h2: Mutex::new(HashMap::new()),
        })
    }

    /// The addresses of `host:port`, each checked: all of them must be
    /// public, unless that exact `host:port` is allowed internal for every
    /// tenant or for the tenant named `tenant`.
    pub async fn resolve_checked(
        &self,
        tenant: &str,
        host: &str,
        port: u16,
    ) -> Result<Vec<SocketAddr>, UpstreamError> {
        let ips: Vec<IpAddr> = if let Ok(ip) = host.parse::<IpAddr>() {
            vec![ip]
        } else if let Some(ips) = self.resolve.get(&(host.to_owned(), port)) {
            ips.clone()
        } else {
            let found = tokio::time::timeout(self.timeout, tokio::net::lookup_host((host, port)))
                .await
                .map_err(|_| UpstreamError::Timeout)?
                .map_err(|_| UpstreamError::Resolve)?;
            found.map(|a| a.ip()).collect()
        };
        if ips.is_empty() {
            return Err(UpstreamError::Resolve);
        }
        if !self.allow_internal.allows(tenant, host, port) {
            // One internal address refuses the name: a name that resolves
            // to public and internal addresses at once is not trusted.
            if let Some(kind) = ips.iter().find_map(|ip| classify(*ip)) {
                return Err(UpstreamError::Internal(kind));
            }
        }
        Ok(ips
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect())
    }

    /// A ready connection to `destination`: pooled, or new to a checked
    /// address.
    pub async fn connection(&self, destination: &Destination) -> Result<Sender, UpstreamError> {
        if let Some(s) = self.pooled(destination) {
            return Ok(s);
        }
        tokio::time::timeout(self.timeout, self.connect(destination))
            .await
            .map_err(|_| UpstreamError::Timeout)?
    }

    fn pooled(&self, destination: &Destination) -> Option<Sender> {
        {
            let mut h2 = self.h2.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(s) = h2.get(destination) {
                if !s.is_closed() {
                    return Some(Sender::H2(s.clone()));
                }
                h2.remove(destination);
            }
        }
        let mut h1 = self.h1.lock().unwrap_or_else(|e| e.into_inner());
        let idle = h1.by_destination.get_mut(destination)?;
        let mut found = None;
        let mut taken = 0;
        while let Some(s) = idle.pop() {
            taken += 1;
            if !s.is_closed() && s.is_ready() {
                found = Some(Sender::H1(s));
                break;
            }
        }
        if idle.is_empty() {
            h1.by_destination.remove(destination);
        }
        h1.count -= taken;
        found
    }

    /// Gives an HTTP/1.1 connection back after its response was read to
    /// the end.
    pub fn put_back(&self, destination: &Destination, sender: Sender) {
        if let Sender::H1(s) = sender
            && !s.is_closed()
        {
            let mut h1 = self.h1.lock().unwrap_or_else(|e| e.into_inner());
            if h1.count >= MAX_IDLE {
                return;
            }
            let idle = h1.by_destination.entry(destination.clone()).or_default();
            if idle.len() < MAX_IDLE_PER_DESTINATION {
                idle.push(s);
                h1.count += 1;
            }
        }
    }

    async fn connect(&self, destination: &Destination) -> Result<Sender, UpstreamError> {
        if !destination.https {
            // Credentials only ever travel over HTTPS: the relay opens no
            // connection for anything else.
            return Err(UpstreamError::Tls);
        }
        let addrs = self
            .resolve_checked(
                &destination.tenant_name,
                &destination.host,
                destination.port,
            )
            .await?;
        let mut tcp = None;
        for addr in &addrs {
            if let Ok(stream) = TcpStream::connect(addr).await {
                tcp = Some(stream);
                break;
            }
        }
        let tcp = tcp.ok_or(UpstreamError::Unreachable)?;
        let _ = tcp.set_nodelay(true);
        let name = match destination.host.parse::<IpAddr>() {
            Ok(ip) => ServerName::IpAddress(ip.into()),
            Err(_) => {
                ServerName::try_from(destination.host.clone()).map_err(|_| UpstreamError::Tls)?
            }
        };
        let tls = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(|_| UpstreamError::Tls)?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        if h2 {
            let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .map_err(|_| UpstreamError::Unreachable)?;
            tokio::spawn(conn);
            self.h2
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(destination.clone(), sender.clone());
            Ok(Sender::H2(sender))
        } else {
            let (sender, conn) = http1::handshake(TokioIo::new(tls))
                .await
                .map_err(|_| UpstreamError::Unreachable)?;
            tokio::spawn(conn);
            Ok(Sender::H1(sender))
        }
    }

    /// How long the destination has to answer.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

impl Destination {
    /// The destination of a parsed target, for `tenant`.
    pub fn of(
        tenant: &strongroom_core::tenant::Tenant,
        target: &strongroom_core::net::RequestTarget,
    ) -> Self {
        Self {
            tenant: tenant.id,
            tenant_name: tenant.name.to_string(),
            https: target.scheme == Scheme::Https,
            host: target.host.clone(),
            port: target.port,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A plain-HTTP destination is refused before any connection is
    /// opened, even one allowed internal.
    #[tokio::test]
    async fn plain_http_is_refused_before_connecting() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let config = RelayConfig {
            allow_internal: AllowList::parse([format!("127.0.0.1:{port}").as_str()]).unwrap(),
            ..RelayConfig::default()
        };
        let upstream = Upstream::new(&config).unwrap();
        let destination = Destination {
            tenant: strongroom_core::ids::TenantId::generate(),
            tenant_name: "acme".into(),
            https: false,
            host: "127.0.0.1".into(),
            port,
        };
        assert_eq!(
            upstream.connection(&destination).await.err(),
            Some(UpstreamError::Tls)
        );
        let accepted = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
        assert!(accepted.is_err(), "a connection was opened");
    }
}
