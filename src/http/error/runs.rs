//! The run API's refusals (SPEC §11), in the OpenAI shape: `From<RunError>` is the only
//! mapping of the runs domain's errors.

use axum::http::StatusCode;

use super::ApiError;
use crate::runs::{MAX_IN_FLIGHT, RunError};
use crate::store::StoreError;

impl ApiError {
    /// More runs in flight than a gateway takes (compat text and code).
    pub fn too_many_runs() -> Self {
        Self::OpenAi {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: format!("Too many concurrent runs (max {MAX_IN_FLIGHT})"),
            kind: "rate_limit_error",
            code: Some("rate_limit_exceeded"),
            retry_after: true,
        }
    }

    pub fn run_not_found(id: &str) -> Self {
        Self::OpenAi {
            status: StatusCode::NOT_FOUND,
            message: format!("Run not found: {id}"),
            kind: "invalid_request_error",
            code: Some("run_not_found"),
            retry_after: false,
        }
    }

    /// A stop for a run that has already ended (409).
    pub fn run_not_running(id: &str, status: &str) -> Self {
        Self::OpenAi {
            status: StatusCode::CONFLICT,
            message: format!("Run {id} is not running: it has already ended ({status})"),
            kind: "invalid_request_error",
            code: Some("run_not_running"),
            retry_after: false,
        }
    }

    /// The store failed under a run request: a 503 to retry when it is unreachable, else
    /// a 500; the detail is logged, never sent.
    pub fn run_store(e: &StoreError) -> Self {
        tracing::error!(error = %e, "run store error");
        let (status, message, kind, code) = match e {
            StoreError::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "the run store is unavailable; retry later",
                "service_unavailable",
                "store_unavailable",
            ),
            _ => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error",
                "server_error",
                "internal_error",
            ),
        };
        Self::OpenAi {
            status,
            message: message.into(),
            kind,
            code: Some(code),
            retry_after: status == StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl From<RunError> for ApiError {
    fn from(e: RunError) -> Self {
        match e {
            RunError::Refused(r) => Self::refused(r),
            RunError::TooMany => Self::too_many_runs(),
            RunError::NotFound(id) => Self::run_not_found(&id),
            RunError::Ended { id, status } => Self::run_not_running(&id, status.as_str()),
            RunError::Store(e) => Self::run_store(&e),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::lifecycle::Refusal;
    use crate::store::AgentRunStatus;

    #[test]
    fn every_run_refusal_has_its_status_code_and_retry_after() {
        let openai = |message: &str, kind: &str, code: &str| json!({"error": {"message": message, "type": kind, "code": code}});
        let check = super::super::tests::check;
        check(
            RunError::TooMany.into(),
            429,
            Some("5"),
            openai(
                "Too many concurrent runs (max 10)",
                "rate_limit_error",
                "rate_limit_exceeded",
            ),
        );
        check(
            RunError::NotFound("run_x".into()).into(),
            404,
            None,
            openai(
                "Run not found: run_x",
                "invalid_request_error",
                "run_not_found",
            ),
        );
        check(
            RunError::Ended {
                id: "run_x".into(),
                status: AgentRunStatus::Completed,
            }
            .into(),
            409,
            None,
            openai(
                "Run run_x is not running: it has already ended (completed)",
                "invalid_request_error",
                "run_not_running",
            ),
        );
        let draining: ApiError = RunError::Refused(Refusal::Draining).into();
        assert!(
            format!("{draining:?}").contains("gateway_draining"),
            "{draining:?}"
        );
        check(
            RunError::Store(StoreError::Unavailable("db at 10.0.0.5 down".into())).into(),
            503,
            Some("5"),
            openai(
                "the run store is unavailable; retry later",
                "service_unavailable",
                "store_unavailable",
            ),
        );
        check(
            RunError::Store(StoreError::Query("syntax".into())).into(),
            500,
            None,
            openai("internal error", "server_error", "internal_error"),
        );
    }
}
