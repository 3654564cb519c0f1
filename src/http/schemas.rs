//! Wire shapes that handlers build as JSON values, for the OpenAPI documents (`openapi`):
//! the handlers' annotations name them, and the schemathesis test checks them against the
//! live server. A leaf of `http`: it imports no handler module, so handlers and the
//! documents can both use it.
#![allow(dead_code)]

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

/// A refused `/api/sessions` request, in the job API's shape: `{"error": message}`.
#[derive(ToSchema)]
pub struct SessionsError {
    /// `Invalid session ID`, `Unknown session ID`, or why the store cannot answer.
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
        let text = json!({"type": "string", "maxLength": crate::agent::input::MAX_TEXT_PART_BYTES});
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

mod runs;
pub use runs::{RunEventFrame, RunObject, RunRequest, RunStarted, RunStopping};
/// The Responses API's shapes (SPEC §11).
pub mod responses;
