//! `hermes-gateway cron import`: a Hermes `cron/jobs.json` turned into create requests,
//! each sent to the job API; a job that cannot be read or created is reported, not fatal.

use std::path::Path;

use serde_json::{Value, json};

use super::{Api, default_name};

/// One Hermes job as a create request: `schedule` may be a string or Hermes's object form.
fn hermes_job_to_spec(j: &Value) -> Result<Value, String> {
    let schedule = match &j["schedule"] {
        Value::String(s) => s.clone(),
        Value::Object(o) => {
            if let Some(expr) = o.get("expr").and_then(Value::as_str) {
                expr.to_owned()
            } else if let Some(at) = o.get("run_at").and_then(Value::as_str) {
                at.to_owned()
            } else if let Some(m) = o.get("minutes").and_then(Value::as_u64) {
                format!("every {m}m")
            } else if let Some(d) = o.get("display").and_then(Value::as_str) {
                d.to_owned()
            } else {
                return Err("schedule: no expr, run_at, minutes or display".into());
            }
        }
        _ => return Err("schedule: missing".into()),
    };
    let mut spec = json!({
        "prompt": j["prompt"].as_str().ok_or("prompt: missing")?,
        "schedule": schedule,
    });
    spec["name"] = match j["name"].as_str().filter(|n| !n.trim().is_empty()) {
        Some(n) => json!(n),
        None => json!(default_name(spec["prompt"].as_str().unwrap_or_default())),
    };
    if let Some(t) = j["repeat"]["times"].as_u64().or(j["repeat"].as_u64()) {
        spec["repeat"] = json!(t);
    }
    if let Some(d) = j["deliver"]
        .as_str()
        .filter(|d| *d == "local" || d.starts_with("http"))
    {
        spec["deliver"] = json!(d);
    }
    if let Some(e) = j["enabled"].as_bool() {
        spec["enabled"] = json!(e);
    }
    Ok(spec)
}

pub(super) async fn import(api: &Api, file: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let doc: Value =
        serde_json::from_str(&text).map_err(|e| format!("{} is not JSON: {e}", file.display()))?;
    let jobs = doc["jobs"].as_array().or(doc.as_array()).ok_or_else(|| {
        format!(
            "{}: expected {{\"jobs\": [...]}} or a list of jobs",
            file.display()
        )
    })?;
    let (mut created, mut failed) = (Vec::new(), Vec::new());
    for (i, j) in jobs.iter().enumerate() {
        let name = j["name"]
            .as_str()
            .or(j["id"].as_str())
            .map_or_else(|| format!("jobs[{i}]"), str::to_owned);
        let outcome = match hermes_job_to_spec(j) {
            Ok(spec) => {
                api.call(reqwest::Method::POST, "/api/jobs", Some(&spec))
                    .await
            }
            Err(e) => Err(e),
        };
        match outcome {
            Ok(v) => created.push(v["job"].clone()),
            Err(e) => failed.push(json!({"name": name, "error": e})),
        }
    }
    Ok(json!({"created": created, "failed": failed}))
}
