//! A local HTTPS upstream for relay and forwarder tests: listens on
//! 127.0.0.1 with a certificate for the names it is given, signed by its own
//! test CA, speaks HTTP/1.1 and HTTP/2 (by ALPN), and records every request
//! it receives so a test can check what reached it.
//!
//! What it answers depends on the path:
//!
//! - `/echo...`: 200 with the request's query string and every request
//!   header echoed in the body (`name: value` lines after the query line),
//!   and the `Authorization` header, if any, echoed in the response header
//!   `x-echo-authorization`;
//! - `/redirect...`: 302 to `/elsewhere`;
//! - `/status/NNN`: status NNN with an empty body;
//! - `/fail-once...`: 500 the first time this exact path is requested, 200
//!   `ok` after that (a receiver that recovers);
//! - `/slow/MS`: waits MS milliseconds, then 200;
//! - `/drip/MS`: 200 with a body of one byte every MS milliseconds, never
//!   ending (until the client goes away);
//! - `/bytes/N`: 200 with N bytes of `x`;
//! - `/encoded`: the `/echo` text labelled `Content-Encoding: gzip` (as an
//!   upstream that compresses whatever it is asked would answer);
//! - `/transfer-encoded`: the `/echo` text labelled `Transfer-Encoding:
//!   gzip` (over HTTP/1.1 hyper adds `chunked` after it);
//! - `/shout`: the `/echo` text upper-cased, the `Authorization` header's
//!   value upper-cased in `x-echo-authorization`;
//! - `/name`: 200 `ok` with a response header whose name is the
//!   `x-echo-as-name` request header's value;
//! - `/padded/N`: 200 with the `/echo` text between two runs of N bytes of
//!   `x`, sent in frames of 997 bytes (so an echoed value is cut across
//!   frames);
//! - `/files/...`: the file under the directory given by
//!   [`Upstream::serve_dir`], 404 if absent;
//! - anything else: 200 `ok`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio_rustls::rustls::{self, ServerConfig};

use crate::TestCa;

/// One request the upstream received.
#[derive(Debug, Clone)]
pub struct Received {
    /// HTTP version: `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
    /// The method.
    pub method: String,
    /// Path and query, as received.
    pub path_and_query: String,
    /// The `Host` header (HTTP/1.1) or `:authority` (HTTP/2).
    pub authority: String,
    /// The TLS server name the client sent (SNI), if any.
    pub server_name: Option<String>,
    /// Every header, in order, values as lossy UTF-8.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Received {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What an upstream received: every request in order, and how many came
/// for each path and query (so a request's count of earlier ones is not a
/// scan of all of them: a benchmark sends hundreds of thousands).
#[derive(Default)]
struct Log {
    all: Vec<Received>,
    per_path: std::collections::HashMap<String, usize>,
}

/// A running upstream; stops when dropped.
pub struct Upstream {
    addr: SocketAddr,
    ca: TestCa,
    received: Arc<Mutex<Log>>,
    dir: Arc<Mutex<Option<PathBuf>>>,
    connections: Arc<std::sync::atomic::AtomicUsize>,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
    task: JoinHandle<()>,
}

impl Upstream {
    /// Starts an HTTPS upstream with a certificate for `names` (DNS names,
    /// wildcards such as `*.example.test` allowed, and `127.0.0.1`).
    pub async fn start(names: &[&str]) -> Self {
        Self::start_with_alpn(names, &[b"h2", b"http/1.1"]).await
    }

    /// As [`Upstream::start`], offering only HTTP/1.1 by ALPN.
    pub async fn start_http1(names: &[&str]) -> Self {
        Self::start_with_alpn(names, &[b"http/1.1"]).await
    }

    async fn start_with_alpn(names: &[&str], alpn: &[&[u8]]) -> Self {
        let ca = TestCa::new("strongroom e2e upstream CA");
        let key = KeyPair::generate().expect("upstream key");
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("upstream cert params");
        params
            .distinguished_name
            .push(DnType::CommonName, "upstream");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = ca.sign_server(&params, &key);
        let certs = vec![CertificateDer::from_pem_slice(cert.as_bytes()).expect("upstream cert")];
        let key = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).expect("key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("upstream tls config");
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let received = Arc::new(Mutex::new(Log::default()));
        let dir = Arc::new(Mutex::new(None));
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let task = tokio::spawn(accept_loop(
            listener,
            acceptor,
            Arc::clone(&received),
            Arc::clone(&dir),
            Arc::clone(&connections),
            Arc::clone(&accepted),
        ));
        Self {
            addr,
            ca,
            received,
            dir,
            connections,
            accepted,
            task,
        }
    }

    /// The loopback address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The CA its certificate is signed by, PEM.
    pub fn ca_pem(&self) -> &str {
        self.ca.pem()
    }

    /// Serves the files under `dir` at `/files/...`.
    pub fn serve_dir(&self, dir: PathBuf) {
        *self.dir.lock().expect("dir lock") = Some(dir);
    }

    /// How many TLS connections were accepted so far (handshakes
    /// completed).
    pub fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// How many TCP connections were accepted so far, whether or not their
    /// TLS handshake completed.
    pub fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Every request received so far, in order.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("received lock").all.clone()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    received: Arc<Mutex<Log>>,
    dir: Arc<Mutex<Option<PathBuf>>>,
    connections: Arc<std::sync::atomic::AtomicUsize>,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        // As a real server does: a response's frames are not held back
        // waiting for the peer's acknowledgement (Nagle).
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let received = Arc::clone(&received);
        let dir = Arc::clone(&dir);
        let connections = Arc::clone(&connections);
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            connections.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let (_, session) = tls.get_ref();
            let server_name = session.server_name().map(str::to_owned);
            let h2 = session.alpn_protocol() == Some(b"h2");
            let service = hyper::service::service_fn(move |request| {
                handle(
                    request,
                    server_name.clone(),
                    Arc::clone(&received),
                    Arc::clone(&dir),
                )
            });
            let io = TokioIo::new(tls);
            if h2 {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(io, service)
                    .await;
            } else {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            }
        });
    }
}

async fn handle(
    request: Request<Incoming>,
    server_name: Option<String>,
    received: Arc<Mutex<Log>>,
    dir: Arc<Mutex<Option<PathBuf>>>,
) -> Result<Response<BoxBody<Bytes, std::convert::Infallible>>, std::convert::Infallible> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    let authority = parts
        .uri
        .authority()
        .map(|a| a.to_string())
        .or_else(|| {
            parts
                .headers
                .get(hyper::header::HOST)
                .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
        })
        .unwrap_or_default();
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let record = Received {
        version: format!("{:?}", parts.version),
        method: parts.method.as_str().to_owned(),
        path_and_query: path_and_query.clone(),
        authority,
        server_name,
        headers: headers.clone(),
        body,
    };
    let earlier = {
        let mut log = received.lock().expect("received lock");
        let seen = log.per_path.entry(path_and_query.clone()).or_default();
        let earlier = *seen;
        *seen += 1;
        log.all.push(record);
        earlier
    };

    let path = parts.uri.path();
    let reply = |status: u16, body: Vec<u8>| {
        Response::builder()
            .status(status)
            .body(Full::new(Bytes::from(body)).boxed())
            .expect("response")
    };
    let mut echo = format!("query: {}\n", parts.uri.query().unwrap_or(""));
    for (name, value) in &headers {
        echo.push_str(&format!("{name}: {value}\n"));
    }
    let response = if path.starts_with("/fail-once") {
        if earlier == 0 {
            reply(500, b"receiver-body-not-to-be-logged".to_vec())
        } else {
            reply(200, b"ok".to_vec())
        }
    } else if let Some(n) = path.strip_prefix("/padded/") {
        let pad = vec![b'x'; n.parse().unwrap_or(0)];
        let mut all = pad.clone();
        all.extend_from_slice(echo.as_bytes());
        all.extend_from_slice(&pad);
        let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = all
            .chunks(997)
            .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        Response::builder()
            .status(200)
            .body(StreamBody::new(futures_iter(frames)).boxed())
            .expect("response")
    } else if path == "/encoded" {
        let mut response = reply(200, echo.into_bytes());
        response.headers_mut().insert(
            hyper::header::CONTENT_ENCODING,
            hyper::header::HeaderValue::from_static("gzip"),
        );
        response
    } else if path == "/transfer-encoded" {
        let mut response = reply(200, echo.into_bytes());
        response.headers_mut().insert(
            hyper::header::TRANSFER_ENCODING,
            hyper::header::HeaderValue::from_static("gzip"),
        );
        response
    } else if path == "/shout" {
        let mut response = reply(200, echo.to_uppercase().into_bytes());
        if let Some(auth) = parts.headers.get(hyper::header::AUTHORIZATION)
            && let Ok(v) =
                hyper::header::HeaderValue::from_bytes(&auth.as_bytes().to_ascii_uppercase())
        {
            response.headers_mut().insert("x-echo-authorization", v);
        }
        response
    } else if path == "/name" {
        let mut response = reply(200, b"ok".to_vec());
        if let Some(name) = parts
            .headers
            .get("x-echo-as-name")
            .and_then(|v| hyper::header::HeaderName::from_bytes(v.as_bytes()).ok())
        {
            response
                .headers_mut()
                .insert(name, hyper::header::HeaderValue::from_static("1"));
        }
        response
    } else if path.starts_with("/echo") {
        let text = echo;
        let mut response = reply(200, text.into_bytes());
        if let Some(auth) = parts.headers.get(hyper::header::AUTHORIZATION) {
            response
                .headers_mut()
                .insert("x-echo-authorization", auth.clone());
        }
        response
    } else if path.starts_with("/redirect") {
        let mut response = reply(302, Vec::new());
        response.headers_mut().insert(
            hyper::header::LOCATION,
            hyper::header::HeaderValue::from_static("/elsewhere"),
        );
        response
    } else if let Some(code) = path.strip_prefix("/status/") {
        reply(code.parse().unwrap_or(500), Vec::new())
    } else if let Some(n) = path.strip_prefix("/big/") {
        // `n` bytes in one body with its length declared.
        reply(200, vec![b'y'; n.parse().unwrap_or(0)])
    } else if let Some(ms) = path.strip_prefix("/slow/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
        reply(200, b"slow".to_vec())
    } else if path == "/flood" {
        // 64 KiB parts as fast as the client takes them, for ever (until
        // the client goes away).
        let (tx, rx) =
            tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::convert::Infallible>>(1);
        tokio::spawn(async move {
            let part = Bytes::from(vec![b'f'; 64 * 1024]);
            while tx.send(Ok(Frame::data(part.clone()))).await.is_ok() {}
        });
        Response::builder()
            .status(200)
            .body(StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)).boxed())
            .expect("response")
    } else if let Some(ms) = path.strip_prefix("/drip/") {
        // One byte every `ms` milliseconds, for ever (until the client
        // goes away).
        let every = Duration::from_millis(ms.parse().unwrap_or(100));
        let (tx, rx) =
            tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::convert::Infallible>>(1);
        tokio::spawn(async move {
            loop {
                if tx
                    .send(Ok(Frame::data(Bytes::from_static(b"."))))
                    .await
                    .is_err()
                {
                    return;
                }
                tokio::time::sleep(every).await;
            }
        });
        Response::builder()
            .status(200)
            .body(StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)).boxed())
            .expect("response")
    } else if let Some(n) = path.strip_prefix("/bytes/") {
        reply(200, vec![b'x'; n.parse().unwrap_or(0)])
    } else if let Some(file) = path.strip_prefix("/files/") {
        let root = dir.lock().expect("dir lock").clone();
        match root {
            Some(root) if !file.split('/').any(|s| s == "..") => {
                match tokio::fs::read(root.join(file)).await {
                    Ok(data) => reply(200, data),
                    Err(_) => reply(404, Vec::new()),
                }
            }
            _ => reply(404, Vec::new()),
        }
    } else {
        reply(200, b"ok".to_vec())
    };
    Ok(response)
}

/// A stream of `items`, one at a time, yielding between them so each is
/// its own write.
fn futures_iter<T: Send + 'static>(items: Vec<T>) -> tokio_stream::wrappers::ReceiverStream<T> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        for item in items {
            if tx.send(item).await.is_err() {
                return;
            }
            tokio::task::yield_now().await;
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
