//! The fire decision table against a fake verifier and a real `CronService` on SQLite.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use jiff::tz::TimeZone;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::agent::{Backend, EchoBackend};
use crate::chronos::FireClaims;
use crate::clock::{Clock, ManualClock, SharedClock};
use crate::cron::{FireOutcome, JobSpec};
use crate::lifecycle::{DrainRequest, RuntimeInfo, TurnGate};
use crate::metrics::LiveGauges;
use crate::store::Store;

const NOW: &str = "2026-11-22T10:00:00Z";

/// Answers by the token's text: `good-<jti>` (or `good` without a jti) verifies, `bad`
/// fails its check, `nokey` finds no key.
#[derive(Debug)]
struct FakeVerifier;

impl FireVerifier for FakeVerifier {
    fn verify<'a>(
        &'a self,
        token: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<FireClaims, FireAuthError>> + Send + 'a>> {
        Box::pin(async move {
            match token {
                "bad" => Err(FireAuthError::BadToken("bad signature")),
                "nokey" => Err(FireAuthError::NoKey("jwks unreachable")),
                "good" => Ok(FireClaims { jti: None, exp: 0 }),
                t => match t.strip_prefix("good-") {
                    Some(jti) => Ok(FireClaims {
                        jti: Some(jti.to_owned()),
                        exp: NOW.parse::<Timestamp>().unwrap().as_second() + 300,
                    }),
                    None => Err(FireAuthError::BadToken("unknown test token")),
                },
            }
        })
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    fires: Fires,
    cron: Arc<CronService>,
    gate: Arc<TurnGate>,
    clock: Arc<ManualClock>,
    metrics: Arc<Metrics>,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW.parse().unwrap());
    let shared: SharedClock = clock.clone();
    let metrics = Arc::new(Metrics::default());
    let gate = TurnGate::new(shared.clone(), metrics.clone(), Default::default());
    gate.mark_serving();
    let info = Arc::new(RuntimeInfo {
        version: "test",
        pid: 1,
        start_time: shared.now(),
        restart_drain_timeout: 0.0,
        auth_required: false,
        auth_providers: Vec::new(),
        api_server_addr: Default::default(),
        dashboard_addr: Default::default(),
        cron: Default::default(),
    });
    let store = Store::sqlite(&dir.path().join("state.db"), &*shared)
        .await
        .unwrap();
    let cron = Arc::new(CronService::new(
        store,
        gate.clone(),
        Arc::new(Backend::Echo(EchoBackend::new(0))),
        shared.clone(),
        TimeZone::UTC,
        info,
        std::time::Duration::from_secs(300),
        Default::default(),
        CancellationToken::new(),
    ));
    let audit = Arc::new(AuditLog::new(dir.path().join("audit.log"), shared));
    let fires = Fires::new(Arc::new(FakeVerifier), cron.clone(), audit, metrics.clone());
    Fixture {
        dir,
        fires,
        cron,
        gate,
        clock,
        metrics,
    }
}

impl Fixture {
    /// The audit records written so far, without their timestamps.
    fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join("audit.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let mut v: Value = serde_json::from_str(l).unwrap();
                v.as_object_mut().unwrap().remove("ts");
                v
            })
            .collect()
    }

    /// How many fires were counted with `outcome`.
    fn counted(&self, outcome: &str) -> usize {
        let text = self.metrics.render(LiveGauges {
            in_flight: 0,
            state: "running",
        });
        let line = format!("hermes_cron_fires_total{{outcome=\"{outcome}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(line.as_str()))
            .map_or(0, |n| n.trim().parse().unwrap())
    }

    /// A job firing every minute, its first slot a minute away.
    async fn job(&self) -> String {
        let spec = JobSpec {
            name: "j".into(),
            prompt: "hello".into(),
            schedule: "every 1m".into(),
            enabled: None,
            repeat: None,
            deliver: None,
        };
        self.cron.create(spec).await.unwrap().id
    }

    async fn fire(&self, token: Option<&str>, body: Value) -> Result<Accepted, FireRefusal> {
        self.fires
            .fire(token, body.to_string().as_bytes(), "192.0.2.7")
            .await
    }
}

fn rejected(reason: &str, job_id: Option<&str>) -> Value {
    json!({"event": "cron_fire_rejected", "reason": reason, "job_id": job_id, "ip": "192.0.2.7"})
}

fn accepted(job_id: &str, outcome: &str, run_id: Option<&str>) -> Value {
    json!({"event": "cron_fire_accepted", "job_id": job_id, "outcome": outcome,
        "run_id": run_id, "ip": "192.0.2.7"})
}

#[tokio::test]
async fn refusals_are_decided_token_first_then_body_and_each_is_audited_and_counted() {
    let f = fixture().await;
    let unknown = json!({"job_id": "abcdefabcdef"});
    // (token, body, refusal, audit reason, metric outcome)
    let table: &[(Option<&str>, Value, &str, &str, &str)] = &[
        (
            None,
            unknown.clone(),
            "BadToken",
            "missing token",
            "unauthorized",
        ),
        (
            Some("bad"),
            unknown.clone(),
            "BadToken",
            "bad signature",
            "unauthorized",
        ),
        (
            Some("bad"),
            json!({}),
            "BadToken",
            "bad signature",
            "unauthorized",
        ),
        (
            Some("nokey"),
            json!({}),
            "NoKey",
            "jwks unreachable",
            "unavailable",
        ),
        (
            Some("good"),
            json!({}),
            "BadBody",
            "missing job_id",
            "bad_request",
        ),
        (
            Some("good"),
            json!({"job_id": "a", "fire_at": "tomorrow"}),
            "BadBody",
            "invalid fire_at \"tomorrow\": expected an RFC 3339 time",
            "bad_request",
        ),
    ];
    for (i, (token, body, refusal, reason, outcome)) in table.iter().enumerate() {
        let before = f.counted(outcome);
        let got = f.fire(*token, body.clone()).await.unwrap_err();
        assert!(
            format!("{got:?}").starts_with(refusal),
            "{token:?} {body}: {got:?}"
        );
        if let FireRefusal::BadBody(message) = &got {
            assert!(message.starts_with(reason), "{message}");
        }
        let record = &f.audit()[i];
        let logged = record["reason"].as_str().unwrap();
        assert!(logged.starts_with(reason), "{token:?} {body}: {logged}");
        assert_eq!(
            record,
            &rejected(logged, None),
            "{token:?} {body}: no job id, no token in the record"
        );
        assert_eq!(f.counted(outcome), before + 1, "{token:?} {body}");
    }
    assert_eq!(f.audit().len(), table.len(), "one record per answer");
}

#[tokio::test]
async fn a_draining_gateway_refuses_a_valid_fire_naming_the_job() {
    let f = fixture().await;
    let id = f.job().await;
    f.gate.enter_drain(DrainRequest {
        requested_at: NOW.parse().unwrap(),
        principal: "test".into(),
    });
    f.clock.advance(Duration::from_secs(60));
    let got = f.fire(Some("good-j1"), json!({"job_id": id})).await;
    assert!(
        matches!(got, Err(FireRefusal::Cron(CronError::Draining))),
        "{got:?}"
    );
    let reason = CronError::Draining.to_string();
    assert_eq!(f.audit(), [rejected(&reason, Some(&id))]);
    assert_eq!(f.counted("draining"), 1);
    assert!(
        f.cron.runs(&id, 10).await.unwrap().is_empty(),
        "nothing claimed"
    );
}

#[tokio::test]
async fn accepted_fires_answer_cron_s_outcome_and_are_audited_with_it() {
    let f = fixture().await;
    let due = f.job().await;
    let paused = f.job().await;
    f.cron.pause(&paused).await.unwrap();
    let waiting = f.job().await;
    f.clock.advance(Duration::from_secs(60));
    let at_slot = |id: &str| json!({"job_id": id, "fire_at": f.clock.now().to_string()});

    let started = f.fire(Some("good-j1"), at_slot(&due)).await.unwrap();
    assert_eq!(started.job_id, due);
    assert_eq!(started.fired.outcome, FireOutcome::Started);
    let run = started.fired.run_id.clone().expect("a run");
    // The same slot again, with a fresh token: claimed already.
    let again = f.fire(Some("good-j2"), at_slot(&due)).await.unwrap();
    assert_eq!(again.fired.outcome, FireOutcome::Duplicate);
    // A replayed token id is a duplicate whatever it names.
    let replayed = f
        .fire(Some("good-j1"), json!({"job_id": "abcdefabcdef"}))
        .await;
    assert_eq!(replayed.unwrap().fired.outcome, FireOutcome::Duplicate);
    let unknown = f
        .fire(Some("good"), json!({"job_id": " abcdefabcdef "}))
        .await;
    let unknown = unknown.unwrap();
    assert_eq!(
        (unknown.job_id.as_str(), unknown.fired.outcome),
        ("abcdefabcdef", FireOutcome::UnknownJob)
    );
    let p = f
        .fire(Some("good"), json!({"job_id": paused}))
        .await
        .unwrap();
    assert_eq!(p.fired.outcome, FireOutcome::Paused);
    let early = json!({"job_id": waiting, "fire_at": "2026-11-22T12:00:00Z"});
    let not_due = f.fire(Some("good"), early).await.unwrap();
    assert_eq!(not_due.fired.outcome, FireOutcome::NotDue);

    assert_eq!(
        f.audit(),
        [
            accepted(&due, "started", Some(&run)),
            accepted(&due, "duplicate", again.fired.run_id.as_deref()),
            accepted("abcdefabcdef", "duplicate", None),
            accepted("abcdefabcdef", "unknown_job", None),
            accepted(&paused, "paused", None),
            accepted(&waiting, "not_due", None),
        ]
    );
    for (outcome, n) in [
        ("started", 1),
        ("duplicate", 2),
        ("unknown_job", 1),
        ("paused", 1),
        ("not_due", 1),
    ] {
        assert_eq!(f.counted(outcome), n, "{outcome}");
    }
}

#[test]
fn body_parsing() {
    let at: Timestamp = "2026-12-01T09:00:00Z".parse().unwrap();
    let ok = |body: &str, want: (&str, Option<Timestamp>)| {
        let (id, fire_at) = parse_body(body.as_bytes()).unwrap();
        assert_eq!((id.as_str(), fire_at), want, "{body}");
    };
    ok(r#"{"job_id":"abc"}"#, ("abc", None));
    ok(r#"{"job_id":" abc ","fire_at":null}"#, ("abc", None));
    ok(
        r#"{"job_id":"abc","fire_at":"2026-12-01T09:00:00Z"}"#,
        ("abc", Some(at)),
    );
    ok(
        r#"{"job_id":"abc","fire_at":1796115600}"#,
        ("abc", Some(at)),
    );
    let err = |body: &str, want: &str| {
        let e = parse_body(body.as_bytes()).unwrap_err();
        assert!(e.contains(want), "{body}: {e}");
    };
    for body in [
        "",
        "nope",
        "[]",
        "{}",
        r#"{"job_id":""}"#,
        r#"{"job_id":5}"#,
    ] {
        err(body, "missing job_id");
    }
    err(
        r#"{"job_id":"a","fire_at":"tomorrow"}"#,
        "invalid fire_at \"tomorrow\"",
    );
    err(r#"{"job_id":"a","fire_at":true}"#, "invalid fire_at true");
    let big = format!(
        r#"{{"job_id":"a","pad":"{}"}}"#,
        "x".repeat(FIRE_BODY_LIMIT)
    );
    err(&big, &format!("body larger than {FIRE_BODY_LIMIT} bytes"));
}
