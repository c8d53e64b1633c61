//! The search used for large sets of needles: each needle is indexed by a
//! hash of its first bytes (its anchor), and a text is searched by rolling
//! that hash over it and checking the needles of each anchor that hashes
//! alike, byte by byte.
//!
//! It finds what one leftmost-longest automaton over the same needles would
//! (see [`crate::known`]), but it is built in time proportional to the
//! number of needles (an automaton over tens of thousands of long, unrelated
//! needles has millions of states and takes seconds to compile), and it
//! keeps the needles themselves (wiped when dropped) rather than tables of
//! states. Searching costs a few operations per byte of text and a check of
//! the needles whose anchor's hash passes a bit filter.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

use zeroize::Zeroizing;

use crate::forms::Needle;

/// The longest anchor: longer ones would only slow the hash down.
const MAX_ANCHOR: usize = 32;

/// The multiplier of the rolling hash (odd, so multiplication by it is a
/// bijection modulo 2^64).
const BASE: u64 = 0x0000_0100_0000_01b3;

/// Bits of filter per anchor (rounded up to a power of two): with 32, a
/// position of text unrelated to any needle passes the filter about once
/// in 32 × 0.7 tries.
const FILTER_BITS_PER_ANCHOR: usize = 32;

/// The largest filter, in bits (8 MiB).
const MAX_FILTER_BITS: usize = 1 << 26;

/// The buckets' hashing: a bucket key (a mixed hash already, looked up at
/// every position whose anchor passes the filter) mixed once more with a
/// seed drawn for each index, far cheaper than SipHash. The seed keeps a
/// tenant's writer, who knows [`mix`], from choosing values whose keys
/// crowd the map's slots.
#[derive(Clone, Copy)]
struct KeyState(u64);

impl KeyState {
    fn new() -> Self {
        KeyState(std::collections::hash_map::RandomState::new().hash_one(0u64))
    }
}

impl BuildHasher for KeyState {
    type Hasher = KeyHasher;

    fn build_hasher(&self) -> KeyHasher {
        KeyHasher {
            seed: self.0,
            hash: 0,
        }
    }
}

struct KeyHasher {
    seed: u64,
    hash: u64,
}

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.hash
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are hashed; any other input still hashes.
        for &b in bytes {
            self.write_u64(self.hash.rotate_left(8) ^ u64::from(b));
        }
    }

    fn write_u64(&mut self, key: u64) {
        self.hash = mix(key ^ self.seed);
    }
}

type Buckets = HashMap<u64, (u32, u32), KeyState>;

/// The needles of a set indexed by the hash of their first `anchor` bytes
/// (ASCII lower-cased, whatever the needle's kind).
pub(crate) struct Anchored {
    anchor: usize,
    /// Every needle's bytes, one after another: the exact needles as they
    /// are, the case-insensitive ones lower-cased.
    bytes: Zeroizing<Vec<u8>>,
    /// Needle `i` is `bytes[ends[i - 1]..ends[i]]` (from 0 for the first).
    ends: Vec<u32>,
    /// Needles below this index are matched as they are, the others
    /// ignoring ASCII case.
    exact: usize,
    /// For each anchor hash, the needles having it: a range of `ids`.
    buckets: Buckets,
    ids: Vec<u32>,
    /// One bit per mixed hash (modulo the filter's size): set for every
    /// anchor's.
    filter: Vec<u64>,
    filter_mask: u64,
    /// For each byte, what it weighs in the hash when it leaves the
    /// window: its lower-cased value times `BASE` to the power
    /// `anchor - 1`.
    leaving: [u64; 256],
}

/// Each byte ASCII lower-cased, as a hash term.
const LOWER: [u64; 256] = {
    let mut table = [0u64; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = (b as u8).to_ascii_lowercase() as u64;
        b += 1;
    }
    table
};

/// Spreads a polynomial hash's entropy into its low bits (the filter's and
/// the buckets' index).
fn mix(h: u64) -> u64 {
    let h = (h ^ (h >> 31)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h ^ (h >> 29)
}

impl Anchored {
    /// Indexes `exact` (matched as they are) and `folded` (lower-cased,
    /// matched ignoring ASCII case) needles: pattern `i` is `exact[i]`, then
    /// `folded[i - exact.len()]`. `None` if a needle is shorter than
    /// `min_anchor` (there is then no useful anchor).
    pub(crate) fn new(exact: &[Needle], folded: &[Needle], min_anchor: usize) -> Option<Self> {
        let shortest = exact.iter().chain(folded).map(|n| n.len()).min()?;
        if shortest < min_anchor.max(1) {
            return None;
        }
        let anchor = shortest.min(MAX_ANCHOR);
        let total: usize = exact.iter().chain(folded).map(|n| n.len()).sum();
        let count = exact.len() + folded.len();
        if u32::try_from(total).is_err() || u32::try_from(count).is_err() {
            return None;
        }
        let mut bytes = Zeroizing::new(Vec::with_capacity(total));
        let mut ends = Vec::with_capacity(count);
        let mut keyed: Vec<(u64, u32)> = Vec::with_capacity(count);
        let filter_bits = (count * FILTER_BITS_PER_ANCHOR)
            .next_power_of_two()
            .clamp(64, MAX_FILTER_BITS);
        let filter_mask = filter_bits as u64 - 1;
        let mut filter = vec![0u64; filter_bits / 64];
        for (i, needle) in exact.iter().chain(folded).enumerate() {
            let mut h = 0u64;
            for &b in &needle[..anchor] {
                h = h.wrapping_mul(BASE).wrapping_add(LOWER[usize::from(b)]);
            }
            bytes.extend_from_slice(needle);
            // Fits: checked above.
            ends.push(bytes.len() as u32);
            let key = mix(h);
            keyed.push((key, i as u32));
            let bit = key & filter_mask;
            filter[(bit / 64) as usize] |= 1 << (bit % 64);
        }
        keyed.sort_unstable();
        let mut buckets = Buckets::with_capacity_and_hasher(count, KeyState::new());
        let mut ids = Vec::with_capacity(count);
        let mut i = 0;
        while i < keyed.len() {
            let key = keyed[i].0;
            let from = ids.len() as u32;
            while i < keyed.len() && keyed[i].0 == key {
                ids.push(keyed[i].1);
                i += 1;
            }
            buckets.insert(key, (from, ids.len() as u32));
        }
        let lead_weight = (1..anchor).fold(1u64, |w, _| w.wrapping_mul(BASE));
        let leaving = std::array::from_fn(|b| LOWER[b].wrapping_mul(lead_weight));
        Some(Anchored {
            anchor,
            bytes,
            ends,
            exact: exact.len(),
            buckets,
            ids,
            filter,
            filter_mask,
            leaving,
        })
    }

    /// The heap memory used, in bytes (approximately, for the map).
    pub(crate) fn memory_usage(&self) -> usize {
        self.bytes.capacity()
            + self.ends.capacity() * 4
            + self.ids.capacity() * 4
            + self.filter.capacity() * 8
            + self.buckets.capacity() * (8 + 8 + 8)
    }

    fn needle(&self, pattern: usize) -> &[u8] {
        let start = pattern.checked_sub(1).map_or(0, |p| self.ends[p] as usize);
        &self.bytes[start..self.ends[pattern] as usize]
    }

    /// The longest needle occurring at `at` (the exact one when an exact
    /// and a case-insensitive needle have the same length there), among
    /// those whose anchor hashes to `key`.
    fn longest_at(&self, hay: &[u8], at: usize, key: u64) -> Option<(usize, usize)> {
        let &(from, to) = self.buckets.get(&key)?;
        let mut best: Option<(usize, usize)> = None;
        for &id in &self.ids[from as usize..to as usize] {
            let pattern = id as usize;
            let needle = self.needle(pattern);
            let Some(here) = hay.get(at..at + needle.len()) else {
                continue;
            };
            let found = if pattern < self.exact {
                here == needle
            } else {
                here.eq_ignore_ascii_case(needle)
            };
            if !found {
                continue;
            }
            let better = match best {
                None => true,
                Some((p, len)) => {
                    needle.len() > len
                        || (needle.len() == len && pattern < self.exact && p >= self.exact)
                }
            };
            if better {
                best = Some((pattern, needle.len()));
            }
        }
        best
    }

    /// The leftmost-longest occurrence starting at or after `from`:
    /// `(pattern, start, end)`.
    pub(crate) fn find(&self, hay: &[u8], from: usize) -> Option<(usize, usize, usize)> {
        let n = self.anchor;
        if hay.len() < n || from > hay.len() - n {
            return None;
        }
        let mut h = 0u64;
        for &b in &hay[from..from + n] {
            h = h.wrapping_mul(BASE).wrapping_add(LOWER[usize::from(b)]);
        }
        // The window at `from + i` hashes to `h`; then `leaving[i]` leaves
        // it and `entering[i]` comes in. The last window is checked after
        // the loop.
        let last = hay.len() - n;
        let leaving = &hay[from..last];
        let entering = &hay[from + n..];
        for (i, (&out, &into)) in leaving.iter().zip(entering).enumerate() {
            if let Some(found) = self.check(hay, from + i, h) {
                return Some(found);
            }
            h = h
                .wrapping_sub(self.leaving[usize::from(out)])
                .wrapping_mul(BASE)
                .wrapping_add(LOWER[usize::from(into)]);
        }
        self.check(hay, last, h)
    }

    /// The longest needle at `at`, whose window hashes to `h`, if the
    /// filter lets the hash through and one is there.
    #[inline(always)]
    fn check(&self, hay: &[u8], at: usize, h: u64) -> Option<(usize, usize, usize)> {
        let key = mix(h);
        let bit = key & self.filter_mask;
        if self.filter[(bit / 64) as usize] & (1 << (bit % 64)) == 0 {
            return None;
        }
        let (pattern, len) = self.longest_at(hay, at, key)?;
        Some((pattern, at, at + len))
    }
}
