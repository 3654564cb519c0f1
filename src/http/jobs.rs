//! `/api/jobs`: cron job CRUD, pause/resume/run and run history (SPEC §7). Served on the
//! API server (behind `API_SERVER_KEY`) and on the dashboard (behind its session gate).
//! Errors are `ApiError`s from `CronError` (`{"error": message}` with 400/404/503, every
//! 400 naming the field; SPEC §7 compat: an id that is not 12 lowercase hex is `Invalid
//! job ID format`, an unknown one `Job not found`). The wire bodies are parsed here, field
//! by field, into the cron domain's `JobSpec`/`JobPatch`; the DTOs here are the wire shapes.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::ApiError;
use crate::clock::iso;
use crate::cron::{CronError, Job, JobPatch, JobSpec, REPEAT_RULE, Repeat, Run, is_job_id};
use crate::state::AppState;

/// The job routes; the caller adds its own authentication in front.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/jobs", get(list).post(create))
        .route("/api/jobs/preview", get(preview))
        .route("/api/jobs/{id}", get(show).patch(update).delete(remove))
        .route("/api/jobs/{id}/pause", post(pause))
        .route("/api/jobs/{id}/resume", post(resume))
        .route("/api/jobs/{id}/run", post(run_now))
        .route("/api/jobs/{id}/runs", get(runs))
}

/// A job on the wire (compat field names).
#[derive(Serialize)]
pub struct JobDto {
    id: String,
    name: String,
    prompt: String,
    schedule: String,
    enabled: bool,
    state: &'static str,
    next_run_at: Option<String>,
    last_run_at: Option<String>,
    last_status: Option<String>,
    last_error: Option<String>,
    repeat: Repeat,
    deliver: String,
    created_at: String,
    updated_at: String,
}

impl From<Job> for JobDto {
    fn from(j: Job) -> Self {
        Self {
            id: j.id,
            name: j.name,
            prompt: j.prompt,
            schedule: j.schedule,
            enabled: j.enabled,
            state: j.state.as_str(),
            next_run_at: j.next_run_at.map(iso),
            last_run_at: j.last_run_at.map(iso),
            last_status: j.last_status,
            last_error: j.last_error,
            repeat: j.repeat,
            deliver: j.deliver,
            created_at: iso(j.created_at),
            updated_at: iso(j.updated_at),
        }
    }
}

/// A run on the wire.
#[derive(Serialize)]
pub struct RunDto {
    id: String,
    job_id: String,
    scheduled_for: String,
    started_at: String,
    finished_at: Option<String>,
    status: &'static str,
    output: Option<String>,
    error: Option<String>,
}

impl From<Run> for RunDto {
    fn from(r: Run) -> Self {
        Self {
            id: r.id,
            job_id: r.job_id,
            scheduled_for: iso(r.scheduled_for),
            started_at: iso(r.started_at),
            finished_at: r.finished_at.map(iso),
            status: r.status.as_str(),
            output: r.output,
            error: r.error,
        }
    }
}

/// Fields a job body may carry (compat: exactly what PATCH takes).
const FIELDS: [&str; 8] = [
    "name", "schedule", "prompt", "deliver", "skills", "skill", "repeat", "enabled",
];

fn invalid(message: impl Into<String>) -> ApiError {
    CronError::Invalid(message.into()).into()
}

/// The body as a JSON object of known fields; anything else names what is wrong.
fn object(parsed: Result<Json<Value>, JsonRejection>) -> Result<Map<String, Value>, ApiError> {
    let Json(v) = parsed.map_err(|e| ApiError::unreadable_job_body(e.status(), &e.body_text()))?;
    let Value::Object(map) = v else {
        return Err(invalid("invalid JSON body: expected an object"));
    };
    if let Some(k) = map.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(invalid(format!(
            "unknown field `{k}` (a job takes {})",
            FIELDS.join(", ")
        )));
    }
    Ok(map)
}

/// Reads the job's fields; `null` counts as absent.
struct Fields(Map<String, Value>);

impl Fields {
    fn string(&mut self, key: &str) -> Result<Option<String>, ApiError> {
        match self.0.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(invalid(format!("{key}: must be a string"))),
        }
    }

    fn bool(&mut self, key: &str) -> Result<Option<bool>, ApiError> {
        match self.0.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(_) => Err(invalid(format!("{key}: must be true or false"))),
        }
    }

    /// `repeat`: absent, `null` (forever) or an integer ≥ 1. JSON's `3.0` is the integer 3
    /// (JSON Schema's `integer` includes it, and the OpenAPI document says `integer`).
    fn repeat(&mut self) -> Result<Option<Option<u32>>, ApiError> {
        match self.0.remove("repeat") {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(v) => match v
                .as_u64()
                .or_else(|| whole_number(&v))
                .and_then(|n| u32::try_from(n).ok())
            {
                Some(n) if n >= 1 => Ok(Some(Some(n))),
                _ => Err(invalid(REPEAT_RULE)),
            },
        }
    }

    /// `skills` (a list of names) and `skill` (one name): Hermes loads skills into a run;
    /// this gateway's backends have none, so a job that names one is refused rather than
    /// run without it. Empty values are accepted.
    fn no_skills(&mut self) -> Result<(), ApiError> {
        for key in ["skills", "skill"] {
            let named = match self.0.remove(key) {
                None | Some(Value::Null) => false,
                Some(Value::String(s)) => !s.trim().is_empty(),
                Some(Value::Array(a)) if key == "skills" => {
                    if a.iter().any(|v| !v.is_string()) {
                        return Err(invalid("skills: must be a list of skill names"));
                    }
                    !a.is_empty()
                }
                Some(_) if key == "skills" => {
                    return Err(invalid("skills: must be a list of skill names"));
                }
                Some(_) => return Err(invalid("skill: must be a string")),
            };
            if named {
                return Err(invalid(format!(
                    "{key}: this gateway's agent backends do not load skills; \
                     put the instructions in the prompt"
                )));
            }
        }
        Ok(())
    }
}

/// A float that is a whole, non-negative number (`3.0`), as that integer.
fn whole_number(v: &Value) -> Option<u64> {
    let f = v.as_f64()?;
    (f.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&f)).then_some(f as u64)
}

fn spec(parsed: Result<Json<Value>, JsonRejection>) -> Result<JobSpec, ApiError> {
    let mut f = Fields(object(parsed)?);
    f.no_skills()?;
    Ok(JobSpec {
        name: f.string("name")?.unwrap_or_default(),
        prompt: f.string("prompt")?.unwrap_or_default(),
        schedule: f.string("schedule")?.unwrap_or_default(),
        enabled: f.bool("enabled")?,
        repeat: f.repeat()?.flatten(),
        deliver: f.string("deliver")?,
    })
}

fn patch(parsed: Result<Json<Value>, JsonRejection>) -> Result<JobPatch, ApiError> {
    let map = object(parsed)?;
    if map.is_empty() {
        return Err(invalid(format!(
            "no field to update: PATCH takes {}",
            FIELDS.join(", ")
        )));
    }
    // `null` clears only what has a cleared state (repeat: forever; skills: none).
    for (key, want) in [
        ("name", "a string"),
        ("prompt", "a string"),
        ("schedule", "a string"),
        ("deliver", "a string"),
        ("enabled", "true or false"),
    ] {
        if map.get(key).is_some_and(Value::is_null) {
            return Err(invalid(format!("{key}: must be {want}, not null")));
        }
    }
    let mut f = Fields(map);
    f.no_skills()?;
    Ok(JobPatch {
        name: f.string("name")?,
        prompt: f.string("prompt")?,
        schedule: f.string("schedule")?,
        enabled: f.bool("enabled")?,
        repeat: f.repeat()?,
        deliver: f.string("deliver")?,
    })
}

/// The path's job id, refused with the compat 400 unless it is well-formed.
fn job_id(Path(id): Path<String>) -> Result<String, ApiError> {
    if is_job_id(&id) {
        Ok(id)
    } else {
        Err(invalid("Invalid job ID format"))
    }
}

type Reply = Result<Response, ApiError>;

/// Every job.
#[utoipa::path(get, path = "/api/jobs", tag = "cron",
    responses((status = 200, description = "the jobs", body = super::schemas::JobList), (status = 503, description = "the job store is unavailable; Retry-After", body = super::schemas::JobsError)))]
pub async fn list(State(s): State<AppState>) -> Reply {
    let jobs: Vec<JobDto> = s.cron.list().await?.into_iter().map(JobDto::from).collect();
    Ok(Json(json!({ "jobs": jobs })).into_response())
}

/// Creates a job.
#[utoipa::path(post, path = "/api/jobs", tag = "cron", request_body = super::schemas::JobCreate,
    responses((status = 201, description = "created", body = super::schemas::JobEnvelope),
              (status = 400, description = "a bad or missing field, named", body = super::schemas::JobsError), (status = 413, description = "a body over the 10 MB limit", body = super::schemas::JobsError), (status = 503, description = "the job store is unavailable; Retry-After", body = super::schemas::JobsError)))]
pub async fn create(State(s): State<AppState>, body: Result<Json<Value>, JsonRejection>) -> Reply {
    let job = s.cron.create(spec(body)?).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "job": JobDto::from(job) })),
    )
        .into_response())
}

/// One job.
#[utoipa::path(get, path = "/api/jobs/{id}", tag = "cron", params(("id" = String, Path, description = "the job id: 12 lowercase hex characters", pattern = "^[0-9a-f]{12}$")),
    responses((status = 200, description = "the job", body = super::schemas::JobEnvelope), (status = 400, description = "Invalid job ID format: the id is not 12 lowercase hex characters", body = super::schemas::JobsError), (status = 404, description = "Job not found", body = super::schemas::JobsError), (status = 503, description = "the job store is unavailable; Retry-After", body = super::schemas::JobsError)))]
pub async fn show(State(s): State<AppState>, id: Path<String>) -> Reply {
    let id = job_id(id)?;
    Ok(Json(json!({ "job": JobDto::from(s.cron.get(&id).await?) })).into_response())
}

/// Changes a job; absent fields stay as they are.
#[utoipa::path(patch, path = "/api/jobs/{id}", tag = "cron", params(("id" = String, Path, description = "the job id: 12 lowercase hex characters", pattern = "^[0-9a-f]{12}$")), request_body = super::schemas::JobPatch,
    responses((status = 200, description = "the changed job", body = super::schemas::JobEnvelope), (status = 400, description = "Invalid job ID format, or a bad, unknown or missing field (named)", body = super::schemas::JobsError), (status = 404, description = "Job not found", body = super::schemas::JobsError), (status = 413, description = "a body over the 10 MB limit", body = super::schemas::JobsError), (status = 503, description = "the job store is unavailable; Retry-After", body = super::schemas::JobsError)))]
pub async fn update(
    State(s): State<AppState>,
    id: Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> Reply {
    let id = job_id(id)?;
    let job = s.cron.update(&id, patch(body)?).await?;
    Ok(Json(json!({ "job": JobDto::from(job) })).into_response())
}

/// Deletes a job and its runs.
#[utoipa::path(delete, path = "/api/jobs/{id}", tag = "cron", params(("id" = String, Path, description = "the job id: 12 lowercase hex characters", pattern = "^[0-9a-f]{12}$")),
    responses((status = 200, description = "deleted", body = super::schemas::JobDeleted), (status = 400, description = "Invalid job ID format: the id is not 12 lowercase hex characters", body = super::schemas::JobsError), (status = 404, description = "Job not found", body = super::schemas::JobsError), (status = 503, description = "the job store is unavailable; Retry-After", body = super::schemas::JobsError)))]
pub async fn remove(State(s): State<AppState>, id: Path<String>) -> Reply {
    s.cron.delete(&job_id(id)?).await?;
    Ok(Json(json!({"ok": true})).into_response())
}

/// Pauses a job (it keeps its schedule).
#[utoipa::path(post, path = "/api/jobs/{id}/pause", tag = "cron", params(("id" = String, Path, description = "the job id: 12 lowercase hex characters", pattern = "^[0-9a-f]{12}$")),
    responses((status = 200, description = "the paused job", body = super::schemas::JobEnvelope), (status = 400, description = "Invalid job ID format: the id is not 12 lowercase hex characters", body = super::schemas::JobsError), (status = 404, description = "Job not found", body = super::schemas::JobsError), (status = 503, description = "the job store is unavailable; Retry-After", body = super::schemas::JobsError)))]
pub async fn pause(State(s): State<AppState>, id: Path<String>) -> Reply {
    let id = job_id(id)?;
    Ok(Json(json!({ "job": JobDto::from(s.cron.pause(&id).await?) })).into_response())
}

/// Resumes a paused job.
#[utoipa::path(post, path = "/api/jobs/{id}/resume", tag = "cron", params(("id" = String, Path, description = "the job id: 12 lowercase hex characters", pattern = "^[0-9a-f]{12}$")),
    responses((status = 200, description = "the resumed job", body = super::schemas::JobEnvelope), (status = 400, description = "Invalid job ID format: the id is not 12 lowercase hex characters", body = super::schemas::JobsError), (status = 404, description = "Job not found", body = super::schemas::JobsError), (status = 503, description = "the job store is unavailable; Retry-After", body = super::schemas::JobsError)))]
pub async fn resume(State(s): State<AppState>, id: Path<String>) -> Reply {
    let id = job_id(id)?;
    Ok(Json(json!({ "job": JobDto::from(s.cron.resume(&id).await?) })).into_response())
}

/// Runs a job now, in the background, as a turn through the gate.
#[utoipa::path(post, path = "/api/jobs/{id}/run", tag = "cron", params(("id" = String, Path, description = "the job id: 12 lowercase hex characters", pattern = "^[0-9a-f]{12}$")),
    responses((status = 202, description = "the run has started", body = super::schemas::RunEnvelope), (status = 400, description = "Invalid job ID format: the id is not 12 lowercase hex characters", body = super::schemas::JobsError), (status = 404, description = "Job not found", body = super::schemas::JobsError),
              (status = 503, description = "draining (no run starts), or the job store is unavailable; Retry-After", body = super::schemas::JobsError)))]
pub async fn run_now(State(s): State<AppState>, id: Path<String>) -> Reply {
    let run = s.cron.run_now(&job_id(id)?).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "run": RunDto::from(run) })),
    )
        .into_response())
}

#[derive(Deserialize)]
pub(super) struct RunsQuery {
    limit: Option<i64>,
}

/// The job's runs, newest first.
#[utoipa::path(get, path = "/api/jobs/{id}/runs", tag = "cron",
    params(("id" = String, Path, description = "the job id: 12 lowercase hex characters", pattern = "^[0-9a-f]{12}$"),
           ("limit" = Option<i64>, Query, format = Int64, description = "at most this many runs (default 50; clamped to 1..=1000)")),
    responses((status = 200, description = "the runs", body = super::schemas::RunList), (status = 400, description = "Invalid job ID format, or a `limit` that is not a whole number", body = super::schemas::JobsError), (status = 404, description = "Job not found", body = super::schemas::JobsError), (status = 503, description = "the job store is unavailable; Retry-After", body = super::schemas::JobsError)))]
pub async fn runs(
    State(s): State<AppState>,
    id: Path<String>,
    q: Result<Query<RunsQuery>, QueryRejection>,
) -> Reply {
    let id = job_id(id)?;
    let Query(q) = q.map_err(|e| {
        invalid(format!(
            "limit: expected a whole number ({})",
            e.body_text()
        ))
    })?;
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    let runs: Vec<RunDto> = s
        .cron
        .runs(&id, limit)
        .await?
        .into_iter()
        .map(RunDto::from)
        .collect();
    Ok(Json(json!({ "runs": runs })).into_response())
}

/// Most slots a preview lists.
const MAX_PREVIEW: usize = 20;

#[derive(Deserialize)]
pub(super) struct PreviewQuery {
    schedule: Option<String>,
    count: Option<i64>,
}

/// The next slots of a schedule, in `cron.timezone`.
#[derive(Serialize, ToSchema)]
pub struct SchedulePreview {
    /// The schedule text as given.
    schedule: String,
    /// The zone the slots are evaluated in (`cron.timezone`), e.g. `Europe/Berlin`.
    timezone: String,
    /// The next slots, soonest first (one for a one-shot).
    next_runs: Vec<Slot>,
}

/// One slot of a preview.
#[derive(Serialize, ToSchema)]
pub struct Slot {
    /// The instant, in UTC, as `next_run_at` is written.
    at: String,
    /// The same instant in `cron.timezone`, with its offset (RFC 3339).
    local: String,
}

/// The next runs a job with this schedule would have if it were saved now (nothing is
/// saved), in `cron.timezone`; a bad schedule is the 400 that creating the job would be.
#[utoipa::path(get, path = "/api/jobs/preview", tag = "cron",
    params(("schedule" = String, Query, description = "the schedule text, as a job's `schedule`"),
           ("count" = Option<i64>, Query, format = Int64, minimum = 1, maximum = 20, description = "how many slots (default 5, at most 20)")),
    responses((status = 200, description = "the next slots", body = SchedulePreview), (status = 400, description = "a missing or bad schedule, or a bad `count` (named)", body = super::schemas::JobsError)))]
pub async fn preview(
    State(s): State<AppState>,
    q: Result<Query<PreviewQuery>, QueryRejection>,
) -> Reply {
    let Query(q) = q.map_err(|e| invalid(format!("invalid query: {}", e.body_text())))?;
    let count = match q.count {
        None => 5,
        Some(n) => usize::try_from(n)
            .ok()
            .filter(|n| (1..=MAX_PREVIEW).contains(n))
            .ok_or_else(|| invalid(format!("count: must be from 1 to {MAX_PREVIEW}")))?,
    };
    let schedule = q.schedule.unwrap_or_default();
    let next_runs = s
        .cron
        .preview(&schedule, count)?
        .into_iter()
        .map(|z| Slot {
            at: iso(z.timestamp()),
            local: z.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string(),
        })
        .collect();
    Ok(Json(SchedulePreview {
        schedule,
        timezone: s.config.cron.timezone_name.clone(),
        next_runs,
    })
    .into_response())
}
