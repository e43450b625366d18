-- Gatehouse configuration store. Portable SQL: the same migration runs on
-- Postgres (production) and SQLite (embedded default).

-- One row: the global config version. Every write transaction updates it
-- first, which both bumps the version and serialises writers.
CREATE TABLE config_version (
    id      INTEGER PRIMARY KEY,
    version BIGINT  NOT NULL
);
INSERT INTO config_version (id, version) VALUES (1, 0);

-- Every resource as its validated, canonical JSON spec.
CREATE TABLE resources (
    kind            TEXT   NOT NULL,
    name            TEXT   NOT NULL,
    spec            TEXT   NOT NULL,
    created_version BIGINT NOT NULL,
    updated_version BIGINT NOT NULL,
    updated_at_ms   BIGINT NOT NULL,
    PRIMARY KEY (kind, name)
);

-- Which resource points at which: checked on write and on delete.
CREATE TABLE resource_refs (
    from_kind TEXT NOT NULL,
    from_name TEXT NOT NULL,
    to_kind   TEXT NOT NULL,
    to_name   TEXT NOT NULL,
    PRIMARY KEY (from_kind, from_name, to_kind, to_name)
);
CREATE INDEX resource_refs_to ON resource_refs (to_kind, to_name);

-- One row per config version: what changed.
CREATE TABLE config_changes (
    version BIGINT PRIMARY KEY,
    op      TEXT   NOT NULL,
    kind    TEXT   NOT NULL,
    name    TEXT   NOT NULL,
    at_ms   BIGINT NOT NULL
);
