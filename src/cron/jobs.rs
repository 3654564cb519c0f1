//! Jobs as clients change them: the checks of SPEC §7 (name, prompt, schedule, repeat,
//! deliver) and create, read, update, pause, resume and delete. A change wakes the ticker
//! and the external provider, and is announced on the live events (`job`).

use jiff::Timestamp;

use super::schedule::Schedule;
use super::service::{CronError, CronService};
use crate::job::{Job, JobState, Repeat, Run};
use crate::store::StoreError;

/// Longest prompt accepted (compat).
pub const MAX_PROMPT_CHARS: usize = 5_000;
/// Longest job name accepted (compat).
pub const MAX_NAME_CHARS: usize = 200;

/// What a `repeat` must be (SPEC §7).
pub const REPEAT_RULE: &str =
    "repeat: must be an integer of at least 1 (omit it to repeat forever)";

/// A new job, as a client describes it (the job API parses the wire body into this).
#[derive(Debug, Clone, Default)]
pub struct JobSpec {
    /// Required: 1 to [`MAX_NAME_CHARS`] characters.
    pub name: String,
    pub prompt: String,
    /// Required.
    pub schedule: String,
    pub enabled: Option<bool>,
    /// Times to run; absent = forever.
    pub repeat: Option<u32>,
    pub deliver: Option<String>,
}

/// A change to a job; absent fields stay as they are.
#[derive(Debug, Clone, Default)]
pub struct JobPatch {
    pub name: Option<String>,
    pub prompt: Option<String>,
    pub schedule: Option<String>,
    pub enabled: Option<bool>,
    /// `Some(None)` = repeat forever from now on.
    pub repeat: Option<Option<u32>>,
    pub deliver: Option<String>,
}

impl CronService {
    pub async fn create(&self, spec: JobSpec) -> Result<Job, CronError> {
        let now = self.now();
        let name = check_name(&spec.name)?;
        let prompt = check_prompt(&spec.prompt)?;
        if spec.schedule.trim().is_empty() {
            return Err(CronError::Invalid("schedule: required".into()));
        }
        let schedule = self.parse(&spec.schedule, now)?;
        let deliver = check_deliver(spec.deliver.as_deref().unwrap_or("local"))?;
        if spec.repeat == Some(0) {
            return Err(CronError::Invalid(REPEAT_RULE.into()));
        }
        let enabled = spec.enabled.unwrap_or(true);
        let job = Job {
            id: crate::ids::random_hex128()[..12].to_owned(),
            name,
            prompt,
            schedule: stored_text(&spec.schedule, &schedule),
            enabled,
            state: if enabled {
                JobState::Scheduled
            } else {
                JobState::Paused
            },
            next_run_at: schedule.first(now),
            last_run_at: None,
            last_status: None,
            last_error: None,
            repeat: Repeat {
                times: spec.repeat,
                completed: 0,
            },
            deliver,
            created_at: now,
            updated_at: now,
        };
        self.store.insert_job(&job).await?;
        self.job_edited(&job.id, "created");
        Ok(job)
    }

    pub async fn get(&self, id: &str) -> Result<Job, CronError> {
        self.store.get_job(id).await.map_err(|e| not_found(e, id))
    }

    pub async fn list(&self) -> Result<Vec<Job>, CronError> {
        Ok(self.store.list_jobs().await?)
    }

    pub async fn update(&self, id: &str, patch: JobPatch) -> Result<Job, CronError> {
        let now = self.now();
        let mut job = self.get(id).await?;
        if let Some(p) = patch.prompt {
            job.prompt = check_prompt(&p)?;
        }
        if let Some(n) = patch.name {
            job.name = check_name(&n)?;
        }
        if let Some(d) = patch.deliver {
            job.deliver = check_deliver(&d)?;
        }
        if let Some(r) = patch.repeat {
            if r == Some(0) {
                return Err(CronError::Invalid(REPEAT_RULE.into()));
            }
            job.repeat.times = r;
        }
        if let Some(text) = patch.schedule {
            let schedule = self.parse(&text, now)?;
            job.schedule = stored_text(&text, &schedule);
            job.next_run_at = schedule.first(now);
            if job.state == JobState::Completed {
                job.state = JobState::Scheduled;
            }
        }
        if let Some(enabled) = patch.enabled {
            self.set_enabled(&mut job, enabled, now)?;
        }
        job.updated_at = now;
        self.store
            .update_job(&job)
            .await
            .map_err(|e| not_found(e, id))?;
        self.job_edited(id, "updated");
        Ok(job)
    }

    fn set_enabled(&self, job: &mut Job, enabled: bool, now: Timestamp) -> Result<(), CronError> {
        job.enabled = enabled;
        if !enabled {
            if job.state == JobState::Scheduled {
                job.state = JobState::Paused;
            }
            return Ok(());
        }
        if job.state == JobState::Paused || job.state == JobState::Error {
            job.state = JobState::Scheduled;
            let schedule = self.parse(&job.schedule, job.next_run_at.unwrap_or(now))?;
            // Resuming does not replay what was missed while paused.
            if !schedule.is_once() && job.next_run_at.is_none_or(|t| t < now) {
                job.next_run_at = schedule.next_after(now);
            }
        }
        Ok(())
    }

    pub async fn pause(&self, id: &str) -> Result<Job, CronError> {
        self.update(
            id,
            JobPatch {
                enabled: Some(false),
                ..JobPatch::default()
            },
        )
        .await
    }

    pub async fn resume(&self, id: &str) -> Result<Job, CronError> {
        self.update(
            id,
            JobPatch {
                enabled: Some(true),
                ..JobPatch::default()
            },
        )
        .await
    }

    pub async fn delete(&self, id: &str) -> Result<(), CronError> {
        if self.store.delete_job(id).await? {
            self.job_edited(id, "deleted");
            Ok(())
        } else {
            Err(CronError::NotFound(id.to_owned()))
        }
    }

    /// The next `n` slots `text` would run at if a job were created with it now, in the
    /// service's time zone; a refusal is the one `create` would give.
    pub fn preview(&self, text: &str, n: usize) -> Result<Vec<jiff::Zoned>, CronError> {
        if text.trim().is_empty() {
            return Err(CronError::Invalid("schedule: required".into()));
        }
        let now = self.now();
        let schedule = self.parse(text, now)?;
        Ok(schedule
            .upcoming(now, n)
            .into_iter()
            .map(|t| t.to_zoned(self.time_zone().clone()))
            .collect())
    }

    pub async fn runs(&self, id: &str, limit: i64) -> Result<Vec<Run>, CronError> {
        self.get(id).await?;
        Ok(self.store.list_runs(id, limit).await?)
    }
}

fn not_found(e: StoreError, id: &str) -> CronError {
    match e {
        StoreError::NotFound => CronError::NotFound(id.to_owned()),
        other => CronError::Store(other),
    }
}

/// Relative one-shots (`in 30m`) are stored as the instant they name.
fn stored_text(text: &str, schedule: &Schedule) -> String {
    match schedule {
        Schedule::Once(at) => at.to_string(),
        _ => text.trim().to_owned(),
    }
}

fn check_name(n: &str) -> Result<String, CronError> {
    let n = n.trim();
    if n.is_empty() {
        return Err(CronError::Invalid(format!(
            "name: required (1 to {MAX_NAME_CHARS} characters)"
        )));
    }
    if n.chars().count() > MAX_NAME_CHARS {
        return Err(CronError::Invalid(format!(
            "name: longer than {MAX_NAME_CHARS} characters"
        )));
    }
    Ok(n.to_owned())
}

fn check_prompt(p: &str) -> Result<String, CronError> {
    if p.chars().count() > MAX_PROMPT_CHARS {
        return Err(CronError::Invalid(format!(
            "prompt: longer than {MAX_PROMPT_CHARS} characters"
        )));
    }
    let p = p.trim();
    if p.is_empty() {
        return Err(CronError::Invalid("prompt: must not be empty".into()));
    }
    Ok(p.to_owned())
}

fn check_deliver(d: &str) -> Result<String, CronError> {
    let d = d.trim();
    if d == "local" {
        return Ok(d.to_owned());
    }
    match reqwest::Url::parse(d) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(d.to_owned()),
        _ => Err(CronError::Invalid(format!(
            "deliver: expected \"local\" or an http(s) webhook URL, got {d:?}"
        ))),
    }
}
