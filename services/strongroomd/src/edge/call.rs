//! A call's facts read from its request headers: the request id and the
//! tenant hint, the same for every protocol.

use http::HeaderName;

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

/// The tenant the client named, if any.
pub fn tenant_hint(headers: &http::HeaderMap) -> Option<&str> {
    headers.get(&TENANT).and_then(|v| v.to_str().ok())
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
}
