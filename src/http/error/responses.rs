//! The Responses API's refusals (SPEC §11), in the OpenAI shape: `From<ResponsesError>`
//! is the only mapping of the responses domain's errors.

use axum::http::StatusCode;

use super::ApiError;
use crate::responses::ResponsesError;
use crate::store::StoreError;

/// A Responses API refusal (SPEC §11), OpenAI-shaped: 400 naming the field, 404 for a
/// response (or previous response) not stored, the turn's refusals and failures as in
/// chat completions, a store outage 503 to retry, anything else a 500.
impl From<ResponsesError> for ApiError {
    fn from(e: ResponsesError) -> Self {
        match e {
            ResponsesError::BadBody(message) => Self::invalid_request(message, None),
            ResponsesError::Input(e) => Self::Input(e),
            ResponsesError::PreviousNotFound(_) | ResponsesError::NotFound(_) => Self::OpenAi {
                status: StatusCode::NOT_FOUND,
                message: e.to_string(),
                kind: "invalid_request_error",
                code: Some("response_not_found"),
                retry_after: false,
            },
            ResponsesError::Refused(r) => Self::refused(r),
            ResponsesError::Failed(message) => Self::turn_failed(message),
            ResponsesError::Interrupted => Self::interrupted(),
            ResponsesError::Store(StoreError::Unavailable(detail)) => {
                tracing::error!(%detail, "store unavailable");
                Self::OpenAi {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    message: "the response store is unavailable; retry later".into(),
                    kind: "service_unavailable",
                    code: Some("store_unavailable"),
                    retry_after: true,
                }
            }
            ResponsesError::Store(e) => {
                tracing::error!(error = %e, "response store error");
                Self::OpenAi {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    message: "internal error".into(),
                    kind: "server_error",
                    code: Some("internal_error"),
                    retry_after: false,
                }
            }
        }
    }
}
