//! The encoded forms a known value can take in a text, and the needles
//! (byte strings to search for) each form yields.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use zeroize::Zeroizing;

/// How a known value appeared in a text.
///
/// When two forms of one value are the same bytes (a value of letters and
/// digits only is its own URL encoding, and base64 without `+` or `/` is the
/// same in both alphabets), the match reports the first form in this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Form {
    /// The value's bytes as they are.
    Plain,
    /// Base64 with the standard alphabet (`+`, `/`), at any alignment inside a
    /// longer encoded blob, with or without `=` padding.
    Base64,
    /// Base64 with the URL-safe alphabet (`-`, `_`), at any alignment, with or
    /// without padding.
    Base64Url,
    /// Percent-encoded: upper- or lower-case escapes, a space as `%20` or `+`,
    /// everything but the unreserved characters escaped, or only the reserved
    /// ones.
    Url,
    /// Hexadecimal, lower or upper case.
    Hex,
    /// Inside a JSON string: `"`, `\` and control characters escaped, with or
    /// without `\/`, and with non-ASCII characters as `\uXXXX` escapes.
    JsonEscaped,
}

impl Form {
    /// Every form, in reporting priority order.
    pub const ALL: [Form; 6] = [
        Form::Plain,
        Form::Base64,
        Form::Base64Url,
        Form::Url,
        Form::Hex,
        Form::JsonEscaped,
    ];

    /// Whether the form's letters carry information, so that it is matched
    /// only as it is: base64 in either alphabet. The other forms are matched
    /// ignoring ASCII case (a key echoed upper-cased, hex or percent escapes
    /// in the other case).
    pub fn is_case_sensitive(self) -> bool {
        matches!(self, Form::Base64 | Form::Base64Url)
    }

    /// The form's stable name: `plain`, `base64`, `base64url`, `url`, `hex`,
    /// `json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Form::Plain => "plain",
            Form::Base64 => "base64",
            Form::Base64Url => "base64url",
            Form::Url => "url",
            Form::Hex => "hex",
            Form::JsonEscaped => "json",
        }
    }
}

impl std::fmt::Display for Form {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A needle is secret material: wiped when dropped.
pub(crate) type Needle = Zeroizing<Vec<u8>>;

/// Every needle of `value` in `form` (possibly with repeats; the caller
/// removes them).
pub(crate) fn needles(value: &[u8], form: Form, out: &mut Vec<Needle>) {
    match form {
        Form::Plain => out.push(Zeroizing::new(value.to_vec())),
        Form::Base64 => base64_needles(value, &STANDARD, out),
        Form::Base64Url => base64_needles(value, &URL_SAFE, out),
        Form::Url => url_needles(value, out),
        Form::Hex => {
            out.push(hex(value, LOWER_HEX));
            out.push(hex(value, UPPER_HEX));
        }
        Form::JsonEscaped => json_needles(value, out),
    }
}

/// Base64 of `value` starting at byte 0, 1 or 2 of a 3-byte group inside a
/// longer blob. For each alignment the value is encoded behind that many
/// prefix bytes and only the characters that depend on the value alone are
/// kept: the inner run (the value continues to be followed by other data),
/// and the tail up to the end of the blob, unpadded and padded.
fn base64_needles(value: &[u8], engine: &base64::engine::GeneralPurpose, out: &mut Vec<Needle>) {
    for align in 0..3usize {
        let mut input = Zeroizing::new(Vec::with_capacity(align + value.len()));
        input.extend(std::iter::repeat_n(0u8, align));
        input.extend_from_slice(value);
        let encoded = Zeroizing::new(engine.encode(input.as_slice()).into_bytes());
        let bits = 8 * (align + value.len());
        let start = (8 * align).div_ceil(6);
        let inner_end = bits / 6;
        let unpadded_end = bits.div_ceil(6);
        if inner_end > start {
            out.push(Zeroizing::new(encoded[start..inner_end].to_vec()));
        }
        if unpadded_end > start {
            out.push(Zeroizing::new(encoded[start..unpadded_end].to_vec()));
        }
        if encoded.len() > start {
            out.push(Zeroizing::new(encoded[start..].to_vec()));
        }
    }
}

const LOWER_HEX: &[u8; 16] = b"0123456789abcdef";
const UPPER_HEX: &[u8; 16] = b"0123456789ABCDEF";

fn hex(value: &[u8], digits: &[u8; 16]) -> Needle {
    let mut out = Zeroizing::new(Vec::with_capacity(value.len() * 2));
    for &b in value {
        out.push(digits[usize::from(b >> 4)]);
        out.push(digits[usize::from(b & 0x0f)]);
    }
    out
}

/// RFC 3986 unreserved characters: never escaped.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// RFC 3986 reserved characters (general and sub-delimiters).
fn is_reserved(b: u8) -> bool {
    matches!(
        b,
        b':' | b'/'
            | b'?'
            | b'#'
            | b'['
            | b']'
            | b'@'
            | b'!'
            | b'$'
            | b'&'
            | b'\''
            | b'('
            | b')'
            | b'*'
            | b'+'
            | b','
            | b';'
            | b'='
    )
}

/// Which bytes a percent-encoder escapes.
#[derive(Clone, Copy)]
enum UrlStyle {
    /// Everything but the unreserved characters (`quote(safe="")`,
    /// `url.QueryEscape`).
    Strict,
    /// Also keeps `!'()*` (JavaScript's `encodeURIComponent`).
    Component,
    /// Only the reserved characters, `%`, and bytes that are not printable
    /// ASCII.
    ReservedOnly,
}

impl UrlStyle {
    fn escapes(self, b: u8) -> bool {
        match self {
            UrlStyle::Strict => !is_unreserved(b),
            UrlStyle::Component => {
                !is_unreserved(b) && !matches!(b, b'!' | b'\'' | b'(' | b')' | b'*')
            }
            UrlStyle::ReservedOnly => is_reserved(b) || b == b'%' || !(0x21..0x7f).contains(&b),
        }
    }
}

fn url_needles(value: &[u8], out: &mut Vec<Needle>) {
    for style in [
        UrlStyle::Strict,
        UrlStyle::Component,
        UrlStyle::ReservedOnly,
    ] {
        for digits in [UPPER_HEX, LOWER_HEX] {
            for plus_for_space in [false, true] {
                let mut needle = Zeroizing::new(Vec::with_capacity(value.len() * 3));
                for &b in value {
                    if b == b' ' && plus_for_space {
                        needle.push(b'+');
                    } else if style.escapes(b) {
                        needle.push(b'%');
                        needle.push(digits[usize::from(b >> 4)]);
                        needle.push(digits[usize::from(b & 0x0f)]);
                    } else {
                        needle.push(b);
                    }
                }
                out.push(needle);
            }
        }
    }
}

fn json_needles(value: &[u8], out: &mut Vec<Needle>) {
    for escape_slash in [false, true] {
        for digits in [LOWER_HEX, UPPER_HEX] {
            out.push(json_escape(value, escape_slash, digits));
            if let Ok(text) = std::str::from_utf8(value)
                && !text.is_ascii()
            {
                out.push(json_escape_ascii_only(text, escape_slash, digits));
            }
        }
    }
}

fn push_json_byte(out: &mut Vec<u8>, b: u8, escape_slash: bool, digits: &[u8; 16]) {
    match b {
        b'"' => out.extend_from_slice(b"\\\""),
        b'\\' => out.extend_from_slice(b"\\\\"),
        b'/' if escape_slash => out.extend_from_slice(b"\\/"),
        b'\n' => out.extend_from_slice(b"\\n"),
        b'\r' => out.extend_from_slice(b"\\r"),
        b'\t' => out.extend_from_slice(b"\\t"),
        0x08 => out.extend_from_slice(b"\\b"),
        0x0c => out.extend_from_slice(b"\\f"),
        b if b < 0x20 => push_unicode_escape(out, u16::from(b), digits),
        b => out.push(b),
    }
}

fn push_unicode_escape(out: &mut Vec<u8>, unit: u16, digits: &[u8; 16]) {
    out.extend_from_slice(b"\\u");
    for shift in [12u16, 8, 4, 0] {
        out.push(digits[usize::from((unit >> shift) & 0x0f)]);
    }
}

/// JSON escaping as serializers that keep other bytes as they are write it.
fn json_escape(value: &[u8], escape_slash: bool, digits: &[u8; 16]) -> Needle {
    let mut out = Zeroizing::new(Vec::with_capacity(value.len() + 8));
    for &b in value {
        push_json_byte(&mut out, b, escape_slash, digits);
    }
    out
}

/// JSON escaping with every non-ASCII character as `\uXXXX` (UTF-16
/// surrogate pairs beyond the basic plane), as `json.dumps` writes by default.
fn json_escape_ascii_only(text: &str, escape_slash: bool, digits: &[u8; 16]) -> Needle {
    let mut out = Zeroizing::new(Vec::with_capacity(text.len() * 2));
    let mut units = [0u16; 2];
    for c in text.chars() {
        if c.is_ascii() {
            // An ASCII char is one byte.
            push_json_byte(&mut out, c as u8, escape_slash, digits);
        } else {
            for &unit in c.encode_utf16(&mut units).iter() {
                push_unicode_escape(&mut out, unit, digits);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(value: &[u8], form: Form) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        needles(value, form, &mut out);
        out.iter().map(|n| n.to_vec()).collect()
    }

    #[test]
    fn base64_alignments_keep_only_characters_the_value_determines() {
        let value = b"secret-value-123";
        let found = all(value, Form::Base64);
        for align in 0..3 {
            for prefix in [[0u8; 3], [0xff; 3], [0x5a; 3]] {
                for suffix in [&b""[..], b"x", b"yz", b"\xff\xfe\xfd"] {
                    let mut blob = prefix[..align].to_vec();
                    blob.extend_from_slice(value);
                    blob.extend_from_slice(suffix);
                    let encoded = STANDARD.encode(&blob);
                    assert!(
                        found.iter().any(|n| encoded
                            .as_bytes()
                            .windows(n.len())
                            .any(|w| w == n.as_slice())),
                        "alignment {align} suffix {suffix:?}"
                    );
                }
            }
        }
        let padded = STANDARD.encode(value);
        assert!(found.contains(&padded.as_bytes().to_vec()));
        assert!(found.contains(&padded.trim_end_matches('=').as_bytes().to_vec()));
    }

    #[test]
    fn url_forms_cover_common_encoders() {
        let found = all(b"a b/c+d!", Form::Url);
        for expected in [
            &b"a%20b%2Fc%2Bd%21"[..],
            b"a+b%2fc%2bd%21",
            b"a%20b%2Fc%2Bd!",
            b"a%20b%2Fc%2Bd%21",
        ] {
            assert!(
                found.contains(&expected.to_vec()),
                "{:?}",
                String::from_utf8_lossy(expected)
            );
        }
    }

    #[test]
    fn json_forms_cover_common_serializers() {
        let found = all("p\"w/\\é\n".as_bytes(), Form::JsonEscaped);
        assert!(found.contains(&"p\\\"w/\\\\é\\n".as_bytes().to_vec()));
        assert!(found.contains(&b"p\\\"w\\/\\\\\\u00e9\\n".to_vec()));
        assert!(found.contains(&b"p\\\"w/\\\\\\u00E9\\n".to_vec()));
    }

    #[test]
    fn hex_both_cases() {
        assert_eq!(
            all(&[0xab, 0x01], Form::Hex),
            vec![b"ab01".to_vec(), b"AB01".to_vec()]
        );
    }
}
