-- Resources a node refused (NACK), so a restarted control plane keeps the
-- fleet off them too (see control-plane/src/xds/rollout.rs). Keyed by the
-- resource's content version: a changed resource is a new candidate.
CREATE TABLE rejected_resources (
    type            TEXT   NOT NULL,
    name            TEXT   NOT NULL,
    content_version TEXT   NOT NULL,
    version         TEXT   NOT NULL,
    node            TEXT   NOT NULL,
    error_detail    TEXT   NOT NULL,
    at_ms           BIGINT NOT NULL,
    PRIMARY KEY (type, name, content_version)
);
