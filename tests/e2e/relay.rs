//! The relay (RelayService): an agent holding `inject` only gets its
//! requests sent with the credential added, to the destinations its grants
//! name and nowhere else; values never come back to it (the response is
//! scrubbed) nor reach the log or the audit chain. Every peer is on
//! 127.0.0.1: the destinations' names are resolved by the server's static
//! `relay.resolve` entries, and names that resolve to anything else are
//! refused before any connection.

use std::time::Duration;

use base64::Engine as _;
use strongroom_client::Client;
use strongroom_e2e::upstream::Upstream;
use strongroom_e2e::{
    Backend, Options, TenantAdmin, TestServer, admin_url, api_key, audit_events, expect_code,
    expect_invalid, path, value,
};
use strongroom_proto::v1 as pb;
use tonic::Code;

on_both_backends!(
    injection_reaches_the_destination_only,
    refusals_and_leaks,
    placeholders_stay_in_their_slots
);

/// A distinctive value: found somewhere only if it leaked there.
fn secret(label: &str) -> String {
    format!("sk-e2eRELAY{label}{}", uuid::Uuid::new_v4().simple())
}

/// A placeholder, as a local forwarder would make one.
fn placeholder(label: &str) -> String {
    format!("SR_PLACEHOLDER_{label}_{}", uuid::Uuid::new_v4().simple())
}

struct Setup {
    server: TestServer,
    upstream: Upstream,
    acme: TenantAdmin,
    agent_id: String,
    agent: Client,
    /// Keeps the CA file.
    _dir: tempfile::TempDir,
}

impl Setup {
    fn port(&self) -> u16 {
        self.upstream.port()
    }

    fn url(&self, host: &str, rest: &str) -> String {
        format!("https://{host}:{}{rest}", self.port())
    }
}

/// A server whose relay resolves the test names to the upstream, trusts
/// the upstream's CA, and allows the loopback names it is meant to reach
/// (not `loop.example.test`, nor 127.0.0.1 by address); an agent in tenant
/// `acme`. No name resolves outside 127.0.0.0/8: the refusal of private,
/// link-local and cloud-metadata addresses is shown by the address check's
/// unit tests (`strongroom_core::net`), and here by loopback destinations
/// not on the allow list.
async fn setup(backend: Backend, upstream: Upstream, timeout_ms: u64) -> Setup {
    setup_with(backend, upstream, timeout_ms, vec![]).await
}

/// [`setup`] with further server environment.
async fn setup_with(
    backend: Backend,
    upstream: Upstream,
    timeout_ms: u64,
    extra: Vec<(String, String)>,
) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("upstream-ca.pem");
    std::fs::write(&ca, upstream.ca_pem()).expect("write upstream CA");
    let port = upstream.port();
    let names = [
        "api.example.test",
        "other.example.test",
        "a.b.example.test",
        "loop.example.test",
    ];
    let resolve: Vec<String> = names
        .iter()
        .map(|n| format!("{n}:{port}:127.0.0.1"))
        .collect();
    let allow: Vec<String> = ["api.example.test", "other.example.test", "a.b.example.test"]
        .iter()
        .map(|n| format!("{n}:{port}"))
        .collect();
    let mut options = Options::new(backend);
    options.env = vec![
        ("STRONGROOM_RELAY_RESOLVE".into(), resolve.join(",")),
        ("STRONGROOM_RELAY_ALLOW_INTERNAL".into(), allow.join(",")),
        (
            "STRONGROOM_RELAY_UPSTREAM_CA".into(),
            ca.to_string_lossy().into_owned(),
        ),
        ("STRONGROOM_RELAY_TIMEOUT_MS".into(), timeout_ms.to_string()),
    ];
    options.env.extend(extra);
    let server = TestServer::start_with(options).await;
    let acme = server.tenant("acme").await;
    let (agent_id, agent) = server.principal(&acme, "agent", pb::Role::Agent).await;
    Setup {
        server,
        upstream,
        acme,
        agent_id,
        agent,
        _dir: dir,
    }
}

/// Creates `dev/NAME` holding `v`, with `template` if given.
async fn credential(
    acme: &TenantAdmin,
    name: &str,
    v: Option<pb::CredentialValue>,
    template: Option<pb::injection_template::Template>,
) {
    acme.client
        .credentials()
        .create_credential(pb::CreateCredentialRequest {
            environment: "dev".into(),
            name: name.into(),
            service: "svc".into(),
            value: v,
            injection_template: template.map(|t| pb::InjectionTemplate { template: Some(t) }),
            ..Default::default()
        })
        .await
        .expect("create credential");
}

/// Grants the agent `capabilities` on `selector` in dev with `destinations`.
async fn grant_to(
    s: &Setup,
    selector: &str,
    capabilities: &[pb::Capability],
    destinations: Vec<pb::Destination>,
) -> pb::Grant {
    s.acme
        .client
        .policy()
        .create_grant(pb::CreateGrantRequest {
            subject: Some(pb::GrantSubject {
                subject: Some(pb::grant_subject::Subject::PrincipalId(s.agent_id.clone())),
            }),
            selector: selector.into(),
            environments: vec!["dev".into()],
            capabilities: capabilities.iter().map(|c| *c as i32).collect(),
            destinations,
            reason: "e2e".into(),
            ..Default::default()
        })
        .await
        .expect("create grant")
        .into_inner()
        .grant
        .expect("grant")
}

fn destination(host: String, paths: &[&str]) -> pb::Destination {
    pb::Destination {
        host,
        methods: vec![],
        path_prefixes: paths.iter().map(|p| (*p).to_owned()).collect(),
        ..Default::default()
    }
}

fn reference(name: &str) -> pb::InjectionRef {
    pb::InjectionRef {
        environment: "dev".into(),
        name: name.into(),
        field: String::new(),
    }
}

fn header(name: &str, value: &str) -> pb::HttpHeader {
    pb::HttpHeader {
        name: name.into(),
        value: value.as_bytes().to_vec(),
    }
}

fn head(method: &str, url: String) -> pb::RelayRequestHead {
    pb::RelayRequestHead {
        method: method.into(),
        url,
        purpose: "e2e relay test".into(),
        ..Default::default()
    }
}

/// Whether what the destination received carries the value as expected.
type ReachedCheck<'a> = Box<dyn Fn(&strongroom_e2e::upstream::Received) -> bool + 'a>;

/// What the agent got back.
#[derive(Debug)]
struct Answer {
    head: pb::RelayResponseHead,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<String> {
        self.head
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(&h.value).into_owned())
    }

    fn reason(&self) -> &str {
        self.head
            .relay_error
            .as_ref()
            .map_or("", |e| e.reason.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Everything the agent received, as text.
    fn everything(&self) -> String {
        let mut all = self.text();
        for h in &self.head.headers {
            all.push_str(&String::from_utf8_lossy(&h.value));
        }
        all
    }
}

/// Sends one request through the relay.
async fn forward(
    client: &Client,
    head: pb::RelayRequestHead,
    body: Vec<Vec<u8>>,
) -> Result<Answer, tonic::Status> {
    let mut messages = vec![pb::ForwardRequest {
        part: Some(pb::forward_request::Part::Head(head)),
    }];
    messages.extend(body.into_iter().map(|b| pb::ForwardRequest {
        part: Some(pb::forward_request::Part::Body(b)),
    }));
    let mut stream = client
        .relay()
        .forward(tokio_stream::iter(messages))
        .await?
        .into_inner();
    let first = stream
        .message()
        .await?
        .ok_or_else(|| tonic::Status::internal("no response head"))?;
    let Some(pb::forward_response::Part::Head(head)) = first.part else {
        return Err(tonic::Status::internal("the first message is not a head"));
    };
    let mut body = Vec::new();
    while let Some(m) = stream.message().await? {
        match m.part {
            Some(pb::forward_response::Part::Body(b)) => body.extend_from_slice(&b),
            _ => return Err(tonic::Status::internal("a second response head")),
        }
    }
    Ok(Answer { head, body })
}

/// The tenant's events of `action`.
async fn events(acme: &TenantAdmin, action: pb::AuditAction) -> Vec<pb::AuditEvent> {
    audit_events(
        &acme.client,
        pb::QueryEventsRequest {
            actions: vec![action as i32],
            ..Default::default()
        },
    )
    .await
}

/// The tenant's events of `action` once at least `n` are recorded (an
/// outcome is recorded after the agent's call has ended).
async fn events_at_least(
    acme: &TenantAdmin,
    action: pb::AuditAction,
    n: usize,
) -> Vec<pb::AuditEvent> {
    for _ in 0..100 {
        let found = events(acme, action).await;
        if found.len() >= n {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    events(acme, action).await
}

/// Asserts `secret` appears in no server log line, plain or base64.
fn assert_not_logged(server: &TestServer, secrets: &[&str]) {
    for line in server.logs.lines() {
        for s in secrets {
            let b64 = base64::engine::general_purpose::STANDARD.encode(s);
            assert!(
                !line.contains(s) && !line.contains(&b64),
                "a value reached the log: {line}"
            );
        }
    }
}

async fn injection_reaches_the_destination_only(backend: Backend) {
    let s = setup(backend, Upstream::start(&["*.example.test"]).await, 5000).await;
    let bearer = secret("bearer");
    let password = secret("basic");
    let header_key = secret("header");
    let query_key = secret("query");
    let held = secret("placeholder");
    credential(&s.acme, "llm/openai", api_key(&bearer), None).await;
    credential(
        &s.acme,
        "svc/basic",
        value(pb::credential_value::Value::BasicAuth(pb::BasicAuth {
            username: "robot".into(),
            password: password.clone(),
        })),
        None,
    )
    .await;
    credential(
        &s.acme,
        "svc/header",
        api_key(&header_key),
        Some(pb::injection_template::Template::Header(
            pb::HeaderInjection {
                name: "X-Api-Key".into(),
                field: "api_key".into(),
                prefix: "Token ".into(),
            },
        )),
    )
    .await;
    credential(
        &s.acme,
        "svc/query",
        api_key(&query_key),
        Some(pb::injection_template::Template::QueryParameter(
            pb::QueryParameterInjection {
                name: "key".into(),
                field: "api_key".into(),
            },
        )),
    )
    .await;
    credential(&s.acme, "svc/held", api_key(&held), None).await;
    grant_to(
        &s,
        "*",
        &[pb::Capability::Inject],
        vec![pb::Destination {
            placeholder_query: vec!["k".into()],
            ..destination(format!("*.example.test:{}", s.port()), &["/echo"])
        }],
    )
    .await;

    // The agent holds inject only: it can never read a value.
    expect_code(
        s.agent
            .credentials()
            .reveal_credential(pb::RevealCredentialRequest {
                credential: path("dev", "llm/openai"),
                purpose: "e2e".into(),
                ..Default::default()
            })
            .await,
        Code::PermissionDenied,
        "reveal by an inject-only agent",
    );

    // Each template style reaches the destination with the real value; the
    // destination echoes it and the agent sees only a marker.
    let cases: [(&str, &str, ReachedCheck<'_>); 4] = [
        (
            "llm/openai",
            bearer.as_str(),
            Box::new(|r| r.header("authorization") == Some(&format!("Bearer {bearer}"))),
        ),
        (
            "svc/basic",
            password.as_str(),
            Box::new(|r| {
                let expected =
                    base64::engine::general_purpose::STANDARD.encode(format!("robot:{password}"));
                r.header("authorization") == Some(&format!("Basic {expected}"))
            }),
        ),
        (
            "svc/header",
            header_key.as_str(),
            Box::new(|r| r.header("x-api-key") == Some(&format!("Token {header_key}"))),
        ),
        (
            "svc/query",
            query_key.as_str(),
            Box::new(|r| r.path_and_query.ends_with(&format!("key={query_key}"))),
        ),
    ];
    for (i, (name, value, reached)) in cases.iter().enumerate() {
        let mut h = head("GET", s.url("api.example.test", "/echo?x=1"));
        h.inject = vec![reference(name)];
        // The agent's own Host and Authorization are replaced or dropped.
        h.headers = vec![
            header("host", "evil.test"),
            header("accept-encoding", "gzip"),
        ];
        let answer = forward(&s.agent, h, vec![]).await.expect(name);
        assert_eq!(answer.head.status, 200, "{name}: {answer:?}");
        let received = s.upstream.received();
        let r = &received[i];
        assert!(reached(r), "{name}: the destination got {:?}", r.headers);
        assert_eq!(r.authority, format!("api.example.test:{}", s.port()));
        assert_eq!(r.server_name.as_deref(), Some("api.example.test"));
        assert_eq!(r.version, "HTTP/2.0");
        assert_eq!(r.header("accept-encoding"), Some("identity"));
        let all = answer.everything();
        assert!(!all.contains(value), "{name}: the value came back: {all}");
        assert!(
            all.contains(&format!("[strongroom:dev/{name}]")),
            "{name}: no marker in {all}"
        );
    }

    // Placeholders in a header and the query are replaced; the echo of
    // the value comes back as the placeholder.
    let p = placeholder("held");
    let mut h = head("GET", s.url("api.example.test", &format!("/echo?k={p}")));
    h.headers = vec![header("authorization", &format!("Bearer {p}"))];
    h.placeholders = vec![pb::Placeholder {
        placeholder: p.clone(),
        credential: Some(reference("svc/held")),
    }];
    let answer = forward(&s.agent, h, vec![]).await.expect("placeholder");
    assert_eq!(answer.head.status, 200);
    let r = s.upstream.received().pop().expect("received");
    assert_eq!(
        r.header("authorization"),
        Some(format!("Bearer {held}").as_str())
    );
    assert_eq!(r.path_and_query, format!("/echo?k={held}"));
    assert!(!answer.everything().contains(&held));
    assert!(
        answer.text().contains(&format!("query: k={p}")),
        "{}",
        answer.text()
    );
    assert_eq!(
        answer.header("x-echo-authorization"),
        Some(format!("Bearer {p}"))
    );

    // A large response echoing the value across frame boundaries, and a
    // request body streamed in several messages.
    let mut h = head("POST", s.url("api.example.test", "/echo/../padded/150000"));
    h.headers = vec![header("authorization", &format!("Bearer {p}"))];
    h.placeholders = vec![pb::Placeholder {
        placeholder: p.clone(),
        credential: Some(reference("svc/held")),
    }];
    let refused = forward(&s.agent, h.clone(), vec![]).await.expect("refusal");
    assert_eq!(
        (refused.head.status, refused.reason()),
        (403, "destination_not_allowed"),
        "the path normalises out of /echo"
    );
    h.url = s.url("api.example.test", "/echo/../echo/padded");
    let answer = forward(&s.agent, h, vec![]).await.expect("padded");
    assert_eq!(answer.head.status, 200);
    grant_to(
        &s,
        "svc/held",
        &[pb::Capability::Inject],
        vec![destination(
            format!("api.example.test:{}", s.port()),
            &["/padded"],
        )],
    )
    .await;
    let mut h = head("POST", s.url("api.example.test", "/padded/150000"));
    h.headers = vec![header("authorization", &format!("Bearer {p}"))];
    h.placeholders = vec![pb::Placeholder {
        placeholder: p.clone(),
        credential: Some(reference("svc/held")),
    }];
    let chunks: Vec<Vec<u8>> = (0..5).map(|i| vec![b'a' + i; 100_000]).collect();
    let answer = forward(&s.agent, h, chunks).await.expect("large");
    assert_eq!(answer.head.status, 200);
    assert!(answer.body.len() > 300_000);
    assert!(!answer.everything().contains(&held));
    assert!(
        answer
            .text()
            .contains(&format!("authorization: Bearer {p}"))
    );
    let r = s.upstream.received().pop().expect("received");
    assert_eq!(r.body.len(), 500_000);
    assert_eq!(
        r.header("authorization"),
        Some(format!("Bearer {held}").as_str())
    );

    // The audit chain: each use before it was sent, and its outcome after,
    // with host, method and path, never the query, a header or a value.
    let injected = events(&s.acme, pb::AuditAction::CredentialInject).await;
    let results = events_at_least(&s.acme, pb::AuditAction::CredentialInjectResult, 7).await;
    let allowed: Vec<_> = injected
        .iter()
        .filter(|e| e.outcome == pb::AuditOutcome::Allowed as i32)
        .collect();
    assert_eq!(allowed.len(), 7, "{injected:?}");
    assert_eq!(results.len(), 7, "{results:?}");
    for e in allowed.iter().copied().chain(results.iter()) {
        let relay = e.relay.as_ref().expect("relay details");
        assert_eq!(relay.host, format!("api.example.test:{}", s.port()));
        assert!(relay.path.starts_with("/echo") || relay.path.starts_with("/padded"));
        assert_eq!(e.principal_id, s.agent_id);
        assert_eq!(e.purpose, "e2e relay test");
        assert!(e.version >= 1);
        let text = format!("{e:?}");
        for v in [&bearer, &password, &header_key, &query_key, &held, &p] {
            assert!(!text.contains(v.as_str()), "audit holds a value: {text}");
        }
        assert!(!text.contains("x=1"), "audit holds the query: {text}");
    }
    let result = results
        .iter()
        .find(|e| e.relay.as_ref().is_some_and(|r| r.path == "/padded/150000"))
        .expect("result of the large request");
    let relay = result.relay.as_ref().expect("relay");
    assert_eq!(relay.status_code, 200);
    assert_eq!(relay.bytes_sent, 500_000);
    assert!(relay.bytes_received > 300_000);

    // Every request went over one pooled HTTP/2 connection.
    assert_eq!(s.upstream.connections(), 1, "pooled connection reused");
    assert_not_logged(
        &s.server,
        &[&bearer, &password, &header_key, &query_key, &held],
    );
}

async fn refusals_and_leaks(backend: Backend) {
    let s = setup(backend, Upstream::start(&["*.example.test"]).await, 5000).await;
    let key = secret("refused");
    credential(&s.acme, "llm/openai", api_key(&key), None).await;
    credential(&s.acme, "llm/reveal-only", api_key(&secret("r")), None).await;
    let g = grant_to(
        &s,
        "llm/openai",
        &[pb::Capability::Inject],
        vec![pb::Destination {
            host: format!("api.example.test:{}", s.port()),
            methods: vec!["GET".into()],
            path_prefixes: vec!["/echo".into()],
            ..Default::default()
        }],
    )
    .await;
    // A reveal grant names no destination: it never injects.
    grant_to(&s, "llm/reveal-only", &[pb::Capability::Reveal], vec![]).await;

    let template = |url: String, name: &str| {
        let mut h = head("GET", url);
        h.inject = vec![reference(name)];
        h
    };
    let refused = |a: &Answer| (a.head.status, a.reason().to_owned());
    let forbidden = |reason: &str| (403, reason.to_owned());

    // Another host, another method, paths escaping the prefix or only
    // sharing its first letters, a plain-http URL: all refused, nothing
    // sent anywhere.
    for (h, why) in [
        (
            template(s.url("other.example.test", "/echo"), "llm/openai"),
            "host",
        ),
        (
            template(s.url("api.example.test", "/echoes"), "llm/openai"),
            "segment",
        ),
        (
            template(
                s.url("api.example.test", "/echo/../status/200"),
                "llm/openai",
            ),
            "dotdot",
        ),
        (
            template(
                s.url("api.example.test", "/echo/%2e%2E/status/200"),
                "llm/openai",
            ),
            "encoded",
        ),
        (
            template(
                s.url("api.example.test", "/x/..//echo/../status"),
                "llm/openai",
            ),
            "mixed",
        ),
        (
            template(s.url("API.Example.test.", "/v1"), "llm/openai"),
            "case",
        ),
        (
            template("https://api.example.test/echo".to_owned(), "llm/openai"),
            "port",
        ),
        (
            template(
                s.url("api.example.test", "/echo").replace("https", "http"),
                "llm/openai",
            ),
            "http",
        ),
        (
            template(s.url("api.example.test", "/echo"), "llm/reveal-only"),
            "reveal",
        ),
        (
            template(s.url("api.example.test", "/echo"), "llm/missing"),
            "missing",
        ),
    ] {
        let a = forward(&s.agent, h, vec![]).await.expect(why);
        assert_eq!(refused(&a), forbidden("destination_not_allowed"), "{why}");
    }
    let mut post = template(s.url("api.example.test", "/echo"), "llm/openai");
    post.method = "POST".into();
    let a = forward(&s.agent, post, vec![]).await.expect("post");
    assert_eq!(refused(&a), forbidden("destination_not_allowed"));
    // Paths that cannot be normalised are malformed.
    for bad in [
        "/echo%2f..%2fstatus",
        "/echo/..;/status",
        "/../echo",
        "/echo/%zz",
    ] {
        expect_invalid(
            forward(
                &s.agent,
                template(s.url("api.example.test", bad), "llm/openai"),
                vec![],
            )
            .await,
            "head.url",
            bad,
        );
    }
    // Nothing to inject: the relay is no open proxy.
    let a = forward(
        &s.agent,
        head("GET", s.url("api.example.test", "/echo")),
        vec![],
    )
    .await
    .expect("nothing");
    assert_eq!(refused(&a), forbidden("no_credential"));
    // A normalised path inside the prefix passes, and is what is sent.
    let a = forward(
        &s.agent,
        template(s.url("api.example.test", "/./echo//x/../y"), "llm/openai"),
        vec![],
    )
    .await
    .expect("normalised");
    assert_eq!(a.head.status, 200);
    let received = s.upstream.received();
    assert_eq!(received.len(), 1, "only the allowed request was sent");
    assert_eq!(received[0].path_and_query, "/echo/y");

    let denied = events(&s.acme, pb::AuditAction::CredentialInject).await;
    let denied: Vec<_> = denied
        .iter()
        .filter(|e| e.outcome == pb::AuditOutcome::Denied as i32)
        .collect();
    assert!(denied.len() >= 10, "{denied:?}");
    assert!(denied.iter().any(|e| {
        e.reason_code == "DESTINATION_NOT_ALLOWED"
            && e.relay
                .as_ref()
                .is_some_and(|r| r.host == format!("other.example.test:{}", s.port()))
    }));

    // A placeholder sent to a destination the grant does not allow: 403
    // and an alert; the grant stands while the setting is off.
    let p = placeholder("canary");
    let canary = |url: String| {
        let mut h = head("GET", url);
        h.headers = vec![header("x-api-key", &p)];
        h.placeholders = vec![pb::Placeholder {
            placeholder: p.clone(),
            credential: Some(reference("llm/openai")),
        }];
        h
    };
    let a = forward(
        &s.agent,
        canary(s.url("other.example.test", "/echo")),
        vec![],
    )
    .await
    .expect("canary");
    assert_eq!(refused(&a), forbidden("destination_not_allowed"));
    let a = forward(
        &s.agent,
        canary(s.url("api.example.test", "/echo").replace("https", "http")),
        vec![],
    )
    .await
    .expect("canary over http");
    assert_eq!(refused(&a), forbidden("placeholder_over_http"));
    let alerts = events(&s.acme, pb::AuditAction::AlertPlaceholderMisuse).await;
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    assert!(alerts[0].detail.contains(&g.id), "{}", alerts[0].detail);
    assert!(
        alerts
            .iter()
            .all(|e| e.detail.contains("\"revoked\":false"))
    );
    assert_eq!(s.upstream.received().len(), 1);

    // With revoke_grant_on_leak the grant is revoked at once.
    s.acme
        .client
        .admin()
        .update_tenant_settings(pb::UpdateTenantSettingsRequest {
            settings: Some(pb::TenantSettings {
                revoke_grant_on_leak: true,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["revoke_grant_on_leak".into()],
            }),
        })
        .await
        .expect("turn revoke_grant_on_leak on");
    let a = forward(
        &s.agent,
        canary(s.url("other.example.test", "/echo")),
        vec![],
    )
    .await
    .expect("canary again");
    assert_eq!(refused(&a), forbidden("destination_not_allowed"));
    let revokes = events(&s.acme, pb::AuditAction::GrantRevoke).await;
    assert!(
        revokes
            .iter()
            .any(|e| e.detail.contains(&g.id) && e.reason_code == "PLACEHOLDER_MISUSE"),
        "{revokes:?}"
    );
    let a = forward(&s.agent, canary(s.url("api.example.test", "/echo")), vec![])
        .await
        .expect("after revocation");
    assert_eq!(refused(&a), forbidden("destination_not_allowed"));
    assert_eq!(s.upstream.received().len(), 1);

    // ReportLeak: an alert, and (setting on) the grants revoked; refused
    // as missing for credentials the caller holds nothing on.
    let g2 = grant_to(
        &s,
        "llm/openai",
        &[pb::Capability::Inject],
        vec![destination(format!("api.example.test:{}", s.port()), &[])],
    )
    .await;
    let described = s
        .agent
        .relay()
        .describe_injection(pb::DescribeInjectionRequest {
            credentials: vec![
                reference("llm/openai"),
                reference("llm/reveal-only"),
                reference("llm/missing"),
            ],
        })
        .await
        .expect("describe")
        .into_inner()
        .credentials;
    assert!(described[0].allowed && described[0].has_template);
    assert_eq!(described[0].destinations.len(), 1);
    assert_eq!(
        (described[1].allowed, described[1].reason.as_str()),
        (false, "no_destinations")
    );
    assert_eq!(
        (described[2].allowed, described[2].reason.as_str()),
        (false, "not_found")
    );
    let leak = s
        .agent
        .relay()
        .report_leak(pb::ReportLeakRequest {
            credential: Some(reference("llm/openai")),
            channel: "stdout".into(),
            form: "base64".into(),
            purpose: "e2e".into(),
        })
        .await
        .expect("report leak")
        .into_inner();
    assert!(leak.grant_revoked);
    let leaks = events(&s.acme, pb::AuditAction::AlertLeak).await;
    assert_eq!(leaks.len(), 1);
    assert!(leaks[0].detail.contains(&g2.id) && leaks[0].detail.contains("\"form\":\"base64\""));
    expect_code(
        s.agent
            .relay()
            .report_leak(pb::ReportLeakRequest {
                credential: Some(reference("llm/missing")),
                channel: "stdout".into(),
                form: "plain".into(),
                purpose: "e2e".into(),
            })
            .await,
        Code::NotFound,
        "leak of a credential the caller holds nothing on",
    );
    assert_not_logged(&s.server, &[&key]);
}

/// Internal addresses are refused unless listed exactly, before any
/// connection: loopback names not on the allow list, a name resolving to
/// the cloud metadata address or a private one, a loopback literal.
#[tokio::test]
async fn internal_addresses_are_refused() {
    let s = setup(
        Backend::Sqlite,
        Upstream::start(&["*.example.test", "127.0.0.1"]).await,
        5000,
    )
    .await;
    credential(&s.acme, "llm/openai", api_key(&secret("internal")), None).await;
    let port = s.port();
    grant_to(
        &s,
        "llm/openai",
        &[pb::Capability::Inject],
        vec![
            destination(format!("*.example.test:{port}"), &[]),
            destination(format!("127.0.0.1:{port}"), &[]),
        ],
    )
    .await;
    for url in [
        s.url("loop.example.test", "/echo"),
        format!("https://127.0.0.1:{port}/echo"),
    ] {
        let mut h = head("GET", url.clone());
        h.inject = vec![reference("llm/openai")];
        let a = forward(&s.agent, h, vec![]).await.expect(&url);
        assert_eq!(
            (a.head.status, a.reason()),
            (403, "internal_address"),
            "{url}"
        );
    }
    assert!(s.upstream.received().is_empty());
    // A name on the allow list is reached; one whose certificate does not
    // cover it (a wildcard covers one label) is refused by TLS.
    let mut h = head("GET", s.url("api.example.test", "/echo"));
    h.inject = vec![reference("llm/openai")];
    let a = forward(&s.agent, h, vec![]).await.expect("allowed");
    assert_eq!(a.head.status, 200);
    assert_eq!(s.upstream.received().len(), 1);
    let mut h = head("GET", s.url("a.b.example.test", "/echo"));
    h.inject = vec![reference("llm/openai")];
    let a = forward(&s.agent, h, vec![]).await.expect("wrong name");
    assert_eq!((a.head.status, a.reason()), (502, "upstream_tls"));
    assert_eq!(s.upstream.received().len(), 1);
}

/// The relay's limits: a request body over `relay.max_request_body` is
/// answered 413, declared or streamed; a response over
/// `relay.max_response_body` is answered 502 when its length is declared
/// and cut off when it is streamed; a principal's requests beyond
/// `relay.max_in_flight_per_principal` are answered 429 while the others
/// run, other principals' are not, and a slot is free again once its
/// request has ended.
#[tokio::test]
async fn limits_refuse_large_bodies_and_too_many_in_flight() {
    let s = setup_with(
        Backend::Sqlite,
        Upstream::start(&["*.example.test"]).await,
        5000,
        vec![
            ("STRONGROOM_RELAY_MAX_REQUEST_BODY".into(), "1024".into()),
            ("STRONGROOM_RELAY_MAX_RESPONSE_BODY".into(), "4096".into()),
            (
                "STRONGROOM_RELAY_MAX_IN_FLIGHT_PER_PRINCIPAL".into(),
                "2".into(),
            ),
        ],
    )
    .await;
    let key = secret("limits");
    credential(&s.acme, "llm/openai", api_key(&key), None).await;
    let host = format!("api.example.test:{}", s.port());
    grant_to(
        &s,
        "llm/openai",
        &[pb::Capability::Inject],
        vec![destination(host.clone(), &[])],
    )
    .await;
    let request = |method: &str, rest: &str| {
        let mut h = head(method, s.url("api.example.test", rest));
        h.inject = vec![reference("llm/openai")];
        h
    };

    // Within the limits.
    let a = forward(&s.agent, request("POST", "/echo"), vec![vec![b'a'; 1000]])
        .await
        .expect("a body within the limit");
    assert_eq!(a.head.status, 200);
    let r = s.upstream.received().pop().expect("received");
    assert_eq!(r.body, vec![b'a'; 1000]);
    let a = forward(&s.agent, request("GET", "/big/4000"), vec![])
        .await
        .expect("a response within the limit");
    assert_eq!((a.head.status, a.body.len()), (200, 4000));
    let before = s.upstream.received().len();

    // A request body declared over the limit: refused before anything is
    // sent.
    let mut h = request("POST", "/echo");
    h.headers.push(header("content-length", "2000"));
    let a = forward(&s.agent, h, vec![vec![b'b'; 2000]])
        .await
        .expect("a declared body over the limit");
    assert_eq!((a.head.status, a.reason()), (413, "body_too_large"));
    assert_eq!(s.upstream.received().len(), before, "nothing was sent");
    // Streamed over the limit without a declared length: the destination
    // never receives a whole request.
    let a = forward(
        &s.agent,
        request("POST", "/echo"),
        vec![vec![b'c'; 800], vec![b'c'; 800]],
    )
    .await
    .expect("a streamed body over the limit");
    assert_eq!((a.head.status, a.reason()), (413, "body_too_large"));
    assert!(
        s.upstream
            .received()
            .iter()
            .all(|r| !r.body.contains(&b'c')),
        "a body over the limit reached the destination"
    );

    // A response declared over the limit is refused; one streamed over it
    // is cut off once the limit is passed.
    let a = forward(&s.agent, request("GET", "/big/5000"), vec![])
        .await
        .expect("a declared response over the limit");
    assert_eq!((a.head.status, a.reason()), (502, "response_too_large"));
    assert!(a.body.is_empty());
    let cut = match forward(&s.agent, request("GET", "/padded/3000"), vec![]).await {
        Ok(a) => panic!(
            "a streamed response over the limit ended cleanly: {:?}, {} bytes",
            a.head,
            a.body.len()
        ),
        Err(status) => status,
    };
    assert_eq!(cut.code(), Code::ResourceExhausted, "{cut:?}");

    // Two requests in flight take the agent's two slots: a third is
    // refused at once, and nothing of it reaches the destination.
    let slow = |n: u32| {
        let agent = s.agent.clone();
        let h = request("GET", &format!("/slow/3000?n={n}"));
        tokio::spawn(async move { forward(&agent, h, vec![]).await })
    };
    let (first, second) = (slow(1), slow(2));
    let slow_arrived = || {
        s.upstream
            .received()
            .iter()
            .filter(|r| r.path_and_query.starts_with("/slow/"))
            .count()
    };
    for _ in 0..100 {
        if slow_arrived() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(slow_arrived(), 2, "both slow requests are upstream");
    let a = forward(&s.agent, request("GET", "/echo?third"), vec![])
        .await
        .expect("a third request");
    assert_eq!((a.head.status, a.reason()), (429, "too_many_in_flight"));
    assert!(
        !s.upstream
            .received()
            .iter()
            .any(|r| r.path_and_query == "/echo?third"),
        "the refused request reached the destination"
    );
    // Another principal of the tenant has slots of its own.
    let (other_id, other) = s
        .server
        .principal(&s.acme, "other-agent", pb::Role::Agent)
        .await;
    s.acme
        .client
        .policy()
        .create_grant(pb::CreateGrantRequest {
            subject: Some(pb::GrantSubject {
                subject: Some(pb::grant_subject::Subject::PrincipalId(other_id)),
            }),
            selector: "llm/openai".into(),
            environments: vec!["dev".into()],
            capabilities: vec![pb::Capability::Inject as i32],
            destinations: vec![destination(host.clone(), &[])],
            reason: "e2e".into(),
            ..Default::default()
        })
        .await
        .expect("grant the other agent");
    let mut h = head("GET", s.url("api.example.test", "/echo?other"));
    h.inject = vec![reference("llm/openai")];
    let a = forward(&other, h, vec![])
        .await
        .expect("another principal's request");
    assert_eq!(a.head.status, 200);
    for call in [first, second] {
        let a = call.await.expect("join").expect("a slow request");
        assert_eq!(a.head.status, 200);
    }
    // The slots are free again.
    let a = forward(&s.agent, request("GET", "/echo?after"), vec![])
        .await
        .expect("a request after the others ended");
    assert_eq!(a.head.status, 200);
    assert_not_logged(&s.server, &[&key]);
}

/// Redirects go back to the agent; HTTP/1.1 destinations work with Host
/// and SNI set to the destination; a slow destination is answered 504.
#[tokio::test]
async fn responses_redirects_http1_and_timeouts() {
    let s = setup(
        Backend::Sqlite,
        Upstream::start_http1(&["*.example.test"]).await,
        1500,
    )
    .await;
    let key = secret("h1");
    credential(&s.acme, "llm/openai", api_key(&key), None).await;
    grant_to(
        &s,
        "llm/openai",
        &[pb::Capability::Inject],
        vec![destination(format!("api.example.test:{}", s.port()), &[])],
    )
    .await;
    let template = |rest: &str| {
        let mut h = head("GET", s.url("api.example.test", rest));
        h.inject = vec![reference("llm/openai")];
        h
    };
    let a = forward(&s.agent, template("/redirect"), vec![])
        .await
        .expect("redirect");
    assert_eq!(a.head.status, 302);
    assert_eq!(a.header("location").as_deref(), Some("/elsewhere"));
    assert_eq!(
        s.upstream.received().len(),
        1,
        "the redirect was not followed"
    );

    for _ in 0..3 {
        let a = forward(&s.agent, template("/echo"), vec![])
            .await
            .expect("echo");
        assert_eq!(a.head.status, 200);
        assert!(!a.everything().contains(&key));
    }
    let r = s.upstream.received().pop().expect("received");
    assert_eq!(r.version, "HTTP/1.1");
    assert_eq!(r.authority, format!("api.example.test:{}", s.port()));
    assert_eq!(r.server_name.as_deref(), Some("api.example.test"));
    assert_eq!(
        r.header("authorization"),
        Some(format!("Bearer {key}").as_str())
    );

    // A body encoded despite the relay asking for identity cannot be
    // scrubbed: it is refused.
    let a = forward(&s.agent, template("/encoded"), vec![])
        .await
        .expect("encoded");
    assert_eq!((a.head.status, a.reason()), (502, "upstream_encoding"));
    assert!(!a.everything().contains(&key));

    let a = forward(&s.agent, template("/slow/4000"), vec![])
        .await
        .expect("slow");
    assert_eq!((a.head.status, a.reason()), (504, "upstream_timeout"));
    // The outcome is recorded after the agent's call has ended: wait for
    // the timeout's own result event, not just for some results.
    let timed_out = |events: &[pb::AuditEvent]| {
        events.iter().any(|e| {
            e.relay
                .as_ref()
                .is_some_and(|r| r.relay_error == "upstream_timeout")
        })
    };
    let mut results = Vec::new();
    for _ in 0..100 {
        results = events(&s.acme, pb::AuditAction::CredentialInjectResult).await;
        if timed_out(&results) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        timed_out(&results),
        "no upstream_timeout result: {results:?}"
    );
    assert_not_logged(&s.server, &[&key]);
}

/// The use is recorded before anything reaches the destination: with the
/// audit log unavailable (its table locked), the request fails and the
/// destination receives nothing.
#[tokio::test]
async fn nothing_is_sent_unless_the_use_is_recorded() {
    use sqlx::Connection;
    let s = setup(
        Backend::Postgres,
        Upstream::start(&["*.example.test"]).await,
        5000,
    )
    .await;
    credential(&s.acme, "llm/openai", api_key(&secret("audit")), None).await;
    grant_to(
        &s,
        "llm/openai",
        &[pb::Capability::Inject],
        vec![destination(format!("api.example.test:{}", s.port()), &[])],
    )
    .await;
    let admin = admin_url();
    let (base, _) = admin.rsplit_once('/').expect("admin url");
    let db = s.server.database.clone().expect("postgres database");
    let mut conn = sqlx::PgConnection::connect(&format!("{base}/{db}"))
        .await
        .expect("connect");
    sqlx::query("BEGIN")
        .execute(&mut conn)
        .await
        .expect("begin");
    sqlx::query("LOCK TABLE audit_events IN ACCESS EXCLUSIVE MODE")
        .execute(&mut conn)
        .await
        .expect("lock the audit table");
    let mut h = head("GET", s.url("api.example.test", "/echo"));
    h.inject = vec![reference("llm/openai")];
    let answer = tokio::time::timeout(
        Duration::from_secs(20),
        forward(&s.agent, h.clone(), vec![]),
    )
    .await
    .expect("answered");
    expect_code(
        answer,
        Code::Unavailable,
        "forward with the audit log locked",
    );
    assert!(
        s.upstream.received().is_empty(),
        "a request went out unrecorded"
    );
    sqlx::query("ROLLBACK")
        .execute(&mut conn)
        .await
        .expect("unlock");
    // Once the audit log is back (the writes queued behind the lock drain
    // first), requests go out again.
    let mut after = None;
    for _ in 0..20 {
        match forward(&s.agent, h.clone(), vec![]).await {
            Ok(a) => {
                after = Some(a);
                break;
            }
            Err(status) if status.code() == Code::Unavailable => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(status) => panic!("after: {status:?}"),
        }
    }
    assert_eq!(after.expect("a request after the unlock").head.status, 200);
    assert_eq!(s.upstream.received().len(), 1);
}

/// The agent does not choose where a value goes: a placeholder is replaced
/// only where the credential's template puts it (Authorization for bearer
/// and basic, inside basic credentials too) or where the destination lists;
/// anywhere else it is refused and alerted. Leak-triggered revocation
/// touches only the caller's own exact grants: a shared (role) grant
/// stands, and the caller is locked instead when the tenant's denial alert
/// locks; a refusal that is not misuse (the credential does not exist)
/// revokes nothing. ReportLeak knows its forms and is rate-limited.
async fn placeholders_stay_in_their_slots(backend: Backend) {
    let s = setup(backend, Upstream::start(&["*.example.test"]).await, 5000).await;
    let key = secret("slots");
    credential(&s.acme, "svc/slack", api_key(&key), None).await;
    let own = grant_to(
        &s,
        "svc/slack",
        &[pb::Capability::Inject],
        vec![pb::Destination {
            placeholder_headers: vec!["x-api-key".into()],
            placeholder_query: vec!["token".into()],
            ..destination(format!("api.example.test:{}", s.port()), &["/echo"])
        }],
    )
    .await;
    let p = placeholder("slot");
    let with = |url: String, headers: Vec<pb::HttpHeader>| {
        let mut h = head("GET", url);
        h.headers = headers;
        h.placeholders = vec![pb::Placeholder {
            placeholder: p.clone(),
            credential: Some(reference("svc/slack")),
        }];
        h
    };
    let b64 = |t: String| base64::engine::general_purpose::STANDARD.encode(t);

    // Allowed slots: the template's (Authorization, bearer or basic) and
    // the destination's listed header and query parameter.
    let allowed: [(pb::RelayRequestHead, ReachedCheck<'_>); 4] = [
        (
            with(
                s.url("api.example.test", "/echo/a"),
                vec![header("authorization", &format!("Bearer {p}"))],
            ),
            Box::new(|r| r.header("authorization") == Some(&format!("Bearer {key}"))),
        ),
        (
            with(
                s.url("api.example.test", "/echo/b"),
                vec![header(
                    "authorization",
                    &format!("Basic {}", b64(format!("robot:{p}"))),
                )],
            ),
            Box::new(|r| {
                r.header("authorization") == Some(&format!("Basic {}", b64(format!("robot:{key}"))))
            }),
        ),
        (
            with(
                s.url("api.example.test", "/echo/c"),
                vec![header("X-Api-Key", &p)],
            ),
            Box::new(|r| r.header("x-api-key") == Some(key.as_str())),
        ),
        (
            with(
                s.url("api.example.test", &format!("/echo/d?token={p}")),
                vec![],
            ),
            Box::new(|r| r.path_and_query == format!("/echo/d?token={key}")),
        ),
    ];
    for (i, (h, reached)) in allowed.into_iter().enumerate() {
        let a = forward(&s.agent, h, vec![]).await.expect("allowed slot");
        assert_eq!(a.head.status, 200, "{i}: {a:?}");
        let r = s.upstream.received().pop().expect("received");
        assert!(reached(&r), "{i}: {r:?}");
    }
    let sent = s.upstream.received().len();

    // Anywhere else: refused, alerted, nothing sent.
    let refused_heads = [
        with(
            s.url("api.example.test", &format!("/echo?text={p}")),
            vec![],
        ),
        with(
            s.url(
                "api.example.test",
                &format!("/echo?text={}", p.replace('_', "%5F")),
            ),
            vec![],
        ),
        with(s.url("api.example.test", &format!("/echo/{p}")), vec![]),
        with(s.url("api.example.test", &format!("/echo?{p}=1")), vec![]),
        with(
            s.url("api.example.test", "/echo"),
            vec![header("x-note", &format!("hello {p}"))],
        ),
        with(
            s.url("api.example.test", "/echo"),
            vec![
                header("authorization", &format!("Bearer {p}")),
                header("x-note", &p),
            ],
        ),
    ];
    let n = refused_heads.len();
    for (i, h) in refused_heads.into_iter().enumerate() {
        let a = forward(&s.agent, h, vec![]).await.expect("refused slot");
        assert_eq!(
            (a.head.status, a.reason()),
            (403, "placeholder_not_allowed_here"),
            "{i}"
        );
    }
    assert_eq!(s.upstream.received().len(), sent, "a refused slot was sent");
    let alerts = events(&s.acme, pb::AuditAction::AlertPlaceholderMisuse).await;
    assert_eq!(alerts.len(), n, "{alerts:?}");
    let denied = events(&s.acme, pb::AuditAction::CredentialInject).await;
    assert!(
        denied
            .iter()
            .filter(|e| e.reason_code == "PLACEHOLDER_MISUSE")
            .count()
            >= n
    );

    // Requests refused before their destination is checked still raise
    // the alert when they carry a placeholder: a malformed URL here.
    let a = forward(
        &s.agent,
        with(s.url("api.example.test", &format!("/echo/..;/{p}")), vec![]),
        vec![],
    )
    .await;
    expect_invalid(a, "head.url", "malformed with a placeholder");
    let alerts = events(&s.acme, pb::AuditAction::AlertPlaceholderMisuse).await;
    assert_eq!(alerts.len(), n + 1, "{alerts:?}");

    // ReportLeak: only the known forms.
    expect_invalid(
        s.agent
            .relay()
            .report_leak(pb::ReportLeakRequest {
                credential: Some(reference("svc/slack")),
                channel: "stdout".into(),
                form: "rot13".into(),
                purpose: "e2e".into(),
            })
            .await,
        "form",
        "unknown form",
    );

    // With the leak setting on: a placeholder of a credential that does
    // not exist is no misuse, and revokes nothing (the agent's own exact
    // grant on that name stands).
    s.acme
        .client
        .admin()
        .update_tenant_settings(pb::UpdateTenantSettingsRequest {
            settings: Some(pb::TenantSettings {
                revoke_grant_on_leak: true,
                denial_alert: Some(pb::DenialAlert {
                    threshold: 1000,
                    window: Some(prost_types::Duration {
                        seconds: 60,
                        nanos: 0,
                    }),
                    auto_lock: true,
                }),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["revoke_grant_on_leak".into(), "denial_alert".into()],
            }),
        })
        .await
        .expect("settings");
    let ghost = grant_to(
        &s,
        "svc/ghost",
        &[pb::Capability::Inject],
        vec![destination(format!("api.example.test:{}", s.port()), &[])],
    )
    .await;
    let mut h = with(s.url("other.example.test", "/echo"), vec![]);
    h.headers = vec![header("authorization", &format!("Bearer {p}"))];
    h.placeholders[0].credential = Some(reference("svc/ghost"));
    let a = forward(&s.agent, h, vec![]).await.expect("ghost");
    assert_eq!(a.head.status, 403);
    let revokes = events(&s.acme, pb::AuditAction::GrantRevoke).await;
    assert!(
        !revokes.iter().any(|e| e.detail.contains(&ghost.id)),
        "a grant was revoked for a missing credential: {revokes:?}"
    );

    // A shared grant (the agent role's) is never deleted for one
    // principal's misuse: the alert is raised and, the tenant's denial
    // alert locking, the principal is locked instead.
    credential(&s.acme, "svc/shared", api_key(&secret("shared")), None).await;
    let shared = s
        .acme
        .client
        .policy()
        .create_grant(pb::CreateGrantRequest {
            subject: Some(pb::GrantSubject {
                subject: Some(pb::grant_subject::Subject::Role(pb::Role::Agent as i32)),
            }),
            selector: "svc/shared".into(),
            environments: vec!["dev".into()],
            capabilities: vec![pb::Capability::Inject as i32],
            destinations: vec![destination(format!("api.example.test:{}", s.port()), &[])],
            reason: "e2e".into(),
            ..Default::default()
        })
        .await
        .expect("role grant")
        .into_inner()
        .grant
        .expect("grant");
    let mut h = with(s.url("other.example.test", "/echo"), vec![]);
    h.headers = vec![header("authorization", &format!("Bearer {p}"))];
    h.placeholders[0].credential = Some(reference("svc/shared"));
    let a = forward(&s.agent, h, vec![]).await.expect("shared canary");
    assert_eq!(
        (a.head.status, a.reason()),
        (403, "destination_not_allowed")
    );
    let revokes = events(&s.acme, pb::AuditAction::GrantRevoke).await;
    assert!(
        !revokes.iter().any(|e| e.detail.contains(&shared.id)),
        "a role grant was revoked: {revokes:?}"
    );
    let grants = s
        .acme
        .client
        .policy()
        .list_grants(pb::ListGrantsRequest::default())
        .await
        .expect("list grants")
        .into_inner()
        .grants;
    assert!(grants.iter().any(|g| g.id == shared.id), "role grant gone");
    assert!(grants.iter().any(|g| g.id == own.id));
    let locks = events(&s.acme, pb::AuditAction::PrincipalLock).await;
    assert!(
        locks.iter().any(|e| e.reason_code == "PLACEHOLDER_MISUSE"),
        "{locks:?}"
    );
    let mut locked = false;
    for _ in 0..50 {
        if s.agent
            .relay()
            .describe_injection(pb::DescribeInjectionRequest {
                credentials: vec![reference("svc/slack")],
            })
            .await
            .is_err()
        {
            locked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(locked, "the principal was not locked");
}

/// ReportLeak is rate-limited per principal.
#[tokio::test]
async fn leak_reports_are_rate_limited() {
    let s = setup(
        Backend::Sqlite,
        Upstream::start(&["*.example.test"]).await,
        5000,
    )
    .await;
    credential(&s.acme, "svc/leaky", api_key(&secret("leaky")), None).await;
    grant_to(
        &s,
        "svc/leaky",
        &[pb::Capability::Inject],
        vec![destination(format!("api.example.test:{}", s.port()), &[])],
    )
    .await;
    let mut limited = false;
    for _ in 0..20 {
        let r = s
            .agent
            .relay()
            .report_leak(pb::ReportLeakRequest {
                credential: Some(reference("svc/leaky")),
                channel: "stdout".into(),
                form: "plain".into(),
                purpose: "e2e".into(),
            })
            .await;
        match r {
            Ok(_) => {}
            Err(status) if status.code() == Code::ResourceExhausted => {
                limited = true;
                break;
            }
            Err(status) => panic!("{status:?}"),
        }
    }
    assert!(limited, "20 leak reports in a row were all accepted");
    let leaks = events(&s.acme, pb::AuditAction::AlertLeak).await;
    assert!(leaks.len() <= 6, "{}", leaks.len());
}

/// A destination that drips its response (a byte at a time, never ending)
/// cannot keep a use open past `relay.max_duration_ms`.
#[tokio::test]
async fn a_dripping_response_ends_at_the_duration_cap() {
    let s = setup_with(
        Backend::Sqlite,
        Upstream::start(&["*.example.test"]).await,
        1000,
        vec![("STRONGROOM_RELAY_MAX_DURATION_MS".into(), "2000".into())],
    )
    .await;
    credential(&s.acme, "svc/drip", api_key(&secret("drip")), None).await;
    grant_to(
        &s,
        "svc/drip",
        &[pb::Capability::Inject],
        vec![destination(format!("api.example.test:{}", s.port()), &[])],
    )
    .await;
    let mut h = head("GET", s.url("api.example.test", "/drip/200"));
    h.inject = vec![reference("svc/drip")];
    let started = std::time::Instant::now();
    let answer = tokio::time::timeout(Duration::from_secs(20), forward(&s.agent, h, vec![]))
        .await
        .expect("the response was not ended by the cap");
    let elapsed = started.elapsed();
    expect_code(answer, Code::DeadlineExceeded, "dripping response");
    assert!(
        elapsed >= Duration::from_millis(1500) && elapsed < Duration::from_secs(10),
        "{elapsed:?}"
    );
    let results = events_at_least(&s.acme, pb::AuditAction::CredentialInjectResult, 1).await;
    assert!(
        results.iter().any(|e| e
            .relay
            .as_ref()
            .is_some_and(|r| r.relay_error == "max_duration")),
        "{results:?}"
    );
}

/// What the scrubber sees through: a value echoed in another letter case
/// or as a response header's name; a transfer coding it cannot see through
/// is refused; a pooled HTTP/1.1 connection is reused; an agent that stops
/// sending its request body is answered 408.
#[tokio::test]
async fn scrubbing_case_names_codings_reuse_and_stalled_bodies() {
    let s = setup(
        Backend::Sqlite,
        Upstream::start_http1(&["*.example.test"]).await,
        1500,
    )
    .await;
    let key = secret("case");
    let held = secret("named");
    credential(&s.acme, "llm/openai", api_key(&key), None).await;
    credential(&s.acme, "svc/held", api_key(&held), None).await;
    grant_to(
        &s,
        "*",
        &[pb::Capability::Inject],
        vec![pb::Destination {
            // The held value is placed, by placeholder, in a header the
            // destination names for it.
            placeholder_headers: vec!["x-echo-as-name".into()],
            ..destination(format!("api.example.test:{}", s.port()), &[])
        }],
    )
    .await;
    let template = |rest: &str| {
        let mut h = head("GET", s.url("api.example.test", rest));
        h.inject = vec![reference("llm/openai")];
        h
    };

    // Sequential requests share one HTTP/1.1 connection.
    for _ in 0..3 {
        let a = forward(&s.agent, template("/echo"), vec![])
            .await
            .expect("echo");
        assert_eq!(a.head.status, 200);
    }
    assert_eq!(s.upstream.connections(), 1, "pooled HTTP/1.1 reused");

    // Upper-cased in the body and in a header value: still replaced.
    let a = forward(&s.agent, template("/shout"), vec![])
        .await
        .expect("shout");
    assert_eq!(a.head.status, 200);
    let upper = key.to_uppercase();
    assert!(
        !a.everything().to_uppercase().contains(&upper),
        "the upper-cased value came back: {a:?}"
    );
    assert!(
        a.text().contains("[strongroom:dev/llm/openai]"),
        "{}",
        a.text()
    );
    assert_eq!(
        a.header("x-echo-authorization").as_deref(),
        Some("BEARER [strongroom:dev/llm/openai]")
    );

    // A value echoed as a header name (lower-cased by HTTP): the name is
    // scrubbed to the placeholder.
    let p = placeholder("named");
    let mut h = head("GET", s.url("api.example.test", "/name"));
    h.headers = vec![header("x-echo-as-name", &p)];
    h.placeholders = vec![pb::Placeholder {
        placeholder: p.clone(),
        credential: Some(reference("svc/held")),
    }];
    let a = forward(&s.agent, h, vec![]).await.expect("name");
    assert_eq!(a.head.status, 200);
    let r = s.upstream.received().pop().expect("received");
    assert_eq!(r.header("x-echo-as-name"), Some(held.as_str()));
    let names: Vec<String> = a.head.headers.iter().map(|h| h.name.clone()).collect();
    assert!(
        names
            .iter()
            .all(|n| !n.to_lowercase().contains(&held.to_lowercase())),
        "the value came back as a header name: {names:?}"
    );
    assert!(
        names.contains(&p.to_lowercase()),
        "no placeholder name in {names:?}"
    );

    // `Transfer-Encoding: gzip, chunked`: the chunking is undone, the
    // compression would not be; refused like a Content-Encoding.
    let a = forward(&s.agent, template("/transfer-encoded"), vec![])
        .await
        .expect("transfer-encoded");
    assert_eq!((a.head.status, a.reason()), (502, "upstream_encoding"));
    assert!(a.body.is_empty());

    // A request body that stops coming is answered 408 once relay.timeout
    // passes without a part of it.
    let (parts, stream) = tokio::sync::mpsc::channel(4);
    let mut h = head("POST", s.url("api.example.test", "/echo"));
    h.inject = vec![reference("llm/openai")];
    parts
        .send(pb::ForwardRequest {
            part: Some(pb::forward_request::Part::Head(h)),
        })
        .await
        .expect("head");
    parts
        .send(pb::ForwardRequest {
            part: Some(pb::forward_request::Part::Body(b"first part".to_vec())),
        })
        .await
        .expect("body");
    let started = std::time::Instant::now();
    let mut answer = s
        .agent
        .relay()
        .forward(tokio_stream::wrappers::ReceiverStream::new(stream))
        .await
        .expect("forward")
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(20), answer.message())
        .await
        .expect("answered in time")
        .expect("a message")
        .expect("a head");
    let Some(pb::forward_response::Part::Head(stalled)) = first.part else {
        panic!("no head: {first:?}");
    };
    assert_eq!(
        (
            stalled.status,
            stalled.relay_error.map(|e| e.reason).unwrap_or_default()
        ),
        (408, "body_timeout".to_owned())
    );
    assert!(started.elapsed() >= Duration::from_millis(1400));
    drop(parts);
    assert_not_logged(&s.server, &[&key, &held]);
}
