use super::*;
use std::collections::HashMap;

struct MapEnv(HashMap<&'static str, &'static str>);
impl Env for MapEnv {
    fn var(&self, name: &str) -> Option<String> {
        self.0.get(name).map(|v| (*v).to_owned())
    }
}

fn env(pairs: &[(&'static str, &'static str)]) -> MapEnv {
    MapEnv(pairs.iter().copied().collect())
}

const TLS: [(&str, &str); 3] = [
    ("STRONGROOM_TLS_CERT", "c.pem"),
    ("STRONGROOM_TLS_KEY", "k.pem"),
    ("STRONGROOM_TLS_CLIENT_CA", "ca.pem"),
];

#[test]
fn environment_overrides_and_validation() {
    let mut pairs = TLS.to_vec();
    pairs.push(("STRONGROOM_ROOT_KEY", "x"));
    pairs.push(("STRONGROOM_DATABASE_URL", "postgres://app@127.0.0.1/db"));
    let c = Config::from_raw(RawConfig::default(), &env(&pairs)).unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(c.database, Database::Postgres { .. }));
    assert_eq!(c.root_key, RootKeySource::Env);

    let err = Config::from_raw(RawConfig::default(), &env(&TLS)).unwrap_err();
    assert_eq!(err.key, "root_key");

    let mut pairs = TLS.to_vec();
    pairs.push(("STRONGROOM_ROOT_KEY", "x"));
    pairs.push(("STRONGROOM_LISTEN", "nonsense"));
    let err = Config::from_raw(RawConfig::default(), &env(&pairs)).unwrap_err();
    assert_eq!(err.key, "listen");
    assert!(err.to_string().contains("`listen`"));
}

#[test]
fn crl_and_transport_limits() {
    let mut pairs = TLS.to_vec();
    pairs.push(("STRONGROOM_ROOT_KEY", "x"));
    let c = Config::from_raw(RawConfig::default(), &env(&pairs)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.tls.crl, None);
    assert_eq!(c.tls.crl_reload, Duration::from_secs(5));
    assert_eq!(c.limits.max_connections, 4096);
    assert_eq!(c.limits.max_concurrent_streams, 256);
    assert_eq!(c.limits.max_handshakes, 128);
    assert_eq!(c.limits.max_connections_per_identity, 64);
    assert_eq!(c.limits.max_connections_per_ip, 256);
    assert_eq!(c.limits.handshake_timeout, Duration::from_secs(3));
    assert_eq!(c.limits.idle_timeout, Duration::from_secs(600));

    let raw = toml::from_str::<RawConfig>(
        "[tls]\ncrl = \"/etc/crl.pem\"\ncrl_reload_ms = 1000\n[limits]\nmax_connections = 10\nmax_concurrent_streams = 20\nmax_handshakes = 5\nidle_timeout_ms = 60000\nmax_connections_per_ip = 7\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut with_env = pairs.clone();
    with_env.push(("STRONGROOM_MAX_CONCURRENT_STREAMS", "30"));
    with_env.push(("STRONGROOM_TLS_CRL", "/run/crl.der"));
    with_env.push(("STRONGROOM_HANDSHAKE_TIMEOUT_MS", "500"));
    with_env.push(("STRONGROOM_MAX_CONNECTIONS_PER_IP", "0"));
    let c = Config::from_raw(raw, &env(&with_env)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.limits.max_connections_per_ip, 0, "0 turns the cap off");
    assert_eq!(c.tls.crl, Some(PathBuf::from("/run/crl.der")));
    assert_eq!(c.tls.crl_reload, Duration::from_secs(1));
    assert_eq!(c.limits.max_connections, 10);
    assert_eq!(c.limits.max_concurrent_streams, 30);
    assert_eq!(c.limits.max_handshakes, 5);
    assert_eq!(c.limits.handshake_timeout, Duration::from_millis(500));
    assert_eq!(c.limits.idle_timeout, Duration::from_secs(60));

    for (var, value, key) in [
        ("STRONGROOM_MAX_CONNECTIONS", "0", "limits.max_connections"),
        (
            "STRONGROOM_MAX_CONCURRENT_STREAMS",
            "0",
            "limits.max_concurrent_streams",
        ),
        ("STRONGROOM_TLS_CRL_RELOAD_MS", "5", "tls.crl_reload_ms"),
        ("STRONGROOM_MAX_HANDSHAKES", "0", "limits.max_handshakes"),
        (
            "STRONGROOM_MAX_CONNECTIONS_PER_IDENTITY",
            "0",
            "limits.max_connections_per_identity",
        ),
        (
            "STRONGROOM_HANDSHAKE_TIMEOUT_MS",
            "10",
            "limits.handshake_timeout_ms",
        ),
        ("STRONGROOM_IDLE_TIMEOUT_MS", "0", "limits.idle_timeout_ms"),
        (
            "STRONGROOM_MAX_CONNECTIONS_PER_IP",
            "1000001",
            "limits.max_connections_per_ip",
        ),
    ] {
        let mut bad_env = pairs.clone();
        bad_env.push((var, value));
        let err = Config::from_raw(RawConfig::default(), &env(&bad_env)).unwrap_err();
        assert_eq!(err.key, key);
    }
}

#[test]
fn scheduled_checkpoints_are_configured_by_file_and_interval() {
    let mut pairs = TLS.to_vec();
    pairs.push(("STRONGROOM_ROOT_KEY", "x"));
    let c = Config::from_raw(RawConfig::default(), &env(&pairs)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.audit, AuditConfig::default(), "off by default");

    pairs.push(("STRONGROOM_AUDIT_CHECKPOINT_FILE", "/var/log/cp.jsonl"));
    let c = Config::from_raw(RawConfig::default(), &env(&pairs)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        c.audit.checkpoint_interval,
        Some(DEFAULT_CHECKPOINT_INTERVAL)
    );
    assert_eq!(
        c.audit.checkpoint_file,
        Some(PathBuf::from("/var/log/cp.jsonl"))
    );

    pairs.push(("STRONGROOM_AUDIT_CHECKPOINT_INTERVAL_SECS", "0"));
    let err = Config::from_raw(RawConfig::default(), &env(&pairs)).unwrap_err();
    assert_eq!(err.key, "audit.checkpoint_interval_secs");

    let raw: RawConfig =
        toml::from_str("[audit]\ncheckpoint_interval_secs = 60").unwrap_or_else(|e| panic!("{e}"));
    let c = Config::from_raw(raw, &env(&pairs[..4])).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.audit.checkpoint_interval, Some(Duration::from_secs(60)));
    assert_eq!(c.audit.checkpoint_file, None, "logged only");
}

#[test]
fn namespace_depth_from_file_and_environment() {
    let mut pairs = TLS.to_vec();
    pairs.push(("STRONGROOM_ROOT_KEY", "x"));
    let c = Config::from_raw(RawConfig::default(), &env(&pairs)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.identity.min_namespace_depth, 2, "default");
    let raw = toml::from_str::<RawConfig>("[identity]\nmin_namespace_depth = 3\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let c = Config::from_raw(raw, &env(&pairs)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.identity.min_namespace_depth, 3);
    pairs.push(("STRONGROOM_MIN_NAMESPACE_DEPTH", "1"));
    let c = Config::from_raw(RawConfig::default(), &env(&pairs)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.identity.min_namespace_depth, 1);
    pairs.push(("STRONGROOM_MIN_NAMESPACE_DEPTH", "0"));
    let err = Config::from_raw(RawConfig::default(), &env(&pairs)).unwrap_err();
    assert_eq!(err.key, "identity.min_namespace_depth");
}

#[test]
fn cache_ttl_is_read_and_bounded() {
    let mut pairs = TLS.to_vec();
    pairs.push(("STRONGROOM_ROOT_KEY", "x"));
    let c = Config::from_raw(RawConfig::default(), &env(&pairs)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.limits.cache_ttl, Duration::from_secs(5));
    assert_eq!(c.limits.credential_cache_ttl, Duration::from_secs(60));
    pairs.push(("STRONGROOM_CACHE_TTL_MS", "750"));
    let c = Config::from_raw(RawConfig::default(), &env(&pairs)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.limits.cache_ttl, Duration::from_millis(750));
    let raw: RawConfig =
        toml::from_str("[cache]\nttl_ms = 600000").unwrap_or_else(|e| panic!("{e}"));
    let err = Config::from_raw(raw, &env(&pairs[..4])).unwrap_err();
    assert_eq!(err.key, "cache.ttl_ms");
}

#[test]
fn tenant_share_leaves_the_reserve() {
    let mut pairs = TLS.to_vec();
    pairs.push(("STRONGROOM_ROOT_KEY", "x"));
    pairs.push(("STRONGROOM_DATABASE_URL", "postgres://app@127.0.0.1/db"));
    let share = |extra: &[(&'static str, &'static str)]| {
        let mut all = pairs.clone();
        all.extend_from_slice(extra);
        Config::from_raw(RawConfig::default(), &env(&all)).map(|c| match c.database {
            Database::Postgres {
                tenant_max_connections,
                ..
            } => tenant_max_connections,
            Database::Sqlite { .. } => panic!("postgres expected"),
        })
    };
    // 32 connections: 31 for calls, 7 of them kept back.
    assert_eq!(share(&[]).unwrap_or_else(|e| panic!("{e}")), 23);
    for (max, tenant, ok) in [
        ("32", "24", true),
        ("32", "25", false),
        ("32", "32", false),
        ("6", "4", true),
        ("6", "5", false),
        ("2", "1", true),
    ] {
        let got = share(&[
            ("STRONGROOM_DATABASE_MAX_CONNECTIONS", max),
            ("STRONGROOM_DATABASE_TENANT_MAX_CONNECTIONS", tenant),
        ]);
        match got {
            Ok(n) => assert!(ok, "{max}/{tenant} accepted as {n}"),
            Err(e) => {
                assert!(!ok, "{max}/{tenant}: {e}");
                assert_eq!(e.key, "database.tenant_max_connections");
            }
        }
    }
    // A listener of its own leaves the whole pool to calls.
    let n = share(&[
        ("STRONGROOM_DATABASE_MAX_CONNECTIONS", "6"),
        ("STRONGROOM_DATABASE_TENANT_MAX_CONNECTIONS", "5"),
        (
            "STRONGROOM_DATABASE_LISTEN_URL",
            "postgres://app@db-direct/db",
        ),
    ]);
    assert_eq!(n.unwrap_or_else(|e| panic!("{e}")), 5);
}

#[test]
fn unknown_file_keys_are_rejected() {
    let err = toml::from_str::<RawConfig>("lisen = \"x\"").unwrap_err();
    assert!(err.message().contains("lisen"));
}

#[test]
fn metrics_listener_is_off_unless_configured() {
    let mut pairs = TLS.to_vec();
    pairs.push(("STRONGROOM_ROOT_KEY", "x"));
    let c = Config::from_raw(RawConfig::default(), &env(&pairs)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.metrics.listen, None);

    let raw = toml::from_str::<RawConfig>("[metrics]\nlisten = \"0.0.0.0:9090\"\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let c = Config::from_raw(raw, &env(&pairs)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.metrics.listen, Some("0.0.0.0:9090".parse().unwrap()));

    let mut with_env = pairs.clone();
    with_env.push(("STRONGROOM_METRICS_LISTEN", "127.0.0.1:9191"));
    let c =
        Config::from_raw(RawConfig::default(), &env(&with_env)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.metrics.listen, Some("127.0.0.1:9191".parse().unwrap()));

    let mut bad_addr = pairs.clone();
    bad_addr.push(("STRONGROOM_METRICS_LISTEN", "nowhere"));
    let err = Config::from_raw(RawConfig::default(), &env(&bad_addr)).unwrap_err();
    assert_eq!(err.key, "metrics.listen");

    let mut same = pairs.clone();
    same.push(("STRONGROOM_LISTEN", "0.0.0.0:7443"));
    same.push(("STRONGROOM_METRICS_LISTEN", "127.0.0.1:7443"));
    let err = Config::from_raw(RawConfig::default(), &env(&same)).unwrap_err();
    assert_eq!(err.key, "metrics.listen");
}

#[test]
fn relay_settings_from_the_environment() {
    let mut pairs = TLS.to_vec();
    pairs.push(("STRONGROOM_ROOT_KEY", "x"));
    let c = Config::from_raw(RawConfig::default(), &env(&pairs)).unwrap_or_else(|e| panic!("{e}"));
    assert!(c.relay.resolve.is_empty() && c.relay.allow_internal.is_empty());
    assert_eq!(c.relay.max_in_flight_per_principal, 32);

    pairs.push((
        "STRONGROOM_RELAY_RESOLVE",
        "API.example.test:8443:127.0.0.1, api.example.test:8443:[::1],b.test:443:127.0.0.2",
    ));
    pairs.push((
        "STRONGROOM_RELAY_ALLOW_INTERNAL",
        "api.example.test:8443, acme/vault.example.test:8443",
    ));
    pairs.push(("STRONGROOM_RELAY_TIMEOUT_MS", "1500"));
    pairs.push(("STRONGROOM_RELAY_MAX_DURATION_MS", "60000"));
    pairs.push(("STRONGROOM_RELAY_MAX_REQUEST_BODY", "1024"));
    let c = Config::from_raw(RawConfig::default(), &env(&pairs)).unwrap_or_else(|e| panic!("{e}"));
    let key = ("api.example.test".to_owned(), 8443);
    assert_eq!(
        c.relay.resolve.get(&key).map(Vec::len),
        Some(2),
        "{:?}",
        c.relay.resolve
    );
    assert!(
        c.relay
            .allow_internal
            .allows("acme", "api.example.test", 8443)
    );
    assert!(
        c.relay
            .allow_internal
            .allows("globex", "api.example.test", 8443)
    );
    assert!(
        !c.relay
            .allow_internal
            .allows("acme", "api.example.test", 443)
    );
    assert!(
        c.relay
            .allow_internal
            .allows("acme", "vault.example.test", 8443)
    );
    assert!(
        !c.relay
            .allow_internal
            .allows("globex", "vault.example.test", 8443)
    );
    assert_eq!(c.relay.timeout, Duration::from_millis(1500));
    assert_eq!(c.relay.max_duration, Duration::from_secs(60));
    assert_eq!(c.relay.max_request_body, 1024);

    for (name, value, key) in [
        (
            "STRONGROOM_RELAY_RESOLVE",
            "api.example.test:8443",
            "relay.resolve",
        ),
        (
            "STRONGROOM_RELAY_RESOLVE",
            "api.example.test:0:127.0.0.1",
            "relay.resolve",
        ),
        (
            "STRONGROOM_RELAY_ALLOW_INTERNAL",
            "*.example.test:443",
            "relay.allow_internal",
        ),
        (
            "STRONGROOM_RELAY_ALLOW_INTERNAL",
            "api.example.test",
            "relay.allow_internal",
        ),
        ("STRONGROOM_RELAY_TIMEOUT_MS", "10", "relay.timeout_ms"),
        (
            "STRONGROOM_RELAY_MAX_DURATION_MS",
            "1000",
            "relay.max_duration_ms",
        ),
        (
            "STRONGROOM_RELAY_ALLOW_INTERNAL",
            "Bad Tenant/api.example.test:443",
            "relay.allow_internal",
        ),
        (
            "STRONGROOM_RELAY_MAX_IN_FLIGHT_PER_PRINCIPAL",
            "0",
            "relay.max_in_flight_per_principal",
        ),
    ] {
        let mut bad = TLS.to_vec();
        bad.push(("STRONGROOM_ROOT_KEY", "x"));
        bad.push((name, value));
        let err = Config::from_raw(RawConfig::default(), &env(&bad)).unwrap_err();
        assert_eq!(err.key, key, "{name}={value}");
    }
}

#[test]
fn notifier_settings_default_parse_and_are_bounded() {
    let mut pairs = TLS.to_vec();
    pairs.push(("STRONGROOM_ROOT_KEY", "x"));
    let c = Config::from_raw(RawConfig::default(), &env(&pairs)).unwrap_or_else(|e| panic!("{e}"));
    let n = c.notifier;
    assert_eq!(n, NotifierConfig::default());
    assert_eq!(n.poll_interval, Duration::from_secs(1));
    assert_eq!(n.timeout, Duration::from_secs(5));
    assert_eq!(n.max_answer_read, 16 * 1024);
    assert_eq!(n.sender.claim_hold, Duration::from_secs(120));
    assert_eq!(n.sender.max_attempts, 8);
    assert_eq!(n.sender.max_age, Duration::from_secs(24 * 3600));
    assert_eq!(n.sender.posts_per_turn, 32);
    assert_eq!(n.sender.turn_budget, Duration::from_secs(10));
    assert_eq!(n.sender.tenants_at_once, 16);

    // The file, then the environment on top.
    let raw = toml::from_str::<RawConfig>(
        "[notifier]\npoll_interval_ms = 250\ntimeout_ms = 2000\nmax_answer_read_bytes = 0\n\
         claim_hold_secs = 30\nmax_attempts = 3\nmax_age_secs = 3600\nposts_per_turn = 4\n\
         turn_budget_ms = 500\ntenants_at_once = 2\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut with_env = pairs.clone();
    with_env.push(("STRONGROOM_NOTIFIER_MAX_ATTEMPTS", "5"));
    with_env.push(("STRONGROOM_NOTIFIER_TENANTS_AT_ONCE", "64"));
    let c = Config::from_raw(raw, &env(&with_env)).unwrap_or_else(|e| panic!("{e}"));
    let n = c.notifier;
    assert_eq!(n.poll_interval, Duration::from_millis(250));
    assert_eq!(n.timeout, Duration::from_secs(2));
    assert_eq!(n.max_answer_read, 0);
    assert_eq!(n.sender.claim_hold, Duration::from_secs(30));
    assert_eq!(n.sender.max_attempts, 5, "the environment wins");
    assert_eq!(n.sender.max_age, Duration::from_secs(3600));
    assert_eq!(n.sender.posts_per_turn, 4);
    assert_eq!(n.sender.turn_budget, Duration::from_millis(500));
    assert_eq!(n.sender.tenants_at_once, 64);

    let unknown = toml::from_str::<RawConfig>("[notifier]\nretries = 3\n");
    assert!(unknown.is_err(), "unknown keys are refused");

    for (name, value, key) in [
        (
            "STRONGROOM_NOTIFIER_POLL_INTERVAL_MS",
            "0",
            "notifier.poll_interval_ms",
        ),
        (
            "STRONGROOM_NOTIFIER_POLL_INTERVAL_MS",
            "7200000",
            "notifier.poll_interval_ms",
        ),
        (
            "STRONGROOM_NOTIFIER_TIMEOUT_MS",
            "50",
            "notifier.timeout_ms",
        ),
        (
            "STRONGROOM_NOTIFIER_TIMEOUT_MS",
            "61000",
            "notifier.timeout_ms",
        ),
        (
            "STRONGROOM_NOTIFIER_MAX_ANSWER_READ_BYTES",
            "2000000",
            "notifier.max_answer_read_bytes",
        ),
        (
            "STRONGROOM_NOTIFIER_CLAIM_HOLD_SECS",
            "5",
            "notifier.claim_hold_secs",
        ),
        // Less than twice the default 5 s timeout plus the answer's read.
        (
            "STRONGROOM_NOTIFIER_CLAIM_HOLD_SECS",
            "11",
            "notifier.claim_hold_secs",
        ),
        (
            "STRONGROOM_NOTIFIER_MAX_ATTEMPTS",
            "0",
            "notifier.max_attempts",
        ),
        (
            "STRONGROOM_NOTIFIER_MAX_ATTEMPTS",
            "33",
            "notifier.max_attempts",
        ),
        (
            "STRONGROOM_NOTIFIER_MAX_AGE_SECS",
            "59",
            "notifier.max_age_secs",
        ),
        (
            "STRONGROOM_NOTIFIER_POSTS_PER_TURN",
            "0",
            "notifier.posts_per_turn",
        ),
        (
            "STRONGROOM_NOTIFIER_TURN_BUDGET_MS",
            "99",
            "notifier.turn_budget_ms",
        ),
        (
            "STRONGROOM_NOTIFIER_TENANTS_AT_ONCE",
            "0",
            "notifier.tenants_at_once",
        ),
        (
            "STRONGROOM_NOTIFIER_TENANTS_AT_ONCE",
            "many",
            "STRONGROOM_NOTIFIER_TENANTS_AT_ONCE",
        ),
    ] {
        let mut bad = pairs.clone();
        bad.push((name, value));
        let err = Config::from_raw(RawConfig::default(), &env(&bad)).unwrap_err();
        assert_eq!(err.key, key, "{name}={value}");
    }
    // The claim's bound follows the timeout.
    let mut short = pairs.clone();
    short.push(("STRONGROOM_NOTIFIER_TIMEOUT_MS", "1000"));
    short.push(("STRONGROOM_NOTIFIER_CLAIM_HOLD_SECS", "10"));
    let c = Config::from_raw(RawConfig::default(), &env(&short)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.notifier.sender.claim_hold, Duration::from_secs(10));
}

#[test]
fn access_request_ttl_maximum() {
    let mut pairs = TLS.to_vec();
    pairs.push(("STRONGROOM_ROOT_KEY", "x"));
    let c = Config::from_raw(RawConfig::default(), &env(&pairs)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.limits.access_request_ttl, Duration::from_secs(24 * 3600));
    assert_eq!(
        c.limits.max_access_request_ttl,
        Duration::from_secs(7 * 24 * 3600)
    );
    assert_eq!(
        c.limits.engine().max_access_request_ttl,
        c.limits.max_access_request_ttl
    );

    // Unset, the maximum follows a longer server TTL.
    let mut long = pairs.clone();
    long.push(("STRONGROOM_ACCESS_REQUEST_TTL_SECS", "864000"));
    let c = Config::from_raw(RawConfig::default(), &env(&long)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        c.limits.max_access_request_ttl,
        Duration::from_secs(864_000)
    );

    let mut set = pairs.clone();
    set.push(("STRONGROOM_MAX_ACCESS_REQUEST_TTL_SECS", "172800"));
    let c = Config::from_raw(RawConfig::default(), &env(&set)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        c.limits.max_access_request_ttl,
        Duration::from_secs(172_800)
    );

    for (extra, value) in [
        ("STRONGROOM_MAX_ACCESS_REQUEST_TTL_SECS", "59"),
        ("STRONGROOM_MAX_ACCESS_REQUEST_TTL_SECS", "2592001"),
        // Below the server's default TTL.
        ("STRONGROOM_MAX_ACCESS_REQUEST_TTL_SECS", "3600"),
    ] {
        let mut bad = pairs.clone();
        bad.push((extra, value));
        let err = Config::from_raw(RawConfig::default(), &env(&bad)).unwrap_err();
        assert_eq!(err.key, "limits.max_access_request_ttl_secs", "{value}");
    }
}
