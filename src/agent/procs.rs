//! Every process a `command` turn started, found under `/proc` and killed at the turn's end,
//! so that none outlives its turn (SPEC §3).
//!
//! A process group is not enough: a helper can `setsid` out of it, and once its parent exits
//! it is re-parented away from the agent. So the gateway makes itself a *child subreaper*
//! (`PR_SET_CHILD_SUBREAPER`, unprivileged): orphans of every turn are re-parented to the
//! gateway instead of init and stay findable. A turn attributes a process to itself when
//! - it descends (by parent pid) from the agent or from a process already attributed;
//! - it is a child of the gateway (an orphan) whose environment carries the turn's marker
//!   ([`MARKER_VAR`]`=<nonce>`, inherited through `setsid`, double forks and `exec`), or,
//!   when it has no marker at all, whose process group or session is one of the turn's.
//!
//! The turn rescans while it runs (a process seen once stays attributed after it leaves
//! the group and loses its parent; descendants often, the gateway's orphans less often,
//! since every turn would read all of them) and at its end [`TurnProcesses::kill_all`] stops every
//! attributed process (SIGSTOP, so none can fork while the set is completed), rescans until
//! nothing new appears, then kills them all. [`TurnProcesses::reap`] waits for those
//! re-parented to the gateway, by pid: statuses of children that tokio or std spawned
//! (the agent itself, a test's subprocesses) are never taken. Pids are checked against
//! their start time before any signal, so a reused pid is never hit.
//!
//! Known limit: a process that clears its environment, leaves the turn's session and loses
//! its parent within one scan period before any scan saw it is not attributed (a PID
//! namespace or a delegated cgroup would close this; neither is available unprivileged
//! everywhere). This module must not know HTTP, the gate or the turn protocol.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::{Pid, getpgrp, getpid, getsid};

/// The environment variable that marks a turn's processes; its value is a per-turn nonce.
pub const MARKER_VAR: &str = "HERMES_AGENT_TURN";

/// Most stop-and-rescan rounds a kill makes before it kills what it has.
const MAX_KILL_ROUNDS: usize = 64;

/// Makes the gateway process a child subreaper, once; true when it is one. Process-wide
/// and harmless for other code: an orphan re-parented to us is only waited for by the turn
/// that attributed it, and an unattributed one just stays a zombie until we exit.
pub fn become_subreaper() -> bool {
    static DONE: OnceLock<bool> = OnceLock::new();
    *DONE.get_or_init(|| match nix::sys::prctl::set_child_subreaper(true) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "cannot become a child subreaper; agent processes that leave their session may outlive their turn");
            false
        }
    })
}

/// What a turn needs to know of one process, from `/proc/<pid>/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    ppid: i32,
    pgrp: i32,
    session: i32,
    zombie: bool,
    /// Start time in clock ticks since boot: with the pid, a process's identity.
    start: u64,
}

/// Parses `/proc/<pid>/stat` text; the command name may hold spaces and parentheses.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    // After the name: state(0) ppid(1) pgrp(2) session(3) ... starttime(19).
    Some(Stat {
        zombie: matches!(*fields.first()?, "Z" | "X"),
        ppid: fields.get(1)?.parse().ok()?,
        pgrp: fields.get(2)?.parse().ok()?,
        session: fields.get(3)?.parse().ok()?,
        start: fields.get(19)?.parse().ok()?,
    })
}

fn read_stat(pid: i32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Whether `/proc/<pid>/task/<tid>/children` exists on this kernel (`CONFIG_PROC_CHILDREN`).
fn has_children_files() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| std::path::Path::new("/proc/thread-self/children").exists())
}

/// Who the children of a process are, at one moment.
enum Children {
    /// Read per process from its threads' `children` files (cheap: only our subtree).
    Files,
    /// A whole-`/proc` scan by parent pid, where the kernel has no `children` files.
    Map(HashMap<i32, Vec<i32>>),
}

impl Children {
    fn snapshot() -> Self {
        if has_children_files() {
            return Self::Files;
        }
        let mut map: HashMap<i32, Vec<i32>> = HashMap::new();
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for entry in dir.flatten() {
                let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                    continue;
                };
                if let Some(st) = read_stat(pid) {
                    map.entry(st.ppid).or_default().push(pid);
                }
            }
        }
        Self::Map(map)
    }

    fn of(&self, pid: i32) -> Vec<i32> {
        match self {
            Self::Map(map) => map.get(&pid).cloned().unwrap_or_default(),
            Self::Files => {
                let mut out = Vec::new();
                let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
                    return out;
                };
                for task in tasks.flatten() {
                    if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
                        out.extend(
                            text.split_ascii_whitespace()
                                .filter_map(|p| p.parse::<i32>().ok()),
                        );
                    }
                }
                out
            }
        }
    }
}

/// How a gateway child's environment relates to a turn's marker.
enum Marked {
    Ours,
    OtherTurn,
    Unmarked,
}

fn marker_of(pid: i32, marker: &[u8]) -> Marked {
    let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
        return Marked::Unmarked;
    };
    let prefix = format!("{MARKER_VAR}=");
    match environ
        .split(|b| *b == 0)
        .find(|var| var.starts_with(prefix.as_bytes()))
    {
        Some(var) if var == marker => Marked::Ours,
        Some(_) => Marked::OtherTurn,
        None => Marked::Unmarked,
    }
}

/// The processes of one turn: the agent and everything attributed to it so far.
#[derive(Debug)]
pub struct TurnProcesses {
    gateway: i32,
    /// The gateway's own group and session, which agents share until they leave them and
    /// which therefore never identify a turn.
    gateway_ids: [i32; 2],
    /// `MARKER_VAR=<nonce>` as it appears in `/proc/<pid>/environ`.
    marker: Vec<u8>,
    /// The agent (our direct child, reaped by tokio) once it has been started.
    agent: Option<i32>,
    /// Attributed processes by pid, with their start times.
    tracked: HashMap<i32, u64>,
    /// Process groups and sessions that attributed processes belong to or created.
    ids: HashSet<i32>,
    /// Gateway children carrying another turn's marker (pid, start time): never ours.
    foreign: HashSet<(i32, u64)>,
    /// Gateway children without a marker (pid, start time): judged by group and session at
    /// every scan, as those sets grow, without reading their environment again.
    unmarked: HashSet<(i32, u64)>,
}

impl TurnProcesses {
    /// A turn whose processes carry `MARKER_VAR=nonce` in their environment.
    pub fn new(nonce: &str) -> Self {
        let own = |r: nix::Result<Pid>| r.map(Pid::as_raw).unwrap_or(-1);
        Self {
            gateway: getpid().as_raw(),
            gateway_ids: [getpgrp().as_raw(), own(getsid(None))],
            marker: format!("{MARKER_VAR}={nonce}").into_bytes(),
            agent: None,
            tracked: HashMap::new(),
            ids: HashSet::new(),
            foreign: HashSet::new(),
            unmarked: HashSet::new(),
        }
    }

    /// Records the agent process (a direct child started in its own process group).
    pub fn set_agent(&mut self, pid: u32) {
        let Ok(pid) = i32::try_from(pid) else { return };
        self.agent = Some(pid);
        self.ids.insert(pid);
        if let Some(st) = read_stat(pid) {
            self.add(pid, st);
        }
    }

    /// How many processes are attributed (alive or not yet reaped) at the last scan.
    pub fn len(&self) -> usize {
        self.tracked.len()
    }

    fn add(&mut self, pid: i32, st: Stat) {
        self.tracked.insert(pid, st.start);
        for id in [st.pgrp, st.session] {
            if !self.gateway_ids.contains(&id) {
                self.ids.insert(id);
            }
        }
    }

    /// Finds the turn's processes now; returns how many were newly attributed. With
    /// `orphans`, the gateway's children are examined too (for the marker, group and
    /// session); without, only descendants of what is already attributed, which costs only
    /// the turn's own subtree however many turns run.
    pub fn scan(&mut self, orphans: bool) -> usize {
        // Forget pids that are gone or reused (a different start time).
        self.tracked
            .retain(|pid, start| read_stat(*pid).is_some_and(|st| st.start == *start));
        let before = self.tracked.len();
        let children = Children::snapshot();
        let mut queue: Vec<i32> = self.tracked.keys().copied().collect();
        let gateway_children = if orphans {
            children.of(self.gateway)
        } else {
            Vec::new()
        };
        for pid in gateway_children {
            if self.tracked.contains_key(&pid) {
                continue;
            }
            let Some(st) = read_stat(pid) else { continue };
            let key = (pid, st.start);
            if self.foreign.contains(&key) {
                continue;
            }
            let marked = if self.unmarked.contains(&key) {
                Marked::Unmarked
            } else {
                marker_of(pid, &self.marker)
            };
            let ours = match marked {
                Marked::Ours => true,
                Marked::OtherTurn => {
                    self.foreign.insert(key);
                    false
                }
                Marked::Unmarked => {
                    self.unmarked.insert(key);
                    self.ids.contains(&st.pgrp) || self.ids.contains(&st.session)
                }
            };
            if ours {
                self.unmarked.remove(&key);
                self.add(pid, st);
                queue.push(pid);
            }
        }
        while let Some(parent) = queue.pop() {
            for pid in children.of(parent) {
                if self.tracked.contains_key(&pid) {
                    continue;
                }
                if let Some(st) = read_stat(pid) {
                    self.add(pid, st);
                    queue.push(pid);
                }
            }
        }
        self.tracked.len() - before
    }

    /// Sends `signal` to every attributed process that is still the one we saw.
    fn signal_all(&self, signal: Signal) {
        for (&pid, &start) in &self.tracked {
            if read_stat(pid).is_some_and(|st| st.start == start && !st.zombie) {
                let _ = kill(Pid::from_raw(pid), signal);
            }
        }
        if let Some(agent) = self.agent {
            // The agent's group cannot be reused while any member lives; ESRCH is normal.
            let _ = killpg(Pid::from_raw(agent), signal);
        }
    }

    /// Kills every process of the turn: stop all, rescan until no new one appears (a
    /// stopped process cannot fork), then SIGKILL. Synchronous, so it also runs in `Drop`.
    pub fn kill_all(&mut self) {
        self.scan(true);
        for _ in 0..MAX_KILL_ROUNDS {
            self.signal_all(Signal::SIGSTOP);
            if self.scan(true) == 0 {
                break;
            }
        }
        self.signal_all(Signal::SIGKILL);
    }

    /// Waits (without blocking) for attributed processes that died as the gateway's
    /// children; true when none of the turn's processes is left but the agent, which tokio
    /// reaps.
    pub fn reap(&mut self) -> bool {
        let (gateway, agent) = (self.gateway, self.agent);
        self.tracked.retain(|&pid, &mut start| {
            let Some(st) = read_stat(pid).filter(|st| st.start == start) else {
                return false;
            };
            if Some(pid) == agent {
                return !st.zombie;
            }
            if st.zombie && st.ppid == gateway {
                // Ours by attribution and a zombie: nobody else can reap it, so the pid is
                // still this process's.
                let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
                return false;
            }
            // Alive, or a zombie whose (dying) parent is ours: it comes back to us.
            true
        });
        self.tracked.is_empty()
    }
}

impl Drop for TurnProcesses {
    /// A turn dropped without its clean-up (the runtime shutting down) still kills.
    fn drop(&mut self) {
        if !self.tracked.is_empty() {
            self.kill_all();
            self.reap();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse_whatever_the_command_name() {
        let line = |name: &str| {
            format!(
                "4242 ({name}) S 17 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 200 18446744073709551615"
            )
        };
        let expected = Some(Stat {
            ppid: 17,
            pgrp: 4242,
            session: 4242,
            zombie: false,
            start: 987654,
        });
        assert_eq!(parse_stat(&line("sleep")), expected);
        assert_eq!(parse_stat(&line("a) S 1 2 3 (b")), expected);
        assert_eq!(parse_stat(&line("with space")), expected);
        assert!(parse_stat(&line("z").replace(") S", ") Z")).unwrap().zombie);
        assert_eq!(parse_stat("4242 (cut"), None);
        assert_eq!(parse_stat("4242 (x) S 1 2"), None);
    }

    #[test]
    fn our_own_stat_is_readable() {
        let me = read_stat(getpid().as_raw()).expect("/proc/self/stat");
        assert_eq!(me.pgrp, getpgrp().as_raw());
        assert!(!me.zombie && me.start > 0);
    }
}
