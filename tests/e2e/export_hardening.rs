//! What an import trusts of an export file, and who sees an export: a file
//! re-sealed by whoever knows its passphrase cannot widen the tenant's
//! identity namespaces nor drop audit events, unusable key-derivation costs
//! are refused before any work, every export lands in the tenant's own
//! chain (an operator's too), and a shredded tenant is not exported.

use serde_json::Value;
use sqlx::Connection;
use strongroom_e2e::{Backend, Options, TestServer, admin_url, expect_code, expect_invalid};
use strongroom_proto::v1 as pb;
use tonic::Code;

const PASSPHRASE: &str = "export-hardening-passphrase-Wombat-19";

async fn server(backend: Backend) -> TestServer {
    let mut options = Options::new(backend);
    options
        .env
        .push(("STRONGROOM_EXPORT_KDF_MEMORY_KIB".into(), "1024".into()));
    options
        .env
        .push(("STRONGROOM_EXPORT_KDF_PASSES".into(), "1".into()));
    TestServer::start_with(options).await
}

async fn export(
    client: &strongroom_client::Client,
    tenant_id: &str,
) -> Result<Vec<u8>, tonic::Status> {
    let mut stream = client
        .admin()
        .export_tenant(pb::ExportTenantRequest {
            passphrase: PASSPHRASE.into(),
            tenant_id: tenant_id.into(),
        })
        .await?
        .into_inner();
    let mut file = Vec::new();
    while let Some(m) = stream.message().await? {
        if let Some(pb::export_tenant_response::Part::Chunk(c)) = m.part {
            file.extend_from_slice(&c);
        }
    }
    Ok(file)
}

async fn import(
    client: &strongroom_client::Client,
    file: &[u8],
) -> Result<pb::ImportTenantResponse, tonic::Status> {
    let mut messages = vec![pb::ImportTenantRequest {
        part: Some(pb::import_tenant_request::Part::Header(
            pb::ImportTenantHeader {
                passphrase: PASSPHRASE.into(),
                ..Default::default()
            },
        )),
    }];
    for piece in file.chunks(200 * 1024) {
        messages.push(pb::ImportTenantRequest {
            part: Some(pb::import_tenant_request::Part::Chunk(piece.to_vec())),
        });
    }
    client
        .admin()
        .import_tenant(tokio_stream::iter(messages))
        .await
        .map(tonic::Response::into_inner)
}

/// What an exporter can do: open the file with its passphrase, change the
/// payload's lines with `edit`, and seal it again with the same header.
fn resealed(file: &[u8], edit: impl FnOnce(&mut Vec<Value>)) -> Vec<u8> {
    let passphrase = secrecy::SecretString::from(PASSPHRASE.to_owned());
    let opened = strongroom_crypto::open_sealed_file(&passphrase, file).expect("open");
    let mut lines: Vec<Value> = opened
        .payload
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).expect("a payload line"))
        .collect();
    edit(&mut lines);
    let kdf = &opened.header.kdf;
    let params = strongroom_crypto::KdfParams {
        salt: hex::decode(&kdf.salt).expect("salt"),
        m_cost_kib: kdf.m_cost_kib,
        t_cost: kdf.t_cost,
        p_cost: kdf.p_cost,
        version: kdf.version,
    };
    let mut sealer =
        strongroom_crypto::ExportSealer::new(&passphrase, &params, opened.header.info.clone())
            .expect("sealer");
    for line in &lines {
        let mut bytes = serde_json::to_vec(line).expect("line");
        bytes.push(b'\n');
        sealer.write(&bytes).expect("write");
    }
    sealer.finish().expect("finish")
}

/// The rows of table `name` in the payload lines, as (position of its
/// table record, rows).
fn table_rows<'a>(lines: &'a mut [Value], name: &str) -> (usize, &'a mut [Value]) {
    let at = lines
        .iter()
        .position(|l| l["record"] == "table" && l["name"] == name)
        .unwrap_or_else(|| panic!("table {name}"));
    let n = lines[at]["rows"].as_u64().expect("rows") as usize;
    (at, &mut lines[at + 1..at + 1 + n])
}

/// `file` with its plaintext header rewritten by `edit` (nothing else:
/// the chunks no longer authenticate, but the header is read first).
fn with_header(file: &[u8], edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let magic = strongroom_crypto::EXPORT_MAGIC.len();
    let len = u32::from_be_bytes(file[magic + 1..magic + 5].try_into().expect("len")) as usize;
    let start = magic + 5;
    let mut header: Value = serde_json::from_slice(&file[start..start + len]).expect("header");
    edit(&mut header);
    let header = serde_json::to_vec(&header).expect("header");
    let mut out = file[..magic + 1].to_vec();
    out.extend_from_slice(&(header.len() as u32).to_be_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&file[start + len..]);
    out
}

async fn tenant_count(server: &TestServer) -> usize {
    server
        .operator()
        .await
        .admin()
        .list_tenants(pb::ListTenantsRequest::default())
        .await
        .expect("list tenants")
        .into_inner()
        .tenants
        .len()
}

async fn tenant_events(
    client: &strongroom_client::Client,
    action: pb::AuditAction,
) -> Vec<pb::AuditEvent> {
    client
        .audit()
        .query_events(pb::QueryEventsRequest {
            actions: vec![action as i32],
            page_size: 100,
            ..Default::default()
        })
        .await
        .expect("query events")
        .into_inner()
        .events
}

async fn platform_events(operator: &strongroom_client::Client, action: pb::AuditAction) -> usize {
    operator
        .audit()
        .query_platform_events(pb::QueryPlatformEventsRequest::default())
        .await
        .expect("query platform events")
        .into_inner()
        .events
        .into_iter()
        .filter(|e| e.action == action as i32)
        .count()
}

#[tokio::test]
async fn an_import_trusts_nothing_the_exporter_could_change() {
    let source = server(Backend::Sqlite).await;
    let admin = source.tenant("acme").await;
    let source_operator = source.operator().await;
    let file = export(&admin.client, "").await.expect("admin export");

    // An operator's export is in the tenant's own chain too, and in the
    // platform chain; the admin's own only in the tenant's.
    assert_eq!(
        tenant_events(&admin.client, pb::AuditAction::TenantExport)
            .await
            .len(),
        1
    );
    assert_eq!(
        platform_events(&source_operator, pb::AuditAction::TenantExport).await,
        0
    );
    export(&source_operator, &admin.tenant_id)
        .await
        .expect("operator export");
    let seen = tenant_events(&admin.client, pb::AuditAction::TenantExport).await;
    assert_eq!(
        seen.len(),
        2,
        "the tenant sees the operator's export: {seen:?}"
    );
    assert_eq!(
        platform_events(&source_operator, pb::AuditAction::TenantExport).await,
        1
    );

    let target = server(Backend::Postgres).await;
    let operator = target.operator().await;

    // A namespace the file claims that no operator would assign: too
    // broad for identity.min_namespace_depth, or covering the platform
    // operator's own identity.
    for pattern in ["spiffe://cluster.local/", "spiffe://e2e.test/"] {
        let widened = resealed(&file, |lines| {
            let (at, rows) = table_rows(lines, "identity_namespaces");
            let mut row = rows[0].clone();
            row[1] = Value::String(pattern.into());
            row[3] = Value::from(0);
            lines.insert(at + 1, row);
            let n = lines[at]["rows"].as_u64().expect("rows");
            lines[at]["rows"] = Value::from(n + 1);
        });
        expect_invalid(
            import(&operator, &widened).await,
            "identity_namespaces",
            &format!("a file claiming {pattern}*"),
        );
    }
    assert_eq!(
        tenant_count(&target).await,
        0,
        "a refused import wrote a tenant"
    );

    // An audit event dropped, or edited, by the exporter.
    for what in ["dropped", "edited"] {
        let rewritten = resealed(&file, |lines| {
            let (at, rows) = table_rows(lines, "audit_events");
            assert!(!rows.is_empty(), "no events");
            if what == "dropped" {
                lines.remove(at + 1);
                let n = lines[at]["rows"].as_u64().expect("rows");
                lines[at]["rows"] = Value::from(n - 1);
            } else {
                rows[0][4] = Value::String("someone-else".into());
            }
        });
        let status = expect_code(
            import(&operator, &rewritten).await,
            Code::InvalidArgument,
            what,
        );
        assert!(
            status.message().contains("audit chain does not verify"),
            "{what}: {status:?}"
        );
    }
    assert_eq!(
        tenant_count(&target).await,
        0,
        "a refused import wrote a tenant"
    );

    // Key-derivation costs from the unauthenticated header, refused before
    // any derivation, naming the field.
    type Edit = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "header.kdf.t_cost",
            Box::new(|h| h["kdf"]["t_cost"] = Value::from(u32::MAX)),
        ),
        (
            "header.kdf.p_cost",
            Box::new(|h| h["kdf"]["p_cost"] = Value::from(1u32 << 24)),
        ),
        (
            "header.kdf.m_cost_kib",
            Box::new(|h| h["kdf"]["m_cost_kib"] = Value::from(4u32 * 1024 * 1024)),
        ),
        (
            "header.kdf.salt",
            Box::new(|h| h["kdf"]["salt"] = Value::String("00".repeat(8))),
        ),
        (
            "header.kdf.version",
            Box::new(|h| h["kdf"]["version"] = Value::from(16)),
        ),
    ];
    for (field, edit) in cases {
        let started = std::time::Instant::now();
        expect_invalid(
            import(&operator, &with_header(&file, edit)).await,
            field,
            field,
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{field}: derived first"
        );
    }

    // The file as exported imports; its namespaces wait for an operator's
    // review, and the import event records the file's digest.
    import(&operator, &file).await.expect("import");
    let db = target.database.as_deref().expect("postgres");
    let url = format!(
        "{}/{db}",
        admin_url().rsplit_once('/').expect("database url").0
    );
    let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
    let id: uuid::Uuid = admin.tenant_id.parse().expect("tenant id");
    let derived: Vec<(bool,)> =
        sqlx::query_as("SELECT derived FROM identity_namespaces WHERE tenant_id = $1")
            .bind(id)
            .fetch_all(&mut conn)
            .await
            .expect("namespaces");
    assert!(!derived.is_empty());
    assert!(
        derived.iter().all(|(d,)| *d),
        "imported namespaces: {derived:?}"
    );
    let (detail,): (String,) = sqlx::query_as(
        "SELECT detail FROM audit_events WHERE tenant_id = $1 AND action = 'tenant.import'",
    )
    .bind(id)
    .fetch_one(&mut conn)
    .await
    .expect("the import event");
    let digest = hex::encode(strongroom_crypto::export_digest(&file));
    assert!(detail.contains(&digest), "{detail}");

    // A shredded tenant is not exported, by its admin or an operator.
    source_operator
        .admin()
        .shred_tenant(pb::ShredTenantRequest {
            tenant_id: admin.tenant_id.clone(),
            confirm_name: "acme".into(),
            reason: "offboarded".into(),
            purge: false,
        })
        .await
        .expect("shred");
    let status = expect_code(
        export(&source_operator, &admin.tenant_id).await,
        Code::FailedPrecondition,
        "an operator exports a shredded tenant",
    );
    assert_eq!(status.message(), "the tenant was shredded");
    let status = export(&admin.client, "")
        .await
        .expect_err("the admin exports a shredded tenant");
    assert!(status.message().contains("shredded"), "{status:?}");
}
