//! The sealed export container: what it opens, and every change it refuses.

use secrecy::SecretString;
use strongroom_crypto::{
    CryptoError, EXPORT_CHUNK_SIZE, ExportSealer, KdfParams, open_sealed_file, read_sealed_header,
};

fn params() -> KdfParams {
    KdfParams::generate_with(256, 1).unwrap()
}

fn pass(s: &str) -> SecretString {
    SecretString::from(s)
}

/// A payload of `len` bytes that differ from chunk to chunk.
fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 65536) as u8).collect()
}

fn seal(payload: &[u8]) -> Vec<u8> {
    let mut sealer = ExportSealer::new(
        &pass("correct horse battery"),
        &params(),
        serde_json::json!({"tenant": "acme"}),
    )
    .unwrap();
    // Written in uneven pieces: chunking must not depend on them.
    for piece in payload.chunks(10_000) {
        sealer.write(piece).unwrap();
    }
    sealer.finish().unwrap()
}

/// The offset of each chunk's length field (after the prefix and key check).
fn chunk_offsets(file: &[u8]) -> Vec<usize> {
    let header_len = u32::from_be_bytes(file[9..13].try_into().unwrap()) as usize;
    let mut at = 13 + header_len + 32;
    let mut out = Vec::new();
    while at < file.len() {
        out.push(at);
        let len = u32::from_be_bytes(file[at..at + 4].try_into().unwrap()) as usize;
        at += 4 + len;
    }
    out
}

#[test]
fn a_sealed_file_opens_to_its_payload() {
    for len in [
        0,
        1,
        EXPORT_CHUNK_SIZE,
        EXPORT_CHUNK_SIZE + 1,
        3 * EXPORT_CHUNK_SIZE + 17,
    ] {
        let data = payload(len);
        let file = seal(&data);
        let opened = open_sealed_file(&pass("correct horse battery"), &file).unwrap();
        assert_eq!(opened.payload.as_slice(), data.as_slice(), "length {len}");
        assert_eq!(opened.header.info["tenant"], "acme");
        assert_eq!(opened.header.kdf.m_cost_kib, 256);
        assert_eq!(opened.header.kdf.algorithm, "argon2id");
    }
}

#[test]
fn the_payload_is_not_in_the_file() {
    let data = b"sk-live-the-plain-secret-value".repeat(10);
    let file = seal(&data);
    assert!(!file.windows(20).any(|w| w == &data[..20]));
}

#[test]
fn a_wrong_passphrase_is_named() {
    let file = seal(&payload(1000));
    let err = open_sealed_file(&pass("correct horse batterY"), &file).unwrap_err();
    assert!(matches!(err, CryptoError::ExportPassphrase), "{err}");
}

#[test]
fn every_flipped_byte_is_refused() {
    let file = seal(&payload(2 * EXPORT_CHUNK_SIZE + 100));
    // Every byte of the prefix, and a sample of the rest.
    let positions = (0..200)
        .chain((200..file.len()).step_by(997))
        .chain([file.len() - 1]);
    for at in positions {
        let mut bad = file.clone();
        bad[at] ^= 0x01;
        assert!(
            open_sealed_file(&pass("correct horse battery"), &bad).is_err(),
            "a flip at {at} went unnoticed"
        );
    }
}

#[test]
fn truncation_reordering_and_extension_are_refused() {
    let file = seal(&payload(3 * EXPORT_CHUNK_SIZE + 5));
    let offsets = chunk_offsets(&file);
    assert_eq!(offsets.len(), 4);
    let open = |f: &[u8]| open_sealed_file(&pass("correct horse battery"), f);
    // Cut at a chunk boundary: the last chunk present is not the final one.
    let err = open(&file[..offsets[3]]).unwrap_err();
    assert!(
        matches!(err, CryptoError::ExportAuthentication { chunk: 2 }),
        "{err}"
    );
    // Cut inside a chunk.
    assert!(open(&file[..file.len() - 3]).is_err());
    // Two chunks swapped.
    let mut swapped = file[..offsets[0]].to_vec();
    swapped.extend_from_slice(&file[offsets[1]..offsets[2]]);
    swapped.extend_from_slice(&file[offsets[0]..offsets[1]]);
    swapped.extend_from_slice(&file[offsets[2]..]);
    let err = open(&swapped).unwrap_err();
    assert!(
        matches!(err, CryptoError::ExportAuthentication { chunk: 0 }),
        "{err}"
    );
    // A chunk appended after the final one.
    let mut longer = file.clone();
    longer.extend_from_slice(&file[offsets[1]..offsets[2]]);
    assert!(open(&longer).is_err());
    // The untouched file still opens.
    assert!(open(&file).is_ok());
}

#[test]
fn the_header_is_readable_without_the_passphrase() {
    let file = seal(b"x");
    let header = read_sealed_header(&file).unwrap();
    assert_eq!(header.format, 1);
    assert_eq!(header.kdf.t_cost, 1);
    assert!(read_sealed_header(b"not an export").is_err());
}
