//! Argon2id derivation of the root key.

use secrecy::{ExposeSecret, SecretString};
use strongroom_crypto::{CryptoError, KdfParams, RootKey};

/// Small costs so the tests run fast.
fn test_params(salt: &[u8]) -> KdfParams {
    KdfParams {
        salt: salt.to_vec(),
        m_cost_kib: 256,
        t_cost: 1,
        p_cost: 1,
        version: 0x13,
    }
}

fn derive(passphrase: &str, params: &KdfParams) -> Result<RootKey, CryptoError> {
    RootKey::derive_from_passphrase(&SecretString::from(passphrase), params)
}

fn encoded(key: &RootKey) -> String {
    key.to_encoded().expose_secret().to_owned()
}

#[test]
fn same_passphrase_and_params_give_the_same_key() {
    let params = test_params(b"sixteen byte slt");
    let first = derive("hunter2 hunter2", &params).unwrap();
    let second = derive("hunter2 hunter2", &params).unwrap();
    assert_eq!(encoded(&first), encoded(&second));
    second.verify(&first.key_check().unwrap()).unwrap();
}

#[test]
fn salt_passphrase_and_costs_change_the_key() {
    let params = test_params(b"sixteen byte slt");
    let reference = encoded(&derive("hunter2 hunter2", &params).unwrap());
    let other_salt = derive("hunter2 hunter2", &test_params(b"sixteen byte sLt")).unwrap();
    let other_passphrase = derive("hunter2 hunter3", &params).unwrap();
    let other_cost = derive(
        "hunter2 hunter2",
        &KdfParams {
            t_cost: 2,
            ..params.clone()
        },
    )
    .unwrap();
    for key in [other_salt, other_passphrase, other_cost] {
        assert_ne!(encoded(&key), reference);
    }
}

#[test]
fn derived_key_matches_argon2id_reference() {
    // Independent computation with the argon2 crate's defaults for Argon2id v1.3.
    use argon2::{Algorithm, Argon2, Params, Version};
    let params = test_params(b"sixteen byte slt");
    let mut expected = [0u8; 32];
    Argon2::new(
        Algorithm::Argon2id,
        Version::V0x13,
        Params::new(256, 1, 1, Some(32)).unwrap(),
    )
    .hash_password_into(b"pass phrase", &params.salt, &mut expected)
    .unwrap();
    assert_eq!(
        encoded(&derive("pass phrase", &params).unwrap()),
        hex::encode(expected)
    );
}

#[test]
fn bad_params_are_kdf_errors() {
    let good = test_params(b"sixteen byte slt");
    let bad = [
        KdfParams {
            salt: b"short".to_vec(),
            ..good.clone()
        },
        KdfParams {
            version: 7,
            ..good.clone()
        },
        KdfParams {
            t_cost: 0,
            ..good.clone()
        },
        KdfParams {
            p_cost: 0,
            ..good.clone()
        },
        KdfParams {
            m_cost_kib: u32::MAX,
            ..good.clone()
        },
    ];
    for params in bad {
        let err = derive("a passphrase", &params).unwrap_err();
        assert!(matches!(err, CryptoError::Kdf(_)), "{params:?}: {err:?}");
        assert!(!err.to_string().contains("a passphrase"));
    }
}

#[test]
fn generated_params_use_random_salt_and_owasp_costs() {
    let first = KdfParams::generate().unwrap();
    let second = KdfParams::generate().unwrap();
    assert_eq!(first.salt.len(), 16);
    assert_ne!(first.salt, second.salt);
    assert_eq!(
        (first.m_cost_kib, first.t_cost, first.p_cost, first.version),
        (64 * 1024, 3, 1, 0x13)
    );
}

#[test]
fn params_roundtrip_through_serde() {
    let params = KdfParams::generate().unwrap();
    let json = serde_json::to_string(&params).unwrap();
    let back: KdfParams = serde_json::from_str(&json).unwrap();
    assert_eq!(back, params);
}
