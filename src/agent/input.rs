//! What a chat turn may be asked (SPEC §4 "Request validation", compat): the OpenAI
//! `messages` list, checked once here for every turn source that takes one (the chat
//! completions API; the WebSocket chat can reuse it), and the Responses API's `input`
//! items (SPEC §11), whose messages pass the same content rules.
//!
//! Pure: JSON in, backend [`Message`]s or an [`InputError`] out. It knows nothing about
//! HTTP; the caller maps the error to its wire shape (the API server's OpenAI error with
//! `param` and `code`).

use serde_json::Value;

use super::Message;

/// Largest text part accepted, in bytes (64 KiB).
pub const MAX_TEXT_PART_BYTES: usize = 64 * 1024;
/// Most content parts one message may carry.
pub const MAX_PARTS: usize = 1_000;
/// Message roles a turn may carry.
pub const ROLES: [&str; 5] = ["system", "user", "assistant", "tool", "developer"];

/// Why a `messages` list was refused: the problem, where it is, and the compat code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    pub message: String,
    /// What the problem concerns, e.g. `messages[2].content`.
    pub param: String,
    /// `unsupported_content_type`, `invalid_image_url`, `invalid_content_part`, or none.
    pub code: Option<&'static str>,
}

impl InputError {
    fn new(param: impl Into<String>, code: Option<&'static str>, message: String) -> Self {
        Self {
            message,
            param: param.into(),
            code,
        }
    }
}

const UNSUPPORTED: Option<&str> = Some("unsupported_content_type");
const BAD_IMAGE_URL: Option<&str> = Some("invalid_image_url");
const BAD_PART: Option<&str> = Some("invalid_content_part");

/// Checks a chat request's `messages` (absent = `None`) and flattens each message to the
/// text backends see: text parts joined by newlines; image parts are checked but carry no
/// text.
pub fn chat_messages(messages: Option<&Value>) -> Result<Vec<Message>, InputError> {
    let list = match messages {
        Some(Value::Array(list)) if !list.is_empty() => list,
        _ => {
            return Err(InputError::new(
                "messages",
                None,
                "messages: must be a non-empty list of messages".into(),
            ));
        }
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let place = format!("messages[{i}]");
        let Value::Object(m) = m else {
            return Err(InputError::new(
                place.clone(),
                None,
                format!("{place}: must be an object with a role and a content"),
            ));
        };
        let role = role(&place, m.get("role"), None)?;
        let content = content_text(&place, m.get("content"))?;
        out.push(Message { role, content });
    }
    if !out.iter().any(|m| m.role == "user") {
        return Err(InputError::new(
            "messages",
            None,
            "No user message found in messages".into(),
        ));
    }
    Ok(out)
}

/// A message's `role` at `place` (`messages[2]`); `default` is what an absent role means
/// (none: it is required).
fn role(place: &str, role: Option<&Value>, default: Option<&str>) -> Result<String, InputError> {
    match (role, default) {
        (Some(Value::String(r)), _) if ROLES.contains(&r.as_str()) => Ok(r.clone()),
        (Some(Value::String(r)), _) => Err(InputError::new(
            format!("{place}.role"),
            None,
            format!(
                "{place}.role: unknown role {r:?} (expected one of {})",
                ROLES.join(", ")
            ),
        )),
        (None, Some(d)) => Ok(d.to_owned()),
        _ => Err(InputError::new(
            format!("{place}.role"),
            None,
            format!("{place}.role: required (one of {})", ROLES.join(", ")),
        )),
    }
}

/// Checks a Responses API `input` (SPEC §11; absent = `None`): a string (one user
/// message) or a non-empty list of items, each a plain string (a user message) or a
/// message — `type` absent or `message`, a `role` (absent = `user`) and a `content`
/// checked as a chat message's is. Other item types (function calls and their outputs,
/// reasoning) are refused: this gateway's agents run their own tools. The input must
/// hold a user message.
pub fn response_input(input: Option<&Value>) -> Result<Vec<Message>, InputError> {
    let items = match input {
        Some(Value::String(text)) => {
            return Ok(vec![Message {
                role: "user".into(),
                content: text.clone(),
            }]);
        }
        Some(Value::Array(items)) if !items.is_empty() => items,
        _ => {
            return Err(InputError::new(
                "input",
                None,
                "input: must be a string or a non-empty list of input items".into(),
            ));
        }
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let place = format!("input[{i}]");
        out.push(match item {
            Value::String(text) => Message {
                role: "user".into(),
                content: text.clone(),
            },
            Value::Object(m) => input_message(&place, m)?,
            _ => {
                return Err(InputError::new(
                    place.clone(),
                    None,
                    format!("{place}: must be a string or a message object"),
                ));
            }
        });
    }
    if !out.iter().any(|m| m.role == "user") {
        return Err(InputError::new(
            "input",
            None,
            "No user message found in input".into(),
        ));
    }
    Ok(out)
}

/// One message item of a Responses `input`.
fn input_message(place: &str, m: &serde_json::Map<String, Value>) -> Result<Message, InputError> {
    match m.get("type") {
        None => {}
        Some(Value::String(t)) if t == "message" => {}
        Some(Value::String(t)) => {
            return Err(InputError::new(
                format!("{place}.type"),
                UNSUPPORTED,
                format!(
                    "{place}.type: input items of type {t:?} are not supported (send messages)"
                ),
            ));
        }
        Some(_) => {
            return Err(InputError::new(
                format!("{place}.type"),
                None,
                format!("{place}.type: must be the string \"message\""),
            ));
        }
    }
    Ok(Message {
        role: role(place, m.get("role"), Some("user"))?,
        content: content_text(place, m.get("content"))?,
    })
}

/// What is wrong with one content part: its compat code and the problem, which the caller
/// prefixes with the part's place.
type PartError = (Option<&'static str>, String);

/// The `content` of the message at `place` (`messages[2]`): a string, or a list of at
/// most [`MAX_PARTS`] parts.
fn content_text(place: &str, content: Option<&Value>) -> Result<String, InputError> {
    let param = || format!("{place}.content");
    let parts = match content {
        Some(Value::String(s)) => return Ok(s.clone()),
        Some(Value::Array(parts)) => parts,
        None | Some(Value::Null) => {
            return Err(InputError::new(
                param(),
                None,
                format!("{place}.content: required (a string or a list of content parts)"),
            ));
        }
        Some(_) => {
            return Err(InputError::new(
                param(),
                BAD_PART,
                format!("{place}.content: must be a string or a list of content parts"),
            ));
        }
    };
    if parts.len() > MAX_PARTS {
        return Err(InputError::new(
            param(),
            BAD_PART,
            format!(
                "{place}.content: {} content parts (at most {MAX_PARTS})",
                parts.len()
            ),
        ));
    }
    let mut texts = Vec::new();
    for (j, part) in parts.iter().enumerate() {
        let text = part_text(part).map_err(|(code, what)| {
            InputError::new(param(), code, format!("{place}.content[{j}]: {what}"))
        })?;
        if let Some(t) = text.filter(|t| !t.is_empty()) {
            texts.push(t);
        }
    }
    Ok(texts.join("\n"))
}

/// One content part's text, at most [`MAX_TEXT_PART_BYTES`]; `None` for an image part,
/// which is checked but carries no text.
fn part_text(part: &Value) -> Result<Option<&str>, PartError> {
    let text = match part {
        // A bare string is a text part (some clients send them).
        Value::String(s) => s,
        Value::Object(p) => match typed_part_text(p)? {
            Some(t) => t,
            None => return Ok(None),
        },
        _ => {
            return Err((
                BAD_PART,
                "a content part must be an object with a `type`".into(),
            ));
        }
    };
    if text.len() > MAX_TEXT_PART_BYTES {
        return Err((
            BAD_PART,
            format!(
                "text part of {} bytes (at most {MAX_TEXT_PART_BYTES})",
                text.len()
            ),
        ));
    }
    Ok(Some(text))
}

/// A part object by its `type`: a text part's `text`, `None` for a valid image part, and
/// files or unknown types refused.
fn typed_part_text(p: &serde_json::Map<String, Value>) -> Result<Option<&String>, PartError> {
    match p.get("type").and_then(Value::as_str) {
        Some("text" | "input_text" | "output_text") => match p.get("text") {
            Some(Value::String(t)) => Ok(Some(t)),
            _ => Err((BAD_PART, "a text part needs a string `text`".into())),
        },
        Some(kind @ ("image_url" | "input_image")) => {
            check_image(p).map_err(|(code, what)| (code, format!("{kind}: {what}")))?;
            Ok(None)
        }
        Some(kind @ ("file" | "input_file")) => Err((
            UNSUPPORTED,
            format!("{kind} parts are not supported; send text or images"),
        )),
        Some(other) => Err((
            UNSUPPORTED,
            format!(
                "unsupported content part type {other:?} (expected text, \
                 input_text, output_text, image_url or input_image)"
            ),
        )),
        None => Err((BAD_PART, "a content part needs a string `type`".into())),
    }
}

/// An image part's URL (`image_url` as a string, or `{url, detail}` as Chat Completions
/// sends it): http(s), or a `data:image/...` URL with a payload.
fn check_image(p: &serde_json::Map<String, Value>) -> Result<(), PartError> {
    let (url, detail) = match p.get("image_url") {
        Some(Value::Object(o)) => (o.get("url"), o.get("detail").or(p.get("detail"))),
        other => (other, p.get("detail")),
    };
    let Some(url) = url
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|u| !u.is_empty())
    else {
        return Err((BAD_IMAGE_URL, "needs a non-empty image URL".into()));
    };
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("data:") {
        if !lower.starts_with("data:image/") || !url.contains(',') {
            return Err((
                UNSUPPORTED,
                "only image data URLs (data:image/...) are supported".into(),
            ));
        }
    } else if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        return Err((
            BAD_IMAGE_URL,
            "the URL must be http(s) or a data:image/... URL".into(),
        ));
    }
    match detail {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(d)) if !d.trim().is_empty() => Ok(()),
        Some(_) => Err((BAD_PART, "`detail` must be a non-empty string".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `Ok(texts)` = the messages' flattened contents; `Err((param, code, fragment))`.
    type Expected<'a> = Result<&'a [&'a str], (&'a str, Option<&'a str>, &'a str)>;

    fn check(messages: Value, expected: Expected) {
        let got = chat_messages(Some(&messages));
        match (got, expected) {
            (Ok(ms), Ok(texts)) => {
                let got: Vec<&str> = ms.iter().map(|m| m.content.as_str()).collect();
                assert_eq!(got, texts, "{messages}");
            }
            (Err(e), Err((param, code, fragment))) => {
                assert_eq!(
                    (e.param.as_str(), e.code),
                    (param, code),
                    "{messages}: {e:?}"
                );
                assert!(e.message.contains(fragment), "{messages}: {}", e.message);
            }
            (got, expected) => panic!("{messages}: got {got:?}, expected {expected:?}"),
        }
    }

    fn user(content: Value) -> Value {
        json!([{"role": "user", "content": content}])
    }

    #[test]
    fn the_compat_rules_table() {
        let big = "x".repeat(MAX_TEXT_PART_BYTES + 1);
        let exact = "y".repeat(MAX_TEXT_PART_BYTES);
        let many: Vec<Value> = (0..=MAX_PARTS)
            .map(|_| json!({"type": "text", "text": "a"}))
            .collect();
        let most: Vec<Value> = (0..MAX_PARTS).map(|_| json!("a")).collect();
        let c0 = "messages[0].content";
        let exact_texts = [exact.as_str()];
        let joined = ["a"; MAX_PARTS].join("\n");
        let most_texts = [joined.as_str()];
        let (unsupported, bad_url, bad_part) = (UNSUPPORTED, BAD_IMAGE_URL, BAD_PART);
        let table: Vec<(Value, Expected)> = vec![
            // Accepted shapes.
            (user(json!("hi")), Ok(&["hi"])),
            (
                user(
                    json!([{"type": "text", "text": "a"}, {"type": "input_text", "text": "b"},
                            {"type": "output_text", "text": "c"}, "d"]),
                ),
                Ok(&["a\nb\nc\nd"]),
            ),
            (
                user(json!([{"type": "text", "text": "look"},
                            {"type": "image_url", "image_url": {"url": "https://x.example/a.png", "detail": "low"}},
                            {"type": "input_image", "image_url": "data:image/png;base64,AAAA"},
                            {"type": "image_url", "image_url": "HTTP://x.example/b.png"}])),
                Ok(&["look"]),
            ),
            (
                user(json!([{"type": "text", "text": exact}])),
                Ok(&exact_texts),
            ),
            (user(json!(most)), Ok(&most_texts)),
            (
                json!([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
                       {"role": "assistant", "content": ""}]),
                Ok(&["be brief", "hi", ""]),
            ),
            // The list itself.
            (json!([]), Err(("messages", None, "non-empty list"))),
            (json!("hi"), Err(("messages", None, "non-empty list"))),
            (
                json!(["hi"]),
                Err(("messages[0]", None, "must be an object")),
            ),
            (
                json!([{"content": "hi"}]),
                Err(("messages[0].role", None, "required")),
            ),
            (
                json!([{"role": "robot", "content": "hi"}]),
                Err(("messages[0].role", None, "unknown role")),
            ),
            (
                json!([{"role": "system", "content": "only rules"}]),
                Err(("messages", None, "No user message found in messages")),
            ),
            // Content.
            (json!([{"role": "user"}]), Err((c0, None, "required"))),
            (
                json!([{"role": "user", "content": null}]),
                Err((c0, None, "required")),
            ),
            (
                json!([{"role": "system", "content": "s"}, {"role": "user", "content": 5}]),
                Err((
                    "messages[1].content",
                    bad_part,
                    "must be a string or a list",
                )),
            ),
            (
                user(json!([{"type": "file", "file": {"file_id": "f"}}])),
                Err((c0, unsupported, "file parts")),
            ),
            (
                user(json!([{"type": "input_file", "file_id": "f"}])),
                Err((c0, unsupported, "input_file parts")),
            ),
            (
                user(json!([{"type": "audio", "x": 1}])),
                Err((c0, unsupported, "\"audio\"")),
            ),
            (
                user(json!([{"text": "no type"}])),
                Err((c0, bad_part, "`type`")),
            ),
            (user(json!([7])), Err((c0, bad_part, "must be an object"))),
            (
                user(json!([{"type": "text"}])),
                Err((c0, bad_part, "string `text`")),
            ),
            (
                user(json!([{"type": "text", "text": 3}])),
                Err((c0, bad_part, "string `text`")),
            ),
            (
                user(json!([{"type": "text", "text": big}])),
                Err((c0, bad_part, "at most 65536")),
            ),
            (user(json!(many)), Err((c0, bad_part, "at most 1000"))),
            // Images.
            (
                user(
                    json!([{"type": "image_url", "image_url": {"url": "data:text/plain;base64,aGk="}}]),
                ),
                Err((c0, unsupported, "data:image")),
            ),
            (
                user(json!([{"type": "image_url", "image_url": {"url": "data:image/png;base64"}}])),
                Err((c0, unsupported, "data:image")),
            ),
            (
                user(json!([{"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}])),
                Err((c0, bad_url, "http(s)")),
            ),
            (
                user(json!([{"type": "input_image", "image_url": "ftp://x/a.png"}])),
                Err((c0, bad_url, "http(s)")),
            ),
            (
                user(json!([{"type": "image_url", "image_url": {}}])),
                Err((c0, bad_url, "non-empty image URL")),
            ),
            (
                user(json!([{"type": "input_image"}])),
                Err((c0, bad_url, "non-empty image URL")),
            ),
            (
                user(
                    json!([{"type": "image_url", "image_url": {"url": "https://x/a.png", "detail": 1}}]),
                ),
                Err((c0, bad_part, "detail")),
            ),
        ];
        for (messages, expected) in table {
            check(messages, expected);
        }
        assert_eq!(
            chat_messages(None).unwrap_err().param,
            "messages",
            "a body without messages"
        );
    }

    /// The Responses `input` rules: `Ok((role, text) pairs)` or `Err((param, code, fragment))`.
    #[test]
    fn the_responses_input_table() {
        type Expect<'a> = Result<&'a [(&'a str, &'a str)], (&'a str, Option<&'a str>, &'a str)>;
        let table: Vec<(Option<Value>, Expect)> = vec![
            (Some(json!("hi")), Ok(&[("user", "hi")])),
            (Some(json!("")), Ok(&[("user", "")])),
            (
                Some(json!(["a", {"role": "assistant", "content": "b"}, {"content": "c"}])),
                Ok(&[("user", "a"), ("assistant", "b"), ("user", "c")]),
            ),
            (
                Some(
                    json!([{"type": "message", "role": "developer", "content": "rules"},
                            {"type": "message", "role": "user", "content": [
                                {"type": "input_text", "text": "x"},
                                {"type": "input_image", "image_url": "https://x.example/a.png"}]},
                            {"id": "msg_1", "type": "message", "role": "assistant", "status": "completed",
                             "content": [{"type": "output_text", "text": "y", "annotations": []}]}]),
                ),
                Ok(&[("developer", "rules"), ("user", "x"), ("assistant", "y")]),
            ),
            (
                None,
                Err(("input", None, "must be a string or a non-empty list")),
            ),
            (Some(json!(null)), Err(("input", None, "non-empty list"))),
            (Some(json!([])), Err(("input", None, "non-empty list"))),
            (Some(json!(5)), Err(("input", None, "non-empty list"))),
            (
                Some(json!([7])),
                Err(("input[0]", None, "must be a string or a message")),
            ),
            (
                Some(json!([{"role": "assistant", "content": "only me"}])),
                Err(("input", None, "No user message found in input")),
            ),
            (
                Some(json!(["a", {"type": "function_call_output", "call_id": "c", "output": "o"}])),
                Err(("input[1].type", UNSUPPORTED, "\"function_call_output\"")),
            ),
            (
                Some(json!([{"type": 1, "content": "a"}])),
                Err(("input[0].type", None, "must be the string")),
            ),
            (
                Some(json!([{"role": "robot", "content": "a"}])),
                Err(("input[0].role", None, "unknown role")),
            ),
            (
                Some(json!([{"role": null, "content": "a"}])),
                Err(("input[0].role", None, "required")),
            ),
            (
                Some(json!([{"role": "user"}])),
                Err(("input[0].content", None, "required")),
            ),
            (
                Some(json!(["ok", {"content": [{"type": "input_file", "file_id": "f"}]}])),
                Err((
                    "input[1].content",
                    UNSUPPORTED,
                    "input[1].content[0]: input_file",
                )),
            ),
        ];
        for (input, expected) in table {
            let got = response_input(input.as_ref());
            match (got, expected) {
                (Ok(ms), Ok(pairs)) => {
                    let got: Vec<(&str, &str)> = ms
                        .iter()
                        .map(|m| (m.role.as_str(), m.content.as_str()))
                        .collect();
                    assert_eq!(got, pairs, "{input:?}");
                }
                (Err(e), Err((param, code, fragment))) => {
                    assert_eq!(
                        (e.param.as_str(), e.code),
                        (param, code),
                        "{input:?}: {e:?}"
                    );
                    assert!(e.message.contains(fragment), "{input:?}: {}", e.message);
                }
                (got, expected) => panic!("{input:?}: got {got:?}, expected {expected:?}"),
            }
        }
    }

    #[test]
    fn the_index_names_the_offending_message() {
        let e = chat_messages(Some(&json!([
            {"role": "user", "content": "fine"},
            {"role": "assistant", "content": "fine"},
            {"role": "user", "content": [{"type": "file"}]},
        ])))
        .unwrap_err();
        assert_eq!(e.param, "messages[2].content");
        assert!(
            e.message.starts_with("messages[2].content[0]:"),
            "{}",
            e.message
        );
    }
}
