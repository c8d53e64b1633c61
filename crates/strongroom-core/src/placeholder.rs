//! Where a placeholder sits in an HTTP request head: one detection shared
//! by the server's relay (which decides whether each place is allowed) and
//! by `strongroom run`'s local forwarder (which decides what to send to the
//! relay), so a disguise one of them sees through the other does too.
//!
//! A placeholder is found:
//! - in the path, raw or percent-decoded (repeatedly, so `%2553` counts);
//! - in a query parameter's name or value, each split on `&` and `=` and
//!   percent-decoded (`+` as a space) the same way;
//! - in a header's name (case-insensitively: names are lower-cased on the
//!   way) or value, raw, percent-decoded, or inside basic credentials
//!   (`Basic base64(user:password)`, the standard or URL-safe alphabet,
//!   padded or not).
//!
//! The place is reported as a [`Slot`]: names only, never a value, so a
//! slot may be logged or recorded.

use base64::Engine as _;
use zeroize::Zeroizing;

/// How many rounds of percent-decoding are tried (`%252553` is three).
const DECODE_ROUNDS: usize = 3;

/// Where a placeholder was found.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Slot {
    /// The path.
    Path,
    /// The name of a query parameter.
    QueryName,
    /// The value of the query parameter of this (decoded) name.
    QueryValue(String),
    /// The name of a header.
    HeaderName,
    /// The value of the header of this (lower-case) name, also inside
    /// basic credentials.
    HeaderValue(String),
}

impl Slot {
    /// A short description for people and logs (names only).
    pub fn describe(&self) -> String {
        match self {
            Self::Path => "the path".to_owned(),
            Self::QueryName => "a query parameter name".to_owned(),
            Self::QueryValue(n) => format!("query parameter `{n}`"),
            Self::HeaderName => "a header name".to_owned(),
            Self::HeaderValue(n) => format!("header `{n}`"),
        }
    }
}

/// Percent-decodes every escape of `text` (`+` as a space when `plus`);
/// an invalid escape is kept as it is.
fn percent_decode(text: &[u8], plus: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let b = text[i];
        if b == b'%'
            && let Some(hex) = text.get(i + 1..i + 3)
            && let Ok(hex) = std::str::from_utf8(hex)
            && let Ok(v) = u8::from_str_radix(hex, 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(if plus && b == b'+' { b' ' } else { b });
        i += 1;
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty()
        && haystack.len() >= needle.len()
        && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Whether `needle` is in `text`, raw or after up to [`DECODE_ROUNDS`]
/// rounds of percent-decoding.
fn contains_decoded(text: &[u8], needle: &[u8], plus: bool) -> bool {
    if contains(text, needle) {
        return true;
    }
    let mut current = Zeroizing::new(text.to_vec());
    for _ in 0..DECODE_ROUNDS {
        if !(current.contains(&b'%') || plus && current.contains(&b'+')) {
            return false;
        }
        let next = Zeroizing::new(percent_decode(&current, plus));
        if contains(&next, needle) {
            return true;
        }
        if *next == *current {
            return false;
        }
        current = next;
    }
    false
}

/// The credentials of a `Basic` header value, decoded (either base64
/// alphabet, padded or not).
pub fn basic_decoded(value: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let (scheme, rest) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let rest = rest.trim();
    let engines = [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::STANDARD_NO_PAD,
        &base64::engine::general_purpose::URL_SAFE,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    engines
        .iter()
        .find_map(|e| e.decode(rest).ok())
        .map(Zeroizing::new)
}

/// Every slot of a request head holding `placeholder`, sorted, each once.
/// `headers` are (name, value) pairs; `query` is the raw query, without
/// `?`.
pub fn find<'a>(
    placeholder: &str,
    path: &str,
    query: Option<&str>,
    headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> Vec<Slot> {
    let p = placeholder.as_bytes();
    let lower = placeholder.to_ascii_lowercase();
    let mut found = Vec::new();
    if contains_decoded(path.as_bytes(), p, false) {
        found.push(Slot::Path);
    }
    if let Some(query) = query {
        for pair in query.split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            if contains_decoded(name.as_bytes(), p, true) {
                found.push(Slot::QueryName);
            }
            if contains_decoded(value.as_bytes(), p, true) {
                let decoded = percent_decode(name.as_bytes(), true);
                found.push(Slot::QueryValue(
                    String::from_utf8_lossy(&decoded).into_owned(),
                ));
            }
        }
    }
    for (name, value) in headers {
        if contains(name.to_ascii_lowercase().as_bytes(), lower.as_bytes()) {
            found.push(Slot::HeaderName);
        }
        if contains_decoded(value, p, false)
            || basic_decoded(value).is_some_and(|d| contains_decoded(&d, p, false))
        {
            found.push(Slot::HeaderValue(name.to_ascii_lowercase()));
        }
    }
    found.sort();
    found.dedup();
    found
}

/// Whether `placeholder` is anywhere in the head.
pub fn carried<'a>(
    placeholder: &str,
    path: &str,
    query: Option<&str>,
    headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> bool {
    !find(placeholder, path, query, headers).is_empty()
}

/// Whether a placeholder found in `slots` may be replaced: every slot is
/// a header value named in `headers` or a query value named in `query`
/// (names compared case-insensitively for headers, exactly for the query);
/// a placeholder in the path or a name never is.
pub fn slots_allowed(slots: &[Slot], headers: &[String], query: &[String]) -> bool {
    slots.iter().all(|s| match s {
        Slot::HeaderValue(n) => headers.iter().any(|h| h.eq_ignore_ascii_case(n)),
        Slot::QueryValue(n) => query.iter().any(|q| q == n),
        Slot::Path | Slot::QueryName | Slot::HeaderName => false,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const P: &str = "strongroom-placeholder-AbCdEf0123456789";

    fn find_in(path: &str, query: Option<&str>, headers: &[(&str, &str)]) -> Vec<Slot> {
        find(
            P,
            path,
            query,
            headers.iter().map(|(n, v)| (*n, v.as_bytes())),
        )
    }

    #[test]
    fn every_disguise_is_seen() {
        let b64 = |t: &str| base64::engine::general_purpose::STANDARD.encode(t);
        let b64url = |t: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(t);
        assert_eq!(find_in(&format!("/x/{P}"), None, &[]), [Slot::Path]);
        assert_eq!(
            find_in("/x/%73trongroom-placeholder-AbCdEf0123456789", None, &[]),
            [Slot::Path]
        );
        assert_eq!(
            find_in("/x/%2573trongroom-placeholder-AbCdEf0123456789", None, &[]),
            [Slot::Path]
        );
        assert_eq!(
            find_in("/", Some(&format!("text={P}")), &[]),
            [Slot::QueryValue("text".into())]
        );
        assert_eq!(
            find_in(
                "/",
                Some("te%78t=%73trongroom%2Dplaceholder-AbCdEf0123456789"),
                &[]
            ),
            [Slot::QueryValue("text".into())]
        );
        assert_eq!(
            find_in("/", Some(&format!("a=1&{P}=2")), &[]),
            [Slot::QueryName]
        );
        assert_eq!(
            find_in("/", None, &[("x-note", &format!("hi {P}"))]),
            [Slot::HeaderValue("x-note".into())]
        );
        assert_eq!(
            find_in(
                "/",
                None,
                &[("X-Note", "%73trongroom-placeholder-AbCdEf0123456789")]
            ),
            [Slot::HeaderValue("x-note".into())]
        );
        assert_eq!(
            find_in(
                "/",
                None,
                &[(&format!("x-{}", P.to_ascii_lowercase()), "1")]
            ),
            [Slot::HeaderName]
        );
        for encoded in [b64(&format!("user:{P}")), b64url(&format!("user:{P}?"))] {
            assert_eq!(
                find_in("/", None, &[("authorization", &format!("Basic {encoded}"))]),
                [Slot::HeaderValue("authorization".into())],
                "{encoded}"
            );
        }
        assert!(find_in("/a/b", Some("k=v&text=hello"), &[("x", "y")]).is_empty());
    }

    #[test]
    fn only_named_slots_are_allowed() {
        let auth = vec!["authorization".to_owned()];
        let key = vec!["key".to_owned()];
        assert!(slots_allowed(
            &[Slot::HeaderValue("authorization".into())],
            &auth,
            &[]
        ));
        assert!(slots_allowed(&[Slot::QueryValue("key".into())], &[], &key));
        assert!(!slots_allowed(
            &[Slot::QueryValue("text".into())],
            &auth,
            &key
        ));
        assert!(!slots_allowed(
            &[Slot::HeaderValue("x-note".into())],
            &auth,
            &key
        ));
        assert!(!slots_allowed(&[Slot::Path], &auth, &key));
        assert!(!slots_allowed(&[Slot::HeaderName], &auth, &key));
        assert!(!slots_allowed(
            &[
                Slot::HeaderValue("authorization".into()),
                Slot::QueryValue("text".into())
            ],
            &auth,
            &key
        ));
    }
}
