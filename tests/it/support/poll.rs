//! The one way the suite waits for something: poll a probe until it answers, within a
//! deadline, and fail naming what was awaited and what was seen last. No test sleeps to
//! let something happen; it waits for the thing itself through [`eventually`].

use std::fmt::Display;
use std::time::Duration;

use tokio::time::Instant;

/// The deadline for what takes well under a second when all is well (generous, for a
/// loaded machine: it bounds a failing test, it does not time a passing one).
pub const PATIENCE: Duration = Duration::from_secs(10);

/// The pause between two probes.
pub const EVERY: Duration = Duration::from_millis(10);

/// A probe's answer: `Some(v)` / `Ok(v)` ends the wait with `v`; `None` / `Err(seen)` polls
/// again, and `seen` is what a timeout reports as the last thing observed.
pub trait Answer {
    type Value;
    fn into_result(self) -> Result<Self::Value, String>;
}

impl<T> Answer for Option<T> {
    type Value = T;
    fn into_result(self) -> Result<T, String> {
        self.ok_or_else(|| "not yet".to_owned())
    }
}

impl<T, E: Display> Answer for Result<T, E> {
    type Value = T;
    fn into_result(self) -> Result<T, String> {
        self.map_err(|e| e.to_string())
    }
}

/// Why a poll gave up: the deadline passed, and this was the last answer.
#[derive(Debug)]
pub struct TimedOut {
    pub after: Duration,
    pub last: String,
}

/// Polls `probe` every `every` until it answers, for `within` at most (a probe still
/// running at the deadline is cut off there); `Err` when the deadline passed. For a caller
/// that adds its own context to the failure; the others use [`eventually`].
pub async fn poll<A: Answer>(
    every: Duration,
    within: Duration,
    mut probe: impl AsyncFnMut() -> A,
) -> Result<A::Value, TimedOut> {
    let deadline = Instant::now() + within;
    let mut last = "no answer yet".to_owned();
    loop {
        match tokio::time::timeout_at(deadline, probe()).await {
            Ok(answer) => match answer.into_result() {
                Ok(v) => return Ok(v),
                Err(seen) => last = seen,
            },
            Err(_) => {
                last.push_str(" (and the next probe was still running at the deadline)");
                break;
            }
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        tokio::time::sleep_until((now + every).min(deadline)).await;
    }
    Err(TimedOut {
        after: within,
        last,
    })
}

/// Polls `probe` (every 10 ms) until it answers and returns its value; panics naming
/// `what` and the last answer seen if that takes longer than `within`.
pub async fn eventually<A: Answer>(
    within: Duration,
    what: &str,
    probe: impl AsyncFnMut() -> A,
) -> A::Value {
    eventually_every(EVERY, within, what, probe).await
}

/// [`eventually`] probing every `every` (for a race that wants a tighter loop).
pub async fn eventually_every<A: Answer>(
    every: Duration,
    within: Duration,
    what: &str,
    probe: impl AsyncFnMut() -> A,
) -> A::Value {
    match poll(every, within, probe).await {
        Ok(v) => v,
        Err(t) => panic!(
            "timed out after {:?} waiting for {what}; last seen: {}",
            t.after, t.last
        ),
    }
}

/// `Ok(v)` if `v` satisfies `pred`, else `Err(v)`: a snapshot as a probe's answer.
pub fn matching<T>(v: T, pred: impl FnOnce(&T) -> bool) -> Result<T, T> {
    if pred(&v) { Ok(v) } else { Err(v) }
}

// The helper's own promises: an answer ends the wait, a deadline ends it too (even a
// probe that never returns), and the failure carries the last answer seen.

#[tokio::test]
async fn a_probe_that_answers_ends_the_wait_with_its_value() {
    let mut calls = 0;
    let got = poll(Duration::from_millis(1), PATIENCE, async || {
        calls += 1;
        if calls == 3 { Ok(calls) } else { Err(calls) }
    })
    .await;
    assert_eq!(got.unwrap(), 3);
}

#[tokio::test]
async fn a_probe_that_never_answers_times_out_with_the_last_answer_seen() {
    let started = std::time::Instant::now();
    let mut calls = 0;
    let got = poll(EVERY, Duration::from_millis(100), async || {
        calls += 1;
        Err::<(), _>(format!("call {calls}"))
    })
    .await;
    let elapsed = started.elapsed();
    let timed_out = got.unwrap_err();
    assert_eq!(timed_out.last, format!("call {calls}"));
    assert!(calls > 1, "probed once only");
    assert!(
        elapsed >= Duration::from_millis(100) && elapsed < Duration::from_secs(5),
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn a_probe_still_running_at_the_deadline_is_cut_off() {
    let started = std::time::Instant::now();
    let mut calls = 0;
    let got = poll(EVERY, Duration::from_millis(100), async || {
        calls += 1;
        if calls == 1 {
            return None;
        }
        std::future::pending::<Option<()>>().await
    })
    .await;
    let timed_out = got.unwrap_err();
    assert!(
        timed_out.last.starts_with("not yet") && timed_out.last.contains("still running"),
        "{timed_out:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}
