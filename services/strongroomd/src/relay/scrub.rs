//! Response scrubbing: every value a request injected, in every form the
//! scanner knows (plain, base64, URL-encoded, hex, JSON-escaped), replaced
//! by its placeholder (or `[strongroom:ENV/NAME]` for a template use) in the
//! response headers and, streaming and across chunk boundaries, in the
//! body. Memory is bounded: the redactor holds back less than the longest
//! encoded form.

use std::sync::Arc;

use strongroom_engine::{Authorized, scrub_pairs};
use strongroom_scan::{KnownValues, Redactor};

/// Values shorter than this are not scrubbed: a handful of bytes would
/// match ordinary text everywhere.
pub const MIN_SCRUBBED_LEN: usize = 6;

/// The scrubbing of one response.
pub struct Scrubber {
    known: Option<Arc<KnownValues>>,
    replacements: Vec<String>,
}

impl Scrubber {
    /// The scrubbing of the values `authorized` sends.
    pub fn new(authorized: &Authorized) -> Self {
        let pairs = scrub_pairs(authorized);
        let replacements: Vec<String> = pairs.iter().map(|(_, r)| r.clone()).collect();
        let known = KnownValues::new(
            pairs
                .iter()
                .enumerate()
                .map(|(i, (secret, _))| (i, secret.as_bytes())),
            MIN_SCRUBBED_LEN,
        );
        let known = match known {
            Ok(k) => Some(Arc::new(k)),
            Err(e) => {
                // Fail closed: a response that cannot be scrubbed is not
                // passed on (see `whole` and `stream`).
                tracing::error!(error = %e, "the relay could not build its scrubber");
                None
            }
        };
        Self {
            known,
            replacements,
        }
    }

    fn redactor(&self) -> Option<Redactor> {
        let known = self.known.as_ref()?;
        let mut r = Redactor::new(Arc::clone(known), b"[strongroom:redacted]".to_vec());
        for (i, replacement) in self.replacements.iter().enumerate() {
            r = r.with_replacement(i, replacement.as_bytes().to_vec());
        }
        Some(r)
    }

    /// `text` (a header value) scrubbed.
    pub fn whole(&self, text: &[u8]) -> Vec<u8> {
        let Some(mut r) = self.redactor() else {
            return b"[strongroom:redacted]".to_vec();
        };
        let mut out = Vec::with_capacity(text.len());
        r.push(text, &mut out);
        r.flush(&mut out);
        out
    }

    /// A streaming scrubber for the body.
    pub fn stream(&self) -> BodyScrubber {
        BodyScrubber {
            redactor: self.redactor(),
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
