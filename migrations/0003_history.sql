-- Version history: who made each version and how, and every change's
-- canonical spec before and after, so any version can be restored.
ALTER TABLE config_changes ADD COLUMN before_spec TEXT;
ALTER TABLE config_changes ADD COLUMN after_spec TEXT;

CREATE TABLE config_versions (
    version BIGINT PRIMARY KEY,
    at_ms   BIGINT NOT NULL,
    actor   TEXT   NOT NULL,
    source  TEXT   NOT NULL
);
INSERT INTO config_versions (version, at_ms, actor, source)
    SELECT version, MAX(at_ms), 'unknown', 'api' FROM config_changes GROUP BY version;
