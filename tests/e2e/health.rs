//! The standard health service answers SERVING for every strongroom service
//! (to any client with a certificate of the CA, bound or not), and SIGTERM
//! stops the server cleanly.

use std::time::Duration;

use strongroom_e2e::{Backend, CertKind, TestServer};
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

on_both_backends!(health_then_graceful_shutdown);

async fn health_then_graceful_shutdown(backend: Backend) {
    let server = TestServer::start(backend).await;
    // A probe's identity need not be bound to any principal.
    let (cert, key) = server
        .ca
        .client_cert("spiffe://e2e.test/probe", CertKind::Spiffe);
    let channel = server
        .channel(Some((&cert, &key)))
        .await
        .expect("connect the probe");
    let mut health = HealthClient::new(channel);
    for service in [
        "",
        "strongroom.v1.CredentialService",
        "strongroom.v1.PolicyService",
        "strongroom.v1.AuditService",
        "strongroom.v1.AdminService",
    ] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap_or_else(|e| panic!("health check {service:?}: {e:?}"))
            .into_inner()
            .status();
        assert_eq!(status, ServingStatus::Serving, "{service:?}");
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "strongroom.v1.NoSuchService".into(),
        })
        .await
        .expect_err("an unknown service has no health");
    assert_eq!(unknown.code(), Code::NotFound);
    assert!(!server.logs.contains("authentication refused"));

    // Graceful shutdown: SIGTERM, drain, exit 0, port closed.
    let logs = server.logs.clone();
    let addr = server.addr;
    let status = server.stop().await;
    assert_eq!(status.code(), Some(0), "strongroomd exited with {status}");
    assert!(logs.contains("shutting down"), "no shutdown in the log");
    assert!(logs.contains("\"stopped\""), "no clean stop in the log");
    let reconnect =
        tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
            .await
            .expect("connect attempt timed out");
    assert!(reconnect.is_err(), "the port still accepts connections");
}
