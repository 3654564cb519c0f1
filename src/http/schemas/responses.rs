//! The Responses API's wire shapes (SPEC §11, OpenAI's), for the API server's document:
//! what `POST /v1/responses` accepts — exactly what `responses::Request::parse` and
//! `agent::input::response_input` take — and the response object `http::responses`
//! answers.

use std::borrow::Cow;

use serde_json::{Value, json};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::Schema;
use utoipa::{PartialSchema, ToSchema};

use super::{ContentPart, raw, reference};

/// The role of an input message (as in chat messages).
fn role() -> Value {
    json!({"enum": crate::agent::input::ROLES})
}

raw_schema!(
    CreateResponse,
    "`POST /v1/responses` body (other fields are ignored). `previous_response_id` and `conversation` exclude each other; without `instructions` the previous response's carry on.",
    [ResponseInputItem],
    {
        let chars = crate::responses::MAX_CONVERSATION_CHARS;
        let name = json!({"type": "string", "minLength": 1, "maxLength": chars});
        json!({
            "type": "object",
            "required": ["input"],
            "properties": {
                "model": {"type": ["string", "null"],
                          "description": "echoed back; empty, null or absent = `gateway.api_server.model_name`"},
                "input": {
                    "oneOf": [
                        {"type": "string", "description": "one user message"},
                        {"type": "array", "minItems": 1, "items": reference("ResponseInputItem"),
                         "contains": {"anyOf": [
                             {"type": "string"},
                             {"type": "object", "properties": {"role": {"const": "user"}}},
                         ]},
                         "description": "this turn's items, oldest first, at least one from the user"},
                    ],
                },
                "instructions": {"type": ["string", "null"],
                                 "description": "the system prompt of this turn, not kept in the history"},
                "previous_response_id": {"type": ["string", "null"],
                                         "description": "continue the chain ending at this stored response"},
                "conversation": {
                    "oneOf": [
                        name,
                        {"type": "object", "required": ["id"], "properties": {"id": name}},
                        {"type": "null"},
                    ],
                    "description": "a conversation name: continue its latest response (a new name starts one), and point it at this one",
                },
                "store": {"type": ["boolean", "null"], "description": "keep the response (default true)"},
                "stream": {"type": ["boolean", "null"], "description": "answer as server-sent Responses events"},
                "metadata": {
                    "type": ["object", "null"],
                    "maxProperties": crate::responses::MAX_METADATA_ENTRIES,
                    "propertyNames": {"maxLength": crate::responses::MAX_METADATA_KEY_CHARS},
                    "additionalProperties": {"type": "string", "maxLength": crate::responses::MAX_METADATA_VALUE_CHARS},
                },
                "tools": {"type": ["array", "null"],
                          "description": "not offered to the agents (they run their own tools); part of the Idempotency-Key fingerprint"},
            },
            "not": {
                "required": ["previous_response_id", "conversation"],
                "properties": {
                    "previous_response_id": {"type": "string"},
                    "conversation": {"type": ["string", "object"]},
                },
            },
        })
    }
);

raw_schema!(
    ResponseInputItem,
    "One input item: a plain string (a user message) or a message (other item types are refused with 400 `unsupported_content_type`).",
    [ContentPart],
    json!({
        "oneOf": [
            {"type": "string"},
            {
                "type": "object",
                "required": ["content"],
                "properties": {
                    "type": {"const": "message"},
                    "role": role(),
                    "content": {
                        "oneOf": [
                            {"type": "string"},
                            {"type": "array", "maxItems": crate::agent::input::MAX_PARTS,
                             "items": reference("ContentPart")},
                        ],
                    },
                },
                "description": "`role` absent = `user`",
            },
        ],
    })
);

raw_schema!(
    ResponseRequestError,
    "A refused Responses request (OpenAI shape): `param` names the field, item or part (`input`, `input[2].content`, `conversation`, `metadata`, ...) when the refusal is about one.",
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
                                  "invalid_content_part", "invalid_idempotency_key", null]},
            },
        }},
    })
);

raw_schema!(
    ResponseObject,
    "A response (OpenAI shape): its one output message holds the reply.",
    [OutputMessage, ResponseUsage],
    {
        let nullable = |schema: Value| json!({"oneOf": [schema, {"type": "null"}]});
        json!({
            "type": "object",
            "required": ["id", "object", "created_at", "status", "model", "output", "usage", "error",
                         "incomplete_details", "instructions", "previous_response_id", "conversation",
                         "metadata", "store", "parallel_tool_calls", "tool_choice", "tools", "text",
                         "truncation"],
            "properties": {
                "id": {"type": "string", "pattern": "^resp_[0-9a-f]{32}$"},
                "object": {"const": "response"},
                "created_at": {"type": "integer", "description": "Unix seconds"},
                "status": {"enum": ["in_progress", "completed", "failed", "incomplete"]},
                "model": {"type": "string"},
                "output": {"type": "array", "maxItems": 1, "items": reference("OutputMessage")},
                "usage": nullable(reference("ResponseUsage")),
                "error": nullable(json!({"type": "object", "required": ["code", "message"],
                    "properties": {"code": {"const": "server_error"}, "message": {"type": "string"}}})),
                "incomplete_details": nullable(json!({"type": "object", "required": ["reason"],
                    "properties": {"reason": {"const": "interrupted"}}})),
                "instructions": {"type": ["string", "null"]},
                "previous_response_id": {"type": ["string", "null"],
                                         "description": "the response whose history this one continued"},
                "conversation": nullable(json!({"type": "object", "required": ["id"],
                    "properties": {"id": {"type": "string"}}})),
                "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
                "store": {"type": "boolean"},
                "parallel_tool_calls": {"const": false},
                "tool_choice": {"const": "none"},
                "tools": {"type": "array", "maxItems": 0},
                "text": {"type": "object", "required": ["format"], "properties": {
                    "format": {"type": "object", "required": ["type"], "properties": {"type": {"const": "text"}}}}},
                "truncation": {"const": "disabled"},
            },
        })
    }
);

raw_schema!(
    OutputMessage,
    "The assistant's message: one `output_text` part (`incomplete` when the turn failed or was cut after producing text).",
    [],
    json!({
        "type": "object",
        "required": ["id", "type", "status", "role", "content"],
        "properties": {
            "id": {"type": "string", "pattern": "^msg_[0-9a-f]{32}$"},
            "type": {"const": "message"},
            "status": {"enum": ["in_progress", "completed", "incomplete"]},
            "role": {"const": "assistant"},
            "content": {"type": "array", "maxItems": 1, "items": {
                "type": "object",
                "required": ["type", "text", "annotations"],
                "properties": {
                    "type": {"const": "output_text"},
                    "text": {"type": "string"},
                    "annotations": {"type": "array", "maxItems": 0},
                    "logprobs": {"type": "array", "maxItems": 0},
                },
            }},
        },
    })
);

raw_schema!(
    ResponseUsage,
    "Token counts (the backend's, or words counted when it reports none).",
    [],
    {
        let count = json!({"type": "integer", "minimum": 0});
        json!({
            "type": "object",
            "required": ["input_tokens", "input_tokens_details", "output_tokens",
                         "output_tokens_details", "total_tokens"],
            "properties": {
                "input_tokens": count,
                "input_tokens_details": {"type": "object", "required": ["cached_tokens"],
                                         "properties": {"cached_tokens": count}},
                "output_tokens": count,
                "output_tokens_details": {"type": "object", "required": ["reasoning_tokens"],
                                          "properties": {"reasoning_tokens": count}},
                "total_tokens": count,
            },
        })
    }
);

/// `DELETE /v1/responses/{id}`.
#[derive(ToSchema)]
pub struct ResponseDeleted {
    pub id: String,
    /// Always `response`.
    pub object: String,
    /// Always true.
    pub deleted: bool,
}
