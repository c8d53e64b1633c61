//! Changes of client trust act on connections already open, not only on
//! new ones: a StreamEvents follow whose client certificate is revoked by a
//! CRL reload, or whose CA leaves the client CA bundle, ends at once with
//! UNAUTHENTICATED (no call is needed to notice); a client resuming a TLS
//! session established under a CA since removed is refused; a CA reload
//! that leaves a CA without a CRL is warned about; a server key readable
//! by every user is warned about when loaded. Transport only: SQLite is
//! enough.

use std::sync::Arc;
use std::time::{Duration, Instant};

use strongroom_client::Client;
use strongroom_e2e::{Backend, IssuedCert, Options, TestCa, TestServer, api_key};
use strongroom_proto::v1 as pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::StreamExt;
use tonic::Code;

const LOADED: &str = "client CRLs loaded";
const CLOSING: &str = "closing the connection: its client certificate is no longer valid";

type Events = tonic::Streaming<pb::StreamEventsResponse>;

fn replace(server: &TestServer, name: &str, contents: &str, mode: Option<u32>) {
    let tmp = server.dir.path().join(format!("{name}.new"));
    std::fs::write(&tmp, contents).expect("write");
    if let Some(mode) = mode {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
    std::fs::rename(&tmp, server.dir.path().join(name)).expect("rename");
}

/// A follow of the tenant's chain by a client presenting `cert`, open and
/// past its first event.
async fn follow(server: &TestServer, cert: &IssuedCert) -> (Client, Events) {
    let client = Client::connect(&server.client_config_from_pem(&cert.cert, &cert.key))
        .await
        .expect("connect");
    let mut events = client
        .audit()
        .stream_events(pb::StreamEventsRequest {
            from_sequence: 1,
            follow: true,
            json: false,
        })
        .await
        .expect("open the stream")
        .into_inner();
    tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("the first event in time")
        .expect("the stream is open")
        .expect("an event");
    (client, events)
}

/// Waits for `events` to end, skipping events, within `within`: the status
/// it ended with (UNKNOWN if it ended without one).
async fn ended(events: &mut Events, within: Duration, what: &str) -> tonic::Status {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, events.next()).await {
            Err(_) => panic!("{what}: the stream still runs after {within:?}"),
            Ok(None) => return tonic::Status::unknown("ended without a status"),
            Ok(Some(Err(status))) => return status,
            Ok(Some(Ok(_))) => {}
        }
    }
}

#[tokio::test]
async fn open_streams_end_when_trust_changes() {
    let mut options = Options::new(Backend::Sqlite);
    options.crl = true;
    let server = TestServer::start_with(options).await;
    let wait = Duration::from_secs(10);
    server.logs.wait_for(LOADED, 1, wait).await;
    let acme = server.tenant("acme").await;
    acme.client
        .credentials()
        .create_credential(pb::CreateCredentialRequest {
            environment: "dev".into(),
            name: "svc/alpha".into(),
            service: "svc".into(),
            value: api_key("sk-trust-changes-1f3a"),
            ..Default::default()
        })
        .await
        .expect("create");

    // Revoked by a CRL: the follow ends UNAUTHENTICATED, promptly, without
    // the client calling anything.
    let doomed = server.ca.issue_client(&acme.identity, None);
    let kept = server.ca.issue_client(&acme.identity, None);
    let (_doomed_client, mut doomed_events) = follow(&server, &doomed).await;
    let (_kept_client, mut kept_events) = follow(&server, &kept).await;
    server.write_crl(
        server
            .ca
            .crl(&[doomed.serial])
            .pem()
            .expect("CRL PEM")
            .as_bytes(),
    );
    server.logs.wait_for(LOADED, 2, wait).await;
    let revoked_at = Instant::now();
    let status = ended(
        &mut doomed_events,
        Duration::from_secs(3),
        "a follow whose certificate was revoked",
    )
    .await;
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("revoked"), "{status:?}");
    eprintln!(
        "revoked follow ended {:?} after the reload",
        revoked_at.elapsed()
    );
    server.logs.wait_for_line(&[CLOSING, "revoked"], wait).await;
    // The other certificate's follow goes on.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
    while let Ok(next) = tokio::time::timeout_at(deadline, kept_events.next()).await {
        assert!(
            matches!(next, Some(Ok(_))),
            "the follow of a certificate the CRL does not name ended: {next:?}"
        );
    }

    // Its CA leaves the bundle: the other follow ends too. The new bundle's
    // CA has no CRL, which the reload warns about.
    let next = TestCa::new("e2e CA next");
    replace(&server, "ca.pem", next.pem(), None);
    server
        .logs
        .wait_for_line(&["client CA bundle loaded"], wait)
        .await;
    let status = ended(
        &mut kept_events,
        Duration::from_secs(3),
        "a follow whose CA was removed",
    )
    .await;
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    server
        .logs
        .wait_for_line(&["client CA has no CRL", "e2e CA next"], wait)
        .await;
    let status = server.stop().await;
    assert!(status.success(), "strongroomd exited with {status}");
}

/// A rustls client configuration presenting `cert`, trusting `server`'s
/// CA, with its own session cache (shared by every connection made with
/// it, so the second connection resumes the first one's session).
fn resuming_client(server: &TestServer, cert: &IssuedCert) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(server.ca.pem().as_bytes()) {
        roots.add(ca.expect("CA PEM")).expect("CA");
    }
    let chain = CertificateDer::pem_slice_iter(cert.cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("certificate PEM");
    let key = PrivateKeyDer::from_pem_slice(cert.key.as_bytes()).expect("key PEM");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .expect("client certificate");
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// Connects with `config`: whether the session was resumed, and the first
/// bytes the server sends (its HTTP/2 settings; none when it closes the
/// connection instead).
async fn connect(server: &TestServer, config: &Arc<rustls::ClientConfig>) -> (bool, usize) {
    let tcp = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let connector = tokio_rustls::TlsConnector::from(Arc::clone(config));
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut tls = connector.connect(name, tcp).await.expect("handshake");
    let resumed = tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    // The HTTP/2 preface, so a served connection answers with its settings.
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .expect("preface");
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf))
        .await
        .expect("the server answers or closes within 5 s");
    (resumed, read.unwrap_or(0))
}

#[tokio::test]
async fn a_resumed_session_of_a_removed_ca_is_refused() {
    let mut options = Options::new(Backend::Sqlite);
    options
        .env
        .push(("STRONGROOM_TLS_CRL_RELOAD_MS".to_owned(), "100".to_owned()));
    let server = TestServer::start_with(options).await;
    let cert = server.ca.issue_client(strongroom_e2e::OPERATOR, None);
    let config = resuming_client(&server, &cert);

    // A full handshake, then a resumed one: both served.
    let (resumed, read) = connect(&server, &config).await;
    assert!(!resumed, "the first connection resumed a session");
    assert!(read > 0, "the first connection was not served");
    let (resumed, read) = connect(&server, &config).await;
    assert!(
        resumed,
        "the second connection did not resume the first's session"
    );
    assert!(read > 0, "a resumed session of a trusted CA was not served");

    // The CA leaves the bundle (the server certificate stays: its CA is
    // only dropped from client trust).
    let next = TestCa::new("e2e CA next");
    replace(&server, "ca.pem", next.pem(), None);
    server
        .logs
        .wait_for_line(&["client CA bundle loaded"], Duration::from_secs(10))
        .await;
    let (resumed, read) = connect(&server, &config).await;
    assert!(
        resumed,
        "the connection did not resume: the test proves nothing"
    );
    assert_eq!(read, 0, "a resumed session of a removed CA was served");
    server
        .logs
        .wait_for_line(&["TLS session refused"], Duration::from_secs(10))
        .await;
    let status = server.stop().await;
    assert!(status.success(), "strongroomd exited with {status}");
}

#[tokio::test]
async fn a_key_readable_by_everyone_is_warned_about() {
    let mut options = Options::new(Backend::Sqlite);
    options
        .env
        .push(("STRONGROOM_TLS_CRL_RELOAD_MS".to_owned(), "100".to_owned()));
    let server = TestServer::start_with(options).await;
    const WARNING: &str = "the server key file is readable by every user";
    let (cert, key) = server.ca.server_cert();
    replace(&server, "server-key.pem", &key, Some(0o640));
    replace(&server, "server.pem", &cert, None);
    server
        .logs
        .wait_for_line(&["server certificate loaded"], Duration::from_secs(10))
        .await;
    let before = server.logs.matching(WARNING).len();
    let (cert, key) = server.ca.server_cert();
    replace(&server, "server-key.pem", &key, Some(0o644));
    replace(&server, "server.pem", &cert, None);
    let warned = server
        .logs
        .wait_for(WARNING, before + 1, Duration::from_secs(10))
        .await;
    assert!(
        warned.last().is_some_and(|line| line.contains("0644")),
        "{warned:?}"
    );
    let status = server.stop().await;
    assert!(status.success(), "strongroomd exited with {status}");
}
