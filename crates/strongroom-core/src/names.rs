//! Validated names: parse once at the edge, then pass types that cannot be
//! malformed.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::error::Error;

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $validate:path) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Parses and validates `text`; `field` names the request field
            /// in the error.
            pub fn parse(text: &str, field: &'static str) -> Result<Self, Error> {
                $validate(text).map_err(|message| Error::invalid(field, message))?;
                Ok(Self(text.to_owned()))
            }

            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = Error;
            fn try_from(text: String) -> Result<Self, Error> {
                $validate(&text).map_err(|message| Error::invalid(stringify!($name), message))?;
                Ok(Self(text))
            }
        }

        impl From<$name> for String {
            fn from(name: $name) -> String {
                name.0
            }
        }
    };
}

name_type!(
    /// A credential's path-like name, unique per (tenant, environment):
    /// `llm/openai`, `payments/stripe`. Segments of `A-Z a-z 0-9 . _ -`
    /// separated by `/`, at most 256 characters, no empty, `.` or `..`
    /// segment.
    CredentialName,
    validate_credential_name
);
name_type!(
    /// An environment name: `dev`, `staging`, `production` or a custom one;
    /// lowercase letters, digits and `-`, starting with a letter, at most 32.
    Environment,
    validate_slug_32
);
name_type!(
    /// A tenant's name: lowercase letters, digits and `-`, starting with a
    /// letter, at most 63 characters.
    TenantName,
    validate_slug_63
);
name_type!(
    /// A credential's service label (`openai`, `postgres`): lowercase letters,
    /// digits, `.`, `_` and `-`, at most 64 characters.
    ServiceLabel,
    validate_service
);
name_type!(
    /// A principal's display name, unique per tenant: letters, digits and
    /// `. _ - @ : /`, at most 128 characters.
    PrincipalName,
    validate_principal_name
);
name_type!(
    /// A free-form tag on a credential: letters, digits and `. _ - : =`, at
    /// most 64 characters.
    Tag,
    validate_tag
);

/// The environments every new tenant starts with.
pub const DEFAULT_ENVIRONMENTS: [&str; 3] = ["dev", "staging", "production"];

fn validate_credential_name(text: &str) -> Result<(), &'static str> {
    if text.is_empty() {
        return Err("must not be empty");
    }
    if text.len() > 256 {
        return Err("must be at most 256 characters");
    }
    for segment in text.split('/') {
        if segment.is_empty() {
            return Err("must not start or end with '/' or contain '//'");
        }
        if segment == "." || segment == ".." {
            return Err("must not contain '.' or '..' segments");
        }
        if !segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err("may contain only letters, digits, '.', '_', '-' and '/'");
        }
    }
    Ok(())
}

fn validate_slug(text: &str, max: usize) -> Result<(), &'static str> {
    let bytes = text.as_bytes();
    match bytes.first() {
        None => return Err("must not be empty"),
        Some(b) if !b.is_ascii_lowercase() => return Err("must start with a lowercase letter"),
        Some(_) => {}
    }
    if text.len() > max {
        return Err(if max == 32 {
            "must be at most 32 characters"
        } else {
            "must be at most 63 characters"
        });
    }
    if !bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
    {
        return Err("may contain only lowercase letters, digits and '-'");
    }
    if text.ends_with('-') {
        return Err("must not end with '-'");
    }
    Ok(())
}

fn validate_slug_32(text: &str) -> Result<(), &'static str> {
    validate_slug(text, 32)
}

fn validate_slug_63(text: &str) -> Result<(), &'static str> {
    validate_slug(text, 63)
}

fn validate_service(text: &str) -> Result<(), &'static str> {
    if text.is_empty() {
        return Err("must not be empty");
    }
    if text.len() > 64 {
        return Err("must be at most 64 characters");
    }
    if !text
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err("may contain only lowercase letters, digits, '.', '_' and '-'");
    }
    Ok(())
}

fn validate_principal_name(text: &str) -> Result<(), &'static str> {
    if text.is_empty() {
        return Err("must not be empty");
    }
    if text.len() > 128 {
        return Err("must be at most 128 characters");
    }
    if !text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@' | b':' | b'/'))
    {
        return Err("may contain only letters, digits and '.', '_', '-', '@', ':', '/'");
    }
    Ok(())
}

fn validate_tag(text: &str) -> Result<(), &'static str> {
    if text.is_empty() {
        return Err("must not be empty");
    }
    if text.len() > 64 {
        return Err("must be at most 64 characters");
    }
    if !text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':' | b'='))
    {
        return Err("may contain only letters, digits and '.', '_', '-', ':', '='");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_names() {
        for ok in ["llm/openai", "payments/stripe", "a", "A.b_c-d/e/f"] {
            assert!(CredentialName::parse(ok, "name").is_ok(), "{ok}");
        }
        for bad in ["", "/a", "a/", "a//b", "a/../b", "./a", "a b", "a*", "ä"] {
            let err = CredentialName::parse(bad, "name").err();
            assert!(
                matches!(err, Some(Error::InvalidArgument { ref field, .. }) if field == "name"),
                "{bad}: {err:?}"
            );
        }
        assert!(CredentialName::parse(&"a".repeat(257), "name").is_err());
    }

    #[test]
    fn environments() {
        for ok in ["dev", "staging", "production", "eu-west-1"] {
            assert!(Environment::parse(ok, "environment").is_ok(), "{ok}");
        }
        for bad in ["", "Dev", "1dev", "dev-", "dev_x", &"a".repeat(33)] {
            assert!(Environment::parse(bad, "environment").is_err(), "{bad}");
        }
    }

    #[test]
    fn serde_revalidates() {
        assert!(serde_json::from_str::<Environment>("\"Prod\"").is_err());
        let env: Environment = serde_json::from_str("\"prod\"").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(env.as_str(), "prod");
    }
}
