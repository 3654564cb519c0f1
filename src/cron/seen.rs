//! The fire-token ids this process knows to be recorded in the store, so that a replayed
//! token is answered from memory, without a read or a write.
//!
//! Only a shortcut, never the guard: an id is added only after the store has it committed
//! (this process's claim or record of it returned, or a read found it), so "seen" here is
//! always true of the store; an id missing here (another replica's, one from before a
//! restart, one evicted) is looked up in the store, and the claim's transaction still
//! records every id and still refuses a replay that races it. Bounded: two generations of
//! at most [`GENERATION`] ids each; when the current one fills, the older is dropped.

use std::collections::HashMap;
use std::sync::Mutex;

use jiff::Timestamp;

/// Most ids in one generation (so at most twice this many are kept).
const GENERATION: usize = 32 * 1024;

/// Ids known recorded, each with the time until which the store keeps it.
#[derive(Debug, Default)]
pub(super) struct SeenTokens {
    generations: Mutex<Generations>,
}

#[derive(Debug, Default)]
struct Generations {
    current: HashMap<Box<str>, Timestamp>,
    previous: HashMap<Box<str>, Timestamp>,
}

impl SeenTokens {
    /// Whether `jti` is known recorded and still kept at `now`.
    pub(super) fn contains(&self, jti: &str, now: Timestamp) -> bool {
        let g = self.lock();
        g.current
            .get(jti)
            .or_else(|| g.previous.get(jti))
            .is_some_and(|until| *until >= now)
    }

    /// Notes `jti` as recorded in the store until `until`. Call only once that is
    /// committed.
    pub(super) fn insert(&self, jti: &str, until: Timestamp) {
        let mut g = self.lock();
        if g.current.len() >= GENERATION {
            g.previous = std::mem::take(&mut g.current);
        }
        g.current.insert(jti.into(), until);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generations> {
        // The maps are valid whatever a panicking holder did: keep using them.
        self.generations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    #[test]
    fn an_id_is_seen_until_its_time_and_old_generations_are_dropped() {
        let seen = SeenTokens::default();
        assert!(!seen.contains("a", t(0)));
        seen.insert("a", t(10));
        assert!(seen.contains("a", t(10)));
        assert!(
            !seen.contains("a", t(11)),
            "kept no longer than the store keeps it"
        );
        // Filling the current generation twice over drops the first id, and only it.
        for i in 0..GENERATION * 2 {
            seen.insert(&format!("id-{i}"), t(10));
        }
        assert!(!seen.contains("a", t(0)));
        assert!(seen.contains(&format!("id-{}", GENERATION * 2 - 1), t(0)));
        assert!(seen.contains(&format!("id-{GENERATION}"), t(0)));
    }
}
