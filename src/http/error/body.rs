//! A request body that could not be read: over [`BODY_LIMIT`] is a 413, anything else a
//! 400 naming why (OpenAI shape), for every route that reads its body itself.

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
