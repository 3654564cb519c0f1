//! Agent backends: what executes a turn once the gate has admitted it.
//!
//! A closed set ([`Backend`]); each turns a [`TurnRequest`] into a stream of
//! [`TurnEvent`]s. Backends know nothing about HTTP, the gate or drains: callers hold the
//! turn guard and decide what a dropped stream means.

mod command;
mod echo;
pub mod input;
pub mod keeper;
mod openai;

use std::pin::Pin;

use futures_util::Stream;
use secrecy::SecretString;
use tokio::sync::mpsc;

use crate::config::{AgentConfig, BackendKind};

pub use command::{CommandBackend, MAX_OUTPUT_BYTES};
pub use echo::EchoBackend;
pub use openai::OpenAiBackend;

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
    /// Token counts reported by the backend (when it knows them).
    Usage(Usage),
    /// The turn completed; no events follow.
    Done,
    /// The turn failed; no events follow. The message is safe to show a client.
    Failed(String),
}

/// Token counts of one turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// A running turn; dropping it cancels the turn.
pub type TurnStream = Pin<Box<dyn Stream<Item = TurnEvent> + Send>>;

/// The configured backend.
#[derive(Debug)]
pub enum Backend {
    Echo(EchoBackend),
    OpenAi(OpenAiBackend),
    Command(CommandBackend),
}

/// Why a backend could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(transparent)]
    Client(#[from] openai::ClientError),
}

impl Backend {
    /// Builds the backend named in the config; `openai_key` is the upstream credential.
    pub fn from_config(
        agent: &AgentConfig,
        openai_key: Option<SecretString>,
    ) -> Result<Self, BackendError> {
        Ok(match agent.backend {
            BackendKind::Echo => Self::Echo(EchoBackend::new(agent.echo.delay_ms)),
            BackendKind::OpenAi => Self::OpenAi(OpenAiBackend::new(&agent.openai, openai_key)?),
            BackendKind::Command => Self::Command(CommandBackend::new(&agent.command)),
        })
    }

    /// Starts a turn.
    pub fn start(&self, request: TurnRequest) -> TurnStream {
        match self {
            Self::Echo(b) => b.start(request),
            Self::OpenAi(b) => b.start(request),
            Self::Command(b) => b.start(request),
        }
    }
}

/// A turn stream fed by a task; dropping the stream closes the channel, which the task
/// watches to stop its work.
fn channel_stream(mut rx: mpsc::Receiver<TurnEvent>) -> TurnStream {
    Box::pin(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}
