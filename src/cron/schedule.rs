//! Schedules: when a job fires. Pure functions of (text, time zone, clock reading), so
//! every rule is tested against an injected time.
//!
//! Accepted forms: 5/6-field cron expressions evaluated in `cron.timezone` (DST gaps and
//! overlaps handled by croner over jiff's zoned times); `every 30m|2h|1d` (also `45s`,
//! `90 minutes`); one-shots as ISO timestamps (with an offset, or naive = `cron.timezone`)
//! or `in 30m`; and the Hermes phrases `every monday 9am`, `weekdays at 9am`,
//! `every day at 14:00`, `noon`, `midnight`.

use std::time::Duration;

use croner::Cron;
use croner::parser::CronParser;
use jiff::tz::TimeZone;
use jiff::{Timestamp, civil};

/// A one-shot further in the past than this is refused.
pub const PAST_TOLERANCE: Duration = Duration::from_secs(120);

/// A parsed schedule.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// A cron expression in a time zone.
    Cron { cron: Box<Cron>, tz: TimeZone },
    /// A fixed interval from the previous slot.
    Every(Duration),
    /// One instant.
    Once(Timestamp),
}

/// Why a schedule text was refused; the message names the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid schedule {text:?}: {reason}")]
pub struct ScheduleError {
    pub text: String,
    pub reason: String,
}

fn err(text: &str, reason: impl Into<String>) -> ScheduleError {
    ScheduleError {
        text: text.to_owned(),
        reason: reason.into(),
    }
}

impl Schedule {
    /// Parses `text`; `now` anchors `in 30m` and the past check for one-shots.
    pub fn parse(text: &str, tz: &TimeZone, now: Timestamp) -> Result<Self, ScheduleError> {
        let t = text.trim();
        let lower = t.to_ascii_lowercase();
        if lower.is_empty() {
            return Err(err(text, "empty"));
        }
        if let Some(rest) = lower.strip_prefix("in ") {
            let d = duration(rest).map_err(|r| err(text, r))?;
            return Ok(Self::Once(add(now, d).map_err(|r| err(text, r))?));
        }
        if let Some(cron) = phrase(&lower).map_err(|r| err(text, r))? {
            return Self::cron(text, &cron, tz, now);
        }
        if let Some(rest) = lower.strip_prefix("every ") {
            let d = duration(rest).map_err(|r| err(text, r))?;
            if d < Duration::from_secs(1) {
                return Err(err(text, "the interval must be at least 1 second"));
            }
            return Ok(Self::Every(d));
        }
        if t.starts_with(|c: char| c.is_ascii_digit()) && t.contains('-') {
            let at = instant(t, tz).map_err(|r| err(text, r))?;
            if at.duration_since(now).as_secs() < -(PAST_TOLERANCE.as_secs() as i64) {
                return Err(err(
                    text,
                    format!(
                        "{at} is more than {} s in the past",
                        PAST_TOLERANCE.as_secs()
                    ),
                ));
            }
            return Ok(Self::Once(at));
        }
        Self::cron(text, t, tz, now)
    }

    fn cron(text: &str, expr: &str, tz: &TimeZone, now: Timestamp) -> Result<Self, ScheduleError> {
        let fields = expr.split_whitespace().count();
        if !(5..=6).contains(&fields) {
            return Err(err(
                text,
                format!(
                    "not a known phrase, interval, timestamp, or 5/6-field cron expression ({fields} fields)"
                ),
            ));
        }
        let cron = CronParser::builder()
            .build()
            .parse(expr)
            .map_err(|e| err(text, format!("bad cron expression: {e}")))?;
        let schedule = Self::Cron {
            cron: Box::new(cron),
            tz: tz.clone(),
        };
        // A well-formed expression no date matches (30 February) would never run.
        if schedule.next_after(now).is_none() {
            return Err(err(text, "no date matches it, so it would never run"));
        }
        Ok(schedule)
    }

    /// The first slot strictly after `after`; `None` when a one-shot has passed.
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        match self {
            Self::Cron { cron, tz } => cron
                .find_next_occurrence(&after.to_zoned(tz.clone()), false)
                .ok()
                .map(|z| z.timestamp()),
            Self::Every(d) => add(after, *d).ok(),
            Self::Once(at) => (*at > after).then_some(*at),
        }
    }

    /// The first slot for a job created (or rescheduled) at `now`: one-shots keep their
    /// instant even if it is up to [`PAST_TOLERANCE`] ago, so they still fire.
    pub fn first(&self, now: Timestamp) -> Option<Timestamp> {
        match self {
            Self::Once(at) => Some(*at),
            other => other.next_after(now),
        }
    }

    /// The first `n` slots of a job created (or rescheduled) at `now`: [`Schedule::first`],
    /// then each slot after the one before; fewer when the schedule ends (a one-shot).
    pub fn upcoming(&self, now: Timestamp, n: usize) -> Vec<Timestamp> {
        let mut out = Vec::with_capacity(n);
        let mut next = self.first(now);
        while let Some(t) = next.filter(|_| out.len() < n) {
            out.push(t);
            next = self.next_after(t);
        }
        out
    }

    /// Whether the schedule fires once only.
    pub fn is_once(&self) -> bool {
        matches!(self, Self::Once(_))
    }

    /// The catch-up grace: half the period, clamped to [120 s, 2 h]. A slot later than
    /// this is a missed slot: the job fires once and fast-forwards instead of replaying.
    pub fn grace(&self, around: Timestamp) -> Duration {
        let period = match self {
            Self::Every(d) => *d,
            Self::Once(_) => Duration::ZERO,
            Self::Cron { .. } => self
                .next_after(around)
                .and_then(|a| self.next_after(a).map(|b| b.duration_since(a)))
                .and_then(|d| Duration::try_from(d).ok())
                .unwrap_or(Duration::ZERO),
        };
        (period / 2).clamp(Duration::from_secs(120), Duration::from_secs(7200))
    }
}

fn add(t: Timestamp, d: Duration) -> Result<Timestamp, String> {
    let span = jiff::SignedDuration::try_from(d).map_err(|e| e.to_string())?;
    t.checked_add(span)
        .map_err(|_| "the time is out of range".to_owned())
}

/// `30m`, `2h`, `1d`, `45s`, `90 minutes`, `2 hours`.
fn duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("expected a number and a unit like 30m, 2h or 1d, got {t:?}"))?;
    let secs = match unit.trim() {
        "s" | "sec" | "secs" | "second" | "seconds" => 1,
        "m" | "min" | "mins" | "minute" | "minutes" => 60,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3600,
        "d" | "day" | "days" => 86_400,
        "w" | "week" | "weeks" => 604_800,
        other => return Err(format!("unknown unit {other:?} (use s, m, h, d or w)")),
    };
    if n == 0 {
        return Err("the interval must be greater than zero".into());
    }
    n.checked_mul(secs)
        .filter(|s| *s <= 10 * 365 * 86_400)
        .map(Duration::from_secs)
        .ok_or_else(|| "the interval is too long (at most 10 years)".into())
}

/// An ISO instant: with `Z`/an offset as given, naive in `tz`.
fn instant(text: &str, tz: &TimeZone) -> Result<Timestamp, String> {
    if let Ok(t) = text.parse::<Timestamp>() {
        return Ok(t);
    }
    let dt: civil::DateTime = text
        .replace(' ', "T")
        .parse()
        .map_err(|e| format!("not an ISO timestamp: {e}"))?;
    dt.to_zoned(tz.clone()).map(|z| z.timestamp()).map_err(|e| {
        format!(
            "{dt} does not exist in {}: {e}",
            tz.iana_name().unwrap_or("the time zone")
        )
    })
}

const DAYS: [(&str, u8); 7] = [
    ("sunday", 0),
    ("monday", 1),
    ("tuesday", 2),
    ("wednesday", 3),
    ("thursday", 4),
    ("friday", 5),
    ("saturday", 6),
];

/// The Hermes phrases, as cron expressions. `Ok(None)`: not a phrase.
fn phrase(lower: &str) -> Result<Option<String>, String> {
    let words: Vec<&str> = lower
        .split_whitespace()
        .filter(|w| *w != "at" && *w != "every")
        .collect();
    let (days, time) = match words.as_slice() {
        ["noon"] => return Ok(Some("0 12 * * *".into())),
        ["midnight"] => return Ok(Some("0 0 * * *".into())),
        [d, t] => (*d, *t),
        [d] if lower.starts_with("every ") && time_of_day(d).is_err() && day_field(d).is_some() => {
            (*d, "midnight")
        }
        _ => return Ok(None),
    };
    let Some(dow) = day_field(days) else {
        return Ok(None);
    };
    let (h, m) = time_of_day(time)?;
    Ok(Some(format!("{m} {h} * * {dow}")))
}

fn day_field(word: &str) -> Option<String> {
    match word {
        "day" | "daily" => Some("*".into()),
        "weekday" | "weekdays" => Some("1-5".into()),
        "weekend" | "weekends" => Some("0,6".into()),
        w => DAYS
            .iter()
            .find(|(name, _)| *name == w || (w.len() >= 3 && name.starts_with(w)))
            .map(|(_, n)| n.to_string()),
    }
}

/// `9am`, `9:30pm`, `14:00`, `noon`, `midnight`.
fn time_of_day(t: &str) -> Result<(u8, u8), String> {
    match t {
        "noon" => return Ok((12, 0)),
        "midnight" => return Ok((0, 0)),
        _ => {}
    }
    let bad = || format!("bad time of day {t:?} (use 9am, 9:30pm or 14:00)");
    let (clock, meridiem) = if let Some(c) = t.strip_suffix("am") {
        (c, Some(false))
    } else if let Some(c) = t.strip_suffix("pm") {
        (c, Some(true))
    } else {
        (t, None)
    };
    let (h, m) = match clock.split_once(':') {
        Some((h, m)) => (h, m),
        None if meridiem.is_some() => (clock, "0"),
        None => return Err(bad()),
    };
    let (mut h, m): (u8, u8) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if m > 59 {
        return Err(bad());
    }
    match meridiem {
        Some(pm) => {
            if !(1..=12).contains(&h) {
                return Err(bad());
            }
            h = match (h, pm) {
                (12, false) => 0,
                (12, true) => 12,
                (h, true) => h + 12,
                (h, false) => h,
            };
        }
        None if h > 23 => return Err(bad()),
        None => {}
    }
    Ok((h, m))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tz(name: &str) -> TimeZone {
        TimeZone::get(name).unwrap()
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    /// (schedule, zone, now, expected next slots).
    fn check(text: &str, zone: &str, now: &str, expected: &[&str]) {
        let s = Schedule::parse(text, &tz(zone), at(now)).unwrap_or_else(|e| panic!("{e}"));
        let mut t = at(now);
        let mut got = Vec::new();
        for (i, _) in expected.iter().enumerate() {
            let next = if i == 0 { s.first(t) } else { s.next_after(t) };
            match next {
                Some(n) => {
                    got.push(n.to_string());
                    t = n;
                }
                None => break,
            }
        }
        assert_eq!(got, expected, "{text} in {zone} from {now}");
    }

    #[test]
    fn next_fire_table() {
        // Plain cron, UTC.
        check(
            "*/15 * * * *",
            "UTC",
            "2026-01-01T00:07:00Z",
            &["2026-01-01T00:15:00Z", "2026-01-01T00:30:00Z"],
        );
        // 6 fields (seconds).
        check(
            "30 0 9 * * *",
            "UTC",
            "2026-01-01T10:00:00Z",
            &["2026-01-02T09:00:30Z"],
        );
        // Month ends: the 31st skips short months.
        check(
            "0 12 31 * *",
            "UTC",
            "2026-01-31T13:00:00Z",
            &["2026-03-31T12:00:00Z", "2026-05-31T12:00:00Z"],
        );
        // Leap day: only in leap years.
        check(
            "0 0 29 2 *",
            "UTC",
            "2026-03-01T00:00:00Z",
            &["2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z"],
        );
        // DST gap (Europe/Berlin, 2026-03-29 02:00 -> 03:00): 02:30 does not exist that
        // day, so the job fires once at the end of the gap (03:00 CEST).
        check(
            "30 2 * * *",
            "Europe/Berlin",
            "2026-03-28T12:00:00Z",
            &["2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"],
        );
        // DST overlap (2026-10-25 03:00 -> 02:00): 02:30 happens twice, fires once.
        check(
            "30 2 * * *",
            "Europe/Berlin",
            "2026-10-24T12:00:00Z",
            &["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"],
        );
        // 9:00 local across the spring change keeps local time (UTC moves by an hour).
        check(
            "0 9 * * *",
            "America/New_York",
            "2026-03-07T15:00:00Z",
            &["2026-03-08T13:00:00Z", "2026-03-09T13:00:00Z"],
        );
        // Intervals.
        check(
            "every 30m",
            "UTC",
            "2026-01-01T00:00:10Z",
            &["2026-01-01T00:30:10Z", "2026-01-01T01:00:10Z"],
        );
        check(
            "every 2h",
            "UTC",
            "2026-01-01T00:00:00Z",
            &["2026-01-01T02:00:00Z"],
        );
        check(
            "every 1d",
            "UTC",
            "2026-02-28T06:00:00Z",
            &["2026-03-01T06:00:00Z"],
        );
        // One-shots.
        check(
            "in 30m",
            "UTC",
            "2026-01-01T00:00:00Z",
            &["2026-01-01T00:30:00Z"],
        );
        check(
            "2026-06-01T09:00:00+02:00",
            "UTC",
            "2026-01-01T00:00:00Z",
            &["2026-06-01T07:00:00Z"],
        );
        check(
            "2026-06-01T09:00",
            "Europe/Berlin",
            "2026-01-01T00:00:00Z",
            &["2026-06-01T07:00:00Z"],
        );
        check(
            "2026-06-01 09:00:00",
            "Asia/Tokyo",
            "2026-01-01T00:00:00Z",
            &["2026-06-01T00:00:00Z"],
        );
        // A one-shot up to 120 s in the past still fires (once).
        check(
            "2026-01-01T00:00:00Z",
            "UTC",
            "2026-01-01T00:01:30Z",
            &["2026-01-01T00:00:00Z"],
        );
        // Phrases.
        check(
            "every monday 9am",
            "UTC",
            "2026-11-23T10:00:00Z",
            &["2026-11-30T09:00:00Z"],
        );
        check(
            "weekdays at 9am",
            "UTC",
            "2026-11-27T10:00:00Z",
            &["2026-11-30T09:00:00Z", "2026-12-01T09:00:00Z"],
        );
        check(
            "every day at 14:00",
            "Europe/Paris",
            "2026-07-01T00:00:00Z",
            &["2026-07-01T12:00:00Z"],
        );
        check(
            "noon",
            "UTC",
            "2026-01-01T12:00:00Z",
            &["2026-01-02T12:00:00Z"],
        );
        check(
            "midnight",
            "UTC",
            "2026-01-01T12:00:00Z",
            &["2026-01-02T00:00:00Z"],
        );
        check(
            "every friday at 5:30pm",
            "UTC",
            "2026-11-23T00:00:00Z",
            &["2026-11-27T17:30:00Z"],
        );
        check(
            "every day at 12am",
            "UTC",
            "2026-11-23T01:00:00Z",
            &["2026-11-24T00:00:00Z"],
        );
    }

    #[test]
    fn bad_schedules_name_the_problem() {
        let now = at("2026-01-01T00:00:00Z");
        let check = |text: &str, fragment: &str| {
            let e = Schedule::parse(text, &TimeZone::UTC, now).unwrap_err();
            assert!(e.to_string().contains(fragment), "{text}: {e}");
        };
        check("", "empty");
        check("every 0m", "greater than zero");
        check("every 5 parsecs", "unknown unit");
        check("in soon", "expected a number");
        check("2025-12-31T23:57:00Z", "more than 120 s in the past");
        check("2026-13-01T00:00", "not an ISO timestamp");
        check("61 * * * *", "bad cron expression");
        check("* * *", "3 fields");
        check("every monday 25:00", "bad time of day");
        check("every monday 13pm", "bad time of day");
        check("whenever", "1 fields");
        check("0 0 30 2 *", "never run");
    }

    #[test]
    fn upcoming_slots_are_the_ones_a_new_job_would_run() {
        let now = at("2026-03-28T12:00:00Z");
        let upcoming = |text: &str, n: usize| -> Vec<String> {
            Schedule::parse(text, &tz("Europe/Berlin"), now)
                .unwrap()
                .upcoming(now, n)
                .iter()
                .map(|t| t.to_string())
                .collect()
        };
        // Across the spring-forward night: 09:00 Berlin is 08:00Z, then 07:00Z.
        assert_eq!(
            upcoming("0 9 * * *", 3),
            [
                "2026-03-29T07:00:00Z",
                "2026-03-30T07:00:00Z",
                "2026-03-31T07:00:00Z"
            ]
        );
        assert_eq!(
            upcoming("every 2h", 2),
            ["2026-03-28T14:00:00Z", "2026-03-28T16:00:00Z"]
        );
        // A one-shot has one slot, however many are asked for.
        assert_eq!(upcoming("in 30m", 5), ["2026-03-28T12:30:00Z"]);
        assert!(upcoming("0 9 * * *", 0).is_empty());
    }

    #[test]
    fn grace_is_half_the_period_clamped() {
        let now = at("2026-01-01T00:00:00Z");
        let g = |text: &str| {
            Schedule::parse(text, &TimeZone::UTC, now)
                .unwrap()
                .grace(now)
                .as_secs()
        };
        assert_eq!(g("every 1m"), 120);
        assert_eq!(g("every 30m"), 900);
        assert_eq!(g("every 1d"), 7200);
        assert_eq!(g("0 * * * *"), 1800);
        assert_eq!(g("in 5m"), 120);
    }
}
