//! The command `run` starts: its environment, its output through the
//! masker, SIGINT/SIGTERM/SIGHUP/SIGQUIT forwarded to it, and its exit
//! status.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt as _;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use rustix::process::{Pid, Signal, kill_process};
use tokio::signal::unix::{SignalKind, signal};
use zeroize::Zeroizing;

use super::output::{self, Reporter, Secret};
use crate::Error;

/// How long the output of the command's leftovers (background processes
/// holding its stdout or stderr) is still copied after it exits.
const OUTPUT_GRACE: Duration = Duration::from_secs(1);

/// Starts `command` with `env` set and `clear` removed from `run`'s own
/// environment, waits for it, and returns its exit code (128 + signal when
/// a signal ended it). Values reach the child only through its environment,
/// never its argv.
pub(crate) async fn run_child(
    command: &[OsString],
    clear: &[&str],
    env: &[(String, Zeroizing<String>)],
    secrets: Vec<Secret>,
    reporter: Reporter,
) -> Result<i32, Error> {
    let Some((program, arguments)) = command.split_first() else {
        return Err(Error::Usage("no command given".into()));
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(arguments);
    for var in clear {
        cmd.env_remove(var);
    }
    for (name, value) in env {
        cmd.env(name, value.as_str());
    }
    cmd.stdin(Stdio::inherit())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Installed before the child exists, so no signal is missed (and the
    // default action, ending `run` without cleaning up, never happens).
    let signal_error = |e: std::io::Error| Error::Forwarder(format!("signal handling: {e}"));
    let mut interrupt = signal(SignalKind::interrupt()).map_err(signal_error)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(signal_error)?;
    let mut hangup = signal(SignalKind::hangup()).map_err(signal_error)?;
    let mut quit = signal(SignalKind::quit()).map_err(signal_error)?;

    let mut child = cmd.spawn().map_err(|error| Error::Spawn {
        program: super::program_name(command),
        error,
    })?;
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .and_then(Pid::from_raw);
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let (done_tx, done_rx) = tokio::sync::watch::channel(false);
    let masker = output::Masker::new(secrets);
    let pumps = [
        stdout.map(|out| {
            tokio::spawn(output::pump(
                out,
                tokio::io::stdout(),
                masker.clone(),
                "stdout",
                reporter.clone(),
                done_rx.clone(),
                OUTPUT_GRACE,
            ))
        }),
        stderr.map(|err| {
            tokio::spawn(output::pump(
                err,
                tokio::io::stderr(),
                masker.clone(),
                "stderr",
                reporter.clone(),
                done_rx.clone(),
                OUTPUT_GRACE,
            ))
        }),
    ];

    let forward = |sig: Signal| {
        if let Some(pid) = pid {
            // The child may have exited in between: nothing to do then.
            let _ = kill_process(pid, sig);
        }
    };
    let status: ExitStatus = loop {
        tokio::select! {
            status = child.wait() => {
                break status.map_err(|e| Error::Forwarder(format!("waiting for the command: {e}")))?;
            }
            _ = interrupt.recv() => forward(Signal::INT),
            _ = terminate.recv() => forward(Signal::TERM),
            _ = hangup.recv() => forward(Signal::HUP),
            _ = quit.recv() => forward(Signal::QUIT),
        }
    };
    let _ = done_tx.send(true);
    for pump in pumps.into_iter().flatten() {
        let _ = pump.await;
    }
    reporter.finish().await;
    Ok(match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => crate::error::EXIT_FAILURE,
    })
}
