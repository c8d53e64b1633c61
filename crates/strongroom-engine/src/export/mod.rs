//! Encrypted export and import of a whole tenant (`docs/export-format.md`).
//!
//! Export: the tenant's rows are read at one moment (the store holds the
//! chain head), every kept value and the notifier's signing secret are
//! opened with the tenant's KEKs, and the lot is written as JSON lines into
//! the sealed container of `strongroom-crypto` (AES-256-GCM chunks under a
//! key derived with Argon2id from the caller's passphrase).
//!
//! Import: the whole file is opened and authenticated before anything is
//! parsed or written; then the tenant gets a new KEK on this server, every
//! value is sealed under it, and the rows are written in one transaction
//! with `tenant.import` linked after the imported chain head (so the
//! imported chain still verifies end to end) and recorded in the platform
//! chain. Any failure writes nothing.
//!
//! Promises: the passphrase is held as a `SecretString`, used by Argon2id
//! only, never logged, audited or returned; plaintext values live in
//! zeroizing buffers while the file is built or read; errors name the
//! problem (wrong passphrase, which chunk failed, which record is malformed)
//! and never a value.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use strongroom_core::audit::{Action, AuditDetail, AuditDraft, Outcome};
use strongroom_core::export::{Cell, ColumnKind, ExportScope, TableRows, TenantImport, TenantRows};
use strongroom_core::ids::TenantId;
use strongroom_core::names::TenantName;
use strongroom_core::policy::Reason;
use strongroom_core::principal::IdentityPattern;
use strongroom_core::scope::Authenticated;
use strongroom_core::tenant::{Tenant, TenantStatus, WrappedKekRecord};
use strongroom_core::value::CredentialValue;
use strongroom_core::{Error, Precondition, Result};
use strongroom_crypto::{Aad, CryptoError, Envelope, ExportSealer, KdfParams, Kek};
use zeroize::Zeroizing;

use crate::keyring::crypto_error;
use crate::{CallContext, Engine};

mod import;

/// The payload format inside the sealed container.
pub const PAYLOAD_FORMAT: u32 = 1;
/// The shortest passphrase accepted.
pub const MIN_PASSPHRASE_CHARS: usize = 16;
/// How many values are sealed or opened between two progress reports.
const PROGRESS_EVERY: u64 = 1000;

/// How much an export or import holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DataCounts {
    /// Credentials.
    pub credentials: u64,
    /// Credential versions with a value.
    pub versions: u64,
    /// Principals.
    pub principals: u64,
    /// Grants.
    pub grants: u64,
    /// Audit events.
    pub audit_events: u64,
}

impl DataCounts {
    fn of(rows: &TenantRows) -> Self {
        let n = |t: &str| rows.table(t).map_or(0, |t| t.rows.len() as u64);
        let versions = rows.table("credential_versions").map_or(0, |t| {
            let at = t.column("envelope").or_else(|| t.column("value"));
            t.rows
                .iter()
                .filter(|r| at.is_some_and(|i| r[i] != Cell::Null))
                .count() as u64
        });
        Self {
            credentials: n("credentials"),
            versions,
            principals: n("principals"),
            grants: n("grants"),
            audit_events: n("audit_events"),
        }
    }
}

/// Where a long export or import is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading the tenant's rows.
    Reading,
    /// Deriving the file key (Argon2id).
    DerivingKey,
    /// Opening the values for the file (export) or sealing them under the
    /// new KEK (import).
    Values,
    /// Authenticating the file (import).
    Verifying,
    /// Writing the tenant (import, one transaction).
    Writing,
}

impl Phase {
    /// The phase's name, as progress messages carry it.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Reading => "reading",
            Self::DerivingKey => "deriving_key",
            Self::Values => "values",
            Self::Verifying => "verifying",
            Self::Writing => "writing",
        }
    }
}

/// A progress report: `done` of `total` items of `phase` (0 of 0 when the
/// phase has no count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// The phase.
    pub phase: Phase,
    /// Items done.
    pub done: u64,
    /// Items in all.
    pub total: u64,
}

/// Where progress reports go.
pub type ProgressSink = Arc<dyn Fn(Progress) + Send + Sync>;

/// A finished export.
pub struct ExportFile {
    /// The sealed file.
    pub bytes: Vec<u8>,
    /// What it holds.
    pub counts: DataCounts,
}

impl std::fmt::Debug for ExportFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportFile")
            .field("bytes", &self.bytes.len())
            .field("counts", &self.counts)
            .finish()
    }
}

/// The Argon2id costs of new export files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportKdf {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes.
    pub passes: u32,
}

impl Default for ExportKdf {
    fn default() -> Self {
        Self {
            memory_kib: 64 * 1024,
            passes: 3,
        }
    }
}

fn check_passphrase(passphrase: &SecretString, field: &'static str) -> Result<()> {
    if passphrase.expose_secret().chars().count() < MIN_PASSPHRASE_CHARS {
        return Err(Error::invalid(
            field,
            format!("must be at least {MIN_PASSPHRASE_CHARS} characters"),
        ));
    }
    Ok(())
}

/// What a sealed value of credential `credential` is bound to.
fn value_aad<'a>(
    tenant: TenantId,
    environment: &'a str,
    credential: uuid::Uuid,
    version: u32,
) -> Aad<'a> {
    Aad {
        tenant: tenant.as_uuid(),
        environment,
        credential,
        version,
    }
}

/// Each credential's environment, by id.
fn environments(rows: &TenantRows) -> Result<HashMap<uuid::Uuid, String>> {
    let t = rows
        .table("credentials")
        .ok_or_else(|| Error::internal("no credentials table"))?;
    let (id, env) = (column(t, "id")?, column(t, "environment")?);
    let mut out = HashMap::with_capacity(t.rows.len());
    for r in &t.rows {
        if let (Cell::Uuid(i), Cell::Text(e)) = (&r[id], &r[env]) {
            out.insert(*i, e.clone());
        }
    }
    Ok(out)
}

fn column(t: &TableRows, name: &str) -> Result<usize> {
    t.column(name)
        .ok_or_else(|| bad_file(format!("table {} lacks column {name}", t.table)))
}

/// A file that opened but does not hold what an export holds.
fn bad_file(what: impl std::fmt::Display) -> Error {
    Error::invalid(
        "chunk",
        format!("the export's contents are malformed: {what}"),
    )
}

/// The `u32` version in a cell.
fn version_of(cell: &Cell) -> Result<u32> {
    match cell {
        Cell::Int(v) => u32::try_from(*v).map_err(|_| bad_file("a version is out of range")),
        _ => Err(bad_file("a version is not an integer")),
    }
}

/// The notifier's sealed secret in a settings JSON text, if any.
fn sealed_notifier_secret(settings: &Value) -> Option<&str> {
    settings
        .get("notifier")
        .and_then(|n| n.get("sealed_secret"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

impl Engine {
    /// Exports a tenant as an encrypted file: the caller's own tenant (an
    /// admin confined to no environment), or `tenant` (a platform
    /// operator). Audited as `tenant.export` in the tenant's chain whoever
    /// exports (so a tenant sees an operator's export of its data), and in
    /// the platform chain too for an operator, once the file is sealed.
    /// A shredded tenant is refused ([`Precondition::TenantShredded`]),
    /// checked when its rows are read and again when the export is
    /// recorded.
    pub async fn export_tenant(
        &self,
        caller: &Authenticated,
        ctx: &CallContext,
        tenant: Option<TenantId>,
        passphrase: SecretString,
        progress: ProgressSink,
    ) -> Result<ExportFile> {
        if caller.is_platform_operator() {
            let scope = caller.platform_scope()?;
            let tenant = tenant.ok_or_else(|| {
                Error::invalid("tenant", "a platform operator names the tenant to export")
            })?;
            check_passphrase(&passphrase, "passphrase")?;
            let _transfer = self.transfers.begin(Some(tenant))?;
            let export = ExportScope::Platform(&scope, tenant);
            let rows = self.store.export_rows(export).await?;
            refuse_shredded(&rows)?;
            let name = tenant_name(&rows)?;
            let file = self
                .seal_export(tenant, rows, passphrase, &progress)
                .await?;
            let mut tenant_event = self.platform_draft(&scope, ctx, Action::TenantExport);
            tenant_event.detail = Some(AuditDetail::Tenant { name: name.clone() });
            let mut platform_event = self.platform_draft(&scope, ctx, Action::TenantExport);
            platform_event.detail = Some(AuditDetail::Tenant { name });
            self.record_export(export, tenant_event, Some(platform_event))
                .await?;
            return Ok(file);
        }
        let scope = caller.tenant_scope()?;
        self.require_admin(&scope, ctx, Action::TenantExport)
            .await?;
        if tenant.is_some_and(|t| t != scope.tenant_id()) {
            return Err(Error::invalid(
                "tenant",
                "a tenant admin exports only their own tenant; leave it empty",
            ));
        }
        check_passphrase(&passphrase, "passphrase")?;
        let _transfer = self.transfers.begin(Some(scope.tenant_id()))?;
        progress(Progress {
            phase: Phase::Reading,
            done: 0,
            total: 0,
        });
        let rows = self.store.export_rows(ExportScope::Tenant(&scope)).await?;
        refuse_shredded(&rows)?;
        let name = tenant_name(&rows)?;
        let file = self
            .seal_export(scope.tenant_id(), rows, passphrase, &progress)
            .await?;
        let mut draft = self.draft(
            &scope,
            ctx,
            Action::TenantExport,
            Outcome::Allowed,
            Reason::AllowedByRole,
        );
        draft.detail = Some(AuditDetail::Tenant { name });
        self.record_export(ExportScope::Tenant(&scope), draft, None)
            .await?;
        Ok(file)
    }

    /// Writes an export's events durably; refused if the tenant was
    /// shredded while its file was sealed (the file is then dropped).
    async fn record_export(
        &self,
        scope: ExportScope<'_>,
        tenant_event: AuditDraft,
        platform_event: Option<AuditDraft>,
    ) -> Result<()> {
        let recorded = self
            .durable(
                self.store
                    .record_export(scope, tenant_event, platform_event),
            )
            .await?;
        if recorded {
            Ok(())
        } else {
            Err(Error::FailedPrecondition(Precondition::TenantShredded))
        }
    }

    /// Opens the values of `rows` and writes the sealed file.
    async fn seal_export(
        &self,
        tenant: TenantId,
        mut rows: TenantRows,
        passphrase: SecretString,
        progress: &ProgressSink,
    ) -> Result<ExportFile> {
        let counts = DataCounts::of(&rows);
        let keks = std::mem::take(&mut rows.keks);
        let mut opened: HashMap<u32, Arc<Kek>> = HashMap::new();
        // Every KEK version the values need, unwrapped once.
        for record in &keks {
            let records = keks.clone();
            let kek = self
                .keyring
                .kek(tenant, record.version, || async move { Ok(records) })
                .await?;
            opened.insert(record.version, kek);
        }
        let environments = environments(&rows)?;
        let names = tenant_name(&rows)?;

        // The tenant row: its KEK version stays behind; the notifier's
        // secret is opened and travels as its own record.
        let mut notifier_secret: Option<Zeroizing<Vec<u8>>> = None;
        {
            let t = rows
                .table_mut("tenants")
                .ok_or_else(|| Error::internal("no tenants table"))?;
            let settings_at = column(t, "settings")?;
            if let Cell::Text(text) = &t.rows[0][settings_at] {
                let mut settings: Value = serde_json::from_str(text)
                    .map_err(|_| Error::internal("malformed tenant settings"))?;
                if let Some(sealed) = sealed_notifier_secret(&settings) {
                    let bytes = hex::decode(sealed)
                        .map_err(|_| Error::internal("malformed sealed notifier secret"))?;
                    let envelope = Envelope::from_bytes(&bytes).map_err(crypto_error)?;
                    let kek = opened
                        .get(&envelope.kek_version())
                        .ok_or_else(|| Error::internal("tenant key version not found"))?;
                    notifier_secret = Some(
                        kek.open(&crate::notify::secret_aad(tenant), &envelope)
                            .map_err(crypto_error)?,
                    );
                    settings["notifier"]["sealed_secret"] = Value::String(String::new());
                }
                t.rows[0][settings_at] = Cell::Text(settings.to_string());
            }
            drop_column(t, "current_kek_version")?;
        }

        let kdf = self.limits.export_kdf;
        let info = json!({
            "tenant": { "id": tenant.to_string(), "name": names },
            "exported_at": self.now().as_micros(),
            "payload_format": PAYLOAD_FORMAT,
        });
        let exported_at = self.now();
        let progress = Arc::clone(progress);
        let sealed = tokio::task::spawn_blocking(move || -> Result<Vec<u8>> {
            progress(Progress {
                phase: Phase::DerivingKey,
                done: 0,
                total: 0,
            });
            let params =
                KdfParams::generate_with(kdf.memory_kib, kdf.passes).map_err(crypto_error)?;
            let mut sealer = ExportSealer::new(&passphrase, &params, info).map_err(crypto_error)?;
            let mut line = Zeroizing::new(Vec::with_capacity(4096));
            write_line(
                &mut sealer,
                &mut line,
                &json!({
                    "record": "export",
                    "payload_format": PAYLOAD_FORMAT,
                    "tenant": tenant.to_string(),
                    "exported_at": exported_at.as_micros(),
                }),
            )?;
            let total = counts.versions;
            let mut done = 0u64;
            for table in &rows.tables {
                let values = table.table == "credential_versions";
                let mut columns: Vec<Value> = Vec::with_capacity(table.columns.len());
                let (cred_at, version_at, envelope_at) = if values {
                    (
                        Some(column(table, "credential_id")?),
                        Some(column(table, "version")?),
                        Some(column(table, "envelope")?),
                    )
                } else {
                    (None, None, None)
                };
                for (i, (name, kind)) in table.columns.iter().enumerate() {
                    if values && Some(i) == envelope_at {
                        columns.push(json!(["value", ColumnKind::Bytes.as_str()]));
                    } else if values && name == "kek_version" {
                        continue;
                    } else {
                        columns.push(json!([name, kind.as_str()]));
                    }
                }
                write_line(
                    &mut sealer,
                    &mut line,
                    &json!({
                        "record": "table",
                        "name": table.table,
                        "columns": columns,
                        "rows": table.rows.len(),
                    }),
                )?;
                for row in &table.rows {
                    let mut cells: Vec<Value> = Vec::with_capacity(row.len());
                    for (i, cell) in row.iter().enumerate() {
                        if values && Some(i) == envelope_at {
                            match cell {
                                Cell::Bytes(sealed) => {
                                    let (Some(c), Some(v)) = (cred_at, version_at) else {
                                        return Err(Error::internal("value columns"));
                                    };
                                    let Cell::Uuid(credential) = row[c] else {
                                        return Err(Error::internal("credential id"));
                                    };
                                    let version = version_of(&row[v])?;
                                    let environment =
                                        environments.get(&credential).ok_or_else(|| {
                                            Error::internal("version of no credential")
                                        })?;
                                    let envelope =
                                        Envelope::from_bytes(sealed).map_err(crypto_error)?;
                                    let kek =
                                        opened.get(&envelope.kek_version()).ok_or_else(|| {
                                            Error::internal("tenant key version not found")
                                        })?;
                                    let plain = kek
                                        .open(
                                            &value_aad(tenant, environment, credential, version),
                                            &envelope,
                                        )
                                        .map_err(crypto_error)?;
                                    cells.push(Value::String(B64.encode(plain.as_slice())));
                                    done += 1;
                                    if done.is_multiple_of(PROGRESS_EVERY) {
                                        progress(Progress {
                                            phase: Phase::Values,
                                            done,
                                            total,
                                        });
                                    }
                                }
                                _ => cells.push(Value::Null),
                            }
                        } else if values && table.columns[i].0 == "kek_version" {
                            continue;
                        } else {
                            cells.push(cell_json(cell));
                        }
                    }
                    // The line holds plaintext values: written from a
                    // zeroizing buffer, and the JSON tree dropped at once.
                    let row = Value::Array(cells);
                    write_line(&mut sealer, &mut line, &row)?;
                    zeroize_value(row);
                }
            }
            if let Some(secret) = &notifier_secret {
                let record = json!({
                    "record": "notifier_secret",
                    "value": B64.encode(secret.as_slice()),
                });
                write_line(&mut sealer, &mut line, &record)?;
                zeroize_value(record);
            }
            write_line(
                &mut sealer,
                &mut line,
                &json!({ "record": "end", "tables": rows.tables.len() }),
            )?;
            progress(Progress {
                phase: Phase::Values,
                done,
                total,
            });
            sealer.finish().map_err(crypto_error)
        })
        .await
        .map_err(|_| Error::internal("the export task failed"))??;
        Ok(ExportFile {
            bytes: sealed,
            counts,
        })
    }
}

/// Exports and imports one server runs at once (each holds a whole
/// tenant in memory and runs Argon2id); more are refused
/// (RESOURCE_EXHAUSTED), as is a second export of a tenant being exported.
pub const MAX_TRANSFERS: usize = 2;

/// The exports and imports running on this server.
#[derive(Debug)]
pub(crate) struct Transfers {
    slots: Arc<tokio::sync::Semaphore>,
    exporting: Arc<std::sync::Mutex<std::collections::HashSet<TenantId>>>,
}

impl Default for Transfers {
    fn default() -> Self {
        Self {
            slots: Arc::new(tokio::sync::Semaphore::new(MAX_TRANSFERS)),
            exporting: Arc::default(),
        }
    }
}

/// A running export or import; its slot (and its tenant's export) is
/// released when dropped.
pub(crate) struct TransferPermit {
    _slot: tokio::sync::OwnedSemaphorePermit,
    exporting: Option<(
        TenantId,
        Arc<std::sync::Mutex<std::collections::HashSet<TenantId>>>,
    )>,
}

impl Drop for TransferPermit {
    fn drop(&mut self) {
        if let Some((tenant, exporting)) = self.exporting.take() {
            exporting
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&tenant);
        }
    }
}

impl Transfers {
    /// A slot for an export of `tenant`, or an import (`None`).
    pub(crate) fn begin(&self, tenant: Option<TenantId>) -> Result<TransferPermit> {
        let slot = Arc::clone(&self.slots).try_acquire_owned().map_err(|_| {
            Error::ResourceExhausted(
                format!("this server already runs {MAX_TRANSFERS} exports or imports; retry later")
                    .into(),
            )
        })?;
        let exporting = match tenant {
            Some(tenant) => {
                let fresh = self
                    .exporting
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(tenant);
                if !fresh {
                    return Err(Error::ResourceExhausted(
                        "this tenant is being exported already; retry when it is done".into(),
                    ));
                }
                Some((tenant, Arc::clone(&self.exporting)))
            }
            None => None,
        };
        Ok(TransferPermit {
            _slot: slot,
            exporting,
        })
    }
}

/// Argon2id memory an import accepts at most, in KiB, unless this server
/// writes its own files with more (`limits.export_kdf_memory_kib`).
pub const IMPORT_KDF_MAX_MEMORY_KIB: u32 = 1024 * 1024;
/// Argon2id passes an import accepts (as `limits.export_kdf_passes`).
pub const IMPORT_KDF_PASSES: std::ops::RangeInclusive<u32> = 1..=10;
/// Argon2id parallelism an import accepts (files are written with 1).
pub const IMPORT_KDF_PARALLELISM: std::ops::RangeInclusive<u32> = 1..=4;
/// Salt lengths an import accepts, in bytes (files are written with 16).
pub const IMPORT_KDF_SALT_BYTES: std::ops::RangeInclusive<usize> = 16..=64;

/// Refuses the rows of a shredded tenant: its values are gone, and an
/// export of what is left is not a restorable tenant.
fn refuse_shredded(rows: &TenantRows) -> Result<()> {
    let t = rows
        .table("tenants")
        .ok_or_else(|| Error::internal("no tenants table"))?;
    let at = column(t, "status")?;
    if t.rows.first().map(|r| &r[at])
        == Some(&Cell::Text(TenantStatus::Shredded.as_str().to_owned()))
    {
        return Err(Error::FailedPrecondition(Precondition::TenantShredded));
    }
    Ok(())
}

/// The tenant's name in its row.
fn tenant_name(rows: &TenantRows) -> Result<String> {
    let t = rows
        .table("tenants")
        .ok_or_else(|| bad_file("no tenants table"))?;
    let at = column(t, "name")?;
    match t.rows.first().map(|r| &r[at]) {
        Some(Cell::Text(name)) => Ok(name.clone()),
        _ => Err(bad_file("the tenant has no name")),
    }
}

fn drop_column(t: &mut TableRows, name: &str) -> Result<()> {
    let at = column(t, name)?;
    t.columns.remove(at);
    for r in &mut t.rows {
        r.remove(at);
    }
    Ok(())
}

fn insert_column(
    t: &mut TableRows,
    at: usize,
    name: &str,
    kind: ColumnKind,
    value: impl Fn(&[Cell]) -> Cell,
) {
    t.columns.insert(at, (name.to_owned(), kind));
    for r in &mut t.rows {
        let v = value(r);
        r.insert(at, v);
    }
}

fn cell_json(cell: &Cell) -> Value {
    match cell {
        Cell::Null => Value::Null,
        Cell::Uuid(u) => Value::String(u.to_string()),
        Cell::Int(i) => Value::from(*i),
        Cell::Text(t) => Value::String(t.clone()),
        Cell::Bytes(b) => Value::String(B64.encode(b)),
    }
}

fn cell_of(value: &Value, kind: ColumnKind) -> Result<Cell> {
    let wrong = || bad_file(format!("a {} cell holds something else", kind.as_str()));
    Ok(match (kind, value) {
        (_, Value::Null) => Cell::Null,
        (ColumnKind::Uuid, Value::String(s)) => {
            Cell::Uuid(uuid::Uuid::parse_str(s).map_err(|_| wrong())?)
        }
        (ColumnKind::Int | ColumnKind::BigInt | ColumnKind::Bool, Value::Number(n)) => {
            Cell::Int(n.as_i64().ok_or_else(wrong)?)
        }
        (ColumnKind::Text, Value::String(s)) => Cell::Text(s.clone()),
        (ColumnKind::Bytes, Value::String(s)) => Cell::Bytes(B64.decode(s).map_err(|_| wrong())?),
        _ => return Err(wrong()),
    })
}

/// Writes `value` and a newline through `line` (zeroizing) into `sealer`.
fn write_line(
    sealer: &mut ExportSealer,
    line: &mut Zeroizing<Vec<u8>>,
    value: &Value,
) -> Result<()> {
    line.clear();
    serde_json::to_writer(&mut **line, value).map_err(|_| Error::internal("export encoding"))?;
    line.push(b'\n');
    sealer.write(line).map_err(crypto_error)
}

/// Overwrites the strings of a JSON tree that held plaintext.
fn zeroize_value(value: Value) {
    match value {
        Value::String(mut s) => zeroize::Zeroize::zeroize(&mut s),
        Value::Array(items) => items.into_iter().for_each(zeroize_value),
        Value::Object(map) => map.into_iter().for_each(|(_, v)| zeroize_value(v)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::import::check_import_kdf;
    use super::*;

    fn kdf() -> strongroom_crypto::ExportKdf {
        strongroom_crypto::ExportKdf {
            algorithm: "argon2id".into(),
            version: 0x13,
            m_cost_kib: 64 * 1024,
            t_cost: 3,
            p_cost: 1,
            salt: "00".repeat(16),
        }
    }

    fn refused_field(k: &strongroom_crypto::ExportKdf, ours: ExportKdf) -> Option<String> {
        match check_import_kdf(k, ours) {
            Ok(()) => None,
            Err(Error::InvalidArgument { field, .. }) => Some(field.to_string()),
            Err(other) => panic!("not INVALID_ARGUMENT: {other:?}"),
        }
    }

    #[test]
    fn transfers_are_bounded_globally_and_per_tenant() {
        let transfers = Transfers::default();
        let (a, b) = (TenantId::generate(), TenantId::generate());
        let first = transfers.begin(Some(a)).expect("a first export");
        assert!(matches!(
            transfers.begin(Some(a)),
            Err(Error::ResourceExhausted(_))
        ));
        let import = transfers.begin(None).expect("an import beside it");
        assert!(matches!(
            transfers.begin(Some(b)),
            Err(Error::ResourceExhausted(_))
        ));
        drop(first);
        let again = transfers
            .begin(Some(a))
            .expect("a's export once the first ended");
        drop((again, import));
        let _both = (
            transfers.begin(Some(a)).expect("a"),
            transfers.begin(Some(b)).expect("b"),
        );
    }

    #[test]
    fn import_kdf_costs_are_bounded_before_deriving() {
        let ours = ExportKdf::default();
        assert_eq!(refused_field(&kdf(), ours), None);
        type Change = fn(&mut strongroom_crypto::ExportKdf);
        let cases: Vec<(Change, &str)> = vec![
            (|k| k.algorithm = "scrypt".into(), "header.kdf.algorithm"),
            (|k| k.version = 0x10, "header.kdf.version"),
            (|k| k.m_cost_kib = 4 * 1024 * 1024, "header.kdf.m_cost_kib"),
            (|k| k.t_cost = 0, "header.kdf.t_cost"),
            (|k| k.t_cost = u32::MAX, "header.kdf.t_cost"),
            (|k| k.p_cost = 1 << 24, "header.kdf.p_cost"),
            (|k| k.p_cost = 0, "header.kdf.p_cost"),
            (|k| k.salt = "00".repeat(8), "header.kdf.salt"),
            (|k| k.salt = "00".repeat(65), "header.kdf.salt"),
            (|k| k.salt = "zz".repeat(16), "header.kdf.salt"),
        ];
        for (change, field) in cases {
            let mut k = kdf();
            change(&mut k);
            assert_eq!(refused_field(&k, ours).as_deref(), Some(field), "{k:?}");
        }
        // A server that writes with more memory reads its own files.
        let mut big = kdf();
        big.m_cost_kib = 2 * 1024 * 1024;
        let writer = ExportKdf {
            memory_kib: 2 * 1024 * 1024,
            passes: 3,
        };
        assert_eq!(refused_field(&big, writer), None);
    }
}
