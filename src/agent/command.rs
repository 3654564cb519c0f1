//! The `command` backend: one subprocess per turn, speaking the protocol of SPEC §3.
//!
//! Standard input gets one JSON object (messages, session id, model, turn id) and is then
//! closed; whatever the process writes to stdout is the reply, streamed as it arrives.
//! Exit 0 completes the turn; a non-zero exit, a signal or the timeout fails it, and the
//! text already streamed stays with the client, marked incomplete by the caller.
//!
//! The agent runs under a [`keeper`](super::keeper) in its own process group: the turn ends
//! when the agent exits, and then, or on a timeout, a dropped stream (a client that went
//! away, a shutdown past its deadline) or the gateway's death, the keeper kills every process
//! the turn started. This module must not know HTTP or the gate.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::keeper;
use super::{TurnEvent, TurnRequest, TurnStream};
use crate::config::CommandConfig;

/// Most reply bytes one turn may produce; beyond it the agent is killed and the turn fails,
/// so a runaway process cannot exhaust the gateway's memory.
pub const MAX_OUTPUT_BYTES: usize = 16 * 1024 * 1024;

/// How much of the agent's stderr is kept for the log when it fails.
const STDERR_TAIL_BYTES: usize = 2048;

/// How long stdout is still read after the agent (its keeper) exited; the keeper has killed
/// every writer by then, so this only bounds a pipe someone else holds.
const STDOUT_LINGER: Duration = Duration::from_millis(200);

/// Longest a turn waits for its keeper to kill and reap the turn's processes after a
/// SIGTERM, before it kills the keeper itself.
const KEEPER_GRACE: Duration = Duration::from_secs(3);

/// Runs `argv` once per turn.
#[derive(Debug, Clone)]
pub struct CommandBackend {
    argv: Vec<String>,
    timeout: Duration,
    workdir: Option<PathBuf>,
    /// The agent's whole environment (built by `config`; nothing is inherited).
    environment: Vec<(String, SecretString)>,
    /// The executable run as `keeper_exe __agent-keeper <pid> argv...`.
    keeper_exe: PathBuf,
}

impl CommandBackend {
    pub fn new(config: &CommandConfig) -> Self {
        keeper::adopt_orphans();
        Self {
            argv: config.argv.clone(),
            timeout: Duration::from_secs(config.timeout_seconds),
            workdir: config.workdir.clone(),
            environment: config.environment.clone(),
            keeper_exe: config.keeper_exe.clone(),
        }
    }

    /// Starts the process and streams its stdout; every process of the turn dies with the
    /// stream.
    pub fn start(&self, request: TurnRequest) -> TurnStream {
        let (tx, mut rx) = mpsc::channel(16);
        let keeper = Arc::new(Mutex::new(None));
        let backend = self.clone();
        let task_keeper = keeper.clone();
        tokio::spawn(async move {
            let nonce = crate::ids::random_hex128();
            let event = backend.run(request, &nonce, &tx, &task_keeper).await;
            let _ = tx.send(event).await;
        });
        // Dropping the stream tells the keeper at once, before the caller goes on; the
        // task then notices the closed channel and waits for the keeper to finish.
        let guard = KillOnDrop(keeper);
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
        keeper: &Mutex<Option<i32>>,
    ) -> TurnEvent {
        if tx.is_closed() {
            return TurnEvent::Failed("the turn was cancelled".into());
        }
        let mut child = match self.spawn_keeper(nonce) {
            Ok(child) => child,
            Err(event) => return event,
        };
        *lock(keeper) = child.id().and_then(|pid| i32::try_from(pid).ok());
        let stdin = write_input(&mut child, &request);
        let stderr = spawn_stderr_tail(&mut child);

        let outcome = tokio::select! {
            outcome = self.pump(&mut child, tx, keeper) => outcome,
            () = tokio::time::sleep(self.timeout) => Outcome::TimedOut,
            () = tx.closed() => Outcome::Cancelled,
        };
        end_turn_processes(&mut child, keeper, nonce, &request.turn_id).await;
        if let Some(task) = stdin {
            task.abort();
        }
        let stderr_tail = take_stderr_tail(stderr).await;
        self.final_event(outcome, &stderr_tail, &request.turn_id)
    }

    /// Starts the turn's keeper, which starts the agent, in its own process group with the
    /// agent's environment and the turn's marker. The keeper is not killed on drop: it must
    /// live to kill the turn's processes, and it ends by itself once the agent is gone, or
    /// when this process dies. A keeper that cannot start is the turn's final event.
    fn spawn_keeper(&self, nonce: &str) -> Result<Child, TurnEvent> {
        let mut cmd = Command::new(&self.keeper_exe);
        cmd.args(keeper::args(&self.argv))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .env_clear()
            .envs(
                self.environment
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.expose_secret())),
            )
            .env(keeper::MARKER_VAR, nonce);
        if let Some(dir) = &self.workdir {
            cmd.current_dir(dir);
        }
        cmd.spawn().map_err(|e| {
            tracing::error!(keeper = %self.keeper_exe.display(), error = %e, "cannot start the agent's keeper");
            TurnEvent::Failed(format!(
                "the agent command could not be started: {:?}",
                e.kind()
            ))
        })
    }

    /// The turn's final event for how it ended, logged where the operator needs to know.
    /// `stderr_tail` tells "could not start" (the keeper's [`keeper::SPAWN_FAILED`] line)
    /// from an agent that ran and failed.
    fn final_event(&self, outcome: Outcome, stderr_tail: &str, turn_id: &str) -> TurnEvent {
        match outcome {
            Outcome::Exited(status) if status.success() => TurnEvent::Done,
            Outcome::Exited(status)
                if status.code() == Some(keeper::EXIT_SPAWN_FAILED)
                    && stderr_tail.contains(keeper::SPAWN_FAILED) =>
            {
                let why = stderr_tail
                    .split(keeper::SPAWN_FAILED)
                    .nth(1)
                    .unwrap_or_default()
                    .trim();
                tracing::error!(program = %self.argv[0], error = %why, "cannot start the agent command");
                TurnEvent::Failed(format!("the agent command could not be started: {why}"))
            }
            Outcome::Exited(status) => {
                tracing::warn!(turn = %turn_id, %status, stderr = %stderr_tail.trim(), "agent command failed");
                TurnEvent::Failed(format!("the agent command failed ({status})"))
            }
            Outcome::TimedOut => {
                tracing::warn!(turn = %turn_id, timeout_s = self.timeout.as_secs(), "agent command timed out");
                TurnEvent::Failed(format!(
                    "the agent command timed out after {} s",
                    self.timeout.as_secs()
                ))
            }
            Outcome::TooMuchOutput => TurnEvent::Failed(format!(
                "the agent command wrote more than {MAX_OUTPUT_BYTES} bytes"
            )),
            Outcome::Io(e) => {
                tracing::error!(turn = %turn_id, error = %e, "agent command I/O failed");
                TurnEvent::Failed("reading the agent command's output failed".into())
            }
            Outcome::Cancelled => TurnEvent::Failed("the turn was cancelled".into()),
        }
    }

    /// Forwards stdout until the agent (its keeper) exits, then at most [`STDOUT_LINGER`]
    /// more.
    async fn pump(
        &self,
        child: &mut Child,
        tx: &mpsc::Sender<TurnEvent>,
        keeper: &Mutex<Option<i32>>,
    ) -> Outcome {
        let Some(mut stdout) = child.stdout.take() else {
            return Outcome::Io(std::io::Error::other("stdout was not captured"));
        };
        let mut decoder = Utf8Stream::default();
        let mut total = 0usize;
        let mut buf = vec![0u8; 16 * 1024];
        let mut status = None;
        let mut linger_until: Option<Instant> = None;
        let mut eof = false;
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
                        // Reaped: its pid is no longer its own to signal.
                        *lock(keeper) = None;
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
            }
        };
        let rest = decoder.finish();
        if !rest.is_empty() && tx.send(TurnEvent::Delta(rest)).await.is_err() {
            return Outcome::Cancelled;
        }
        Outcome::Exited(status)
    }
}

/// Writes the turn's one JSON line to the agent's stdin and closes it, from its own task:
/// an agent that never reads stdin must not block us.
fn write_input(child: &mut Child, request: &TurnRequest) -> Option<JoinHandle<()>> {
    let input = json!({
        "messages": request.messages.iter().map(|m| json!({"role": m.role, "content": m.content})).collect::<Vec<_>>(),
        "session_id": request.session_id,
        "model": request.model,
        "turn_id": request.turn_id,
    });
    child.stdin.take().map(|mut stdin| {
        let mut bytes = input.to_string().into_bytes();
        bytes.push(b'\n');
        tokio::spawn(async move {
            let _ = stdin.write_all(&bytes).await;
        })
    })
}

/// Reads the agent's stderr to its end, keeping the last [`STDERR_TAIL_BYTES`] for the log.
fn spawn_stderr_tail(child: &mut Child) -> Option<JoinHandle<String>> {
    child.stderr.take().map(|mut err| {
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
    })
}

/// Whatever ended the turn, nothing the turn started may outlive it: the keeper kills it
/// all when told to (or by itself, once the agent exited), then exits; one that does not
/// within [`KEEPER_GRACE`] is killed. Returns once the keeper is reaped and, if it died by a
/// signal, the turn's orphans it left are swept.
async fn end_turn_processes(
    child: &mut Child,
    keeper: &Mutex<Option<i32>>,
    nonce: &str,
    turn_id: &str,
) {
    // Only a keeper not yet reaped is signalled: a reaped pid may be someone else's.
    if matches!(child.try_wait(), Ok(None)) {
        signal_keeper(keeper);
    }
    if tokio::time::timeout(KEEPER_GRACE, child.wait())
        .await
        .is_err()
    {
        tracing::warn!(turn = %turn_id, "the agent's keeper did not finish in time; killing it");
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    *lock(keeper) = None;
    // A keeper that died by a signal (its own agent killed it, or we did after it was
    // stopped) left the turn's processes to us; one that exited cleaned up itself.
    let killed = child
        .try_wait()
        .ok()
        .flatten()
        .is_some_and(|status| std::os::unix::process::ExitStatusExt::signal(&status).is_some());
    if killed {
        let nonce = nonce.to_owned();
        let _ = tokio::task::spawn_blocking(move || keeper::sweep_orphans(&nonce)).await;
    }
}

/// The stderr tail once the turn's processes are gone. Every writer is dead, so stderr is
/// at its end; the [`STDOUT_LINGER`] cap guards against one that escaped.
async fn take_stderr_tail(task: Option<JoinHandle<String>>) -> String {
    let Some(task) = task else {
        return String::new();
    };
    let abort = task.abort_handle();
    match tokio::time::timeout(STDOUT_LINGER, task).await {
        Ok(tail) => tail.unwrap_or_default(),
        Err(_) => {
            abort.abort();
            String::new()
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

/// Tells the keeper to end the turn when the turn stream is dropped.
struct KillOnDrop(Arc<Mutex<Option<i32>>>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        signal_keeper(&self.0);
    }
}

/// Sends SIGTERM to a keeper not yet reaped (so its pid is still its own); it then kills
/// and reaps the turn's processes and exits.
fn signal_keeper(keeper: &Mutex<Option<i32>>) {
    if let Some(pid) = *lock(keeper) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
}

/// The lock holds no invariant a panic could break, so a poisoned one is used as is.
fn lock(keeper: &Mutex<Option<i32>>) -> std::sync::MutexGuard<'_, Option<i32>> {
    keeper
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
