//! `/api/jobs`: cron job CRUD, pause/resume/run and run history (SPEC §7). Served on the
//! API server (behind `API_SERVER_KEY`) and on the dashboard (behind its session gate).
//! Errors are `{"error": message}` with 400/404/503; the DTOs here are the wire shapes.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::app::AppState;
use crate::clock::iso;
use crate::cron::{CronError, Job, JobPatch, JobSpec, Repeat, Run};
use crate::store::StoreError;

/// The job routes; the caller adds its own authentication in front.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/jobs", get(list).post(create))
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

/// A cron failure as `{"error": ...}`.
pub(super) struct JobsError(CronError);

impl From<CronError> for JobsError {
    fn from(e: CronError) -> Self {
        Self(e)
    }
}

impl IntoResponse for JobsError {
    fn into_response(self) -> Response {
        let (status, message) = match &self.0 {
            CronError::Invalid(m) => (StatusCode::BAD_REQUEST, m.clone()),
            CronError::NotFound(_) => (StatusCode::NOT_FOUND, self.0.to_string()),
            CronError::Draining => (StatusCode::SERVICE_UNAVAILABLE, self.0.to_string()),
            CronError::Store(StoreError::Unavailable(detail)) => {
                tracing::error!(%detail, "store unavailable");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the job store is unavailable; retry later".into(),
                )
            }
            CronError::Store(e) => {
                tracing::error!(error = %e, "job store error");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error".into())
            }
        };
        if status == StatusCode::SERVICE_UNAVAILABLE {
            return super::error::unavailable(json!({"error": message}));
        }
        (status, Json(json!({"error": message}))).into_response()
    }
}

fn body<T: serde::de::DeserializeOwned>(
    parsed: Result<Json<serde_json::Value>, JsonRejection>,
) -> Result<T, JobsError> {
    let invalid = |e: String| JobsError(CronError::Invalid(format!("invalid JSON body: {e}")));
    let Json(mut v) = parsed.map_err(|e| invalid(e.body_text()))?;
    // JSON's `3.0` is the integer 3 (JSON Schema's `integer` includes it): a whole-number
    // `repeat` written as a float is taken as that integer.
    if let Some(r) = v.get_mut("repeat")
        && r.is_f64()
        && let Some(f) = r.as_f64()
        && f.fract() == 0.0
        && (0.0..=f64::from(u32::MAX)).contains(&f)
    {
        *r = serde_json::Value::from(f as u64);
    }
    serde_json::from_value(v).map_err(|e| invalid(e.to_string()))
}

type Reply = Result<Response, JobsError>;

/// Every job.
#[utoipa::path(get, path = "/api/jobs", tag = "cron",
    responses((status = 200, description = "the jobs", body = super::openapi::schemas::JobList), (status = 503, description = "the job store is unavailable; Retry-After", body = super::openapi::schemas::JobsError)))]
pub async fn list(State(s): State<AppState>) -> Reply {
    let jobs: Vec<JobDto> = s.cron.list().await?.into_iter().map(JobDto::from).collect();
    Ok(Json(json!({ "jobs": jobs })).into_response())
}

/// Creates a job.
#[utoipa::path(post, path = "/api/jobs", tag = "cron", request_body = super::openapi::schemas::JobCreate,
    responses((status = 201, description = "created", body = super::openapi::schemas::JobEnvelope),
              (status = 400, description = "a bad or missing field, named", body = super::openapi::schemas::JobsError), (status = 503, description = "the job store is unavailable; Retry-After", body = super::openapi::schemas::JobsError)))]
pub async fn create(
    State(s): State<AppState>,
    spec: Result<Json<serde_json::Value>, JsonRejection>,
) -> Reply {
    let job = s.cron.create(body::<JobSpec>(spec)?).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "job": JobDto::from(job) })),
    )
        .into_response())
}

/// One job.
#[utoipa::path(get, path = "/api/jobs/{id}", tag = "cron", params(("id" = String, Path, description = "the job id: 12 lowercase hex characters", pattern = "^[0-9a-f]{12}$")),
    responses((status = 200, description = "the job", body = super::openapi::schemas::JobEnvelope), (status = 400, description = "Invalid job ID format, or a bad field (named)", body = super::openapi::schemas::JobsError), (status = 404, description = "Job not found", body = super::openapi::schemas::JobsError), (status = 503, description = "the job store is unavailable; Retry-After", body = super::openapi::schemas::JobsError)))]
pub async fn show(State(s): State<AppState>, Path(id): Path<String>) -> Reply {
    Ok(Json(json!({ "job": JobDto::from(s.cron.get(&id).await?) })).into_response())
}

/// Changes a job; absent fields stay as they are.
#[utoipa::path(patch, path = "/api/jobs/{id}", tag = "cron", params(("id" = String, Path, description = "the job id: 12 lowercase hex characters", pattern = "^[0-9a-f]{12}$")), request_body = super::openapi::schemas::JobPatch,
    responses((status = 200, description = "the changed job", body = super::openapi::schemas::JobEnvelope), (status = 400, description = "Invalid job ID format, or a bad field (named)", body = super::openapi::schemas::JobsError), (status = 404, description = "Job not found", body = super::openapi::schemas::JobsError), (status = 503, description = "the job store is unavailable; Retry-After", body = super::openapi::schemas::JobsError)))]
pub async fn update(
    State(s): State<AppState>,
    Path(id): Path<String>,
    patch: Result<Json<serde_json::Value>, JsonRejection>,
) -> Reply {
    let job = s.cron.update(&id, body::<JobPatch>(patch)?).await?;
    Ok(Json(json!({ "job": JobDto::from(job) })).into_response())
}

/// Deletes a job and its runs.
#[utoipa::path(delete, path = "/api/jobs/{id}", tag = "cron", params(("id" = String, Path, description = "the job id: 12 lowercase hex characters", pattern = "^[0-9a-f]{12}$")),
    responses((status = 200, description = "deleted", body = super::openapi::schemas::JobDeleted), (status = 400, description = "Invalid job ID format, or a bad field (named)", body = super::openapi::schemas::JobsError), (status = 404, description = "Job not found", body = super::openapi::schemas::JobsError), (status = 503, description = "the job store is unavailable; Retry-After", body = super::openapi::schemas::JobsError)))]
pub async fn remove(State(s): State<AppState>, Path(id): Path<String>) -> Reply {
    s.cron.delete(&id).await?;
    Ok(Json(json!({"ok": true, "deleted": id})).into_response())
}

/// Pauses a job (it keeps its schedule).
#[utoipa::path(post, path = "/api/jobs/{id}/pause", tag = "cron", params(("id" = String, Path, description = "the job id: 12 lowercase hex characters", pattern = "^[0-9a-f]{12}$")),
    responses((status = 200, description = "the paused job", body = super::openapi::schemas::JobEnvelope), (status = 400, description = "Invalid job ID format, or a bad field (named)", body = super::openapi::schemas::JobsError), (status = 404, description = "Job not found", body = super::openapi::schemas::JobsError), (status = 503, description = "the job store is unavailable; Retry-After", body = super::openapi::schemas::JobsError)))]
pub async fn pause(State(s): State<AppState>, Path(id): Path<String>) -> Reply {
    Ok(Json(json!({ "job": JobDto::from(s.cron.pause(&id).await?) })).into_response())
}

/// Resumes a paused job.
#[utoipa::path(post, path = "/api/jobs/{id}/resume", tag = "cron", params(("id" = String, Path, description = "the job id: 12 lowercase hex characters", pattern = "^[0-9a-f]{12}$")),
    responses((status = 200, description = "the resumed job", body = super::openapi::schemas::JobEnvelope), (status = 400, description = "Invalid job ID format, or a bad field (named)", body = super::openapi::schemas::JobsError), (status = 404, description = "Job not found", body = super::openapi::schemas::JobsError), (status = 503, description = "the job store is unavailable; Retry-After", body = super::openapi::schemas::JobsError)))]
pub async fn resume(State(s): State<AppState>, Path(id): Path<String>) -> Reply {
    Ok(Json(json!({ "job": JobDto::from(s.cron.resume(&id).await?) })).into_response())
}

/// Runs a job now, in the background, as a turn through the gate.
#[utoipa::path(post, path = "/api/jobs/{id}/run", tag = "cron", params(("id" = String, Path, description = "the job id: 12 lowercase hex characters", pattern = "^[0-9a-f]{12}$")),
    responses((status = 202, description = "the run has started", body = super::openapi::schemas::RunEnvelope), (status = 400, description = "Invalid job ID format, or a bad field (named)", body = super::openapi::schemas::JobsError), (status = 404, description = "Job not found", body = super::openapi::schemas::JobsError),
              (status = 503, description = "draining (no run starts), or the job store is unavailable; Retry-After", body = super::openapi::schemas::JobsError)))]
pub async fn run_now(State(s): State<AppState>, Path(id): Path<String>) -> Reply {
    let run = s.cron.run_now(&id).await?;
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
    responses((status = 200, description = "the runs", body = super::openapi::schemas::RunList), (status = 400, description = "Invalid job ID format, or a bad field (named)", body = super::openapi::schemas::JobsError), (status = 404, description = "Job not found", body = super::openapi::schemas::JobsError), (status = 503, description = "the job store is unavailable; Retry-After", body = super::openapi::schemas::JobsError)))]
pub async fn runs(
    State(s): State<AppState>,
    Path(id): Path<String>,
    q: Result<Query<RunsQuery>, QueryRejection>,
) -> Reply {
    let Query(q) = q.map_err(|e| {
        JobsError(CronError::Invalid(format!(
            "limit: expected a whole number ({})",
            e.body_text()
        )))
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
