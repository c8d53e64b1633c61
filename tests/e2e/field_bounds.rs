//! Every string, bytes, repeated and map field of every request, found by
//! walking the server's own file descriptor set (not a hand-written list),
//! is sent NUL-bearing, just over its bound, and at 512 KiB, one field at a
//! time in an otherwise unchanged request. Each answer must be
//! INVALID_ARGUMENT naming that field; a secret value inside a typed
//! credential value is instead sealed as given (and reveals byte for byte).
//! No answer is INTERNAL or UNAVAILABLE, and meanwhile 50 concurrent
//! reveals by another principal of the same tenant all succeed.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use prost::Message;
use prost::bytes::{Buf, BufMut};
use prost_reflect::{
    Cardinality, DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor,
    ReflectMessage, Value,
};
use strongroom_e2e::{Backend, TestServer, api_key, grant, path};
use strongroom_proto::bounds::{Kind as Bound, TABLE};
use strongroom_proto::v1 as pb;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Code, Status};

on_both_backends!(every_request_field_is_bounded);

/// A size past every bound but the secret ones' message limit.
const BIG: usize = 512 * 1024;

/// Raw bytes in and out, so any method can be called with any message.
#[derive(Default)]
struct RawCodec;

struct RawEncoder;
struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// Calls `method` (`/pkg.Service/Method`) with an encoded request.
async fn call(
    channel: &Channel,
    method: &str,
    client_streaming: bool,
    body: Vec<u8>,
) -> Result<Vec<u8>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|e| Status::unknown(format!("not ready: {e}")))?;
    let path = PathAndQuery::try_from(method).expect("method path");
    if client_streaming {
        let stream = tokio_stream::iter(vec![body]);
        grpc.client_streaming(tonic::Request::new(stream), path, RawCodec)
            .await
            .map(tonic::Response::into_inner)
    } else {
        grpc.unary(tonic::Request::new(body), path, RawCodec)
            .await
            .map(tonic::Response::into_inner)
    }
}

/// One step from a message to a field inside it.
#[derive(Clone)]
enum Step {
    /// A singular message field.
    Field(FieldDescriptor),
    /// The first item of a repeated message field.
    First(FieldDescriptor),
}

fn path_text(steps: &[Step], leaf: &str, index: Option<usize>) -> String {
    let mut parts: Vec<String> = steps
        .iter()
        .map(|s| match s {
            Step::Field(f) => f.name().to_owned(),
            Step::First(f) => format!("{}[0]", f.name()),
        })
        .collect();
    parts.push(match index {
        Some(i) => format!("{leaf}[{i}]"),
        None => leaf.to_owned(),
    });
    parts.join(".")
}

/// What the server must answer.
#[derive(Debug, Clone, PartialEq)]
enum Expect {
    /// INVALID_ARGUMENT whose message starts with `field: `.
    Invalid(String),
    /// Accepted: a secret value is sealed as given.
    Sealed,
}

/// One changed request.
struct Case {
    label: String,
    steps: Vec<Step>,
    leaf: FieldDescriptor,
    value: Value,
    expect: Expect,
}

fn bound_of(message: &MessageDescriptor, field: &FieldDescriptor) -> Bound {
    TABLE
        .iter()
        .find(|(m, f, _)| *m == message.full_name() && *f == field.name())
        .unwrap_or_else(|| {
            panic!(
                "{}.{} has no bound: every string, bytes and repeated field needs one",
                message.full_name(),
                field.name()
            )
        })
        .2
        .kind
}

fn texts(n: usize, item: &str) -> Value {
    Value::List(
        (0..n)
            .map(|i| Value::String(format!("{item}{i}")))
            .collect(),
    )
}

/// Every case for the fields of `message`, reached through `steps`.
fn cases(
    message: &MessageDescriptor,
    steps: &[Step],
    out: &mut Vec<Case>,
    seen: &mut BTreeSet<String>,
) {
    if steps.len() > 6 {
        return;
    }
    for field in message.fields() {
        let here = path_text(steps, field.name(), None);
        let mut case = |label: &str, value: Value, expect: Expect| {
            out.push(Case {
                label: format!("{here} {label}"),
                steps: steps.to_vec(),
                leaf: field.clone(),
                value,
                expect,
            });
        };
        let invalid = Expect::Invalid(here.clone());
        let first_invalid = Expect::Invalid(path_text(steps, field.name(), Some(0)));
        let kind = field.kind();
        if field.is_map() {
            seen.insert(format!("{}.{}", message.full_name(), field.name()));
            let Bound::SecretMap {
                entries,
                key_chars,
                value_bytes,
            } = bound_of(message, &field)
            else {
                panic!("{here}: a map needs a SecretMap bound");
            };
            let map = |pairs: Vec<(String, String)>| {
                Value::Map(
                    pairs
                        .into_iter()
                        .map(|(k, v)| (MapKey::String(k), Value::String(v)))
                        .collect(),
                )
            };
            case(
                "key with NUL",
                map(vec![("a\0b".into(), "v".into())]),
                invalid.clone(),
            );
            case(
                "key just over",
                map(vec![("k".repeat(key_chars + 1), "v".into())]),
                invalid.clone(),
            );
            case(
                "entries just over",
                map((0..=entries)
                    .map(|i| (format!("k{i}"), "v".into()))
                    .collect()),
                invalid.clone(),
            );
            case(
                "value just over",
                map(vec![("k".into(), "v".repeat(value_bytes + 1))]),
                invalid.clone(),
            );
            case(
                "value with NUL",
                map(vec![("token".into(), "sk-\0-\u{1}-\n".into())]),
                Expect::Sealed,
            );
            continue;
        }
        if field.cardinality() == Cardinality::Repeated {
            seen.insert(format!("{}.{}", message.full_name(), field.name()));
            match (bound_of(message, &field), &kind) {
                (Bound::List { items }, Kind::Message(inner)) => {
                    let many = (0..=items)
                        .map(|_| Value::Message(DynamicMessage::new(inner.clone())))
                        .collect();
                    case("items just over", Value::List(many), invalid.clone());
                    let mut deeper = steps.to_vec();
                    deeper.push(Step::First(field.clone()));
                    cases(inner, &deeper, out, seen);
                }
                (Bound::List { items }, _) => {
                    let one = match &kind {
                        Kind::Enum(_) => Value::EnumNumber(1),
                        Kind::Uint32 => Value::U32(1),
                        Kind::Int32 => Value::I32(1),
                        Kind::Uint64 => Value::U64(1),
                        Kind::Int64 => Value::I64(1),
                        other => panic!("{here}: no case for a list of {other:?}"),
                    };
                    case(
                        "items just over",
                        Value::List(vec![one; items + 1]),
                        invalid.clone(),
                    );
                }
                (Bound::TextList { items, chars }, Kind::String) => {
                    case("items just over", texts(items + 1, "t"), invalid.clone());
                    case("an item with NUL", texts(1, "a\0"), first_invalid.clone());
                    case(
                        "an item just over",
                        Value::List(vec![Value::String("x".repeat(chars + 1))]),
                        first_invalid.clone(),
                    );
                    case(
                        "an item of 512 KiB",
                        Value::List(vec![Value::String("x".repeat(BIG))]),
                        first_invalid.clone(),
                    );
                }
                (b, k) => panic!("{here}: bound {b:?} does not fit a list of {k:?}"),
            }
            continue;
        }
        match &kind {
            Kind::Message(inner) if inner.full_name() == "google.protobuf.FieldMask" => {
                seen.insert(format!("{}.{}", message.full_name(), field.name()));
                let Bound::TextList { items, chars } = bound_of(message, &field) else {
                    panic!("{here}: a field mask needs a TextList bound");
                };
                let mask = |paths: Value| {
                    let mut m = DynamicMessage::new(inner.clone());
                    m.set_field_by_name("paths", paths);
                    Value::Message(m)
                };
                case(
                    "paths just over",
                    mask(texts(items + 1, "p")),
                    invalid.clone(),
                );
                case(
                    "a path with NUL",
                    mask(texts(1, "p\0")),
                    first_invalid.clone(),
                );
                case(
                    "a path just over",
                    mask(Value::List(vec![Value::String("p".repeat(chars + 1))])),
                    first_invalid.clone(),
                );
            }
            Kind::Message(inner) if inner.full_name().starts_with("google.protobuf.") => {}
            Kind::Message(inner) => {
                let mut deeper = steps.to_vec();
                deeper.push(Step::Field(field.clone()));
                cases(inner, &deeper, out, seen);
            }
            Kind::String => {
                seen.insert(format!("{}.{}", message.full_name(), field.name()));
                match bound_of(message, &field) {
                    Bound::Text { chars, .. } => {
                        case("with NUL", Value::String("a\0b".into()), invalid.clone());
                        case(
                            "just over",
                            Value::String("x".repeat(chars + 1)),
                            invalid.clone(),
                        );
                        if BIG > chars {
                            case(
                                "of 512 KiB",
                                Value::String("x".repeat(BIG)),
                                invalid.clone(),
                            );
                        }
                    }
                    Bound::Secret { bytes } => {
                        // The base value's own text is kept (PEM markers and
                        // the like), NUL and control characters appended.
                        case("with NUL", Value::String(String::new()), Expect::Sealed);
                        case(
                            "just over",
                            Value::String("s".repeat(bytes + 1)),
                            invalid.clone(),
                        );
                        let big = if BIG > bytes {
                            invalid.clone()
                        } else {
                            Expect::Sealed
                        };
                        case("of 512 KiB", Value::String("s".repeat(BIG)), big);
                    }
                    b => panic!("{here}: bound {b:?} does not fit a string"),
                }
            }
            Kind::Bytes => {
                seen.insert(format!("{}.{}", message.full_name(), field.name()));
                let Bound::Bytes { bytes } = bound_of(message, &field) else {
                    panic!("{here}: bytes need a Bytes bound");
                };
                case(
                    "just over",
                    Value::Bytes(vec![0u8; bytes + 1].into()),
                    invalid.clone(),
                );
                if BIG > bytes {
                    case(
                        "of 512 KiB",
                        Value::Bytes(vec![0u8; BIG].into()),
                        invalid.clone(),
                    );
                }
            }
            _ => {}
        }
    }
}

/// Sets `value` at `steps` / `leaf` inside `message`.
fn set(message: &mut DynamicMessage, steps: &[Step], leaf: &FieldDescriptor, value: Value) {
    match steps.split_first() {
        None => message.set_field(leaf, value),
        Some((Step::Field(f), rest)) => match message.get_field_mut(f) {
            Value::Message(inner) => set(inner, rest, leaf, value),
            other => panic!("{} is not a message: {other:?}", f.name()),
        },
        Some((Step::First(f), rest)) => {
            let Kind::Message(inner_desc) = f.kind() else {
                panic!("{} is not a list of messages", f.name());
            };
            match message.get_field_mut(f) {
                Value::List(items) => {
                    if items.is_empty() {
                        items.push(Value::Message(DynamicMessage::new(inner_desc)));
                    }
                    match &mut items[0] {
                        Value::Message(inner) => set(inner, rest, leaf, value),
                        other => panic!("{} holds {other:?}", f.name()),
                    }
                }
                other => panic!("{} is not a list: {other:?}", f.name()),
            }
        }
    }
}

/// Reads the string at `steps` / `leaf`, if set.
fn get_text(message: &DynamicMessage, steps: &[Step], leaf: &FieldDescriptor) -> Option<String> {
    match steps.split_first() {
        None => message.get_field(leaf).as_str().map(str::to_owned),
        Some((Step::Field(f), rest)) => match message.get_field(f).as_ref() {
            Value::Message(inner) => get_text(inner, rest, leaf),
            _ => None,
        },
        Some((Step::First(_), _)) => None,
    }
}

/// A full, valid typed value with the member `member` set.
fn valid_value(member: &str) -> pb::CredentialValue {
    use pb::credential_value::Value as V;
    let v = match member {
        "api_key" => V::ApiKey(pb::ApiKey {
            api_key: "sk-bounds-api-key".into(),
        }),
        "oauth_token" => V::OauthToken(pb::OAuthToken {
            access_token: "at-bounds".into(),
            refresh_token: "rt-bounds".into(),
            token_type: "Bearer".into(),
            ..Default::default()
        }),
        "basic_auth" => V::BasicAuth(pb::BasicAuth {
            username: "bounds".into(),
            password: "pw-bounds".into(),
        }),
        "db_connection" => V::DbConnection(pb::DbConnection {
            host: "db.internal".into(),
            port: 5432,
            database: "app".into(),
            username: "app".into(),
            password: "pw-bounds-db".into(),
            ssl_mode: pb::DbSslMode::Require as i32,
        }),
        "ssh_key" => V::SshKey(pb::SshKey {
            private_key:
                "-----BEGIN OPENSSH PRIVATE KEY-----\nYm91bmRz\n-----END OPENSSH PRIVATE KEY-----\n"
                    .into(),
            public_key: "ssh-ed25519 AAAAbounds".into(),
            passphrase: "pp-bounds".into(),
        }),
        "certificate" => V::Certificate(pb::Certificate {
            certificate_pem: "-----BEGIN CERTIFICATE-----\nYm91bmRz\n-----END CERTIFICATE-----\n"
                .into(),
            private_key_pem: "-----BEGIN PRIVATE KEY-----\nYm91bmRz\n-----END PRIVATE KEY-----\n"
                .into(),
            ca_chain_pem: String::new(),
        }),
        "custom" => V::Custom(pb::CustomSecret {
            fields: [("token".to_owned(), "custom-bounds".to_owned())].into(),
        }),
        other => panic!("no valid value for {other}"),
    };
    pb::CredentialValue { value: Some(v) }
}

/// The base request of `method`, for the changed field at `steps`.
///
/// Bounds are checked as a request is decoded, before any handler, so for
/// most methods the rest of the request cannot change the answer; requests
/// that carry secret values get a complete, valid base, because a secret
/// with NUL must then be stored.
fn base(method: &str, steps: &[Step], n: usize) -> Vec<u8> {
    // The typed value's member the change is in (`value.api_key.api_key`).
    let name = |s: &Step| match s {
        Step::Field(f) | Step::First(f) => f.name().to_owned(),
    };
    let member = match steps {
        [first, second, ..] if name(first) == "value" => Some(name(second)),
        _ => None,
    };
    match method {
        // A passphrase long enough that the NUL case tests its content,
        // not ExportTenant's minimum length.
        "/strongroom.v1.AdminService/ExportTenant" => pb::ExportTenantRequest {
            passphrase: "bounds-export-passphrase".into(),
            ..Default::default()
        }
        .encode_to_vec(),
        "/strongroom.v1.CredentialService/CreateCredential" => pb::CreateCredentialRequest {
            environment: "dev".into(),
            name: format!("bounds/created-{n}"),
            service: "bounds".into(),
            value: Some(valid_value(member.as_deref().unwrap_or("api_key"))),
            ..Default::default()
        }
        .encode_to_vec(),
        "/strongroom.v1.CredentialService/RotateCredential" => {
            let member = member.unwrap_or_else(|| "api_key".into());
            pb::RotateCredentialRequest {
                credential: path("dev", &format!("bounds/rotate-{member}")),
                new_value: Some(pb::rotate_credential_request::NewValue::Value(valid_value(
                    &member,
                ))),
                ..Default::default()
            }
            .encode_to_vec()
        }
        "/strongroom.v1.CredentialService/RevealCredential" => pb::RevealCredentialRequest {
            credential: path("dev", "bounds/rotate-api_key"),
            purpose: "bounds".into(),
            ..Default::default()
        }
        .encode_to_vec(),
        "/strongroom.v1.PolicyService/CreateGrant" => pb::CreateGrantRequest {
            subject: Some(pb::GrantSubject {
                subject: Some(pb::grant_subject::Subject::Role(pb::Role::Agent as i32)),
            }),
            selector: "bounds/*".into(),
            environments: vec!["dev".into()],
            capabilities: vec![pb::Capability::List as i32],
            reason: "bounds".into(),
            ..Default::default()
        }
        .encode_to_vec(),
        _ => Vec::new(),
    }
}

const MEMBERS: [&str; 7] = [
    "api_key",
    "oauth_token",
    "basic_auth",
    "db_connection",
    "ssh_key",
    "certificate",
    "custom",
];

async fn every_request_field_is_bounded(backend: Backend) {
    let server = TestServer::start(backend).await;
    let acme = server.tenant("acme").await;
    let (cert, key) = server
        .ca
        .client_cert(&acme.identity, strongroom_e2e::CertKind::Spiffe);
    let channel = server
        .channel(Some((&cert, &key)))
        .await
        .expect("admin channel");
    for member in MEMBERS {
        acme.client
            .credentials()
            .create_credential(pb::CreateCredentialRequest {
                environment: "dev".into(),
                name: format!("bounds/rotate-{member}"),
                service: "bounds".into(),
                value: Some(valid_value(member)),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("create the {member} credential: {e}"));
    }

    // Another principal of the same tenant reveals, 50 calls at a time,
    // for as long as the walk lasts.
    acme.client
        .credentials()
        .create_credential(pb::CreateCredentialRequest {
            environment: "dev".into(),
            name: "llm/steady".into(),
            service: "openai".into(),
            value: api_key("sk-steady-reveals"),
            ..Default::default()
        })
        .await
        .expect("create");
    let (agent_id, agent) = server.principal(&acme, "steady", pb::Role::Agent).await;
    grant(
        &acme,
        &agent_id,
        "llm/*",
        &["dev"],
        &[pb::Capability::Reveal],
        None,
    )
    .await;
    let done = Arc::new(AtomicBool::new(false));
    let reveals = Arc::new(AtomicUsize::new(0));
    let steady = {
        let (done, reveals) = (Arc::clone(&done), Arc::clone(&reveals));
        tokio::spawn(async move {
            while !done.load(Ordering::SeqCst) {
                let mut round = tokio::task::JoinSet::new();
                for _ in 0..50 {
                    let mut creds = agent.credentials();
                    round.spawn(async move {
                        creds
                            .reveal_credential(pb::RevealCredentialRequest {
                                credential: path("dev", "llm/steady"),
                                purpose: "steady".into(),
                                ..Default::default()
                            })
                            .await
                    });
                }
                while let Some(r) = round.join_next().await {
                    let r = r.expect("reveal task");
                    assert!(r.is_ok(), "a legitimate reveal failed: {:?}", r.err());
                    reveals.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
    };

    let pool = DescriptorPool::decode(strongroom_proto::FILE_DESCRIPTOR_SET).expect("descriptors");
    let mut seen = BTreeSet::new();
    let mut calls = 0usize;
    for service in pool
        .services()
        .filter(|s| s.package_name() == "strongroom.v1")
    {
        for method in service.methods() {
            let name = format!("/{}/{}", service.full_name(), method.name());
            let input = method.input();
            let mut all = Vec::new();
            cases(&input, &[], &mut all, &mut seen);
            for (n, case) in all.into_iter().enumerate() {
                let mut request =
                    DynamicMessage::decode(input.clone(), base(&name, &case.steps, n).as_slice())
                        .expect("base request");
                let value = match (&case.expect, &case.value) {
                    (Expect::Sealed, Value::String(s)) if s.is_empty() => {
                        let given = get_text(&request, &case.steps, &case.leaf).unwrap_or_default();
                        Value::String(format!("{given}\0\u{1}\t\n"))
                    }
                    _ => case.value.clone(),
                };
                set(&mut request, &case.steps, &case.leaf, value.clone());
                let answer = call(
                    &channel,
                    &name,
                    method.is_client_streaming(),
                    request.encode_to_vec(),
                )
                .await;
                calls += 1;
                let what = format!("{name} with {}", case.label);
                if let Err(status) = &answer {
                    assert!(
                        !matches!(
                            status.code(),
                            Code::Internal | Code::Unavailable | Code::Unknown
                        ),
                        "{what}: {:?} {}",
                        status.code(),
                        status.message()
                    );
                }
                match &case.expect {
                    Expect::Invalid(field) => {
                        let status = answer.expect_err(&what);
                        assert_eq!(
                            status.code(),
                            Code::InvalidArgument,
                            "{what}: {}",
                            status.message()
                        );
                        assert!(
                            status.message().starts_with(&format!("{field}: ")),
                            "{what}: the message must name {field}: {}",
                            status.message()
                        );
                        assert!(!status.message().contains('\0'), "{what}: echoes input");
                    }
                    Expect::Sealed => {
                        if let Err(status) = &answer {
                            assert!(
                                !status.message().contains(case.leaf.name()),
                                "{what}: a secret is refused: {}",
                                status.message()
                            );
                        }
                        if name.ends_with("/CreateCredential")
                            || name.ends_with("/RotateCredential")
                        {
                            answer.unwrap_or_else(|e| panic!("{what}: {e}"));
                            check_sealed_as_given(&acme, &name, &request, &case, &value).await;
                        }
                    }
                }
            }
        }
    }
    done.store(true, Ordering::SeqCst);
    steady.await.expect("the steady reveals");
    assert!(
        reveals.load(Ordering::SeqCst) >= 50,
        "the reveals did not run alongside"
    );

    // The walk reached every bounded field the table lists.
    let listed: BTreeSet<String> = TABLE.iter().map(|(m, f, _)| format!("{m}.{f}")).collect();
    let missed: Vec<_> = listed.difference(&seen).collect();
    assert!(
        missed.is_empty(),
        "bounded fields the walk never reached: {missed:?}"
    );
    assert!(
        calls > 500,
        "only {calls} calls: the walk found too few fields"
    );
    server.stop().await;
}

/// Reveals the credential a create or rotation wrote and compares the
/// secret field with what was sent, byte for byte.
async fn check_sealed_as_given(
    acme: &strongroom_e2e::TenantAdmin,
    method: &str,
    request: &DynamicMessage,
    case: &Case,
    sent: &Value,
) {
    let reference = if method.ends_with("/CreateCredential") {
        let env = request
            .get_field_by_name("environment")
            .expect("environment");
        let name = request.get_field_by_name("name").expect("name");
        path(env.as_str().expect("text"), name.as_str().expect("text"))
    } else {
        let req = pb::RotateCredentialRequest::decode(request.encode_to_vec().as_slice())
            .expect("decode");
        req.credential
    };
    let revealed = acme
        .client
        .credentials()
        .reveal_credential(pb::RevealCredentialRequest {
            credential: reference,
            purpose: "bounds check".into(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("{}: reveal: {e}", case.label))
        .into_inner();
    let Some(pb::reveal_credential_response::Revealed::Value(value)) = revealed.revealed else {
        panic!("{}: no whole value revealed", case.label);
    };
    // Re-read the revealed value with the same field path (below `value`).
    let desc = request
        .descriptor()
        .get_field_by_name(match case.steps.first() {
            Some(Step::Field(f)) => f.name(),
            _ => panic!("{}: secret outside a value", case.label),
        })
        .expect("value field");
    let Kind::Message(value_desc) = desc.kind() else {
        panic!("value is a message");
    };
    let dynamic =
        DynamicMessage::decode(value_desc, value.encode_to_vec().as_slice()).expect("decode value");
    let rest = &case.steps[1..];
    match sent {
        Value::String(s) => {
            let got = get_text(&dynamic, rest, &case.leaf);
            assert_eq!(
                got.as_deref(),
                Some(s.as_str()),
                "{}: not sealed as given",
                case.label
            );
        }
        Value::Map(entries) => {
            let mut holder = &dynamic;
            let mut owned;
            for step in rest {
                let Step::Field(f) = step else {
                    panic!("unexpected list")
                };
                owned = holder.get_field(f).as_message().expect("message").clone();
                holder = &owned;
            }
            let got = holder.get_field(&case.leaf);
            let got = got.as_map().expect("a map");
            for (k, v) in entries {
                assert_eq!(got.get(k), Some(v), "{}: not sealed as given", case.label);
            }
        }
        other => panic!("{}: unexpected secret value {other:?}", case.label),
    }
}
