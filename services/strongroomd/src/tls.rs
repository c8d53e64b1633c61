//! Mutual TLS: the server's rustls configuration (client certificates
//! required, verified against the configured CA bundle, expiry included) and
//! the identity a verified client certificate carries.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use strongroom_proto::coalesce::Coalescing;

use crate::config::TlsPaths;

/// A TLS set-up problem, naming the file.
#[derive(Debug, thiserror::Error)]
#[error("TLS: {0}")]
pub struct TlsError(String);

fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsError(format!("cannot read {what} {}: {e}", path.display())))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError(format!("{what} {} is not valid PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsError(format!(
            "{what} {} holds no certificate",
            path.display()
        )));
    }
    Ok(certs)
}

/// Builds the server configuration: TLS 1.2 and 1.3, ALPN h2, and a client
/// certificate required from every peer, chaining to `paths.client_ca`.
pub fn server_config(paths: &TlsPaths) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for ca in read_certs(&paths.client_ca, "client CA bundle")? {
        roots.add(ca).map_err(|e| {
            TlsError(format!(
                "client CA bundle {}: {e}",
                paths.client_ca.display()
            ))
        })?;
    }
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
            .build()
            .map_err(|e| TlsError(format!("client verifier: {e}")))?;
    let certs = read_certs(&paths.cert, "server certificate")?;
    let key = PrivateKeyDer::from_pem_file(&paths.key).map_err(|e| {
        TlsError(format!(
            "cannot read server key {}: {e}",
            paths.key.display()
        ))
    })?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| TlsError(format!("server certificate and key: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// The identity of a (verified) client certificate: its SPIFFE ID (a
/// `spiffe://` URI SAN), else its subject common name.
pub fn identity_of(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let mut spiffe = None;
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::URI(uri) = name
                && uri.starts_with("spiffe://")
            {
                if spiffe.is_some() {
                    // A SPIFFE certificate names exactly one workload.
                    return None;
                }
                spiffe = Some((*uri).to_owned());
            }
        }
    }
    if spiffe.is_some() {
        return spiffe;
    }
    // A common name that looks like a SPIFFE ID is refused: only a URI SAN
    // may claim one.
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .filter(|cn| !cn.is_empty() && !cn.starts_with("spiffe://"))
        .map(str::to_owned)
}

/// What a client connection proved in its handshake, worked out once per
/// connection and handed to every call on it.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// The client's address.
    pub addr: std::net::SocketAddr,
    /// The identity of its verified certificate (see [`identity_of`]), if it
    /// carries a usable one.
    pub identity: Option<Arc<str>>,
}

/// A client connection after a completed mutual-TLS handshake. Its writes
/// are coalesced ([`Coalescing`]): the responses that a commit completes
/// together leave in one TLS write and one system call instead of one each.
pub struct PeerStream {
    io: Coalescing<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>,
    info: PeerInfo,
}

impl PeerStream {
    /// Wraps an accepted connection, reading its identity from the client
    /// certificate the handshake verified.
    pub fn new(
        tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
        addr: std::net::SocketAddr,
    ) -> Self {
        let identity = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|certs| certs.first())
            .and_then(|c| identity_of(c.as_ref()))
            .map(Arc::from);
        Self {
            io: Coalescing::new(tls),
            info: PeerInfo { addr, identity },
        }
    }
}

impl tonic::transport::server::Connected for PeerStream {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl tokio::io::AsyncRead for PeerStream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for PeerStream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
