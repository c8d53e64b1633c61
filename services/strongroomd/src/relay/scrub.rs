//! Response scrubbing: every value a request injected, in every form the
//! scanner knows (plain, base64, URL-encoded, hex, JSON-escaped; the forms
//! but base64 in either letter case), replaced by its placeholder (or
//! `[strongroom:ENV/NAME]` for a template use) in the response header names
//! and values and, streaming and across chunk boundaries, in the body.
//! Memory is bounded: the redactor holds back less than the longest encoded
//! form. The compiled forms come from the engine's cache
//! ([`Engine::scrubbing`]), compiled once per credential version.

use std::sync::Arc;

use strongroom_engine::{Authorized, Engine, Scrubbing};

use strongroom_scan::Redactor;

pub use strongroom_engine::MIN_SCRUBBED_LEN;

/// What a header or body is replaced by when it cannot be scrubbed.
const REDACTED: &[u8] = b"[strongroom:redacted]";

/// The scrubbing of one response: one redactor for its headers (each
/// scrubbed whole) and then its body.
pub struct Scrubber {
    redactor: Option<Redactor>,
}

impl Scrubber {
    /// The scrubbing of the values `authorized` sends (cached by the
    /// engine; compiled on a blocking thread on a miss).
    pub async fn build(engine: &Engine, authorized: &Authorized) -> Self {
        Self::of(&engine.scrubbing(authorized).await)
    }

    fn of(scrubbing: &Scrubbing) -> Self {
        let redactor = scrubbing.known.as_ref().map(|known| {
            let mut r = Redactor::new(Arc::clone(known), REDACTED.to_vec());
            for (i, replacement) in scrubbing.replacements.iter().enumerate() {
                r = r.with_replacement(i, replacement.as_bytes().to_vec());
            }
            r
        });
        Self { redactor }
    }

    /// Whether the values' forms could be compiled: if not, nothing from
    /// the upstream may be passed on (fail closed).
    pub fn is_ready(&self) -> bool {
        self.redactor.is_some()
    }

    /// `text` (a header value) scrubbed.
    pub fn whole(&self, text: &[u8]) -> Vec<u8> {
        let Some(r) = &self.redactor else {
            return REDACTED.to_vec();
        };
        let mut out = Vec::with_capacity(text.len());
        r.redact(text, &mut out);
        out
    }

    /// A header name scrubbed: `None` when it carried a value and what
    /// replaces it is not a valid header name (the header is then dropped).
    pub fn name(&self, name: &str) -> Option<String> {
        let scrubbed = self.whole(name.as_bytes());
        if scrubbed == name.as_bytes() {
            return Some(name.to_owned());
        }
        http::HeaderName::from_bytes(&scrubbed)
            .ok()
            .map(|n| n.as_str().to_owned())
    }

    /// The body's streaming scrubber (after the headers: it takes the
    /// redactor).
    pub fn stream(self) -> BodyScrubber {
        BodyScrubber {
            redactor: self.redactor,
        }
    }
}

/// Scrubs a body chunk by chunk.
pub struct BodyScrubber {
    redactor: Option<Redactor>,
}

impl BodyScrubber {
    /// Takes the next chunk; appends what can be passed on.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        if let Some(r) = &mut self.redactor {
            r.push(chunk, out);
        }
    }

    /// Ends the body: appends what was held back.
    pub fn flush(&mut self, out: &mut Vec<u8>) {
        if let Some(r) = &mut self.redactor {
            r.flush(out);
        }
    }
}
