//! Tenant keys: unwrapping them with the root key, keeping the unwrapped
//! keys in memory, sealing and opening credential values.

use std::sync::Arc;

use strongroom_core::credential::{Credential, StoredVersion};
use strongroom_core::scope::TenantScope;
use strongroom_core::value::CredentialValue;
use strongroom_core::{Error, Result};
use strongroom_crypto::{Aad, Envelope, Kek, WrappedKek};

use crate::Engine;

pub(crate) fn crypto_error(e: strongroom_crypto::CryptoError) -> Error {
    // The message names no key or plaintext; it is logged server-side only.
    Error::internal(format!("crypto: {e}"))
}

impl Engine {
    pub(crate) async fn kek(&self, scope: &TenantScope<'_>, version: u32) -> Result<Arc<Kek>> {
        let key = (scope.tenant_id(), version);
        if let Some(k) = self
            .keks
            .read()
            .map_err(|_| Error::internal("kek cache poisoned"))?
            .get(&key)
        {
            return Ok(Arc::clone(k));
        }
        let records = self.store.keks(scope).await?;
        let mut found = None;
        let mut cache = self
            .keks
            .write()
            .map_err(|_| Error::internal("kek cache poisoned"))?;
        for r in records {
            let kek = self
                .root
                .unwrap_kek(
                    r.tenant.as_uuid(),
                    r.version,
                    &WrappedKek::from_bytes(r.wrapped),
                )
                .map_err(crypto_error)?;
            let kek = Arc::new(kek);
            if r.version == version {
                found = Some(Arc::clone(&kek));
            }
            cache.insert((r.tenant, r.version), kek);
        }
        found.ok_or_else(|| Error::internal("tenant key version not found"))
    }

    pub(crate) fn seal(
        kek: &Kek,
        kek_version: u32,
        credential: &Credential,
        version: u32,
        plaintext: &[u8],
    ) -> Result<Vec<u8>> {
        let aad = Aad {
            tenant: credential.tenant.as_uuid(),
            environment: credential.environment.as_str(),
            credential: credential.id.as_uuid(),
            version,
        };
        let envelope = kek
            .seal(kek_version, &aad, plaintext)
            .map_err(crypto_error)?;
        Ok(envelope.to_bytes())
    }

    pub(crate) async fn open(
        &self,
        scope: &TenantScope<'_>,
        credential: &Credential,
        stored: &StoredVersion,
    ) -> Result<CredentialValue> {
        let bytes = stored
            .envelope
            .as_deref()
            .ok_or_else(|| Error::precondition("this version's value was destroyed"))?;
        let envelope = Envelope::from_bytes(bytes).map_err(crypto_error)?;
        let kek = self.kek(scope, envelope.kek_version()).await?;
        let aad = Aad {
            tenant: credential.tenant.as_uuid(),
            environment: credential.environment.as_str(),
            credential: credential.id.as_uuid(),
            version: stored.version,
        };
        let plaintext = kek.open(&aad, &envelope).map_err(crypto_error)?;
        CredentialValue::from_plaintext(&plaintext)
    }
}
