//! `strongroom run`, the real binary against the real server: `--env`
//! values masked in the child's output in every form, also split across
//! writes; exit status and signals passed through.

use std::time::Duration;

use base64::Engine as _;
use strongroom_e2e::cli::{CliIdentity, finish, python};
use strongroom_e2e::{Backend, TenantAdmin, TestServer, api_key, audit_events, grant};
use strongroom_proto::v1 as pb;
use tokio::io::{AsyncBufReadExt as _, BufReader};

on_both_backends!(env_values_are_masked_in_every_form);

/// A value with characters that URL encoding changes.
const DB_PASSWORD: &str = "pg/e2e+Secret=9f8e7d6c:5b4a3210";

async fn credential(admin: &TenantAdmin, name: &str, value: &str) {
    admin
        .client
        .credentials()
        .create_credential(pb::CreateCredentialRequest {
            environment: "dev".into(),
            name: name.into(),
            service: "e2e".into(),
            value: api_key(value),
            ..Default::default()
        })
        .await
        .expect("create credential");
}

fn percent_encoded(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn hex(value: &str) -> String {
    value.bytes().map(|b| format!("{b:02x}")).collect()
}

/// Prints the value plain, base64, URL-encoded and hex, then split across
/// two writes 50 ms apart, and on stderr; exits 3.
const PRINT_VALUE: &str = r#"
import base64, os, sys, time, urllib.parse
v = os.environ["DB_PASSWORD"]
print("plain", v, flush=True)
print("base64", base64.b64encode(v.encode()).decode(), flush=True)
print("url", urllib.parse.quote(v, safe=""), flush=True)
print("hex", v.encode().hex(), flush=True)
sys.stdout.write("split " + v[:9]); sys.stdout.flush()
time.sleep(0.05)
sys.stdout.write(v[9:] + " end\n"); sys.stdout.flush()
sys.stderr.write("stderr " + v + "\n"); sys.stderr.flush()
sys.exit(3)
"#;

async fn env_values_are_masked_in_every_form(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = server.tenant("acme").await;
    let (agent_id, _) = server.principal(&acme, "agent", pb::Role::Agent).await;
    credential(&acme, "db/main", DB_PASSWORD).await;
    grant(
        &acme,
        &agent_id,
        "db/*",
        &["dev"],
        &[pb::Capability::Reveal],
        None,
    )
    .await;
    let cli = CliIdentity::new(&server, "spiffe://e2e.test/acme/agent");
    let python = python();
    let run = finish(cli.command([
        "run".as_ref(),
        "--env".as_ref(),
        "DB_PASSWORD=sr://dev/db/main".as_ref(),
        "--purpose".as_ref(),
        "e2e masking".as_ref(),
        "--".as_ref(),
        python.as_os_str(),
        "-c".as_ref(),
        PRINT_VALUE.as_ref(),
    ]))
    .await;
    assert_eq!(run.code, Some(3), "the child's exit status: {run:?}");
    let mask = "[MASKED:DB_PASSWORD]";
    for line in [
        format!("plain {mask}"),
        format!("base64 {mask}"),
        format!("url {mask}"),
        format!("hex {mask}"),
        format!("split {mask} end"),
    ] {
        assert!(
            run.stdout.lines().any(|l| l == line),
            "no line {line:?} in {:?}",
            run.stdout
        );
    }
    assert!(
        run.stderr.contains(&format!("stderr {mask}")),
        "{:?}",
        run.stderr
    );
    let forms = [
        DB_PASSWORD.to_owned(),
        base64::engine::general_purpose::STANDARD.encode(DB_PASSWORD),
        percent_encoded(DB_PASSWORD),
        hex(DB_PASSWORD),
        // Each half of the split write alone would be a partial leak.
        DB_PASSWORD[..9].to_owned(),
        DB_PASSWORD[9..].to_owned(),
    ];
    for form in &forms {
        assert!(!run.stdout.contains(form.as_str()), "{form:?} in stdout");
        assert!(!run.stderr.contains(form.as_str()), "{form:?} in stderr");
    }
    assert!(
        !server.logs.contains(DB_PASSWORD),
        "the value in the server's logs"
    );

    // The lease the run obtained (its reveal) was released when the child
    // exited, and the release is in the tenant's audit chain.
    let of = |action: pb::AuditAction| {
        let client = acme.client.clone();
        let principal = agent_id.clone();
        async move {
            audit_events(
                &client,
                pb::QueryEventsRequest {
                    actions: vec![action as i32],
                    ..Default::default()
                },
            )
            .await
            .into_iter()
            .filter(|e| e.principal_id == principal)
            .collect::<Vec<_>>()
        }
    };
    let reveals = of(pb::AuditAction::CredentialReveal).await;
    assert_eq!(reveals.len(), 1, "{reveals:?}");
    let lease = reveals[0].lease_id.clone();
    assert!(!lease.is_empty(), "the reveal began no lease: {reveals:?}");
    let released = of(pb::AuditAction::LeaseRelease).await;
    assert!(
        released.iter().any(|e| e.lease_id == lease),
        "no release of lease {lease} in the audit chain: {released:?}"
    );
    assert!(
        of(pb::AuditAction::LeaseExpire).await.is_empty(),
        "the lease was left to expire"
    );
}

/// `strongroom run -- ARGS` without credentials.
async fn run_plain(cli: &CliIdentity, args: &[&str]) -> tokio::process::Command {
    let mut all = vec!["run", "--purpose", "e2e", "--"];
    all.extend_from_slice(args);
    cli.command(all)
}

#[tokio::test]
async fn exit_status_and_signals_propagate() {
    let server = TestServer::start(Backend::Sqlite).await;
    let acme = server.tenant("acme").await;
    server.principal(&acme, "agent", pb::Role::Agent).await;
    let cli = CliIdentity::new(&server, "spiffe://e2e.test/acme/agent");

    let run = finish(run_plain(&cli, &["sh", "-c", "exit 7"]).await).await;
    assert_eq!(run.code, Some(7), "{run:?}");
    let run = finish(run_plain(&cli, &["sh", "-c", "kill -TERM $$"]).await).await;
    assert_eq!(run.code, Some(128 + 15), "killed by SIGTERM: {run:?}");
    let run = finish(run_plain(&cli, &["strongroom-e2e-no-such-program"]).await).await;
    assert_eq!(run.code, Some(127), "{run:?}");

    // SIGTERM and SIGINT sent to `run` reach the child, which exits with a
    // status of its own choosing.
    for (signal, code) in [("-TERM", 42), ("-INT", 43)] {
        let script = "import signal, sys, time\n\
             signal.signal(signal.SIGTERM, lambda *a: sys.exit(42))\n\
             signal.signal(signal.SIGINT, lambda *a: sys.exit(43))\n\
             print('ready', flush=True)\n\
             time.sleep(30)\n";
        let python = python();
        let mut cmd = run_plain(&cli, &[python.to_str().unwrap_or("python3"), "-c", script]).await;
        let mut child = cmd.spawn().expect("spawn strongroom");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the child never got ready")
            .expect("read");
        assert_eq!(ready.as_deref(), Some("ready"));
        let pid = child.id().expect("pid");
        let sent = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("kill");
        assert!(sent.success());
        let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .expect("strongroom did not exit after the signal")
            .expect("wait");
        assert_eq!(status.code(), Some(code), "after {signal}");
    }
}
