-- Responses API state (SPEC §11), in the store so any replica continues a conversation
-- another began. `body` is the response as answered (JSON); `history` the conversation
-- through it (JSON messages), what a response naming it as previous continues from.
-- `accessed_at` orders the bound's evictions (milliseconds, strictly increasing per
-- store: the least recently used response goes first).
CREATE TABLE responses (
    id          TEXT PRIMARY KEY,
    body        TEXT NOT NULL,
    history     TEXT NOT NULL,
    session_id  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    accessed_at BIGINT NOT NULL
);
CREATE INDEX responses_accessed ON responses (accessed_at);

-- A named conversation points at its latest response; it goes with that response.
CREATE TABLE response_conversations (
    name        TEXT PRIMARY KEY,
    response_id TEXT NOT NULL REFERENCES responses (id) ON DELETE CASCADE,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX response_conversations_response ON response_conversations (response_id);
