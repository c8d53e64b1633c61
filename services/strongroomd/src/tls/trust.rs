//! Which client certificates are trusted: the CA bundle and the CRLs,
//! reloaded when their files change, and the verdict for one certificate.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore};

use crate::config::TlsPaths;

use super::{TlsError, read_certs};

/// Reads a CRL file: PEM holding one or more `X509 CRL` blocks, or one DER
/// CRL.
fn parse_crl_file(bytes: &[u8]) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    let pem = bytes.windows(11).any(|w| w == b"-----BEGIN ");
    if !pem {
        if bytes.is_empty() {
            return Err("the file is empty".into());
        }
        return Ok(vec![CertificateRevocationListDer::from(bytes.to_vec())]);
    }
    let crls = CertificateRevocationListDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not valid PEM: {e}"))?;
    if crls.is_empty() {
        return Err("holds no X509 CRL block".into());
    }
    Ok(crls)
}

/// The issuer (DER-encoded name) of each CRL.
fn crl_issuers(crls: &[CertificateRevocationListDer<'_>]) -> Result<Vec<Vec<u8>>, String> {
    crls.iter()
        .enumerate()
        .map(|(i, crl)| {
            x509_parser::parse_x509_crl(crl.as_ref())
                .map(|(_, crl)| crl.issuer().as_raw().to_vec())
                .map_err(|e| format!("CRL {} is not a valid CRL: {e}", i + 1))
        })
        .collect()
}

/// A distinguished name for the log.
fn display_name(der: &[u8]) -> String {
    use x509_parser::prelude::FromDer;
    x509_parser::x509::X509Name::from_der(der)
        .map_or_else(|_| hex::encode(der), |(_, name)| name.to_string())
}

/// The client-certificate trust in force: the CA bundle, the CRLs, the
/// verifier built from them, its generation (bumped on every reload) and
/// the issuers its CRLs cover.
struct Current {
    generation: u64,
    verifier: Arc<dyn ClientCertVerifier>,
    roots: Arc<RootCertStore>,
    /// The subject (DER-encoded name) of each CA of the client CA bundle.
    ca_subjects: Vec<Vec<u8>>,
    crls: Vec<CertificateRevocationListDer<'static>>,
    issuers: Vec<Vec<u8>>,
}

/// Client-certificate trust: the CA bundle and the CRLs currently in force.
///
/// It is the server's [`ClientCertVerifier`] (each handshake is verified by
/// rustls' WebPKI verifier with the current CA bundle and CRLs, the whole
/// chain checked, a certificate whose issuer has no CRL accepted), and both
/// can be replaced while the server runs ([`ClientTrust::reload`] for the
/// CRLs, [`ClientTrust::reload_cas`] for the CA bundle); a CRL reload that
/// would leave an issuer covered until now without a CRL is refused, and so
/// is a bundle with no CA. Every reload bumps a generation number; a
/// connection remembers the generation its certificate was last verified
/// under and is verified again, once, on its first call after a reload
/// ([`PeerCert::check`]): a client whose CA left the bundle loses its
/// connections at their next call.
///
/// Since the bundle can change, the server sends no CA names in its
/// certificate request (clients present their certificate regardless).
pub struct ClientTrust {
    pub(super) provider: Arc<CryptoProvider>,
    pub(super) crl_path: Option<PathBuf>,
    /// The CRL file's contents as loaded at start-up.
    pub(super) crl_loaded: Option<Vec<u8>>,
    /// The generation of `current`, readable without the lock.
    generation: AtomicU64,
    current: RwLock<Current>,
}

impl std::fmt::Debug for ClientTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTrust")
            .field("crl", &self.crl_path)
            .field("generation", &self.generation.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl ClientTrust {
    /// Loads the client CA bundle and, if configured, the CRL file (which must
    /// then be readable and valid).
    pub fn load(paths: &TlsPaths) -> Result<Arc<ClientTrust>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let (roots, ca_subjects) = ca_bundle(read_certs(&paths.client_ca, "client CA bundle")?)
            .map_err(|e| {
                TlsError(format!(
                    "client CA bundle {}: {e}",
                    paths.client_ca.display()
                ))
            })?;
        let (crls, crl_loaded) = match &paths.crl {
            None => (Vec::new(), None),
            Some(path) => {
                let bytes = std::fs::read(path).map_err(|e| {
                    TlsError(format!(
                        "cannot read client CRL file {}: {e}",
                        path.display()
                    ))
                })?;
                let crls = parse_crl_file(&bytes)
                    .map_err(|e| TlsError(format!("client CRL file {}: {e}", path.display())))?;
                (crls, Some(bytes))
            }
        };
        let count = crls.len();
        let issuers = crl_issuers(&crls).map_err(|e| {
            TlsError(format!(
                "client CRL file {}: {e}",
                paths.crl.as_deref().unwrap_or(Path::new("")).display()
            ))
        })?;
        let verifier = build_verifier(&roots, &provider, crls.clone())
            .map_err(|e| TlsError(format!("client verifier: {e}")))?;
        let trust = Arc::new(ClientTrust {
            provider,
            crl_path: paths.crl.clone(),
            crl_loaded,
            generation: AtomicU64::new(0),
            current: RwLock::new(Current {
                generation: 0,
                verifier,
                roots,
                ca_subjects,
                crls,
                issuers,
            }),
        });
        if let Some(path) = &paths.crl {
            tracing::info!(path = %path.display(), crls = count, "client CRLs loaded");
            for ca in trust.cas_without_crl() {
                tracing::warn!(
                    path = %path.display(),
                    ca,
                    "client CA has no CRL in the CRL file: the certificates it issued cannot be revoked"
                );
            }
        }
        Ok(trust)
    }

    /// The CAs of the client CA bundle that no CRL in force covers (their
    /// certificates are accepted without a revocation check).
    pub fn cas_without_crl(&self) -> Vec<String> {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        current
            .ca_subjects
            .iter()
            .filter(|subject| !current.issuers.contains(subject))
            .map(|subject| display_name(subject))
            .collect()
    }

    /// The generation of the CRLs in force.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub(super) fn current(&self) -> (u64, Arc<dyn ClientCertVerifier>) {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        (current.generation, Arc::clone(&current.verifier))
    }

    /// Replaces the CRLs with the ones in `bytes` (a CRL file's contents);
    /// on error the CRLs in force stay. Returns how many CRLs were loaded.
    ///
    /// A file that holds no CRL for an issuer the CRLs in force cover is
    /// refused: it is more likely a file caught while being rewritten than
    /// an issuer whose revocations should all be forgotten (dropping an
    /// issuer takes a restart).
    pub fn reload(&self, bytes: &[u8]) -> Result<usize, String> {
        let crls = parse_crl_file(bytes)?;
        let count = crls.len();
        let issuers = crl_issuers(&crls)?;
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        if let Some(dropped) = current.issuers.iter().find(|i| !issuers.contains(i)) {
            return Err(format!(
                "it holds no CRL of {}, which the CRLs in force cover (restart the server to stop checking an issuer's revocations)",
                display_name(dropped)
            ));
        }
        let verifier = build_verifier(&current.roots, &self.provider, crls.clone())
            .map_err(|e| e.to_string())?;
        current.generation += 1;
        current.verifier = verifier;
        current.crls = crls;
        current.issuers = issuers;
        self.generation.store(current.generation, Ordering::Release);
        Ok(count)
    }

    /// Replaces the client CA bundle with the one in `bytes` (a PEM file's
    /// contents), keeping the CRLs in force; on error (not PEM, no
    /// certificate, a certificate that is no CA) the bundle in force stays.
    /// Returns how many CAs were loaded.
    pub fn reload_cas(&self, bytes: &[u8]) -> Result<usize, String> {
        let certs = CertificateDer::pem_slice_iter(bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("not valid PEM: {e}"))?;
        if certs.is_empty() {
            return Err("holds no certificate".into());
        }
        let count = certs.len();
        let (roots, ca_subjects) = ca_bundle(certs)?;
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        let verifier = build_verifier(&roots, &self.provider, current.crls.clone())
            .map_err(|e| e.to_string())?;
        current.generation += 1;
        current.verifier = verifier;
        current.roots = roots;
        current.ca_subjects = ca_subjects;
        self.generation.store(current.generation, Ordering::Release);
        Ok(count)
    }
}

/// The trust anchors of a CA bundle and the subject of each; every
/// certificate must parse and be usable as a trust anchor.
fn ca_bundle(
    certs: Vec<CertificateDer<'static>>,
) -> Result<(Arc<RootCertStore>, Vec<Vec<u8>>), String> {
    let mut roots = RootCertStore::empty();
    let mut subjects = Vec::new();
    for (i, ca) in certs.into_iter().enumerate() {
        let (_, parsed) = x509_parser::parse_x509_certificate(ca.as_ref())
            .map_err(|e| format!("certificate {} is not a valid certificate: {e}", i + 1))?;
        if !parsed.is_ca() {
            return Err(format!("certificate {} is not a CA certificate", i + 1));
        }
        subjects.push(parsed.subject().as_raw().to_vec());
        roots
            .add(ca)
            .map_err(|e| format!("certificate {}: {e}", i + 1))?;
    }
    Ok((Arc::new(roots), subjects))
}

fn build_verifier(
    roots: &Arc<RootCertStore>,
    provider: &Arc<CryptoProvider>,
    crls: Vec<CertificateRevocationListDer<'static>>,
) -> Result<Arc<dyn ClientCertVerifier>, rustls::server::VerifierBuilderError> {
    let mut builder =
        WebPkiClientVerifier::builder_with_provider(Arc::clone(roots), Arc::clone(provider));
    if !crls.is_empty() {
        // Every certificate of the chain is checked against the CRL of its
        // issuer; a CA that publishes no CRL leaves its certificates valid.
        builder = builder.with_crls(crls).allow_unknown_revocation_status();
    }
    builder.build()
}

impl ClientCertVerifier for ClientTrust {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // The bundle can change: no hints (see the type's documentation).
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.current()
            .1
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Why a certificate that passed its handshake no longer authenticates calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertRefusal {
    /// Its notAfter has passed.
    Expired,
    /// A CRL loaded since revokes it (or no longer lets its chain verify).
    Revoked,
    /// The connection has no certificate that could be read, so its
    /// validity cannot be checked.
    Unreadable,
}

impl CertRefusal {
    /// The message a refused call gets.
    pub fn message(self) -> &'static str {
        match self {
            CertRefusal::Expired => "the client certificate has expired",
            CertRefusal::Revoked => "the client certificate has been revoked",
            CertRefusal::Unreadable => "the client certificate could not be read",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::peer::{PeerCert, UNVERIFIED};
    use rcgen::{
        BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
        ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
        RevokedCertParams, SerialNumber,
    };
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    struct Ca {
        issuer: Issuer<'static, KeyPair>,
        pem: String,
    }

    fn ca() -> Ca {
        ca_named("test CA")
    }

    fn ca_named(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).unwrap_or_else(|e| panic!("{e}"));
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    fn client(ca: &Ca, serial: u64) -> CertificateDer<'static> {
        let key = KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, "worker");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.serial_number = Some(SerialNumber::from(serial));
        params
            .signed_by(&key, &ca.issuer)
            .unwrap_or_else(|e| panic!("{e}"))
            .der()
            .clone()
    }

    fn crl(ca: &Ca, revoked: &[u64]) -> rcgen::CertificateRevocationList {
        let now = SystemTime::now();
        CertificateRevocationListParams {
            this_update: (now - Duration::from_secs(60)).into(),
            next_update: (now + Duration::from_secs(3600)).into(),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from(*s),
                    revocation_time: now.into(),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&ca.issuer)
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn trust(ca: &Ca, crl_pem: &str) -> (tempfile::TempDir, Arc<ClientTrust>) {
        trust_of(&[ca], crl_pem)
    }

    fn trust_of(cas: &[&Ca], crl_pem: &str) -> (tempfile::TempDir, Arc<ClientTrust>) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let bundle: String = cas.iter().map(|ca| ca.pem.as_str()).collect();
        std::fs::write(dir.path().join("ca.pem"), bundle).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.path().join("crl.pem"), crl_pem).unwrap_or_else(|e| panic!("{e}"));
        let paths = TlsPaths {
            cert: dir.path().join("unused"),
            key: dir.path().join("unused"),
            client_ca: dir.path().join("ca.pem"),
            crl: Some(dir.path().join("crl.pem")),
            crl_reload: Duration::from_secs(1),
        };
        let trust = ClientTrust::load(&paths).unwrap_or_else(|e| panic!("{e}"));
        (dir, trust)
    }

    fn peer(trust: &Arc<ClientTrust>, cert: CertificateDer<'static>, not_after: i64) -> PeerCert {
        PeerCert {
            chain: vec![cert].into_boxed_slice(),
            not_after,
            verdict: AtomicU64::new(UNVERIFIED),
            trust: Arc::clone(trust),
        }
    }

    const FAR: i64 = i64::MAX;

    #[test]
    fn crl_files_pem_several_or_der_one() {
        let a = ca();
        let two = format!(
            "{}{}",
            crl(&a, &[1]).pem().unwrap_or_default(),
            crl(&a, &[2]).pem().unwrap_or_default()
        );
        assert_eq!(parse_crl_file(two.as_bytes()).map(|c| c.len()), Ok(2));
        assert_eq!(
            parse_crl_file(crl(&a, &[1]).der().as_ref()).map(|c| c.len()),
            Ok(1)
        );
        assert!(parse_crl_file(b"").is_err());
        assert!(
            parse_crl_file(b"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n").is_err()
        );
    }

    #[test]
    fn revocation_is_checked_per_call_after_a_reload() {
        let a = ca();
        let (_dir, trust) = trust(&a, &crl(&a, &[]).pem().unwrap_or_default());
        let revoked = peer(&trust, client(&a, 7), FAR);
        let kept = peer(&trust, client(&a, 8), FAR);
        assert_eq!(revoked.check(), Ok(()));
        assert_eq!(kept.check(), Ok(()));

        assert_eq!(trust.reload(crl(&a, &[7]).der().as_ref()), Ok(1));
        assert_eq!(revoked.check(), Err(CertRefusal::Revoked));
        assert_eq!(kept.check(), Ok(()));
        // The verdict is kept until the next reload.
        assert_eq!(
            revoked.verdict.load(Ordering::Relaxed),
            trust.generation() * 2
        );

        // A bad file leaves the CRLs in force.
        let generation = trust.generation();
        assert!(trust.reload(b"not a CRL").is_err());
        assert_eq!(trust.generation(), generation);
        assert_eq!(revoked.check(), Err(CertRefusal::Revoked));

        // A CRL without it: valid again.
        assert_eq!(
            trust.reload(crl(&a, &[]).pem().unwrap_or_default().as_bytes()),
            Ok(1)
        );
        assert_eq!(revoked.check(), Ok(()));
    }

    #[test]
    fn expiry_is_checked_per_call() {
        let a = ca();
        let (_dir, trust) = trust(&a, &crl(&a, &[]).pem().unwrap_or_default());
        let now = i64::try_from(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs(),
        )
        .unwrap_or(0);
        let cert = client(&a, 9);
        let valid = peer(&trust, cert.clone(), now + 60);
        valid.verdict.store(1, Ordering::Relaxed);
        assert_eq!(valid.check(), Ok(()));
        let expired = peer(&trust, cert, now - 1);
        expired.verdict.store(1, Ordering::Relaxed);
        assert_eq!(expired.check(), Err(CertRefusal::Expired));
    }

    fn pem(crl: &rcgen::CertificateRevocationList) -> String {
        crl.pem().unwrap_or_default()
    }

    #[test]
    fn a_reload_that_drops_an_issuer_is_refused() {
        let a = ca_named("CA a");
        let b = ca_named("CA b");
        let (_dir, trust) = trust_of(&[&a, &b], &(pem(&crl(&a, &[])) + &pem(&crl(&b, &[5]))));
        let revoked = peer(&trust, client(&b, 5), FAR);
        assert_eq!(revoked.check(), Err(CertRefusal::Revoked));

        // A multi-CRL file caught half rewritten: only a's CRL is left.
        let generation = trust.generation();
        let refused = trust.reload(pem(&crl(&a, &[])).as_bytes());
        assert!(
            refused.as_ref().is_err_and(|e| e.contains("CA b")),
            "{refused:?}"
        );
        assert_eq!(trust.generation(), generation, "the CRLs in force stay");
        assert_eq!(revoked.check(), Err(CertRefusal::Revoked));

        // Both issuers still covered (in another order, one more CRL): fine.
        assert_eq!(
            trust.reload(
                (pem(&crl(&b, &[])) + &pem(&crl(&a, &[])) + &pem(&crl(&a, &[1]))).as_bytes()
            ),
            Ok(3)
        );
        assert_eq!(revoked.check(), Ok(()));
    }

    #[test]
    fn cas_without_a_crl_are_reported() {
        let a = ca_named("CA a");
        let b = ca_named("CA b");
        let (_dir, trust) = trust_of(&[&a, &b], &pem(&crl(&a, &[])));
        assert_eq!(trust.cas_without_crl(), vec!["CN=CA b".to_owned()]);
        // Once b publishes a CRL, every CA is covered.
        assert_eq!(
            trust.reload((pem(&crl(&a, &[])) + &pem(&crl(&b, &[]))).as_bytes()),
            Ok(2)
        );
        assert!(trust.cas_without_crl().is_empty());
    }
}
