//! `strongroom-bench transfer`: export and import of a large tenant.
//!
//! Starts a source strongroomd, fills tenant `bench` through the API with
//! `credentials` API keys of `versions` versions each (one create and
//! `versions - 1` rotations), times ExportTenant (to the last byte, at the
//! client), starts a target strongroomd (the other backend by default),
//! times ImportTenant (from the first byte sent to the answer), and checks
//! a sample of values reveals identically on the target.

use std::time::Instant;

use strongroom_e2e::{Backend, Options, TestServer, api_key, path, revealed_value};
use strongroom_proto::v1 as pb;

/// What the transfer mode measures.
#[derive(clap::Args)]
pub struct TransferArgs {
    /// Credentials in the exported tenant.
    #[arg(long, default_value_t = 10_000)]
    credentials: usize,
    /// Versions of each credential.
    #[arg(long, default_value_t = 5)]
    versions: usize,
    /// Export from Postgres (and import into SQLite) instead of the other
    /// way round.
    #[arg(long)]
    from_postgres: bool,
    /// Argon2id memory of the export key, KiB (the server's default).
    #[arg(long, default_value_t = 65_536)]
    kdf_memory_kib: u32,
}

const PASSPHRASE: &str = "bench-transfer-passphrase-0001";

async fn server(backend: Backend, args: &TransferArgs) -> TestServer {
    let mut options = Options::new(backend);
    options.log_level = "warn,strongroomd::app=info".into();
    for (k, v) in [
        (
            "STRONGROOM_EXPORT_KDF_MEMORY_KIB",
            args.kdf_memory_kib.to_string(),
        ),
        // A large import is one call: room for it.
        ("STRONGROOM_REQUEST_TIMEOUT_MS", "3600000".to_owned()),
    ] {
        options.env.push((k.into(), v));
    }
    TestServer::start_with(options).await
}

/// Runs the transfer mode.
pub async fn run(args: &TransferArgs) -> Result<(), String> {
    let (from, to) = if args.from_postgres {
        (Backend::Postgres, Backend::Sqlite)
    } else {
        (Backend::Sqlite, Backend::Postgres)
    };
    let source = server(from, args).await;
    let admin = source.tenant("bench").await;
    eprintln!(
        "transfer: writing {} credentials x {} versions",
        args.credentials, args.versions
    );
    let began = Instant::now();
    let workers = 32;
    let mut tasks = Vec::new();
    for w in 0..workers {
        let client = admin.client.clone();
        let (n, versions) = (args.credentials, args.versions);
        tasks.push(tokio::spawn(async move {
            let mut creds = client.credentials();
            for i in (w..n).step_by(workers) {
                let name = format!("bench/c{i}");
                creds
                    .create_credential(pb::CreateCredentialRequest {
                        environment: "dev".into(),
                        name: name.clone(),
                        service: "bench".into(),
                        value: api_key(&format!("sk-bench-{i}-v1")),
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| format!("create: {e}"))?;
                for v in 2..=versions {
                    creds
                        .rotate_credential(pb::RotateCredentialRequest {
                            credential: path("dev", &name),
                            new_value: Some(pb::rotate_credential_request::NewValue::Value(
                                api_key(&format!("sk-bench-{i}-v{v}")).unwrap_or_default(),
                            )),
                            reason: "bench".into(),
                            ..Default::default()
                        })
                        .await
                        .map_err(|e| format!("rotate: {e}"))?;
                }
            }
            Ok::<(), String>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    eprintln!(
        "transfer: written in {:.1} s",
        began.elapsed().as_secs_f64()
    );

    let began = Instant::now();
    let mut stream = admin
        .client
        .admin()
        .export_tenant(pb::ExportTenantRequest {
            passphrase: PASSPHRASE.into(),
            tenant_id: String::new(),
        })
        .await
        .map_err(|e| format!("export: {e}"))?
        .into_inner();
    let mut file = Vec::new();
    let mut summary = None;
    while let Some(m) = stream.message().await.map_err(|e| format!("export: {e}"))? {
        match m.part {
            Some(pb::export_tenant_response::Part::Chunk(c)) => file.extend_from_slice(&c),
            Some(pb::export_tenant_response::Part::Summary(s)) => summary = Some(s),
            _ => {}
        }
    }
    let exported = began.elapsed();
    let counts = summary.and_then(|s| s.counts).unwrap_or_default();

    let target = server(to, args).await;
    let operator = target.operator().await;
    let mut messages = vec![pb::ImportTenantRequest {
        part: Some(pb::import_tenant_request::Part::Header(
            pb::ImportTenantHeader {
                passphrase: PASSPHRASE.into(),
                ..Default::default()
            },
        )),
    }];
    for piece in file.chunks(256 * 1024) {
        messages.push(pb::ImportTenantRequest {
            part: Some(pb::import_tenant_request::Part::Chunk(piece.to_vec())),
        });
    }
    let began = Instant::now();
    operator
        .admin()
        .import_tenant(tokio_stream::iter(messages))
        .await
        .map_err(|e| format!("import: {e}"))?;
    let imported = began.elapsed();

    // A sample reveals identically on the target.
    let restored = target.client(&admin.identity).await;
    for i in (0..args.credentials).step_by((args.credentials / 20).max(1)) {
        let r = restored
            .credentials()
            .reveal_credential(pb::RevealCredentialRequest {
                credential: path("dev", &format!("bench/c{i}")),
                ..Default::default()
            })
            .await
            .map_err(|e| format!("reveal on the target: {e}"))?
            .into_inner();
        let expected = api_key(&format!("sk-bench-{i}-v{}", args.versions));
        if Some(revealed_value(&r)) != expected.as_ref() {
            return Err(format!("bench/c{i} reveals differently on the target"));
        }
    }

    let label = |b: Backend| match b {
        Backend::Postgres => "postgres",
        Backend::Sqlite => "sqlite",
    };
    println!(
        "| export ({}) | {} credentials, {} versions, {} audit events | {:.2} MiB | {:.2} s |",
        label(from),
        counts.credentials,
        counts.versions,
        counts.audit_events,
        file.len() as f64 / (1024.0 * 1024.0),
        exported.as_secs_f64()
    );
    println!(
        "| import ({}) | the same file | {:.2} MiB | {:.2} s |",
        label(to),
        file.len() as f64 / (1024.0 * 1024.0),
        imported.as_secs_f64()
    );
    target.stop().await;
    source.stop().await;
    Ok(())
}
