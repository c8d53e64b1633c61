//! `strongroomd dev`: a complete single-node server for trying strongroom on
//! a laptop. SQLite and a random root key under one folder, a dev CA with
//! server, admin and agent certificates, a `demo` tenant with an admin and an
//! agent, and the grpcurl commands to get started. Reusing the folder keeps
//! the data.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use strongroom_core::Error;
use strongroom_core::names::{PrincipalName, TenantName};
use strongroom_core::principal::{IdentityPattern, Role};
use strongroom_crypto::RootKey;

use crate::app::{App, StartError};
use crate::config::{Config, Database, Limits, LogFormat, RootKeySource, TlsPaths};
use strongroom_engine::{CallContext, new_request_id};

/// The dev admin's identity.
pub const ADMIN_IDENTITY: &str = "spiffe://strongroom.dev/admin";
/// The dev platform operator's identity (outside the demo tenant's
/// namespaces: no namespace may cover a platform operator).
pub const OPERATOR_IDENTITY: &str = "spiffe://strongroom.dev/operator";
/// The dev agent's identity.
pub const AGENT_IDENTITY: &str = "spiffe://strongroom.dev/agent";
/// The dev tenant.
pub const DEMO_TENANT: &str = "demo";

fn io(path: &Path, e: std::io::Error) -> StartError {
    StartError::Serve(format!("dev mode: {}: {e}", path.display()))
}

fn write_private(path: &Path, contents: &[u8]) -> Result<(), StartError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| io(path, e))?;
    file.write_all(contents).map_err(|e| io(path, e))
}

fn write_public(path: &Path, contents: &str) -> Result<(), StartError> {
    std::fs::write(path, contents).map_err(|e| io(path, e))
}

fn rc(e: rcgen::Error) -> StartError {
    StartError::Serve(format!("dev mode: certificate generation: {e}"))
}

/// Generates the dev CA and the server, admin and agent certificates.
fn generate_certificates(dir: &Path, listen: SocketAddr) -> Result<(), StartError> {
    let ca_key = KeyPair::generate().map_err(rc)?;
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name
        .push(DnType::CommonName, "strongroom dev CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).map_err(rc)?;
    write_public(&dir.join("ca.pem"), &ca_cert.pem())?;
    let issuer = Issuer::new(ca, ca_key);

    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    if !listen.ip().is_unspecified() && !names.contains(&listen.ip().to_string()) {
        names.push(listen.ip().to_string());
    }
    let server_key = KeyPair::generate().map_err(rc)?;
    let mut server = CertificateParams::new(names).map_err(rc)?;
    server
        .distinguished_name
        .push(DnType::CommonName, "strongroomd");
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = server.signed_by(&server_key, &issuer).map_err(rc)?;
    write_public(&dir.join("server.pem"), &server_cert.pem())?;
    write_private(
        &dir.join("server-key.pem"),
        server_key.serialize_pem().as_bytes(),
    )?;

    for (file, cn, spiffe) in [
        ("admin", "admin", ADMIN_IDENTITY),
        ("agent", "agent", AGENT_IDENTITY),
        ("operator", "operator", OPERATOR_IDENTITY),
    ] {
        let key = KeyPair::generate().map_err(rc)?;
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.subject_alt_names = vec![SanType::URI(spiffe.try_into().map_err(rc)?)];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &issuer).map_err(rc)?;
        write_public(&dir.join(format!("{file}.pem")), &cert.pem())?;
        write_private(
            &dir.join(format!("{file}-key.pem")),
            key.serialize_pem().as_bytes(),
        )?;
    }
    Ok(())
}

/// Everything dev mode prepared.
pub struct DevSetup {
    /// The folder.
    pub dir: PathBuf,
    /// The server configuration.
    pub config: Config,
}

/// Prepares the dev folder (keys, certificates) and returns the
/// configuration to serve it with.
pub fn prepare(dir: &Path, listen: SocketAddr) -> Result<DevSetup, StartError> {
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| io(dir, e))?;
    }
    let key_path = dir.join("root.key");
    if !key_path.exists() {
        let key = RootKey::generate().map_err(|e| StartError::RootKey(e.to_string()))?;
        let text = key.to_encoded();
        write_private(
            &key_path,
            secrecy::ExposeSecret::expose_secret(&text).as_bytes(),
        )?;
    }
    let required = [
        "ca.pem",
        "server.pem",
        "server-key.pem",
        "admin.pem",
        "admin-key.pem",
        "agent.pem",
        "agent-key.pem",
        "operator.pem",
        "operator-key.pem",
    ];
    if !required.iter().all(|f| dir.join(f).exists()) {
        generate_certificates(dir, listen)?;
    }
    let config = Config {
        listen,
        tls: TlsPaths {
            cert: dir.join("server.pem"),
            key: dir.join("server-key.pem"),
            client_ca: dir.join("ca.pem"),
            crl: None,
            crl_reload: std::time::Duration::from_secs(5),
        },
        database: Database::Sqlite {
            path: dir.join("strongroom.db"),
        },
        root_key: RootKeySource::File(key_path),
        next_root_key: None,
        key_heartbeat: strongroom_engine::DEFAULT_KEY_HEARTBEAT,
        platform_operators: vec![IdentityPattern::Exact(OPERATOR_IDENTITY.to_owned())],
        limits: Limits::default(),
        audit: crate::config::AuditConfig::default(),
        identity: crate::config::IdentityConfig::default(),
        log_level: "info".into(),
        log_format: LogFormat::Text,
        telemetry: crate::config::TelemetryConfig::default(),
        metrics: crate::config::MetricsConfig::default(),
        relay: crate::config::RelayConfig::default(),
        notifier: crate::config::NotifierConfig::default(),
    };
    Ok(DevSetup {
        dir: dir.to_path_buf(),
        config,
    })
}

fn boot(e: Error) -> StartError {
    StartError::Serve(format!("dev mode bootstrap: {e}"))
}

/// Creates the `demo` tenant, its admin and its agent if absent. Returns the
/// agent's principal id.
pub async fn bootstrap(app: &App) -> Result<String, StartError> {
    let engine = app.engine();
    let store = engine.store().as_ref();
    let ctx = CallContext {
        peer: None,
        request_id: new_request_id(),
        trace_id: None,
    };
    let existing = app
        .authenticator()
        .authenticate(store, ADMIN_IDENTITY, None)
        .await;
    if existing.is_err() {
        let operator = app
            .authenticator()
            .authenticate(store, OPERATOR_IDENTITY, None)
            .await
            .map_err(boot)?;
        engine
            .create_tenant(
                &operator,
                &ctx,
                TenantName::parse(DEMO_TENANT, "name").map_err(boot)?,
                Some((
                    PrincipalName::parse("admin", "name").map_err(boot)?,
                    IdentityPattern::Exact(ADMIN_IDENTITY.to_owned()),
                )),
                vec![
                    IdentityPattern::Exact(ADMIN_IDENTITY.to_owned()),
                    IdentityPattern::Exact(AGENT_IDENTITY.to_owned()),
                ],
            )
            .await
            .map_err(boot)?;
    }
    let admin = app
        .authenticator()
        .authenticate(store, ADMIN_IDENTITY, None)
        .await
        .map_err(boot)?;
    if let Ok(agent) = app
        .authenticator()
        .authenticate(store, AGENT_IDENTITY, None)
        .await
        && let Some(p) = agent.principal()
    {
        return Ok(p.id.to_string());
    }
    let agent = engine
        .create_principal(
            &admin,
            &ctx,
            PrincipalName::parse("agent", "name").map_err(boot)?,
            Role::Agent,
            Vec::new(),
            "dev-mode demo agent".into(),
        )
        .await
        .map_err(boot)?;
    engine
        .create_binding(
            &admin,
            &ctx,
            agent.id,
            IdentityPattern::Exact(AGENT_IDENTITY.to_owned()),
        )
        .await
        .map_err(boot)?;
    Ok(agent.id.to_string())
}

/// The getting-started text printed by dev mode, with commands ready to copy.
pub fn instructions(dir: &Path, addr: SocketAddr, agent_id: &str) -> String {
    let d = dir.display();
    let admin = format!("grpcurl -cacert {d}/ca.pem -cert {d}/admin.pem -key {d}/admin-key.pem");
    let agent = format!("grpcurl -cacert {d}/ca.pem -cert {d}/agent.pem -key {d}/agent-key.pem");
    let target = if addr.ip().is_unspecified() {
        format!("127.0.0.1:{}", addr.port())
    } else {
        addr.to_string()
    };
    let mut s = String::new();
    let _ = writeln!(s, "strongroomd dev is serving on {addr} (mutual TLS)");
    let _ = writeln!(s, "  data, root key and certificates: {d}");
    let _ = writeln!(
        s,
        "  tenant '{DEMO_TENANT}': admin = {d}/admin.pem ({ADMIN_IDENTITY})"
    );
    let _ = writeln!(
        s,
        "                  agent = {d}/agent.pem ({AGENT_IDENTITY}, principal {agent_id})"
    );
    let _ = writeln!(
        s,
        "  platform operator = {d}/operator.pem ({OPERATOR_IDENTITY})"
    );
    let _ = writeln!(s);
    let _ = writeln!(s, "# 1. store a credential (as the admin)");
    let _ = writeln!(
        s,
        "{admin} -d '{{\"environment\":\"dev\",\"name\":\"llm/openai\",\"service\":\"openai\",\"value\":{{\"apiKey\":{{\"apiKey\":\"sk-demo-not-a-real-key\"}}}}}}' {target} strongroom.v1.CredentialService/CreateCredential"
    );
    let _ = writeln!(
        s,
        "# 2. let the agent reveal credentials under llm/ in dev (as the admin)"
    );
    let _ = writeln!(
        s,
        "{admin} -d '{{\"subject\":{{\"principalId\":\"{agent_id}\"}},\"selector\":\"llm/*\",\"environments\":[\"dev\"],\"capabilities\":[\"CAPABILITY_REVEAL\"],\"reason\":\"dev demo\"}}' {target} strongroom.v1.PolicyService/CreateGrant"
    );
    let _ = writeln!(s, "# 3. reveal it (as the agent)");
    let _ = writeln!(
        s,
        "{agent} -d '{{\"credential\":{{\"path\":{{\"environment\":\"dev\",\"name\":\"llm/openai\"}}}},\"purpose\":\"try strongroom\"}}' {target} strongroom.v1.CredentialService/RevealCredential"
    );
    let _ = writeln!(s, "# 4. see who did what (as the admin)");
    let _ = writeln!(
        s,
        "{admin} -d '{{}}' {target} strongroom.v1.AuditService/QueryEvents"
    );
    s
}
