//! Credential references: `sr://ENVIRONMENT/NAME[#FIELD]`, e.g.
//! `sr://production/llm/openai#api_key`.

use std::fmt;
use std::str::FromStr;

use strongroom_proto::v1 as pb;

/// A parsed reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The environment.
    pub environment: String,
    /// The credential's path-like name.
    pub name: String,
    /// The field to use, if named.
    pub field: Option<String>,
}

/// Why a reference did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid credential reference: {0} (expected sr://ENVIRONMENT/NAME[#FIELD])")]
pub struct ReferenceError(&'static str);

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let rest = text
            .strip_prefix("sr://")
            .ok_or(ReferenceError("missing sr:// scheme"))?;
        let (path, field) = match rest.split_once('#') {
            Some((p, f)) if !f.is_empty() => (p, Some(f.to_owned())),
            Some(_) => return Err(ReferenceError("empty field after '#'")),
            None => (rest, None),
        };
        let (environment, name) = path
            .split_once('/')
            .ok_or(ReferenceError("no credential name"))?;
        if environment.is_empty() || name.is_empty() {
            return Err(ReferenceError("empty environment or name"));
        }
        Ok(Reference {
            environment: environment.to_owned(),
            name: name.to_owned(),
            field,
        })
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sr://{}/{}", self.environment, self.name)?;
        if let Some(field) = &self.field {
            write!(f, "#{field}")?;
        }
        Ok(())
    }
}

impl Reference {
    /// The protobuf reference by path.
    pub fn to_ref(&self) -> pb::CredentialRef {
        pb::CredentialRef {
            by: Some(pb::credential_ref::By::Path(pb::CredentialPath {
                environment: self.environment.clone(),
                name: self.name.clone(),
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        let r: Reference = "sr://production/llm/openai#api_key"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.environment, "production");
        assert_eq!(r.name, "llm/openai");
        assert_eq!(r.field.as_deref(), Some("api_key"));
        assert_eq!(r.to_string(), "sr://production/llm/openai#api_key");
        assert!("https://x/y".parse::<Reference>().is_err());
        assert!("sr://prod".parse::<Reference>().is_err());
        assert!("sr://prod/x#".parse::<Reference>().is_err());
    }
}
