//! The Responses API's wire (OpenAI's shapes, which the official SDKs parse): a
//! [`Record`] as a response object, and the server-sent events of a streamed one, each
//! `event: <type>` with its JSON and an increasing `sequence_number`.

use serde_json::{Value, json};

use crate::responses::{Record, Status};

/// The response object: once it ended, its one message holds the reply (what there is of
/// it: a stream announced the message before the end).
pub fn object(r: &Record) -> Value {
    let output: Vec<Value> = if r.status == Status::InProgress {
        Vec::new()
    } else {
        vec![message(r, item_status(r), vec![part(&r.text)])]
    };
    let usage = (r.status != Status::InProgress).then(|| {
        json!({
            "input_tokens": r.usage.input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": r.usage.output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": r.usage.input_tokens + r.usage.output_tokens,
        })
    });
    let error = match (&r.error, r.status) {
        (Some(message), Status::Failed) => json!({"code": "server_error", "message": message}),
        _ => Value::Null,
    };
    let incomplete = match r.status {
        Status::Incomplete => json!({"reason": "interrupted"}),
        _ => Value::Null,
    };
    json!({
        "id": r.id,
        "object": "response",
        "created_at": r.created_at,
        "status": r.status.as_str(),
        "model": r.model,
        "output": output,
        "usage": usage,
        "error": error,
        "incomplete_details": incomplete,
        "instructions": r.instructions,
        "previous_response_id": r.previous_response_id,
        "conversation": r.conversation.as_ref().map(|name| json!({"id": name})),
        "metadata": r.metadata,
        "store": r.store,
        // The agents run their own tools: a request's tools are not offered to them.
        "parallel_tool_calls": false,
        "tool_choice": "none",
        "tools": [],
        "text": {"format": {"type": "text"}},
        "truncation": "disabled",
    })
}

/// The output message's status: completed, or incomplete for a reply cut short.
fn item_status(r: &Record) -> &'static str {
    match r.status {
        Status::Completed => "completed",
        Status::InProgress => "in_progress",
        Status::Failed | Status::Incomplete => "incomplete",
    }
}

fn message(r: &Record, status: &str, content: Vec<Value>) -> Value {
    json!({
        "id": r.message_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": content,
    })
}

fn part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

/// The events of one streamed response, numbered in order.
#[derive(Debug, Default)]
pub struct Events {
    sequence: u64,
}

impl Events {
    fn event(&mut self, kind: &str, mut data: Value) -> String {
        data["type"] = Value::from(kind);
        data["sequence_number"] = Value::from(self.sequence);
        self.sequence += 1;
        format!("event: {kind}\ndata: {data}\n\n")
    }

    /// The response created and in progress, its message and text part opened.
    pub fn opening(&mut self, r: &Record) -> String {
        let mut out = self.event("response.created", json!({"response": object(r)}));
        out += &self.event("response.in_progress", json!({"response": object(r)}));
        out += &self.event(
            "response.output_item.added",
            json!({"output_index": 0, "item": message(r, "in_progress", Vec::new())}),
        );
        out += &self.event(
            "response.content_part.added",
            json!({"item_id": r.message_id, "output_index": 0, "content_index": 0, "part": part("")}),
        );
        out
    }

    /// A piece of the reply.
    pub fn delta(&mut self, r: &Record, text: &str) -> String {
        self.event(
            "response.output_text.delta",
            json!({"item_id": r.message_id, "output_index": 0, "content_index": 0,
                   "delta": text, "logprobs": []}),
        )
    }

    /// The text, part and message done, then the response's end: `response.completed`,
    /// `response.failed` or `response.incomplete`.
    pub fn closing(&mut self, r: &Record) -> String {
        let ids = json!({"item_id": r.message_id, "output_index": 0, "content_index": 0});
        let mut done = ids.clone();
        done["text"] = Value::from(r.text.as_str());
        done["logprobs"] = json!([]);
        let mut out = self.event("response.output_text.done", done);
        let mut part_done = ids;
        part_done["part"] = part(&r.text);
        out += &self.event("response.content_part.done", part_done);
        out += &self.event(
            "response.output_item.done",
            json!({"output_index": 0, "item": message(r, item_status(r), vec![part(&r.text)])}),
        );
        let end = match r.status {
            Status::Completed | Status::InProgress => "response.completed",
            Status::Failed => "response.failed",
            Status::Incomplete => "response.incomplete",
        };
        out += &self.event(end, json!({"response": object(r)}));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::responses::TokenUsage;

    fn record(status: Status, text: &str) -> Record {
        Record {
            id: "resp_1".into(),
            created_at: 7,
            status,
            model: "m".into(),
            message_id: "msg_1".into(),
            text: text.into(),
            usage: TokenUsage {
                input_tokens: 2,
                output_tokens: 1,
            },
            instructions: None,
            previous_response_id: Some("resp_0".into()),
            conversation: Some("chat".into()),
            metadata: Default::default(),
            store: true,
            error: (status == Status::Failed).then(|| "boom".into()),
        }
    }

    /// `(type, sequence_number)` of each event in `frames`.
    fn kinds(frames: &str) -> Vec<(String, u64)> {
        frames
            .split("\n\n")
            .filter(|f| !f.is_empty())
            .map(|f| {
                let (event, data) = f.split_once('\n').unwrap();
                let v: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
                assert_eq!(event.strip_prefix("event: "), v["type"].as_str(), "{f}");
                (
                    v["type"].as_str().unwrap().to_owned(),
                    v["sequence_number"].as_u64().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn a_stream_is_the_openai_event_sequence_numbered_in_order() {
        let mut events = Events::default();
        let mut all = events.opening(&record(Status::InProgress, ""));
        all += &events.delta(&record(Status::InProgress, "a"), "a");
        all += &events.closing(&record(Status::Completed, "a"));
        let got: Vec<(String, u64)> = kinds(&all);
        let expected = [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ];
        let want: Vec<(String, u64)> = expected
            .iter()
            .enumerate()
            .map(|(i, k)| ((*k).to_owned(), i as u64))
            .collect();
        assert_eq!(got, want);
        for (status, last) in [
            (Status::Failed, "response.failed"),
            (Status::Incomplete, "response.incomplete"),
        ] {
            let got = kinds(&Events::default().closing(&record(status, "par")));
            assert_eq!(got.last().unwrap().0, last);
        }
    }

    #[test]
    fn the_object_carries_the_reply_usage_and_chain() {
        let v = object(&record(Status::Completed, "hi there"));
        assert_eq!(v["status"], "completed");
        assert_eq!(
            v["output"][0]["content"][0],
            json!({"type": "output_text", "text": "hi there", "annotations": [], "logprobs": []})
        );
        assert_eq!(v["output"][0]["status"], "completed");
        assert_eq!(v["usage"]["total_tokens"], 3);
        assert_eq!(
            (&v["previous_response_id"], &v["conversation"]),
            (&json!("resp_0"), &json!({"id": "chat"}))
        );
        assert_eq!(v["error"], Value::Null);
        let failed = object(&record(Status::Failed, ""));
        assert_eq!(failed["output"][0]["status"], "incomplete");
        assert_eq!(
            failed["error"],
            json!({"code": "server_error", "message": "boom"})
        );
        let started = object(&record(Status::InProgress, ""));
        assert_eq!(
            (&started["output"], &started["usage"]),
            (&json!([]), &Value::Null)
        );
        assert_eq!(
            object(&record(Status::Incomplete, "x"))["incomplete_details"]["reason"],
            "interrupted"
        );
    }
}
