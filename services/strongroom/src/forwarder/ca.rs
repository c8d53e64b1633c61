//! The per-run certificate authority: generated in memory when `run`
//! starts, it signs a leaf certificate for each host the child opens a
//! tunnel to, so the forwarder can see the requests inside. Its private key
//! exists only in this process's memory (never written anywhere) and dies
//! with the run; only its certificate is written, into the CA bundle the
//! child is pointed at.
//!
//! Its certificates are valid for [`VALIDITY`] (24 hours, from an hour
//! before the run started, for clock skew); a run that lasts longer needs
//! a restart. The CA carries no name constraints: the forwarder terminates
//! every tunnel the child opens, to any host, so there is no set of names
//! to permit; what bounds it is that its key never leaves this process and
//! the child is the only one pointed at it. At most [`MAX_CACHED_HOSTS`]
//! hosts' configurations are kept; beyond, one is dropped (and minted again
//! if needed).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Certificates are valid from shortly before the run started (clock skew)
/// for this long: a run outliving it needs a restart.
const VALIDITY: Duration = Duration::from_secs(24 * 3600);

/// Hosts whose TLS configurations are kept.
const MAX_CACHED_HOSTS: usize = 256;

/// The per-run CA and the TLS configurations of the hosts it has minted
/// certificates for.
pub(crate) struct RunCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    servers: Mutex<HashMap<String, Arc<ServerConfig>>>,
}

impl std::fmt::Debug for RunCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunCa").finish_non_exhaustive()
    }
}

fn window() -> (SystemTime, SystemTime) {
    let now = SystemTime::now();
    (now - Duration::from_secs(3600), now + VALIDITY)
}

impl RunCa {
    /// A fresh CA, its key in memory only.
    pub(crate) fn generate() -> Result<Self, rcgen::Error> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "strongroom run (this run only)");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let (not_before, not_after) = window();
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
            servers: Mutex::new(HashMap::new()),
        })
    }

    /// The CA certificate, PEM.
    pub(crate) fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The TLS configuration presenting a certificate for `host` (a DNS
    /// name or an IP address), minted on first use and cached. ALPN offers
    /// HTTP/1.1 only.
    pub(crate) fn server_config(&self, host: &str) -> Result<Arc<ServerConfig>, String> {
        let host = host.to_ascii_lowercase();
        if let Some(config) = self
            .servers
            .lock()
            .map_err(|_| "certificate cache poisoned".to_owned())?
            .get(&host)
        {
            return Ok(Arc::clone(config));
        }
        let config = Arc::new(self.mint(&host).map_err(|e| format!("{host}: {e}"))?);
        let mut servers = self
            .servers
            .lock()
            .map_err(|_| "certificate cache poisoned".to_owned())?;
        if servers.len() >= MAX_CACHED_HOSTS
            && !servers.contains_key(&host)
            && let Some(evicted) = servers.keys().next().cloned()
        {
            servers.remove(&evicted);
        }
        servers.insert(host, Arc::clone(&config));
        Ok(config)
    }

    fn mint(&self, host: &str) -> Result<ServerConfig, Box<dyn std::error::Error>> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![host.to_owned()])?;
        params.distinguished_name.push(DnType::CommonName, host);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let (not_before, not_after) = window();
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        let cert = params.signed_by(&key, &self.issuer)?;
        let chain = vec![cert.der().clone(), self.cert_der.clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mints_and_caches_per_host() {
        let ca = RunCa::generate().unwrap_or_else(|e| panic!("{e}"));
        assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(!ca.cert_pem().contains("PRIVATE KEY"));
        let a = ca
            .server_config("api.example.test")
            .unwrap_or_else(|e| panic!("{e}"));
        let b = ca
            .server_config("API.example.test")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(Arc::ptr_eq(&a, &b));
        let c = ca
            .server_config("127.0.0.1")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!Arc::ptr_eq(&a, &c));
    }

    #[test]
    fn certificates_last_a_day_at_most() {
        let (not_before, not_after) = window();
        let span = not_after
            .duration_since(not_before)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(span <= Duration::from_secs(25 * 3600), "{span:?}");
    }

    #[test]
    fn the_host_cache_is_bounded() {
        let ca = RunCa::generate().unwrap_or_else(|e| panic!("{e}"));
        for i in 0..MAX_CACHED_HOSTS + 8 {
            ca.server_config(&format!("h{i}.example.test"))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let cached = ca.servers.lock().map(|s| s.len()).unwrap_or_default();
        assert_eq!(cached, MAX_CACHED_HOSTS);
    }
}
