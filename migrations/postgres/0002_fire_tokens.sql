-- Fire-token ids (`jti`) already accepted, kept until the token's expiry plus leeway, so a
-- replayed token starts nothing on any replica.
CREATE TABLE fire_tokens (
    jti        TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX fire_tokens_expiry ON fire_tokens (expires_at);
