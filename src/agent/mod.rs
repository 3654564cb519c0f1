//! Agent backends: what executes a turn once the gate has admitted it.
//!
//! A closed set ([`Backend`]); each turns a [`TurnRequest`] into a stream of
//! [`TurnEvent`]s. Backends know nothing about HTTP, the gate or drains: callers hold the
//! turn guard and decide what a dropped stream means.

mod echo;

use std::pin::Pin;

use futures_util::Stream;

use crate::config::{AgentConfig, BackendKind};

pub use echo::EchoBackend;

/// One chat message as backends see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub role: String,
    pub content: String,
}

/// Everything a backend needs to run one turn.
#[derive(Debug, Clone)]
pub struct TurnRequest {
    pub messages: Vec<Message>,
    pub model: String,
    pub session_id: String,
    pub turn_id: String,
}

/// What a running turn produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnEvent {
    /// A piece of the assistant's reply.
    Delta(String),
    /// The turn completed; no events follow.
    Done,
    /// The turn failed; no events follow. The message is safe to show a client.
    Failed(String),
}

/// A running turn; dropping it cancels the turn.
pub type TurnStream = Pin<Box<dyn Stream<Item = TurnEvent> + Send>>;

/// The configured backend.
#[derive(Debug)]
pub enum Backend {
    Echo(EchoBackend),
}

/// Why a backend could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("the {0} backend is not available in this build yet")]
    NotAvailable(&'static str),
}

impl Backend {
    /// Builds the backend named in the config.
    pub fn from_config(agent: &AgentConfig) -> Result<Self, BackendError> {
        match agent.backend {
            BackendKind::Echo => Ok(Self::Echo(EchoBackend::new(agent.echo.delay_ms))),
            other => Err(BackendError::NotAvailable(other.as_str())),
        }
    }

    /// Starts a turn.
    pub fn start(&self, request: TurnRequest) -> TurnStream {
        match self {
            Self::Echo(b) => b.start(request),
        }
    }
}
