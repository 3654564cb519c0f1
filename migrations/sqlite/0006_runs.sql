-- Asynchronous runs of POST /v1/runs (SPEC §11; not cron's `runs`), in the store so any
-- replica reads a run another one started. Times are Unix milliseconds (UTC).
CREATE TABLE agent_runs (
    id             TEXT PRIMARY KEY,
    session_id     TEXT NOT NULL,
    model          TEXT NOT NULL,
    status         TEXT NOT NULL,
    created_at_ms  BIGINT NOT NULL,
    updated_at_ms  BIGINT NOT NULL,
    last_event     TEXT,
    output         TEXT,
    error          TEXT,
    -- The process running it, and until when its renewals say it is alive.
    owner          TEXT NOT NULL,
    lease_until_ms BIGINT NOT NULL,
    -- A stop asked on a replica that does not run it; the owner sees it when it renews.
    stop_requested BIGINT NOT NULL DEFAULT 0
);
-- Pruning keeps the newest runs.
CREATE INDEX agent_runs_by_age ON agent_runs (created_at_ms);

-- A run's events in order (`seq` from 0), as the SSE stream sends them.
CREATE TABLE agent_run_events (
    run_id TEXT NOT NULL REFERENCES agent_runs (id) ON DELETE CASCADE,
    seq    BIGINT NOT NULL,
    body   TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);
