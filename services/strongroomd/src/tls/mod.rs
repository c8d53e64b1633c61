//! Mutual TLS: the server's rustls configuration (client certificates
//! required, verified against the configured CA bundle and CRLs, expiry
//! included), the identity a verified client certificate carries, and the
//! per-call check that the certificate is still valid: not expired since the
//! handshake, not revoked by a CRL loaded since. The server certificate and
//! key, the client CA bundle and the CRLs are reloaded while the server
//! runs when their files change (`reload.rs`).

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;

use crate::config::TlsPaths;

mod peer;
mod reload;
mod trust;

pub use peer::{PeerCert, PeerInfo, PeerStream, identity_of};
pub use reload::{ServerCert, spawn_reloader, unix_now};
pub use trust::{CertRefusal, ClientTrust};

/// A TLS set-up problem, naming the file.
#[derive(Debug, thiserror::Error)]
#[error("TLS: {0}")]
pub struct TlsError(String);

/// Reads a PEM file of certificates: its contents (as parsed, for the
/// reloader to compare later contents with) and the certificates.
fn read_certs(
    path: &Path,
    what: &str,
) -> Result<(Vec<u8>, Vec<CertificateDer<'static>>), TlsError> {
    let bytes = std::fs::read(path)
        .map_err(|e| TlsError(format!("cannot read {what} {}: {e}", path.display())))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError(format!("{what} {} is not valid PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsError(format!(
            "{what} {} holds no certificate",
            path.display()
        )));
    }
    Ok((bytes, certs))
}

/// Builds the server configuration: TLS 1.2 and 1.3, ALPN h2, the server
/// certificate of `server` (replaceable while the server runs), and a
/// client certificate required from every peer, verified by `trust` (see
/// [`ClientTrust::load`]).
pub fn server_config(
    server: &Arc<ServerCert>,
    trust: &Arc<ClientTrust>,
) -> Result<ServerConfig, TlsError> {
    let provider = Arc::clone(&trust.provider);
    let verifier: Arc<dyn ClientCertVerifier> = trust.clone();
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(server.clone());
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Reads the server certificate chain and key of `paths` (see
/// [`ServerCert::load`]).
fn read_server_cert(paths: &TlsPaths) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
    let cert = std::fs::read(&paths.cert).map_err(|e| {
        TlsError(format!(
            "cannot read server certificate {}: {e}",
            paths.cert.display()
        ))
    })?;
    let key = std::fs::read(&paths.key).map_err(|e| {
        TlsError(format!(
            "cannot read server key {}: {e}",
            paths.key.display()
        ))
    })?;
    Ok((cert, key))
}

/// The certified key of a certificate chain and private key, both PEM,
/// refused unless the key is the certificate's.
fn certified_key(
    cert: &[u8],
    key: &[u8],
    provider: &rustls::crypto::CryptoProvider,
) -> Result<rustls::sign::CertifiedKey, String> {
    let certs = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the certificate is not valid PEM: {e}"))?;
    if certs.is_empty() {
        return Err("the certificate file holds no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key)
        .map_err(|e| format!("the key is not a valid PEM private key: {e}"))?;
    rustls::sign::CertifiedKey::from_der(certs, key, provider)
        .map_err(|e| format!("certificate and key: {e}"))
}

/// The permission bits of the server key file when users other than its
/// owner and group may use it (any of the "other" bits set), else `None`.
/// Kubernetes mounts secrets 0644 unless told otherwise; that works, but
/// lets every process of the pod's user namespace read the key.
#[cfg(unix)]
fn key_open_to_everyone(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o7777;
    (mode & 0o007 != 0).then_some(mode)
}

#[cfg(not(unix))]
fn key_open_to_everyone(_path: &Path) -> Option<u32> {
    None
}

/// Warns when the server key file is open to every user (see
/// [`key_open_to_everyone`]): a warning only, the server still starts.
fn warn_key_mode(path: &Path) {
    if let Some(mode) = key_open_to_everyone(path) {
        tracing::warn!(
            path = %path.display(),
            mode = format!("{mode:04o}"),
            "the server key file is readable by every user; restrict it to 0600, 0640 or 0440 (Kubernetes: the secret volume's defaultMode)"
        );
    }
}

#[cfg(all(test, unix))]
mod key_mode_tests {
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn only_keys_open_to_everyone_are_flagged() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let key = dir.path().join("key.pem");
        std::fs::write(&key, "k").unwrap_or_else(|e| panic!("{e}"));
        for (mode, flagged) in [
            (0o600, false),
            (0o640, false),
            (0o440, false),
            (0o400, false),
            (0o644, true),
            (0o604, true),
            (0o666, true),
            (0o602, true),
        ] {
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode))
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                super::key_open_to_everyone(&key),
                flagged.then_some(mode),
                "{mode:o}"
            );
        }
        assert_eq!(
            super::key_open_to_everyone(&dir.path().join("absent")),
            None
        );
    }
}
