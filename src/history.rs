//! The last hour of the gateway's work, minute by minute, for the dashboard's charts:
//! turns by outcome, fires by outcome, and how many turns were in flight.
//!
//! In memory only (a restart starts it empty) and bounded: one bucket per minute that saw
//! something, the last [`MINUTES`] kept. `metrics` feeds it where turns end and fires are
//! decided (so it counts exactly what `/metrics` counts), and the turn gate reports the
//! in-flight count under its own lock each time it moves, so the levels arrive in order.
//! Readers take a [`HistorySnapshot`] (dense: every minute of the hour, the in-flight level
//! carried through quiet minutes) and [`History::subscribe`] to hear of changes.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;
use tokio::sync::watch;

use crate::clock::{SharedClock, iso};

/// Minutes of history kept and sent.
pub const MINUTES: usize = 60;

/// The recent history; share it behind an `Arc` (it lives in `metrics::Metrics`).
#[derive(Debug)]
pub struct History {
    clock: SharedClock,
    ring: Mutex<Ring>,
    /// Bumped at every change, for readers that send updates.
    changed: watch::Sender<u64>,
    /// The last [`History::rendered`] text, with the change count and second it is of.
    rendered: Mutex<Option<(u64, i64, Arc<str>)>>,
}

#[derive(Debug, Default)]
struct Ring {
    /// Oldest first; minutes strictly increasing; at most [`MINUTES`].
    buckets: VecDeque<Bucket>,
    /// Turns in flight now.
    in_flight: usize,
}

#[derive(Debug, Clone)]
struct Bucket {
    /// Unix minute (seconds / 60).
    minute: i64,
    turns: BTreeMap<&'static str, u64>,
    fires: BTreeMap<&'static str, u64>,
    /// The most turns in flight at once during the minute.
    in_flight_max: usize,
    /// Turns in flight when the minute's last change happened.
    in_flight_end: usize,
}

/// The hour as sent to the dashboard: [`MINUTES`] minutes, oldest first, the last one the
/// current (unfinished) minute.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct HistorySnapshot {
    pub minute_seconds: u32,
    /// When the snapshot was taken (ISO, UTC).
    pub now: String,
    /// Turns in flight at that moment.
    pub in_flight: usize,
    pub minutes: Vec<Minute>,
}

/// One minute of the hour.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Minute {
    /// Its first second (ISO, UTC).
    pub start: String,
    /// Turns that ended (or were refused) in it, by outcome.
    pub turns: BTreeMap<&'static str, u64>,
    /// Fires answered in it, by outcome.
    pub fires: BTreeMap<&'static str, u64>,
    /// The most turns in flight at once during it.
    pub in_flight: usize,
}

impl History {
    pub fn new(clock: SharedClock) -> Self {
        Self {
            clock,
            ring: Mutex::new(Ring::default()),
            changed: watch::channel(0).0,
            rendered: Mutex::new(None),
        }
    }

    /// Counts a turn that ended (or was refused) with `outcome`.
    pub fn turn(&self, outcome: &'static str) {
        self.change(|b, _| *b.turns.entry(outcome).or_default() += 1);
    }

    /// Counts a fire answered with `outcome`.
    pub fn fire(&self, outcome: &'static str) {
        self.change(|b, _| *b.fires.entry(outcome).or_default() += 1);
    }

    /// Records that `n` turns are in flight now.
    pub fn in_flight(&self, n: usize) {
        self.change(|b, level| {
            b.in_flight_max = b.in_flight_max.max(n);
            b.in_flight_end = n;
            *level = n;
        });
    }

    /// Changes the current minute's bucket (made if the minute saw nothing yet) and the
    /// level in flight, under the lock.
    fn change(&self, f: impl FnOnce(&mut Bucket, &mut usize)) {
        let minute = self.minute_now();
        {
            let mut ring = self.lock();
            let level = ring.in_flight;
            if ring.buckets.back().is_none_or(|b| b.minute < minute) {
                ring.buckets.push_back(Bucket {
                    minute,
                    turns: BTreeMap::new(),
                    fires: BTreeMap::new(),
                    in_flight_max: level,
                    in_flight_end: level,
                });
                while ring.buckets.len() > MINUTES {
                    ring.buckets.pop_front();
                }
            }
            // A clock stepped back leaves its change in the latest bucket.
            let Ring { buckets, in_flight } = &mut *ring;
            if let Some(b) = buckets.back_mut() {
                f(b, in_flight);
            }
        }
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// The last hour, every minute filled in.
    pub fn snapshot(&self) -> HistorySnapshot {
        let now = self.clock.now();
        let current = now.as_second().div_euclid(60);
        let ring = self.lock();
        let first = current - MINUTES as i64 + 1;
        // The level carried into the window: the end of the last bucket before it.
        let mut level = ring
            .buckets
            .iter()
            .rev()
            .find(|b| b.minute < first)
            .map_or(0, |b| b.in_flight_end);
        let mut recorded = ring.buckets.iter().filter(|b| b.minute >= first).peekable();
        let mut minutes = Vec::with_capacity(MINUTES);
        for minute in first..=current {
            let start =
                jiff::Timestamp::from_second(minute * 60).map_or_else(|_| String::new(), iso);
            match recorded.next_if(|b| b.minute == minute) {
                Some(b) => {
                    level = b.in_flight_end;
                    minutes.push(Minute {
                        start,
                        turns: b.turns.clone(),
                        fires: b.fires.clone(),
                        in_flight: b.in_flight_max,
                    });
                }
                None => minutes.push(Minute {
                    start,
                    turns: BTreeMap::new(),
                    fires: BTreeMap::new(),
                    in_flight: level,
                }),
            }
        }
        HistorySnapshot {
            minute_seconds: 60,
            now: iso(now),
            in_flight: ring.in_flight,
            minutes,
        }
    }

    /// The snapshot as `render` writes it (the dashboard's frame), rendered again only
    /// once the history changed or the second turned: every socket that opens sends it,
    /// and rendering the hour is most of what opening one costs. A reused text's `now` is
    /// when it was taken, under a second before; nothing else in it could differ. There is
    /// one frame format, so every caller passes the same `render`.
    pub fn rendered(&self, render: impl FnOnce(&HistorySnapshot) -> String) -> Arc<str> {
        // The count before the snapshot: a change between the two renders again next time.
        let version = *self.changed.borrow();
        let second = self.clock.now().as_second();
        let mut cached = self.rendered.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((v, s, text)) = &*cached
            && (*v, *s) == (version, second)
        {
            return text.clone();
        }
        let text: Arc<str> = render(&self.snapshot()).into();
        *cached = Some((version, second, text.clone()));
        text
    }

    /// Changes as they happen (the value only counts them).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn minute_now(&self) -> i64 {
        self.clock.now().as_second().div_euclid(60)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        // Nothing panics while holding it; recover the data if something did.
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::clock::ManualClock;

    fn at(s: &str) -> Arc<ManualClock> {
        ManualClock::new(s.parse().unwrap())
    }

    #[test]
    fn counts_land_in_their_minute_and_the_hour_is_dense() {
        let clock = at("2026-03-01T10:00:30Z");
        let h = History::new(clock.clone());
        h.turn("completed");
        h.turn("completed");
        h.fire("started");
        clock.advance(Duration::from_secs(60));
        h.turn("failed");
        let s = h.snapshot();
        assert_eq!(s.minutes.len(), MINUTES);
        assert_eq!(s.now, "2026-03-01T10:01:30.000000Z");
        let last = &s.minutes[MINUTES - 1];
        assert_eq!(last.start, "2026-03-01T10:01:00.000000Z");
        assert_eq!(last.turns, BTreeMap::from([("failed", 1)]));
        let before = &s.minutes[MINUTES - 2];
        assert_eq!(before.start, "2026-03-01T10:00:00.000000Z");
        assert_eq!(before.turns, BTreeMap::from([("completed", 2)]));
        assert_eq!(before.fires, BTreeMap::from([("started", 1)]));
        assert!(s.minutes[..MINUTES - 2].iter().all(|m| m.turns.is_empty()));
    }

    #[test]
    fn in_flight_is_the_minutes_peak_and_carries_through_quiet_minutes() {
        let clock = at("2026-03-01T10:00:00Z");
        let h = History::new(clock.clone());
        h.in_flight(1);
        h.in_flight(3);
        h.in_flight(2);
        clock.advance(Duration::from_secs(180));
        let s = h.snapshot();
        let tail: Vec<usize> = s.minutes[MINUTES - 4..]
            .iter()
            .map(|m| m.in_flight)
            .collect();
        assert_eq!(tail, [3, 2, 2, 2], "the peak, then the level left behind");
        assert_eq!(s.in_flight, 2);
        // A new minute starts at the level it inherits.
        h.in_flight(0);
        let s = h.snapshot();
        assert_eq!(s.minutes[MINUTES - 1].in_flight, 2);
        assert_eq!(s.in_flight, 0);
    }

    #[test]
    fn only_the_last_hour_is_kept() {
        let clock = at("2026-03-01T10:00:00Z");
        let h = History::new(clock.clone());
        for _ in 0..90 {
            h.turn("completed");
            h.in_flight(1);
            clock.advance(Duration::from_secs(60));
        }
        assert_eq!(h.lock().buckets.len(), MINUTES);
        let s = h.snapshot();
        // The current minute saw nothing yet; the 59 before it one turn each.
        assert!(
            s.minutes[..MINUTES - 1]
                .iter()
                .all(|m| m.turns["completed"] == 1)
        );
        assert!(s.minutes[MINUTES - 1].turns.is_empty());
        assert_eq!(s.minutes[MINUTES - 1].in_flight, 1);
    }

    #[test]
    fn readers_hear_of_every_change() {
        let h = History::new(at("2026-03-01T10:00:00Z"));
        let mut rx = h.subscribe();
        assert!(!rx.has_changed().unwrap());
        h.fire("duplicate");
        assert!(rx.has_changed().unwrap());
        rx.borrow_and_update();
        h.in_flight(1);
        assert!(rx.has_changed().unwrap());
    }

    #[test]
    fn a_rendered_snapshot_is_reused_only_while_nothing_changed_within_its_second() {
        let clock = at("2026-03-01T10:00:00Z");
        let h = History::new(clock.clone());
        let renders = std::cell::Cell::new(0);
        let render = |s: &HistorySnapshot| {
            renders.set(renders.get() + 1);
            serde_json::to_string(s).unwrap()
        };
        let first = h.rendered(render);
        clock.advance(Duration::from_millis(500));
        assert_eq!(h.rendered(render), first, "same second, nothing changed");
        assert_eq!(renders.get(), 1);
        h.turn("completed");
        let after_turn = h.rendered(render);
        assert_eq!(renders.get(), 2, "a change renders again");
        assert!(after_turn.contains("\"completed\":1"), "{after_turn}");
        clock.advance(Duration::from_millis(600));
        let next_second = h.rendered(render);
        assert_eq!(renders.get(), 3, "a new second renders again");
        assert!(next_second.contains("10:00:01.100000Z"), "{next_second}");
    }
}
