//! W3C trace context: a call whose client sent a valid `traceparent`
//! header continues the client's trace (its trace id is the call's, in the
//! audit event and in the server's span); any other call starts a new
//! trace. A malformed header is ignored, never refused.

/// The W3C trace context header.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// [`TRACEPARENT_HEADER`], parsed once.
const TRACEPARENT: http::HeaderName = http::HeaderName::from_static(TRACEPARENT_HEADER);

/// The trace a call belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: u128,
    parent: Option<RemoteParent>,
}

/// The client's span a call continues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteParent {
    /// The client's span id.
    pub span_id: u64,
    /// Whether the client records the trace (the `sampled` flag).
    pub sampled: bool,
}

impl TraceContext {
    /// The trace of a call with `headers`: the client's when it sent one
    /// valid `traceparent` header, else a new one.
    pub fn from_headers(headers: &http::HeaderMap) -> Self {
        let mut values = headers.get_all(&TRACEPARENT).iter();
        let parsed = match (values.next(), values.next()) {
            (Some(value), None) => value.to_str().ok().and_then(parse_traceparent),
            // Absent, or sent more than once (ambiguous: ignored).
            _ => None,
        };
        parsed.unwrap_or_else(Self::new_trace)
    }

    /// A new trace, with a random trace id.
    pub fn new_trace() -> Self {
        Self {
            // Never zero: zero is W3C's invalid trace id.
            trace_id: super::ids::random_u128().max(1),
            parent: None,
        }
    }

    /// The trace id.
    pub fn trace_id(&self) -> u128 {
        self.trace_id
    }

    /// The trace id as W3C writes it: 32 lowercase hex digits.
    pub fn trace_id_hex(&self) -> String {
        super::ids::hex32(self.trace_id)
    }

    /// The client's span, when the call continues the client's trace.
    pub fn parent(&self) -> Option<RemoteParent> {
        self.parent
    }
}

/// `version-traceid-parentid-flags`, lowercase hex; a later version may
/// append fields after a `-`, version `ff` is invalid, an all-zero trace id
/// or parent id is invalid.
fn parse_traceparent(text: &str) -> Option<TraceContext> {
    let text = text.trim_matches([' ', '\t']);
    let bytes = text.as_bytes();
    if !text.is_ascii() || bytes.len() < 55 {
        return None;
    }
    let version = hex_field(&text[0..2])? as u8;
    if version == 0xff || (version == 0 && bytes.len() != 55) {
        return None;
    }
    if bytes.len() > 55 && bytes[55] != b'-' {
        return None;
    }
    if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
        return None;
    }
    let trace_id = hex_field(&text[3..35])?;
    let span_id = u64::try_from(hex_field(&text[36..52])?).ok()?;
    let flags = hex_field(&text[53..55])? as u8;
    if trace_id == 0 || span_id == 0 {
        return None;
    }
    Some(TraceContext {
        trace_id,
        parent: Some(RemoteParent {
            span_id,
            sampled: flags & 1 == 1,
        }),
    })
}

/// A field of lowercase hex digits.
fn hex_field(text: &str) -> Option<u128> {
    if !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    u128::from_str_radix(text, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn headers(values: &[&str]) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        for v in values {
            headers.append(TRACEPARENT_HEADER, http::HeaderValue::from_str(v).unwrap());
        }
        headers
    }

    #[test]
    fn a_valid_traceparent_is_continued() {
        let trace = TraceContext::from_headers(&headers(&[VALID]));
        assert_eq!(trace.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            trace.parent(),
            Some(RemoteParent {
                span_id: 0x00f0_67aa_0ba9_02b7,
                sampled: true
            })
        );
        let unsampled = VALID.replace("-01", "-00");
        let parent = TraceContext::from_headers(&headers(&[&unsampled])).parent();
        assert!(!parent.unwrap().sampled);
        // A later version may carry more fields.
        let later = format!("01{}-extra", &VALID[2..]);
        let trace = TraceContext::from_headers(&headers(&[&later]));
        assert_eq!(trace.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn anything_else_starts_a_new_trace() {
        let valid = TraceContext::from_headers(&headers(&[VALID])).trace_id();
        let malformed = [
            "",
            "garbage",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ];
        for text in malformed {
            let trace = TraceContext::from_headers(&headers(&[text]));
            assert_eq!(trace.parent(), None, "{text:?}");
            assert_ne!(trace.trace_id(), valid, "{text:?}");
            assert_ne!(trace.trace_id(), 0);
        }
        // Two headers: ambiguous.
        let trace = TraceContext::from_headers(&headers(&[VALID, VALID]));
        assert_eq!(trace.parent(), None);
        // None at all: a new trace each time.
        let a = TraceContext::from_headers(&http::HeaderMap::new());
        let b = TraceContext::from_headers(&http::HeaderMap::new());
        assert_ne!(a.trace_id(), b.trace_id());
        assert_eq!(a.trace_id_hex().len(), 32);
    }
}
