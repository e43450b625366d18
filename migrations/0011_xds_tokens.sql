-- Per-node and per-fleet xDS tokens (model/node_token.rs): the SHA-256 of
-- the token, the fleet and node it is bound to. Each change is a config
-- version, so every replica's xDS port learns it with the configuration.
CREATE TABLE xds_tokens (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL
);
