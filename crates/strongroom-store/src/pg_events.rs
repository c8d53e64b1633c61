//! Postgres: a group commit's creates and audit events as multi-row
//! statements of fixed text (prepared once per connection, whatever the
//! batch size) instead of statements run job after job. Creates insert in
//! environment-and-name order, the order the job-by-job path uses, so
//! committers of two servers cannot deadlock. Whatever is not handled here
//! (a batch with a single create, a second create of the same name) is left
//! to the job-by-job path, which also works out the precise error.

use std::collections::HashSet;

use sqlx::{Postgres, Transaction};
use strongroom_core::credential::{Credential, StoredVersion};
use strongroom_core::ids::TenantId;
use strongroom_core::{Error, Result};

use crate::batch::Work;
use crate::error::db;
use crate::postgres::PgStore;
use crate::rows::{json, version_i32};

/// A job's outcome when the bulk path decided it.
pub(crate) type Outcome = Option<Result<Option<Credential>>>;

async fn insert_versions(
    tx: &mut Transaction<'static, Postgres>,
    tenant: TenantId,
    versions: &[&StoredVersion],
) -> Result<()> {
    let mut credential = Vec::with_capacity(versions.len());
    let mut version = Vec::with_capacity(versions.len());
    let mut envelope: Vec<Option<Vec<u8>>> = Vec::with_capacity(versions.len());
    let mut kek = Vec::with_capacity(versions.len());
    let mut created_at = Vec::with_capacity(versions.len());
    let mut created_by = Vec::with_capacity(versions.len());
    for v in versions {
        credential.push(v.credential.as_uuid());
        version.push(version_i32(v.version)?);
        envelope.push(v.envelope.clone());
        kek.push(version_i32(v.kek_version)?);
        created_at.push(v.created_at.as_micros());
        created_by.push(v.created_by.as_uuid());
    }
    sqlx::query(
        "INSERT INTO credential_versions \
         (tenant_id, credential_id, version, envelope, kek_version, created_at, created_by) \
         SELECT $1, u.* FROM unnest($2::uuid[], $3::int[], $4::bytea[], $5::int[], $6::bigint[], $7::uuid[]) AS u",
    )
    .bind(tenant.as_uuid())
    .bind(credential)
    .bind(version)
    .bind(envelope)
    .bind(kek)
    .bind(created_at)
    .bind(created_by)
    .execute(&mut **tx)
    .await
    .map_err(db("credential version"))?;
    Ok(())
}

impl PgStore {
    /// Runs the batch's creates in bulk where it can; returns an outcome for
    /// each job it decided, `None` for the rest.
    pub(crate) async fn bulk_mutations(
        tx: &mut Transaction<'static, Postgres>,
        tenant: TenantId,
        works: &[Work],
    ) -> Result<Vec<Outcome>> {
        let mut out: Vec<Outcome> = works.iter().map(|_| None).collect();
        Self::bulk_creates(tx, tenant, works, &mut out).await?;
        Ok(out)
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
        let environments: Vec<String> =
            sqlx::query_scalar("SELECT name FROM environments WHERE tenant_id = $1")
                .bind(tenant.as_uuid())
                .fetch_all(&mut **tx)
                .await
                .map_err(db("environment"))?;
        let mut insert = Vec::new();
        for job in jobs {
            if environments.iter().any(|e| e == job.1.environment.as_str()) {
                insert.push(job);
            } else {
                out[job.0] = Some(Err(Error::not_found("environment")));
            }
        }
        if insert.is_empty() {
            return Ok(());
        }
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
        // One statement of fixed text (prepared once), rows in the sorted
        // order of the arrays.
        let inserted: HashSet<uuid::Uuid> = sqlx::query_scalar(concat!(
            "INSERT INTO credentials (",
            crate::shared::credential_cols!(),
            ") SELECT $1, u.a1, u.a2, u.a3, u.a4, u.a5, u.a6, u.a7, u.a8, u.a9, u.a10, u.a11, u.a12, u.a13, u.a14, u.a15, u.a16, u.a17, u.a18, u.a19, u.a20, u.a21, u.a22 \
             FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], \
             $8::text[], $9::text[], $10::text[], $11::text[], $12::int[], $13::int[], $14::bigint[], $15::bigint[], \
             $16::bigint[], $17::bigint[], $18::bigint[], $19::text[], $20::bigint[], $21::text[], $22::text[], \
             $23::uuid[]) WITH ORDINALITY AS u(a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15, a16, a17, a18, a19, a20, a21, a22, ord) ORDER BY u.ord \
             ON CONFLICT (tenant_id, environment, name) DO NOTHING RETURNING id"
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
        .fetch_all(&mut **tx)
        .await
        .map_err(db("credential"))?
        .into_iter()
        .collect();
        let versions: Vec<&StoredVersion> = insert
            .iter()
            .filter(|(_, c, _)| inserted.contains(&c.id.as_uuid()))
            .map(|(_, _, v)| *v)
            .collect();
        if !versions.is_empty() {
            insert_versions(tx, tenant, &versions).await?;
        }
        for (i, c, _) in insert {
            out[i] = Some(if inserted.contains(&c.id.as_uuid()) {
                Ok(Some(c.clone()))
            } else {
                Err(Error::already_exists("credential"))
            });
        }
        Ok(())
    }
}

impl PgStore {
    /// Inserts sealed audit events and advances the chain head to (`head`,
    /// `head_hash`), with one statement of fixed text.
    pub(crate) async fn insert_events(
        tx: &mut Transaction<'static, Postgres>,
        events: &[strongroom_core::audit::AuditEvent],
        head: i64,
        head_hash: &[u8; 32],
    ) -> Result<()> {
        let n = events.len();
        let Some(first) = events.first() else {
            return Ok(());
        };
        let mut sequence = Vec::with_capacity(n);
        let mut id = Vec::with_capacity(n);
        let mut at = Vec::with_capacity(n);
        let mut principal = Vec::with_capacity(n);
        let mut actor = Vec::with_capacity(n);
        let mut on_behalf_of = Vec::with_capacity(n);
        let mut action = Vec::with_capacity(n);
        let mut credential = Vec::with_capacity(n);
        let mut credential_name = Vec::with_capacity(n);
        let mut version = Vec::with_capacity(n);
        let mut environment = Vec::with_capacity(n);
        let mut purpose = Vec::with_capacity(n);
        let mut outcome = Vec::with_capacity(n);
        let mut reason_code = Vec::with_capacity(n);
        let mut peer = Vec::with_capacity(n);
        let mut request_id = Vec::with_capacity(n);
        let mut trace_id = Vec::with_capacity(n);
        let mut detail = Vec::with_capacity(n);
        let mut prev_hash = Vec::with_capacity(n);
        let mut hash = Vec::with_capacity(n);
        for e in events {
            let d = &e.draft;
            sequence.push(
                i64::try_from(e.sequence)
                    .map_err(|_| Error::internal("audit sequence overflow"))?,
            );
            id.push(d.id.as_uuid());
            at.push(d.at.as_micros());
            principal.push(d.principal.map(|p| p.as_uuid()));
            actor.push(d.actor.as_str());
            on_behalf_of.push(d.on_behalf_of.as_deref());
            action.push(d.action.as_str());
            credential.push(d.credential.map(|c| c.as_uuid()));
            credential_name.push(d.credential_name.as_deref());
            version.push(d.version.map(version_i32).transpose()?);
            environment.push(d.environment.as_deref());
            purpose.push(d.purpose.as_deref());
            outcome.push(d.outcome.as_str());
            reason_code.push(d.reason_code.as_str());
            peer.push(d.peer.as_deref());
            request_id.push(d.request_id.as_deref());
            trace_id.push(d.trace_id.as_deref());
            detail.push(d.detail.as_deref());
            prev_hash.push(e.prev_hash.to_vec());
            hash.push(e.hash.to_vec());
        }
        sqlx::query(concat!(
            "WITH ins AS (INSERT INTO audit_events (",
            crate::shared::audit_cols!(),
            ") SELECT $1, u.* FROM unnest($2::bigint[], $3::uuid[], $4::bigint[], $5::uuid[], $6::text[], \
             $7::text[], $8::text[], $9::uuid[], $10::text[], $11::int[], $12::text[], $13::text[], $14::text[], \
             $15::text[], $16::text[], $17::text[], $18::text[], $19::text[], $20::bytea[], $21::bytea[]) AS u) \
             UPDATE audit_heads SET sequence = $22, hash = $23 WHERE tenant_id = $1"
        ))
        .bind(first.tenant.as_uuid())
        .bind(sequence)
        .bind(id)
        .bind(at)
        .bind(principal)
        .bind(actor)
        .bind(on_behalf_of)
        .bind(action)
        .bind(credential)
        .bind(credential_name)
        .bind(version)
        .bind(environment)
        .bind(purpose)
        .bind(outcome)
        .bind(reason_code)
        .bind(peer)
        .bind(request_id)
        .bind(trace_id)
        .bind(detail)
        .bind(prev_hash)
        .bind(hash)
        .bind(head)
        .bind(head_hash.as_slice())
        .execute(&mut **tx)
        .await
        .map_err(db("audit event"))?;
        Ok(())
    }
}
