//! The local forwarder of `strongroom run`: an HTTP proxy on 127.0.0.1 that
//! only the child can use (a per-run credential in the proxy URL, checked in
//! constant time on every request), so other local processes cannot borrow
//! the agent's grants through it.
//!
//! - `CONNECT host:port` tunnels are terminated with a certificate for
//!   `host` from the per-run CA ([`ca`]), and the HTTP/1.1 requests inside
//!   are routed ([`routes`]): through the server's relay ([`relay`]) when
//!   they carry a placeholder or go to a destination of a credential
//!   injected by template; otherwise the forwarder sends them on itself
//!   ([`upstream`]), verifying the real upstream's certificate.
//! - Plain `http://` requests are passed on; one carrying a placeholder is
//!   never passed on: it is handed to the server's relay, which refuses it
//!   (403 `placeholder_over_http`, a credential only ever travels over
//!   HTTPS) and records the alert, so the misuse is seen by the tenant and
//!   not only by this process.

mod ca;
mod relay;
mod routes;
mod upstream;

use std::convert::Infallible;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, combinators::UnsyncBoxBody};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use subtle::ConstantTimeEq as _;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use zeroize::Zeroizing;

pub(crate) use ca::RunCa;
pub(crate) use relay::Relay;
pub(crate) use routes::{Injection, Routes, new_placeholder};
pub(crate) use upstream::{Upstream, system_roots_pem};

use crate::Error;

/// An error of a streamed body.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Every response body the forwarder produces.
pub(crate) type Body = UnsyncBoxBody<Bytes, BoxError>;

/// The user name in the proxy URL; the password is the per-run token.
const PROXY_USER: &str = "strongroom";

/// What the forwarder works with.
pub(crate) struct Settings {
    pub ca: Arc<RunCa>,
    pub routes: Routes,
    pub upstream: Upstream,
    /// The relay; `None` when the run injects nothing (every request passes
    /// through).
    pub relay: Option<Relay>,
}

struct Shared {
    /// `PROXY_USER:token`, what `Proxy-Authorization: Basic` must carry.
    credentials: Zeroizing<Vec<u8>>,
    settings: Settings,
}

/// A running forwarder; stops when dropped.
pub(crate) struct Forwarder {
    proxy_url: Zeroizing<String>,
    task: JoinHandle<()>,
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Forwarder {
    /// Listens on a random port of 127.0.0.1 with a fresh proxy credential.
    pub(crate) async fn start(settings: Settings) -> Result<Self, Error> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| Error::Forwarder(format!("cannot listen on 127.0.0.1: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::Forwarder(e.to_string()))?;
        let mut random = Zeroizing::new([0u8; 32]);
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), random.as_mut())
            .map_err(|_| Error::Forwarder("no randomness for the proxy credential".into()))?;
        let token = Zeroizing::new(
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random.as_ref()),
        );
        let credentials = Zeroizing::new(format!("{PROXY_USER}:{}", token.as_str()).into_bytes());
        let proxy_url = Zeroizing::new(format!("http://{PROXY_USER}:{}@{addr}", token.as_str()));
        let shared = Arc::new(Shared {
            credentials,
            settings,
        });
        let task = tokio::spawn(accept_loop(listener, shared));
        Ok(Self { proxy_url, task })
    }

    /// `http://strongroom:TOKEN@127.0.0.1:PORT`, for the child's proxy
    /// variables.
    pub(crate) fn proxy_url(&self) -> &str {
        &self.proxy_url
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            // Out of file descriptors, most likely: wait instead of spinning.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                proxy_request(Arc::clone(&shared), request)
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .with_upgrades()
                .await;
        });
    }
}

/// A short text response of the forwarder's own.
pub(crate) fn text(status: StatusCode, message: &str) -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::from(format!("{message}\n")))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Headers that belong to one connection, never passed on.
pub(crate) fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

fn strip_hop_by_hop(headers: &mut http::HeaderMap) {
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|n| is_hop_by_hop(n))
        .cloned()
        .collect();
    for name in names {
        headers.remove(name);
    }
}

/// Whether the request carries this run's proxy credential, compared in
/// constant time.
fn authorized(shared: &Shared, headers: &http::HeaderMap) -> bool {
    let Some(value) = headers.get(http::header::PROXY_AUTHORIZATION) else {
        return false;
    };
    let Some((scheme, encoded)) = value.to_str().ok().and_then(|v| v.trim().split_once(' ')) else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return false;
    }
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    let decoded = Zeroizing::new(decoded);
    decoded.len() == shared.credentials.len()
        && bool::from(decoded.as_slice().ct_eq(shared.credentials.as_slice()))
}

async fn proxy_request(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    if !authorized(&shared, request.headers()) {
        let mut response = text(
            StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            "strongroom run: this proxy serves only the command strongroom run started",
        );
        response.headers_mut().insert(
            http::header::PROXY_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"strongroom run\""),
        );
        return Ok(response);
    }
    if request.method() == http::Method::CONNECT {
        return Ok(connect(shared, request));
    }
    Ok(plain(shared, request).await)
}

/// `host` without IPv6 brackets, and the port (`default` if none).
fn host_port(authority: &http::uri::Authority, default: u16) -> (String, u16) {
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    (host, authority.port_u16().unwrap_or(default))
}

/// Accepts a tunnel and terminates its TLS with a certificate of the
/// per-run CA for the host asked for.
fn connect(shared: Arc<Shared>, request: Request<Incoming>) -> Response<Body> {
    let Some(authority) = request.uri().authority().cloned() else {
        return text(
            StatusCode::BAD_REQUEST,
            "strongroom run: CONNECT needs host:port",
        );
    };
    let (host, port) = host_port(&authority, 443);
    let server_config = match shared.settings.ca.server_config(&host) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("strongroom run: no certificate for {host}: {e}");
            return text(
                StatusCode::BAD_GATEWAY,
                "strongroom run: cannot open a tunnel",
            );
        }
    };
    tokio::spawn(async move {
        let Ok(upgraded) = hyper::upgrade::on(request).await else {
            return;
        };
        let Ok(tls) = TlsAcceptor::from(server_config)
            .accept(TokioIo::new(upgraded))
            .await
        else {
            return;
        };
        let tunnel = Arc::new(Tunnel {
            host,
            port,
            upstream: tokio::sync::Mutex::new(None),
        });
        let service = hyper::service::service_fn(move |request| {
            tunnel_request(Arc::clone(&shared), Arc::clone(&tunnel), request)
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(tls), service)
            .await;
    });
    Response::new(
        Full::new(Bytes::new())
            .map_err(|never| match never {})
            .boxed_unsync(),
    )
}

/// One tunnel: its destination, and the forwarder's own connection to it
/// for requests that pass through, opened on first use.
struct Tunnel {
    host: String,
    port: u16,
    upstream: tokio::sync::Mutex<Option<SendRequest<Incoming>>>,
}

impl Tunnel {
    /// `https://host[:port]`, the port left out when it is 443.
    fn origin(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == 443 {
            format!("https://{host}")
        } else {
            format!("https://{host}:{}", self.port)
        }
    }
}

async fn tunnel_request(
    shared: Arc<Shared>,
    tunnel: Arc<Tunnel>,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let (parts, body) = request.into_parts();
    // The request must be for the host the tunnel was opened to: that is
    // the destination the relay checks and the certificate was minted for.
    if let Some(host) = parts.headers.get(http::header::HOST) {
        let named = host
            .to_str()
            .ok()
            .and_then(|h| h.parse::<http::uri::Authority>().ok())
            .map(|a| host_port(&a, 443));
        if named != Some((tunnel.host.clone(), tunnel.port)) {
            return Ok(text(
                StatusCode::MISDIRECTED_REQUEST,
                "strongroom run: the Host header does not name the tunnel's destination",
            ));
        }
    }
    let route = shared
        .settings
        .routes
        .route(&tunnel.host, tunnel.port, &parts);
    if !route.is_empty() {
        let Some(relay) = &shared.settings.relay else {
            return Ok(text(StatusCode::BAD_GATEWAY, "strongroom run: no relay"));
        };
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let url = format!("{}{path}", tunnel.origin());
        return Ok(relay.forward(url, parts, body, route).await);
    }
    Ok(pass_through(&shared, &tunnel, parts, body).await)
}

/// Sends a request that needs no credential on over the tunnel's own
/// verified TLS connection to the destination.
async fn pass_through(
    shared: &Shared,
    tunnel: &Tunnel,
    mut parts: http::request::Parts,
    body: Incoming,
) -> Response<Body> {
    strip_hop_by_hop(&mut parts.headers);
    let mut upstream = tunnel.upstream.lock().await;
    let reusable = match upstream.as_mut() {
        Some(sender) => sender.ready().await.is_ok(),
        None => false,
    };
    if !reusable {
        let tls = match shared
            .settings
            .upstream
            .connect_tls(&tunnel.host, tunnel.port)
            .await
        {
            Ok(tls) => tls,
            Err(e) => {
                eprintln!(
                    "strongroom run: cannot reach {}:{}: {e}",
                    tunnel.host, tunnel.port
                );
                return text(
                    StatusCode::BAD_GATEWAY,
                    &format!("strongroom run: cannot reach the destination: {e}"),
                );
            }
        };
        let (sender, connection) =
            match hyper::client::conn::http1::handshake(TokioIo::new(tls)).await {
                Ok(pair) => pair,
                Err(e) => {
                    return text(
                        StatusCode::BAD_GATEWAY,
                        &format!("strongroom run: destination: {e}"),
                    );
                }
            };
        tokio::spawn(connection);
        *upstream = Some(sender);
    }
    let Some(sender) = upstream.as_mut() else {
        return text(
            StatusCode::BAD_GATEWAY,
            "strongroom run: no upstream connection",
        );
    };
    match sender.send_request(Request::from_parts(parts, body)).await {
        Ok(response) => passed_on(response),
        Err(e) => {
            *upstream = None;
            text(
                StatusCode::BAD_GATEWAY,
                &format!("strongroom run: destination: {e}"),
            )
        }
    }
}

/// An upstream's response as the child gets it.
fn passed_on(response: Response<Incoming>) -> Response<Body> {
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, body.map_err(BoxError::from).boxed_unsync())
}

/// A plain-HTTP proxy request (`GET http://host/...`): passed on unless it
/// carries a placeholder, which the server's relay refuses and records.
async fn plain(shared: Arc<Shared>, request: Request<Incoming>) -> Response<Body> {
    let (mut parts, body) = request.into_parts();
    if shared.settings.routes.carries_placeholder(&parts) {
        eprintln!(
            "strongroom run: refused a plain-HTTP request to {} carrying a placeholder",
            parts.uri.host().unwrap_or("?")
        );
        if let (Some(relay), Some(authority)) =
            (&shared.settings.relay, parts.uri.authority().cloned())
        {
            // The relay refuses it (a placeholder never goes over plain
            // HTTP) and raises the alert in the tenant's audit chain.
            let (host, port) = host_port(&authority, 80);
            let route = shared.settings.routes.route(&host, port, &parts);
            let path = parts
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned();
            let url = format!("http://{}{path}", authority.as_str());
            let response = relay.forward(url, parts, body, route).await;
            if response.status() == StatusCode::FORBIDDEN {
                return response;
            }
            // Whatever else the relay answered, nothing is sent.
        }
        return text(
            StatusCode::FORBIDDEN,
            "strongroom run: a placeholder is never sent over plain HTTP; use https://",
        );
    }
    if parts.uri.scheme() != Some(&http::uri::Scheme::HTTP) {
        return text(
            StatusCode::BAD_REQUEST,
            "strongroom run: only http:// URLs and CONNECT are proxied",
        );
    }
    let Some(authority) = parts.uri.authority().cloned() else {
        return text(
            StatusCode::BAD_REQUEST,
            "strongroom run: the URL has no host",
        );
    };
    let (host, port) = host_port(&authority, 80);
    strip_hop_by_hop(&mut parts.headers);
    if !parts.headers.contains_key(http::header::HOST)
        && let Ok(value) = HeaderValue::from_str(authority.as_str())
    {
        parts.headers.insert(http::header::HOST, value);
    }
    let origin_form = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .parse::<http::Uri>();
    let Ok(origin_form) = origin_form else {
        return text(StatusCode::BAD_REQUEST, "strongroom run: invalid URL");
    };
    parts.uri = origin_form;
    let tcp = match shared.settings.upstream.connect_tcp(&host, port).await {
        Ok(tcp) => tcp,
        Err(e) => {
            return text(
                StatusCode::BAD_GATEWAY,
                &format!("strongroom run: cannot reach the destination: {e}"),
            );
        }
    };
    let (mut sender, connection) =
        match hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await {
            Ok(pair) => pair,
            Err(e) => {
                return text(
                    StatusCode::BAD_GATEWAY,
                    &format!("strongroom run: destination: {e}"),
                );
            }
        };
    tokio::spawn(connection);
    match sender.send_request(Request::from_parts(parts, body)).await {
        Ok(response) => passed_on(response),
        Err(e) => text(
            StatusCode::BAD_GATEWAY,
            &format!("strongroom run: destination: {e}"),
        ),
    }
}
