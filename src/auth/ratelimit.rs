//! A per-client sliding-window limit for password logins (SPEC §9: the 11th attempt within
//! 60 s gets 429). In memory, per process; monotonic time, so paused-time tests work. An
//! IPv6 client is its /64 (one host can rotate through a whole /64). The table is bounded:
//! when full of active clients, unknown clients are refused until entries age out.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Clients tracked before idle ones are dropped.
const MAX_CLIENTS: usize = 10_000;

#[derive(Debug)]
pub struct RateLimiter {
    max: usize,
    window: Duration,
    hits: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

impl RateLimiter {
    pub fn new(max: usize, window: Duration) -> Self {
        Self {
            max,
            window,
            hits: Mutex::new(HashMap::new()),
        }
    }

    /// Counts an attempt by `client`; `Err(retry_after)` once it is over the limit.
    pub fn attempt(&self, client: IpAddr) -> Result<(), Duration> {
        let client = match client {
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
                let mut seg = v6.segments();
                seg[4..].fill(0);
                IpAddr::V6(seg.into())
            }
            other => other,
        };
        let now = Instant::now();
        let mut hits = self.hits.lock().unwrap_or_else(|e| e.into_inner());
        if hits.len() >= MAX_CLIENTS && !hits.contains_key(&client) {
            hits.retain(|_, q| {
                q.back()
                    .is_some_and(|t| now.duration_since(*t) < self.window)
            });
            if hits.len() >= MAX_CLIENTS {
                return Err(self.window);
            }
        }
        let q = hits.entry(client).or_default();
        while q
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            q.pop_front();
        }
        if q.len() >= self.max {
            let oldest = q.front().copied().unwrap_or(now);
            return Err(self.window.saturating_sub(now.duration_since(oldest)));
        }
        q.push_back(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn eleventh_attempt_in_a_minute_is_refused() {
        let limit = RateLimiter::new(10, Duration::from_secs(60));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..10 {
            assert!(limit.attempt(a).is_ok());
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        let wait = limit.attempt(a).unwrap_err();
        assert_eq!(wait, Duration::from_secs(50));
        assert!(limit.attempt(b).is_ok(), "other clients are not affected");
        tokio::time::advance(Duration::from_secs(50)).await;
        assert!(
            limit.attempt(a).is_ok(),
            "the oldest attempt left the window"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_ipv6_client_is_its_64() {
        let limit = RateLimiter::new(2, Duration::from_secs(60));
        assert!(limit.attempt("2001:db8::1".parse().unwrap()).is_ok());
        assert!(limit.attempt("2001:db8::ffff:2".parse().unwrap()).is_ok());
        assert!(limit.attempt("2001:db8::3:3:3:3".parse().unwrap()).is_err());
        assert!(limit.attempt("2001:db8:0:1::1".parse().unwrap()).is_ok());
    }
}
