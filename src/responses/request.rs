//! A `POST /v1/responses` body, checked (pure): the input items (by `agent::input`), the
//! chain it continues, what is kept with it, and the `Idempotency-Key` fingerprint.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value, json};

use super::ResponsesError;
use crate::agent::Message;
use crate::agent::input::InputError;

/// Most `metadata` entries a response carries (OpenAI's limits).
pub const MAX_METADATA_ENTRIES: usize = 16;
/// Longest `metadata` key, in characters.
pub const MAX_METADATA_KEY_CHARS: usize = 64;
/// Longest `metadata` value, in characters.
pub const MAX_METADATA_VALUE_CHARS: usize = 512;
/// Longest conversation name, in characters.
pub const MAX_CONVERSATION_CHARS: usize = 256;

/// What a new response continues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Previous {
    /// The chain ending at this response (`previous_response_id`).
    Response(String),
    /// The named conversation's latest response, if it has one yet (`conversation`).
    Conversation(String),
}

/// A checked `POST /v1/responses` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// This turn's input, oldest first; it holds a user message.
    pub input: Vec<Message>,
    /// The ephemeral system prompt (absent: the previous response's, if any).
    pub instructions: Option<String>,
    pub previous: Option<Previous>,
    /// The model asked for (absent or empty: the served one).
    pub model: Option<String>,
    /// Keep the response (default true): `false` answers it without storing it.
    pub store: bool,
    pub stream: bool,
    pub metadata: BTreeMap<String, String>,
    /// What `Idempotency-Key` compares: the input, instructions, previous response,
    /// conversation, model and tools as sent.
    pub fingerprint: Vec<u8>,
}

/// The fields read (others are ignored).
#[derive(Deserialize)]
struct Body {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    input: Option<Value>,
    #[serde(default)]
    instructions: Option<String>,
    #[serde(default)]
    previous_response_id: Option<String>,
    #[serde(default)]
    conversation: Option<Value>,
    #[serde(default)]
    store: Option<bool>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
    /// Read only to be refused when it is not a list: the agents run their own tools.
    #[serde(default)]
    #[allow(dead_code)]
    tools: Option<Vec<Value>>,
}

impl Request {
    /// Checks a request body; the error names the field.
    pub fn parse(body: &[u8]) -> Result<Self, ResponsesError> {
        let raw: Value = serde_json::from_slice(body)
            .map_err(|e| ResponsesError::BadBody(format!("invalid request body: {e}")))?;
        if !raw.is_object() {
            return Err(ResponsesError::BadBody(
                "invalid request body: expected a JSON object".into(),
            ));
        }
        let b = Body::deserialize(&raw)
            .map_err(|e| ResponsesError::BadBody(format!("invalid request body: {e}")))?;
        let input =
            crate::agent::input::response_input(b.input.as_ref()).map_err(ResponsesError::Input)?;
        let conversation = conversation(b.conversation.as_ref())?;
        let previous = match (b.previous_response_id, conversation) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "conversation",
                    "Cannot use both 'conversation' and 'previous_response_id'",
                ));
            }
            (Some(id), None) => Some(Previous::Response(id)),
            (None, Some(name)) => Some(Previous::Conversation(name)),
            (None, None) => None,
        };
        let metadata = b.metadata.unwrap_or_default();
        check_metadata(&metadata)?;
        Ok(Self {
            input,
            instructions: b.instructions,
            previous,
            model: b.model.filter(|m| !m.is_empty()),
            store: b.store.unwrap_or(true),
            stream: b.stream.unwrap_or(false),
            metadata,
            fingerprint: fingerprint(&raw),
        })
    }
}

fn invalid(param: &str, message: impl Into<String>) -> ResponsesError {
    ResponsesError::Input(InputError {
        message: message.into(),
        param: param.into(),
        code: None,
    })
}

/// `conversation`: a name, or `{"id": name}` (the OpenAI SDKs' object form).
fn conversation(v: Option<&Value>) -> Result<Option<String>, ResponsesError> {
    let name = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(name)) => name,
        Some(Value::Object(o)) => match o.get("id") {
            Some(Value::String(name)) => name,
            _ => return Err(invalid("conversation", "conversation.id: must be a string")),
        },
        Some(_) => {
            return Err(invalid(
                "conversation",
                "conversation: must be a name or {\"id\": name}",
            ));
        }
    };
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_CONVERSATION_CHARS {
        return Err(invalid(
            "conversation",
            format!("conversation: a name of 1 to {MAX_CONVERSATION_CHARS} characters"),
        ));
    }
    Ok(Some(name.clone()))
}

fn check_metadata(metadata: &BTreeMap<String, String>) -> Result<(), ResponsesError> {
    if metadata.len() > MAX_METADATA_ENTRIES {
        return Err(invalid(
            "metadata",
            format!("metadata: at most {MAX_METADATA_ENTRIES} entries"),
        ));
    }
    for (k, v) in metadata {
        if k.chars().count() > MAX_METADATA_KEY_CHARS {
            return Err(invalid(
                "metadata",
                format!("metadata: keys of at most {MAX_METADATA_KEY_CHARS} characters"),
            ));
        }
        if v.chars().count() > MAX_METADATA_VALUE_CHARS {
            return Err(invalid(
                "metadata",
                format!("metadata.{k}: at most {MAX_METADATA_VALUE_CHARS} characters"),
            ));
        }
    }
    Ok(())
}

/// The fields `Idempotency-Key` compares, as sent (SPEC §11): a retry resends the same
/// body, so the same text.
fn fingerprint(raw: &Value) -> Vec<u8> {
    let field = |k: &str| raw.get(k).cloned().unwrap_or(Value::Null);
    json!([
        field("input"),
        field("instructions"),
        field("previous_response_id"),
        field("conversation"),
        field("model"),
        field("tools"),
    ])
    .to_string()
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<Request, ResponsesError> {
        Request::parse(body.as_bytes())
    }

    /// `(body, fragment, param)` of each refusal: the framing, the fields' types, the
    /// chain, the metadata bounds (the input items are `agent::input`'s table).
    #[test]
    fn refusals_name_the_field() {
        let long_key = "k".repeat(MAX_METADATA_KEY_CHARS + 1);
        let long_value = "v".repeat(MAX_METADATA_VALUE_CHARS + 1);
        let many: BTreeMap<String, String> = (0..=MAX_METADATA_ENTRIES)
            .map(|i| (i.to_string(), "x".into()))
            .collect();
        let long_name = "n".repeat(MAX_CONVERSATION_CHARS + 1);
        let table: Vec<(String, &str, Option<&str>)> = vec![
            ("".into(), "invalid request body", None),
            ("[]".into(), "invalid request body", None),
            (
                r#"{"input": "a", "stream": "yes"}"#.into(),
                "invalid request body",
                None,
            ),
            (
                r#"{"input": "a", "model": 5}"#.into(),
                "invalid request body",
                None,
            ),
            (
                r#"{"input": "a", "tools": {}}"#.into(),
                "invalid request body",
                None,
            ),
            (
                r#"{"input": "a", "metadata": {"k": 1}}"#.into(),
                "invalid request body",
                None,
            ),
            ("{}".into(), "input: must be", Some("input")),
            (
                r#"{"input": "a", "previous_response_id": "resp_1", "conversation": "c"}"#.into(),
                "Cannot use both",
                Some("conversation"),
            ),
            (
                r#"{"input": "a", "conversation": 3}"#.into(),
                "a name or",
                Some("conversation"),
            ),
            (
                r#"{"input": "a", "conversation": {"id": 3}}"#.into(),
                "conversation.id",
                Some("conversation"),
            ),
            (
                r#"{"input": "a", "conversation": ""}"#.into(),
                "1 to 256",
                Some("conversation"),
            ),
            (
                json!({"input": "a", "conversation": long_name}).to_string(),
                "1 to 256",
                Some("conversation"),
            ),
            (
                json!({"input": "a", "metadata": many}).to_string(),
                "at most 16",
                Some("metadata"),
            ),
            (
                json!({"input": "a", "metadata": {long_key: "v"}}).to_string(),
                "keys of at most 64",
                Some("metadata"),
            ),
            (
                json!({"input": "a", "metadata": {"k": long_value}}).to_string(),
                "metadata.k",
                Some("metadata"),
            ),
        ];
        for (body, fragment, param) in table {
            let (message, got) = match parse(&body) {
                Err(ResponsesError::BadBody(m)) => (m, None),
                Err(ResponsesError::Input(e)) => (e.message, Some(e.param)),
                other => panic!("{body}: {other:?}"),
            };
            assert!(message.contains(fragment), "{body}: {message}");
            assert_eq!(got.as_deref(), param, "{body}");
        }
    }

    #[test]
    fn defaults_and_the_chain_are_read() {
        let r = parse(r#"{"input": "hi"}"#).unwrap();
        assert_eq!(
            (r.store, r.stream, r.previous, r.model, r.instructions),
            (true, false, None, None, None)
        );
        let r = parse(
            r#"{"input": "hi", "model": "", "store": false, "stream": true, "instructions": "be brief",
                "previous_response_id": "resp_x", "metadata": {"k": "v"}, "tools": [], "temperature": 1}"#,
        )
        .unwrap();
        assert_eq!(r.previous, Some(Previous::Response("resp_x".into())));
        assert_eq!((r.store, r.stream, r.model), (false, true, None));
        assert_eq!(r.instructions.as_deref(), Some("be brief"));
        assert_eq!(r.metadata.get("k").map(String::as_str), Some("v"));
        for conversation in [r#""chat-1""#, r#"{"id": "chat-1"}"#] {
            let r = parse(&format!(
                r#"{{"input": "hi", "conversation": {conversation}, "previous_response_id": null}}"#
            ))
            .unwrap();
            assert_eq!(r.previous, Some(Previous::Conversation("chat-1".into())));
        }
    }

    #[test]
    fn the_fingerprint_covers_the_compared_fields_only() {
        let fp = |body: &str| parse(body).unwrap().fingerprint;
        let base = fp(r#"{"input": "hi", "model": "m"}"#);
        assert_eq!(
            base,
            fp(r#"{"input": "hi", "model": "m", "metadata": {"a": "b"}, "stream": false}"#)
        );
        for other in [
            r#"{"input": "ho", "model": "m"}"#,
            r#"{"input": "hi", "model": "n"}"#,
            r#"{"input": "hi", "model": "m", "instructions": "x"}"#,
            r#"{"input": "hi", "model": "m", "previous_response_id": "resp_1"}"#,
            r#"{"input": "hi", "model": "m", "conversation": "c"}"#,
            r#"{"input": "hi", "model": "m", "tools": [{"type": "function"}]}"#,
        ] {
            assert_ne!(base, fp(other), "{other}");
        }
    }
}
