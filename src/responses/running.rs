//! A response whose turn is running: its deltas as they come, then its end — the record
//! completed, failed or incomplete, kept in the store when it asked to be.

use super::{Record, Responses, ResponsesError, Status, TokenUsage, history};
use crate::agent::Message;
use crate::turn::{End, Step, Turn};

/// What a message tells a client whose response was answered but could not be kept.
const NOT_STORED: &str = "the response could not be stored; retry later";
/// The error of a response whose turn the shutdown deadline cut.
const CUT: &str = "the turn was interrupted because the gateway is shutting down";

/// A running response; dropping it drops the turn (counted interrupted, nothing kept).
#[derive(Debug)]
pub struct Running {
    service: Responses,
    record: Record,
    turn: Turn,
    /// The chain's history and this input: what is kept with the reply.
    kept: Vec<Message>,
    session: String,
}

/// One step of a streamed response.
#[derive(Debug)]
pub enum Progress {
    /// A piece of the reply.
    Delta(String),
    /// The response ended (completed, failed or incomplete) and was kept if it asked to
    /// be; a response that could not be kept ends failed, saying so.
    End(Box<Record>),
}

impl Running {
    pub(super) fn new(
        service: Responses,
        record: Record,
        turn: Turn,
        kept: Vec<Message>,
        session: String,
    ) -> Self {
        Self {
            service,
            record,
            turn,
            kept,
            session,
        }
    }

    /// The response as it stands (in progress until the end).
    pub fn record(&self) -> &Record {
        &self.record
    }

    /// The next piece of the reply, or the response's end. A stream announced the
    /// response's id before its end, so every end is a record: a turn that failed or was
    /// cut is kept too, with what it produced. Call no more after the end.
    pub async fn next(&mut self) -> Progress {
        match self.turn.next().await {
            Step::Delta(text) => {
                self.record.text.push_str(&text);
                Progress::Delta(text)
            }
            Step::End(end) => {
                self.settle(end);
                if let Err(e) = self.keep().await {
                    tracing::error!(error = %e, id = %self.record.id, "cannot store a response");
                    self.record.status = Status::Failed;
                    self.record.error = Some(NOT_STORED.into());
                }
                Progress::End(Box::new(self.record.clone()))
            }
        }
    }

    /// Runs the turn to its end for an answer in one piece: a turn that failed before
    /// producing any text, or was cut by the shutdown, is an error and is not kept.
    pub async fn finish(mut self) -> Result<Record, ResponsesError> {
        let end = loop {
            match self.turn.next().await {
                Step::Delta(text) => self.record.text.push_str(&text),
                Step::End(end) => break end,
            }
        };
        match &end {
            End::Failed(message) if self.record.text.is_empty() => {
                return Err(ResponsesError::Failed(message.clone()));
            }
            End::Interrupted(_) => return Err(ResponsesError::Interrupted),
            _ => {}
        }
        self.settle(end);
        self.keep().await?;
        Ok(self.record)
    }

    /// Records how the turn ended and what it used.
    fn settle(&mut self, end: End) {
        let (status, error) = match end {
            End::Completed => (Status::Completed, None),
            End::Failed(message) => (Status::Failed, Some(message)),
            End::Interrupted(_) => (Status::Incomplete, Some(CUT.to_owned())),
        };
        self.record.status = status;
        self.record.error = error;
        self.record.usage = match self.turn.usage() {
            Some(u) => TokenUsage {
                input_tokens: u.prompt_tokens,
                output_tokens: u.completion_tokens,
            },
            None => TokenUsage {
                input_tokens: self.record.usage.input_tokens,
                output_tokens: history::count_tokens(&self.record.text),
            },
        };
    }

    /// Keeps the ended response, when it asked to be kept.
    async fn keep(&mut self) -> Result<(), crate::store::StoreError> {
        if !self.record.store {
            return Ok(());
        }
        let history = history::kept(std::mem::take(&mut self.kept), &self.record.text);
        self.service
            .keep(&self.record, &history, &self.session)
            .await
    }
}
