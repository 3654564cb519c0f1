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

/// Formats a timestamp the way every ISO field of the wire contract is written:
/// microsecond precision, always with a `Z` offset, e.g. 2026-11-22T10:00:00.123456Z.
/// (jiff's RFC 3339 printer: `strftime` parses its format on every call, and the history
/// message formats sixty of these.)
pub fn iso(ts: Timestamp) -> String {
    const PRINTER: jiff::fmt::temporal::DateTimePrinter =
        jiff::fmt::temporal::DateTimePrinter::new().precision(Some(6));
    PRINTER.timestamp_to_string(&ts.round(jiff::Unit::Microsecond).unwrap_or(ts))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same text as the `strftime` form the wire contract was first written with, over
    /// timestamps from year 1 to 9999 with every kind of fraction (rounded to µs).
    #[test]
    fn iso_is_the_wire_form() {
        let strftime = |ts: Timestamp| {
            ts.round(jiff::Unit::Microsecond)
                .unwrap_or(ts)
                .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
                .to_string()
        };
        let mut second = Timestamp::MIN.as_second().max(-62_135_596_800);
        let mut nanos = 0i32;
        while second < 253_402_300_000 {
            let ts = Timestamp::new(second, nanos).unwrap();
            assert_eq!(iso(ts), strftime(ts), "{second}.{nanos}");
            second += 7_777_777 + i64::from(nanos % 1000);
            nanos = (nanos + 123_456_789) % 1_000_000_000;
        }
        assert_eq!(
            iso(Timestamp::new(1_800_000_000, 999_999_600).unwrap()),
            "2027-01-15T08:00:01.000000Z"
        );
    }
}
