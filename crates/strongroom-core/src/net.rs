//! Outbound network policy: which addresses the server may connect to on a
//! caller's behalf, and what a request target is once parsed and
//! normalised. Used by the relay (and by anything else that sends requests
//! to addresses a tenant chooses, such as webhooks).
//!
//! - [`classify`] names why an address is internal (loopback, private,
//!   link-local, cloud metadata, ...); an internal address is refused unless
//!   the exact `host:port` is on the server's [`AllowList`].
//! - [`RequestTarget::parse`] reads an absolute `https://host[:port]/path?q`
//!   URL: the host lower-cased without a trailing dot, the port explicit,
//!   the path normalised by [`normalize_path`] (a path that tries to leave
//!   the root or cannot be normalised is refused). What is checked is what
//!   is sent: the relay forwards the normalised path, so the destination
//!   never sees a path other than the one a grant was matched against.
//! - [`path_has_prefix`] matches on segment boundaries: `/v1` covers `/v1`
//!   and `/v1/...` but not `/v10`; a prefix ending in `/` (`/v1/`) covers
//!   only what is below it.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address is internal (not on the public internet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Internal {
    /// `0.0.0.0`, `::`.
    Unspecified,
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// RFC 1918 (`10/8`, `172.16/12`, `192.168/16`) and unique local IPv6
    /// (`fc00::/7`).
    Private,
    /// `169.254/16`, `fe80::/10`.
    LinkLocal,
    /// `224/4`, `ff00::/8`.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// Carrier-grade NAT, `100.64/10`.
    SharedAddressSpace,
    /// `0/8`, `240/4`, documentation, benchmarking and protocol-assignment
    /// ranges, deprecated site-local IPv6, Teredo, local-use NAT64, the
    /// discard prefix: nothing a public service lives at.
    Reserved,
    /// A cloud provider's instance metadata or host service address
    /// (`169.254.169.254`, `169.254.170.2`, `fd00:ec2::254`,
    /// `100.100.100.200`, `168.63.129.16`).
    CloudMetadata,
}

impl Internal {
    /// Stable text form.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::Loopback => "loopback",
            Self::Private => "private",
            Self::LinkLocal => "link_local",
            Self::Multicast => "multicast",
            Self::Broadcast => "broadcast",
            Self::SharedAddressSpace => "shared_address_space",
            Self::Reserved => "reserved",
            Self::CloudMetadata => "cloud_metadata",
        }
    }
}

impl fmt::Display for Internal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why `ip` is internal, or `None` for a public address. IPv6 addresses
/// that embed an IPv4 address (IPv4-mapped, IPv4-compatible, the NAT64
/// well-known prefix `64:ff9b::/96`, 6to4 `2002::/16`) are judged by the
/// IPv4 address they reach.
pub fn classify(ip: IpAddr) -> Option<Internal> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<Internal> {
    let [a, b, c, d] = ip.octets();
    let metadata = [
        [169, 254, 169, 254],
        [169, 254, 170, 2],
        [100, 100, 100, 200],
        [168, 63, 129, 16],
    ];
    Some(match () {
        _ if metadata.contains(&[a, b, c, d]) => Internal::CloudMetadata,
        _ if ip.is_unspecified() => Internal::Unspecified,
        _ if ip.is_broadcast() => Internal::Broadcast,
        _ if a == 127 => Internal::Loopback,
        _ if a == 10 || (a == 172 && (16..32).contains(&b)) || (a == 192 && b == 168) => {
            Internal::Private
        }
        _ if a == 169 && b == 254 => Internal::LinkLocal,
        _ if a == 100 && (64..128).contains(&b) => Internal::SharedAddressSpace,
        _ if (224..240).contains(&a) => Internal::Multicast,
        _ if a == 0
            || a >= 240
            || (a == 192 && b == 0 && c == 0)
            || (a == 192 && b == 0 && c == 2)
            || (a == 198 && (18..20).contains(&b))
            || (a == 198 && b == 51 && c == 100)
            || (a == 203 && b == 0 && c == 113) =>
        {
            Internal::Reserved
        }
        _ => return None,
    })
}

fn classify_v6(ip: Ipv6Addr) -> Option<Internal> {
    let bits = ip.to_bits();
    let seg = ip.segments();
    let low_v4 = Ipv4Addr::from_bits(bits as u32);
    if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        return Some(Internal::CloudMetadata);
    }
    if ip.is_unspecified() {
        return Some(Internal::Unspecified);
    }
    if ip.is_loopback() {
        return Some(Internal::Loopback);
    }
    // IPv4-mapped (::ffff:a.b.c.d) and IPv4-compatible (::a.b.c.d).
    if bits >> 32 == 0xffff || bits >> 32 == 0 {
        return classify_v4(low_v4);
    }
    // NAT64 well-known prefix: reaches the embedded IPv4 address.
    if bits >> 32 == 0x0064_ff9b_0000_0000_0000_0000 {
        return classify_v4(low_v4);
    }
    // 6to4: 2002:AABB:CCDD::/48 reaches AA.BB.CC.DD.
    if seg[0] == 0x2002 {
        let v4 = Ipv4Addr::from_bits((u32::from(seg[1]) << 16) | u32::from(seg[2]));
        return classify_v4(v4);
    }
    Some(match seg[0] {
        s if s & 0xfe00 == 0xfc00 => Internal::Private,
        s if s & 0xffc0 == 0xfe80 => Internal::LinkLocal,
        s if s & 0xff00 == 0xff00 => Internal::Multicast,
        // Deprecated site-local.
        s if s & 0xffc0 == 0xfec0 => Internal::Reserved,
        // Teredo (embeds an obfuscated IPv4 address) and documentation.
        0x2001 if seg[1] == 0 || seg[1] == 0x0db8 => Internal::Reserved,
        // Local-use NAT64 (64:ff9b:1::/48).
        0x0064 if seg[1] == 0xff9b && seg[2] == 1 => Internal::Reserved,
        // Discard-only (100::/64).
        0x0100 if seg[1] == 0 && seg[2] == 0 && seg[3] == 0 => Internal::Reserved,
        _ => return None,
    })
}

/// Exact `host:port` pairs the server may connect to although they
/// resolve to internal addresses (the server's `relay.allow_internal`),
/// each for every tenant (`host:port`) or for one tenant, by name
/// (`tenant/host:port`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    /// (tenant name or `None` for every tenant, host, port).
    entries: HashSet<(Option<String>, String, u16)>,
}

/// A configuration entry that is not what it must be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigEntryError(pub String);

impl AllowList {
    /// Parses `host:port` entries (every tenant) and `tenant/host:port`
    /// entries (that tenant only, by name); no wildcards, IPv6 literals in
    /// brackets.
    pub fn parse<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<Self, ConfigEntryError> {
        let mut list = Self::default();
        for entry in entries {
            let (tenant, target) = match entry.trim().split_once('/') {
                Some((t, rest)) => {
                    crate::names::TenantName::parse(t, "relay.allow_internal").map_err(|_| {
                        ConfigEntryError(format!("`{entry}`: `{t}` is not a tenant name"))
                    })?;
                    (Some(t.to_owned()), rest)
                }
                None => (None, entry.trim()),
            };
            let (host, port) = split_host_port(target).ok_or_else(|| {
                ConfigEntryError(format!(
                    "`{entry}` is not host:port (with an explicit port)"
                ))
            })?;
            let host = normalize_host(host)
                .ok_or_else(|| ConfigEntryError(format!("`{entry}`: not a host name")))?;
            list.entries.insert((tenant, host, port));
        }
        Ok(list)
    }

    /// Whether `host` (normalised) and `port` are listed exactly, for
    /// every tenant or for the tenant named `tenant`.
    pub fn allows(&self, tenant: &str, host: &str, port: u16) -> bool {
        self.entries.contains(&(None, host.to_owned(), port))
            || self
                .entries
                .contains(&(Some(tenant.to_owned()), host.to_owned(), port))
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Splits `host:port` (or `[v6]:port`) with a required port.
fn split_host_port(text: &str) -> Option<(&str, u16)> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (h, p) = rest.split_once(']')?;
        (h, p.strip_prefix(':')?)
    } else {
        text.rsplit_once(':')?
    };
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let port: u16 = port.parse().ok()?;
    (port != 0).then_some((host, port))
}

/// A host name lower-cased without its trailing dot, if it is one: DNS
/// labels of letters, digits and hyphens (not at a label's ends), at most 63
/// bytes each and 253 in all; or an IP address literal (IPv6 without
/// brackets).
pub fn normalize_host(host: &str) -> Option<String> {
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() || host.len() > 253 {
        return None;
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(ip.to_string());
    }
    let ok = host.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    });
    // A name of digits and dots only is an IPv4 address in some other
    // notation (`0177.1`, `2130706433`): refused rather than guessed.
    let numeric = host.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        || host
            .rsplit('.')
            .next()
            .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()));
    (ok && !numeric).then(|| host.to_ascii_lowercase())
}

/// Why a request target is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Not an absolute `https://` or `http://` URL with a host.
    #[error("must be an absolute https:// URL with a host")]
    NotAbsolute,
    /// User information (`user@`) or a fragment in the URL.
    #[error("must not carry user information or a fragment")]
    UserInfo,
    /// The host is not a host name or an IP address.
    #[error("the host is not a valid host name")]
    Host,
    /// The port is not a number from 1 to 65535.
    #[error("the port is not valid")]
    Port,
    /// The path tries to leave the root, holds an encoded separator or a
    /// control character, or is not valid percent-encoding.
    #[error("the path cannot be normalised or tries to leave the root")]
    Path,
}

/// The scheme of a request target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// HTTPS: credentials may be sent.
    Https,
    /// Plain HTTP: never with a credential.
    Http,
}

impl Scheme {
    /// The port used when none is given.
    pub const fn default_port(&self) -> u16 {
        match self {
            Self::Https => 443,
            Self::Http => 80,
        }
    }

    /// `https` or `http`.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Https => "https",
            Self::Http => "http",
        }
    }
}

/// A parsed, normalised request target.
#[derive(Clone, PartialEq, Eq)]
pub struct RequestTarget {
    /// Scheme.
    pub scheme: Scheme,
    /// Host, lower-case, without a trailing dot (IPv6 without brackets).
    pub host: String,
    /// Port (the scheme's default if none was given).
    pub port: u16,
    /// The normalised path (see [`normalize_path`]).
    pub path: String,
    /// The query string as given (without `?`), if any. May hold values:
    /// never logged or audited.
    pub query: Option<String>,
}

impl fmt::Debug for RequestTarget {
    /// Without the query, which may hold values.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestTarget")
            .field("scheme", &self.scheme)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl RequestTarget {
    /// Parses an absolute URL: `https://host[:port]/path[?query]`.
    pub fn parse(url: &str) -> Result<Self, TargetError> {
        if url.bytes().any(|b| b <= b' ' || b >= 0x7f) {
            return Err(TargetError::NotAbsolute);
        }
        let (scheme, rest) = if let Some(rest) = strip_prefix_ignore_case(url, "https://") {
            (Scheme::Https, rest)
        } else if let Some(rest) = strip_prefix_ignore_case(url, "http://") {
            (Scheme::Http, rest)
        } else {
            return Err(TargetError::NotAbsolute);
        };
        if rest.contains('#') {
            return Err(TargetError::UserInfo);
        }
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, rest) = rest.split_at(end);
        if authority.contains('@') {
            return Err(TargetError::UserInfo);
        }
        if authority.contains('\\') || authority.contains('%') {
            return Err(TargetError::Host);
        }
        let (host, port) = split_authority(authority, scheme)?;
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q.to_owned())),
            None => (rest, None),
        };
        let path = if path.is_empty() { "/" } else { path };
        let path = normalize_path(path).ok_or(TargetError::Path)?;
        Ok(Self {
            scheme,
            host,
            port,
            path,
            query,
        })
    }

    /// `host` or `host:port` when the port is not the scheme's default (IPv6
    /// in brackets): what the Host header and `:authority` carry.
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == self.scheme.default_port() {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// The path and query sent upstream.
    pub fn path_and_query(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.clone(),
        }
    }
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

fn split_authority(authority: &str, scheme: Scheme) -> Result<(String, u16), TargetError> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (h, p) = rest.split_once(']').ok_or(TargetError::Host)?;
        h.parse::<Ipv6Addr>().map_err(|_| TargetError::Host)?;
        (h, p)
    } else {
        match authority.split_once(':') {
            Some((h, _)) => (h, &authority[h.len()..]),
            None => (authority, ""),
        }
    };
    let port = match port {
        "" => scheme.default_port(),
        p => {
            let digits = p.strip_prefix(':').ok_or(TargetError::Port)?;
            if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(TargetError::Port);
            }
            match digits.parse::<u16>() {
                Ok(0) | Err(_) => return Err(TargetError::Port),
                Ok(n) => n,
            }
        }
    };
    let host = normalize_host(host).ok_or(TargetError::Host)?;
    Ok((host, port))
}

/// Normalises an absolute path, or refuses it (`None`):
///
/// - percent-encoded unreserved characters (letters, digits, `-._~`) are
///   decoded (so `%2e` is `.`), other escapes kept with upper-case hex;
///   encoded `/`, `\`, `%` (a second round of decoding), `;` (a path
///   parameter some servers strip: `..%3B` would be `..`), NUL and control
///   characters are refused, as are escapes of bytes outside ASCII (UTF-8
///   and overlong forms such as `%C0%AE`, which some decoders read as `.`),
///   invalid escapes, a literal `\`, and anything outside printable ASCII;
/// - empty segments (`//`) are collapsed, `.` segments dropped, `..`
///   segments remove the one before; a `..` at the root (an attempt to
///   escape) is refused, as is a segment that is `.` or `..` before a `;`
///   (`..;`, which some servers treat as `..`);
/// - a trailing `/` is kept.
pub fn normalize_path(path: &str) -> Option<String> {
    let rest = path.strip_prefix('/')?;
    let mut out: Vec<String> = Vec::new();
    let segments: Vec<&str> = rest.split('/').collect();
    let last = segments.len() - 1;
    let mut trailing_slash = false;
    for (i, raw) in segments.into_iter().enumerate() {
        let segment = decode_segment(raw)?;
        let bare = segment.split(';').next().unwrap_or_default();
        match segment.as_str() {
            "" => {
                if i == last {
                    trailing_slash = true;
                }
            }
            "." => trailing_slash = i == last,
            ".." => {
                out.pop()?;
                trailing_slash = i == last;
            }
            _ if bare == "." || bare == ".." => return None,
            _ => {
                out.push(segment);
                trailing_slash = false;
            }
        }
    }
    let mut normalized = String::with_capacity(path.len());
    for segment in &out {
        normalized.push('/');
        normalized.push_str(segment);
    }
    if trailing_slash || out.is_empty() {
        normalized.push('/');
    }
    Some(normalized)
}

/// One segment with unreserved escapes decoded and others kept upper-case.
fn decode_segment(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = raw.get(i + 1..i + 3)?;
            if !hex.bytes().all(|h| h.is_ascii_hexdigit()) {
                return None;
            }
            let v = u8::from_str_radix(hex, 16).ok()?;
            if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~') {
                out.push(char::from(v));
            } else if v == b'/'
                || v == b'\\'
                || !(0x20..0x7f).contains(&v)
                || v == b'%'
                || v == b';'
            {
                return None;
            } else {
                out.push('%');
                out.push_str(&hex.to_ascii_uppercase());
            }
            i += 3;
        } else if b <= b' ' || b >= 0x7f || b == b'\\' {
            return None;
        } else {
            out.push(char::from(b));
            i += 1;
        }
    }
    Some(out)
}

/// Whether `path` (normalised) is covered by `prefix` on segment
/// boundaries: `/v1` covers `/v1`, `/v1/` and `/v1/x`, never `/v10`; `/v1/`
/// covers `/v1/` and `/v1/x`; `/` covers everything. The prefix is
/// normalised the same way first (a prefix that cannot be is never
/// matched).
pub fn path_has_prefix(path: &str, prefix: &str) -> bool {
    let Some(prefix) = normalize_path(prefix) else {
        return false;
    };
    if prefix.ends_with('/') {
        return path.starts_with(prefix.as_str());
    }
    path == prefix
        || path
            .strip_prefix(prefix.as_str())
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Whether a host pattern (`api.example.com` or `*.example.com`, already
/// normalised) covers `host`. A wildcard covers any depth of subdomain but
/// never the bare domain.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(domain) => host
            .strip_suffix(domain)
            .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
        None => host == pattern,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn class(text: &str) -> Option<Internal> {
        classify(text.parse().unwrap())
    }

    #[test]
    fn internal_addresses_are_classified() {
        for (ip, expected) in [
            ("127.0.0.1", Internal::Loopback),
            ("127.255.0.9", Internal::Loopback),
            ("::1", Internal::Loopback),
            ("0.0.0.0", Internal::Unspecified),
            ("::", Internal::Unspecified),
            ("10.1.2.3", Internal::Private),
            ("172.16.0.1", Internal::Private),
            ("172.31.255.255", Internal::Private),
            ("192.168.1.1", Internal::Private),
            ("fc00::1", Internal::Private),
            ("fd12:3456::1", Internal::Private),
            ("169.254.1.1", Internal::LinkLocal),
            ("fe80::1", Internal::LinkLocal),
            ("224.0.0.1", Internal::Multicast),
            ("239.255.255.250", Internal::Multicast),
            ("ff02::1", Internal::Multicast),
            ("255.255.255.255", Internal::Broadcast),
            ("100.64.0.1", Internal::SharedAddressSpace),
            ("100.127.255.254", Internal::SharedAddressSpace),
            ("0.1.2.3", Internal::Reserved),
            ("240.0.0.1", Internal::Reserved),
            ("192.0.2.1", Internal::Reserved),
            ("198.18.0.1", Internal::Reserved),
            ("2001:db8::1", Internal::Reserved),
            ("2001:0:1:2::3", Internal::Reserved),
            ("64:ff9b:1::a00:1", Internal::Reserved),
            ("fec0::1", Internal::Reserved),
            ("169.254.169.254", Internal::CloudMetadata),
            ("169.254.170.2", Internal::CloudMetadata),
            ("fd00:ec2::254", Internal::CloudMetadata),
            ("100.100.100.200", Internal::CloudMetadata),
            ("168.63.129.16", Internal::CloudMetadata),
            // IPv4 inside IPv6 is judged by the IPv4 address.
            ("::ffff:127.0.0.1", Internal::Loopback),
            ("::ffff:169.254.169.254", Internal::CloudMetadata),
            ("::10.0.0.1", Internal::Private),
            ("64:ff9b::a9fe:a9fe", Internal::CloudMetadata),
            ("64:ff9b::7f00:1", Internal::Loopback),
            ("2002:c0a8:0101::1", Internal::Private),
            ("2002:7f00:0001::1", Internal::Loopback),
        ] {
            assert_eq!(class(ip), Some(expected), "{ip}");
        }
    }

    #[test]
    fn public_addresses_are_not_internal() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "172.15.255.255",
            "100.63.255.255",
            "100.128.0.1",
            "169.253.1.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:0808:0808::1",
        ] {
            assert_eq!(class(ip), None, "{ip}");
        }
    }

    #[test]
    fn allow_list_is_exact() {
        let list = AllowList::parse(["API.internal.test.:8443", "[::1]:443"]).unwrap();
        assert!(list.allows("acme", "api.internal.test", 8443));
        assert!(list.allows("globex", "api.internal.test", 8443));
        assert!(!list.allows("acme", "api.internal.test", 443));
        assert!(!list.allows("acme", "x.api.internal.test", 8443));
        assert!(list.allows("acme", "::1", 443));
        for bad in [
            "api.test",
            "api.test:",
            "api.test:0",
            "*.test:443",
            "a b:1",
            "/api.test:443",
            "Not A Tenant/api.test:443",
            "acme/api.test",
        ] {
            assert!(AllowList::parse([bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn allow_list_entries_can_be_scoped_to_a_tenant() {
        let list = AllowList::parse(["acme/vault.internal.test:8443", "shared.test:443"]).unwrap();
        assert!(list.allows("acme", "vault.internal.test", 8443));
        assert!(!list.allows("globex", "vault.internal.test", 8443));
        assert!(!list.allows("acme", "vault.internal.test", 443));
        assert!(list.allows("globex", "shared.test", 443));
    }

    #[test]
    fn hosts_are_normalised_and_numeric_forms_refused() {
        assert_eq!(
            normalize_host("API.Example.TEST.").as_deref(),
            Some("api.example.test")
        );
        for bad in [
            "",
            ".",
            "a..b",
            "-a.b",
            "a_b.c",
            "2130706433",
            "0177.0.0.1",
            "0x7f.1",
            "1.2.3",
            "a.123",
        ] {
            assert_eq!(normalize_host(bad), None, "{bad}");
        }
        assert_eq!(normalize_host("127.0.0.1").as_deref(), Some("127.0.0.1"));
    }

    #[test]
    fn targets_parse() {
        let t = RequestTarget::parse("HTTPS://Api.Example.Test./v1/x?key=abc").unwrap();
        assert_eq!(t.scheme, Scheme::Https);
        assert_eq!((t.host.as_str(), t.port), ("api.example.test", 443));
        assert_eq!(t.path, "/v1/x");
        assert_eq!(t.query.as_deref(), Some("key=abc"));
        assert_eq!(t.authority(), "api.example.test");
        assert!(!format!("{t:?}").contains("abc"));
        let t = RequestTarget::parse("https://api.example.test:8443").unwrap();
        assert_eq!((t.port, t.path.as_str()), (8443, "/"));
        assert_eq!(t.authority(), "api.example.test:8443");
        let t = RequestTarget::parse("http://[::1]:8080/a").unwrap();
        assert_eq!(
            (t.host.as_str(), t.authority()),
            ("::1", "[::1]:8080".into())
        );
        for (bad, why) in [
            ("ftp://a.test/", TargetError::NotAbsolute),
            ("/relative", TargetError::NotAbsolute),
            ("https://user@a.test/", TargetError::UserInfo),
            ("https://a.test@evil.test/", TargetError::UserInfo),
            ("https://a.test/#x", TargetError::UserInfo),
            ("https://a.test:0/", TargetError::Port),
            ("https://a.test:99999/", TargetError::Port),
            ("https://a.test:x/", TargetError::Port),
            ("https://a.test:443:1/", TargetError::Port),
            ("https://a%2etest/", TargetError::Host),
            ("https://a.test\\@b.test/", TargetError::UserInfo),
            ("https:///x", TargetError::Host),
            ("https://a.test/../x", TargetError::Path),
            ("https://a test/", TargetError::NotAbsolute),
        ] {
            assert_eq!(RequestTarget::parse(bad), Err(why), "{bad}");
        }
    }

    #[test]
    fn paths_are_normalised() {
        for (raw, normalized) in [
            ("/", "/"),
            ("/v1/chat", "/v1/chat"),
            ("/v1//chat", "/v1/chat"),
            ("//v1/chat/", "/v1/chat/"),
            ("/v1/./chat", "/v1/chat"),
            ("/v1/x/../chat", "/v1/chat"),
            ("/v1/%2e%2E/v2", "/v2"),
            ("/v1/%2e/chat", "/v1/chat"),
            ("/%76%31/chat", "/v1/chat"),
            ("/v1/a%3fb", "/v1/a%3Fb"),
            ("/v1/..", "/"),
            ("/v1/.", "/v1/"),
            ("/a;b/c", "/a;b/c"),
        ] {
            assert_eq!(normalize_path(raw).as_deref(), Some(normalized), "{raw}");
        }
        for bad in [
            "",
            "v1",
            "/..",
            "/../v1",
            "/v1/../../x",
            "/%2e%2e/x",
            "/v1/%2f../x",
            "/v1%2F..%2Fadmin",
            "/v1/%5c..",
            "/v1\\..\\admin",
            "/v1/..;/admin",
            "/v1/.;/admin",
            "/v1/%00",
            "/v1/%zz",
            "/v1/%2",
            "/v1/%252e%252e",
            "/v1/\u{e9}",
            // A path parameter hidden by encoding: `..%3B` is `..;`.
            "/public/..%3B/admin",
            "/public/..%3b/admin",
            "/public/%2e%2e%3B/admin",
            "/public/.%3B/admin",
            "/public/x%3Bjsessionid=1",
            "/public/%2e%2e;jsessionid=1/admin",
            // Non-ASCII and overlong escapes (`%C0%AE` reads as `.` to a
            // lax UTF-8 decoder).
            "/public/%C0%AE%C0%AE/admin",
            "/public/%c0%ae/admin",
            "/caf%C3%A9",
            "/x%7F",
        ] {
            assert_eq!(normalize_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        assert!(path_has_prefix("/v1", "/v1"));
        assert!(path_has_prefix("/v1/", "/v1"));
        assert!(path_has_prefix("/v1/chat", "/v1"));
        assert!(!path_has_prefix("/v10", "/v1"));
        assert!(!path_has_prefix("/v1chat", "/v1"));
        assert!(path_has_prefix("/v1/chat", "/v1/"));
        assert!(!path_has_prefix("/v1", "/v1/"));
        assert!(path_has_prefix("/anything", "/"));
        assert!(path_has_prefix("/v1/chat", "//v1/./"));
        assert!(!path_has_prefix("/v1", "/../v1"));
    }

    #[test]
    fn wildcards_cover_subdomains_only() {
        assert!(host_matches("*.example.test", "api.example.test"));
        assert!(host_matches("*.example.test", "a.b.example.test"));
        assert!(!host_matches("*.example.test", "example.test"));
        assert!(!host_matches("*.example.test", "evilexample.test"));
        assert!(!host_matches("*.example.test", "example.test.evil"));
        assert!(host_matches("api.example.test", "api.example.test"));
        assert!(!host_matches("api.example.test", "x.api.example.test"));
    }
}
