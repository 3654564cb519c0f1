//! The OpenAPI 3.1 documents, one per listener, generated from the handler annotations:
//! [`api_document`] is served at the API server's `/openapi.json`, [`dashboard_document`]
//! at the dashboard's. Each lists every route its listener serves (a unit test compares
//! them with the routers' source), with the request and response schemas the handlers
//! accept and answer; the listener's auth gate (API key, session, drain secret) is added
//! to the gated operations here, with the 401 it answers, so the handlers' annotations
//! describe only what the handlers themselves do.

use std::sync::OnceLock;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::get;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, Ref, RefOr, Response, SecurityRequirement};
use utoipa::{Modify, OpenApi};

use super::{
    api, chat, connection, dashboard, fire, jobs, page, responses, runs, schemas, session,
    sessions, ws,
};
use crate::state::AppState;

/// Security scheme names.
const API_KEY: &str = "apiKey";
const FIRE_TOKEN: &str = "fireToken";
const DRAIN_SECRET: &str = "drainSecret";
const SESSION_COOKIE: &str = "sessionCookie";
const SESSION_TOKEN: &str = "sessionToken";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "hermes-gateway API server",
        description = "The OpenAI-compatible API server of the Hermes agent gateway (default 127.0.0.1:8642): health, models, chat completions, the Responses API, asynchronous runs, the cron job API and the Chronos fire endpoint. With `API_SERVER_KEY` set, every operation but health, readiness, this document and the fire endpoint needs `Authorization: Bearer <API_SERVER_KEY>`."
    ),
    paths(
        api::health,
        api::v1_health,
        api::health_detailed,
        api::ready,
        api::models,
        api::model,
        api::capabilities,
        chat::chat_completions,
        runs::start,
        runs::show,
        runs::events,
        runs::stop,
        responses::create,
        responses::retrieve,
        responses::remove,
        serve_api,
        fire::fire,
        jobs::list,
        jobs::create,
        jobs::show,
        jobs::update,
        jobs::remove,
        jobs::pause,
        jobs::resume,
        jobs::run_now,
        jobs::runs,
        jobs::preview,
        sessions::list,
        sessions::show,
        sessions::forget,
    ),
    components(schemas(schemas::OpenAiError, schemas::JobsError)),
    modifiers(&ApiServerGate),
    tags(
        (name = "health", description = "Liveness and readiness"),
        (name = "api", description = "OpenAI-compatible turns"),
        (name = "runs", description = "Asynchronous runs: turns that live on their own, followed by their events"),
        (name = "cron", description = "Cron jobs and externally fired runs"),
        (name = "sessions", description = "Stored chat sessions"),
        (name = "meta", description = "This document"),
    )
)]
struct ApiServerDoc;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "hermes-gateway dashboard",
        description = "The dashboard listener of the Hermes agent gateway (default 127.0.0.1:9119): status, drain control, readiness, metrics, cron jobs, sign-in, WebSockets and the page. In loopback mode (no sign-in configured) gated operations need the per-process `X-Hermes-Session-Token`; in gated mode the `hermes_session` cookie from `POST /auth/password-login`. With a strong `HERMES_DASHBOARD_DRAIN_SECRET`, `/api/gateway/drain` and `/api/gateway/restart` take `Authorization: Bearer <secret>` instead."
    ),
    paths(
        dashboard::status,
        connection::connection,
        api::ready,
        dashboard::drain_status,
        dashboard::drain_action,
        dashboard::restart,
        dashboard::metrics,
        serve_dashboard,
        fire::fire,
        jobs::list,
        jobs::create,
        jobs::show,
        jobs::update,
        jobs::remove,
        jobs::pause,
        jobs::resume,
        jobs::run_now,
        jobs::runs,
        jobs::preview,
        sessions::list,
        sessions::show,
        sessions::forget,
        session::login_page,
        session::password_login,
        session::logout,
        session::me,
        session::providers,
        session::ws_ticket,
        ws::events,
        ws::chat::chat,
        page::index,
        page::app_js,
        page::charts_js,
        page::jobs_js,
        page::activity_js,
        page::connection_js,
        page::chat_js,
        page::app_css,
        page::icon_svg,
    ),
    components(schemas(schemas::DashboardError, schemas::JobsError)),
    tags(
        (name = "health", description = "Readiness"),
        (name = "dashboard", description = "Status, drain control and metrics"),
        (name = "cron", description = "Cron jobs and externally fired runs"),
        (name = "sessions", description = "Stored chat sessions"),
        (name = "auth", description = "Sign-in and WebSocket tickets"),
        (name = "page", description = "The dashboard page and its assets"),
        (name = "meta", description = "This document"),
    )
)]
struct DashboardDoc;

/// The API server's `GET /openapi.json` (merged by `api::router`).
pub fn api_routes() -> Router<AppState> {
    Router::new().route("/openapi.json", get(serve_api))
}

/// The dashboard's `GET /openapi.json` (merged by `dashboard::router`).
pub fn dashboard_routes() -> Router<AppState> {
    Router::new().route("/openapi.json", get(serve_dashboard))
}

/// This listener's OpenAPI 3.1 document.
#[utoipa::path(get, path = "/openapi.json", tag = "meta", operation_id = "openapi",
    responses((status = 200, description = "the API server's OpenAPI 3.1 document", content_type = "application/json", body = Object)))]
async fn serve_api() -> axum::response::Response {
    static DOC: OnceLock<String> = OnceLock::new();
    json_text(DOC.get_or_init(api_document))
}

/// This listener's OpenAPI 3.1 document.
#[utoipa::path(get, path = "/openapi.json", tag = "meta", operation_id = "openapi",
    responses((status = 200, description = "the dashboard's OpenAPI 3.1 document", content_type = "application/json", body = Object)))]
async fn serve_dashboard(State(s): State<AppState>) -> axum::response::Response {
    // One document per auth mode, rendered once: the mode is fixed for a process's life.
    static DOCS: [OnceLock<String>; 4] = [const { OnceLock::new() }; 4];
    let gated = s.access.is_gated();
    let drain_secret = s
        .access
        .is_token_route(crate::auth::drain_secret::DRAIN_ROUTE);
    let slot = usize::from(gated) * 2 + usize::from(drain_secret);
    json_text(DOCS[slot].get_or_init(|| dashboard_document(gated, drain_secret)))
}

fn json_text(doc: &'static str) -> axum::response::Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        doc,
    )
        .into_response()
}

/// The API server's document as JSON text.
pub fn api_document() -> String {
    render(ApiServerDoc::openapi())
}

/// The dashboard's document as JSON text, for its auth mode: loopback (the session token
/// header) or gated (the session cookie), and whether the drain secret guards the drain
/// and restart routes.
pub fn dashboard_document(gated: bool, drain_secret: bool) -> String {
    let mut doc = DashboardDoc::openapi();
    DashboardGate {
        gated,
        drain_secret,
    }
    .modify(&mut doc);
    render(doc)
}

/// The document as JSON text, its keys sorted: the hand-written schemas carry their
/// keywords in a hash map, so sorting is what keeps the text the same from run to run (the
/// committed copies under docs/ are compared with it).
fn render(doc: Document) -> String {
    serde_json::to_value(&doc)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_else(|e| format!("{{\"error\":\"cannot render the OpenAPI document: {e}\"}}"))
}

fn bearer(description: &str, format: Option<&str>) -> SecurityScheme {
    let mut b = HttpBuilder::new()
        .scheme(HttpAuthScheme::Bearer)
        .description(Some(description));
    if let Some(f) = format {
        b = b.bearer_format(f);
    }
    SecurityScheme::Http(b.build())
}

/// The fire endpoint's token, the same scheme on both listeners.
fn fire_token_scheme() -> SecurityScheme {
    bearer(
        "a short-lived fire token signed by the account service (RS256/384/512, ES256/384)",
        Some("JWT"),
    )
}

fn requirement(name: &str) -> SecurityRequirement {
    SecurityRequirement::new(name, Vec::<String>::new())
}

fn response_ref(component: &str, description: &str) -> RefOr<Response> {
    let mut r = Response::new(description);
    r.content.insert(
        "application/json".into(),
        RefOr::T(utoipa::openapi::Content::new(Some(Ref::from_schema_name(
            component,
        )))),
    );
    RefOr::T(r)
}

/// Applies `f` to every operation of `doc` with its path.
fn each_operation(
    doc: &mut Document,
    mut f: impl FnMut(&str, &mut utoipa::openapi::path::Operation),
) {
    for (path, item) in doc.paths.paths.iter_mut() {
        for op in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ]
        .into_iter()
        .flatten()
        {
            f(path, op);
        }
    }
}

/// The API server's gate: `API_SERVER_KEY` on everything but health, this document and
/// the fire endpoint (which checks its own token).
struct ApiServerGate;

impl Modify for ApiServerGate {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            API_KEY,
            bearer(
                "`API_SERVER_KEY` (required when it is set; loopback only without it)",
                None,
            ),
        );
        components.add_security_scheme(FIRE_TOKEN, fire_token_scheme());
        each_operation(doc, |path, op| {
            // Foreign browser origins and, without API_SERVER_KEY, foreign Host names are
            // refused before routing, on every route.
            op.responses
                .responses
                .entry("403".into())
                .or_insert_with(|| {
                    response_ref(
                        "OpenAiError",
                        "origin_not_allowed: an Origin not in cors_origins; host_not_allowed: without API_SERVER_KEY, a Host that is neither a loopback name nor gateway.api_server.host",
                    )
                });
            if path == "/api/cron/fire" {
                op.security = Some(vec![requirement(FIRE_TOKEN)]);
                return;
            }
            if path.starts_with("/health") || path == "/v1/health" || path == "/openapi.json" {
                op.security = Some(vec![SecurityRequirement::default()]);
                return;
            }
            op.security = Some(vec![requirement(API_KEY)]);
            op.responses.responses.insert(
                "401".into(),
                response_ref(
                    "OpenAiError",
                    "invalid_api_key: the bearer key is missing or wrong",
                ),
            );
        });
    }
}

/// The dashboard's gate: public paths pass; the drain and restart routes take only the
/// drain secret when one is configured; everything else the mode's session (the cookie in
/// gated mode, the loopback token header otherwise).
struct DashboardGate {
    gated: bool,
    drain_secret: bool,
}

impl Modify for DashboardGate {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        let session_scheme = self.add_schemes(components);
        each_operation(doc, |path, op| {
            self.gate_operation(session_scheme, path, op)
        });
    }
}

impl DashboardGate {
    /// Adds the security schemes of this mode to `components`; returns the name of the
    /// session scheme (the cookie in gated mode, the loopback token header otherwise).
    fn add_schemes(&self, components: &mut utoipa::openapi::Components) -> &'static str {
        let session_scheme = if self.gated {
            components.add_security_scheme(
                SESSION_COOKIE,
                SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                    crate::auth::sessions::SESSION_COOKIE,
                    "gated mode: the session cookie set by POST /auth/password-login",
                ))),
            );
            SESSION_COOKIE
        } else {
            components.add_security_scheme(
                SESSION_TOKEN,
                SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                    "X-Hermes-Session-Token",
                    "loopback mode: the per-process session token (HERMES_DASHBOARD_SESSION_TOKEN, or random; carried by the page)",
                ))),
            );
            SESSION_TOKEN
        };
        if self.drain_secret {
            components.add_security_scheme(
                DRAIN_SECRET,
                bearer("HERMES_DASHBOARD_DRAIN_SECRET (or _NEXT)", None),
            );
        }
        components.add_security_scheme(FIRE_TOKEN, fire_token_scheme());
        session_scheme
    }

    /// Sets the security of the operation at `path`, and on a gated one (the page aside)
    /// adds the answers the gate gives before the handler runs.
    fn gate_operation(
        &self,
        session_scheme: &'static str,
        path: &str,
        op: &mut utoipa::openapi::path::Operation,
    ) {
        if path == "/api/cron/fire" {
            op.security = Some(vec![requirement(FIRE_TOKEN)]);
            return;
        }
        // The page is public in loopback mode; gated mode sends a browser without a
        // session to /login.
        if dashboard::is_public_path(path) || (path == "/" && !self.gated) {
            op.security = Some(vec![SecurityRequirement::default()]);
            return;
        }
        let token_route = path == crate::auth::drain_secret::DRAIN_ROUTE
            || path == crate::auth::drain_secret::RESTART_ROUTE;
        let scheme = if token_route && self.drain_secret {
            DRAIN_SECRET
        } else {
            session_scheme
        };
        op.security = Some(vec![requirement(scheme)]);
        if path != "/" {
            self.add_gate_responses(op);
        }
    }

    /// The gate's own answers on a gated operation: 401 without a valid session or token,
    /// 403 for a foreign-origin cookie write (gated mode), 503 when the auth backend is
    /// unreachable; an answer the handler documents itself is kept.
    fn add_gate_responses(&self, op: &mut utoipa::openapi::path::Operation) {
        let responses = &mut op.responses.responses;
        responses.insert(
            "401".into(),
            response_ref(
                "DashboardError",
                "unauthenticated: no valid session or token",
            ),
        );
        if self.gated {
            responses.entry("403".into()).or_insert_with(|| {
                response_ref(
                    "DashboardError",
                    "forbidden_origin: a cookie-borne write from a foreign Origin",
                )
            });
        }
        responses.entry("503".into()).or_insert_with(|| {
            response_ref(
                "DashboardError",
                "an auth provider or the session store is unreachable; Retry-After",
            )
        });
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::*;

    /// `(METHOD, path)` of every `.route("path", get(..).post(..))` in `source`.
    fn routes_in(source: &str) -> BTreeSet<(String, String)> {
        let mut out = BTreeSet::new();
        for chunk in source.split(".route(").skip(1) {
            let Some(rest) = chunk.trim_start().strip_prefix('"') else {
                continue;
            };
            let Some((path, rest)) = rest.split_once('"') else {
                continue;
            };
            // A catch-all segment (`{*id}`) is one path parameter in OpenAPI.
            let path = path.replace("{*", "{");
            // The method router is the rest of the `.route(` call: up to its closing paren.
            let mut depth = 1;
            let end = rest
                .char_indices()
                .find(|&(_, c)| {
                    match c {
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        _ => {}
                    }
                    depth == 0
                })
                .map_or(rest.len(), |(i, _)| i);
            let body = &rest[..end];
            for method in ["get", "post", "put", "patch", "delete"] {
                let calls = [
                    format!(" {method}("),
                    format!(".{method}("),
                    format!("({method}("),
                ];
                if calls.iter().any(|c| body.contains(c.as_str())) {
                    out.insert((method.to_uppercase(), path.clone()));
                }
            }
        }
        out
    }

    fn documented(doc: &str) -> BTreeSet<(String, String)> {
        let v: Value = serde_json::from_str(doc).unwrap();
        let mut out = BTreeSet::new();
        for (path, item) in v["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                    out.insert((method.to_uppercase(), path.clone()));
                }
            }
        }
        out
    }

    const API: &str = include_str!("api.rs");
    const RESPONSES: &str = include_str!("responses.rs");
    const DASHBOARD: &str = include_str!("dashboard.rs");
    const JOBS: &str = include_str!("jobs.rs");
    const SESSIONS: &str = include_str!("sessions.rs");
    const FIRE: &str = include_str!("fire.rs");
    const RUNS: &str = include_str!("runs.rs");
    const SESSION: &str = include_str!("session.rs");
    const WS: &str = include_str!("ws.rs");
    const PAGE: &str = include_str!("page.rs");
    /// This file's routes (`/openapi.json`), without these tests.
    fn docs_routes() -> &'static str {
        include_str!("openapi.rs")
            .split("#[cfg(test)]")
            .next()
            .unwrap()
    }

    #[test]
    fn every_route_of_each_listener_is_documented_and_nothing_else() {
        // The API server router merges responses, runs, fire, jobs and sessions; the dashboard's
        // merges jobs, sessions, fire, session, ws and page (see `api::router` and
        // `dashboard::router`).
        assert!(
            API.contains(".merge(super::fire::routes())")
                && API.contains("super::jobs::routes()")
                && API.contains("super::sessions::routes()")
        );
        assert!(API.contains(".merge(docs)") && DASHBOARD.contains(".merge(docs)"));
        assert!(API.contains(".merge(super::runs::routes(&state))"));
        assert!(API.contains(".merge(super::responses::routes(&state))"));
        for m in ["jobs", "sessions", "fire", "session", "ws", "page"] {
            assert!(
                DASHBOARD.contains(&format!(".merge(super::{m}::routes())")),
                "{m}"
            );
        }
        let api: BTreeSet<_> = [API, RESPONSES, FIRE, JOBS, SESSIONS, RUNS, docs_routes()]
            .iter()
            .flat_map(|s| routes_in(s))
            .collect();
        let dash: BTreeSet<_> = [
            DASHBOARD,
            JOBS,
            SESSIONS,
            FIRE,
            SESSION,
            WS,
            PAGE,
            docs_routes(),
        ]
        .iter()
        .flat_map(|s| routes_in(s))
        .collect();
        assert!(
            api.contains(&("POST".into(), "/v1/chat/completions".into())),
            "{api:?}"
        );
        assert!(
            dash.contains(&("PATCH".into(), "/api/jobs/{id}".into())),
            "{dash:?}"
        );
        for route in [
            "/v1/models/{id}",
            "/v1/capabilities",
            "/openapi.json",
            "/health/ready",
        ] {
            assert!(api.contains(&("GET".into(), route.into())), "{route}");
        }
        for route in ["/openapi.json", "/health/ready", "/api/auth/providers"] {
            assert!(dash.contains(&("GET".into(), route.into())), "{route}");
        }
        assert_eq!(
            documented(&api_document()),
            api,
            "API server document vs its routes"
        );
        assert_eq!(
            documented(&dashboard_document(false, false)),
            dash,
            "dashboard document vs its routes"
        );
    }

    #[test]
    fn documents_render_the_same_text_every_time() {
        // The hand-written schemas keep their keywords in hash maps, whose order differs
        // from one map to the next.
        let first = api_document();
        for _ in 0..5 {
            assert_eq!(api_document(), first);
            assert_eq!(
                dashboard_document(true, true),
                dashboard_document(true, true)
            );
        }
    }

    #[test]
    fn documents_are_openapi_3_1_with_security_schemes() {
        for (doc, schemes) in [
            (api_document(), &[API_KEY, FIRE_TOKEN][..]),
            (
                dashboard_document(false, false),
                &[SESSION_TOKEN, FIRE_TOKEN][..],
            ),
            (
                dashboard_document(true, true),
                &[SESSION_COOKIE, DRAIN_SECRET, FIRE_TOKEN][..],
            ),
        ] {
            let v: Value = serde_json::from_str(&doc).unwrap();
            assert!(
                v["openapi"].as_str().unwrap().starts_with("3.1"),
                "{}",
                v["openapi"]
            );
            for s in schemes {
                assert!(v["components"]["securitySchemes"].get(*s).is_some(), "{s}");
            }
        }
    }
}
