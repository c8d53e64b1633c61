//! The peer: OpenBao with PostgreSQL storage (its pool tuned so it does not
//! reconnect under load), a file audit device and TLS, driven over HTTPS/1.1
//! keep-alive connections (one per worker, as its Go and CLI clients do).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::process::{Child, Command};
use tokio::sync::Mutex;

use crate::load::{Op, pick};

/// A running, unsealed OpenBao with KV v2 at `secret/`.
pub struct OpenBao {
    child: Child,
    addr: std::net::SocketAddr,
    token: String,
    tls: tokio_rustls::TlsConnector,
    database: String,
    /// Working folder (config, certificates, audit log).
    pub dir: tempfile::TempDir,
    secrets: usize,
}

/// One keep-alive HTTPS connection.
pub struct Conn(SendRequest<Full<Bytes>>);

async fn connect(
    addr: std::net::SocketAddr,
    tls: &tokio_rustls::TlsConnector,
) -> Result<Conn, String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let name = ServerName::try_from("127.0.0.1").map_err(|e| e.to_string())?;
    let stream = tls.connect(name, tcp).await.map_err(|e| e.to_string())?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(Conn(sender))
}

impl Conn {
    /// Sends one request and returns (status, body).
    pub async fn call(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<String>,
    ) -> Result<(u16, Bytes), String> {
        let mut req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "127.0.0.1");
        if let Some(t) = token {
            req = req.header("X-Vault-Token", t);
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| e.to_string())?;
        self.0.ready().await.map_err(|e| e.to_string())?;
        let resp = self.0.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, bytes))
    }
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

fn certificates(dir: &Path) -> Result<CertificateDer<'static>, String> {
    let ca_key = KeyPair::generate().map_err(|e| e.to_string())?;
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "bench CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca_cert = ca.self_signed(&ca_key).map_err(|e| e.to_string())?;
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().map_err(|e| e.to_string())?;
    let params = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
        .map_err(|e| e.to_string())?;
    let cert = params.signed_by(&key, &issuer).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("bao.pem"), cert.pem()).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("bao-key.pem"), key.serialize_pem()).map_err(|e| e.to_string())?;
    CertificateDer::from_pem_slice(ca_cert.pem().as_bytes()).map_err(|e| e.to_string())
}

async fn create_database(admin_url: &str) -> Result<(String, String), String> {
    use sqlx::Connection;
    let name = format!("sr_bench_bao_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(admin_url)
        .await
        .map_err(|e| e.to_string())?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    conn.close().await.ok();
    let (base, _) = admin_url.rsplit_once('/').unwrap_or((admin_url, ""));
    Ok((name.clone(), format!("{base}/{name}?sslmode=disable")))
}

impl OpenBao {
    /// Starts OpenBao from `bao`, initialises, unseals, mounts KV v2 and
    /// writes `secrets` secrets.
    pub async fn start(bao: &Path, admin_url: &str, secrets: usize) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let ca = certificates(dir.path())?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca).map_err(|e| e.to_string())?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(client));
        let (database, url) = create_database(admin_url).await?;
        let port = free_port()?;
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}")
            .parse()
            .map_err(|e| format!("{e}"))?;
        let d = dir.path().display();
        let config = format!(
            r#"
disable_mlock = true
ui = false
api_addr = "https://127.0.0.1:{port}"
storage "postgresql" {{
  connection_url = "{url}"
  table = "openbao_kv_store"
  max_parallel = "128"
  max_idle_connections = "128"
}}
listener "tcp" {{
  address = "127.0.0.1:{port}"
  tls_cert_file = "{d}/bao.pem"
  tls_key_file = "{d}/bao-key.pem"
}}
audit "file" "file" {{
  options {{
    file_path = "{d}/audit.log"
  }}
}}
"#
        );
        let config_path: PathBuf = dir.path().join("bao.hcl");
        std::fs::write(&config_path, config).map_err(|e| e.to_string())?;
        let log = std::fs::File::create(dir.path().join("bao.log")).map_err(|e| e.to_string())?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(bao)
            .arg("server")
            .arg(format!("-config={}", config_path.display()))
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bao.display()))?;
        let mut bao = OpenBao {
            child,
            addr,
            token: String::new(),
            tls,
            database,
            dir,
            secrets,
        };
        bao.initialise().await?;
        bao.load().await?;
        crate::analyze(&bao.database).await?;
        Ok(bao)
    }

    async fn conn_when_up(&self) -> Result<Conn, String> {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            match connect(self.addr, &self.tls).await {
                Ok(c) => return Ok(c),
                Err(e) if Instant::now() > until => {
                    let log = std::fs::read_to_string(self.dir.path().join("bao.log"))
                        .unwrap_or_default();
                    return Err(format!("OpenBao did not come up: {e}\n{log}"));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    async fn initialise(&mut self) -> Result<(), String> {
        let mut c = self.conn_when_up().await?;
        let (status, body) = c
            .call(
                "PUT",
                "/v1/sys/init",
                None,
                Some(r#"{"secret_shares":1,"secret_threshold":1}"#.into()),
            )
            .await?;
        if status != 200 {
            return Err(format!("init: {status} {}", String::from_utf8_lossy(&body)));
        }
        let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        let key = v["keys_base64"][0]
            .as_str()
            .ok_or("init: no key")?
            .to_owned();
        self.token = v["root_token"].as_str().ok_or("init: no token")?.to_owned();
        let (status, body) = c
            .call(
                "PUT",
                "/v1/sys/unseal",
                None,
                Some(serde_json::json!({ "key": key }).to_string()),
            )
            .await?;
        if status != 200 {
            return Err(format!(
                "unseal: {status} {}",
                String::from_utf8_lossy(&body)
            ));
        }
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, _) = c.call("GET", "/v1/sys/health", None, None).await?;
            if status == 200 {
                break;
            }
            if Instant::now() > until {
                return Err(format!("OpenBao not active: health {status}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (status, body) = c
            .call(
                "POST",
                "/v1/sys/mounts/secret",
                Some(&self.token),
                Some(r#"{"type":"kv","options":{"version":"2"}}"#.into()),
            )
            .await?;
        if status != 204 && status != 200 {
            return Err(format!(
                "mount kv-v2: {status} {}",
                String::from_utf8_lossy(&body)
            ));
        }
        // KV v2 finishes setting up asynchronously; wait for a first write.
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, _) = c
                .call(
                    "POST",
                    "/v1/secret/data/bench/probe",
                    Some(&self.token),
                    Some(r#"{"data":{"v":"x"}}"#.into()),
                )
                .await?;
            if status == 200 {
                return Ok(());
            }
            if Instant::now() > until {
                return Err(format!("KV v2 not ready: {status}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn load(&self) -> Result<(), String> {
        let mut tasks = Vec::new();
        for chunk in 0..8 {
            let mut c = connect(self.addr, &self.tls).await?;
            let token = self.token.clone();
            let n = self.secrets;
            tasks.push(tokio::spawn(async move {
                for i in (chunk..n).step_by(8) {
                    let body = serde_json::json!({"data": {"api_key": format!("bench-value-{i}-0123456789abcdef")}});
                    let (status, b) = c
                        .call("POST", &format!("/v1/secret/data/bench/cred-{i}"), Some(&token), Some(body.to_string()))
                        .await?;
                    if status != 200 {
                        return Err(format!("write: {status} {}", String::from_utf8_lossy(&b)));
                    }
                }
                Ok::<(), String>(())
            }));
        }
        for t in tasks {
            t.await.map_err(|e| e.to_string())??;
        }
        Ok(())
    }

    async fn connections(&self, n: usize) -> Result<Arc<Vec<Mutex<Conn>>>, String> {
        let mut conns = Vec::with_capacity(n);
        for _ in 0..n {
            conns.push(Mutex::new(connect(self.addr, &self.tls).await?));
        }
        Ok(Arc::new(conns))
    }

    /// KV v2 read of a random secret; one connection per worker.
    pub async fn read(&self, concurrency: usize) -> Result<Op, String> {
        let conns = self.connections(concurrency).await?;
        let token = Arc::new(self.token.clone());
        let n = self.secrets;
        Ok(Arc::new(move |worker, i| {
            let conns = Arc::clone(&conns);
            let token = Arc::clone(&token);
            Box::pin(async move {
                let mut c = conns[worker].lock().await;
                let path = format!("/v1/secret/data/bench/cred-{}", pick(worker, i, n));
                let (status, body) = c.call("GET", &path, Some(&token), None).await?;
                if status != 200 {
                    return Err(format!("read {status}: {}", String::from_utf8_lossy(&body)));
                }
                Ok(())
            })
        }))
    }

    /// KV v2 write: `existing` overwrites a random loaded secret (a new
    /// version, like a rotation), otherwise writes a new path (a create).
    pub async fn write(&self, concurrency: usize, existing: bool, run: &str) -> Result<Op, String> {
        let conns = self.connections(concurrency).await?;
        let token = Arc::new(self.token.clone());
        let n = self.secrets;
        let run = run.to_owned();
        Ok(Arc::new(move |worker, i| {
            let conns = Arc::clone(&conns);
            let token = Arc::clone(&token);
            let path = if existing {
                format!("/v1/secret/data/bench/cred-{}", pick(worker, i, n))
            } else {
                format!("/v1/secret/data/bench/new/{run}/{worker}-{i}")
            };
            Box::pin(async move {
                let mut c = conns[worker].lock().await;
                let body = format!(r#"{{"data":{{"api_key":"bench-written-{worker}-{i}"}}}}"#);
                let (status, b) = c.call("POST", &path, Some(&token), Some(body)).await?;
                if status != 200 {
                    return Err(format!("write {status}: {}", String::from_utf8_lossy(&b)));
                }
                Ok(())
            })
        }))
    }

    /// Stops OpenBao and drops its database.
    pub async fn stop(mut self, admin_url: &str) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        use sqlx::Connection;
        if let Ok(mut conn) = sqlx::PgConnection::connect(admin_url).await {
            let _ = sqlx::query(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.database
            ))
            .execute(&mut conn)
            .await;
        }
    }
}
