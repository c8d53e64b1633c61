//! Property tests: any value roundtrips; any single bit flip fails closed.

use proptest::prelude::*;
use strongroom_crypto::{Aad, CryptoError, Envelope, Kek};
use uuid::Uuid;

fn arb_aad_parts() -> impl Strategy<Value = (u128, String, u128, u32)> {
    (
        any::<u128>(),
        "[a-z0-9\\-\\x00]{0,12}",
        any::<u128>(),
        any::<u32>(),
    )
}

fn to_aad(parts: &(u128, String, u128, u32)) -> Aad<'_> {
    Aad {
        tenant: Uuid::from_u128(parts.0),
        environment: &parts.1,
        credential: Uuid::from_u128(parts.2),
        version: parts.3,
    }
}

proptest! {
    #[test]
    fn any_plaintext_roundtrips(
        plaintext in proptest::collection::vec(any::<u8>(), 0..2048),
        parts in arb_aad_parts(),
        kek_version in any::<u32>(),
    ) {
        let kek = Kek::generate().unwrap();
        let aad = to_aad(&parts);
        let stored = kek.seal(kek_version, &aad, &plaintext).unwrap().to_bytes();
        let envelope = Envelope::from_bytes(&stored).unwrap();
        prop_assert_eq!(envelope.kek_version(), kek_version);
        let opened = kek.open(&aad, &envelope).unwrap();
        prop_assert_eq!(opened.as_slice(), plaintext.as_slice());
    }

    #[test]
    fn any_single_bit_flip_fails(
        plaintext in proptest::collection::vec(any::<u8>(), 0..256),
        position in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let kek = Kek::generate().unwrap();
        let aad = Aad {
            tenant: Uuid::from_u128(1),
            environment: "production",
            credential: Uuid::from_u128(2),
            version: 3,
        };
        let mut stored = kek.seal(1, &aad, &plaintext).unwrap().to_bytes();
        let index = position.index(stored.len());
        stored[index] ^= 1 << bit;
        let result = Envelope::from_bytes(&stored).and_then(|e| kek.open(&aad, &e));
        prop_assert!(
            matches!(result, Err(CryptoError::Decrypt | CryptoError::Malformed(_))),
            "byte {} bit {} opened", index, bit
        );
    }

    #[test]
    fn distinct_aads_encode_distinctly(a in arb_aad_parts(), b in arb_aad_parts()) {
        let (a, b) = (to_aad(&a), to_aad(&b));
        prop_assert_eq!(a == b, a.to_bytes() == b.to_bytes());
    }

    #[test]
    fn distinct_environments_encode_distinctly(
        left in "[ab\\x00]{0,4}",
        right in "[ab\\x00]{0,4}",
    ) {
        // A tiny alphabet makes near-collisions (prefixes, shifted bytes) likely.
        let a = Aad {
            tenant: Uuid::from_u128(7),
            environment: &left,
            credential: Uuid::from_u128(7),
            version: 7,
        };
        let b = Aad { environment: &right, ..a };
        prop_assert_eq!(left == right, a.to_bytes() == b.to_bytes());
    }
}
