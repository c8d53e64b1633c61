//! The load generator: N workers, each keeping one call in flight, for a
//! fixed duration after a warm-up; per-call latencies in microseconds.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One call: `(worker, iteration)` to its future.
pub type Op = Arc<
    dyn Fn(usize, u64) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync,
>;

/// What a run measured.
#[derive(Debug, Clone)]
pub struct Stats {
    /// Successful calls in the measured window.
    pub calls: u64,
    /// Failed calls in the measured window.
    pub errors: u64,
    /// First error seen, if any.
    pub first_error: Option<String>,
    /// Measured window.
    pub elapsed: Duration,
    /// Sorted latencies of successful calls, µs.
    pub latencies: Vec<u32>,
    /// Every call made, warm-up and failures included (to divide a
    /// server's whole-run counters, such as instructions, by).
    pub issued: u64,
}

impl Stats {
    /// Calls per second.
    pub fn throughput(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64()
    }

    /// Latency quantile `q` (0-1) in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let idx = ((self.latencies.len() as f64 - 1.0) * q).round() as usize;
        f64::from(self.latencies[idx]) / 1000.0
    }
}

/// Runs `op` with `concurrency` workers: `warmup` unmeasured, then
/// `duration` measured. Every worker stops by itself at the deadline.
pub async fn run(op: Op, concurrency: usize, warmup: Duration, duration: Duration) -> Stats {
    let start = Instant::now();
    let measure_from = start + warmup;
    let deadline = measure_from + duration;
    let mut handles = Vec::with_capacity(concurrency);
    for worker in 0..concurrency {
        let op = Arc::clone(&op);
        handles.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(65_536);
            let mut errors = 0u64;
            let mut first_error = None;
            let mut i = 0u64;
            loop {
                let t0 = Instant::now();
                if t0 >= deadline {
                    break;
                }
                let result = op(worker, i).await;
                let t1 = Instant::now();
                i += 1;
                if t0 < measure_from || t1 > deadline {
                    continue;
                }
                match result {
                    Ok(()) => {
                        latencies.push(u32::try_from((t1 - t0).as_micros()).unwrap_or(u32::MAX))
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                }
            }
            (latencies, errors, first_error, i)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    let mut issued = 0;
    for h in handles {
        if let Ok((l, e, f, n)) = h.await {
            issued += n;
            all.extend(l);
            errors += e;
            if first_error.is_none() {
                first_error = f;
            }
        }
    }
    all.sort_unstable();
    Stats {
        calls: all.len() as u64,
        errors,
        first_error,
        elapsed: duration,
        latencies: all,
        issued,
    }
}

/// A small, fast PRNG (xorshift64*) for picking keys; no crypto needed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded from `seed` (never zero).
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// A number below `n`.
    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n as u64) as usize
    }
}

/// Picks a key index for `(worker, iteration)` reproducibly.
pub fn pick(worker: usize, iteration: u64, n: usize) -> usize {
    Rng::new((worker as u64) << 40 ^ iteration.wrapping_add(1)).below(n)
}
