//! A run request's body (SPEC §11): `input` (a string, or a list of items — strings or
//! messages — whose last item's content is the message), optional `instructions` (the
//! run's system prompt), `session_id` and `model`. Pure: JSON in, a [`RunRequest`] or an
//! [`InputError`] naming the field out. A message's content follows the chat rules of
//! `agent::input` (strings or parts, 64 KiB text parts, image URLs).

use serde_json::{Map, Value, json};

use crate::agent::input::InputError;

/// A run request, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRequest {
    /// What the agent is asked.
    pub message: String,
    pub instructions: Option<String>,
    /// The conversation the caller files the run under (the run's id when absent).
    /// A label of 1 to 128 characters, passed to the agent.
    pub session_id: Option<String>,
    pub model: Option<String>,
}

fn refuse(param: impl Into<String>, code: Option<&'static str>, message: String) -> InputError {
    InputError {
        message,
        param: param.into(),
        code,
    }
}

/// Checks a run request's JSON body.
pub fn run_request(body: &Value) -> Result<RunRequest, InputError> {
    let Value::Object(fields) = body else {
        return Err(refuse(
            "body",
            None,
            "the request body must be a JSON object".into(),
        ));
    };
    let session_id = optional_text(fields, "session_id")?;
    if let Some(id) = &session_id
        && (id.is_empty() || id.chars().count() > 128)
    {
        return Err(refuse(
            "session_id",
            Some("invalid_session_id"),
            "session_id: must be 1 to 128 characters".into(),
        ));
    }
    Ok(RunRequest {
        message: message(fields.get("input"))?,
        instructions: optional_text(fields, "instructions")?,
        session_id,
        model: optional_text(fields, "model")?,
    })
}

/// A field that is a string when present (`null` = absent).
fn optional_text(fields: &Map<String, Value>, name: &str) -> Result<Option<String>, InputError> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(refuse(name, None, format!("{name}: must be a string"))),
    }
}

/// The message of `input`: the string itself, or the last item's content (every item is
/// checked).
fn message(input: Option<&Value>) -> Result<String, InputError> {
    match input {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::String(_)) => Err(refuse("input", None, "input: must not be empty".into())),
        Some(Value::Array(items)) if !items.is_empty() => {
            let mut last = String::new();
            for (i, item) in items.iter().enumerate() {
                last = item_text(i, item)?;
            }
            Ok(last)
        }
        _ => Err(refuse(
            "input",
            None,
            "input: required (a string or a non-empty list of items)".into(),
        )),
    }
}

/// One item's text: a plain string, or a message's `content` (other fields are ignored).
fn item_text(i: usize, item: &Value) -> Result<String, InputError> {
    let content = match item {
        Value::String(s) => return Ok(s.clone()),
        Value::Object(m) => m.get("content").cloned().unwrap_or(Value::Null),
        _ => {
            return Err(refuse(
                format!("input[{i}]"),
                None,
                format!("input[{i}]: must be a string or a message with a content"),
            ));
        }
    };
    // The chat rules, applied to a one-message list; their place is renamed to the item's.
    let place = format!("input[{i}]");
    crate::agent::input::chat_messages(Some(&json!([{"role": "user", "content": content}])))
        .map(|messages| messages.into_iter().map(|m| m.content).collect())
        .map_err(|e| InputError {
            message: e.message.replacen("messages[0]", &place, 1),
            param: e.param.replacen("messages[0]", &place, 1),
            code: e.code,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The message, or the refusal's param and a fragment of its message.
    type Want = Result<&'static str, (&'static str, &'static str)>;

    #[test]
    fn run_bodies_are_checked_naming_the_field() {
        // (body, the message or the refusal's param and a fragment of its message)
        let ok = |body: Value| run_request(&body).map(|r| r.message);
        let table: &[(Value, Want)] = &[
            (json!({"input": "hi"}), Ok("hi")),
            (json!({"input": ["first", "last"]}), Ok("last")),
            (
                json!({"input": [{"role": "user", "content": [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}]}]}),
                Ok("a\nb"),
            ),
            (
                json!({"input": [{"type": "message", "content": "x"}]}),
                Ok("x"),
            ),
            (json!([]), Err(("body", "JSON object"))),
            (json!({}), Err(("input", "required"))),
            (json!({"input": ""}), Err(("input", "must not be empty"))),
            (json!({"input": []}), Err(("input", "non-empty list"))),
            (json!({"input": 3}), Err(("input", "required"))),
            (
                json!({"input": [3]}),
                Err(("input[0]", "a string or a message")),
            ),
            (
                json!({"input": ["a", {}]}),
                Err(("input[1].content", "input[1].content: required")),
            ),
            (
                json!({"input": [{"content": [{"type": "input_file", "file_id": "f"}]}]}),
                Err(("input[0].content", "input[0].content[0]")),
            ),
            (
                json!({"input": "x", "instructions": 1}),
                Err(("instructions", "must be a string")),
            ),
            (
                json!({"input": "x", "session_id": ""}),
                Err(("session_id", "1 to 128")),
            ),
            (
                json!({"input": "x", "session_id": "é".repeat(129)}),
                Err(("session_id", "1 to 128")),
            ),
            (
                json!({"input": "x", "model": []}),
                Err(("model", "must be a string")),
            ),
        ];
        for (body, want) in table {
            match (ok(body.clone()), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, *want, "{body}"),
                (Err(e), Err((param, fragment))) => {
                    assert_eq!(e.param, *param, "{body}: {e:?}");
                    assert!(e.message.contains(fragment), "{body}: {e:?}");
                }
                (got, want) => panic!("{body}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn optional_fields_are_read() {
        let r = run_request(&json!({"input": "x", "instructions": "be brief", "session_id": "s-1", "model": "m", "metadata": {}})).unwrap();
        assert_eq!(
            r,
            RunRequest {
                message: "x".into(),
                instructions: Some("be brief".into()),
                session_id: Some("s-1".into()),
                model: Some("m".into()),
            }
        );
        let r = run_request(&json!({"input": "x", "instructions": null})).unwrap();
        assert_eq!((r.instructions, r.session_id, r.model), (None, None, None));
    }
}
