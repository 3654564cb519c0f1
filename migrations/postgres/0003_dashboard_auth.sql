-- Dashboard sessions and single-use WebSocket tickets, in the store so every replica sees
-- them. Only SHA-256 digests of the session token and of the ticket are kept.
CREATE TABLE sessions (
    id_hash    TEXT PRIMARY KEY,
    principal  TEXT NOT NULL,
    provider   TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX sessions_expiry ON sessions (expires_at);

-- Ticket times are Unix milliseconds: a ticket is valid up to and including 30 s.
CREATE TABLE ws_tickets (
    ticket_hash   TEXT PRIMARY KEY,
    session_hash  TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    used_at_ms    BIGINT
);
CREATE INDEX ws_tickets_expiry ON ws_tickets (expires_at_ms);
