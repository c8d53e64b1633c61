//! The relay mode: what going through strongroomd's relay adds over calling
//! the same local HTTPS upstream directly. One strongroomd (SQLite), one
//! upstream on 127.0.0.1 (the e2e suite's, HTTP/2 by ALPN), an agent with
//! inject on one credential whose grant names the upstream; the direct
//! client speaks HTTP/2 over one TLS connection to the upstream, as the
//! relay does upstream; the relay client calls `RelayService/Forward` over
//! the bench's gRPC connections. `GET /echo` both ways, with the
//! credential added by its template on the relay path.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use strongroom_client::Client;
use strongroom_e2e::upstream::Upstream;
use strongroom_e2e::{Backend, Options, TestServer, api_key};
use strongroom_proto::v1 as pb;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{self, pki_types::CertificateDer, pki_types::ServerName};

use crate::load::Op;

/// The host name the upstream is reached by (resolved to 127.0.0.1).
const HOST: &str = "api.example.test";

/// A prepared relay benchmark.
pub struct RelayBench {
    /// The server (stopped at the end).
    pub server: TestServer,
    upstream: Upstream,
    agents: Vec<Client>,
    direct: http2::SendRequest<Empty<Bytes>>,
    _dir: tempfile::TempDir,
}

impl RelayBench {
    /// Starts the upstream and strongroomd on `backend` with its relay
    /// pointed at it.
    pub async fn start(
        backend: Backend,
        connections: usize,
        max_in_flight: usize,
    ) -> Result<Self, String> {
        let upstream = Upstream::start(&[HOST]).await;
        let port = upstream.port();
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let ca = dir.path().join("upstream-ca.pem");
        std::fs::write(&ca, upstream.ca_pem()).map_err(|e| e.to_string())?;
        let mut options = Options::new(backend);
        options.log_level = "warn,strongroomd::app=info".into();
        options.env = vec![
            (
                "STRONGROOM_RELAY_RESOLVE".into(),
                format!("{HOST}:{port}:127.0.0.1"),
            ),
            (
                "STRONGROOM_RELAY_ALLOW_INTERNAL".into(),
                format!("{HOST}:{port}"),
            ),
            (
                "STRONGROOM_RELAY_UPSTREAM_CA".into(),
                ca.to_string_lossy().into_owned(),
            ),
            (
                "STRONGROOM_RELAY_MAX_IN_FLIGHT_PER_PRINCIPAL".into(),
                max_in_flight.to_string(),
            ),
        ];
        let server = TestServer::start_with(options).await;
        let admin = server.tenant("bench").await;
        let (agent_id, _) = server.principal(&admin, "agent", pb::Role::Agent).await;
        admin
            .client
            .credentials()
            .create_credential(pb::CreateCredentialRequest {
                environment: "production".into(),
                name: "bench/relay".into(),
                service: "bench".into(),
                value: api_key("bench-relay-value-0123456789abcdef"),
                ..Default::default()
            })
            .await
            .map_err(|e| format!("create: {e}"))?;
        admin
            .client
            .policy()
            .create_grant(pb::CreateGrantRequest {
                subject: Some(pb::GrantSubject {
                    subject: Some(pb::grant_subject::Subject::PrincipalId(agent_id)),
                }),
                selector: "bench/*".into(),
                environments: vec!["production".into()],
                capabilities: vec![pb::Capability::Inject as i32],
                destinations: vec![pb::Destination {
                    host: format!("{HOST}:{port}"),
                    methods: vec!["GET".into()],
                    path_prefixes: vec!["/echo".into()],
                    ..Default::default()
                }],
                reason: "benchmark".into(),
                ..Default::default()
            })
            .await
            .map_err(|e| format!("grant: {e}"))?;
        let mut agents = Vec::new();
        for _ in 0..connections.max(1) {
            agents.push(server.client("spiffe://e2e.test/bench/agent").await);
        }
        let direct = direct_connection(&upstream).await?;
        Ok(Self {
            server,
            upstream,
            agents,
            direct,
            _dir: dir,
        })
    }

    /// `GET /echo` straight to the upstream.
    pub fn direct(&self) -> Op {
        let sender = self.direct.clone();
        let port = self.upstream.port();
        Arc::new(move |_, _| {
            let mut sender = sender.clone();
            Box::pin(async move {
                let request = http::Request::get(format!("https://{HOST}:{port}/echo"))
                    .body(Empty::<Bytes>::new())
                    .map_err(|e| e.to_string())?;
                sender.ready().await.map_err(|e| e.to_string())?;
                let response = sender
                    .send_request(request)
                    .await
                    .map_err(|e| e.to_string())?;
                if !response.status().is_success() {
                    return Err(format!("status {}", response.status()));
                }
                response
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(())
            })
        })
    }

    /// `GET /echo` through the relay, the credential added by template.
    pub fn relayed(&self) -> Op {
        let agents = Arc::new(self.agents.clone());
        let port = self.upstream.port();
        Arc::new(move |worker, _| {
            let client = agents[worker % agents.len()].clone();
            Box::pin(async move {
                let head = pb::RelayRequestHead {
                    method: "GET".into(),
                    url: format!("https://{HOST}:{port}/echo"),
                    inject: vec![pb::InjectionRef {
                        environment: "production".into(),
                        name: "bench/relay".into(),
                        field: String::new(),
                    }],
                    purpose: "benchmark".into(),
                    ..Default::default()
                };
                let messages = vec![pb::ForwardRequest {
                    part: Some(pb::forward_request::Part::Head(head)),
                }];
                let mut stream = client
                    .relay()
                    .forward(tokio_stream::iter(messages))
                    .await
                    .map_err(|e| format!("{}: {}", e.code(), e.message()))?
                    .into_inner();
                let mut status = 0;
                while let Some(m) = stream
                    .message()
                    .await
                    .map_err(|e| format!("{}: {}", e.code(), e.message()))?
                {
                    if let Some(pb::forward_response::Part::Head(h)) = m.part {
                        status = h.status;
                    }
                }
                if status != 200 {
                    return Err(format!("status {status}"));
                }
                Ok(())
            })
        })
    }
}

/// One HTTP/2 connection to the upstream, verifying its certificate.
async fn direct_connection(
    upstream: &Upstream,
) -> Result<http2::SendRequest<Empty<Bytes>>, String> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let ca =
        CertificateDer::from_pem_slice(upstream.ca_pem().as_bytes()).map_err(|e| e.to_string())?;
    roots.add(ca).map_err(|e| e.to_string())?;
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(upstream.addr())
        .await
        .map_err(|e| e.to_string())?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let name = ServerName::try_from(HOST).map_err(|e| e.to_string())?;
    let tls = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(sender)
}
