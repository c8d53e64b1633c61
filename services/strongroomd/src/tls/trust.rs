//! Which client certificates are trusted: the CA bundle and the CRLs,
//! reloaded when their files change, and the verdict for one certificate.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore};
use tokio::sync::watch;

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

/// What the server checks of one CRL: its issuer, CRL number, thisUpdate
/// and nextUpdate.
#[derive(Debug, Clone)]
struct CrlFacts {
    /// The issuer, a DER-encoded name.
    issuer: Vec<u8>,
    /// The CRL number, big-endian without leading zeros, if it has one.
    number: Option<Vec<u8>>,
    /// thisUpdate, seconds since the epoch.
    this_update: i64,
    /// nextUpdate, seconds since the epoch, if it has one.
    next_update: Option<i64>,
}

/// The facts of each CRL of a file; refused when two CRLs have the same
/// issuer (the verifier would use only the first of them, so a newer CRL
/// placed second would be ignored).
fn crl_facts(crls: &[CertificateRevocationListDer<'_>]) -> Result<Vec<CrlFacts>, String> {
    let mut facts: Vec<CrlFacts> = Vec::with_capacity(crls.len());
    for (i, crl) in crls.iter().enumerate() {
        let (_, parsed) = x509_parser::parse_x509_crl(crl.as_ref())
            .map_err(|e| format!("CRL {} is not a valid CRL: {e}", i + 1))?;
        let issuer = parsed.issuer().as_raw().to_vec();
        if let Some(first) = facts.iter().position(|f| f.issuer == issuer) {
            return Err(format!(
                "CRLs {} and {} are both of {}: a CRL file holds one CRL per issuer (only the first would be used)",
                first + 1,
                i + 1,
                display_name(&issuer)
            ));
        }
        facts.push(CrlFacts {
            issuer,
            number: parsed.crl_number().map(|n| n.to_bytes_be()),
            this_update: parsed.last_update().timestamp(),
            next_update: parsed.next_update().map(|t| t.timestamp()),
        });
    }
    Ok(facts)
}

/// Checks each CRL's signature against the CA of the bundle it names as
/// its issuer: a CRL wrongly signed would make every certificate of that CA
/// fail verification. A CRL of an issuer that is not in the bundle (an
/// intermediate CA, whose certificate clients send) is checked by the
/// verifier when it is used.
fn check_signatures(
    crls: &[CertificateRevocationListDer<'_>],
    cas: &[CertificateDer<'_>],
) -> Result<(), String> {
    let cas: Vec<_> = cas
        .iter()
        .filter_map(|ca| x509_parser::parse_x509_certificate(ca.as_ref()).ok())
        .map(|(_, ca)| ca)
        .collect();
    for (i, crl) in crls.iter().enumerate() {
        let (_, parsed) = x509_parser::parse_x509_crl(crl.as_ref())
            .map_err(|e| format!("CRL {} is not a valid CRL: {e}", i + 1))?;
        let issuer = parsed.issuer().as_raw();
        let mut candidates = cas
            .iter()
            .filter(|ca| ca.subject().as_raw() == issuer)
            .peekable();
        if candidates.peek().is_none() {
            continue;
        }
        if !candidates.any(|ca| parsed.verify_signature(ca.public_key()).is_ok()) {
            return Err(format!(
                "CRL {} is not signed by its issuer {} (the CA of the client CA bundle)",
                i + 1,
                display_name(issuer)
            ));
        }
    }
    Ok(())
}

/// Whether CRL number `a` is lower than `b` (both big-endian, no leading
/// zeros).
fn number_lower(a: &[u8], b: &[u8]) -> bool {
    (a.len(), a) < (b.len(), b)
}

/// Refuses new CRLs older than the ones in force for the same issuer: a
/// lower CRL number, or an earlier thisUpdate. Loading an old CRL again
/// (replayed, or restored from a backup) would un-revoke what was revoked
/// since.
fn check_not_older(new: &[CrlFacts], in_force: &[CrlFacts]) -> Result<(), String> {
    for crl in new {
        let Some(old) = in_force.iter().find(|o| o.issuer == crl.issuer) else {
            continue;
        };
        if let (Some(number), Some(old_number)) = (&crl.number, &old.number)
            && number_lower(number, old_number)
        {
            return Err(format!(
                "the CRL of {} has CRL number {}, lower than the {} in force: an older CRL would un-revoke certificates",
                display_name(&crl.issuer),
                hex::encode(number),
                hex::encode(old_number)
            ));
        }
        if crl.this_update < old.this_update {
            return Err(format!(
                "the CRL of {} was issued (thisUpdate {}) before the one in force ({}): an older CRL would un-revoke certificates",
                display_name(&crl.issuer),
                crl.this_update,
                old.this_update
            ));
        }
    }
    Ok(())
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
    /// The CAs of the client CA bundle.
    cas: Vec<CertificateDer<'static>>,
    /// The subject (DER-encoded name) of each CA of the client CA bundle.
    ca_subjects: Vec<Vec<u8>>,
    crls: Vec<CertificateRevocationListDer<'static>>,
    /// The facts of each CRL of `crls`, in the same order.
    facts: Vec<CrlFacts>,
}

/// The CA bundle's contents and the CRL file's (if configured), as read.
pub(super) type Loaded = (Vec<u8>, Option<Vec<u8>>);

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
/// Every reload is also announced on a watch channel
/// ([`ClientTrust::subscribe`]): each connection verifies its certificate
/// again at once and is closed, its open response streams ended
/// UNAUTHENTICATED, when it no longer passes, without waiting for a call.
///
/// A CRL file is refused when it holds two CRLs of the same issuer, when a
/// CRL is not signed by the CA of the bundle it names as issuer, and, on a
/// reload, when a CRL is older (lower CRL number, earlier thisUpdate) than
/// the one in force for its issuer.
///
/// Since the bundle can change, the server sends no CA names in its
/// certificate request (clients present their certificate regardless).
pub struct ClientTrust {
    pub(super) provider: Arc<CryptoProvider>,
    pub(super) crl_path: Option<PathBuf>,
    /// The CA bundle's and the CRL file's contents as parsed at start-up,
    /// until the reloader takes them as the contents it has seen.
    loaded: Mutex<Option<Loaded>>,
    /// The generation of `current`, readable without the lock.
    generation: AtomicU64,
    /// The generation, announced on every reload.
    changes: watch::Sender<u64>,
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
        let (ca_loaded, cas) = read_certs(&paths.client_ca, "client CA bundle")?;
        let (roots, ca_subjects) = ca_bundle(cas.clone()).map_err(|e| {
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
        let crl_file = || paths.crl.as_deref().unwrap_or(Path::new("")).display();
        let facts = crl_facts(&crls)
            .map_err(|e| TlsError(format!("client CRL file {}: {e}", crl_file())))?;
        check_signatures(&crls, &cas)
            .map_err(|e| TlsError(format!("client CRL file {}: {e}", crl_file())))?;
        let verifier = build_verifier(&roots, &provider, crls.clone())
            .map_err(|e| TlsError(format!("client verifier: {e}")))?;
        let trust = Arc::new(ClientTrust {
            provider,
            crl_path: paths.crl.clone(),
            loaded: Mutex::new(Some((ca_loaded, crl_loaded))),
            generation: AtomicU64::new(0),
            changes: watch::Sender::new(0),
            current: RwLock::new(Current {
                generation: 0,
                verifier,
                roots,
                cas,
                ca_subjects,
                crls,
                facts,
            }),
        });
        if let Some(path) = &paths.crl {
            tracing::info!(path = %path.display(), crls = count, "client CRLs loaded");
        }
        trust.warn_coverage();
        Ok(trust)
    }

    /// The CA bundle's and CRL file's contents that [`ClientTrust::load`]
    /// parsed, once (the reloader's starting point).
    pub(super) fn take_loaded(&self) -> Option<Loaded> {
        self.loaded.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// A receiver of the generation, changed on every reload of the CA
    /// bundle or the CRLs.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Logs each CA of the bundle no CRL covers, when CRLs are configured
    /// (at start-up and after every reload).
    pub(super) fn warn_coverage(&self) {
        let Some(path) = &self.crl_path else {
            return;
        };
        for ca in self.cas_without_crl() {
            tracing::warn!(
                path = %path.display(),
                ca,
                "client CA has no CRL in the CRL file: the certificates it issued cannot be revoked"
            );
        }
    }

    /// The issuers of the CRLs in force whose nextUpdate is before `now`
    /// (seconds since the epoch): their CRL should have been replaced.
    pub fn stale_crls(&self, now: i64) -> Vec<String> {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        current
            .facts
            .iter()
            .filter(|f| f.next_update.is_some_and(|next| next < now))
            .map(|f| display_name(&f.issuer))
            .collect()
    }

    /// The CAs of the client CA bundle that no CRL in force covers (their
    /// certificates are accepted without a revocation check).
    pub fn cas_without_crl(&self) -> Vec<String> {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        current
            .ca_subjects
            .iter()
            .filter(|subject| !current.facts.iter().any(|f| &f.issuer == *subject))
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
    /// issuer takes a restart). So is a file with two CRLs of one issuer, a
    /// CRL not signed by its CA, and a CRL older than the one in force for
    /// its issuer (lower CRL number or earlier thisUpdate: loading it would
    /// un-revoke what was revoked since).
    pub fn reload(&self, bytes: &[u8]) -> Result<usize, String> {
        let crls = parse_crl_file(bytes)?;
        let count = crls.len();
        let facts = crl_facts(&crls)?;
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        if let Some(dropped) = current
            .facts
            .iter()
            .find(|old| !facts.iter().any(|f| f.issuer == old.issuer))
        {
            return Err(format!(
                "it holds no CRL of {}, which the CRLs in force cover (restart the server to stop checking an issuer's revocations)",
                display_name(&dropped.issuer)
            ));
        }
        check_not_older(&facts, &current.facts)?;
        check_signatures(&crls, &current.cas)?;
        let verifier = build_verifier(&current.roots, &self.provider, crls.clone())
            .map_err(|e| e.to_string())?;
        current.generation += 1;
        current.verifier = verifier;
        current.crls = crls;
        current.facts = facts;
        self.announce(current.generation);
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
        let (roots, ca_subjects) = ca_bundle(certs.clone())?;
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        let verifier = build_verifier(&roots, &self.provider, current.crls.clone())
            .map_err(|e| e.to_string())?;
        current.generation += 1;
        current.verifier = verifier;
        current.roots = roots;
        current.cas = certs;
        current.ca_subjects = ca_subjects;
        self.announce(current.generation);
        Ok(count)
    }

    /// Publishes `generation` (the lock on `current` held): to the per-call
    /// checks, and to the connections watching for changes.
    fn announce(&self, generation: u64) {
        self.generation.store(generation, Ordering::Release);
        self.changes.send_replace(generation);
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
        crl_numbered(ca, revoked, 1, 0)
    }

    /// A CRL with CRL number `number`, issued `age` seconds before a minute
    /// ago, valid for an hour from then.
    fn crl_numbered(
        ca: &Ca,
        revoked: &[u64],
        number: u64,
        age: u64,
    ) -> rcgen::CertificateRevocationList {
        let now = SystemTime::now();
        let issued = now - Duration::from_secs(60 + age);
        CertificateRevocationListParams {
            this_update: issued.into(),
            next_update: (issued + Duration::from_secs(3600)).into(),
            crl_number: SerialNumber::from(number),
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

        // Both issuers still covered (in another order): fine.
        assert_eq!(
            trust.reload((pem(&crl(&b, &[])) + &pem(&crl(&a, &[]))).as_bytes()),
            Ok(2)
        );
        assert_eq!(revoked.check(), Ok(()));
    }

    #[test]
    fn two_crls_of_one_issuer_are_refused() {
        let a = ca_named("CA a");
        let b = ca_named("CA b");
        // The verifier would use the first of a's CRLs only: the revocation
        // in the second would be ignored.
        let two_of_a = pem(&crl(&a, &[])) + &pem(&crl(&b, &[])) + &pem(&crl(&a, &[7]));
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let bundle = a.pem.clone() + &b.pem;
        std::fs::write(dir.path().join("ca.pem"), bundle).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.path().join("crl.pem"), &two_of_a).unwrap_or_else(|e| panic!("{e}"));
        let paths = TlsPaths {
            cert: dir.path().join("unused"),
            key: dir.path().join("unused"),
            client_ca: dir.path().join("ca.pem"),
            crl: Some(dir.path().join("crl.pem")),
            crl_reload: Duration::from_secs(1),
        };
        let refused = ClientTrust::load(&paths).map(|_| ());
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.to_string().contains("CRLs 1 and 3 are both of CN=CA a")),
            "{refused:?}"
        );

        let (_dir, trust) = trust_of(&[&a, &b], &(pem(&crl(&a, &[])) + &pem(&crl(&b, &[]))));
        let generation = trust.generation();
        let refused = trust.reload(two_of_a.as_bytes());
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.contains("both of CN=CA a")),
            "{refused:?}"
        );
        assert_eq!(trust.generation(), generation, "the CRLs in force stay");
    }

    #[test]
    fn an_older_crl_is_refused() {
        let a = ca();
        let (_dir, trust) = trust(&a, &pem(&crl_numbered(&a, &[], 5, 0)));
        let revoked = peer(&trust, client(&a, 7), FAR);
        assert_eq!(
            trust.reload(pem(&crl_numbered(&a, &[7], 6, 0)).as_bytes()),
            Ok(1)
        );
        assert_eq!(revoked.check(), Err(CertRefusal::Revoked));

        // A replay of CRL 5 would un-revoke serial 7.
        let generation = trust.generation();
        let refused = trust.reload(pem(&crl_numbered(&a, &[], 5, 0)).as_bytes());
        assert!(
            refused.as_ref().is_err_and(|e| e.contains("CRL number 05")),
            "{refused:?}"
        );
        // The same number issued earlier: refused too.
        let refused = trust.reload(pem(&crl_numbered(&a, &[], 6, 600)).as_bytes());
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.contains("before the one in force")),
            "{refused:?}"
        );
        assert_eq!(trust.generation(), generation, "the CRLs in force stay");
        assert_eq!(revoked.check(), Err(CertRefusal::Revoked));
        // The same CRL again, or a newer one: loaded.
        assert_eq!(
            trust.reload(pem(&crl_numbered(&a, &[7], 6, 0)).as_bytes()),
            Ok(1)
        );
        assert_eq!(
            trust.reload(pem(&crl_numbered(&a, &[7, 8], 7, 0)).as_bytes()),
            Ok(1)
        );
    }

    #[test]
    fn a_crl_not_signed_by_its_ca_is_refused() {
        let a = ca_named("CA a");
        // Another key under the same name: the CRL names CA a as issuer.
        let impostor = ca_named("CA a");
        let (_dir, trust) = trust(&a, &pem(&crl_numbered(&a, &[], 1, 0)));
        let generation = trust.generation();
        let refused = trust.reload(pem(&crl_numbered(&impostor, &[], 2, 0)).as_bytes());
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.contains("not signed by its issuer CN=CA a")),
            "{refused:?}"
        );
        assert_eq!(trust.generation(), generation, "the CRLs in force stay");
        assert_eq!(peer(&trust, client(&a, 3), FAR).check(), Ok(()));

        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.path().join("ca.pem"), &a.pem).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(
            dir.path().join("crl.pem"),
            pem(&crl_numbered(&impostor, &[], 1, 0)),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let paths = TlsPaths {
            cert: dir.path().join("unused"),
            key: dir.path().join("unused"),
            client_ca: dir.path().join("ca.pem"),
            crl: Some(dir.path().join("crl.pem")),
            crl_reload: Duration::from_secs(1),
        };
        assert!(
            ClientTrust::load(&paths).is_err(),
            "a wrongly signed CRL at start-up"
        );
    }

    #[test]
    fn crls_past_their_next_update_are_reported() {
        let a = ca_named("CA a");
        let b = ca_named("CA b");
        // a's CRL was issued two hours ago, valid for one.
        let (_dir, trust) = trust_of(
            &[&a, &b],
            &(pem(&crl_numbered(&a, &[], 1, 7200)) + &pem(&crl(&b, &[]))),
        );
        let now = i64::try_from(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs(),
        )
        .unwrap_or(0);
        assert_eq!(trust.stale_crls(now), vec!["CN=CA a".to_owned()]);
        assert_eq!(trust.stale_crls(now + 7200).len(), 2);
    }

    #[test]
    fn reloads_are_announced() {
        let a = ca();
        let (_dir, trust) = trust(&a, &pem(&crl(&a, &[])));
        let mut changes = trust.subscribe();
        assert!(!changes.has_changed().unwrap_or(true));
        assert_eq!(trust.reload(pem(&crl(&a, &[1])).as_bytes()), Ok(1));
        assert!(changes.has_changed().unwrap_or(false));
        assert_eq!(*changes.borrow_and_update(), trust.generation());
        assert_eq!(trust.reload_cas(a.pem.as_bytes()), Ok(1));
        assert_eq!(*changes.borrow_and_update(), trust.generation());
        // A refused file is no change.
        assert!(trust.reload(b"not a CRL").is_err());
        assert!(!changes.has_changed().unwrap_or(true));
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
