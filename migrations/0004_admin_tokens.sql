-- Admin API tokens: only a SHA-256 hash of each token is kept.
CREATE TABLE admin_tokens (
    name            TEXT   PRIMARY KEY,
    role            TEXT   NOT NULL,
    token_hash      TEXT   NOT NULL UNIQUE,
    prefix          TEXT   NOT NULL,
    created_at_ms   BIGINT NOT NULL,
    last_used_at_ms BIGINT
);
