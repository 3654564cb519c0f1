//! Webhook delivery: a finished run (not an interrupted one) of a job whose `deliver` is a
//! URL is posted there, retried with back-off; a delivery that keeps failing is recorded
//! on the run and the job.

use std::time::Duration;

use serde_json::json;

use super::service::CronService;
use crate::clock::iso;
use crate::job::{Job, Run, RunStatus};

/// Webhook delivery attempts and the first back-off.
const DELIVERY_ATTEMPTS: u32 = 3;
pub(super) const DELIVERY_BACKOFF: Duration = Duration::from_millis(500);

impl CronService {
    /// Posts the run to the job's webhook (retried with back-off); failures are recorded.
    pub(super) async fn deliver(&self, job: &Job, run: &Run) {
        if job.deliver == "local" || run.status == RunStatus::Interrupted {
            return;
        }
        let body = json!({
            "job_id": job.id, "job_name": job.name, "run_id": run.id, "status": run.status.as_str(),
            "scheduled_for": iso(run.scheduled_for), "finished_at": run.finished_at.map(iso),
            "output": run.output, "error": run.error,
        });
        let mut last = String::new();
        for attempt in 0..DELIVERY_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(DELIVERY_BACKOFF * 2u32.pow(attempt - 1)).await;
            }
            let http = match self.http.get() {
                Ok(http) => http,
                Err(e) => {
                    last = e.to_owned();
                    break;
                }
            };
            match http.post(&job.deliver).json(&body).send().await {
                Ok(r) if r.status().is_success() => return,
                Ok(r) => last = format!("HTTP {}", r.status().as_u16()),
                Err(e) => last = e.without_url().to_string(),
            }
        }
        let message =
            format!("delivery to the webhook failed after {DELIVERY_ATTEMPTS} attempts: {last}");
        tracing::warn!(job = %job.id, run = %run.id, "{message}");
        if let Err(e) = self
            .store
            .record_delivery_failure(&run.id, &job.id, &message)
            .await
        {
            tracing::error!(error = %e, "cannot record the delivery failure");
        }
    }
}
