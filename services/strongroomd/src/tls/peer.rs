//! A verified client connection: the identity its certificate carries,
//! the certificate kept to check it again per call, and the stream the
//! server reads and writes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::pki_types::{CertificateDer, UnixTime};
use strongroom_proto::coalesce::Coalescing;
use tokio::sync::OwnedSemaphorePermit;

use super::trust::{CertRefusal, ClientTrust};

/// No verdict yet: verify on the next call.
pub(super) const UNVERIFIED: u64 = u64::MAX;

/// A connection's verified client certificate, kept to check it again per
/// call: its expiry (a timestamp compare) and, after a CRL reload, its
/// revocation (verified once again under the new CRLs, the verdict kept).
pub struct PeerCert {
    pub(super) chain: Box<[CertificateDer<'static>]>,
    /// The client certificate's notAfter, seconds since the epoch.
    pub(super) not_after: i64,
    /// `generation * 2 + 1` when valid under that CRL generation,
    /// `generation * 2` when refused, [`UNVERIFIED`] before any verdict.
    pub(super) verdict: AtomicU64,
    pub(super) trust: Arc<ClientTrust>,
}

impl std::fmt::Debug for PeerCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerCert")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl PeerCert {
    /// Whether the certificate still authenticates calls now: not expired,
    /// and not refused by the CRLs in force.
    pub fn check(&self) -> Result<(), CertRefusal> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        if now > self.not_after {
            return Err(CertRefusal::Expired);
        }
        let generation = self.trust.generation();
        let verdict = self.verdict.load(Ordering::Acquire);
        if verdict != UNVERIFIED && verdict >> 1 == generation {
            return if verdict & 1 == 1 {
                Ok(())
            } else {
                Err(CertRefusal::Revoked)
            };
        }
        // CRLs changed since the last verdict (or none yet): verify again.
        let (generation, verifier) = self.trust.current();
        let (end_entity, intermediates) = self.chain.split_first().ok_or(CertRefusal::Revoked)?;
        let result = verifier.verify_client_cert(end_entity, intermediates, UnixTime::now());
        let ok = result.is_ok();
        self.verdict
            .store(generation * 2 + u64::from(ok), Ordering::Release);
        match result {
            Ok(_) => Ok(()),
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::Expired))
            | Err(rustls::Error::InvalidCertificate(rustls::CertificateError::ExpiredContext {
                ..
            })) => Err(CertRefusal::Expired),
            Err(_) => Err(CertRefusal::Revoked),
        }
    }
}

/// The identity of a (verified) client certificate: its SPIFFE ID (a
/// `spiffe://` URI SAN), else its subject common name.
pub fn identity_of(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    identity_of_parsed(&cert)
}

fn identity_of_parsed(cert: &x509_parser::certificate::X509Certificate<'_>) -> Option<String> {
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
    /// The verified certificate, to check per call that it is still valid
    /// ([`PeerCert::check`]).
    pub cert: Option<Arc<PeerCert>>,
}

impl PeerCert {
    /// A receiver of the trust's changes (reloads of the client CA bundle
    /// or the CRLs), after which [`PeerCert::check`] verifies again.
    pub fn trust_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.trust.subscribe()
    }
}

/// A client connection after a completed mutual-TLS handshake. Its writes
/// are coalesced ([`Coalescing`]): the responses that a commit completes
/// together leave in one TLS write and one system call instead of one each.
/// It holds one of the server's connection slots until it is dropped.
pub struct PeerStream {
    io: Coalescing<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>,
    info: PeerInfo,
    _slot: OwnedSemaphorePermit,
}

impl PeerStream {
    /// Wraps an accepted connection, reading its identity and expiry from the
    /// client certificate the handshake verified. `generation` is the CRL
    /// generation in force before the handshake began: a full handshake
    /// verified the certificate under it or a later one, so the first call
    /// need not verify it again unless the CRLs changed since; a resumed
    /// session was verified in an earlier connection and is verified again.
    pub fn new(
        tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
        addr: std::net::SocketAddr,
        trust: &Arc<ClientTrust>,
        generation: u64,
        slot: OwnedSemaphorePermit,
    ) -> Self {
        let connection = tls.get_ref().1;
        let resumed = connection.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        let chain = connection.peer_certificates().unwrap_or_default();
        let parsed = chain
            .first()
            .and_then(|c| x509_parser::parse_x509_certificate(c.as_ref()).ok());
        let (identity, cert) = match parsed {
            None => (None, None),
            Some((_, parsed)) => {
                let identity = identity_of_parsed(&parsed).map(Arc::from);
                let not_after = parsed.validity().not_after.timestamp();
                let cert = PeerCert {
                    chain: chain.to_vec().into_boxed_slice(),
                    not_after,
                    verdict: AtomicU64::new(if resumed {
                        UNVERIFIED
                    } else {
                        generation * 2 + 1
                    }),
                    trust: Arc::clone(trust),
                };
                (identity, Some(Arc::new(cert)))
            }
        };
        Self {
            io: Coalescing::new(tls),
            info: PeerInfo {
                addr,
                identity,
                cert,
            },
            _slot: slot,
        }
    }
}

impl PeerStream {
    /// What the handshake proved.
    pub fn info(&self) -> &PeerInfo {
        &self.info
    }

    /// Whether the client certificate is still valid now (see
    /// [`PeerCert::check`]); a connection without one is left to the calls
    /// to refuse.
    pub fn check_certificate(&self) -> Result<(), CertRefusal> {
        self.info.cert.as_ref().map_or(Ok(()), |c| c.check())
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
