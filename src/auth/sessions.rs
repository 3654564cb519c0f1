//! Dashboard sessions (gated mode) and single-use WebSocket tickets (SPEC §9).
//!
//! A session is a random 256-bit cookie value; a ticket a random 256-bit value valid for
//! 30 s (inclusive) and once, bound to the session that minted it. Both live in the store as
//! SHA-256 digests, so any replica can check them and a leaked table opens nothing. In
//! loopback mode tickets are bound to the process's session token instead. Nothing here
//! knows HTTP; errors and logs show at most the first 8 characters of a ticket.

use std::time::Duration;

use jiff::Timestamp;
use secrecy::SecretString;

use crate::clock::SharedClock;
use crate::store::{Redemption, Store, StoreError, StoredSession};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "hermes_session";
/// A ticket's lifetime (valid up to and including it).
pub const TICKET_TTL: Duration = Duration::from_secs(30);
/// Session lifetime when `basic_auth.session_ttl_seconds` is 0 (its default).
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// What loopback-mode tickets are bound to: the process's session token, always live.
const LOOPBACK_SESSION: &str = "loopback";

/// A signed-in dashboard user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub principal: String,
    pub provider: String,
    pub expires_at: Timestamp,
    /// The digest the store keys it by (what tickets are bound to).
    id_hash: String,
}

impl Session {
    /// The loopback-mode pseudo-session (the process's session token was presented).
    pub fn loopback() -> Self {
        Self {
            principal: "local".into(),
            provider: "session-token".into(),
            expires_at: Timestamp::MAX,
            id_hash: LOOPBACK_SESSION.into(),
        }
    }
}

/// Why a ticket did not open a WebSocket (the audit `reason`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketRejection {
    #[error("ticket {0}… is unknown")]
    Unknown(String),
    #[error("ticket {0}… was already used")]
    AlreadyUsed(String),
    #[error("ticket {0}… has expired")]
    Expired(String),
    #[error("ticket {0}… belongs to a session that has ended")]
    SessionEnded(String),
    #[error("the session store is unavailable")]
    Unavailable,
}

impl TicketRejection {
    /// A short machine reason for audit lines and close frames.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unknown(_) => "unknown",
            Self::AlreadyUsed(_) => "already_used",
            Self::Expired(_) => "expired",
            Self::SessionEnded(_) => "session_ended",
            Self::Unavailable => "store_unavailable",
        }
    }
}

/// The first 8 characters of a ticket: all that errors and logs may show.
pub fn ticket_prefix(ticket: &str) -> String {
    ticket.chars().take(8).collect()
}

fn digest(secret: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, secret.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Sessions and tickets over the store.
#[derive(Debug)]
pub struct Sessions {
    store: Store,
    clock: SharedClock,
    ttl: Duration,
    /// Loopback mode: tickets are bound to the process's session token.
    loopback: bool,
    /// When old tickets were last swept (Unix ms); at most once a minute.
    last_sweep_ms: std::sync::atomic::AtomicI64,
}

impl Sessions {
    pub fn new(store: Store, clock: SharedClock, ttl: Duration, loopback: bool) -> Self {
        Self {
            store,
            clock,
            ttl,
            loopback,
            last_sweep_ms: std::sync::atomic::AtomicI64::new(0),
        }
    }

    /// The session lifetime (the cookie's `Max-Age`).
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Starts a session; returns the cookie value (shown once, never stored) and the session.
    pub async fn create(
        &self,
        principal: &str,
        provider: &str,
    ) -> Result<(SecretString, Session), StoreError> {
        let token = crate::ids::random_urlsafe(32);
        let now = self.clock.now();
        let expires_at = now
            .checked_add(jiff::SignedDuration::try_from(self.ttl).unwrap_or_default())
            .unwrap_or(Timestamp::MAX);
        let id_hash = digest(&token);
        let stored = StoredSession {
            principal: principal.to_owned(),
            provider: provider.to_owned(),
            expires_at,
        };
        self.store.insert_session(&id_hash, &stored, now).await?;
        Ok((
            SecretString::from(token),
            Session {
                principal: stored.principal,
                provider: stored.provider,
                expires_at,
                id_hash,
            },
        ))
    }

    /// The live session a cookie value names, if any.
    pub async fn lookup(&self, token: &str) -> Result<Option<Session>, StoreError> {
        if token.is_empty() {
            return Ok(None);
        }
        self.by_hash(digest(token)).await
    }

    async fn by_hash(&self, id_hash: String) -> Result<Option<Session>, StoreError> {
        if id_hash == LOOPBACK_SESSION {
            // Only a loopback-mode gateway honours loopback tickets.
            return Ok(self.loopback.then(Session::loopback));
        }
        Ok(self
            .store
            .live_session(&id_hash, self.clock.now())
            .await?
            .map(|s| Session {
                principal: s.principal,
                provider: s.provider,
                expires_at: s.expires_at,
                id_hash,
            }))
    }

    /// Whether `session` is still live (not logged out, not expired). A store outage
    /// counts as live: the socket it guards was authorised, and stays until we know.
    pub async fn still_live(&self, session: &Session) -> bool {
        self.by_hash(session.id_hash.clone())
            .await
            .map_or(true, |s| s.is_some())
    }

    /// Ends the session a cookie value names (its tickets die with it).
    pub async fn revoke(&self, token: &str) -> Result<bool, StoreError> {
        self.store
            .revoke_session(&digest(token), self.clock.now())
            .await
    }

    /// Mints a ticket for `session`: 256 random bits, 30 s, one use. `None` when the
    /// session is no longer live in the store (revoked or expired since the caller looked
    /// it up, on any replica): the check and the insert are one statement.
    pub async fn mint_ticket(&self, session: &Session) -> Result<Option<String>, StoreError> {
        let ticket = crate::ids::random_urlsafe(32);
        let now = self.clock.now().as_millisecond();
        self.sweep_now_and_then(now);
        let ttl = i64::try_from(TICKET_TTL.as_millis()).unwrap_or(30_000);
        let (hash, expires) = (digest(&ticket), now + ttl);
        if session.id_hash == LOOPBACK_SESSION {
            self.store
                .insert_ticket(&hash, LOOPBACK_SESSION, now, expires)
                .await?;
            return Ok(Some(ticket));
        }
        let minted = self
            .store
            .insert_session_ticket(&hash, &session.id_hash, now, expires)
            .await?;
        Ok(minted.then_some(ticket))
    }

    /// At most once a minute, forgets tickets that expired over a minute ago: in the
    /// background, so no mint waits for the sweep (nor fails with it).
    fn sweep_now_and_then(&self, now_ms: i64) {
        use std::sync::atomic::Ordering;
        let last = self.last_sweep_ms.load(Ordering::Relaxed);
        if now_ms - last > 60_000
            && self
                .last_sweep_ms
                .compare_exchange(last, now_ms, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            let store = self.store.clone();
            tokio::spawn(async move {
                if let Err(e) = store.sweep_tickets(now_ms - 60_000).await {
                    tracing::warn!(error = %e, "cannot sweep expired WebSocket tickets");
                }
            });
        }
    }

    /// Redeems a ticket once, anywhere; the session it was minted for must still be live.
    /// One round trip: the store's compare-and-swap also reads that session.
    pub async fn redeem_ticket(&self, ticket: &str) -> Result<Session, TicketRejection> {
        let prefix = ticket_prefix(ticket);
        let now = self.clock.now().as_millisecond();
        let redeemed = self
            .store
            .redeem_ticket(&digest(ticket), now)
            .await
            .map_err(|_| TicketRejection::Unavailable)?;
        let (id_hash, live) = match redeemed {
            Redemption::Redeemed { session_hash, live } => (session_hash, live),
            Redemption::Unknown => return Err(TicketRejection::Unknown(prefix)),
            Redemption::AlreadyUsed => return Err(TicketRejection::AlreadyUsed(prefix)),
            Redemption::Expired => return Err(TicketRejection::Expired(prefix)),
        };
        let session = if id_hash == LOOPBACK_SESSION {
            // Only a loopback-mode gateway honours loopback tickets.
            self.loopback.then(Session::loopback)
        } else {
            live.map(|s| Session {
                principal: s.principal,
                provider: s.provider,
                expires_at: s.expires_at,
                id_hash,
            })
        };
        session.ok_or(TicketRejection::SessionEnded(prefix))
    }
}
