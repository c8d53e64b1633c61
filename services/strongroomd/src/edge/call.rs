//! A call's facts read from its request headers: the request id and the
//! tenant hint, the same for every protocol.

use http::HeaderName;
use strongroom_core::Error;
use strongroom_core::names::TenantName;

/// Header carrying the client's request id (echoed in the response).
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Header naming the tenant when an identity is bound in several.
pub const TENANT_HEADER: &str = "strongroom-tenant";

/// [`REQUEST_ID_HEADER`], parsed once.
pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static(REQUEST_ID_HEADER);

/// [`TENANT_HEADER`], parsed once.
const TENANT: HeaderName = HeaderName::from_static(TENANT_HEADER);

/// The client's request id when it sent a usable one (1 to 128 visible
/// ASCII characters), else a new one.
pub fn request_id(headers: &http::HeaderMap) -> String {
    headers
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(
            || super::ids::hex32(super::ids::random_u128()),
            str::to_owned,
        )
}

/// The tenant the client named, if any. A header that is not a tenant name
/// is refused here, before anything is looked up: it could match no tenant,
/// and an unbounded value must never reach the caches or the database.
pub fn tenant_hint(headers: &http::HeaderMap) -> Result<Option<&str>, Error> {
    let Some(value) = headers.get(&TENANT) else {
        return Ok(None);
    };
    let refused = || Error::invalid(TENANT_HEADER, "is not a tenant name");
    let name = value.to_str().map_err(|_| refused())?;
    TenantName::parse(name, TENANT_HEADER).map_err(|_| refused())?;
    Ok(Some(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_usable_request_id_is_kept_and_anything_else_replaced() {
        let mut headers = http::HeaderMap::new();
        let fresh = request_id(&headers);
        assert_eq!(fresh.len(), 32);
        headers.insert(REQUEST_ID_HEADER, http::HeaderValue::from_static("req-7"));
        assert_eq!(request_id(&headers), "req-7");
        for bad in ["", "has space", &"x".repeat(129)] {
            headers.insert(REQUEST_ID_HEADER, http::HeaderValue::from_str(bad).unwrap());
            let id = request_id(&headers);
            assert_ne!(id, bad);
            assert_eq!(id.len(), 32, "{bad:?}");
        }
    }

    #[test]
    fn only_a_tenant_name_is_taken_as_the_tenant_hint() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(tenant_hint(&headers).ok(), Some(None));
        headers.insert(TENANT_HEADER, http::HeaderValue::from_static("acme"));
        assert_eq!(tenant_hint(&headers).ok(), Some(Some("acme")));
        for bad in ["", "Has Space", &"a".repeat(16 * 1024)] {
            headers.insert(TENANT_HEADER, http::HeaderValue::from_str(bad).unwrap());
            let error = tenant_hint(&headers).expect_err(bad);
            assert!(error.to_string().contains(TENANT_HEADER), "{error}");
        }
    }
}
