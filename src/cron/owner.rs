//! Who holds a run's lease: an owner id that says which process it is, so that a gateway
//! restarting on the same host can tell its own dead runs from live ones at once instead of
//! waiting for their leases to run out (SPEC §7).
//!
//! An owner id is `v1/<scope>/<pid>/<start>/<nonce>@<host>`. The *scope* names the set of
//! processes this one can see and judge: the kernel's boot id and the pid namespace. Within
//! one scope `/proc` is authoritative: an owner whose pid is gone, or now belongs to a
//! process started at another time (pid reuse), is dead. An owner of another scope (another
//! host, another container's pid namespace, a previous boot seen from a namespace it did not
//! share) is never judged here: its lease decides. The host name is for people reading the
//! table only. Without `/proc` (not Linux) there is no scope and nothing is judged.
//!
//! It must not touch the store: the service asks it about owners the store lists.

use std::path::Path;

/// This process as a lease owner.
#[derive(Debug, Clone)]
pub struct Owner {
    /// The id written into the runs it claims.
    pub id: String,
    /// `v1/<boot>:<pidns>/` when this process can judge others of its scope.
    scope: Option<String>,
}

/// What is known about a pid of this scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Process {
    /// No process has this pid.
    Gone,
    /// A process with this pid started at this time (clock ticks since boot,
    /// `/proc/<pid>/stat` field 22).
    Started(u64),
    /// A process has this pid but its start time cannot be read (e.g. `/proc` mounted with
    /// `hidepid` and the process is another user's): it may be the owner, so it is alive.
    Unknown,
}

/// The processes of this scope, for [`Owner::is_dead`].
pub trait ProcessTable {
    fn process(&self, pid: u32) -> Process;
}

/// The real process table: `/proc`, and `kill(pid, 0)` where `/proc` does not show a pid.
#[derive(Debug, Clone, Copy)]
pub struct Procfs;

impl ProcessTable for Procfs {
    fn process(&self, pid: u32) -> Process {
        if let Some(st) = i32::try_from(pid).ok().and_then(crate::procfs::read_stat) {
            // A zombie (a killed gateway its parent has not reaped yet) runs nothing.
            return if st.zombie {
                Process::Gone
            } else {
                Process::Started(st.start)
            };
        }
        // `/proc` may hide other users' processes; signal 0 still tells "no such process"
        // (ESRCH) from "not yours" (EPERM).
        let Ok(raw) = i32::try_from(pid) else {
            return Process::Unknown;
        };
        match nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None) {
            Err(nix::errno::Errno::ESRCH) => Process::Gone,
            _ => Process::Unknown,
        }
    }
}

fn read_trimmed(path: impl AsRef<Path>) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

/// Keeps the characters an owner id field may hold (no `/` or `@`, which separate fields).
fn clean(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':'))
        .collect()
}

impl Owner {
    /// This process, identified from `/proc` (a random nonce tells apart the services one
    /// process may hold, e.g. several gateways in one test binary).
    pub fn current(pid: u32) -> Self {
        let nonce = &crate::ids::random_hex128()[..8];
        let host = read_trimmed("/proc/sys/kernel/hostname")
            .map(|h| clean(&h))
            .unwrap_or_default();
        let boot = read_trimmed("/proc/sys/kernel/random/boot_id").map(|b| clean(&b));
        let pidns = std::fs::read_link("/proc/self/ns/pid")
            .ok()
            .map(|p| clean(&p.to_string_lossy().replace("pid:", "")));
        let start = match Procfs.process(pid) {
            Process::Started(t) => Some(t),
            _ => None,
        };
        Self::from_parts(pid, boot, pidns, start, nonce, &host)
    }

    fn from_parts(
        pid: u32,
        boot: Option<String>,
        pidns: Option<String>,
        start: Option<u64>,
        nonce: &str,
        host: &str,
    ) -> Self {
        match (boot, pidns, start) {
            (Some(boot), Some(ns), Some(start)) if !boot.is_empty() && !ns.is_empty() => {
                let scope = format!("v1/{boot}:{ns}/");
                Self {
                    id: format!("{scope}{pid}/{start}/{nonce}@{host}"),
                    scope: Some(scope),
                }
            }
            _ => Self {
                id: format!("pid-{pid}-{nonce}"),
                scope: None,
            },
        }
    }

    /// True when `owner` is a process of this scope that no longer runs: its pid is gone
    /// or belongs to a process started at another time. False for this process itself
    /// (whatever the nonce), for a live process, and for anything not of this scope.
    pub fn is_dead(&self, owner: &str, procs: &dyn ProcessTable) -> bool {
        let Some(scope) = &self.scope else {
            return false;
        };
        let Some(rest) = owner.strip_prefix(scope.as_str()) else {
            return false;
        };
        let rest = rest.split_once('@').map_or(rest, |(ids, _)| ids);
        let mut fields = rest.split('/');
        let (Some(pid), Some(start)) = (
            fields.next().and_then(|p| p.parse::<u32>().ok()),
            fields.next().and_then(|s| s.parse::<u64>().ok()),
        ) else {
            return false;
        };
        match procs.process(pid) {
            Process::Gone => true,
            Process::Started(t) => t != start,
            Process::Unknown => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    struct Table(HashMap<u32, Process>);

    impl ProcessTable for Table {
        fn process(&self, pid: u32) -> Process {
            self.0.get(&pid).copied().unwrap_or(Process::Gone)
        }
    }

    fn me() -> Owner {
        Owner::from_parts(
            100,
            Some("boot-a".into()),
            Some("4026531836".into()),
            Some(5000),
            "aaaa1111",
            "host1",
        )
    }

    #[test]
    fn owners_of_this_scope_are_judged_by_pid_and_start_time() {
        let me = me();
        assert_eq!(me.id, "v1/boot-a:4026531836/100/5000/aaaa1111@host1");
        let procs = Table(HashMap::from([
            (100, Process::Started(5000)),
            (200, Process::Started(7000)),
            (300, Process::Started(9999)),
            (500, Process::Unknown),
        ]));
        let check = |owner: &str, dead: bool| {
            assert_eq!(me.is_dead(owner, &procs), dead, "{owner}");
        };
        // This process (another service in it) and a live sibling are alive.
        check("v1/boot-a:4026531836/100/5000/bbbb2222@host1", false);
        check("v1/boot-a:4026531836/200/7000/cccc3333@host1", false);
        // Gone, or the pid reused by a process started at another time.
        check("v1/boot-a:4026531836/400/7000/dddd4444@host1", true);
        check("v1/boot-a:4026531836/300/1234/eeee5555@host1", true);
        // A pid that exists but whose start time is hidden may be the owner: alive.
        check("v1/boot-a:4026531836/500/1234/eeee5555@host1", false);
        // Not ours to judge: another boot, another pid namespace, old or foreign ids.
        check("v1/boot-b:4026531836/400/7000/ffff6666@host1", false);
        check("v1/boot-a:4026532000/400/7000/ffff6666@host1", false);
        check("pid-400-abcdef12", false);
        check("test", false);
        check("v1/boot-a:4026531836/x/y/z@host1", false);
    }

    #[test]
    fn without_proc_nothing_is_judged() {
        let blind = Owner::from_parts(100, None, None, None, "aaaa1111", "");
        assert_eq!(blind.id, "pid-100-aaaa1111");
        let procs = Table(HashMap::new());
        assert!(!blind.is_dead("v1/boot-a:4026531836/400/7000/dddd4444@h", &procs));
    }

    #[test]
    fn the_real_process_table_knows_this_process_and_not_an_impossible_pid() {
        assert!(
            matches!(Procfs.process(std::process::id()), Process::Started(_)),
            "this process has a start time"
        );
        // Above any pid_max (2^22): no such process.
        assert_eq!(Procfs.process(5_000_000), Process::Gone);
    }
}
