//! The relay's HTTP client: resolves a destination itself (DNS, or the
//! static `relay.resolve` entries), refuses it if any address it resolves
//! to is internal (unless that exact `host:port` is in
//! `relay.allow_internal` for every tenant or for the request's tenant),
//! refuses a non-HTTPS destination before any connection, connects to an address it checked (never a
//! second lookup), verifies the destination's certificate against the
//! system roots plus `relay.upstream_ca` with the checked host as the TLS
//! server name, and speaks HTTP/2 or HTTP/1.1 as ALPN decides. Connections
//! are pooled per tenant and destination (scheme, host, port): a pooled
//! connection was made to a checked address of that destination, and no
//! connection carries two tenants' requests (a destination that ties
//! authentication to the connection cannot mix them up).
//!
//! The pool is bounded, so that a grant for `*.domain` cannot make the
//! relay keep one TLS connection per sub-domain until file descriptors run
//! out: at most [`MAX_POOLED`] connections are kept in all (HTTP/2
//! connections, shared, and idle HTTP/1.1 ones), at most
//! [`MAX_POOLED_PER_TENANT`] for one tenant and [`MAX_IDLE_PER_DESTINATION`]
//! idle HTTP/1.1 ones per destination; past a bound the least recently used
//! is let go (an HTTP/2 connection still carrying requests closes when they
//! end). A connection unused for [`POOL_IDLE`] is let go too, by a sweep
//! every third of that. An HTTP/1.1 connection goes back to the pool once
//! its response was read to the end and the connection is ready for the
//! next request.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use strongroom_core::net::{AllowList, Internal, Scheme, classify};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{self, pki_types::ServerName};

use crate::config::RelayConfig;

/// The request body type sent upstream.
pub type UpstreamBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// Idle HTTP/1.1 connections kept per destination.
pub const MAX_IDLE_PER_DESTINATION: usize = 32;

/// Connections kept in the pool in all.
pub const MAX_POOLED: usize = 1024;

/// Connections kept in the pool for one tenant.
pub const MAX_POOLED_PER_TENANT: usize = 64;

/// A pooled connection unused this long is let go.
pub const POOL_IDLE: Duration = Duration::from_secs(90);

/// How long a used HTTP/1.1 connection may take to be ready again before it
/// is let go instead of pooled.
const READY_AGAIN: Duration = Duration::from_secs(5);

/// Why a request could not be sent (or answered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamError {
    /// The destination resolves to an internal address not allowed.
    Internal(Internal),
    /// The name does not resolve.
    Resolve,
    /// No address accepted a connection, or the connection failed.
    Unreachable,
    /// The TLS handshake failed (certificate not trusted, wrong name).
    Tls,
    /// No answer in time.
    Timeout,
}

impl UpstreamError {
    /// The relay's reason code and HTTP status for it.
    pub fn reason(&self) -> (&'static str, u16) {
        match self {
            Self::Internal(_) => ("internal_address", 403),
            Self::Resolve | Self::Unreachable => ("upstream_unreachable", 502),
            Self::Tls => ("upstream_tls", 502),
            Self::Timeout => ("upstream_timeout", 504),
        }
    }
}

/// Where a pooled connection goes, and for which tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Destination {
    /// The tenant whose requests it carries.
    pub tenant: strongroom_core::ids::TenantId,
    /// Its name (what `relay.allow_internal` entries are scoped by).
    pub tenant_name: String,
    /// `https` or `http`.
    pub https: bool,
    /// Host (normalised).
    pub host: String,
    /// Port.
    pub port: u16,
}

/// A connection's request sender.
pub enum Sender {
    /// HTTP/1.1: one request at a time; back to the pool when done.
    H1(http1::SendRequest<UpstreamBody>),
    /// HTTP/2: shared.
    H2(http2::SendRequest<UpstreamBody>),
}

impl Sender {
    /// Whether this is an HTTP/2 connection.
    pub fn is_h2(&self) -> bool {
        matches!(self, Self::H2(_))
    }

    /// Sends `request`, waiting for the connection to be ready.
    pub async fn send(
        &mut self,
        request: http::Request<UpstreamBody>,
    ) -> hyper::Result<http::Response<Incoming>> {
        match self {
            Self::H1(s) => {
                s.ready().await?;
                s.send_request(request).await
            }
            Self::H2(s) => {
                s.ready().await?;
                s.send_request(request).await
            }
        }
    }
}

/// The relay's client.
pub struct Upstream {
    resolve: HashMap<(String, u16), Vec<IpAddr>>,
    allow_internal: AllowList,
    tls: TlsConnector,
    timeout: Duration,
    pool: Arc<Mutex<Pool>>,
}

/// A pooled connection, with when and in which order it was last used.
struct Kept<S> {
    sender: S,
    used: Instant,
    order: u64,
}

/// What is pooled for one destination.
struct Pooled {
    h2: Option<Kept<http2::SendRequest<UpstreamBody>>>,
    h1: Vec<Kept<http1::SendRequest<UpstreamBody>>>,
}

impl Pooled {
    fn len(&self) -> usize {
        usize::from(self.h2.is_some()) + self.h1.len()
    }
}

/// The pooled connections by destination, with their counts.
#[derive(Default)]
struct Pool {
    by_destination: HashMap<Destination, Pooled>,
    per_tenant: HashMap<strongroom_core::ids::TenantId, usize>,
    count: usize,
    uses: u64,
}

/// Which pooled connection: its destination, and `None` for the HTTP/2 one
/// or the index of an idle HTTP/1.1 one.
type Slot = (Destination, Option<usize>);

impl Pool {
    fn tick(&mut self) -> u64 {
        self.uses += 1;
        self.uses
    }

    fn counted(&mut self, tenant: strongroom_core::ids::TenantId, added: isize) {
        self.count = self.count.saturating_add_signed(added);
        let n = self.per_tenant.entry(tenant).or_insert(0);
        *n = n.saturating_add_signed(added);
        if *n == 0 {
            self.per_tenant.remove(&tenant);
        }
    }

    /// A pooled connection to `destination` ready to take a request.
    fn take(&mut self, destination: &Destination) -> Option<Sender> {
        let order = self.tick();
        let pooled = self.by_destination.get_mut(destination)?;
        let mut removed = 0;
        let mut found = None;
        if let Some(kept) = &mut pooled.h2 {
            if kept.sender.is_closed() {
                pooled.h2 = None;
                removed += 1;
            } else {
                kept.used = Instant::now();
                kept.order = order;
                found = Some(Sender::H2(kept.sender.clone()));
            }
        }
        while found.is_none() {
            let Some(kept) = pooled.h1.pop() else {
                break;
            };
            removed += 1;
            if !kept.sender.is_closed() && kept.sender.is_ready() {
                found = Some(Sender::H1(kept.sender));
            }
        }
        if pooled.len() == 0 {
            self.by_destination.remove(destination);
        }
        if removed > 0 {
            self.counted(destination.tenant, -removed);
        }
        found
    }

    /// Keeps the HTTP/2 connection of `destination` (replacing one made
    /// concurrently).
    fn keep_h2(&mut self, destination: &Destination, sender: http2::SendRequest<UpstreamBody>) {
        let now = Instant::now();
        let replaced = self
            .by_destination
            .get(destination)
            .is_some_and(|p| p.h2.is_some());
        if !replaced {
            self.make_room(destination.tenant, now);
        }
        let order = self.tick();
        let pooled = self
            .by_destination
            .entry(destination.clone())
            .or_insert_with(|| Pooled {
                h2: None,
                h1: Vec::new(),
            });
        pooled.h2 = Some(Kept {
            sender,
            used: now,
            order,
        });
        if !replaced {
            self.counted(destination.tenant, 1);
        }
    }

    /// Keeps an idle HTTP/1.1 connection to `destination`, if its
    /// destination has room.
    fn keep_h1(&mut self, destination: &Destination, sender: http1::SendRequest<UpstreamBody>) {
        if self
            .by_destination
            .get(destination)
            .is_some_and(|p| p.h1.len() >= MAX_IDLE_PER_DESTINATION)
        {
            return;
        }
        let now = Instant::now();
        self.make_room(destination.tenant, now);
        let order = self.tick();
        self.by_destination
            .entry(destination.clone())
            .or_insert_with(|| Pooled {
                h2: None,
                h1: Vec::new(),
            })
            .h1
            .push(Kept {
                sender,
                used: now,
                order,
            });
        self.counted(destination.tenant, 1);
    }

    /// Lets go of idle and closed connections, then of the least recently
    /// used until one more of `tenant`'s fits.
    fn make_room(&mut self, tenant: strongroom_core::ids::TenantId, now: Instant) {
        self.sweep(now);
        while self.per_tenant.get(&tenant).copied().unwrap_or(0) >= MAX_POOLED_PER_TENANT {
            if !self.evict(Some(tenant)) {
                break;
            }
        }
        while self.count >= MAX_POOLED {
            if !self.evict(None) {
                break;
            }
        }
    }

    /// Lets go of the least recently used connection (of `tenant` if
    /// given); whether there was one.
    fn evict(&mut self, tenant: Option<strongroom_core::ids::TenantId>) -> bool {
        let mut oldest: Option<(u64, Slot)> = None;
        for (d, p) in &self.by_destination {
            if tenant.is_some_and(|t| t != d.tenant) {
                continue;
            }
            let candidates =
                p.h2.iter()
                    .map(|k| (k.order, None))
                    .chain(p.h1.iter().enumerate().map(|(i, k)| (k.order, Some(i))));
            for (order, which) in candidates {
                if oldest.as_ref().is_none_or(|(o, _)| order < *o) {
                    oldest = Some((order, (d.clone(), which)));
                }
            }
        }
        let Some((_, (destination, which))) = oldest else {
            return false;
        };
        if let Some(pooled) = self.by_destination.get_mut(&destination) {
            match which {
                None => pooled.h2 = None,
                Some(i) => {
                    pooled.h1.swap_remove(i);
                }
            }
            if pooled.len() == 0 {
                self.by_destination.remove(&destination);
            }
        }
        self.counted(destination.tenant, -1);
        true
    }

    /// Lets go of connections unused for [`POOL_IDLE`] and closed ones.
    fn sweep(&mut self, now: Instant) {
        let mut removed: Vec<(strongroom_core::ids::TenantId, isize)> = Vec::new();
        self.by_destination.retain(|d, p| {
            let before = p.len();
            if p.h2
                .as_ref()
                .is_some_and(|k| k.sender.is_closed() || now.duration_since(k.used) >= POOL_IDLE)
            {
                p.h2 = None;
            }
            p.h1.retain(|k| !k.sender.is_closed() && now.duration_since(k.used) < POOL_IDLE);
            let gone = before - p.len();
            if gone > 0 {
                removed.push((d.tenant, -(gone as isize)));
            }
            p.len() > 0
        });
        for (tenant, n) in removed {
            self.counted(tenant, n);
        }
    }
}

/// Why the relay's TLS settings could not be built.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UpstreamSetupError(pub String);

impl Upstream {
    /// A client with `config`'s resolution, allow-list, roots and timeout.
    pub fn new(config: &RelayConfig) -> Result<Self, UpstreamSetupError> {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for cert in native.certs {
            // A system root rustls cannot use is skipped, as browsers do.
            let _ = roots.add(cert);
        }
        if let Some(path) = &config.upstream_ca {
            use rustls::pki_types::{CertificateDer, pem::PemObject};
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(|e| {
                    UpstreamSetupError(format!("relay.upstream_ca {}: {e}", path.display()))
                })?
                .collect::<Result<_, _>>()
                .map_err(|e| {
                    UpstreamSetupError(format!("relay.upstream_ca {}: {e}", path.display()))
                })?;
            if certs.is_empty() {
                return Err(UpstreamSetupError(format!(
                    "relay.upstream_ca {}: no certificate in the file",
                    path.display()
                )));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| {
                    UpstreamSetupError(format!("relay.upstream_ca {}: {e}", path.display()))
                })?;
            }
        }
        let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| UpstreamSetupError(format!("relay TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let pool = Arc::new(Mutex::new(Pool::default()));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let pool = Arc::downgrade(&pool);
            runtime.spawn(async move {
                let mut every = tokio::time::interval(POOL_IDLE / 3);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    every.tick().await;
                    let Some(pool) = pool.upgrade() else {
                        return;
                    };
                    pool.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .sweep(Instant::now());
                }
            });
        }
        Ok(Self {
            resolve: config.resolve.clone(),
            allow_internal: config.allow_internal.clone(),
            tls: TlsConnector::from(Arc::new(tls)),
            timeout: config.timeout,
            pool,
        })
    }

    fn pool(&self) -> std::sync::MutexGuard<'_, Pool> {
        // The pool holds whole values after any panic.
        self.pool.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many connections are pooled: in all, and for `tenant`.
    pub fn pooled_count(&self, tenant: strongroom_core::ids::TenantId) -> (usize, usize) {
        let pool = self.pool();
        (
            pool.count,
            pool.per_tenant.get(&tenant).copied().unwrap_or(0),
        )
    }

    /// The addresses of `host:port`, each checked: all of them must be
    /// public, unless that exact `host:port` is allowed internal for every
    /// tenant or for the tenant named `tenant`.
    pub async fn resolve_checked(
        &self,
        tenant: &str,
        host: &str,
        port: u16,
    ) -> Result<Vec<SocketAddr>, UpstreamError> {
        let ips: Vec<IpAddr> = if let Ok(ip) = host.parse::<IpAddr>() {
            vec![ip]
        } else if let Some(ips) = self.resolve.get(&(host.to_owned(), port)) {
            ips.clone()
        } else {
            let found = tokio::time::timeout(self.timeout, tokio::net::lookup_host((host, port)))
                .await
                .map_err(|_| UpstreamError::Timeout)?
                .map_err(|_| UpstreamError::Resolve)?;
            found.map(|a| a.ip()).collect()
        };
        if ips.is_empty() {
            return Err(UpstreamError::Resolve);
        }
        if !self.allow_internal.allows(tenant, host, port) {
            // One internal address refuses the name: a name that resolves
            // to public and internal addresses at once is not trusted.
            if let Some(kind) = ips.iter().find_map(|ip| classify(*ip)) {
                return Err(UpstreamError::Internal(kind));
            }
        }
        Ok(ips
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect())
    }

    /// A ready connection to `destination`: pooled, or new to a checked
    /// address.
    pub async fn connection(&self, destination: &Destination) -> Result<Sender, UpstreamError> {
        if let Some(s) = self.pooled(destination) {
            return Ok(s);
        }
        tokio::time::timeout(self.timeout, self.connect(destination))
            .await
            .map_err(|_| UpstreamError::Timeout)?
    }

    fn pooled(&self, destination: &Destination) -> Option<Sender> {
        self.pool().take(destination)
    }

    /// Gives an HTTP/1.1 connection back after its response was read to
    /// the end: pooled once it is ready for the next request.
    pub fn put_back(&self, destination: &Destination, sender: Sender) {
        let Sender::H1(mut s) = sender else {
            return;
        };
        if s.is_closed() {
            return;
        }
        if s.is_ready() {
            self.pool().keep_h1(destination, s);
            return;
        }
        let pool = Arc::clone(&self.pool);
        let destination = destination.clone();
        tokio::spawn(async move {
            if let Ok(Ok(())) = tokio::time::timeout(READY_AGAIN, s.ready()).await {
                pool.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .keep_h1(&destination, s);
            }
        });
    }

    async fn connect(&self, destination: &Destination) -> Result<Sender, UpstreamError> {
        if !destination.https {
            // Credentials only ever travel over HTTPS: the relay opens no
            // connection for anything else.
            return Err(UpstreamError::Tls);
        }
        let addrs = self
            .resolve_checked(
                &destination.tenant_name,
                &destination.host,
                destination.port,
            )
            .await?;
        let mut tcp = None;
        for addr in &addrs {
            if let Ok(stream) = TcpStream::connect(addr).await {
                tcp = Some(stream);
                break;
            }
        }
        let tcp = tcp.ok_or(UpstreamError::Unreachable)?;
        let _ = tcp.set_nodelay(true);
        let name = match destination.host.parse::<IpAddr>() {
            Ok(ip) => ServerName::IpAddress(ip.into()),
            Err(_) => {
                ServerName::try_from(destination.host.clone()).map_err(|_| UpstreamError::Tls)?
            }
        };
        let tls = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(|_| UpstreamError::Tls)?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        if h2 {
            let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .map_err(|_| UpstreamError::Unreachable)?;
            tokio::spawn(conn);
            self.pool().keep_h2(destination, sender.clone());
            Ok(Sender::H2(sender))
        } else {
            let (sender, conn) = http1::handshake(TokioIo::new(tls))
                .await
                .map_err(|_| UpstreamError::Unreachable)?;
            tokio::spawn(conn);
            Ok(Sender::H1(sender))
        }
    }

    /// How long the destination has to answer.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

impl Destination {
    /// The destination of a parsed target, for `tenant`.
    pub fn of(
        tenant: &strongroom_core::tenant::Tenant,
        target: &strongroom_core::net::RequestTarget,
    ) -> Self {
        Self {
            tenant: tenant.id,
            tenant_name: tenant.name.to_string(),
            https: target.scheme == Scheme::Https,
            host: target.host.clone(),
            port: target.port,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A plain-HTTP destination is refused before any connection is
    /// opened, even one allowed internal.
    #[tokio::test]
    async fn plain_http_is_refused_before_connecting() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let config = RelayConfig {
            allow_internal: AllowList::parse([format!("127.0.0.1:{port}").as_str()]).unwrap(),
            ..RelayConfig::default()
        };
        let upstream = Upstream::new(&config).unwrap();
        let destination = Destination {
            tenant: strongroom_core::ids::TenantId::generate(),
            tenant_name: "acme".into(),
            https: false,
            host: "127.0.0.1".into(),
            port,
        };
        assert_eq!(
            upstream.connection(&destination).await.err(),
            Some(UpstreamError::Tls)
        );
        let accepted = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
        assert!(accepted.is_err(), "a connection was opened");
    }

    use strongroom_core::ids::TenantId;

    /// An HTTP/1.1 sender over an in-memory pipe (its other end kept, so
    /// the connection stays open).
    async fn sender() -> (http1::SendRequest<UpstreamBody>, tokio::io::DuplexStream) {
        let (near, far) = tokio::io::duplex(64);
        let (s, conn) = http1::handshake(TokioIo::new(near))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        (s, far)
    }

    fn destination(tenant: TenantId, host: String) -> Destination {
        Destination {
            tenant,
            tenant_name: "acme".into(),
            https: true,
            host,
            port: 443,
        }
    }

    #[tokio::test]
    async fn the_pool_is_bounded_per_tenant_and_in_all_and_lets_idle_ones_go() {
        let mut pool = Pool::default();
        let mut ends = Vec::new();
        let greedy = TenantId::generate();
        // One connection per sub-domain of a `*.domain` grant: the tenant's
        // share is kept, the least recently used let go.
        for i in 0..MAX_POOLED_PER_TENANT + 10 {
            let (s, far) = sender().await;
            ends.push(far);
            pool.keep_h1(&destination(greedy, format!("h{i}.example.test")), s);
        }
        assert_eq!(pool.per_tenant[&greedy], MAX_POOLED_PER_TENANT);
        assert_eq!(pool.count, MAX_POOLED_PER_TENANT);
        assert!(
            !pool
                .by_destination
                .contains_key(&destination(greedy, "h0.example.test".into()))
        );
        let last = destination(
            greedy,
            format!("h{}.example.test", MAX_POOLED_PER_TENANT + 9),
        );
        assert!(pool.by_destination.contains_key(&last));
        // Many tenants: the total is bounded.
        let tenants = MAX_POOLED / MAX_POOLED_PER_TENANT + 1;
        for _ in 0..tenants {
            let t = TenantId::generate();
            for i in 0..MAX_POOLED_PER_TENANT {
                let (s, far) = sender().await;
                ends.push(far);
                pool.keep_h1(&destination(t, format!("h{i}.example.test")), s);
            }
        }
        assert_eq!(pool.count, MAX_POOLED);
        assert_eq!(
            pool.count,
            pool.per_tenant.values().sum::<usize>(),
            "the counts agree"
        );
        // A taken connection leaves the pool (whether it is handed out
        // depends on its readiness, which a pipe without a server lacks).
        let taken = pool.by_destination.keys().next().cloned().expect("one");
        let before = pool.count;
        let _ = pool.take(&taken);
        assert_eq!(pool.count, before - 1);
        assert!(!pool.by_destination.contains_key(&taken));
        // Idle ones go.
        let now = Instant::now();
        pool.sweep(now + POOL_IDLE);
        assert_eq!(pool.count, 0);
        assert!(pool.by_destination.is_empty());
        assert!(pool.per_tenant.is_empty());
    }

    #[tokio::test]
    async fn idle_connections_per_destination_are_bounded() {
        let mut pool = Pool::default();
        let mut ends = Vec::new();
        let d = destination(TenantId::generate(), "api.example.test".into());
        for _ in 0..MAX_IDLE_PER_DESTINATION + 3 {
            let (s, far) = sender().await;
            ends.push(far);
            pool.keep_h1(&d, s);
        }
        assert_eq!(pool.count, MAX_IDLE_PER_DESTINATION);
    }
}
