//! Sealing and opening credential values.

use strongroom_crypto::{Aad, CryptoError, Envelope, Kek};

use crate::support::{CREDENTIAL_Y, PLAINTEXT, TENANT_B, aad, kek};

/// Byte ranges of `EnvelopeV1` (see the format documentation).
const KEK_VERSION: std::ops::Range<usize> = 1..5;
const DEK_NONCE: std::ops::Range<usize> = 5..17;
const WRAPPED_DEK: std::ops::Range<usize> = 17..65;
const PAYLOAD_NONCE: std::ops::Range<usize> = 65..77;
const PAYLOAD_START: usize = 77;

fn flip(bytes: &[u8], index: usize, bit: u8) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out[index] ^= 1 << bit;
    out
}

/// Opens stored bytes: parse, then decrypt.
fn open_bytes(kek: &Kek, aad: &Aad<'_>, bytes: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let envelope = Envelope::from_bytes(bytes)?;
    kek.open(aad, &envelope).map(|p| p.to_vec())
}

#[test]
fn seal_then_open_roundtrips() {
    let kek = kek();
    let envelope = kek.seal(7, &aad(), PLAINTEXT).unwrap();
    assert_eq!(envelope.kek_version(), 7);
    assert_eq!(kek.open(&aad(), &envelope).unwrap().as_slice(), PLAINTEXT);

    let stored = Envelope::from_bytes(&envelope.to_bytes()).unwrap();
    assert_eq!(stored, envelope);
    assert_eq!(kek.open(&aad(), &stored).unwrap().as_slice(), PLAINTEXT);
}

#[test]
fn empty_and_large_plaintexts_roundtrip() {
    let kek = kek();
    for plaintext in [Vec::new(), vec![0x42; 1 << 20]] {
        let envelope = kek.seal(1, &aad(), &plaintext).unwrap();
        assert_eq!(
            envelope.payload_ciphertext().len(),
            plaintext.len() + 16,
            "ciphertext is plaintext plus a tag"
        );
        assert_eq!(*kek.open(&aad(), &envelope).unwrap(), plaintext);
    }
}

#[test]
fn sealing_twice_uses_fresh_data_key_and_nonces() {
    let kek = kek();
    let first = kek.seal(1, &aad(), PLAINTEXT).unwrap().to_bytes();
    let second = kek.seal(1, &aad(), PLAINTEXT).unwrap().to_bytes();
    assert_ne!(first, second);
    assert_ne!(first[DEK_NONCE], second[DEK_NONCE]);
    assert_ne!(first[WRAPPED_DEK], second[WRAPPED_DEK]);
    assert_ne!(first[PAYLOAD_NONCE], second[PAYLOAD_NONCE]);
    assert_ne!(first[PAYLOAD_START..], second[PAYLOAD_START..]);
}

#[test]
fn every_single_bit_flip_fails_closed() {
    let kek = kek();
    let bytes = kek.seal(1, &aad(), b"tiny").unwrap().to_bytes();
    assert_eq!(bytes.len(), PAYLOAD_START + 4 + 16);
    for index in 0..bytes.len() {
        for bit in 0..8 {
            match open_bytes(&kek, &aad(), &flip(&bytes, index, bit)) {
                Err(CryptoError::Malformed(_)) if index == 0 => {}
                Err(CryptoError::Decrypt) if index > 0 => {}
                other => panic!("byte {index} bit {bit}: expected failure, got {other:?}"),
            }
        }
    }
}

#[test]
fn tampering_with_each_field_is_a_decrypt_error() {
    let kek = kek();
    let bytes = kek.seal(1, &aad(), PLAINTEXT).unwrap().to_bytes();
    let tag_start = bytes.len() - 16;
    let fields = [
        ("kek_version", KEK_VERSION.start),
        ("kek_version low byte", KEK_VERSION.end - 1),
        ("dek nonce", DEK_NONCE.start + 3),
        ("wrapped dek", WRAPPED_DEK.start + 5),
        ("wrapped dek tag", WRAPPED_DEK.end - 1),
        ("payload nonce", PAYLOAD_NONCE.start + 11),
        ("payload ciphertext", PAYLOAD_START + 2),
        ("payload tag", tag_start + 7),
    ];
    for (field, index) in fields {
        assert!(
            matches!(
                open_bytes(&kek, &aad(), &flip(&bytes, index, 0)),
                Err(CryptoError::Decrypt)
            ),
            "{field}"
        );
    }
}

#[test]
fn relabelled_kek_version_fails() {
    let kek = kek();
    let mut bytes = kek.seal(1, &aad(), PLAINTEXT).unwrap().to_bytes();
    bytes[KEK_VERSION].copy_from_slice(&2u32.to_be_bytes());
    let envelope = Envelope::from_bytes(&bytes).unwrap();
    assert_eq!(envelope.kek_version(), 2);
    assert!(matches!(
        kek.open(&aad(), &envelope),
        Err(CryptoError::Decrypt)
    ));
}

#[test]
fn truncation_and_extension_fail() {
    let kek = kek();
    let bytes = kek.seal(1, &aad(), PLAINTEXT).unwrap().to_bytes();
    for len in 0..bytes.len() {
        match open_bytes(&kek, &aad(), &bytes[..len]) {
            Err(CryptoError::Malformed(_) | CryptoError::Decrypt) => {}
            other => panic!("truncated to {len}: expected failure, got {other:?}"),
        }
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(
        open_bytes(&kek, &aad(), &longer),
        Err(CryptoError::Decrypt)
    ));
    assert!(matches!(
        Envelope::from_bytes(&bytes[..PAYLOAD_START + 15]),
        Err(CryptoError::Malformed(_))
    ));
}

#[test]
fn unknown_format_version_is_malformed() {
    let kek = kek();
    let mut bytes = kek.seal(1, &aad(), PLAINTEXT).unwrap().to_bytes();
    for version in [0u8, 2, 0xff] {
        bytes[0] = version;
        assert!(matches!(
            Envelope::from_bytes(&bytes),
            Err(CryptoError::Malformed(_))
        ));
    }
    assert!(matches!(
        Envelope::from_bytes(&[]),
        Err(CryptoError::Malformed(_))
    ));
}

#[test]
fn each_changed_aad_field_fails() {
    let kek = kek();
    let envelope = kek.seal(1, &aad(), PLAINTEXT).unwrap();
    let changed = [
        Aad {
            tenant: TENANT_B,
            ..aad()
        },
        Aad {
            environment: "staging",
            ..aad()
        },
        Aad {
            environment: "production ",
            ..aad()
        },
        Aad {
            environment: "",
            ..aad()
        },
        Aad {
            credential: CREDENTIAL_Y,
            ..aad()
        },
        Aad {
            version: 2,
            ..aad()
        },
        Aad {
            version: 0,
            ..aad()
        },
    ];
    for other in changed {
        assert!(
            matches!(kek.open(&other, &envelope), Err(CryptoError::Decrypt)),
            "{other:?}"
        );
    }
    assert_eq!(kek.open(&aad(), &envelope).unwrap().as_slice(), PLAINTEXT);
}

#[test]
fn envelope_moved_to_another_row_fails() {
    // Same tenant and KEK; the stored bytes are copied to another credential's
    // row, another version's row, and another tenant's row.
    let kek = kek();
    let stored = kek.seal(1, &aad(), PLAINTEXT).unwrap().to_bytes();
    for place in [
        Aad {
            credential: CREDENTIAL_Y,
            ..aad()
        },
        Aad {
            version: 3,
            ..aad()
        },
        Aad {
            tenant: TENANT_B,
            ..aad()
        },
    ] {
        assert!(matches!(
            open_bytes(&kek, &place, &stored),
            Err(CryptoError::Decrypt)
        ));
    }
}

#[test]
fn swapping_wrapped_data_keys_between_envelopes_fails() {
    let kek = kek();
    let first = kek.seal(1, &aad(), PLAINTEXT).unwrap().to_bytes();
    let second = kek.seal(1, &aad(), b"another value").unwrap().to_bytes();
    let mut mixed = first.clone();
    mixed[DEK_NONCE.start..WRAPPED_DEK.end]
        .copy_from_slice(&second[DEK_NONCE.start..WRAPPED_DEK.end]);
    assert!(matches!(
        open_bytes(&kek, &aad(), &mixed),
        Err(CryptoError::Decrypt)
    ));
}

#[test]
fn wrong_kek_fails() {
    let envelope = kek().seal(1, &aad(), PLAINTEXT).unwrap();
    assert!(matches!(
        kek().open(&aad(), &envelope),
        Err(CryptoError::Decrypt)
    ));
}

#[test]
fn rewrap_keeps_payload_and_moves_to_new_kek() {
    let old_kek = kek();
    let new_kek = kek();
    let original = old_kek.seal(1, &aad(), PLAINTEXT).unwrap();
    let rewrapped = old_kek.rewrap(&new_kek, 2, &aad(), &original).unwrap();

    assert_eq!(rewrapped.kek_version(), 2);
    assert_eq!(
        rewrapped.payload_ciphertext(),
        original.payload_ciphertext()
    );
    let (before, after) = (original.to_bytes(), rewrapped.to_bytes());
    assert_eq!(before[PAYLOAD_NONCE.start..], after[PAYLOAD_NONCE.start..]);
    assert_ne!(before[WRAPPED_DEK], after[WRAPPED_DEK]);

    assert_eq!(
        new_kek.open(&aad(), &rewrapped).unwrap().as_slice(),
        PLAINTEXT
    );
    assert!(matches!(
        old_kek.open(&aad(), &rewrapped),
        Err(CryptoError::Decrypt)
    ));
    // The original envelope is untouched and still opens under the old KEK only.
    assert_eq!(
        old_kek.open(&aad(), &original).unwrap().as_slice(),
        PLAINTEXT
    );
    assert!(matches!(
        new_kek.open(&aad(), &original),
        Err(CryptoError::Decrypt)
    ));
}

#[test]
fn rewrap_fails_closed_with_wrong_kek_or_aad() {
    let old_kek = kek();
    let new_kek = kek();
    let envelope = old_kek.seal(1, &aad(), PLAINTEXT).unwrap();
    assert!(matches!(
        new_kek.rewrap(&new_kek, 2, &aad(), &envelope),
        Err(CryptoError::Decrypt)
    ));
    let elsewhere = Aad {
        credential: CREDENTIAL_Y,
        ..aad()
    };
    assert!(matches!(
        old_kek.rewrap(&new_kek, 2, &elsewhere, &envelope),
        Err(CryptoError::Decrypt)
    ));
    // A rewrap is bound to its new KEK version too.
    let rewrapped = old_kek.rewrap(&new_kek, 2, &aad(), &envelope).unwrap();
    let mut bytes = rewrapped.to_bytes();
    bytes[KEK_VERSION].copy_from_slice(&1u32.to_be_bytes());
    assert!(matches!(
        open_bytes(&new_kek, &aad(), &bytes),
        Err(CryptoError::Decrypt)
    ));
}

#[test]
fn aad_encoding_is_unambiguous() {
    // Shifting bytes between the environment and neighbouring fields must
    // change the encoding.
    let a = Aad {
        environment: "ab",
        ..aad()
    };
    let b = Aad {
        environment: "a",
        ..aad()
    };
    assert_ne!(a.to_bytes(), b.to_bytes());
    assert!(a.to_bytes().starts_with(&[0, 0, 0, 0, 0, 0, 0, 24]));
    assert!(
        a.to_bytes()
            .windows(24)
            .any(|w| w == b"strongroom/credential/v1")
    );
    let c = Aad {
        environment: "a\0",
        ..aad()
    };
    assert_ne!(b.to_bytes(), c.to_bytes());
}
