//! Files under HERMES_HOME, from outside: the real binary with hostile things at the marker
//! path, the CPU a drain costs, and the modes of what the gateway creates.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::{PATIENCE, Proc, eventually, free_port, strong_secret};

const MARKER: &str = ".drain_request.json";

/// Every request has a deadline: a gateway that hangs fails the test instead of hanging it.
fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// `GET url` must answer within 5 s; returns (status, body).
async fn get(url: String, bearer: Option<&str>) -> (u16, Value) {
    let mut req = http().get(&url);
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    let r = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url} did not answer: {e}"));
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// `POST /api/gateway/drain` must answer within 5 s; returns (status, body).
async fn drain_post(p: &Proc, secret: &str, action: &str) -> (u16, Value) {
    let r = http()
        .post(format!("{}/api/gateway/drain", p.dash))
        .bearer_auth(secret)
        .body(format!(r#"{{"action":"{action}"}}"#))
        .send()
        .await
        .unwrap_or_else(|e| panic!("the drain POST ({action}) did not answer: {e}"));
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn mkfifo(path: &Path) {
    let ok = Command::new("mkfifo").arg(path).status().unwrap().success();
    assert!(ok, "mkfifo {}", path.display());
}

/// What the test puts where the marker goes.
#[derive(Debug, Clone, Copy)]
enum Hostile {
    Fifo,
    Directory,
    SymlinkToDevZero,
    SymlinkToRegularFile,
}

impl Hostile {
    fn create(self, home: &Path) {
        let at = home.join(MARKER);
        match self {
            Self::Fifo => mkfifo(&at),
            Self::Directory => std::fs::create_dir(&at).unwrap(),
            Self::SymlinkToDevZero => std::os::unix::fs::symlink("/dev/zero", &at).unwrap(),
            Self::SymlinkToRegularFile => {
                let target = home.join("elsewhere.json");
                std::fs::write(
                    &target,
                    r#"{"action":"drain","requested_at":"2099-01-01T00:00:00Z","principal":"followed-the-link"}"#,
                )
                .unwrap();
                std::os::unix::fs::symlink(&target, &at).unwrap();
            }
        }
    }
}

/// The gateway drains, keeps answering, answers drain POSTs and still exits 0 on SIGTERM.
async fn check_hostile_marker(kind: Hostile, before_start: bool) {
    let home = tempfile::tempdir().unwrap();
    let secret = strong_secret();
    let env = [("HERMES_DASHBOARD_DRAIN_SECRET", secret.as_str())];
    if before_start {
        kind.create(home.path());
    }
    let mut p = Proc::start(home.path(), "", &env);
    if !before_start {
        p.wait_running().await;
        kind.create(home.path());
    }
    p.wait_status(|s| s["gateway_state"] == "draining").await;

    let (code, health) = get(format!("{}/health", p.api), None).await;
    assert_eq!(
        (code, &health["status"]),
        (200, &Value::from("ok")),
        "{kind:?}"
    );
    let (code, detail) = get(format!("{}/api/gateway/drain", p.dash), Some(&secret)).await;
    assert_eq!(code, 200, "{kind:?}: {detail}");
    assert_eq!(detail["draining"], true, "{kind:?}");
    assert_eq!(
        detail["principal"], "marker",
        "{kind:?}: the marker path must not be followed or read"
    );
    assert!(
        p.stderr().contains("not a regular file"),
        "{kind:?}: the odd marker is logged; stderr:\n{}",
        p.stderr()
    );

    match kind {
        Hostile::Directory => {
            // Neither action can replace or remove a directory: a clear error, no hang.
            for action in ["cancel", "drain"] {
                let (code, body) = drain_post(&p, &secret, action).await;
                assert_eq!(code, 409, "{action}: {body}");
                let detail = body["detail"].as_str().unwrap_or_default();
                assert!(
                    detail.contains("directory") && detail.contains(MARKER),
                    "{action}: {body}"
                );
            }
            assert_eq!(
                get(format!("{}/api/status", p.dash), None).await.1["gateway_state"],
                "draining"
            );
        }
        Hostile::Fifo => {
            // Begin replaces the FIFO with a real marker; cancel removes it.
            let (code, body) = drain_post(&p, &secret, "drain").await;
            assert_eq!(code, 200, "{body}");
            let meta = std::fs::symlink_metadata(home.path().join(MARKER)).unwrap();
            assert!(meta.file_type().is_file(), "the FIFO was replaced");
            let (code, body) = drain_post(&p, &secret, "cancel").await;
            assert_eq!((code, &body["was_draining"]), (200, &Value::from(true)));
            p.wait_running().await;
        }
        Hostile::SymlinkToDevZero | Hostile::SymlinkToRegularFile => {
            // Cancel removes the link, never what it points at.
            let (code, body) = drain_post(&p, &secret, "cancel").await;
            assert_eq!((code, &body["was_draining"]), (200, &Value::from(true)));
            assert!(std::fs::symlink_metadata(home.path().join(MARKER)).is_err());
            p.wait_running().await;
            if let Hostile::SymlinkToRegularFile = kind {
                assert!(home.path().join("elsewhere.json").exists());
            }
        }
    }

    p.signal("TERM");
    assert_eq!(
        p.wait_exit().await,
        0,
        "{kind:?}: SIGTERM still ends the gateway"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_at_the_marker_path_drains_and_hangs_nothing() {
    check_hostile_marker(Hostile::Fifo, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_at_the_marker_path_at_startup_drains_and_hangs_nothing() {
    check_hostile_marker(Hostile::Fifo, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_at_the_marker_path_drains_and_drain_posts_answer_409() {
    check_hostile_marker(Hostile::Directory, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlink_to_dev_zero_at_the_marker_path_is_never_read() {
    check_hostile_marker(Hostile::SymlinkToDevZero, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlink_to_a_regular_file_at_the_marker_path_is_not_followed() {
    check_hostile_marker(Hostile::SymlinkToRegularFile, true).await;
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let out = Command::new("getconf").arg("CLK_TCK").output().unwrap();
    let hz: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    ticks as f64 / hz
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_marker_costs_under_5_percent_of_a_core() {
    let home = tempfile::tempdir().unwrap();
    let p = Proc::start(home.path(), "", &[]);
    p.wait_running().await;
    std::fs::write(
        home.path().join(MARKER),
        r#"{"action":"drain","requested_at":"2099-01-01T00:00:00Z","principal":"operator"}"#,
    )
    .unwrap();
    p.wait_status(|s| s["gateway_state"] == "draining").await;
    let pid = p.child.id();
    let before = cpu_seconds(pid);
    // A measuring window, not an ordering wait: the gateway is idle and draining throughout.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let used = cpu_seconds(pid) - before;
    assert!(
        used < 0.15,
        "the gateway used {used:.2} s of CPU in 3 s while draining"
    );
    assert_eq!(
        get(format!("{}/api/status", p.dash), None).await.1["gateway_state"],
        "draining"
    );
}

/// Runs the binary under `umask 022` (the common default), so modes come from the code.
fn under_umask_022(home: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#"umask 022; exec "$0" "$@""#)
        .arg(env!("CARGO_BIN_EXE_hermes-gateway"))
        .arg("--home")
        .arg(home)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(Stdio::null());
    cmd
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_under_home_are_private_under_umask_022() {
    let root = tempfile::tempdir().unwrap();
    // Two levels the gateway must create itself; the config lives outside them.
    let home: PathBuf = root.path().join("created/home");
    let config = root.path().join("config.yaml");
    let (api, dash) = (free_port(), free_port());
    std::fs::write(
        &config,
        format!("gateway: {{api_server: {{port: {api}}}}}\ndashboard: {{port: {dash}}}\n"),
    )
    .unwrap();
    let secret = strong_secret();
    let stderr = root.path().join("stderr.log");
    let mut cmd = under_umask_022(&home, &["--config", config.to_str().unwrap(), "run"]);
    cmd.env("HERMES_DASHBOARD_DRAIN_SECRET", &secret)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap());
    let mut p = Proc {
        child: cmd.spawn().unwrap(),
        api: format!("http://127.0.0.1:{api}"),
        dash: format!("http://127.0.0.1:{dash}"),
        stderr_log: stderr,
    };
    p.wait_running().await;
    // A drain writes the marker, the audit log and (through the mirror) the state file.
    let (code, body) = drain_post(&p, &secret, "drain").await;
    assert_eq!(code, 200, "{body}");
    let state_file = home.join("gateway_state.json");
    eventually(PATIENCE, "the state file to say draining", async || {
        let text = std::fs::read_to_string(&state_file).map_err(|e| e.to_string())?;
        if text.contains("\"draining\"") {
            Ok(())
        } else {
            Err(text)
        }
    })
    .await;
    for dir in [root.path().join("created"), home.clone(), home.join("logs")] {
        assert_eq!(format!("{:o}", mode(&dir)), "700", "{}", dir.display());
    }
    for file in [
        "state.db",
        "state.db-wal",
        "state.db-shm",
        "logs/dashboard-auth.log",
        "gateway_state.json",
        MARKER,
    ] {
        assert_eq!(format!("{:o}", mode(&home.join(file))), "600", "{file}");
    }
    p.signal("TERM");
    assert_eq!(p.wait_exit().await, 0, "{}", p.stderr());
    // After the exit: a write in progress has its temp file, but none may outlive it.
    let leftovers: Vec<_> = std::fs::read_dir(&home)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");

    // The CLI writes the marker with the same function: also private, in a home it creates.
    let cli_home = root.path().join("cli-home");
    let out = under_umask_022(&cli_home, &["drain", "begin", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(format!("{:o}", mode(&cli_home)), "700");
    assert_eq!(format!("{:o}", mode(&cli_home.join(MARKER))), "600");
}

/// The marker as `hermes-gateway drain begin` writes it, seen by `strace`: a temp file
/// with a random name beside it, created exclusively (`O_EXCL|O_NOFOLLOW`, 0600, so a file
/// or link planted at a guessed name is never written through), synced, renamed over the
/// marker, and the directory synced after the rename so the rename survives a crash.
#[test]
fn the_marker_is_written_through_a_random_exclusive_temp_file_and_a_synced_directory() {
    let home = tempfile::tempdir().unwrap();
    let trace = home.path().join("trace.txt");
    let mut temps = Vec::new();
    for _ in 0..2 {
        let out = Command::new("strace")
            .args(["-f", "-qq", "-o"])
            .arg(&trace)
            .args([
                "-e",
                "trace=openat,fsync,fdatasync,rename,renameat,renameat2",
            ])
            .arg(env!("CARGO_BIN_EXE_hermes-gateway"))
            .arg("--home")
            .arg(home.path())
            .args(["drain", "begin"])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .output()
            .expect("strace is needed for this test: run .ci/deps");
        assert!(out.status.success(), "{out:?}");
        let text = std::fs::read_to_string(&trace).unwrap();
        temps.push(marker_write_in(&text, home.path()));
    }
    assert_ne!(temps[0], temps[1], "each write picks a new temp name");
}

/// Checks one traced marker write; returns its temp file's name.
fn marker_write_in(trace: &str, home: &Path) -> String {
    let lines: Vec<&str> = trace.lines().collect();
    let fd_of = |line: &str| line.rsplit("= ").next().unwrap().trim().to_owned();
    let find = |from: usize, what: &dyn Fn(&str) -> bool| {
        (from..lines.len())
            .find(|&i| what(lines[i]))
            .unwrap_or_else(|| panic!("no such call after line {from}:\n{trace}"))
    };
    let prefix = format!("{}/.{MARKER}.", home.display());
    let open = find(0, &|l| l.contains("openat(") && l.contains(&prefix));
    let opened = lines[open];
    for flag in ["O_CREAT", "O_EXCL", "O_NOFOLLOW", "0600"] {
        assert!(opened.contains(flag), "{flag} missing: {opened}");
    }
    let temp = opened.split('"').nth(1).unwrap().to_owned();
    let random = temp
        .strip_prefix(&prefix)
        .and_then(|r| r.strip_suffix(".tmp"))
        .unwrap();
    assert!(
        random.len() == 16 && random.bytes().all(|b| b.is_ascii_hexdigit()),
        "{temp}"
    );
    let fd = fd_of(opened);
    let synced = find(open, &|l| l.contains(&format!("fsync({fd})")));
    let marker = format!("{}/{MARKER}", home.display());
    let renamed = find(synced, &|l| {
        l.contains("rename") && l.contains(&temp) && l.contains(&format!("\"{marker}\""))
    });
    let dir = format!("\"{}\"", home.display());
    let dir_open = find(renamed, &|l| l.contains("openat(") && l.contains(&dir));
    let dir_fd = fd_of(lines[dir_open]);
    find(dir_open, &|l| l.contains(&format!("fsync({dir_fd})")));
    temp
}
