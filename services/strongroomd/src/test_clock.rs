//! The test-only control of the server's clock, compiled in only with the
//! `test-clock` feature, which release builds refuse (see the crate root).
//!
//! With `STRONGROOM_TEST_CLOCK_FILE` naming a file, the engine's clock is the
//! system's plus the whole seconds written in that file, read again every
//! time the clock is read (a missing or unreadable file counts as 0). The
//! end-to-end tests write it to move the server's time forward and watch
//! expiry, leases and audit timestamps follow, without waiting.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use strongroom_core::time::{Clock, Timestamp};

/// The variable naming the offset file.
pub const CLOCK_FILE_ENV: &str = "STRONGROOM_TEST_CLOCK_FILE";

/// The system's clock moved by the seconds in a file.
struct OffsetFileClock {
    path: PathBuf,
}

impl Clock for OffsetFileClock {
    fn now(&self) -> Timestamp {
        let offset: i64 = std::fs::read_to_string(&self.path)
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(0);
        let by = Duration::from_secs(offset.unsigned_abs());
        if offset >= 0 {
            Timestamp::now().plus(by)
        } else {
            Timestamp::now().minus(by)
        }
    }
}

/// The clock `STRONGROOM_TEST_CLOCK_FILE` asks for, if it is set.
pub fn from_env() -> Option<Arc<dyn Clock>> {
    let path = PathBuf::from(std::env::var_os(CLOCK_FILE_ENV)?);
    tracing::warn!(
        file = %path.display(),
        "test clock: the server's time is the system's plus the seconds in this file"
    );
    Some(Arc::new(OffsetFileClock { path }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offset_file_moves_the_clock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = OffsetFileClock {
            path: dir.path().join("offset"),
        };
        let drift = |c: &OffsetFileClock| c.now().as_micros() - Timestamp::now().as_micros();
        assert!(drift(&clock).abs() < 60_000_000, "no file: no offset");
        std::fs::write(&clock.path, "7200\n").expect("write");
        let moved = drift(&clock);
        assert!(
            (7_140_000_000..=7_260_000_000).contains(&moved),
            "two hours ahead: {moved}"
        );
        std::fs::write(&clock.path, "-3600").expect("write");
        assert!(drift(&clock) < -3_540_000_000);
    }
}
