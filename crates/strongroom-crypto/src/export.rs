//! The sealed container of a tenant export (`docs/export-format.md`).
//!
//! A file is a plaintext prefix (magic, format version, a JSON header with
//! the Argon2id parameters, the chunk size, the nonce prefix and the
//! caller's description) and a key-check value, followed by the payload cut
//! into chunks, each sealed with AES-256-GCM under the key derived from the
//! caller's passphrase.
//!
//! Promises:
//! - the whole prefix is the associated data of every chunk and of the key
//!   check: a changed header fails as surely as a changed chunk;
//! - chunk `i` is sealed with the nonce `nonce_prefix || i || last`, so a
//!   reordered, repeated, dropped or appended chunk fails to open, and a
//!   file cut anywhere lacks its final chunk and fails;
//! - a wrong passphrase is told apart from a damaged file (the key check
//!   fails, not a chunk);
//! - [`open_sealed_file`] returns nothing until every chunk has opened:
//!   a caller never acts on a prefix of a file that later fails.

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::aead::{self, KEY_LEN, NONCE_LEN, TAG_LEN};
use crate::error::{CryptoError, Result};
use crate::kdf::{self, KdfParams};
use crate::random;

/// The first bytes of every export file.
pub const EXPORT_MAGIC: &[u8; 8] = b"SREXPORT";
/// The container format this module writes and reads.
pub const EXPORT_FORMAT: u8 = 1;
/// Plaintext bytes per chunk (the last may be shorter).
pub const EXPORT_CHUNK_SIZE: usize = 64 * 1024;
/// Largest header accepted.
const MAX_HEADER_LEN: usize = 64 * 1024;
/// Length of the nonce prefix; the rest of a nonce is the chunk index (4
/// bytes) and the final-chunk flag (1 byte).
const NONCE_PREFIX_LEN: usize = NONCE_LEN - 5;
/// What the key check seals (its plaintext is not secret).
const KEY_CHECK_PLAINTEXT: &[u8; 16] = b"strongroom-xport";
/// The chunk index reserved for the key check.
const KEY_CHECK_INDEX: u32 = u32::MAX;
/// Length of the key check (ciphertext and tag).
const KEY_CHECK_LEN: usize = KEY_CHECK_PLAINTEXT.len() + TAG_LEN;

/// The Argon2id parameters as the header records them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportKdf {
    /// Always `argon2id`.
    pub algorithm: String,
    /// Argon2 version (19 = 1.3).
    pub version: u32,
    /// Memory cost in KiB.
    pub m_cost_kib: u32,
    /// Passes.
    pub t_cost: u32,
    /// Parallelism.
    pub p_cost: u32,
    /// The salt, hex.
    pub salt: String,
}

/// The plaintext header of an export file: everything needed to derive the
/// key and open the chunks, and the caller's description of the contents
/// (`info`, not secret: the tenant's id and name, when, which server).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportFileHeader {
    /// The container format ([`EXPORT_FORMAT`]).
    pub format: u8,
    /// Always `aes-256-gcm`.
    pub cipher: String,
    /// How the key is derived from the passphrase.
    pub kdf: ExportKdf,
    /// Plaintext bytes per chunk.
    pub chunk_size: u32,
    /// The random nonce prefix, hex.
    pub nonce_prefix: String,
    /// The caller's description of the contents (a JSON object).
    pub info: serde_json::Value,
}

impl ExportFileHeader {
    fn kdf_params(&self) -> Result<KdfParams> {
        if self.kdf.algorithm != "argon2id" {
            return Err(CryptoError::Malformed("export header (unknown kdf)"));
        }
        Ok(KdfParams {
            salt: hex::decode(&self.kdf.salt)
                .map_err(|_| CryptoError::Malformed("export header (salt)"))?,
            m_cost_kib: self.kdf.m_cost_kib,
            t_cost: self.kdf.t_cost,
            p_cost: self.kdf.p_cost,
            version: self.kdf.version,
        })
    }

    fn nonce_prefix(&self) -> Result<[u8; NONCE_PREFIX_LEN]> {
        hex::decode(&self.nonce_prefix)
            .ok()
            .and_then(|b| <[u8; NONCE_PREFIX_LEN]>::try_from(b.as_slice()).ok())
            .ok_or(CryptoError::Malformed("export header (nonce prefix)"))
    }
}

fn chunk_nonce(prefix: &[u8; NONCE_PREFIX_LEN], index: u32, last: bool) -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    nonce[..NONCE_PREFIX_LEN].copy_from_slice(prefix);
    nonce[NONCE_PREFIX_LEN..NONCE_LEN - 1].copy_from_slice(&index.to_be_bytes());
    nonce[NONCE_LEN - 1] = match (index, last) {
        (KEY_CHECK_INDEX, _) => 2,
        (_, true) => 1,
        (_, false) => 0,
    };
    nonce
}

/// Writes an export file: [`ExportSealer::write`] the payload in any
/// pieces, then [`ExportSealer::finish`].
pub struct ExportSealer {
    key: Zeroizing<[u8; KEY_LEN]>,
    /// The prefix: the associated data of every chunk.
    aad: Vec<u8>,
    nonce_prefix: [u8; NONCE_PREFIX_LEN],
    index: u32,
    pending: Zeroizing<Vec<u8>>,
    out: Vec<u8>,
}

impl std::fmt::Debug for ExportSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportSealer")
            .field("chunks", &self.index)
            .finish_non_exhaustive()
    }
}

impl ExportSealer {
    /// Derives the key from `passphrase` with `params` (slow: Argon2id; run
    /// it off the async runtime) and writes the prefix with `info`.
    pub fn new(
        passphrase: &SecretString,
        params: &KdfParams,
        info: serde_json::Value,
    ) -> Result<Self> {
        let mut nonce_prefix = [0u8; NONCE_PREFIX_LEN];
        random::fill(&mut nonce_prefix)?;
        let header = ExportFileHeader {
            format: EXPORT_FORMAT,
            cipher: "aes-256-gcm".into(),
            kdf: ExportKdf {
                algorithm: "argon2id".into(),
                version: params.version,
                m_cost_kib: params.m_cost_kib,
                t_cost: params.t_cost,
                p_cost: params.p_cost,
                salt: hex::encode(&params.salt),
            },
            chunk_size: EXPORT_CHUNK_SIZE as u32,
            nonce_prefix: hex::encode(nonce_prefix),
            info,
        };
        let header = serde_json::to_vec(&header)
            .map_err(|_| CryptoError::Malformed("export header (not serializable)"))?;
        let key = kdf::derive(passphrase, params)?;
        let mut aad = Vec::with_capacity(EXPORT_MAGIC.len() + 5 + header.len());
        aad.extend_from_slice(EXPORT_MAGIC);
        aad.push(EXPORT_FORMAT);
        aad.extend_from_slice(&(header.len() as u32).to_be_bytes());
        aad.extend_from_slice(&header);
        let check = aead::seal(
            &key,
            chunk_nonce(&nonce_prefix, KEY_CHECK_INDEX, false),
            &aad,
            KEY_CHECK_PLAINTEXT,
        )?;
        let mut out = aad.clone();
        out.extend_from_slice(&check);
        Ok(Self {
            key,
            aad,
            nonce_prefix,
            index: 0,
            pending: Zeroizing::new(Vec::with_capacity(EXPORT_CHUNK_SIZE)),
            out,
        })
    }

    /// Appends payload bytes.
    pub fn write(&mut self, mut plaintext: &[u8]) -> Result<()> {
        while !plaintext.is_empty() {
            let room = EXPORT_CHUNK_SIZE - self.pending.len();
            let take = room.min(plaintext.len());
            self.pending.extend_from_slice(&plaintext[..take]);
            plaintext = &plaintext[take..];
            if self.pending.len() == EXPORT_CHUNK_SIZE {
                self.seal_pending(false)?;
            }
        }
        Ok(())
    }

    /// Bytes of the file written so far (prefix and sealed chunks).
    pub fn sealed_len(&self) -> usize {
        self.out.len()
    }

    fn seal_pending(&mut self, last: bool) -> Result<()> {
        if self.index == KEY_CHECK_INDEX {
            return Err(CryptoError::Malformed("export payload (too long)"));
        }
        let nonce = chunk_nonce(&self.nonce_prefix, self.index, last);
        let sealed = aead::seal(&self.key, nonce, &self.aad, &self.pending)?;
        self.out
            .extend_from_slice(&(sealed.len() as u32).to_be_bytes());
        self.out.extend_from_slice(&sealed);
        self.pending.clear();
        self.index += 1;
        Ok(())
    }

    /// Seals the final chunk (possibly empty) and returns the file.
    pub fn finish(mut self) -> Result<Vec<u8>> {
        self.seal_pending(true)?;
        Ok(std::mem::take(&mut self.out))
    }
}

/// Reads the plaintext header of an export file, authenticating nothing.
pub fn read_sealed_header(file: &[u8]) -> Result<ExportFileHeader> {
    Ok(parse_prefix(file)?.0)
}

/// The header, the prefix length (the associated data) of a file.
fn parse_prefix(file: &[u8]) -> Result<(ExportFileHeader, usize)> {
    if file.len() < EXPORT_MAGIC.len() + 5 || &file[..EXPORT_MAGIC.len()] != EXPORT_MAGIC {
        return Err(CryptoError::Malformed(
            "export file (not a strongroom export)",
        ));
    }
    let at = EXPORT_MAGIC.len();
    if file[at] != EXPORT_FORMAT {
        return Err(CryptoError::Malformed(
            "export file (unknown format version)",
        ));
    }
    let mut len = [0u8; 4];
    len.copy_from_slice(&file[at + 1..at + 5]);
    let len = u32::from_be_bytes(len) as usize;
    let start = at + 5;
    if len > MAX_HEADER_LEN || file.len() < start + len {
        return Err(CryptoError::Malformed("export file (header length)"));
    }
    let header: ExportFileHeader = serde_json::from_slice(&file[start..start + len])
        .map_err(|_| CryptoError::Malformed("export file (header)"))?;
    if header.format != EXPORT_FORMAT
        || header.cipher != "aes-256-gcm"
        || header.chunk_size as usize != EXPORT_CHUNK_SIZE
    {
        return Err(CryptoError::Malformed("export file (header fields)"));
    }
    Ok((header, start + len))
}

/// An opened export: its header and its whole payload, every chunk
/// authenticated.
pub struct OpenedExport {
    /// The header (authenticated with the chunks).
    pub header: ExportFileHeader,
    /// The payload, in the clear.
    pub payload: Zeroizing<Vec<u8>>,
    /// The number of chunks.
    pub chunks: u32,
}

impl std::fmt::Debug for OpenedExport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedExport")
            .field("header", &self.header)
            .field("payload", &"[REDACTED]")
            .field("chunks", &self.chunks)
            .finish()
    }
}

/// Derives the key from `passphrase` (slow: Argon2id with the header's
/// parameters) and opens every chunk of `file`.
///
/// Fails with [`CryptoError::ExportPassphrase`] when the passphrase does
/// not open the key check, with [`CryptoError::ExportAuthentication`] naming
/// the first chunk that fails (changed, reordered, or the file cut short or
/// extended), with [`CryptoError::Malformed`] when the file cannot be
/// parsed. Returns nothing of the payload unless all of it opened.
pub fn open_sealed_file(passphrase: &SecretString, file: &[u8]) -> Result<OpenedExport> {
    let (header, prefix_len) = parse_prefix(file)?;
    let params = header.kdf_params()?;
    let nonce_prefix = header.nonce_prefix()?;
    let aad = &file[..prefix_len];
    let key = kdf::derive(passphrase, &params)?;
    let check = file
        .get(prefix_len..prefix_len + KEY_CHECK_LEN)
        .ok_or(CryptoError::Malformed("export file (key check)"))?;
    aead::open(
        &key,
        chunk_nonce(&nonce_prefix, KEY_CHECK_INDEX, false),
        aad,
        check,
    )
    .map_err(|_| CryptoError::ExportPassphrase)?;
    let mut rest = &file[prefix_len + KEY_CHECK_LEN..];
    let mut payload = Zeroizing::new(Vec::with_capacity(rest.len()));
    let mut index: u32 = 0;
    loop {
        let failed = CryptoError::ExportAuthentication {
            chunk: u64::from(index),
        };
        if rest.len() < 4 || index == KEY_CHECK_INDEX {
            return Err(failed);
        }
        let mut len = [0u8; 4];
        len.copy_from_slice(&rest[..4]);
        let len = u32::from_be_bytes(len) as usize;
        if len > EXPORT_CHUNK_SIZE + TAG_LEN || rest.len() < 4 + len {
            return Err(failed);
        }
        let sealed = &rest[4..4 + len];
        rest = &rest[4 + len..];
        let last = rest.is_empty();
        let plain = aead::open(&key, chunk_nonce(&nonce_prefix, index, last), aad, sealed)
            .map_err(|_| failed)?;
        payload.extend_from_slice(&plain);
        index += 1;
        if last {
            break;
        }
    }
    Ok(OpenedExport {
        header,
        payload,
        chunks: index,
    })
}

/// SHA-256 of an export file, for the sender and receiver to compare
/// copies (not an authentication: the chunks authenticate the file).
pub fn export_digest(file: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, file);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}
