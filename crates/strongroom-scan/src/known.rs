//! Known values: every encoded form of a set of secret values, searched for
//! in one pass.

use aho_corasick::{AhoCorasick, Input, MatchKind};
use zeroize::Zeroizing;

use crate::anchored::Anchored;
use crate::error::ScanError;
use crate::forms::{self, Form, Needle};

/// Who a needle belongs to: the label of the value and the form it is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Owner {
    pub(crate) label: usize,
    pub(crate) form: Form,
}

/// The encoded forms of a set of secret values, compiled once into one
/// automaton and shared (it is `Send + Sync`; wrap it in an `Arc`).
///
/// Each value carries a caller-chosen `label` (an index into the caller's own
/// table of credentials, say); matches report the label and the [`Form`],
/// never the matched bytes. Values shorter than the minimum length are left
/// out, and no needle shorter than it is ever searched for, so short values
/// cannot be confirmed by guessing.
///
/// The copies of values and their encodings made while building are wiped
/// when no longer needed; the automaton's own tables, derived from them, are
/// freed (not wiped) when this is dropped. `Debug` shows counts only.
pub struct KnownValues {
    /// How the needles are searched for.
    search: Search,
    /// How many exact (base64) patterns there are: pattern `i` of the
    /// case-insensitive ones is pattern `exact_patterns + i` here.
    exact_patterns: usize,
    /// For each pattern (of `exact`, then of `folded`), every value it is a
    /// form of (one entry per label, the form of highest priority for that
    /// label first).
    owners: Vec<Vec<Owner>>,
    values: usize,
    min_len: usize,
    longest: usize,
}

/// How the needles are searched for.
enum Search {
    /// Nothing can match.
    Nothing,
    /// Two aho-corasick automata, leftmost-longest: fast to search, but
    /// slow to compile for many long needles (their states grow with the
    /// needles' total length).
    Automata {
        /// The needles of the forms whose letters carry information
        /// (base64 in either alphabet), matched as they are.
        exact: Option<AhoCorasick>,
        /// The needles of the other forms (plain, percent-encoded, hex,
        /// JSON-escaped), stored lower-cased and matched ignoring ASCII
        /// case: an upstream that upper-cases an echoed key (or writes hex
        /// or escapes in the other case) is still matched.
        folded: Option<AhoCorasick>,
    },
    /// The needles indexed by the hash of their first bytes: built in
    /// time linear in the needles, for large sets (a tenant's whole store).
    Anchored(Box<Anchored>),
}

/// How [`KnownValues`] searches: chosen by the number of needles, or forced
/// by tests (both must find the same).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) enum SearchKind {
    /// Automata below [`ANCHORED_FROM`] needles, the anchored index from
    /// there on.
    Auto,
    /// Always automata.
    Automata,
    /// The anchored index whenever every needle is at least
    /// [`MIN_ANCHOR`] bytes long.
    Anchored,
}

/// From this many needles on, [`SearchKind::Auto`] indexes them by anchor
/// instead of compiling automata (a few hundred values in every form).
pub(crate) const ANCHORED_FROM: usize = 4096;

/// The shortest anchor worth hashing: with shorter needles, automata are
/// used whatever their number.
pub(crate) const MIN_ANCHOR: usize = 4;

/// One occurrence of a known value in a text: which value (`label`), in
/// which form, and where (`start..end`, byte offsets into the text given).
///
/// When the text breaks a value across lines, `start..end` covers the whole
/// occurrence including the line breaks and indentation inside it. When two
/// values have the same form at the same place (equal values), there is one
/// `Match` per label with the same span.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Match {
    /// The label the value was given when building [`KnownValues`].
    pub label: usize,
    /// The form the value was found in.
    pub form: Form,
    /// Offset of the first byte of the occurrence.
    pub start: usize,
    /// Offset just past the last byte of the occurrence.
    pub end: usize,
}

impl KnownValues {
    /// Compiles every form of every value at least `min_len` bytes long
    /// (shorter values are skipped; `min_len` is at least 1).
    ///
    /// Fails only when the automaton would exceed its size limits.
    pub fn new<'a, I>(values: I, min_len: usize) -> Result<Self, ScanError>
    where
        I: IntoIterator<Item = (usize, &'a [u8])>,
    {
        Self::build(values, min_len, SearchKind::Auto)
    }

    /// [`KnownValues::new`] searching as `strategy` says.
    pub(crate) fn build<'a, I>(
        values: I,
        min_len: usize,
        strategy: SearchKind,
    ) -> Result<Self, ScanError>
    where
        I: IntoIterator<Item = (usize, &'a [u8])>,
    {
        let min_len = min_len.max(1);
        // The needles of each kind (folded ones lower-cased), each value's
        // own repeats left out as they come (a value of letters and digits
        // is its own URL and JSON form), so the sort below has fewer.
        let mut exact: Vec<(Needle, Owner)> = Vec::new();
        let mut folded: Vec<(Needle, Owner)> = Vec::new();
        let mut scratch: Vec<Needle> = Vec::new();
        let mut count = 0;
        for (label, value) in values {
            if value.len() < min_len {
                continue;
            }
            count += 1;
            let (exact_from, folded_from) = (exact.len(), folded.len());
            for form in Form::ALL {
                forms::needles(value, form, &mut scratch);
                for mut needle in scratch.drain(..) {
                    if needle.len() < min_len {
                        continue;
                    }
                    let (list, from) = if form.is_case_sensitive() {
                        (&mut exact, exact_from)
                    } else {
                        needle.make_ascii_lowercase();
                        (&mut folded, folded_from)
                    };
                    // The first form has priority: a repeat adds nothing.
                    if !list[from..]
                        .iter()
                        .any(|(n, _)| n.as_slice() == needle.as_slice())
                    {
                        list.push((needle, Owner { label, form }));
                    }
                }
            }
        }
        let (exact_patterns, mut owners) = dedup(exact);
        let (folded_patterns, folded_owners) = dedup(folded);
        owners.extend(folded_owners);
        let longest = exact_patterns
            .iter()
            .chain(&folded_patterns)
            .map(|p| p.len())
            .max()
            .unwrap_or(0);
        let patterns = exact_patterns.len() + folded_patterns.len();
        let anchored = match strategy {
            SearchKind::Automata => None,
            SearchKind::Auto if patterns < ANCHORED_FROM => None,
            SearchKind::Auto | SearchKind::Anchored => {
                Anchored::new(&exact_patterns, &folded_patterns, MIN_ANCHOR)
            }
        };
        let search = if patterns == 0 {
            Search::Nothing
        } else if let Some(anchored) = anchored {
            Search::Anchored(Box::new(anchored))
        } else {
            let build =
                |patterns: &[Needle], fold: bool| -> Result<Option<AhoCorasick>, ScanError> {
                    if patterns.is_empty() {
                        return Ok(None);
                    }
                    AhoCorasick::builder()
                        .match_kind(MatchKind::LeftmostLongest)
                        .ascii_case_insensitive(fold)
                        .build(patterns.iter().map(|p| p.as_slice()))
                        .map(Some)
                        .map_err(|e| ScanError::TooLarge(e.to_string()))
                };
            Search::Automata {
                exact: build(&exact_patterns, false)?,
                folded: build(&folded_patterns, true)?,
            }
        };
        Ok(KnownValues {
            search,
            exact_patterns: exact_patterns.len(),
            owners,
            values: count,
            min_len,
            longest,
        })
    }

    /// The heap memory the automata use, in bytes (for caches that bound
    /// what they keep).
    pub fn memory_usage(&self) -> usize {
        let search = match &self.search {
            Search::Nothing => 0,
            Search::Automata { exact, folded } => [exact, folded]
                .into_iter()
                .flatten()
                .map(AhoCorasick::memory_usage)
                .sum::<usize>(),
            Search::Anchored(a) => a.memory_usage(),
        };
        search
            + self
                .owners
                .iter()
                .map(|o| o.capacity() * size_of::<Owner>())
                .sum::<usize>()
    }

    /// How many values were compiled (those at least the minimum length).
    pub fn len(&self) -> usize {
        self.values
    }

    /// Whether no value was compiled: nothing can ever match.
    pub fn is_empty(&self) -> bool {
        self.values == 0
    }

    /// The minimum length a value needed to be compiled.
    pub fn min_len(&self) -> usize {
        self.min_len
    }

    /// The length of the longest needle: a streaming [`crate::Redactor`]
    /// holds back at most one byte less than this.
    pub fn longest_needle(&self) -> usize {
        self.longest
    }

    /// Every occurrence of a known value in `text`, in order, without overlaps
    /// (except one `Match` per label for equal values): the leftmost, and at
    /// one place the longest, occurrence wins.
    ///
    /// Also finds values broken across lines (by `\n` or `\r\n`, each
    /// optionally followed by spaces or tabs, as in wrapped base64 or PEM
    /// bodies); those matches span the line breaks.
    pub fn find(&self, text: &[u8]) -> Vec<Match> {
        self.find_in(text, false)
    }

    /// [`KnownValues::find`], with a text of at least `PARALLEL_FROM`
    /// (256 KiB) searched as it is and with its lines joined on two threads
    /// at once (the result is the same). The caller decides whether it has
    /// a core to spare: each call starts a thread.
    pub fn find_on_two_threads(&self, text: &[u8]) -> Vec<Match> {
        self.find_in(text, text.len() >= PARALLEL_FROM)
    }

    /// [`KnownValues::find`], the two searches on two threads or one after
    /// the other.
    pub(crate) fn find_in(&self, text: &[u8], on_two_threads: bool) -> Vec<Match> {
        let mut found = Vec::new();
        let split = if on_two_threads {
            std::thread::scope(|s| {
                let across = s.spawn(|| self.find_across_lines(text));
                self.find_contiguous(text, &mut found);
                across
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
        } else {
            self.find_contiguous(text, &mut found);
            self.find_across_lines(text)
        };
        if let Some(split) = split {
            found.extend(split);
            found.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
            let mut kept: Vec<Match> = Vec::with_capacity(found.len());
            for m in found {
                match kept.last() {
                    Some(last) if last.start == m.start && last.end == m.end => {
                        if !kept
                            .iter()
                            .rev()
                            .take_while(|k| k.start == m.start)
                            .any(|k| k.label == m.label)
                        {
                            kept.push(m);
                        }
                    }
                    Some(last) if m.start < last.end => {}
                    _ => kept.push(m),
                }
            }
            found = kept;
        }
        found
    }

    /// The occurrences that span a line break of `text` (found in its
    /// lines joined, in original offsets); `None` when it has no line
    /// break.
    fn find_across_lines(&self, text: &[u8]) -> Option<Vec<Match>> {
        let joined = JoinedLines::of(text)?;
        let mut split = Vec::new();
        self.find_contiguous(&joined.bytes, &mut split);
        Some(
            split
                .into_iter()
                .filter_map(|m| joined.original_span(m))
                .collect(),
        )
    }

    /// Occurrences in `text` as it is (no line joining).
    pub(crate) fn find_contiguous(&self, text: &[u8], out: &mut Vec<Match>) {
        for m in self.matches(text) {
            self.push_owners(m.pattern, m.start, m.end, out);
        }
    }

    /// Whether the needles are searched through the anchored index (large
    /// sets) rather than automata.
    #[cfg(test)]
    pub(crate) fn is_anchored(&self) -> bool {
        matches!(self.search, Search::Anchored(_))
    }

    /// Whether there is at least one needle.
    pub(crate) fn has_needles(&self) -> bool {
        !matches!(self.search, Search::Nothing)
    }

    /// The occurrences in `hay`, leftmost first and, at one place, longest
    /// first, not overlapping: as one leftmost-longest automaton over the
    /// needles of both kinds would find them.
    pub(crate) fn matches<'a>(&'a self, hay: &'a [u8]) -> Matches<'a> {
        Matches {
            known: self,
            hay,
            at: 0,
            next: [Next::Unknown, Next::Unknown],
        }
    }

    /// The values a pattern is a form of.
    pub(crate) fn owners(&self, pattern: usize) -> &[Owner] {
        &self.owners[pattern]
    }

    fn push_owners(&self, pattern: usize, start: usize, end: usize, out: &mut Vec<Match>) {
        out.extend(self.owners[pattern].iter().map(|o| Match {
            label: o.label,
            form: o.form,
            start,
            end,
        }));
    }
}

impl std::fmt::Debug for KnownValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KnownValues")
            .field("values", &self.values)
            .field("needles", &self.owners.len())
            .field(
                "case_insensitive_needles",
                &(self.owners.len() - self.exact_patterns),
            )
            .field("min_len", &self.min_len)
            .field("longest_needle", &self.longest)
            .finish()
    }
}

/// Sorts `entries` by needle and merges equal needles: the patterns, and
/// for each the values it is a form of (one entry per label, its form of
/// highest priority).
fn dedup(mut entries: Vec<(Needle, Owner)>) -> (Vec<Needle>, Vec<Vec<Owner>>) {
    // Stable: for one needle, the owners stay in the order they were
    // generated (by label order given, then by form priority).
    entries.sort_by(|a, b| a.0.as_slice().cmp(b.0.as_slice()));
    let mut patterns: Vec<Needle> = Vec::new();
    let mut owners: Vec<Vec<Owner>> = Vec::new();
    for (needle, owner) in entries {
        let same = patterns
            .last()
            .is_some_and(|p| p.as_slice() == needle.as_slice());
        match owners.last_mut() {
            Some(slot) if same => match slot.iter_mut().find(|o| o.label == owner.label) {
                Some(existing) => existing.form = existing.form.min(owner.form),
                None => slot.push(owner),
            },
            _ => {
                patterns.push(needle);
                owners.push(vec![owner]);
            }
        }
    }
    (patterns, owners)
}

/// One occurrence found by [`KnownValues::matches`]: the pattern (an index
/// into the owners) and its span.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Found {
    pub(crate) pattern: usize,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

/// What is known of an automaton's next occurrence.
#[derive(Clone, Copy)]
enum Next {
    /// Not searched yet (or the last one found starts before the cursor).
    Unknown,
    /// None at or after the cursor.
    None,
    /// Its leftmost-longest occurrence at or after the cursor.
    At(Found),
}

/// The occurrences of both automata merged in leftmost-longest order. Each
/// automaton's next occurrence is kept while it still starts at or after
/// the cursor (it is then still that automaton's leftmost-longest one), so
/// the text is searched about once by each.
pub(crate) struct Matches<'a> {
    known: &'a KnownValues,
    hay: &'a [u8],
    at: usize,
    next: [Next; 2],
}

impl Matches<'_> {
    fn next_of(&mut self, which: usize) -> Option<Found> {
        if let Next::At(f) = self.next[which]
            && f.start < self.at
        {
            self.next[which] = Next::Unknown;
        }
        if let Next::Unknown = self.next[which] {
            let (exact, folded) = match &self.known.search {
                Search::Automata { exact, folded } => (exact.as_ref(), folded.as_ref()),
                _ => (None, None),
            };
            let (automaton, offset) = if which == 0 {
                (exact, 0)
            } else {
                (folded, self.known.exact_patterns)
            };
            self.next[which] = match automaton {
                Some(a) if self.at <= self.hay.len() => {
                    match a.find(Input::new(self.hay).span(self.at..self.hay.len())) {
                        Some(m) => Next::At(Found {
                            pattern: offset + m.pattern().as_usize(),
                            start: m.start(),
                            end: m.end(),
                        }),
                        None => Next::None,
                    }
                }
                _ => Next::None,
            };
        }
        match self.next[which] {
            Next::At(f) => Some(f),
            _ => None,
        }
    }
}

impl Iterator for Matches<'_> {
    type Item = Found;

    fn next(&mut self) -> Option<Found> {
        if let Search::Anchored(anchored) = &self.known.search {
            let (pattern, start, end) = anchored.find(self.hay, self.at)?;
            self.at = end.max(start + 1);
            return Some(Found {
                pattern,
                start,
                end,
            });
        }
        let found = match (self.next_of(0), self.next_of(1)) {
            (Some(a), Some(b)) => {
                // Leftmost, then longest; at equal spans the exact (base64)
                // needle, reported before the case-insensitive one.
                if (b.start, std::cmp::Reverse(b.end)) < (a.start, std::cmp::Reverse(a.end)) {
                    b
                } else {
                    a
                }
            }
            (a, b) => a.or(b)?,
        };
        self.at = found.end.max(found.start + 1);
        Some(found)
    }
}

/// The text length from which [`KnownValues::find_on_two_threads`] searches
/// the text as it is and with its lines joined on two threads at once:
/// below it, a thread's start costs more than it saves.
const PARALLEL_FROM: usize = 256 * 1024;

/// `text` with every line break (and the indentation after it) removed, and
/// where each removal happened, to map offsets back.
struct JoinedLines {
    bytes: Zeroizing<Vec<u8>>,
    /// For each removal: the offset in `bytes` where it happened, and the
    /// number of bytes removed up to and including it.
    breaks: Vec<(usize, usize)>,
}

impl JoinedLines {
    /// `None` when `text` has no line break.
    fn of(text: &[u8]) -> Option<JoinedLines> {
        memchr::memchr(b'\n', text)?;
        // Never reallocated (the joined text is never longer): no copy of
        // it is left behind unwiped.
        let mut bytes = Zeroizing::new(Vec::with_capacity(text.len()));
        let mut breaks = Vec::new();
        let mut removed = 0;
        // The start of the line being copied.
        let mut line = 0;
        for newline in memchr::memchr_iter(b'\n', text) {
            // Only spaces and tabs are skipped after a break: no line feed
            // is ever passed over.
            debug_assert!(newline >= line);
            let eol = if newline > line && text[newline - 1] == b'\r' {
                newline - 1
            } else {
                newline
            };
            bytes.extend_from_slice(&text[line..eol]);
            let mut next = newline + 1;
            while next < text.len() && matches!(text[next], b' ' | b'\t') {
                next += 1;
            }
            removed += next - eol;
            match breaks.last_mut() {
                Some((at, total)) if *at == bytes.len() => *total = removed,
                _ => breaks.push((bytes.len(), removed)),
            }
            line = next;
        }
        bytes.extend_from_slice(&text[line..]);
        Some(JoinedLines { bytes, breaks })
    }

    /// Offset in the original text of joined offset `at` (a byte that was
    /// kept).
    fn original(&self, at: usize) -> usize {
        let before = self.breaks.partition_point(|&(pos, _)| pos <= at);
        at + before.checked_sub(1).map_or(0, |i| self.breaks[i].1)
    }

    /// The match in original offsets, if it spans a removed line break (the
    /// others were already found in the original text).
    fn original_span(&self, m: Match) -> Option<Match> {
        let first_inside = self.breaks.partition_point(|&(pos, _)| pos <= m.start);
        let spans_break = self
            .breaks
            .get(first_inside)
            .is_some_and(|&(pos, _)| pos < m.end);
        spans_break.then(|| Match {
            start: self.original(m.start),
            end: self.original(m.end - 1) + 1,
            ..m
        })
    }
}

/// `text` with each distinct span of `matches` replaced by `replacement` of
/// its first match. `matches` must be in order and not overlap, except for
/// equal spans, as [`KnownValues::find`] returns them (filtering some out
/// keeps that true).
pub fn redact(
    text: &[u8],
    matches: &[Match],
    mut replacement: impl FnMut(&Match) -> Vec<u8>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut at = 0;
    for m in matches {
        if m.start < at {
            continue;
        }
        out.extend_from_slice(&text[at..m.start]);
        out.extend_from_slice(&replacement(m));
        at = m.end;
    }
    out.extend_from_slice(&text[at..]);
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A joined text and its breaks (as [`JoinedLines`] holds them).
    type Joined = (Vec<u8>, Vec<(usize, usize)>);

    /// Line joining as first written, byte by byte: what the version
    /// over `memchr` must equal.
    fn joined_byte_by_byte(text: &[u8]) -> Option<Joined> {
        if !text.contains(&b'\n') {
            return None;
        }
        let mut bytes = Vec::new();
        let mut breaks: Vec<(usize, usize)> = Vec::new();
        let mut removed = 0;
        let mut i = 0;
        while i < text.len() {
            let eol = match text[i] {
                b'\n' => 1,
                b'\r' if text.get(i + 1) == Some(&b'\n') => 2,
                _ => 0,
            };
            if eol == 0 {
                bytes.push(text[i]);
                i += 1;
                continue;
            }
            let mut j = i + eol;
            while j < text.len() && matches!(text[j], b' ' | b'\t') {
                j += 1;
            }
            removed += j - i;
            match breaks.last_mut() {
                Some((at, total)) if *at == bytes.len() => *total = removed,
                _ => breaks.push((bytes.len(), removed)),
            }
            i = j;
        }
        Some((bytes, breaks))
    }

    proptest! {
        #[test]
        fn lines_are_joined_as_byte_by_byte(
            text in proptest::collection::vec(
                prop::sample::select(vec![b'a', b'b', b' ', b'\t', b'\r', b'\n']),
                0..300,
            )
        ) {
            let ours = JoinedLines::of(&text).map(|j| (j.bytes.to_vec(), j.breaks));
            prop_assert_eq!(ours, joined_byte_by_byte(&text));
        }
    }

    /// A text over the threshold, with values whole, split across lines
    /// (`\n` and `\r\n`, indented) and near the ends, gives the same
    /// matches on two threads as on one, and finds every planted value.
    #[test]
    fn two_threads_find_what_one_finds() {
        let values: Vec<String> = (0..50)
            .map(|i| format!("value-{i:03}-Zq8xW2mN4kP7rT1vB5cH"))
            .collect();
        let known = KnownValues::new(values.iter().enumerate().map(|(i, v)| (i, v.as_bytes())), 8)
            .expect("compiled");
        let mut text = values[0].clone();
        let mut planted = 1;
        let filler = "let total = items.iter().map(|i| i.price).sum::<u64>(); // prose\n";
        while text.len() < PARALLEL_FROM + 4096 {
            text.push_str(filler);
            let v = &values[planted % values.len()];
            match planted % 3 {
                0 => text.push_str(v),
                1 => {
                    let (a, b) = v.split_at(v.len() / 2);
                    text.push_str(&format!("{a}\n    {b}"));
                }
                _ => {
                    let (a, b) = v.split_at(7);
                    text.push_str(&format!("{a}\r\n\t{b}"));
                }
            }
            planted += 1;
        }
        text.push('\n');
        text.push_str(&values[1]);
        planted += 1;
        let one = known.find_in(text.as_bytes(), false);
        let two = known.find_in(text.as_bytes(), true);
        assert_eq!(one, two);
        assert_eq!(one.len(), planted);
        assert_eq!(known.find_on_two_threads(text.as_bytes()), two);
        assert_eq!(known.find(text.as_bytes()), one);
    }
}
