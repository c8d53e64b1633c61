//! Ids the edge makes for calls that came without one: request ids and
//! trace ids, 128 random bits written as 32 lowercase hex digits.
//!
//! They come from a per-thread generator seeded once from the operating
//! system, so a call costs no system call for them: these ids only have to
//! be unique (they protect nothing, and a client may choose its own).

use std::cell::Cell;

/// 128 random bits.
pub(crate) fn random_u128() -> u128 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(uuid::Uuid::new_v4().as_u64_pair().0);
    }
    STATE.with(|state| u128::from(splitmix64(state)) << 64 | u128::from(splitmix64(state)))
}

/// The next output of SplitMix64 over `state`.
fn splitmix64(state: &Cell<u64>) -> u64 {
    let next = state.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
    state.set(next);
    let mut z = next;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `id` as 32 lowercase hex digits.
pub(crate) fn hex32(id: u128) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    (0..32)
        .rev()
        .map(|i| char::from(DIGITS[(id >> (i * 4)) as usize & 0xf]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_32_hex_digits_and_differ() {
        assert_eq!(hex32(0xab), format!("{:032x}", 0xab));
        assert_eq!(hex32(u128::MAX), "f".repeat(32));
        let a = random_u128();
        let b = random_u128();
        assert_ne!(a, b);
        let from_another_thread = std::thread::spawn(random_u128).join().unwrap();
        assert_ne!(from_another_thread, a);
        assert_ne!(from_another_thread, b);
    }
}
