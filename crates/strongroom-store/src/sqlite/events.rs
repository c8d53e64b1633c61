//! SQLite's audit batches in few statements. sqlx runs every SQLite
//! statement on the connection's own thread, a hand-off each way, and on a
//! busy server each hand-off waits for a CPU; so a batch is made of as few
//! statements as its steps allow, each of fixed text (prepared once per
//! connection, whatever the batch's size):
//!
//! * the reveal-check states of every kind in one statement list
//!   ([`STATES`], each row led by its kind), the ids of a kind as one JSON
//!   array (see [`hex_ids`]);
//! * for a batch of events only (reveals, denials: the committer's short
//!   path, [`fast`]), four hand-offs in all: `BEGIN IMMEDIATE`; the chain
//!   head read with those states; the leases, the events and the head update
//!   in one statement list, the rows as JSON arrays read by `json_each`
//!   ([`JsonRows`], [`WRITE_BATCH`]); `COMMIT`. The full path made about
//!   eleven for a relay batch.

use std::fmt::Write as _;

use sqlx::pool::PoolConnection;
use sqlx::sqlite::{SqliteConnection, SqliteRow};
use sqlx::{Connection, FromRow, Row, Sqlite, Transaction};
use strongroom_core::audit::{AuditDraft, AuditEvent, ChainHead};
use strongroom_core::ids::TenantId;
use strongroom_core::time::Timestamp;
use strongroom_core::{Error, Result};

use super::SqliteStore;
use crate::error::db;
use crate::group_commit::checks::{
    BindingState, CheckIds, CredentialState, GrantState, PrincipalState, States,
};
use crate::group_commit::{Fast, Head, Work};
use crate::rows::{EventRow, HeadRow, audit_columns, version_i32};

/// The reveal-check state reads of tenant `$1`, one statement a kind, each
/// row led by its kind: credentials among `$2`, principals (with their
/// tenant's status) among `$3`, grants among `$4`, identity bindings among
/// `$5`; each list a JSON array of hex ids ([`hex_ids`]), each id looked
/// up by the table's key.
macro_rules! state_reads {
    () => {
        "SELECT 1 AS kind, id, status, current_version, destroyed_at, expires_at \
         FROM credentials \
         WHERE tenant_id = $1 AND id IN (SELECT unhex(value) FROM json_each($2)); \
         SELECT 2 AS kind, p.id, p.status, p.role, t.status AS tenant_status \
         FROM principals p JOIN tenants t ON t.id = p.tenant_id \
         WHERE p.tenant_id = $1 AND p.id IN (SELECT unhex(value) FROM json_each($3)); \
         SELECT 3 AS kind, id, expires_at FROM grants \
         WHERE tenant_id = $1 AND id IN (SELECT unhex(value) FROM json_each($4)); \
         SELECT 4 AS kind, id, principal_id, disabled_reason FROM identity_bindings \
         WHERE tenant_id = $1 AND id IN (SELECT unhex(value) FROM json_each($5))"
    };
}

/// The reveal-check states (see [`state_reads`]), for the full path.
pub(super) const STATES: &str = state_reads!();

/// The chain head of tenant `$1` (kind 0), then the reveal-check states.
const HEAD_AND_STATES: &str = concat!(
    "SELECT 0 AS kind, sequence, hash FROM audit_heads WHERE tenant_id = $1; ",
    state_reads!()
);

/// A batch of events only, written in one statement list: the leases `$2`
/// (JSON rows of [`lease_rows`]) and events `$3` (of [`event_rows`]) of
/// tenant `$1`, then the head advanced to sequence `$4`, hash `$5`. Each
/// row is made JSONB once, in a `MATERIALIZED` table expression (else the
/// planner copies `jsonb(value)` into every column), and its columns read
/// from that: `->>` on the row's JSON text parses the text again for every
/// column, which made a batch of 64 events about twice as slow as bound
/// parameters; read from JSONB it is within a fifth of them.
const WRITE_BATCH: &str = concat!(
    "WITH l(v) AS MATERIALIZED (SELECT jsonb(value) FROM json_each($2)) \
     INSERT INTO leases (tenant_id, id, credential_id, credential_name, environment, version, \
     principal_id, grant_id, on_behalf_of, purpose, ttl_secs, issued_at, expires_at, \
     max_expires_at, state) \
     SELECT $1, unhex(v ->> 0), unhex(v ->> 1), v ->> 2, v ->> 3, v ->> 4, unhex(v ->> 5), \
     unhex(v ->> 6), v ->> 7, v ->> 8, v ->> 9, v ->> 10, v ->> 11, v ->> 12, 'active' FROM l; ",
    "WITH e(v) AS MATERIALIZED (SELECT jsonb(value) FROM json_each($3)) \
     INSERT INTO audit_events (",
    audit_columns!(),
    ") SELECT $1, v ->> 0, unhex(v ->> 1), v ->> 2, unhex(v ->> 3), v ->> 4, v ->> 5, v ->> 6, \
     unhex(v ->> 7), v ->> 8, v ->> 9, v ->> 10, v ->> 11, v ->> 12, v ->> 13, v ->> 14, \
     v ->> 15, v ->> 16, v ->> 17, unhex(v ->> 18), unhex(v ->> 19), v ->> 20 FROM e; ",
    "UPDATE audit_heads SET sequence = $4, hash = $5 WHERE tenant_id = $1"
);

/// `ids` as a JSON array of their 32 hex digits, for `json_each` and
/// `unhex` (SQLite 3.41 on; the bundled one is 3.46). `unhex` gives back
/// the 16 bytes sqlx stores a `uuid::Uuid` as, in the same order: were ids
/// ever stored in another form, every check would miss its row and refuse
/// the reveal (the conformance cases would fail first).
pub(super) fn hex_ids(ids: &[uuid::Uuid]) -> String {
    let mut json = String::with_capacity(2 + ids.len() * 35);
    json.push('[');
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        json.push('"');
        json.push_str(id.simple().encode_lower(&mut uuid::Uuid::encode_buffer()));
        json.push('"');
    }
    json.push(']');
    json
}

/// Reads the reveal-check states (and, for kind 0, the chain head) out of
/// the rows of [`STATES`] or [`HEAD_AND_STATES`].
fn collect(rows: Vec<SqliteRow>) -> Result<(Option<HeadRow>, States)> {
    let mut head = None;
    let mut states = States::default();
    for row in rows {
        let kind: i64 = row.try_get("kind").map_err(db("reveal check"))?;
        match kind {
            0 => head = Some(HeadRow::from_row(&row).map_err(db("audit chain head"))?),
            1 => states.credential(CredentialState::from_row(&row).map_err(db("credential"))?),
            2 => states.principal(PrincipalState::from_row(&row).map_err(db("principal"))?),
            3 => states.grant(GrantState::from_row(&row).map_err(db("grant"))?),
            4 => states.binding(BindingState::from_row(&row).map_err(db("identity binding"))?),
            _ => return Err(Error::internal("unknown reveal check row")),
        }
    }
    Ok((head, states))
}

/// Reads the stored states the reveal checks `ids` depend on, in one
/// statement list.
pub(super) async fn read_states(
    tx: &mut Transaction<'static, Sqlite>,
    tenant: TenantId,
    ids: &CheckIds,
) -> Result<States> {
    let rows = bind_ids(sqlx::query(STATES), tenant, ids)
        .fetch_all(&mut **tx)
        .await
        .map_err(db("reveal check"))?;
    Ok(collect(rows)?.1)
}

type SqliteQuery<'a> = sqlx::query::Query<'a, Sqlite, sqlx::sqlite::SqliteArguments<'a>>;

/// Binds the tenant `$1` and the check ids `$2` to `$5`.
fn bind_ids<'a>(q: SqliteQuery<'a>, tenant: TenantId, ids: &CheckIds) -> SqliteQuery<'a> {
    q.bind(tenant.as_uuid())
        .bind(hex_ids(&ids.credentials))
        .bind(hex_ids(&ids.principals))
        .bind(hex_ids(&ids.grants))
        .bind(hex_ids(&ids.bindings))
}

/// Commits a batch of events only (reveals, denials) in four hand-offs, on
/// the connection the committer keeps from one batch to the next while it
/// has work (`held`): SQLite drops a connection's whole page cache when it
/// begins a transaction after another connection committed, so batches
/// on whichever connection the pool handed out read their index pages
/// back from the file each time. The hand-offs:
/// the write lock (`BEGIN IMMEDIATE`), the chain head and every reveal
/// check's states read under it, the batch's leases and events sealed on
/// that head and the head advanced in one statement list, `COMMIT`. The
/// head is the one stored, read under the write lock, so nothing another
/// writer appended is overwritten. If a check fails, or the database
/// refuses the batch's rows, nothing is written and the drafts go back for
/// the full path, which finds the failing job.
pub(super) async fn fast(
    store: &SqliteStore,
    tenant: TenantId,
    works: &[Work],
    drafts: Vec<AuditDraft>,
    held: &mut Option<PoolConnection<Sqlite>>,
) -> Result<Fast> {
    let conn = match held {
        Some(c) => c,
        None => held.insert(store.pool().acquire().await.map_err(db("transaction"))?),
    };
    let result = fast_on(conn, tenant, works, drafts).await;
    if result.is_err() {
        // Closed, not pooled: after an error SQLite may have rolled the
        // transaction back itself, leaving sqlx's count of open
        // transactions on the connection wrong.
        if let Some(mut c) = held.take() {
            c.close_on_drop();
        }
    } else if store.pool().num_idle() == 0 {
        // Kept for the next batch only while the pool has others idle.
        *held = None;
    }
    result
}

/// [`fast`] on `conn`.
async fn fast_on(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    works: &[Work],
    drafts: Vec<AuditDraft>,
) -> Result<Fast> {
    let mut tx = conn
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(db("transaction"))?;
    let rows = bind_ids(sqlx::query(HEAD_AND_STATES), tenant, &CheckIds::of(works))
        .fetch_all(&mut *tx)
        .await
        .map_err(db("audit chain head"))?;
    let (head, states) = collect(rows)?;
    let head = ChainHead::try_from(
        head.ok_or_else(|| Error::internal("the tenant has no audit chain head"))?,
    )?;
    let now = Timestamp::now();
    let refused = works.iter().any(|w| match w {
        Work::Reveal(check, _) => states.violation(check, now).is_some(),
        _ => false,
    });
    if refused {
        tx.rollback().await.map_err(db("transaction"))?;
        return Ok(Fast::Redo(drafts));
    }
    let (events, after) = Head::from(head).seal(tenant, drafts);
    let to =
        i64::try_from(after.sequence).map_err(|_| Error::internal("audit sequence overflow"))?;
    let (leases, lease_count) = lease_rows(tenant, works)?;
    let written = sqlx::query(WRITE_BATCH)
        .bind(tenant.as_uuid())
        .bind(leases)
        .bind(event_rows(&events)?)
        .bind(to)
        .bind(after.hash.as_slice())
        .execute(&mut *tx)
        .await;
    let expected = (lease_count + events.len() + 1) as u64;
    match written {
        Ok(done) if done.rows_affected() == expected => {}
        Ok(done) => {
            tx.rollback().await.map_err(db("transaction"))?;
            tracing::error!(
                rows = done.rows_affected(),
                expected,
                "audit batch wrote an unexpected number of rows; not committed"
            );
            return Err(Error::internal("audit batch wrote unexpected rows"));
        }
        // The database refused the batch's data: nothing is kept; the full
        // path finds the job at fault and commits the others.
        Err(sqlx::Error::Database(e)) => {
            tracing::warn!(error = %e, "audit batch refused on the short path");
            tx.rollback().await.map_err(db("transaction"))?;
            return Ok(Fast::Redo(events.into_iter().map(|e| e.draft).collect()));
        }
        Err(e) => return Err(db("audit event")(e)),
    }
    // As on the full path: a failed COMMIT leaves the outcome unknown.
    tx.commit().await.map_err(|e| {
        tracing::warn!(error = %e, "audit batch commit failed; its outcome is unknown");
        Error::Unavailable("the audit log is unavailable".into())
    })?;
    Ok(Fast::Committed(events, after))
}

/// The leases the batch's reveals open, as [`WRITE_BATCH`] reads them:
/// id, credential, credential name, environment, version, principal,
/// grant, on behalf of, purpose, TTL in seconds, issued, expires, most
/// expires; and how many.
fn lease_rows(tenant: TenantId, works: &[Work]) -> Result<(String, usize)> {
    let mut json = JsonRows::new(works.len() * 320);
    let mut count = 0;
    for w in works {
        let Work::Reveal(_, Some(l)) = w else {
            continue;
        };
        // Stored under the batch's tenant, which every lease must be of.
        if l.tenant != tenant {
            return Err(Error::internal("a lease of another tenant in the batch"));
        }
        count += 1;
        json.row()
            .hex(Some(l.id.as_uuid().as_bytes()))
            .hex(Some(l.credential.as_uuid().as_bytes()))
            .text(Some(l.credential_name.as_str()))
            .text(Some(l.environment.as_str()))
            .int(i64::from(version_i32(l.version)?))
            .hex(Some(l.principal.as_uuid().as_bytes()))
            .hex(
                l.grant
                    .map(|g| g.as_uuid())
                    .as_ref()
                    .map(|g| &g.as_bytes()[..]),
            )
            .text(l.on_behalf_of.as_deref())
            .text(l.purpose.as_deref())
            .int(i64::try_from(l.ttl.as_secs()).unwrap_or(i64::MAX))
            .int(l.issued_at.as_micros())
            .int(l.expires_at.as_micros())
            .int(l.max_expires_at.as_micros());
    }
    Ok((json.finish(), count))
}

/// Sealed events as [`WRITE_BATCH`] reads them: the columns of
/// [`audit_columns`] after the chain, in order.
fn event_rows(events: &[AuditEvent]) -> Result<String> {
    let mut json = JsonRows::new(events.len() * 700);
    for e in events {
        let EventRow {
            chain: _,
            sequence,
            id,
            at,
            principal,
            actor,
            on_behalf_of,
            action,
            credential,
            credential_name,
            version,
            environment,
            purpose,
            outcome,
            reason_code,
            peer,
            request_id,
            trace_id,
            detail,
            prev_hash,
            hash,
            format,
        } = EventRow::of(e)?;
        json.row()
            .int(sequence)
            .hex(Some(id.as_bytes()))
            .int(at)
            .hex(principal.as_ref().map(|p| &p.as_bytes()[..]))
            .text(Some(actor))
            .text(on_behalf_of)
            .text(Some(action))
            .hex(credential.as_ref().map(|c| &c.as_bytes()[..]))
            .text(credential_name)
            .opt_int(version.map(i64::from))
            .text(environment)
            .text(purpose)
            .text(Some(outcome))
            .text(Some(reason_code))
            .text(peer)
            .text(request_id)
            .text(trace_id)
            .text(detail)
            .hex(Some(prev_hash))
            .hex(Some(hash))
            .int(i64::from(format));
    }
    Ok(json.finish())
}

/// A JSON array of rows, each an array of values, written straight into
/// one string: integers as they are, text as JSON strings (SQLite's `->>`
/// gives back the same text), blobs and ids as hex digits (`unhex` in SQL),
/// absent values as `null` (`->>` gives SQL NULL, and `unhex(NULL)` is
/// NULL).
struct JsonRows {
    out: String,
    /// Whether a row is open.
    in_row: bool,
    /// Whether the open row has no value yet.
    row_empty: bool,
}

impl JsonRows {
    fn new(capacity: usize) -> Self {
        let mut out = String::with_capacity(capacity + 2);
        out.push('[');
        Self {
            out,
            in_row: false,
            row_empty: true,
        }
    }

    /// Starts the next row; its values follow.
    fn row(&mut self) -> &mut Self {
        if self.in_row {
            self.out.push_str("],");
        }
        self.out.push('[');
        self.in_row = true;
        self.row_empty = true;
        self
    }

    fn value(&mut self) {
        if !self.row_empty {
            self.out.push(',');
        }
        self.row_empty = false;
    }

    fn int(&mut self, v: i64) -> &mut Self {
        self.value();
        let _ = write!(self.out, "{v}");
        self
    }

    fn opt_int(&mut self, v: Option<i64>) -> &mut Self {
        match v {
            Some(v) => self.int(v),
            None => self.null(),
        }
    }

    fn null(&mut self) -> &mut Self {
        self.value();
        self.out.push_str("null");
        self
    }

    /// Text as a JSON string: `"` and `\` escaped, and every control
    /// character as `\u00XX` (all JSON requires); the rest as it is.
    fn text(&mut self, v: Option<&str>) -> &mut Self {
        let Some(s) = v else {
            return self.null();
        };
        self.value();
        self.out.push('"');
        for c in s.chars() {
            match c {
                '"' => self.out.push_str("\\\""),
                '\\' => self.out.push_str("\\\\"),
                c if u32::from(c) < 0x20 => {
                    let _ = write!(self.out, "\\u{:04x}", u32::from(c));
                }
                c => self.out.push(c),
            }
        }
        self.out.push('"');
        self
    }

    /// Bytes as a JSON string of lower-case hex digits.
    fn hex(&mut self, v: Option<&[u8]>) -> &mut Self {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let Some(bytes) = v else {
            return self.null();
        };
        self.value();
        self.out.push('"');
        for b in bytes {
            self.out.push(char::from(DIGITS[usize::from(b >> 4)]));
            self.out.push(char::from(DIGITS[usize::from(b & 0xf)]));
        }
        self.out.push('"');
        self
    }

    fn finish(mut self) -> String {
        if self.in_row {
            self.out.push(']');
        }
        self.out.push(']');
        self.out
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::JsonRows;

    /// A row as read back: text, two integers, NULL as an integer and as
    /// text, hex as bytes, NULL as bytes.
    type ReadBack = (
        String,
        i64,
        i64,
        Option<i64>,
        Option<String>,
        Vec<u8>,
        Option<Vec<u8>>,
    );

    /// Every character class JSON escapes or SQL quotes: SQLite's `->>`,
    /// on each row made JSONB as [`WRITE_BATCH`] makes it, gives back
    /// exactly the text written (a row that did not would be
    /// stored unlike its sealed event, and its chain would not verify),
    /// integers at both ends of their range, NULLs, and hex read back by
    /// `unhex`.
    #[tokio::test]
    async fn sqlite_reads_back_what_the_rows_carry() {
        let texts: Vec<String> = vec![
            "plain".into(),
            String::new(),
            "q\"uote \\back\\\\slash / ' ; -- %s {}[] null".into(),
            (1u8..0x20).map(char::from).collect(),
            "\u{7f} \u{fc} \u{1f5dd} \u{2028}\u{2029} \u{feff} \u{fffd}".into(),
        ];
        let bytes: [u8; 5] = [0x00, 0x0f, 0x10, 0xab, 0xff];
        let mut rows = JsonRows::new(0);
        for t in &texts {
            rows.row()
                .text(Some(t))
                .int(i64::MIN)
                .int(i64::MAX)
                .opt_int(None)
                .text(None)
                .hex(Some(&bytes))
                .hex(None);
        }
        let json = rows.finish();
        let pool = sqlx::SqlitePool::connect("sqlite::memory:")
            .await
            .expect("sqlite");
        let read: Vec<ReadBack> = sqlx::query_as(
            "WITH r(k, v) AS MATERIALIZED (SELECT key, jsonb(value) FROM json_each($1)) \
                 SELECT v ->> 0, v ->> 1, v ->> 2, v ->> 3, v ->> 4, unhex(v ->> 5), \
                 unhex(v ->> 6) FROM r ORDER BY k",
        )
        .bind(&json)
        .fetch_all(&pool)
        .await
        .expect("read the rows");
        assert_eq!(read.len(), texts.len());
        for (row, text) in read.iter().zip(&texts) {
            assert_eq!(&row.0, text);
            assert_eq!((row.1, row.2, row.3), (i64::MIN, i64::MAX, None));
            assert_eq!(row.4, None);
            assert_eq!(row.5, bytes);
            assert_eq!(row.6, None);
        }
        assert_eq!(JsonRows::new(0).finish(), "[]");
    }
}
