-- Cron jobs and their runs. Times are Unix seconds (UTC).
CREATE TABLE jobs (
    id               TEXT PRIMARY KEY,
    name             TEXT NOT NULL,
    prompt           TEXT NOT NULL,
    schedule         TEXT NOT NULL,
    enabled          INTEGER NOT NULL,
    state            TEXT NOT NULL,
    next_run_at      INTEGER,
    last_run_at      INTEGER,
    last_status      TEXT,
    last_error       TEXT,
    repeat_times     INTEGER,
    repeat_completed INTEGER NOT NULL DEFAULT 0,
    deliver          TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);
-- The ticker reads only due jobs: the work grows with them, not with all jobs.
CREATE INDEX jobs_due ON jobs (next_run_at) WHERE enabled = 1 AND state = 'scheduled';

CREATE TABLE runs (
    id            TEXT PRIMARY KEY,
    job_id        TEXT NOT NULL,
    scheduled_for INTEGER NOT NULL,
    started_at    INTEGER NOT NULL,
    finished_at   INTEGER,
    status        TEXT NOT NULL,
    output        TEXT,
    error         TEXT,
    lease_until   INTEGER NOT NULL,
    owner         TEXT NOT NULL,
    UNIQUE (job_id, scheduled_for)
);
CREATE INDEX runs_by_job ON runs (job_id, started_at);
CREATE INDEX runs_running ON runs (lease_until) WHERE status = 'running';
