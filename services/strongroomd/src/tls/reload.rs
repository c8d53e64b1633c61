//! TLS files reloaded while the server runs: the server certificate and
//! key, the client CA bundle and the CRLs, each checked every
//! `tls.crl_reload_ms` and loaded when its contents changed (cert-manager
//! and Kubernetes replace them, often by swapping a symlink). New
//! connections use what was loaded; a file that cannot be used (unreadable,
//! not PEM, a key that is not the certificate's, a bundle without a CA, a
//! CRL file dropping an issuer, holding two CRLs of one issuer, a CRL not
//! signed by its CA or older than the one in force) is refused with a log
//! line and what is in force stays. The reloader starts from the contents
//! start-up parsed, so a file replaced between start-up and the first check
//! is loaded then. Every check also warns of each CRL in force whose
//! nextUpdate has passed.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::sync::watch;

use super::{ClientTrust, TlsError, certified_key, read_server_cert, warn_key_mode};
use crate::config::TlsPaths;

/// The server certificate in force, replaceable while the server runs.
pub struct ServerCert {
    provider: Arc<rustls::crypto::CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    /// The certificate's and key's contents as parsed at start-up, until
    /// the reloader takes them as the contents it has seen.
    loaded: Mutex<Option<Vec<Vec<u8>>>>,
}

impl std::fmt::Debug for ServerCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerCert").finish_non_exhaustive()
    }
}

impl ServerCert {
    /// Loads the certificate chain and key of `paths`; the key must be the
    /// certificate's. Warns when the key file is readable by every user.
    pub fn load(paths: &TlsPaths, trust: &ClientTrust) -> Result<Arc<ServerCert>, TlsError> {
        let (cert, key) = read_server_cert(paths)?;
        warn_key_mode(&paths.key);
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
            loaded: Mutex::new(Some(vec![cert, key])),
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
    // What start-up parsed counts as seen (not the files as they are now:
    // one replaced since start-up is loaded on the first tick).
    let server_loaded = server
        .loaded
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    let (ca_loaded, crl_loaded) = trust.take_loaded().unzip();
    let mut cert = Watched::new(vec![paths.cert.clone(), paths.key.clone()], server_loaded);
    let mut cas = Watched::new(vec![paths.client_ca.clone()], ca_loaded.map(|b| vec![b]));
    let crl_loaded = crl_loaded.flatten();
    let mut crl = paths
        .crl
        .clone()
        .map(|path| Watched::new(vec![path], crl_loaded.map(|b| vec![b])));
    let key_path = paths.key.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                _ = stopping.changed() => return,
            }
            if let Some(files) = cert.changed("server certificate or key").await {
                match server.reload(&files[0], &files[1]) {
                    Ok(()) => {
                        tracing::info!(path = %cert.path(), "server certificate loaded");
                        warn_key_mode(&key_path);
                    }
                    Err(e) => {
                        tracing::warn!(path = %cert.path(), error = %e, "server certificate refused; the one in force stays")
                    }
                }
            }
            if let Some(files) = cas.changed("client CA bundle").await {
                match trust.reload_cas(&files[0]) {
                    Ok(count) => {
                        tracing::info!(path = %cas.path(), cas = count, "client CA bundle loaded");
                        trust.warn_coverage();
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
                    Ok(crls) => {
                        tracing::info!(path = %crl.path(), crls, "client CRLs loaded");
                        trust.warn_coverage();
                    }
                    Err(e) => {
                        tracing::warn!(path = %crl.path(), error = %e, "client CRL file refused; the CRLs in force stay")
                    }
                }
            }
            if let Some(crl) = &crl {
                for issuer in trust.stale_crls(unix_now()) {
                    tracing::warn!(
                        path = %crl.path(),
                        issuer,
                        "the client CRL of this issuer is past its nextUpdate: revocations since are not known; publish a new CRL"
                    );
                }
            }
        }
    });
}

/// Seconds since the epoch.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    use std::time::Duration;

    fn ca_pem(name: &str) -> String {
        let key = KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params
            .self_signed(&key)
            .unwrap_or_else(|e| panic!("{e}"))
            .pem()
    }

    /// A file replaced between start-up's load and the reloader's start is
    /// loaded on the first check: the reloader starts from the bytes
    /// start-up parsed, not from the file as it is when it starts.
    #[tokio::test]
    async fn a_file_replaced_before_the_reloader_starts_is_loaded() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let key = KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        let cert = CertificateParams::new(vec!["localhost".into()])
            .and_then(|p| p.self_signed(&key))
            .unwrap_or_else(|e| panic!("{e}"));
        let write = |name: &str, contents: &str| {
            std::fs::write(dir.path().join(name), contents).unwrap_or_else(|e| panic!("{e}"));
        };
        write("server.pem", &cert.pem());
        write("server-key.pem", &key.serialize_pem());
        write("ca.pem", &ca_pem("CA one"));
        let paths = TlsPaths {
            cert: dir.path().join("server.pem"),
            key: dir.path().join("server-key.pem"),
            client_ca: dir.path().join("ca.pem"),
            crl: None,
            crl_reload: Duration::from_millis(100),
        };
        let trust = ClientTrust::load(&paths).unwrap_or_else(|e| panic!("{e}"));
        let server = ServerCert::load(&paths, &trust).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(trust.generation(), 0);

        // Rotated after start-up read it, before the reloader began.
        write("ca.pem", &ca_pem("CA two"));
        let (_stop, stopping) = watch::channel(false);
        spawn_reloader(&paths, &server, &trust, stopping);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while trust.generation() == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the bundle replaced before the reloader started was never loaded"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(trust.cas_without_crl().contains(&"CN=CA two".to_owned()));
    }
}
