//! [`IdempotencyStore`]: the records of idempotent retries, one row per
//! (scope, caller, call, request id) in `idempotency_keys`. A claim is a
//! unique-keyed insert, so of two concurrent calls with one key exactly one
//! acts (on Postgres the second insert waits for the first's transaction,
//! then finds its row; on SQLite write transactions run one at a time).
//! Tenants' records are written in transactions bound to the tenant (row
//! level security), platform operators' in platform transactions, and the
//! sweeper purges every tenant's expired records in its own transaction.

use async_trait::async_trait;
use sqlx::Transaction;
use strongroom_core::Result;
use strongroom_core::idempotency::{Claim, IdempotencyStore, RequestKey, RequestRecord};
use strongroom_core::time::Timestamp;

use crate::dialect::Dialect;
use crate::error::db;
use crate::store::SqlStore;

/// Deletes the record of key `$1..$4` if it expired at `$5`.
const DELETE_EXPIRED: &str = "DELETE FROM idempotency_keys \
     WHERE scope_id = $1 AND principal = $2 AND rpc = $3 AND request_id = $4 \
       AND expires_at <= $5";

/// Claims key `$1..$4` for fingerprint `$5`, claimed at `$6`, kept until
/// `$7`, unless a record of the key exists.
const CLAIM: &str = "INSERT INTO idempotency_keys \
     (scope_id, principal, rpc, request_id, fingerprint, claimed_at, expires_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING";

/// The record of key `$1..$4` that has not expired at `$5`.
const GET: &str = "SELECT fingerprint, claimed_at, response FROM idempotency_keys \
     WHERE scope_id = $1 AND principal = $2 AND rpc = $3 AND request_id = $4 \
       AND expires_at > $5";

/// Records response `$6` for the claim of key `$1..$4` made at `$5`.
const COMPLETE: &str = "UPDATE idempotency_keys SET response = $6 \
     WHERE scope_id = $1 AND principal = $2 AND rpc = $3 AND request_id = $4 \
       AND claimed_at = $5 AND response IS NULL";

/// Releases the claim of key `$1..$4` made at `$5`, unless it completed.
const RELEASE: &str = "DELETE FROM idempotency_keys \
     WHERE scope_id = $1 AND principal = $2 AND rpc = $3 AND request_id = $4 \
       AND claimed_at = $5 AND response IS NULL";

/// Deletes every record expired at `$1`.
const PURGE: &str = "DELETE FROM idempotency_keys WHERE expires_at <= $1";

/// The scope column of a key: its tenant, or the nil UUID for the platform.
fn scope_id(key: &RequestKey) -> uuid::Uuid {
    key.tenant.map_or(uuid::Uuid::nil(), |t| t.as_uuid())
}

impl<D: Dialect> SqlStore<D> {
    /// A transaction that may read and write `key`'s record.
    async fn key_tx(&self, key: &RequestKey, write: bool) -> Result<Transaction<'static, D>> {
        match key.tenant {
            Some(tenant) => self.tenant_tx(tenant, write).await,
            None => self.platform_tx(None, write).await,
        }
    }
}

/// Runs `sql`, whose first four parameters are `key`, with `at` as `$5`
/// (and `bytes` as `$6` when given); the rows it affected.
async fn keyed<D: Dialect>(
    tx: &mut Transaction<'static, D>,
    sql: &'static str,
    key: &RequestKey,
    at: Timestamp,
    bytes: Option<&[u8]>,
) -> Result<u64> {
    let mut query = D::query(sql)
        .bind(scope_id(key))
        .bind(key.principal.as_str())
        .bind(key.call.as_str())
        .bind(key.request_id.as_str())
        .bind(at.as_micros());
    if let Some(bytes) = bytes {
        query = query.bind(bytes);
    }
    query
        .execute(&mut **tx)
        .await
        .map_err(db("idempotency record"))
}

/// The record of `key` not expired at `now`.
async fn get<D: Dialect>(
    tx: &mut Transaction<'static, D>,
    key: &RequestKey,
    now: Timestamp,
) -> Result<Option<RequestRecord>> {
    let row: Option<(Vec<u8>, i64, Option<Vec<u8>>)> = D::query(GET)
        .bind(scope_id(key))
        .bind(key.principal.as_str())
        .bind(key.call.as_str())
        .bind(key.request_id.as_str())
        .bind(now.as_micros())
        .fetch_optional(&mut **tx)
        .await
        .map_err(db("idempotency record"))?;
    Ok(
        row.map(|(fingerprint, claimed_at, response)| RequestRecord {
            fingerprint,
            claimed_at: Timestamp::from_micros(claimed_at),
            response,
        }),
    )
}

#[async_trait]
impl<D: Dialect> IdempotencyStore for SqlStore<D> {
    async fn claim_request(
        &self,
        key: &RequestKey,
        fingerprint: &[u8],
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<Claim> {
        let mut tx = self.key_tx(key, true).await?;
        keyed(&mut tx, DELETE_EXPIRED, key, now, None).await?;
        let claimed = D::query(CLAIM)
            .bind(scope_id(key))
            .bind(key.principal.as_str())
            .bind(key.call.as_str())
            .bind(key.request_id.as_str())
            .bind(fingerprint)
            .bind(now.as_micros())
            .bind(expires_at.as_micros())
            .execute(&mut *tx)
            .await
            .map_err(db("idempotency record"))?;
        let outcome = if claimed == 1 {
            Claim::Claimed
        } else {
            match get(&mut tx, key, now).await? {
                Some(record) => Claim::Existing(record),
                // Not reachable: the conflicting row is live (an expired
                // one was deleted above, in this transaction).
                None => {
                    return Err(strongroom_core::Error::internal(
                        "idempotency claim conflicted with no record",
                    ));
                }
            }
        };
        tx.commit().await.map_err(db("idempotency record"))?;
        Ok(outcome)
    }

    async fn get_request(&self, key: &RequestKey, now: Timestamp) -> Result<Option<RequestRecord>> {
        let mut tx = self.key_tx(key, false).await?;
        let record = get(&mut tx, key, now).await?;
        tx.commit().await.map_err(db("idempotency record"))?;
        Ok(record)
    }

    async fn complete_request(
        &self,
        key: &RequestKey,
        claimed_at: Timestamp,
        response: &[u8],
    ) -> Result<bool> {
        let mut tx = self.key_tx(key, true).await?;
        let updated = keyed(&mut tx, COMPLETE, key, claimed_at, Some(response)).await?;
        tx.commit().await.map_err(db("idempotency record"))?;
        Ok(updated == 1)
    }

    async fn release_request(&self, key: &RequestKey, claimed_at: Timestamp) -> Result<()> {
        let mut tx = self.key_tx(key, true).await?;
        keyed(&mut tx, RELEASE, key, claimed_at, None).await?;
        tx.commit().await.map_err(db("idempotency record"))?;
        Ok(())
    }

    async fn purge_requests(&self, now: Timestamp) -> Result<u64> {
        let mut tx = D::begin_lease_sweep(self).await?;
        let purged = D::query(PURGE)
            .bind(now.as_micros())
            .execute(&mut *tx)
            .await
            .map_err(db("idempotency record"))?;
        tx.commit().await.map_err(db("idempotency record"))?;
        Ok(purged)
    }
}
