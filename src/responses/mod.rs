//! The Responses API's conversations (SPEC §11): a response continues the chain of its
//! `previous_response_id` (or a named `conversation`'s latest response), runs as one turn
//! of the driver, and is kept in the store — bounded, the least recently used dropped
//! first — so that any replica continues what another began.
//!
//! `request` checks a body (pure); `history` says what a turn sees and what a response
//! keeps (pure); `running` follows the turn to its end and keeps the response. This file
//! holds the service and the response's model. It knows no HTTP: `http::responses` maps
//! its answers to the wire.

mod history;
mod request;
mod running;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use request::{
    MAX_CONVERSATION_CHARS, MAX_METADATA_ENTRIES, MAX_METADATA_KEY_CHARS, MAX_METADATA_VALUE_CHARS,
    Previous, Request,
};
pub use running::{Progress, Running};

use crate::agent::input::InputError;
use crate::agent::{Message, TurnRequest};
use crate::clock::SharedClock;
use crate::config::Config;
use crate::lifecycle::Refusal;
use crate::store::{Store, StoreError, StoredResponse};
use crate::turn::Turns;

/// Where a response is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Its turn is running (a stream's first events).
    InProgress,
    Completed,
    /// The backend failed (the text it produced is kept), or the response could not be
    /// stored.
    Failed,
    /// The turn was cut short (by the shutdown deadline) before it ended.
    Incomplete,
}

impl Status {
    /// The wire name (OpenAI's), as the response object's `status` carries it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InProgress => "in_progress",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Incomplete => "incomplete",
        }
    }
}

/// Token counts of one response: the backend's, or words counted when it reports none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUsage {
    /// Of everything the turn was sent: instructions, the chain's history, the input.
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// A response: what is answered, streamed and stored (the wire shape is `http`'s).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// `resp_` and 32 hex characters.
    pub id: String,
    /// Unix seconds.
    pub created_at: i64,
    pub status: Status,
    pub model: String,
    /// The id of its one output message (`msg_…`).
    pub message_id: String,
    /// The assistant's reply (so far).
    pub text: String,
    pub usage: TokenUsage,
    /// The system prompt the turn ran with (given, or carried from the previous response).
    pub instructions: Option<String>,
    /// The response whose history this one continued.
    pub previous_response_id: Option<String>,
    pub conversation: Option<String>,
    pub metadata: BTreeMap<String, String>,
    /// Whether it is kept (`store`).
    pub store: bool,
    /// Why it failed or is incomplete; safe to show a client.
    pub error: Option<String>,
}

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum ResponsesError {
    /// The body is not JSON of the expected shape.
    #[error("{0}")]
    BadBody(String),
    /// A field was refused; the error names it.
    #[error("{}", .0.message)]
    Input(InputError),
    #[error("Previous response not found: {0}")]
    PreviousNotFound(String),
    #[error("Response not found: {0}")]
    NotFound(String),
    /// The gate admitted no turn (draining, starting, stopping).
    #[error(transparent)]
    Refused(Refusal),
    /// The backend failed before producing any text.
    #[error("{0}")]
    Failed(String),
    /// The shutdown deadline cut the turn before it produced its answer.
    #[error("the turn was interrupted")]
    Interrupted,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Runs and keeps responses; cheap to clone (every part is shared).
#[derive(Debug, Clone)]
pub struct Responses {
    store: Store,
    turns: Turns,
    clock: SharedClock,
    /// `gateway.api_server.max_stored_responses`.
    max_stored: u64,
    /// The served model (`gateway.api_server.model_name`), for a request naming none.
    model: String,
}

/// The chain a new response continues, read from the store.
struct Prior {
    id: Option<String>,
    history: Vec<Message>,
    instructions: Option<String>,
    session: String,
}

impl Responses {
    /// The service over `store`, running turns through `turns`, bounded and named by the
    /// API server's config (`max_stored_responses`, `model_name`).
    pub fn new(store: Store, turns: Turns, clock: SharedClock, config: &Config) -> Self {
        Self {
            store,
            turns,
            clock,
            max_stored: config.api_server.max_stored_responses,
            model: config.api_server.model_name.clone(),
        }
    }

    /// Starts the turn `request` asks for: its chain read from the store, admitted by the
    /// gate, running on the backend. A chain that is not stored is refused before any
    /// turn is admitted.
    pub async fn start(&self, request: Request) -> Result<Running, ResponsesError> {
        let prior = self.prior(request.previous.as_ref()).await?;
        let admission = self
            .turns
            .admit(&prior.session)
            .map_err(ResponsesError::Refused)?;
        let instructions = request.instructions.or(prior.instructions);
        let messages =
            history::turn_messages(instructions.as_deref(), &prior.history, &request.input);
        let input_tokens = messages
            .iter()
            .map(|m| history::count_tokens(&m.content))
            .sum();
        let model = request.model.unwrap_or_else(|| self.model.clone());
        let record = Record {
            id: format!("resp_{}", crate::ids::random_hex128()),
            created_at: self.clock.now().as_second(),
            status: Status::InProgress,
            model: model.clone(),
            message_id: format!("msg_{}", crate::ids::random_hex128()),
            text: String::new(),
            usage: TokenUsage {
                input_tokens,
                output_tokens: 0,
            },
            instructions,
            previous_response_id: prior.id,
            conversation: match request.previous {
                Some(Previous::Conversation(name)) => Some(name),
                _ => None,
            },
            metadata: request.metadata,
            store: request.store,
            error: None,
        };
        let turn = admission.start(TurnRequest {
            messages,
            model,
            session_id: prior.session.clone(),
            turn_id: record.id.clone(),
        });
        let mut kept = prior.history;
        kept.extend(request.input);
        Ok(Running::new(
            self.clone(),
            record,
            turn,
            kept,
            prior.session,
        ))
    }

    /// The stored response `id` (it counts as used now).
    pub async fn get(&self, id: &str) -> Result<Record, ResponsesError> {
        let stored = self
            .store
            .use_response(id, self.now_ms())
            .await?
            .ok_or_else(|| ResponsesError::NotFound(id.to_owned()))?;
        Ok(decode(&stored)?.0)
    }

    /// Forgets the response `id`.
    pub async fn delete(&self, id: &str) -> Result<(), ResponsesError> {
        if self.store.delete_response(id).await? {
            Ok(())
        } else {
            Err(ResponsesError::NotFound(id.to_owned()))
        }
    }

    /// What the chain a request names holds; a fresh session for a new conversation.
    async fn prior(&self, previous: Option<&Previous>) -> Result<Prior, ResponsesError> {
        let now = self.now_ms();
        let stored = match previous {
            None => None,
            Some(Previous::Response(id)) => Some(
                self.store
                    .use_response(id, now)
                    .await?
                    .ok_or_else(|| ResponsesError::PreviousNotFound(id.clone()))?,
            ),
            Some(Previous::Conversation(name)) => self.store.use_conversation(name, now).await?,
        };
        let Some(stored) = stored else {
            return Ok(Prior {
                id: None,
                history: Vec::new(),
                instructions: None,
                session: format!("api-{}", &crate::ids::random_hex128()[..16]),
            });
        };
        let (record, history) = decode(&stored)?;
        Ok(Prior {
            id: Some(stored.id),
            history,
            instructions: record.instructions,
            session: stored.session_id,
        })
    }

    /// Keeps a finished response with the conversation through it.
    async fn keep(
        &self,
        record: &Record,
        history: &[Message],
        session: &str,
    ) -> Result<(), StoreError> {
        let body = serde_json::to_string(record)
            .map_err(|e| StoreError::Query(format!("cannot encode a response: {e}")))?;
        let history = history::encode(history);
        let new = crate::store::NewResponse {
            id: &record.id,
            body: &body,
            history: &history,
            session_id: session,
            created_at: record.created_at,
            conversation: record.conversation.as_deref(),
        };
        self.store
            .put_response(&new, self.max_stored, self.now_ms())
            .await
    }

    fn now_ms(&self) -> i64 {
        self.clock.now().as_millisecond()
    }
}

/// A stored response's record and history; unreadable text is corrupt data.
fn decode(stored: &StoredResponse) -> Result<(Record, Vec<Message>), StoreError> {
    let record = serde_json::from_str(&stored.body)
        .map_err(|e| StoreError::Corrupt(format!("response {}: {e}", stored.id)))?;
    let history = history::decode(&stored.history)
        .map_err(|e| StoreError::Corrupt(format!("response {} history: {e}", stored.id)))?;
    Ok((record, history))
}
