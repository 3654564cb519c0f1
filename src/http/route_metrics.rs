//! Counting the API server's answers by route template and outcome
//! (`hermes_api_requests_total`): a route layer, so it sees the matched route and every
//! answer, the key check's 401s included.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;

use crate::metrics::Metrics;

/// Counts the answer to `req` under its matched route.
pub(super) async fn count(
    State(metrics): State<Arc<Metrics>>,
    req: Request,
    next: Next,
) -> Response {
    // `METHOD /path/{param}`: the route's template, never a concrete id.
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| format!("{} {}", req.method(), p.as_str()));
    let response = next.run(req).await;
    if let Some(route) = route {
        metrics.api_request(&route, outcome(response.status()));
    }
    response
}

/// The outcome an answer's status stands for.
fn outcome(status: StatusCode) -> &'static str {
    match status.as_u16() {
        200..=399 => "ok",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        409 => "conflict",
        413 => "too_large",
        429 => "rate_limited",
        400..=499 => "bad_request",
        503 => "unavailable",
        _ => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_outcomes() {
        for (status, want) in [
            (200, "ok"),
            (202, "ok"),
            (400, "bad_request"),
            (401, "unauthorized"),
            (404, "not_found"),
            (409, "conflict"),
            (422, "bad_request"),
            (429, "rate_limited"),
            (500, "error"),
            (503, "unavailable"),
        ] {
            assert_eq!(
                outcome(StatusCode::from_u16(status).unwrap()),
                want,
                "{status}"
            );
        }
    }
}
