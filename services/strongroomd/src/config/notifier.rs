//! The webhook notifier's sender settings (`[notifier]`,
//! `STRONGROOM_NOTIFIER_*`): how often it polls, how long one post may
//! take and how much of the answer it reads, how long a claim holds a
//! delivery, the retry bounds, and the per-tenant turn bounds; parsed and
//! bounded. The defaults are the values the sender always had.

use std::time::Duration;

use strongroom_engine::notify::SenderSettings;

use super::{ConfigError, bad, source};

/// The notifier's sender settings (`[notifier]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotifierConfig {
    /// How often the sender looks for deliveries due by the clock (a
    /// retry, or one another server enqueued) (`notifier.poll_interval_ms`,
    /// default 1 s; 10 ms to 1 hour). A delivery this server enqueues is
    /// sent at once whatever this is.
    pub poll_interval: Duration,
    /// How long one post may take until the answer's head: resolving,
    /// connecting, the TLS handshake, sending and the head
    /// (`notifier.timeout_ms`, default 5 s; 100 ms to 60 s).
    pub timeout: Duration,
    /// How much of an answer's body is read, then dropped
    /// (`notifier.max_answer_read_bytes`, default 16 KiB; at most 1 MiB):
    /// enough to reuse the connection after a short answer, never kept.
    pub max_answer_read: usize,
    /// The engine's bounds: `notifier.claim_hold_secs` (default 120 s; 10 s
    /// to 1 day, and at least twice the time one post may take, answer
    /// included), `notifier.max_attempts` (default 8; 1-32),
    /// `notifier.max_age_secs` (default 1 day; 1 minute to 30 days),
    /// `notifier.posts_per_turn` (default 32; 1-1000),
    /// `notifier.turn_budget_ms` (default 10 s; 100 ms to 10 minutes) and
    /// `notifier.tenants_at_once` (default 16; 1-1024).
    pub sender: SenderSettings,
}

/// How long the answer's body is read after its head (the status stands
/// whatever the body does).
pub const ANSWER_READ_TIME: Duration = Duration::from_secs(1);

impl Default for NotifierConfig {
    fn default() -> Self {
        Self {
            poll_interval: strongroom_engine::notify::POLL_INTERVAL,
            timeout: Duration::from_secs(5),
            max_answer_read: 16 * 1024,
            sender: SenderSettings::default(),
        }
    }
}

impl NotifierConfig {
    pub(super) fn from_raw(raw: source::RawNotifier) -> Result<Self, ConfigError> {
        let d = Self::default();
        let ms = |v: Option<u64>, default: Duration| v.map_or(default, Duration::from_millis);
        let secs = |v: Option<u64>, default: Duration| v.map_or(default, Duration::from_secs);
        let max_answer_read = raw
            .max_answer_read_bytes
            .unwrap_or(d.max_answer_read as u64);
        if max_answer_read > 1024 * 1024 {
            return Err(bad(
                "notifier.max_answer_read_bytes",
                "must be at most 1048576 (1 MiB)",
            ));
        }
        let tenants_at_once = raw
            .tenants_at_once
            .unwrap_or(d.sender.tenants_at_once as u64);
        if !(1..=1024).contains(&tenants_at_once) {
            return Err(bad("notifier.tenants_at_once", "must be 1-1024"));
        }
        let notifier = Self {
            poll_interval: ms(raw.poll_interval_ms, d.poll_interval),
            timeout: ms(raw.timeout_ms, d.timeout),
            // Both checked above to fit.
            max_answer_read: usize::try_from(max_answer_read).unwrap_or(d.max_answer_read),
            sender: SenderSettings {
                claim_hold: secs(raw.claim_hold_secs, d.sender.claim_hold),
                max_attempts: raw.max_attempts.unwrap_or(d.sender.max_attempts),
                max_age: secs(raw.max_age_secs, d.sender.max_age),
                posts_per_turn: raw.posts_per_turn.unwrap_or(d.sender.posts_per_turn),
                turn_budget: ms(raw.turn_budget_ms, d.sender.turn_budget),
                tenants_at_once: usize::try_from(tenants_at_once)
                    .unwrap_or(d.sender.tenants_at_once),
            },
        };
        if !(Duration::from_millis(10)..=Duration::from_secs(3600))
            .contains(&notifier.poll_interval)
        {
            return Err(bad("notifier.poll_interval_ms", "must be 10 ms to 1 hour"));
        }
        if !(Duration::from_millis(100)..=Duration::from_secs(60)).contains(&notifier.timeout) {
            return Err(bad("notifier.timeout_ms", "must be 100 ms to 60 s"));
        }
        let s = &notifier.sender;
        if !(Duration::from_secs(10)..=Duration::from_secs(24 * 3600)).contains(&s.claim_hold) {
            return Err(bad("notifier.claim_hold_secs", "must be 10 s to 1 day"));
        }
        // A claim must outlast the post it was taken for (the head, then
        // the answer's read) by a wide margin, or another server could
        // claim the delivery while it is still being sent.
        if s.claim_hold < (notifier.timeout + ANSWER_READ_TIME) * 2 {
            return Err(bad(
                "notifier.claim_hold_secs",
                "must be at least twice notifier.timeout_ms plus 1 s (the answer's read)",
            ));
        }
        if !(1..=32).contains(&s.max_attempts) {
            return Err(bad("notifier.max_attempts", "must be 1-32"));
        }
        if !(Duration::from_secs(60)..=Duration::from_secs(30 * 24 * 3600)).contains(&s.max_age) {
            return Err(bad(
                "notifier.max_age_secs",
                "must be 60 seconds to 30 days",
            ));
        }
        if !(1..=1000).contains(&s.posts_per_turn) {
            return Err(bad("notifier.posts_per_turn", "must be 1-1000"));
        }
        if !(Duration::from_millis(100)..=Duration::from_secs(600)).contains(&s.turn_budget) {
            return Err(bad(
                "notifier.turn_budget_ms",
                "must be 100 ms to 10 minutes",
            ));
        }
        Ok(notifier)
    }
}
