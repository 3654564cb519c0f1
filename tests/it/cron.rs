//! Cron: the store suite on SQLite and PostgreSQL, the job API, the ticker, and exactly
//! one run per slot across two gateway processes on one PostgreSQL.

use std::sync::Arc;
use std::time::Duration;

use hermes_gateway::cron::{Job, JobState, RunStatus};
use hermes_gateway::store::{ClaimOutcome, NewRun};
use jiff::Timestamp;
use serde_json::{Value, json};

use crate::support::{
    PATIENCE, Proc, TestApp, TestDatabase, both_stores, eventually, matching, stored_job, t,
};

fn job(id: &str, next: Option<i64>) -> Job {
    stored_job(id, "every 1m", next, 0)
}

fn new_run(id: &str, job: &str, slot: i64, lease: i64) -> NewRun {
    NewRun {
        id: id.into(),
        job_id: job.into(),
        scheduled_for: t(slot),
        started_at: t(slot),
        lease_until: t(slot + lease),
        owner: "test".into(),
    }
}

#[tokio::test]
async fn store_jobs_crud_on_both_backends() {
    let (stores, _dir, _db) = both_stores().await;
    for store in stores {
        let kind = store.kind();
        store
            .insert_job(&job("aaaaaaaaaaaa", Some(60)))
            .await
            .unwrap();
        store
            .insert_job(&job("bbbbbbbbbbbb", Some(600)))
            .await
            .unwrap();
        let mut j = store.get_job("aaaaaaaaaaaa").await.unwrap();
        assert_eq!(j, job("aaaaaaaaaaaa", Some(60)), "{kind}");
        j.name = "renamed".into();
        j.enabled = false;
        j.state = JobState::Paused;
        store.update_job(&j).await.unwrap();
        assert_eq!(store.get_job("aaaaaaaaaaaa").await.unwrap().name, "renamed");
        assert_eq!(store.list_jobs().await.unwrap().len(), 2);
        assert!(store.delete_job("aaaaaaaaaaaa").await.unwrap());
        assert!(!store.delete_job("aaaaaaaaaaaa").await.unwrap());
        assert!(matches!(
            store.get_job("aaaaaaaaaaaa").await,
            Err(hermes_gateway::store::StoreError::NotFound)
        ));
        assert!(
            matches!(
                store.update_job(&j).await,
                Err(hermes_gateway::store::StoreError::NotFound)
            ),
            "{kind}"
        );
    }
}

#[tokio::test]
async fn due_scan_and_claim_are_exactly_once_on_both_backends() {
    let (stores, _dir, _db) = both_stores().await;
    for store in stores {
        let kind = store.kind();
        for (i, next) in [(1, Some(10)), (2, Some(20)), (3, Some(30)), (4, None)] {
            store
                .insert_job(&job(&format!("{i:012}"), next))
                .await
                .unwrap();
        }
        let due = store.due_jobs(t(20), 100).await.unwrap();
        let ids: Vec<_> = due.iter().map(|j| j.id.as_str()).collect();
        assert_eq!(ids, ["000000000001", "000000000002"], "{kind}");
        assert_eq!(store.due_jobs(t(20), 1).await.unwrap().len(), 1);
        assert_eq!(store.next_due_at().await.unwrap(), Some(t(10)));

        // 20 concurrent claims of one slot: exactly one wins.
        let store = Arc::new(store);
        let mut tasks = Vec::new();
        for i in 0..20 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .claim_slot(
                        &new_run(&format!("run{i}"), "000000000001", 10, 300),
                        Some(t(70)),
                        JobState::Scheduled,
                        RunStatus::Running,
                        None,
                    )
                    .await
                    .unwrap()
            }));
        }
        let mut wins = 0;
        for task in tasks {
            if task.await.unwrap() == ClaimOutcome::Claimed {
                wins += 1;
            }
        }
        assert_eq!(wins, 1, "{kind}");
        let j = store.get_job("000000000001").await.unwrap();
        assert_eq!(
            j.next_run_at,
            Some(t(70)),
            "the job advanced before dispatch"
        );
        let runs = store.list_runs("000000000001", 10).await.unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].status, RunStatus::Running);
        assert!(
            store
                .running_run("000000000001", t(11))
                .await
                .unwrap()
                .is_some()
        );

        // A second delivery for the same slot (manual open) is refused too.
        let again = store
            .open_run(&new_run("dup", "000000000001", 10, 300), RunStatus::Running)
            .await
            .unwrap();
        assert_eq!(again, ClaimOutcome::Lost, "{kind}");

        // Finish: the job records the outcome and counts the repetition.
        let mut run = runs[0].clone();
        run.status = RunStatus::Completed;
        run.output = Some("hi".into());
        run.finished_at = Some(t(12));
        assert!(store.finish_run(&run, "test", None).await.unwrap());
        assert!(
            !store.finish_run(&run, "test", None).await.unwrap(),
            "ending twice is refused"
        );
        let j = store.get_job("000000000001").await.unwrap();
        assert_eq!(j.last_status.as_deref(), Some("completed"));
        assert_eq!(j.repeat.completed, 1);
        assert!(
            store
                .running_run("000000000001", t(13))
                .await
                .unwrap()
                .is_none()
        );
    }
}

#[tokio::test]
async fn expired_leases_become_interrupted_runs_on_both_backends() {
    let (stores, _dir, _db) = both_stores().await;
    for store in stores {
        let kind = store.kind();
        store
            .insert_job(&job("cccccccccccc", Some(10)))
            .await
            .unwrap();
        let claimed = store
            .claim_slot(
                &new_run("r1", "cccccccccccc", 10, 5),
                Some(t(70)),
                JobState::Scheduled,
                RunStatus::Running,
                None,
            )
            .await
            .unwrap();
        assert_eq!(claimed, ClaimOutcome::Claimed);
        assert!(
            store.expire_leases(t(14)).await.unwrap().is_empty(),
            "lease still live"
        );
        assert!(store.renew_lease("r1", "test", t(20)).await.unwrap());
        assert!(
            store.expire_leases(t(19)).await.unwrap().is_empty(),
            "renewed"
        );
        let expired = store.expire_leases(t(20)).await.unwrap();
        assert_eq!(expired.len(), 1, "{kind}");
        assert_eq!(expired[0].status, RunStatus::Interrupted);
        let j = store.get_job("cccccccccccc").await.unwrap();
        assert_eq!(j.last_status.as_deref(), Some("interrupted"));
        assert!(j.last_error.unwrap().contains("lease expired"));
        // The dead process's late finish does not overwrite the record.
        let mut late = store.get_run("r1").await.unwrap();
        late.status = RunStatus::Completed;
        assert!(!store.finish_run(&late, "test", None).await.unwrap());
        assert_eq!(
            store.get_run("r1").await.unwrap().status,
            RunStatus::Interrupted
        );
    }
}

async fn api(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = app.http.request(method, format!("{}{path}", app.api));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// Polls the runs of job `id` (30 s at most: webhook retries take seconds) until `pred`
/// holds; returns them.
async fn wait_runs(app: &TestApp, id: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let what = format!("the runs of {id} to match");
    eventually(Duration::from_secs(30), &what, async || {
        let (_, v) = api(
            app,
            reqwest::Method::GET,
            &format!("/api/jobs/{id}/runs"),
            None,
        )
        .await;
        let runs = v["runs"].as_array().cloned().unwrap_or_default();
        if pred(&runs) { Ok(runs) } else { Err(v) }
    })
    .await
}

#[tokio::test]
async fn job_api_crud_errors_and_manual_runs() {
    use reqwest::Method;
    let app = TestApp::spawn("", &[]).await;
    let (s, v) = api(
        &app,
        Method::POST,
        "/api/jobs",
        Some(json!({"name": "t", "prompt": "hello cron", "schedule": "every monday 9am"})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let id = v["job"]["id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 12);
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(v["job"]["state"], "scheduled");
    assert_eq!(v["job"]["repeat"], json!({"times": null, "completed": 0}));
    assert_eq!(v["job"]["deliver"], "local");
    assert!(
        v["job"]["next_run_at"]
            .as_str()
            .unwrap()
            .ends_with("09:00:00.000000Z")
    );

    for (body, fragment) in [
        (
            json!({"name": "t", "prompt": "x", "schedule": "every 5 parsecs"}),
            "unknown unit",
        ),
        (
            json!({"name": "t", "prompt": "", "schedule": "every 5m"}),
            "prompt: must not be empty",
        ),
        (
            json!({"name": "t", "prompt": "x", "schedule": "2020-01-01T00:00:00Z"}),
            "in the past",
        ),
        (
            json!({"name": "t", "prompt": "x", "schedule": "every 5m", "deliver": "ftp://x"}),
            "deliver",
        ),
        (
            json!({"name": "t", "prompt": "x", "schedule": "every 5m", "colour": "red"}),
            "unknown field `colour`",
        ),
    ] {
        let (s, v) = api(&app, Method::POST, "/api/jobs", Some(body.clone())).await;
        assert_eq!(s, 400, "{body}");
        assert!(
            v["error"].as_str().unwrap().contains(fragment),
            "{body}: {v}"
        );
    }

    let (s, v) = api(
        &app,
        Method::PATCH,
        &format!("/api/jobs/{id}"),
        Some(json!({"name": "weekly hello"})),
    )
    .await;
    assert_eq!((s, v["job"]["name"].clone()), (200, json!("weekly hello")));
    let (_, v) = api(&app, Method::POST, &format!("/api/jobs/{id}/pause"), None).await;
    assert_eq!(
        (v["job"]["state"].clone(), v["job"]["enabled"].clone()),
        (json!("paused"), json!(false))
    );
    let (_, v) = api(&app, Method::POST, &format!("/api/jobs/{id}/resume"), None).await;
    assert_eq!(v["job"]["state"], "scheduled");
    let (_, v) = api(&app, Method::GET, "/api/jobs", None).await;
    assert_eq!(v["jobs"].as_array().unwrap().len(), 1);

    let (s, v) = api(&app, Method::POST, &format!("/api/jobs/{id}/run"), None).await;
    assert_eq!(s, 202, "{v}");
    let runs = wait_runs(&app, &id, |r| {
        r.first().is_some_and(|r| r["status"] == "completed")
    })
    .await;
    assert_eq!(runs[0]["output"], "hello cron");
    assert_eq!(runs[0]["id"], v["run"]["id"]);

    let (s, v) = api(&app, Method::GET, "/api/jobs/000000000000", None).await;
    assert_eq!((s, v), (404, json!({"error": "Job not found"})));
    let (s, v) = api(&app, Method::DELETE, &format!("/api/jobs/{id}"), None).await;
    assert_eq!((s, v), (200, json!({"ok": true})));
    let (s, _) = api(&app, Method::DELETE, &format!("/api/jobs/{id}"), None).await;
    assert_eq!(s, 404);

    // The job API sits behind the API key when one is set, and on the dashboard too.
    let keyed = TestApp::spawn("", &[("API_SERVER_KEY", "k-123")]).await;
    let (s, _) = api(&keyed, Method::GET, "/api/jobs", None).await;
    assert_eq!(s, 401);
    let r = keyed
        .http
        .get(format!("{}/api/jobs", keyed.dash))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "dashboard session gate");
}

/// The compat rules of SPEC §7, each answered on the wire with the field it concerns.
#[tokio::test]
async fn job_api_refuses_malformed_ids_missing_names_long_fields_and_empty_patches() {
    use reqwest::Method;
    let app = TestApp::spawn("", &[]).await;
    let (s, v) = api(
        &app,
        Method::POST,
        "/api/jobs",
        Some(json!({"name": "ok", "prompt": "x", "schedule": "every 1d"})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let id = v["job"]["id"].as_str().unwrap().to_owned();

    // Every route under /api/jobs/{id}: a malformed id is a 400 before any lookup; a
    // well-formed unknown one a 404.
    let bad_id = json!({"error": "Invalid job ID format"});
    let not_found = json!({"error": "Job not found"});
    for (method, suffix, body) in [
        (Method::GET, "", None),
        (Method::PATCH, "", Some(json!({"name": "n"}))),
        (Method::DELETE, "", None),
        (Method::POST, "/pause", None),
        (Method::POST, "/resume", None),
        (Method::POST, "/run", None),
        (Method::GET, "/runs", None),
    ] {
        for (bad, why) in [
            ("ABCDEF012345", "upper case"),
            ("0123456789a", "11 characters"),
            ("0123456789abc", "13 characters"),
            ("0123456789ag", "not hex"),
            ("my job", "a name, not an id"),
        ] {
            let path = format!("/api/jobs/{bad}{suffix}");
            let (s, v) = api(&app, method.clone(), &path, body.clone()).await;
            assert_eq!((s, &v), (400, &bad_id), "{method} {path} ({why})");
        }
        let path = format!("/api/jobs/abcdef012345{suffix}");
        let (s, v) = api(&app, method.clone(), &path, body.clone()).await;
        assert_eq!((s, &v), (404, &not_found), "{method} {path}");
    }

    let long_name = "n".repeat(201);
    let long_prompt = "p".repeat(5001);
    for (body, fragment) in [
        (
            json!({"prompt": "x", "schedule": "every 1d"}),
            "name: required",
        ),
        (
            json!({"name": "  ", "prompt": "x", "schedule": "every 1d"}),
            "name: required",
        ),
        (
            json!({"name": long_name, "prompt": "x", "schedule": "every 1d"}),
            "name: longer than 200",
        ),
        (
            json!({"name": 7, "prompt": "x", "schedule": "every 1d"}),
            "name: must be a string",
        ),
        (json!({"name": "n", "prompt": "x"}), "schedule: required"),
        (
            json!({"name": "n", "prompt": "x", "schedule": "0 0 30 2 *"}),
            "never run",
        ),
        (
            json!({"name": "n", "prompt": long_prompt, "schedule": "every 1d"}),
            "prompt: longer than 5000",
        ),
        (
            json!({"name": "n", "prompt": "x", "schedule": "every 1d", "repeat": 0}),
            "repeat: must be an integer",
        ),
        (
            json!({"name": "n", "prompt": "x", "schedule": "every 1d", "repeat": -3}),
            "repeat: must be an integer",
        ),
        (
            json!({"name": "n", "prompt": "x", "schedule": "every 1d", "repeat": 1.5}),
            "repeat: must be an integer",
        ),
        (
            json!({"name": "n", "prompt": "x", "schedule": "every 1d", "repeat": "2"}),
            "repeat: must be an integer",
        ),
        (
            json!({"name": "n", "prompt": "x", "schedule": "every 1d", "skills": ["web"]}),
            "skills:",
        ),
        (
            json!({"name": "n", "prompt": "x", "schedule": "every 1d", "skill": "web"}),
            "skill:",
        ),
        (json!(["not", "an", "object"]), "expected an object"),
    ] {
        let (s, v) = api(&app, Method::POST, "/api/jobs", Some(body.clone())).await;
        assert_eq!(s, 400, "{body}: {v}");
        let e = v["error"].as_str().unwrap();
        assert!(e.contains(fragment), "{body}: {e}");
    }
    // The limits themselves are accepted; empty skills are no skills.
    let (s, v) = api(
        &app,
        Method::POST,
        "/api/jobs",
        Some(
            json!({"name": "n".repeat(200), "prompt": "p".repeat(5000), "schedule": "every 1d",
                    "repeat": 3, "skills": [], "skill": null}),
        ),
    )
    .await;
    assert_eq!(s, 201, "{v}");

    // PATCH: only the compat fields, at least one of them, each checked like on create.
    let path = format!("/api/jobs/{id}");
    for (body, fragment) in [
        (json!({}), "no field to update"),
        (json!({"state": "completed"}), "unknown field `state`"),
        (json!({"name": ""}), "name: required"),
        (json!({"name": "n".repeat(201)}), "name: longer than 200"),
        (
            json!({"prompt": "p".repeat(5001)}),
            "prompt: longer than 5000",
        ),
        (json!({"repeat": 0}), "repeat: must be an integer"),
        (json!({"enabled": "yes"}), "enabled: must be true or false"),
        (json!({"name": null}), "name: must be a string, not null"),
        (
            json!({"enabled": null}),
            "enabled: must be true or false, not null",
        ),
        (json!({"schedule": "every 5 parsecs"}), "schedule:"),
    ] {
        let (s, v) = api(&app, Method::PATCH, &path, Some(body.clone())).await;
        assert_eq!(s, 400, "{body}: {v}");
        let e = v["error"].as_str().unwrap();
        assert!(e.contains(fragment), "{body}: {e}");
    }
    let (s, v) = api(
        &app,
        Method::PATCH,
        &path,
        Some(json!({"repeat": 4, "skills": []})),
    )
    .await;
    assert_eq!((s, &v["job"]["repeat"]["times"]), (200, &json!(4)), "{v}");
    // JSON's `5.0` is the integer 5 (the document's `integer` includes it); 1.5 was refused.
    let (s, v) = api(&app, Method::PATCH, &path, Some(json!({"repeat": 5.0}))).await;
    assert_eq!((s, &v["job"]["repeat"]["times"]), (200, &json!(5)), "{v}");
    let (_, v) = api(&app, Method::GET, &path, None).await;
    assert_eq!(
        v["job"]["name"], "ok",
        "the refused PATCHes changed nothing"
    );
}

#[tokio::test]
async fn the_ticker_runs_due_jobs_skips_while_draining_and_completes_repeat_n() {
    use reqwest::Method;
    let app = TestApp::spawn("cron: {tick_interval_seconds: 60}", &[]).await;
    // Due in about a second: picked up at once (not at the next 60 s tick).
    let (_, v) = api(
        &app,
        Method::POST,
        "/api/jobs",
        Some(json!({"name": "t", "prompt": "tick tock", "schedule": "every 1s", "repeat": 2})),
    )
    .await;
    let id = v["job"]["id"].as_str().unwrap().to_owned();
    let runs = wait_runs(&app, &id, |r| {
        r.len() == 2 && r.iter().all(|r| r["status"] == "completed")
    })
    .await;
    assert_ne!(runs[0]["scheduled_for"], runs[1]["scheduled_for"]);
    let after = eventually(PATIENCE, "the job to end completed", async || {
        let (_, v) = api(&app, Method::GET, &format!("/api/jobs/{id}"), None).await;
        matching(v, |v| v["job"]["state"] == "completed")
    })
    .await;
    assert_eq!(after["job"]["repeat"], json!({"times": 2, "completed": 2}));
    let status = app.status().await;
    assert_eq!(status["cron"]["provider"], "builtin");
    assert!(status["cron"]["last_tick_at"].is_string());

    // Draining: the ticker skips; the job stays due and runs after the cancel.
    app.state.drain.begin("test").unwrap();
    let (_, v) = api(
        &app,
        Method::POST,
        "/api/jobs",
        Some(json!({"name": "t", "prompt": "after drain", "schedule": "in 1s"})),
    )
    .await;
    let id = v["job"]["id"].as_str().unwrap().to_owned();
    let due: Timestamp = v["job"]["next_run_at"].as_str().unwrap().parse().unwrap();
    // A tick that began once the job was due, and skipped it.
    app.wait_until(|s| {
        s["cron"]["skipped_while_draining"] == true
            && s["cron"]["last_tick_at"]
                .as_str()
                .and_then(|t| t.parse::<Timestamp>().ok())
                .is_some_and(|t| t >= due)
    })
    .await;
    let (_, v) = api(&app, Method::GET, &format!("/api/jobs/{id}/runs"), None).await;
    assert_eq!(v["runs"], json!([]), "nothing runs while draining");
    assert_eq!(app.status().await["cron"]["skipped_while_draining"], true);
    app.state.drain.cancel("test").unwrap();
    let runs = wait_runs(&app, &id, |r| {
        r.first().is_some_and(|r| r["status"] == "completed")
    })
    .await;
    assert_eq!(runs[0]["output"], "after drain");
    let (_, v) = api(&app, Method::GET, &format!("/api/jobs/{id}"), None).await;
    assert_eq!(v["job"]["state"], "completed", "a one-shot ends completed");
}

#[tokio::test]
async fn webhook_delivery_posts_the_output_and_records_failures() {
    use axum::routing::post;
    use reqwest::Method;
    let got = Arc::new(std::sync::Mutex::new(Vec::<Value>::new()));
    let sink = got.clone();
    let hook = axum::Router::new()
        .route(
            "/ok",
            post(move |axum::Json(v): axum::Json<Value>| {
                let sink = sink.clone();
                async move {
                    sink.lock().unwrap().push(v);
                    "thanks"
                }
            }),
        )
        .route(
            "/down",
            post(|| async { (axum::http::StatusCode::BAD_GATEWAY, "no") }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, hook).await.unwrap() });

    let app = TestApp::spawn("", &[]).await;
    let (_, v) = api(&app, Method::POST, "/api/jobs", Some(json!({"name": "t", "prompt": "deliver me", "schedule": "every 1d", "deliver": format!("{base}/ok")}))).await;
    let id = v["job"]["id"].as_str().unwrap().to_owned();
    api(&app, Method::POST, &format!("/api/jobs/{id}/run"), None).await;
    let posted = eventually(PATIENCE, "the webhook to be posted to", async || {
        let posted = got.lock().unwrap().clone();
        (!posted.is_empty()).then_some(posted)
    })
    .await;
    assert_eq!(posted.len(), 1);
    assert_eq!(posted[0]["output"], "deliver me");
    assert_eq!(posted[0]["job_id"], id.as_str());

    let (_, v) = api(
        &app,
        Method::POST,
        "/api/jobs",
        Some(json!({"name": "t", "prompt": "lost", "schedule": "every 1d", "deliver": format!("{base}/down")})),
    )
    .await;
    let id = v["job"]["id"].as_str().unwrap().to_owned();
    api(&app, Method::POST, &format!("/api/jobs/{id}/run"), None).await;
    let runs = wait_runs(&app, &id, |r| {
        r.first()
            .is_some_and(|r| r["error"].as_str().is_some_and(|e| e.contains("delivery")))
    })
    .await;
    assert!(
        runs[0]["error"]
            .as_str()
            .unwrap()
            .contains("after 3 attempts: HTTP 502"),
        "{runs:?}"
    );
    assert_eq!(runs[0]["status"], "completed", "the run itself succeeded");
}

async fn get(http: &reqwest::Client, url: String) -> Value {
    http.get(url).send().await.unwrap().json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_postgres_run_each_slot_once_and_survive_a_sigkill() {
    let db = TestDatabase::create().await;
    let env = [("HERMES_DATABASE_URL", db.url())];
    let yaml =
        "agent: {echo: {delay_ms: 1500}}\ncron: {tick_interval_seconds: 1, lease_seconds: 3}";
    let (home_a, home_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = Proc::start(home_a.path(), yaml, &env);
    let b = Proc::start(home_b.path(), yaml, &env);
    let http = reqwest::Client::new();
    a.wait_running().await;
    b.wait_running().await;
    let mut ids = Vec::new();
    for i in 0..4 {
        let v: Value = http
            .post(format!("{}/api/jobs", a.api))
            .json(&json!({"name": "t", "prompt": format!("job {i}"), "schedule": "every 2s"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids.push(v["job"]["id"].as_str().unwrap().to_owned());
    }
    // Both processes contend for a few slots of every job before the kill.
    let runs_of = async |base: &str, id: &str| -> Vec<Value> {
        let v = get(&http, format!("{base}/api/jobs/{id}/runs?limit=100")).await;
        v["runs"].as_array().cloned().unwrap_or_default()
    };
    eventually(
        Duration::from_secs(30),
        "two slots of every job to be run",
        async || {
            for id in &ids {
                let runs = runs_of(&a.api, id).await;
                if runs.len() < 2 {
                    return Err(format!("job {id}: {}", json!(runs)));
                }
            }
            Ok(())
        },
    )
    .await;
    // SIGKILL one process mid-run: start a run on it explicitly (so it surely has one in
    // flight, whoever wins the scheduled slots), wait until it is running, then kill it.
    // The run is recorded interrupted when its lease ends, and the slots go on.
    let manual: Value = http
        .post(format!("{}/api/jobs", a.api))
        .json(&json!({"name": "t", "prompt": "manual", "schedule": "every 1d"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let manual_id = manual["job"]["id"].as_str().unwrap().to_owned();
    let started: Value = http
        .post(format!("{}/api/jobs/{manual_id}/run", a.api))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let killed_run = started["run"]["id"].as_str().unwrap().to_owned();
    // The manual run must be in flight on the process to kill.
    a.wait_status(|s| s["active_agents"].as_u64() > Some(0))
        .await;
    a.child.kill().unwrap();
    let _ = a.child.wait();
    let killed_at = Timestamp::now();
    // The survivor runs the slots after the kill (every job has a completed one scheduled
    // after it), and the run in flight on the killed process ends when its lease does.
    let all = eventually(
        Duration::from_secs(30),
        "the survivor to run every job after the kill and end the killed run",
        async || {
            let mut all = Vec::new();
            for id in &ids {
                let runs = runs_of(&b.api, id).await;
                let after = runs.iter().any(|r| {
                    r["status"] == "completed"
                        && r["scheduled_for"]
                            .as_str()
                            .and_then(|t| t.parse::<Timestamp>().ok())
                            .is_some_and(|t| t > killed_at)
                });
                if runs.len() < 4 || !after {
                    return Err(format!("job {id}: {}", json!(runs)));
                }
                all.push(runs);
            }
            let manual = runs_of(&b.api, &manual_id).await;
            let killed = manual.iter().find(|r| r["id"] == killed_run.as_str());
            if killed.is_none_or(|r| r["status"] != "interrupted") {
                return Err(format!("the killed run: {}", json!(manual)));
            }
            Ok(all)
        },
    )
    .await;
    for runs in &all {
        let mut slots: Vec<&str> = runs
            .iter()
            .map(|r| r["scheduled_for"].as_str().unwrap())
            .collect();
        let n = slots.len();
        slots.sort();
        slots.dedup();
        assert_eq!(slots.len(), n, "a slot ran twice: {runs:?}");
        assert!(n >= 4, "slots kept running after the kill: {runs:?}");
        let statuses: Vec<&str> = runs.iter().map(|r| r["status"].as_str().unwrap()).collect();
        assert!(
            statuses
                .iter()
                .all(|s| ["completed", "interrupted", "running", "skipped"].contains(s)),
            "{statuses:?}"
        );
        assert!(statuses.contains(&"completed"));
    }
    // The run in flight on the killed process ended interrupted (lease expiry), not lost.
    let v = get(&http, format!("{}/api/jobs/{manual_id}/runs", b.api)).await;
    let killed = v["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == killed_run.as_str())
        .cloned();
    assert_eq!(
        killed.map(|r| r["status"].clone()),
        Some(json!("interrupted")),
        "{v}"
    );
    let stderr = b.stderr();
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_cli_adds_lists_runs_and_imports_hermes_jobs() {
    let app = TestApp::spawn("", &[]).await;
    let home = app.home().to_path_buf();
    let url = app.api.clone();
    let run = move |args: Vec<String>| {
        let home = home.clone();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            crate::support::cli(&home, &args, &[], "")
        })
    };
    let args = |a: &[&str]| {
        let mut v: Vec<String> = a.iter().map(|s| s.to_string()).collect();
        v.extend(["--url".into(), url.clone()]);
        v
    };
    let (code, out, err) = run(args(&[
        "cron",
        "add",
        "-s",
        "every 1d",
        "--name",
        "daily",
        "--json",
        "summarise",
        "the",
        "news",
    ]))
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let id = v["job"]["id"].as_str().unwrap().to_owned();
    assert_eq!(v["job"]["prompt"], "summarise the news");

    let (code, out, _) = run(args(&["cron", "list"])).await.unwrap();
    assert_eq!(code, 0);
    assert!(
        out.contains(&id) && out.contains("daily") && out.contains("scheduled"),
        "{out}"
    );

    // Without --name the job is named after its prompt (the API requires a name).
    let (code, out, err) = run(args(&[
        "cron", "add", "-s", "every 1d", "--json", "water", "the", "plants",
    ]))
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["job"]["name"], "water the plants");
    let unnamed = v["job"]["id"].as_str().unwrap().to_owned();
    let (code, out, _) = run(args(&["cron", "rm", &unnamed])).await.unwrap();
    assert_eq!(
        (code, out.trim()),
        (0, format!("deleted {unnamed}").as_str())
    );

    let (code, _, err) = run(args(&["cron", "add", "-s", "every 5 parsecs", "x"]))
        .await
        .unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("400") && err.contains("unknown unit"), "{err}");

    let (code, _, _) = run(args(&["cron", "run", &id])).await.unwrap();
    assert_eq!(code, 0);
    wait_runs(&app, &id, |r| {
        r.first().is_some_and(|r| r["status"] == "completed")
    })
    .await;
    let (code, out, _) = run(args(&["cron", "runs", &id, "--json"])).await.unwrap();
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["runs"][0]["output"], "summarise the news");

    let file = app.home().join("jobs.json");
    std::fs::write(&file, json!({"jobs": [
        {"id": "abc", "name": "morning", "prompt": "good morning", "schedule": {"kind": "cron", "expr": "0 9 * * *", "display": "0 9 * * *"}, "repeat": {"times": null, "completed": 3}, "enabled": true, "deliver": "local"},
        {"id": "def", "name": "interval", "prompt": "ping", "schedule": {"kind": "interval", "minutes": 30, "display": "every 30m"}, "repeat": {"times": 5, "completed": 0}},
        {"id": "bad", "name": "broken", "prompt": "x", "schedule": "every 5 parsecs"},
        {"id": "anon", "prompt": "nameless", "schedule": "every 1h"}
    ]}).to_string()).unwrap();
    let (code, out, _) = run(args(&["cron", "import", file.to_str().unwrap()]))
        .await
        .unwrap();
    assert_eq!(code, 1, "one job could not be imported: {out}");
    assert!(
        out.contains("imported 3 job(s)") && out.contains("not imported: broken"),
        "{out}"
    );
    let (_, v) = api(&app, reqwest::Method::GET, "/api/jobs", None).await;
    let names: Vec<&str> = v["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(sorted, ["daily", "interval", "morning", "nameless"]);
    let interval = v["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["name"] == "interval")
        .unwrap();
    assert_eq!(interval["schedule"], "every 30m");
    assert_eq!(interval["repeat"]["times"], 5);

    let (code, _, _) = run(args(&["cron", "rm", &id])).await.unwrap();
    assert_eq!(code, 0);
    let (code, _, err) = run(args(&["cron", "show", &id])).await.unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("404"), "{err}");
}

#[tokio::test]
async fn overlap_is_skipped_and_a_job_far_behind_fires_once_then_fast_forwards() {
    use reqwest::Method;
    // Overlap: each run takes 2.5 s, the job is due every second.
    let app = TestApp::spawn("agent: {echo: {delay_ms: 2500}}", &[]).await;
    let (_, v) = api(
        &app,
        Method::POST,
        "/api/jobs",
        Some(json!({"name": "t", "prompt": "slow", "schedule": "every 1s"})),
    )
    .await;
    let id = v["job"]["id"].as_str().unwrap().to_owned();
    let runs = wait_runs(&app, &id, |r| {
        r.iter().any(|r| r["status"] == "skipped") && r.iter().any(|r| r["status"] == "completed")
    })
    .await;
    let running = runs.iter().filter(|r| r["status"] == "running").count();
    assert!(running <= 1, "never two runs of one job at once: {runs:?}");
    api(&app, Method::DELETE, &format!("/api/jobs/{id}"), None).await;

    // Far behind: 60 missed minutes fire once, and the next slot is in the future.
    let app = TestApp::spawn("cron: {tick_interval_seconds: 1}", &[]).await;
    let now = Timestamp::now();
    let mut behind = job("0123456789ab", None);
    behind.next_run_at = Some(Timestamp::from_second(now.as_second() - 3600).unwrap());
    behind.created_at = Timestamp::from_second(now.as_second() - 7200).unwrap();
    app.state.cron.store().insert_job(&behind).await.unwrap();
    let runs = wait_runs(&app, "0123456789ab", |r| {
        r.first().is_some_and(|r| r["status"] == "completed")
    })
    .await;
    assert_eq!(
        runs.len(),
        1,
        "fired once for all the missed slots: {runs:?}"
    );
    let j = app
        .state
        .cron
        .store()
        .get_job("0123456789ab")
        .await
        .unwrap();
    assert!(
        j.next_run_at.unwrap() > now,
        "fast-forwarded past now: {:?}",
        j.next_run_at
    );
    assert!(j.next_run_at.unwrap().as_second() <= now.as_second() + 61);
    let again = app.state.cron.tick().await.unwrap();
    assert_eq!(again.claimed, 0, "nothing else is due");
}

// ---- leases: dead owners, stolen leases, admission before claim --------------------

/// Whether `pid` is a running (not zombie) process.
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// The pids a sleeping command agent wrote (one line per turn).
fn agent_pids(file: &std::path::Path) -> Vec<i32> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Kills what the command agents left behind (a SIGKILLed gateway cannot).
fn kill_agents(file: &std::path::Path) {
    for pid in agent_pids(file) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// A command agent that records its pid in `pids` and sleeps a minute.
fn sleeping_agent_yaml(pids: &std::path::Path) -> String {
    let script = format!("echo $$ >> '{}'; exec sleep 60", pids.display());
    format!(
        "agent: {{backend: command, command: {{argv: [sh, -c, {}]}}}}\n",
        serde_json::to_string(&script).unwrap()
    )
}

/// SIGKILL the real binary while a run's agent sleeps, start it again in the same home:
/// the dead run is recorded interrupted within seconds (not when its 300 s lease ends),
/// and the job's next slot runs instead of being skipped as an overlap with a ghost.
async fn sigkilled_run_is_interrupted_at_restart(env: &[(&str, &str)]) {
    let home = tempfile::tempdir().unwrap();
    let pids = home.path().join("agent.pids");
    let yaml = format!(
        "{}cron: {{tick_interval_seconds: 1}}",
        sleeping_agent_yaml(&pids)
    );
    let http = reqwest::Client::new();
    let mut first = Proc::start(home.path(), &yaml, env);
    first.wait_running().await;
    let v: Value = http
        .post(format!("{}/api/jobs", first.api))
        .json(&json!({"name": "sleeper", "prompt": "sleep", "schedule": "every 2s"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = v["job"]["id"].as_str().unwrap().to_owned();
    let runs_url = |p: &Proc| format!("{}/api/jobs/{id}/runs?limit=100", p.api);
    let ghost = eventually(
        Duration::from_secs(20),
        "the first run's agent to start",
        async || {
            let v = get(&http, runs_url(&first)).await;
            let run = v["runs"].as_array()?.last()?.clone();
            (run["status"] == "running" && !agent_pids(&pids).is_empty()).then_some(run)
        },
    )
    .await;
    // Killed but not reaped: the dead gateway stays a zombie while the next one starts, as
    // under a supervisor that restarts before it waits (a zombie runs nothing).
    first.signal("KILL");
    let stat = format!("/proc/{}/stat", first.child.id());
    eventually(
        Duration::from_secs(10),
        "the killed gateway to be a zombie",
        async || {
            let text = std::fs::read_to_string(&stat).ok()?;
            text.rsplit_once(") ")?.1.starts_with('Z').then_some(())
        },
    )
    .await;
    kill_agents(&pids);

    let second = Proc::start(home.path(), &yaml, env);
    second.wait_running().await;
    let restarted = std::time::Instant::now();
    let runs = eventually(
        Duration::from_secs(10),
        "the dead run to be recorded interrupted",
        async || {
            let v = get(&http, runs_url(&second)).await;
            let runs = v["runs"].as_array()?.clone();
            let dead = runs.iter().find(|r| r["id"] == ghost["id"])?;
            (dead["status"] == "interrupted").then_some(runs)
        },
    )
    .await;
    assert!(
        restarted.elapsed() < Duration::from_secs(10),
        "took {:?}",
        restarted.elapsed()
    );
    let dead = runs.iter().find(|r| r["id"] == ghost["id"]).unwrap();
    assert!(
        dead["error"].as_str().unwrap().contains("restart"),
        "{dead}"
    );
    // The job moves on: a later slot runs (it is not skipped as overlapping the ghost).
    eventually(Duration::from_secs(10), "a later slot to run", async || {
        let v = get(&http, runs_url(&second)).await;
        v["runs"]
            .as_array()?
            .iter()
            .any(|r| r["id"] != ghost["id"] && r["status"] == "running")
            .then_some(())
    })
    .await;
    let v = get(&http, runs_url(&second)).await;
    let ghosts = v["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["id"] == ghost["id"])
        .count();
    assert_eq!(ghosts, 1, "{v}");
    let _ = first.child.wait();
    drop(second);
    kill_agents(&pids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_gateway_records_its_dead_run_interrupted_at_restart_on_sqlite() {
    sigkilled_run_is_interrupted_at_restart(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_gateway_records_its_dead_run_interrupted_at_restart_on_postgres() {
    let db = TestDatabase::create().await;
    sigkilled_run_is_interrupted_at_restart(&[("HERMES_DATABASE_URL", db.url())]).await;
}

#[tokio::test]
async fn lease_renewal_and_the_run_end_need_the_owner_on_both_backends() {
    let (stores, _dir, _db) = both_stores().await;
    for store in stores {
        let kind = store.kind();
        store
            .insert_job(&job("dddddddddddd", Some(10)))
            .await
            .unwrap();
        let claimed = store
            .claim_slot(
                &new_run("r1", "dddddddddddd", 10, 5),
                Some(t(70)),
                JobState::Scheduled,
                RunStatus::Running,
                None,
            )
            .await
            .unwrap();
        assert_eq!(claimed, ClaimOutcome::Claimed);
        assert!(
            !store.renew_lease("r1", "thief", t(20)).await.unwrap(),
            "{kind}"
        );
        assert!(
            store.renew_lease("r1", "test", t(20)).await.unwrap(),
            "{kind}"
        );
        let mut end = store.get_run("r1").await.unwrap();
        end.status = RunStatus::Completed;
        end.output = Some("done".into());
        assert!(
            !store.finish_run(&end, "thief", None).await.unwrap(),
            "{kind}"
        );
        let run = store.get_run("r1").await.unwrap();
        assert_eq!(run.status, RunStatus::Running, "{kind}");
        assert_eq!(
            store.get_job("dddddddddddd").await.unwrap().last_status,
            None
        );
        // A dead owner's run is ended only while that owner still holds it.
        assert!(
            !store
                .interrupt_dead_run("r1", "thief", t(21))
                .await
                .unwrap()
        );
        assert!(store.interrupt_dead_run("r1", "test", t(21)).await.unwrap());
        assert!(!store.interrupt_dead_run("r1", "test", t(22)).await.unwrap());
        assert!(
            !store.finish_run(&end, "test", None).await.unwrap(),
            "{kind}"
        );
        let run = store.get_run("r1").await.unwrap();
        assert_eq!(run.status, RunStatus::Interrupted, "{kind}");
        let j = store.get_job("dddddddddddd").await.unwrap();
        assert_eq!(j.last_status.as_deref(), Some("interrupted"), "{kind}");
        assert!(store.running_owners().await.unwrap().is_empty(), "{kind}");
    }
}

/// A run whose lease another owner took (as when its lease ran out and a replica
/// re-claimed it) stops at its next renewal: the agent process ends, and the run is not
/// recorded by the process that lost it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_lease_is_taken_over_stops_its_agent_and_is_not_recorded_twice() {
    use reqwest::Method;
    let home = tempfile::tempdir().unwrap();
    let pids = home.path().join("agent.pids");
    let yaml = format!(
        "{}cron: {{tick_interval_seconds: 3600, lease_seconds: 3}}",
        sleeping_agent_yaml(&pids)
    );
    let app = TestApp::spawn_in(home, &yaml, &[]).await;
    let (_, v) = api(
        &app,
        Method::POST,
        "/api/jobs",
        Some(json!({"name": "sleeper", "prompt": "sleep", "schedule": "every 1d"})),
    )
    .await;
    let id = v["job"]["id"].as_str().unwrap().to_owned();
    let (code, v) = api(&app, Method::POST, &format!("/api/jobs/{id}/run"), None).await;
    assert_eq!(code, 202, "{v}");
    let run_id = v["run"]["id"].as_str().unwrap().to_owned();
    let pid = eventually(Duration::from_secs(10), "the agent to start", async || {
        agent_pids(&pids).first().copied()
    })
    .await;
    assert!(alive(pid));

    let db = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        app.home().join("state.db").display()
    ))
    .await
    .unwrap();
    let stolen = sqlx::query("UPDATE runs SET owner = 'another-replica' WHERE id = ?1")
        .bind(&run_id)
        .execute(&db)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(stolen, 1);
    // Renewals come every lease/3 = 1 s: the agent must be gone well before its 60 s sleep.
    eventually(
        Duration::from_secs(10),
        "the agent of the run that lost its lease to end",
        async || (!alive(pid)).then_some(()),
    )
    .await;
    app.wait_until(|s| s["active_agents"] == 0).await;
    // Nothing is written by the loser: the run stays the new owner's, and the job records
    // no outcome. (Absence needs a window: the loser's end would come right after.)
    for _ in 0..10 {
        let row = sqlx::query_as::<_, (String, String, Option<i64>)>(
            "SELECT status, owner, finished_at FROM runs WHERE id = ?1",
        )
        .bind(&run_id)
        .fetch_one(&db)
        .await
        .unwrap();
        assert_eq!(
            row,
            ("running".into(), "another-replica".into(), None),
            "the run that lost its lease was recorded"
        );
        let job = app.state.cron.store().get_job(&id).await.unwrap();
        assert_eq!(job.last_status, None);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    kill_agents(&pids);
}

/// 500 due jobs, a drain begun as soon as the tick's first run starts: the tick stops
/// claiming, and every job it did not claim is still due (none is used up as an
/// interrupted run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_begun_mid_tick_leaves_the_unclaimed_jobs_due() {
    const JOBS: usize = 500;
    let app = TestApp::spawn(
        "agent: {echo: {delay_ms: 3000}}\ncron: {tick_interval_seconds: 3600}",
        &[],
    )
    .await;
    let now = jiff::Timestamp::now().as_second() - 1_800_000_000;
    let jobs: Vec<Job> = (0..JOBS)
        .map(|i| {
            let mut j = job(&format!("{i:012x}"), Some(now - 5));
            j.schedule = "every 1h".into();
            j
        })
        .collect();
    app.state.cron.store().insert_jobs(&jobs).await.unwrap();

    let mut watch = app.state.gate.subscribe();
    let drain = app.state.drain.clone();
    let drainer = tokio::spawn(async move {
        watch
            .wait_for(|s| s.active_agents > 0)
            .await
            .expect("gate alive");
        drain.begin("test").unwrap();
    });
    let report = app.state.cron.tick().await.unwrap();
    drainer.await.unwrap();

    let store = &app.state.cron.store();
    let due = store
        .due_jobs(jiff::Timestamp::now(), 10_000)
        .await
        .unwrap()
        .len();
    let mut runs = Vec::new();
    for j in &jobs {
        runs.extend(store.list_runs(&j.id, 10).await.unwrap());
    }
    let interrupted = runs
        .iter()
        .filter(|r| r.status == RunStatus::Interrupted)
        .count();
    assert_eq!(interrupted, 0, "claimed after the drain: {report:?}");
    assert!(due > 0, "the drain came after the tick: {report:?}");
    assert_eq!(runs.len() + due, JOBS, "{report:?}");
    assert_eq!(runs.len(), report.claimed, "{report:?}");
}
