//! Mutual TLS: the server's rustls configuration (client certificates
//! required, verified against the configured CA bundle and CRLs, expiry
//! included), the identity a verified client certificate carries, and the
//! per-call check that the certificate is still valid: not expired since the
//! handshake, not revoked by a CRL loaded since.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;

use crate::config::TlsPaths;

mod peer;
mod trust;

pub use peer::{PeerCert, PeerInfo, PeerStream, identity_of};
pub use trust::{CertRefusal, ClientTrust};

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
/// certificate required from every peer, verified by `trust` (see
/// [`ClientTrust::load`]).
pub fn server_config(paths: &TlsPaths, trust: &Arc<ClientTrust>) -> Result<ServerConfig, TlsError> {
    let provider = Arc::clone(&trust.provider);
    let verifier: Arc<dyn ClientCertVerifier> = trust.clone();
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
