-- Ownership (model/ownership.rs): the owners each version touched, as
-- ",team-a,team-b," (empty: only the operators' resources), and admin tokens
-- scoped to one owner. Owners themselves are resources (kind 'owner'); an
-- existing store's resources have none, so they stay the operators'.
ALTER TABLE config_versions ADD COLUMN owners TEXT;
ALTER TABLE admin_tokens ADD COLUMN owner TEXT;
ALTER TABLE admin_tokens ADD COLUMN read_own_only BIGINT NOT NULL DEFAULT 0;
