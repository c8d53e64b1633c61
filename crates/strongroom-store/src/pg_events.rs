//! Postgres: a group commit's rotations, creates and audit events as
//! multi-row statements of fixed text (prepared once per connection, whatever
//! the batch size) instead of statements run job after job, and the short
//! path of a batch of events only. Rotations lock in credential-id order and
//! creates insert in environment-and-name order, the orders the job-by-job
//! path uses, so committers of two servers cannot deadlock. Whatever is not
//! handled here (a single create, a second rotation of one credential or
//! create of one name, a failed compare-and-set, an unknown credential or
//! environment) is left to the job-by-job path, which runs after and also
//! works out the precise error.

use std::collections::HashSet;

use sqlx::pool::PoolConnection;
use sqlx::{Postgres, Transaction};
use strongroom_core::audit::{AuditDraft, AuditEvent};
use strongroom_core::credential::{Credential, StoredVersion};
use strongroom_core::ids::TenantId;
use strongroom_core::{Error, Result};

use crate::batch::{Fast, Head, Work};
use crate::error::db;
use crate::postgres::PgStore;
use crate::rows::{json, version_i32};

/// A job's outcome when the bulk path decided it.
pub(crate) type Outcome = Option<Result<Option<Credential>>>;

impl PgStore {
    /// Runs the batch's creates in bulk where it can; returns an outcome for
    /// each job it decided, `None` for the rest.
    pub(crate) async fn bulk_mutations(
        tx: &mut Transaction<'static, Postgres>,
        tenant: TenantId,
        works: &[Work],
    ) -> Result<Vec<Outcome>> {
        let mut out: Vec<Outcome> = works.iter().map(|_| None).collect();
        Self::bulk_rotations(tx, tenant, works, &mut out).await?;
        Self::bulk_creates(tx, tenant, works, &mut out).await?;
        Ok(out)
    }

    /// Adds the batch's new versions in two statements, before any create:
    /// one locks the credentials in id order (the order every committer
    /// locks them in, so two servers' batches cannot deadlock); one advances each credential
    /// whose latest version is still the expected one, inserts its version
    /// and prunes to its retention. A job whose compare-and-set fails, and a
    /// second rotation of one credential in the batch, are left to the
    /// job-by-job path, which works out the precise error.
    async fn bulk_rotations(
        tx: &mut Transaction<'static, Postgres>,
        tenant: TenantId,
        works: &[Work],
        out: &mut [Outcome],
    ) -> Result<()> {
        let mut seen = HashSet::new();
        let mut jobs: Vec<(usize, uuid::Uuid, u32, &StoredVersion, u32)> = Vec::new();
        for (i, w) in works.iter().enumerate() {
            if let Work::AddVersion {
                id,
                expected_latest,
                version,
                retention,
            } = w
                && seen.insert(id.as_uuid())
            {
                jobs.push((i, id.as_uuid(), *expected_latest, version, *retention));
            }
        }
        // Even a single rotation goes this way, so that every batch locks
        // its rotated credentials before the creates' keys.
        if jobs.is_empty() {
            return Ok(());
        }
        jobs.sort_by_key(|j| j.1);
        let n = jobs.len();
        let mut id = Vec::with_capacity(n);
        let mut expected = Vec::with_capacity(n);
        let mut version = Vec::with_capacity(n);
        let mut envelope: Vec<Option<&[u8]>> = Vec::with_capacity(n);
        let mut kek = Vec::with_capacity(n);
        let mut at = Vec::with_capacity(n);
        let mut by = Vec::with_capacity(n);
        let mut keep_from = Vec::with_capacity(n);
        for (_, cid, exp, v, retention) in &jobs {
            id.push(*cid);
            expected.push(version_i32(*exp)?);
            version.push(version_i32(v.version)?);
            envelope.push(v.envelope.as_deref());
            kek.push(version_i32(v.kek_version)?);
            at.push(v.created_at.as_micros());
            by.push(v.created_by.as_uuid());
            let keep = i64::from(v.version) - i64::from((*retention).max(1));
            keep_from.push(i32::try_from(keep.max(0)).unwrap_or(0));
        }
        sqlx::query(
            "SELECT 1 FROM credentials WHERE tenant_id = $1 AND id = ANY($2) ORDER BY id FOR UPDATE",
        )
        .bind(tenant.as_uuid())
        .bind(&id)
        .execute(&mut **tx)
        .await
        .map_err(db("credential"))?;
        let rows: Vec<crate::rows::CredentialRow> = sqlx::query_as(concat!(
            "WITH i AS (SELECT * FROM unnest($2::uuid[], $3::int[], $4::int[], $5::bytea[], $6::int[], \
               $7::bigint[], $8::uuid[], $9::int[]) AS u(id, expected, version, envelope, kek, written_at, author, keep_from)), \
             upd AS (UPDATE credentials c SET current_version = i.version, latest_version = i.version, \
               rotated_at = i.written_at, updated_at = i.written_at FROM i \
               WHERE c.tenant_id = $1 AND c.id = ANY($2) AND c.id = i.id AND c.latest_version = i.expected \
               AND c.status = 'active' AND c.destroyed_at IS NULL RETURNING c.*), \
             ins AS (INSERT INTO credential_versions \
               (tenant_id, credential_id, version, envelope, kek_version, created_at, created_by) \
               SELECT $1, i.id, i.version, i.envelope, i.kek, i.written_at, i.author FROM i JOIN upd ON upd.id = i.id), \
             del AS (DELETE FROM credential_versions v USING upd, i \
               WHERE v.tenant_id = $1 AND v.credential_id = upd.id AND i.id = upd.id AND v.version <= i.keep_from) \
             SELECT ",
            crate::shared::credential_cols!(),
            " FROM upd"
        ))
        .bind(tenant.as_uuid())
        .bind(&id)
        .bind(expected)
        .bind(version)
        .bind(envelope)
        .bind(kek)
        .bind(at)
        .bind(by)
        .bind(keep_from)
        .fetch_all(&mut **tx)
        .await
        .map_err(db("credential"))?;
        let mut written = std::collections::HashMap::with_capacity(rows.len());
        for row in rows {
            let c: Credential = row.try_into()?;
            written.insert(c.id.as_uuid(), c);
        }
        for (i, cid, ..) in jobs {
            if let Some(c) = written.remove(&cid) {
                out[i] = Some(Ok(Some(c)));
            }
        }
        Ok(())
    }

    async fn bulk_creates(
        tx: &mut Transaction<'static, Postgres>,
        tenant: TenantId,
        works: &[Work],
        out: &mut [Outcome],
    ) -> Result<()> {
        let mut names = HashSet::new();
        let mut jobs: Vec<(usize, &Credential, &StoredVersion)> = Vec::new();
        for (i, w) in works.iter().enumerate() {
            if let Work::CreateCredential { credential, first } = w
                && names.insert((credential.environment.as_str(), credential.name.as_str()))
            {
                jobs.push((i, credential, first));
            }
        }
        if jobs.len() < 2 {
            return Ok(());
        }
        jobs.sort_by(|a, b| {
            (a.1.environment.as_str(), a.1.name.as_str())
                .cmp(&(b.1.environment.as_str(), b.1.name.as_str()))
        });
        let insert = jobs;
        let n = insert.len();
        let mut id = Vec::with_capacity(n);
        let mut environment = Vec::with_capacity(n);
        let mut name = Vec::with_capacity(n);
        let mut service = Vec::with_capacity(n);
        let mut kind = Vec::with_capacity(n);
        let mut description = Vec::with_capacity(n);
        let mut tags = Vec::with_capacity(n);
        let mut scopes = Vec::with_capacity(n);
        let mut owner = Vec::with_capacity(n);
        let mut status = Vec::with_capacity(n);
        let mut current = Vec::with_capacity(n);
        let mut latest = Vec::with_capacity(n);
        let mut rotated_at = Vec::with_capacity(n);
        let mut created_at = Vec::with_capacity(n);
        let mut updated_at = Vec::with_capacity(n);
        let mut expires_at = Vec::with_capacity(n);
        let mut revoked_at = Vec::with_capacity(n);
        let mut revoke_reason = Vec::with_capacity(n);
        let mut destroyed_at = Vec::with_capacity(n);
        let mut rotation = Vec::with_capacity(n);
        let mut injection = Vec::with_capacity(n);
        let mut created_by = Vec::with_capacity(n);
        for (_, c, _) in &insert {
            id.push(c.id.as_uuid());
            environment.push(c.environment.as_str());
            name.push(c.name.as_str());
            service.push(c.service.as_str());
            kind.push(c.kind.as_str());
            description.push(c.description.as_str());
            tags.push(json(&c.tags)?);
            scopes.push(json(&c.scopes)?);
            owner.push(c.owner.as_deref());
            status.push(c.status.as_str());
            current.push(version_i32(c.current_version)?);
            latest.push(version_i32(c.latest_version)?);
            rotated_at.push(c.rotated_at.as_micros());
            created_at.push(c.created_at.as_micros());
            updated_at.push(c.updated_at.as_micros());
            expires_at.push(c.expires_at.map(|t| t.as_micros()));
            revoked_at.push(c.revoked_at.map(|t| t.as_micros()));
            revoke_reason.push(c.revoke_reason.as_deref());
            destroyed_at.push(c.destroyed_at.map(|t| t.as_micros()));
            rotation.push(c.rotation.as_ref().map(json).transpose()?);
            injection.push(c.injection.as_ref().map(json).transpose()?);
            created_by.push(c.created_by.as_uuid());
        }
        let mut v_credential = Vec::with_capacity(n);
        let mut v_version = Vec::with_capacity(n);
        let mut v_envelope: Vec<Option<&[u8]>> = Vec::with_capacity(n);
        let mut v_kek = Vec::with_capacity(n);
        let mut v_created_at = Vec::with_capacity(n);
        let mut v_created_by = Vec::with_capacity(n);
        for (_, _, v) in &insert {
            v_credential.push(v.credential.as_uuid());
            v_version.push(version_i32(v.version)?);
            v_envelope.push(v.envelope.as_deref());
            v_kek.push(version_i32(v.kek_version)?);
            v_created_at.push(v.created_at.as_micros());
            v_created_by.push(v.created_by.as_uuid());
        }
        // One statement of fixed text (prepared once): the credentials whose
        // environment exists and whose name is free, in the sorted order of
        // the arrays, with their first versions. A job left out (unknown
        // environment, name taken) goes to the job-by-job path, which names
        // the precise error.
        let inserted: HashSet<uuid::Uuid> = sqlx::query_scalar(concat!(
            "WITH ins AS (INSERT INTO credentials (",
            crate::shared::credential_cols!(),
            ") SELECT $1, u.a1, u.a2, u.a3, u.a4, u.a5, u.a6, u.a7, u.a8, u.a9, u.a10, u.a11, u.a12, u.a13, u.a14, u.a15, u.a16, u.a17, u.a18, u.a19, u.a20, u.a21, u.a22 \
             FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], \
             $8::text[], $9::text[], $10::text[], $11::text[], $12::int[], $13::int[], $14::bigint[], $15::bigint[], \
             $16::bigint[], $17::bigint[], $18::bigint[], $19::text[], $20::bigint[], $21::text[], $22::text[], \
             $23::uuid[]) WITH ORDINALITY AS u(a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15, a16, a17, a18, a19, a20, a21, a22, ord) \
             WHERE EXISTS (SELECT 1 FROM environments e WHERE e.tenant_id = $1 AND e.name = u.a2) ORDER BY u.ord \
             ON CONFLICT (tenant_id, environment, name) DO NOTHING RETURNING id), \
             ver AS (INSERT INTO credential_versions \
               (tenant_id, credential_id, version, envelope, kek_version, created_at, created_by) \
               SELECT $1, v.* FROM unnest($24::uuid[], $25::int[], $26::bytea[], $27::int[], $28::bigint[], $29::uuid[]) \
               AS v(credential_id, version, envelope, kek_version, created_at, created_by) \
               WHERE v.credential_id IN (SELECT id FROM ins)) \
             SELECT id FROM ins"
        ))
        .bind(tenant.as_uuid())
        .bind(id)
        .bind(environment)
        .bind(name)
        .bind(service)
        .bind(kind)
        .bind(description)
        .bind(tags)
        .bind(scopes)
        .bind(owner)
        .bind(status)
        .bind(current)
        .bind(latest)
        .bind(rotated_at)
        .bind(created_at)
        .bind(updated_at)
        .bind(expires_at)
        .bind(revoked_at)
        .bind(revoke_reason)
        .bind(destroyed_at)
        .bind(rotation)
        .bind(injection)
        .bind(created_by)
        .bind(v_credential)
        .bind(v_version)
        .bind(v_envelope)
        .bind(v_kek)
        .bind(v_created_at)
        .bind(v_created_by)
        .fetch_all(&mut **tx)
        .await
        .map_err(db("credential"))?
        .into_iter()
        .collect();
        for (i, c, _) in insert {
            if inserted.contains(&c.id.as_uuid()) {
                out[i] = Some(Ok(Some(c.clone())));
            }
        }
        Ok(())
    }
}

/// A batch's sealed audit events as column arrays, for the fixed-text
/// multi-row insert (parameters `$2` to `$21`; `$1` is the tenant).
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
}

/// The insert of [`EventColumns`] (a statement's first part: it names no
/// statement end).
macro_rules! insert_events_sql {
    () => {
        concat!(
            "INSERT INTO audit_events (",
            crate::shared::audit_cols!(),
            ") SELECT $1, u.* FROM unnest($2::bigint[], $3::uuid[], $4::bigint[], $5::uuid[], $6::text[], \
             $7::text[], $8::text[], $9::uuid[], $10::text[], $11::int[], $12::text[], $13::text[], $14::text[], \
             $15::text[], $16::text[], $17::text[], $18::text[], $19::text[], $20::bytea[], $21::bytea[]) AS u"
        )
    };
}

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
        };
        for e in events {
            let d = &e.draft;
            c.sequence.push(
                i64::try_from(e.sequence)
                    .map_err(|_| Error::internal("audit sequence overflow"))?,
            );
            c.id.push(d.id.as_uuid());
            c.at.push(d.at.as_micros());
            c.principal.push(d.principal.map(|p| p.as_uuid()));
            c.actor.push(d.actor.as_str());
            c.on_behalf_of.push(d.on_behalf_of.as_deref());
            c.action.push(d.action.as_str());
            c.credential.push(d.credential.map(|c| c.as_uuid()));
            c.credential_name.push(d.credential_name.as_deref());
            c.version.push(d.version.map(version_i32).transpose()?);
            c.environment.push(d.environment.as_deref());
            c.purpose.push(d.purpose.as_deref());
            c.outcome.push(d.outcome.as_str());
            c.reason_code.push(d.reason_code.as_str());
            c.peer.push(d.peer.as_deref());
            c.request_id.push(d.request_id.as_deref());
            c.trace_id.push(d.trace_id.as_deref());
            c.detail.push(d.detail.as_deref());
            c.prev_hash.push(e.prev_hash.as_slice());
            c.hash.push(e.hash.as_slice());
        }
        Ok(c)
    }

    /// Binds the tenant and the columns as `$1` to `$21`.
    fn bind(self, tenant: TenantId, q: PgQuery<'a>) -> PgQuery<'a> {
        q.bind(tenant.as_uuid())
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
            .bind(self.hash)
    }
}

type PgQuery<'a> = sqlx::query::Query<'a, Postgres, sqlx::postgres::PgArguments>;

impl PgStore {
    /// Inserts sealed audit events, advances the chain head to (`head`,
    /// `head_hash`) and announces `changes` (delivered at commit), with one
    /// statement of fixed text.
    pub(crate) async fn insert_events(
        tx: &mut Transaction<'static, Postgres>,
        events: &[AuditEvent],
        head: i64,
        head_hash: &[u8; 32],
        origin: uuid::Uuid,
        changes: &[strongroom_core::store::Change],
    ) -> Result<()> {
        let Some(first) = events.first() else {
            return Ok(());
        };
        let notices = crate::postgres::notice_texts(origin, changes);
        let q = sqlx::query(concat!(
            "WITH ins AS (",
            insert_events_sql!(),
            // The notices' CTE is referenced from the WHERE clause: a CTE
            // that nothing references is never run. Covered by the
            // conformance case pg_changes_announce_other_servers_mutations.
            "), n AS (SELECT pg_notify($24, t) FROM unnest($25::text[]) AS t) \
             UPDATE audit_heads SET sequence = $22, hash = $23 \
             WHERE tenant_id = $1 AND (SELECT count(*) FROM n) >= 0"
        ));
        EventColumns::new(events)?
            .bind(first.tenant, q)
            .bind(head)
            .bind(head_hash.as_slice())
            .bind(crate::postgres::CHANGES_CHANNEL)
            .bind(notices)
            .execute(&mut **tx)
            .await
            .map_err(db("audit event"))?;
        Ok(())
    }

    /// Commits a batch of audit events only (reveals, denials) in one round
    /// trip: the function `append_checked_events` (migration 20261206000003), called as a
    /// statement of its own, binds the tenant, locks the chain head if it is
    /// still the one this committer last wrote, re-checks every reveal
    /// against the state committed after the lock, inserts the events sealed
    /// on that head and advances it; PostgreSQL commits when the statement
    /// ends, before the answer comes back. If the head moved (another writer,
    /// or the previous commit failed) or a check fails, nothing is written
    /// and the drafts go back for the full path, which finds the failing job.
    pub(crate) async fn fast_events(
        &self,
        tenant: TenantId,
        works: &[Work],
        drafts: Vec<AuditDraft>,
        head: Head,
        held: &mut Option<PoolConnection<Postgres>>,
    ) -> Result<Fast> {
        let mut next = head.sequence;
        let mut prev = head.hash;
        let events: Vec<AuditEvent> = drafts
            .into_iter()
            .map(|d| {
                next += 1;
                let e = d.seal(tenant, next, prev);
                prev = e.hash;
                e
            })
            .collect();
        let to = i64::try_from(next).map_err(|_| Error::internal("audit sequence overflow"))?;
        let from =
            i64::try_from(head.sequence).map_err(|_| Error::internal("audit sequence overflow"))?;
        let checks = Checks::new(works);
        let now = strongroom_core::time::Timestamp::now().as_micros();
        // A connection the server closed meanwhile (a restart, an idle
        // timeout, a terminated backend) fails the call: the batch is sent
        // once more on a fresh connection. Safe even if the first call
        // committed before its reply was lost: the function then finds the
        // head already at `to`, or (another writer appended meanwhile) the
        // batch's last event at `to` with its hash, and answers 'ok'
        // without writing again (conformance case
        // pg_batch_resent_after_a_lost_reply_is_chained_once).
        let mut attempts = 0;
        let row = loop {
            let conn = match held {
                Some(c) => c,
                None => held.insert(self.pool().acquire().await.map_err(db("audit event"))?),
            };
            let q = sqlx::query(
                "SELECT append_checked_events($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, \
                 $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, \
                 $28, $29, $30, $31, $32)",
            );
            let result = EventColumns::new(&events)?
                .bind(tenant, q)
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
                .fetch_one(&mut **conn)
                .await;
            match result {
                Ok(row) => {
                    // Test hook: the batch committed; act as if its reply
                    // was lost on a closed connection (see
                    // `PgStore::lose_next_commit_reply`).
                    #[cfg(feature = "fault-injection")]
                    if attempts == 0
                        && let Some(hook) = self.take_lost_reply()
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
                // nothing was written (the statement is its own
                // transaction); the full path finds the job at fault and
                // commits the others. After a resend the first try may have
                // committed, so a failure then is an error, never a redo.
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
        // may be waiting for one, and this committer may have work for as
        // long as its tenant's traffic lasts.
        if self.pool().num_idle() == 0 {
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
}

/// The reveal checks of a batch as column arrays, for
/// `append_checked_events`.
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
        let mut c = Checks {
            credential: Vec::with_capacity(works.len()),
            version: Vec::with_capacity(works.len()),
            principal: Vec::with_capacity(works.len()),
            role: Vec::with_capacity(works.len()),
            grant: Vec::with_capacity(works.len()),
            binding: Vec::with_capacity(works.len()),
        };
        for w in works {
            if let Work::Reveal(check) = w {
                c.credential.push(check.credential.as_uuid());
                c.version.push(i64::from(check.version));
                c.principal.push(check.principal.as_uuid());
                c.role.push(check.role.as_str());
                c.grant.push(check.grant.map(|g| g.as_uuid()));
                c.binding.push(check.binding.map(|b| b.as_uuid()));
            }
        }
        c
    }
}
