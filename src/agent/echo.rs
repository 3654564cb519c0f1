//! The `echo` demo backend: streams the last user message back, word by word.
//!
//! `delay_ms` is the whole turn's duration, spread evenly between the chunks, so drain and
//! disconnect behaviour can be exercised with turns that are really in flight.

use std::time::Duration;

use futures_util::stream;

use super::{TurnEvent, TurnRequest, TurnStream};

/// Echoes the last user message.
#[derive(Debug, Clone)]
pub struct EchoBackend {
    delay: Duration,
}

impl EchoBackend {
    pub fn new(delay_ms: u64) -> Self {
        Self {
            delay: Duration::from_millis(delay_ms),
        }
    }

    /// The reply text for a request.
    pub fn reply(request: &TurnRequest) -> String {
        request
            .messages
            .iter()
            .rev()
            .find(|m| m.role == "user")
            .map(|m| m.content.clone())
            .unwrap_or_default()
    }

    pub fn start(&self, request: TurnRequest) -> TurnStream {
        let reply = Self::reply(&request);
        let mut chunks: Vec<String> = reply.split_inclusive(' ').map(str::to_owned).collect();
        if chunks.is_empty() {
            chunks.push(String::new());
        }
        let pause = self.delay / u32::try_from(chunks.len()).unwrap_or(u32::MAX);
        let events = chunks
            .into_iter()
            .map(TurnEvent::Delta)
            .chain(std::iter::once(TurnEvent::Done));
        Box::pin(stream::unfold(events, move |mut events| async move {
            let event = events.next()?;
            if matches!(event, TurnEvent::Delta(_)) && !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            Some((event, events))
        }))
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;
    use crate::agent::Message;

    fn request(text: &str) -> TurnRequest {
        TurnRequest {
            messages: vec![
                Message {
                    role: "user".into(),
                    content: "first".into(),
                },
                Message {
                    role: "assistant".into(),
                    content: "x".into(),
                },
                Message {
                    role: "user".into(),
                    content: text.into(),
                },
            ],
            model: "m".into(),
            session_id: "s".into(),
            turn_id: "t".into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn streams_the_last_user_message_over_the_delay() {
        let start = tokio::time::Instant::now();
        let events: Vec<_> = EchoBackend::new(900)
            .start(request("one two three"))
            .collect()
            .await;
        assert_eq!(
            events,
            vec![
                TurnEvent::Delta("one ".into()),
                TurnEvent::Delta("two ".into()),
                TurnEvent::Delta("three".into()),
                TurnEvent::Done
            ]
        );
        assert_eq!(start.elapsed(), Duration::from_millis(900));
    }

    #[tokio::test]
    async fn empty_message_completes_with_empty_text() {
        let events: Vec<_> = EchoBackend::new(0).start(request("")).collect().await;
        assert_eq!(
            events,
            vec![TurnEvent::Delta(String::new()), TurnEvent::Done]
        );
    }
}
