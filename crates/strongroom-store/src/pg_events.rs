//! Postgres: a group commit's audit events as one multi-row statement of
//! fixed text (prepared once per connection, whatever the batch size).

use sqlx::{Postgres, Transaction};
use strongroom_core::{Error, Result};

use crate::error::db;
use crate::postgres::PgStore;
use crate::rows::version_i32;

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
