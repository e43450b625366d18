-- API keys, under their consumer. Only the SHA-256 of a key is kept (inside
-- `spec`, with scopes, creation, expiry and revocation); the key itself is
-- shown once, when it is created.
CREATE TABLE api_keys (
    id              TEXT   PRIMARY KEY,
    consumer        TEXT   NOT NULL,
    spec            TEXT   NOT NULL,
    last_used_at_ms BIGINT
);
CREATE INDEX api_keys_consumer ON api_keys (consumer);
