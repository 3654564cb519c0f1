//! The `command` backend: one subprocess per turn, speaking the protocol of SPEC §3.
//!
//! Standard input gets one JSON object (messages, session id, model, turn id) and is then
//! closed; whatever the process writes to stdout is the reply, streamed as it arrives.
//! Exit 0 completes the turn; a non-zero exit, a signal or the timeout fails it, and the
//! text already streamed stays with the client, marked incomplete by the caller.
//!
//! The process runs in its own process group. Dropping the turn stream (a client that went
//! away, a shutdown past its deadline) kills the whole group, so helpers the agent spawned
//! die with it. This module must not know HTTP or the gate.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use super::{TurnEvent, TurnRequest, TurnStream, channel_stream};
use crate::config::CommandConfig;

/// Most reply bytes one turn may produce; beyond it the agent is killed and the turn fails,
/// so a runaway process cannot exhaust the gateway's memory.
pub const MAX_OUTPUT_BYTES: usize = 16 * 1024 * 1024;

/// How much of the agent's stderr is kept for the log when it fails.
const STDERR_TAIL_BYTES: usize = 2048;

/// Runs `argv` once per turn.
#[derive(Debug, Clone)]
pub struct CommandBackend {
    argv: Vec<String>,
    timeout: Duration,
    workdir: Option<PathBuf>,
}

impl CommandBackend {
    pub fn new(config: &CommandConfig) -> Self {
        Self {
            argv: config.argv.clone(),
            timeout: Duration::from_secs(config.timeout_seconds),
            workdir: config.workdir.clone(),
        }
    }

    /// Starts the process and streams its stdout; the process group dies with the stream.
    pub fn start(&self, request: TurnRequest) -> TurnStream {
        let (tx, rx) = mpsc::channel(16);
        let backend = self.clone();
        tokio::spawn(async move {
            let event = backend.run(request, &tx).await;
            let _ = tx.send(event).await;
        });
        channel_stream(rx)
    }

    /// Runs one turn to its final event, sending deltas on the way.
    async fn run(&self, request: TurnRequest, tx: &mpsc::Sender<TurnEvent>) -> TurnEvent {
        let mut cmd = Command::new(&self.argv[0]);
        cmd.args(&self.argv[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(dir) = &self.workdir {
            cmd.current_dir(dir);
        }
        let mut child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => {
                tracing::error!(program = %self.argv[0], error = %e, "cannot start the agent command");
                return TurnEvent::Failed(format!(
                    "the agent command could not be started: {}",
                    e.kind()
                ));
            }
        };
        let group = GroupKill(child.id());
        let input = json!({
            "messages": request.messages.iter().map(|m| json!({"role": m.role, "content": m.content})).collect::<Vec<_>>(),
            "session_id": request.session_id,
            "model": request.model,
            "turn_id": request.turn_id,
        });
        // Written from its own task: an agent that never reads stdin must not block us.
        if let Some(mut stdin) = child.stdin.take() {
            let mut bytes = input.to_string().into_bytes();
            bytes.push(b'\n');
            tokio::spawn(async move {
                let _ = stdin.write_all(&bytes).await;
            });
        }
        let stderr = child.stderr.take().map(|mut err| {
            tokio::spawn(async move {
                let mut tail = Vec::new();
                let mut buf = [0u8; 4096];
                while let Ok(n) = err.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    tail.extend_from_slice(&buf[..n]);
                    if tail.len() > STDERR_TAIL_BYTES {
                        tail.drain(..tail.len() - STDERR_TAIL_BYTES);
                    }
                }
                String::from_utf8_lossy(&tail).into_owned()
            })
        });

        let outcome = tokio::select! {
            outcome = self.pump(&mut child, tx) => outcome,
            () = tokio::time::sleep(self.timeout) => Outcome::TimedOut,
            () = tx.closed() => Outcome::Cancelled,
        };
        // Whatever happened, nothing of the group may outlive the turn.
        drop(group);
        let _ = child.wait().await;
        let stderr_tail = match stderr {
            Some(task) => task.await.unwrap_or_default(),
            None => String::new(),
        };
        match outcome {
            Outcome::Exited(status) if status.success() => TurnEvent::Done,
            Outcome::Exited(status) => {
                tracing::warn!(turn = %request.turn_id, %status, stderr = %stderr_tail.trim(), "agent command failed");
                TurnEvent::Failed(format!("the agent command failed ({status})"))
            }
            Outcome::TimedOut => {
                tracing::warn!(turn = %request.turn_id, timeout_s = self.timeout.as_secs(), "agent command timed out");
                TurnEvent::Failed(format!(
                    "the agent command timed out after {} s",
                    self.timeout.as_secs()
                ))
            }
            Outcome::TooMuchOutput => TurnEvent::Failed(format!(
                "the agent command wrote more than {MAX_OUTPUT_BYTES} bytes"
            )),
            Outcome::Io(e) => {
                tracing::error!(turn = %request.turn_id, error = %e, "agent command I/O failed");
                TurnEvent::Failed("reading the agent command's output failed".into())
            }
            Outcome::Cancelled => TurnEvent::Failed("the turn was cancelled".into()),
        }
    }

    /// Forwards stdout until EOF, then waits for the exit status.
    async fn pump(&self, child: &mut Child, tx: &mpsc::Sender<TurnEvent>) -> Outcome {
        let Some(mut stdout) = child.stdout.take() else {
            return Outcome::Io(std::io::Error::other("stdout was not captured"));
        };
        let mut decoder = Utf8Stream::default();
        let mut total = 0usize;
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match stdout.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => return Outcome::Io(e),
            };
            if n == 0 {
                break;
            }
            total += n;
            if total > MAX_OUTPUT_BYTES {
                return Outcome::TooMuchOutput;
            }
            let text = decoder.push(&buf[..n]);
            if !text.is_empty() && tx.send(TurnEvent::Delta(text)).await.is_err() {
                return Outcome::Cancelled;
            }
        }
        let rest = decoder.finish();
        if !rest.is_empty() && tx.send(TurnEvent::Delta(rest)).await.is_err() {
            return Outcome::Cancelled;
        }
        match child.wait().await {
            Ok(status) => Outcome::Exited(status),
            Err(e) => Outcome::Io(e),
        }
    }
}

enum Outcome {
    Exited(std::process::ExitStatus),
    TimedOut,
    TooMuchOutput,
    Cancelled,
    Io(std::io::Error),
}

/// Kills the agent's process group when dropped (the group id is the leader's pid).
struct GroupKill(Option<u32>);

impl Drop for GroupKill {
    fn drop(&mut self) {
        if let Some(pid) = self.0.and_then(|p| i32::try_from(p).ok()) {
            // ESRCH (already gone) is the normal case after a clean exit.
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// Decodes UTF-8 split across reads: complete characters out, a split one carried over,
/// invalid bytes replaced with U+FFFD.
#[derive(Debug, Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(std::str::from_utf8(&self.pending[..valid]).unwrap_or_default());
                    match e.error_len() {
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                    }
                }
            }
        }
    }

    /// Whatever is left at end of stream (an incomplete character becomes U+FFFD).
    pub fn finish(&mut self) -> String {
        let rest = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_split_across_reads() {
        let check = |chunks: &[&[u8]], expected: &str| {
            let mut d = Utf8Stream::default();
            let mut out: String = chunks.iter().map(|c| d.push(c)).collect();
            out.push_str(&d.finish());
            assert_eq!(out, expected, "{chunks:?}");
        };
        let e = "é".as_bytes();
        check(&[b"ab", b"c"], "abc");
        check(&[&e[..1], &e[1..]], "é");
        check(&[b"a\xff", b"b"], "a\u{fffd}b");
        check(&[b"a", &e[..1]], "a\u{fffd}");
        check(
            &["😀".as_bytes()[..3].as_ref(), &"😀".as_bytes()[3..]],
            "😀",
        );
    }
}
