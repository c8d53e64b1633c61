//! Generates the `strongroom.v1` prost messages and tonic clients and servers
//! from `proto/strongroom/v1/*.proto` with `protox` (a protobuf compiler in
//! Rust, so no system `protoc` is needed), and writes the encoded file
//! descriptor set (imports included) to `OUT_DIR` for server reflection.

#[path = "build/bounds.rs"]
mod bounds;

use std::error::Error;
use std::path::{Path, PathBuf};

/// Root of the proto tree (the buf module), relative to this crate.
const PROTO_ROOT: &str = "../../proto";

/// Directory of the `strongroom.v1` package inside the proto tree.
const PACKAGE_DIR: &str = "../../proto/strongroom/v1";

/// Name of the descriptor set in `OUT_DIR`, without `.bin`; read back by
/// `tonic::include_file_descriptor_set!` in `src/lib.rs`.
const DESCRIPTOR_SET: &str = "strongroom_v1_descriptor";

/// Messages that carry secret material. They get no derived `Debug` (which
/// would print every field); `src/lib.rs` implements a redacting one for each.
/// A oneof inherits the setting of its message, so `credential_value::Value`
/// is covered too.
const REDACTED_DEBUG: &[&str] = &[
    ".strongroom.v1.ApiKey",
    ".strongroom.v1.OAuthToken",
    ".strongroom.v1.BasicAuth",
    ".strongroom.v1.DbConnection",
    ".strongroom.v1.SshKey",
    ".strongroom.v1.Certificate",
    ".strongroom.v1.CustomSecret",
    ".strongroom.v1.CredentialValue",
    ".strongroom.v1.RevealedField",
    ".strongroom.v1.ScanTextRequest",
    ".strongroom.v1.ScanTextResponse",
    ".strongroom.v1.ExportTenantRequest",
    ".strongroom.v1.ImportTenantHeader",
    // The tenant notifier's signing secret.
    ".strongroom.v1.Notifier",
    // The relay: header values, URLs (query values) and bodies may carry
    // credentials.
    ".strongroom.v1.HttpHeader",
    ".strongroom.v1.RelayRequestHead",
    ".strongroom.v1.ForwardRequest",
    ".strongroom.v1.ForwardResponse",
];

fn main() -> Result<(), Box<dyn Error>> {
    // A directory is scanned recursively, so added, edited and removed proto
    // files all trigger a rebuild.
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=build/bounds.rs");

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let protos = proto_files(Path::new(PACKAGE_DIR))?;

    let descriptors = protox::Compiler::new([PathBuf::from(PROTO_ROOT)])?
        .include_source_info(true)
        .include_imports(true)
        .open_files(&protos)?
        .file_descriptor_set();
    std::fs::write(out_dir.join("bounds.rs"), bounds::generate(&descriptors)?)?;
    std::fs::write(
        out_dir.join(format!("{DESCRIPTOR_SET}.bin")),
        prost::Message::encode_to_vec(&descriptors),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .skip_debug(REDACTED_DEBUG)
        // Maps as BTreeMap: a message encodes to the same bytes every time
        // (keys in order), which the request fingerprints of idempotent
        // retries rely on.
        .btree_map(".")
        // Decodes with prost, then refuses any field over its bound.
        .codec_path("crate::codec::BoundedCodec")
        .compile_fds(descriptors)?;
    Ok(())
}

/// Every `.proto` file of the package, sorted so builds are reproducible.
fn proto_files(dir: &Path) -> Result<Vec<PathBuf>, Box<dyn Error>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "proto") {
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err(format!("no .proto files in {}", dir.display()).into());
    }
    files.sort();
    Ok(files)
}
