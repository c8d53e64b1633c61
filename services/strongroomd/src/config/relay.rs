//! The relay's settings (`[relay]`, `STRONGROOM_RELAY_*`): static name
//! resolution, the internal allow-list, the upstream CA bundle and the
//! relay's limits, parsed and bounded.

use std::path::PathBuf;
use std::time::Duration;

use super::{ConfigError, bad, source};

/// The relay's settings (`[relay]`).
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Static name resolution (`relay.resolve`, like curl's `--resolve`):
    /// `host:port` to the addresses to connect to, instead of DNS.
    pub resolve: std::collections::HashMap<(String, u16), Vec<std::net::IpAddr>>,
    /// Exact `host:port` destinations allowed although they resolve to
    /// internal addresses (`relay.allow_internal`): a plain `host:port`
    /// for every tenant, `tenant/host:port` for that tenant only.
    pub allow_internal: strongroom_core::net::AllowList,
    /// A PEM bundle of further CAs upstream certificates may chain to
    /// (`relay.upstream_ca`), besides the system roots.
    pub upstream_ca: Option<PathBuf>,
    /// Largest request body forwarded (`relay.max_request_body`, bytes).
    pub max_request_body: u64,
    /// Largest response body passed back (`relay.max_response_body`).
    pub max_response_body: u64,
    /// How long the destination has to send its response head
    /// (`relay.timeout_ms`), and between body chunks after it.
    pub timeout: Duration,
    /// Requests one principal may have in flight through the relay
    /// (`relay.max_in_flight_per_principal`).
    pub max_in_flight_per_principal: usize,
    /// The longest one relayed request may last, response body included
    /// (`relay.max_duration_ms`): a destination that drips its response
    /// cannot keep a use open for ever, e.g. after the grant is revoked.
    pub max_duration: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            resolve: std::collections::HashMap::new(),
            allow_internal: strongroom_core::net::AllowList::default(),
            upstream_ca: None,
            max_request_body: 10 * 1024 * 1024,
            max_response_body: 100 * 1024 * 1024,
            timeout: Duration::from_secs(30),
            max_in_flight_per_principal: 32,
            max_duration: Duration::from_secs(600),
        }
    }
}

/// Parses one `relay.resolve` entry: `host:port:address` (an IPv6 address
/// in brackets).
fn resolve_entry(entry: &str) -> Option<((String, u16), std::net::IpAddr)> {
    let (host, rest) = entry.trim().split_once(':')?;
    let (port, address) = rest.split_once(':')?;
    let host = strongroom_core::net::normalize_host(host)?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    let address = address
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(address);
    Some(((host, port), address.parse().ok()?))
}

impl RelayConfig {
    pub(super) fn from_raw(raw: source::RawRelay) -> Result<Self, ConfigError> {
        let d = Self::default();
        let mut resolve: std::collections::HashMap<(String, u16), Vec<std::net::IpAddr>> =
            std::collections::HashMap::new();
        for entry in raw.resolve.unwrap_or_default() {
            let (key, ip) = resolve_entry(&entry).ok_or_else(|| {
                bad(
                    "relay.resolve",
                    format!("`{entry}` is not host:port:address"),
                )
            })?;
            resolve.entry(key).or_default().push(ip);
        }
        let allow_internal = strongroom_core::net::AllowList::parse(
            raw.allow_internal.iter().flatten().map(String::as_str),
        )
        .map_err(|e| bad("relay.allow_internal", e.0))?;
        let relay = Self {
            resolve,
            allow_internal,
            upstream_ca: raw.upstream_ca,
            max_request_body: raw.max_request_body.unwrap_or(d.max_request_body),
            max_response_body: raw.max_response_body.unwrap_or(d.max_response_body),
            timeout: raw.timeout_ms.map_or(d.timeout, Duration::from_millis),
            max_in_flight_per_principal: raw
                .max_in_flight_per_principal
                .unwrap_or(d.max_in_flight_per_principal),
            max_duration: raw
                .max_duration_ms
                .map_or(d.max_duration, Duration::from_millis),
        };
        if relay.max_request_body > 1 << 32 {
            return Err(bad("relay.max_request_body", "must be at most 4 GiB"));
        }
        if relay.max_response_body > 1 << 36 {
            return Err(bad("relay.max_response_body", "must be at most 64 GiB"));
        }
        if !(Duration::from_millis(100)..=Duration::from_secs(3600)).contains(&relay.timeout) {
            return Err(bad("relay.timeout_ms", "must be 100 ms to 1 hour"));
        }
        if !(Duration::from_millis(100)..=Duration::from_secs(24 * 3600))
            .contains(&relay.max_duration)
        {
            return Err(bad("relay.max_duration_ms", "must be 100 ms to 24 hours"));
        }
        if relay.max_duration < relay.timeout {
            return Err(bad(
                "relay.max_duration_ms",
                "must be at least relay.timeout_ms",
            ));
        }
        if !(1..=100_000).contains(&relay.max_in_flight_per_principal) {
            return Err(bad("relay.max_in_flight_per_principal", "must be 1-100000"));
        }
        Ok(relay)
    }
}
