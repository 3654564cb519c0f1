//! Wall-clock time behind a trait, so tests can pin "now".
//!
//! Only timestamps that leave the process (ISO fields, audit `ts`, marker ages) use this;
//! durations inside the process use `tokio::time::Instant`.

use std::sync::Arc;
use std::sync::Mutex;

use jiff::Timestamp;

/// A source of wall-clock time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current instant in UTC.
    fn now(&self) -> Timestamp;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that only moves when told to; for tests.
#[derive(Debug)]
pub struct ManualClock(Mutex<Timestamp>);

impl ManualClock {
    /// A manual clock starting at `at`.
    pub fn new(at: Timestamp) -> Arc<Self> {
        Arc::new(Self(Mutex::new(at)))
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: std::time::Duration) {
        let mut t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *t += jiff::SignedDuration::try_from(by).unwrap_or(jiff::SignedDuration::MAX);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Shared handle to a clock.
pub type SharedClock = Arc<dyn Clock>;

/// Formats a timestamp the way every ISO field of the wire contract is written.
pub fn iso(ts: Timestamp) -> String {
    // Microsecond precision, always with a `Z` offset, e.g. 2026-11-22T10:00:00.123456Z.
    ts.round(jiff::Unit::Microsecond)
        .unwrap_or(ts)
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}
