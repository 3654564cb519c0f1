//! The turn keeper: a small supervisor between the gateway and each `command` agent, so that
//! every process a turn starts dies with the turn (SPEC §3) — also one that `setsid`s,
//! double-forks, or outlives a gateway that was SIGKILLed.
//!
//! The gateway runs its own executable as `hermes-gateway __agent-keeper <gateway pid>
//! <argv...>` for each turn. The keeper, single-threaded and before any runtime exists:
//! - blocks the signals it handles and waits for them synchronously (no handlers);
//! - asks the kernel for SIGHUP when the gateway dies (`PR_SET_PDEATHSIG`);
//! - becomes a *child subreaper* (`PR_SET_CHILD_SUBREAPER`, unprivileged), so every orphan
//!   of the turn is re-parented to it, never to init: the turn's processes are exactly the
//!   keeper's descendants, whatever sessions or groups they move to;
//! - starts the agent with `posix_spawn`, every signal unblocked and at its default action
//!   in it (std's `Command` would hand it the keeper's blocked mask), and waits.
//!
//! When the agent exits, or on SIGTERM (the gateway's timeout, cancel or shutdown) or SIGHUP
//! from a dead gateway, it stops every descendant (SIGSTOP, so none can fork while the set is
//! read), re-reads the tree until nothing new appears, SIGKILLs them all, reaps them, and
//! exits with the agent's status (128 + signal when the agent was killed). This module must
//! not know HTTP, the gate or the turn protocol.

use std::collections::HashMap;
use std::ffi::OsString;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::spawn::{PosixSpawnAttr, PosixSpawnFileActions, PosixSpawnFlags, posix_spawnp};
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, getpid, getppid};

use crate::procfs::{Children, read_stat};

/// The hidden subcommand that runs a keeper.
pub const SUBCOMMAND: &str = "__agent-keeper";

/// Written to stderr (and exit [`EXIT_SPAWN_FAILED`]) when the agent cannot be started, so
/// the gateway can tell "could not start" from an agent that ran and failed.
pub const SPAWN_FAILED: &str = "hermes-agent-keeper: cannot start the agent:";

/// The keeper's exit status when the agent could not be started.
pub const EXIT_SPAWN_FAILED: i32 = 127;

/// Most stop-and-reread rounds before the keeper kills what it has.
const MAX_KILL_ROUNDS: usize = 64;

/// Longest the keeper waits for killed processes to be reaped before it exits anyway.
const REAP_GRACE: Duration = Duration::from_secs(2);

/// The arguments a gateway passes to run `argv` under a keeper.
pub fn args(argv: &[String]) -> Vec<OsString> {
    let mut out = vec![SUBCOMMAND.into(), getpid().as_raw().to_string().into()];
    out.extend(argv.iter().map(OsString::from));
    out
}

/// Runs a keeper with the arguments after [`SUBCOMMAND`]; returns its exit status.
pub fn main(args: &[OsString]) -> i32 {
    let parent = args
        .first()
        .and_then(|a| a.to_str())
        .and_then(|a| a.parse::<i32>().ok());
    let (Some(parent), Some(program)) = (parent, args.get(1)) else {
        eprintln!("usage: hermes-gateway {SUBCOMMAND} <gateway pid> <program> [args...]");
        return 2;
    };
    let mut handled = SigSet::empty();
    for s in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGCHLD,
    ] {
        handled.add(s);
    }
    if let Err(e) = handled.thread_block() {
        eprintln!("{SPAWN_FAILED} cannot block signals: {e}");
        return EXIT_SPAWN_FAILED;
    }
    // Armed before the parent check, so a gateway that dies in between is still noticed.
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGHUP);
    if getppid().as_raw() != parent {
        return 128 + Signal::SIGHUP as i32;
    }
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        eprintln!("{SPAWN_FAILED} cannot become a subreaper: {e}");
        return EXIT_SPAWN_FAILED;
    }
    let agent = match spawn_agent(program, &args[2..]) {
        Ok(pid) => pid,
        Err(e) => {
            eprintln!("{SPAWN_FAILED} {e}");
            return EXIT_SPAWN_FAILED;
        }
    };
    // The agent may have exited before anything could be waited for.
    if let Some(status) = reap_children(agent) {
        kill_descendants();
        return status;
    }
    let status = loop {
        match handled.wait() {
            Ok(Signal::SIGCHLD) => {
                if let Some(status) = reap_children(agent) {
                    break status;
                }
            }
            // SIGHUP comes from PR_SET_PDEATHSIG when the gateway dies — or when the thread
            // that started us exits while the gateway lives on, which ends nothing.
            Ok(Signal::SIGHUP) if getppid().as_raw() == parent => {}
            Ok(s) => break 128 + s as i32,
            Err(_) => {}
        }
    };
    kill_descendants();
    status
}

/// Starts the agent in its own process group with every signal unblocked and at its
/// default action: the keeper's own mask (the signals it waits for) must not reach it, and
/// std's `Command` would pass that mask on.
fn spawn_agent(program: &OsString, args: &[OsString]) -> Result<i32, String> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |s: &std::ffi::OsStr| {
        CString::new(s.as_bytes()).map_err(|_| format!("{s:?} holds a NUL byte"))
    };
    let program_c = c(program)?;
    let mut argv = vec![program_c.clone()];
    for a in args {
        argv.push(c(a)?);
    }
    let mut envp = Vec::new();
    for (k, v) in std::env::vars_os() {
        let mut kv = k.as_bytes().to_vec();
        kv.push(b'=');
        kv.extend_from_slice(v.as_bytes());
        envp.push(CString::new(kv).map_err(|_| "an environment variable holds a NUL byte")?);
    }
    let mut attr = PosixSpawnAttr::init().map_err(|e| e.to_string())?;
    attr.set_flags(
        PosixSpawnFlags::POSIX_SPAWN_SETSIGMASK
            | PosixSpawnFlags::POSIX_SPAWN_SETSIGDEF
            | PosixSpawnFlags::POSIX_SPAWN_SETPGROUP,
    )
    .map_err(|e| e.to_string())?;
    attr.set_sigmask(&SigSet::empty())
        .map_err(|e| e.to_string())?;
    attr.set_sigdefault(&SigSet::all())
        .map_err(|e| e.to_string())?;
    attr.set_pgroup(Pid::from_raw(0))
        .map_err(|e| e.to_string())?;
    let actions = PosixSpawnFileActions::init().map_err(|e| e.to_string())?;
    posix_spawnp(&program_c, &actions, &attr, &argv, &envp)
        .map(Pid::as_raw)
        .map_err(|e| format!("{e:?}"))
}

/// Reaps every child that has exited; the agent's status once it is among them.
fn reap_children(agent: i32) -> Option<i32> {
    let mut agent_status = None;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid.as_raw() == agent => {
                agent_status = Some(code);
            }
            Ok(WaitStatus::Signaled(pid, signal, _)) if pid.as_raw() == agent => {
                agent_status = Some(128 + signal as i32);
            }
            Ok(WaitStatus::StillAlive) | Err(_) => return agent_status,
            Ok(_) => {}
        }
    }
}

/// Stops, kills and reaps every descendant of this process, round after round until none
/// is left: a process another one resumed (SIGCONT) may fork between the stop and the kill,
/// and its children are re-parented here, so they are found by the next round.
fn kill_descendants() {
    let me = getpid().as_raw();
    let deadline = Instant::now() + REAP_GRACE;
    loop {
        let mut known: HashMap<i32, u64> = HashMap::new();
        for _ in 0..MAX_KILL_ROUNDS {
            let mut new = 0;
            for (pid, start) in descendants(me) {
                if known.insert(pid, start).is_none() {
                    new += 1;
                }
                let _ = kill(Pid::from_raw(pid), Signal::SIGSTOP);
            }
            if new == 0 {
                break;
            }
        }
        for (&pid, &start) in &known {
            // A pid is ours until we reap it, so it cannot have been reused; the start
            // time guards a grandchild whose parent reaped it meanwhile.
            if read_stat(pid).is_some_and(|st| st.start == start) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        // Reap what died; stop waiting once nothing is left or the grace is over.
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Err(Errno::ECHILD) => return,
                Ok(WaitStatus::StillAlive) => break,
                _ => {}
            }
        }
        if Instant::now() >= deadline {
            let left = descendants(me).len();
            if left > 0 {
                eprintln!("hermes-agent-keeper: {left} processes of the turn are still alive");
            }
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The environment variable the gateway marks each turn's processes with (a per-turn nonce;
/// not a secret), so that the gateway can still find them if their keeper is killed.
pub const MARKER_VAR: &str = "HERMES_AGENT_TURN";

/// Makes this process (the gateway) a child subreaper, once: if an agent kills or stops its
/// keeper, the turn's orphans are re-parented here instead of to init, where
/// [`sweep_orphans`] finds them. Process-wide and harmless elsewhere: only orphans that
/// carry a turn's marker are ever touched.
pub fn adopt_orphans() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
            tracing::warn!(error = %e, "cannot become a child subreaper; an agent that kills its keeper may leave processes behind");
        }
    });
}

/// Kills and reaps the children of this process that carry `MARKER_VAR=nonce` (a turn's
/// orphans, re-parented here because its keeper died) and all their descendants. Runs
/// after a turn's keeper died by a signal; a process that cleared its environment *and* killed
/// its keeper is not found.
pub fn sweep_orphans(nonce: &str) {
    let me = getpid().as_raw();
    let marker = format!("{MARKER_VAR}={nonce}").into_bytes();
    let marked = |pid: i32| {
        std::fs::read(format!("/proc/{pid}/environ"))
            .is_ok_and(|env| env.split(|b| *b == 0).any(|var| var == marker.as_slice()))
    };
    let deadline = Instant::now() + REAP_GRACE;
    let mut killed: HashMap<i32, u64> = HashMap::new();
    loop {
        let roots: Vec<i32> = Children::snapshot()
            .of(me)
            .into_iter()
            .filter(|&pid| !killed.contains_key(&pid) && marked(pid))
            .collect();
        let mut tree: Vec<(i32, u64)> = Vec::new();
        for root in &roots {
            if let Some(st) = read_stat(*root).filter(|st| !st.zombie) {
                tree.push((*root, st.start));
                tree.extend(descendants(*root));
            }
        }
        for &(pid, _) in &tree {
            let _ = kill(Pid::from_raw(pid), Signal::SIGSTOP);
        }
        for &(pid, start) in &tree {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            killed.insert(pid, start);
        }
        // Reap, by pid only, what we killed and what came back to us: nothing else's exit
        // status is taken.
        killed.retain(|&pid, &mut start| match read_stat(pid) {
            Some(st) if st.start == start && st.zombie && st.ppid == me => {
                let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
                false
            }
            Some(st) => st.start == start,
            None => false,
        });
        if (roots.is_empty() && killed.is_empty()) || Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Every live descendant of `root` with its start time, read from `/proc`.
fn descendants(root: i32) -> Vec<(i32, u64)> {
    let children = Children::snapshot();
    let mut out = Vec::new();
    let mut queue = vec![root];
    while let Some(parent) = queue.pop() {
        for pid in children.of(parent) {
            if let Some(st) = read_stat(pid).filter(|st| !st.zombie) {
                out.push((pid, st.start));
                queue.push(pid);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keeper_needs_its_arguments() {
        assert_eq!(main(&[]), 2);
        assert_eq!(main(&["not-a-pid".into(), "true".into()]), 2);
    }
}
