//! `strongroom-bench`: strongroomd against OpenBao on this machine, in one
//! run. Starts both (strongroomd on Postgres and SQLite, OpenBao on
//! PostgreSQL with a file audit device), loads the same number of small
//! secrets into each, drives reveal/read, create/write and rotate/overwrite
//! with the same concurrency and duration over persistent TLS connections to
//! 127.0.0.1, and prints one table. Its last line is the reveal throughput
//! ratio at the highest concurrency.
//!
//! Run it through `scripts/bench`, which builds the release binaries and
//! fetches OpenBao.
//!
//! With `--relay` it measures the relay instead (see `relay.rs`): the
//! latency a request through RelayService adds over calling the same local
//! upstream directly, at the low and high in-flight counts, side by side.

mod capacity;
mod load;
mod openbao;
mod relay;
mod scan;
mod strongroom;
mod transfer;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use strongroom_e2e::Backend;

use crate::load::Stats;

#[derive(Parser)]
#[command(
    name = "strongroom-bench",
    about = "strongroomd against OpenBao, side by side"
)]
struct Args {
    /// Another mode than the comparison with OpenBao.
    #[command(subcommand)]
    mode: Option<Mode>,
    /// Measured seconds per case.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Unmeasured warm-up seconds per case.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Secrets loaded into each system.
    #[arg(long, default_value_t = 1000)]
    credentials: usize,
    /// Calls in flight for the latency case.
    #[arg(long, default_value_t = 16)]
    low: usize,
    /// Calls in flight for the throughput cases.
    #[arg(long, default_value_t = 64)]
    high: usize,
    /// gRPC connections the strongroom clients spread calls over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// The OpenBao binary (`bao`); without it the peer is skipped.
    #[arg(long)]
    bao: Option<PathBuf>,
    /// Skip the SQLite cases.
    #[arg(long)]
    no_sqlite: bool,
    /// Only the reveal cases (faster profiling runs).
    #[arg(long)]
    reveal_only: bool,
    /// Turn the bench tenant's denied-call limit off (it is on by default),
    /// to measure what the abuse controls cost an agent that is never denied.
    #[arg(long)]
    no_denied_call_limit: bool,
    /// Measure the relay against calling its upstream directly, instead of
    /// the comparison with OpenBao.
    #[arg(long)]
    relay: bool,
    /// With `--relay`: run strongroomd on Postgres instead of SQLite (the
    /// use recorded before each request then commits to Postgres).
    #[arg(long)]
    relay_postgres: bool,
}

/// The relay mode: direct and relayed calls of the same upstream,
/// interleaved per in-flight count, and the latency the relay adds.
async fn relay_mode(args: &Args) -> Result<(), String> {
    let began = Instant::now();
    let warmup = Duration::from_secs(args.warmup);
    let duration = Duration::from_secs(args.duration);
    let (backend, label) = if args.relay_postgres {
        (Backend::Postgres, "postgres")
    } else {
        (Backend::Sqlite, "sqlite")
    };
    eprintln!("relay: starting strongroomd ({label}) and the upstream");
    // Room for the calls in flight and the result records still being
    // written after their calls ended.
    let bench =
        relay::RelayBench::start(backend, args.connections, 2 * args.high.max(args.low)).await?;
    let mut rows = Vec::new();
    for c in [args.low, args.high] {
        eprintln!("relay: direct, {c} in flight");
        let direct = load::run(bench.direct(), c, warmup, duration).await;
        eprintln!("relay: through the relay, {c} in flight");
        let relayed = load::run(bench.relayed(), c, warmup, duration).await;
        eprintln!(
            "relay: {} relayed calls made at {c} in flight (warm-up included)",
            relayed.issued
        );
        rows.push(Row {
            system: "upstream",
            backend: "-",
            op: "direct GET",
            in_flight: c,
            stats: direct,
        });
        rows.push(Row {
            system: "strongroom",
            backend: label,
            op: "relay GET",
            in_flight: c,
            stats: relayed,
        });
    }
    print_table(&rows);
    for pair in rows.chunks(2) {
        if let [direct, relayed] = pair {
            println!(
                "relay adds at {} in flight: p50 {:+.2} ms, p99 {:+.2} ms",
                direct.in_flight,
                relayed.stats.quantile_ms(0.50) - direct.stats.quantile_ms(0.50),
                relayed.stats.quantile_ms(0.99) - direct.stats.quantile_ms(0.99),
            );
        }
    }
    println!("total run time: {:.0} s", began.elapsed().as_secs_f64());
    bench.server.stop().await;
    Ok(())
}

#[derive(clap::Subcommand)]
enum Mode {
    /// Leak scanning: ScanText throughput and recall with many stored
    /// values, and the well-known formats against detect-secrets.
    Scan(scan::ScanArgs),
    /// The capacity model: 1, 2, 3 replicas on one PostgreSQL database,
    /// reveal throughput and CPU time per reveal of each process.
    Capacity(capacity::CapacityArgs),
    /// Export and import of a large tenant (ExportTenant from one backend,
    /// ImportTenant into the other), timed at the client.
    Transfer(transfer::TransferArgs),
}

/// Refreshes the planner statistics of database `name` after loading, as
/// autovacuum does within a minute on a running system: without it the
/// planner still sees the tables as empty and picks scans that a server in
/// steady state never runs. Done for both systems alike.
pub async fn analyze(name: &str) -> Result<(), String> {
    use sqlx::Connection;
    let admin = strongroom_e2e::admin_url();
    let (base, _) = admin.rsplit_once('/').unwrap_or((admin.as_str(), ""));
    let mut conn = sqlx::PgConnection::connect(&format!("{base}/{name}"))
        .await
        .map_err(|e| format!("analyze {name}: {e}"))?;
    sqlx::query("ANALYZE")
        .execute(&mut conn)
        .await
        .map_err(|e| format!("analyze {name}: {e}"))?;
    conn.close().await.ok();
    Ok(())
}

struct Row {
    system: &'static str,
    backend: &'static str,
    op: &'static str,
    in_flight: usize,
    stats: Stats,
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "{:<11} {:<9} {:<16} {:>9} {:>11} {:>8} {:>8} {:>9} {:>7}",
        "system",
        "storage",
        "operation",
        "in-flight",
        "calls/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "errors"
    );
    for r in rows {
        println!(
            "{:<11} {:<9} {:<16} {:>9} {:>11.0} {:>8.2} {:>8.2} {:>9.2} {:>7}",
            r.system,
            r.backend,
            r.op,
            r.in_flight,
            r.stats.throughput(),
            r.stats.quantile_ms(0.50),
            r.stats.quantile_ms(0.99),
            r.stats.quantile_ms(0.999),
            r.stats.errors
        );
    }
    for r in rows.iter().filter(|r| r.stats.first_error.is_some()) {
        println!(
            "  first error of {} {} {}: {}",
            r.system,
            r.op,
            r.in_flight,
            r.stats.first_error.as_deref().unwrap_or_default()
        );
    }
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args = Args::parse();
    if args.relay {
        return relay_mode(&args).await;
    }
    match &args.mode {
        Some(Mode::Scan(scan)) => return scan::run(scan).await,
        Some(Mode::Capacity(capacity)) => return capacity::run(capacity).await,
        Some(Mode::Transfer(transfer)) => return transfer::run(transfer).await,
        None => {}
    }
    let began = Instant::now();
    let warmup = Duration::from_secs(args.warmup);
    let duration = Duration::from_secs(args.duration);
    let admin_url = strongroom_e2e::admin_url();
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let mut rows = Vec::new();

    let mut backends = vec![(Backend::Postgres, "postgres")];
    if !args.no_sqlite {
        backends.push((Backend::Sqlite, "sqlite"));
    }
    for (backend, label) in backends {
        eprintln!(
            "strongroom ({label}): starting and loading {} credentials",
            args.credentials
        );
        let sr = strongroom::Strongroom::start(
            backend,
            args.credentials,
            args.connections,
            !args.no_denied_call_limit,
        )
        .await?;
        let levels: &[usize] = if backend == Backend::Postgres {
            &[args.low, args.high]
        } else {
            &[args.high]
        };
        for &c in levels {
            eprintln!("strongroom ({label}): reveal, {c} in flight");
            let stats = load::run(sr.reveal(), c, warmup, duration).await;
            // Whole-run counters (a server's CPU time, say) divide by this.
            eprintln!(
                "strongroom ({label}): {} reveals issued at {c} in flight (warm-up included)",
                stats.issued
            );
            rows.push(Row {
                system: "strongroom",
                backend: label,
                op: "reveal",
                in_flight: c,
                stats,
            });
        }
        if !args.reveal_only {
            eprintln!("strongroom ({label}): create, {} in flight", args.high);
            let stats = load::run(sr.create(&run_id), args.high, warmup, duration).await;
            rows.push(Row {
                system: "strongroom",
                backend: label,
                op: "create",
                in_flight: args.high,
                stats,
            });
            eprintln!("strongroom ({label}): rotate, {} in flight", args.high);
            let stats = load::run(sr.rotate(), args.high, warmup, duration).await;
            rows.push(Row {
                system: "strongroom",
                backend: label,
                op: "rotate",
                in_flight: args.high,
                stats,
            });
        }
        // The audit chain must still verify after the load.
        let verify = sr
            .admin()
            .audit()
            .verify_chain(strongroom_proto::v1::VerifyChainRequest::default())
            .await
            .map_err(|e| format!("verify chain: {e}"))?
            .into_inner();
        eprintln!(
            "strongroom ({label}): audit chain {} over {} events",
            if verify.ok { "verifies" } else { "IS BROKEN" },
            verify.events_checked
        );
        if !verify.ok {
            return Err(format!(
                "audit chain broken at {}: {}",
                verify.first_broken_sequence, verify.reason
            ));
        }
        sr.server.stop().await;
    }

    if let Some(bao_path) = &args.bao {
        eprintln!(
            "openbao (postgres): starting and loading {} secrets",
            args.credentials
        );
        let bao = openbao::OpenBao::start(bao_path, &admin_url, args.credentials).await?;
        for c in [args.low, args.high] {
            eprintln!("openbao: kv read, {c} in flight");
            let stats = load::run(bao.read(c).await?, c, warmup, duration).await;
            rows.push(Row {
                system: "openbao",
                backend: "postgres",
                op: "kv read",
                in_flight: c,
                stats,
            });
        }
        if !args.reveal_only {
            eprintln!("openbao: kv write (new path), {} in flight", args.high);
            let stats = load::run(
                bao.write(args.high, false, &run_id).await?,
                args.high,
                warmup,
                duration,
            )
            .await;
            rows.push(Row {
                system: "openbao",
                backend: "postgres",
                op: "kv write (new)",
                in_flight: args.high,
                stats,
            });
            eprintln!("openbao: kv write (overwrite), {} in flight", args.high);
            let stats = load::run(
                bao.write(args.high, true, &run_id).await?,
                args.high,
                warmup,
                duration,
            )
            .await;
            rows.push(Row {
                system: "openbao",
                backend: "postgres",
                op: "kv write (over)",
                in_flight: args.high,
                stats,
            });
        }
        bao.stop(&admin_url).await;
    }

    print_table(&rows);
    println!("total run time: {:.0} s", began.elapsed().as_secs_f64());
    let ours = rows.iter().find(|r| {
        r.system == "strongroom"
            && r.backend == "postgres"
            && r.op == "reveal"
            && r.in_flight == args.high
    });
    let peer = rows
        .iter()
        .find(|r| r.system == "openbao" && r.op == "kv read" && r.in_flight == args.high);
    match (ours, peer) {
        (Some(o), Some(p)) => println!(
            "reveal throughput ratio strongroom/openbao: {:.2}",
            o.stats.throughput() / p.stats.throughput()
        ),
        _ => println!("reveal throughput ratio strongroom/openbao: n/a (peer not run)"),
    }
    Ok(())
}
