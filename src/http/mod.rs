//! HTTP: the API server and dashboard routers, their DTOs, extractors and error mapping.
//!
//! Handlers extract, call one domain function and map the result; rules live in the domain
//! modules. Both routers add the security headers to every response.

mod api;
mod api_key;
mod chat;
mod connection;
mod cors;
mod dashboard;
mod error;
mod fire;
mod idempotency;
mod jobs;
mod openapi;
mod origin;
mod page;
mod responses;
mod route_metrics;
mod runs;
mod schemas;
mod serve;
mod session;
mod sessions;
mod ws;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::Response;

pub use error::ApiError;
pub use idempotency::Idempotency;
pub use origin::public_url;
pub use serve::listen;

use crate::state::AppState;

/// Largest request body accepted (10 MB).
pub const BODY_LIMIT: usize = 10 * 1024 * 1024;

/// The OpenAI-compatible API server (default 127.0.0.1:8642).
pub fn api_router(state: AppState) -> Router {
    let cors = cors::Cors(std::sync::Arc::new(
        state.config.api_server.cors_origins.clone(),
    ));
    let host_guard = axum::middleware::from_fn_with_state(state.clone(), origin::api_host_guard);
    api::router(state, openapi::api_routes())
        .layer(axum::middleware::from_fn_with_state(cors, cors::layer))
        .layer(host_guard)
        .layer(axum::middleware::map_response(security_headers))
}

/// The dashboard listener (default 127.0.0.1:9119).
pub fn dashboard_router(state: AppState) -> Router {
    dashboard::router(state, openapi::dashboard_routes())
        .layer(axum::middleware::map_response(security_headers))
}

async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}
