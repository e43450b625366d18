-- A config version may now change many resources at once (declarative
-- apply): the change log gets one row per resource, numbered within the version.
ALTER TABLE config_changes RENAME TO config_changes_v1;
CREATE TABLE config_changes (
    version BIGINT  NOT NULL,
    seq     INTEGER NOT NULL,
    op      TEXT    NOT NULL,
    kind    TEXT    NOT NULL,
    name    TEXT    NOT NULL,
    at_ms   BIGINT  NOT NULL,
    PRIMARY KEY (version, seq)
);
INSERT INTO config_changes (version, seq, op, kind, name, at_ms)
    SELECT version, 0, op, kind, name, at_ms FROM config_changes_v1;
DROP TABLE config_changes_v1;
