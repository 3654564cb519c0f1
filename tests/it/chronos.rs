//! Chronos (SPEC §8): fire tokens over HTTP with real RSA-2048/P-256 keys, the JWKS cache
//! against a real HTTP server, the account-service loop (armed → fired → run → re-armed),
//! and exactly-once fires under concurrency, in one process and across two on PostgreSQL.
//! The account service is a fake (an axum server in this binary); everything else is real.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hermes_gateway::chronos::{FireAuthError, FirePolicy, FireVerifier, JwksVerifier};
use hermes_gateway::clock::SystemClock;
use hermes_gateway::metrics::Metrics;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::support::{Proc, TestApp, TestDatabase, eventually};

const RSA_A_KEY: &str = include_str!("../fixtures/chronos/rsa_a.key");
const RSA_A_PUB: &str = include_str!("../fixtures/chronos/rsa_a.pub");
const RSA_B_KEY: &str = include_str!("../fixtures/chronos/rsa_b.key");
const EC_A_KEY: &str = include_str!("../fixtures/chronos/ec_a.key");
const EC_A_PUB: &str = include_str!("../fixtures/chronos/ec_a.pub");
const AUD: &str = "agent:test-instance";
const ACCESS_TOKEN: &str = "nous-access-token-for-tests";
/// Sent with every job-API call; only checked where a test configures it.
const API_KEY: &str = "sk-api-server-key-0123456789";

// ---- tokens -------------------------------------------------------------------------

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn encoding_key(alg: Algorithm, pem: &str) -> EncodingKey {
    match alg {
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(pem.as_bytes()),
        _ => EncodingKey::from_rsa_pem(pem.as_bytes()),
    }
    .unwrap()
}

/// Fresh valid claims: issuer `iss`, a new `jti`, one minute to live.
fn claims(iss: &str) -> Value {
    json!({
        "exp": now() + 60, "nbf": now() - 5, "iat": now(), "aud": AUD, "iss": iss,
        "purpose": "cron_fire", "jti": hermes_gateway::ids::random_hex128(),
    })
}

fn sign(alg: Algorithm, pem: &str, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &encoding_key(alg, pem)).unwrap()
}

/// The public JWK of a private key, under `kid`.
fn jwk(alg: Algorithm, pem: &str, kid: &str) -> Value {
    let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&encoding_key(alg, pem), alg).unwrap();
    jwk.common.key_id = Some(kid.to_owned());
    serde_json::to_value(jwk).unwrap()
}

// ---- the fake account service ---------------------------------------------------------

/// What the fake account service holds and has seen.
#[derive(Default)]
struct PortalState {
    jwks: Vec<Value>,
    cache_control: Option<&'static str>,
    jwks_down: bool,
    jwks_hits: usize,
    /// `{"job_id","fire_at","dedup_key"}` as provisioned.
    armed: Vec<Value>,
    /// Every agent-cron call: (name, body, authorization header).
    calls: Vec<(String, Value, String)>,
    reject_identity: bool,
}

#[derive(Clone, Default)]
struct Portal(Arc<Mutex<PortalState>>);

impl Portal {
    fn with<R>(&self, f: impl FnOnce(&mut PortalState) -> R) -> R {
        f(&mut self.0.lock().unwrap())
    }

    /// Serves the fake on loopback; returns its base URL.
    async fn serve(&self) -> String {
        let app = Router::new()
            .route("/jwks", get(jwks))
            .route("/api/agent-cron/provision", post(provision))
            .route("/api/agent-cron/cancel", post(cancel))
            .route("/api/agent-cron/list", get(list))
            .with_state(self.clone());
        serve(app).await
    }

    fn calls(&self, name: &str) -> Vec<Value> {
        self.with(|s| {
            s.calls
                .iter()
                .filter(|c| c.0 == name)
                .map(|c| c.1.clone())
                .collect()
        })
    }
}

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

async fn jwks(State(p): State<Portal>) -> Response {
    p.with(|s| {
        s.jwks_hits += 1;
        if s.jwks_down {
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
        let mut r = Json(json!({"keys": s.jwks})).into_response();
        if let Some(cc) = s.cache_control {
            r.headers_mut().insert("cache-control", cc.parse().unwrap());
        }
        r
    })
}

fn record(p: &Portal, name: &str, body: Value, headers: &HeaderMap) -> Option<Response> {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    p.with(|s| {
        s.calls.push((name.to_owned(), body, auth.clone()));
        if s.reject_identity {
            return Some(
                (
                    StatusCode::FORBIDDEN,
                    Json(json!({"error": "invalid_client", "detail": "unknown agent"})),
                )
                    .into_response(),
            );
        }
        (auth != format!("Bearer {ACCESS_TOKEN}")).then(|| StatusCode::UNAUTHORIZED.into_response())
    })
}

async fn provision(
    State(p): State<Portal>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Some(r) = record(&p, "provision", body.clone(), &headers) {
        return r;
    }
    p.with(|s| s.armed.push(body));
    Json(json!({"ok": true})).into_response()
}

async fn cancel(State(p): State<Portal>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    if let Some(r) = record(&p, "cancel", body.clone(), &headers) {
        return r;
    }
    p.with(|s| s.armed.retain(|a| a["job_id"] != body["job_id"]));
    Json(json!({"ok": true})).into_response()
}

async fn list(State(p): State<Portal>, headers: HeaderMap) -> Response {
    if let Some(r) = record(&p, "list", Value::Null, &headers) {
        return r;
    }
    Json(json!({"armed": p.with(|s| s.armed.clone())})).into_response()
}

/// A server that must never be asked anything (targets of `jku`/`x5u`).
async fn trap() -> (String, Arc<Mutex<usize>>) {
    let hits = Arc::new(Mutex::new(0usize));
    let h = hits.clone();
    let app = Router::new().fallback(move || {
        let h = h.clone();
        async move {
            *h.lock().unwrap() += 1;
            Json(json!({"keys": []}))
        }
    });
    (serve(app).await, hits)
}

// ---- helpers --------------------------------------------------------------------------

fn yaml_list(pems: &[&str]) -> String {
    let items: Vec<String> = pems
        .iter()
        .map(|p| serde_json::to_string(p).unwrap())
        .collect();
    format!("[{}]", items.join(", "))
}

/// A gateway verifying fire tokens with the pinned fixture public keys (RSA A, EC A).
async fn pinned_app(extra: &str, env: &[(&str, &str)]) -> TestApp {
    let yaml = format!(
        "cron: {{chronos: {{expected_audience: {AUD:?}, nas_public_keys: {}}}}}\n{extra}",
        yaml_list(&[RSA_A_PUB, EC_A_PUB])
    );
    TestApp::spawn(&yaml, env).await
}

async fn fire(
    http: &reqwest::Client,
    base: &str,
    token: Option<&str>,
    body: Value,
) -> (u16, Value, Option<String>) {
    let mut req = http.post(format!("{base}/api/cron/fire")).json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (
        r.status().as_u16(),
        r.json().await.unwrap_or(Value::Null),
        retry,
    )
}

/// Creates a job due `in_s` seconds from now (one-shot) and returns (id, slot ISO).
async fn one_shot(app: &TestApp, in_s: i64) -> (String, String) {
    let at = jiff::Timestamp::from_second(now() + in_s)
        .unwrap()
        .to_string();
    create(app, &at).await
}

async fn create(app: &TestApp, schedule: &str) -> (String, String) {
    let v: Value = app
        .http
        .post(format!("{}/api/jobs", app.api))
        .bearer_auth(API_KEY)
        .json(&json!({"name": "t", "prompt": "fired prompt", "schedule": schedule}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (
        v["job"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("{v}"))
            .to_owned(),
        v["job"]["next_run_at"].as_str().unwrap().to_owned(),
    )
}

async fn runs(http: &reqwest::Client, base: &str, id: &str) -> Vec<Value> {
    let v: Value = http
        .get(format!("{base}/api/jobs/{id}/runs"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["runs"].as_array().cloned().unwrap_or_default()
}

/// How long the account-service loop and fired runs get (generous, for a loaded machine).
const WAIT: Duration = Duration::from_secs(20);

// ---- tests ----------------------------------------------------------------------------

#[tokio::test]
async fn fire_endpoint_checks_token_first_then_body_and_runs_the_job() {
    let app = pinned_app("", &[("API_SERVER_KEY", API_KEY)]).await;
    let (id, slot) = one_shot(&app, 20).await;
    let body = json!({"job_id": id, "fire_at": slot});
    let http = &app.http;

    // Token first: no token, a garbage token, the API server key — 401 whatever the body.
    for token in [None, Some("garbage"), Some(API_KEY)] {
        let (status, v, _) = fire(http, &app.api, token, json!({})).await;
        assert_eq!(
            (status, v),
            (401, json!({"error": "invalid fire token"})),
            "{token:?}"
        );
    }
    // A valid token with a bad body: 400.
    for bad in [json!({}), json!({"job_id": ""}), json!("x")] {
        let (status, v, _) = fire(
            http,
            &app.api,
            Some(&sign(Algorithm::RS256, RSA_A_KEY, None, &claims(""))),
            bad,
        )
        .await;
        assert_eq!((status, v), (400, json!({"error": "missing job_id"})));
    }
    // Unknown job: accepted, nothing runs.
    let (status, v, _) = fire(
        http,
        &app.api,
        Some(&sign(Algorithm::ES256, EC_A_KEY, None, &claims(""))),
        json!({"job_id": "nope"}),
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(v["outcome"], "unknown_job");

    // The real fire, on the API server without API_SERVER_KEY: 202 started, the run happens.
    let token = sign(Algorithm::RS256, RSA_A_KEY, None, &claims(""));
    let (status, v, _) = fire(http, &app.api, Some(&token), body.clone()).await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["status"], "accepted");
    assert_eq!(v["job_id"], id.as_str());
    assert_eq!(v["outcome"], "started");
    let run_id = v["run_id"].as_str().unwrap().to_owned();
    let done = eventually(WAIT, "the fired run to complete", async || {
        let r = runs(http, &app.api, &id).await;
        (r.first().map(|r| r["status"].clone()) == Some(json!("completed"))).then_some(r)
    })
    .await;
    assert_eq!(done.len(), 1);
    assert_eq!(done[0]["id"], run_id.as_str());
    assert_eq!(done[0]["output"], "fired prompt");
    assert_eq!(done[0]["scheduled_for"], slot.as_str());

    // The same token again (replayed jti) and a new token for the same slot: duplicates.
    let (_, v, _) = fire(http, &app.api, Some(&token), body.clone()).await;
    assert_eq!(v["outcome"], "duplicate");
    let fresh = sign(Algorithm::ES256, EC_A_KEY, None, &claims(""));
    let (_, v, _) = fire(http, &app.dash, Some(&fresh), body.clone()).await;
    assert_eq!(v["outcome"], "duplicate", "dashboard path: {v}");
    assert_eq!(v["run_id"], run_id.as_str());
    assert_eq!(runs(http, &app.api, &id).await.len(), 1);

    // A replayed token is refused by its jti whatever it names: a second job stays unrun.
    let (other, other_slot) = one_shot(&app, 10).await;
    let (_, v, _) = fire(
        http,
        &app.api,
        Some(&token),
        json!({"job_id": other, "fire_at": other_slot}),
    )
    .await;
    assert_eq!(
        (v["outcome"].clone(), v["run_id"].clone()),
        (json!("duplicate"), Value::Null)
    );
    assert!(runs(http, &app.api, &other).await.is_empty());
    // A slot far in the future is not due; a slot the job is not at is not due either.
    let (later, later_slot) = one_shot(&app, 7200).await;
    for body in [
        json!({"job_id": later}),
        json!({"job_id": later, "fire_at": slot}),
    ] {
        let t = sign(Algorithm::RS256, RSA_A_KEY, None, &claims(""));
        let (_, v, _) = fire(http, &app.api, Some(&t), body).await;
        assert_eq!(v["outcome"], "not_due");
    }
    let t = sign(Algorithm::RS256, RSA_A_KEY, None, &claims(""));
    let (_, v, _) = fire(
        http,
        &app.api,
        Some(&t),
        json!({"job_id": later, "fire_at": later_slot}),
    )
    .await;
    assert_eq!(v["outcome"], "not_due");
    // Every final answer spends its token: replayed, even for an unknown job, it is a
    // duplicate.
    let (_, v, _) = fire(http, &app.api, Some(&t), json!({"job_id": "nope"})).await;
    assert_eq!(v["outcome"], "duplicate");

    // The fire token authenticates nothing else.
    let r = http
        .get(format!("{}/api/jobs", app.api))
        .bearer_auth(&fresh)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);

    // Audit: accepted and rejected with reasons, never a token.
    let audit = app.audit_text();
    assert!(!audit.contains(&token) && !audit.contains(&fresh) && !audit.contains("sk-api-server"));
    let events = app.audit_events();
    let reasons: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "cron_fire_rejected")
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    assert!(reasons.contains(&"missing token"), "{reasons:?}");
    assert!(reasons.contains(&"malformed header"), "{reasons:?}");
    assert!(reasons.contains(&"missing job_id"), "{reasons:?}");
    let accepted: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "cron_fire_accepted")
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        accepted,
        [
            "unknown_job",
            "started",
            "duplicate",
            "duplicate",
            "duplicate",
            "not_due",
            "not_due",
            "not_due",
            "duplicate"
        ]
    );
    assert!(
        app.metrics()
            .await
            .contains("hermes_cron_fires_total{outcome=\"started\"} 1")
    );
}

#[tokio::test]
async fn fire_attack_matrix_over_http() {
    let (trap_url, trap_hits) = trap().await;
    let app = pinned_app("", &[]).await;
    let (id, slot) = one_shot(&app, 20).await;
    let body = json!({"job_id": id, "fire_at": slot});
    let with = |edit: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        let mut c = claims("");
        edit(c.as_object_mut().unwrap());
        c
    };
    let rs = |c: &Value| sign(Algorithm::RS256, RSA_A_KEY, None, c);
    let b64 = |v: &[u8]| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
    };
    let raw = |header: Value, c: &Value, sig: &[u8]| {
        format!(
            "{}.{}.{}",
            b64(header.to_string().as_bytes()),
            b64(c.to_string().as_bytes()),
            b64(sig)
        )
    };
    let good = rs(&claims(""));
    let parts: Vec<&str> = good.split('.').collect();
    let mut header_jku = Header::new(Algorithm::RS256);
    header_jku.jku = Some(format!("{trap_url}/jwks"));
    header_jku.x5u = Some(format!("{trap_url}/cert"));
    header_jku.kid = Some("attacker".into());
    let hs256 = {
        let input = format!(
            "{}.{}",
            b64(br#"{"alg":"HS256","typ":"JWT"}"#),
            b64(claims("").to_string().as_bytes())
        );
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, RSA_A_PUB.as_bytes());
        format!(
            "{input}.{}",
            b64(aws_lc_rs::hmac::sign(&key, input.as_bytes()).as_ref())
        )
    };
    let cases: Vec<(&str, String)> = vec![
        (
            "wrong aud",
            rs(&with(&|c| {
                c.insert("aud".into(), json!("agent:other"));
            })),
        ),
        (
            "missing aud",
            rs(&with(&|c| {
                c.remove("aud");
            })),
        ),
        (
            "expired beyond leeway",
            rs(&with(&|c| {
                c.insert("exp".into(), json!(now() - 31));
            })),
        ),
        (
            "future nbf",
            rs(&with(&|c| {
                c.insert("nbf".into(), json!(now() + 60));
            })),
        ),
        (
            "missing purpose",
            rs(&with(&|c| {
                c.remove("purpose");
            })),
        ),
        (
            "wrong purpose",
            rs(&with(&|c| {
                c.insert("purpose".into(), json!("login"));
            })),
        ),
        (
            "tampered payload",
            format!(
                "{}.{}.{}",
                parts[0],
                b64(with(&|c| {
                    c.insert("aud".into(), json!("x"));
                })
                .to_string()
                .as_bytes()),
                parts[2]
            ),
        ),
        (
            "another key",
            sign(Algorithm::RS256, RSA_B_KEY, Some("current"), &claims("")),
        ),
        ("alg none", raw(json!({"alg": "none"}), &claims(""), b"")),
        ("alg NoNe", raw(json!({"alg": "NoNe"}), &claims(""), b"")),
        ("HS256 with the public PEM", hs256),
        (
            "ES256 all-zero signature",
            raw(json!({"alg": "ES256"}), &claims(""), &[0u8; 64]),
        ),
        (
            "kid path traversal",
            sign(
                Algorithm::RS256,
                RSA_B_KEY,
                Some("../../../../etc/passwd"),
                &claims(""),
            ),
        ),
        (
            "jku/x5u to a second server",
            jsonwebtoken::encode(
                &header_jku,
                &claims(""),
                &encoding_key(Algorithm::RS256, RSA_B_KEY),
            )
            .unwrap(),
        ),
    ];
    for (what, token) in &cases {
        let (status, v, _) = fire(&app.http, &app.api, Some(token), body.clone()).await;
        assert_eq!(
            (status, &v),
            (401, &json!({"error": "invalid fire token"})),
            "{what}"
        );
    }
    assert_eq!(*trap_hits.lock().unwrap(), 0, "a header URL was fetched");
    assert!(
        runs(&app.http, &app.api, &id).await.is_empty(),
        "a refused token ran the job"
    );
    // Within the leeway is fine, and the job runs exactly once.
    let edge = rs(&with(&|c| {
        c.insert("exp".into(), json!(now() - 20));
    }));
    let (status, v, _) = fire(&app.http, &app.api, Some(&edge), body).await;
    assert_eq!((status, v["outcome"].clone()), (202, json!("started")));
}

#[tokio::test]
async fn fifty_concurrent_deliveries_of_one_slot_start_one_run() {
    let app = pinned_app("", &[]).await;
    let (id, slot) = one_shot(&app, 20).await;
    let body = json!({"job_id": id, "fire_at": slot});
    let same_token = sign(Algorithm::ES256, EC_A_KEY, None, &claims(""));
    let mut tasks = Vec::new();
    for i in 0..50 {
        // Half replay one token, half carry their own: both kinds must be refused once won.
        let token = if i % 2 == 0 {
            same_token.clone()
        } else {
            sign(Algorithm::RS256, RSA_A_KEY, None, &claims(""))
        };
        let (http, base, body) = (app.http.clone(), app.api.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            fire(&http, &base, Some(&token), body).await
        }));
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        let (status, v, _) = t.await.unwrap();
        assert_eq!(status, 202, "{v}");
        outcomes.push(v["outcome"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        outcomes.iter().filter(|o| *o == "started").count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes.iter().filter(|o| *o == "duplicate").count(),
        49,
        "{outcomes:?}"
    );
    // The one run ends, and it stays the only one.
    let all = eventually(WAIT, "the started run to complete", async || {
        let r = runs(&app.http, &app.api, &id).await;
        if r.first().is_some_and(|r| r["status"] == "completed") {
            Ok(r)
        } else {
            Err(json!(r))
        }
    })
    .await;
    assert_eq!(all.len(), 1, "{all:?}");
    // Duplicates never counted as turns.
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("hermes_turns_total{outcome=\"interrupted\"} 0"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_draining_gateway_refuses_fires_without_claiming_and_the_retry_runs_after() {
    let app = pinned_app("", &[]).await;
    let (id, slot) = one_shot(&app, 20).await;
    let body = json!({"job_id": id, "fire_at": slot});
    let token = sign(Algorithm::RS256, RSA_A_KEY, None, &claims(""));
    app.state.drain.begin("test").unwrap();
    let (status, v, retry) = fire(&app.http, &app.api, Some(&token), body.clone()).await;
    assert_eq!(status, 503, "{v}");
    assert!(v["error"].as_str().unwrap().contains("draining"), "{v}");
    assert!(retry.is_some());
    assert!(runs(&app.http, &app.api, &id).await.is_empty());
    app.state.drain.cancel("test").unwrap();
    // The scheduler retries with the same token: it was not used up by the refusal.
    let (status, v, _) = fire(&app.http, &app.api, Some(&token), body).await;
    assert_eq!(
        (status, v["outcome"].clone()),
        (202, json!("started")),
        "{v}"
    );
}

#[tokio::test]
async fn jwks_keys_rotate_survive_an_outage_and_refetch_at_most_every_30s() {
    let portal = Portal::default();
    portal.with(|s| {
        s.jwks = vec![jwk(Algorithm::RS256, RSA_A_KEY, "a")];
        s.cache_control = Some("max-age=600");
    });
    let url = portal.serve().await;
    let policy = FirePolicy {
        expected_audience: AUD.into(),
        issuer: url.clone(),
    };
    let verifier = |interval| {
        JwksVerifier::new(
            &format!("{url}/jwks"),
            policy.clone(),
            Arc::new(SystemClock),
            Arc::new(Metrics::default()),
        )
        .with_refetch_interval(interval)
    };
    let v = verifier(Duration::from_millis(200));
    let tok = |alg, pem, kid| sign(alg, pem, Some(kid), &claims(&url));

    let under_a = tok(Algorithm::RS256, RSA_A_KEY, "a");
    assert!(v.verify(&under_a).await.is_ok());
    // The same bytes again: answered from the signatures already checked.
    assert!(v.verify(&under_a).await.is_ok());
    assert_eq!(
        portal.with(|s| s.jwks_hits),
        1,
        "a cached kid needs no fetch"
    );
    // Wrong issuer is refused even with a good key.
    assert_eq!(
        v.verify(&sign(
            Algorithm::RS256,
            RSA_A_KEY,
            Some("a"),
            &claims("https://evil")
        ))
        .await,
        Err(FireAuthError::BadToken("wrong iss"))
    );

    // Rotation: the set now publishes b (EC) and drops a; a token under b triggers a refetch.
    portal.with(|s| s.jwks = vec![jwk(Algorithm::ES256, EC_A_KEY, "b")]);
    // Past the 200 ms refetch interval (the rule under test is a duration).
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(
        v.verify(&tok(Algorithm::ES256, EC_A_KEY, "b"))
            .await
            .is_ok()
    );
    assert_eq!(portal.with(|s| s.jwks_hits), 2);
    // A token accepted under a (its signature remembered) is refused once a has left.
    assert!(
        v.verify(&under_a).await.is_err(),
        "a remembered signature outlived its key"
    );
    // The same EC key cannot be used with an RS algorithm, nor an unlisted kid.
    assert!(
        v.verify(&tok(Algorithm::RS256, RSA_A_KEY, "b"))
            .await
            .is_err()
    );

    // Outage: the cached kid keeps working; an uncached kid is "no key" (503), not a 401.
    portal.with(|s| s.jwks_down = true);
    // Past the refetch interval again.
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(
        v.verify(&tok(Algorithm::RS256, RSA_A_KEY, "c"))
            .await
            .map(drop),
        Err(FireAuthError::NoKey(
            "JWKS unreachable and the token's key is not cached"
        ))
    );
    assert!(
        v.verify(&tok(Algorithm::ES256, EC_A_KEY, "b"))
            .await
            .is_ok()
    );

    // With the production interval, a burst of unknown kids (path traversal, random) costs
    // one fetch, shared by concurrent verifications (single flight).
    let portal2 = Portal::default();
    portal2.with(|s| s.jwks = vec![jwk(Algorithm::RS256, RSA_A_KEY, "a")]);
    let url2 = portal2.serve().await;
    let strict = Arc::new(JwksVerifier::new(
        &format!("{url2}/jwks"),
        FirePolicy {
            expected_audience: AUD.into(),
            issuer: String::new(),
        },
        Arc::new(SystemClock),
        Arc::new(Metrics::default()),
    ));
    let mut tasks = Vec::new();
    for i in 0..20 {
        let v = strict.clone();
        let kid = if i == 0 {
            "../../etc/passwd".to_owned()
        } else {
            format!("unknown-{i}")
        };
        let token = sign(Algorithm::RS256, RSA_B_KEY, Some(&kid), &claims(""));
        tasks.push(tokio::spawn(async move { v.verify(&token).await }));
    }
    // Those that shared the fetch learn the kid is not published (401); any that came
    // after it cannot ask again for 30 s (503, retry later). None is accepted.
    for t in tasks {
        let got = t.await.unwrap().map(drop);
        assert!(
            got == Err(FireAuthError::BadToken("kid not in the JWKS"))
                || got
                    == Err(FireAuthError::NoKey(
                        "kid not in the cached JWKS; it is asked again within 30 s"
                    )),
            "{got:?}"
        );
    }
    assert_eq!(portal2.with(|s| s.jwks_hits), 1);
    assert_eq!(
        strict
            .verify(&sign(
                Algorithm::RS256,
                RSA_B_KEY,
                Some("rotated"),
                &claims("")
            ))
            .await
            .map(drop),
        Err(FireAuthError::NoKey(
            "kid not in the cached JWKS; it is asked again within 30 s"
        )),
        "a kid unknown within 30 s of a fetch is not called bad"
    );
    assert!(
        strict
            .verify(&sign(Algorithm::RS256, RSA_A_KEY, Some("a"), &claims("")))
            .await
            .is_ok()
    );
    assert_eq!(portal2.with(|s| s.jwks_hits), 1);
}

#[tokio::test]
async fn an_unreachable_jwks_is_503_with_retry_after() {
    let dead = format!("http://127.0.0.1:{}/jwks", crate::support::free_port());
    let app = TestApp::spawn(
        &format!("cron: {{chronos: {{expected_audience: {AUD:?}, nas_jwks_url: {dead:?}}}}}"),
        &[],
    )
    .await;
    let (id, slot) = one_shot(&app, 20).await;
    let token = sign(Algorithm::RS256, RSA_A_KEY, Some("a"), &claims(""));
    let (status, _, retry) = fire(
        &app.http,
        &app.api,
        Some(&token),
        json!({"job_id": id, "fire_at": slot}),
    )
    .await;
    assert_eq!(status, 503);
    assert_eq!(retry.as_deref(), Some("5"));
    // Still token first: garbage is a 401 even while the JWKS is down.
    let (status, _, _) = fire(&app.http, &app.api, Some("garbage"), json!({})).await;
    assert_eq!(status, 401);
    assert!(
        app.metrics()
            .await
            .contains("hermes_chronos_jwks_fetches_total{outcome=\"error\"} 1")
    );
}

#[tokio::test]
async fn chronos_provider_arms_fires_runs_and_rearms() {
    let portal = Portal::default();
    portal.with(|s| s.jwks = vec![jwk(Algorithm::RS256, RSA_A_KEY, "k1")]);
    let url = portal.serve().await;
    let yaml = format!(
        "cron: {{provider: chronos, chronos: {{portal_url: {url:?}, callback_url: 'https://agent.example/', \
         expected_audience: {AUD:?}, nas_jwks_url: '{url}/jwks'}}}}"
    );
    let app = TestApp::spawn(&yaml, &[("HERMES_NOUS_ACCESS_TOKEN", ACCESS_TOKEN)]).await;
    let (id, slot) = create(&app, "*/5 * * * * *").await;

    // Armed: the job's next slot, with the compat body.
    let armed = eventually(WAIT, "the job to be armed", async || {
        portal
            .calls("provision")
            .into_iter()
            .find(|c| c["job_id"] == id.as_str())
    })
    .await;
    assert_eq!(
        armed,
        json!({"job_id": id, "fire_at": slot, "agent_callback_url": "https://agent.example",
               "dedup_key": format!("{id}:{slot}")})
    );
    assert!(portal.with(|s| {
        s.calls
            .iter()
            .all(|c| c.2 == format!("Bearer {ACCESS_TOKEN}"))
    }));
    let status = app.status().await;
    assert_eq!(status["cron"]["provider"], "chronos", "{status}");

    // Fired (as the scheduler would, at the slot): the run happens, the next slot is armed.
    let token = sign(Algorithm::RS256, RSA_A_KEY, Some("k1"), &claims(&url));
    let (code, v, _) = fire(
        &app.http,
        &app.api,
        Some(&token),
        json!({"job_id": id, "fire_at": slot}),
    )
    .await;
    assert_eq!((code, v["outcome"].clone()), (202, json!("started")), "{v}");
    eventually(WAIT, "the run to complete", async || {
        let r = runs(&app.http, &app.api, &id).await;
        (r.first().map(|r| r["status"].clone()) == Some(json!("completed"))).then_some(())
    })
    .await;
    let rearmed = eventually(WAIT, "the next slot to be armed", async || {
        portal.with(|s| {
            s.armed
                .iter()
                .find(|a| a["job_id"] == id.as_str() && a["fire_at"] != slot.as_str())
                .cloned()
        })
    })
    .await;
    let next: jiff::Timestamp = rearmed["fire_at"].as_str().unwrap().parse().unwrap();
    let gap = next.as_second() - slot.parse::<jiff::Timestamp>().unwrap().as_second();
    assert!(gap > 0 && gap % 5 == 0, "next slot {next} after {slot}");
    assert_eq!(
        portal.with(|s| s.armed.len()),
        1,
        "the fired slot is no longer armed"
    );

    // A fire that arrives early (our clock behind the scheduler's) starts nothing, and the
    // one-shot it used up is armed again at once.
    let (later, later_slot) = create(&app, "every 1h").await;
    eventually(WAIT, "the hourly job to be armed", async || {
        portal.with(|s| {
            s.armed
                .iter()
                .any(|a| a["job_id"] == later.as_str())
                .then_some(())
        })
    })
    .await;
    let before = portal.calls("provision").len();
    portal.with(|s| s.armed.retain(|a| a["job_id"] != later.as_str()));
    let token = sign(Algorithm::RS256, RSA_A_KEY, Some("k1"), &claims(&url));
    let (_, v, _) = fire(
        &app.http,
        &app.api,
        Some(&token),
        json!({"job_id": later, "fire_at": later_slot}),
    )
    .await;
    assert_eq!(v["outcome"], "not_due");
    let again = eventually(WAIT, "the used-up one-shot to be armed again", async || {
        portal
            .calls("provision")
            .into_iter()
            .skip(before)
            .find(|c| c["job_id"] == later.as_str())
    })
    .await;
    assert_eq!(again["fire_at"], later_slot.as_str());

    // Pausing cancels; deleting a paused job changes nothing more.
    app.http
        .post(format!("{}/api/jobs/{id}/pause", app.api))
        .send()
        .await
        .unwrap();
    eventually(WAIT, "the paused job to be cancelled", async || {
        portal
            .with(|s| s.armed.iter().all(|a| a["job_id"] != id.as_str()))
            .then_some(())
    })
    .await;
    assert!(
        portal
            .calls("cancel")
            .iter()
            .any(|c| c["job_id"] == id.as_str())
    );
    // A paused job's fire is accepted and starts nothing.
    let token = sign(Algorithm::RS256, RSA_A_KEY, Some("k1"), &claims(&url));
    let (_, v, _) = fire(&app.http, &app.api, Some(&token), json!({"job_id": id})).await;
    assert_eq!(v["outcome"], "paused");
}

#[tokio::test]
async fn identity_rejection_is_shown_and_not_retried_and_unusable_config_falls_back() {
    let portal = Portal::default();
    portal.with(|s| s.reject_identity = true);
    let url = portal.serve().await;
    let yaml = format!(
        "cron: {{provider: chronos, chronos: {{portal_url: {url:?}, callback_url: 'https://a.example', expected_audience: {AUD:?}}}}}"
    );
    let app = TestApp::spawn(&yaml, &[("HERMES_NOUS_ACCESS_TOKEN", ACCESS_TOKEN)]).await;
    let s = app
        .wait_until(|s| s["cron"]["identity_rejected"] == true)
        .await;
    assert!(
        s["cron"]["last_error"]
            .as_str()
            .unwrap()
            .contains("invalid_client"),
        "{s}"
    );
    assert!(
        !s["cron"]["last_error"]
            .as_str()
            .unwrap()
            .contains(ACCESS_TOKEN)
    );
    // No retry for a window past the first back-off (1 s): an absence takes a wait.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        portal.with(|s| s.calls.len()),
        1,
        "retried a permanent rejection"
    );
    // ...while the loop is alive: a job change is what makes it ask again.
    let (code, v) = {
        let r = app
            .http
            .post(format!("{}/api/jobs", app.api))
            .json(&json!({"name": "t", "prompt": "p", "schedule": "every 1h"}))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    assert_eq!(code, 201, "{v}");
    eventually(WAIT, "a job change to reconcile again", async || {
        (portal.with(|s| s.calls.len()) >= 2).then_some(())
    })
    .await;

    // chronos without a token: the built-in ticker runs, with the reason in status.
    let app = TestApp::spawn("cron: {provider: chronos}", &[]).await;
    let s = app.wait_until(|s| s["cron"]["provider"] == "builtin").await;
    let warning = s["cron"]["warning"].as_str().unwrap();
    assert!(
        warning.contains("HERMES_NOUS_ACCESS_TOKEN") && warning.contains("cron.chronos.portal_url"),
        "{warning}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_postgres_fire_one_slot_once() {
    let db = TestDatabase::create().await;
    let env = [("HERMES_DATABASE_URL", db.url())];
    let yaml = format!(
        "agent: {{echo: {{delay_ms: 300}}}}\ncron: {{chronos: {{expected_audience: {AUD:?}, nas_public_keys: {}}}}}",
        yaml_list(&[RSA_A_PUB, EC_A_PUB])
    );
    let (home_a, home_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Proc::start(home_a.path(), &yaml, &env);
    let b = Proc::start(home_b.path(), &yaml, &env);
    let http = reqwest::Client::new();
    a.wait_running().await;
    b.wait_running().await;
    let at = jiff::Timestamp::from_second(now() + 20)
        .unwrap()
        .to_string();
    let v: Value = http
        .post(format!("{}/api/jobs", a.api))
        .json(&json!({"name": "t", "prompt": "once", "schedule": at}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = v["job"]["id"].as_str().unwrap().to_owned();
    let slot = v["job"]["next_run_at"].as_str().unwrap().to_owned();
    let mut tasks = Vec::new();
    for i in 0..50 {
        let base = if i % 2 == 0 {
            a.api.clone()
        } else {
            b.api.clone()
        };
        let token = sign(Algorithm::RS256, RSA_A_KEY, None, &claims(""));
        let (http, body) = (http.clone(), json!({"job_id": id, "fire_at": slot}));
        tasks.push(tokio::spawn(async move {
            fire(&http, &base, Some(&token), body).await
        }));
    }
    let mut started = 0;
    for t in tasks {
        let (status, v, _) = t.await.unwrap();
        assert_eq!(status, 202, "{v}");
        started += usize::from(v["outcome"] == "started");
    }
    assert_eq!(started, 1);
    let all = eventually(WAIT, "the run to finish", async || {
        let r = runs(&http, &b.api, &id).await;
        (r.iter().all(|r| r["status"] == "completed") && !r.is_empty()).then_some(r)
    })
    .await;
    assert_eq!(all.len(), 1, "{all:?}");
}

// ---- JWKS: bad sets, big bodies, plain http, key-independent checks first ---------------

/// A JWKS verifier of `url` that may refetch every 100 ms.
fn quick_verifier(url: &str) -> JwksVerifier {
    JwksVerifier::new(
        url,
        FirePolicy {
            expected_audience: AUD.into(),
            issuer: String::new(),
        },
        Arc::new(SystemClock),
        Arc::new(Metrics::default()),
    )
    .with_refetch_interval(Duration::from_millis(100))
}

#[tokio::test]
async fn a_jwks_with_no_usable_key_does_not_replace_the_good_set() {
    let portal = Portal::default();
    portal.with(|s| s.jwks = vec![jwk(Algorithm::RS256, RSA_A_KEY, "a")]);
    let url = portal.serve().await;
    let v = quick_verifier(&format!("{url}/jwks"));
    let good = || sign(Algorithm::RS256, RSA_A_KEY, Some("a"), &claims(""));
    assert!(v.verify(&good()).await.is_ok());
    // The set turns empty, then holds only keys that cannot verify a fire token; each is
    // fetched (an unknown kid asks again) and neither replaces the good set.
    for bad in [
        vec![],
        vec![json!({"kty": "oct", "kid": "s", "k": "c2VjcmV0"})],
    ] {
        portal.with(|s| s.jwks = bad.clone());
        let hits = portal.with(|s| s.jwks_hits);
        // Past the 100 ms refetch interval (the rule under test is a duration).
        tokio::time::sleep(Duration::from_millis(150)).await;
        let unknown = sign(Algorithm::RS256, RSA_B_KEY, Some("new"), &claims(""));
        assert!(v.verify(&unknown).await.is_err());
        assert_eq!(
            portal.with(|s| s.jwks_hits),
            hits + 1,
            "{bad:?} was fetched"
        );
        assert_eq!(
            v.verify(&good()).await.map(drop),
            Ok(()),
            "the good key was dropped for {bad:?}"
        );
    }
}

/// A JWKS endpoint that serves `good` in mode 0, a 2 MiB JSON body with its length in
/// mode 1, and an endless chunked body (no length) in mode 2, counting what it streamed.
#[derive(Clone)]
struct SwitchingJwks {
    good: Value,
    mode: Arc<std::sync::atomic::AtomicU8>,
    streamed: Arc<std::sync::atomic::AtomicUsize>,
}

async fn switching_jwks(State(j): State<SwitchingJwks>) -> Response {
    use futures_util::StreamExt as _;
    use std::sync::atomic::Ordering;
    match j.mode.load(Ordering::SeqCst) {
        0 => Json(j.good.clone()).into_response(),
        1 => Json(json!({"keys": [], "pad": "x".repeat(2 * 1024 * 1024)})).into_response(),
        _ => {
            let chunk = axum::body::Bytes::from(vec![b'x'; 64 * 1024]);
            let start = futures_util::stream::once(async {
                Ok::<_, std::io::Error>(axum::body::Bytes::from_static(b"{\"keys\":[\""))
            });
            let streamed = j.streamed.clone();
            let endless = futures_util::stream::repeat(chunk).map(move |c| {
                streamed.fetch_add(c.len(), Ordering::Relaxed);
                Ok(c)
            });
            axum::body::Body::from_stream(start.chain(endless)).into_response()
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_body_over_1_mib_is_refused_while_it_streams_and_the_keys_are_kept() {
    use std::sync::atomic::Ordering;
    let jwks = SwitchingJwks {
        good: json!({"keys": [jwk(Algorithm::RS256, RSA_A_KEY, "a")]}),
        mode: Arc::default(),
        streamed: Arc::default(),
    };
    let url = serve(
        Router::new()
            .route("/jwks", get(switching_jwks))
            .with_state(jwks.clone()),
    )
    .await;
    let v = quick_verifier(&format!("{url}/jwks"));
    let good = || sign(Algorithm::RS256, RSA_A_KEY, Some("a"), &claims(""));
    let unknown = || sign(Algorithm::RS256, RSA_B_KEY, Some("new"), &claims(""));
    assert!(v.verify(&good()).await.is_ok());

    for mode in [1, 2] {
        jwks.mode.store(mode, Ordering::SeqCst);
        // Past the 100 ms refetch interval (the rule under test is a duration).
        tokio::time::sleep(Duration::from_millis(150)).await;
        let started = std::time::Instant::now();
        assert_eq!(
            v.verify(&unknown()).await.map(drop),
            Err(FireAuthError::NoKey(
                "JWKS unreachable and the token's key is not cached"
            )),
            "mode {mode}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "mode {mode}: the fetch ran to its timeout ({:?}) instead of stopping at 1 MiB",
            started.elapsed()
        );
        assert!(v.verify(&good()).await.is_ok(), "mode {mode}: keys kept");
    }
    // Cut off near the limit, not read on (socket buffers let a few MiB be in flight).
    let streamed = jwks.streamed.load(Ordering::Relaxed);
    assert!(
        streamed < 32 * 1024 * 1024,
        "{streamed} bytes were streamed"
    );
}

/// What can be decided without a key is a 401 even while no key can be obtained.
#[tokio::test]
async fn key_independent_checks_are_401_even_while_the_jwks_is_down() {
    let dead = format!("http://127.0.0.1:{}/jwks", crate::support::free_port());
    let app = TestApp::spawn(
        &format!("cron: {{chronos: {{expected_audience: {AUD:?}, nas_jwks_url: {dead:?}}}}}"),
        &[],
    )
    .await;
    let (id, slot) = one_shot(&app, 20).await;
    let body = json!({"job_id": id, "fire_at": slot});
    let without = |claim: &str| {
        let mut c = claims("");
        c.as_object_mut().unwrap().remove(claim);
        sign(Algorithm::RS256, RSA_A_KEY, Some("a"), &c)
    };
    let hs256 = jsonwebtoken::encode(
        &Header {
            kid: Some("unknown".into()),
            ..Header::new(Algorithm::HS256)
        },
        &claims(""),
        &EncodingKey::from_secret(b"guessed"),
    )
    .unwrap();
    let ps256 = sign(Algorithm::PS256, RSA_A_KEY, Some("a"), &claims(""));
    for (what, token) in [
        ("HS256 with an unknown kid", hs256),
        ("PS256 (not on the list)", ps256),
        ("no exp", without("exp")),
        ("no aud", without("aud")),
        (
            "claims not JSON",
            "eyJhbGciOiJSUzI1NiIsImtpZCI6ImEifQ.bm90IGpzb24.c2ln".to_owned(),
        ),
    ] {
        let (status, v, _) = fire(&app.http, &app.api, Some(&token), body.clone()).await;
        assert_eq!(
            (status, v),
            (401, json!({"error": "invalid fire token"})),
            "{what}"
        );
    }
    // A well-formed token signed under an uncached kid is still "no key" (503).
    let token = sign(Algorithm::RS256, RSA_A_KEY, Some("a"), &claims(""));
    let (status, _, _) = fire(&app.http, &app.api, Some(&token), body).await;
    assert_eq!(status, 503);
}

#[tokio::test]
async fn plain_http_jwks_or_portal_urls_off_loopback_are_a_config_error() {
    let home = tempfile::tempdir().unwrap();
    let yaml = "cron: {chronos: {portal_url: 'http://portal.example', nas_jwks_url: 'http://portal.example/jwks'}}";
    // `run` must refuse to start (bounded: a gateway that starts is killed after 10 s).
    let mut gw = Proc::start(home.path(), yaml, &[]);
    assert_eq!(gw.wait_exit().await, 78, "{}", gw.stderr());
    let (code, _, check) = crate::support::cli(home.path(), &["config", "check"], &[], "");
    assert_eq!(code, 78, "{check}");
    for err in [gw.stderr(), check] {
        for path in ["cron.chronos.portal_url", "cron.chronos.nas_jwks_url"] {
            assert!(err.contains(path), "did not name {path}: {err}");
        }
        assert!(err.contains("https"), "{err}");
    }
}

/// A burst of 200 fires while the account service drops every connection: the reconciler
/// waits out its back-off instead of calling once per fire, and logs the failure once, not
/// once per attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fire_burst_against_a_down_account_service_costs_a_handful_of_calls_and_log_lines() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    // Accepts and drops every connection, counting them.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let portal = format!("http://{}", listener.local_addr().unwrap());
    let attempts = Arc::new(AtomicUsize::new(0));
    let counter = attempts.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(conn);
        }
    });
    let home = tempfile::tempdir().unwrap();
    let yaml = format!(
        "cron: {{provider: chronos, chronos: {{portal_url: {portal:?}, callback_url: 'https://agent.example', \
         expected_audience: {AUD:?}, nas_public_keys: {}}}}}",
        yaml_list(&[RSA_A_PUB])
    );
    let gw = Proc::start(
        home.path(),
        &yaml,
        &[("HERMES_NOUS_ACCESS_TOKEN", ACCESS_TOKEN)],
    );
    gw.wait_running().await;
    let http = reqwest::Client::new();
    let v: Value = http
        .post(format!("{}/api/jobs", gw.api))
        .json(&json!({"name": "burst", "prompt": "p", "schedule": "every 1h"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = v["job"]["id"].as_str().unwrap().to_owned();
    eventually(WAIT, "the first reconcile to fail", async || {
        (attempts.load(Ordering::SeqCst) > 0).then_some(())
    })
    .await;

    let burst = std::time::Instant::now();
    for _ in 0..200 {
        let token = sign(Algorithm::RS256, RSA_A_KEY, None, &claims(&portal));
        let (status, v, _) = fire(
            &http,
            &gw.api,
            Some(&token),
            json!({"job_id": id, "fire_at": "2020-01-01T00:00:00Z"}),
        )
        .await;
        assert_eq!(
            (status, v["outcome"].clone()),
            (202, json!("not_due")),
            "{v}"
        );
        // The burst's pace: 200 fires spread over a few seconds of back-off.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = burst.elapsed();
    let calls = attempts.load(Ordering::SeqCst);
    // Back-off 1 s, 2 s, 4 s ...: a few seconds of fires allow a few attempts at most.
    let allowed = 3 + (took.as_secs() as usize) / 2;
    assert!(
        calls <= allowed,
        "{calls} account-service connections during a {took:?} burst (at most {allowed})"
    );
    let status: Value = http
        .get(format!("{}/api/status", gw.dash))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        status["cron"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("unreachable")),
        "the failure is in status: {status}"
    );
    let stderr = gw.stderr();
    let warns: Vec<&str> = stderr.lines().filter(|l| l.contains("WARN")).collect();
    eprintln!(
        "{calls} account-service connections and {} WARN lines for 200 fires in {took:?}",
        warns.len()
    );
    assert!(
        (1..=3).contains(&warns.len()),
        "{} WARN lines:\n{}",
        warns.len(),
        warns.join("\n")
    );
}

// ---- replays answered without a write (issue 15) ------------------------------------

/// Holds SQLite's write lock on the gateway's store from another connection (as another
/// process writing would): the gateway can still read, but any write of its own waits.
async fn hold_write_lock(home: &std::path::Path) -> sqlx::SqliteConnection {
    use sqlx::Connection as _;
    let url = format!("sqlite://{}", home.join("state.db").display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::raw_sql("BEGIN IMMEDIATE")
        .execute(&mut conn)
        .await
        .unwrap();
    conn
}

/// A fire that must be answered within `limit` (a write would wait for the lock).
async fn fire_within(limit: Duration, app: &TestApp, token: &str, body: Value) -> (u16, Value) {
    let (status, v, _) = tokio::time::timeout(limit, fire(&app.http, &app.api, Some(token), body))
        .await
        .expect("answered without waiting for the store's write lock");
    (status, v)
}

#[tokio::test]
async fn a_replay_is_answered_while_another_process_holds_the_write_lock_also_after_a_restart() {
    let yaml = format!(
        "cron: {{chronos: {{expected_audience: {AUD:?}, nas_public_keys: {}}}}}",
        yaml_list(&[RSA_A_PUB, EC_A_PUB])
    );
    let mut app = TestApp::spawn(&yaml, &[]).await;
    let (id, slot) = one_shot(&app, 20).await;
    let body = json!({"job_id": id, "fire_at": slot});
    let token = sign(Algorithm::RS256, RSA_A_KEY, None, &claims(""));
    let (status, v, _) = fire(&app.http, &app.api, Some(&token), body.clone()).await;
    assert_eq!(
        (status, v["outcome"].clone()),
        (202, json!("started")),
        "{v}"
    );
    eventually(WAIT, "the started run to complete", async || {
        let r = runs(&app.http, &app.api, &id).await;
        if r.first().is_some_and(|r| r["status"] == "completed") {
            Ok(())
        } else {
            Err(json!(r))
        }
    })
    .await;
    let quick = Duration::from_secs(3);
    // This process recorded the token: the replay is answered from memory.
    let lock = hold_write_lock(app.home()).await;
    let (status, v) = fire_within(quick, &app, &token, body.clone()).await;
    assert_eq!(
        (status, &v["outcome"], &v["run_id"]),
        (202, &json!("duplicate"), &Value::Null),
        "{v}"
    );
    drop(lock);
    // A new process knows nothing of it in memory: the one read finds the token.
    app.stop().await;
    let home = std::mem::replace(&mut app.home, tempfile::tempdir().unwrap());
    drop(app);
    let app = TestApp::spawn_in(home, &yaml, &[]).await;
    let lock = hold_write_lock(app.home()).await;
    let (status, v) = fire_within(quick, &app, &token, body.clone()).await;
    assert_eq!(
        (status, &v["outcome"], &v["run_id"]),
        (202, &json!("duplicate"), &Value::Null),
        "{v}"
    );
    // The same token naming another job is a replay too, whatever it names.
    let other = json!({"job_id": "0123456789ab"});
    let (status, v) = fire_within(quick, &app, &token, other).await;
    assert_eq!((status, &v["outcome"]), (202, &json!("duplicate")), "{v}");
    drop(lock);
    assert_eq!(runs(&app.http, &app.api, &id).await.len(), 1);
}

#[tokio::test]
async fn a_claim_waits_for_another_process_holding_the_write_lock_while_the_gateway_answers_on() {
    // The claim's group commit waits for the lock on a thread of its own: the fire is
    // answered once the other process lets go, and the gateway serves requests meanwhile.
    let app = pinned_app("", &[]).await;
    let (id, slot) = one_shot(&app, 20).await;
    let token = sign(Algorithm::RS256, RSA_A_KEY, None, &claims(""));
    let lock = hold_write_lock(app.home()).await;
    let fired = tokio::spawn({
        let (http, base) = (app.http.clone(), app.api.clone());
        let body = json!({"job_id": id, "fire_at": slot});
        async move { fire(&http, &base, Some(&token), body).await }
    });
    let mut fired = std::pin::pin!(fired);
    for _ in 0..3 {
        tokio::select! {
            answer = &mut fired => panic!("answered while the lock was held: {answer:?}"),
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        let status = tokio::time::timeout(
            Duration::from_secs(2),
            app.http.get(format!("{}/health", app.api)).send(),
        )
        .await
        .expect("the gateway answers while its claim waits for the lock")
        .unwrap()
        .status();
        assert_eq!(status, 200);
    }
    drop(lock);
    let (status, v, _) = tokio::time::timeout(Duration::from_secs(5), fired)
        .await
        .expect("the fire is answered once the lock is released")
        .unwrap();
    assert_eq!(
        (status, v["outcome"].clone()),
        (202, json!("started")),
        "{v}"
    );
    assert_eq!(runs(&app.http, &app.api, &id).await.len(), 1);
}

#[tokio::test]
async fn one_fresh_token_delivered_concurrently_for_many_jobs_starts_exactly_one_run() {
    // Neither the memory nor the read before the claim can see a token that is still
    // being claimed: the claim itself must refuse every delivery but one, even when they
    // land in one group commit (each names another job, so only the token links them).
    let app = pinned_app("", &[]).await;
    let mut jobs = Vec::new();
    for _ in 0..12 {
        jobs.push(one_shot(&app, 20).await);
    }
    let token = sign(Algorithm::ES256, EC_A_KEY, None, &claims(""));
    let mut tasks = Vec::new();
    for round in 0..2 {
        for (id, slot) in &jobs {
            let (http, base, token) = (app.http.clone(), app.api.clone(), token.clone());
            let body = json!({"job_id": id, "fire_at": slot, "round": round});
            tasks.push(tokio::spawn(async move {
                fire(&http, &base, Some(&token), body).await
            }));
        }
    }
    let mut started = Vec::new();
    for t in tasks {
        let (status, v, _) = t.await.unwrap();
        assert_eq!(status, 202, "{v}");
        match v["outcome"].as_str().unwrap() {
            "started" => started.push(v["job_id"].as_str().unwrap().to_owned()),
            "duplicate" => assert_eq!(v["run_id"], Value::Null, "{v}"),
            other => panic!("unexpected outcome {other}: {v}"),
        }
    }
    assert_eq!(started.len(), 1, "{started:?}");
    let mut opened = 0;
    for (id, _) in &jobs {
        opened += runs(&app.http, &app.api, id).await.len();
    }
    assert_eq!(opened, 1, "one run in all");
}

#[tokio::test]
async fn a_replay_known_in_memory_is_still_refused_while_draining() {
    let app = pinned_app("", &[]).await;
    let (id, slot) = one_shot(&app, 20).await;
    let body = json!({"job_id": id, "fire_at": slot});
    let token = sign(Algorithm::RS256, RSA_A_KEY, None, &claims(""));
    let (status, v, _) = fire(&app.http, &app.api, Some(&token), body.clone()).await;
    assert_eq!(
        (status, v["outcome"].clone()),
        (202, json!("started")),
        "{v}"
    );
    app.state.drain.begin("test").unwrap();
    let (status, v, retry) = fire(&app.http, &app.api, Some(&token), body.clone()).await;
    assert_eq!(status, 503, "{v}");
    assert!(retry.is_some());
    app.state.drain.cancel("test").unwrap();
    let (status, v, _) = fire(&app.http, &app.api, Some(&token), body).await;
    assert_eq!(
        (status, v["outcome"].clone()),
        (202, json!("duplicate")),
        "{v}"
    );
}
