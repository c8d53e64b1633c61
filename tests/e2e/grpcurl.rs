//! The API as a generic gRPC client sees it through server reflection:
//! grpcurl lists the services, and a tenant admin and an agent store, grant
//! and reveal a credential with JSON requests.

use std::path::{Path, PathBuf};
use std::time::Duration;

use strongroom_e2e::{Backend, CertKind, TestServer};
use strongroom_proto::v1 as pb;

on_both_backends!(grpcurl_through_reflection);

/// grpcurl: `STRONGROOM_GRPCURL`, else the project's tool cache, else `PATH`.
pub(crate) fn grpcurl_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("STRONGROOM_GRPCURL") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "STRONGROOM_GRPCURL={} does not exist: run ../shared/tools/get-tools.sh",
            p.display()
        );
        return p;
    }
    let cached = std::env::var_os("HOME")
        .map(|home| Path::new(&home).join(".cache/strongroom-tools/bin/grpcurl"));
    if let Some(p) = cached.filter(|p| p.is_file()) {
        return p;
    }
    if let Some(found) = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("grpcurl"))
            .find(|p| p.is_file())
    }) {
        return found;
    }
    panic!(
        "grpcurl not found (STRONGROOM_GRPCURL, ~/.cache/strongroom-tools/bin/grpcurl, PATH): \
         run ../shared/tools/get-tools.sh"
    );
}

/// grpcurl presenting one identity's certificate.
struct Grpcurl {
    binary: PathBuf,
    target: String,
    tls: Vec<String>,
}

/// What one grpcurl run printed.
struct Output {
    success: bool,
    stdout: String,
    stderr: String,
}

impl Grpcurl {
    fn new(server: &TestServer, identity: &str) -> Self {
        let config = server.client_config(identity, CertKind::Spiffe);
        let path = |p: &Path| p.to_string_lossy().into_owned();
        Self {
            binary: grpcurl_binary(),
            target: format!("127.0.0.1:{}", server.addr.port()),
            tls: vec![
                "-cacert".into(),
                path(&config.ca),
                "-cert".into(),
                path(&config.cert),
                "-key".into(),
                path(&config.key),
                "-servername".into(),
                "localhost".into(),
            ],
        }
    }

    async fn run(&self, data: Option<&serde_json::Value>, what: &[&str]) -> Output {
        let mut cmd = tokio::process::Command::new(&self.binary);
        cmd.args(&self.tls).args(["-max-time", "20"]);
        if let Some(data) = data {
            cmd.arg("-d").arg(data.to_string());
        }
        cmd.arg(&self.target).args(what).kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
            .await
            .expect("grpcurl hung")
            .expect("run grpcurl");
        Output {
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Calls `method` with a JSON request and returns the JSON response.
    async fn call(&self, method: &str, request: serde_json::Value) -> (String, serde_json::Value) {
        let out = self.run(Some(&request), &[method]).await;
        assert!(
            out.success,
            "grpcurl {method} failed:\n{}\n{}",
            out.stdout, out.stderr
        );
        let json = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("grpcurl {method} printed no JSON ({e}):\n{}", out.stdout));
        (out.stdout, json)
    }
}

async fn grpcurl_through_reflection(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = server.tenant("acme").await;
    let (agent_id, _agent) = server.principal(&acme, "agent", pb::Role::Agent).await;
    let admin = Grpcurl::new(&server, &acme.identity);
    let agent = Grpcurl::new(&server, "spiffe://e2e.test/acme/agent");

    let listed = admin.run(None, &["list"]).await;
    assert!(listed.success, "grpcurl list failed: {}", listed.stderr);
    let services: Vec<&str> = listed.stdout.lines().map(str::trim).collect();
    for service in [
        "strongroom.v1.CredentialService",
        "strongroom.v1.PolicyService",
        "strongroom.v1.AuditService",
        "strongroom.v1.AdminService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            services.contains(&service),
            "{service} not listed: {services:?}"
        );
    }
    let methods = admin
        .run(None, &["list", "strongroom.v1.CredentialService"])
        .await;
    assert!(
        methods
            .stdout
            .contains("strongroom.v1.CredentialService.RevealCredential"),
        "{}",
        methods.stdout
    );

    let (_, health) = admin
        .call(
            "grpc.health.v1.Health/Check",
            serde_json::json!({"service": "strongroom.v1.CredentialService"}),
        )
        .await;
    assert_eq!(health["status"], "SERVING");

    let secret = "sk-grpcurl-e2e-7f3a9c";
    let (raw, created) = admin
        .call(
            "strongroom.v1.CredentialService/CreateCredential",
            serde_json::json!({
                "environment": "dev",
                "name": "llm/grpcurl",
                "service": "openai",
                "value": {"api_key": {"api_key": secret}},
            }),
        )
        .await;
    assert!(!raw.contains(secret), "CreateCredential echoed the value");
    let credential_id = created["credential"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no credential id in {created}"))
        .to_owned();
    assert_eq!(
        created["credential"]["credentialType"],
        "CREDENTIAL_TYPE_API_KEY"
    );

    // Without a grant the agent is refused.
    let denied = agent
        .run(
            Some(&serde_json::json!({
                "credential": {"id": credential_id},
                "purpose": "grpcurl e2e",
            })),
            &["strongroom.v1.CredentialService/RevealCredential"],
        )
        .await;
    assert!(!denied.success, "revealed without a grant");
    assert!(denied.stderr.contains("NotFound"), "{}", denied.stderr);

    let (_, granted) = admin
        .call(
            "strongroom.v1.PolicyService/CreateGrant",
            serde_json::json!({
                "subject": {"principal_id": agent_id},
                "selector": "llm/*",
                "environments": ["dev"],
                "capabilities": ["CAPABILITY_REVEAL"],
                "reason": "grpcurl e2e",
            }),
        )
        .await;
    assert!(granted["grant"]["id"].is_string(), "{granted}");

    let (raw, revealed) = agent
        .call(
            "strongroom.v1.CredentialService/RevealCredential",
            serde_json::json!({
                "credential": {"path": {"environment": "dev", "name": "llm/grpcurl"}},
                "purpose": "grpcurl e2e",
            }),
        )
        .await;
    assert!(raw.contains(secret), "the revealed value is missing: {raw}");
    assert_eq!(revealed["value"]["apiKey"]["apiKey"], secret);
    assert_eq!(revealed["credential"]["id"], credential_id.as_str());
    assert!(revealed["lease"]["leaseId"].is_string(), "{revealed}");

    // Errors come back as gRPC statuses naming the field.
    let no_purpose = agent
        .run(
            Some(&serde_json::json!({"credential": {"id": credential_id}})),
            &["strongroom.v1.CredentialService/RevealCredential"],
        )
        .await;
    assert!(!no_purpose.success);
    assert!(
        no_purpose.stderr.contains("InvalidArgument") && no_purpose.stderr.contains("purpose"),
        "{}",
        no_purpose.stderr
    );
}
