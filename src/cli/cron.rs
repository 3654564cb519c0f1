//! `hermes-gateway cron ...`: a client of the running gateway's job API (API server,
//! `API_SERVER_KEY` when set), so every change reaches the ticker at once. `import` reads a
//! Hermes `cron/jobs.json` and creates each job, reporting each one it could not.

use std::time::Duration;

use clap::Subcommand;
use serde_json::{Value, json};

use crate::config::Config;

mod import;

use import::import;

#[derive(Debug, Subcommand)]
pub enum CronCommand {
    /// Create a job.
    Add {
        /// When: a cron expression, `every 30m`, `in 2h`, an ISO time, `weekdays at 9am`, ...
        #[arg(long, short)]
        schedule: String,
        #[arg(long)]
        name: Option<String>,
        /// Run this many times, then complete (default: forever).
        #[arg(long)]
        repeat: Option<u32>,
        /// `local` (default) or a webhook URL.
        #[arg(long)]
        deliver: Option<String>,
        /// What the agent is asked each time.
        #[arg(required = true, num_args = 1..)]
        prompt: Vec<String>,
        #[command(flatten)]
        out: Out,
    },
    /// List jobs.
    List(Out),
    /// Show one job.
    Show {
        id: String,
        #[command(flatten)]
        out: Out,
    },
    /// Delete a job and its run history.
    Rm {
        id: String,
        #[command(flatten)]
        out: Out,
    },
    /// Stop scheduling a job.
    Pause {
        id: String,
        #[command(flatten)]
        out: Out,
    },
    /// Schedule a paused job again.
    Resume {
        id: String,
        #[command(flatten)]
        out: Out,
    },
    /// Run a job now, outside its schedule.
    Run {
        id: String,
        #[command(flatten)]
        out: Out,
    },
    /// A job's runs, newest first.
    Runs {
        id: String,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[command(flatten)]
        out: Out,
    },
    /// Create the jobs of a Hermes `cron/jobs.json`.
    Import {
        file: std::path::PathBuf,
        #[command(flatten)]
        out: Out,
    },
}

/// Where the API server is and how to print.
#[derive(Debug, clap::Args, Clone)]
pub struct Out {
    /// API server base URL (default: from the config).
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// Print JSON for machines.
    #[arg(long)]
    json: bool,
}

struct Api {
    base: String,
    /// The base came from `--url` (the configured address is this machine's own).
    from_flag: bool,
    http: reqwest::Client,
    key: Option<String>,
}

impl Api {
    fn new(config: &Config, url: Option<&str>) -> Self {
        use secrecy::ExposeSecret;
        let a = &config.api_server;
        let host = if a.host == "0.0.0.0" || a.host == "::" {
            "127.0.0.1".to_owned()
        } else {
            a.host.clone()
        };
        let base = url
            .map(|u| u.trim_end_matches('/').to_owned())
            .unwrap_or_else(|| {
                if host.contains(':') {
                    format!("http://[{host}]:{}", a.port)
                } else {
                    format!("http://{host}:{}", a.port)
                }
            });
        Self {
            base,
            from_flag: url.is_some(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default(),
            key: config
                .secrets
                .api_server_key
                .as_ref()
                .map(|k| k.expose_secret().to_owned()),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url);
        if let Some(k) = &self.key {
            // API_SERVER_KEY goes only over https or to loopback (SPEC §2).
            if self.from_flag
                && !reqwest::Url::parse(&self.base)
                    .is_ok_and(|u| super::client::may_carry_credentials(&u))
            {
                return Err(format!(
                    "refusing to send API_SERVER_KEY to {} over plain http: use an https:// URL or a loopback one",
                    self.base
                ));
            }
            req = req.bearer_auth(k);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| {
            format!(
                "cannot reach the gateway's API server at {}: {}",
                self.base,
                e.without_url()
            )
        })?;
        let status = resp.status();
        if status.is_redirection() {
            let location = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .unwrap_or("(no Location)");
            return Err(format!(
                "{} answered {status}, a redirect to {location}; redirects are not followed",
                self.base
            ));
        }
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(v);
        }
        let message = v["error"]["message"]
            .as_str()
            .or(v["error"].as_str())
            .unwrap_or("no detail");
        Err(format!(
            "{} {}: {message}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        ))
    }
}

pub async fn command(config: &Config, cmd: CronCommand) -> i32 {
    let (out, call) = plan(cmd);
    let api = Api::new(config, out.url.as_deref());
    let result = match call {
        Call::Api(method, path, body) => api.call(method, &path, body.as_ref()).await,
        Call::Delete(id) => api
            .call(reqwest::Method::DELETE, &format!("/api/jobs/{id}"), None)
            .await
            .map(|_| json!({"ok": true, "deleted": id})),
        Call::Import(file) => import(&api, &file).await,
    };
    match result {
        Ok(v) => {
            if out.json {
                println!("{v}");
            } else {
                print_human(&v);
            }
            if v["failed"].as_array().is_some_and(|f| !f.is_empty()) {
                super::EXIT_FAILURE
            } else {
                0
            }
        }
        Err(e) => {
            eprintln!("hermes-gateway: {e}");
            super::EXIT_FAILURE
        }
    }
}

/// What a command asks of the API server.
enum Call {
    Api(reqwest::Method, String, Option<Value>),
    Delete(String),
    Import(std::path::PathBuf),
}

fn plan(cmd: CronCommand) -> (Out, Call) {
    use reqwest::Method;
    let job = |id: &str, action: &str| format!("/api/jobs/{id}{action}");
    match cmd {
        CronCommand::Add {
            schedule,
            name,
            repeat,
            deliver,
            prompt,
            out,
        } => {
            let prompt = prompt.join(" ");
            // The API requires a name; without --name the job is named after its prompt.
            let name = name.unwrap_or_else(|| default_name(&prompt));
            let mut body = json!({"prompt": prompt, "schedule": schedule, "name": name});
            for (k, v) in [
                ("repeat", repeat.map(Value::from)),
                ("deliver", deliver.map(Value::from)),
            ] {
                if let Some(v) = v {
                    body[k] = v;
                }
            }
            (out, Call::Api(Method::POST, "/api/jobs".into(), Some(body)))
        }
        CronCommand::List(out) => (out, Call::Api(Method::GET, "/api/jobs".into(), None)),
        CronCommand::Show { id, out } => (out, Call::Api(Method::GET, job(&id, ""), None)),
        CronCommand::Rm { id, out } => (out, Call::Delete(id)),
        CronCommand::Pause { id, out } => (out, Call::Api(Method::POST, job(&id, "/pause"), None)),
        CronCommand::Resume { id, out } => {
            (out, Call::Api(Method::POST, job(&id, "/resume"), None))
        }
        CronCommand::Run { id, out } => (out, Call::Api(Method::POST, job(&id, "/run"), None)),
        CronCommand::Runs { id, limit, out } => (
            out,
            Call::Api(Method::GET, job(&id, &format!("/runs?limit={limit}")), None),
        ),
        CronCommand::Import { file, out } => (out, Call::Import(file)),
    }
}

fn print_human(v: &Value) {
    let job_line = |j: &Value| {
        format!(
            "{}  {:<9}  next {:<27}  {:<20}  {}",
            j["id"].as_str().unwrap_or("?"),
            j["state"].as_str().unwrap_or("?"),
            j["next_run_at"].as_str().unwrap_or("-"),
            j["schedule"].as_str().unwrap_or("?"),
            j["name"].as_str().unwrap_or(""),
        )
    };
    if let Some(jobs) = v["jobs"].as_array() {
        if jobs.is_empty() {
            println!("no jobs");
        }
        for j in jobs {
            println!("{}", job_line(j));
        }
    } else if let Some(runs) = v["runs"].as_array() {
        if runs.is_empty() {
            println!("no runs");
        }
        for r in runs {
            println!(
                "{}  {:<11}  slot {}  started {}  {}",
                r["id"].as_str().unwrap_or("?"),
                r["status"].as_str().unwrap_or("?"),
                r["scheduled_for"].as_str().unwrap_or("?"),
                r["started_at"].as_str().unwrap_or("?"),
                r["error"]
                    .as_str()
                    .or(r["output"].as_str())
                    .unwrap_or("")
                    .chars()
                    .take(60)
                    .collect::<String>(),
            );
        }
    } else if v["job"].is_object() {
        println!("{}", job_line(&v["job"]));
    } else if v["run"].is_object() {
        println!(
            "started run {} of job {}",
            v["run"]["id"].as_str().unwrap_or("?"),
            v["run"]["job_id"].as_str().unwrap_or("?")
        );
    } else if let Some(created) = v["created"].as_array() {
        println!("imported {} job(s)", created.len());
        for f in v["failed"].as_array().into_iter().flatten() {
            println!(
                "not imported: {}: {}",
                f["name"].as_str().unwrap_or("?"),
                f["error"].as_str().unwrap_or("?")
            );
        }
    } else if v["deleted"].is_string() {
        println!("deleted {}", v["deleted"].as_str().unwrap_or(""));
    } else {
        println!("{v}");
    }
}

/// A job's name when none is given (the API requires one): the prompt's first 50
/// characters, on one line.
fn default_name(prompt: &str) -> String {
    let one_line = prompt.split_whitespace().collect::<Vec<_>>().join(" ");
    one_line.chars().take(50).collect()
}
