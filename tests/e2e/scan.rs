//! ScanText: every stored value planted in a 1 MiB text, in every form, is
//! found at its exact offsets; a clean corpus gives no finding; callers only
//! learn of credentials they may read the metadata of; short values are
//! never matched; scans are rate-limited and audited; neither the response
//! nor the server's log holds a value.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use strongroom_e2e::{
    Backend, Options, TenantAdmin, TestServer, api_key, assert_free_of, audit_events, expect_code,
    grant, path,
};
use strongroom_proto::v1 as pb;
use tonic::Code;

on_both_backends!(
    every_planted_form_is_found_at_its_offsets,
    clean_corpus_gives_no_finding,
    callers_only_learn_of_credentials_they_may_read,
    scans_are_rate_limited_and_take_large_texts,
    a_scan_after_a_change_finds_the_new_value_in_a_large_tenant,
    well_known_formats_are_reported_by_rule_without_their_text,
);

const MIB: usize = 1024 * 1024;

/// A distinctive value with characters that URL and JSON encodings change.
fn secret(label: &str) -> String {
    format!(
        "scan-{label}/{} &+\"é\\{}",
        uuid::Uuid::new_v4().simple(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// The clean corpus committed with the tests: prose and source code without
/// secrets.
fn clean_corpus() -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/clean-corpus");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("read the clean corpus")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    let mut text = String::new();
    for file in files {
        text.push_str(&std::fs::read_to_string(&file).expect("read a corpus file"));
        text.push('\n');
    }
    assert!(
        text.len() > 200 * 1024,
        "the clean corpus is a few hundred KB"
    );
    text
}

async fn create(admin: &TenantAdmin, environment: &str, name: &str, value: &str) -> String {
    admin
        .client
        .credentials()
        .create_credential(pb::CreateCredentialRequest {
            environment: environment.into(),
            name: name.into(),
            service: "scan".into(),
            value: api_key(value),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("create {name}: {e:?}"))
        .into_inner()
        .credential
        .expect("credential")
        .id
}

async fn scan(
    client: &strongroom_client::Client,
    text: &str,
    redact: bool,
) -> pb::ScanTextResponse {
    client
        .credentials()
        .scan_text(pb::ScanTextRequest {
            text: text.into(),
            redact,
            ..Default::default()
        })
        .await
        .expect("scan")
        .into_inner()
}

/// The tenant's `scan.text` events.
async fn scan_events(admin: &TenantAdmin) -> Vec<pb::AuditEvent> {
    audit_events(
        &admin.client,
        pb::QueryEventsRequest {
            actions: vec![pb::AuditAction::ScanText as i32],
            ..Default::default()
        },
    )
    .await
}

/// Percent-encoding of everything but the unreserved characters.
fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// One planted occurrence: what the scan must report.
#[derive(Debug)]
struct Expected {
    name: String,
    encodings: Vec<pb::ScanEncoding>,
    start: usize,
    end: usize,
}

/// Builds the text: clean filler with every form of every value planted,
/// each between ` ~ ` separators (no encoding uses `~` or spaces next to a
/// value's own characters).
struct Planter {
    text: String,
    filler: String,
    at: usize,
    expected: Vec<Expected>,
}

impl Planter {
    /// Appends up to `bytes` of the filler, going on where the last fill
    /// stopped (from the start again at its end).
    fn fill(&mut self, bytes: usize) {
        let mut start = self.at;
        let mut end = (start + bytes).min(self.filler.len());
        while !self.filler.is_char_boundary(end) {
            end -= 1;
        }
        if end <= start {
            start = 0;
            end = bytes.min(self.filler.len());
            while !self.filler.is_char_boundary(end) {
                end -= 1;
            }
        }
        self.text.push_str(&self.filler[start..end]);
        self.at = end;
    }

    /// Plants `text`, of which `own` (a range inside it) is the value's.
    fn plant(
        &mut self,
        name: &str,
        text: &str,
        own: (usize, usize),
        encodings: &[pb::ScanEncoding],
    ) {
        self.fill(700);
        self.text.push_str(" ~ ");
        let base = self.text.len();
        self.text.push_str(text);
        self.text.push_str(" ~ ");
        self.expected.push(Expected {
            name: name.to_owned(),
            encodings: encodings.to_vec(),
            start: base + own.0,
            end: base + own.1,
        });
    }

    fn plant_whole(&mut self, name: &str, text: &str, encoding: pb::ScanEncoding) {
        self.plant(name, text, (0, text.len()), &[encoding]);
    }

    /// The value inside a base64 blob: `align` bytes before it, `suffix`
    /// after it (its first byte has its top bits set, so the character after
    /// the value's own ones is never the one a blob ending there would have).
    fn plant_base64(
        &mut self,
        name: &str,
        value: &str,
        align: usize,
        suffix: &[u8],
        url: bool,
        padded: bool,
    ) {
        let mut blob = vec![0x5au8; align];
        blob.extend_from_slice(value.as_bytes());
        blob.extend_from_slice(suffix);
        let engine = match (url, padded) {
            (false, true) => &STANDARD,
            (false, false) => &STANDARD_NO_PAD,
            (true, true) => &URL_SAFE,
            (true, false) => &URL_SAFE_NO_PAD,
        };
        let encoded = engine.encode(&blob);
        let bits = 8 * (align + value.len());
        let start = (8 * align).div_ceil(6);
        let end = if suffix.is_empty() {
            encoded.len()
        } else {
            bits / 6
        };
        let own = &encoded[start..end];
        let encodings = if url && own.contains(['-', '_']) {
            vec![pb::ScanEncoding::Base64Url]
        } else if !url && own.contains(['+', '/']) {
            vec![pb::ScanEncoding::Base64]
        } else {
            vec![pb::ScanEncoding::Base64, pb::ScanEncoding::Base64Url]
        };
        self.plant(name, &encoded, (start, end), &encodings);
    }
}

async fn every_planted_form_is_found_at_its_offsets(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = server.tenant("acme").await;
    let mut values: Vec<(String, String)> = Vec::new();
    for i in 0..4 {
        let name = format!("app/key-{i}");
        let value = secret(&format!("v{i}"));
        create(&acme, "dev", &name, &value).await;
        values.push((name, value));
    }
    // A rotated credential: its previous version is still kept and found.
    let first = secret("first");
    create(&acme, "dev", "app/rotated", &first).await;
    let second = secret("second");
    acme.client
        .credentials()
        .rotate_credential(pb::RotateCredentialRequest {
            credential: path("dev", "app/rotated"),
            new_value: Some(pb::rotate_credential_request::NewValue::Value(
                api_key(&second).expect("value"),
            )),
            ..Default::default()
        })
        .await
        .expect("rotate");
    values.push(("app/rotated".into(), first));
    values.push(("app/rotated".into(), second));

    let mut planter = Planter {
        text: String::new(),
        filler: clean_corpus(),
        at: 0,
        expected: Vec::new(),
    };
    for (name, value) in &values {
        planter.plant_whole(name, value, pb::ScanEncoding::Plain);
        for align in 0..3 {
            for suffix in [&b""[..], b"\xff\x10", b"\xc0"] {
                for url in [false, true] {
                    for padded in [false, true] {
                        planter.plant_base64(name, value, align, suffix, url, padded);
                    }
                }
            }
        }
        planter.plant_whole(name, &percent_encode(value), pb::ScanEncoding::Url);
        let hex: String = value.bytes().map(|b| format!("{b:02x}")).collect();
        planter.plant_whole(name, &hex, pb::ScanEncoding::Hex);
        planter.plant_whole(name, &hex.to_uppercase(), pb::ScanEncoding::Hex);
        let json = serde_json::to_string(value).expect("json");
        planter.plant_whole(
            name,
            &json[1..json.len() - 1],
            pb::ScanEncoding::JsonEscaped,
        );
        // Split across lines: wrapped base64 with indentation, and the plain
        // value broken by a CRLF.
        let b64 = STANDARD.encode(value);
        let wrapped = b64
            .as_bytes()
            .chunks(16)
            .map(|c| std::str::from_utf8(c).expect("ascii"))
            .collect::<Vec<_>>()
            .join("\n    ");
        planter.plant_whole(name, &wrapped, pb::ScanEncoding::Base64);
        let cut = value.find('/').expect("a slash");
        let broken = format!("{}\r\n{}", &value[..cut], &value[cut..]);
        planter.plant_whole(name, &broken, pb::ScanEncoding::Plain);
    }
    while planter.text.len() < MIB {
        planter.fill(4096);
    }
    let text = planter.text;
    assert!(text.len() >= MIB);

    let response = scan(&acme.client, &text, true).await;
    let stored: Vec<&pb::ScanFinding> = response
        .findings
        .iter()
        .filter(|f| f.kind == pb::ScanFindingKind::StoredSecret as i32)
        .collect();
    for e in &planter.expected {
        let found = stored.iter().find(|f| {
            f.credential_name == e.name
                && f.start_offset as usize == e.start
                && f.end_offset as usize == e.end
        });
        let Some(found) = found else {
            panic!("not found: {e:?}");
        };
        assert!(
            e.encodings.iter().any(|x| *x as i32 == found.encoding),
            "{e:?} reported as {:?}",
            found.encoding
        );
        assert_eq!(found.detector, "stored_secret");
        assert!(!found.credential_id.is_empty());
        assert!(found.version >= 1);
    }
    // Nothing else: every finding is one that was planted, and the filler
    // holds no token-shaped string.
    assert_eq!(stored.len(), planter.expected.len(), "unexpected findings");
    assert_eq!(response.findings.len(), stored.len());
    let rotated: Vec<u32> = stored
        .iter()
        .filter(|f| f.credential_name == "app/rotated")
        .map(|f| f.version)
        .collect();
    assert!(
        rotated.contains(&1) && rotated.contains(&2),
        "both kept versions are found"
    );

    // The redacted text holds none of the planted occurrences.
    let redacted = &response.redacted_text;
    assert!(redacted.contains("[REDACTED:app/key-0]"));
    for (_, value) in &values {
        assert!(!redacted.contains(value.as_str()));
        assert!(!redacted.contains(&STANDARD_NO_PAD.encode(value)[2..30]));
        let hex: String = value.bytes().map(|b| format!("{b:02x}")).collect();
        assert!(!redacted.contains(&hex));
    }
    // The findings never hold a value.
    let findings_only = pb::ScanTextResponse {
        findings: response.findings.clone(),
        redacted_text: String::new(),
    };
    let secrets: Vec<&str> = values.iter().map(|(_, v)| v.as_str()).collect();
    assert_free_of(&findings_only, &secrets, "scan findings");

    // The scan was audited with its findings count, never the text.
    let events = scan_events(&acme).await;
    assert_eq!(events.len(), 1);
    assert!(
        events[0]
            .detail
            .contains(&format!("\"findings\":{}", planter.expected.len())),
        "{}",
        events[0].detail
    );
    let logs = server.logs.lines().join("\n");
    for (_, value) in &values {
        assert!(!logs.contains(value.as_str()), "a value reached the log");
        assert!(!logs.contains(&STANDARD_NO_PAD.encode(value)));
    }
    server.stop().await;
}

async fn clean_corpus_gives_no_finding(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = server.tenant("acme").await;
    for i in 0..3 {
        create(&acme, "dev", &format!("svc/key-{i}"), &secret("clean")).await;
    }
    let corpus = clean_corpus();
    let response = scan(&acme.client, &corpus, true).await;
    assert_eq!(response.findings, vec![], "findings on the clean corpus");
    assert_eq!(response.redacted_text, corpus);
    server.stop().await;
}

async fn callers_only_learn_of_credentials_they_may_read(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = server.tenant("acme").await;
    let (agent_id, agent) = server.principal(&acme, "agent", pb::Role::Agent).await;
    let seen = secret("seen");
    let hidden = secret("hidden");
    let short = "Sh0rt7!"; // 7 bytes: never matched
    create(&acme, "dev", "visible/key", &seen).await;
    create(&acme, "dev", "secret/key", &hidden).await;
    create(&acme, "dev", "visible/short", short).await;
    grant(
        &acme,
        &agent_id,
        "visible/*",
        &["dev"],
        &[pb::Capability::ReadMetadata],
        None,
    )
    .await;
    let text = format!(
        "seen {seen} hidden {hidden} short {short} hidden again {}",
        STANDARD.encode(&hidden)
    );

    let by_agent = scan(&agent, &text, true).await;
    let names: Vec<&str> = by_agent
        .findings
        .iter()
        .map(|f| f.credential_name.as_str())
        .collect();
    assert_eq!(names, vec!["visible/key"]);
    // What the agent may not see is left as it was, not redacted either.
    let expected = text.replace(&seen, "[REDACTED:visible/key]");
    assert_eq!(by_agent.redacted_text, expected);

    // The admin sees both; the short value is never matched.
    let by_admin = scan(&acme.client, &text, false).await;
    let mut names: Vec<&str> = by_admin
        .findings
        .iter()
        .map(|f| f.credential_name.as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(names, vec!["secret/key", "secret/key", "visible/key"]);
    assert!(
        by_admin.redacted_text.is_empty(),
        "redaction was not asked for"
    );

    // Limited to environments: none of these are in prod.
    let prod_only = acme
        .client
        .credentials()
        .scan_text(pb::ScanTextRequest {
            text: text.clone(),
            environments: vec!["prod".into()],
            ..Default::default()
        })
        .await
        .expect("scan")
        .into_inner();
    assert_eq!(prod_only.findings, vec![]);

    // A destroyed credential is no longer matched.
    acme.client
        .credentials()
        .destroy_credential(pb::DestroyCredentialRequest {
            credential: path("dev", "secret/key"),
            reason: "gone".into(),
            ..Default::default()
        })
        .await
        .expect("destroy");
    let after = scan(&acme.client, &text, false).await;
    let names: Vec<&str> = after
        .findings
        .iter()
        .map(|f| f.credential_name.as_str())
        .collect();
    assert_eq!(names, vec!["visible/key"]);

    let environments = expect_code(
        acme.client
            .credentials()
            .scan_text(pb::ScanTextRequest {
                text: "x".into(),
                environments: vec!["not an environment!".into()],
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "bad environment",
    );
    assert!(environments.message().contains("environments"));
    server.stop().await;
}

async fn scans_are_rate_limited_and_take_large_texts(backend: Backend) {
    let mut options = Options::new(backend);
    // One a minute: a burst of one, regained only after 60 s.
    options
        .env
        .push(("STRONGROOM_SCAN_PER_MINUTE".into(), "1".into()));
    let server = TestServer::start_with(options).await;
    let acme = server.tenant("acme").await;
    let value = secret("large");
    create(&acme, "dev", "big/key", &value).await;

    // A 4 MiB text, larger than the server's 1 MiB message limit, is taken
    // by ScanText.
    let mut text = "lorem ipsum dolor sit amet ".repeat((4 * MIB - 1024) / 27);
    text.push_str(&value);
    while text.len() < 4 * MIB {
        text.push('.');
    }
    assert_eq!(text.len(), 4 * MIB);
    let response = scan(&acme.client, &text, false).await;
    assert_eq!(response.findings.len(), 1);
    assert_eq!(
        response.findings[0].start_offset as usize,
        text.find(&value).expect("planted")
    );

    // Other methods keep the server's message limit.
    expect_code(
        acme.client
            .credentials()
            .create_credential(pb::CreateCredentialRequest {
                environment: "dev".into(),
                name: "big/other".into(),
                service: "scan".into(),
                description: "d".repeat(2 * MIB),
                value: api_key(&secret("other")),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "a 2 MiB CreateCredential",
    );

    // The burst is spent: the next scan is refused.
    let refused = expect_code(
        acme.client
            .credentials()
            .scan_text(pb::ScanTextRequest {
                text: "small text".into(),
                ..Default::default()
            })
            .await,
        Code::ResourceExhausted,
        "a scan over the limit",
    );
    assert!(refused.message().contains("scans"), "{refused:?}");
    server.stop().await;
}

/// Whether `response` reports `name` at the first occurrence of `needle`.
fn reports(response: &pb::ScanTextResponse, text: &str, name: &str, needle: &str) -> bool {
    let start = text.find(needle).expect("planted");
    response.findings.iter().any(|f| {
        f.credential_name == name
            && f.start_offset as usize == start
            && f.end_offset as usize == start + needle.len()
    })
}

async fn a_scan_after_a_change_finds_the_new_value_in_a_large_tenant(backend: Backend) {
    let mut options = Options::new(backend);
    options
        .env
        .push(("STRONGROOM_SCAN_PER_MINUTE".into(), "1000".into()));
    let server = TestServer::start_with(options).await;
    let acme = server.tenant("acme").await;
    // Enough values that the tenant's index is the anchored one (over 4,096
    // needles: each of these values has a dozen or more encoded forms).
    let mut values = Vec::new();
    for i in 0..320 {
        let value = secret(&format!("bulk{i}"));
        create(&acme, "dev", &format!("bulk/key-{i}"), &value).await;
        values.push(value);
    }
    let text = format!(
        "first {} ~ last {} ~",
        values[0],
        STANDARD.encode(&values[319])
    );
    let response = scan(&acme.client, &text, false).await;
    assert!(
        reports(&response, &text, "bulk/key-0", &values[0]),
        "{response:?}"
    );
    assert!(reports(
        &response,
        &text,
        "bulk/key-319",
        &STANDARD.encode(&values[319])
    ));

    // Each change is seen by the very next scan: a scan never uses an index
    // built before a change it follows (the rebuild starts at the change,
    // in the background; the scan waits for it).
    for (round, old) in values.iter().take(4).enumerate() {
        let name = format!("fresh/key-{round}");
        let value = secret(&format!("fresh{round}"));
        create(&acme, "dev", &name, &value).await;
        let text = format!("new {value} ~ old {old} ~");
        let response = scan(&acme.client, &text, false).await;
        assert!(
            reports(&response, &text, &name, &value),
            "round {round}: {response:?}"
        );
        assert!(reports(&response, &text, &format!("bulk/key-{round}"), old));
    }
    let rotated = secret("rotated");
    acme.client
        .credentials()
        .rotate_credential(pb::RotateCredentialRequest {
            credential: path("dev", "bulk/key-7"),
            new_value: Some(pb::rotate_credential_request::NewValue::Value(
                api_key(&rotated).expect("value"),
            )),
            ..Default::default()
        })
        .await
        .expect("rotate");
    let text = format!("rotated {} ~", percent_encode(&rotated));
    let response = scan(&acme.client, &text, false).await;
    assert!(
        reports(&response, &text, "bulk/key-7", &percent_encode(&rotated)),
        "{response:?}"
    );
    assert_eq!(response.findings[0].version, 2);
    let logs = server.logs.lines().join("\n");
    assert!(
        logs.contains("indexed a tenant's values for scans"),
        "the builds are logged"
    );
    for value in &values {
        assert!(!logs.contains(value.as_str()), "a value reached the log");
    }
    server.stop().await;
}

/// One token of each well-known format with the detector name ScanText
/// reports it under, assembled at run time (the repository holds no
/// token-shaped string).
fn well_known_tokens() -> Vec<(&'static str, String)> {
    let alnum = "aB3dE5gH7jK9mN1pQ2rS4tU6vW8xY0zAbCdEfGhIjKlMnOpQrStUvWxYz0123456789";
    let upper = "Q7W3E9R2T5Y8U1I4O6P0";
    let jwt_part = |s: &str| URL_SAFE_NO_PAD.encode(s);
    vec![
        ("aws_access_key_id", format!("{}{}", "AKIA", &upper[..16])),
        ("github_token", format!("{}_{}", "ghp", &alnum[..36])),
        (
            "stripe_key",
            format!("{}_{}_{}", "sk", "live", &alnum[..24]),
        ),
        (
            "openai_key",
            format!("{}-{}-{}", "sk", "proj", &alnum[..60]),
        ),
        (
            "anthropic_key",
            format!("{}-{}-{}-{}", "sk", "ant", "api03", &alnum[..60]),
        ),
        (
            "slack_token",
            format!("{}-{}-{}", "xoxb", "1234567890", &alnum[..24]),
        ),
        ("google_api_key", format!("{}{}", "AIza", &alnum[..35])),
        (
            "private_key_block",
            format!(
                "-----{} RSA {}-----\n{alnum}\n{alnum}\n-----{} RSA {}-----",
                "BEGIN", "PRIVATE KEY", "END", "PRIVATE KEY"
            ),
        ),
        (
            "jwt",
            format!(
                "{}.{}.{}",
                jwt_part("{\"alg\":\"HS256\"}"),
                jwt_part("{\"sub\":\"1234567890\"}"),
                &alnum[..43]
            ),
        ),
    ]
}

/// Tokens of the well-known formats, none of them stored, are each
/// reported once through the RPC: the kind, the detector's name and the
/// exact offsets, no credential, and never the token's text (in the
/// response, the redacted text, the audit event or the log).
async fn well_known_formats_are_reported_by_rule_without_their_text(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = server.tenant("acme").await;
    create(&acme, "dev", "svc/unrelated", &secret("formats")).await;
    let tokens = well_known_tokens();
    let mut text = String::from("# deployment notes\n");
    for (rule, token) in &tokens {
        text.push_str(&format!(
            "{rule} for the staging box: \"{token}\" (rotate monthly)\n"
        ));
    }
    text.push_str("nothing else here\n");
    let response = scan(&acme.client, &text, true).await;
    assert_eq!(
        response.findings.len(),
        tokens.len(),
        "one finding per token: {:?}",
        response
            .findings
            .iter()
            .map(|f| (&f.detector, f.start_offset))
            .collect::<Vec<_>>()
    );
    for (rule, token) in &tokens {
        let start = text.find(token.as_str()).expect("planted") as u64;
        let found = response
            .findings
            .iter()
            .find(|f| f.start_offset == start)
            .unwrap_or_else(|| panic!("{rule} not found at {start}"));
        assert_eq!(found.detector, *rule);
        assert_eq!(
            found.kind(),
            pb::ScanFindingKind::KnownTokenFormat,
            "{rule}"
        );
        assert_eq!(found.end_offset, start + token.len() as u64, "{rule}");
        assert!(
            found.credential_id.is_empty() && found.credential_name.is_empty(),
            "{rule}: a format finding names no credential"
        );
        assert!(
            response
                .redacted_text
                .contains(&format!("\"[REDACTED:{rule}]\"")),
            "{rule} is not redacted under its name"
        );
    }
    let secrets: Vec<&str> = tokens.iter().map(|(_, t)| t.as_str()).collect();
    let mut findings_only = response.clone();
    findings_only.redacted_text.clear();
    assert_free_of(&findings_only, &secrets, "the findings");
    for token in &secrets {
        // The private key block's lines are checked one by one too.
        for part in token.split('\n') {
            assert!(
                !response.redacted_text.contains(part),
                "the redacted text keeps part of a token"
            );
        }
    }
    let events = scan_events(&acme).await;
    assert_eq!(events.len(), 1);
    for e in &events {
        assert_free_of(e, &secrets, "the scan's audit event");
    }
    let logs = server.logs.lines().join("\n");
    for token in &secrets {
        assert!(!logs.contains(token), "a token reached the log");
    }
    server.stop().await;
}
