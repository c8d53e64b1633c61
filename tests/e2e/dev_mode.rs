//! `strongroomd dev` as a newcomer meets it: the grpcurl commands it prints
//! work exactly as printed, and a restart with another root key is refused.

use std::process::Stdio;
use std::time::Duration;

use strongroom_e2e::server_binary;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Starts `strongroomd dev --dir dev` in `work` on a free port; returns the
/// child and every stdout line up to the "serving" log line.
async fn start_dev(work: &std::path::Path) -> (Child, Vec<String>) {
    let mut child = Command::new(server_binary())
        .args(["dev", "--dir", "dev", "--listen", "127.0.0.1:0"])
        .current_dir(work)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn strongroomd dev");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut seen = Vec::new();
    let read = async {
        while let Ok(Some(line)) = lines.next_line().await {
            let serving = line.contains("serving addr=");
            seen.push(line);
            if serving {
                return true;
            }
        }
        false
    };
    let ok = tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .unwrap_or(false);
    assert!(ok, "strongroomd dev did not start:\n{}", seen.join("\n"));
    (child, seen)
}

#[tokio::test]
async fn printed_grpcurl_commands_work_as_printed() {
    let work = tempfile::tempdir().expect("tempdir");
    let (mut child, printed) = start_dev(work.path()).await;
    let commands: Vec<&String> = printed
        .iter()
        .filter(|l| l.starts_with("grpcurl "))
        .collect();
    assert_eq!(
        commands.len(),
        4,
        "dev mode prints four commands:\n{}",
        printed.join("\n")
    );
    let grpcurl_dir = crate::grpcurl::grpcurl_binary()
        .parent()
        .expect("grpcurl folder")
        .to_path_buf();
    let path = format!(
        "{}:{}",
        grpcurl_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut outputs = Vec::new();
    for command in &commands {
        // Exactly as printed, through a shell, as a newcomer would paste it.
        let out = Command::new("bash")
            .arg("-c")
            .arg(command.as_str())
            .current_dir(work.path())
            .env("PATH", &path)
            .output()
            .await
            .expect("run grpcurl");
        assert!(
            out.status.success(),
            "printed command failed: {command}\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        outputs.push(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    assert!(
        outputs[0].contains("\"name\": \"llm/openai\""),
        "{}",
        outputs[0]
    );
    assert!(outputs[1].contains("CAPABILITY_REVEAL"), "{}", outputs[1]);
    assert!(
        outputs[2].contains("sk-demo-not-a-real-key"),
        "{}",
        outputs[2]
    );
    assert!(outputs[2].contains("leaseId"), "{}", outputs[2]);
    assert!(
        outputs[3].contains("AUDIT_ACTION_CREDENTIAL_REVEAL"),
        "{}",
        outputs[3]
    );
    child.start_kill().expect("stop");
    let _ = child.wait().await;
}

#[tokio::test]
async fn another_root_key_is_refused_at_start() {
    let work = tempfile::tempdir().expect("tempdir");
    let (mut child, _) = start_dev(work.path()).await;
    child.start_kill().expect("stop");
    let _ = child.wait().await;
    // A valid key, but not the one the database was created with.
    std::fs::write(work.path().join("dev/root.key"), "11".repeat(32)).expect("write key");
    let out = Command::new(server_binary())
        .args(["dev", "--dir", "dev", "--listen", "127.0.0.1:0"])
        .current_dir(work.path())
        .env_clear()
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), out)
        .await
        .expect("strongroomd must refuse promptly, not serve")
        .expect("run");
    assert!(!out.status.success(), "started with the wrong root key");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("root key"), "{err}");
    assert!(err.contains("does not match"), "{err}");
}
