//! Fault-injection soak (SPEC §5, §7, §8, §10): real gateway processes, on SQLite and on
//! PostgreSQL (two replicas at once, sharing the database, each with its own ticker),
//! take chat turns, cron runs and Chronos fires while drains begin and cancel and the
//! processes are SIGKILLed, SIGTERMed and SIGUSR1ed at random moments: under load, while
//! starting up, and during the drain of a shutdown. At the end the promises are checked
//! from outside, through the HTTP API, the state files and /proc:
//!
//! - every chat turn answered 200 carries the agent's whole reply;
//! - every 202'd fire has exactly one run for its slot (and `started` names that run);
//! - no job has two runs for one slot (across replicas); no run is left `running`;
//! - no agent process (nor one it daemonised with `setsid`) outlives its gateway;
//! - a clean exit leaves `gateway_state.json` saying `stopped`.
//!
//! `cargo test` runs a short soak (5 lives per backend, one of each ending). The long one is
//! `HERMES_SOAK_ROUNDS=25 cargo test --test it soak -- --nocapture --test-threads 1`;
//! `HERMES_SOAK_SEED` replays a run (the seed is printed).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::support::{Proc, TestDatabase, eventually, strong_secret};

const RSA_KEY: &str = include_str!("../fixtures/chronos/rsa_a.key");
const RSA_PUB: &str = include_str!("../fixtures/chronos/rsa_a.pub");
const AUD: &str = "agent:soak";
/// What the soak's agent answers when it runs to its end.
const REPLY: &str = "soak-reply";

/// A small deterministic generator (xorshift64*), so a failing soak replays from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo))
    }
}

/// How a gateway life ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Kill,
    Term,
    Restart,
    /// SIGTERM, then SIGKILL 0–400 ms later: mostly inside the shutdown's drain.
    TermThenKill,
    /// SIGKILL 0–150 ms after the spawn, with no load: inside the startup (the store's
    /// open and migration, the sweep of the last life's runs).
    StartupKill,
}

impl Fault {
    fn random(rng: &mut Rng) -> Self {
        [
            Self::Kill,
            Self::Kill,
            Self::Term,
            Self::Restart,
            Self::TermThenKill,
            Self::StartupKill,
        ][rng.below(6) as usize]
    }
}

/// What the load saw during the soak, checked at the end.
#[derive(Default)]
struct Ledger {
    turns: Turns,
    /// (job id, slot, outcome, run id) of every 202'd fire.
    fires: Vec<(String, String, String, Option<String>)>,
    jobs: HashSet<String>,
    kills: usize,
    terms: usize,
    restarts: usize,
    /// SIGTERMs that a SIGKILL cut short, and SIGKILLs during startup.
    term_kills: usize,
    startup_kills: usize,
    drains: usize,
    cancels: usize,
}

/// How the chat turns sent during the soak were answered.
#[derive(Default)]
struct Turns {
    /// 200 with the agent's whole reply.
    ok: usize,
    /// 503: draining or stopping.
    refused: usize,
    /// No connection: no process was listening (between two lives).
    unreachable: usize,
    /// Sent, and the process died before the whole answer reached the client.
    cut: usize,
}

impl Turns {
    fn add(&mut self, other: Turns) {
        self.ok += other.ok;
        self.refused += other.refused;
        self.unreachable += other.unreachable;
        self.cut += other.cut;
    }
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn fire_token() -> String {
    let claims = json!({
        "exp": now() + 60, "nbf": now() - 5, "iat": now(), "aud": AUD,
        "purpose": "cron_fire", "jti": hermes_gateway::ids::random_hex128(),
    });
    let key = EncodingKey::from_rsa_pem(RSA_KEY.as_bytes()).unwrap();
    jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &key).unwrap()
}

/// The config every life uses: a `command` agent that daemonises a sleeper tagged `mark`
/// (which must die with its turn), a 1 s ticker and pinned fire-token keys.
fn yaml(mark: &str) -> String {
    let script = format!(
        "export SOAK_MARK={mark}; setsid sh -c 'sleep 60; :' {mark}-orphan </dev/null >/dev/null 2>&1 & \
         cat >/dev/null; sleep 0.$(( $$ % 4 )); printf {REPLY}"
    );
    let argv = serde_json::to_string(&["sh", "-c", &script, mark]).unwrap();
    format!(
        "agent: {{backend: command, restart_drain_timeout: 5, command: {{argv: {argv}, timeout_seconds: 20}}}}\n\
         cron: {{tick_interval_seconds: 1, chronos: {{expected_audience: {AUD:?}, nas_public_keys: [{}]}}}}\n",
        serde_json::to_string(RSA_PUB).unwrap()
    )
}

/// The pids of live (non-zombie) processes whose command line or environment carries `mark`
/// (the agent exports it, so every process it starts inherits it).
fn processes_marked(mark: &str) -> Vec<u32> {
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let mut seen = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        seen.extend(std::fs::read(entry.path().join("environ")).unwrap_or_default());
        if !String::from_utf8_lossy(&seen).contains(mark) {
            continue;
        }
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let state = stat.rsplit_once(") ").map(|(_, r)| r.chars().next());
        if state != Some(Some('Z')) {
            found.push(pid);
        }
    }
    found
}

/// Fails unless every agent process of the soak is gone within 3 s (`what` names the
/// moment: they must not outlive their gateway).
async fn wait_no_agents(mark: &str, what: &str) {
    let what = format!("the agent processes to end with their gateway ({what})");
    eventually(Duration::from_secs(3), &what, async || {
        let left = processes_marked(mark);
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("{left:?}"))
        }
    })
    .await;
}

/// Drives chat turns until `stop`; records what each answer was.
async fn chat_load(api: String, stop: tokio_util::sync::CancellationToken) -> Turns {
    let http = reqwest::Client::new();
    let mut seen = Turns::default();
    while !stop.is_cancelled() {
        let sent = http
            .post(format!("{api}/v1/chat/completions"))
            .json(&json!({"messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await;
        let resp = match sent {
            Ok(resp) => resp,
            Err(e) => {
                if e.is_connect() {
                    seen.unreachable += 1;
                } else {
                    seen.cut += 1;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let status = resp.status().as_u16();
        match (status, resp.json::<Value>().await) {
            (200, Ok(v)) => {
                assert_eq!(
                    v["choices"][0]["message"]["content"], REPLY,
                    "a 200 turn must carry the agent's whole reply: {v}"
                );
                assert_eq!(v["choices"][0]["finish_reason"], "stop", "{v}");
                seen.ok += 1;
            }
            // A 200 whose body never arrived: the process died mid-answer.
            (200, Err(_)) => seen.cut += 1,
            (503, _) => {
                seen.refused += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (s, body) => panic!("unexpected chat answer {s}: {body:?}"),
        }
    }
    seen
}

/// Creates one-shot jobs due in a second or two and fires each one to three times, each
/// creation and fire at a replica picked at random (so the fires of one slot reach
/// different replicas); a replica that is gone is skipped over.
async fn fire_load(
    apis: Vec<String>,
    stop: tokio_util::sync::CancellationToken,
    seed: u64,
) -> (Vec<(String, String, String, Option<String>)>, Vec<String>) {
    let http = reqwest::Client::new();
    let mut rng = Rng(seed | 1);
    let (mut fires, mut jobs) = (Vec::new(), Vec::new());
    let pause = Duration::from_millis(20);
    while !stop.is_cancelled() {
        let at = jiff::Timestamp::from_second(now() + 1 + rng.below(2) as i64)
            .unwrap()
            .to_string();
        let api = &apis[rng.below(apis.len() as u64) as usize];
        let created = http
            .post(format!("{api}/api/jobs"))
            .json(&json!({"name": "soak fire", "prompt": "fired", "schedule": at}))
            .send()
            .await;
        let Ok(Ok(v)) = (match created {
            Ok(resp) => Ok(resp.json::<Value>().await),
            Err(e) => Err(e),
        }) else {
            tokio::time::sleep(pause).await;
            continue;
        };
        let (Some(id), Some(slot)) = (v["job"]["id"].as_str(), v["job"]["next_run_at"].as_str())
        else {
            panic!("job creation failed: {v}");
        };
        jobs.push(id.to_owned());
        for _ in 0..=rng.below(3) {
            let api = &apis[rng.below(apis.len() as u64) as usize];
            let sent = http
                .post(format!("{api}/api/cron/fire"))
                .bearer_auth(fire_token())
                .json(&json!({"job_id": id, "fire_at": slot}))
                .send()
                .await;
            let Ok(resp) = sent else { continue };
            let status = resp.status().as_u16();
            let Ok(v) = resp.json::<Value>().await else {
                continue;
            };
            match status {
                202 => fires.push((
                    id.to_owned(),
                    slot.to_owned(),
                    v["outcome"].as_str().unwrap_or_default().to_owned(),
                    v["run_id"].as_str().map(str::to_owned),
                )),
                503 => {}
                s => panic!("unexpected fire answer {s}: {v}"),
            }
            tokio::time::sleep(rng.millis(0, 200)).await;
        }
    }
    (fires, jobs)
}

/// One life: start a gateway in each home (replicas of one database when there are
/// several), load them while drains come and go, then end each with a fault: `first` for
/// the first replica, a random one for the others, a random moment apart, the load going
/// on until the last has ended.
async fn life(
    homes: &[&Path],
    yaml: &str,
    env: &[(&str, &str)],
    secret: &str,
    rng: &mut Rng,
    first: Fault,
    ledger: &mut Ledger,
) {
    if first == Fault::StartupKill {
        for home in homes {
            let mut proc = Proc::start(home, yaml, env);
            tokio::time::sleep(rng.millis(0, 150)).await;
            proc.signal("KILL");
            proc.wait_exit().await;
            ledger.kills += 1;
            ledger.startup_kills += 1;
        }
        return;
    }
    let procs: Vec<Proc> = homes.iter().map(|h| Proc::start(h, yaml, env)).collect();
    for proc in &procs {
        proc.wait_status(|s| matches!(s["gateway_state"].as_str(), Some("running" | "draining")))
            .await;
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let mut chat = JoinSet::new();
    for i in 0..3 {
        chat.spawn(chat_load(procs[i % procs.len()].api.clone(), stop.clone()));
    }
    let apis = procs.iter().map(|p| p.api.clone()).collect();
    let fires = tokio::spawn(fire_load(apis, stop.clone(), rng.next()));
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + rng.millis(800, 2500);
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(rng.millis(50, 400)).await;
        let action = if rng.below(3) == 0 { "drain" } else { "cancel" };
        let dash = &procs[rng.below(procs.len() as u64) as usize].dash;
        let r = http
            .post(format!("{dash}/api/gateway/drain"))
            .bearer_auth(secret)
            .json(&json!({"action": action}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{action}: {}", r.text().await.unwrap());
        if action == "drain" {
            ledger.drains += 1;
        } else {
            ledger.cancels += 1;
        }
    }
    for (i, (mut proc, home)) in procs.into_iter().zip(homes).enumerate() {
        let fault = match (i, Fault::random(rng)) {
            (0, _) => first,
            (_, Fault::StartupKill) => Fault::Kill,
            (_, f) => f,
        };
        end(&mut proc, home, fault, rng, ledger).await;
        tokio::time::sleep(rng.millis(0, 300)).await;
    }
    stop.cancel();
    while let Some(r) = chat.join_next().await {
        ledger.turns.add(r.unwrap());
    }
    let (fired, jobs) = fires.await.unwrap();
    ledger.fires.extend(fired);
    ledger.jobs.extend(jobs);
}

/// Ends a loaded gateway with `fault`; a clean exit must leave its state file `stopped`.
async fn end(proc: &mut Proc, home: &Path, fault: Fault, rng: &mut Rng, ledger: &mut Ledger) {
    match fault {
        Fault::Kill | Fault::StartupKill => {
            proc.signal("KILL");
            ledger.kills += 1;
            proc.wait_exit().await;
            return;
        }
        Fault::TermThenKill => {
            proc.signal("TERM");
            tokio::time::sleep(rng.millis(0, 400)).await;
            match proc.child.try_wait().unwrap() {
                // Still running (not yet reaped): the kill lands inside its shutdown.
                None => {
                    proc.signal("KILL");
                    ledger.term_kills += 1;
                    proc.wait_exit().await;
                    return;
                }
                Some(status) => assert_eq!(status.code(), Some(0), "{}", proc.stderr()),
            }
            ledger.terms += 1;
        }
        Fault::Term | Fault::Restart => {
            let term = fault == Fault::Term;
            proc.signal(if term { "TERM" } else { "USR1" });
            let code = proc.wait_exit().await;
            assert_eq!(code, if term { 0 } else { 75 }, "{}", proc.stderr());
            if term {
                ledger.terms += 1;
            } else {
                ledger.restarts += 1;
            }
        }
    }
    let state: Value =
        serde_json::from_slice(&std::fs::read(home.join("gateway_state.json")).unwrap()).unwrap();
    assert_eq!(
        state["gateway_state"], "stopped",
        "after a clean exit: {state}"
    );
}

/// Every promise, read from outside through a last, clean life of every replica (each
/// sweeps its own dead runs at start).
async fn check(
    homes: &[&Path],
    yaml: &str,
    env: &[(&str, &str)],
    mark: &str,
    ledger: &Ledger,
) -> usize {
    let mut procs = Vec::new();
    for home in homes {
        // Start running, so nothing new is refused.
        let _ = std::fs::remove_file(home.join(".drain_request.json"));
        let proc = Proc::start(home, yaml, env);
        proc.wait_running().await;
        procs.push(proc);
    }
    let proc = &procs[0];
    let http = reqwest::Client::new();
    let runs_of = async |id: &str| -> Vec<Value> {
        let v: Value = http
            .get(format!("{}/api/jobs/{id}/runs", proc.api))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["runs"].as_array().cloned().unwrap_or_default()
    };
    // A restart records its own dead runs at once; what the last life starts ends quickly.
    let all = eventually(Duration::from_secs(30), "no run left running", async || {
        let mut all: HashMap<String, Vec<Value>> = HashMap::new();
        for id in &ledger.jobs {
            all.insert(id.clone(), runs_of(id).await);
        }
        let running: Vec<&Value> = all
            .values()
            .flatten()
            .filter(|r| r["status"] == "running")
            .collect();
        if running.is_empty() {
            Ok(all)
        } else {
            Err(json!(running))
        }
    })
    .await;
    let mut checked = 0;
    for (id, runs) in &all {
        let mut slots = HashSet::new();
        for r in runs {
            assert_ne!(r["status"], "running", "a run left running: {r}");
            assert!(
                slots.insert(r["scheduled_for"].to_string()),
                "job {id} ran one slot twice: {runs:?}"
            );
            checked += 1;
        }
    }
    for (id, slot, outcome, run_id) in &ledger.fires {
        let runs = &all[id];
        let for_slot: Vec<_> = runs
            .iter()
            .filter(|r| {
                r["scheduled_for"]
                    .as_str()
                    .and_then(|s| s.parse::<jiff::Timestamp>().ok())
                    == slot.parse::<jiff::Timestamp>().ok()
            })
            .collect();
        match outcome.as_str() {
            "started" | "duplicate" => {
                assert_eq!(
                    for_slot.len(),
                    1,
                    "fire {outcome} for {id}@{slot}: runs {runs:?}"
                );
                if outcome == "started" {
                    assert_eq!(for_slot[0]["id"].as_str(), run_id.as_deref(), "{runs:?}");
                }
            }
            "not_due" | "unknown_job" | "paused" => {}
            other => panic!("unknown fire outcome {other}"),
        }
    }
    for (mut proc, home) in procs.into_iter().zip(homes) {
        proc.signal("TERM");
        assert_eq!(proc.wait_exit().await, 0, "{}", proc.stderr());
        let state: Value =
            serde_json::from_slice(&std::fs::read(home.join("gateway_state.json")).unwrap())
                .unwrap();
        assert_eq!(state["gateway_state"], "stopped");
    }
    wait_no_agents(mark, "after the final clean exit").await;
    checked
}

/// `replicas` gateways at once, each in its own home, on one database (`env`'s).
async fn soak(backend: &str, env: Vec<(String, String)>, replicas: usize) {
    let rounds: usize = std::env::var("HERMES_SOAK_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let seed: u64 = std::env::var("HERMES_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            u64::from_str_radix(&hermes_gateway::ids::random_hex128()[..15], 16).unwrap()
        });
    println!("soak {backend}: {rounds} lives of {replicas} replica(s), HERMES_SOAK_SEED={seed}");
    let mut rng = Rng(seed | 1);
    let dirs: Vec<tempfile::TempDir> = (0..replicas)
        .map(|_| tempfile::tempdir().unwrap())
        .collect();
    let homes: Vec<&Path> = dirs.iter().map(|d| d.path()).collect();
    let mark = format!("soak-{}", &hermes_gateway::ids::random_hex128()[..12]);
    let yaml = yaml(&mark);
    let secret = strong_secret();
    let mut env: Vec<(String, String)> = env;
    env.push(("HERMES_DASHBOARD_DRAIN_SECRET".into(), secret.clone()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut ledger = Ledger::default();
    for round in 0..rounds {
        // Each kind of ending at least once in a short soak, then at random.
        let fault = match round {
            0 => Fault::Kill,
            1 => Fault::StartupKill,
            2 => Fault::Term,
            3 => Fault::TermThenKill,
            4 => Fault::Restart,
            _ => Fault::random(&mut rng),
        };
        life(&homes, &yaml, &env, &secret, &mut rng, fault, &mut ledger).await;
        wait_no_agents(&mark, &format!("life {round} ended by {fault:?}")).await;
    }
    let runs = check(&homes, &yaml, &env, &mark, &ledger).await;
    let started = ledger.fires.iter().filter(|f| f.2 == "started").count();
    println!(
        "soak {backend}: {rounds} lives of {replicas} replica(s) ({} SIGKILL of which {} in startup, \
         {} SIGTERM, {} SIGTERM cut by SIGKILL, {} SIGUSR1), {} drains / {} cancels, \
         turns {} ok / {} refused / {} unreachable / {} cut, {} fires 202'd ({started} started), {} jobs, {runs} runs checked: all invariants held",
        ledger.kills,
        ledger.startup_kills,
        ledger.terms,
        ledger.term_kills,
        ledger.restarts,
        ledger.drains,
        ledger.cancels,
        ledger.turns.ok,
        ledger.turns.refused,
        ledger.turns.unreachable,
        ledger.turns.cut,
        ledger.fires.len(),
        ledger.jobs.len(),
    );
    assert!(
        ledger.turns.ok > 0 && started > 0,
        "the soak must have done real work"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_sqlite_turns_fires_and_runs_survive_kills_terms_and_drains() {
    soak("sqlite", Vec::new(), 1).await;
}

/// Two replicas at once on one PostgreSQL database: fires of one slot reach both, both
/// tickers claim, and still no slot runs twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_postgres_two_replicas_turns_fires_and_runs_survive_kills_terms_and_drains() {
    let db = TestDatabase::create().await;
    soak(
        "postgres",
        vec![("HERMES_DATABASE_URL".into(), db.url().to_owned())],
        2,
    )
    .await;
}
