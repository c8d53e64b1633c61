//! Pins the stored formats: an independent decoder, written from the format
//! documentation with plain `ring`, must read what the crate writes. If one of
//! these tests fails, stored data would no longer decrypt: add a new format
//! version instead of changing an existing one.

use ring::aead::{AES_256_GCM, Aad as RingAad, LessSafeKey, Nonce, UnboundKey};
use strongroom_crypto::{Aad, KeyCheck, RootKey};
use uuid::Uuid;

use crate::support::{PLAINTEXT, TENANT_A, aad, kek, known_root, known_root_bytes};

fn field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn open(key: &[u8], nonce: &[u8], aad: &[u8], ciphertext: &[u8]) -> Vec<u8> {
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).unwrap());
    let nonce = Nonce::try_assume_unique_for_key(nonce).unwrap();
    let mut buf = ciphertext.to_vec();
    let plaintext = key
        .open_in_place(nonce, RingAad::from(aad), &mut buf)
        .unwrap();
    plaintext.to_vec()
}

/// `strongroom/credential/v1` encoding of [`Aad`].
fn credential_aad(aad: &Aad<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    field(&mut out, b"strongroom/credential/v1");
    out.extend_from_slice(aad.tenant.as_bytes());
    field(&mut out, aad.environment.as_bytes());
    out.extend_from_slice(aad.credential.as_bytes());
    out.extend_from_slice(&aad.version.to_be_bytes());
    out
}

/// Independently unwraps a `WrappedKek` v1.
pub fn unwrap_kek(root: &[u8; 32], tenant: Uuid, kek_version: u32, wrapped: &[u8]) -> Vec<u8> {
    assert_eq!(wrapped[0], 1, "format version");
    assert_eq!(wrapped.len(), 1 + 12 + 32 + 16);
    let mut aad = Vec::new();
    field(&mut aad, b"strongroom/kek-wrap/v1");
    aad.push(1);
    aad.extend_from_slice(tenant.as_bytes());
    aad.extend_from_slice(&kek_version.to_be_bytes());
    open(root, &wrapped[1..13], &aad, &wrapped[13..])
}

#[test]
fn aad_encoding_is_pinned() {
    assert_eq!(aad().to_bytes(), credential_aad(&aad()));
}

#[test]
fn key_check_v1_is_pinned() {
    let check = known_root().key_check().unwrap().to_bytes();
    assert_eq!(check[0], 1, "format version");
    assert_eq!(check.len(), 1 + 12 + 32 + 16);
    let constant = open(
        &known_root_bytes(),
        &check[1..13],
        b"strongroom/key-check/v1",
        &check[13..],
    );
    assert_eq!(constant, b"strongroom root key check value.");
    // And the crate reads a value it did not write itself.
    known_root()
        .verify(&KeyCheck::from_bytes(check.clone()))
        .unwrap();
}

#[test]
fn wrapped_kek_and_envelope_v1_are_pinned() {
    let root = known_root();
    let kek = kek();
    let wrapped = root.wrap_kek(TENANT_A, 3, &kek).unwrap().to_bytes();
    let kek_bytes = unwrap_kek(&known_root_bytes(), TENANT_A, 3, &wrapped);

    let envelope = kek.seal(3, &aad(), PLAINTEXT).unwrap().to_bytes();
    assert_eq!(envelope[0], 1, "format version");
    assert_eq!(envelope[1..5], 3u32.to_be_bytes());

    let mut dek_aad = Vec::new();
    field(&mut dek_aad, b"strongroom/envelope/v1/data-key");
    dek_aad.push(1);
    dek_aad.extend_from_slice(&3u32.to_be_bytes());
    dek_aad.extend_from_slice(&credential_aad(&aad()));
    let dek = open(&kek_bytes, &envelope[5..17], &dek_aad, &envelope[17..65]);
    assert_eq!(dek.len(), 32);

    let mut payload_aad = Vec::new();
    field(&mut payload_aad, b"strongroom/envelope/v1/payload");
    payload_aad.push(1);
    payload_aad.extend_from_slice(&credential_aad(&aad()));
    let plaintext = open(&dek, &envelope[65..77], &payload_aad, &envelope[77..]);
    assert_eq!(plaintext, PLAINTEXT);
}

#[test]
fn key_check_from_other_root_is_independent_of_known_root() {
    // Guards the fixture: a different root key does not open the pinned value.
    let check = RootKey::generate().unwrap().key_check().unwrap();
    assert!(known_root().verify(&check).is_err());
}
