//! The history of a chain of responses (pure): what a turn's backend sees — the
//! instructions as the system message, the chain's turns in order, this input — and what
//! the response keeps for the next one (never the instructions: they are ephemeral, kept
//! beside the history and carried forward only when a request gives none).

use serde_json::{Value, json};

use crate::agent::Message;

/// The messages a turn runs on.
pub fn turn_messages(
    instructions: Option<&str>,
    prior: &[Message],
    input: &[Message],
) -> Vec<Message> {
    let system = instructions.filter(|i| !i.is_empty()).map(|i| Message {
        role: "system".into(),
        content: i.to_owned(),
    });
    system
        .into_iter()
        .chain(prior.iter().cloned())
        .chain(input.iter().cloned())
        .collect()
}

/// The conversation through a response: the chain's history, this input and the reply
/// (left out when the turn produced no text).
pub fn kept(mut history: Vec<Message>, reply: &str) -> Vec<Message> {
    if !reply.is_empty() {
        history.push(Message {
            role: "assistant".into(),
            content: reply.to_owned(),
        });
    }
    history
}

/// The history as stored: a JSON list of `{role, content}`.
pub fn encode(history: &[Message]) -> String {
    Value::Array(
        history
            .iter()
            .map(|m| json!({"role": m.role, "content": m.content}))
            .collect(),
    )
    .to_string()
}

/// A stored history back; an error says what is wrong with the text.
pub fn decode(text: &str) -> Result<Vec<Message>, String> {
    let list: Vec<Value> = serde_json::from_str(text).map_err(|e| e.to_string())?;
    list.into_iter()
        .map(|m| match (m.get("role"), m.get("content")) {
            (Some(Value::String(role)), Some(Value::String(content))) => Ok(Message {
                role: role.clone(),
                content: content.clone(),
            }),
            _ => Err(format!("not a {{role, content}} message: {m}")),
        })
        .collect()
}

/// A rough token count when the backend reports none (whitespace-separated words).
pub fn count_tokens(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(role: &str, content: &str) -> Message {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }

    #[test]
    fn a_turn_sees_the_instructions_first_then_the_chain_then_its_input() {
        let prior = [m("user", "one"), m("assistant", "1")];
        let input = [m("user", "two")];
        let check = |instructions, expected: &[Message]| {
            assert_eq!(
                turn_messages(instructions, &prior, &input),
                expected,
                "{instructions:?}"
            );
        };
        check(
            Some("be brief"),
            &[
                m("system", "be brief"),
                m("user", "one"),
                m("assistant", "1"),
                m("user", "two"),
            ],
        );
        check(
            None,
            &[m("user", "one"), m("assistant", "1"), m("user", "two")],
        );
        check(
            Some(""),
            &[m("user", "one"), m("assistant", "1"), m("user", "two")],
        );
    }

    #[test]
    fn the_kept_history_has_the_reply_and_never_the_instructions() {
        let history = vec![m("user", "one")];
        assert_eq!(
            kept(history.clone(), "1"),
            [m("user", "one"), m("assistant", "1")]
        );
        assert_eq!(kept(history, ""), [m("user", "one")]);
    }

    #[test]
    fn histories_round_trip_and_bad_text_is_named() {
        let h = vec![m("user", "a \"quoted\"\nline"), m("assistant", "ünï")];
        assert_eq!(decode(&encode(&h)).unwrap(), h);
        assert_eq!(decode("[]").unwrap(), Vec::<Message>::new());
        for bad in ["", "{}", "[1]", r#"[{"role": "user"}]"#] {
            assert!(decode(bad).is_err(), "{bad}");
        }
    }
}
