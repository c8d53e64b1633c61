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
fn ops_addr(server: &TestServer) -> SocketAddr {
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
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
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
