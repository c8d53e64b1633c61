//! Connections the forwarder opens itself, for requests that need no
//! credential: TLS verified against the system roots (plus an optional
//! bundle), with optional static name resolution.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::Error;
use crate::cli::Resolve;

/// How long connecting to an upstream may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the system's trusted roots are, in order of preference after
/// `SSL_CERT_FILE`.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
    "/usr/local/etc/openssl/cert.pem",
];

/// The system's trusted roots as PEM text: the file `SSL_CERT_FILE` names
/// in this process's environment, else the first of the usual bundle
/// locations that exists.
pub(crate) fn system_roots_pem() -> Result<(PathBuf, String), Error> {
    let candidates = std::env::var_os("SSL_CERT_FILE")
        .map(PathBuf::from)
        .into_iter()
        .chain(SYSTEM_BUNDLES.iter().map(PathBuf::from));
    for path in candidates {
        if let Ok(text) = std::fs::read_to_string(&path) {
            return Ok((path, text));
        }
    }
    Err(Error::Forwarder(
        "no system CA bundle found (set SSL_CERT_FILE to one)".into(),
    ))
}

fn add_pem(roots: &mut RootCertStore, path: &Path, pem: &[u8]) -> Result<usize, Error> {
    let mut added = 0;
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| Error::Usage(format!("{}: {e}", path.display())))?;
        // A bundle may hold certificates webpki cannot use as anchors;
        // they are skipped, as other TLS stacks do.
        if roots.add(cert).is_ok() {
            added += 1;
        }
    }
    Ok(added)
}

/// Opens upstream connections for the forwarder's own pass-through.
#[derive(Clone)]
pub(crate) struct Upstream {
    tls: TlsConnector,
    resolve: Arc<HashMap<(String, u16), SocketAddr>>,
}

impl Upstream {
    /// Trusts the system roots (`system_pem`, read from `system_path`) and
    /// the certificates in `extra_ca`; connects to the addresses `resolve`
    /// names instead of resolving those names.
    pub(crate) fn new(
        system_path: &Path,
        system_pem: &str,
        extra_ca: Option<&Path>,
        resolve: &[Resolve],
    ) -> Result<Self, Error> {
        let mut roots = RootCertStore::empty();
        add_pem(&mut roots, system_path, system_pem.as_bytes())?;
        if let Some(path) = extra_ca {
            let pem = std::fs::read(path).map_err(|error| Error::File {
                path: path.to_path_buf(),
                error,
            })?;
            if add_pem(&mut roots, path, &pem)? == 0 {
                return Err(Error::Usage(format!(
                    "{}: no certificate in the upstream CA bundle",
                    path.display()
                )));
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Forwarder(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let resolve = resolve
            .iter()
            .map(|r| ((r.host.clone(), r.port), r.addr))
            .collect();
        Ok(Self {
            tls: TlsConnector::from(Arc::new(config)),
            resolve: Arc::new(resolve),
        })
    }

    /// A TCP connection to `host:port` (through the static resolution if it
    /// names it).
    pub(crate) async fn connect_tcp(&self, host: &str, port: u16) -> std::io::Result<TcpStream> {
        let key = (host.to_ascii_lowercase(), port);
        let connect = async {
            match self.resolve.get(&key) {
                Some(addr) => TcpStream::connect(addr).await,
                None => TcpStream::connect((host, port)).await,
            }
        };
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
            })??;
        tcp.set_nodelay(true)?;
        Ok(tcp)
    }

    /// A TLS connection to `host:port`, the server's certificate verified
    /// for `host`.
    pub(crate) async fn connect_tls(
        &self,
        host: &str,
        port: u16,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let tcp = self.connect_tcp(host, port).await?;
        tokio::time::timeout(CONNECT_TIMEOUT, self.tls.connect(name, tcp))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out")
            })?
    }
}
