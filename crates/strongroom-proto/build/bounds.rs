//! Generates the input bounds of every request from the proto comments.
//!
//! Every string, bytes, repeated and map field of a message that a request
//! can reach must state its bound on a line of its leading comment:
//!
//! - `Bound: at most N characters.` a single line of text: NUL and every
//!   other control character refused;
//! - `Bound: at most N characters; newlines and tabs allowed.`
//! - `Bound: at most N bytes.` (bytes fields);
//! - `Bound: at most N bytes; secret, ...` a secret value: sealed as given,
//!   only its size is bounded;
//! - `Bound: at most N items.` (repeated messages, enums, numbers);
//! - `Bound: at most N items of at most M characters each.` (repeated text);
//! - `Bound: at most N entries; keys at most M characters; values secret, at
//!   most K bytes each.` (a map of secret fields);
//! - on a `google.protobuf.FieldMask` field, `... items of at most M
//!   characters each` bounds its paths.
//!
//! A field without a bound fails the build, so a new field cannot skip the
//! check. The output implements `bounds::Fields` for every message a request
//! reaches, `bounds::Bounded` (which the codec calls after decoding) for
//! every request and response type, and lists every bound in `bounds::TABLE`
//! for tests.

use std::collections::{BTreeMap, BTreeSet};
use std::error::Error;
use std::fmt::Write as _;

use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FieldDescriptorProto, FileDescriptorSet};

/// A parsed bound.
#[derive(Debug, Clone, Default)]
struct Bound {
    chars: Option<u64>,
    bytes: Option<u64>,
    items: Option<u64>,
    item_chars: Option<u64>,
    multiline: bool,
    secret: bool,
    key_chars: Option<u64>,
    value_bytes: Option<u64>,
}

struct Message<'a> {
    /// Rust path, e.g. `crate::v1::credential_value::Value` for oneofs is
    /// built separately; this is the struct's path.
    rust: String,
    proto: &'a DescriptorProto,
    /// Leading comment of each field, by field index.
    comments: BTreeMap<usize, String>,
}

/// Generates the bounds code; returns it as Rust source.
pub fn generate(fds: &FileDescriptorSet) -> Result<String, Box<dyn Error>> {
    let mut messages: BTreeMap<String, Message<'_>> = BTreeMap::new();
    let mut requests = BTreeSet::new();
    let mut method_types = BTreeSet::new();
    for file in &fds.file {
        let package = file.package();
        if !package.starts_with("strongroom.") {
            continue;
        }
        let mut comments: BTreeMap<Vec<i32>, String> = BTreeMap::new();
        if let Some(info) = &file.source_code_info {
            for loc in &info.location {
                if let Some(c) = &loc.leading_comments {
                    comments.insert(loc.path.clone(), c.clone());
                }
            }
        }
        for (i, m) in file.message_type.iter().enumerate() {
            collect(
                &mut messages,
                &comments,
                &format!(".{package}"),
                "crate::v1",
                vec![4, i as i32],
                m,
            );
        }
        for service in &file.service {
            for method in &service.method {
                requests.insert(method.input_type().to_owned());
                method_types.insert(method.input_type().to_owned());
                method_types.insert(method.output_type().to_owned());
            }
        }
    }

    // Messages a request reaches.
    let mut reached = BTreeSet::new();
    let mut todo: Vec<String> = requests.iter().cloned().collect();
    while let Some(name) = todo.pop() {
        let Some(m) = messages.get(&name) else {
            continue;
        };
        if !reached.insert(name.clone()) {
            continue;
        }
        for f in &m.proto.field {
            if f.r#type() == Type::Message {
                todo.push(f.type_name().to_owned());
            }
        }
    }

    let mut out = String::new();
    let mut table = String::new();
    for name in &reached {
        let m = &messages[name];
        if m.proto.options.as_ref().is_some_and(|o| o.map_entry()) {
            continue;
        }
        let mut body = String::new();
        let mut oneofs: BTreeMap<i32, Vec<&FieldDescriptorProto>> = BTreeMap::new();
        for (i, f) in m.proto.field.iter().enumerate() {
            if let Some(o) = f.oneof_index
                && !f.proto3_optional()
            {
                oneofs.entry(o).or_default().push(f);
                continue;
            }
            let bound = field_bound(name, m, i, f, &messages)?;
            if let Some(b) = &bound {
                write_table(&mut table, name, f.name(), b);
            }
            body.push_str(&field_check(
                f,
                bound.as_ref(),
                &messages,
                &format!("self.{}", ident(f.name())),
            )?);
        }
        for (o, members) in &oneofs {
            let oneof_name = m.proto.oneof_decl[*o as usize].name();
            let enum_path = format!("{}::{}", module_of(&m.rust), camel(oneof_name));
            let mut arms = String::new();
            for f in members {
                let i = m
                    .proto
                    .field
                    .iter()
                    .position(|x| x.name() == f.name())
                    .unwrap_or(0);
                let bound = field_bound(name, m, i, f, &messages)?;
                if let Some(b) = &bound {
                    write_table(&mut table, name, f.name(), b);
                }
                let check = field_check_value(f, bound.as_ref(), &messages, "v")?;
                writeln!(
                    arms,
                    "Some({enum_path}::{}(v)) => {{ {check} }}",
                    camel(f.name())
                )?;
            }
            writeln!(arms, "_ => {{}}")?;
            writeln!(body, "match &self.{} {{ {arms} }}", ident(oneof_name))?;
        }
        writeln!(
            out,
            "impl Fields for {} {{\n#[allow(unused_variables)]\nfn check_fields(&self, at: Option<&Path<'_>>) -> Result<(), Violation> {{\n{body}Ok(())\n}}\n}}",
            m.rust
        )?;
    }
    for name in &method_types {
        let m = messages
            .get(name)
            .ok_or_else(|| format!("method type {name} is not a strongroom message"))?;
        if requests.contains(name) {
            writeln!(
                out,
                "impl Bounded for {} {{\nfn check_bounds(&self) -> Result<(), Violation> {{ self.check_fields(None) }}\n}}",
                m.rust
            )?;
        } else {
            writeln!(out, "impl Bounded for {} {{}}", m.rust)?;
        }
    }
    writeln!(
        out,
        "/// Every bound of every field a request reaches: (message, field, bound).\npub const TABLE: &[(&str, &str, FieldBound)] = &[\n{table}];"
    )?;
    Ok(out)
}

fn collect<'a>(
    messages: &mut BTreeMap<String, Message<'a>>,
    comments: &BTreeMap<Vec<i32>, String>,
    parent_proto: &str,
    parent_rust: &str,
    path: Vec<i32>,
    m: &'a DescriptorProto,
) {
    let proto_name = format!("{parent_proto}.{}", m.name());
    let rust = format!("{parent_rust}::{}", camel(m.name()));
    let mut field_comments = BTreeMap::new();
    for i in 0..m.field.len() {
        let mut p = path.clone();
        p.extend([2, i as i32]);
        if let Some(c) = comments.get(&p) {
            field_comments.insert(i, c.clone());
        }
    }
    for (j, nested) in m.nested_type.iter().enumerate() {
        let mut p = path.clone();
        p.extend([3, j as i32]);
        collect(
            messages,
            comments,
            &proto_name,
            &format!("{parent_rust}::{}", snake(m.name())),
            p,
            nested,
        );
    }
    messages.insert(
        proto_name,
        Message {
            rust,
            proto: m,
            comments: field_comments,
        },
    );
}

/// The bound a field's comment states, if the field needs one.
fn field_bound(
    message: &str,
    m: &Message<'_>,
    index: usize,
    f: &FieldDescriptorProto,
    messages: &BTreeMap<String, Message<'_>>,
) -> Result<Option<Bound>, Box<dyn Error>> {
    let repeated = f.label() == Label::Repeated;
    let needs = repeated
        || matches!(f.r#type(), Type::String | Type::Bytes)
        || f.type_name() == ".google.protobuf.FieldMask";
    if !needs {
        return Ok(None);
    }
    let comment = m.comments.get(&index).map(String::as_str).unwrap_or("");
    let line = comment
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("Bound:"))
        .ok_or_else(|| {
            format!(
                "{message}.{} has no `Bound:` line in its comment; every string, bytes and repeated field a request reaches needs one",
                f.name()
            )
        })?;
    let b = parse_bound(line).map_err(|e| format!("{message}.{}: {e}", f.name()))?;
    let is_map = repeated
        && messages
            .get(f.type_name())
            .is_some_and(|t| t.proto.options.as_ref().is_some_and(|o| o.map_entry()));
    let ok = if is_map {
        b.items.is_some() && b.key_chars.is_some() && b.value_bytes.is_some()
    } else if f.type_name() == ".google.protobuf.FieldMask" {
        b.items.is_some() && b.item_chars.is_some()
    } else if repeated {
        b.items.is_some() && (f.r#type() != Type::String || b.item_chars.is_some())
    } else if f.r#type() == Type::Bytes || b.secret {
        b.bytes.is_some()
    } else {
        b.chars.is_some()
    };
    if !ok {
        return Err(format!(
            "{message}.{}: bound `{line}` does not fit the field's type",
            f.name()
        )
        .into());
    }
    Ok(Some(b))
}

fn number_after(text: &str, prefix: &str) -> Option<u64> {
    let rest = &text[text.find(prefix)? + prefix.len()..];
    let digits: String = rest
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

fn parse_bound(line: &str) -> Result<Bound, String> {
    let mut b = Bound::default();
    for clause in line.split(';') {
        let c = clause.trim().trim_end_matches('.');
        if c.starts_with("at most") && c.contains(" items") {
            b.items = number_after(c, "at most");
            if c.contains("characters each") {
                b.item_chars = number_after(c, "of at most");
            }
        } else if c.starts_with("at most") && c.contains(" entries") {
            b.items = number_after(c, "at most");
        } else if c.starts_with("keys at most") {
            b.key_chars = number_after(c, "keys at most");
        } else if c.starts_with("values secret") {
            b.value_bytes = number_after(c, "at most");
        } else if c.starts_with("at most") && c.ends_with("characters") {
            b.chars = number_after(c, "at most");
        } else if c.starts_with("at most") && c.ends_with("bytes") {
            b.bytes = number_after(c, "at most");
        } else if c == "newlines and tabs allowed" {
            b.multiline = true;
        } else if c.starts_with("secret") {
            b.secret = true;
        } else {
            return Err(format!("cannot read the bound clause `{c}`"));
        }
    }
    Ok(b)
}

fn write_table(table: &mut String, message: &str, field: &str, b: &Bound) {
    let kind = if b.key_chars.is_some() {
        format!(
            "Kind::SecretMap {{ entries: {}, key_chars: {}, value_bytes: {} }}",
            b.items.unwrap_or(0),
            b.key_chars.unwrap_or(0),
            b.value_bytes.unwrap_or(0)
        )
    } else if let Some(items) = b.items {
        match b.item_chars {
            Some(c) => format!("Kind::TextList {{ items: {items}, chars: {c} }}"),
            None => format!("Kind::List {{ items: {items} }}"),
        }
    } else if b.secret {
        format!("Kind::Secret {{ bytes: {} }}", b.bytes.unwrap_or(0))
    } else if let Some(bytes) = b.bytes {
        format!("Kind::Bytes {{ bytes: {bytes} }}")
    } else {
        format!(
            "Kind::Text {{ chars: {}, multiline: {} }}",
            b.chars.unwrap_or(0),
            b.multiline
        )
    };
    let _ = writeln!(
        table,
        "({message:?}, {field:?}, FieldBound {{ kind: {kind} }}),",
        message = message.trim_start_matches('.'),
    );
}

/// The check of a non-oneof field, reading it as `access`.
fn field_check(
    f: &FieldDescriptorProto,
    bound: Option<&Bound>,
    messages: &BTreeMap<String, Message<'_>>,
    access: &str,
) -> Result<String, Box<dyn Error>> {
    let name = f.name();
    let repeated = f.label() == Label::Repeated;
    let is_map = repeated
        && messages
            .get(f.type_name())
            .is_some_and(|t| t.proto.options.as_ref().is_some_and(|o| o.map_entry()));
    if is_map {
        let b = bound.ok_or("map without a bound")?;
        return Ok(format!(
            "check_items({access}.len(), {items}, at, {name:?})?;\nfor (k, v) in &{access} {{ check_text(k, {kc}, false, at, {name:?}, None)?; check_secret(v.as_bytes(), {vb}, at, {name:?}, None)?; }}\n",
            items = b.items.unwrap_or(0),
            kc = b.key_chars.unwrap_or(0),
            vb = b.value_bytes.unwrap_or(0),
        ));
    }
    if f.type_name() == ".google.protobuf.FieldMask" {
        let b = bound.ok_or("field mask without a bound")?;
        return Ok(format!(
            "if let Some(mask) = &{access} {{ check_items(mask.paths.len(), {items}, at, {name:?})?; for (i, p) in mask.paths.iter().enumerate() {{ check_text(p, {c}, false, at, {name:?}, Some(i))?; }} }}\n",
            items = b.items.unwrap_or(0),
            c = b.item_chars.unwrap_or(0),
        ));
    }
    if repeated {
        let b = bound.ok_or("repeated field without a bound")?;
        let mut s = format!(
            "check_items({access}.len(), {}, at, {name:?})?;\n",
            b.items.unwrap_or(0)
        );
        match f.r#type() {
            Type::String => writeln!(
                s,
                "for (i, item) in {access}.iter().enumerate() {{ check_text(item, {}, {}, at, {name:?}, Some(i))?; }}",
                b.item_chars.unwrap_or(0),
                b.multiline
            )?,
            Type::Message if messages.contains_key(f.type_name()) => writeln!(
                s,
                "for (i, item) in {access}.iter().enumerate() {{ item.check_fields(Some(&Path::new(at, {name:?}, Some(i))))?; }}"
            )?,
            _ => {}
        }
        return Ok(s);
    }
    match f.r#type() {
        Type::Message if messages.contains_key(f.type_name()) => Ok(format!(
            "if let Some(v) = &{access} {{ v.check_fields(Some(&Path::new(at, {name:?}, None)))?; }}\n"
        )),
        Type::String | Type::Bytes => Ok(format!(
            "{}\n",
            scalar_check(f, bound.ok_or("text without a bound")?, access, false,)
        )),
        _ => Ok(String::new()),
    }
}

/// The check of a oneof member whose value is bound to `v` (a reference).
fn field_check_value(
    f: &FieldDescriptorProto,
    bound: Option<&Bound>,
    messages: &BTreeMap<String, Message<'_>>,
    v: &str,
) -> Result<String, Box<dyn Error>> {
    let name = f.name();
    match f.r#type() {
        Type::Message if messages.contains_key(f.type_name()) => Ok(format!(
            "{v}.check_fields(Some(&Path::new(at, {name:?}, None)))?;"
        )),
        Type::String | Type::Bytes => Ok(scalar_check(
            f,
            bound.ok_or("text without a bound")?,
            v,
            true,
        )),
        _ => Ok(String::new()),
    }
}

/// The check of a text or bytes field read as `v`: a place (`self.name`),
/// or a reference when `is_ref` (a oneof member's binding).
fn scalar_check(f: &FieldDescriptorProto, b: &Bound, v: &str, is_ref: bool) -> String {
    let name = f.name();
    let r = if is_ref {
        v.to_owned()
    } else {
        format!("&{v}")
    };
    if f.r#type() == Type::Bytes {
        format!("check_bytes({r}, {}, at, {name:?})?;", b.bytes.unwrap_or(0))
    } else if b.secret {
        format!(
            "check_secret({v}.as_bytes(), {}, at, {name:?}, None)?;",
            b.bytes.unwrap_or(0)
        )
    } else {
        format!(
            "check_text({r}, {}, {}, at, {name:?}, None)?;",
            b.chars.unwrap_or(0),
            b.multiline
        )
    }
}

/// A Rust field name for a proto field name.
fn ident(name: &str) -> String {
    const KEYWORDS: &[&str] = &[
        "as", "break", "const", "continue", "else", "enum", "false", "fn", "for", "if", "impl",
        "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref", "return", "static",
        "struct", "trait", "true", "type", "unsafe", "use", "where", "while", "abstract", "async",
        "await", "become", "box", "do", "dyn", "final", "macro", "override", "priv", "try",
        "typeof", "unsized", "virtual", "yield",
    ];
    if KEYWORDS.contains(&name) {
        format!("r#{name}")
    } else {
        name.to_owned()
    }
}

/// The module holding a message's nested types and oneofs.
fn module_of(rust_path: &str) -> String {
    let (parent, last) = rust_path.rsplit_once("::").unwrap_or(("", rust_path));
    format!("{parent}::{}", snake(last))
}

/// Splits an identifier into words the way prost names things (`OAuthToken`
/// is `o`, `auth`, `token`; `api_key` is `api`, `key`).
fn words(s: &str) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    let mut words = Vec::new();
    let mut cur = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if c == '_' {
            if !cur.is_empty() {
                words.push(std::mem::take(&mut cur));
            }
            continue;
        }
        let boundary = c.is_uppercase()
            && !cur.is_empty()
            && (chars[i - 1].is_lowercase()
                || chars[i - 1].is_ascii_digit()
                || chars.get(i + 1).is_some_and(|n| n.is_lowercase()));
        if boundary {
            words.push(std::mem::take(&mut cur));
        }
        cur.push(c);
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
}

fn snake(s: &str) -> String {
    words(s)
        .iter()
        .map(|w| w.to_lowercase())
        .collect::<Vec<_>>()
        .join("_")
}

fn camel(s: &str) -> String {
    words(s)
        .iter()
        .map(|w| {
            let lower = w.to_lowercase();
            let mut c = lower.chars();
            match c.next() {
                Some(first) => first.to_uppercase().collect::<String>() + c.as_str(),
                None => String::new(),
            }
        })
        .collect()
}
