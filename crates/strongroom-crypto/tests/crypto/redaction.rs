//! Secrets never show up in `Debug` or `Display` output.

use secrecy::{ExposeSecret, SecretString};
use strongroom_crypto::{Aad, CryptoError, Envelope, KdfParams, KeyCheck, RootKey};

use crate::format::unwrap_kek;
use crate::support::{
    CREDENTIAL_Y, PLAINTEXT, TENANT_A, aad, assert_no_leak, kek, known_root, known_root_bytes,
};

#[test]
fn root_key_debug_is_redacted() {
    let root = known_root();
    let shown = format!("{root:?} {root:#?}");
    assert_eq!(format!("{root:?}"), "RootKey([REDACTED])");
    assert_no_leak(&shown, &known_root_bytes());

    let encoded = root.to_encoded();
    assert_eq!(encoded.expose_secret(), hex::encode(known_root_bytes()));
    assert_no_leak(&format!("{encoded:?}"), &known_root_bytes());
}

#[test]
fn kek_wrapped_kek_key_check_and_envelope_debug_are_redacted() {
    let root = known_root();
    let kek = kek();
    let wrapped = root.wrap_kek(TENANT_A, 1, &kek).unwrap();
    // Learn the KEK's bytes independently, to look for them.
    let kek_bytes = unwrap_kek(&known_root_bytes(), TENANT_A, 1, &wrapped.to_bytes());
    let check = root.key_check().unwrap();
    let envelope = kek.seal(1, &aad(), PLAINTEXT).unwrap();

    let shown = format!(
        "{kek:?} {:?} {wrapped:?} {check:?} {envelope:?} {envelope:#?} {:?}",
        kek.clone(),
        aad()
    );
    assert!(format!("{kek:?}").contains("[REDACTED]"));
    assert!(format!("{envelope:?}").contains("kek_version: 1"));
    for secret in [&known_root_bytes()[..], &kek_bytes, PLAINTEXT] {
        assert_no_leak(&shown, secret);
    }
    // Stored bytes are not printed either.
    for stored in [
        wrapped.to_bytes(),
        check.to_bytes(),
        envelope.to_bytes()[1..].to_vec(),
        envelope.payload_ciphertext().to_vec(),
    ] {
        assert_no_leak(&shown, &stored[1..]);
    }
}

#[test]
fn decrypt_errors_do_not_carry_plaintext() {
    // Plaintext leaves this crate only as `open`'s `Ok` value (a
    // `Zeroizing<Vec<u8>>`, whose Debug does print bytes: callers wrap it in
    // secrecy types before it goes anywhere), never inside an error.
    let kek = kek();
    let envelope = kek.seal(1, &aad(), PLAINTEXT).unwrap();
    let wrong = Aad {
        credential: CREDENTIAL_Y,
        ..aad()
    };
    let err = kek.open(&wrong, &envelope).unwrap_err();
    assert_no_leak(&format!("{err} {err:?}"), PLAINTEXT);
}

#[test]
fn errors_never_carry_secrets() {
    let root = known_root();
    let kek = kek();
    let envelope = kek.seal(1, &aad(), PLAINTEXT).unwrap();
    let hex_key_31 = hex::encode(&known_root_bytes()[..31]);
    let passphrase = "my secret passphrase";
    let root_bytes = known_root_bytes();

    let errors: Vec<(CryptoError, Vec<&[u8]>)> = vec![
        (
            RootKey::generate()
                .unwrap()
                .verify(&root.key_check().unwrap())
                .unwrap_err(),
            vec![&root_bytes],
        ),
        (
            kek.open(
                &Aad {
                    version: 9,
                    ..aad()
                },
                &envelope,
            )
            .unwrap_err(),
            vec![PLAINTEXT],
        ),
        (
            Envelope::from_bytes(&envelope.to_bytes()[..40]).unwrap_err(),
            vec![PLAINTEXT],
        ),
        (
            root.verify(&KeyCheck::from_bytes(vec![9; 61])).unwrap_err(),
            vec![&root_bytes],
        ),
        (
            RootKey::from_encoded(&hex_key_31).unwrap_err(),
            vec![hex_key_31.as_bytes(), &root_bytes[..31]],
        ),
        (
            RootKey::derive_from_passphrase(
                &SecretString::from(passphrase),
                &KdfParams {
                    salt: b"salt".to_vec(),
                    m_cost_kib: 256,
                    t_cost: 1,
                    p_cost: 1,
                    version: 0x13,
                },
            )
            .unwrap_err(),
            vec![passphrase.as_bytes()],
        ),
        (CryptoError::Rng, vec![]),
    ];
    let mut kinds = std::collections::HashSet::new();
    for (err, secrets) in &errors {
        let shown = format!("{err} {err:?}");
        for secret in secrets {
            assert_no_leak(&shown, secret);
        }
        kinds.insert(std::mem::discriminant(err));
    }
    // Every variant is covered.
    assert_eq!(kinds.len(), 6, "{errors:?}");
}
