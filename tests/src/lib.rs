//! The end-to-end test harness: starts the real `strongroomd` binary on a free
//! loopback port with real mutual TLS (a CA minted per server) and a fresh
//! database (a new Postgres database, connected as a non-superuser role, or a
//! new SQLite file), and hands out typed clients for any identity. Every line
//! the server logs is kept so tests can search it for secrets.

pub mod cli;
pub mod pg_cluster;
pub mod upstream;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationList,
    CertificateRevocationListParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevocationReason, RevokedCertParams, SanType,
    SerialNumber,
};
use strongroom_client::{Client, ClientConfig};
use strongroom_proto::v1 as pb;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// The identity the harness configures as platform operator.
pub const OPERATOR: &str = "spiffe://e2e.test/operator";

/// Which database the server uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A fresh Postgres database.
    Postgres,
    /// A fresh SQLite file.
    Sqlite,
}

/// The Postgres URL used to create test databases (a role allowed to create
/// databases and roles): `DATABASE_URL`, else the local default.
pub fn admin_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/postgres".into())
}

fn with_database(url: &str, db: &str) -> String {
    let (base, _) = url.rsplit_once('/').unwrap_or((url, ""));
    format!("{base}/{db}")
}

fn with_user(url: &str, user: &str) -> String {
    // postgres://USER[:PASS]@HOST/DB -> postgres://user@HOST/DB
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let host = rest.split_once('@').map_or(rest, |(_, h)| h);
    format!("{scheme}://{user}@{host}")
}

fn with_host(url: &str, addr: std::net::SocketAddr) -> String {
    // postgres://USER@HOST:PORT/DB -> postgres://USER@ADDR/DB
    let (head, rest) = url.split_once('@').unwrap_or(("postgres://", url));
    let db = rest.split_once('/').map_or("", |(_, db)| db);
    format!("{head}@{addr}/{db}")
}

/// The path of the `strongroomd` binary built in this target directory.
pub fn server_binary() -> PathBuf {
    if let Ok(p) = std::env::var("STRONGROOMD_BIN") {
        return PathBuf::from(p);
    }
    // Test executables live in target/<profile>/deps, other binaries (the
    // benchmark) in target/<profile>: strongroomd sits in target/<profile>.
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().expect("executable directory");
    let bin = if dir.join("strongroomd").exists() {
        dir.join("strongroomd")
    } else {
        dir.parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
            .join("strongroomd")
    };
    assert!(
        bin.exists(),
        "{} not found: build it first (`cargo build -p strongroomd`; `cargo test --workspace` builds it)",
        bin.display()
    );
    bin
}

/// A certificate authority for one test server, minting client certificates.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    ca_pem: String,
    crl_number: AtomicU64,
}

/// A client certificate minted with a known serial number (to revoke it).
#[derive(Debug, Clone)]
pub struct IssuedCert {
    /// The certificate, PEM.
    pub cert: String,
    /// Its private key, PEM.
    pub key: String,
    /// Its serial number.
    pub serial: u64,
}

/// How a minted client certificate should look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertKind {
    /// Valid now, identity as a SPIFFE URI SAN.
    Spiffe,
    /// Valid now, identity only as the subject CN.
    CommonName,
    /// Expired yesterday.
    Expired,
}

impl TestCa {
    /// A fresh CA.
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("ca key");
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("ca cert");
        Self {
            ca_pem: cert.pem(),
            issuer: Issuer::new(params, key),
            crl_number: AtomicU64::new(1),
        }
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> &str {
        &self.ca_pem
    }

    /// A server certificate for localhost / 127.0.0.1: (cert PEM, key PEM).
    pub fn server_cert(&self) -> (String, String) {
        let key = KeyPair::generate().expect("key");
        let mut params =
            CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, "strongroomd");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.issuer).expect("server cert");
        (cert.pem(), key.serialize_pem())
    }

    /// Signs a server certificate with `params` for `key`: the certificate,
    /// PEM.
    pub fn sign_server(&self, params: &CertificateParams, key: &KeyPair) -> String {
        params
            .signed_by(key, &self.issuer)
            .expect("server cert")
            .pem()
    }

    /// A client certificate for `identity`: (cert PEM, key PEM).
    pub fn client_cert(&self, identity: &str, kind: CertKind) -> (String, String) {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        match kind {
            CertKind::CommonName => params.distinguished_name.push(DnType::CommonName, identity),
            CertKind::Spiffe | CertKind::Expired => {
                params
                    .distinguished_name
                    .push(DnType::CommonName, "workload");
                params.subject_alt_names = vec![SanType::URI(identity.try_into().expect("uri"))];
            }
        }
        if kind == CertKind::Expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.issuer).expect("client cert");
        (cert.pem(), key.serialize_pem())
    }
}

impl TestCa {
    /// A client certificate for `identity` (SPIFFE URI SAN) with a fresh
    /// serial number, valid until `not_after` (far in the future if `None`).
    pub fn issue_client(&self, identity: &str, not_after: Option<SystemTime>) -> IssuedCert {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "workload");
        params.subject_alt_names = vec![SanType::URI(identity.try_into().expect("uri"))];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        // Positive and at most 63 bits, so the DER encoding is plain.
        let serial = uuid::Uuid::new_v4().as_u64_pair().0 >> 1;
        params.serial_number = Some(SerialNumber::from(serial));
        if let Some(t) = not_after {
            params.not_before = (SystemTime::now() - Duration::from_secs(60)).into();
            params.not_after = t.into();
        }
        let cert = params.signed_by(&key, &self.issuer).expect("client cert");
        IssuedCert {
            cert: cert.pem(),
            key: key.serialize_pem(),
            serial,
        }
    }

    /// A CRL of this CA revoking the certificates with serial numbers
    /// `revoked` (none: an empty CRL), each with a higher CRL number.
    pub fn crl(&self, revoked: &[u64]) -> CertificateRevocationList {
        let now = SystemTime::now();
        let params = CertificateRevocationListParams {
            this_update: (now - Duration::from_secs(60)).into(),
            next_update: (now + Duration::from_secs(24 * 3600)).into(),
            crl_number: SerialNumber::from(self.crl_number.fetch_add(1, Ordering::Relaxed)),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|serial| RevokedCertParams {
                    serial_number: SerialNumber::from(*serial),
                    revocation_time: (now - Duration::from_secs(1)).into(),
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params.signed_by(&self.issuer).expect("sign CRL")
    }
}

/// Everything the server printed, shared with the test.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<String>>>);

impl Logs {
    /// All lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().expect("logs").clone()
    }

    /// Whether any line contains `needle`.
    pub fn contains(&self, needle: &str) -> bool {
        self.0
            .lock()
            .expect("logs")
            .iter()
            .any(|l| l.contains(needle))
    }

    /// The lines containing `needle`.
    pub fn matching(&self, needle: &str) -> Vec<String> {
        self.0
            .lock()
            .expect("logs")
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }

    /// Waits until a line contains every one of `needles` and returns it, or
    /// panics with the log after `within`.
    pub async fn wait_for_line(&self, needles: &[&str], within: Duration) -> String {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(line) = self
                .lines()
                .into_iter()
                .find(|l| needles.iter().all(|n| l.contains(n)))
            {
                return line;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the server logged no line with all of {needles:?} within {within:?}; its log:\n{}",
                self.lines().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until at least `count` lines contain `needle` (the server logs
    /// asynchronously to the call that caused the line); returns those lines,
    /// or panics with the log after `within`.
    pub async fn wait_for(&self, needle: &str, count: usize, within: Duration) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let found = self.matching(needle);
            if found.len() >= count {
                return found;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the server did not log {count} line(s) with {needle:?} within {within:?}; its log:\n{}",
                self.lines().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Options for starting a server.
#[derive(Debug, Clone)]
pub struct Options {
    /// Backend.
    pub backend: Backend,
    /// `STRONGROOM_LOG_LEVEL`.
    pub log_level: String,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Configure a client CRL file (`crl.pem` in the working folder, at
    /// first an empty CRL of the test CA), checked for changes every 100 ms;
    /// see [`TestServer::write_crl`].
    pub crl: bool,
    /// A database from before a migration: only the migrations older than
    /// this version are applied, then this SQL is run, then `strongroomd
    /// migrate` applies the rest (its output is kept in
    /// [`TestServer::migrate_output`]).
    pub seed_before: Option<(i64, String)>,
    /// Share another server's Postgres database and root key (a second
    /// replica), instead of a fresh database.
    pub replica_of: Option<ReplicaOf>,
    /// Give the server a clock the test moves (see
    /// [`TestServer::advance_clock`]); needs a server built with the
    /// `test-clock` feature, as `cargo test --workspace` builds it.
    pub test_clock: bool,
    /// Connect the server to its fresh Postgres database through this
    /// address (a proxy the test controls) instead of directly.
    pub postgres_via: Option<std::net::SocketAddr>,
}

/// What a replica shares with the server it replicates.
#[derive(Debug, Clone)]
pub struct ReplicaOf {
    /// The Postgres URL (the server's non-superuser role).
    pub database_url: String,
    /// The root key, as the first server read it.
    pub root_key: String,
}

impl Options {
    /// Defaults for `backend`: debug logging.
    pub fn new(backend: Backend) -> Self {
        Self {
            backend,
            log_level: "debug".into(),
            env: Vec::new(),
            crl: false,
            seed_before: None,
            replica_of: None,
            test_clock: false,
            postgres_via: None,
        }
    }
}

/// A running `strongroomd`.
pub struct TestServer {
    /// The server's address.
    pub addr: std::net::SocketAddr,
    /// The CA the server trusts for clients (and signed its own certificate).
    pub ca: TestCa,
    /// Everything the server logged.
    pub logs: Logs,
    /// The working folder (certificates, key, SQLite file).
    pub dir: tempfile::TempDir,
    /// The Postgres database name, for Postgres servers.
    pub database: Option<String>,
    /// The Postgres URL the server connects with (its non-superuser role).
    pub database_url: Option<String>,
    /// What `strongroomd migrate` printed on stdout, when the harness ran it.
    pub migrate_output: String,
    /// The file holding the server clock's offset, in seconds, when the
    /// server has a test clock.
    clock_file: Option<PathBuf>,
    child: Child,
    log_readers: Vec<JoinHandle<()>>,
    command: Command,
}

async fn create_pg_database() -> (String, String) {
    use sqlx::Connection;
    let admin = admin_url();
    let name = format!("sr_e2e_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to Postgres at {admin}: {e}"));
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create database");
    conn.close().await.ok();
    (name.clone(), with_database(&admin, &name))
}

async fn ensure_server_role(db_url: &str) -> String {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(db_url)
        .await
        .expect("connect test database");
    sqlx::query(
        "DO $$ BEGIN CREATE ROLE strongroom_e2e_server LOGIN IN ROLE strongroom_app; \
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$",
    )
    .execute(&mut conn)
    .await
    .expect("create server role");
    conn.close().await.ok();
    with_user(db_url, "strongroom_e2e_server")
}

impl TestServer {
    /// Starts a server with debug logging on `backend`.
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(Options::new(backend)).await
    }

    /// Starts a server with `options`.
    pub async fn start_with(options: Options) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = TestCa::new("e2e CA");
        let (cert, key) = ca.server_cert();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write");
        std::fs::write(dir.path().join("server.pem"), cert).expect("write");
        std::fs::write(dir.path().join("server-key.pem"), key).expect("write");
        let root_key = options
            .replica_of
            .as_ref()
            .map_or_else(hex_key, |r| r.root_key.clone());
        std::fs::write(dir.path().join("root.key"), &root_key).expect("write");

        let mut cmd = Command::new(server_binary());
        cmd.arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("STRONGROOM_LISTEN", "127.0.0.1:0")
            .env("STRONGROOM_TLS_CERT", dir.path().join("server.pem"))
            .env("STRONGROOM_TLS_KEY", dir.path().join("server-key.pem"))
            .env("STRONGROOM_TLS_CLIENT_CA", dir.path().join("ca.pem"))
            .env("STRONGROOM_ROOT_KEY_FILE", dir.path().join("root.key"))
            .env("STRONGROOM_PLATFORM_OPERATORS", OPERATOR)
            // The suite's trust domain names the tenant in the first path
            // segment (`spiffe://e2e.test/NAME/*`); an `env` entry with an
            // empty value restores the default (2).
            .env("STRONGROOM_MIN_NAMESPACE_DEPTH", "1")
            .env("STRONGROOM_LOG_FORMAT", "json")
            .env("STRONGROOM_LOG_LEVEL", &options.log_level);
        let mut migrate_output = String::new();
        let (database, database_url) = match options.backend {
            Backend::Postgres if options.replica_of.is_some() => {
                // The first server owns (and drops) the database.
                let url = options
                    .replica_of
                    .as_ref()
                    .map(|r| r.database_url.clone())
                    .unwrap_or_default();
                cmd.env("STRONGROOM_DATABASE_URL", &url)
                    .env("STRONGROOM_DATABASE_MAX_CONNECTIONS", "8");
                (None, Some(url))
            }
            Backend::Postgres => {
                let (name, admin_db_url) = create_pg_database().await;
                if let Some((before, seed)) = &options.seed_before {
                    let pool = sqlx::PgPool::connect(&admin_db_url)
                        .await
                        .expect("connect test database");
                    seed_database(&pool, "postgres", *before, seed).await;
                    pool.close().await;
                }
                migrate_output = run_migrate(&admin_db_url, &options.env).await;
                let mut server_url = ensure_server_role(&admin_db_url).await;
                if let Some(via) = options.postgres_via {
                    server_url = with_host(&server_url, via);
                }
                cmd.env("STRONGROOM_DATABASE_URL", &server_url)
                    .env("STRONGROOM_DATABASE_MAX_CONNECTIONS", "8");
                (Some(name), Some(server_url))
            }
            Backend::Sqlite => {
                let path = dir.path().join("strongroom.db");
                if let Some((before, seed)) = &options.seed_before {
                    let pool = sqlx::SqlitePool::connect_with(
                        sqlx::sqlite::SqliteConnectOptions::new()
                            .filename(&path)
                            .create_if_missing(true),
                    )
                    .await
                    .expect("create SQLite database");
                    seed_database(&pool, "sqlite", *before, seed).await;
                    pool.close().await;
                    migrate_output = run_migrate_sqlite(&path, &options.env).await;
                }
                cmd.env("STRONGROOM_DATABASE_BACKEND", "sqlite")
                    .env("STRONGROOM_SQLITE_PATH", &path);
                (None, None)
            }
        };
        if options.crl {
            let crl = dir.path().join("crl.pem");
            std::fs::write(&crl, ca.crl(&[]).pem().expect("CRL PEM")).expect("write");
            cmd.env("STRONGROOM_TLS_CRL", &crl)
                .env("STRONGROOM_TLS_CRL_RELOAD_MS", "100");
        }
        let clock_file = options.test_clock.then(|| dir.path().join("clock-offset"));
        if let Some(file) = &clock_file {
            std::fs::write(file, "0").expect("write the clock offset");
            cmd.env("STRONGROOM_TEST_CLOCK_FILE", file);
        }
        for (k, v) in &options.env {
            cmd.env(k, v);
        }
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let logs = Logs::default();
        let (child, addr, log_readers) = spawn_server(&mut cmd, &logs).await;
        assert!(
            clock_file.is_none() || logs.contains("test clock"),
            "{} has no test clock: build it with `cargo build -p strongroomd --features test-clock` (`cargo test --workspace` does)",
            server_binary().display()
        );
        Self {
            addr,
            ca,
            logs,
            dir,
            database,
            database_url,
            migrate_output,
            clock_file,
            child,
            log_readers,
            command: cmd,
        }
    }

    /// Options for a second server (a replica) on this server's Postgres
    /// database, with its root key; panics for SQLite servers.
    pub fn replica_options(&self) -> Options {
        let database_url = self
            .database_url
            .clone()
            .expect("only Postgres servers have replicas");
        let root_key =
            std::fs::read_to_string(self.dir.path().join("root.key")).expect("read root key");
        Options {
            replica_of: Some(ReplicaOf {
                database_url,
                root_key,
            }),
            ..Options::new(Backend::Postgres)
        }
    }

    /// Stops the server (SIGTERM, clean exit) and starts it again with the
    /// same configuration, database, root key and CA; the address changes.
    /// Logs of both runs stay in [`TestServer::logs`].
    pub async fn restart(&mut self) {
        self.terminate().await;
        let (child, addr, log_readers) = spawn_server(&mut self.command, &self.logs).await;
        self.child = child;
        self.addr = addr;
        self.log_readers = log_readers;
    }

    /// Kills the server (SIGKILL: no shutdown, nothing flushed or closed)
    /// and starts it again on the same storage, as [`TestServer::restart`].
    pub async fn kill_and_restart(&mut self) {
        self.child.start_kill().expect("SIGKILL");
        tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .expect("strongroomd did not die within 15 s")
            .expect("wait");
        for reader in self.log_readers.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
        }
        let (child, addr, log_readers) = spawn_server(&mut self.command, &self.logs).await;
        self.child = child;
        self.addr = addr;
        self.log_readers = log_readers;
    }

    /// Sends SIGTERM and waits for a clean exit and the end of its output.
    async fn terminate(&mut self) -> std::process::ExitStatus {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
        let status = tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .expect("strongroomd did not stop within 15 s")
            .expect("wait");
        for reader in self.log_readers.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
        }
        status
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("the server is running")
    }

    /// Sends SIGTERM without waiting.
    pub fn send_sigterm(&self) {
        let status = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits up to `within` for the process to exit, and for the end of its
    /// output; panics if it does not.
    pub async fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let status = tokio::time::timeout(within, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("strongroomd did not exit within {within:?}"))
            .expect("wait");
        for reader in self.log_readers.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
        }
        status
    }

    /// `https://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    /// Writes a client certificate for `identity` into the working folder and
    /// returns its client configuration.
    pub fn client_config(&self, identity: &str, kind: CertKind) -> ClientConfig {
        let (cert, key) = self.ca.client_cert(identity, kind);
        self.client_config_from_pem(&cert, &key)
    }

    /// A client configuration presenting the given certificate and key.
    pub fn client_config_from_pem(&self, cert: &str, key: &str) -> ClientConfig {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let cert_path = self.dir.path().join(format!("client-{id}.pem"));
        let key_path = self.dir.path().join(format!("client-{id}-key.pem"));
        std::fs::write(&cert_path, cert).expect("write");
        std::fs::write(&key_path, key).expect("write");
        ClientConfig {
            endpoint: self.endpoint(),
            ca: self.dir.path().join("ca.pem"),
            cert: cert_path,
            key: key_path,
            domain: Some("localhost".into()),
            tenant: None,
            connect_timeout: Duration::from_secs(5),
        }
    }

    /// Moves the server's clock forward by `by` (whole seconds), at once:
    /// the next reading of the clock sees it. Panics unless the server was
    /// started with [`Options::test_clock`].
    pub fn advance_clock(&self, by: Duration) {
        let file = self
            .clock_file
            .as_ref()
            .expect("the server was started without a test clock");
        let now: u64 = std::fs::read_to_string(file)
            .expect("read the clock offset")
            .trim()
            .parse()
            .expect("a clock offset");
        let tmp = file.with_extension("new");
        std::fs::write(&tmp, (now + by.as_secs()).to_string()).expect("write the clock offset");
        std::fs::rename(&tmp, file).expect("replace the clock offset");
    }

    /// Replaces the client CRL file (see [`Options::crl`]) with `contents`,
    /// atomically: the server never reads a half-written file.
    pub fn write_crl(&self, contents: &[u8]) {
        let tmp = self.dir.path().join("crl.pem.new");
        std::fs::write(&tmp, contents).expect("write CRL");
        std::fs::rename(&tmp, self.dir.path().join("crl.pem")).expect("replace CRL");
    }

    /// A raw channel to the server that trusts the server's CA and presents
    /// `identity` (certificate PEM, key PEM), or no client certificate at
    /// all when `None`.
    pub async fn channel(
        &self,
        identity: Option<(&str, &str)>,
    ) -> Result<Channel, tonic::transport::Error> {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(self.ca.pem()))
            .domain_name("localhost");
        if let Some((cert, key)) = identity {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        Endpoint::from_shared(self.endpoint())?
            .connect_timeout(Duration::from_secs(5))
            .tls_config(tls)?
            .connect()
            .await
    }

    /// A connected client for `identity` (SPIFFE URI SAN).
    pub async fn client(&self, identity: &str) -> Client {
        Client::connect(&self.client_config(identity, CertKind::Spiffe))
            .await
            .expect("connect")
    }

    /// The platform operator's client.
    pub async fn operator(&self) -> Client {
        self.client(OPERATOR).await
    }

    /// Creates tenant `name` with the identity namespace
    /// `spiffe://e2e.test/NAME/*` and an admin
    /// (`spiffe://e2e.test/NAME/admin`), and returns the admin's client.
    pub async fn tenant(&self, name: &str) -> TenantAdmin {
        self.tenant_with(name, &[]).await
    }

    /// As [`TestServer::tenant`], with `more` identity namespaces besides
    /// `spiffe://e2e.test/NAME/*`.
    pub async fn tenant_with(&self, name: &str, more: &[&str]) -> TenantAdmin {
        let identity = format!("spiffe://e2e.test/{name}/admin");
        let mut namespaces = vec![format!("spiffe://e2e.test/{name}/*")];
        namespaces.extend(more.iter().map(|n| (*n).to_owned()));
        let response = self
            .operator()
            .await
            .admin()
            .create_tenant(pb::CreateTenantRequest {
                name: name.into(),
                initial_admin: Some(pb::InitialAdmin {
                    name: "admin".into(),
                    identity: identity.clone(),
                }),
                identity_namespaces: namespaces,
                ..Default::default()
            })
            .await
            .expect("create tenant")
            .into_inner();
        TenantAdmin {
            name: name.to_owned(),
            tenant_id: response.tenant.expect("tenant").id,
            principal_id: response.admin.expect("admin principal").id,
            identity: identity.clone(),
            client: self.client(&identity).await,
        }
    }

    /// Creates a principal with `role` in the admin's tenant, binds
    /// `spiffe://e2e.test/TENANT/NAME` to it, and returns (principal id,
    /// client).
    pub async fn principal(
        &self,
        admin: &TenantAdmin,
        name: &str,
        role: pb::Role,
    ) -> (String, Client) {
        self.principal_in(admin, name, role, &[]).await
    }

    /// As [`TestServer::principal`], confined to `environments`.
    pub async fn principal_in(
        &self,
        admin: &TenantAdmin,
        name: &str,
        role: pb::Role,
        environments: &[&str],
    ) -> (String, Client) {
        let p = admin
            .client
            .admin()
            .create_principal(pb::CreatePrincipalRequest {
                name: name.into(),
                role: role as i32,
                environments: environments.iter().map(|e| (*e).to_owned()).collect(),
                ..Default::default()
            })
            .await
            .expect("create principal")
            .into_inner()
            .principal
            .expect("principal");
        let identity = format!("spiffe://e2e.test/{}/{name}", admin.name);
        admin
            .client
            .admin()
            .create_identity_binding(pb::CreateIdentityBindingRequest {
                principal_id: p.id.clone(),
                identity: identity.clone(),
                ..Default::default()
            })
            .await
            .expect("bind identity");
        (p.id, self.client(&identity).await)
    }

    /// Sends SIGTERM and waits for a clean exit; afterwards [`TestServer::logs`]
    /// holds everything the server printed.
    pub async fn stop(mut self) -> std::process::ExitStatus {
        let status = self.terminate().await;
        if let Some(db) = self.database.take() {
            drop_database(&db).await;
        }
        status
    }
}

impl Drop for TestServer {
    /// A server that was not stopped (a test failed or did not call
    /// [`TestServer::stop`]) is killed and its Postgres database dropped, so
    /// test runs leave no databases behind.
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        if let Some(db) = self.database.take() {
            // Drop runs inside the test's runtime, which cannot be blocked
            // on; a short-lived thread with its own runtime does the work.
            let _ = std::thread::spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    rt.block_on(drop_database(&db));
                }
            })
            .join();
        }
    }
}

/// Spawns the configured server, collecting its output into `logs`, and
/// waits (up to 30 s) for it to report its address.
async fn spawn_server(
    cmd: &mut Command,
    logs: &Logs,
) -> (Child, std::net::SocketAddr, Vec<JoinHandle<()>>) {
    let mut child = cmd.spawn().expect("spawn strongroomd");
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let mut log_readers = Vec::new();
    {
        let logs = logs.clone();
        log_readers.push(tokio::spawn(async move {
            let mut addr_tx = Some(addr_tx);
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(addr) = serving_addr(&line)
                    && let Some(tx) = addr_tx.take()
                {
                    let _ = tx.send(addr);
                }
                logs.0.lock().expect("logs").push(line);
            }
        }));
    }
    {
        let logs = logs.clone();
        log_readers.push(tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                logs.0.lock().expect("logs").push(line);
            }
        }));
    }
    let addr = match tokio::time::timeout(Duration::from_secs(30), addr_rx).await {
        Ok(Ok(addr)) => addr,
        _ => panic!(
            "strongroomd did not start; its output:\n{}",
            logs.lines().join("\n")
        ),
    };
    (child, addr, log_readers)
}

/// A tenant admin's handles.
pub struct TenantAdmin {
    /// The tenant's name.
    pub name: String,
    /// The tenant's id.
    pub tenant_id: String,
    /// The admin principal's id.
    pub principal_id: String,
    /// The admin's mTLS identity.
    pub identity: String,
    /// The admin's client.
    pub client: Client,
}

impl TenantAdmin {
    /// Creates the API key `secret` as `environment`/`name` (service
    /// `svc`); the credential as created.
    pub async fn create_api_key(
        &self,
        environment: &str,
        name: &str,
        secret: &str,
    ) -> pb::Credential {
        self.client
            .credentials()
            .create_credential(pb::CreateCredentialRequest {
                environment: environment.into(),
                name: name.into(),
                service: "svc".into(),
                value: api_key(secret),
                ..Default::default()
            })
            .await
            .expect("create a credential")
            .into_inner()
            .credential
            .expect("the created credential")
    }
}

async fn drop_database(name: &str) {
    use sqlx::Connection;
    if let Ok(mut conn) = sqlx::PgConnection::connect(&admin_url()).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut conn)
            .await;
        conn.close().await.ok();
    }
}

/// Runs `strongroomd migrate` against Postgres, with the identity rules of
/// `env` (the options' extra variables) and otherwise the defaults.
async fn run_migrate(admin_db_url: &str, env: &[(String, String)]) -> String {
    let mut cmd = Command::new(server_binary());
    cmd.env_clear().env("STRONGROOM_DATABASE_URL", admin_db_url);
    identity_rules(&mut cmd, env);
    migrate_with(cmd).await
}

async fn run_migrate_sqlite(path: &Path, env: &[(String, String)]) -> String {
    let mut cmd = Command::new(server_binary());
    cmd.env_clear()
        .env("STRONGROOM_DATABASE_BACKEND", "sqlite")
        .env("STRONGROOM_SQLITE_PATH", path);
    identity_rules(&mut cmd, env);
    migrate_with(cmd).await
}

/// Passes the identity rules among `env` on to `cmd`.
fn identity_rules(cmd: &mut Command, env: &[(String, String)]) {
    for (k, v) in env {
        if k == "STRONGROOM_MIN_NAMESPACE_DEPTH" || k == "STRONGROOM_PLATFORM_OPERATORS" {
            cmd.env(k, v);
        }
    }
}

/// Runs `strongroomd migrate` (`cmd` carries the database settings and
/// nothing else) and returns its stdout.
async fn migrate_with(mut cmd: Command) -> String {
    let output = cmd
        // No TLS files and no root key: migrating needs only the database.
        .arg("migrate")
        .env("STRONGROOM_LOG_FORMAT", "json")
        .output()
        .await
        .expect("run strongroomd migrate");
    assert!(
        output.status.success(),
        "strongroomd migrate failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Applies the `backend` migrations older than `before` to `pool`'s
/// database, then runs `seed`.
async fn seed_database<DB>(pool: &sqlx::Pool<DB>, backend: &str, before: i64, seed: &str)
where
    DB: sqlx::Database,
    <DB as sqlx::Database>::Connection: sqlx::migrate::Migrate,
    for<'c> &'c mut <DB as sqlx::Database>::Connection: sqlx::Executor<'c, Database = DB>,
    for<'c> &'c sqlx::Pool<DB>: sqlx::Executor<'c, Database = DB>,
{
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../migrations")
        .join(backend);
    let mut migrator = sqlx::migrate::Migrator::new(dir)
        .await
        .expect("read migrations");
    migrator.migrations = migrator
        .migrations
        .iter()
        .filter(|m| m.version < before)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    migrator.run(pool).await.expect("apply older migrations");
    sqlx::raw_sql(seed)
        .execute(pool)
        .await
        .expect("seed the database");
}

fn serving_addr(line: &str) -> Option<std::net::SocketAddr> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    if v.get("message")?.as_str()? != "serving" {
        return None;
    }
    v.get("addr")?.as_str()?.parse().ok()
}

fn hex_key() -> String {
    let a = uuid::Uuid::new_v4().simple().to_string();
    let b = uuid::Uuid::new_v4().simple().to_string();
    format!("{a}{b}")
}

/// A credential reference by path.
pub fn path(environment: &str, name: &str) -> Option<pb::CredentialRef> {
    Some(pb::CredentialRef {
        by: Some(pb::credential_ref::By::Path(pb::CredentialPath {
            environment: environment.into(),
            name: name.into(),
        })),
    })
}

/// A credential reference by id.
pub fn by_id(id: &str) -> Option<pb::CredentialRef> {
    Some(pb::CredentialRef {
        by: Some(pb::credential_ref::By::Id(id.into())),
    })
}

/// An API-key value.
pub fn api_key(key: &str) -> Option<pb::CredentialValue> {
    Some(pb::CredentialValue {
        value: Some(pb::credential_value::Value::ApiKey(pb::ApiKey {
            api_key: key.into(),
        })),
    })
}

/// A typed credential value.
pub fn value(v: pb::credential_value::Value) -> Option<pb::CredentialValue> {
    Some(pb::CredentialValue { value: Some(v) })
}

/// The whole value a reveal returned; panics if it returned one field.
pub fn revealed_value(response: &pb::RevealCredentialResponse) -> &pb::CredentialValue {
    match &response.revealed {
        Some(pb::reveal_credential_response::Revealed::Value(v)) => v,
        other => panic!("expected a whole value, got {other:?}"),
    }
}

/// The text of an api_key value; panics for other types.
pub fn api_key_text(value: &pb::CredentialValue) -> &str {
    match &value.value {
        Some(pb::credential_value::Value::ApiKey(k)) => &k.api_key,
        other => panic!("expected an api_key value, got {other:?}"),
    }
}

/// Asserts that `result` failed with `code` and returns the status.
#[track_caller]
pub fn expect_code<T: std::fmt::Debug>(
    result: Result<T, tonic::Status>,
    code: tonic::Code,
    what: &str,
) -> tonic::Status {
    match result {
        Ok(v) => panic!("{what}: expected {code:?}, but the call succeeded: {v:?}"),
        Err(s) => {
            assert_eq!(s.code(), code, "{what}: unexpected status {s:?}");
            s
        }
    }
}

/// Asserts that `result` failed with INVALID_ARGUMENT whose message names
/// `field` (the server formats it as `field: why`).
#[track_caller]
pub fn expect_invalid<T: std::fmt::Debug>(
    result: Result<T, tonic::Status>,
    field: &str,
    what: &str,
) -> tonic::Status {
    let status = expect_code(result, tonic::Code::InvalidArgument, what);
    assert!(
        status.message().starts_with(&format!("{field}:")),
        "{what}: the message should name `{field}`, got {:?}",
        status.message()
    );
    status
}

/// Asserts that neither the `Debug` form nor the protobuf encoding of `message`
/// contains any of `secrets`.
#[track_caller]
pub fn assert_free_of<M: prost::Message + std::fmt::Debug>(
    message: &M,
    secrets: &[&str],
    what: &str,
) {
    let debug = format!("{message:?}");
    let bytes = message.encode_to_vec();
    // A failure names the secret by its place in the list, never by its
    // text: a test's made-up secrets can look like real tokens to a log
    // scanner reading the test output.
    for (i, secret) in secrets.iter().enumerate() {
        assert!(!secret.is_empty(), "empty secret in the list");
        assert!(
            !debug.contains(secret),
            "{what}: the Debug form carries secret #{i} of the list"
        );
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{what}: the encoded message carries secret #{i} of the list"
        );
    }
}

/// Creates a grant for a principal in the admin's tenant.
pub async fn grant(
    admin: &TenantAdmin,
    principal_id: &str,
    selector: &str,
    environments: &[&str],
    capabilities: &[pb::Capability],
    expires_at: Option<std::time::SystemTime>,
) -> pb::Grant {
    admin
        .client
        .policy()
        .create_grant(pb::CreateGrantRequest {
            subject: Some(pb::GrantSubject {
                subject: Some(pb::grant_subject::Subject::PrincipalId(
                    principal_id.to_owned(),
                )),
            }),
            selector: selector.into(),
            environments: environments.iter().map(|e| (*e).to_owned()).collect(),
            capabilities: capabilities.iter().map(|c| *c as i32).collect(),
            expires_at: expires_at.map(timestamp),
            reason: "e2e".into(),
            ..Default::default()
        })
        .await
        .expect("create grant")
        .into_inner()
        .grant
        .expect("grant")
}

/// A protobuf timestamp.
pub fn timestamp(t: std::time::SystemTime) -> prost_types::Timestamp {
    let d = t
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after the epoch");
    prost_types::Timestamp {
        seconds: i64::try_from(d.as_secs()).expect("seconds"),
        nanos: i32::try_from(d.subsec_nanos()).expect("nanos"),
    }
}

/// Every audit event matching `filter` (all pages), newest first.
pub async fn audit_events(client: &Client, filter: pb::QueryEventsRequest) -> Vec<pb::AuditEvent> {
    let mut audit = client.audit();
    let mut events = Vec::new();
    let mut token = String::new();
    loop {
        let page = audit
            .query_events(pb::QueryEventsRequest {
                page_size: 500,
                page_token: token,
                ..filter.clone()
            })
            .await
            .expect("query audit events")
            .into_inner();
        events.extend(page.events);
        if page.next_page_token.is_empty() {
            return events;
        }
        token = page.next_page_token;
    }
}

/// Verifies the caller's tenant audit chain, asserts it is intact, and
/// returns the number of events it holds.
pub async fn verified_event_count(client: &Client) -> u64 {
    let report = client
        .audit()
        .verify_chain(pb::VerifyChainRequest::default())
        .await
        .expect("verify chain")
        .into_inner();
    assert!(report.ok, "audit chain broken: {report:?}");
    report.events_checked
}
