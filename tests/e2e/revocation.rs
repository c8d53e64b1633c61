//! Client certificates are checked after the handshake too: a certificate
//! revoked by a CRL loaded while its connection is open has that connection
//! closed by the server at once (freeing its slot; a call racing the close
//! is refused UNAUTHENTICATED), one that expires while its connection is
//! open stops authenticating calls on that connection (UNAUTHENTICATED, for
//! every service, health included) and the connection is closed, and new
//! connections presenting either are refused in the handshake.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use strongroom_e2e::{Backend, IssuedCert, OPERATOR, Options, TestServer, expect_code};
use strongroom_proto::v1 as pb;
use strongroom_proto::v1::admin_service_client::AdminServiceClient;
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

on_both_backends!(revoked_certificate, expired_certificate);

const LOADED: &str = "client CRLs loaded";
const REFUSED: &str = "TLS handshake refused";
const NO_LONGER_VALID: &str = "client certificate no longer valid";
const CLOSING: &str = "closing the connection: its client certificate is no longer valid";

/// A connection presenting `cert`, used once so that it is open and
/// authenticated before anything changes.
async fn connected(
    server: &TestServer,
    cert: &IssuedCert,
    what: &str,
) -> AdminServiceClient<Channel> {
    let channel = server
        .channel(Some((&cert.cert, &cert.key)))
        .await
        .unwrap_or_else(|e| panic!("{what}: connect: {e}"));
    let mut client = AdminServiceClient::new(channel);
    who_am_i(&mut client, what).await;
    client
}

/// Asserts that a call on a connection the server closed for a revoked
/// certificate is refused: at the transport level (the connection is gone
/// and a new one is refused), or UNAUTHENTICATED by the transport's
/// per-call check if the call raced the close; never answered by a
/// service.
fn assert_refused_after_close<T: std::fmt::Debug>(result: Result<T, tonic::Status>, what: &str) {
    match result {
        Ok(r) => panic!("{what}: the call was answered: {r:?}"),
        Err(s) => assert!(
            matches!(
                s.code(),
                Code::Unavailable | Code::Unknown | Code::Cancelled
            ) || (s.code() == Code::Unauthenticated && s.message().contains("revoked")),
            "{what}: expected a refusal, got {s:?}"
        ),
    }
}

/// Asserts that a call on `client` fails at the transport level (its
/// connection was closed and a new one is refused), never with an answer
/// from a service.
async fn assert_connection_gone(client: &mut AdminServiceClient<Channel>, what: &str) {
    match client.who_am_i(pb::WhoAmIRequest {}).await {
        Ok(r) => panic!("{what}: the call was answered: {r:?}"),
        Err(s) => assert!(
            matches!(
                s.code(),
                Code::Unavailable | Code::Unknown | Code::Cancelled
            ),
            "{what}: expected a closed connection, got {s:?}"
        ),
    }
}

async fn who_am_i(client: &mut AdminServiceClient<Channel>, what: &str) {
    client
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .unwrap_or_else(|s| panic!("{what}: WhoAmI refused: {s:?}"));
}

/// Asserts that a new connection presenting `cert` fails at the transport
/// level (the handshake is refused), never with an answer from a handler.
async fn assert_new_connection_refused(server: &TestServer, cert: &IssuedCert, what: &str) {
    let Ok(channel) = server.channel(Some((&cert.cert, &cert.key))).await else {
        return;
    };
    // TLS 1.3: the client may finish its side of the handshake before the
    // server has checked its certificate, so the refusal shows on the call.
    match AdminServiceClient::new(channel)
        .who_am_i(pb::WhoAmIRequest {})
        .await
    {
        Ok(r) => panic!("{what}: a new connection was accepted: {r:?}"),
        Err(s) => assert!(
            matches!(
                s.code(),
                Code::Unavailable | Code::Unknown | Code::Cancelled
            ),
            "{what}: expected a refused handshake, got {s:?}"
        ),
    }
}

async fn revoked_certificate(backend: Backend) {
    let mut options = Options::new(backend);
    options.crl = true;
    let server = TestServer::start_with(options).await;
    let wait = Duration::from_secs(10);
    server.logs.wait_for(LOADED, 1, wait).await;
    let acme = server.tenant("acme").await;

    // Two certificates for the same identity; only the first is revoked.
    let doomed = server.ca.issue_client(&acme.identity, None);
    let kept = server.ca.issue_client(&acme.identity, None);
    let doomed_channel = server
        .channel(Some((&doomed.cert, &doomed.key)))
        .await
        .unwrap_or_else(|e| panic!("doomed certificate: connect: {e}"));
    let mut doomed_conn = AdminServiceClient::new(doomed_channel.clone());
    who_am_i(&mut doomed_conn, "doomed certificate").await;
    let mut kept_conn = connected(&server, &kept, "kept certificate").await;

    server.write_crl(
        server
            .ca
            .crl(&[doomed.serial])
            .pem()
            .expect("CRL PEM")
            .as_bytes(),
    );
    server.logs.wait_for(LOADED, 2, wait).await;

    // The connection it already had: closed by the server at once, without
    // waiting for a call; a call on it is refused, by every service (health
    // included).
    server.logs.wait_for_line(&[CLOSING, "revoked"], wait).await;
    let mut doomed_health = HealthClient::new(doomed_channel.clone());
    assert_refused_after_close(
        doomed_health.check(HealthCheckRequest::default()).await,
        "a health check on the open connection of a revoked certificate",
    );
    assert_connection_gone(
        &mut doomed_conn,
        "the closed connection of a revoked certificate",
    )
    .await;
    // Another certificate of the same identity is unaffected.
    who_am_i(&mut kept_conn, "kept certificate after the reload").await;
    // A new connection: refused in the handshake.
    assert_new_connection_refused(&server, &doomed, "revoked certificate").await;
    server.logs.wait_for_line(&[REFUSED, "Revoked"], wait).await;

    // A bad file is refused and the CRLs in force stay.
    server.write_crl(b"this is not a CRL");
    server
        .logs
        .wait_for("client CRL file refused", 1, wait)
        .await;
    assert_new_connection_refused(&server, &doomed, "revoked certificate, bad CRL file").await;
    who_am_i(&mut kept_conn, "kept certificate after a bad CRL file").await;

    // A DER CRL revoking both.
    server.write_crl(server.ca.crl(&[doomed.serial, kept.serial]).der().as_ref());
    server.logs.wait_for(LOADED, 3, wait).await;
    server.logs.wait_for(CLOSING, 2, wait).await;
    assert_refused_after_close(
        kept_conn.who_am_i(pb::WhoAmIRequest {}).await,
        "a call on the open connection of a certificate revoked by a DER CRL",
    );
    assert_connection_gone(
        &mut kept_conn,
        "the closed connection of the second certificate",
    )
    .await;
    assert_new_connection_refused(
        &server,
        &doomed,
        "the first revoked certificate, still in the new CRL",
    )
    .await;

    // Other certificates of the CA still get in.
    let fresh = server.ca.issue_client(&acme.identity, None);
    connected(&server, &fresh, "a certificate the CRL does not name").await;
    let status = server.stop().await;
    assert!(status.success(), "strongroomd exited with {status}");
}

async fn expired_certificate(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = server.tenant("acme").await;

    // Valid for about three seconds (X.509 times are whole seconds).
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let not_after = UNIX_EPOCH + Duration::from_secs(now + 3);
    let short = server.ca.issue_client(&acme.identity, Some(not_after));
    let mut conn = connected(&server, &short, "short-lived certificate").await;

    // notAfter is inclusive: the certificate is expired once the clock is
    // past that second.
    let expired_at = not_after + Duration::from_millis(1100);
    let wait = expired_at
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    assert!(wait < Duration::from_secs(5), "waiting {wait:?}");
    tokio::time::sleep(wait).await;

    let status = expect_code(
        conn.who_am_i(pb::WhoAmIRequest {}).await,
        Code::Unauthenticated,
        "a call on the open connection of an expired certificate",
    );
    assert!(status.message().contains("expired"), "{status:?}");
    server
        .logs
        .wait_for_line(&[NO_LONGER_VALID, "expired"], Duration::from_secs(10))
        .await;
    server
        .logs
        .wait_for(CLOSING, 1, Duration::from_secs(10))
        .await;
    assert_connection_gone(&mut conn, "the closed connection of an expired certificate").await;
    assert_new_connection_refused(&server, &short, "expired certificate").await;
    let status = server.stop().await;
    assert!(status.success(), "strongroomd exited with {status}");
}

/// A connection refused because its certificate was revoked is closed by
/// the server and gives its slot back: with every slot taken, a new client
/// gets in once it is gone. Transport only: SQLite is enough.
#[tokio::test]
async fn revoked_connection_frees_its_slot() {
    let mut options = Options::new(Backend::Sqlite);
    options.crl = true;
    options
        .env
        .push(("STRONGROOM_MAX_CONNECTIONS".into(), "2".into()));
    let server = TestServer::start_with(options).await;
    let wait = Duration::from_secs(10);
    server.logs.wait_for(LOADED, 1, wait).await;

    let doomed = server.ca.issue_client(OPERATOR, None);
    let kept = server.ca.issue_client(OPERATOR, None);
    let mut doomed_conn = connected(&server, &doomed, "doomed certificate").await;
    let mut kept_conn = connected(&server, &kept, "kept certificate").await;
    // Every slot is taken.
    let fresh = server.ca.issue_client(OPERATOR, None);
    assert_new_connection_refused(&server, &fresh, "a third connection with two slots").await;
    server
        .logs
        .wait_for_line(
            &["too many open connections", "\"max_connections\":2"],
            wait,
        )
        .await;

    server.write_crl(
        server
            .ca
            .crl(&[doomed.serial])
            .pem()
            .expect("CRL PEM")
            .as_bytes(),
    );
    server.logs.wait_for(LOADED, 2, wait).await;
    server.logs.wait_for(CLOSING, 1, wait).await;
    assert_refused_after_close(
        doomed_conn.who_am_i(pb::WhoAmIRequest {}).await,
        "a call on the open connection of a revoked certificate",
    );

    // The test still holds the client of the revoked connection, yet its
    // slot is free: a new client gets in (once the server has seen the
    // connection end).
    let deadline = tokio::time::Instant::now() + wait;
    let mut client = loop {
        if let Ok(channel) = server.channel(Some((&fresh.cert, &fresh.key))).await {
            let mut client = AdminServiceClient::new(channel);
            if client.who_am_i(pb::WhoAmIRequest {}).await.is_ok() {
                break client;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no new connection accepted after the revoked one was closed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    who_am_i(&mut client, "the new connection").await;
    server.logs.wait_for(CLOSING, 1, wait).await;
    who_am_i(&mut kept_conn, "kept certificate").await;
    drop(doomed_conn);
    let status = server.stop().await;
    assert!(status.success(), "strongroomd exited with {status}");
}
