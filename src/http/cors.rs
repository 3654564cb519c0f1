//! CORS for the API server: an exact allow-list of origins (`gateway.api_server.cors_origins`,
//! `*` allowing any). A request carrying a foreign `Origin` is refused with 403 before it
//! reaches a handler, so a page on another site can never start a turn; preflights from
//! allowed origins are answered here. Requests without `Origin` (curl, SDKs) pass untouched.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;

const ALLOW_METHODS: &str = "GET, POST, DELETE, OPTIONS";
const ALLOW_HEADERS: &str =
    "Authorization, Content-Type, Idempotency-Key, X-Hermes-Session-Id, X-Requested-With";
const EXPOSE_HEADERS: &str = "X-Hermes-Session-Id, Retry-After";

/// The allow-list, normalised by the config (scheme://host[:port], no trailing slash).
#[derive(Debug, Clone)]
pub struct Cors(pub Arc<Vec<String>>);

impl Cors {
    fn allows(&self, origin: &str) -> bool {
        let origin = origin.trim_end_matches('/');
        self.0
            .iter()
            .any(|o| o == "*" || o.eq_ignore_ascii_case(origin))
    }
}

pub async fn layer(State(cors): State<Cors>, req: Request, next: Next) -> Response {
    let Some(origin) = req.headers().get(header::ORIGIN).cloned() else {
        return next.run(req).await;
    };
    if !origin.to_str().is_ok_and(|o| cors.allows(o)) {
        return ApiError::OpenAi {
            status: StatusCode::FORBIDDEN,
            message: "this Origin is not allowed: add it to gateway.api_server.cors_origins".into(),
            kind: "invalid_request_error",
            code: Some("origin_not_allowed"),
            retry_after: false,
        }
        .into_response();
    }
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = if preflight {
        let mut r = StatusCode::NO_CONTENT.into_response();
        let h = r.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(ALLOW_METHODS),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOW_HEADERS),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        r
    } else {
        next.run(req).await
    };
    let h = response.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSE_HEADERS),
    );
    h.append(header::VARY, HeaderValue::from_static("Origin"));
    response
}
