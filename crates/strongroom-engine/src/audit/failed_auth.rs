//! The platform-level chain's failed authentications, coalesced.
//!
//! Promises: failed authentications cost the database at most one event per
//! identity per [`FAILED_AUTH_WINDOW`], and at most
//! [`FAILED_AUTH_PER_SECOND`] events a second overall; the failures in
//! between are counted into the identity's next event, or into one written
//! by [`Engine::flush_failed_authentications`] once its window has passed.
//! Flushed events count against the same per-second limit (the rest are
//! counted under `*`), and identities are tracked by their first 512
//! characters, so the coalescer's memory is bounded too.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use strongroom_core::audit::{Action, AuditDetail, AuditDraft, Outcome};
use strongroom_core::policy::Reason;
use strongroom_core::scope::SystemScope;

use crate::Engine;

/// Longest presented identity tracked (and recorded) by the failed
/// authentication coalescer, in characters.
const FAILED_AUTH_IDENTITY_CHARS: usize = 512;

/// Repeated failed authentications of one identity within this window are
/// coalesced into one platform event.
pub const FAILED_AUTH_WINDOW: Duration = Duration::from_secs(5);
/// Most failed-authentication events written per second, all identities
/// together; failures beyond it are counted under the identity `*`.
pub const FAILED_AUTH_PER_SECOND: u32 = 20;
/// Most identities tracked at once; beyond it, failures are counted under
/// `*`.
const FAILED_AUTH_TRACKED: usize = 10_000;

impl Engine {
    /// Records a failed authentication (a verified certificate whose
    /// identity is bound nowhere, or that names no identity) in the platform
    /// chain, coalescing repeats (see the module's promises). A failure to
    /// record is logged; the refusal stands either way.
    pub async fn record_failed_authentication(
        &self,
        identity: &str,
        peer: Option<&str>,
        request_id: &str,
        reason: Reason,
    ) {
        let Some(failure) = self
            .failed_auth
            .admit(identity, peer, reason, Instant::now())
        else {
            return;
        };
        self.append_failed_authentication(failure, Some(request_id))
            .await;
    }

    /// Records the failures coalesced since each identity's last event,
    /// once its window has passed without a new event (so the last burst of
    /// an identity is counted too). Run every [`FAILED_AUTH_WINDOW`] by the
    /// server's failed-authentication task.
    pub async fn flush_failed_authentications(&self, _system: &SystemScope) {
        for failure in self.failed_auth.due(Instant::now()) {
            self.append_failed_authentication(failure, None).await;
        }
    }

    /// Appends one coalesced failure to the platform chain.
    async fn append_failed_authentication(&self, failure: Failure, request_id: Option<&str>) {
        let mut draft = AuditDraft::new_at(
            Action::AuthenticationFailed,
            Outcome::Denied,
            failure.reason.as_str(),
            self.now(),
        );
        // The presented identity is the caller's text: stored without
        // control characters and bounded, like any free text.
        draft.actor = failure
            .identity
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .take(FAILED_AUTH_IDENTITY_CHARS)
            .collect();
        draft.peer = failure.peer;
        draft.request_id = request_id.map(str::to_owned);
        draft.detail = Some(AuditDetail::FailedAuthentications {
            count: failure.count,
        });
        self.record_platform(draft, "a failed authentication").await;
    }
}

/// Failed authentications seen recently, to coalesce them.
#[derive(Default)]
pub(crate) struct FailedAuthLog {
    inner: Mutex<FailedAuthState>,
}

#[derive(Default)]
struct FailedAuthState {
    identities: HashMap<String, Tracked>,
    /// The current one-second window and the events written in it.
    second: Option<Instant>,
    written: u32,
}

/// One identity's failures since its last event.
struct Tracked {
    /// When its last event was written.
    at: Instant,
    /// Failures since, not yet recorded.
    suppressed: u64,
    /// The latest failure's reason and peer.
    reason: Reason,
    peer: Option<String>,
}

/// A platform event to write: the failures of one identity.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Failure {
    identity: String,
    peer: Option<String>,
    reason: Reason,
    count: u64,
}

impl FailedAuthLog {
    /// Whether a failure of `identity` at `now` is to be written now: if so,
    /// the event (under the identity `*` once the overall rate or the
    /// tracking limit is reached) with the failures it stands for.
    fn admit(
        &self,
        identity: &str,
        peer: Option<&str>,
        reason: Reason,
        now: Instant,
    ) -> Option<Failure> {
        let identity = truncated(identity, FAILED_AUTH_IDENTITY_CHARS);
        let mut state = self.inner.lock().ok()?;
        let state = &mut *state;
        if state
            .second
            .is_none_or(|s| now.duration_since(s) >= Duration::from_secs(1))
        {
            state.second = Some(now);
            state.written = 0;
        }
        if state.identities.len() >= FAILED_AUTH_TRACKED {
            state
                .identities
                .retain(|_, t| t.suppressed > 0 || now.duration_since(t.at) < FAILED_AUTH_WINDOW);
        }
        let mut key = identity;
        if state.written >= FAILED_AUTH_PER_SECOND
            || (state.identities.len() >= FAILED_AUTH_TRACKED
                && !state.identities.contains_key(identity))
        {
            key = "*";
        }
        let count = match state.identities.get_mut(key) {
            None => {
                state.identities.insert(
                    key.to_owned(),
                    Tracked {
                        at: now,
                        suppressed: 0,
                        reason,
                        peer: peer.map(str::to_owned),
                    },
                );
                1
            }
            Some(t) if now.duration_since(t.at) >= FAILED_AUTH_WINDOW => {
                let count = t.suppressed + 1;
                t.at = now;
                t.suppressed = 0;
                count
            }
            Some(t) => {
                t.suppressed += 1;
                t.reason = reason;
                t.peer = peer.map(str::to_owned);
                return None;
            }
        };
        state.written += 1;
        Some(Failure {
            identity: key.to_owned(),
            peer: peer.map(str::to_owned),
            reason,
            count,
        })
    }

    /// The coalesced failures whose window has passed, as events to write,
    /// within what is left of the current second's write limit; the rest
    /// are counted under `*`, written by a later flush. Forgets identities
    /// with nothing left to record.
    fn due(&self, now: Instant) -> Vec<Failure> {
        let Ok(mut state) = self.inner.lock() else {
            return Vec::new();
        };
        let state = &mut *state;
        if state
            .second
            .is_none_or(|s| now.duration_since(s) >= Duration::from_secs(1))
        {
            state.second = Some(now);
            state.written = 0;
        }
        let mut out = Vec::new();
        let mut over: Option<Tracked> = None;
        let written = &mut state.written;
        state.identities.retain(|identity, t| {
            if now.duration_since(t.at) < FAILED_AUTH_WINDOW {
                return true;
            }
            if t.suppressed > 0 {
                if *written < FAILED_AUTH_PER_SECOND {
                    *written += 1;
                    out.push(Failure {
                        identity: identity.clone(),
                        peer: t.peer.take(),
                        reason: t.reason,
                        count: t.suppressed,
                    });
                } else {
                    let o = over.get_or_insert(Tracked {
                        at: now,
                        suppressed: 0,
                        reason: t.reason,
                        peer: None,
                    });
                    o.suppressed += t.suppressed;
                    o.reason = t.reason;
                    o.peer = t.peer.take();
                }
            }
            false
        });
        if let Some(o) = over {
            match state.identities.get_mut("*") {
                Some(t) => {
                    t.suppressed += o.suppressed;
                    t.reason = o.reason;
                    t.peer = o.peer;
                }
                None => {
                    state.identities.insert("*".to_owned(), o);
                }
            }
        }
        out
    }
}

/// The first `chars` characters of `text`.
fn truncated(text: &str, chars: usize) -> &str {
    text.char_indices()
        .nth(chars)
        .map_or(text, |(i, _)| &text[..i])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail(log: &FailedAuthLog, identity: &str, at: Instant) -> Option<(String, u64)> {
        log.admit(identity, Some("127.0.0.1:1"), Reason::UnknownIdentity, at)
            .map(|f| (f.identity, f.count))
    }

    #[test]
    fn repeated_failures_are_coalesced_and_counted() {
        let log = FailedAuthLog::default();
        let t0 = Instant::now();
        assert_eq!(fail(&log, "a", t0), Some(("a".into(), 1)));
        for i in 1..10 {
            assert_eq!(fail(&log, "a", t0 + Duration::from_millis(i * 10)), None);
        }
        assert_eq!(fail(&log, "b", t0), Some(("b".into(), 1)));
        assert_eq!(
            fail(&log, "a", t0 + FAILED_AUTH_WINDOW),
            Some(("a".into(), 10))
        );
    }

    #[test]
    fn the_last_burst_is_flushed_once_its_window_passed() {
        let log = FailedAuthLog::default();
        let t0 = Instant::now();
        assert!(fail(&log, "a", t0).is_some());
        assert!(fail(&log, "b", t0).is_some());
        for _ in 0..3 {
            assert_eq!(fail(&log, "a", t0), None);
        }
        assert!(log.due(t0).is_empty(), "the window has not passed");
        let due = log.due(t0 + FAILED_AUTH_WINDOW);
        assert_eq!(
            due.iter()
                .map(|f| (f.identity.as_str(), f.count))
                .collect::<Vec<_>>(),
            vec![("a", 3)],
            "only what was not recorded yet"
        );
        assert!(log.due(t0 + FAILED_AUTH_WINDOW * 2).is_empty());
        // Forgotten: the next failure is recorded at once.
        assert!(fail(&log, "a", t0 + FAILED_AUTH_WINDOW * 2).is_some());
    }

    #[test]
    fn identities_are_tracked_by_a_bounded_prefix() {
        let log = FailedAuthLog::default();
        let t0 = Instant::now();
        let base = "é".repeat(FAILED_AUTH_IDENTITY_CHARS);
        let (first, _) = fail(&log, &format!("{base}a"), t0).expect("recorded");
        assert_eq!(first.chars().count(), FAILED_AUTH_IDENTITY_CHARS);
        assert_eq!(first, base);
        // Another identity with the same prefix is the same tracked entry.
        assert_eq!(fail(&log, &format!("{base}b"), t0), None);
        let state = log.inner.lock().unwrap();
        assert!(
            state
                .identities
                .keys()
                .all(|k| k.chars().count() <= FAILED_AUTH_IDENTITY_CHARS)
        );
    }

    #[test]
    fn flushed_events_count_against_the_write_limit() {
        let log = FailedAuthLog::default();
        let t0 = Instant::now();
        let n = 2 * FAILED_AUTH_PER_SECOND as usize;
        // 20 identities in one second, 20 in the next: all written.
        for i in 0..n {
            let at = t0 + Duration::from_secs(if i < n / 2 { 0 } else { 1 });
            assert!(fail(&log, &format!("id{i}"), at).is_some());
        }
        // One more failure each, coalesced.
        for i in 0..n {
            assert_eq!(
                fail(&log, &format!("id{i}"), t0 + Duration::from_millis(2500)),
                None
            );
        }
        let flush_at = t0 + FAILED_AUTH_WINDOW + Duration::from_secs(1);
        let due = log.due(flush_at);
        assert_eq!(
            due.len(),
            FAILED_AUTH_PER_SECOND as usize,
            "one second's limit"
        );
        // The limit is spent for this second: a new identity goes to `*`.
        assert_eq!(fail(&log, "late", flush_at), None);
        assert!(log.due(flush_at).is_empty());
        // The rest were counted under `*` and are written later, nothing lost.
        let later = log.due(flush_at + FAILED_AUTH_WINDOW);
        assert_eq!(
            later
                .iter()
                .map(|f| (f.identity.as_str(), f.count))
                .collect::<Vec<_>>(),
            vec![("*", n as u64 / 2 + 1)]
        );
        let total: u64 = due.iter().chain(&later).map(|f| f.count).sum();
        assert_eq!(total, n as u64 + 1);
    }

    #[test]
    fn the_overall_rate_is_bounded() {
        let log = FailedAuthLog::default();
        let t0 = Instant::now();
        let written = (0..1000)
            .filter(|i| fail(&log, &format!("id{i}"), t0).is_some())
            .count();
        // FAILED_AUTH_PER_SECOND identities, then one event under `*`.
        assert_eq!(written, FAILED_AUTH_PER_SECOND as usize + 1);
    }
}
