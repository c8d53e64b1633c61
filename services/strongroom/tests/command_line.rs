//! The `strongroom` binary's command line, before any connection: a
//! plaintext endpoint is refused, and a missing command is a usage error.
//! (Building this test also builds the binary the end-to-end suite runs.)

use std::process::Command;

fn strongroom(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_strongroom"))
        .args(args)
        .env_clear()
        .output()
        .expect("run strongroom")
}

#[test]
fn a_plaintext_endpoint_is_refused() {
    let out = strongroom(&["--endpoint", "http://127.0.0.1:7443", "run", "--", "true"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("only https://"), "{stderr}");
}

#[test]
fn run_needs_a_command_and_valid_bindings() {
    let out = strongroom(&["run", "--inject", "KEY=sr://dev/llm/openai"]);
    assert_eq!(out.status.code(), Some(2));
    let out = strongroom(&["run", "--env", "KEY=https://example.com", "--", "true"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sr://"));
}

#[test]
fn missing_connection_files_are_named() {
    let out = strongroom(&["run", "--", "true"]);
    assert_eq!(out.status.code(), Some(125));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("STRONGROOM_CA"), "{stderr}");
}
