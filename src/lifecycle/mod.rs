//! Lifecycle: the turn gate, the drain state machine, the marker contract, the marker
//! watcher and the runtime status record.
//!
//! This is the heart of safe drain. It knows nothing about HTTP: handlers ask the gate for
//! a [`TurnGuard`] and map a [`Refusal`] to their own wire shape.

pub mod drain;
pub mod gate;
pub mod marker;
pub mod status;
pub mod watch;

pub use drain::{DrainControl, DrainError};
pub use gate::{DrainRequest, GatewayState, Refusal, Snapshot, TurnGate, TurnGuard};
pub use marker::Marker;
pub use status::{CronStatus, DrainDetail, RuntimeInfo, StateFile, StatusRecord};
