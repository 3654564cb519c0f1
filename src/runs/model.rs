//! What the runs domain answers: a run's view, its event feed, and why a request was
//! refused. A leaf of `runs`: the other files import it, it imports none of them.

use std::sync::Arc;

use futures_util::stream::BoxStream;

use crate::lifecycle::Refusal;
use crate::store::{AgentRunStatus, StoreError};

/// Runs one process runs at once; the next is refused (SPEC §11, compat).
pub const MAX_IN_FLIGHT: usize = 10;

/// Ended runs kept in the store (with their events); older ones are forgotten as new
/// runs start. Runs still running are never forgotten.
pub const MAX_STORED: usize = 1_000;

/// A run's events as JSON texts, in order: replayed from the first, then live, ending
/// after the run's last event.
pub type EventFeed = BoxStream<'static, Arc<str>>;

/// A run as `GET /v1/runs/{id}` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunView {
    pub id: String,
    /// `running`, `stopping` (a stop was asked), or how it ended: `completed`, `failed`,
    /// `cancelled` (stopped), `interrupted` (a shutdown cut it, or its process died).
    pub status: &'static str,
    pub session_id: String,
    pub model: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// The name of its latest event, if it has one yet.
    pub last_event: Option<String>,
    /// The reply, once the run has ended (what there was of it, if it did not complete).
    pub output: Option<String>,
    /// Why it failed or was interrupted.
    pub error: Option<String>,
}

/// Why a run request was refused.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The gate admits no turn (draining, stopping, starting).
    #[error(transparent)]
    Refused(Refusal),
    #[error("Too many concurrent runs (max {})", MAX_IN_FLIGHT)]
    TooMany,
    #[error("Run not found: {0}")]
    NotFound(String),
    /// A stop for a run that has already ended.
    #[error("Run {id} has already ended ({})", .status.as_str())]
    Ended { id: String, status: AgentRunStatus },
    #[error(transparent)]
    Store(#[from] StoreError),
}
