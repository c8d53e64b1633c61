//! Running the `strongroom` CLI in end-to-end tests: its binary, an agent's
//! certificate files, and the tools its children are (Python with
//! `requests` and `httpx`, curl, git).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;

use crate::{CertKind, TestServer};

/// The path of the `strongroom` binary built in this target directory
/// (`STRONGROOM_BIN` overrides it).
pub fn cli_binary() -> PathBuf {
    if let Ok(p) = std::env::var("STRONGROOM_BIN") {
        return PathBuf::from(p);
    }
    let server = crate::server_binary();
    let bin = server.with_file_name("strongroom");
    assert!(
        bin.exists(),
        "{} not found: build it first (`cargo build -p strongroom`; `cargo test --workspace` builds it)",
        bin.display()
    );
    bin
}

/// The Python the tests run children with: `STRONGROOM_TEST_PYTHON` (set
/// by `scripts/test` to its venv with `requests` and `httpx`), else that
/// venv's default place.
pub fn python() -> PathBuf {
    if let Ok(p) = std::env::var("STRONGROOM_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let py = Path::new(&home).join(".cache/strongroom-tools/py/bin/python");
    assert!(
        py.exists(),
        "{} not found: run scripts/test, which creates the venv with requests and httpx",
        py.display()
    );
    py
}

/// An identity's certificate and key written to files, for the CLI.
pub struct CliIdentity {
    /// Holds the files.
    pub dir: tempfile::TempDir,
    endpoint: String,
    ca: PathBuf,
}

impl CliIdentity {
    /// Writes a fresh certificate of `server`'s CA for `identity`.
    pub fn new(server: &TestServer, identity: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = server.ca.client_cert(identity, CertKind::Spiffe);
        std::fs::write(dir.path().join("agent.pem"), cert).expect("write cert");
        std::fs::write(dir.path().join("agent-key.pem"), key).expect("write key");
        std::fs::create_dir(dir.path().join("home")).expect("home");
        Self {
            dir,
            endpoint: server.endpoint(),
            ca: server.dir.path().join("ca.pem"),
        }
    }

    /// `strongroom ARGS...` with a clean environment: PATH, a fresh HOME,
    /// and the connection settings in `STRONGROOM_*`; output piped.
    pub fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = Command::new(cli_binary());
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.dir.path().join("home"))
            .env("LANG", "C.UTF-8")
            .env("STRONGROOM_ENDPOINT", &self.endpoint)
            .env("STRONGROOM_CA", &self.ca)
            .env("STRONGROOM_CERT", self.dir.path().join("agent.pem"))
            .env("STRONGROOM_KEY", self.dir.path().join("agent-key.pem"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }
}

/// What a finished `strongroom` printed and how it exited.
#[derive(Debug)]
pub struct Finished {
    /// The exit code (`None` if a signal ended it).
    pub code: Option<i32>,
    /// Its stdout, lossy UTF-8.
    pub stdout: String,
    /// Its stderr, lossy UTF-8.
    pub stderr: String,
}

/// Runs `cmd` to the end (at most 60 s).
pub async fn finish(mut cmd: Command) -> Finished {
    let output = tokio::time::timeout(std::time::Duration::from_secs(60), cmd.output())
        .await
        .expect("strongroom did not finish within 60 s")
        .expect("run strongroom");
    Finished {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}
