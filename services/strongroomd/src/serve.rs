//! The transport: accepts TCP connections, completes each TLS handshake
//! within its own limits (`limits.max_handshakes` at once, each within
//! `limits.handshake_timeout`), and serves every established connection with
//! HTTP/2 in its own task, holding one of `limits.max_connections` slots.
//!
//! An identity holds at most `limits.max_connections_per_identity` of those
//! slots. One client address holds at most `limits.max_connections_per_ip`
//! connections, counted from the moment they are accepted (handshakes in
//! progress included) and refused before any TLS work, so one host cannot
//! take every handshake or connection slot with connections it leaves
//! silent.
//!
//! Every call on a connection first checks that the connection's client
//! certificate is still valid (not expired, not revoked by a CRL loaded
//! since the handshake), whatever the service (health and reflection
//! included); a refused call is answered UNAUTHENTICATED and its connection
//! is closed (GOAWAY, then the calls in progress end). The connection does
//! not wait for a call to find out: when the client CA bundle or the CRLs
//! are reloaded (`ClientTrust::subscribe`), and at every tick of its clock
//! (a quarter of `limits.idle_timeout`: expiry), each connection checks its
//! certificate again, and one that no longer passes is closed the same way,
//! its open response streams (an event follow, a relay exchange) ending at
//! once with UNAUTHENTICATED. A connection with no
//! call for `limits.idle_timeout` is closed the same way; HTTP/2 pings are
//! not calls. A connection on which a call's response has waited for the
//! client to take its data (HTTP/2 flow control) for `limits.idle_timeout`
//! is dropped at once: a client that opens calls and never reads their
//! responses holds no connection, call or response longer than that. The
//! server also pings a connection that has sent nothing for
//! [`KEEPALIVE_INTERVAL`] and drops it if the ping is not answered within
//! [`KEEPALIVE_TIMEOUT`].
//!
//! Draining (`stop` completes, on SIGTERM): the listener is closed at once
//! (no new connection is accepted), every connection is asked to close
//! (GOAWAY: calls already started go on, new ones go elsewhere), every
//! unary call in flight completes, and every response stream still open
//! (a server-streaming or bidirectional call, such as health `Watch`) ends
//! with UNAVAILABLE so its client reconnects to another server. Connections
//! whose calls are not done within `limits.shutdown_grace_ms` are dropped.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use pin_project_lite::pin_project;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tonic::Status;
use tower::Service;

use crate::config::Limits;
use crate::tls::{CertRefusal, ClientTrust, PeerInfo, PeerStream};

/// How often the server pings an idle HTTP/2 connection to detect a dead
/// peer (pings are not calls: they do not keep a connection open).
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);

/// How long the peer has to answer a keepalive ping.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// A connection's clock ticks four times per idle timeout; a call's wait
/// for the client is remembered by the tick it began in, for this many
/// ticks (see [`ConnControl::waiting`]).
const WAIT_TICKS: u64 = 8;

/// A wait that began this many ticks ago or more has lasted at least the
/// idle timeout (four whole ticks).
const STALLED_TICKS: u64 = 5;

/// The transport settings taken from the limits.
#[derive(Debug, Clone, Copy)]
pub struct Transport {
    max_connections: usize,
    max_connections_per_identity: usize,
    max_connections_per_ip: usize,
    max_handshakes: usize,
    handshake_timeout: Duration,
    idle_timeout: Duration,
    max_concurrent_streams: u32,
    request_timeout: Duration,
    shutdown_grace: Duration,
}

impl Transport {
    /// The settings of `limits`.
    pub fn new(limits: &Limits) -> Self {
        Self {
            max_connections: limits.max_connections,
            max_connections_per_identity: limits.max_connections_per_identity,
            max_connections_per_ip: limits.max_connections_per_ip,
            max_handshakes: limits.max_handshakes,
            handshake_timeout: limits.handshake_timeout,
            idle_timeout: limits.idle_timeout,
            max_concurrent_streams: limits.max_concurrent_streams,
            request_timeout: limits.request_timeout,
            shutdown_grace: limits.shutdown_grace,
        }
    }
}

/// Logs a kind of refusal at most once a second, with the number refused
/// since the last line.
struct RefusalLog {
    state: Mutex<(Option<Instant>, u64)>,
}

impl RefusalLog {
    fn new() -> Self {
        Self {
            state: Mutex::new((None, 0)),
        }
    }

    /// Counts one refusal; returns how many to report if a line is due.
    fn due(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.1 += 1;
        if state
            .0
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            let refused = state.1;
            *state = (Some(Instant::now()), 0);
            Some(refused)
        } else {
            None
        }
    }
}

/// Open connections counted by a key (a client identity, a client
/// address), at most `max` for each.
struct OpenCounts<K> {
    max: usize,
    open: Mutex<HashMap<K, usize>>,
}

/// One connection counted under its key until dropped.
struct OpenSlot<K: Hash + Eq> {
    counts: Arc<OpenCounts<K>>,
    key: K,
}

impl<K: Hash + Eq + Clone> OpenCounts<K> {
    fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// Counts one more connection under `key`, unless it has `max` already.
    fn acquire(self: &Arc<Self>, key: K) -> Option<OpenSlot<K>> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(key.clone()).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(OpenSlot {
            counts: Arc::clone(self),
            key,
        })
    }
}

impl<K: Hash + Eq> Drop for OpenSlot<K> {
    fn drop(&mut self) {
        let mut open = self.counts.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// The open connections of each client identity (`None`: certificates
/// without a usable identity, counted together).
type IdentityCounts = OpenCounts<Option<Arc<str>>>;

/// The source a client address counts under: an IPv4 address (an
/// IPv4-mapped IPv6 address counts as its IPv4 address), or the /64 prefix
/// of an IPv6 address, which one host may hold whole.
fn source(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX))),
        },
    }
}

/// What serves each call on a connection: the request edge in front of
/// the services (see `crate::edge`). Every layer of it is always ready.
pub trait CallService:
    Service<
        http::Request<Incoming>,
        Response = http::Response<tonic::body::Body>,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<S> CallService for S where
    S: Service<
            http::Request<Incoming>,
            Response = http::Response<tonic::body::Body>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// Serves `service` on `listener` until `stop` completes; then stops
/// accepting, asks every connection to close (GOAWAY) and waits for them:
/// unary calls in progress finish and response streams end UNAVAILABLE,
/// within `limits.shutdown_grace_ms`.
pub async fn serve<S: CallService + Sync>(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    trust: Arc<ClientTrust>,
    service: S,
    transport: Transport,
    stop: impl Future<Output = ()>,
) {
    let handshakes = Arc::new(Semaphore::new(transport.max_handshakes));
    let slots = Arc::new(Semaphore::new(transport.max_connections));
    let full = Arc::new(RefusalLog::new());
    let busy = RefusalLog::new();
    let identities = IdentityCounts::new(transport.max_connections_per_identity);
    let identity_full = Arc::new(RefusalLog::new());
    // 0: no cap per address.
    let sources = (transport.max_connections_per_ip > 0)
        .then(|| OpenCounts::new(transport.max_connections_per_ip));
    let source_full = RefusalLog::new();
    let mut http = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    http.timer(TokioTimer::new())
        .max_concurrent_streams(transport.max_concurrent_streams)
        .keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT);
    let (closing_tx, closing_rx) = watch::channel(false);
    let mut stop = std::pin::pin!(stop);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = &mut stop => break,
        };
        let (tcp, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Counted from now until the connection ends, handshake included.
        let source_slot = match &sources {
            None => None,
            Some(sources) => match sources.acquire(source(peer.ip())) {
                Some(slot) => Some(slot),
                None => {
                    drop(tcp);
                    if let Some(refused) = source_full.due() {
                        tracing::warn!(
                            %peer,
                            max_connections_per_ip = transport.max_connections_per_ip,
                            refused,
                            "connection refused: too many connections from this address"
                        );
                    }
                    continue;
                }
            },
        };
        // No connection slot free: not worth a handshake.
        if slots.available_permits() == 0 {
            drop(tcp);
            refuse_full(&full, peer, transport.max_connections);
            continue;
        }
        let Ok(handshake) = Arc::clone(&handshakes).try_acquire_owned() else {
            drop(tcp);
            if let Some(refused) = busy.due() {
                tracing::warn!(
                    %peer,
                    max_handshakes = transport.max_handshakes,
                    refused,
                    "connection refused: too many TLS handshakes in progress"
                );
            }
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let trust = Arc::clone(&trust);
        let slots = Arc::clone(&slots);
        let full = Arc::clone(&full);
        let identities = Arc::clone(&identities);
        let identity_full = Arc::clone(&identity_full);
        let service = service.clone();
        let http = http.clone();
        let mut closing = closing_rx.clone();
        tokio::spawn(async move {
            let _source_slot = source_slot;
            let generation = trust.generation();
            let handshake_result = tokio::select! {
                r = tokio::time::timeout(transport.handshake_timeout, acceptor.accept(tcp)) => r,
                _ = closing.changed() => return,
            };
            drop(handshake);
            let tls = match handshake_result {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::warn!(%peer, error = %e, "TLS handshake refused");
                    return;
                }
                Err(_) => {
                    tracing::warn!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            // Only established connections hold a slot.
            let Ok(slot) = slots.try_acquire_owned() else {
                refuse_full(&full, peer, transport.max_connections);
                return;
            };
            let stream = PeerStream::new(tls, peer, &trust, generation, slot);
            // A resumed session skipped certificate verification: its
            // certificate may have expired or been revoked since the
            // session began.
            if let Err(refusal) = stream.check_certificate() {
                tracing::warn!(%peer, reason = refusal.message(), "TLS session refused");
                return;
            }
            let identity = stream.info().identity.clone();
            let Some(_identity_slot) = identities.acquire(identity.clone()) else {
                if let Some(refused) = identity_full.due() {
                    tracing::warn!(
                        %peer,
                        identity = identity.as_deref(),
                        max_connections_per_identity = transport.max_connections_per_identity,
                        refused,
                        "connection refused: too many open connections for this identity"
                    );
                }
                return;
            };
            serve_connection(stream, http, service, transport, closing).await;
        });
    }
    drop(listener);
    tracing::info!("shutting down: draining calls in flight");
    let _ = closing_tx.send(true);
    drop(closing_rx);
    // Every handshake and connection task holds a receiver; each connection
    // ends within the grace period (a little more for the last writes).
    let all_closed = tokio::time::timeout(
        transport.shutdown_grace + Duration::from_millis(500),
        closing_tx.closed(),
    )
    .await;
    if all_closed.is_err() {
        tracing::warn!("connections still open after the shutdown grace period; exiting");
    }
}

fn refuse_full(log: &RefusalLog, peer: SocketAddr, max_connections: usize) {
    if let Some(refused) = log.due() {
        tracing::warn!(
            %peer,
            max_connections,
            refused,
            "connection refused: too many open connections"
        );
    }
}

/// Why a connection is being closed by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CloseReason {
    CertificateInvalid,
    Idle,
    /// A response waited for the client to take its data for the idle
    /// timeout.
    Stalled,
    ShuttingDown,
}

/// What the calls of one connection share with the task serving it.
struct ConnControl {
    /// Calls in progress (response not yet fully sent).
    in_flight: AtomicUsize,
    /// Bumped when a call starts and when it ends.
    activity: AtomicU64,
    /// Set when the client certificate is found no longer valid (by a call,
    /// or by the connection on a trust change or a tick): the connection
    /// closes and its open response streams end UNAUTHENTICATED.
    refused: watch::Sender<Option<CertRefusal>>,
    /// The connection's clock, in ticks of a quarter of the idle timeout.
    tick: AtomicU64,
    /// Calls whose response handed the transport a chunk of data that the
    /// client has not taken yet (the transport asks for the next chunk only
    /// once the client's flow-control window let the last one out),
    /// counted by the tick their wait began in, modulo [`WAIT_TICKS`].
    waiting: [AtomicUsize; WAIT_TICKS as usize],
    /// True once the server drains: open response streams end.
    closing: watch::Receiver<bool>,
}

impl ConnControl {
    /// Whether a call has waited for the client since [`STALLED_TICKS`]
    /// ticks before `tick` or longer. Waits that long end the connection,
    /// so no count older than [`WAIT_TICKS`] is ever left to alias a new
    /// one.
    fn stalled(&self, tick: u64) -> bool {
        (STALLED_TICKS..WAIT_TICKS).any(|age| {
            // Before tick `age` this names a slot no wait has used yet.
            let slot = tick.wrapping_sub(age) % WAIT_TICKS;
            self.waiting[slot as usize].load(Ordering::Relaxed) > 0
        })
    }
}

/// Counts a call in its connection's accounting until dropped (when the
/// response body is done or dropped), and its waits for the client.
struct CallGuard {
    control: Arc<ConnControl>,
    /// The slot of [`ConnControl::waiting`] counting this call's wait for
    /// the client, while it waits.
    waiting: Option<usize>,
}

impl CallGuard {
    fn new(control: &Arc<ConnControl>) -> Self {
        control.in_flight.fetch_add(1, Ordering::Relaxed);
        control.activity.fetch_add(1, Ordering::Relaxed);
        Self {
            control: Arc::clone(control),
            waiting: None,
        }
    }

    /// The response handed over a chunk: it waits for the client.
    fn wait(&mut self) {
        let slot = (self.control.tick.load(Ordering::Relaxed) % WAIT_TICKS) as usize;
        self.control.waiting[slot].fetch_add(1, Ordering::Relaxed);
        self.waiting = Some(slot);
    }

    /// The transport asked for more: the client took the last chunk.
    fn taken(&mut self) {
        if let Some(slot) = self.waiting.take() {
            self.control.waiting[slot].fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.taken();
        self.control.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.control.activity.fetch_add(1, Ordering::Relaxed);
    }
}

async fn serve_connection<S: CallService>(
    stream: PeerStream,
    http: hyper::server::conn::http2::Builder<TokioExecutor>,
    service: S,
    transport: Transport,
    mut closing: watch::Receiver<bool>,
) {
    let control = Arc::new(ConnControl {
        in_flight: AtomicUsize::new(0),
        activity: AtomicU64::new(0),
        refused: watch::Sender::new(None),
        tick: AtomicU64::new(0),
        waiting: Default::default(),
        closing: closing.clone(),
    });
    let info = stream.info().clone();
    let peer = info.addr;
    let cert = info.cert.clone();
    let identity = info.identity.clone();
    // Subscribed before the check below: no reload is missed between the
    // two.
    let mut trust_changes = cert.as_ref().map(|c| c.trust_changes());
    let mut refusals = control.refused.subscribe();
    // The certificate, checked again now (cheap unless the trust changed
    // since the handshake); a refusal is acted on in the loop.
    let check = || cert.as_ref().map_or(Ok(()), |c| c.check());
    if let Err(refusal) = check() {
        control.refused.send_replace(Some(refusal));
    }
    let service = ConnService {
        service,
        info,
        control: Arc::clone(&control),
    };
    let conn = http.serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    // Idle means no call in progress and none started or ended for four
    // ticks in a row.
    let mut ticks = tokio::time::interval(transport.idle_timeout / 4);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    let mut last_activity = 0;
    let mut idle_ticks = 0;
    let mut closed: Option<CloseReason> = None;
    // Once closing, the calls in progress have this long to finish.
    let grace = tokio::time::sleep(Duration::MAX / 4);
    let mut grace = std::pin::pin!(grace);
    loop {
        let reason = tokio::select! {
            result = &mut conn => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                break;
            }
            () = &mut grace, if closed.is_some() => {
                tracing::info!(%peer, "connection closed: calls did not finish in time");
                break;
            }
            () = refused(&mut refusals), if closed.is_none() => CloseReason::CertificateInvalid,
            changed = changed(&mut trust_changes), if closed.is_none() && trust_changes.is_some() => {
                if changed.is_err() {
                    trust_changes = None;
                }
                // The CA bundle or the CRLs were reloaded.
                match check() {
                    Ok(()) => continue,
                    Err(refusal) => {
                        control.refused.send_replace(Some(refusal));
                        CloseReason::CertificateInvalid
                    }
                }
            }
            _ = closing.changed(), if closed.is_none() => CloseReason::ShuttingDown,
            _ = ticks.tick(), if closed.is_none() => {
                let tick = control.tick.fetch_add(1, Ordering::Relaxed) + 1;
                if let Err(refusal) = check() {
                    // Expired since the last call.
                    control.refused.send_replace(Some(refusal));
                    CloseReason::CertificateInvalid
                } else if control.stalled(tick) {
                    CloseReason::Stalled
                } else {
                    let activity = control.activity.load(Ordering::Relaxed);
                    if activity != last_activity || control.in_flight.load(Ordering::Relaxed) > 0 {
                        last_activity = activity;
                        idle_ticks = 0;
                        continue;
                    }
                    idle_ticks += 1;
                    if idle_ticks < 4 {
                        continue;
                    }
                    CloseReason::Idle
                }
            }
        };
        match reason {
            CloseReason::CertificateInvalid => tracing::warn!(
                %peer,
                identity = identity.as_deref(),
                reason = control.refused.borrow().map_or("", CertRefusal::message),
                "closing the connection: its client certificate is no longer valid"
            ),
            CloseReason::Idle => tracing::info!(
                %peer,
                idle_timeout_ms = transport.idle_timeout.as_millis() as u64,
                "closing an idle connection"
            ),
            CloseReason::Stalled => {
                // Its calls cannot finish: the client takes no data.
                tracing::warn!(
                    %peer,
                    idle_timeout_ms = transport.idle_timeout.as_millis() as u64,
                    "closing a connection whose client takes no response data"
                );
                closed = Some(reason);
                break;
            }
            CloseReason::ShuttingDown => {}
        }
        closed = Some(reason);
        let grace_period = if reason == CloseReason::ShuttingDown {
            transport.shutdown_grace
        } else {
            transport.request_timeout
        };
        grace
            .as_mut()
            .reset(tokio::time::Instant::now() + grace_period);
        conn.as_mut().graceful_shutdown();
    }
    tracing::debug!(%peer, reason = ?closed, "connection closed");
}

/// Resolves once a refusal of the client certificate is set (never, once
/// the connection's control is gone).
async fn refused(refusals: &mut watch::Receiver<Option<CertRefusal>>) {
    if refusals.wait_for(Option::is_some).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The next change of the trust, if the connection watches it.
async fn changed(
    changes: &mut Option<watch::Receiver<u64>>,
) -> Result<(), watch::error::RecvError> {
    match changes {
        Some(changes) => changes.changed().await,
        None => std::future::pending().await,
    }
}

/// The per-connection service: checks the client certificate, hands the
/// connection's [`PeerInfo`] to the call and counts it; the edge does the
/// rest (deadline included).
#[derive(Clone)]
struct ConnService<S> {
    service: S,
    info: PeerInfo,
    control: Arc<ConnControl>,
}

impl<S: CallService> hyper::service::Service<http::Request<Incoming>> for ConnService<S> {
    type Response = http::Response<CallBody>;
    type Error = Infallible;
    type Future = CallFuture<S::Future>;

    fn call(&self, mut request: http::Request<Incoming>) -> Self::Future {
        // The certificate passed the handshake; it must still be valid now
        // (not expired, not revoked by a CRL loaded since), for every
        // service. A timestamp compare and an atomic load unless the CRLs
        // changed since the last call.
        let verdict = self
            .info
            .cert
            .as_ref()
            .map_or(Err(CertRefusal::Unreadable), |c| c.check());
        if let Err(refusal) = verdict {
            tracing::warn!(
                rpc = request.uri().path(),
                peer = %self.info.addr,
                identity = self.info.identity.as_deref(),
                reason = refusal.message(),
                "client certificate no longer valid"
            );
            self.control.refused.send_replace(Some(refusal));
            let response = Status::unauthenticated(refusal.message())
                .into_http::<tonic::body::Body>()
                .map(|body| CallBody::new(body, None));
            return CallFuture::Refused {
                response: Some(response),
            };
        }
        let guard = CallGuard::new(&self.control);
        request.extensions_mut().insert(self.info.clone());
        // Every layer of the edge is always ready.
        let mut service = self.service.clone();
        CallFuture::Served {
            inner: service.call(request),
            guard: Some(guard),
        }
    }
}

pin_project! {
    /// A call on its way through the edge, or refused by the transport.
    #[project = CallFutureProj]
    enum CallFuture<F> {
        Served { #[pin] inner: F, guard: Option<CallGuard> },
        Refused { response: Option<http::Response<CallBody>> },
    }
}

impl<F> Future for CallFuture<F>
where
    F: Future<Output = Result<http::Response<tonic::body::Body>, Infallible>>,
{
    type Output = Result<http::Response<CallBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            CallFutureProj::Served { inner, guard } => match inner.poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Ok(response)) => {
                    Poll::Ready(Ok(response.map(|body| CallBody::new(body, guard.take()))))
                }
                Poll::Ready(Err(never)) => match never {},
            },
            CallFutureProj::Refused { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                None => Poll::Pending,
            },
        }
    }
}

/// Why the server ends a response stream before its service does.
#[derive(Debug, Clone, Copy)]
enum StreamEnd {
    /// The server drains: UNAVAILABLE, the client reconnects elsewhere.
    Draining,
    /// The connection's client certificate no longer passes:
    /// UNAUTHENTICATED.
    Refused(CertRefusal),
}

/// A response body that keeps its call counted until it is sent, counts
/// its waits for the client to take its data, and ends a response stream
/// with UNAVAILABLE when the server drains, or UNAUTHENTICATED when the
/// connection's client certificate no longer passes.
struct CallBody {
    body: tonic::body::Body,
    call: Option<CallGuard>,
    /// Resolves when the server drains or the certificate is refused; made
    /// the first time the body has nothing to send (a unary response never
    /// gets one: it is whole once its head is).
    draining: Option<Pin<Box<dyn Future<Output = StreamEnd> + Send>>>,
    /// The body was ended by the drain.
    ended: bool,
}

impl CallBody {
    fn new(body: tonic::body::Body, call: Option<CallGuard>) -> Self {
        Self {
            body,
            call,
            draining: None,
            ended: false,
        }
    }

    /// Whether the stream must end now, and why; registers for the wake-up
    /// otherwise.
    fn drained(&mut self, cx: &mut Context<'_>) -> Option<StreamEnd> {
        let call = self.call.as_ref()?;
        let draining = self.draining.get_or_insert_with(|| {
            let mut closing = call.control.closing.clone();
            let mut refused = call.control.refused.subscribe();
            Box::pin(async move {
                tokio::select! {
                    // An error: the server is gone, which is draining too.
                    _ = closing.wait_for(|closing| *closing) => StreamEnd::Draining,
                    refusal = refused.wait_for(Option::is_some) => {
                        let refusal = refusal.ok().and_then(|r| *r);
                        refusal.map_or(StreamEnd::Draining, StreamEnd::Refused)
                    }
                }
            })
        });
        match draining.as_mut().poll(cx) {
            Poll::Ready(end) => Some(end),
            Poll::Pending => None,
        }
    }
}

/// The trailers that end a response stream the server ends.
fn drained_trailers(end: StreamEnd) -> http::HeaderMap {
    let mut trailers = http::HeaderMap::new();
    let status = match end {
        StreamEnd::Draining => Status::unavailable("the server is shutting down; reconnect"),
        StreamEnd::Refused(refusal) => Status::unauthenticated(refusal.message()),
    };
    let _ = status.add_header(&mut trailers);
    trailers
}

impl hyper::body::Body for CallBody {
    type Data = hyper::body::Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        // Asked again: the last chunk went out.
        if let Some(call) = &mut this.call {
            call.taken();
        }
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if polled.is_pending()
            && let Some(end) = this.drained(cx)
        {
            this.ended = true;
            return Poll::Ready(Some(Ok(Frame::trailers(drained_trailers(end)))));
        }
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && frame.is_data()
            && let Some(call) = &mut this.call
        {
            call.wait();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn control() -> Arc<ConnControl> {
        Arc::new(ConnControl {
            in_flight: AtomicUsize::new(0),
            activity: AtomicU64::new(0),
            refused: watch::Sender::new(None),
            tick: AtomicU64::new(0),
            waiting: Default::default(),
            closing: watch::channel(false).1,
        })
    }

    /// A wait counts as stalled from the fifth tick after the one it began
    /// in (at least four whole ticks: the idle timeout), never before, and
    /// ends when the client takes the chunk or the call is dropped.
    #[test]
    fn a_wait_for_the_client_stalls_after_four_whole_ticks() {
        for began in [0, 1, 6, 7, 8, 13, 1000] {
            let control = control();
            control.tick.store(began, Ordering::Relaxed);
            let mut call = CallGuard::new(&control);
            call.wait();
            for tick in began..began + STALLED_TICKS {
                assert!(!control.stalled(tick), "began {began}, tick {tick}");
            }
            assert!(control.stalled(began + STALLED_TICKS), "began {began}");
            call.taken();
            assert!(!control.stalled(began + STALLED_TICKS), "taken");
            call.wait();
            drop(call);
            assert!(!control.stalled(began + STALLED_TICKS), "dropped");
            assert_eq!(control.in_flight.load(Ordering::Relaxed), 0);
        }
    }
}
