-- A note on a version that changed no resource: what an operator released
-- (refusals forgotten after investigating) and why.
ALTER TABLE config_versions ADD COLUMN note TEXT;
