//! Server-wide metadata ([`MetaStore`]): small values that belong to no
//! tenant and are never secret (the root key's check value, its derivation
//! parameters), written once.

use async_trait::async_trait;
use strongroom_core::Result;
use strongroom_core::store::MetaStore;
use strongroom_core::time::Timestamp;

use crate::dialect::Dialect;
use crate::error::db;
use crate::store::SqlStore;

/// Reads the value of key `$1`.
const GET: &str = "SELECT value FROM server_meta WHERE key = $1";

/// Stores value `$2` under key `$1` at `$3` unless the key exists.
const PUT_IF_ABSENT: &str = "\
    INSERT INTO server_meta (key, value, created_at) VALUES ($1, $2, $3) \
    ON CONFLICT (key) DO NOTHING";

#[async_trait]
impl<D: Dialect> MetaStore for SqlStore<D> {
    async fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let mut conn = self.pool.acquire().await.map_err(db("server metadata"))?;
        let value: Option<(Vec<u8>,)> = D::query(GET)
            .bind(key)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db("server metadata"))?;
        Ok(value.map(|(v,)| v))
    }

    async fn put_meta_if_absent(&self, key: &str, value: &[u8]) -> Result<bool> {
        let mut conn = self.pool.acquire().await.map_err(db("server metadata"))?;
        let stored = D::query(PUT_IF_ABSENT)
            .bind(key)
            .bind(value)
            .bind(Timestamp::now().as_micros())
            .execute(&mut *conn)
            .await
            .map_err(db("server metadata"))?;
        Ok(stored == 1)
    }
}
