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
use std::sync::{Arc, Mutex};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::procs::{MARKER_VAR, TurnProcesses, become_subreaper};
use super::{TurnEvent, TurnRequest, TurnStream};
use crate::config::CommandConfig;

/// Most reply bytes one turn may produce; beyond it the agent is killed and the turn fails,
/// so a runaway process cannot exhaust the gateway's memory.
pub const MAX_OUTPUT_BYTES: usize = 16 * 1024 * 1024;

/// How much of the agent's stderr is kept for the log when it fails.
const STDERR_TAIL_BYTES: usize = 2048;

/// How long stdout is still read after the agent exited: a helper it left behind may hold
/// the pipe open, and must not hold the turn with it.
const STDOUT_LINGER: Duration = Duration::from_millis(200);

/// How often a running turn looks for the processes it started (so one that leaves the
/// agent's group and loses its parent is still known to be the turn's).
const SCAN_EVERY: Duration = Duration::from_millis(200);

/// Every how many scans the gateway's orphan children are examined too (once a second;
/// each turn reads all of them, so this part costs turns × orphans).
const ORPHAN_SCAN_EVERY_TICKS: u32 = 5;

/// Longest a turn's clean-up waits for killed processes to be reaped.
const REAP_GRACE: Duration = Duration::from_secs(2);

/// Runs `argv` once per turn.
#[derive(Debug, Clone)]
pub struct CommandBackend {
    argv: Vec<String>,
    timeout: Duration,
    workdir: Option<PathBuf>,
    /// The agent's whole environment (built by `config`; nothing is inherited).
    environment: Vec<(String, SecretString)>,
}

impl CommandBackend {
    /// Also makes the gateway a child subreaper, so that orphans of a turn stay findable.
    pub fn new(config: &CommandConfig) -> Self {
        become_subreaper();
        Self {
            argv: config.argv.clone(),
            timeout: Duration::from_secs(config.timeout_seconds),
            workdir: config.workdir.clone(),
            environment: config.environment.clone(),
        }
    }

    /// Starts the process and streams its stdout; every process of the turn dies with the
    /// stream.
    pub fn start(&self, request: TurnRequest) -> TurnStream {
        let (tx, mut rx) = mpsc::channel(16);
        let nonce = crate::ids::random_hex128();
        let procs = Arc::new(Mutex::new(TurnProcesses::new(&nonce)));
        let backend = self.clone();
        let task_procs = procs.clone();
        tokio::spawn(async move {
            let event = backend.run(request, &nonce, &tx, &task_procs).await;
            let _ = tx.send(event).await;
        });
        // Dropping the stream kills at once, before the caller goes on; the task then
        // notices the closed channel and reaps.
        let guard = KillOnDrop(procs);
        Box::pin(futures_util::stream::poll_fn(move |cx| {
            let _ = &guard;
            rx.poll_recv(cx)
        }))
    }

    /// Runs one turn to its final event, sending deltas on the way. Whatever ends it,
    /// every process the turn started is killed before the final event.
    async fn run(
        &self,
        request: TurnRequest,
        nonce: &str,
        tx: &mpsc::Sender<TurnEvent>,
        procs: &Mutex<TurnProcesses>,
    ) -> TurnEvent {
        if tx.is_closed() {
            return TurnEvent::Failed("the turn was cancelled".into());
        }
        let mut cmd = Command::new(&self.argv[0]);
        cmd.args(&self.argv[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .env_clear()
            .envs(
                self.environment
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.expose_secret())),
            )
            .env(MARKER_VAR, nonce);
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
        if let Some(pid) = child.id() {
            lock(procs).set_agent(pid);
        }
        let input = json!({
            "messages": request.messages.iter().map(|m| json!({"role": m.role, "content": m.content})).collect::<Vec<_>>(),
            "session_id": request.session_id,
            "model": request.model,
            "turn_id": request.turn_id,
        });
        // Written from its own task: an agent that never reads stdin must not block us.
        let stdin = child.stdin.take().map(|mut stdin| {
            let mut bytes = input.to_string().into_bytes();
            bytes.push(b'\n');
            tokio::spawn(async move {
                let _ = stdin.write_all(&bytes).await;
            })
        });
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
            outcome = self.pump(&mut child, tx, procs) => outcome,
            () = tokio::time::sleep(self.timeout) => Outcome::TimedOut,
            () = tx.closed() => Outcome::Cancelled,
        };
        // Whatever happened, nothing the turn started may outlive it.
        lock(procs).kill_all();
        let _ = tokio::time::timeout(REAP_GRACE, child.wait()).await;
        let deadline = Instant::now() + REAP_GRACE;
        loop {
            let done = lock(procs).reap();
            if done || Instant::now() >= deadline {
                if !done {
                    tracing::warn!(turn = %request.turn_id, left = lock(procs).len(), "agent processes were killed but have not exited yet");
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if let Some(task) = stdin {
            task.abort();
        }
        // Every writer is dead, so stderr is at its end; the cap guards against one that
        // escaped.
        let stderr_tail = match stderr {
            Some(task) => {
                let abort = task.abort_handle();
                match tokio::time::timeout(STDOUT_LINGER, task).await {
                    Ok(tail) => tail.unwrap_or_default(),
                    Err(_) => {
                        abort.abort();
                        String::new()
                    }
                }
            }
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

    /// Forwards stdout until the agent exits (then at most [`STDOUT_LINGER`] more, since a
    /// helper it left behind may hold the pipe open), rescanning the turn's processes on
    /// the way.
    async fn pump(
        &self,
        child: &mut Child,
        tx: &mpsc::Sender<TurnEvent>,
        procs: &Mutex<TurnProcesses>,
    ) -> Outcome {
        let Some(mut stdout) = child.stdout.take() else {
            return Outcome::Io(std::io::Error::other("stdout was not captured"));
        };
        let mut decoder = Utf8Stream::default();
        let mut total = 0usize;
        let mut buf = vec![0u8; 16 * 1024];
        let mut scan = tokio::time::interval(SCAN_EVERY);
        scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut status = None;
        let mut linger_until: Option<Instant> = None;
        let mut eof = false;
        let mut ticks = 0u32;
        let status = loop {
            if let (Some(status), true) = (status, eof) {
                break status;
            }
            tokio::select! {
                read = stdout.read(&mut buf), if !eof => {
                    let n = match read {
                        Ok(n) => n,
                        Err(e) => return Outcome::Io(e),
                    };
                    if n == 0 {
                        eof = true;
                        continue;
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
                exited = child.wait(), if status.is_none() => match exited {
                    Ok(s) => {
                        status = Some(s);
                        linger_until = Some(Instant::now() + STDOUT_LINGER);
                    }
                    Err(e) => return Outcome::Io(e),
                },
                () = tokio::time::sleep_until(linger_until.unwrap_or_else(Instant::now)), if linger_until.is_some() => {
                    if let Some(status) = status {
                        break status;
                    }
                }
                _ = scan.tick() => {
                    ticks += 1;
                    lock(procs).scan(ticks % ORPHAN_SCAN_EVERY_TICKS == 1);
                }
            }
        };
        let rest = decoder.finish();
        if !rest.is_empty() && tx.send(TurnEvent::Delta(rest)).await.is_err() {
            return Outcome::Cancelled;
        }
        Outcome::Exited(status)
    }
}

enum Outcome {
    Exited(std::process::ExitStatus),
    TimedOut,
    TooMuchOutput,
    Cancelled,
    Io(std::io::Error),
}

/// Kills the turn's processes when the turn stream is dropped.
struct KillOnDrop(Arc<Mutex<TurnProcesses>>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        lock(&self.0).kill_all();
    }
}

/// The lock holds no invariant a panic could break, so a poisoned one is used as is.
fn lock(procs: &Mutex<TurnProcesses>) -> std::sync::MutexGuard<'_, TurnProcesses> {
    procs
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
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
