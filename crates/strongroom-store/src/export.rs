//! Whole tenants, read and written at once ([`ExportStore`]): the tables an
//! export carries, each read with one statement and written back with
//! multi-row inserts, ids, sequences and hashes as they were.
//!
//! [`TABLES`] is the one list of what an export holds, in the order a
//! restore writes it (a row's references first). A table added to the
//! schema that holds tenant data belongs here too (with the same columns on
//! both backends), or an export silently leaves it behind; the conformance
//! case `export_rows_cover_every_tenant_table` fails until it is listed or
//! named as left out.

use async_trait::async_trait;
use sqlx::{ColumnIndex, Database, Decode, Row, Transaction, Type};
use strongroom_core::audit::AuditDraft;
use strongroom_core::export::{
    Cell, ColumnKind, ExportScope, ExportStore, TableRows, TenantImport, TenantRows,
};
use strongroom_core::scope::PlatformScope;
use strongroom_core::tenant::TenantStatus;
use strongroom_core::{Error, Result};
use uuid::Uuid;

use crate::dialect::{Dialect, NamespaceLock, SqlBuilder};
use crate::error::db;
use crate::store::SqlStore;

use ColumnKind::{BigInt, Bool, Bytes, Int, Text, Uuid as U};

/// One exported table: its name, the column holding the tenant id, the
/// other columns and the order rows are read in.
pub struct TableSpec {
    /// The table.
    pub name: &'static str,
    /// The column holding the tenant's id (`id` for `tenants`).
    pub tenant_column: &'static str,
    /// Every other column, with its kind.
    pub columns: &'static [(&'static str, ColumnKind)],
    /// `ORDER BY` of the read.
    pub order: &'static str,
}

/// The tables of a tenant an export holds, in restore order. Left out on
/// purpose ([`LEFT_OUT`]): `tenant_keks` (the importing server makes a new
/// KEK), `tenant_key_rewraps` (progress of a re-wrapping to the old
/// server's KEK versions), `idempotency_keys` (retries of calls made to the
/// old server), `notification_deliveries` (the old server's delivery
/// attempts; a rotation reminder keeps the id of its delivery, so a
/// reminder already sent is not sent again).
pub const TABLES: &[TableSpec] = &[
    TableSpec {
        name: "tenants",
        tenant_column: "id",
        columns: &[
            ("name", Text),
            ("status", Text),
            ("settings", Text),
            ("current_kek_version", Int),
            ("created_at", BigInt),
        ],
        order: "id",
    },
    TableSpec {
        name: "environments",
        tenant_column: "tenant_id",
        columns: &[("name", Text), ("created_at", BigInt)],
        order: "name",
    },
    TableSpec {
        name: "identity_namespaces",
        tenant_column: "tenant_id",
        columns: &[
            ("kind", Text),
            ("pattern", Text),
            ("created_at", BigInt),
            ("derived", Bool),
        ],
        order: "kind, pattern",
    },
    TableSpec {
        name: "principals",
        tenant_column: "tenant_id",
        columns: &[
            ("id", U),
            ("name", Text),
            ("role", Text),
            ("environments", Text),
            ("description", Text),
            ("status", Text),
            ("created_at", BigInt),
        ],
        order: "id",
    },
    TableSpec {
        name: "identity_bindings",
        tenant_column: "tenant_id",
        columns: &[
            ("id", U),
            ("principal_id", U),
            ("kind", Text),
            ("pattern", Text),
            ("created_at", BigInt),
            ("disabled_reason", Text),
        ],
        order: "id",
    },
    TableSpec {
        name: "credentials",
        tenant_column: "tenant_id",
        columns: &[
            ("id", U),
            ("environment", Text),
            ("name", Text),
            ("service", Text),
            ("kind", Text),
            ("description", Text),
            ("tags", Text),
            ("scopes", Text),
            ("owner", Text),
            ("status", Text),
            ("current_version", Int),
            ("latest_version", Int),
            ("rotated_at", BigInt),
            ("created_at", BigInt),
            ("updated_at", BigInt),
            ("expires_at", BigInt),
            ("revoked_at", BigInt),
            ("revoke_reason", Text),
            ("destroyed_at", BigInt),
            ("rotation", Text),
            ("injection", Text),
            ("created_by", U),
        ],
        order: "id",
    },
    TableSpec {
        name: "credential_versions",
        tenant_column: "tenant_id",
        columns: &[
            ("credential_id", U),
            ("version", Int),
            ("envelope", Bytes),
            ("kek_version", Int),
            ("created_at", BigInt),
            ("created_by", U),
        ],
        order: "credential_id, version",
    },
    TableSpec {
        name: "access_requests",
        tenant_column: "tenant_id",
        columns: &[
            ("id", U),
            ("requester_id", U),
            ("requester_name", Text),
            ("selector", Text),
            ("environments", Text),
            ("capability", Text),
            ("destinations", Text),
            ("purpose", Text),
            ("on_behalf_of", Text),
            ("duration_secs", BigInt),
            ("status", Text),
            ("same_key", Text),
            ("created_at", BigInt),
            ("expires_at", BigInt),
            ("decided_at", BigInt),
            ("decided_by", U),
            ("decision_reason", Text),
            ("grant_id", U),
        ],
        order: "id",
    },
    TableSpec {
        name: "grants",
        tenant_column: "tenant_id",
        columns: &[
            ("id", U),
            ("subject_kind", Text),
            ("subject", Text),
            ("selector", Text),
            ("environments", Text),
            ("capabilities", Int),
            ("destinations", Text),
            ("expires_at", BigInt),
            ("reason", Text),
            ("granted_by", U),
            ("created_at", BigInt),
            ("access_request_id", U),
        ],
        order: "id",
    },
    TableSpec {
        name: "leases",
        tenant_column: "tenant_id",
        columns: &[
            ("id", U),
            ("credential_id", U),
            ("credential_name", Text),
            ("environment", Text),
            ("version", Int),
            ("principal_id", U),
            ("grant_id", U),
            ("on_behalf_of", Text),
            ("purpose", Text),
            ("ttl_secs", BigInt),
            ("issued_at", BigInt),
            ("expires_at", BigInt),
            ("max_expires_at", BigInt),
            ("state", Text),
            ("ended_at", BigInt),
            ("end_reason", Text),
        ],
        order: "id",
    },
    TableSpec {
        name: "rotation_reminders",
        tenant_column: "tenant_id",
        columns: &[
            ("credential_id", U),
            ("reminder", Text),
            ("window_at", BigInt),
            ("delivery_id", U),
            ("created_at", BigInt),
        ],
        order: "credential_id, reminder, window_at",
    },
    TableSpec {
        name: "audit_heads",
        tenant_column: "tenant_id",
        columns: &[("sequence", BigInt), ("hash", Bytes)],
        order: "tenant_id",
    },
    TableSpec {
        name: "audit_events",
        tenant_column: "tenant_id",
        columns: &[
            ("sequence", BigInt),
            ("id", U),
            ("at", BigInt),
            ("principal_id", U),
            ("actor", Text),
            ("on_behalf_of", Text),
            ("action", Text),
            ("credential_id", U),
            ("credential_name", Text),
            ("version", Int),
            ("environment", Text),
            ("purpose", Text),
            ("outcome", Text),
            ("reason_code", Text),
            ("peer", Text),
            ("request_id", Text),
            ("trace_id", Text),
            ("detail", Text),
            ("prev_hash", Bytes),
            ("hash", Bytes),
            ("format", Int),
        ],
        order: "sequence",
    },
];

/// Tables holding tenant data that an export leaves out, and why (see
/// [`TABLES`]): `tenant_keks` (the importing server makes a new KEK),
/// `tenant_key_rewraps` (a re-wrapping to the old server's KEK versions;
/// every imported value is sealed under the new KEK), `idempotency_keys`,
/// `notification_deliveries` (as above).
pub const LEFT_OUT: &[&str] = &[
    "tenant_keks",
    "tenant_key_rewraps",
    "idempotency_keys",
    "notification_deliveries",
];

/// Parameters one multi-row insert binds at most (below SQLite's and
/// Postgres' limits).
const MAX_PARAMS: usize = 30_000;
/// Rows one insert writes at most.
const MAX_ROWS: usize = 500;

/// A backend whose rows can be read cell by cell, by column kind.
pub trait ReadsCells: Database {
    /// Reads column `index` of `row` as a `kind`.
    fn cell(
        row: &Self::Row,
        index: usize,
        kind: ColumnKind,
    ) -> std::result::Result<Cell, sqlx::Error>;
}

impl<DB> ReadsCells for DB
where
    DB: Database,
    usize: ColumnIndex<DB::Row>,
    for<'r> Uuid: Decode<'r, DB> + Type<DB>,
    for<'r> i32: Decode<'r, DB> + Type<DB>,
    for<'r> i64: Decode<'r, DB> + Type<DB>,
    for<'r> bool: Decode<'r, DB> + Type<DB>,
    for<'r> String: Decode<'r, DB> + Type<DB>,
    for<'r> Vec<u8>: Decode<'r, DB> + Type<DB>,
{
    fn cell(
        row: &DB::Row,
        index: usize,
        kind: ColumnKind,
    ) -> std::result::Result<Cell, sqlx::Error> {
        Ok(match kind {
            U => row.try_get::<Option<Uuid>, _>(index)?.map(Cell::Uuid),
            Int => row
                .try_get::<Option<i32>, _>(index)?
                .map(|v| Cell::Int(v.into())),
            BigInt => row.try_get::<Option<i64>, _>(index)?.map(Cell::Int),
            Bool => row
                .try_get::<Option<bool>, _>(index)?
                .map(|v| Cell::Int(v.into())),
            Text => row.try_get::<Option<String>, _>(index)?.map(Cell::Text),
            Bytes => row.try_get::<Option<Vec<u8>>, _>(index)?.map(Cell::Bytes),
        }
        .unwrap_or(Cell::Null))
    }
}

/// The spec of table `name`.
fn spec(name: &str) -> Result<&'static TableSpec> {
    TABLES
        .iter()
        .find(|t| t.name == name)
        .ok_or_else(|| Error::internal(format!("no exported table {name}")))
}

/// Binds `cell` as a `kind`, refusing a cell of another kind.
fn push_cell<'q, D: Dialect>(
    q: &mut SqlBuilder<'q, D>,
    kind: ColumnKind,
    cell: &'q Cell,
) -> Result<()> {
    let wrong = || {
        Error::invalid(
            "export",
            format!("a {} column holds another kind", kind.as_str()),
        )
    };
    match (kind, cell) {
        (U, Cell::Uuid(u)) => q.push_bind(Some(*u)),
        (U, Cell::Null) => q.push_bind(None::<Uuid>),
        (Int, Cell::Int(i)) => q.push_bind(Some(i32::try_from(*i).map_err(|_| wrong())?)),
        (Int, Cell::Null) => q.push_bind(None::<i32>),
        (BigInt, Cell::Int(i)) => q.push_bind(Some(*i)),
        (BigInt, Cell::Null) => q.push_bind(None::<i64>),
        (Bool, Cell::Int(i)) if *i == 0 || *i == 1 => q.push_bind(*i == 1),
        (Text, Cell::Text(t)) => q.push_bind(Some(t.as_str())),
        (Text, Cell::Null) => q.push_bind(None::<&str>),
        (Bytes, Cell::Bytes(b)) => q.push_bind(Some(b.as_slice())),
        (Bytes, Cell::Null) => q.push_bind(None::<&[u8]>),
        _ => return Err(wrong()),
    };
    Ok(())
}

/// Inserts `rows` (laid out as its spec says) for `tenant`.
async fn insert_table<D: Dialect>(
    tx: &mut Transaction<'static, D>,
    tenant: Uuid,
    rows: &TableRows,
) -> Result<()> {
    let spec = spec(&rows.table)?;
    let same_columns = rows.columns.len() == spec.columns.len()
        && rows
            .columns
            .iter()
            .zip(spec.columns)
            .all(|((n, k), (sn, sk))| n == sn && k == sk);
    if !same_columns {
        return Err(Error::invalid(
            "export",
            format!("table {} does not have the expected columns", rows.table),
        ));
    }
    let mut head = format!("INSERT INTO {} ({}", spec.name, spec.tenant_column);
    for (c, _) in spec.columns {
        head.push_str(", ");
        head.push_str(c);
    }
    head.push_str(") VALUES ");
    let per_row = spec.columns.len() + 1;
    let batch = (MAX_PARAMS / per_row).clamp(1, MAX_ROWS);
    for rows in rows.rows.chunks(batch) {
        let mut q = SqlBuilder::<D>::new(&head);
        for (i, row) in rows.iter().enumerate() {
            if row.len() != spec.columns.len() {
                return Err(Error::invalid(
                    "export",
                    format!("a row of {} has the wrong number of cells", spec.name),
                ));
            }
            q.push(if i == 0 { "(" } else { ", (" });
            q.push_bind(tenant);
            for ((_, kind), cell) in spec.columns.iter().zip(row) {
                q.push(", ");
                push_cell(&mut q, *kind, cell)?;
            }
            q.push(")");
        }
        q.execute(&mut **tx).await.map_err(db(spec.name))?;
    }
    Ok(())
}

#[async_trait]
impl<D: Dialect> ExportStore for SqlStore<D> {
    async fn export_rows(&self, scope: ExportScope<'_>) -> Result<TenantRows> {
        let tenant = scope.tenant_id();
        let mut tx = self.tenant_tx(tenant, true).await?;
        // The head, locked until the end: every writer of the tenant
        // appends under it, so the tables read below are of one moment.
        let _: crate::rows::HeadRow = D::query(D::LOCK_TENANT_HEAD)
            .bind(tenant.as_uuid())
            .fetch_one(&mut *tx)
            .await
            .map_err(db("tenant"))?;
        let mut tables = Vec::with_capacity(TABLES.len());
        for spec in TABLES {
            let columns: Vec<&str> = spec.columns.iter().map(|(c, _)| *c).collect();
            // A lease is read from its row or, until something changed
            // it, from its reveal's event (crate::leases): the export holds
            // every lease as a row, and the import stores each as one.
            let from = if spec.name == "leases" {
                crate::leases::LEASES_FROM
            } else {
                spec.name
            };
            let sql = format!(
                "SELECT {} FROM {} WHERE {} = $1 ORDER BY {}",
                columns.join(", "),
                from,
                spec.tenant_column,
                spec.order
            );
            let raw = D::query(&sql)
                .bind(tenant.as_uuid())
                .fetch_rows(&mut *tx)
                .await
                .map_err(db(spec.name))?;
            let mut rows = Vec::with_capacity(raw.len());
            for r in &raw {
                let cells = spec
                    .columns
                    .iter()
                    .enumerate()
                    .map(|(i, (_, kind))| D::cell(r, i, *kind))
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(db(spec.name))?;
                rows.push(cells);
            }
            tables.push(TableRows {
                table: spec.name.to_owned(),
                columns: spec
                    .columns
                    .iter()
                    .map(|(c, k)| ((*c).to_owned(), *k))
                    .collect(),
                rows,
            });
        }
        let keks: Vec<crate::rows::KekRow> = D::query(
            "SELECT tenant_id, version, wrapped, created_at FROM tenant_keks \
             WHERE tenant_id = $1 ORDER BY version",
        )
        .bind(tenant.as_uuid())
        .fetch_all(&mut *tx)
        .await
        .map_err(db("tenant key"))?;
        tx.commit().await.map_err(db("tenant"))?;
        let keks = keks
            .into_iter()
            .map(TryInto::try_into)
            .collect::<Result<Vec<_>>>()?;
        if tables.first().is_none_or(|t| t.rows.len() != 1) {
            return Err(Error::not_found("tenant"));
        }
        Ok(TenantRows { tables, keks })
    }

    async fn record_export(
        &self,
        scope: ExportScope<'_>,
        tenant_event: AuditDraft,
        platform_event: Option<AuditDraft>,
    ) -> Result<bool> {
        let tenant = scope.tenant_id();
        let mut tx = match scope {
            ExportScope::Tenant(_) => self.tenant_tx(tenant, true).await?,
            ExportScope::Platform(..) => self.platform_tx(Some(tenant), true).await?,
        };
        // The head first, as every writer of the tenant (and the shred).
        let _: crate::rows::HeadRow = D::query(D::LOCK_TENANT_HEAD)
            .bind(tenant.as_uuid())
            .fetch_one(&mut *tx)
            .await
            .map_err(db("tenant"))?;
        let status: Option<(String,)> = D::query("SELECT status FROM tenants WHERE id = $1")
            .bind(tenant.as_uuid())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db("tenant"))?;
        match status {
            None => return Err(Error::not_found("tenant")),
            Some((s,)) if s == TenantStatus::Shredded.as_str() => return Ok(false),
            Some(_) => {}
        }
        self.append_in(&mut tx, tenant, tenant_event).await?;
        if let Some(event) = platform_event {
            crate::chains::append_platform_in::<D>(&mut tx, event).await?;
        }
        tx.commit().await.map_err(db("tenant"))?;
        Ok(true)
    }

    async fn import_rows(
        &self,
        _scope: &PlatformScope<'_>,
        import: &TenantImport,
        tenant_event: AuditDraft,
        platform_event: AuditDraft,
    ) -> Result<()> {
        let tenant = import.tenant;
        let tables: Vec<&str> = import
            .rows
            .tables
            .iter()
            .map(|t| t.table.as_str())
            .collect();
        let expected: Vec<&str> = TABLES.iter().map(|t| t.name).collect();
        if tables != expected {
            return Err(Error::invalid(
                "export",
                "does not hold the tables this server restores, in order",
            ));
        }
        for one in ["tenants", "audit_heads"] {
            if import.rows.table(one).is_none_or(|t| t.rows.len() != 1) {
                return Err(Error::invalid(
                    "export",
                    format!("needs exactly one {one} row"),
                ));
            }
        }
        let mut tx = self.platform_tx(Some(tenant), true).await?;
        D::lock_namespaces(&mut tx, NamespaceLock::Exclusive).await?;
        for table in &import.rows.tables {
            insert_table(&mut tx, tenant.as_uuid(), table).await?;
            if table.table == "tenants" {
                crate::tenants::insert_kek(&mut tx, tenant, &import.kek).await?;
            }
        }
        crate::identity::refuse_overlaps(&mut tx, tenant).await?;
        crate::audit::verify_chain_in(&mut tx, tenant).await?;
        self.append_in(&mut tx, tenant, tenant_event).await?;
        crate::chains::append_platform_in::<D>(&mut tx, platform_event).await?;
        tx.commit().await.map_err(db("tenant"))?;
        Ok(())
    }
}
