//! One run's task: its turn on the backend, the reply windowed into `message.delta`
//! events, the store kept in step (new events, the lease, a stop asked on another
//! replica), and the run's end pushed as its last event and recorded.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::time::{Instant, MissedTickBehavior};

use super::log::{Ended, LiveRun};
use super::service::{LEASE_MS, Runs};
use crate::agent::TurnRequest;
use crate::store::{AgentRunStatus, RunEnd, RunProgress, Synced};
use crate::turn::{Admission, End, Interruption, Step};

/// At most one `message.delta` event per window: text that comes faster is merged into
/// the next one, so a run's log grows with its duration, not with its token count. The
/// first piece after a pause goes out at once.
const DELTA_WINDOW: Duration = Duration::from_millis(50);
/// How often a running run writes its new events and renews its lease (reading, in the
/// same statement, whether another replica asked it to stop).
const SYNC_EVERY: Duration = Duration::from_millis(500);
/// Attempts to record a run's end, backing off a little more each time.
const END_ATTEMPTS: u32 = 5;
const END_BACKOFF: Duration = Duration::from_millis(200);

const SHUTDOWN: &str = "the gateway shut down before the run finished";
const NO_OUTCOME: &str = "the agent's turn ended without an outcome";
const LEASE_GONE: &str = "the run's lease could not be renewed";
const LOST: &str = "another process found this run dead and ended it";

/// Why a run's loop ended.
enum Exit {
    Turn(End),
    Stopped,
    /// The store could not be reached until the lease ran out: another replica may call
    /// the run dead, so it stops rather than run on beside that.
    LeaseGone,
    /// Another process ended it (found dead): nothing more is written.
    Lost,
}

/// A run's progress, as its task holds it.
struct Progress {
    output: String,
    /// Text not yet in an event (inside the current window), due at `due`.
    pending: String,
    due: Option<Instant>,
    last_delta: Option<Instant>,
    /// Events already in the store.
    synced: usize,
    lease_until_ms: i64,
}

impl Runs {
    /// Runs the run to its end and records it.
    pub(super) async fn drive(
        &self,
        live: Arc<LiveRun>,
        admission: Admission,
        request: TurnRequest,
    ) {
        let input_tokens: u64 = request.messages.iter().map(|m| words(&m.content)).sum();
        let mut turn = admission.start(request);
        let mut p = Progress {
            output: String::new(),
            pending: String::new(),
            due: None,
            last_delta: None,
            synced: 0,
            lease_until_ms: live.created_at_ms + LEASE_MS,
        };
        let mut sync = tokio::time::interval(SYNC_EVERY);
        sync.set_missed_tick_behavior(MissedTickBehavior::Delay);
        sync.tick().await;
        let exit = loop {
            tokio::select! {
                step = turn.next() => match step {
                    Step::Delta(text) => self.delta(&live, &mut p, &text),
                    Step::End(end) => break Exit::Turn(end),
                },
                () = live.stop.cancelled() => break Exit::Stopped,
                () = tokio::time::sleep_until(p.due.unwrap_or_else(Instant::now)), if p.due.is_some() => {
                    self.flush_delta(&live, &mut p);
                }
                _ = sync.tick() => if let Some(exit) = self.sync(&live, &mut p).await {
                    break exit;
                },
            }
        };
        let reported = turn.usage();
        // Dropping the turn ends it: a stopped run's agent processes are killed here.
        drop(turn);
        self.flush_delta(&live, &mut p);
        let (status, name, error) = outcome(&exit);
        let mut fields = Map::new();
        fields.insert("status".into(), json!(status.as_str()));
        fields.insert("output".into(), json!(p.output));
        if let Some(e) = error {
            fields.insert("error".into(), json!(e));
        }
        if status == AgentRunStatus::Completed {
            let (i, o) = reported.map_or((input_tokens, words(&p.output)), |u| {
                (u.prompt_tokens, u.completion_tokens)
            });
            fields.insert("usage".into(), usage(i, o));
        }
        live.push(name, fields, self.now_ms());
        live.close(Ended {
            status,
            output: p.output.clone(),
            error: error.map(str::to_owned),
        });
        if !matches!(exit, Exit::Lost) {
            self.record_end(&live, &p, status, error).await;
        }
        self.announce(&live, status.as_str());
        self.forget(&live.id);
    }

    /// A piece of the reply: out at once after a pause, else merged into the next event.
    fn delta(&self, live: &LiveRun, p: &mut Progress, text: &str) {
        if text.is_empty() {
            return;
        }
        p.output.push_str(text);
        p.pending.push_str(text);
        if p.due.is_some() {
            return;
        }
        match p.last_delta {
            Some(last) if Instant::now() < last + DELTA_WINDOW => p.due = Some(last + DELTA_WINDOW),
            _ => self.flush_delta(live, p),
        }
    }

    /// Pushes the pending text, if any, as one `message.delta`.
    fn flush_delta(&self, live: &LiveRun, p: &mut Progress) {
        p.due = None;
        if p.pending.is_empty() {
            return;
        }
        p.last_delta = Some(Instant::now());
        let mut fields = Map::new();
        fields.insert("delta".into(), json!(std::mem::take(&mut p.pending)));
        live.push("message.delta", fields, self.now_ms());
    }

    /// Writes the new events and renews the lease; a stop asked elsewhere stops the run.
    /// `Some` when the run must end.
    async fn sync(&self, live: &LiveRun, p: &mut Progress) -> Option<Exit> {
        let new = live.since(p.synced);
        let now = self.now_ms();
        let progress = RunProgress {
            id: &live.id,
            owner: &self.owner,
            first_seq: p.synced as i64,
            events: &new.events,
            last_event: new.last_event,
            updated_at_ms: new.updated_at_ms,
            lease_until_ms: now + LEASE_MS,
        };
        match self.store.sync_agent_run(&progress).await {
            Ok(Synced::Held { stop_requested }) => {
                p.synced += new.events.len();
                p.lease_until_ms = progress.lease_until_ms;
                if stop_requested {
                    // Seen by the loop's next turn.
                    let _ = live.request_stop();
                }
                None
            }
            Ok(Synced::Lost) => {
                tracing::warn!(run = %live.id, "the run was ended elsewhere (found dead); stopping it without recording it");
                Some(Exit::Lost)
            }
            Err(e) if now >= p.lease_until_ms => {
                tracing::warn!(run = %live.id, error = %e, "cannot renew the run's lease and it has run out; stopping the run");
                Some(Exit::LeaseGone)
            }
            Err(e) => {
                tracing::warn!(run = %live.id, error = %e, "cannot sync the run to the store; retrying");
                None
            }
        }
    }

    /// Records the run's end with its last events (retried: a store hiccup must not leave
    /// a finished run to be called dead when its lease runs out).
    async fn record_end(
        &self,
        live: &LiveRun,
        p: &Progress,
        status: AgentRunStatus,
        error: Option<&str>,
    ) {
        let last = live.since(p.synced);
        for attempt in 1..=END_ATTEMPTS {
            let end = RunEnd {
                progress: RunProgress {
                    id: &live.id,
                    owner: &self.owner,
                    first_seq: p.synced as i64,
                    events: &last.events,
                    last_event: last.last_event,
                    updated_at_ms: last.updated_at_ms,
                    lease_until_ms: 0,
                },
                status,
                output: &p.output,
                error,
            };
            match self.store.finish_agent_run(&end).await {
                Ok(true) => return,
                Ok(false) => {
                    tracing::warn!(run = %live.id, "the run was ended elsewhere (found dead); not recorded again");
                    return;
                }
                Err(e) if attempt < END_ATTEMPTS => {
                    tracing::warn!(run = %live.id, error = %e, attempt, "cannot record the run's end yet; retrying");
                    tokio::time::sleep(END_BACKOFF * attempt).await;
                }
                Err(e) => {
                    tracing::error!(run = %live.id, error = %e, "cannot record the run's end")
                }
            }
        }
    }
}

/// A run's status, last event and error from why its loop ended.
fn outcome(exit: &Exit) -> (AgentRunStatus, &'static str, Option<&str>) {
    match exit {
        Exit::Turn(End::Completed) => (AgentRunStatus::Completed, "run.completed", None),
        Exit::Turn(End::Failed(m)) => (AgentRunStatus::Failed, "run.failed", Some(m.as_str())),
        Exit::Turn(End::Interrupted(Interruption::Cancelled)) => {
            (AgentRunStatus::Interrupted, "run.failed", Some(SHUTDOWN))
        }
        Exit::Turn(End::Interrupted(Interruption::NoOutcome)) => {
            (AgentRunStatus::Interrupted, "run.failed", Some(NO_OUTCOME))
        }
        Exit::Stopped => (AgentRunStatus::Cancelled, "run.stopped", None),
        Exit::LeaseGone => (AgentRunStatus::Interrupted, "run.failed", Some(LEASE_GONE)),
        Exit::Lost => (AgentRunStatus::Interrupted, "run.failed", Some(LOST)),
    }
}

/// The Responses-style usage of `run.completed`.
fn usage(input: u64, output: u64) -> Value {
    json!({"input_tokens": input, "output_tokens": output, "total_tokens": input + output})
}

/// A rough token count when the backend reports none (whitespace-separated words).
fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_way_a_run_ends_has_its_status_and_last_event() {
        use AgentRunStatus::*;
        let table: Vec<(Exit, AgentRunStatus, &str, Option<&str>)> = vec![
            (Exit::Turn(End::Completed), Completed, "run.completed", None),
            (
                Exit::Turn(End::Failed("boom".into())),
                Failed,
                "run.failed",
                Some("boom"),
            ),
            (
                Exit::Turn(End::Interrupted(Interruption::Cancelled)),
                Interrupted,
                "run.failed",
                Some(SHUTDOWN),
            ),
            (
                Exit::Turn(End::Interrupted(Interruption::NoOutcome)),
                Interrupted,
                "run.failed",
                Some(NO_OUTCOME),
            ),
            (Exit::Stopped, Cancelled, "run.stopped", None),
            (Exit::LeaseGone, Interrupted, "run.failed", Some(LEASE_GONE)),
            (Exit::Lost, Interrupted, "run.failed", Some(LOST)),
        ];
        for (exit, status, event, error) in &table {
            assert_eq!(outcome(exit), (*status, *event, *error));
        }
    }
}
