//! Postgres' audit event inserts: a batch's sealed events as column arrays
//! in one statement of fixed text (prepared once per connection, whatever
//! the batch size), and the group committer's one-round-trip path for a
//! batch of events only (reveals, denials): the `append_checked_events`
//! function checks, inserts and advances the head in one statement.

use sqlx::pool::PoolConnection;
use sqlx::{Postgres, Transaction};
use strongroom_core::audit::{AuditDraft, AuditEvent};
use strongroom_core::ids::TenantId;
use strongroom_core::lease::Lease;
use strongroom_core::store::Change;
use strongroom_core::{Error, Result};

use super::PgStore;
use super::changes::{CHANGES_CHANNEL, notice_texts};
use crate::error::db;
use crate::group_commit::{Fast, Head, Work};
use crate::leases::ttl_secs;
use crate::rows::{EventRow, audit_columns};

/// A batch's sealed audit events as column arrays, for the fixed-text
/// multi-row insert (parameters `$2` to `$21`, `$1` the chain; the formats
/// are bound last, after the statement's other parameters).
struct EventColumns<'a> {
    sequence: Vec<i64>,
    id: Vec<uuid::Uuid>,
    at: Vec<i64>,
    principal: Vec<Option<uuid::Uuid>>,
    actor: Vec<&'a str>,
    on_behalf_of: Vec<Option<&'a str>>,
    action: Vec<&'static str>,
    credential: Vec<Option<uuid::Uuid>>,
    credential_name: Vec<Option<&'a str>>,
    version: Vec<Option<i32>>,
    environment: Vec<Option<&'a str>>,
    purpose: Vec<Option<&'a str>>,
    outcome: Vec<&'static str>,
    reason_code: Vec<&'a str>,
    peer: Vec<Option<&'a str>>,
    request_id: Vec<Option<&'a str>>,
    trace_id: Vec<Option<&'a str>>,
    detail: Vec<Option<&'a str>>,
    prev_hash: Vec<&'a [u8]>,
    hash: Vec<&'a [u8]>,
    format: Vec<i32>,
}

/// Inserts [`EventColumns`] (their formats `$26`), advances the chain head
/// to `$22`/`$23` and announces the notices `$25` on channel `$24`, in one
/// statement.
const INSERT_EVENTS: &str = concat!(
    "WITH ins AS (INSERT INTO audit_events (",
    audit_columns!(),
    ") SELECT $1, u.* FROM unnest($2::bigint[], $3::uuid[], $4::bigint[], $5::uuid[], \
     $6::text[], $7::text[], $8::text[], $9::uuid[], $10::text[], $11::int[], $12::text[], \
     $13::text[], $14::text[], $15::text[], $16::text[], $17::text[], $18::text[], $19::text[], \
     $20::bytea[], $21::bytea[], $26::int[]) AS u), \
     n AS (SELECT pg_notify($24, t) FROM unnest($25::text[]) AS t) \
     UPDATE audit_heads SET sequence = $22, hash = $23 \
     WHERE tenant_id = $1 AND (SELECT count(*) FROM n) >= 0"
);

/// Commits a batch of events on the head `$22`..`$25` names, checking the
/// reveals `$27`..`$32` at `$26` and storing the leases they open (as
/// rows `$34`..`$46`, or in their events, `$47`..`$52`); the events'
/// formats are `$33` (see [`fast`]).
const APPEND_CHECKED_EVENTS: &str = "\
    SELECT append_checked_events($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, \
    $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, \
    $33, $34, $35, $36, $37, $38, $39, $40, $41, $42, $43, $44, $45, $46, $47, $48, $49, $50, \
    $51, $52)";

type PgQuery<'a> = sqlx::query::Query<'a, Postgres, sqlx::postgres::PgArguments>;

impl<'a> EventColumns<'a> {
    fn new(events: &'a [AuditEvent]) -> Result<Self> {
        let n = events.len();
        let mut c = EventColumns {
            sequence: Vec::with_capacity(n),
            id: Vec::with_capacity(n),
            at: Vec::with_capacity(n),
            principal: Vec::with_capacity(n),
            actor: Vec::with_capacity(n),
            on_behalf_of: Vec::with_capacity(n),
            action: Vec::with_capacity(n),
            credential: Vec::with_capacity(n),
            credential_name: Vec::with_capacity(n),
            version: Vec::with_capacity(n),
            environment: Vec::with_capacity(n),
            purpose: Vec::with_capacity(n),
            outcome: Vec::with_capacity(n),
            reason_code: Vec::with_capacity(n),
            peer: Vec::with_capacity(n),
            request_id: Vec::with_capacity(n),
            trace_id: Vec::with_capacity(n),
            detail: Vec::with_capacity(n),
            prev_hash: Vec::with_capacity(n),
            hash: Vec::with_capacity(n),
            format: Vec::with_capacity(n),
        };
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
            c.sequence.push(sequence);
            c.id.push(id);
            c.at.push(at);
            c.principal.push(principal);
            c.actor.push(actor);
            c.on_behalf_of.push(on_behalf_of);
            c.action.push(action);
            c.credential.push(credential);
            c.credential_name.push(credential_name);
            c.version.push(version);
            c.environment.push(environment);
            c.purpose.push(purpose);
            c.outcome.push(outcome);
            c.reason_code.push(reason_code);
            c.peer.push(peer);
            c.request_id.push(request_id);
            c.trace_id.push(trace_id);
            c.detail.push(detail);
            c.prev_hash.push(prev_hash);
            c.hash.push(hash);
            c.format.push(format);
        }
        Ok(c)
    }

    /// Binds the chain and the columns as `$1` to `$21`; the formats are
    /// returned, to be bound after the statement's other parameters.
    fn bind(self, chain: TenantId, q: PgQuery<'a>) -> (PgQuery<'a>, Vec<i32>) {
        let q = q
            .bind(chain.as_uuid())
            .bind(self.sequence)
            .bind(self.id)
            .bind(self.at)
            .bind(self.principal)
            .bind(self.actor)
            .bind(self.on_behalf_of)
            .bind(self.action)
            .bind(self.credential)
            .bind(self.credential_name)
            .bind(self.version)
            .bind(self.environment)
            .bind(self.purpose)
            .bind(self.outcome)
            .bind(self.reason_code)
            .bind(self.peer)
            .bind(self.request_id)
            .bind(self.trace_id)
            .bind(self.detail)
            .bind(self.prev_hash)
            .bind(self.hash);
        (q, self.format)
    }
}

/// Inserts sealed audit events, advances the chain head to `head` and
/// announces `changes` (delivered at commit), with one statement of fixed
/// text.
pub(super) async fn insert(
    tx: &mut Transaction<'static, Postgres>,
    events: &[AuditEvent],
    head: Head,
    origin: uuid::Uuid,
    changes: &[Change],
) -> Result<()> {
    let Some(first) = events.first() else {
        return Ok(());
    };
    let to =
        i64::try_from(head.sequence).map_err(|_| Error::internal("audit sequence overflow"))?;
    let notices = notice_texts(origin, changes);
    // The notices' CTE is referenced from the WHERE clause: a CTE that
    // nothing references is never run. Covered by the conformance case
    // pg_changes_announce_other_servers_mutations.
    let (query, formats) =
        EventColumns::new(events)?.bind(first.tenant, sqlx::query(INSERT_EVENTS));
    query
        .bind(to)
        .bind(head.hash.as_slice())
        .bind(CHANGES_CHANNEL)
        .bind(notices)
        .bind(formats)
        .execute(&mut **tx)
        .await
        .map_err(db("audit event"))?;
    Ok(())
}

/// Commits a batch of audit events only (reveals, denials) in one round
/// trip: the function `append_checked_events` (migration
/// 20261206000003, last replaced by 20261210010001), called as a statement
/// of its own, binds the tenant, locks the chain head if it is still the
/// one this committer last wrote,
/// checks every reveal against the state committed after the lock (the
/// rule of [`crate::group_commit::checks`], stated in SQL), inserts the
/// events sealed on that head and advances it; PostgreSQL commits when the
/// statement ends, before the answer comes back. If the head moved (another
/// writer, or the previous commit failed) or a check fails, nothing is
/// written and the drafts go back for the full path, which finds the
/// failing job.
pub(super) async fn fast(
    store: &PgStore,
    tenant: TenantId,
    works: &[Work],
    drafts: Vec<AuditDraft>,
    head: Head,
    held: &mut Option<PoolConnection<Postgres>>,
) -> Result<Fast> {
    let (events, after) = head.seal(tenant, drafts);
    let (next, prev) = (after.sequence, after.hash);
    let to = i64::try_from(next).map_err(|_| Error::internal("audit sequence overflow"))?;
    let from =
        i64::try_from(head.sequence).map_err(|_| Error::internal("audit sequence overflow"))?;
    let checks = Checks::new(works);
    let leases = Leases::new(works, &events)?;
    let now = strongroom_core::time::Timestamp::now().as_micros();
    // A connection the server closed meanwhile (a restart, an idle
    // timeout, a terminated backend) fails the call: the batch is sent
    // once more on a fresh connection. Safe even if the first call
    // committed before its reply was lost: the function then finds the
    // head already at `to`, or (another writer appended meanwhile) the
    // batch's last event at `to` with its hash, and answers 'ok' without
    // writing again (conformance case
    // pg_batch_resent_after_a_lost_reply_is_chained_once).
    let mut attempts = 0;
    let row = loop {
        let conn = match held {
            Some(c) => c,
            None => held.insert(store.pool().acquire().await.map_err(db("audit event"))?),
        };
        let (query, formats) =
            EventColumns::new(&events)?.bind(tenant, sqlx::query(APPEND_CHECKED_EVENTS));
        let result = query
            .bind(to)
            .bind(prev.as_slice())
            .bind(from)
            .bind(head.hash.as_slice())
            .bind(now)
            .bind(checks.credential.as_slice())
            .bind(checks.version.as_slice())
            .bind(checks.principal.as_slice())
            .bind(checks.role.as_slice())
            .bind(checks.grant.as_slice())
            .bind(checks.binding.as_slice())
            .bind(formats)
            .bind(leases.rows.id.as_slice())
            .bind(leases.rows.credential.as_slice())
            .bind(leases.rows.credential_name.as_slice())
            .bind(leases.rows.environment.as_slice())
            .bind(leases.rows.version.as_slice())
            .bind(leases.rows.principal.as_slice())
            .bind(leases.rows.grant.as_slice())
            .bind(leases.rows.on_behalf_of.as_slice())
            .bind(leases.rows.purpose.as_slice())
            .bind(leases.rows.ttl_secs.as_slice())
            .bind(leases.rows.issued_at.as_slice())
            .bind(leases.rows.expires_at.as_slice())
            .bind(leases.rows.max_expires_at.as_slice())
            .bind(leases.in_event.id.as_slice())
            .bind(leases.in_event.grant.as_slice())
            .bind(leases.in_event.ttl_secs.as_slice())
            .bind(leases.in_event.issued_at.as_slice())
            .bind(leases.in_event.expires_at.as_slice())
            .bind(leases.in_event.max_expires_at.as_slice())
            .fetch_one(&mut **conn)
            .await;
        match result {
            Ok(row) => {
                // Test hook: the batch committed; act as if its reply was
                // lost on a closed connection (see
                // `PgStore::lose_next_commit_reply`).
                #[cfg(feature = "fault-injection")]
                if attempts == 0
                    && let Some(hook) = store.take_lost_reply()
                {
                    attempts += 1;
                    if let Some(mut c) = held.take() {
                        c.close_on_drop();
                    }
                    let _ = hook.committed.send(());
                    let _ = hook.resend.await;
                    continue;
                }
                break row;
            }
            Err(e) if attempts == 0 && crate::error::connection_lost(&e) => {
                attempts += 1;
                if let Some(mut c) = held.take() {
                    c.close_on_drop();
                }
            }
            // The database refused the batch's data on the first try:
            // nothing was written (the statement is its own transaction);
            // the full path finds the job at fault and commits the others.
            // After a resend the first try may have committed, so a failure
            // then is an error, never a redo.
            Err(sqlx::Error::Database(e))
                if attempts == 0 && !crate::error::connection_lost_code(e.code()) =>
            {
                tracing::warn!(error = %e, "audit batch refused on the short path");
                *held = None;
                return Ok(Fast::Redo(events.into_iter().map(|e| e.draft).collect()));
            }
            Err(e) => {
                *held = None;
                return Err(db("audit event")(e));
            }
        }
    };
    let outcome: &str = sqlx::Row::try_get(&row, 0).map_err(db("audit event"))?;
    // The connection is kept for the next batch only while the pool has
    // others idle: with none, callers (other tenants' committers, reads)
    // may be waiting for one, and this committer may have work for as long
    // as its tenant's traffic lasts.
    if store.pool().num_idle() == 0 {
        *held = None;
    }
    if outcome != "ok" {
        return Ok(Fast::Redo(events.into_iter().map(|e| e.draft).collect()));
    }
    Ok(Fast::Committed(
        events,
        Head {
            sequence: next,
            hash: prev,
        },
    ))
}

/// The reveal checks of a batch as column arrays, for
/// `append_checked_events`, in the function's two parts: each distinct
/// credential with the version it was decided on (`credential`,
/// `version`), and each distinct holder (`principal`, `role`, `grant`,
/// `binding`). The parts are independent (no condition of one reads the
/// other's columns, migration 20261210010001), so a batch of many reveals
/// by one agent sends its principal once.
struct Checks {
    credential: Vec<uuid::Uuid>,
    version: Vec<i64>,
    principal: Vec<uuid::Uuid>,
    role: Vec<&'static str>,
    grant: Vec<Option<uuid::Uuid>>,
    binding: Vec<Option<uuid::Uuid>>,
}

impl Checks {
    fn new(works: &[Work]) -> Self {
        let mut credentials = Vec::with_capacity(works.len());
        let mut holders = Vec::with_capacity(works.len());
        for w in works {
            if let Work::Reveal(check, _) = w {
                credentials.push((check.credential.as_uuid(), i64::from(check.version)));
                holders.push((
                    check.principal.as_uuid(),
                    check.role.as_str(),
                    check.grant.map(|g| g.as_uuid()),
                    check.binding.map(|b| b.as_uuid()),
                ));
            }
        }
        credentials.sort_unstable();
        credentials.dedup();
        holders.sort_unstable();
        holders.dedup();
        let (credential, version) = credentials.into_iter().unzip();
        let mut c = Checks {
            credential,
            version,
            principal: Vec::with_capacity(holders.len()),
            role: Vec::with_capacity(holders.len()),
            grant: Vec::with_capacity(holders.len()),
            binding: Vec::with_capacity(holders.len()),
        };
        for (principal, role, grant, binding) in holders {
            c.principal.push(principal);
            c.role.push(role);
            c.grant.push(grant);
            c.binding.push(binding);
        }
        c
    }
}

/// The leases a batch's reveals open, for `append_checked_events`
/// (stored only if every check holds). A lease is recorded by its reveal's
/// event (migration 20261211010001): the `in_event` columns are aligned
/// with the batch's events, empty for an event that opens none. A lease
/// whose event does not hold its other columns (credential, name,
/// environment, version, principal, purpose, on-behalf-of) gets a row of
/// its own instead, from the `rows` columns; no reveal of this server
/// makes one, but no lease depends on that.
struct Leases<'a> {
    in_event: InEvent,
    rows: LeaseRows<'a>,
}

/// The lease columns of a batch's events.
struct InEvent {
    id: Vec<Option<uuid::Uuid>>,
    grant: Vec<Option<uuid::Uuid>>,
    ttl_secs: Vec<Option<i64>>,
    issued_at: Vec<Option<i64>>,
    expires_at: Vec<Option<i64>>,
    max_expires_at: Vec<Option<i64>>,
}

/// Leases stored as rows, as column arrays.
struct LeaseRows<'a> {
    id: Vec<uuid::Uuid>,
    credential: Vec<uuid::Uuid>,
    credential_name: Vec<&'a str>,
    environment: Vec<&'a str>,
    version: Vec<i32>,
    principal: Vec<uuid::Uuid>,
    grant: Vec<Option<uuid::Uuid>>,
    on_behalf_of: Vec<Option<&'a str>>,
    purpose: Vec<Option<&'a str>>,
    ttl_secs: Vec<i64>,
    issued_at: Vec<i64>,
    expires_at: Vec<i64>,
    max_expires_at: Vec<i64>,
}

/// Whether `event` holds every column of `lease` that a lease event does
/// not add (migration 20261211010001).
fn event_records(event: &AuditEvent, lease: &Lease) -> bool {
    let d = &event.draft;
    event.tenant == lease.tenant
        && d.credential == Some(lease.credential)
        && d.credential_name.as_deref() == Some(lease.credential_name.as_str())
        && d.environment.as_deref() == Some(lease.environment.as_str())
        && d.version == Some(lease.version)
        && d.principal == Some(lease.principal)
        && d.on_behalf_of == lease.on_behalf_of
        && d.purpose == lease.purpose
}

impl<'a> Leases<'a> {
    /// The leases of `works`, whose events are `events` (one each, in
    /// order).
    fn new(works: &'a [Work], events: &[AuditEvent]) -> Result<Self> {
        if works.len() != events.len() {
            return Err(Error::internal(
                "a batch's jobs and events differ in number",
            ));
        }
        let n = works.len();
        let mut in_event = InEvent {
            id: Vec::with_capacity(n),
            grant: Vec::with_capacity(n),
            ttl_secs: Vec::with_capacity(n),
            issued_at: Vec::with_capacity(n),
            expires_at: Vec::with_capacity(n),
            max_expires_at: Vec::with_capacity(n),
        };
        let mut rows = LeaseRows {
            id: Vec::new(),
            credential: Vec::new(),
            credential_name: Vec::new(),
            environment: Vec::new(),
            version: Vec::new(),
            principal: Vec::new(),
            grant: Vec::new(),
            on_behalf_of: Vec::new(),
            purpose: Vec::new(),
            ttl_secs: Vec::new(),
            issued_at: Vec::new(),
            expires_at: Vec::new(),
            max_expires_at: Vec::new(),
        };
        for (w, e) in works.iter().zip(events) {
            let lease = match w {
                Work::Reveal(_, Some(l)) => Some(&**l),
                _ => None,
            };
            match lease {
                Some(l) if event_records(e, l) => {
                    in_event.id.push(Some(l.id.as_uuid()));
                    in_event.grant.push(l.grant.map(|g| g.as_uuid()));
                    in_event.ttl_secs.push(Some(ttl_secs(l)));
                    in_event.issued_at.push(Some(l.issued_at.as_micros()));
                    in_event.expires_at.push(Some(l.expires_at.as_micros()));
                    in_event
                        .max_expires_at
                        .push(Some(l.max_expires_at.as_micros()));
                    continue;
                }
                Some(l) => {
                    rows.id.push(l.id.as_uuid());
                    rows.credential.push(l.credential.as_uuid());
                    rows.credential_name.push(l.credential_name.as_str());
                    rows.environment.push(l.environment.as_str());
                    rows.version.push(crate::rows::version_i32(l.version)?);
                    rows.principal.push(l.principal.as_uuid());
                    rows.grant.push(l.grant.map(|g| g.as_uuid()));
                    rows.on_behalf_of.push(l.on_behalf_of.as_deref());
                    rows.purpose.push(l.purpose.as_deref());
                    rows.ttl_secs.push(ttl_secs(l));
                    rows.issued_at.push(l.issued_at.as_micros());
                    rows.expires_at.push(l.expires_at.as_micros());
                    rows.max_expires_at.push(l.max_expires_at.as_micros());
                }
                None => {}
            }
            in_event.id.push(None);
            in_event.grant.push(None);
            in_event.ttl_secs.push(None);
            in_event.issued_at.push(None);
            in_event.expires_at.push(None);
            in_event.max_expires_at.push(None);
        }
        Ok(Leases { in_event, rows })
    }
}
