//! The OpenAPI 3.1 documents, one per listener, generated from the handler annotations:
//! [`api_document`] is served at the API server's `/openapi.json`, [`dashboard_document`]
//! at the dashboard's. Each lists every route its listener serves (a unit test compares
//! them with the routers' source), with the request and response schemas the handlers
//! accept and answer; the listener's auth gate (API key, session, drain secret) is added
//! to the gated operations here, with the 401 it answers, so the handlers' annotations
//! describe only what the handlers themselves do.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, Ref, RefOr, Response, SecurityRequirement};
use utoipa::{Modify, OpenApi};

use super::{api, dashboard, fire, jobs, page, session, ws};

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
        description = "The OpenAI-compatible API server of the Hermes agent gateway (default 127.0.0.1:8642): health, models, chat completions, the cron job API and the Chronos fire endpoint. With `API_SERVER_KEY` set, every operation but health, readiness, this document and the fire endpoint needs `Authorization: Bearer <API_SERVER_KEY>`."
    ),
    paths(
        api::health,
        api::v1_health,
        api::health_detailed,
        api::ready,
        api::models,
        api::model,
        api::capabilities,
        api::chat_completions,
        api::openapi,
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
    ),
    components(schemas(schemas::OpenAiError, schemas::JobsError)),
    modifiers(&ApiServerGate),
    tags(
        (name = "health", description = "Liveness and readiness"),
        (name = "api", description = "OpenAI-compatible turns"),
        (name = "cron", description = "Cron jobs and externally fired runs"),
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
        api::ready,
        dashboard::drain_status,
        dashboard::drain_action,
        dashboard::restart,
        dashboard::metrics,
        dashboard::openapi,
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
        session::login_page,
        session::password_login,
        session::logout,
        session::me,
        session::providers,
        session::ws_ticket,
        ws::events,
        ws::chat,
        page::index,
        page::app_js,
        page::app_css,
    ),
    components(schemas(schemas::DashboardError, schemas::JobsError)),
    tags(
        (name = "health", description = "Readiness"),
        (name = "dashboard", description = "Status, drain control and metrics"),
        (name = "cron", description = "Cron jobs and externally fired runs"),
        (name = "auth", description = "Sign-in and WebSocket tickets"),
        (name = "page", description = "The dashboard page and its assets"),
        (name = "meta", description = "This document"),
    )
)]
struct DashboardDoc;

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
        components.add_security_scheme(
            FIRE_TOKEN,
            bearer(
                "a short-lived fire token signed by the account service (RS256/384/512, ES256/384)",
                Some("JWT"),
            ),
        );
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
        components.add_security_scheme(
            FIRE_TOKEN,
            bearer(
                "a short-lived fire token signed by the account service (RS256/384/512, ES256/384)",
                Some("JWT"),
            ),
        );
        let (gated, drain_secret) = (self.gated, self.drain_secret);
        each_operation(doc, |path, op| {
            if path == "/api/cron/fire" {
                op.security = Some(vec![requirement(FIRE_TOKEN)]);
                return;
            }
            // The page is public in loopback mode; gated mode sends a browser without a
            // session to /login.
            if dashboard::is_public_path(path) || (path == "/" && !gated) {
                op.security = Some(vec![SecurityRequirement::default()]);
                return;
            }
            let token_route = path == crate::auth::drain_secret::DRAIN_ROUTE
                || path == crate::auth::drain_secret::RESTART_ROUTE;
            let scheme = if token_route && drain_secret {
                DRAIN_SECRET
            } else {
                session_scheme
            };
            op.security = Some(vec![requirement(scheme)]);
            if path == "/" {
                return;
            }
            op.responses.responses.insert(
                "401".into(),
                response_ref(
                    "DashboardError",
                    "unauthenticated: no valid session or token",
                ),
            );
            if gated {
                op.responses
                    .responses
                    .entry("403".into())
                    .or_insert_with(|| {
                        response_ref(
                            "DashboardError",
                            "forbidden_origin: a cookie-borne write from a foreign Origin",
                        )
                    });
            }
            op.responses
                .responses
                .entry("503".into())
                .or_insert_with(|| {
                    response_ref(
                        "DashboardError",
                        "an auth provider or the session store is unreachable; Retry-After",
                    )
                });
        });
    }
}

/// Wire shapes that handlers build as JSON values; documented here, checked against the
/// live server by the schemathesis test.
#[allow(dead_code)]
pub mod schemas {
    use std::borrow::Cow;

    use serde_json::{Value, json};
    use utoipa::openapi::schema::{Object, Schema, SchemaType};
    use utoipa::openapi::{Ref, RefOr};
    use utoipa::{PartialSchema, ToSchema};

    /// What Rust's `str::trim` removes (Unicode White_Space), as a regex class body, so a
    /// pattern judges "blank" exactly as the handlers do.
    const WS: &str = r"\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";

    /// A schema written as JSON Schema text, for what the derive cannot say (`anyOf`,
    /// `contains`, `const`, type unions): every keyword is carried as is.
    fn raw(v: Value) -> RefOr<Schema> {
        let Value::Object(map) = v else {
            unreachable!("a schema is a JSON object")
        };
        let mut o = Object::with_type(SchemaType::AnyValue);
        o.extensions = Some(map.into_iter().collect());
        RefOr::T(Schema::Object(o))
    }

    /// `fire_at`: an RFC 3339 time, Unix seconds, or null.
    fn fire_at() -> RefOr<Schema> {
        raw(json!({
            "oneOf": [
                {"type": "string", "format": "date-time"},
                {"type": "integer"},
                {"type": "null"},
            ],
            "description": "The slot fired: an RFC 3339 time or Unix seconds (absent or null: the job's next slot).",
        }))
    }

    fn reference(name: &str) -> Value {
        json!({"$ref": Ref::from_schema_name(name).ref_location})
    }

    /// A hand-written component: `$name`, described, with `$schema`, which references `$deps`.
    macro_rules! raw_schema {
        ($name:ident, $description:literal, [$($dep:ident),*], $schema:expr) => {
            #[doc = $description]
            pub struct $name;
            impl PartialSchema for $name {
                fn schema() -> RefOr<Schema> {
                    let mut schema: Value = $schema;
                    schema["description"] = Value::from($description);
                    raw(schema)
                }
            }
            impl ToSchema for $name {
                fn name() -> Cow<'static, str> {
                    Cow::Borrowed(stringify!($name))
                }
                #[allow(unused_variables)]
                fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
                    $(
                        schemas.push(($dep::name().into(), <$dep as PartialSchema>::schema()));
                        <$dep as ToSchema>::schemas(schemas);
                    )*
                }
            }
        };
    }

    /// The OpenAI error shape of the API server.
    #[derive(ToSchema)]
    pub struct OpenAiError {
        pub error: OpenAiErrorBody,
    }

    #[derive(ToSchema)]
    pub struct OpenAiErrorBody {
        pub message: String,
        #[schema(rename = "type")]
        pub kind: String,
        pub code: Option<String>,
        #[schema(nullable = false)]
        pub param: Option<String>,
    }

    /// The dashboard's error shape: `detail` always, `error` a machine word (absent only
    /// for an unreachable auth provider), `reason` and `login_url` on 401s.
    #[derive(ToSchema)]
    pub struct DashboardError {
        #[schema(nullable = false)]
        pub error: Option<String>,
        pub detail: String,
        #[schema(nullable = false)]
        pub reason: Option<String>,
        #[schema(nullable = false)]
        pub login_url: Option<String>,
    }

    /// The job API's error shape (compat): `{"error": message}`, naming the field.
    #[derive(ToSchema)]
    pub struct JobsError {
        pub error: String,
    }

    /// A job on the wire (compat field names).
    #[derive(ToSchema)]
    pub struct Job {
        /// 12 lowercase hex characters.
        #[schema(pattern = "^[0-9a-f]{12}$")]
        pub id: String,
        pub name: String,
        pub prompt: String,
        pub schedule: String,
        pub enabled: bool,
        #[schema(value_type = JobState)]
        pub state: String,
        /// RFC 3339.
        pub next_run_at: Option<String>,
        pub last_run_at: Option<String>,
        pub last_status: Option<String>,
        pub last_error: Option<String>,
        pub repeat: Repeat,
        /// `local` or a webhook URL.
        pub deliver: String,
        pub created_at: String,
        pub updated_at: String,
    }

    #[derive(ToSchema)]
    #[schema(rename_all = "lowercase")]
    pub enum JobState {
        Scheduled,
        Paused,
        Completed,
        Error,
    }

    /// How many times a job runs: `times` null = forever.
    #[derive(ToSchema)]
    pub struct Repeat {
        #[schema(minimum = 1)]
        pub times: Option<u32>,
        pub completed: u32,
    }

    /// One job field's schema, for create (`null` = absent) or PATCH (`null` refused but
    /// for what has a cleared state: `repeat` forever, no skills).
    fn job_fields(create: bool) -> Value {
        let nullable = |t: &str| if create { json!([t, "null"]) } else { json!(t) };
        let not_blank = format!("[^{WS}]");
        json!({
            "name": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": not_blank,
                     "description": "1 to 200 characters (surrounding white space is trimmed)"},
            "schedule": {"type": "string", "minLength": 1,
                         "description": "a 5/6-field cron expression, `every 30m|2h|1d`, `in 30m`, an ISO time, or a phrase such as `weekdays at 9am` (a grammar no schema says: a string that is none of these is a 400 naming `schedule`)"},
            "prompt": {"type": "string", "minLength": 1, "maxLength": 5000, "pattern": not_blank,
                       "description": "what the agent is asked at each run: at most 5,000 characters, not blank"},
            "deliver": {"type": nullable("string"),
                        "description": "`local` (default) or an http(s) webhook URL"},
            "enabled": {"type": nullable("boolean")},
            "repeat": {"type": ["integer", "null"], "minimum": 1, "maximum": u32::MAX,
                       "description": "times to run; absent or null = forever"},
            "skills": {"type": ["array", "null"], "items": {"type": "string"}, "maxItems": 0,
                       "description": "this gateway's agent backends load no skills: a job naming one is refused (400); empty = none"},
            "skill": {"type": ["string", "null"], "pattern": format!("^[{WS}]*$"),
                      "description": "as `skills`: only an empty name is accepted"},
        })
    }

    raw_schema!(
        JobCreate,
        "`POST /api/jobs` body: exactly these fields (any other is a 400).",
        [],
        json!({
            "type": "object",
            "required": ["name", "schedule", "prompt"],
            "properties": job_fields(true),
            "additionalProperties": false,
        })
    );

    raw_schema!(
        JobPatch,
        "`PATCH /api/jobs/{id}` body: at least one of these fields (any other is a 400); absent fields stay as they are.",
        [],
        json!({
            "type": "object",
            "minProperties": 1,
            "properties": job_fields(false),
            "additionalProperties": false,
        })
    );

    #[derive(ToSchema)]
    pub struct JobEnvelope {
        pub job: Job,
    }

    #[derive(ToSchema)]
    pub struct JobList {
        pub jobs: Vec<Job>,
    }

    #[derive(ToSchema)]
    pub struct JobDeleted {
        pub ok: bool,
    }

    /// One run of a job.
    #[derive(ToSchema)]
    pub struct Run {
        pub id: String,
        pub job_id: String,
        pub scheduled_for: String,
        pub started_at: String,
        pub finished_at: Option<String>,
        #[schema(value_type = RunStatus)]
        pub status: String,
        pub output: Option<String>,
        pub error: Option<String>,
    }

    #[derive(ToSchema)]
    #[schema(rename_all = "lowercase")]
    pub enum RunStatus {
        Running,
        Completed,
        Failed,
        Interrupted,
        Skipped,
    }

    #[derive(ToSchema)]
    pub struct RunEnvelope {
        pub run: Run,
    }

    /// Newest first.
    #[derive(ToSchema)]
    pub struct RunList {
        pub runs: Vec<Run>,
    }

    /// `POST /api/cron/fire` body.
    #[derive(ToSchema)]
    pub struct FireRequest {
        #[schema(min_length = 1)]
        pub job_id: String,
        /// The slot fired: an RFC 3339 time or Unix seconds (absent or null: the job's
        /// next slot).
        #[schema(schema_with = fire_at)]
        pub fire_at: Option<Value>,
    }

    #[derive(ToSchema)]
    pub struct FireAccepted {
        /// Always `accepted`.
        pub status: String,
        pub job_id: String,
        pub run_id: Option<String>,
        #[schema(value_type = FireOutcome)]
        pub outcome: String,
    }

    #[derive(ToSchema)]
    #[schema(rename_all = "snake_case")]
    pub enum FireOutcome {
        Started,
        Duplicate,
        NotDue,
        UnknownJob,
        Paused,
    }

    /// One server-sent event of a streamed chat completion: `data` is a
    /// `chat.completion.chunk` JSON object, an error object, or `[DONE]` last.
    #[derive(ToSchema)]
    pub struct SseEvent {
        pub data: String,
        #[schema(nullable = false)]
        pub event: Option<String>,
        #[schema(nullable = false)]
        pub id: Option<String>,
    }

    /// The model list (OpenAI shape).
    #[derive(ToSchema)]
    pub struct ModelList {
        /// Always `list`.
        pub object: String,
        pub data: Vec<Model>,
    }

    #[derive(ToSchema)]
    pub struct Model {
        pub id: String,
        /// Always `model`.
        pub object: String,
        pub created: i64,
        pub owned_by: String,
    }

    /// A non-streamed chat completion (OpenAI shape).
    #[derive(ToSchema)]
    pub struct ChatCompletion {
        /// `chatcmpl-...`.
        #[schema(pattern = "^chatcmpl-")]
        pub id: String,
        /// Always `chat.completion`.
        pub object: String,
        pub created: i64,
        pub model: String,
        pub choices: Vec<Choice>,
        pub usage: Usage,
        /// Present when the turn failed after producing text: `{incomplete: true, error}`.
        #[schema(value_type = Option<Object>, nullable = false)]
        pub hermes: Option<Value>,
    }

    #[derive(ToSchema)]
    pub struct Choice {
        pub index: u32,
        pub message: AssistantMessage,
        /// `stop`, or `error` when the turn failed after producing text.
        pub finish_reason: String,
    }

    #[derive(ToSchema)]
    pub struct AssistantMessage {
        pub role: String,
        pub content: String,
    }

    #[derive(ToSchema)]
    pub struct Usage {
        pub prompt_tokens: u64,
        pub completion_tokens: u64,
        pub total_tokens: u64,
    }

    raw_schema!(
        ChatMessages,
        "A chat request's `messages`: oldest first, at least one, one of them from the user.",
        [ChatMessage],
        json!({
            "type": "array",
            "minItems": 1,
            "items": reference("ChatMessage"),
            "contains": {"type": "object", "required": ["role"], "properties": {"role": {"const": "user"}}},
        })
    );

    raw_schema!(
        ChatMessage,
        "One message: its author and its content (other fields are ignored).",
        [ContentPart],
        json!({
            "type": "object",
            "required": ["role", "content"],
            "properties": {
                "role": {"enum": crate::agent::input::ROLES},
                "content": {
                    "oneOf": [
                        {"type": "string"},
                        {"type": "array", "maxItems": crate::agent::input::MAX_PARTS,
                         "items": reference("ContentPart")},
                    ],
                    "description": "plain text, or at most 1,000 content parts",
                },
            },
        })
    );

    raw_schema!(
        ContentPart,
        "A content part: text (a bare string, or `text`/`input_text`/`output_text` with a `text` of at most 65,536 UTF-8 bytes: `maxLength` counts characters, so text with multi-byte characters meets the limit sooner), or an image (`image_url`/`input_image`: an http(s) or `data:image/...;...,` URL, as a string or `{url, detail}`), which is checked but carries no text to the agent. Files and other part types are refused (400 `unsupported_content_type`).",
        [],
        {
            let text =
                json!({"type": "string", "maxLength": crate::agent::input::MAX_TEXT_PART_BYTES});
            let ws = format!("[{WS}]*");
            let url = json!({"type": "string", "pattern": format!(
                "^{ws}([hH][tT][tT][pP][sS]?://|[dD][aA][tT][aA]:[iI][mM][aA][gG][eE]/[^,]*,)"
            )});
            let detail = json!({"type": ["string", "null"], "pattern": format!("[^{WS}]")});
            let kind = json!({"enum": ["image_url", "input_image"]});
            json!({"anyOf": [
                text,
                {"type": "object", "required": ["type", "text"], "properties": {
                    "type": {"enum": ["text", "input_text", "output_text"]}, "text": text}},
                // The URL as a string; `detail` beside it.
                {"type": "object", "required": ["type", "image_url"], "properties": {
                    "type": kind, "image_url": url, "detail": detail}},
                // `{url, detail}`: its own `detail` wins over one beside it.
                {"type": "object", "required": ["type", "image_url"], "properties": {
                    "type": kind,
                    "image_url": {"type": "object", "required": ["url", "detail"],
                                  "properties": {"url": url, "detail": detail}}}},
                {"type": "object", "required": ["type", "image_url"], "properties": {
                    "type": kind, "detail": detail,
                    "image_url": {"type": "object", "required": ["url"],
                                  "properties": {"url": url},
                                  "not": {"required": ["detail"]}}}},
            ]})
        }
    );

    raw_schema!(
        ChatRequestError,
        "A refused chat request (OpenAI shape): `param` names the message or part (`messages`, `messages[2].content`, ...) when the refusal is about one.",
        [],
        json!({
            "type": "object",
            "required": ["error"],
            "properties": {"error": {
                "type": "object",
                "required": ["message", "type", "code"],
                "properties": {
                    "message": {"type": "string"},
                    "type": {"const": "invalid_request_error"},
                    "param": {"type": "string"},
                    "code": {"enum": ["unsupported_content_type", "invalid_image_url",
                                      "invalid_content_part", "invalid_session_id",
                                      "invalid_idempotency_key", null]},
                },
            }},
        })
    );

    raw_schema!(
        Capabilities,
        "`GET /v1/capabilities`: what this server offers.",
        [],
        {
            let endpoint = json!({"type": "object", "required": ["method", "path"],
                "properties": {"method": {"type": "string"}, "path": {"type": "string"}}});
            json!({
                "type": "object",
                "required": ["object", "platform", "model", "auth", "runtime", "features", "endpoints"],
                "properties": {
                    "object": {"const": "hermes.api_server.capabilities"},
                    "platform": {"const": "hermes-agent"},
                    "model": {"type": "string"},
                    "auth": {"type": "object", "required": ["type", "required"], "properties": {
                        "type": {"const": "bearer"}, "required": {"type": "boolean"}}},
                    "runtime": {"type": "object", "required": ["mode", "tool_execution", "split_runtime", "backend"],
                        "properties": {"mode": {"type": "string"}, "tool_execution": {"type": "string"},
                                       "split_runtime": {"type": "boolean"}, "backend": {"type": "string"}}},
                    "features": {"type": "object", "properties": {
                        "limits": {"type": "object", "properties": {
                            "body_bytes": {"type": "integer"}, "text_part_bytes": {"type": "integer"},
                            "content_parts": {"type": "integer"}}}},
                        "additionalProperties": {"type": ["boolean", "string", "object"]}},
                    "endpoints": {"type": "object", "additionalProperties": endpoint},
                },
            })
        }
    );

    /// `POST /auth/password-login` body.
    #[derive(ToSchema)]
    pub struct PasswordLogin {
        #[schema(max_length = 128)]
        pub username: String,
        #[schema(max_length = 1024)]
        pub password: String,
    }

    #[derive(ToSchema)]
    pub struct User {
        pub id: String,
        pub provider: String,
    }

    #[derive(ToSchema)]
    pub struct LoggedIn {
        pub ok: bool,
        pub user: User,
        pub expires_at: String,
    }

    #[derive(ToSchema)]
    pub struct Ok {
        pub ok: bool,
    }

    /// `GET /api/auth/me`: the compat fields, plus `user` and `mode` for the page.
    #[derive(ToSchema)]
    pub struct Me {
        pub user_id: String,
        /// The password and session-token providers know no e-mail address.
        #[schema(value_type = Option<String>)]
        pub email: Option<String>,
        pub display_name: String,
        #[schema(value_type = Option<String>)]
        pub org_id: Option<String>,
        pub provider: String,
        /// Unix seconds; null in loopback mode (the session never expires).
        pub expires_at: Option<i64>,
        pub user: User,
        #[schema(value_type = Mode)]
        pub mode: String,
    }

    #[derive(ToSchema)]
    #[schema(rename_all = "lowercase")]
    pub enum Mode {
        Gated,
        Loopback,
    }

    /// A sign-in method.
    #[derive(ToSchema)]
    pub struct Provider {
        /// `basic` (the password form).
        pub name: String,
        pub display_name: String,
        pub supports_password: bool,
    }

    /// `GET /api/auth/providers` (compat shape).
    #[derive(ToSchema)]
    pub struct Providers {
        #[schema(min_items = 1)]
        pub providers: Vec<Provider>,
    }

    /// `{"detail": ...}` (compat shape of some refusals).
    #[derive(ToSchema)]
    pub struct Detail {
        pub detail: String,
    }

    #[derive(ToSchema)]
    pub struct WsTicket {
        pub ticket: String,
        pub ttl_seconds: u64,
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
    const DASHBOARD: &str = include_str!("dashboard.rs");
    const JOBS: &str = include_str!("jobs.rs");
    const FIRE: &str = include_str!("fire.rs");
    const SESSION: &str = include_str!("session.rs");
    const WS: &str = include_str!("ws.rs");
    const PAGE: &str = include_str!("page.rs");

    #[test]
    fn every_route_of_each_listener_is_documented_and_nothing_else() {
        // The API server router merges fire and jobs; the dashboard's merges jobs, fire,
        // session, ws and page (see `api::router` and `dashboard::router`).
        assert!(
            API.contains(".merge(super::fire::routes())") && API.contains("super::jobs::routes()")
        );
        for m in ["jobs", "fire", "session", "ws", "page"] {
            assert!(
                DASHBOARD.contains(&format!(".merge(super::{m}::routes())")),
                "{m}"
            );
        }
        let api: BTreeSet<_> = [API, FIRE, JOBS]
            .iter()
            .flat_map(|s| routes_in(s))
            .collect();
        let dash: BTreeSet<_> = [DASHBOARD, JOBS, FIRE, SESSION, WS, PAGE]
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
