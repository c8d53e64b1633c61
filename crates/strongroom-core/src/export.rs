//! A tenant's rows as an export carries them, and the storage port that
//! reads them all at once and writes them all in one transaction.
//!
//! The rows are the stored tables' own (ids, sequences and hashes kept), in
//! a backend-neutral form: each table names its columns and their kinds,
//! each row is a list of [`Cell`]s. Sealed values travel here still sealed
//! (the engine opens them for the export file and seals them again under
//! the importing server's new key).

use async_trait::async_trait;
use uuid::Uuid;

use crate::Result;
use crate::audit::AuditDraft;
use crate::ids::TenantId;
use crate::scope::{PlatformScope, TenantScope};
use crate::tenant::WrappedKekRecord;

/// How a column's values are stored (the same on every backend).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    /// A UUID.
    Uuid,
    /// A 32-bit integer.
    Int,
    /// A 64-bit integer (times in microseconds, sequences).
    BigInt,
    /// Text.
    Text,
    /// Bytes.
    Bytes,
    /// A boolean (carried as the integer 0 or 1).
    Bool,
}

impl ColumnKind {
    /// The kind's name in the export format.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Uuid => "uuid",
            Self::Int => "int",
            Self::BigInt => "bigint",
            Self::Text => "text",
            Self::Bytes => "bytes",
            Self::Bool => "bool",
        }
    }

    /// Parses [`ColumnKind::as_str`].
    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::Uuid,
            Self::Int,
            Self::BigInt,
            Self::Text,
            Self::Bytes,
            Self::Bool,
        ]
        .into_iter()
        .find(|k| k.as_str() == text)
    }
}

/// One value of a row.
#[derive(Clone, PartialEq, Eq)]
pub enum Cell {
    /// SQL NULL.
    Null,
    /// A UUID.
    Uuid(Uuid),
    /// An integer (either width).
    Int(i64),
    /// Text.
    Text(String),
    /// Bytes (a sealed envelope, a hash).
    Bytes(Vec<u8>),
}

impl std::fmt::Debug for Cell {
    // Bytes may be a sealed value; text is never a secret value in these
    // tables, but a row is printed by shape only anyway.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Null => f.write_str("Null"),
            Self::Uuid(u) => write!(f, "Uuid({u})"),
            Self::Int(i) => write!(f, "Int({i})"),
            Self::Text(t) => write!(f, "Text({} chars)", t.len()),
            Self::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
        }
    }
}

/// One table's rows of a tenant, without the `tenant_id` column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRows {
    /// The table's name.
    pub table: String,
    /// Its columns, in the order of every row's cells.
    pub columns: Vec<(String, ColumnKind)>,
    /// The rows.
    pub rows: Vec<Vec<Cell>>,
}

impl TableRows {
    /// The position of column `name`.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|(c, _)| c == name)
    }
}

/// Every exported table of a tenant, in the order they are written back
/// (a row's references come before it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantRows {
    /// The tables.
    pub tables: Vec<TableRows>,
    /// The tenant's wrapped KEKs, read with the rows so the values can be
    /// opened for the file; never written to a file.
    pub keks: Vec<WrappedKekRecord>,
}

impl TenantRows {
    /// Table `name`.
    pub fn table(&self, name: &str) -> Option<&TableRows> {
        self.tables.iter().find(|t| t.table == name)
    }

    /// Table `name`, to change.
    pub fn table_mut(&mut self, name: &str) -> Option<&mut TableRows> {
        self.tables.iter_mut().find(|t| t.table == name)
    }
}

/// Who reads a tenant's rows for an export: one of its admins (their own
/// tenant), or a platform operator (naming the tenant).
#[derive(Debug, Clone, Copy)]
pub enum ExportScope<'a> {
    /// A tenant admin's scope.
    Tenant(&'a TenantScope<'a>),
    /// A platform operator, for `TenantId`.
    Platform(&'a PlatformScope<'a>, TenantId),
}

impl ExportScope<'_> {
    /// The tenant exported.
    pub fn tenant_id(&self) -> TenantId {
        match self {
            Self::Tenant(s) => s.tenant_id(),
            Self::Platform(_, t) => *t,
        }
    }
}

/// A tenant restored from an export, ready to be written.
#[derive(Debug, Clone)]
pub struct TenantImport {
    /// The tenant's id (kept from the export).
    pub tenant: TenantId,
    /// Its new KEK, wrapped by this server's root key (the only KEK
    /// version: every value is sealed under it).
    pub kek: WrappedKekRecord,
    /// Its rows: `tenants` (one row), `audit_heads` (one row) and the
    /// other tables, values sealed under `kek`.
    pub rows: TenantRows,
}

/// Bulk reads and writes of whole tenants, for export and import.
#[async_trait]
pub trait ExportStore: Send + Sync {
    /// Every exported table of a tenant, read in one transaction that
    /// holds the tenant's chain head, so the rows are those of one moment
    /// (the tenant's writers wait for the read).
    async fn export_rows(&self, scope: ExportScope<'_>) -> Result<TenantRows>;

    /// Records a sealed export in one transaction: `tenant_event` in the
    /// tenant's chain (whoever exported, so the tenant sees every export of
    /// its data) and, for a platform operator, `platform_event` in the
    /// platform chain. `Ok(false)`, and nothing written, if the tenant was
    /// shredded meanwhile.
    async fn record_export(
        &self,
        scope: ExportScope<'_>,
        tenant_event: AuditDraft,
        platform_event: Option<AuditDraft>,
    ) -> Result<bool>;

    /// Writes a whole tenant in one transaction: its rows as they are (ids,
    /// sequences and hashes kept), then `tenant_event` linked after the
    /// imported chain head and `platform_event` in the platform chain.
    /// `AlreadyExists` if the tenant's id or name is taken, or one of its
    /// identity namespaces or bindings is another tenant's;
    /// `InvalidArgument` if the imported chain does not verify (links,
    /// hashes, the head its last event); nothing is written on any error.
    async fn import_rows(
        &self,
        scope: &PlatformScope<'_>,
        import: &TenantImport,
        tenant_event: AuditDraft,
        platform_event: AuditDraft,
    ) -> Result<()>;
}
