//! The run API's wire shapes (SPEC §11 "Runs"), for the API server's OpenAPI document.

use super::*;

raw_schema!(
    RunRequest,
    "`POST /v1/runs` body: the message (`input`), and optionally the run's system prompt, its session and its model (other fields are ignored).",
    [RunInputItem],
    json!({
        "type": "object",
        "required": ["input"],
        "properties": {
            "input": {
                "oneOf": [
                    {"type": "string", "minLength": 1},
                    {"type": "array", "minItems": 1, "items": reference("RunInputItem")},
                ],
                "description": "the message, or a list of items whose last item's content is the message",
            },
            "instructions": {"type": ["string", "null"], "description": "the run's system prompt (empty = none)"},
            "session_id": {"type": ["string", "null"], "minLength": 1, "maxLength": 128,
                           "description": "the caller's conversation the run belongs to (the run's id when absent)"},
            "model": {"type": ["string", "null"], "description": "reported back; empty or absent = gateway.api_server.model_name"},
        },
    })
);

raw_schema!(
    RunInputItem,
    "One `input` item: a plain string, or a message whose `content` is plain text or at most 1,000 content parts (its other fields are ignored).",
    [ContentPart],
    json!({"anyOf": [
        {"type": "string"},
        {"type": "object", "required": ["content"], "properties": {"content": {"oneOf": [
            {"type": "string"},
            {"type": "array", "maxItems": crate::agent::input::MAX_PARTS, "items": reference("ContentPart")},
        ]}}},
    ]})
);

raw_schema!(
    RunStarted,
    "`POST /v1/runs` answer: the run was started and recorded.",
    [],
    json!({
        "type": "object",
        "required": ["run_id", "status"],
        "properties": {
            "run_id": {"type": "string", "pattern": "^run_[0-9a-f]{32}$"},
            "status": {"const": "started"},
        },
    })
);

raw_schema!(
    RunStopping,
    "`POST /v1/runs/{id}/stop` answer: the run is being stopped.",
    [],
    json!({
        "type": "object",
        "required": ["run_id", "status"],
        "properties": {"run_id": {"type": "string"}, "status": {"const": "stopping"}},
    })
);

raw_schema!(
    RunObject,
    "A run (`hermes.run`, compat): times in Unix seconds; `output` once it has ended (what there was of it if it did not complete), `error` when it failed or was interrupted.",
    [],
    json!({
        "type": "object",
        "required": ["object", "run_id", "status", "created_at", "updated_at", "last_event", "session_id", "model"],
        "properties": {
            "object": {"const": "hermes.run"},
            "run_id": {"type": "string", "pattern": "^run_"},
            "status": {"enum": ["running", "stopping", "completed", "failed", "cancelled", "interrupted"]},
            "created_at": {"type": "number"},
            "updated_at": {"type": "number"},
            "last_event": {"enum": ["message.delta", "run.completed", "run.failed", "run.stopped", null]},
            "session_id": {"type": "string"},
            "model": {"type": "string"},
            "output": {"type": "string"},
            "error": {"type": "string"},
        },
    })
);

raw_schema!(
    RunEvent,
    "One event of a run, the JSON of one `data:` line of its event stream: `message.delta` (a piece of the reply), then one of `run.completed` (with the whole `output` and `usage`), `run.failed` (`failed`, or `interrupted` by a shutdown or a dead process, with the `error` and the partial `output`) or `run.stopped` (`cancelled` by a stop). Times in Unix seconds.",
    [],
    {
        let common = |event: &str| {
            json!({
                "event": {"const": event},
                "run_id": {"type": "string", "pattern": "^run_"},
                "timestamp": {"type": "number"},
            })
        };
        let end = |event: &str, statuses: serde_json::Value, required: &[&str]| {
            let mut props = common(event);
            props["status"] = json!({"enum": statuses});
            props["output"] = json!({"type": "string"});
            props["error"] = json!({"type": "string"});
            props["usage"] = json!({"type": "object", "required": ["input_tokens", "output_tokens", "total_tokens"],
                "properties": {"input_tokens": {"type": "integer"}, "output_tokens": {"type": "integer"},
                               "total_tokens": {"type": "integer"}}});
            let mut req = vec!["event", "run_id", "timestamp", "status", "output"];
            req.extend_from_slice(required);
            json!({"type": "object", "required": req, "properties": props})
        };
        let mut delta = common("message.delta");
        delta["delta"] = json!({"type": "string"});
        json!({"oneOf": [
            {"type": "object", "required": ["event", "run_id", "timestamp", "delta"], "properties": delta},
            end("run.completed", json!(["completed"]), &["usage"]),
            end("run.failed", json!(["failed", "interrupted"]), &["error"]),
            end("run.stopped", json!(["cancelled"]), &[]),
        ]})
    }
);

raw_schema!(
    RunEventFrame,
    "One server-sent event of a run's event stream (SSE): its `data` is the JSON of one RunEvent; comments (`: keepalive`, `: stream closed`) carry no event.",
    [RunEvent],
    json!({
        "type": "object",
        "required": ["data"],
        "properties": {
            "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": reference("RunEvent")},
            "event": {"type": "string"},
            "id": {"type": "string"},
        },
    })
);
