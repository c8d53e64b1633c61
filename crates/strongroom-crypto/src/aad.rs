//! Associated data binding a credential ciphertext to its place.

use uuid::Uuid;

use crate::aead::put_field;

/// Domain-separation tag of the canonical encoding.
const DOMAIN: &[u8] = b"strongroom/credential/v1";

/// Where a credential ciphertext belongs: authenticated, not encrypted.
///
/// An [`Envelope`](crate::Envelope) sealed with one `Aad` opens only with an
/// equal `Aad`, so a ciphertext copied to another tenant, environment,
/// credential or version fails to decrypt. None of these fields is secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Aad<'a> {
    /// The tenant owning the credential.
    pub tenant: Uuid,
    /// The environment name (`dev`, `production`, ...).
    pub environment: &'a str,
    /// The credential's id.
    pub credential: Uuid,
    /// The credential version number.
    pub version: u32,
}

impl Aad<'_> {
    /// The canonical encoding: a domain-separation tag, then every field,
    /// variable-length fields prefixed with their length.
    ///
    /// The encoding is injective: two different `Aad` values never encode to
    /// the same bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.write_to(&mut out);
        out
    }

    /// The length of [`Aad::to_bytes`].
    pub(crate) fn encoded_len(&self) -> usize {
        8 + DOMAIN.len() + 16 + 8 + self.environment.len() + 16 + 4
    }

    /// Appends [`Aad::to_bytes`] to `out` (an envelope's associated data
    /// carries it after its own prefix: one buffer, not two).
    pub(crate) fn write_to(&self, out: &mut Vec<u8>) {
        put_field(out, DOMAIN);
        out.extend_from_slice(self.tenant.as_bytes());
        put_field(out, self.environment.as_bytes());
        out.extend_from_slice(self.credential.as_bytes());
        out.extend_from_slice(&self.version.to_be_bytes());
    }
}
