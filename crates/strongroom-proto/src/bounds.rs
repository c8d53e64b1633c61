//! Input bounds of every request, enforced as it is decoded.
//!
//! Each string, bytes, repeated and map field that a request can reach
//! states its bound in its proto comment (`Bound: at most 256 characters.`);
//! the build script turns those lines into the [`Fields`] impls included
//! below, and fails when a field has none. [`crate::codec::BoundedCodec`]
//! runs the check on every decoded request, before any handler sees it, so
//! every RPC (served or not) answers an oversized field, a NUL or another
//! control character with INVALID_ARGUMENT naming the field:
//!
//! - text fields: at most their number of characters; no control character
//!   (U+0000-U+001F, U+007F-U+009F), except newlines, carriage returns and
//!   tabs where the bound allows them;
//! - secret values inside typed credential values: only their size is
//!   bounded; they are sealed as given;
//! - repeated and map fields: at most their number of items, each item
//!   checked by the same rules.

use std::fmt;

/// Where a field sits in a request: `value.api_key.api_key`,
/// `destinations[2].host`. Built on the stack while checking, formatted only
/// when a field is refused.
#[derive(Debug, Clone, Copy)]
pub struct Path<'a> {
    parent: Option<&'a Path<'a>>,
    name: &'static str,
    index: Option<usize>,
}

impl<'a> Path<'a> {
    /// The field `name` (item `index` of it, if repeated) under `parent`.
    pub fn new(parent: Option<&'a Path<'a>>, name: &'static str, index: Option<usize>) -> Self {
        Self {
            parent,
            name,
            index,
        }
    }
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(parent) = self.parent {
            write!(f, "{parent}.")?;
        }
        f.write_str(self.name)?;
        if let Some(i) = self.index {
            write!(f, "[{i}]")?;
        }
        Ok(())
    }
}

/// A refused field: its path and what is wrong with it. Never carries the
/// field's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The field's path from the request, e.g. `credential.path.name`.
    pub field: String,
    /// What is wrong, e.g. `is over 256 characters`.
    pub problem: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}

fn violation(
    at: Option<&Path<'_>>,
    name: &'static str,
    index: Option<usize>,
    problem: String,
) -> Violation {
    Violation {
        field: Path::new(at, name, index).to_string(),
        problem,
    }
}

/// A message whose fields have bounds.
pub trait Fields {
    /// Checks every bounded field, the message sitting at `at`.
    fn check_fields(&self, at: Option<&Path<'_>>) -> Result<(), Violation>;
}

/// A message sent or received by an RPC. Requests check their fields;
/// responses have nothing to check.
pub trait Bounded {
    /// Checks the whole message.
    fn check_bounds(&self) -> Result<(), Violation> {
        Ok(())
    }
}

/// What a bound allows, as listed in [`TABLE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Text of at most `chars` characters, without control characters
    /// except (when `multiline`) newlines, carriage returns and tabs.
    Text {
        /// Most characters.
        chars: usize,
        /// Newlines and tabs allowed.
        multiline: bool,
    },
    /// A secret value: any content, at most `bytes` bytes.
    Secret {
        /// Most bytes.
        bytes: usize,
    },
    /// Bytes, at most `bytes`.
    Bytes {
        /// Most bytes.
        bytes: usize,
    },
    /// A repeated field of messages, enums or numbers.
    List {
        /// Most items.
        items: usize,
    },
    /// A repeated text field (or a field mask's paths).
    TextList {
        /// Most items.
        items: usize,
        /// Most characters an item.
        chars: usize,
    },
    /// A map of secret fields.
    SecretMap {
        /// Most entries.
        entries: usize,
        /// Most characters a key.
        key_chars: usize,
        /// Most bytes a value.
        value_bytes: usize,
    },
}

/// One field's bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldBound {
    /// What it allows.
    pub kind: Kind,
}

/// Whether `c` is refused in text: every control character, except
/// newlines, carriage returns and tabs in multi-line fields.
fn refused_char(c: char, multiline: bool) -> bool {
    c.is_control() && !(multiline && matches!(c, '\n' | '\r' | '\t'))
}

/// Checks a text field.
pub fn check_text(
    text: &str,
    max_chars: usize,
    multiline: bool,
    at: Option<&Path<'_>>,
    name: &'static str,
    index: Option<usize>,
) -> Result<(), Violation> {
    // A string of at most max_chars bytes has at most max_chars characters.
    if text.len() > max_chars && text.chars().count() > max_chars {
        return Err(violation(
            at,
            name,
            index,
            format!("is over {max_chars} characters"),
        ));
    }
    if let Some(c) = text.chars().find(|&c| refused_char(c, multiline)) {
        let problem = if c == '\0' {
            "must not contain NUL".to_owned()
        } else if multiline {
            format!(
                "must not contain control characters other than newlines and tabs (found U+{:04X})",
                c as u32
            )
        } else {
            format!(
                "must not contain control characters (found U+{:04X})",
                c as u32
            )
        };
        return Err(violation(at, name, index, problem));
    }
    Ok(())
}

/// Checks a secret value: only its size.
pub fn check_secret(
    value: &[u8],
    max_bytes: usize,
    at: Option<&Path<'_>>,
    name: &'static str,
    index: Option<usize>,
) -> Result<(), Violation> {
    if value.len() > max_bytes {
        return Err(violation(
            at,
            name,
            index,
            format!("is over {max_bytes} bytes"),
        ));
    }
    Ok(())
}

/// Checks a bytes field.
pub fn check_bytes(
    value: &[u8],
    max_bytes: usize,
    at: Option<&Path<'_>>,
    name: &'static str,
) -> Result<(), Violation> {
    check_secret(value, max_bytes, at, name, None)
}

/// Checks the number of items of a repeated or map field.
pub fn check_items(
    len: usize,
    max_items: usize,
    at: Option<&Path<'_>>,
    name: &'static str,
) -> Result<(), Violation> {
    if len > max_items {
        return Err(violation(
            at,
            name,
            None,
            format!("has more than {max_items} items"),
        ));
    }
    Ok(())
}

include!(concat!(env!("OUT_DIR"), "/bounds.rs"));

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1;

    #[test]
    fn text_rules() {
        assert!(check_text("ok text", 16, false, None, "f", None).is_ok());
        let e = check_text("a\0b", 16, false, None, "purpose", None).unwrap_err();
        assert_eq!(e.to_string(), "purpose: must not contain NUL");
        assert!(check_text("a\nb", 16, false, None, "f", None).is_err());
        assert!(check_text("a\n\tb\r\n", 16, true, None, "f", None).is_ok());
        assert!(check_text("a\u{1b}b", 16, true, None, "f", None).is_err());
        assert!(check_text("a\u{85}b", 16, true, None, "f", None).is_err());
        // Characters, not bytes.
        assert!(check_text(&"é".repeat(16), 16, false, None, "f", None).is_ok());
        assert!(check_text(&"é".repeat(17), 16, false, None, "f", None).is_err());
    }

    #[test]
    fn paths_name_nested_fields() {
        let req = v1::CreateCredentialRequest {
            environment: "dev".into(),
            name: "llm/openai".into(),
            service: "openai".into(),
            value: Some(v1::CredentialValue {
                value: Some(v1::credential_value::Value::ApiKey(v1::ApiKey {
                    // Secrets are sealed as given: control characters pass.
                    api_key: "sk-\0-\n".into(),
                })),
            }),
            ..Default::default()
        };
        assert_eq!(req.check_bounds(), Ok(()));
        let grant = v1::CreateGrantRequest {
            destinations: vec![
                v1::Destination::default(),
                v1::Destination {
                    host: "x".repeat(254),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        assert_eq!(
            grant.check_bounds().unwrap_err().to_string(),
            "destinations[1].host: is over 253 characters"
        );
        let reveal = v1::RevealCredentialRequest {
            credential: Some(v1::CredentialRef {
                by: Some(v1::credential_ref::By::Path(v1::CredentialPath {
                    environment: "dev".into(),
                    name: "a\u{7f}".into(),
                })),
            }),
            ..Default::default()
        };
        assert_eq!(
            reveal.check_bounds().unwrap_err().field,
            "credential.path.name"
        );
    }

    #[test]
    fn the_table_lists_request_fields() {
        assert!(TABLE.contains(&(
            "strongroom.v1.RevealCredentialRequest",
            "purpose",
            FieldBound {
                kind: Kind::Text {
                    chars: 1024,
                    multiline: false
                }
            }
        )));
    }
}
