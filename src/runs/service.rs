//! [`Runs`]: starts runs (admitted by the turn driver, capped at [`MAX_IN_FLIGHT`]),
//! answers their state and events from memory on the process running them and from the
//! store anywhere else, and stops them — here at once, or on another replica through the
//! store, which its owner reads at its next sync.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::stream;
use serde_json::{Map, json};
use tokio::sync::oneshot;
use tokio_util::task::TaskTracker;

use super::input::RunRequest;
use super::log::{LiveRun, event_text};
use super::model::{EventFeed, MAX_IN_FLIGHT, MAX_STORED, RunError, RunView};
use crate::agent::{Message, TurnRequest};
use crate::clock::SharedClock;
use crate::config::Config;
use crate::events::Events;
use crate::store::{AgentRun, AgentRunStatus, Store, StoreError};
use crate::turn::Turns;

/// How long a run's row says its process is alive without a renewal; a running run whose
/// lease ran out is recorded interrupted by the next process that reads it.
pub(super) const LEASE_MS: i64 = 30_000;

/// How often a feed reading the store asks it for new events.
const STORE_POLL: Duration = Duration::from_millis(250);
/// Events read from the store at once.
const PAGE: i64 = 500;

/// Why a run found dead was interrupted.
const DIED: &str = "the process running it stopped before it finished";

/// The runs of this process, and the way to every other replica's (the store).
#[derive(Debug)]
pub struct Runs {
    pub(super) store: Store,
    pub(super) turns: Turns,
    clock: SharedClock,
    events: Events,
    /// This process, as the owner of the runs it runs (random per process).
    pub(super) owner: String,
    /// The model a request without one names (`gateway.api_server.model_name`).
    model: String,
    live: Mutex<HashMap<String, Arc<LiveRun>>>,
    /// Each run's task (its turn, its syncs and its end), so a shutdown can wait for
    /// their ends to be recorded.
    tasks: TaskTracker,
}

impl Runs {
    /// Built complete: the store the runs are recorded in, the driver that admits their
    /// turns, the clock that dates them, the live events that announce them, and the
    /// config (the default model).
    pub fn new(
        store: &Store,
        turns: &Turns,
        clock: &SharedClock,
        events: &Events,
        config: &Config,
    ) -> Arc<Self> {
        Arc::new(Self {
            store: store.clone(),
            turns: turns.clone(),
            clock: clock.clone(),
            events: events.clone(),
            owner: format!(
                "runs-{}-{}",
                std::process::id(),
                crate::ids::random_hex128()
            ),
            model: config.api_server.model_name.clone(),
            live: Mutex::new(HashMap::new()),
            tasks: TaskTracker::new(),
        })
    }

    pub(super) fn now_ms(&self) -> i64 {
        self.clock.now().as_millisecond()
    }

    fn live(&self) -> MutexGuard<'_, HashMap<String, Arc<LiveRun>>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn find(&self, id: &str) -> Option<Arc<LiveRun>> {
        self.live().get(id).cloned()
    }

    /// Drops a run from the registry (its end is recorded, or it never started).
    pub(super) fn forget(&self, id: &str) {
        self.live().remove(id);
    }

    /// Starts a run and answers its id once its row is committed. The turn is admitted
    /// (or refused, draining) before anything is recorded; the run's task then holds it,
    /// whatever becomes of the caller.
    pub async fn start(self: &Arc<Self>, req: RunRequest) -> Result<String, RunError> {
        let id = format!("run_{}", crate::ids::random_hex128());
        let session = req.session_id.clone().unwrap_or_else(|| id.clone());
        let model = req
            .model
            .clone()
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| self.model.clone());
        let now = self.now_ms();
        let (live, admission) = {
            let mut runs = self.live();
            let admission = self.turns.admit(&session).map_err(RunError::Refused)?;
            if runs.len() >= MAX_IN_FLIGHT {
                admission.release();
                return Err(RunError::TooMany);
            }
            let live = Arc::new(LiveRun::new(
                id.clone(),
                session.clone(),
                model.clone(),
                now,
            ));
            runs.insert(id.clone(), live.clone());
            (live, admission)
        };
        let row = AgentRun {
            id: id.clone(),
            session_id: session.clone(),
            model: model.clone(),
            status: AgentRunStatus::Running,
            created_at_ms: now,
            updated_at_ms: now,
            last_event: None,
            output: None,
            error: None,
            lease_until_ms: now + LEASE_MS,
            stop_requested: false,
        };
        let mut messages = Vec::new();
        if let Some(system) = req.instructions.filter(|i| !i.is_empty()) {
            messages.push(Message {
                role: "system".into(),
                content: system,
            });
        }
        messages.push(Message {
            role: "user".into(),
            content: req.message,
        });
        let request = TurnRequest {
            messages,
            model,
            session_id: session,
            turn_id: id.clone(),
        };
        let (inserted_tx, inserted) = oneshot::channel();
        let this = self.clone();
        self.tasks.spawn(async move {
            let result = this
                .store
                .insert_agent_run(&row, &this.owner, MAX_STORED)
                .await;
            let ok = result.is_ok();
            // A caller that went away meanwhile needs no answer: the run runs anyway.
            let _ = inserted_tx.send(result);
            if ok {
                this.announce(&live, AgentRunStatus::Running.as_str());
                this.drive(live, admission, request).await;
            } else {
                this.forget(&live.id);
                admission.release();
            }
        });
        match inserted.await {
            Ok(Ok(())) => Ok(id),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(StoreError::Unavailable("the run's task ended".into()).into()),
        }
    }

    /// A run's state.
    pub async fn get(&self, id: &str) -> Result<RunView, RunError> {
        if let Some(live) = self.find(id) {
            return Ok(live.view());
        }
        let run = self
            .load(id)
            .await?
            .ok_or_else(|| RunError::NotFound(id.into()))?;
        Ok(stored_view(run))
    }

    /// Stops a running run: at once when it runs here, else through the store (its owner
    /// sees the request at its next sync, within a second).
    pub async fn stop(&self, id: &str) -> Result<(), RunError> {
        let ended = |status| RunError::Ended {
            id: id.into(),
            status,
        };
        if let Some(live) = self.find(id) {
            return live.request_stop().map_err(ended);
        }
        let run = self
            .load(id)
            .await?
            .ok_or_else(|| RunError::NotFound(id.into()))?;
        if run.status != AgentRunStatus::Running {
            return Err(ended(run.status));
        }
        if self.store.request_agent_run_stop(id).await? {
            return Ok(());
        }
        // It ended in the meantime.
        let status = self
            .load(id)
            .await?
            .map_or(AgentRunStatus::Interrupted, |r| r.status);
        Err(ended(status))
    }

    /// A run's events from the first: from memory when it runs here, else from the store
    /// (polled while it runs elsewhere).
    pub async fn events(self: &Arc<Self>, id: &str) -> Result<EventFeed, RunError> {
        if let Some(live) = self.find(id) {
            return Ok(live.feed());
        }
        self.load(id)
            .await?
            .ok_or_else(|| RunError::NotFound(id.into()))?;
        Ok(self.stored_feed(id.to_owned()))
    }

    /// Waits (at most `within`) for every run's task to end, its end recorded: the last
    /// step of a shutdown, after the turns are done or cut.
    pub async fn settle(&self, within: Duration) {
        self.tasks.close();
        if tokio::time::timeout(within, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                left = self.tasks.len(),
                "runs still recording their ends at shutdown"
            );
        }
    }

    /// Tells the dashboard's live socket a run started or ended.
    pub(super) fn announce(&self, live: &LiveRun, status: &str) {
        if !self.events.has_listeners() {
            return;
        }
        let mut m = Map::new();
        m.insert("run_id".into(), json!(live.id));
        m.insert("session_id".into(), json!(live.session_id));
        m.insert("status".into(), json!(status));
        self.events.publish("agent_run", m);
    }

    /// A run from the store; one running whose lease ran out (its process is gone) is
    /// first recorded interrupted.
    async fn load(&self, id: &str) -> Result<Option<AgentRun>, StoreError> {
        let Some(run) = self.store.agent_run(id).await? else {
            return Ok(None);
        };
        let now = self.now_ms();
        if run.status != AgentRunStatus::Running || run.lease_until_ms >= now {
            return Ok(Some(run));
        }
        let mut fields = Map::new();
        fields.insert("status".into(), json!(AgentRunStatus::Interrupted.as_str()));
        fields.insert("error".into(), json!(DIED));
        // What it said is in its deltas; its process took the rest with it.
        fields.insert("output".into(), json!(""));
        let event = |_seq| event_text("run.failed", id, now, fields).to_string();
        if self
            .store
            .expire_agent_run(id, now, DIED, "run.failed", event)
            .await?
        {
            tracing::warn!(run = %id, "found a run whose process is gone; recorded it interrupted");
        }
        self.store.agent_run(id).await
    }

    /// A run's events read from the store: what is there, then (while it runs) what is
    /// added, polled; it ends after the last event of a run that has ended.
    fn stored_feed(self: &Arc<Self>, id: String) -> EventFeed {
        let start = (self.clone(), id, 0i64, std::collections::VecDeque::new());
        Box::pin(stream::unfold(
            start,
            |(runs, id, mut next, mut ready)| async move {
                loop {
                    if let Some(event) = ready.pop_front() {
                        return Some((event, (runs, id, next, ready)));
                    }
                    // Read before its events: a run's end and its last events are one write.
                    let ended = match runs.load(&id).await {
                        Ok(Some(run)) => run.status != AgentRunStatus::Running,
                        Ok(None) => return None,
                        Err(e) => {
                            tracing::warn!(run = %id, error = %e, "cannot read the run; retrying");
                            tokio::time::sleep(STORE_POLL).await;
                            continue;
                        }
                    };
                    match runs.store.agent_run_events(&id, next, PAGE).await {
                        Ok(rows) => {
                            for (seq, body) in rows {
                                next = seq + 1;
                                ready.push_back(Arc::from(body));
                            }
                        }
                        Err(e) => {
                            tracing::warn!(run = %id, error = %e, "cannot read the run's events; retrying");
                            tokio::time::sleep(STORE_POLL).await;
                            continue;
                        }
                    }
                    if ready.is_empty() {
                        if ended {
                            return None;
                        }
                        tokio::time::sleep(STORE_POLL).await;
                    }
                }
            },
        ))
    }
}

/// What `GET /v1/runs/{id}` shows of a stored run.
fn stored_view(run: AgentRun) -> RunView {
    let running = run.status == AgentRunStatus::Running;
    RunView {
        status: match run.status {
            AgentRunStatus::Running if run.stop_requested => "stopping",
            s => s.as_str(),
        },
        id: run.id,
        session_id: run.session_id,
        model: run.model,
        created_at_ms: run.created_at_ms,
        updated_at_ms: run.updated_at_ms,
        last_event: run.last_event,
        output: if running {
            None
        } else {
            Some(run.output.unwrap_or_default())
        },
        error: run.error,
    }
}
