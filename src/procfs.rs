//! Reading Linux's `/proc`: one process's stat line (parent, zombie, start time) and a
//! process's children. Used by the turn keeper (`agent::keeper`) to find what to kill and
//! by cron lease owners (`cron::owner`) to tell a dead gateway from a live one. It reads
//! only; it decides and signals nothing.

use std::collections::HashMap;
use std::sync::OnceLock;

/// What the gateway needs to know of one process, from `/proc/<pid>/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub ppid: i32,
    /// Exited, not yet reaped (state Z or X): it runs nothing.
    pub zombie: bool,
    /// Start time in clock ticks since boot: with the pid, a process's identity.
    pub start: u64,
}

/// Parses `/proc/<pid>/stat` text; the command name may hold spaces and parentheses.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    // After the name: state(0) ppid(1) pgrp(2) session(3) ... starttime(19).
    Some(Stat {
        zombie: matches!(*fields.first()?, "Z" | "X"),
        ppid: fields.get(1)?.parse().ok()?,
        start: fields.get(19)?.parse().ok()?,
    })
}

/// The stat of `pid`, `None` when it is gone or the line cannot be read.
pub fn read_stat(pid: i32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Whether `/proc/<pid>/task/<tid>/children` exists on this kernel (`CONFIG_PROC_CHILDREN`).
fn has_children_files() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| std::path::Path::new("/proc/thread-self/children").exists())
}

/// Who the children of a process are, at one moment.
#[derive(Debug)]
pub enum Children {
    /// Read per process from its threads' `children` files (cheap: only the subtree asked
    /// about; exact for stopped processes, which is why a kill stops before it re-reads).
    Files,
    /// A whole-`/proc` scan by parent pid, where the kernel has no `children` files.
    Map(HashMap<i32, Vec<i32>>),
}

impl Children {
    pub fn snapshot() -> Self {
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

    pub fn of(&self, pid: i32) -> Vec<i32> {
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
        let me = read_stat(std::process::id() as i32).expect("/proc/self/stat");
        assert!(!me.zombie && me.start > 0);
    }
}
