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
//! Before it, the last line of each chain in the file (if its signature
//! verifies with this server's key) becomes that chain's last signed head:
//! the server never signs a head that does not extend it. What to sign is
//! the engine's (`Engine::checkpoint_moved_chains`); this task keeps the
//! schedule and is the engine's checkpoint sink (a port: see
//! `strongroom_engine::ports`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use strongroom_core::Error;
use strongroom_core::scope::SystemScope;
use strongroom_crypto::{ChainRef, Checkpoint, SignedCheckpoint};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use crate::config::AuditConfig;
use strongroom_engine::ports::CheckpointSink;
use strongroom_engine::{CheckpointSchedule, Engine};

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

impl CheckpointLine {
    /// The signed checkpoint of this line, if well formed.
    pub fn to_signed(&self) -> Option<SignedCheckpoint> {
        if self.format != strongroom_crypto::CHECKPOINT_FORMAT {
            return None;
        }
        let chain = match self.chain.as_str() {
            "tenant" => ChainRef::Tenant(uuid::Uuid::parse_str(&self.tenant_id).ok()?),
            "platform" if self.tenant_id.is_empty() => ChainRef::Platform,
            _ => return None,
        };
        Some(SignedCheckpoint {
            checkpoint: Checkpoint {
                chain,
                sequence: self.sequence,
                hash: hex::decode(&self.hash).ok()?.try_into().ok()?,
                signed_at_micros: self.signed_at_micros,
                key_id: self.key_id.clone(),
            },
            signature: hex::decode(&self.signature).ok()?.try_into().ok()?,
        })
    }
}

/// Takes the last line of each chain in the checkpoint file at `path` (if
/// it exists) as that chain's last signed head. Lines that do not parse or
/// whose signature does not verify with this server's key are skipped with
/// a warning.
pub async fn seed_from_file(
    engine: &Engine,
    system: &SystemScope,
    path: &Path,
) -> Result<(), String> {
    let text = match tokio::fs::read_to_string(path).await {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let mut last: HashMap<ChainRef, SignedCheckpoint> = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<CheckpointLine>(line)
            .ok()
            .and_then(|l| l.to_signed())
        {
            Some(signed) => {
                last.insert(signed.checkpoint.chain, signed);
            }
            None => tracing::warn!(
                file = %path.display(),
                line = n + 1,
                "skipping a malformed checkpoint line"
            ),
        }
    }
    for signed in last.values() {
        if !engine
            .seed_signed_head(system, signed)
            .await
            .map_err(|e| e.to_string())?
        {
            tracing::warn!(
                file = %path.display(),
                key_id = %signed.checkpoint.key_id,
                sequence = signed.checkpoint.sequence,
                "a checkpoint in the file does not verify with this server's key; not used"
            );
        }
    }
    Ok(())
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

/// Runs until `stopping` turns true, as the background task `system`.
pub async fn run(
    engine: Arc<Engine>,
    system: SystemScope,
    config: AuditConfig,
    file: Option<(PathBuf, tokio::fs::File)>,
    mut stopping: watch::Receiver<bool>,
) {
    let Some(interval) = config.checkpoint_interval else {
        return;
    };
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut schedule = CheckpointSchedule::default();
    let mut sink = FileSink { file };
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stopping.changed() => return,
        }
        if let Err(e) = engine
            .checkpoint_moved_chains(&system, &mut schedule, &mut sink)
            .await
        {
            tracing::error!(error = %e, "scheduled audit checkpoint failed; retried next interval");
        }
    }
}

/// The checkpoint sink of the server: every checkpoint an `audit
/// checkpoint` log line, and, with a checkpoint file, a JSON line appended
/// to it, fsynced before the checkpoints count as kept.
struct FileSink {
    file: Option<(PathBuf, tokio::fs::File)>,
}

impl CheckpointSink for FileSink {
    async fn keep(&mut self, checkpoints: &[SignedCheckpoint]) -> strongroom_core::Result<()> {
        let mut lines = String::new();
        for signed in checkpoints {
            let line = CheckpointLine::of(signed);
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
            lines.push_str(&serde_json::to_string(&line).map_err(Error::internal)?);
            lines.push('\n');
        }
        if let Some((path, f)) = &mut self.file {
            let write = async {
                f.write_all(lines.as_bytes()).await?;
                f.flush().await?;
                f.sync_data().await
            };
            write.await.map_err(|e| {
                Error::Unavailable(format!("cannot write {}: {e}", path.display()).into())
            })?;
        }
        Ok(())
    }
}
