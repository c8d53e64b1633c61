//! The versioned plaintext document a [`CredentialValue`] is serialized to
//! before it is sealed into an envelope, and parsed from after opening. The
//! document is a stored format: its `v` and field names never change
//! meaning; a new layout gets a new version.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use zeroize::Zeroizing;

use super::*;
use crate::time::Timestamp;

impl CredentialValue {
    /// Serializes the value into the versioned plaintext document that is
    /// sealed into an envelope. The buffer is zeroized when dropped.
    pub fn to_plaintext(&self) -> Result<Zeroizing<Vec<u8>>> {
        let wire = match self {
            Self::ApiKey(v) => Wire::ApiKey {
                api_key: v.api_key.expose_secret(),
            },
            Self::OauthToken(v) => Wire::OauthToken {
                access_token: v.access_token.expose_secret(),
                refresh_token: v.refresh_token.as_ref().map(|t| t.expose_secret()),
                token_type: &v.token_type,
                expires_at: v.expires_at,
                scopes: &v.scopes,
            },
            Self::BasicAuth(v) => Wire::BasicAuth {
                username: &v.username,
                password: v.password.expose_secret(),
            },
            Self::DbConnection(v) => Wire::DbConnection {
                host: &v.host,
                port: v.port,
                database: &v.database,
                username: &v.username,
                password: v.password.expose_secret(),
                ssl_mode: v.ssl_mode,
            },
            Self::SshKey(v) => Wire::SshKey {
                private_key: v.private_key.expose_secret(),
                public_key: &v.public_key,
                passphrase: v.passphrase.as_ref().map(|p| p.expose_secret()),
            },
            Self::Certificate(v) => Wire::Certificate {
                certificate_pem: &v.certificate_pem,
                private_key_pem: v.private_key_pem.expose_secret(),
                ca_chain_pem: &v.ca_chain_pem,
            },
            Self::Custom(v) => Wire::Custom {
                fields: v
                    .fields
                    .iter()
                    .map(|(k, s)| (k.as_str(), s.expose_secret()))
                    .collect(),
            },
        };
        let doc = WireDoc { v: 1, value: wire };
        // Reserve generously so the buffer is not reallocated (leaving an
        // unzeroized copy behind) while it is written.
        let mut out = Zeroizing::new(Vec::with_capacity(self.size_hint() + 256));
        serde_json::to_writer(&mut *out, &doc)
            .map_err(|_| Error::internal("credential value could not be serialized"))?;
        Ok(out)
    }

    /// Parses a plaintext document produced by [`Self::to_plaintext`].
    pub fn from_plaintext(bytes: &[u8]) -> Result<CredentialValue> {
        let doc: OwnedDoc = serde_json::from_slice(bytes)
            .map_err(|_| Error::internal("stored credential value is not a valid document"))?;
        if doc.v != 1 {
            return Err(Error::internal(
                "stored credential value has an unknown format version",
            ));
        }
        Ok(match doc.value {
            OwnedWire::ApiKey { api_key } => Self::ApiKey(ApiKey { api_key }),
            OwnedWire::OauthToken {
                access_token,
                refresh_token,
                token_type,
                expires_at,
                scopes,
            } => Self::OauthToken(OauthToken {
                access_token,
                refresh_token,
                token_type,
                expires_at,
                scopes,
            }),
            OwnedWire::BasicAuth { username, password } => {
                Self::BasicAuth(BasicAuth { username, password })
            }
            OwnedWire::DbConnection {
                host,
                port,
                database,
                username,
                password,
                ssl_mode,
            } => Self::DbConnection(DbConnection {
                host,
                port,
                database,
                username,
                password,
                ssl_mode,
            }),
            OwnedWire::SshKey {
                private_key,
                public_key,
                passphrase,
            } => Self::SshKey(SshKey {
                private_key,
                public_key,
                passphrase,
            }),
            OwnedWire::Certificate {
                certificate_pem,
                private_key_pem,
                ca_chain_pem,
            } => Self::Certificate(Certificate {
                certificate_pem,
                private_key_pem,
                ca_chain_pem,
            }),
            OwnedWire::Custom { fields } => Self::Custom(CustomSecret { fields }),
        })
    }
}

#[derive(Serialize)]
struct WireDoc<'a> {
    v: u32,
    value: Wire<'a>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Wire<'a> {
    ApiKey {
        api_key: &'a str,
    },
    OauthToken {
        access_token: &'a str,
        refresh_token: Option<&'a str>,
        token_type: &'a str,
        expires_at: Option<Timestamp>,
        scopes: &'a [String],
    },
    BasicAuth {
        username: &'a str,
        password: &'a str,
    },
    DbConnection {
        host: &'a str,
        port: u16,
        database: &'a str,
        username: &'a str,
        password: &'a str,
        ssl_mode: SslMode,
    },
    SshKey {
        private_key: &'a str,
        public_key: &'a str,
        passphrase: Option<&'a str>,
    },
    Certificate {
        certificate_pem: &'a str,
        private_key_pem: &'a str,
        ca_chain_pem: &'a str,
    },
    Custom {
        fields: BTreeMap<&'a str, &'a str>,
    },
}

#[derive(Deserialize)]
struct OwnedDoc {
    v: u32,
    value: OwnedWire,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OwnedWire {
    ApiKey {
        api_key: SecretString,
    },
    OauthToken {
        access_token: SecretString,
        refresh_token: Option<SecretString>,
        token_type: String,
        expires_at: Option<Timestamp>,
        scopes: Vec<String>,
    },
    BasicAuth {
        username: String,
        password: SecretString,
    },
    DbConnection {
        host: String,
        port: u16,
        database: String,
        username: String,
        password: SecretString,
        ssl_mode: SslMode,
    },
    SshKey {
        private_key: SecretString,
        public_key: String,
        passphrase: Option<SecretString>,
    },
    Certificate {
        certificate_pem: String,
        private_key_pem: SecretString,
        ca_chain_pem: String,
    },
    Custom {
        fields: BTreeMap<String, SecretString>,
    },
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::value::tests::db;

    #[test]
    fn plaintext_roundtrip_keeps_every_field() {
        let value = db();
        let bytes = value.to_plaintext().unwrap();
        let back = CredentialValue::from_plaintext(&bytes).unwrap();
        for name in value.field_names() {
            assert_eq!(
                value.field(name).map(|s| s.to_string()),
                back.field(name).map(|s| s.to_string()),
                "{name}"
            );
        }
        assert_eq!(
            back.field("url").unwrap().as_str(),
            "postgres://app:p%40ss%20word%2F1@db.internal:5432/app?sslmode=require"
        );
    }
}
