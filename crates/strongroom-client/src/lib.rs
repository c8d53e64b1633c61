//! A typed client for strongroom: connects with mutual TLS from certificate,
//! key and CA files, gives the four service clients, and offers helpers for
//! the common calls. Secret values come back in zeroizing wrappers.

use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use strongroom_proto::coalesce::Coalescing;
use strongroom_proto::v1 as pb;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

pub mod reference;
pub use reference::Reference;

/// What can go wrong on the client side.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A TLS file could not be read.
    #[error("cannot read {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// The endpoint or TLS settings are invalid, or the connection failed.
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// A setting is invalid.
    #[error("invalid setting: {0}")]
    Invalid(String),
    /// The server answered with an error status.
    #[error("{}: {}", .0.code(), .0.message())]
    Status(#[from] tonic::Status),
}

/// How to reach and authenticate to a strongroom server.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `https://host:port`.
    pub endpoint: String,
    /// CA bundle that the server certificate chains to (PEM).
    pub ca: PathBuf,
    /// This client's certificate (PEM); its SPIFFE ID or CN is its identity.
    pub cert: PathBuf,
    /// This client's private key (PEM).
    pub key: PathBuf,
    /// Server name to verify, if not the endpoint's host.
    pub domain: Option<String>,
    /// Tenant name, sent only when an identity is bound in several tenants.
    pub tenant: Option<String>,
    /// Connect timeout.
    pub connect_timeout: Duration,
}

impl ClientConfig {
    /// A configuration for `endpoint` with files in `dir` named
    /// `ca.pem`, `<name>.pem` and `<name>-key.pem` (the layout `strongroomd
    /// dev` writes).
    pub fn from_dir(endpoint: impl Into<String>, dir: &Path, name: &str) -> Self {
        Self {
            endpoint: endpoint.into(),
            ca: dir.join("ca.pem"),
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}-key.pem")),
            domain: None,
            tenant: None,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// Adds the tenant header to every call when configured.
#[derive(Clone, Debug, Default)]
pub struct TenantHeader(Option<AsciiMetadataValue>);

impl Interceptor for TenantHeader {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            request
                .metadata_mut()
                .insert("strongroom-tenant", v.clone());
        }
        Ok(request)
    }
}

/// Opens a client's TCP connection (TLS goes on top), with Nagle's algorithm
/// off and writes coalesced: the requests of many concurrent calls on one
/// connection leave in one TLS write and one system call instead of one each
/// ([`Coalescing`]).
#[derive(Clone, Copy, Debug)]
struct Connector;

impl tonic::codegen::Service<tonic::codegen::http::Uri> for Connector {
    type Response = hyper_util::rt::TokioIo<Coalescing<tokio::net::TcpStream>>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: tonic::codegen::http::Uri) -> Self::Future {
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| {
                    std::io::Error::new(std::io::ErrorKind::InvalidInput, "endpoint has no host")
                })?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri
                .port_u16()
                .unwrap_or(if uri.scheme_str() == Some("http") {
                    80
                } else {
                    443
                });
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            Ok(hyper_util::rt::TokioIo::new(Coalescing::new(tcp)))
        })
    }
}

/// The channel type every service client uses.
pub type Transport = InterceptedService<Channel, TenantHeader>;

/// A connected client.
#[derive(Clone, Debug)]
pub struct Client {
    channel: Channel,
    tenant: TenantHeader,
}

fn read(path: &Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|error| ClientError::Read {
        path: path.to_path_buf(),
        error,
    })
}

impl Client {
    /// Connects with mutual TLS.
    pub async fn connect(config: &ClientConfig) -> Result<Client, ClientError> {
        // Only TLS: with an http:// endpoint the channel would send requests,
        // values included, in plaintext.
        if !config.endpoint.starts_with("https://") {
            return Err(ClientError::Invalid(format!(
                "endpoint {:?}: only https:// endpoints are supported",
                config.endpoint
            )));
        }
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(&config.ca)?))
            .identity(Identity::from_pem(read(&config.cert)?, read(&config.key)?));
        if let Some(domain) = &config.domain {
            tls = tls.domain_name(domain.clone());
        }
        let channel = Endpoint::from_shared(config.endpoint.clone())?
            .connect_timeout(config.connect_timeout)
            .tls_config(tls)?
            .connect_with_connector(Connector)
            .await?;
        let tenant = match &config.tenant {
            None => TenantHeader(None),
            Some(t) => TenantHeader(Some(
                t.parse()
                    .map_err(|_| ClientError::Invalid(format!("tenant name {t:?}")))?,
            )),
        };
        Ok(Client { channel, tenant })
    }

    fn transport(&self) -> Transport {
        InterceptedService::new(self.channel.clone(), self.tenant.clone())
    }

    /// The CredentialService client.
    pub fn credentials(&self) -> pb::credential_service_client::CredentialServiceClient<Transport> {
        pb::credential_service_client::CredentialServiceClient::new(self.transport())
    }

    /// The PolicyService client.
    pub fn policy(&self) -> pb::policy_service_client::PolicyServiceClient<Transport> {
        pb::policy_service_client::PolicyServiceClient::new(self.transport())
    }

    /// The AuditService client.
    pub fn audit(&self) -> pb::audit_service_client::AuditServiceClient<Transport> {
        pb::audit_service_client::AuditServiceClient::new(self.transport())
    }

    /// The AdminService client.
    pub fn admin(&self) -> pb::admin_service_client::AdminServiceClient<Transport> {
        pb::admin_service_client::AdminServiceClient::new(self.transport())
    }

    /// The RelayService client.
    pub fn relay(&self) -> pb::relay_service_client::RelayServiceClient<Transport> {
        pb::relay_service_client::RelayServiceClient::new(self.transport())
    }

    /// Reveals one field of a referenced credential (`sr://env/name#field`;
    /// without a field, the type's main secret) for `purpose`. The text is
    /// zeroized when dropped.
    pub async fn reveal_reference(
        &self,
        reference: &Reference,
        purpose: &str,
    ) -> Result<(zeroize::Zeroizing<String>, pb::Lease), ClientError> {
        self.reveal_reference_for(reference, purpose, "").await
    }

    /// As [`Client::reveal_reference`], acting for the end user
    /// `on_behalf_of` (empty: none).
    pub async fn reveal_reference_for(
        &self,
        reference: &Reference,
        purpose: &str,
        on_behalf_of: &str,
    ) -> Result<(zeroize::Zeroizing<String>, pb::Lease), ClientError> {
        let response = self
            .credentials()
            .reveal_credential(pb::RevealCredentialRequest {
                credential: Some(reference.to_ref()),
                purpose: purpose.to_owned(),
                on_behalf_of: on_behalf_of.to_owned(),
                field: reference.field.clone().unwrap_or_default(),
                ..Default::default()
            })
            .await?
            .into_inner();
        let lease = response.lease.unwrap_or_default();
        let text = match response.revealed {
            Some(pb::reveal_credential_response::Revealed::Field(f)) => f.value,
            Some(pb::reveal_credential_response::Revealed::Value(v)) => {
                main_secret(v).ok_or_else(|| {
                    ClientError::Invalid(
                        "this credential type needs a #field in the reference".into(),
                    )
                })?
            }
            None => return Err(ClientError::Invalid("the server returned no value".into())),
        };
        Ok((zeroize::Zeroizing::new(text), lease))
    }

    /// Stores an API key.
    pub async fn create_api_key(
        &self,
        environment: &str,
        name: &str,
        service: &str,
        api_key: SecretString,
    ) -> Result<pb::Credential, ClientError> {
        let value = pb::CredentialValue {
            value: Some(pb::credential_value::Value::ApiKey(pb::ApiKey {
                api_key: secrecy::ExposeSecret::expose_secret(&api_key).to_owned(),
            })),
        };
        let response = self
            .credentials()
            .create_credential(pb::CreateCredentialRequest {
                environment: environment.to_owned(),
                name: name.to_owned(),
                service: service.to_owned(),
                value: Some(value),
                ..Default::default()
            })
            .await?
            .into_inner();
        response
            .credential
            .ok_or_else(|| ClientError::Invalid("the server returned no credential".into()))
    }
}

/// The main secret of a value: the one field a reference without `#field`
/// means.
fn main_secret(v: pb::CredentialValue) -> Option<String> {
    use pb::credential_value::Value;
    match v.value? {
        Value::ApiKey(k) => Some(k.api_key),
        Value::OauthToken(t) => Some(t.access_token),
        Value::BasicAuth(b) => Some(b.password),
        Value::DbConnection(d) => Some(d.password),
        Value::SshKey(k) => Some(k.private_key),
        Value::Certificate(c) => Some(c.private_key_pem),
        Value::Custom(c) if c.fields.len() == 1 => c.fields.into_values().next(),
        Value::Custom(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refuses_a_plaintext_endpoint() {
        let config =
            ClientConfig::from_dir("http://127.0.0.1:7443", Path::new("/nonexistent"), "agent");
        match Client::connect(&config).await {
            Err(ClientError::Invalid(m)) => assert!(m.contains("https://"), "{m}"),
            Err(e) => panic!("expected Invalid, got {e}"),
            Ok(_) => panic!("connected to a plaintext endpoint"),
        }
    }
}
