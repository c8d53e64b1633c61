//! The capacity model for many replicas (`strongroom-bench capacity`): 1, 2,
//! 3… `strongroomd` replicas on one PostgreSQL database, loaded with reveals
//! spread over the replicas round-robin, measuring the throughput and the CPU
//! time each process spends per reveal: every replica, PostgreSQL (all its
//! processes, and the backends serving this database) and the load generator.
//! The per-reveal costs at 1, 2 and 3 replicas give the cost of sharing the
//! database (change notices, smaller group commits per replica, contention
//! on the tenant's chain head), and from them the reveal ceiling of N
//! replicas on a PostgreSQL with K cores is projected.
//!
//! On a two-core machine the replicas, PostgreSQL and the load generator
//! compete for the same cores, so the throughput measured here is not the
//! ceiling: the per-reveal CPU costs are what carries over.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::Connection;
use strongroom_client::Client;
use strongroom_e2e::{Backend, Options, TestServer, api_key, path};
use strongroom_proto::v1 as pb;

use crate::load::{self, Op, Stats, pick};

/// Arguments of `strongroom-bench capacity`.
#[derive(clap::Args)]
pub struct CapacityArgs {
    /// Replica counts to measure, each on a fresh database.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    replicas: Vec<usize>,
    /// Measured seconds per replica count.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Unmeasured warm-up seconds per replica count (every replica's caches
    /// fill in it).
    #[arg(long, default_value_t = 3)]
    warmup: u64,
    /// Reveals in flight in total, spread over the replicas.
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
    /// Credentials created (once per replica count, through the first
    /// replica).
    #[arg(long, default_value_t = 1000)]
    credentials: usize,
    /// gRPC connections from the load generator to each replica.
    #[arg(long, default_value_t = 2)]
    connections: usize,
    /// Each replica's Postgres pool size (`STRONGROOM_DATABASE_MAX_CONNECTIONS`).
    #[arg(long, default_value_t = 16)]
    pool: u32,
    /// Rotations per second during the measured window, through the first
    /// replica (0: reveals only). Each one announces a change notice that
    /// every other replica applies to its caches: the coherence traffic a
    /// write load brings.
    #[arg(long, default_value_t = 0.0)]
    rotations_per_sec: f64,
    /// Cores each replica would have, for the projection.
    #[arg(long, default_value_t = 1.0)]
    cores_per_replica: f64,
}

/// CPU time of one process, in clock ticks (user + system).
fn process_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat).map(|(_, ticks)| ticks)
}

/// `(command, utime + stime)` from the text of `/proc/PID/stat`. The command
/// sits in parentheses and may itself hold spaces and parentheses, so the
/// fields are counted from the last `)`.
fn parse_stat(stat: &str) -> Option<(&str, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let command = stat.get(open + 1..close)?;
    // After ") ": field 3 (state) is index 0, so utime (14) is 11, stime 12.
    let mut fields = stat.get(close + 2..)?.split(' ');
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((command, utime + stime))
}

/// CPU ticks of every process whose command is `postgres`, by pid.
fn postgres_ticks() -> BTreeMap<u32, u64> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Ok(stat) = std::fs::read_to_string(entry.path().join("stat"))
            && let Some((command, ticks)) = parse_stat(&stat)
            && command == "postgres"
        {
            out.insert(pid, ticks);
        }
    }
    out
}

/// Clock ticks per second (`getconf CLK_TCK`, else Linux's usual 100).
fn ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// The sum of the increases from `before` to `after` over the pids in both
/// (a process that started or ended within the window is left out).
fn delta_sum(before: &BTreeMap<u32, u64>, after: &BTreeMap<u32, u64>) -> u64 {
    after
        .iter()
        .filter_map(|(pid, a)| before.get(pid).map(|b| a.saturating_sub(*b)))
        .sum()
}

/// What is read at each end of the measured window.
struct Snapshot {
    at: Instant,
    replicas: Vec<u64>,
    postgres: BTreeMap<u32, u64>,
    ours: Vec<u32>,
    load: u64,
    served: Vec<u64>,
    commits: i64,
}

async fn snapshot(
    pids: &[u32],
    served: &[AtomicU64],
    stats: &mut sqlx::PgConnection,
    database: &str,
) -> Result<Snapshot, String> {
    // The statistics a backend reports are flushed at most once a second;
    // reading them fresh in this transaction-less connection is enough for a
    // window of seconds.
    sqlx::query("SELECT pg_stat_clear_snapshot()")
        .execute(&mut *stats)
        .await
        .map_err(|e| format!("stats: {e}"))?;
    let commits: i64 =
        sqlx::query_scalar("SELECT xact_commit FROM pg_stat_database WHERE datname = $1")
            .bind(database)
            .fetch_one(&mut *stats)
            .await
            .map_err(|e| format!("stats: {e}"))?;
    let ours: Vec<i32> = sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE datname = $1")
        .bind(database)
        .fetch_all(&mut *stats)
        .await
        .map_err(|e| format!("stats: {e}"))?;
    Ok(Snapshot {
        at: Instant::now(),
        replicas: pids
            .iter()
            .map(|p| process_ticks(*p).unwrap_or(0))
            .collect(),
        postgres: postgres_ticks(),
        ours: ours
            .into_iter()
            .filter_map(|p| u32::try_from(p).ok())
            .collect(),
        load: process_ticks(std::process::id()).unwrap_or(0),
        served: served.iter().map(|c| c.load(Ordering::Relaxed)).collect(),
        commits,
    })
}

/// The figures of one replica count.
#[derive(Debug, Clone)]
struct Measured {
    replicas: usize,
    stats: Stats,
    /// Reveals each replica answered in the CPU window.
    served: Vec<u64>,
    /// Seconds of the CPU window.
    window: f64,
    /// CPU seconds of each replica in the window.
    replica_cpu: Vec<f64>,
    /// CPU seconds of all PostgreSQL processes.
    postgres_cpu: f64,
    /// CPU seconds of the backends connected to the run's database.
    postgres_ours_cpu: f64,
    /// CPU seconds of the load generator (this process).
    load_cpu: f64,
    /// Transactions committed in the run's database.
    commits: i64,
    /// Change notices announced on the database in the window.
    notices: u64,
    /// Rotations done in the window.
    rotations: u64,
}

impl Measured {
    fn reveals(&self) -> u64 {
        self.served.iter().sum()
    }

    /// Microseconds of `cpu` seconds per reveal of the window.
    fn per_reveal(&self, cpu: f64) -> f64 {
        let n = self.reveals();
        if n == 0 {
            f64::NAN
        } else {
            cpu * 1e6 / n as f64
        }
    }

    fn replica_us(&self, i: usize) -> f64 {
        if self.served[i] == 0 {
            f64::NAN
        } else {
            self.replica_cpu[i] * 1e6 / self.served[i] as f64
        }
    }

    fn strongroomd_us(&self) -> f64 {
        self.per_reveal(self.replica_cpu.iter().sum())
    }

    fn postgres_us(&self) -> f64 {
        self.per_reveal(self.postgres_cpu)
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "replicas": self.replicas,
            "reveals_per_sec": round(self.stats.throughput(), 0),
            "p50_ms": round(self.stats.quantile_ms(0.50), 2),
            "p99_ms": round(self.stats.quantile_ms(0.99), 2),
            "errors": self.stats.errors,
            "served": self.served,
            "replica_us_per_reveal": (0..self.replicas).map(|i| round(self.replica_us(i), 1)).collect::<Vec<_>>(),
            "strongroomd_us_per_reveal": round(self.strongroomd_us(), 1),
            "postgres_us_per_reveal": round(self.postgres_us(), 1),
            "postgres_own_backends_us_per_reveal": round(self.per_reveal(self.postgres_ours_cpu), 1),
            "load_us_per_reveal": round(self.per_reveal(self.load_cpu), 1),
            "commits_per_reveal": round(self.commits as f64 / self.reveals().max(1) as f64, 3),
            "notices": self.notices,
            "rotations": self.rotations,
            "cpu_busy_cores": round((self.replica_cpu.iter().sum::<f64>() + self.postgres_cpu + self.load_cpu) / self.window, 2),
        })
    }
}

fn round(x: f64, digits: i32) -> f64 {
    if x.is_finite() {
        let f = 10f64.powi(digits);
        (x * f).round() / f
    } else {
        0.0
    }
}

/// Least-squares line `a + b·x` through `points` (a constant through one
/// point, nothing through none).
fn fit(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    let points: Vec<_> = points.iter().filter(|(_, y)| y.is_finite()).collect();
    let n = points.len() as f64;
    match points.len() {
        0 => None,
        1 => Some((points[0].1, 0.0)),
        _ => {
            let mx = points.iter().map(|(x, _)| x).sum::<f64>() / n;
            let my = points.iter().map(|(_, y)| y).sum::<f64>() / n;
            let sxx: f64 = points.iter().map(|(x, _)| (x - mx) * (x - mx)).sum();
            let sxy: f64 = points.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
            if sxx == 0.0 {
                return Some((my, 0.0));
            }
            let b = sxy / sxx;
            Some((my - b * mx, b))
        }
    }
}

/// The projected reveal ceiling of `replicas` replicas with
/// `cores_per_replica` cores each on a PostgreSQL with `pg_cores` cores,
/// from the per-reveal costs (µs) at that replica count: each resource
/// alone allows its cores / its cost per reveal, and the smaller one
/// saturates first. Returns (reveals/s, the resource that saturates).
fn ceiling(
    replicas: f64,
    cores_per_replica: f64,
    strongroomd_us: f64,
    pg_cores: f64,
    postgres_us: f64,
) -> (f64, &'static str) {
    let servers = replicas * cores_per_replica * 1e6 / strongroomd_us;
    let database = pg_cores * 1e6 / postgres_us;
    if servers <= database {
        (servers, "strongroomd")
    } else {
        (database, "postgres")
    }
}

/// One replica count: start the replicas, load, measure, stop.
async fn measure(args: &CapacityArgs, replicas: usize) -> Result<Measured, String> {
    let mut options = Options::new(Backend::Postgres);
    options.log_level = "warn,strongroomd::app=info".into();
    let pool = args.pool.to_string();
    options
        .env
        .push(("STRONGROOM_DATABASE_MAX_CONNECTIONS".into(), pool.clone()));
    let first = TestServer::start_with(options).await;
    let database = first
        .database
        .clone()
        .ok_or("the first replica has no database")?;
    let mut servers = vec![first];
    for _ in 1..replicas {
        let mut options = servers[0].replica_options();
        options.log_level = "warn,strongroomd::app=info".into();
        options
            .env
            .push(("STRONGROOM_DATABASE_MAX_CONNECTIONS".into(), pool.clone()));
        servers.push(TestServer::start_with(options).await);
    }

    // The tenant, an agent granted reveal, and the credentials, through the
    // first replica; the others read them from the shared database.
    let admin = servers[0].tenant("bench").await;
    let (agent_id, _) = servers[0].principal(&admin, "agent", pb::Role::Agent).await;
    admin
        .client
        .policy()
        .create_grant(pb::CreateGrantRequest {
            subject: Some(pb::GrantSubject {
                subject: Some(pb::grant_subject::Subject::PrincipalId(agent_id)),
            }),
            selector: "bench/*".into(),
            environments: vec!["production".into()],
            capabilities: vec![pb::Capability::Reveal as i32],
            reason: "benchmark".into(),
            ..Default::default()
        })
        .await
        .map_err(|e| format!("grant: {e}"))?;
    let mut tasks = Vec::new();
    for chunk in 0..8 {
        let client = admin.client.clone();
        let credentials = args.credentials;
        tasks.push(tokio::spawn(async move {
            for i in (chunk..credentials).step_by(8) {
                client
                    .credentials()
                    .create_credential(pb::CreateCredentialRequest {
                        environment: "production".into(),
                        name: format!("bench/cred-{i}"),
                        service: "bench".into(),
                        value: api_key(&format!("bench-value-{i}-0123456789abcdef")),
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| format!("create: {e}"))?;
            }
            Ok::<(), String>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    crate::analyze(&database).await?;

    // Connections round-robin over the replicas: client j is replica j % N,
    // and worker w uses client w % clients, so each replica gets an equal
    // share of the workers.
    let mut clients: Vec<(usize, Client)> = Vec::new();
    for _ in 0..args.connections.max(1) {
        for (r, server) in servers.iter().enumerate() {
            clients.push((r, server.client("spiffe://e2e.test/bench/agent").await));
        }
    }
    let served: Arc<Vec<AtomicU64>> = Arc::new((0..replicas).map(|_| AtomicU64::new(0)).collect());
    let op = reveal_op(Arc::new(clients), Arc::clone(&served), args.credentials);

    // Change notices on the shared database, counted by a listener of our
    // own (each one reaches every replica's listener).
    let admin_url = strongroom_e2e::admin_url();
    let (base, _) = admin_url
        .rsplit_once('/')
        .unwrap_or((admin_url.as_str(), ""));
    let db_url = format!("{base}/{database}");
    let notices = Arc::new(AtomicU64::new(0));
    let mut listener = sqlx::postgres::PgListener::connect(&db_url)
        .await
        .map_err(|e| format!("listen: {e}"))?;
    listener
        .listen("strongroom_changes")
        .await
        .map_err(|e| format!("listen: {e}"))?;
    let warmup = Duration::from_secs(args.warmup);
    let duration = Duration::from_secs(args.duration);
    let counting = {
        let notices = Arc::clone(&notices);
        let stop = Instant::now() + warmup + duration + Duration::from_secs(2);
        tokio::spawn(async move {
            while let Ok(Ok(Some(_))) =
                tokio::time::timeout_at(stop.into(), listener.try_recv()).await
            {
                notices.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    let mut stats_conn = sqlx::PgConnection::connect(&db_url)
        .await
        .map_err(|e| format!("stats: {e}"))?;
    let pids: Vec<u32> = servers.iter().map(TestServer::pid).collect();

    let load = tokio::spawn(load::run(op, args.in_flight, warmup, duration));
    tokio::time::sleep(warmup).await;
    let notices_before = notices.load(Ordering::Relaxed);
    let rotating = rotations(args, &admin.client, duration);
    let before = snapshot(&pids, &served, &mut stats_conn, &database).await?;
    tokio::time::sleep(duration).await;
    let after = snapshot(&pids, &served, &mut stats_conn, &database).await?;
    let notices_in_window = notices.load(Ordering::Relaxed) - notices_before;
    let stats = load.await.map_err(|e| e.to_string())?;
    let rotations = match rotating {
        Some(task) => task.await.map_err(|e| e.to_string())??,
        None => 0,
    };
    counting.abort();

    let tick = ticks_per_second();
    let ours: Vec<u32> = before
        .ours
        .iter()
        .copied()
        .filter(|p| after.ours.contains(p))
        .collect();
    let ours_ticks: u64 = ours
        .iter()
        .filter_map(|p| {
            Some(
                after
                    .postgres
                    .get(p)?
                    .saturating_sub(*before.postgres.get(p)?),
            )
        })
        .sum();
    let measured = Measured {
        replicas,
        stats,
        served: after
            .served
            .iter()
            .zip(&before.served)
            .map(|(a, b)| a - b)
            .collect(),
        window: (after.at - before.at).as_secs_f64(),
        replica_cpu: after
            .replicas
            .iter()
            .zip(&before.replicas)
            .map(|(a, b)| a.saturating_sub(*b) as f64 / tick)
            .collect(),
        postgres_cpu: delta_sum(&before.postgres, &after.postgres) as f64 / tick,
        postgres_ours_cpu: ours_ticks as f64 / tick,
        load_cpu: after.load.saturating_sub(before.load) as f64 / tick,
        commits: after.commits - before.commits,
        notices: notices_in_window,
        rotations,
    };

    // The tenant's audit chain must still verify after the load.
    let verify = admin
        .client
        .audit()
        .verify_chain(pb::VerifyChainRequest::default())
        .await
        .map_err(|e| format!("verify chain: {e}"))?
        .into_inner();
    stats_conn.close().await.ok();
    // Replicas first: the first server owns (and drops) the database.
    while let Some(server) = servers.pop() {
        server.stop().await;
    }
    if !verify.ok {
        return Err(format!(
            "audit chain broken at {}: {}",
            verify.first_broken_sequence, verify.reason
        ));
    }
    eprintln!(
        "capacity: {replicas} replica(s): audit chain verifies over {} events",
        verify.events_checked
    );
    Ok(measured)
}

/// Reveal of a random credential as the agent, on the worker's connection;
/// counts each successful reveal against the replica that answered it.
fn reveal_op(clients: Arc<Vec<(usize, Client)>>, served: Arc<Vec<AtomicU64>>, n: usize) -> Op {
    Arc::new(move |worker, i| {
        let (replica, client) = clients[worker % clients.len()].clone();
        let served = Arc::clone(&served);
        let name = format!("bench/cred-{}", pick(worker, i, n));
        Box::pin(async move {
            client
                .credentials()
                .reveal_credential(pb::RevealCredentialRequest {
                    credential: path("production", &name),
                    purpose: "benchmark".into(),
                    ..Default::default()
                })
                .await
                .map(|_| {
                    served[replica].fetch_add(1, Ordering::Relaxed);
                })
                .map_err(|e| format!("{}: {}", e.code(), e.message()))
        })
    })
}

/// Rotates random credentials at `--rotations-per-sec` through the first
/// replica for `duration`; returns how many rotations succeeded.
fn rotations(
    args: &CapacityArgs,
    admin: &Client,
    duration: Duration,
) -> Option<tokio::task::JoinHandle<Result<u64, String>>> {
    if args.rotations_per_sec <= 0.0 {
        return None;
    }
    let client = admin.clone();
    let every = Duration::from_secs_f64(1.0 / args.rotations_per_sec);
    let n = args.credentials;
    Some(tokio::spawn(async move {
        let deadline = Instant::now() + duration;
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut done = 0u64;
        let mut i = 0u64;
        loop {
            ticker.tick().await;
            if Instant::now() >= deadline {
                break;
            }
            i += 1;
            let name = format!("bench/cred-{}", pick(usize::MAX >> 1, i, n));
            client
                .credentials()
                .rotate_credential(pb::RotateCredentialRequest {
                    credential: path("production", &name),
                    new_value: Some(pb::rotate_credential_request::NewValue::Value(
                        pb::CredentialValue {
                            value: Some(pb::credential_value::Value::ApiKey(pb::ApiKey {
                                api_key: format!("bench-rotated-{i}-0123456789abcdef"),
                            })),
                        },
                    )),
                    ..Default::default()
                })
                .await
                .map_err(|e| format!("rotate: {}: {}", e.code(), e.message()))?;
            done += 1;
        }
        Ok(done)
    }))
}

fn print_results(args: &CapacityArgs, runs: &[Measured]) {
    println!();
    println!(
        "{:>8} {:>10} {:>7} {:>7} {:>6} {:>12} {:>12} {:>12} {:>10} {:>11} {:>8} {:>7}",
        "replicas",
        "reveals/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "srd µs/rev",
        "pg µs/rev",
        "pg own µs",
        "load µs",
        "commits/rev",
        "notices",
        "busy"
    );
    for m in runs {
        println!(
            "{:>8} {:>10.0} {:>7.2} {:>7.2} {:>6} {:>12.1} {:>12.1} {:>12.1} {:>10.1} {:>11.3} {:>8} {:>7.2}",
            m.replicas,
            m.stats.throughput(),
            m.stats.quantile_ms(0.50),
            m.stats.quantile_ms(0.99),
            m.stats.errors,
            m.strongroomd_us(),
            m.postgres_us(),
            m.per_reveal(m.postgres_ours_cpu),
            m.per_reveal(m.load_cpu),
            m.commits as f64 / m.reveals().max(1) as f64,
            m.notices,
            (m.replica_cpu.iter().sum::<f64>() + m.postgres_cpu + m.load_cpu) / m.window,
        );
        for i in 0..m.replicas {
            println!(
                "{:>8} replica {i}: {} reveals, {:.2} s CPU, {:.1} µs per reveal it answered",
                "",
                m.served[i],
                m.replica_cpu[i],
                m.replica_us(i)
            );
        }
        if let Some(e) = &m.stats.first_error {
            println!("{:>8} first error: {e}", "");
        }
    }

    // The coherence term: how the per-reveal costs grow with each replica.
    let srd = fit(&runs
        .iter()
        .map(|m| (m.replicas as f64, m.strongroomd_us()))
        .collect::<Vec<_>>());
    let pg = fit(&runs
        .iter()
        .map(|m| (m.replicas as f64, m.postgres_us()))
        .collect::<Vec<_>>());
    let (Some((srd_a, srd_b)), Some((pg_a, pg_b))) = (srd, pg) else {
        return;
    };
    println!();
    println!(
        "per-reveal cost fit: strongroomd {srd_a:.1} + {srd_b:.1}·N µs, postgres {pg_a:.1} + {pg_b:.1}·N µs (N replicas)"
    );
    println!(
        "projected reveal ceiling (reveals/s, resource that saturates first), {} core(s) per replica:",
        args.cores_per_replica
    );
    let pg_cores = [2.0, 4.0, 8.0, 16.0];
    print!("{:>10}", "N \\ K");
    for k in pg_cores {
        print!(" {:>22}", format!("{k} pg cores"));
    }
    println!();
    let mut projection = Vec::new();
    for n in [1.0, 2.0, 3.0, 4.0, 6.0, 8.0] {
        print!("{n:>10}");
        for k in pg_cores {
            let (reveals, resource) = ceiling(
                n,
                args.cores_per_replica,
                srd_a + srd_b * n,
                k,
                pg_a + pg_b * n,
            );
            print!(" {:>22}", format!("{reveals:.0} ({resource})"));
            projection.push(serde_json::json!({
                "replicas": n, "postgres_cores": k,
                "reveals_per_sec": round(reveals, 0), "saturates": resource,
            }));
        }
        println!();
    }

    let line = serde_json::json!({
        "capacity": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "in_flight": args.in_flight,
            "credentials": args.credentials,
            "connections_per_replica": args.connections,
            "pool_per_replica": args.pool,
            "rotations_per_sec": args.rotations_per_sec,
            "runs": runs.iter().map(Measured::json).collect::<Vec<_>>(),
            "fit_us": {
                "strongroomd": [round(srd_a, 1), round(srd_b, 1)],
                "postgres": [round(pg_a, 1), round(pg_b, 1)],
            },
            "cores_per_replica": args.cores_per_replica,
            "projection": projection,
        }
    });
    println!();
    println!("{line}");
}

/// Runs `strongroom-bench capacity`.
pub async fn run(args: &CapacityArgs) -> Result<(), String> {
    if args.replicas.is_empty() || args.replicas.contains(&0) {
        return Err("--replicas: give replica counts of at least 1".into());
    }
    if args.in_flight == 0 || args.duration == 0 {
        return Err("--in-flight and --duration must be at least 1".into());
    }
    let began = Instant::now();
    let mut runs = Vec::new();
    for &n in &args.replicas {
        eprintln!(
            "capacity: {n} replica(s), {} credentials, {} in flight",
            args.credentials, args.in_flight
        );
        runs.push(measure(args, n).await?);
    }
    print_results(args, &runs);
    println!("total run time: {:.0} s", began.elapsed().as_secs_f64());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        // A command with a space and a parenthesis, as a process may name
        // itself; utime 1200 and stime 34 are fields 14 and 15.
        let stat = "4242 (post gres) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 1200 34 0 0 20 0 1 0 99 1000 10";
        assert_eq!(parse_stat(stat), Some(("post gres) x", 1234)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn this_process_has_cpu_time() {
        let mut x = 0u64;
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(30) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        assert!(process_ticks(std::process::id()).is_some_and(|t| t > 0));
    }

    #[test]
    fn delta_sum_leaves_out_processes_not_in_both() {
        let before = BTreeMap::from([(1, 10), (2, 5), (3, 7)]);
        let after = BTreeMap::from([(1, 15), (2, 5), (4, 100)]);
        assert_eq!(delta_sum(&before, &after), 5);
    }

    #[test]
    fn fit_is_least_squares() {
        assert_eq!(fit(&[]), None);
        assert_eq!(fit(&[(1.0, 40.0)]), Some((40.0, 0.0)));
        let (a, b) = fit(&[(1.0, 100.0), (2.0, 110.0), (3.0, 120.0)]).unwrap();
        assert!((a - 90.0).abs() < 1e-9 && (b - 10.0).abs() < 1e-9);
        let (a, b) = fit(&[(1.0, 1.0), (2.0, 3.0), (3.0, 2.0), (4.0, f64::NAN)]).unwrap();
        assert!((a - 1.0).abs() < 1e-9 && (b - 0.5).abs() < 1e-9);
    }

    #[test]
    fn ceiling_is_the_resource_that_saturates_first() {
        // 2 replicas × 1 core / 200 µs = 10,000/s; 4 pg cores / 100 µs = 40,000/s.
        assert_eq!(
            ceiling(2.0, 1.0, 200.0, 4.0, 100.0),
            (10_000.0, "strongroomd")
        );
        // 8 replicas: 40,000/s against 2 pg cores: 20,000/s.
        assert_eq!(ceiling(8.0, 1.0, 200.0, 2.0, 100.0), (20_000.0, "postgres"));
    }
}
