//! TLS files reloaded while the server runs: the server certificate and
//! key, the client CA bundle and the CRLs, each checked every
//! `tls.crl_reload_ms` and loaded when its contents changed (cert-manager
//! and Kubernetes replace them, often by swapping a symlink). New
//! connections use what was loaded; a file that cannot be used (unreadable,
//! not PEM, a key that is not the certificate's, a bundle without a CA, a
//! CRL file dropping an issuer) is refused with a log line and what is in
//! force stays.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::sync::watch;

use super::{ClientTrust, TlsError, certified_key, read_server_cert};
use crate::config::TlsPaths;

/// The server certificate in force, replaceable while the server runs.
pub struct ServerCert {
    provider: Arc<rustls::crypto::CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

impl std::fmt::Debug for ServerCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerCert").finish_non_exhaustive()
    }
}

impl ServerCert {
    /// Loads the certificate chain and key of `paths`; the key must be the
    /// certificate's.
    pub fn load(paths: &TlsPaths, trust: &ClientTrust) -> Result<Arc<ServerCert>, TlsError> {
        let (cert, key) = read_server_cert(paths)?;
        let provider = Arc::clone(&trust.provider);
        let loaded = certified_key(&cert, &key, &provider).map_err(|e| {
            TlsError(format!(
                "server certificate {} and key {}: {e}",
                paths.cert.display(),
                paths.key.display()
            ))
        })?;
        Ok(Arc::new(ServerCert {
            provider,
            current: RwLock::new(Arc::new(loaded)),
        }))
    }

    /// Replaces the certificate with `cert` and `key` (PEM); on error the
    /// certificate in force stays.
    pub fn reload(&self, cert: &[u8], key: &[u8]) -> Result<(), String> {
        let loaded = certified_key(cert, key, &self.provider)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(loaded);
        Ok(())
    }
}

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(|e| e.into_inner()),
        ))
    }
}

/// One watched file (or pair of files): the contents last tried, and
/// whether reading it failed last time (logged once per failure spell).
struct Watched {
    paths: Vec<PathBuf>,
    last: Option<Vec<Vec<u8>>>,
    unreadable: bool,
}

impl Watched {
    fn new(paths: Vec<PathBuf>, loaded: Option<Vec<Vec<u8>>>) -> Self {
        Self {
            paths,
            last: loaded,
            unreadable: false,
        }
    }

    /// The files' contents when they changed since the last call.
    async fn changed(&mut self, what: &str) -> Option<Vec<Vec<u8>>> {
        let mut contents = Vec::with_capacity(self.paths.len());
        for path in &self.paths {
            match tokio::fs::read(path).await {
                Ok(bytes) => contents.push(bytes),
                Err(e) => {
                    if !self.unreadable {
                        tracing::warn!(path = %path.display(), error = %e, "cannot read the {what}; the one in force stays");
                    }
                    self.unreadable = true;
                    return None;
                }
            }
        }
        self.unreadable = false;
        if self.last.as_ref() == Some(&contents) {
            return None;
        }
        self.last = Some(contents.clone());
        Some(contents)
    }

    fn path(&self) -> String {
        self.paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Checks the TLS files of `paths` every `tls.crl_reload_ms` and loads
/// those whose contents changed into `server` and `trust`, until `stopping`
/// turns true.
pub fn spawn_reloader(
    paths: &TlsPaths,
    server: &Arc<ServerCert>,
    trust: &Arc<ClientTrust>,
    mut stopping: watch::Receiver<bool>,
) {
    let server = Arc::clone(server);
    let trust = Arc::clone(trust);
    let every = paths.crl_reload;
    // What start-up loaded counts as seen: read again now, the first tick
    // only loads what changed since.
    let initial = |paths: &[&PathBuf]| {
        paths
            .iter()
            .map(|p| std::fs::read(p).ok())
            .collect::<Option<Vec<_>>>()
    };
    let mut cert = Watched::new(
        vec![paths.cert.clone(), paths.key.clone()],
        initial(&[&paths.cert, &paths.key]),
    );
    let mut cas = Watched::new(vec![paths.client_ca.clone()], initial(&[&paths.client_ca]));
    let mut crl = paths.crl.clone().map(|path| {
        Watched::new(
            vec![path],
            trust.crl_loaded.clone().map(|bytes| vec![bytes]),
        )
    });
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                _ = stopping.changed() => return,
            }
            if let Some(files) = cert.changed("server certificate or key").await {
                match server.reload(&files[0], &files[1]) {
                    Ok(()) => tracing::info!(path = %cert.path(), "server certificate loaded"),
                    Err(e) => {
                        tracing::warn!(path = %cert.path(), error = %e, "server certificate refused; the one in force stays")
                    }
                }
            }
            if let Some(files) = cas.changed("client CA bundle").await {
                match trust.reload_cas(&files[0]) {
                    Ok(count) => {
                        tracing::info!(path = %cas.path(), cas = count, "client CA bundle loaded")
                    }
                    Err(e) => {
                        tracing::warn!(path = %cas.path(), error = %e, "client CA bundle refused; the one in force stays")
                    }
                }
            }
            if let Some(crl) = &mut crl
                && let Some(files) = crl.changed("client CRL file").await
            {
                match trust.reload(&files[0]) {
                    Ok(crls) => tracing::info!(path = %crl.path(), crls, "client CRLs loaded"),
                    Err(e) => {
                        tracing::warn!(path = %crl.path(), error = %e, "client CRL file refused; the CRLs in force stay")
                    }
                }
            }
        }
    });
}
