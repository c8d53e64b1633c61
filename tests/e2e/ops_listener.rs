//! The operations listener (`metrics.listen`): plain HTTP beside the
//! mutual-TLS port. `/livez` and `/readyz` answer; after a reveal,
//! `/metrics` serves the per-call, audit batch, cache and pool series in
//! the Prometheus text format, and nothing in it is a stored value, a
//! purpose text, a tenant name or a credential name.

use std::net::SocketAddr;
use std::time::Duration;

use strongroom_e2e::{Backend, Options, TestServer, api_key, path};
use strongroom_proto::v1 as pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

on_both_backends!(probes_and_metrics_without_secrets_or_names);

/// The operations listener's address, from the server's log.
pub(crate) fn ops_addr(server: &TestServer) -> SocketAddr {
    server
        .logs
        .lines()
        .iter()
        .find_map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).ok()?;
            let message = v.get("message")?.as_str()?;
            if !message.starts_with("operations listener") {
                return None;
            }
            v.get("addr")?.as_str()?.parse().ok()
        })
        .expect("the server logs the operations listener's address")
}

/// `GET path` over plain HTTP/1.0: (status, body).
pub(crate) async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the operations listener");
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: probe\r\n\r\n").as_bytes())
        .await
        .expect("send");
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .expect("answered in time")
        .expect("read");
    let response = String::from_utf8(response).expect("UTF-8");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    (status, body.to_owned())
}

async fn probes_and_metrics_without_secrets_or_names(backend: Backend) {
    let mut options = Options::new(backend);
    options.log_level = "info".into();
    options.env.push((
        "STRONGROOM_METRICS_LISTEN".to_owned(),
        "127.0.0.1:0".to_owned(),
    ));
    let server = TestServer::start_with(options).await;
    let ops = ops_addr(&server);
    assert_eq!(get(ops, "/livez").await.0, 200);
    assert_eq!(get(ops, "/readyz").await.0, 200);
    assert_eq!(get(ops, "/nothing-here").await.0, 404);

    let tenant = "opsmetricstenant";
    let name = "probe/quokkaledger";
    let secret = format!("sk-e2eOPS{}", uuid::Uuid::new_v4().simple());
    let purpose = format!("purpose-text-{}", uuid::Uuid::new_v4().simple());
    let acme = server.tenant(tenant).await;
    acme.client
        .credentials()
        .create_credential(pb::CreateCredentialRequest {
            environment: "dev".into(),
            name: name.into(),
            service: "quokka".into(),
            value: api_key(&secret),
            ..Default::default()
        })
        .await
        .expect("create");
    for _ in 0..2 {
        let revealed = acme
            .client
            .credentials()
            .reveal_credential(pb::RevealCredentialRequest {
                credential: path("dev", name),
                purpose: purpose.clone(),
                ..Default::default()
            })
            .await
            .expect("reveal")
            .into_inner();
        assert_eq!(
            strongroom_e2e::api_key_text(strongroom_e2e::revealed_value(&revealed)),
            secret
        );
    }
    // A denial: an identity bound to no principal.
    let stranger = server
        .client(&format!("spiffe://e2e.test/{tenant}/stranger"))
        .await;
    let refused = stranger
        .credentials()
        .reveal_credential(pb::RevealCredentialRequest {
            credential: path("dev", name),
            purpose: purpose.clone(),
            ..Default::default()
        })
        .await
        .expect_err("a stranger is not authenticated");
    assert_eq!(refused.code(), Code::Unauthenticated);

    let (status, metrics) = get(ops, "/metrics").await;
    assert_eq!(status, 200);
    let reveal = "rpc_method=\"RevealCredential\"";
    let has = |prefix: &str, parts: &[&str]| {
        metrics
            .lines()
            .any(|l| l.starts_with(prefix) && parts.iter().all(|p| l.contains(p)))
    };
    assert!(
        metrics.contains("# TYPE rpc_server_duration_milliseconds histogram"),
        "{metrics}"
    );
    assert!(
        has(
            "rpc_server_duration_milliseconds_count{",
            &[reveal, "rpc_grpc_status_code=\"0\""]
        ),
        "{metrics}"
    );
    assert!(
        has(
            "rpc_server_duration_milliseconds_bucket{",
            &[reveal, "le=\"+Inf\""]
        ),
        "{metrics}"
    );
    assert!(
        has(
            "strongroom_rpc_calls_total{",
            &[reveal, "rpc_grpc_status_code=\"0\"", "} 2"]
        ),
        "{metrics}"
    );
    assert!(
        has(
            "strongroom_rpc_denials_total{",
            &[reveal, "reason=\"unauthenticated\""]
        ),
        "{metrics}"
    );
    assert!(
        has("strongroom_audit_batch_size_bucket{", &["le=\"+Inf\""]),
        "{metrics}"
    );
    assert!(
        has("strongroom_audit_batch_duration_milliseconds_count ", &[]),
        "{metrics}"
    );
    for cache in ["callers", "grants", "credentials"] {
        for result in ["hit", "miss"] {
            assert!(
                has(
                    "strongroom_cache_lookups_total{",
                    &[
                        &format!("cache=\"{cache}\""),
                        &format!("result=\"{result}\"")
                    ]
                ),
                "{cache} {result}: {metrics}"
            );
        }
    }
    // The second reveal found the credential in the cache.
    assert!(
        metrics.lines().any(|l| l
            .starts_with("strongroom_cache_lookups_total{cache=\"credentials\",result=\"hit\"}")
            && !l.ends_with(" 0")),
        "{metrics}"
    );
    assert!(
        has("strongroom_db_pool_connections{", &["state=\"idle\""]),
        "{metrics}"
    );
    assert!(
        has("strongroom_db_pool_connections{", &["state=\"used\""]),
        "{metrics}"
    );
    assert!(has("strongroom_db_pool_max ", &[]), "{metrics}");

    for needle in [
        secret.as_str(),
        &secret[3..],
        purpose.as_str(),
        tenant,
        name,
        "quokkaledger",
        "quokka",
        acme.tenant_id.as_str(),
        acme.principal_id.as_str(),
    ] {
        assert!(!metrics.contains(needle), "`{needle}` appears in /metrics");
    }
    assert_eq!(get(ops, "/livez").await.0, 200);
    assert_eq!(get(ops, "/readyz").await.0, 200);
}

/// The kubelet's probes never wait behind slow clients: with hundreds of
/// connections that never finish their request head held open from one
/// address, `/livez` and `/readyz` from another address answer at once, and
/// the slow connections are closed within about a second. Transport only:
/// SQLite is enough.
#[tokio::test]
async fn probes_answer_while_slow_clients_hold_connections() {
    let mut options = Options::new(Backend::Sqlite);
    options.log_level = "info".into();
    options.env.push((
        "STRONGROOM_METRICS_LISTEN".to_owned(),
        "127.0.0.1:0".to_owned(),
    ));
    let server = TestServer::start_with(options).await;
    let ops = ops_addr(&server);

    // Slow clients: each sends half a request head and then nothing.
    let mut slow = Vec::new();
    for _ in 0..300 {
        let mut stream = tokio::net::TcpStream::connect(ops)
            .await
            .expect("connect a slow client");
        let _ = stream.write_all(b"GET /livez HTTP/1.1\r\nHost: sl").await;
        slow.push(stream);
    }

    // The kubelet, from its node's address (another loopback address).
    for path in ["/livez", "/readyz", "/livez"] {
        let started = std::time::Instant::now();
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.2:0".parse().expect("address"))
            .expect("bind 127.0.0.2");
        let mut stream = socket.connect(ops).await.expect("connect the probe");
        stream
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: probe\r\n\r\n").as_bytes())
            .await
            .expect("send");
        let mut response = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response))
            .await
            .expect("the probe was answered and its connection closed")
            .expect("read");
        let elapsed = started.elapsed();
        let response = String::from_utf8_lossy(&response);
        assert!(response.starts_with("HTTP/1.1 200"), "{path}: {response}");
        // The kubelet's default probe timeout is one second.
        assert!(
            elapsed < Duration::from_secs(1),
            "{path} took {elapsed:?} with slow clients connected"
        );
    }

    // The slow clients are closed within about the header timeout (those
    // beyond the per-address limit at once).
    let started = std::time::Instant::now();
    for stream in &mut slow {
        let mut buf = [0u8; 256];
        let read = tokio::time::timeout(Duration::from_secs(3), stream.read(&mut buf))
            .await
            .expect("a slow client's connection is closed within 3 s");
        // Closed (EOF or reset), or answered with a timeout error by hyper.
        if let Ok(n) = read {
            assert!(
                n == 0 || String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 408"),
                "{}",
                String::from_utf8_lossy(&buf[..n])
            );
        }
    }
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// A call to a method the server does not serve is counted under
/// `unknown`: the path, free text the client chose, never becomes a label.
#[tokio::test]
async fn unknown_methods_are_not_labels() {
    let mut options = Options::new(Backend::Sqlite);
    options.log_level = "info".into();
    options.env.push((
        "STRONGROOM_METRICS_LISTEN".to_owned(),
        "127.0.0.1:0".to_owned(),
    ));
    let server = TestServer::start_with(options).await;
    let ops = ops_addr(&server);
    let cert = server.ca.issue_client(strongroom_e2e::OPERATOR, None);
    let channel = server
        .channel(Some((&cert.cert, &cert.key)))
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    // Two under the contract's prefix (authenticated, then unknown to the
    // router), one elsewhere (no caller needed, so not measured as a call).
    let paths = [
        "/strongroom.v1.AdminService/FreeTextMethod7q",
        "/strongroom.v1.FreeTextService8q/WhoAmI",
        "/freetext.Nowhere9q/Anything",
    ];
    for path in paths {
        grpc.ready().await.expect("ready");
        let refused = grpc
            .unary::<pb::WhoAmIRequest, pb::WhoAmIResponse, _>(
                tonic::Request::new(pb::WhoAmIRequest {}),
                http::uri::PathAndQuery::from_static(path),
                tonic_prost::ProstCodec::default(),
            )
            .await
            .expect_err("no such method");
        assert_eq!(refused.code(), Code::Unimplemented, "{path}: {refused:?}");
    }
    // A known method, for contrast.
    grpc.ready().await.expect("ready");
    grpc.unary::<pb::WhoAmIRequest, pb::WhoAmIResponse, _>(
        tonic::Request::new(pb::WhoAmIRequest {}),
        http::uri::PathAndQuery::from_static("/strongroom.v1.AdminService/WhoAmI"),
        tonic_prost::ProstCodec::default(),
    )
    .await
    .expect("WhoAmI");

    let (status, metrics) = get(ops, "/metrics").await;
    assert_eq!(status, 200);
    for needle in [
        "FreeTextMethod7q",
        "FreeTextService8q",
        "freetext",
        "Nowhere9q",
    ] {
        assert!(
            !metrics.contains(needle),
            "`{needle}` appears in /metrics:\n{metrics}"
        );
    }
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("strongroom_rpc_calls_total{")
                && l.contains("rpc_method=\"unknown\"")
                && l.contains("rpc_service=\"unknown\"")
                && l.contains("rpc_grpc_status_code=\"12\"")
                && l.ends_with(" 2")),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("strongroom_rpc_calls_total{")
                && l.contains("rpc_method=\"WhoAmI\"")),
        "{metrics}"
    );
}
