//! `strongroom run --inject`, the real binaries against a local HTTPS
//! upstream (its own test CA, names resolved to 127.0.0.1 by static
//! resolution in both the server's relay and `run`'s forwarder): unmodified
//! curl, Python `requests` and `httpx`, and git go through the forwarder;
//! the upstream receives the real key while the child's environment, argv
//! and output hold only the placeholder; the agent, holding inject only,
//! cannot reveal; requests needing no credential pass through with their
//! certificates verified; a destination outside the grant is refused with
//! 403 inside the tunnel and raises the alert; a placeholder over plain
//! HTTP is refused; the forwarder serves no other local process.

use std::path::Path;

use base64::Engine as _;

use strongroom_e2e::cli::{CliIdentity, Finished, finish, python};
use strongroom_e2e::upstream::Upstream;
use strongroom_e2e::{
    Backend, Options, TenantAdmin, TestServer, api_key, audit_events, expect_code, path,
};
use strongroom_proto::v1 as pb;

const OPENAI_KEY: &str = "sk-e2e-inject-7c1f9a0b3d5e2468";
const API: &str = "api.example.test";
const OTHER: &str = "other.example.test";

/// A server whose relay resolves the upstream's names to it and trusts its
/// CA, an agent granted inject on `llm/openai` for `API` only, and the
/// CLI's files for the agent.
struct Setup {
    upstream: Upstream,
    server: TestServer,
    admin: TenantAdmin,
    cli: CliIdentity,
}

async fn setup(backend: Backend) -> Setup {
    let upstream = Upstream::start(&[API, OTHER, "untrusted.example.test"]).await;
    let port = upstream.port();
    let work = tempfile::tempdir().expect("tempdir");
    let ca = work.path().join("upstream-ca.pem");
    std::fs::write(&ca, upstream.ca_pem()).expect("write");
    let mut options = Options::new(backend);
    options.env.extend([
        (
            "STRONGROOM_RELAY_RESOLVE".to_owned(),
            format!("{API}:{port}:127.0.0.1,{OTHER}:{port}:127.0.0.1"),
        ),
        (
            "STRONGROOM_RELAY_ALLOW_INTERNAL".to_owned(),
            format!("{API}:{port},{OTHER}:{port}"),
        ),
        (
            "STRONGROOM_RELAY_UPSTREAM_CA".to_owned(),
            ca.to_string_lossy().into_owned(),
        ),
    ]);
    let server = TestServer::start_with(options).await;
    // The server read the CA at start-up; the CLI gets its own copy.
    let admin = server.tenant("acme").await;
    let (agent_id, _) = server.principal(&admin, "agent", pb::Role::Agent).await;
    admin
        .client
        .credentials()
        .create_credential(pb::CreateCredentialRequest {
            environment: "dev".into(),
            name: "llm/openai".into(),
            service: "openai".into(),
            value: api_key(OPENAI_KEY),
            ..Default::default()
        })
        .await
        .expect("create credential");
    admin
        .client
        .policy()
        .create_grant(pb::CreateGrantRequest {
            subject: Some(pb::GrantSubject {
                subject: Some(pb::grant_subject::Subject::PrincipalId(agent_id)),
            }),
            selector: "llm/openai".into(),
            environments: vec!["dev".into()],
            capabilities: vec![pb::Capability::Inject as i32],
            destinations: vec![pb::Destination {
                host: format!("{API}:{port}"),
                ..Default::default()
            }],
            reason: "e2e".into(),
            ..Default::default()
        })
        .await
        .expect("grant inject");
    let cli = CliIdentity::new(&server, "spiffe://e2e.test/acme/agent");
    std::fs::write(cli.dir.path().join("upstream-ca.pem"), upstream.ca_pem()).expect("write");
    Setup {
        upstream,
        server,
        admin,
        cli,
    }
}

impl Setup {
    /// `strongroom run --inject OPENAI_API_KEY=sr://dev/llm/openai -- ARGS`
    /// with the forwarder trusting the upstream's CA and resolving its
    /// names to it.
    async fn run(&self, args: &[&str]) -> Finished {
        let port = self.upstream.port();
        let mut all = vec![
            "run",
            "--inject",
            "OPENAI_API_KEY=sr://dev/llm/openai",
            "--purpose",
            "e2e inject",
            "--",
        ];
        all.extend_from_slice(args);
        let mut cmd = self.cli.command(all);
        cmd.env(
            "STRONGROOM_RUN_UPSTREAM_CA",
            self.cli.dir.path().join("upstream-ca.pem"),
        )
        .env(
            "STRONGROOM_RUN_RESOLVE",
            format!(
                "{API}:{port}:127.0.0.1,{OTHER}:{port}:127.0.0.1,untrusted.example.test:{port}:127.0.0.1"
            ),
        );
        let run = finish(cmd).await;
        for stream in [&run.stdout, &run.stderr] {
            assert!(
                !stream.contains(OPENAI_KEY),
                "the key reached the child's output: {run:?}"
            );
        }
        run
    }

    fn url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.upstream.port())
    }

    /// The requests the upstream received at paths starting with `prefix`.
    fn received(&self, prefix: &str) -> Vec<strongroom_e2e::upstream::Received> {
        self.upstream
            .received()
            .into_iter()
            .filter(|r| r.path_and_query.starts_with(prefix))
            .collect()
    }
}

/// Python that prints the child's view: its argv and environment (JSON),
/// then the response of a GET of `url` with the placeholder as bearer
/// token, made with `module` (`requests` or `httpx`).
fn python_child(module: &str, url: &str) -> String {
    format!(
        r#"
import json, os, sys
import {module}
print("ARGV", json.dumps(sys.argv))
print("ENV", json.dumps(dict(os.environ)))
r = {module}.get("{url}", headers={{"Authorization": "Bearer " + os.environ["OPENAI_API_KEY"]}})
print("STATUS", r.status_code)
print(r.text)
"#
    )
}

fn placeholder_in(run: &Finished) -> String {
    let line = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("PLACEHOLDER "))
        .unwrap_or_else(|| panic!("no placeholder printed: {run:?}"));
    line.trim().to_owned()
}

on_both_backends!(curl_requests_and_httpx_get_the_key_upstream_only);

async fn curl_requests_and_httpx_get_the_key_upstream_only(backend: Backend) {
    let s = setup(backend).await;

    // The agent holds inject only: no value for it.
    let (_, agent) = ((), s.server.client("spiffe://e2e.test/acme/agent").await);
    expect_code(
        agent
            .credentials()
            .reveal_credential(pb::RevealCredentialRequest {
                credential: path("dev", "llm/openai"),
                purpose: "e2e".into(),
                ..Default::default()
            })
            .await,
        tonic::Code::PermissionDenied,
        "reveal with inject only",
    );

    // curl, placeholder as bearer token.
    let script = format!(
        "echo PLACEHOLDER $OPENAI_API_KEY; env; curl -sS -H \"Authorization: Bearer $OPENAI_API_KEY\" {}",
        s.url(API, "/echo/curl")
    );
    let run = s.run(&["sh", "-c", &script]).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let placeholder = placeholder_in(&run);
    assert!(
        placeholder.starts_with("strongroom-placeholder-"),
        "{placeholder}"
    );
    assert!(
        (16..=128).contains(&placeholder.len())
            && placeholder
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
        "{placeholder}"
    );
    for var in ["HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"] {
        assert!(
            run.stdout.contains(&format!("{var}=http://strongroom:")),
            "{var} not set: {}",
            run.stdout
        );
    }
    for var in [
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "NODE_EXTRA_CA_CERTS",
        "GIT_SSL_CAINFO",
    ] {
        assert!(run.stdout.contains(&format!("{var}=")), "{var} not set");
    }
    assert!(
        !run.stdout.contains("STRONGROOM_KEY="),
        "the identity leaked to the child"
    );
    let got = s.received("/echo/curl");
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        got[0].header("authorization"),
        Some(format!("Bearer {OPENAI_KEY}").as_str())
    );
    assert_eq!(got[0].authority, format!("{API}:{}", s.upstream.port()));
    // The upstream echoed the key; the relay scrubbed it from what the child
    // got (the output holds no key, checked by `run`).
    assert!(
        run.stdout.contains("authorization: Bearer "),
        "{}",
        run.stdout
    );

    // Python requests and httpx, unmodified.
    let python = python();
    for module in ["requests", "httpx"] {
        let prefix = format!("/echo/{module}");
        let code = python_child(module, &s.url(API, &prefix));
        let run = s
            .run(&[python.to_str().unwrap_or("python3"), "-c", &code])
            .await;
        assert_eq!(run.code, Some(0), "{module}: {run:?}");
        assert!(run.stdout.contains("STATUS 200"), "{module}: {run:?}");
        let env_line = run
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("ENV "))
            .unwrap_or_default();
        let env: serde_json::Value = serde_json::from_str(env_line).expect("env JSON");
        let placeholder = env["OPENAI_API_KEY"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            placeholder.starts_with("strongroom-placeholder-"),
            "{module}: {env}"
        );
        let argv = run
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("ARGV "))
            .unwrap_or_default();
        assert!(
            !argv.is_empty() && !argv.contains(OPENAI_KEY),
            "{module}: {argv}"
        );
        let got = s.received(&prefix);
        assert_eq!(got.len(), 1, "{module}: {got:?}");
        assert_eq!(
            got[0].header("authorization"),
            Some(format!("Bearer {OPENAI_KEY}").as_str()),
            "{module}"
        );
    }

    // A request to the granted destination without a placeholder gets the
    // key by the credential's template (bearer).
    let run = s
        .run(&[
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            &s.url(API, "/echo/template"),
        ])
        .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let got = s.received("/echo/template");
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].header("authorization"),
        Some(format!("Bearer {OPENAI_KEY}").as_str())
    );

    let uses = audit_events(
        &s.admin.client,
        pb::QueryEventsRequest {
            actions: vec![pb::AuditAction::CredentialInject as i32],
            ..Default::default()
        },
    )
    .await;
    assert!(
        uses.len() >= 4,
        "every relayed request is audited: {uses:?}"
    );
    assert!(
        !s.server.logs.contains(OPENAI_KEY),
        "the key in the server's logs"
    );
}

#[tokio::test]
async fn pass_through_verifies_and_refusals_happen_inside_the_tunnel() {
    let s = setup(Backend::Sqlite).await;

    // Another host, no placeholder: the forwarder passes the request on
    // itself, verifying the upstream against the bundle it was given.
    let run = s
        .run(&[
            "curl",
            "-sS",
            "-w",
            "\\nCODE %{http_code}\\n",
            &s.url(OTHER, "/echo/pass"),
        ])
        .await;
    assert!(run.stdout.contains("CODE 200"), "{run:?}");
    let got = s.received("/echo/pass");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].header("authorization"), None);
    assert_eq!(got[0].server_name.as_deref(), Some(OTHER));

    // Without the upstream CA the forwarder does not trust it: 502, and
    // nothing reaches it.
    let port = s.upstream.port();
    let mut all = vec![
        "run",
        "--purpose",
        "e2e",
        "--inject",
        "OPENAI_API_KEY=sr://dev/llm/openai",
        "--",
    ];
    let url = s.url("untrusted.example.test", "/echo/untrusted");
    all.extend([
        "curl",
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "CODE %{http_code}",
        url.as_str(),
    ]);
    let mut cmd = s.cli.command(all);
    cmd.env(
        "STRONGROOM_RUN_RESOLVE",
        format!("untrusted.example.test:{port}:127.0.0.1"),
    );
    let run = finish(cmd).await;
    assert!(run.stdout.contains("CODE 502"), "{run:?}");
    assert!(s.received("/echo/untrusted").is_empty());

    // The placeholder to a destination outside the grant: 403 inside the
    // tunnel, never forwarded, and an alert.
    let script = format!(
        "curl -sS -o /dev/null -w 'CODE %{{http_code}}' -H \"Authorization: Bearer $OPENAI_API_KEY\" {}",
        s.url(OTHER, "/echo/outside")
    );
    let run = s.run(&["sh", "-c", &script]).await;
    assert!(run.stdout.contains("CODE 403"), "{run:?}");
    assert!(
        s.received("/echo/outside").is_empty(),
        "forwarded outside the grant"
    );
    let alerts = audit_events(
        &s.admin.client,
        pb::QueryEventsRequest {
            actions: vec![pb::AuditAction::AlertPlaceholderMisuse as i32],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");

    // Over plain HTTP a placeholder is never passed on; the relay refuses
    // it and the tenant's chain gets the alert (not only this process).
    let script = format!(
        "curl -sS -o /dev/null -w 'CODE %{{http_code}}' -H \"Authorization: Bearer $OPENAI_API_KEY\" http://{OTHER}:{port}/echo/plain"
    );
    let run = s.run(&["sh", "-c", &script]).await;
    assert!(run.stdout.contains("CODE 403"), "{run:?}");
    assert!(s.received("/echo/plain").is_empty());
    let alerts = audit_events(
        &s.admin.client,
        pb::QueryEventsRequest {
            actions: vec![pb::AuditAction::AlertPlaceholderMisuse as i32],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        alerts.len(),
        2,
        "the plain-HTTP canary is recorded: {alerts:?}"
    );

    // Basic authentication (`curl -u`, which base64-encodes the
    // placeholder) to the allowed destination: the value is substituted
    // inside the credentials, and the destination gets the real key.
    let script = format!(
        "curl -sS -o /dev/null -w 'CODE %{{http_code}}' -u \"robot:$OPENAI_API_KEY\" {}",
        s.url(API, "/echo/basic")
    );
    let run = s.run(&["sh", "-c", &script]).await;
    assert!(run.stdout.contains("CODE 200"), "{run:?}");
    let got = s.received("/echo/basic");
    assert_eq!(got.len(), 1);
    let expected = base64::engine::general_purpose::STANDARD.encode(format!("robot:{OPENAI_KEY}"));
    assert_eq!(
        got[0].header("authorization"),
        Some(format!("Basic {expected}").as_str())
    );

    // The agent does not choose where the value goes: the placeholder in a
    // free-text query parameter, in the path, percent-encoded, or in
    // another header of the allowed destination is refused inside the
    // tunnel and raises the alert; nothing is sent.
    for (i, (curl_args, path)) in [
        (
            "--get --data-urlencode \"text=$OPENAI_API_KEY\"".to_owned(),
            "/echo/text".to_owned(),
        ),
        (String::new(), "/echo/path/$OPENAI_API_KEY".to_owned()),
        (
            "-H \"X-Note: $OPENAI_API_KEY\"".to_owned(),
            "/echo/header".to_owned(),
        ),
        (
            String::new(),
            "/echo/encoded?q=$(printf %s \"$OPENAI_API_KEY\" | sed 's/-/%2D/g')".to_owned(),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let script = format!(
            "curl -sS -o /dev/null -w 'CODE %{{http_code}}' {curl_args} \"{}\"",
            s.url(API, &path)
        );
        let run = s.run(&["sh", "-c", &script]).await;
        assert!(run.stdout.contains("CODE 403"), "{path}: {run:?}");
        let alerts = audit_events(
            &s.admin.client,
            pb::QueryEventsRequest {
                actions: vec![pb::AuditAction::AlertPlaceholderMisuse as i32],
                ..Default::default()
            },
        )
        .await;
        assert_eq!(alerts.len(), 3 + i, "{path}: {alerts:?}");
    }
    for prefix in ["/echo/text", "/echo/path", "/echo/header", "/echo/encoded"] {
        assert!(s.received(prefix).is_empty(), "{prefix} was forwarded");
    }

    // Another local process (here the child itself, without the proxy
    // credential) is refused by the forwarder: 407.
    let script = format!(
        "curl -sS -o /dev/null -w 'CONNECT %{{http_connect}}' -x \"http://${{HTTPS_PROXY##*@}}\" {}",
        s.url(API, "/echo/borrowed")
    );
    let run = s.run(&["sh", "-c", &script]).await;
    assert!(run.stdout.contains("CONNECT 407"), "{run:?}");
    assert!(s.received("/echo/borrowed").is_empty());
}

fn git(dir: &Path, args: &[&str]) {
    let status = std::process::Command::new("git")
        .args([
            "-c",
            "user.name=e2e",
            "-c",
            "user.email=e2e@example.test",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .env("HOME", dir)
        .status()
        .expect("git");
    assert!(status.success(), "git {args:?}");
}

#[tokio::test]
async fn git_clones_over_https_through_the_forwarder() {
    let s = setup(Backend::Sqlite).await;
    let files = tempfile::tempdir().expect("tempdir");
    let source = files.path().join("source");
    std::fs::create_dir(&source).expect("mkdir");
    git(&source, &["init", "-q"]);
    std::fs::write(source.join("README"), "cloned through strongroom run\n").expect("write");
    git(&source, &["add", "README"]);
    git(&source, &["commit", "-q", "-m", "first"]);
    git(
        files.path(),
        &["clone", "-q", "--bare", "source", "repo.git"],
    );
    git(&files.path().join("repo.git"), &["update-server-info"]);
    s.upstream.serve_dir(files.path().to_path_buf());

    let target = s.cli.dir.path().join("home/clone");
    let url = s.url(OTHER, "/files/repo.git");
    let run = s
        .run(&[
            "git",
            "clone",
            "-q",
            &url,
            target.to_str().unwrap_or("clone"),
        ])
        .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let readme = std::fs::read_to_string(target.join("README")).expect("cloned README");
    assert_eq!(readme, "cloned through strongroom run\n");
    assert!(!s.received("/files/repo.git/info/refs").is_empty());
}
