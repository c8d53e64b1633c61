//! Operations: TLS files replaced on disk while the server runs, database
//! outages and a slow database (Postgres, through a proxy the test cuts,
//! stalls and restores), and draining under load on SIGTERM.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use strongroom_client::Client;
use strongroom_e2e::{Backend, CertKind, Options, TestCa, TestServer, api_key, path};
use strongroom_proto::v1 as pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// The value every scenario stores and reveals.
const SECRET: &str = "sk-e2e-operations-secret-7f3a";

/// An agent allowed to reveal `dev/llm/openai`, which holds [`SECRET`].
async fn agent_with_credential(server: &TestServer, tenant: &str) -> Client {
    let admin = server.tenant(tenant).await;
    let (agent_id, agent) = server.principal(&admin, "agent", pb::Role::Agent).await;
    admin
        .client
        .credentials()
        .create_credential(pb::CreateCredentialRequest {
            environment: "dev".into(),
            name: "llm/openai".into(),
            service: "openai".into(),
            value: api_key(SECRET),
            ..Default::default()
        })
        .await
        .expect("create");
    admin
        .client
        .policy()
        .create_grant(pb::CreateGrantRequest {
            subject: Some(pb::GrantSubject {
                subject: Some(pb::grant_subject::Subject::PrincipalId(agent_id)),
            }),
            selector: "llm/*".into(),
            environments: vec!["dev".into()],
            capabilities: vec![pb::Capability::Reveal as i32],
            ..Default::default()
        })
        .await
        .expect("grant");
    agent
}

async fn reveal(agent: &Client) -> Result<(), tonic::Status> {
    agent
        .credentials()
        .reveal_credential(pb::RevealCredentialRequest {
            credential: path("dev", "llm/openai"),
            purpose: "operations test".into(),
            ..Default::default()
        })
        .await
        .map(|_| ())
}

/// A channel trusting `server_ca` for the server and presenting `identity`.
async fn channel_with(
    server: &TestServer,
    server_ca: &str,
    identity: (&str, &str),
) -> Result<Channel, tonic::transport::Error> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(server_ca))
        .domain_name("localhost")
        .identity(Identity::from_pem(identity.0, identity.1));
    Endpoint::from_shared(server.endpoint())?
        .connect_timeout(Duration::from_secs(5))
        .tls_config(tls)?
        .connect()
        .await
}

async fn health_of(channel: Channel) -> Result<ServingStatus, tonic::Status> {
    let response = tokio::time::timeout(
        Duration::from_secs(5),
        HealthClient::new(channel).check(HealthCheckRequest {
            service: String::new(),
        }),
    )
    .await
    .map_err(|_| tonic::Status::deadline_exceeded("health check took over 5 s"))??;
    Ok(response.into_inner().status())
}

/// Replaces `name` in the server's folder atomically, as cert-manager's
/// volume update does.
fn replace(server: &TestServer, name: &str, contents: &str) {
    let tmp = server.dir.path().join(format!("{name}.new"));
    std::fs::write(&tmp, contents).expect("write");
    std::fs::rename(&tmp, server.dir.path().join(name)).expect("rename");
}

fn serving_lines(server: &TestServer) -> usize {
    server
        .logs
        .lines()
        .iter()
        .filter(|l| l.contains("\"message\":\"serving\""))
        .count()
}

#[tokio::test]
async fn certificate_and_client_ca_reload_without_restart() {
    let mut options = Options::new(Backend::Sqlite);
    options
        .env
        .push(("STRONGROOM_TLS_CRL_RELOAD_MS".to_owned(), "100".to_owned()));
    let server = TestServer::start_with(options).await;
    let old_client = server
        .ca
        .client_cert("spiffe://e2e.test/old", CertKind::Spiffe);
    let before = channel_with(&server, server.ca.pem(), (&old_client.0, &old_client.1))
        .await
        .expect("connect with the first CA");
    assert_eq!(
        health_of(before.clone()).await.expect("health"),
        ServingStatus::Serving
    );

    // cert-manager rotates to a new CA: a new server certificate, key and
    // client CA bundle.
    let next = TestCa::new("e2e CA next");
    let (cert, key) = next.server_cert();
    replace(&server, "server-key.pem", &key);
    replace(&server, "server.pem", &cert);
    replace(&server, "ca.pem", next.pem());
    server
        .logs
        .wait_for_line(&["server certificate loaded"], Duration::from_secs(10))
        .await;
    server
        .logs
        .wait_for_line(&["client CA bundle loaded"], Duration::from_secs(10))
        .await;

    // A new connection sees the new server certificate: a client trusting
    // only the old CA cannot complete its handshake, one trusting the new
    // CA with a certificate of the new CA works.
    let new_client = next.client_cert("spiffe://e2e.test/new", CertKind::Spiffe);
    let stale_trust = channel_with(&server, server.ca.pem(), (&new_client.0, &new_client.1)).await;
    assert!(
        stale_trust.is_err(),
        "a client trusting only the old CA connected: the server certificate was not replaced"
    );
    let fresh = channel_with(&server, next.pem(), (&new_client.0, &new_client.1))
        .await
        .expect("connect with the new CA");
    assert_eq!(
        health_of(fresh).await.expect("health"),
        ServingStatus::Serving
    );

    // A client certificate of the removed CA is refused on a new connection
    // (and on its old one, at its next call).
    let refused = match channel_with(&server, next.pem(), (&old_client.0, &old_client.1)).await {
        Err(_) => true,
        Ok(channel) => health_of(channel).await.is_err(),
    };
    assert!(
        refused,
        "a client certificate of the removed CA was accepted"
    );
    let old_call = health_of(before).await;
    assert!(
        old_call.is_err(),
        "the old connection still serves: {old_call:?}"
    );

    // Bad files are refused with a log line; what is in force stays.
    replace(&server, "server.pem", "not a certificate\n");
    server
        .logs
        .wait_for_line(&["server certificate refused"], Duration::from_secs(10))
        .await;
    let (other_cert, _) = TestCa::new("e2e CA other").server_cert();
    replace(&server, "server.pem", &other_cert);
    server
        .logs
        .wait_for("server certificate refused", 2, Duration::from_secs(10))
        .await;
    replace(&server, "ca.pem", "");
    server
        .logs
        .wait_for_line(&["client CA bundle refused"], Duration::from_secs(10))
        .await;
    let still = channel_with(&server, next.pem(), (&new_client.0, &new_client.1))
        .await
        .expect("the certificate and CA in force still serve");
    assert_eq!(
        health_of(still).await.expect("health"),
        ServingStatus::Serving
    );

    // One process throughout.
    assert_eq!(serving_lines(&server), 1, "the server restarted");
    let status = server.stop().await;
    assert!(status.success(), "strongroomd exited with {status}");
}

/// What the proxy does with the traffic.
const FORWARD: u8 = 0;
const CUT: u8 = 1;
const STALL: u8 = 2;

/// A TCP proxy in front of the shared Postgres that the test can cut
/// (close every connection, refuse new ones), stall (accept, forward
/// nothing) and restore. Postgres itself is never touched.
struct PgProxy {
    addr: SocketAddr,
    mode: Arc<AtomicU8>,
    changed: tokio::sync::watch::Sender<u8>,
    task: tokio::task::JoinHandle<()>,
}

impl PgProxy {
    async fn start() -> Self {
        let target = postgres_addr();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let mode = Arc::new(AtomicU8::new(FORWARD));
        let (changed, watch) = tokio::sync::watch::channel(FORWARD);
        let task = {
            let mode = Arc::clone(&mode);
            tokio::spawn(async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        return;
                    };
                    if mode.load(Ordering::SeqCst) == CUT {
                        drop(client);
                        continue;
                    }
                    let watch = watch.clone();
                    tokio::spawn(async move {
                        let Ok(upstream) = TcpStream::connect(target).await else {
                            return;
                        };
                        let (cr, cw) = client.into_split();
                        let (ur, uw) = upstream.into_split();
                        tokio::select! {
                            () = pump(cr, uw, watch.clone()) => {}
                            () = pump(ur, cw, watch) => {}
                        }
                    });
                }
            })
        };
        Self {
            addr,
            mode,
            changed,
            task,
        }
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
        self.changed.send_replace(mode);
    }
}

impl Drop for PgProxy {
    fn drop(&mut self) {
        self.set(CUT);
        self.task.abort();
    }
}

/// Copies `from` to `to` while the mode is FORWARD; holds the bytes while
/// STALL; returns (closing both) on CUT.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: tokio::sync::watch::Receiver<u8>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let current = *mode.borrow_and_update();
        match current {
            CUT => return,
            STALL => {
                if mode.changed().await.is_err() {
                    return;
                }
                continue;
            }
            _ => {}
        }
        tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    // Read before a stall began: hold it until forwarding
                    // resumes (or the link is cut).
                    while *mode.borrow() == STALL {
                        if mode.changed().await.is_err() {
                            return;
                        }
                    }
                    if *mode.borrow() == CUT || to.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            },
            _ = mode.changed() => {}
        }
    }
}

fn postgres_addr() -> SocketAddr {
    let url = strongroom_e2e::admin_url();
    let rest = url.split_once('@').map_or(url.as_str(), |(_, r)| r);
    let host = rest.split('/').next().unwrap_or("127.0.0.1:5432");
    let host = if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:5432")
    };
    host.replace("localhost", "127.0.0.1")
        .parse()
        .expect("the Postgres address of DATABASE_URL")
}

/// Waits up to `within` for `check` to hold, polling.
async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < within {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: not within {within:?}");
}

/// How long the tests allow for the 2 s default: the bound plus a margin
/// for debug builds on a busy machine.
const OUTAGE_BOUND: Duration = Duration::from_millis(2_600);

async fn health_now(server: &TestServer) -> Option<ServingStatus> {
    let (cert, key) = server
        .ca
        .client_cert("spiffe://e2e.test/probe", CertKind::Spiffe);
    let channel = server.channel(Some((&cert, &key))).await.ok()?;
    health_of(channel).await.ok()
}

/// Cuts or stalls the database, checks calls fail UNAVAILABLE in bounded
/// time and health turns NOT_SERVING, then restores it and checks the
/// server recovers by itself.
async fn outage(server: &TestServer, proxy: &PgProxy, agent: &Client, mode: u8, listens: usize) {
    proxy.set(mode);
    let started = Instant::now();
    let refused = reveal(agent)
        .await
        .expect_err("a reveal without a database");
    let took = started.elapsed();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(took <= OUTAGE_BOUND, "the reveal took {took:?}");
    // Calls arriving now are refused at once.
    let started = Instant::now();
    let listed = agent
        .credentials()
        .list_credentials(pb::ListCredentialsRequest::default())
        .await
        .expect_err("a list without a database");
    assert_eq!(listed.code(), Code::Unavailable, "{listed:?}");
    assert!(
        started.elapsed() <= OUTAGE_BOUND,
        "the list took {:?}",
        started.elapsed()
    );
    eventually(OUTAGE_BOUND, "health NOT_SERVING", || async {
        health_now(server).await == Some(ServingStatus::NotServing)
    })
    .await;

    proxy.set(FORWARD);
    eventually(Duration::from_secs(15), "health SERVING again", || async {
        health_now(server).await == Some(ServingStatus::Serving)
    })
    .await;
    eventually(Duration::from_secs(15), "reveals again", || async {
        reveal(agent).await.is_ok()
    })
    .await;
    // The change listener is connected (again, after a cut).
    server
        .logs
        .wait_for(
            "listening for change notices",
            listens,
            Duration::from_secs(15),
        )
        .await;
}

#[tokio::test]
async fn postgres_outage_cut_stall_and_slow() {
    let proxy = PgProxy::start().await;
    let mut options = Options::new(Backend::Postgres);
    options.log_level = "info".into();
    options.postgres_via = Some(proxy.addr);
    let server = TestServer::start_with(options).await;
    let agent = agent_with_credential(&server, "outagetenant").await;
    reveal(&agent).await.expect("reveal");
    server
        .logs
        .wait_for("listening for change notices", 1, Duration::from_secs(10))
        .await;
    assert_eq!(health_now(&server).await, Some(ServingStatus::Serving));

    outage(&server, &proxy, &agent, CUT, 2).await;
    // A stall that ends leaves the listener's connection as it was.
    outage(&server, &proxy, &agent, STALL, 2).await;

    // Slow: a lock held on the credentials table (statement and lock
    // timeouts bound the calls that wait for it; the probe still answers).
    let admin_db = format!(
        "{}/{}",
        strongroom_e2e::admin_url()
            .rsplit_once('/')
            .map_or("", |(b, _)| b),
        server.database.as_deref().expect("a Postgres database")
    );
    let mut locker = {
        use sqlx::Connection;
        sqlx::PgConnection::connect(&admin_db)
            .await
            .expect("connect")
    };
    {
        use sqlx::Connection;
        let mut tx = locker.begin().await.expect("begin");
        sqlx::query("LOCK TABLE credentials IN ACCESS EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await
            .expect("lock");
        let started = Instant::now();
        let slow = reveal(&agent).await.expect_err("a reveal behind a lock");
        assert_eq!(slow.code(), Code::Unavailable, "{slow:?}");
        assert!(
            started.elapsed() <= OUTAGE_BOUND,
            "took {:?}",
            started.elapsed()
        );
        let started = Instant::now();
        let slow = agent
            .credentials()
            .list_credentials(pb::ListCredentialsRequest::default())
            .await
            .expect_err("a list behind a lock");
        assert_eq!(slow.code(), Code::Unavailable, "{slow:?}");
        assert!(
            started.elapsed() <= OUTAGE_BOUND,
            "took {:?}",
            started.elapsed()
        );
        tx.rollback().await.expect("rollback");
    }
    reveal(&agent).await.expect("reveal once the lock is gone");

    assert_eq!(serving_lines(&server), 1, "the server restarted");
    assert!(!server.logs.contains(SECRET), "the secret reached the log");
    let status = server.stop().await;
    assert!(status.success(), "strongroomd exited with {status}");
}

/// One reveal of the load: when it started (relative to the signal) and
/// whether it succeeded.
struct Call {
    started: Instant,
    ended: Instant,
    result: Result<(), tonic::Status>,
}

async fn drain_under_load(backend: Backend) {
    let mut options = Options::new(backend);
    options.log_level = "info".into();
    options
        .env
        .push(("STRONGROOM_SHUTDOWN_GRACE_MS".to_owned(), "5000".to_owned()));
    options.env.push((
        "STRONGROOM_METRICS_LISTEN".to_owned(),
        "127.0.0.1:0".to_owned(),
    ));
    let mut server = TestServer::start_with(options).await;
    let tenant = format!(
        "drain{}",
        if backend == Backend::Postgres {
            "pg"
        } else {
            "lite"
        }
    );
    let admin = server.tenant(&tenant).await;
    drop(admin);
    let agent_template = agent_with_credential(&server, &format!("{tenant}b")).await;
    reveal(&agent_template).await.expect("reveal");

    // A long-lived stream: health Watch.
    let (cert, key) = server
        .ca
        .client_cert("spiffe://e2e.test/watcher", CertKind::Spiffe);
    let mut watch = HealthClient::new(server.channel(Some((&cert, &key))).await.expect("connect"))
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("watch")
        .into_inner();
    let first = watch.message().await.expect("watch").expect("a status");
    assert_eq!(first.status(), ServingStatus::Serving);

    // Load: reveals from eight connections of the agent.
    let stop = Arc::new(tokio::sync::Notify::new());
    let mut workers = Vec::new();
    for _ in 0..8 {
        let agent = server
            .client(&format!("spiffe://e2e.test/{tenant}b/agent"))
            .await;
        let stop = Arc::clone(&stop);
        workers.push(tokio::spawn(async move {
            let mut calls = Vec::new();
            loop {
                let started = Instant::now();
                let result = tokio::select! {
                    r = reveal(&agent) => r,
                    () = stop.notified() => return calls,
                };
                let failed = result.is_err();
                calls.push(Call {
                    started,
                    ended: Instant::now(),
                    result,
                });
                if failed {
                    // The connection is going away: stop this worker.
                    return calls;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let signalled = Instant::now();
    server.send_sigterm();

    // The stream sees NOT_SERVING, then ends UNAVAILABLE.
    let mut saw_not_serving = false;
    let end = loop {
        match tokio::time::timeout(Duration::from_secs(10), watch.message()).await {
            Ok(Ok(Some(m))) => saw_not_serving |= m.status() == ServingStatus::NotServing,
            Ok(Ok(None)) => break None,
            Ok(Err(status)) => break Some(status),
            Err(_) => panic!("the health Watch stream did not end"),
        }
    };
    assert!(saw_not_serving, "the Watch stream never saw NOT_SERVING");
    let end = end.expect("the Watch stream ends with a status");
    assert_eq!(end.code(), Code::Unavailable, "{end:?}");

    // No new connection is accepted.
    let (cert, key) = server
        .ca
        .client_cert("spiffe://e2e.test/late", CertKind::Spiffe);
    let late = match server.channel(Some((&cert, &key))).await {
        Err(_) => true,
        Ok(channel) => health_of(channel).await.is_err(),
    };
    assert!(late, "a new connection was served while draining");

    let status = server.wait_exit(Duration::from_secs(7)).await;
    let exited = signalled.elapsed();
    assert!(status.success(), "strongroomd exited with {status}");
    assert!(exited <= Duration::from_secs(6), "exit took {exited:?}");
    stop.notify_waiters();
    let mut total = 0;
    let mut spanning = 0;
    for worker in workers {
        for call in worker.await.expect("worker") {
            total += 1;
            if call.started < signalled {
                assert!(
                    call.result.is_ok(),
                    "a reveal started before the signal failed: {:?}",
                    call.result
                );
                if call.ended > signalled {
                    spanning += 1;
                }
            }
        }
    }
    assert!(total > 8, "too little load: {total} reveals");
    assert!(spanning > 0, "no reveal was in flight at the signal");
    assert!(server.logs.contains("draining"), "no drain logged");
    assert!(!server.logs.contains(SECRET), "the secret reached the log");
}

on_both_backends!(drain_under_load);
