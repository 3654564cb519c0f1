//! What every benchmark shares: the gateway under test, ports, percentiles.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub fn binary() -> PathBuf {
    std::env::var_os("HERMES_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/hermes-gateway")
        })
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Gateway {
    pub child: Child,
    pub api: String,
    pub dash: String,
    pub home: tempfile::TempDir,
}

impl Gateway {
    pub fn start(extra_yaml: &str) -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), extra_yaml)
    }

    /// Starts in a prepared home (e.g. with a filled `state.db`).
    pub fn start_in(home: tempfile::TempDir, extra_yaml: &str) -> Self {
        Self::start_full(home, "", extra_yaml)
    }

    /// Starts with extra `dashboard` fields (`, key: value...`) and extra YAML sections.
    pub fn start_full(home: tempfile::TempDir, dashboard_fields: &str, extra_yaml: &str) -> Self {
        let (a, d) = (free_port(), free_port());
        std::fs::write(
            home.path().join("config.yaml"),
            format!(
                "gateway: {{api_server: {{port: {a}}}}}\ndashboard: {{port: {d}{dashboard_fields}}}\n{extra_yaml}"
            ),
        )
        .unwrap();
        let child = server(binary())
            .arg("--home")
            .arg(home.path())
            .arg("run")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("build the release binary first: cargo build --release");
        Self {
            child,
            api: format!("http://127.0.0.1:{a}"),
            dash: format!("http://127.0.0.1:{d}"),
            home,
        }
    }

    /// Waits until the dashboard answers and the API server takes turns
    /// (`/health/ready` 200: started up and not draining).
    pub async fn ready(&self, http: &reqwest::Client) {
        for _ in 0..5000 {
            let dash = http.get(format!("{}/api/status", self.dash)).send().await;
            let api = http.get(format!("{}/health/ready", self.api)).send().await;
            if dash.is_ok() && api.is_ok_and(|r| r.status() == 200) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("gateway never became ready");
    }

    /// Polls `/api/status` every `every` until `pred` holds.
    pub async fn wait_status(
        &self,
        http: &reqwest::Client,
        every: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) {
        loop {
            let s: serde_json::Value = http
                .get(format!("{}/api/status", self.dash))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if pred(&s) {
                return;
            }
            tokio::time::sleep(every).await;
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

pub fn summary(name: &str, unit: &str, mut xs: Vec<f64>) {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "{name}: n={} median={:.2}{unit} p90={:.2}{unit} p99={:.2}{unit} max={:.2}{unit}",
        xs.len(),
        pct(&xs, 0.5),
        pct(&xs, 0.9),
        pct(&xs, 0.99),
        xs[xs.len() - 1]
    );
}

pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// `BENCH_PIN=SERVER,CLIENT` (two CPU numbers, e.g. `0,1`): the servers under test (the
/// gateway and the Python peers) run pinned to CPU `SERVER` and this load generator to
/// CPU `CLIENT`, as the issues' side-by-side figures were measured. Unset: no pinning.
fn pins() -> Option<(String, String)> {
    let v = std::env::var("BENCH_PIN").ok()?;
    let (server, client) = v
        .split_once(',')
        .unwrap_or_else(|| panic!("BENCH_PIN={v:?}: want SERVER,CLIENT, e.g. 0,1"));
    Some((server.trim().to_string(), client.trim().to_string()))
}

/// A command for a server under test: under `taskset -c SERVER` when pinning.
pub fn server(program: impl AsRef<std::ffi::OsStr>) -> Command {
    match pins() {
        Some((cpu, _)) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpu).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// Pins every thread of this process to CPU `CLIENT` when pinning.
pub fn pin_self() {
    if let Some((_, cpu)) = pins() {
        let ok = Command::new("taskset")
            .args(["-a", "-p", "-c", &cpu, &std::process::id().to_string()])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "taskset could not pin the bench to CPU {cpu}");
        // On stderr: a bench process that is a claimer speaks a protocol on stdout.
        eprintln!(
            "pinned: servers on CPU {}, this load generator on CPU {cpu}",
            pins().unwrap().0
        );
    }
}
