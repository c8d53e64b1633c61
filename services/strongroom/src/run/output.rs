//! The masker between the child's stdout/stderr and `run`'s: every value
//! `run` revealed (`--env`), in any form `strongroom-scan` knows (plain,
//! base64 standard and URL-safe, URL-encoded, hex, JSON-escaped), is
//! replaced by `[MASKED:NAME]`, also when the child writes it in pieces.
//! Each value masked counts as a leak and is reported to the server
//! (`RelayService.ReportLeak`), once per credential and form.
//!
//! Output is held back only while it could still be the start of a value,
//! and never longer than a line: held bytes are written at a newline (when
//! no value contains a newline, a value cannot span one, so this loses
//! nothing) or after [`IDLE_FLUSH`] without new output. A value written in
//! pieces further apart than that is not masked whole.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strongroom_proto::v1 as pb;
use strongroom_proto::v1::relay_service_client::RelayServiceClient;
use strongroom_scan::{Form, Hit, KnownValues, Redactor};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use zeroize::Zeroizing;

use strongroom_client::Transport;

/// How long held output waits for more before it is written anyway.
pub(crate) const IDLE_FLUSH: Duration = Duration::from_millis(200);

/// Values shorter than this are still masked: the child's own output is no
/// oracle, so only the empty value is left out.
const MIN_MASKED_LEN: usize = 1;

/// A revealed value the child holds.
pub(crate) struct Secret {
    /// The variable it is in (what the mask names).
    pub name: String,
    /// The credential it came from (what a leak report names).
    pub credential: pb::InjectionRef,
    /// The value.
    pub value: Zeroizing<String>,
}

/// What each output stream's redactor is built from.
#[derive(Clone)]
pub(crate) struct Masker {
    known: Option<Arc<KnownValues>>,
    names: Arc<Vec<(String, pb::InjectionRef)>>,
    /// True when no value holds a newline, so flushing at one is exact.
    line_flush: bool,
}

impl Masker {
    pub(crate) fn new(secrets: Vec<Secret>) -> Self {
        let line_flush = secrets.iter().all(|s| !s.value.contains('\n'));
        let known = if secrets.is_empty() {
            None
        } else {
            match KnownValues::new(
                secrets
                    .iter()
                    .enumerate()
                    .map(|(label, s)| (label, s.value.as_bytes())),
                MIN_MASKED_LEN,
            ) {
                Ok(known) => Some(Arc::new(known)),
                Err(e) => {
                    // Fail closed would mean not running at all; the
                    // compiler only fails on limits far beyond a few values.
                    eprintln!("strongroom run: warning: the output masker is off: {e}");
                    None
                }
            }
        };
        let names = secrets
            .into_iter()
            .map(|s| (s.name, s.credential))
            .collect();
        Self {
            known,
            names: Arc::new(names),
            line_flush,
        }
    }

    fn redactor(&self) -> Option<Redactor> {
        let known = self.known.as_ref()?;
        let mut redactor = Redactor::new(Arc::clone(known), "[MASKED]");
        for (label, (name, _)) in self.names.iter().enumerate() {
            redactor = redactor.with_replacement(label, format!("[MASKED:{name}]"));
        }
        Some(redactor)
    }
}

/// A leak seen in the child's output.
struct Leak {
    credential: pb::InjectionRef,
    form: Form,
    channel: &'static str,
}

/// Reports leaks to the server, once per credential and form, in the
/// background.
#[derive(Clone)]
pub(crate) struct Reporter {
    tx: Option<mpsc::UnboundedSender<Leak>>,
    task: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl Reporter {
    pub(crate) fn new(client: RelayServiceClient<Transport>, purpose: String) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(report_leaks(client, purpose, rx));
        Self {
            tx: Some(tx),
            task: Arc::new(Mutex::new(Some(task))),
        }
    }

    fn leak(&self, leak: Leak) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(leak);
        }
    }

    /// Waits (up to 10 s) for the reports still being sent; the other
    /// clones must be dropped first.
    pub(crate) async fn finish(mut self) {
        self.tx = None;
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task
            && tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .is_err()
        {
            eprintln!("strongroom run: warning: leak reports not confirmed by the server");
        }
    }
}

async fn report_leaks(
    mut client: RelayServiceClient<Transport>,
    purpose: String,
    mut rx: mpsc::UnboundedReceiver<Leak>,
) {
    let mut reported = HashSet::new();
    while let Some(leak) = rx.recv().await {
        let key = (
            leak.credential.environment.clone(),
            leak.credential.name.clone(),
            leak.credential.field.clone(),
            leak.form,
        );
        if !reported.insert(key) {
            continue;
        }
        let result = client
            .report_leak(pb::ReportLeakRequest {
                credential: Some(leak.credential.clone()),
                channel: leak.channel.to_owned(),
                form: leak.form.as_str().to_owned(),
                purpose: purpose.clone(),
            })
            .await;
        match result {
            Ok(response) if response.get_ref().grant_revoked => eprintln!(
                "strongroom run: sr://{}/{} leaked in the command's {}: reported; the tenant revoked the grant",
                leak.credential.environment, leak.credential.name, leak.channel
            ),
            Ok(_) => eprintln!(
                "strongroom run: sr://{}/{} appeared ({}) in the command's {}: masked and reported",
                leak.credential.environment,
                leak.credential.name,
                leak.form.as_str(),
                leak.channel
            ),
            Err(status) => eprintln!(
                "strongroom run: warning: reporting a leak of sr://{}/{} failed: {}: {}",
                leak.credential.environment,
                leak.credential.name,
                status.code(),
                status.message()
            ),
        }
    }
}

/// Copies the child's `source` to `sink` through the masker until the
/// child's end of the pipe closes, or `grace` after `done` turns true (the
/// child exited; background processes may still hold the pipe).
pub(crate) async fn pump<R, W>(
    mut source: R,
    mut sink: W,
    masker: Masker,
    channel: &'static str,
    reporter: Reporter,
    mut done: watch::Receiver<bool>,
    grace: Duration,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut redactor = masker.redactor();
    let mut buffer = Zeroizing::new(vec![0u8; 16 * 1024]);
    let mut out = Zeroizing::new(Vec::new());
    let mut deadline: Option<tokio::time::Instant> = None;
    let report = |hits: Vec<Hit>| {
        for hit in hits {
            if let Some((_, credential)) = masker.names.get(hit.label) {
                reporter.leak(Leak {
                    credential: credential.clone(),
                    form: hit.form,
                    channel,
                });
            }
        }
    };
    loop {
        let held = redactor.as_ref().is_some_and(|r| r.held_len() > 0);
        let idle = async {
            if held {
                tokio::time::sleep(IDLE_FLUSH).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        let stop = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            read = source.read(buffer.as_mut_slice()) => {
                let n = match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                out.clear();
                match redactor.as_mut() {
                    None => out.extend_from_slice(&buffer[..n]),
                    Some(r) => {
                        let mut rest = &buffer[..n];
                        // Up to each newline, then flushed: nothing is held
                        // across a line when no value spans one.
                        while masker.line_flush
                            && let Some(i) = rest.iter().position(|b| *b == b'\n')
                        {
                            report(r.push(&rest[..=i], &mut out));
                            report(r.flush(&mut out));
                            rest = &rest[i + 1..];
                        }
                        report(r.push(rest, &mut out));
                    }
                }
                if sink.write_all(&out).await.and(sink.flush().await).is_err() {
                    break;
                }
            }
            () = idle => {
                out.clear();
                if let Some(r) = redactor.as_mut() {
                    report(r.flush(&mut out));
                }
                if sink.write_all(&out).await.and(sink.flush().await).is_err() {
                    break;
                }
            }
            changed = done.changed(), if deadline.is_none() => {
                if changed.is_err() || *done.borrow() {
                    deadline = Some(tokio::time::Instant::now() + grace);
                }
            }
            () = stop => break,
        }
    }
    out.clear();
    if let Some(r) = redactor.as_mut() {
        report(r.flush(&mut out));
    }
    let _ = sink.write_all(&out).await;
    let _ = sink.flush().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(name: &str, value: &str) -> Secret {
        Secret {
            name: name.into(),
            credential: pb::InjectionRef {
                environment: "dev".into(),
                name: "db/main".into(),
                field: String::new(),
            },
            value: Zeroizing::new(value.into()),
        }
    }

    /// Pumps `chunks` (written with `pause` between them) through a masker
    /// and returns what comes out, and how long the first line took.
    async fn masked(secrets: Vec<Secret>, chunks: &[&[u8]], pause: Duration) -> Vec<u8> {
        let (mut child, source) = tokio::io::duplex(1024);
        let (sink, mut reader) = tokio::io::duplex(64 * 1024);
        let (_done_tx, done) = watch::channel(false);
        let reporter = Reporter {
            tx: None,
            task: Arc::new(Mutex::new(None)),
        };
        let pump = tokio::spawn(pump(
            source,
            sink,
            Masker::new(secrets),
            "stdout",
            reporter,
            done,
            Duration::from_secs(1),
        ));
        for chunk in chunks {
            child
                .write_all(chunk)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            tokio::time::sleep(pause).await;
        }
        drop(child);
        pump.await.unwrap_or_else(|e| panic!("{e}"));
        let mut out = Vec::new();
        reader
            .read_to_end(&mut out)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        out
    }

    #[tokio::test]
    async fn masks_a_value_split_across_writes() {
        let value = "pg-pass-7f3a9c2e1b";
        let out = masked(
            vec![secret("DB_PASSWORD", value)],
            &[b"password: pg-pass-", b"7f3a9c2e1b\nnext\n"],
            Duration::from_millis(20),
        )
        .await;
        assert_eq!(
            String::from_utf8_lossy(&out),
            "password: [MASKED:DB_PASSWORD]\nnext\n"
        );
    }

    #[tokio::test]
    async fn a_line_is_not_held_back() {
        let (mut child, source) = tokio::io::duplex(1024);
        let (sink, mut reader) = tokio::io::duplex(64 * 1024);
        let (_done_tx, done) = watch::channel(false);
        let reporter = Reporter {
            tx: None,
            task: Arc::new(Mutex::new(None)),
        };
        let _pump = tokio::spawn(pump(
            source,
            sink,
            Masker::new(vec![secret("K", "a-rather-long-secret-value")]),
            "stdout",
            reporter,
            done,
            Duration::from_secs(1),
        ));
        child
            .write_all(b"ready\n")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut line = [0u8; 6];
        // Arrives without waiting for the idle flush.
        tokio::time::timeout(IDLE_FLUSH / 2, reader.read_exact(&mut line))
            .await
            .unwrap_or_else(|_| panic!("the line was held back"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&line, b"ready\n");
        child
            .write_all(b"prompt: ")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut prompt = [0u8; 8];
        tokio::time::timeout(IDLE_FLUSH * 3, reader.read_exact(&mut prompt))
            .await
            .unwrap_or_else(|_| panic!("the prompt was never written"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&prompt, b"prompt: ");
    }

    #[tokio::test]
    async fn without_values_output_is_copied() {
        let out = masked(Vec::new(), &[b"a", b"b\n"], Duration::ZERO).await;
        assert_eq!(out, b"ab\n");
    }
}
