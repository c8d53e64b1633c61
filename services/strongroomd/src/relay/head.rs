//! A forwarded request's head: parsed and checked (every field named when
//! refused), its placeholders found, and the request sent upstream built
//! from it with the credentials added.
//!
//! What the agent cannot choose: the Host header and `:authority` (the
//! checked destination), the path (the normalised one the grant was
//! matched against), hop-by-hop and framing headers (set by the relay),
//! `Accept-Encoding` (always `identity`, so the response can be scrubbed).

use base64::Engine as _;
use strongroom_core::names::{CredentialName, Environment};
use strongroom_core::net::RequestTarget;
use strongroom_core::placeholder::{Slot, basic_decoded};
use strongroom_core::{Error, Result};
use strongroom_engine::{Authorized, InjectionRef, Material};
use strongroom_proto::v1 as pb;
use zeroize::Zeroizing;

use super::upstream::UpstreamBody;

/// Headers the relay sets or drops itself, whatever the agent sent.
const DROPPED: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "accept-encoding",
    "http2-settings",
];

/// Response headers never passed back (hop-by-hop, and the length, which
/// scrubbing may change).
pub const RESPONSE_DROPPED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

/// A parsed request head.
pub struct Head {
    /// Method.
    pub method: http::Method,
    /// The checked, normalised target.
    pub target: RequestTarget,
    /// Headers kept, in order (names lower-case).
    pub headers: Vec<(http::HeaderName, Vec<u8>)>,
    /// The body length the agent declared, if any.
    pub content_length: Option<u64>,
    /// Declared placeholders and their credentials.
    pub placeholders: Vec<(String, InjectionRef)>,
    /// Credentials to add by template.
    pub inject: Vec<InjectionRef>,
    /// Purpose.
    pub purpose: String,
    /// On behalf of.
    pub on_behalf_of: Option<String>,
}

impl std::fmt::Debug for Head {
    /// Never header values or the query.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Head")
            .field("method", &self.method)
            .field("target", &self.target)
            .field("headers", &self.headers.len())
            .finish_non_exhaustive()
    }
}

fn injection_ref(r: Option<pb::InjectionRef>, field: &'static str) -> Result<InjectionRef> {
    let r = r.ok_or_else(|| Error::invalid(field, "is required"))?;
    let name_field = match field {
        "head.inject" => "head.inject.name",
        _ => "head.placeholders.credential.name",
    };
    let env_field = match field {
        "head.inject" => "head.inject.environment",
        _ => "head.placeholders.credential.environment",
    };
    if r.field.len() > 128 {
        return Err(Error::invalid(field, "field: at most 128 characters"));
    }
    Ok(InjectionRef {
        environment: Environment::parse(&r.environment, env_field)?,
        name: CredentialName::parse(&r.name, name_field)?,
        field: (!r.field.is_empty()).then_some(r.field),
    })
}

/// Parses an injection reference of DescribeInjection or ReportLeak.
pub fn parse_ref(r: pb::InjectionRef, field: &'static str) -> Result<InjectionRef> {
    if r.field.len() > 128 {
        return Err(Error::invalid(field, "field: at most 128 characters"));
    }
    Ok(InjectionRef {
        environment: Environment::parse(&r.environment, field)?,
        name: CredentialName::parse(&r.name, field)?,
        field: (!r.field.is_empty()).then_some(r.field),
    })
}

fn valid_placeholder(p: &str) -> bool {
    (16..=128).contains(&p.len())
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Parses and checks a request head.
pub fn parse(head: pb::RelayRequestHead) -> Result<Head> {
    let m = &head.method;
    if m.is_empty() || m.len() > 16 || !m.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(Error::invalid(
            "head.method",
            "must be an upper-case HTTP method",
        ));
    }
    if matches!(m.as_str(), "CONNECT" | "TRACE") {
        return Err(Error::invalid(
            "head.method",
            "CONNECT and TRACE are not relayed",
        ));
    }
    let method = http::Method::from_bytes(m.as_bytes())
        .map_err(|_| Error::invalid("head.method", "must be an HTTP method"))?;
    let target =
        RequestTarget::parse(&head.url).map_err(|e| Error::invalid("head.url", e.to_string()))?;
    let mut headers = Vec::with_capacity(head.headers.len());
    let mut content_length = None;
    let mut connection_named: Vec<String> = Vec::new();
    for h in &head.headers {
        let name = http::HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| Error::invalid("head.headers.name", "is not a valid header name"))?;
        if http::HeaderValue::from_bytes(&h.value).is_err() {
            return Err(Error::invalid(
                "head.headers.value",
                "holds a character not allowed in a header value",
            ));
        }
        if name == http::header::CONTENT_LENGTH {
            let text = std::str::from_utf8(&h.value).unwrap_or_default().trim();
            let n: u64 = text
                .parse()
                .ok()
                .filter(|_| text.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| {
                    Error::invalid("head.headers.value", "Content-Length must be a number")
                })?;
            if content_length.is_some_and(|c| c != n) {
                return Err(Error::invalid(
                    "head.headers",
                    "conflicting Content-Length headers",
                ));
            }
            content_length = Some(n);
            continue;
        }
        if name == http::header::CONNECTION {
            connection_named.extend(
                String::from_utf8_lossy(&h.value)
                    .split(',')
                    .map(|s| s.trim().to_ascii_lowercase()),
            );
        }
        if DROPPED.contains(&name.as_str()) {
            continue;
        }
        headers.push((name, h.value.clone()));
    }
    headers.retain(|(n, _)| !connection_named.iter().any(|c| c == n.as_str()));
    let mut placeholders: Vec<(String, InjectionRef)> = Vec::with_capacity(head.placeholders.len());
    for p in head.placeholders {
        if !valid_placeholder(&p.placeholder) {
            return Err(Error::invalid(
                "head.placeholders.placeholder",
                "must be 16-128 letters, digits, '_' and '-'",
            ));
        }
        if placeholders
            .iter()
            .any(|(q, _)| q.contains(&p.placeholder) || p.placeholder.contains(q.as_str()))
        {
            return Err(Error::invalid(
                "head.placeholders.placeholder",
                "placeholders must be distinct and none may contain another",
            ));
        }
        let r = injection_ref(p.credential, "head.placeholders.credential")?;
        placeholders.push((p.placeholder, r));
    }
    let inject = head
        .inject
        .into_iter()
        .map(|r| injection_ref(Some(r), "head.inject"))
        .collect::<Result<Vec<_>>>()?;
    if head.purpose.len() > 1024 {
        return Err(Error::invalid("head.purpose", "at most 1024 characters"));
    }
    if head.on_behalf_of.len() > 256 {
        return Err(Error::invalid(
            "head.on_behalf_of",
            "at most 256 characters",
        ));
    }
    Ok(Head {
        method,
        target,
        headers,
        content_length,
        placeholders,
        inject,
        purpose: head.purpose,
        on_behalf_of: (!head.on_behalf_of.is_empty()).then_some(head.on_behalf_of),
    })
}

/// Percent-decodes the unreserved characters of `text` (how a placeholder
/// could be disguised in a query).
fn decode_unreserved(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = text.get(i + 1..i + 3)
            && let Ok(v) = u8::from_str_radix(hex, 16)
            && (v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~'))
        {
            out.push(char::from(v));
            i += 3;
            continue;
        }
        out.push(char::from(bytes[i]));
        i += 1;
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

impl Head {
    /// Where `placeholder` appears in the head (empty if nowhere): header
    /// names or values (also percent-encoded or inside basic
    /// authentication), the path, query parameter names or values (also
    /// percent-encoded); see [`strongroom_core::placeholder::find`].
    pub fn slots(&self, placeholder: &str) -> Vec<Slot> {
        strongroom_core::placeholder::find(
            placeholder,
            &self.target.path,
            self.target.query.as_deref(),
            self.headers.iter().map(|(n, v)| (n.as_str(), v.as_slice())),
        )
    }

    /// Whether `placeholder` appears anywhere in the head.
    pub fn carries(&self, placeholder: &str) -> bool {
        !self.slots(placeholder).is_empty()
    }
}

/// The placeholders a head that could not be parsed (or was refused before
/// its uses were decided) carries: each declared placeholder found in its
/// URL or headers, with its credential when that parses. For the alert a
/// placeholder-carrying request raises whatever else refuses it.
pub fn raw_carried(head: &pb::RelayRequestHead) -> Vec<InjectionRef> {
    let rest = head
        .url
        .split_once("://")
        .map_or(head.url.as_str(), |(_, r)| r);
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q.split('#').next().unwrap_or_default())),
        None => (rest.split('#').next().unwrap_or_default(), None),
    };
    let path = before_query
        .find('/')
        .map_or(before_query, |i| &before_query[i..]);
    // The authority too: a placeholder in the host or user information.
    let authority = before_query.split('/').next().unwrap_or_default();
    head.placeholders
        .iter()
        .filter(|p| !p.placeholder.is_empty() && p.placeholder.len() <= 128)
        .filter(|p| {
            authority.contains(p.placeholder.as_str())
                || strongroom_core::placeholder::carried(
                    &p.placeholder,
                    path,
                    query,
                    head.headers
                        .iter()
                        .map(|h| (h.name.as_str(), h.value.as_slice())),
                )
        })
        .filter_map(|p| injection_ref(p.credential.clone(), "head.placeholders.credential").ok())
        .collect()
}

/// Percent-encodes everything but unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn replace_all(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len() + with.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

/// Why the upstream request could not be built.
#[derive(Debug, Clone, Copy)]
pub struct BuildError;

/// The request sent upstream: the head with placeholders replaced and
/// templates applied, for HTTP/2 (`h2`) or HTTP/1.1.
pub fn upstream_request(
    head: &Head,
    authorized: &Authorized,
    h2: bool,
    body: UpstreamBody,
) -> std::result::Result<http::Request<UpstreamBody>, BuildError> {
    let mut replacements: Vec<(&str, &str)> = Vec::new();
    let mut template_headers: Vec<(&str, &str)> = Vec::new();
    let mut template_query: Vec<(&str, &str)> = Vec::new();
    for i in &authorized.injections {
        match &i.material {
            Material::Replace { placeholder, value } => {
                replacements.push((placeholder.as_str(), value.as_str()));
            }
            Material::Template(strongroom_core::credential::Injected::Header { name, value }) => {
                template_headers.push((name.as_str(), value.as_str()));
            }
            Material::Template(strongroom_core::credential::Injected::Query { name, value }) => {
                template_query.push((name.as_str(), value.as_str()));
            }
        }
    }
    let mut builder = http::Request::builder().method(head.method.clone());
    // Query: placeholders replaced by the encoded value, template
    // parameters replacing any of the same name.
    let mut query: Option<Zeroizing<String>> = head.target.query.clone().map(Zeroizing::new);
    if let Some(q) = &mut query {
        for (p, v) in &replacements {
            if q.contains(p) {
                **q = q.replace(p, &percent_encode(v));
            }
        }
    }
    if !template_query.is_empty() {
        let mut pairs: Vec<String> = query
            .as_deref()
            .map(|q| {
                q.split('&')
                    .filter(|pair| {
                        let name = decode_unreserved(pair.split('=').next().unwrap_or_default());
                        !template_query.iter().any(|(n, _)| *n == name)
                    })
                    .filter(|pair| !pair.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        for (n, v) in &template_query {
            pairs.push(format!("{}={}", percent_encode(n), percent_encode(v)));
        }
        query = Some(Zeroizing::new(pairs.join("&")));
    }
    let path_and_query = Zeroizing::new(match &query {
        Some(q) => format!("{}?{}", head.target.path, q.as_str()),
        None => head.target.path.clone(),
    });
    let authority = head.target.authority();
    builder = if h2 {
        builder.uri(format!("https://{authority}{}", path_and_query.as_str()))
    } else {
        builder
            .uri(path_and_query.as_str())
            .header(http::header::HOST, authority.as_str())
    };
    for (name, value) in &head.headers {
        if template_headers.iter().any(|(n, _)| *n == name.as_str()) {
            continue;
        }
        let mut v = value.clone();
        for (p, secret) in &replacements {
            if contains(&v, p.as_bytes()) {
                v = replace_all(&v, p.as_bytes(), secret.as_bytes());
            }
        }
        if name == http::header::AUTHORIZATION
            && let Some(decoded) = basic_decoded(&v)
            && replacements
                .iter()
                .any(|(p, _)| contains(&decoded, p.as_bytes()))
        {
            let mut d = Zeroizing::new(decoded.to_vec());
            for (p, secret) in &replacements {
                *d = replace_all(&d, p.as_bytes(), secret.as_bytes());
            }
            v = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(d.as_slice())
            )
            .into_bytes();
        }
        let value = http::HeaderValue::from_bytes(&v).map_err(|_| BuildError)?;
        v.fill(0);
        builder = builder.header(name, value);
    }
    for (name, value) in &template_headers {
        let name = http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| BuildError)?;
        let value = http::HeaderValue::from_str(value).map_err(|_| BuildError)?;
        builder = builder.header(name, value);
    }
    builder = builder.header(http::header::ACCEPT_ENCODING, "identity");
    if let Some(n) = head.content_length {
        builder = builder.header(http::header::CONTENT_LENGTH, n);
    }
    builder.body(body).map_err(|_| BuildError)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn head(url: &str, headers: &[(&str, &str)]) -> pb::RelayRequestHead {
        pb::RelayRequestHead {
            method: "GET".into(),
            url: url.into(),
            headers: headers
                .iter()
                .map(|(n, v)| pb::HttpHeader {
                    name: (*n).into(),
                    value: v.as_bytes().to_vec(),
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn heads_are_checked() {
        assert!(parse(head("https://a.test/x", &[])).is_ok());
        for (h, field) in [
            (head("https://a.test/../x", &[]), "head.url"),
            (
                head("https://a.test/x", &[("bad name", "v")]),
                "head.headers.name",
            ),
            (
                head("https://a.test/x", &[("x", "a\r\nb: c")]),
                "head.headers.value",
            ),
            (
                head(
                    "https://a.test/x",
                    &[("content-length", "1"), ("content-length", "2")],
                ),
                "head.headers",
            ),
            (
                head("https://a.test/x", &[("content-length", "+1")]),
                "head.headers.value",
            ),
        ] {
            match parse(h) {
                Err(Error::InvalidArgument { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{other:?}"),
            }
        }
        let mut trace = head("https://a.test/x", &[]);
        trace.method = "TRACE".into();
        assert!(parse(trace).is_err());
    }

    #[test]
    fn framing_and_host_headers_are_the_relays() {
        let h = parse(head(
            "https://a.test/x",
            &[
                ("Host", "evil.test"),
                ("Connection", "x-secret-hop"),
                ("x-secret-hop", "1"),
                ("Transfer-Encoding", "chunked"),
                ("Accept-Encoding", "gzip"),
                ("x-kept", "1"),
            ],
        ))
        .unwrap();
        let names: Vec<&str> = h.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["x-kept"]);
    }

    #[test]
    fn placeholders_are_found_in_disguise() {
        let p = "SR_PLACEHOLDER_0123456789";
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("user:{p}"));
        for (url, headers) in [
            (format!("https://a.test/x?k={p}"), vec![]),
            (
                "https://a.test/x?k=%53R_PLACEHOLDER_0123456789".to_owned(),
                vec![],
            ),
            (format!("https://a.test/{p}"), vec![]),
            (
                "https://a.test/x".to_owned(),
                vec![("x-key", format!("Token {p}"))],
            ),
            (
                "https://a.test/x".to_owned(),
                vec![("authorization", format!("Basic {basic}"))],
            ),
        ] {
            let hs: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            let h = parse(head(&url, &hs)).unwrap();
            assert!(h.carries(p), "{url} {headers:?}");
        }
        let h = parse(head("https://a.test/x?k=other", &[("x", "y")])).unwrap();
        assert!(!h.carries(p));
    }
}
