//! The `strongroomd` binary's command line: configuration errors name their
//! key and exit non-zero before anything is served. (Also makes `cargo test`
//! build the binary that the end-to-end suite in `tests/` starts.)

use std::process::Command;

fn strongroomd() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_strongroomd"));
    cmd.env_clear();
    cmd
}

#[test]
fn missing_root_key_is_named() {
    let out = strongroomd()
        .arg("serve")
        .env("STRONGROOM_TLS_CERT", "c.pem")
        .env("STRONGROOM_TLS_KEY", "k.pem")
        .env("STRONGROOM_TLS_CLIENT_CA", "ca.pem")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`root_key`"), "{err}");
}

#[test]
fn bad_listen_address_is_named() {
    let out = strongroomd()
        .arg("serve")
        .env("STRONGROOM_LISTEN", "not-an-address")
        .env("STRONGROOM_ROOT_KEY", "00")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`listen`"), "{err}");
}

#[test]
fn unknown_config_file_key_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("strongroom.toml");
    std::fs::write(&path, "lisen = \"127.0.0.1:1\"\n").expect("write");
    let out = strongroomd()
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("lisen"), "{err}");
}

#[test]
fn migrate_needs_only_the_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("strongroom.db");
    let out = strongroomd()
        .arg("migrate")
        .env("STRONGROOM_DATABASE_BACKEND", "sqlite")
        .env("STRONGROOM_SQLITE_PATH", &path)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(path.exists(), "the database was not created");
}
