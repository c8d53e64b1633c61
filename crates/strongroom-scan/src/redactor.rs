//! Streaming redaction: known values replaced in a byte stream that arrives
//! in chunks, in bounded memory.

use std::collections::HashMap;
use std::sync::Arc;

use zeroize::Zeroizing;

use crate::forms::Form;
use crate::known::KnownValues;

/// A known value replaced in the stream: which one and in which form (never
/// the bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hit {
    /// The value's label in [`KnownValues`].
    pub label: usize,
    /// The form it appeared in.
    pub form: Form,
}

/// Replaces every form of the known values in a stream (a response body, a
/// child process's output), however the stream is cut into chunks.
///
/// Promises:
///
/// * the output is the same for every way of cutting the input into chunks,
///   and equals replacing, in the whole input at once, the occurrences
///   [`KnownValues`] finds without line joining (leftmost, then longest);
/// * no byte that a later chunk could make part of an occurrence is written
///   before that is decided: [`Redactor::push`] holds back at most
///   [`KnownValues::longest_needle`] − 1 bytes, so memory stays bounded;
/// * held bytes are wiped once written or when the redactor is dropped.
///
/// Values broken across lines are not recognised in a stream (the held-back
/// window would have no bound); [`KnownValues::find`] finds those in a whole
/// text.
pub struct Redactor {
    known: Arc<KnownValues>,
    replacements: HashMap<usize, Vec<u8>>,
    default_replacement: Vec<u8>,
    held: Zeroizing<Vec<u8>>,
}

impl Redactor {
    /// A redactor that writes `default_replacement` in place of every
    /// occurrence of a value without its own replacement (see
    /// [`Redactor::with_replacement`]).
    pub fn new(known: Arc<KnownValues>, default_replacement: impl Into<Vec<u8>>) -> Self {
        Redactor {
            known,
            replacements: HashMap::new(),
            default_replacement: default_replacement.into(),
            held: Zeroizing::new(Vec::new()),
        }
    }

    /// Writes `replacement` in place of the value labelled `label` (for
    /// example `[MASKED:NAME]`).
    pub fn with_replacement(mut self, label: usize, replacement: impl Into<Vec<u8>>) -> Self {
        self.replacements.insert(label, replacement.into());
        self
    }

    /// How many bytes are held back, waiting for the next chunk to decide
    /// whether they belong to an occurrence.
    pub fn held_len(&self) -> usize {
        self.held.len()
    }

    /// Takes the next chunk of the stream; appends to `out` every byte that
    /// can no longer be part of an occurrence (with occurrences replaced), and
    /// returns the occurrences replaced.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Vec<Hit> {
        let mut hits = Vec::new();
        if !self.known.has_needles() {
            out.extend_from_slice(&self.held);
            self.held.clear();
            out.extend_from_slice(chunk);
            return hits;
        }
        let mut window = Zeroizing::new(Vec::with_capacity(self.held.len() + chunk.len()));
        window.extend_from_slice(&self.held);
        window.extend_from_slice(chunk);
        // An occurrence starting before `decided` ends inside the window, so
        // everything about it (and about whether one starts there at all) is
        // known now; one starting at or after it may need bytes to come.
        let decided = window.len().saturating_sub(self.known.longest_needle() - 1);
        let mut at = 0;
        for m in self.known.matches(window.as_slice()) {
            if m.start >= decided {
                break;
            }
            out.extend_from_slice(&window[at..m.start]);
            self.replace(m.pattern, out, &mut hits);
            at = m.end;
        }
        let keep_from = at.max(decided);
        out.extend_from_slice(&window[at..keep_from]);
        self.held.clear();
        self.held.extend_from_slice(&window[keep_from..]);
        hits
    }

    /// Ends the stream (or a pause the caller chose to end): replaces what
    /// is held and writes it all to `out`.
    ///
    /// After a flush the redactor starts afresh: an occurrence cut by the
    /// flush is not recognised across it.
    pub fn flush(&mut self, out: &mut Vec<u8>) -> Vec<Hit> {
        let mut hits = Vec::new();
        let held = std::mem::replace(&mut self.held, Zeroizing::new(Vec::new()));
        let mut at = 0;
        for m in self.known.matches(held.as_slice()) {
            out.extend_from_slice(&held[at..m.start]);
            self.replace(m.pattern, out, &mut hits);
            at = m.end;
        }
        out.extend_from_slice(&held[at..]);
        hits
    }

    /// Replaces every occurrence in `text`, a whole text (a header), and
    /// appends the result to `out`: the same as pushing `text` to a fresh
    /// redactor and flushing, without copying it into the held-back window
    /// and without touching this redactor's held bytes, so one redactor
    /// serves any number of texts.
    pub fn redact(&self, text: &[u8], out: &mut Vec<u8>) -> Vec<Hit> {
        let mut hits = Vec::new();
        let mut at = 0;
        for m in self.known.matches(text) {
            out.extend_from_slice(&text[at..m.start]);
            self.replace(m.pattern, out, &mut hits);
            at = m.end;
        }
        out.extend_from_slice(&text[at..]);
        hits
    }

    fn replace(&self, pattern: usize, out: &mut Vec<u8>, hits: &mut Vec<Hit>) {
        let owners = self.known.owners(pattern);
        let replacement = owners
            .first()
            .and_then(|o| self.replacements.get(&o.label))
            .unwrap_or(&self.default_replacement);
        out.extend_from_slice(replacement);
        hits.extend(owners.iter().map(|o| Hit {
            label: o.label,
            form: o.form,
        }));
    }
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("known", &self.known)
            .field("held_len", &self.held.len())
            .finish_non_exhaustive()
    }
}
