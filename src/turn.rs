//! The turn driver: the one place a turn is admitted, run on the backend, ended and counted.
//!
//! Every source of turns — the API (streamed or not), the dashboard's WebSocket chat, cron
//! runs — adapts this driver: it takes an [`Admission`] from the gate, starts the backend's
//! stream, folds its events into an [`End`] and records that outcome on the turn's guard.
//! A turn dropped before its end (a client that went away, a lost lease) counts as
//! interrupted, because the guard's default outcome is. The driver knows no transport.

use std::sync::Arc;

use futures_util::StreamExt;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::agent::{Backend, TurnEvent, TurnRequest, TurnStream, Usage};
use crate::lifecycle::{Refusal, TurnGate, TurnGuard};
use crate::metrics::TurnOutcome;

/// Starts turns: the gate that admits them, the backend that runs them and the token the
/// shutdown deadline fires to cut the ones still running.
#[derive(Debug, Clone)]
pub struct Turns {
    gate: Arc<TurnGate>,
    backend: Arc<Backend>,
    cancel: CancellationToken,
}

impl Turns {
    pub fn new(gate: Arc<TurnGate>, backend: Arc<Backend>) -> Self {
        Self {
            gate,
            backend,
            cancel: CancellationToken::new(),
        }
    }

    /// Admits a turn for `session`, or says why not (draining, starting, stopping). A
    /// caller that must claim work before it may run (a cron slot) admits first and starts
    /// the turn, or releases the admission, once the claim is decided.
    pub fn admit(&self, session: &str) -> Result<Admission, Refusal> {
        let guard = self.gate.admit(session)?;
        Ok(Admission {
            guard,
            backend: self.backend.clone(),
            cancel: self.cancel.clone(),
        })
    }

    /// The gate the turns pass (for a caller that reads the lifecycle state).
    pub fn gate(&self) -> &Arc<TurnGate> {
        &self.gate
    }

    /// Cuts every running turn (the shutdown deadline passed): each ends
    /// [`Interruption::Cancelled`].
    pub fn cancel_all(&self) {
        self.cancel.cancel();
    }
}

/// A turn the gate admitted that has not started yet; dropping it ends it as interrupted.
#[derive(Debug)]
pub struct Admission {
    guard: TurnGuard,
    backend: Arc<Backend>,
    cancel: CancellationToken,
}

impl Admission {
    /// Starts the turn on the backend.
    pub fn start(self, request: TurnRequest) -> Turn {
        let events = self.backend.start(request);
        self.run(events)
    }

    fn run(self, events: TurnStream) -> Turn {
        Turn {
            events,
            guard: Some(self.guard),
            cancelled: Box::pin(self.cancel.cancelled_owned()),
            usage: None,
        }
    }

    /// Gives the admission back without counting a turn (the work it was taken for did
    /// not happen: a cron slot another process claimed, say).
    pub fn release(self) {
        self.guard.release();
    }
}

/// What one step of a running turn produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A piece of the reply.
    Delta(String),
    /// The turn is over; its outcome is recorded and it no longer counts as in flight.
    End(End),
}

/// How a turn ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    Completed,
    /// The backend failed; the message is safe to show a client.
    Failed(String),
    Interrupted(Interruption),
}

/// Why a turn ended without an outcome of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interruption {
    /// The shutdown deadline cut it.
    Cancelled,
    /// The backend's stream ended without saying whether the turn completed.
    NoOutcome,
}

/// A running turn: the backend's stream, folded one [`Step`] at a time.
pub struct Turn {
    events: TurnStream,
    /// Held until the end is known; `None` afterwards.
    guard: Option<TurnGuard>,
    cancelled: std::pin::Pin<Box<WaitForCancellationFutureOwned>>,
    usage: Option<Usage>,
}

impl std::fmt::Debug for Turn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Turn")
            .field("ended", &self.guard.is_none())
            .field("usage", &self.usage)
            .finish_non_exhaustive()
    }
}

impl Turn {
    /// The next piece of the reply, or the turn's end. The end is recorded on the guard
    /// (which then lets the in-flight count fall) before it is returned; after the end
    /// every call returns the end of an interrupted turn.
    pub async fn next(&mut self) -> Step {
        if self.guard.is_none() {
            return Step::End(End::Interrupted(Interruption::NoOutcome));
        }
        loop {
            // Biased: once the deadline has fired, events the backend already queued are
            // not sent on (the turn ends interrupted, whatever it had buffered).
            let event = tokio::select! {
                biased;
                () = &mut self.cancelled => return self.end(End::Interrupted(Interruption::Cancelled)),
                event = self.events.next() => event,
            };
            return match event {
                Some(TurnEvent::Delta(text)) => Step::Delta(text),
                Some(TurnEvent::Usage(usage)) => {
                    self.usage = Some(usage);
                    continue;
                }
                Some(TurnEvent::Done) => self.end(End::Completed),
                Some(TurnEvent::Failed(message)) => self.end(End::Failed(message)),
                None => self.end(End::Interrupted(Interruption::NoOutcome)),
            };
        }
    }

    /// Runs the turn to its end, collecting the reply.
    pub async fn collect(mut self) -> Collected {
        let mut text = String::new();
        loop {
            match self.next().await {
                Step::Delta(piece) => text.push_str(&piece),
                Step::End(end) => {
                    return Collected {
                        text,
                        usage: self.usage,
                        end,
                    };
                }
            }
        }
    }

    /// The token counts the backend reported, if it reported any (so far).
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    fn end(&mut self, end: End) -> Step {
        if let Some(mut guard) = self.guard.take() {
            guard.set_outcome(match end {
                End::Completed => TurnOutcome::Completed,
                End::Failed(_) => TurnOutcome::Failed,
                End::Interrupted(_) => TurnOutcome::Interrupted,
            });
        }
        Step::End(end)
    }
}

/// A turn run to its end by [`Turn::collect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collected {
    pub text: String,
    pub usage: Option<Usage>,
    pub end: End,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::{Message, TurnEvent};
    use crate::clock::{ManualClock, SharedClock};
    use crate::metrics::Metrics;

    fn turns() -> (Turns, Arc<TurnGate>) {
        let clock: SharedClock = ManualClock::new(jiff::Timestamp::UNIX_EPOCH);
        let gate = TurnGate::new(clock, Arc::new(Metrics::default()), Default::default());
        gate.mark_serving();
        let backend = Arc::new(Backend::Echo(crate::agent::EchoBackend::new(0)));
        (Turns::new(gate.clone(), backend), gate)
    }

    /// A backend stream that yields `events` and then, unless `end` says it ends, stays
    /// open (a backend still working).
    fn scripted(events: Vec<TurnEvent>, end: bool) -> TurnStream {
        let events = futures_util::stream::iter(events);
        if end {
            Box::pin(events)
        } else {
            Box::pin(events.chain(futures_util::stream::pending()))
        }
    }

    #[tokio::test]
    async fn start_runs_the_backend() {
        let (turns, _) = turns();
        let request = TurnRequest {
            messages: vec![Message {
                role: "user".into(),
                content: "hi there".into(),
            }],
            model: "m".into(),
            session_id: "s".into(),
            turn_id: "t".into(),
        };
        let got = turns.admit("s").unwrap().start(request).collect().await;
        assert_eq!((got.text.as_str(), got.end), ("hi there", End::Completed));
    }

    /// The fold every turn source shares: events in, the reply and the outcome out.
    #[tokio::test]
    async fn events_fold_into_one_end() {
        let usage = Usage {
            prompt_tokens: 1,
            completion_tokens: 2,
        };
        let d = |s: &str| TurnEvent::Delta(s.into());
        let failed = TurnEvent::Failed("boom".into());
        let interrupted = End::Interrupted(Interruption::NoOutcome);
        let table: Vec<(Vec<TurnEvent>, &str, End, Option<Usage>)> = vec![
            (
                vec![d("a"), d("b"), TurnEvent::Done],
                "ab",
                End::Completed,
                None,
            ),
            (
                vec![d("a"), failed.clone()],
                "a",
                End::Failed("boom".into()),
                None,
            ),
            (vec![failed], "", End::Failed("boom".into()), None),
            (vec![d("a")], "a", interrupted.clone(), None),
            (vec![], "", interrupted, None),
            (
                vec![d("x"), TurnEvent::Usage(usage), TurnEvent::Done, d("late")],
                "x",
                End::Completed,
                Some(usage),
            ),
        ];
        for (events, text, end, usage) in table {
            let (turns, gate) = turns();
            let turn = turns
                .admit("s")
                .unwrap()
                .run(scripted(events.clone(), true));
            assert_eq!(gate.snapshot().active_agents, 1, "{events:?}");
            let got = turn.collect().await;
            assert_eq!(
                got,
                Collected {
                    text: text.into(),
                    usage,
                    end
                },
                "{events:?}"
            );
            assert_eq!(
                gate.snapshot().active_agents,
                0,
                "{events:?}: the end lets the count fall"
            );
        }
    }

    #[tokio::test]
    async fn cancel_all_interrupts_a_running_turn() {
        let (turns, gate) = turns();
        let events = scripted(vec![TurnEvent::Delta("a".into())], false);
        let mut turn = turns.admit("s").unwrap().run(events);
        assert_eq!(turn.next().await, Step::Delta("a".into()));
        turns.cancel_all();
        assert_eq!(
            turn.next().await,
            Step::End(End::Interrupted(Interruption::Cancelled))
        );
        assert_eq!(gate.snapshot().active_agents, 0);
    }

    /// A backend that has already queued its whole answer still ends interrupted once the
    /// deadline fired: the cut wins over buffered events.
    #[tokio::test]
    async fn cancel_wins_over_buffered_events() {
        for _ in 0..50 {
            let (turns, _) = turns();
            let events = scripted(vec![TurnEvent::Delta("a".into()), TurnEvent::Done], true);
            let mut turn = turns.admit("s").unwrap().run(events);
            turns.cancel_all();
            assert_eq!(
                turn.next().await,
                Step::End(End::Interrupted(Interruption::Cancelled))
            );
        }
    }

    #[tokio::test]
    async fn a_dropped_turn_or_admission_stops_counting() {
        let (turns, gate) = turns();
        let turn = turns.admit("s").unwrap().run(scripted(vec![], false));
        let admission = turns.admit("s2").unwrap();
        assert_eq!(gate.snapshot().active_agents, 2);
        drop(turn);
        admission.release();
        assert_eq!(gate.snapshot().active_agents, 0);
    }
}
