//! Scheduled checkpoints: every `audit.checkpoint_interval_secs`, the head
//! of each audit chain that moved since the last run (every tenant's and
//! the platform chain) is signed and written outside the database, as one
//! JSON line per checkpoint appended to `audit.checkpoint_file` (opened for
//! appending only, fsynced after each run) and as an `audit checkpoint` log
//! line. With an interval but no file, checkpoints go to the log only; with
//! neither, the task does not run. See README, "Keeping checkpoints outside
//! the database".
//!
//! The first run happens at start-up, so a restart also leaves a line.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use strongroom_core::audit::ChainHead;
use strongroom_crypto::{ChainRef, SignedCheckpoint};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use crate::config::AuditConfig;
use crate::vault::Vault;

/// One line of the checkpoint file: the canonical fields of the signed
/// checkpoint (see `Checkpoint` in `proto/strongroom/v1/audit.proto`), with
/// hashes and keys in hex.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct CheckpointLine {
    /// Format of the signed encoding: 1.
    pub format: u8,
    /// `tenant` or `platform`.
    pub chain: String,
    /// The tenant id; empty for the platform chain.
    pub tenant_id: String,
    /// Sequence of the head event.
    pub sequence: u64,
    /// Hash of the head event, hex.
    pub hash: String,
    /// Signing time, microseconds since the Unix epoch.
    pub signed_at_micros: i64,
    /// The signing key's id.
    pub key_id: String,
    /// The Ed25519 signature, hex.
    pub signature: String,
}

impl CheckpointLine {
    /// The line of `signed`.
    pub fn of(signed: &SignedCheckpoint) -> Self {
        let c = &signed.checkpoint;
        let (chain, tenant_id) = match c.chain {
            ChainRef::Tenant(id) => ("tenant", id.to_string()),
            ChainRef::Platform => ("platform", String::new()),
        };
        Self {
            format: strongroom_crypto::CHECKPOINT_FORMAT,
            chain: chain.to_owned(),
            tenant_id,
            sequence: c.sequence,
            hash: hex::encode(c.hash),
            signed_at_micros: c.signed_at_micros,
            key_id: c.key_id.clone(),
            signature: hex::encode(signed.signature),
        }
    }
}

/// Opens the checkpoint file for appending (created if absent), so a bad
/// path fails at start-up.
pub async fn open_file(path: &Path) -> std::io::Result<tokio::fs::File> {
    tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await
}

/// Runs until `stopping` turns true.
pub async fn run(
    vault: Arc<Vault>,
    config: AuditConfig,
    mut file: Option<(PathBuf, tokio::fs::File)>,
    mut stopping: watch::Receiver<bool>,
) {
    let Some(interval) = config.checkpoint_interval else {
        return;
    };
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut written: HashMap<ChainRef, ChainHead> = HashMap::new();
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stopping.changed() => return,
        }
        if let Err(e) = checkpoint_moved_chains(&vault, &mut file, &mut written).await {
            tracing::error!(error = %e, "scheduled audit checkpoint failed; retried next interval");
        }
    }
}

/// Signs and writes the head of every chain not written at its current
/// head yet.
async fn checkpoint_moved_chains(
    vault: &Vault,
    file: &mut Option<(PathBuf, tokio::fs::File)>,
    written: &mut HashMap<ChainRef, ChainHead>,
) -> Result<(), String> {
    let heads = vault.chain_heads().await.map_err(|e| e.to_string())?;
    let key = vault.checkpoint_key().await.map_err(|e| e.to_string())?;
    let now = strongroom_core::time::Timestamp::now().as_micros();
    let mut lines = String::new();
    let mut signed_heads = Vec::new();
    for (chain, head) in heads {
        if head.sequence == 0 || written.get(&chain) == Some(&head) {
            continue;
        }
        let signed = key.sign(chain, head.sequence, head.hash, now);
        let line = CheckpointLine::of(&signed);
        tracing::info!(
            chain = %line.chain,
            tenant_id = %line.tenant_id,
            sequence = line.sequence,
            hash = %line.hash,
            signed_at_micros = line.signed_at_micros,
            key_id = %line.key_id,
            signature = %line.signature,
            "audit checkpoint"
        );
        lines.push_str(&serde_json::to_string(&line).map_err(|e| e.to_string())?);
        lines.push('\n');
        signed_heads.push((chain, head));
    }
    if lines.is_empty() {
        return Ok(());
    }
    if let Some((path, f)) = file {
        let write = async {
            f.write_all(lines.as_bytes()).await?;
            f.flush().await?;
            f.sync_data().await
        };
        write
            .await
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    written.extend(signed_heads);
    Ok(())
}
