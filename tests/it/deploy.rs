//! What ships beside the binary, checked by the tools an operator would run on it: the
//! systemd unit (`systemd-analyze verify` and `security`), the Kubernetes manifest (the
//! `kubernetes-validate` schema check, strict), and the JSON log lines a shipper reads.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::support::{Proc, strong_secret};

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Runs `program args`; (exit code, stdout, stderr). A missing tool fails the test: CI
/// installs them (`.ci/deps`).
fn run(program: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} (installed by .ci/deps): {e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The shipped unit with its `ExecStart` pointed at this build (verify wants it to exist).
fn unit_copy(dir: &Path, text: &str) -> String {
    let binary = env!("CARGO_BIN_EXE_hermes-gateway");
    let text = text.replace(
        "ExecStart=/usr/local/bin/hermes-gateway run",
        &format!("ExecStart={binary} run"),
    );
    let path = dir.join("hermes-gateway.service");
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

/// The exposure `systemd-analyze security` prints on its last line ("… level for x: 1.2 OK").
fn exposure(report: &str) -> f64 {
    let last = report
        .lines()
        .rev()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no overall exposure in:\n{report}"));
    let after = last.rsplit(": ").next().unwrap();
    after.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn the_systemd_unit_verifies_and_its_sandbox_rates_at_most_2_0() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo("deploy/hermes-gateway.service")).unwrap();
    let unit = unit_copy(dir.path(), &text);
    // verify warns about an unknown or misspelt directive but still exits 0: no output at all.
    let (code, out, err) = run("systemd-analyze", &["verify", &unit]);
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (0, "", ""),
        "systemd-analyze verify"
    );
    let (code, report, err) = run(
        "systemd-analyze",
        &["security", "--offline=yes", "--threshold=20", &unit],
    );
    let level = exposure(&report);
    assert!(
        code == 0 && level <= 2.0,
        "exposure {level} (exit {code}):\n{report}{err}"
    );
    // The sandbox keeps what the gateway needs: its state directory, spawning agents.
    for needed in [
        "ReadWritePaths=/var/lib/hermes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
    ] {
        assert!(text.contains(needed), "{needed}");
    }
    assert!(
        !text.contains("MemoryDenyWriteExecute=yes"),
        "JIT agents (node, java) need W+X memory"
    );

    // The checks can fail: a misspelt directive, and the unit before its sandbox.
    let misspelt = unit_copy(dir.path(), &text.replace("ProtectSystem=", "ProtectSytem="));
    let (_, out, err) = run("systemd-analyze", &["verify", &misspelt]);
    assert!(format!("{out}{err}").contains("ProtectSytem"), "{out}{err}");
    let bare: String = text
        .lines()
        .filter(|l| {
            !l.contains('=') || l.starts_with("Exec") || l.starts_with("User") || l.starts_with('#')
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let bare = unit_copy(dir.path(), &bare);
    let (code, report, _) = run(
        "systemd-analyze",
        &["security", "--offline=yes", "--threshold=20", &bare],
    );
    assert!(
        code != 0 && exposure(&report) > 2.0,
        "an unsandboxed unit must fail:\n{report}"
    );
}

#[test]
fn the_kubernetes_manifest_passes_strict_validation_with_its_security_context_and_pdb() {
    let path = repo("deploy/kubernetes.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let file = path.to_string_lossy().into_owned();
    let (code, out, err) = run("kubernetes-validate", &["--strict", &file]);
    assert_eq!(code, 0, "{out}{err}");
    for kind in ["deployment/", "poddisruptionbudget/"] {
        assert!(
            out.contains(&format!("passed for resource {kind}")),
            "{kind}: {out}"
        );
    }
    // What the manifest promises, read where a reviewer would look for it.
    for line in [
        "readinessProbe:\n            httpGet: {path: /health/ready, port: api}",
        "livenessProbe:\n            httpGet: {path: /health, port: api}",
        "runAsNonRoot: true",
        "allowPrivilegeEscalation: false",
        "readOnlyRootFilesystem: true",
        "capabilities: {drop: [\"ALL\"]}",
        "kind: PodDisruptionBudget",
        "unhealthyPodEvictionPolicy: AlwaysAllow",
    ] {
        assert!(text.contains(line), "deploy/kubernetes.yaml lacks {line:?}");
    }
    // The validator rejects what is wrong (so its pass means something).
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.yaml");
    std::fs::write(
        &broken,
        text.replace(
            "readOnlyRootFilesystem: true",
            "readOnlyRootFilesystem: true\n            readOnlyRoot: true",
        ),
    )
    .unwrap();
    let (code, out, err) = run(
        "kubernetes-validate",
        &["--strict", broken.to_str().unwrap()],
    );
    assert_ne!(
        code, 0,
        "an unknown field must fail strict validation: {out}{err}"
    );
}

/// Every secret the gateway holds, as the environment gives them.
fn secrets() -> Vec<(&'static str, String)> {
    vec![
        ("API_SERVER_KEY", "sk-api-7f3a9c1e5b2d4f6a8c0e".into()),
        ("HERMES_DASHBOARD_DRAIN_SECRET", strong_secret()),
        (
            "HERMES_DASHBOARD_SESSION_TOKEN",
            "session-token-5e1d2c3b4a69788".into(),
        ),
        (
            "HERMES_NOUS_ACCESS_TOKEN",
            "nous-token-a1b2c3d4e5f60718".into(),
        ),
        ("OPENAI_API_KEY", "sk-upstream-0a9b8c7d6e5f4a3b".into()),
    ]
}

fn parse_lines(stderr: &str) -> Vec<Value> {
    stderr
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("not one JSON object ({e}): {l}"));
            for key in ["timestamp", "level", "target", "message"] {
                assert!(v[key].is_string(), "{key} missing in {l}");
            }
            v
        })
        .collect()
}

#[tokio::test]
async fn json_logs_parse_line_by_line_and_carry_no_secret() {
    let home = tempfile::tempdir().unwrap();
    let secrets = secrets();
    let mut env: Vec<(&str, &str)> = secrets.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.extend([("HERMES_LOG_FORMAT", "json"), ("RUST_LOG", "debug")]);
    let mut p = Proc::start(home.path(), "", &env);
    p.wait_running().await;
    let http = reqwest::Client::new();
    let key = &secrets[0].1;
    let chat = |auth: String| {
        http.post(format!("{}/v1/chat/completions", p.api))
            .bearer_auth(auth)
            .json(&serde_json::json!({"messages": [{"role": "user", "content": "hello"}]}))
            .send()
    };
    assert_eq!(chat(format!("{key}-wrong")).await.unwrap().status(), 401);
    assert_eq!(chat(key.clone()).await.unwrap().status(), 200);
    let drain = |auth: String, body: &'static str| {
        http.post(format!("{}/api/gateway/drain", p.dash))
            .bearer_auth(auth)
            .body(body)
            .send()
    };
    let drain_secret = &secrets[1].1;
    assert_eq!(
        drain(format!("{drain_secret}x"), "{}")
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        drain(drain_secret.clone(), "{}").await.unwrap().status(),
        200
    );
    assert_eq!(
        drain(drain_secret.clone(), r#"{"action":"cancel"}"#)
            .await
            .unwrap()
            .status(),
        200
    );
    p.signal("TERM");
    assert_eq!(p.wait_exit().await, 0);

    let stderr = p.stderr();
    let lines = parse_lines(&stderr);
    let messages: Vec<&str> = lines.iter().filter_map(|v| v["message"].as_str()).collect();
    assert!(messages.contains(&"gateway ready"), "{messages:?}");
    assert!(
        lines.iter().any(|v| v["level"] == "DEBUG"),
        "RUST_LOG=debug reached the filter"
    );
    assert!(lines.iter().any(|v| {
        v["target"]
            .as_str()
            .is_some_and(|t| t.starts_with("hermes_gateway"))
    }));
    for (name, value) in &secrets {
        assert!(
            !stderr.contains(value.as_str()),
            "{name} appears in the logs"
        );
    }
}

#[tokio::test]
async fn the_log_level_and_format_come_from_config_and_env() {
    // logging.level from the file when RUST_LOG is unset: warn hides the info lines.
    let home = tempfile::tempdir().unwrap();
    let mut p = Proc::start(
        home.path(),
        "logging: {format: json, level: warn}",
        &[("RUST_LOG", "")],
    );
    p.wait_running().await;
    p.signal("TERM");
    assert_eq!(p.wait_exit().await, 0);
    let lines = parse_lines(&p.stderr());
    assert!(
        lines
            .iter()
            .all(|v| v["level"] == "WARN" || v["level"] == "ERROR"),
        "{lines:?}"
    );

    // HERMES_LOG_FORMAT wins over the file; RUST_LOG over logging.level.
    let home = tempfile::tempdir().unwrap();
    let env = [("HERMES_LOG_FORMAT", "json"), ("RUST_LOG", "info")];
    let mut p = Proc::start(home.path(), "logging: {format: text, level: error}", &env);
    p.wait_running().await;
    p.signal("TERM");
    assert_eq!(p.wait_exit().await, 0);
    let lines = parse_lines(&p.stderr());
    assert!(
        lines.iter().any(|v| v["message"] == "gateway ready"),
        "{lines:?}"
    );

    // The default stays text.
    let home = tempfile::tempdir().unwrap();
    let mut p = Proc::start(home.path(), "", &[]);
    p.wait_running().await;
    p.signal("TERM");
    assert_eq!(p.wait_exit().await, 0);
    let stderr = p.stderr();
    assert!(
        stderr.contains("gateway ready") && !stderr.trim_start().starts_with('{'),
        "{stderr}"
    );
}
