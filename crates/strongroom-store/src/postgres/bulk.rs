//! Postgres' bulk path of the group committer: a batch's rotations and
//! creates as multi-row statements of fixed text (prepared once per
//! connection, whatever the batch size) instead of statements run job after
//! job. Rotations lock in credential-id order and creates insert in
//! environment-and-name order, the orders the job-by-job path uses, so
//! committers of two servers cannot deadlock. Whatever is not handled here
//! (a single create, a second rotation of one credential or create of one
//! name, a failed compare-and-set, an unknown credential or environment) is
//! left to the job-by-job path, which runs after and also works out the
//! precise error.

use std::collections::{HashMap, HashSet};

use sqlx::{Postgres, Transaction};
use strongroom_core::Result;
use strongroom_core::credential::{Credential, StoredVersion};
use strongroom_core::ids::TenantId;

use crate::error::db;
use crate::group_commit::{Outcome, Work};
use crate::rows::{CredentialRow, credential_columns, json, version_i32};

/// Locks tenant `$1`'s credentials whose ids are in `$2`, in id order.
const LOCK_CREDENTIALS: &str =
    "SELECT 1 FROM credentials WHERE tenant_id = $1 AND id = ANY($2) ORDER BY id FOR UPDATE";

/// Tenant `$1`'s KEK versions among `$2`, locked against deletion.
const KEK_VERSIONS: &str =
    "SELECT version FROM tenant_keks WHERE tenant_id = $1 AND version = ANY($2) FOR KEY SHARE";

/// Advances each of tenant `$1`'s credentials `$2` whose latest version is
/// still the expected `$3` (and that is active) to version `$4`, inserts
/// the version (`$5`..`$8`) and prunes the versions up to `$9`; returns the
/// credentials advanced.
const ROTATE: &str = concat!(
    "WITH i AS (SELECT * FROM unnest($2::uuid[], $3::int[], $4::int[], $5::bytea[], \
       $6::int[], $7::bigint[], $8::uuid[], $9::int[]) \
       AS u(id, expected, version, envelope, kek, written_at, author, keep_from)), \
     upd AS (UPDATE credentials c SET current_version = i.version, \
       latest_version = i.version, rotated_at = i.written_at, updated_at = i.written_at \
       FROM i WHERE c.tenant_id = $1 AND c.id = ANY($2) AND c.id = i.id \
       AND c.latest_version = i.expected AND c.status = 'active' AND c.destroyed_at IS NULL \
       RETURNING c.*), \
     ins AS (INSERT INTO credential_versions \
       (tenant_id, credential_id, version, envelope, kek_version, created_at, created_by) \
       SELECT $1, i.id, i.version, i.envelope, i.kek, i.written_at, i.author \
       FROM i JOIN upd ON upd.id = i.id), \
     del AS (DELETE FROM credential_versions v USING upd, i \
       WHERE v.tenant_id = $1 AND v.credential_id = upd.id AND i.id = upd.id \
       AND v.version <= i.keep_from) \
     SELECT ",
    credential_columns!(),
    " FROM upd"
);

/// Inserts, for tenant `$1`, the credentials `$2`..`$23` (columns in
/// [`credential_columns!`] order but the tenant) whose environment exists
/// and whose name is free, in the arrays' order, with their first versions
/// `$24`..`$29`; returns the ids inserted.
const CREATE: &str = concat!(
    "WITH ins AS (INSERT INTO credentials (",
    credential_columns!(),
    ") SELECT $1, u.a1, u.a2, u.a3, u.a4, u.a5, u.a6, u.a7, u.a8, u.a9, u.a10, u.a11, u.a12, \
       u.a13, u.a14, u.a15, u.a16, u.a17, u.a18, u.a19, u.a20, u.a21, u.a22 \
     FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], \
       $8::text[], $9::text[], $10::text[], $11::text[], $12::int[], $13::int[], $14::bigint[], \
       $15::bigint[], $16::bigint[], $17::bigint[], $18::bigint[], $19::text[], $20::bigint[], \
       $21::text[], $22::text[], $23::uuid[]) WITH ORDINALITY AS u(a1, a2, a3, a4, a5, a6, a7, \
       a8, a9, a10, a11, a12, a13, a14, a15, a16, a17, a18, a19, a20, a21, a22, ord) \
     WHERE EXISTS (SELECT 1 FROM environments e WHERE e.tenant_id = $1 AND e.name = u.a2) \
     ORDER BY u.ord \
     ON CONFLICT (tenant_id, environment, name) DO NOTHING RETURNING id), \
     ver AS (INSERT INTO credential_versions \
       (tenant_id, credential_id, version, envelope, kek_version, created_at, created_by) \
       SELECT $1, v.* FROM unnest($24::uuid[], $25::int[], $26::bytea[], $27::int[], \
       $28::bigint[], $29::uuid[]) \
       AS v(credential_id, version, envelope, kek_version, created_at, created_by) \
       WHERE v.credential_id IN (SELECT id FROM ins)) \
     SELECT id FROM ins"
);

/// Runs the batch's rotations and creates in bulk where it can; returns an
/// outcome for each job it decided, `None` for the rest.
pub(super) async fn mutations(
    tx: &mut Transaction<'static, Postgres>,
    tenant: TenantId,
    works: &[Work],
) -> Result<Vec<Outcome>> {
    let mut out: Vec<Outcome> = works.iter().map(|_| None).collect();
    if !kek_versions_exist(tx, tenant, works).await? {
        // A value sealed under a retired KEK version: the job-by-job path
        // refuses it.
        return Ok(out);
    }
    rotations(tx, tenant, works, &mut out).await?;
    creates(tx, tenant, works, &mut out).await?;
    Ok(out)
}

/// Locks (`FOR KEY SHARE`: a retirement's delete waits until commit) the
/// KEK versions the batch's values were sealed under; whether all exist.
async fn kek_versions_exist(
    tx: &mut Transaction<'static, Postgres>,
    tenant: TenantId,
    works: &[Work],
) -> Result<bool> {
    let mut versions: Vec<i32> = Vec::new();
    for w in works {
        let v = match w {
            Work::AddVersion { version, .. } => version,
            Work::CreateCredential { first, .. } => first,
            _ => continue,
        };
        if v.envelope.is_some() {
            let k = version_i32(v.kek_version)?;
            if !versions.contains(&k) {
                versions.push(k);
            }
        }
    }
    if versions.is_empty() {
        return Ok(true);
    }
    let found: Vec<(i32,)> = sqlx::query_as(KEK_VERSIONS)
        .bind(tenant.as_uuid())
        .bind(&versions)
        .fetch_all(&mut **tx)
        .await
        .map_err(db("tenant key"))?;
    Ok(found.len() == versions.len())
}

/// Adds the batch's new versions in two statements, before any create:
/// one locks the credentials in id order (the order every committer locks
/// them in, so two servers' batches cannot deadlock); one advances each
/// credential whose latest version is still the expected one, inserts its
/// version and prunes to its retention. A job whose compare-and-set fails, and a
/// second rotation of one credential in the batch, are left to the
/// job-by-job path, which works out the precise error.
async fn rotations(
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
    sqlx::query(LOCK_CREDENTIALS)
        .bind(tenant.as_uuid())
        .bind(&id)
        .execute(&mut **tx)
        .await
        .map_err(db("credential"))?;
    let rows: Vec<CredentialRow> = sqlx::query_as(ROTATE)
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
    let mut written = HashMap::with_capacity(rows.len());
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

/// Inserts the batch's new credentials (when there are two or more, the
/// first job of each name) with their first versions, in one statement.
async fn creates(
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
    let inserted: HashSet<uuid::Uuid> = sqlx::query_scalar(CREATE)
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
