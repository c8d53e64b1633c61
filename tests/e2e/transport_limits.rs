//! Transport limits: the server advertises its per-connection HTTP/2
//! concurrent-stream limit in its SETTINGS; connections beyond the cap on
//! open connections are refused; TCP connections that never complete a TLS
//! handshake take none of those slots (they count against their own, smaller
//! limit and time out); one client address holds a capped number of
//! connections, handshakes included; idle connections are closed; a call
//! past its deadline is answered DEADLINE_EXCEEDED. Transport only: SQLite
//! is enough.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use strongroom_e2e::{Backend, CertKind, OPERATOR, Options, TestServer};
use strongroom_proto::v1 as pb;
use strongroom_proto::v1::admin_service_client::AdminServiceClient;
use tonic::Code;
use tonic::transport::Channel;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// A raw HTTP/2 connection (made by `builder`) presenting the operator's
/// certificate, and the task driving it (it ends when the connection does).
async fn raw_connection(
    server: &TestServer,
    builder: &h2::client::Builder,
) -> (
    h2::client::SendRequest<&'static [u8]>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let (cert, key) = server.ca.client_cert(OPERATOR, CertKind::Spiffe);
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(server.ca.pem().as_bytes()).expect("CA PEM"))
        .expect("CA");
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_client_auth_cert(
        vec![CertificateDer::from_pem_slice(cert.as_bytes()).expect("cert PEM")],
        PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key PEM"),
    )
    .expect("client auth");
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("TCP connect");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("TLS handshake");
    let (send, connection) = builder.handshake(tls).await.expect("HTTP/2 handshake");
    (send, tokio::spawn(connection))
}

/// A gRPC request for `rpc` (`/package.Service/Method`) with `headers`.
fn grpc_request(rpc: &str, headers: &[(&str, &str)]) -> http::Request<()> {
    let mut request = http::Request::builder()
        .method("POST")
        .uri(format!("https://localhost{rpc}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(()).expect("request")
}

/// Opens a raw HTTP/2 connection presenting the operator's certificate,
/// completes one request (so the server's SETTINGS have been received) and
/// returns the server's limit on concurrent streams as the client sees it.
async fn advertised_stream_limit(server: &TestServer) -> usize {
    let (send, driver) = raw_connection(server, &h2::client::Builder::new()).await;
    let mut send = send.ready().await.expect("ready");
    let request = grpc_request("/strongroom.v1.AdminService/WhoAmI", &[]);
    let (response, _) = send.send_request(request, true).expect("send request");
    let response = response.await.expect("response");
    assert_eq!(response.status(), 200, "{response:?}");
    // The server's SETTINGS frame came before the response.
    let limit = send.current_max_send_streams();
    driver.abort();
    limit
}

#[tokio::test]
async fn stream_limit_is_advertised() {
    let mut options = Options::new(Backend::Sqlite);
    options
        .env
        .push(("STRONGROOM_MAX_CONCURRENT_STREAMS".into(), "7".into()));
    let server = TestServer::start_with(options).await;
    assert_eq!(advertised_stream_limit(&server).await, 7);
    let status = server.stop().await;
    assert!(status.success(), "strongroomd exited with {status}");

    // The default is a limit too.
    let server = TestServer::start(Backend::Sqlite).await;
    assert_eq!(advertised_stream_limit(&server).await, 256);
}

/// A connection as the platform operator, used once.
async fn operator_connection(server: &TestServer) -> Result<AdminServiceClient<Channel>, String> {
    let (cert, key) = server.ca.client_cert(OPERATOR, CertKind::Spiffe);
    let channel = server
        .channel(Some((&cert, &key)))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut client = AdminServiceClient::new(channel);
    match client.who_am_i(pb::WhoAmIRequest {}).await {
        Ok(_) => Ok(client),
        Err(s)
            if matches!(
                s.code(),
                Code::Unavailable | Code::Unknown | Code::Cancelled
            ) =>
        {
            Err(format!("call failed with the connection: {s:?}"))
        }
        Err(s) => panic!("a handler answered {s:?}"),
    }
}

#[tokio::test]
async fn connections_beyond_the_cap_are_refused() {
    let mut options = Options::new(Backend::Sqlite);
    options
        .env
        .push(("STRONGROOM_MAX_CONNECTIONS".into(), "3".into()));
    let server = TestServer::start_with(options).await;
    let mut open = Vec::new();
    for i in 0..3 {
        open.push(
            operator_connection(&server)
                .await
                .unwrap_or_else(|e| panic!("connection {i} within the cap: {e}")),
        );
    }
    for i in 0..3 {
        if let Ok(_extra) = operator_connection(&server).await {
            panic!("connection {} beyond the cap of 3 was served", 3 + i);
        }
    }
    server
        .logs
        .wait_for_line(
            &["too many open connections", "\"max_connections\":3"],
            Duration::from_secs(10),
        )
        .await;
    // The open connections keep working.
    for (i, client) in open.iter_mut().enumerate() {
        client
            .who_am_i(pb::WhoAmIRequest {})
            .await
            .unwrap_or_else(|s| panic!("open connection {i}: {s:?}"));
    }
    // A closed connection frees its slot (once the server has seen it close).
    drop(open.pop());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let _again = loop {
        match operator_connection(&server).await {
            Ok(client) => break client,
            Err(e) => assert!(
                tokio::time::Instant::now() < deadline,
                "no connection accepted after one closed: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let status = server.stop().await;
    assert!(status.success(), "strongroomd exited with {status}");
}

/// Retries [`operator_connection`] until one is served, for at most
/// `within`.
async fn operator_connection_within(
    server: &TestServer,
    within: Duration,
    what: &str,
) -> AdminServiceClient<Channel> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match operator_connection(server).await {
            Ok(client) => return client,
            Err(e) => assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: no connection served within {within:?}: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// TCP connections that never send a ClientHello count against
/// `limits.max_handshakes`, not against `limits.max_connections`, and are
/// dropped after `limits.handshake_timeout_ms`: a flood of them neither stops
/// an established client nor keeps new clients out for longer than that.
#[tokio::test]
async fn silent_connections_take_no_connection_slot() {
    let mut options = Options::new(Backend::Sqlite);
    for (key, value) in [
        ("STRONGROOM_MAX_CONNECTIONS", "3"),
        ("STRONGROOM_MAX_HANDSHAKES", "2"),
        ("STRONGROOM_HANDSHAKE_TIMEOUT_MS", "1000"),
    ] {
        options.env.push((key.into(), value.into()));
    }
    let server = TestServer::start_with(options).await;
    let mut established = operator_connection(&server)
        .await
        .unwrap_or_else(|e| panic!("established client: {e}"));

    // More silent connections than both limits allow.
    let mut silent = Vec::new();
    for i in 0..8 {
        silent.push(
            tokio::net::TcpStream::connect(server.addr)
                .await
                .unwrap_or_else(|e| panic!("silent connection {i}: {e}")),
        );
    }
    // The established client keeps working throughout.
    for i in 0..5 {
        established
            .who_am_i(pb::WhoAmIRequest {})
            .await
            .unwrap_or_else(|s| panic!("established client, call {i} during the flood: {s:?}"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A new client gets in once the silent connections that got a
    // handshake slot have timed out, well before the old 10 s handshake
    // timeout would have freed anything (the test still holds them open).
    let mut new_client = operator_connection_within(
        &server,
        Duration::from_secs(5),
        "new client after the flood",
    )
    .await;
    new_client
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .unwrap_or_else(|s| panic!("new client: {s:?}"));
    established
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .unwrap_or_else(|s| panic!("established client after the flood: {s:?}"));
    // The flood hit the handshake limit, and the silent connections that got
    // a handshake slot timed out.
    server
        .logs
        .wait_for_line(
            &[
                "too many TLS handshakes in progress",
                "\"max_handshakes\":2",
            ],
            Duration::from_secs(10),
        )
        .await;
    server
        .logs
        .wait_for("TLS handshake timed out", 2, Duration::from_secs(10))
        .await;
    drop(silent);
    let status = server.stop().await;
    assert!(status.success(), "strongroomd exited with {status}");
}

/// A connection with no call for `limits.idle_timeout_ms` is closed by the
/// server, although its client sends HTTP/2 keepalive pings all along, and
/// its slot is free again.
#[tokio::test]
async fn idle_connections_are_closed_despite_pings() {
    let mut options = Options::new(Backend::Sqlite);
    for (key, value) in [
        ("STRONGROOM_MAX_CONNECTIONS", "1"),
        ("STRONGROOM_IDLE_TIMEOUT_MS", "1000"),
    ] {
        options.env.push((key.into(), value.into()));
    }
    let server = TestServer::start_with(options).await;
    let (cert, key) = server.ca.client_cert(OPERATOR, CertKind::Spiffe);
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(server.ca.pem()))
        .domain_name("localhost")
        .identity(Identity::from_pem(&cert, &key));
    let channel = Endpoint::from_shared(server.endpoint())
        .expect("endpoint")
        .http2_keep_alive_interval(Duration::from_millis(100))
        .keep_alive_while_idle(true)
        .keep_alive_timeout(Duration::from_secs(5))
        .tls_config(tls)
        .expect("TLS config")
        .connect()
        .await
        .expect("connect");
    let mut pinging = AdminServiceClient::new(channel);
    pinging
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .expect("first call");
    // The only slot is taken.
    if let Ok(_extra) = operator_connection(&server).await {
        panic!("a second connection was served with one slot");
    }
    server
        .logs
        .wait_for("closing an idle connection", 1, Duration::from_secs(10))
        .await;
    // Its slot is free again while the test still holds the pinging client.
    let _next = operator_connection_within(
        &server,
        Duration::from_secs(5),
        "a client after the idle one",
    )
    .await;
    drop(pinging);
    let status = server.stop().await;
    assert!(status.success(), "strongroomd exited with {status}");
}

/// A client that opens calls and never takes their responses' data (its
/// HTTP/2 flow-control window stays shut, while it answers pings) loses
/// its connection after `limits.idle_timeout_ms`, although its calls are
/// still in progress; the connection's slot is free again.
#[tokio::test]
async fn a_client_that_never_reads_its_responses_is_dropped() {
    let mut options = Options::new(Backend::Sqlite);
    for (key, value) in [
        ("STRONGROOM_MAX_CONNECTIONS", "1"),
        ("STRONGROOM_IDLE_TIMEOUT_MS", "1000"),
    ] {
        options.env.push((key.into(), value.into()));
    }
    let server = TestServer::start_with(options).await;
    let mut builder = h2::client::Builder::new();
    builder.initial_window_size(0);
    let (mut send, driver) = raw_connection(&server, &builder).await;
    let mut responses = Vec::new();
    for i in 0..3 {
        send = send.ready().await.expect("ready");
        let request = grpc_request("/strongroom.v1.AdminService/WhoAmI", &[]);
        let (response, mut request_body) = send.send_request(request, false).expect("send request");
        // An empty WhoAmIRequest: no compression, length 0.
        request_body
            .send_data(&[0u8; 5][..], true)
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        responses.push(response);
    }
    // The headers come (they need no window); the data cannot.
    let mut unread = Vec::new();
    for (i, response) in responses.into_iter().enumerate() {
        let response = tokio::time::timeout(Duration::from_secs(10), response)
            .await
            .unwrap_or_else(|_| panic!("no response headers for call {i}"))
            .unwrap_or_else(|e| panic!("call {i}: {e}"));
        assert_eq!(response.status(), 200, "{response:?}");
        unread.push(response.into_body());
    }
    // The only slot is taken.
    if let Ok(_extra) = operator_connection(&server).await {
        panic!("a second connection was served with one slot");
    }
    // Ended by the server, with or without an error on the client's side.
    let _ended = tokio::time::timeout(Duration::from_secs(10), driver)
        .await
        .expect("the server ended the connection")
        .expect("connection task");
    server
        .logs
        .wait_for(
            "closing a connection whose client takes no response data",
            1,
            Duration::from_secs(5),
        )
        .await;
    let _next = operator_connection_within(
        &server,
        Duration::from_secs(5),
        "a client after the one that did not read",
    )
    .await;
    drop(unread);
    let status = server.stop().await;
    assert!(status.success(), "strongroomd exited with {status}");
}

/// Whether a connection presenting a certificate for `identity` is served
/// (its call answered by a service, whatever the answer).
async fn served(server: &TestServer, identity: &str) -> bool {
    let (cert, key) = server.ca.client_cert(identity, CertKind::Spiffe);
    let Ok(channel) = server.channel(Some((&cert, &key))).await else {
        return false;
    };
    match AdminServiceClient::new(channel)
        .who_am_i(pb::WhoAmIRequest {})
        .await
    {
        Ok(_) => true,
        Err(s) => !matches!(
            s.code(),
            Code::Unavailable | Code::Unknown | Code::Cancelled
        ),
    }
}

/// One identity holds at most `limits.max_connections_per_identity`
/// connections; other identities still get in, and a closed connection
/// gives its identity's slot back.
#[tokio::test]
async fn connections_per_identity_are_capped() {
    let mut options = Options::new(Backend::Sqlite);
    options
        .env
        .push(("STRONGROOM_MAX_CONNECTIONS_PER_IDENTITY".into(), "2".into()));
    let server = TestServer::start_with(options).await;
    let mut open = Vec::new();
    for i in 0..2 {
        open.push(
            operator_connection(&server)
                .await
                .unwrap_or_else(|e| panic!("operator connection {i} within the cap: {e}")),
        );
    }
    assert!(
        !served(&server, OPERATOR).await,
        "a third operator connection was served with a cap of 2"
    );
    server
        .logs
        .wait_for_line(
            &[
                "too many open connections for this identity",
                "\"max_connections_per_identity\":2",
            ],
            Duration::from_secs(10),
        )
        .await;
    // Another identity (unknown to the server: its call is answered
    // UNAUTHENTICATED by the service) is not held back.
    assert!(
        served(&server, "spiffe://e2e.test/someone/else").await,
        "another identity's connection was refused"
    );
    for (i, client) in open.iter_mut().enumerate() {
        client
            .who_am_i(pb::WhoAmIRequest {})
            .await
            .unwrap_or_else(|s| panic!("open connection {i}: {s:?}"));
    }
    drop(open.pop());
    let _again =
        operator_connection_within(&server, Duration::from_secs(10), "after one closed").await;
    let status = server.stop().await;
    assert!(status.success(), "strongroomd exited with {status}");
}

/// One client address holds at most `limits.max_connections_per_ip`
/// connections, those still in their handshake included: a host that
/// opens silent TCP connections cannot take every slot. Its established
/// connection keeps working, and a closed connection gives the address's
/// slot back.
#[tokio::test]
async fn connections_per_address_are_capped() {
    let mut options = Options::new(Backend::Sqlite);
    for (key, value) in [
        ("STRONGROOM_MAX_CONNECTIONS_PER_IP", "3"),
        // The silent connections stay in their handshake for the whole test.
        ("STRONGROOM_HANDSHAKE_TIMEOUT_MS", "60000"),
    ] {
        options.env.push((key.into(), value.into()));
    }
    let server = TestServer::start_with(options).await;
    let mut established = operator_connection(&server)
        .await
        .unwrap_or_else(|e| panic!("established client: {e}"));
    let mut silent = Vec::new();
    for i in 0..2 {
        silent.push(
            tokio::net::TcpStream::connect(server.addr)
                .await
                .unwrap_or_else(|e| panic!("silent connection {i}: {e}")),
        );
    }
    // The server takes connections in the order they came: the fourth
    // connection from this address is refused.
    if let Ok(_extra) = operator_connection(&server).await {
        panic!("a fourth connection from one address was served with a cap of 3");
    }
    server
        .logs
        .wait_for_line(
            &[
                "too many connections from this address",
                "\"max_connections_per_ip\":3",
            ],
            Duration::from_secs(10),
        )
        .await;
    established
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .unwrap_or_else(|s| panic!("the established client: {s:?}"));
    // A silent connection closed (the server sees its handshake end) gives
    // its slot back.
    drop(silent.pop());
    let mut next = operator_connection_within(
        &server,
        Duration::from_secs(10),
        "after a silent connection closed",
    )
    .await;
    next.who_am_i(pb::WhoAmIRequest {})
        .await
        .unwrap_or_else(|s| panic!("the next client: {s:?}"));
    drop(silent);
    let status = server.stop().await;
    assert!(status.success(), "strongroomd exited with {status}");
}

/// A call still running when the deadline the client sent (`grpc-timeout`)
/// passes is answered DEADLINE_EXCEEDED by the server (here: an import
/// whose client never sends its first message). A raw connection, because
/// a tonic client gives up at the deadline on its own.
#[tokio::test]
async fn a_call_past_its_deadline_is_answered_deadline_exceeded() {
    let server = TestServer::start(Backend::Sqlite).await;
    let (send, driver) = raw_connection(&server, &h2::client::Builder::new()).await;
    let mut send = send.ready().await.expect("ready");
    let request = grpc_request(
        "/strongroom.v1.AdminService/ImportTenant",
        &[("grpc-timeout", "300m")],
    );
    let started = tokio::time::Instant::now();
    // The request stream stays open, with no message.
    let (response, _request_body) = send.send_request(request, false).expect("send request");
    let response = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .expect("the server answered within 10 s")
        .expect("response");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "answered before the deadline: {:?}",
        started.elapsed()
    );
    assert_eq!(response.status(), 200, "{response:?}");
    // A status without a message: in the headers (trailers-only), or else
    // in the trailers.
    let code = match response.headers().get("grpc-status") {
        Some(code) => code.clone(),
        None => response
            .into_body()
            .trailers()
            .await
            .expect("trailers")
            .and_then(|t| t.get("grpc-status").cloned())
            .expect("a grpc-status"),
    };
    assert_eq!(
        code,
        (Code::DeadlineExceeded as i32).to_string().as_str(),
        "the status code"
    );
    driver.abort();
    let status = server.stop().await;
    assert!(status.success(), "strongroomd exited with {status}");
}
