//! Root keys: loading, key check, KEK wrapping and root-key rotation.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use secrecy::ExposeSecret;
use strongroom_crypto::{CryptoError, KeyCheck, RootKey, WrappedKek};

use crate::support::{PLAINTEXT, TENANT_A, TENANT_B, aad, kek, known_root, known_root_bytes};

/// Whether two root keys are the same key (via the public API only).
fn same_key(a: &RootKey, b: &RootKey) -> bool {
    a.to_encoded().expose_secret() == b.to_encoded().expose_secret()
}

/// A scratch file removed on drop.
struct ScratchFile(std::path::PathBuf);

impl ScratchFile {
    fn new(contents: &[u8]) -> ScratchFile {
        let path = std::env::temp_dir().join(format!(
            "strongroom-crypto-test-{}.key",
            uuid::Uuid::new_v4()
        ));
        std::fs::write(&path, contents).unwrap();
        ScratchFile(path)
    }
}

impl Drop for ScratchFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn key_check_accepts_the_right_key() {
    let root = RootKey::generate().unwrap();
    let check = root.key_check().unwrap();
    root.verify(&check).unwrap();
    root.verify(&KeyCheck::from_bytes(check.to_bytes()))
        .unwrap();
    assert_ne!(
        check.to_bytes(),
        root.key_check().unwrap().to_bytes(),
        "fresh nonce per key check"
    );
}

#[test]
fn key_check_rejects_a_wrong_key_with_a_clear_message() {
    let check = RootKey::generate().unwrap().key_check().unwrap();
    let err = RootKey::generate().unwrap().verify(&check).unwrap_err();
    assert!(matches!(err, CryptoError::WrongRootKey));
    let message = err.to_string();
    assert!(message.contains("root key does not match"), "{message}");
    assert!(message.contains("STRONGROOM_ROOT_KEY"), "{message}");
    assert!(message.contains("passphrase"), "{message}");
}

#[test]
fn key_check_tampering_and_damage() {
    let root = RootKey::generate().unwrap();
    let bytes = root.key_check().unwrap().to_bytes();
    for index in 1..bytes.len() {
        let mut damaged = bytes.clone();
        damaged[index] ^= 0x01;
        assert!(matches!(
            root.verify(&KeyCheck::from_bytes(damaged)),
            Err(CryptoError::WrongRootKey)
        ));
    }
    let mut other_version = bytes.clone();
    other_version[0] = 2;
    for damaged in [
        other_version,
        bytes[..bytes.len() - 1].to_vec(),
        Vec::new(),
        [bytes.as_slice(), &[0]].concat(),
    ] {
        assert!(matches!(
            root.verify(&KeyCheck::from_bytes(damaged)),
            Err(CryptoError::Malformed(_))
        ));
    }
}

#[test]
fn wrapped_kek_unwraps_only_for_its_tenant_and_version() {
    let root = RootKey::generate().unwrap();
    let kek = kek();
    let envelope = kek.seal(1, &aad(), PLAINTEXT).unwrap();
    let wrapped = root.wrap_kek(TENANT_A, 1, &kek).unwrap();
    let stored = WrappedKek::from_bytes(wrapped.to_bytes());

    let unwrapped = root.unwrap_kek(TENANT_A, 1, &stored).unwrap();
    assert_eq!(
        unwrapped.open(&aad(), &envelope).unwrap().as_slice(),
        PLAINTEXT,
        "the unwrapped KEK is the original"
    );
    assert!(matches!(
        root.unwrap_kek(TENANT_B, 1, &stored),
        Err(CryptoError::Decrypt)
    ));
    assert!(matches!(
        root.unwrap_kek(TENANT_A, 2, &stored),
        Err(CryptoError::Decrypt)
    ));
    assert!(matches!(
        RootKey::generate()
            .unwrap()
            .unwrap_kek(TENANT_A, 1, &stored),
        Err(CryptoError::Decrypt)
    ));
}

#[test]
fn wrapped_kek_damage_fails_closed() {
    let root = RootKey::generate().unwrap();
    let bytes = root.wrap_kek(TENANT_A, 1, &kek()).unwrap().to_bytes();
    for index in 0..bytes.len() {
        let mut damaged = bytes.clone();
        damaged[index] ^= 0x80;
        let result = root.unwrap_kek(TENANT_A, 1, &WrappedKek::from_bytes(damaged));
        match result {
            Err(CryptoError::Malformed(_)) if index == 0 => {}
            Err(CryptoError::Decrypt) if index > 0 => {}
            other => panic!("byte {index}: expected failure, got {other:?}"),
        }
    }
    for len in 0..bytes.len() {
        assert!(matches!(
            root.unwrap_kek(TENANT_A, 1, &WrappedKek::from_bytes(bytes[..len].to_vec())),
            Err(CryptoError::Malformed(_))
        ));
    }
}

#[test]
fn root_key_rotation_rewraps_keks() {
    let old_root = RootKey::generate().unwrap();
    let new_root = RootKey::generate().unwrap();
    let kek = kek();
    let envelope = kek.seal(4, &aad(), PLAINTEXT).unwrap();
    let wrapped = old_root.wrap_kek(TENANT_A, 4, &kek).unwrap();

    let rewrapped = old_root
        .rewrap_kek(&new_root, TENANT_A, 4, &wrapped)
        .unwrap();
    let unwrapped = new_root.unwrap_kek(TENANT_A, 4, &rewrapped).unwrap();
    assert_eq!(
        unwrapped.open(&aad(), &envelope).unwrap().as_slice(),
        PLAINTEXT,
        "credential data is untouched by root-key rotation"
    );
    assert!(matches!(
        old_root.unwrap_kek(TENANT_A, 4, &rewrapped),
        Err(CryptoError::Decrypt)
    ));
    assert!(matches!(
        new_root.rewrap_kek(&old_root, TENANT_A, 4, &wrapped),
        Err(CryptoError::Decrypt)
    ));
    assert!(matches!(
        old_root.rewrap_kek(&new_root, TENANT_B, 4, &wrapped),
        Err(CryptoError::Decrypt)
    ));
}

#[test]
fn from_encoded_accepts_hex_and_base64_forms() {
    // 0xfb/0xff bytes make the standard and url-safe alphabets differ.
    let bytes: [u8; 32] = std::array::from_fn(|i| if i % 2 == 0 { 0xfb } else { 0xff - i as u8 });
    let standard = STANDARD.encode(bytes);
    let url_safe = URL_SAFE.encode(bytes);
    assert!(standard.contains('+') || standard.contains('/'));
    assert!(url_safe.contains('-') || url_safe.contains('_'));
    let reference = RootKey::from_encoded(&hex::encode(bytes)).unwrap();
    for text in [
        hex::encode_upper(bytes),
        format!("  {}\n", hex::encode(bytes)),
        standard,
        STANDARD_NO_PAD.encode(bytes),
        url_safe,
        format!("{}\r\n", URL_SAFE_NO_PAD.encode(bytes)),
    ] {
        let key = RootKey::from_encoded(&text).unwrap();
        assert!(same_key(&key, &reference), "{text}");
    }
    assert_eq!(
        reference.to_encoded().expose_secret(),
        hex::encode(bytes).as_str()
    );
}

#[test]
fn to_encoded_roundtrips() {
    let key = RootKey::generate().unwrap();
    let text = key.to_encoded();
    assert_eq!(text.expose_secret().len(), 64);
    let again = RootKey::from_encoded(text.expose_secret()).unwrap();
    again.verify(&key.key_check().unwrap()).unwrap();
}

#[test]
fn from_encoded_rejects_wrong_lengths_without_echoing_them() {
    let texts = [
        hex::encode([0x5c; 31]),
        hex::encode([0x5c; 33]),
        hex::encode([0x5c; 32])[..63].to_owned(),
        STANDARD.encode([0x6d; 31]),
        STANDARD.encode([0x6d; 33]),
        URL_SAFE_NO_PAD.encode([0x6d; 64]),
        "correct horse battery staple".to_owned(),
        format!("{}zz", &hex::encode([0x5c; 32])[..62]),
        String::new(),
    ];
    for text in texts {
        let err = RootKey::from_encoded(&text).unwrap_err();
        assert!(matches!(err, CryptoError::InvalidKey(_)), "{err:?}");
        if !text.is_empty() {
            for shown in [err.to_string(), format!("{err:?}")] {
                assert!(!shown.contains(&text), "input echoed: {shown}");
                assert!(!shown.contains(&text[..8]), "input echoed: {shown}");
            }
        }
    }
}

#[test]
fn from_file_reads_text_or_raw_bytes() {
    let text = ScratchFile::new(format!("{}\n", hex::encode(known_root_bytes())).as_bytes());
    assert!(same_key(
        &RootKey::from_file(&text.0).unwrap(),
        &known_root()
    ));

    let base64 = ScratchFile::new(STANDARD.encode(known_root_bytes()).as_bytes());
    assert!(same_key(
        &RootKey::from_file(&base64.0).unwrap(),
        &known_root()
    ));

    let raw = ScratchFile::new(&known_root_bytes());
    assert!(same_key(
        &RootKey::from_file(&raw.0).unwrap(),
        &known_root()
    ));
}

#[test]
fn from_file_rejects_bad_files_without_echoing_them() {
    // 32 characters of hex: a truncated text key, not 32 raw bytes.
    let truncated_text = hex::encode(known_root_bytes())[..32].to_owned();
    let raw_31 = [0x90u8; 31];
    let raw_33 = [0x90u8; 33];
    let cases: [&[u8]; 4] = [truncated_text.as_bytes(), &raw_31, &raw_33, b""];
    for contents in cases {
        let file = ScratchFile::new(contents);
        let err = RootKey::from_file(&file.0).unwrap_err();
        assert!(matches!(err, CryptoError::InvalidKey(_)), "{err:?}");
        if !contents.is_empty() {
            crate::support::assert_no_leak(&format!("{err} {err:?}"), contents);
        }
    }

    let missing = std::env::temp_dir().join("strongroom-crypto-test-does-not-exist.key");
    let err = RootKey::from_file(&missing).unwrap_err();
    assert!(matches!(err, CryptoError::InvalidKey(_)));
    assert!(err.to_string().contains("does-not-exist"), "names the file");
}
