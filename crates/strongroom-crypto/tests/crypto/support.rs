//! Shared fixtures.

use strongroom_crypto::{Aad, Kek, RootKey};
use uuid::Uuid;

/// A root key with the known bytes 0x00..=0x1f.
pub fn known_root_bytes() -> [u8; 32] {
    std::array::from_fn(|i| i as u8)
}

/// The root key made of [`known_root_bytes`].
pub fn known_root() -> RootKey {
    RootKey::from_encoded(&hex::encode(known_root_bytes())).unwrap()
}

pub const TENANT_A: Uuid = Uuid::from_u128(0x0000_000a_0000_7000_8000_0000_0000_000a);
pub const TENANT_B: Uuid = Uuid::from_u128(0x0000_000b_0000_7000_8000_0000_0000_000b);
pub const CREDENTIAL_X: Uuid = Uuid::from_u128(0x0000_00c1_0000_7000_8000_0000_0000_00c1);
pub const CREDENTIAL_Y: Uuid = Uuid::from_u128(0x0000_00c2_0000_7000_8000_0000_0000_00c2);

pub const PLAINTEXT: &[u8] = b"sk-live-4f7a9c1e2b3d5f60718293a4b5c6d7e8";

/// The place of credential X, version 1, tenant A, production.
pub fn aad() -> Aad<'static> {
    Aad {
        tenant: TENANT_A,
        environment: "production",
        credential: CREDENTIAL_X,
        version: 1,
    }
}

pub fn kek() -> Kek {
    Kek::generate().unwrap()
}

/// Every way a secret's bytes could show up in formatted output.
pub fn renderings(secret: &[u8]) -> Vec<String> {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let mut out = vec![
        hex::encode(secret),
        hex::encode_upper(secret),
        STANDARD.encode(secret),
        STANDARD_NO_PAD.encode(secret),
        URL_SAFE.encode(secret),
        URL_SAFE_NO_PAD.encode(secret),
    ];
    // `{:?}` of the bytes, e.g. "[0, 1, 2, 3" — the shape a derived Debug prints.
    let slice_debug = format!("{:?}", &secret[..secret.len().min(4)]);
    out.push(slice_debug.trim_end_matches(']').to_owned());
    // A derived Debug on `Vec<u8>` or `[u8; N]` in hex (`{:x?}`).
    let hex_debug = format!("{:x?}", &secret[..secret.len().min(4)]);
    out.push(hex_debug.trim_end_matches(']').to_owned());
    if let Ok(text) = std::str::from_utf8(secret) {
        out.push(text.to_owned());
    }
    out
}

/// Panics if `shown` contains any rendering of `secret`.
pub fn assert_no_leak(shown: &str, secret: &[u8]) {
    for rendering in renderings(secret) {
        assert!(
            !shown.contains(&rendering),
            "secret leaked as {rendering:?} in {shown:?}"
        );
    }
}
