//! Typed credential values.
//!
//! A [`CredentialValue`] is the plaintext of one credential version. Every
//! secret field lives in a [`SecretString`] (zeroized on drop, `Debug`
//! redacted); the whole value's `Debug` prints only its type. Values are
//! validated against their type's schema before they are ever encrypted, and
//! serialized to a versioned JSON document that only exists inside a
//! [`Zeroizing`] buffer on its way into the envelope (`wire`); secrets the
//! server generates follow a [`GenerationPolicy`] (`generate`).

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::time::Timestamp;

mod generate;
mod wire;

pub use generate::{Alphabet, GenerationPolicy};

/// The kind of a credential, fixing the schema of its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialType {
    /// A single API key.
    ApiKey,
    /// An OAuth access token with optional refresh token.
    OauthToken,
    /// A username and password.
    BasicAuth,
    /// Everything needed to connect to a database.
    DbConnection,
    /// An SSH private key.
    SshKey,
    /// An X.509 certificate with its private key.
    Certificate,
    /// Free-form named fields.
    Custom,
}

impl CredentialType {
    /// Every type, in a fixed order.
    pub const ALL: [CredentialType; 7] = [
        Self::ApiKey,
        Self::OauthToken,
        Self::BasicAuth,
        Self::DbConnection,
        Self::SshKey,
        Self::Certificate,
        Self::Custom,
    ];

    /// The stable text form (`api_key`, `db_connection`, ...), as stored.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::ApiKey => "api_key",
            Self::OauthToken => "oauth_token",
            Self::BasicAuth => "basic_auth",
            Self::DbConnection => "db_connection",
            Self::SshKey => "ssh_key",
            Self::Certificate => "certificate",
            Self::Custom => "custom",
        }
    }

    /// Parses the stable text form.
    pub fn parse(text: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == text)
            .ok_or_else(|| Error::invalid("type", "unknown credential type"))
    }
}

impl fmt::Display for CredentialType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// TLS mode of a database connection (libpq's `sslmode` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// TLS if the server offers it.
    #[default]
    Prefer,
    /// TLS required, certificate not verified.
    Require,
    /// TLS required, certificate chain verified.
    VerifyCa,
    /// TLS required, chain and host name verified.
    VerifyFull,
}

impl SslMode {
    /// libpq's text form.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }
}

/// An API key.
pub struct ApiKey {
    /// The key. Secret.
    pub api_key: SecretString,
}

/// An OAuth token set.
pub struct OauthToken {
    /// The access token. Secret.
    pub access_token: SecretString,
    /// The refresh token, if any. Secret.
    pub refresh_token: Option<SecretString>,
    /// The token type, usually `Bearer`.
    pub token_type: String,
    /// When the access token expires, if known.
    pub expires_at: Option<Timestamp>,
    /// Granted scopes.
    pub scopes: Vec<String>,
}

/// A username and password.
pub struct BasicAuth {
    /// The user name.
    pub username: String,
    /// The password. Secret.
    pub password: SecretString,
}

/// A database connection.
pub struct DbConnection {
    /// Host name or address.
    pub host: String,
    /// TCP port (1-65535).
    pub port: u16,
    /// Database name.
    pub database: String,
    /// User name.
    pub username: String,
    /// Password. Secret.
    pub password: SecretString,
    /// TLS mode.
    pub ssl_mode: SslMode,
}

impl DbConnection {
    /// The connection URI that libpq, sqlx and most drivers accept:
    /// `postgres://user:password@host:port/database?sslmode=MODE`. Every
    /// part is percent-encoded (RFC 3986): the user name and password as
    /// userinfo, the database as one path segment, a host name as a
    /// registered name (a Unix socket directory such as `/run/postgresql`
    /// too); an IPv6 address goes in brackets, its zone's `%` encoded.
    /// Holds the password: hand it only to the request that needs it.
    pub fn uri(&self) -> Zeroizing<String> {
        let mut out = Zeroizing::new(String::with_capacity(64));
        out.push_str("postgres://");
        out.push_str(&percent_encode(&self.username));
        out.push(':');
        out.push_str(&percent_encode(self.password.expose_secret()));
        out.push('@');
        out.push_str(&uri_host(&self.host));
        out.push(':');
        out.push_str(&self.port.to_string());
        out.push('/');
        out.push_str(&percent_encode(&self.database));
        out.push_str("?sslmode=");
        out.push_str(self.ssl_mode.as_str());
        out
    }
}

/// `host` as the host of a URI: an IPv6 address (with or without its
/// brackets, with or without a zone) in brackets, anything else
/// percent-encoded as a registered name.
fn uri_host(host: &str) -> String {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let address = bare.split_once('%').map_or(bare, |(a, _)| a);
    if address.parse::<std::net::Ipv6Addr>().is_ok() {
        // Only a zone (`fe80::1%eth0`) needs encoding inside the brackets.
        return format!("[{}]", bare.replace('%', "%25"));
    }
    percent_encode(host).to_string()
}

/// An SSH key pair.
pub struct SshKey {
    /// The private key, PEM or OpenSSH format. Secret.
    pub private_key: SecretString,
    /// The public key, if given.
    pub public_key: String,
    /// The private key's passphrase, if any. Secret.
    pub passphrase: Option<SecretString>,
}

/// An X.509 certificate with its private key.
pub struct Certificate {
    /// The certificate, PEM.
    pub certificate_pem: String,
    /// The private key, PEM. Secret.
    pub private_key_pem: SecretString,
    /// Intermediate / CA certificates, PEM, may be empty.
    pub ca_chain_pem: String,
}

/// Free-form named secret fields.
pub struct CustomSecret {
    /// Field name to value; every value is treated as secret.
    pub fields: BTreeMap<String, SecretString>,
}

/// The plaintext of one credential version, typed by [`CredentialType`].
pub enum CredentialValue {
    /// See [`ApiKey`].
    ApiKey(ApiKey),
    /// See [`OauthToken`].
    OauthToken(OauthToken),
    /// See [`BasicAuth`].
    BasicAuth(BasicAuth),
    /// See [`DbConnection`].
    DbConnection(DbConnection),
    /// See [`SshKey`].
    SshKey(SshKey),
    /// See [`Certificate`].
    Certificate(Certificate),
    /// See [`CustomSecret`].
    Custom(CustomSecret),
}

impl fmt::Debug for CredentialValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CredentialValue::{}([REDACTED])", self.credential_type())
    }
}

/// Maximum number of fields in a custom secret.
pub const MAX_CUSTOM_FIELDS: usize = 64;

fn require_text(value: &str, field: &'static str) -> Result<()> {
    if value.trim().is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    Ok(())
}

fn require_secret(value: &SecretString, field: &'static str) -> Result<()> {
    if value.expose_secret().is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    Ok(())
}

fn require_pem(value: &str, label: &'static str, field: &'static str) -> Result<()> {
    require_text(value, field)?;
    if !(value.contains("-----BEGIN ") && value.contains(label)) {
        return Err(Error::invalid(field, "must be PEM encoded"));
    }
    Ok(())
}

impl CredentialValue {
    /// The type of this value.
    pub const fn credential_type(&self) -> CredentialType {
        match self {
            Self::ApiKey(_) => CredentialType::ApiKey,
            Self::OauthToken(_) => CredentialType::OauthToken,
            Self::BasicAuth(_) => CredentialType::BasicAuth,
            Self::DbConnection(_) => CredentialType::DbConnection,
            Self::SshKey(_) => CredentialType::SshKey,
            Self::Certificate(_) => CredentialType::Certificate,
            Self::Custom(_) => CredentialType::Custom,
        }
    }

    /// Checks the value against its type's schema. Field names in errors are
    /// relative to the value (`db_connection.port`); the caller prefixes the
    /// request path with [`Error::within`]. Messages never echo the value.
    pub fn validate(&self) -> Result<()> {
        match self {
            Self::ApiKey(v) => require_secret(&v.api_key, "api_key.api_key"),
            Self::OauthToken(v) => require_secret(&v.access_token, "oauth_token.access_token"),
            Self::BasicAuth(v) => {
                require_text(&v.username, "basic_auth.username")?;
                require_secret(&v.password, "basic_auth.password")
            }
            Self::DbConnection(v) => {
                require_text(&v.host, "db_connection.host")?;
                if v.port == 0 {
                    return Err(Error::invalid("db_connection.port", "must be 1-65535"));
                }
                require_text(&v.database, "db_connection.database")?;
                require_text(&v.username, "db_connection.username")?;
                require_secret(&v.password, "db_connection.password")
            }
            Self::SshKey(v) => {
                require_secret(&v.private_key, "ssh_key.private_key")?;
                if !v.private_key.expose_secret().contains("PRIVATE KEY-----") {
                    return Err(Error::invalid(
                        "ssh_key.private_key",
                        "must be a PEM or OpenSSH private key",
                    ));
                }
                Ok(())
            }
            Self::Certificate(v) => {
                require_pem(
                    &v.certificate_pem,
                    "CERTIFICATE-----",
                    "certificate.certificate_pem",
                )?;
                require_secret(&v.private_key_pem, "certificate.private_key_pem")?;
                if !v
                    .private_key_pem
                    .expose_secret()
                    .contains("PRIVATE KEY-----")
                {
                    return Err(Error::invalid(
                        "certificate.private_key_pem",
                        "must be a PEM private key",
                    ));
                }
                Ok(())
            }
            Self::Custom(v) => {
                if v.fields.is_empty() {
                    return Err(Error::invalid("custom.fields", "needs at least one field"));
                }
                if v.fields.len() > MAX_CUSTOM_FIELDS {
                    return Err(Error::invalid("custom.fields", "has more than 64 fields"));
                }
                for name in v.fields.keys() {
                    let ok = !name.is_empty()
                        && name.len() <= 64
                        && name
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
                    if !ok {
                        return Err(Error::invalid(
                            "custom.fields",
                            "field names must be 1-64 letters, digits, '_', '-' or '.'",
                        ));
                    }
                }
                Ok(())
            }
        }
    }

    /// Names of the fields this value has, in schema order.
    pub fn field_names(&self) -> Vec<&str> {
        match self {
            Self::ApiKey(_) => vec!["api_key"],
            Self::OauthToken(v) => {
                let mut names = vec!["access_token"];
                if v.refresh_token.is_some() {
                    names.push("refresh_token");
                }
                names.push("token_type");
                names
            }
            Self::BasicAuth(_) => vec!["username", "password"],
            Self::DbConnection(_) => {
                vec![
                    "host", "port", "database", "username", "password", "ssl_mode", "uri", "url",
                ]
            }
            Self::SshKey(v) => {
                let mut names = vec!["private_key", "public_key"];
                if v.passphrase.is_some() {
                    names.push("passphrase");
                }
                names
            }
            Self::Certificate(_) => vec!["certificate_pem", "private_key_pem", "ca_chain_pem"],
            Self::Custom(v) => v.fields.keys().map(String::as_str).collect(),
        }
    }

    /// One field's text, for injection or a field-selecting reveal.
    ///
    /// Exposes secret material: callers hand the result straight to the
    /// request that needs it and never log it. `db_connection` also offers a
    /// derived `uri` field, its connection URI ([`DbConnection::uri`]; `url`
    /// is the same).
    pub fn field(&self, name: &str) -> Option<Zeroizing<String>> {
        let text = |s: &str| Some(Zeroizing::new(s.to_owned()));
        match (self, name) {
            (Self::ApiKey(v), "api_key") => text(v.api_key.expose_secret()),
            (Self::OauthToken(v), "access_token") => text(v.access_token.expose_secret()),
            (Self::OauthToken(v), "refresh_token") => v
                .refresh_token
                .as_ref()
                .and_then(|t| text(t.expose_secret())),
            (Self::OauthToken(v), "token_type") => text(&v.token_type),
            (Self::BasicAuth(v), "username") => text(&v.username),
            (Self::BasicAuth(v), "password") => text(v.password.expose_secret()),
            (Self::DbConnection(v), "host") => text(&v.host),
            (Self::DbConnection(v), "port") => text(&v.port.to_string()),
            (Self::DbConnection(v), "database") => text(&v.database),
            (Self::DbConnection(v), "username") => text(&v.username),
            (Self::DbConnection(v), "password") => text(v.password.expose_secret()),
            (Self::DbConnection(v), "ssl_mode") => text(v.ssl_mode.as_str()),
            (Self::DbConnection(v), "uri" | "url") => Some(v.uri()),
            (Self::SshKey(v), "private_key") => text(v.private_key.expose_secret()),
            (Self::SshKey(v), "public_key") => text(&v.public_key),
            (Self::SshKey(v), "passphrase") => {
                v.passphrase.as_ref().and_then(|p| text(p.expose_secret()))
            }
            (Self::Certificate(v), "certificate_pem") => text(&v.certificate_pem),
            (Self::Certificate(v), "private_key_pem") => text(v.private_key_pem.expose_secret()),
            (Self::Certificate(v), "ca_chain_pem") => text(&v.ca_chain_pem),
            (Self::Custom(v), field) => v.fields.get(field).and_then(|s| text(s.expose_secret())),
            _ => None,
        }
    }

    /// The secret strings of this value (not user names, hosts or public
    /// parts), for leak scanning and output masking.
    pub fn secrets(&self) -> Vec<&str> {
        match self {
            Self::ApiKey(v) => vec![v.api_key.expose_secret()],
            Self::OauthToken(v) => {
                let mut out = vec![v.access_token.expose_secret()];
                if let Some(r) = &v.refresh_token {
                    out.push(r.expose_secret());
                }
                out
            }
            Self::BasicAuth(v) => vec![v.password.expose_secret()],
            Self::DbConnection(v) => vec![v.password.expose_secret()],
            Self::SshKey(v) => {
                let mut out = vec![v.private_key.expose_secret()];
                if let Some(p) = &v.passphrase {
                    out.push(p.expose_secret());
                }
                out
            }
            Self::Certificate(v) => vec![v.private_key_pem.expose_secret()],
            Self::Custom(v) => v.fields.values().map(|s| s.expose_secret()).collect(),
        }
    }

    /// The name of the field a server-generated value replaces on rotation:
    /// the one secret field of single-secret types. `None` for types whose
    /// secret cannot be generated as text (keys and certificates) or custom
    /// values (which must name the field).
    pub const fn generated_field(ty: CredentialType) -> Option<&'static str> {
        match ty {
            CredentialType::ApiKey => Some("api_key"),
            CredentialType::OauthToken => Some("access_token"),
            CredentialType::BasicAuth | CredentialType::DbConnection => Some("password"),
            CredentialType::SshKey | CredentialType::Certificate | CredentialType::Custom => None,
        }
    }

    /// A copy of this value with secret field `field` replaced by `secret`;
    /// used for server-generated rotation. Errors if the type has no such
    /// replaceable field.
    pub fn with_field(&self, field: &str, secret: SecretString) -> Result<CredentialValue> {
        let s = |x: &SecretString| SecretString::from(x.expose_secret());
        let o = |x: &Option<SecretString>| x.as_ref().map(s);
        let out = match (self, field) {
            (Self::ApiKey(_), "api_key") => Self::ApiKey(ApiKey { api_key: secret }),
            (Self::OauthToken(v), "access_token") => Self::OauthToken(OauthToken {
                access_token: secret,
                refresh_token: o(&v.refresh_token),
                token_type: v.token_type.clone(),
                expires_at: v.expires_at,
                scopes: v.scopes.clone(),
            }),
            (Self::BasicAuth(v), "password") => Self::BasicAuth(BasicAuth {
                username: v.username.clone(),
                password: secret,
            }),
            (Self::DbConnection(v), "password") => Self::DbConnection(DbConnection {
                host: v.host.clone(),
                port: v.port,
                database: v.database.clone(),
                username: v.username.clone(),
                password: secret,
                ssl_mode: v.ssl_mode,
            }),
            (Self::Custom(v), name) if v.fields.contains_key(name) => {
                let mut fields: BTreeMap<String, SecretString> =
                    v.fields.iter().map(|(k, x)| (k.clone(), s(x))).collect();
                fields.insert(name.to_owned(), secret);
                Self::Custom(CustomSecret { fields })
            }
            _ => {
                return Err(Error::invalid(
                    "generate.field",
                    "this credential has no generatable field of that name",
                ));
            }
        };
        Ok(out)
    }

    /// An upper bound of the serialized size, in bytes, before escaping.
    pub fn size_hint(&self) -> usize {
        let o = |x: &Option<SecretString>| x.as_ref().map_or(0, |s| s.expose_secret().len());
        match self {
            Self::ApiKey(v) => v.api_key.expose_secret().len(),
            Self::OauthToken(v) => {
                v.access_token.expose_secret().len()
                    + o(&v.refresh_token)
                    + v.token_type.len()
                    + v.scopes.iter().map(|s| s.len() + 3).sum::<usize>()
            }
            Self::BasicAuth(v) => v.username.len() + v.password.expose_secret().len(),
            Self::DbConnection(v) => {
                v.host.len()
                    + v.database.len()
                    + v.username.len()
                    + v.password.expose_secret().len()
            }
            Self::SshKey(v) => {
                v.private_key.expose_secret().len() + v.public_key.len() + o(&v.passphrase)
            }
            Self::Certificate(v) => {
                v.certificate_pem.len()
                    + v.private_key_pem.expose_secret().len()
                    + v.ca_chain_pem.len()
            }
            Self::Custom(v) => v
                .fields
                .iter()
                .map(|(k, s)| k.len() + s.expose_secret().len() + 6)
                .sum(),
        }
    }
}

fn percent_encode(text: &str) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(text.len() * 3));
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(b"0123456789ABCDEF"[usize::from(b >> 4)]));
            out.push(char::from(b"0123456789ABCDEF"[usize::from(b & 0xf)]));
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn db() -> CredentialValue {
        CredentialValue::DbConnection(DbConnection {
            host: "db.internal".into(),
            port: 5432,
            database: "app".into(),
            username: "app".into(),
            password: "p@ss word/1".into(),
            ssl_mode: SslMode::Require,
        })
    }

    fn db_at(host: &str, user: &str, password: &str, database: &str) -> DbConnection {
        DbConnection {
            host: host.into(),
            port: 6543,
            database: database.into(),
            username: user.into(),
            password: password.into(),
            ssl_mode: SslMode::VerifyFull,
        }
    }

    #[test]
    fn uri_encodes_every_part() {
        let v = db_at("db.internal", "app:user@x", "p@s:s/w%rd ?#[]", "my db/x?");
        assert_eq!(
            v.uri().as_str(),
            "postgres://app%3Auser%40x:p%40s%3As%2Fw%25rd%20%3F%23%5B%5D@db.internal:6543/\
             my%20db%2Fx%3F?sslmode=verify-full"
        );
        let whole = CredentialValue::DbConnection(v);
        assert_eq!(whole.field("uri"), whole.field("url"));
        assert!(whole.field_names().contains(&"uri"));
    }

    #[test]
    fn uri_brackets_ipv6_hosts() {
        for (host, shown) in [
            ("::1", "[::1]"),
            ("[::1]", "[::1]"),
            ("2001:db8::5", "[2001:db8::5]"),
            ("fe80::1%eth0", "[fe80::1%25eth0]"),
            ("127.0.0.1", "127.0.0.1"),
            ("/run/postgresql", "%2Frun%2Fpostgresql"),
        ] {
            let uri = db_at(host, "u", "p", "d").uri();
            assert_eq!(
                uri.as_str(),
                format!("postgres://u:p@{shown}:6543/d?sslmode=verify-full"),
                "{host}"
            );
        }
    }

    #[test]
    fn schema_names_the_missing_field() {
        let v = CredentialValue::DbConnection(DbConnection {
            host: "h".into(),
            port: 0,
            database: "d".into(),
            username: "u".into(),
            password: "p".into(),
            ssl_mode: SslMode::Disable,
        });
        assert_eq!(
            v.validate().unwrap_err().within("value"),
            Error::invalid("value.db_connection.port", "must be 1-65535")
        );
        let v = CredentialValue::ApiKey(ApiKey { api_key: "".into() });
        assert!(
            matches!(v.validate(), Err(Error::InvalidArgument { field, .. }) if field == "api_key.api_key")
        );
    }

    #[test]
    fn debug_never_shows_secret() {
        let v = CredentialValue::ApiKey(ApiKey {
            api_key: "sk-known-secret-123".into(),
        });
        let shown = format!("{v:?}");
        assert!(!shown.contains("sk-known-secret-123"), "{shown}");
        assert!(!format!("{:?}", db()).contains("p@ss"));
    }
}
