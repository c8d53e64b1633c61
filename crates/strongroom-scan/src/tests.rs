//! Properties of the whole crate: every form of random values is found at
//! the right place, and the streaming redactor agrees with a one-shot
//! redaction for every chunking, never writing part of a value early.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use proptest::prelude::*;

use crate::known::SearchKind;
use crate::{Form, KnownValues, Match, Redactor, redact};

/// A planted occurrence: the text to insert, the span of the value's own
/// characters inside it, and the form expected.
struct Planted {
    text: Vec<u8>,
    span: (usize, usize),
    forms: Vec<Form>,
}

/// Percent-encoding of everything but the RFC 3986 unreserved characters,
/// written independently of the crate's encoder.
fn percent_encode(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for &b in value {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b);
        } else {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
    }
    out
}

/// The value inside a base64 blob: `align` prefix bytes, the value, then
/// `suffix` (whose first byte has its top bits set, so the character after
/// the value's own ones cannot be mistaken for a padded end).
fn plant_base64(value: &[u8], align: usize, suffix: &[u8], url: bool, padded: bool) -> Planted {
    let mut blob = vec![0x41u8; align];
    blob.extend_from_slice(value);
    blob.extend_from_slice(suffix);
    let engine = match (url, padded) {
        (false, true) => &STANDARD,
        (false, false) => &STANDARD_NO_PAD,
        (true, true) => &URL_SAFE,
        (true, false) => &URL_SAFE_NO_PAD,
    };
    let encoded = engine.encode(&blob).into_bytes();
    let bits = 8 * (align + value.len());
    let start = (8 * align).div_ceil(6);
    let end = if suffix.is_empty() {
        encoded.len()
    } else {
        bits / 6
    };
    let own = &encoded[start..end];
    let forms = if url && own.iter().any(|b| matches!(b, b'-' | b'_')) {
        vec![Form::Base64Url]
    } else if !url && own.iter().any(|b| matches!(b, b'+' | b'/')) {
        vec![Form::Base64]
    } else {
        vec![Form::Base64, Form::Base64Url]
    };
    Planted {
        text: encoded,
        span: (start, end),
        forms,
    }
}

fn whole(text: Vec<u8>, forms: Vec<Form>) -> Planted {
    let len = text.len();
    Planted {
        text,
        span: (0, len),
        forms,
    }
}

/// Every way the tests plant `value`.
fn plantings(value: &[u8]) -> Vec<Planted> {
    let mut out = vec![whole(value.to_vec(), vec![Form::Plain])];
    for align in 0..3 {
        for suffix in [&b""[..], b"\xff", b"\xf0\x01\x02\x03"] {
            for url in [false, true] {
                for padded in [false, true] {
                    out.push(plant_base64(value, align, suffix, url, padded));
                }
            }
        }
    }
    let url = percent_encode(value);
    let url_forms = if url == value {
        vec![Form::Plain]
    } else {
        vec![Form::Url]
    };
    out.push(whole(url, url_forms));
    let lower: Vec<u8> = value
        .iter()
        .flat_map(|b| format!("{b:02x}").into_bytes())
        .collect();
    let upper: Vec<u8> = value
        .iter()
        .flat_map(|b| format!("{b:02X}").into_bytes())
        .collect();
    out.push(whole(lower, vec![Form::Hex]));
    out.push(whole(upper, vec![Form::Hex]));
    if let Ok(text) = std::str::from_utf8(value) {
        let quoted = serde_json::to_string(text).expect("a string serializes");
        let escaped = quoted.as_bytes()[1..quoted.len() - 1].to_vec();
        let forms = if escaped == value {
            vec![Form::Plain]
        } else {
            vec![Form::JsonEscaped]
        };
        out.push(whole(escaped, forms));
    }
    out
}

fn value_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 8..48),
        "[ -~]{8,40}".prop_map(String::into_bytes),
        "[a-zA-Z0-9é€😀 /+=&%\"\\\\\n]{8,30}".prop_map(String::into_bytes),
    ]
}

/// Filler that cannot extend or create an occurrence: a byte used by no
/// encoding of the tests' values next to them.
const GAP: &[u8] = b"\x00 | \x00";

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_form_of_random_values_is_found_where_it_was_planted(
        values in proptest::collection::vec(value_strategy(), 1..4),
    ) {
        let known = KnownValues::new(values.iter().enumerate().map(|(i, v)| (i, v.as_slice())), 8).unwrap();
        for (label, value) in values.iter().enumerate() {
            for planted in plantings(value) {
                let mut text = GAP.to_vec();
                let offset = text.len();
                text.extend_from_slice(&planted.text);
                text.extend_from_slice(GAP);
                let found = known.find(&text);
                let expected = (offset + planted.span.0, offset + planted.span.1);
                let hit = found.iter().find(|m| m.label == label && (m.start, m.end) == expected);
                prop_assert!(
                    hit.is_some(),
                    "value {label} planted as {:?} at {expected:?}, found {found:?}",
                    planted.forms
                );
                let form = hit.map(|m| m.form);
                // Equal values may have reported a higher-priority form.
                let equal_elsewhere = values.iter().enumerate().any(|(i, v)| i != label && v == value);
                prop_assert!(
                    equal_elsewhere || form.is_some_and(|f| planted.forms.contains(&f) || f == Form::Plain),
                    "form {form:?}, expected one of {:?}",
                    planted.forms
                );
            }
        }
    }

    #[test]
    fn streaming_equals_one_shot_redaction_for_every_chunking(
        values in proptest::collection::vec(value_strategy(), 1..4),
        picks in proptest::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>()), 1..8),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let known = Arc::new(
            KnownValues::new(values.iter().enumerate().map(|(i, v)| (i, v.as_slice())), 8).unwrap(),
        );
        let mut text = GAP.to_vec();
        for (value, planting) in &picks {
            let value = value.get(&values);
            let plantings = plantings(value);
            text.extend_from_slice(&planting.get(&plantings).text);
            text.extend_from_slice(GAP);
        }
        let mut matches = Vec::new();
        known.find_contiguous(&text, &mut matches);
        prop_assert!(matches.len() >= picks.len());
        let expected = redact(&text, &matches, |m| format!("[{}]", m.label).into_bytes());

        let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(text.len() + 1)).collect();
        cuts.sort_unstable();
        cuts.push(text.len());
        let mut redactor = Redactor::new(Arc::clone(&known), "[?]");
        for label in 0..values.len() {
            redactor = redactor.with_replacement(label, format!("[{label}]"));
        }
        let mut out = Vec::new();
        let mut hits = Vec::new();
        let mut from = 0;
        for cut in cuts {
            hits.extend(redactor.push(&text[from..cut], &mut out));
            from = cut;
            // Whatever was written stays: it is a prefix of the final output.
            prop_assert!(expected.starts_with(&out), "wrote bytes it could not know yet");
            prop_assert!(redactor.held_len() < known.longest_needle());
        }
        hits.extend(redactor.flush(&mut out));
        prop_assert_eq!(&out, &expected);
        prop_assert_eq!(hits.len(), matches.len());
        // The whole text at once gives the same, on a redactor that has
        // already served a stream.
        let mut whole = Vec::new();
        let whole_hits = redactor.redact(&text, &mut whole);
        prop_assert_eq!(&whole, &expected);
        prop_assert_eq!(whole_hits.len(), matches.len());
        for value in &values {
            prop_assert!(!out.windows(value.len()).any(|w| w == value.as_slice()));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn byte_at_a_time_and_fixed_chunks_redact_every_planting(
        values in proptest::collection::vec(value_strategy(), 1..3),
    ) {
        let known = Arc::new(
            KnownValues::new(values.iter().enumerate().map(|(i, v)| (i, v.as_slice())), 8).unwrap(),
        );
        let mut text = GAP.to_vec();
        for value in &values {
            for planted in plantings(value) {
                text.extend_from_slice(&planted.text);
                text.extend_from_slice(GAP);
            }
        }
        let mut matches = Vec::new();
        known.find_contiguous(&text, &mut matches);
        let expected = redact(&text, &matches, |_| b"#".to_vec());
        for size in [1, 2, 3, 7, known.longest_needle() - 1, known.longest_needle(), known.longest_needle() + 1] {
            let mut redactor = Redactor::new(Arc::clone(&known), "#");
            let mut out = Vec::new();
            for chunk in text.chunks(size) {
                redactor.push(chunk, &mut out);
                prop_assert!(expected.starts_with(&out), "chunks of {size}: wrote bytes it could not know yet");
            }
            redactor.flush(&mut out);
            prop_assert_eq!(&out, &expected, "chunks of {}", size);
        }
    }
}

#[test]
fn a_value_wrapped_across_indented_lines_is_found_with_its_whole_span() {
    let value: Vec<u8> = (0u8..=200).collect();
    let known = KnownValues::new([(7, value.as_slice())], 8).unwrap();
    let encoded = STANDARD.encode(&value);
    let mut text = b"key: |\n".to_vec();
    let start = text.len() + 4;
    let mut end = 0;
    for (i, line) in encoded.as_bytes().chunks(64).enumerate() {
        text.extend_from_slice(if i % 2 == 0 { b"    " } else { b"\t\t  " });
        text.extend_from_slice(line);
        end = text.len();
        text.extend_from_slice(if i % 2 == 0 { b"\r\n" } else { b"\n" });
    }
    text.extend_from_slice(b"next: 1\n");
    let found = known.find(&text);
    assert_eq!(
        found,
        vec![Match {
            label: 7,
            form: Form::Base64,
            start,
            end
        }]
    );
}

#[test]
fn values_shorter_than_the_minimum_are_never_matched() {
    let known = KnownValues::new([(0, &b"short12"[..]), (1, &b"long-enough"[..])], 8).unwrap();
    assert_eq!(known.len(), 1);
    let found = known.find(b"short12 long-enough c2hvcnQxMg==");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].label, 1);
}

#[test]
fn equal_values_report_every_label_and_redact_once() {
    let known = KnownValues::new(
        [
            (3, &b"same-secret-value"[..]),
            (5, &b"same-secret-value"[..]),
        ],
        8,
    )
    .unwrap();
    let found = known.find(b"a same-secret-value b");
    assert_eq!(
        found.iter().map(|m| m.label).collect::<Vec<_>>(),
        vec![3, 5]
    );
    let only_five: Vec<Match> = found.into_iter().filter(|m| m.label == 5).collect();
    let out = redact(b"a same-secret-value b", &only_five, |m| {
        format!("[{}]", m.label).into_bytes()
    });
    assert_eq!(out, b"a [5] b");
}

#[test]
fn debug_prints_counts_never_values() {
    let secret = b"do-not-print-me-0123";
    let known = Arc::new(KnownValues::new([(0, &secret[..])], 8).unwrap());
    let mut redactor = Redactor::new(Arc::clone(&known), "x");
    let mut out = Vec::new();
    redactor.push(b"do-not-print-me-012", &mut out);
    let printed = format!("{known:?} {redactor:?} {:?}", known.find(secret));
    assert!(!printed.contains("do-not"), "{printed}");
    assert!(
        !printed.contains(&STANDARD.encode(secret)[..8]),
        "{printed}"
    );
}

#[test]
fn no_values_pass_everything_through() {
    let known = Arc::new(KnownValues::new(std::iter::empty(), 8).unwrap());
    assert!(known.is_empty());
    let mut redactor = Redactor::new(known, "x");
    let mut out = Vec::new();
    redactor.push(b"abc", &mut out);
    assert_eq!(out, b"abc");
    redactor.flush(&mut out);
    assert_eq!(out, b"abc");
}

#[test]
fn known_values_and_redactors_cross_threads() {
    fn shareable<T: Send + Sync>() {}
    fn sendable<T: Send>() {}
    shareable::<KnownValues>();
    sendable::<Redactor>();
}

#[test]
fn plain_hex_url_and_json_forms_match_in_either_case_base64_only_as_it_is() {
    let value = b"sk-Live/Key_0123abcdef";
    let known = Arc::new(KnownValues::new([(0, &value[..])], 8).unwrap());
    let upper = String::from_utf8(value.to_vec()).unwrap().to_uppercase();
    let lower = String::from_utf8(value.to_vec()).unwrap().to_lowercase();
    let mixed_hex: String = value
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if i % 2 == 0 {
                format!("{b:02X}")
            } else {
                format!("{b:02x}")
            }
        })
        .collect();
    let url_mixed = "SK-LIVE%2fKEY_0123ABCDEF";
    for (text, form) in [
        (upper.as_str(), Form::Plain),
        (lower.as_str(), Form::Plain),
        (mixed_hex.as_str(), Form::Hex),
        (url_mixed, Form::Url),
    ] {
        let planted = format!("x {text} y");
        let found = known.find(planted.as_bytes());
        assert_eq!(found.len(), 1, "{form:?} in {planted:?}: {found:?}");
        assert_eq!(
            (found[0].form, found[0].start, found[0].end),
            (form, 2, 2 + text.len())
        );
    }
    // Base64 letters carry information: another case is another value.
    let b64 = STANDARD.encode(value);
    assert_eq!(known.find(b64.as_bytes()).len(), 1);
    let flipped: String = b64
        .chars()
        .map(|c| {
            if c.is_ascii_uppercase() {
                c.to_ascii_lowercase()
            } else {
                c.to_ascii_uppercase()
            }
        })
        .collect();
    assert!(known.find(flipped.as_bytes()).is_empty());
    // Streaming, cut anywhere, the upper-cased value is replaced too.
    let text = format!("a {upper} b");
    for cut in 0..=text.len() {
        let mut redactor = Redactor::new(Arc::clone(&known), "[K]");
        let mut out = Vec::new();
        redactor.push(&text.as_bytes()[..cut], &mut out);
        redactor.push(&text.as_bytes()[cut..], &mut out);
        redactor.flush(&mut out);
        assert_eq!(out, b"a [K] b", "cut at {cut}");
    }
}

#[test]
fn exact_and_case_insensitive_needles_merge_leftmost_longest() {
    // "one" is found in plain form (case-insensitive needles), "two" in
    // base64 (exact needles); they are placed so that each automaton's own
    // next occurrence overlaps one of the other's.
    let one = b"first-value-abc";
    let two = b"second-value-xyz";
    let known = KnownValues::new([(1, &one[..]), (2, &two[..])], 8).unwrap();
    let b64 = STANDARD.encode(two);
    let text = format!("{} {b64} {} {b64}", "FIRST-VALUE-ABC", "first-value-abc");
    let found = known.find(text.as_bytes());
    let got: Vec<(usize, Form)> = found.iter().map(|m| (m.label, m.form)).collect();
    assert_eq!(
        got,
        vec![
            (1, Form::Plain),
            (2, Form::Base64),
            (1, Form::Plain),
            (2, Form::Base64)
        ]
    );
    // Overlap: the plain value written right into a base64 run; the
    // leftmost occurrence wins, then the search goes on after it.
    let text = format!("{}{b64}", "FIRST-VALUE-ABC");
    let found = known.find(text.as_bytes());
    assert_eq!(found[0].label, 1);
    assert_eq!(found[0].start, 0);
    assert!(
        found
            .iter()
            .all(|m| m.start >= found[0].end || m.label == 1)
    );
    assert!(known.memory_usage() > 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The anchored index (used for large sets) finds exactly what the
    /// automata find: the same needles, spans, owners and order, in texts
    /// with every planting, case changes and cut or altered copies.
    #[test]
    fn the_anchored_index_finds_what_the_automata_find(
        values in proptest::collection::vec(value_strategy(), 1..6),
        picks in proptest::collection::vec(
            (any::<prop::sample::Index>(), any::<prop::sample::Index>(), 0u8..4, any::<prop::sample::Index>()),
            1..12,
        ),
        min_len in 4usize..10,
    ) {
        let labelled = || values.iter().enumerate().map(|(i, v)| (i, v.as_slice()));
        let automata = KnownValues::build(labelled(), min_len, SearchKind::Automata).unwrap();
        let anchored = KnownValues::build(labelled(), min_len, SearchKind::Anchored).unwrap();
        let mut text = GAP.to_vec();
        for (value, planting, how, at) in &picks {
            let value: &Vec<u8> = value.get(&values);
            let plantings = plantings(value);
            let mut piece = planting.get(&plantings).text.clone();
            match how {
                // As it is.
                0 => {}
                // Upper-cased (the case-insensitive forms still match).
                1 => piece.make_ascii_uppercase(),
                // Cut short.
                2 => piece.truncate(at.index(piece.len() + 1)),
                // One byte changed.
                _ => {
                    if !piece.is_empty() {
                        let i = at.index(piece.len());
                        piece[i] ^= 0x20;
                    }
                }
            }
            text.extend_from_slice(&piece);
            // Sometimes no gap: occurrences touch and overlap.
            if at.index(2) == 0 {
                text.extend_from_slice(GAP);
            }
        }
        prop_assert_eq!(anchored.find(&text), automata.find(&text));
        let a: Vec<_> = anchored.matches(&text).collect();
        let b: Vec<_> = automata.matches(&text).collect();
        prop_assert_eq!(a, b);
    }
}

#[test]
fn large_sets_use_the_anchored_index_and_still_find_every_form() {
    let values: Vec<Vec<u8>> = (0..500)
        .map(|i| format!("key-{i:04}-0123456789abcdefghij-{}", i * 7919).into_bytes())
        .collect();
    let known =
        KnownValues::new(values.iter().enumerate().map(|(i, v)| (i, v.as_slice())), 8).unwrap();
    assert!(known.is_anchored(), "{known:?}");
    for (label, value) in values.iter().enumerate().step_by(37) {
        for planted in plantings(value) {
            let mut text = GAP.to_vec();
            let offset = text.len();
            text.extend_from_slice(&planted.text);
            text.extend_from_slice(GAP);
            let expected = (offset + planted.span.0, offset + planted.span.1);
            assert!(
                known
                    .find(&text)
                    .iter()
                    .any(|m| m.label == label && (m.start, m.end) == expected),
                "value {label} planted as {:?}",
                planted.forms
            );
        }
    }
}

#[cfg(test)]
mod build_experiment {
    use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
    use std::time::Instant;

    use super::SearchKind;
    use crate::forms::{self, Form};

    fn values(n: usize) -> Vec<Vec<u8>> {
        let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        (0..n)
            .map(|_| {
                (0..40)
                    .map(|_| {
                        s ^= s << 13;
                        s ^= s >> 7;
                        s ^= s << 17;
                        alphabet[(s % 62) as usize]
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    #[ignore = "a timing measurement, not a check: cargo test --release -p strongroom-scan experiment -- --ignored --nocapture (BENCHMARKS.md)"]
    fn experiment() {
        let vals = values(10_000);
        let mut text = Vec::new();
        while text.len() < 1 << 20 {
            text.extend_from_slice(
                b"fn main() { let x = compute(42); println!(\"{x}\"); } // some prose here\n",
            );
        }
        for strategy in [SearchKind::Auto, SearchKind::Automata] {
            let t = Instant::now();
            let known = crate::KnownValues::build(
                vals.iter().enumerate().map(|(i, v)| (i, v.as_slice())),
                8,
                strategy,
            )
            .unwrap();
            let built = t.elapsed();
            let median = |two: bool| {
                let mut times: Vec<_> = (0..15)
                    .map(|_| {
                        let t = Instant::now();
                        std::hint::black_box(known.find_in(&text, two));
                        t.elapsed()
                    })
                    .collect();
                times.sort();
                times[times.len() / 2]
            };
            let found = known.find(&text);
            eprintln!(
                "{strategy:?}: build {built:?}, find 1 MiB median of 15: {:?} on two threads, \
                 {:?} on one ({} found), {known:?} mem {}",
                median(true),
                median(false),
                found.len(),
                known.memory_usage()
            );
        }
        let mut exact = Vec::new();
        let mut folded = Vec::new();
        let mut scratch = Vec::new();
        let t = Instant::now();
        for v in &vals {
            for form in Form::ALL {
                forms::needles(v, form, &mut scratch);
                for n in scratch.drain(..) {
                    if form.is_case_sensitive() {
                        exact.push(n.to_vec())
                    } else {
                        folded.push(n.to_ascii_lowercase())
                    }
                }
            }
        }
        exact.sort();
        exact.dedup();
        folded.sort();
        folded.dedup();
        eprintln!(
            "needles exact {} folded {} in {:?}",
            exact.len(),
            folded.len(),
            t.elapsed()
        );
        for (name, pats, fold) in [("exact", &exact, false), ("folded", &folded, true)] {
            for kind in [None, Some(AhoCorasickKind::NoncontiguousNFA)] {
                let t = Instant::now();
                let ac = AhoCorasick::builder()
                    .match_kind(MatchKind::LeftmostLongest)
                    .ascii_case_insensitive(fold)
                    .kind(kind)
                    .build(pats);
                match ac {
                    Ok(ac) => eprintln!(
                        "{name} {kind:?}: {:?} mem {} kind {:?}",
                        t.elapsed(),
                        ac.memory_usage(),
                        ac.kind()
                    ),
                    Err(e) => eprintln!("{name} {kind:?}: {e} after {:?}", t.elapsed()),
                }
            }
        }
    }
}
