//! Stored chat sessions (SPEC §11 "Sessions"): a chat completion's conversation kept in the
//! store, so a client may send only its new message — to any replica — and `/api/sessions`
//! may list, show and forget them. Not the dashboard's sign-in sessions (`auth::sessions`).
//!
//! [`Sessions`] decides which session a request belongs to and what history its turn runs
//! on ([`Sessions::open`]), records each completed turn — its user and assistant messages;
//! a failed or interrupted turn records nothing ([`RecordedTurn`]) — keeps both bounds, and
//! counts every decision in `hermes_session_requests`. It knows no HTTP (the handlers map
//! its answers) and speaks no SQL (the store does).
//!
//! # Which session, and what history
//! A request's messages split into its *instructions* (`system` and `developer` messages,
//! sent to the turn but never stored), its *earlier* messages (up to its last `assistant`
//! message) and its *new* ones (after it).
//! - No `X-Hermes-Session-Id`: the id is derived from the conversation's start, as Hermes
//!   derives it (`api-` and the first 16 hex digits of SHA-256 of the system messages and
//!   the first user message), so a client resending a growing conversation keeps one
//!   session. The turn runs on the request as sent; the session is created with the
//!   earlier messages the request carried, then grows by each turn's new messages and
//!   answer.
//! - A given id must match [`SESSION_ID_PATTERN`] ([`SessionError::InvalidId`] otherwise).
//!   When it is stored, the stored history replaces the request's earlier messages: the
//!   turn runs on the instructions, the stored history and the new messages.
//!   When it is not stored, a request without an assistant message *begins* a conversation
//!   under it, as a derived id begins with a conversation's first turn — so a client may
//!   name its new conversation itself, in Hermes's `YYYYMMDD_HHMMSS_xxxxxx` form. Otherwise
//!   the id names a conversation this gateway does not hold (never stored, forgotten, or
//!   dropped by the bound): [`SessionError::Unknown`]. That is so when the request carries
//!   earlier turns, and for an `api-` id other than the request's own derived one — an
//!   `api-` id is the gateway's, so a client that echoes one it was answered and sends only
//!   its new message learns that the history is gone, rather than getting an answer
//!   without it.

use crate::agent::{Message, Usage};
use crate::clock::SharedClock;
use crate::metrics::Metrics;
use crate::store::{ChatAppend, Store, StoreError};
use crate::turn::{Collected, End, Step, Turn};

/// A stored session (without, and with, its messages), as the store reads it.
pub use crate::store::{ChatSession, StoredChat};

/// The forms of a session id (SPEC §11), as a regular expression for documents: a
/// derived `api-` id, or Hermes's `YYYYMMDD_HHMMSS_` and 6 hex digits.
pub const SESSION_ID_PATTERN: &str = "^(api-[0-9a-f]{16}|[0-9]{8}_[0-9]{6}_[0-9a-f]{6})$";

/// Whether `id` has one of the two forms of [`SESSION_ID_PATTERN`].
pub fn is_session_id(id: &str) -> bool {
    let b = id.as_bytes();
    let hex = |s: &[u8]| s.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    let digits = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
    match b.len() {
        20 => b.starts_with(b"api-") && hex(&b[4..]),
        22 => {
            digits(&b[..8]) && b[8] == b'_' && digits(&b[9..15]) && b[15] == b'_' && hex(&b[16..])
        }
        _ => false,
    }
}

/// The id Hermes derives for a conversation sent without one: `api-` and the first 16 hex
/// digits of SHA-256 of `"{system prompt}\n{first user message}"`, the system prompt
/// being the `system` messages joined by newlines.
pub fn derive_id(messages: &[Message]) -> String {
    let system: Vec<&str> = messages
        .iter()
        .filter(|m| m.role == "system")
        .map(|m| m.content.as_str())
        .collect();
    let first_user = messages
        .iter()
        .find(|m| m.role == "user")
        .map_or("", |m| m.content.as_str());
    let seed = format!("{}\n{first_user}", system.join("\n"));
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, seed.as_bytes());
    let hex: String = digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("api-{hex}")
}

/// How much the store keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most sessions; past it the least recently updated are forgotten.
    pub sessions: u64,
    /// Most messages per session; past it its oldest are dropped.
    pub messages: u64,
}

/// Why a session could not be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SessionError {
    /// The id has neither form of [`SESSION_ID_PATTERN`].
    #[error("Invalid session ID")]
    InvalidId,
    /// The id is not stored, and the request does not begin a conversation under it.
    #[error("Unknown session ID")]
    Unknown,
    /// A stored session was named but the request has no user message after its last
    /// assistant message: nothing new to answer.
    #[error("No new user message to continue the session with")]
    NoNewMessage,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl SessionError {
    /// The outcome label of `hermes_session_requests`.
    fn outcome(&self) -> &'static str {
        match self {
            Self::InvalidId => "invalid_id",
            Self::Unknown => "unknown",
            Self::NoNewMessage => "no_new_message",
            Self::Store(StoreError::Unavailable(_)) => "unavailable",
            Self::Store(_) => "error",
        }
    }
}

/// The stored sessions: decides, records and counts.
#[derive(Debug, Clone)]
pub struct Sessions {
    store: Store,
    clock: SharedClock,
    metrics: std::sync::Arc<Metrics>,
    limits: Limits,
}

/// A chat request's session, decided before its turn runs.
#[derive(Debug)]
pub struct Opened {
    /// The session id, given or derived (answered in `X-Hermes-Session-Id`).
    pub id: String,
    /// What the turn runs on.
    pub messages: Vec<Message>,
    /// What the turn records once it completes.
    pub recording: Recording,
}

/// What a completed turn appends to its session: the messages the session may not hold
/// yet (`seed`, written only if the session is created then) and the turn's own new ones,
/// before the answer.
#[derive(Debug, Clone)]
pub struct Recording {
    sessions: Sessions,
    id: String,
    seed: Vec<Message>,
    new: Vec<Message>,
}

/// A request's messages, split as the module doc says.
struct Split {
    instructions: Vec<Message>,
    earlier: Vec<Message>,
    new: Vec<Message>,
}

impl Split {
    fn of(messages: &[Message]) -> Self {
        let (instructions, mut earlier): (Vec<Message>, Vec<Message>) = messages
            .iter()
            .cloned()
            .partition(|m| m.role == "system" || m.role == "developer");
        let cut = earlier
            .iter()
            .rposition(|m| m.role == "assistant")
            .map_or(0, |i| i + 1);
        let new = earlier.split_off(cut);
        Self {
            instructions,
            earlier,
            new,
        }
    }
}

impl Sessions {
    pub fn new(
        store: Store,
        clock: SharedClock,
        metrics: std::sync::Arc<Metrics>,
        limits: Limits,
    ) -> Self {
        Self {
            store,
            clock,
            metrics,
            limits,
        }
    }

    /// Decides the session of a chat request carrying `messages`, named by `given` (the
    /// client's `X-Hermes-Session-Id`) or derived, and the messages its turn runs on.
    pub async fn open(
        &self,
        given: Option<&str>,
        messages: Vec<Message>,
    ) -> Result<Opened, SessionError> {
        let decided = self.decide(given, messages).await;
        let outcome = match &decided {
            Ok((_, outcome)) => *outcome,
            Err(e) => e.outcome(),
        };
        self.metrics.session_request("chat", outcome);
        decided.map(|(opened, _)| opened)
    }

    async fn decide(
        &self,
        given: Option<&str>,
        messages: Vec<Message>,
    ) -> Result<(Opened, &'static str), SessionError> {
        let split = Split::of(&messages);
        let Some(id) = given else {
            let id = derive_id(&messages);
            let recording = self.recording(&id, split.earlier, split.new);
            let opened = Opened {
                id,
                messages,
                recording,
            };
            return Ok((opened, "derived"));
        };
        if !is_session_id(id) {
            return Err(SessionError::InvalidId);
        }
        match self.store.chat_session(id).await? {
            Some(stored) => {
                if !split.new.iter().any(|m| m.role == "user") {
                    return Err(SessionError::NoNewMessage);
                }
                let mut turn = split.instructions;
                turn.extend(stored.messages);
                turn.extend(split.new.iter().cloned());
                let opened = Opened {
                    id: id.to_owned(),
                    messages: turn,
                    recording: self.recording(id, Vec::new(), split.new),
                };
                Ok((opened, "continued"))
            }
            // An `api-` id is a derived one: it names the conversation whose start it hashes.
            None if split.earlier.is_empty()
                && (!id.starts_with("api-") || derive_id(&messages) == id) =>
            {
                let opened = Opened {
                    id: id.to_owned(),
                    messages,
                    recording: self.recording(id, Vec::new(), split.new),
                };
                Ok((opened, "begun"))
            }
            None => Err(SessionError::Unknown),
        }
    }

    /// A new session id in Hermes's own form — `YYYYMMDD_HHMMSS_` (UTC, now) and 6 random
    /// hex digits — for a conversation this gateway begins (the dashboard's chat).
    pub fn mint_id(&self) -> String {
        let now = self.clock.now().strftime("%Y%m%d_%H%M%S");
        format!("{now}_{}", &crate::ids::random_hex128()[..6])
    }

    fn recording(&self, id: &str, seed: Vec<Message>, new: Vec<Message>) -> Recording {
        Recording {
            sessions: self.clone(),
            id: id.to_owned(),
            seed,
            new,
        }
    }

    /// Every stored session, the most recently updated first.
    pub async fn list(&self) -> Result<Vec<ChatSession>, SessionError> {
        let listed: Result<_, SessionError> =
            self.store.list_chat_sessions().await.map_err(Into::into);
        self.count("list", &listed);
        listed
    }

    /// One stored session with its messages.
    pub async fn show(&self, id: &str) -> Result<StoredChat, SessionError> {
        let shown = if !is_session_id(id) {
            Err(SessionError::InvalidId)
        } else {
            match self.store.chat_session(id).await {
                Ok(Some(stored)) => Ok(stored),
                Ok(None) => Err(SessionError::Unknown),
                Err(e) => Err(e.into()),
            }
        };
        self.count("show", &shown);
        shown
    }

    /// Forgets a stored session and its messages.
    pub async fn forget(&self, id: &str) -> Result<(), SessionError> {
        let forgotten = if !is_session_id(id) {
            Err(SessionError::InvalidId)
        } else {
            match self.store.delete_chat_session(id).await {
                Ok(true) => Ok(()),
                Ok(false) => Err(SessionError::Unknown),
                Err(e) => Err(e.into()),
            }
        };
        if forgotten.is_ok() {
            tracing::info!(session = %id, "chat session forgotten");
        }
        self.count("delete", &forgotten);
        forgotten
    }

    fn count<T>(&self, route: &'static str, result: &Result<T, SessionError>) {
        let outcome = result.as_ref().map_or_else(SessionError::outcome, |_| "ok");
        self.metrics.session_request(route, outcome);
    }

    /// Appends a completed turn, then keeps the store within its session bound; a store
    /// failure is logged and counted (the turn's answer stands; its session misses it).
    async fn append(&self, recording: &Recording, answer: String) {
        let mut messages = recording.new.clone();
        messages.push(Message {
            role: "assistant".into(),
            content: answer,
        });
        let turn = ChatAppend {
            id: &recording.id,
            seed: &recording.seed,
            messages: &messages,
            max_messages: self.limits.messages,
        };
        let outcome = match self.store.append_chat_turn(turn, self.clock.now()).await {
            Ok(true) => match self.store.evict_chat_sessions(self.limits.sessions).await {
                Ok(_) => "appended",
                Err(e) => {
                    tracing::warn!(error = %e, "cannot keep the chat sessions within their bound");
                    "error"
                }
            },
            Ok(false) => "appended",
            Err(e) => {
                tracing::warn!(session = %recording.id, error = %e, "cannot record the chat turn");
                "error"
            }
        };
        self.metrics.session_request("record", outcome);
    }
}

impl Recording {
    /// Wraps the turn's run: when it completes, its new messages and answer are appended
    /// before its end is returned.
    pub fn around(self, turn: Turn) -> RecordedTurn {
        RecordedTurn {
            turn,
            text: String::new(),
            recording: Some(self),
        }
    }

    /// Appends the turn on a task of its own, so the write finishes (or fails whole) even
    /// when the caller goes away meanwhile.
    async fn commit(self, answer: String) {
        let task = tokio::spawn(async move { self.sessions.append(&self, answer).await });
        if let Err(e) = task.await {
            tracing::warn!(error = %e, "the chat turn's record did not finish");
        }
    }
}

/// A turn whose session records it when it completes; steps pass through unchanged.
#[derive(Debug)]
pub struct RecordedTurn {
    turn: Turn,
    text: String,
    /// `None` once the turn ended (recorded or not).
    recording: Option<Recording>,
}

impl RecordedTurn {
    /// The next step of the turn ([`Turn::next`]); a completed end is recorded first.
    pub async fn next(&mut self) -> Step {
        let step = self.turn.next().await;
        match &step {
            Step::Delta(piece) => self.text.push_str(piece),
            Step::End(End::Completed) => {
                if let Some(recording) = self.recording.take() {
                    recording.commit(self.text.clone()).await;
                }
            }
            Step::End(_) => self.recording = None,
        }
        step
    }

    /// Runs the turn to its end ([`Turn::collect`]), recording it if it completes.
    pub async fn collect(mut self) -> Collected {
        loop {
            if let Step::End(end) = self.next().await {
                return Collected {
                    text: std::mem::take(&mut self.text),
                    usage: self.turn.usage(),
                    end,
                };
            }
        }
    }

    /// The token counts the backend reported, if any (so far).
    pub fn usage(&self) -> Option<Usage> {
        self.turn.usage()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(role: &str, content: &str) -> Message {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }

    #[test]
    fn session_ids_have_one_of_two_forms() {
        let table = [
            ("api-0123456789abcdef", true),
            ("20260101_120000_abcdef", true),
            ("api-0123456789ABCDEF", false),
            ("api-0123456789abcde", false),
            ("api-0123456789abcdef0", false),
            ("xyz-0123456789abcdef", false),
            ("2026010_1120000_abcdef", false),
            ("20260101_120000_abcdeg", false),
            ("20260101-120000-abcdef", false),
            ("２0260101_120000_abcdef", false),
            ("my-session-7", false),
            ("", false),
        ];
        for (id, ok) in table {
            assert_eq!(is_session_id(id), ok, "{id}");
        }
    }

    #[test]
    fn derived_ids_are_hermes_ids_of_the_conversation_start() {
        // Hermes: sha256("{system}\n{first user}")[:16]; "you are terse\nhi".
        let start = [m("system", "you are terse"), m("user", "hi")];
        let id = derive_id(&start);
        assert!(is_session_id(&id), "{id}");
        let later = [
            m("system", "you are terse"),
            m("user", "hi"),
            m("assistant", "hello"),
            m("user", "and now?"),
        ];
        assert_eq!(derive_id(&later), id, "a growing conversation keeps its id");
        assert_ne!(derive_id(&[m("user", "hi")]), id);
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b"you are terse\nhi");
        let hex: String = digest.as_ref()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(id, format!("api-{hex}"));
    }

    /// Splits `messages` and compares each part's contents with the expected ones.
    fn check(messages: &[Message], instructions: &[&str], earlier: &[&str], new: &[&str]) {
        let contents = |v: &[Message]| v.iter().map(|m| m.content.clone()).collect::<Vec<_>>();
        let s = Split::of(messages);
        assert_eq!(contents(&s.instructions), instructions, "{messages:?}");
        assert_eq!(contents(&s.earlier), earlier, "{messages:?}");
        assert_eq!(contents(&s.new), new, "{messages:?}");
    }

    #[test]
    fn a_request_splits_into_instructions_earlier_and_new_messages() {
        check(&[m("user", "u1")], &[], &[], &["u1"]);
        check(
            &[
                m("system", "s"),
                m("user", "u1"),
                m("assistant", "a1"),
                m("user", "u2"),
            ],
            &["s"],
            &["u1", "a1"],
            &["u2"],
        );
        check(
            &[
                m("user", "u1"),
                m("assistant", "a1"),
                m("tool", "t"),
                m("developer", "d"),
                m("user", "u2"),
            ],
            &["d"],
            &["u1", "a1"],
            &["t", "u2"],
        );
        check(
            &[m("user", "u1"), m("assistant", "a1")],
            &[],
            &["u1", "a1"],
            &[],
        );
    }
}
