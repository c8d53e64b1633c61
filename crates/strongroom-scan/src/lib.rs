//! Leak scanning for strongroom: finding secret values, in any of the ways
//! they get encoded, in text that should not contain them.
//!
//! One crate serves the `ScanText` RPC, the relay's scrubbing of upstream
//! responses and `strongroom run`'s masking of a child's output:
//!
//! * [`KnownValues`] compiles a set of values, each with a caller-chosen
//!   label, into one automaton (built once, shared in an `Arc`). Every value
//!   is searched for in every [`Form`]: plain; base64 in the standard and
//!   URL-safe alphabets at every alignment inside a longer blob (only the
//!   characters the value alone determines), with and without padding;
//!   percent-encoded (upper- and lower-case escapes, `+` or `%20` for a space,
//!   everything or only reserved characters escaped); hex in both cases;
//!   JSON-escaped. Every form but base64 is matched ignoring ASCII case (a
//!   value echoed upper-cased is still found; in base64 the letters' case
//!   is information, so those needles match only as they are). Values
//!   shorter than a minimum length are never searched for. [`KnownValues::find`] also finds values broken across lines, as in
//!   wrapped base64 or PEM.
//! * [`Redactor`] replaces those forms in a stream cut into arbitrary
//!   chunks, holding back fewer bytes than the longest encoded form, so a
//!   value split across chunks is still replaced and memory stays bounded.
//! * [`redact`] replaces the matches of a whole text, after the caller has
//!   filtered them (say, to what a caller may see).
//! * [`detect_known_formats`] finds secrets recognisable by their shape
//!   alone (AWS access key ids, GitHub, Stripe, OpenAI, Anthropic, Slack and
//!   Google API keys, private key blocks, JWTs), each under a [`Rule`] name.
//!
//! Security promises: matches and hits carry the label and the form, never
//! the matched bytes; `Debug` of every type here prints counts, not values;
//! the copies of values made while compiling and the bytes a redactor holds
//! back are wiped when dropped. The automaton's internal tables are derived
//! from the values and are freed, not wiped, when [`KnownValues`] is dropped.
//!
//! ```
//! use std::sync::Arc;
//! use strongroom_scan::{Form, KnownValues, Redactor};
//!
//! let known = Arc::new(KnownValues::new([(0, &b"hunter2-but-longer"[..])], 8).unwrap());
//! let found = known.find(b"token=aHVudGVyMi1idXQtbG9uZ2Vy");
//! assert_eq!((found[0].label, found[0].form, found[0].start), (0, Form::Base64, 6));
//!
//! let mut redactor = Redactor::new(known, "[MASKED]");
//! let mut out = Vec::new();
//! redactor.push(b"say hunter2-b", &mut out);
//! redactor.push(b"ut-longer!", &mut out);
//! redactor.flush(&mut out);
//! assert_eq!(out, b"say [MASKED]!");
//! ```

mod anchored;
mod error;
mod formats;
mod forms;
mod known;
mod redactor;

pub use error::ScanError;
pub use formats::{FormatMatch, Rule, detect_known_formats};
pub use forms::Form;
pub use known::{KnownValues, Match, redact};
pub use redactor::{Hit, Redactor};

#[cfg(test)]
mod tests;
