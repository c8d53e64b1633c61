//! Which requests go through the server's relay: those carrying a
//! placeholder and those to a destination of a credential injected by
//! template. Everything else the forwarder passes on itself, with no
//! credential.
//!
//! A placeholder is found as the server finds it, with the same code
//! ([`strongroom_core::placeholder`]): in the path, query parameter names
//! and values, header names and values, percent-encoded or inside basic
//! credentials. A request carrying one always goes to the relay, which
//! decides whether it may be replaced there (and raises the alert when
//! not): a disguised placeholder is never passed on unseen.

use base64::Engine as _;
use strongroom_proto::v1 as pb;

/// Every placeholder starts with this, so it reads as what it is and never
/// looks like a real key.
const PLACEHOLDER_PREFIX: &str = "strongroom-placeholder-";

/// A fresh placeholder: the prefix and 32 random bytes, base64url (66
/// characters of `[A-Za-z0-9_-]`). Worthless outside this run's forwarder.
pub(crate) fn new_placeholder() -> Result<String, ring::error::Unspecified> {
    let mut random = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random)?;
    Ok(format!(
        "{PLACEHOLDER_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random)
    ))
}

/// One `--inject` credential as the forwarder routes it.
#[derive(Debug, Clone)]
pub(crate) struct Injection {
    /// The credential.
    pub credential: pb::InjectionRef,
    /// The placeholder the child holds for it.
    pub placeholder: String,
    /// Destinations it is injected into by template without a placeholder
    /// (empty when it has no template or the caller may not inject it).
    pub template_destinations: Vec<pb::Destination>,
}

/// The run's routing table.
#[derive(Debug, Default)]
pub(crate) struct Routes {
    injections: Vec<Injection>,
}

/// What the relay needs to know of one request.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct RelayRoute {
    pub placeholders: Vec<pb::Placeholder>,
    pub inject: Vec<pb::InjectionRef>,
}

impl RelayRoute {
    /// True if the request needs no credential.
    pub(crate) fn is_empty(&self) -> bool {
        self.placeholders.is_empty() && self.inject.is_empty()
    }
}

impl Routes {
    pub(crate) fn new(injections: Vec<Injection>) -> Self {
        Self { injections }
    }

    /// True if any placeholder occurs in the request's headers or query.
    pub(crate) fn carries_placeholder(&self, parts: &http::request::Parts) -> bool {
        self.injections
            .iter()
            .any(|i| carries(parts, i.placeholder.as_bytes()))
    }

    /// The relay route of a request to `host:port` (an https destination).
    pub(crate) fn route(&self, host: &str, port: u16, parts: &http::request::Parts) -> RelayRoute {
        let mut route = RelayRoute::default();
        for injection in &self.injections {
            // Where the command put the placeholder, the value goes there
            // (e.g. inside basic credentials), not also by template.
            if carries(parts, injection.placeholder.as_bytes()) {
                route.placeholders.push(pb::Placeholder {
                    placeholder: injection.placeholder.clone(),
                    credential: Some(injection.credential.clone()),
                });
            } else if injection.template_destinations.iter().any(|d| {
                destination_matches(d, host, port, parts.method.as_str(), parts.uri.path())
            }) {
                route.inject.push(injection.credential.clone());
            }
        }
        route
    }
}

fn carries(parts: &http::request::Parts, placeholder: &[u8]) -> bool {
    let placeholder = String::from_utf8_lossy(placeholder);
    strongroom_core::placeholder::carried(
        &placeholder,
        parts.uri.path(),
        parts.uri.query(),
        parts
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_bytes())),
    )
}

/// Whether a grant destination covers the request: host exact or `*.`
/// subdomains (case-insensitive), port (443 when the destination names
/// none), method, path prefix. The server checks again (with its own path
/// normalisation); this only decides where a request goes.
fn destination_matches(
    d: &pb::Destination,
    host: &str,
    port: u16,
    method: &str,
    path: &str,
) -> bool {
    let (pattern, want_port) = match d.host.rsplit_once(':') {
        Some((h, p)) => match p.parse::<u16>() {
            Ok(p) => (h, p),
            Err(_) => return false,
        },
        None => (d.host.as_str(), 443),
    };
    let host = host.to_ascii_lowercase();
    let pattern = pattern.to_ascii_lowercase();
    let host_ok = match pattern.strip_prefix("*.") {
        Some(domain) => host
            .strip_suffix(domain)
            .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
        None => host == pattern,
    };
    host_ok
        && port == want_port
        && (d.methods.is_empty() || d.methods.iter().any(|m| m.eq_ignore_ascii_case(method)))
        && (d.path_prefixes.is_empty() || d.path_prefixes.iter().any(|p| covers(p, path)))
}

/// Whether a path prefix covers `path` on segment boundaries, as the
/// server matches: `/v1` covers `/v1` and `/v1/...`, never `/v10`.
fn covers(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(host: &str, methods: &[&str], prefixes: &[&str]) -> pb::Destination {
        pb::Destination {
            host: host.into(),
            methods: methods.iter().map(|m| (*m).to_owned()).collect(),
            path_prefixes: prefixes.iter().map(|p| (*p).to_owned()).collect(),
            ..Default::default()
        }
    }

    fn parts(method: &str, uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut b = http::Request::builder().method(method).uri(uri);
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(()).unwrap_or_else(|e| panic!("{e}")).into_parts().0
    }

    #[test]
    fn placeholders_are_unique_and_well_formed() {
        let a = new_placeholder().unwrap_or_else(|e| panic!("{e}"));
        let b = new_placeholder().unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(a, b);
        assert!((16..=128).contains(&a.len()), "{}", a.len());
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
        );
    }

    #[test]
    fn destinations_match_host_port_method_and_path() {
        let d = dest("api.example.test", &[], &[]);
        assert!(destination_matches(&d, "api.example.test", 443, "GET", "/"));
        assert!(destination_matches(&d, "API.example.test", 443, "GET", "/"));
        assert!(!destination_matches(
            &d,
            "api.example.test",
            8443,
            "GET",
            "/"
        ));
        assert!(!destination_matches(&d, "evil.test", 443, "GET", "/"));
        let d = dest("*.example.test:8443", &["POST"], &["/v1/"]);
        assert!(destination_matches(
            &d,
            "a.b.example.test",
            8443,
            "post",
            "/v1/chat"
        ));
        assert!(!destination_matches(
            &d,
            "example.test",
            8443,
            "POST",
            "/v1/chat"
        ));
        assert!(!destination_matches(
            &d,
            "badexample.test",
            8443,
            "POST",
            "/v1/chat"
        ));
        assert!(!destination_matches(
            &d,
            "a.example.test",
            8443,
            "GET",
            "/v1/chat"
        ));
        assert!(!destination_matches(
            &d,
            "a.example.test",
            8443,
            "POST",
            "/v2/chat"
        ));
    }

    #[test]
    fn routes_by_placeholder_and_template() {
        let credential = pb::InjectionRef {
            environment: "dev".into(),
            name: "llm/openai".into(),
            field: String::new(),
        };
        let routes = Routes::new(vec![Injection {
            credential: credential.clone(),
            placeholder: "strongroom-placeholder-abcdefghijklmnop".into(),
            template_destinations: vec![dest("api.example.test", &[], &[])],
        }]);
        let header = parts(
            "GET",
            "/x",
            &[(
                "authorization",
                "Bearer strongroom-placeholder-abcdefghijklmnop",
            )],
        );
        let r = routes.route("other.test", 443, &header);
        assert_eq!(r.placeholders.len(), 1);
        assert!(r.inject.is_empty());
        assert!(routes.carries_placeholder(&header));
        let query = parts("GET", "/x?key=strongroom-placeholder-abcdefghijklmnop", &[]);
        assert_eq!(
            routes.route("other.test", 443, &query).placeholders.len(),
            1
        );
        let template = parts("GET", "/x", &[]);
        let r = routes.route("api.example.test", 443, &template);
        assert!(r.placeholders.is_empty());
        assert_eq!(r.inject, vec![credential]);
        assert!(routes.route("other.test", 443, &template).is_empty());
        assert!(!routes.carries_placeholder(&template));
    }

    #[test]
    fn disguised_placeholders_are_routed_to_the_relay() {
        use base64::Engine as _;
        let p = "strongroom-placeholder-abcdefghijklmnop";
        let routes = Routes::new(vec![Injection {
            credential: pb::InjectionRef {
                environment: "dev".into(),
                name: "llm/openai".into(),
                field: String::new(),
            },
            placeholder: p.into(),
            template_destinations: vec![],
        }]);
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("user:{p}"));
        for request in [
            parts("GET", &format!("/v1/{p}"), &[]),
            parts(
                "GET",
                "/x?text=%73trongroom-placeholder-abcdefghijklmnop",
                &[],
            ),
            parts(
                "GET",
                "/x?t=strongroom%2Dplaceholder%2Dabcdefghijklmnop",
                &[],
            ),
            parts("GET", "/x", &[("authorization", &format!("Basic {basic}"))]),
            parts("GET", "/x", &[(&format!("x-{p}"), "1")]),
        ] {
            assert!(routes.carries_placeholder(&request), "{request:?}");
            assert_eq!(
                routes.route("other.test", 443, &request).placeholders.len(),
                1,
                "{request:?}"
            );
        }
    }
}
