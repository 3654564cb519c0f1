-- Stored chat sessions (SPEC §11 "Sessions"): a chat completion's conversation, kept so a
-- client may send only its new message, on any replica. Not the dashboard's sign-in
-- sessions (table `sessions`). Times are Unix milliseconds, so "oldest updated" orders
-- sessions written within one second.
CREATE TABLE chat_sessions (
    id            TEXT PRIMARY KEY,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    -- The position the next appended message takes (positions only grow).
    next_seq      BIGINT NOT NULL,
    message_count BIGINT NOT NULL
);
CREATE INDEX chat_sessions_updated ON chat_sessions (updated_at_ms, id);

-- A session's messages, oldest first by `seq`; the oldest are dropped past the bound.
CREATE TABLE chat_session_messages (
    session_id TEXT NOT NULL REFERENCES chat_sessions (id) ON DELETE CASCADE,
    seq        BIGINT NOT NULL,
    role       TEXT NOT NULL,
    content    TEXT NOT NULL,
    PRIMARY KEY (session_id, seq)
);
