//! A request body that could not be read: over [`BODY_LIMIT`] is a 413, anything else a
//! 400 naming why (OpenAI shape), for every route that reads its body itself; the job and
//! fire routes answer the same in their `{"error"}` shape.

use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;

use super::ApiError;
use crate::http::BODY_LIMIT;

impl From<BytesRejection> for ApiError {
    fn from(e: BytesRejection) -> Self {
        match e.status() {
            StatusCode::PAYLOAD_TOO_LARGE => Self::payload_too_large(BODY_LIMIT),
            _ => Self::invalid_request(format!("cannot read request body: {e}"), None),
        }
    }
}

impl ApiError {
    /// A job or fire body that could not be read, in the jobs' `{"error"}` shape: over
    /// [`BODY_LIMIT`] a 413, anything else a 400 saying why.
    pub fn unreadable_job_body(status: StatusCode, why: &str) -> Self {
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            Self::jobs(
                status,
                format!("request body larger than {BODY_LIMIT} bytes"),
            )
        } else {
            Self::jobs(StatusCode::BAD_REQUEST, format!("invalid JSON body: {why}"))
        }
    }
}
