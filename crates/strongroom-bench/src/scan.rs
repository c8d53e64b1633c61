//! `strongroom-bench scan`: leak scanning, in one run.
//!
//! 1. ScanText throughput: a real strongroomd with `values` credentials
//!    created through the API, a 1 MiB text (the committed clean corpus,
//!    repeated) with stored values planted in every form; one cold scan
//!    (which compiles the tenant's automaton) and `rounds` warm ones, timed
//!    at the client; recall of the planted values at their exact offsets.
//! 2. Well-known formats against `detect-secrets` (when its binary is given):
//!    the same corpus with token-shaped strings planted one a line; time and
//!    recall (planted lines found) of `strongroom_scan::detect_known_formats`
//!    and of `detect-secrets scan` side by side, and their findings on lines
//!    where nothing was planted.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use strongroom_e2e::{Backend, Options, TestServer, api_key};
use strongroom_proto::v1 as pb;

const MIB: usize = 1024 * 1024;

/// Warm scans also shown one by one, in order.
const FIRST_SCANS: usize = 5;

/// What the scan mode measures.
#[derive(clap::Args)]
pub struct ScanArgs {
    /// Stored values (credentials created through the API).
    #[arg(long, default_value_t = 10_000)]
    values: usize,
    /// Values planted in the scanned text (in rotating forms).
    #[arg(long, default_value_t = 280)]
    planted: usize,
    /// Timed warm scans (the median is over all of them; the first
    /// [`FIRST_SCANS`] are also shown on their own).
    #[arg(long, default_value_t = 100)]
    rounds: usize,
    /// Token-shaped strings planted per well-known format.
    #[arg(long, default_value_t = 25)]
    tokens: usize,
    /// The `detect-secrets` binary (`scripts/get-tools detect-secrets`);
    /// without it that peer is skipped.
    #[arg(long)]
    detect_secrets: Option<PathBuf>,
    /// Run against SQLite instead of Postgres.
    #[arg(long)]
    sqlite: bool,
}

/// The clean corpus committed for the end-to-end tests.
fn clean_corpus() -> Result<String, String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/clean-corpus");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    let mut text = String::new();
    for f in files {
        text.push_str(&std::fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?);
        text.push('\n');
    }
    Ok(text)
}

/// Random characters from `alphabet`, from UUID v4 randomness.
fn random(alphabet: &[u8], len: usize) -> String {
    let mut out = String::with_capacity(len);
    while out.len() < len {
        for b in uuid::Uuid::new_v4().as_bytes() {
            if out.len() < len {
                out.push(alphabet[usize::from(*b) % alphabet.len()] as char);
            }
        }
    }
    out
}

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const UPPER_DIGITS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// A stored value: distinctive, with characters URL and JSON encodings
/// change.
fn stored_value(i: usize) -> String {
    format!("bv{i}/{}+{} \"x", random(ALNUM, 24), random(ALNUM, 8))
}

/// One form of `value` and where the value's own characters are in it.
fn planted_form(value: &str, form: usize) -> (String, usize, usize) {
    match form % 7 {
        0 => (value.to_owned(), 0, value.len()),
        1 => {
            let e = STANDARD.encode(value);
            let n = e.len();
            (e, 0, n)
        }
        2 => {
            // One byte before the value: its characters start at the third.
            let mut blob = vec![b'~'];
            blob.extend_from_slice(value.as_bytes());
            let e = URL_SAFE_NO_PAD.encode(&blob);
            let n = e.len();
            (e, 2, n)
        }
        3 => {
            let e: String = value
                .bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect();
            let n = e.len();
            (e, 0, n)
        }
        4 => {
            let e: String = value.bytes().map(|b| format!("{b:02x}")).collect();
            let n = e.len();
            (e, 0, n)
        }
        5 => {
            let j = serde_json::to_string(value).unwrap_or_default();
            let e = j[1..j.len() - 1].to_owned();
            let n = e.len();
            (e, 0, n)
        }
        _ => {
            let e = STANDARD
                .encode(value)
                .as_bytes()
                .chunks(16)
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect::<Vec<_>>()
                .join("\n  ");
            let n = e.len();
            (e, 0, n)
        }
    }
}

/// Runs the scan mode and prints its figures.
pub async fn run(args: &ScanArgs) -> Result<(), String> {
    let corpus = clean_corpus()?;
    let backend = if args.sqlite {
        Backend::Sqlite
    } else {
        Backend::Postgres
    };
    let mut options = Options::new(backend);
    options.log_level = "warn,strongroomd::app=info".into();
    options
        .env
        .push(("STRONGROOM_SCAN_PER_MINUTE".into(), "0".into()));
    let server = TestServer::start_with(options).await;
    let admin = server.tenant("bench").await;

    eprintln!("scan: creating {} credentials", args.values);
    let began = Instant::now();
    let values: Vec<String> = (0..args.values).map(stored_value).collect();
    let workers = 32;
    let mut tasks = Vec::new();
    for w in 0..workers {
        let client = admin.client.clone();
        let mine: Vec<(usize, String)> = values
            .iter()
            .enumerate()
            .skip(w)
            .step_by(workers)
            .map(|(i, v)| (i, v.clone()))
            .collect();
        tasks.push(tokio::spawn(async move {
            let mut creds = client.credentials();
            for (i, v) in mine {
                creds
                    .create_credential(pb::CreateCredentialRequest {
                        environment: "dev".into(),
                        name: format!("scan/v{i}"),
                        service: "bench".into(),
                        value: api_key(&v),
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
    eprintln!("scan: created in {:.1} s", began.elapsed().as_secs_f64());

    // The text: corpus filler, planted values every few KB, 1 MiB in all.
    let mut text = String::with_capacity(MIB + 4096);
    let mut expected: Vec<(String, usize)> = Vec::new();
    let step = (args.values / args.planted.max(1)).max(1);
    let gap = MIB / (args.planted.max(1) + 1);
    let mut from = 0;
    let mut take_filler = |text: &mut String, bytes: usize| {
        let mut end = (from + bytes).min(corpus.len());
        while !corpus.is_char_boundary(end) {
            end -= 1;
        }
        text.push_str(&corpus[from..end]);
        from = if end >= corpus.len() { 0 } else { end };
    };
    for p in 0..args.planted {
        take_filler(&mut text, gap);
        let i = (p * step) % args.values;
        let (form, own_start, _) = planted_form(&values[i], p);
        text.push_str(" ~ ");
        expected.push((format!("scan/v{i}"), text.len() + own_start));
        text.push_str(&form);
        text.push_str(" ~ ");
    }
    while text.len() < MIB {
        let missing = MIB - text.len();
        take_filler(&mut text, missing);
    }
    let text_mib = text.len() as f64 / MIB as f64;

    let t0 = Instant::now();
    let first = scan_once(&admin.client, &text).await?;
    let cold = t0.elapsed();
    let mut times = Vec::with_capacity(args.rounds);
    for _ in 0..args.rounds {
        let t = Instant::now();
        scan_once(&admin.client, &text).await?;
        times.push(t.elapsed());
    }
    // The first scans after the cold one are slower (about twice the
    // later ones on a 2-core machine): shown apart, not hidden in the
    // median.
    let first_scans: Vec<f64> = times.iter().take(FIRST_SCANS).map(|d| ms(*d)).collect();
    times.sort_unstable();
    let median = times.get(times.len() / 2).copied().unwrap_or(cold);
    let found = expected
        .iter()
        .filter(|(name, start)| {
            first
                .findings
                .iter()
                .any(|f| &f.credential_name == name && f.start_offset as usize == *start)
        })
        .count();
    let stray = first
        .findings
        .iter()
        .filter(|f| {
            !expected
                .iter()
                .any(|(n, s)| *n == f.credential_name && *s == f.start_offset as usize)
        })
        .count();
    server.stop().await;

    println!();
    println!(
        "ScanText, {text_mib:.2} MiB, {} stored values ({} planted in 7 forms), {}",
        args.values,
        expected.len(),
        if args.sqlite { "sqlite" } else { "postgres" }
    );
    println!(
        "  cold scan (compiles the tenant's automaton): {:.0} ms",
        ms(cold)
    );
    println!(
        "  warm scans: median {:.1} ms, min {:.1} ms, max {:.1} ms over {} rounds -> {:.0} MiB/s (median)",
        ms(median),
        ms(times.first().copied().unwrap_or(median)),
        ms(times.last().copied().unwrap_or(median)),
        times.len(),
        text_mib / median.as_secs_f64()
    );
    println!(
        "  the first {} warm scans: {} ms",
        first_scans.len(),
        first_scans
            .iter()
            .map(|t| format!("{t:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  recall: {found}/{} planted values at their offsets ({:.1} %); other findings: {stray}",
        expected.len(),
        100.0 * found as f64 / expected.len().max(1) as f64
    );

    formats(args, &corpus)
}

/// One ScanText call (the request's text copied, as a client would send
/// it).
async fn scan_once(
    client: &strongroom_client::Client,
    text: &str,
) -> Result<pb::ScanTextResponse, String> {
    Ok(client
        .credentials()
        .scan_text(pb::ScanTextRequest {
            text: text.to_owned(),
            ..Default::default()
        })
        .await
        .map_err(|e| format!("scan: {e}"))?
        .into_inner())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Token-shaped strings of every well-known format, with its rule name.
fn tokens(per_rule: usize) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for i in 0..per_rule {
        out.push((
            "aws_access_key_id",
            format!("AKIA{}", random(UPPER_DIGITS, 16)),
        ));
        out.push(("github_token", format!("ghp_{}", random(ALNUM, 36))));
        out.push(("stripe_key", format!("sk_live_{}", random(ALNUM, 24))));
        out.push((
            "openai_key",
            if i % 2 == 0 {
                format!("sk-{}T3BlbkFJ{}", random(ALNUM, 20), random(ALNUM, 20))
            } else {
                format!("sk-proj-{}", random(ALNUM, 48))
            },
        ));
        out.push((
            "anthropic_key",
            format!("sk-ant-api03-{}AA", random(ALNUM, 93)),
        ));
        out.push((
            "slack_token",
            format!(
                "xoxb-{}-{}-{}",
                random(b"0123456789", 12),
                random(b"0123456789", 13),
                random(ALNUM, 24)
            ),
        ));
        out.push(("google_api_key", format!("AIza{}", random(ALNUM, 35))));
        out.push((
            "private_key_block",
            format!(
                "-----BEGIN RSA PRIVATE KEY-----\\n{}\\n-----END RSA PRIVATE KEY-----",
                random(ALNUM, 64)
            ),
        ));
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(format!(r#"{{"sub":"{}"}}"#, random(ALNUM, 12)));
        out.push(("jwt", format!("{header}.{payload}.{}", random(ALNUM, 43))));
    }
    out
}

/// Well-known formats: strongroom's detector against detect-secrets on the
/// same file.
fn formats(args: &ScanArgs, corpus: &str) -> Result<(), String> {
    let tokens = tokens(args.tokens);
    let mut lines: Vec<String> = corpus.lines().map(str::to_owned).collect();
    let spacing = (lines.len() / (tokens.len() + 1)).max(1);
    let mut planted_lines = Vec::new();
    for (k, (_, token)) in tokens.iter().enumerate() {
        let at = ((k + 1) * spacing + k).min(lines.len());
        lines.insert(at, format!("    token = \"{token}\""));
        planted_lines.push(at);
    }
    // Line numbers after every insertion.
    let planted: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with("    token = \""))
        .map(|(i, _)| i + 1)
        .collect();
    let text = lines.join("\n") + "\n";
    let line_of = |offset: usize| text[..offset].bytes().filter(|b| *b == b'\n').count() + 1;

    let mut times = Vec::new();
    let mut ours = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        ours = strongroom_scan::detect_known_formats(text.as_bytes());
        times.push(t.elapsed());
    }
    times.sort_unstable();
    let our_time = times[times.len() / 2];
    let our_lines: std::collections::BTreeSet<usize> =
        ours.iter().map(|m| line_of(m.start)).collect();
    let our_found = planted.iter().filter(|l| our_lines.contains(l)).count();
    let our_stray = our_lines.iter().filter(|l| !planted.contains(l)).count();

    println!();
    println!(
        "Well-known formats, {:.2} MiB ({} lines, {} tokens planted one a line, 9 formats)",
        text.len() as f64 / MIB as f64,
        lines.len(),
        planted.len()
    );
    println!(
        "  {:<16} {:>10} {:>14} {:>22}",
        "detector", "time ms", "recall", "findings elsewhere"
    );
    println!(
        "  {:<16} {:>10.1} {:>8}/{:<5} {:>22}",
        "strongroom-scan",
        ms(our_time),
        our_found,
        planted.len(),
        our_stray
    );

    let Some(bin) = &args.detect_secrets else {
        println!("  detect-secrets   skipped (no --detect-secrets)");
        return Ok(());
    };
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let file = dir.path().join("corpus.txt");
    std::fs::write(&file, &text).map_err(|e| e.to_string())?;
    let t = Instant::now();
    let output = std::process::Command::new(bin)
        .arg("scan")
        .arg(&file)
        .current_dir(dir.path())
        .output()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    let their_time = t.elapsed();
    if !output.status.success() {
        return Err(format!(
            "detect-secrets failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let report: serde_json::Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| format!("detect-secrets output: {e}"))?;
    let their_lines: std::collections::BTreeSet<usize> = report["results"]
        .as_object()
        .into_iter()
        .flat_map(|files| files.values())
        .filter_map(|v| v.as_array())
        .flatten()
        .filter_map(|r| r["line_number"].as_u64())
        .map(|l| l as usize)
        .collect();
    let their_found = planted.iter().filter(|l| their_lines.contains(l)).count();
    let their_stray = their_lines.iter().filter(|l| !planted.contains(l)).count();
    println!(
        "  {:<16} {:>10.1} {:>8}/{:<5} {:>22}",
        "detect-secrets",
        ms(their_time),
        their_found,
        planted.len(),
        their_stray
    );
    println!("  (detect-secrets: wall time of `detect-secrets scan FILE`, process start included)");
    Ok(())
}
