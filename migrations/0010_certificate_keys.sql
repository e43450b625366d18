-- Uploaded certificates' private keys (model/certificate.rs), sealed with
-- the control plane's key-encryption key (keyring.rs), found by the hex
-- SHA-256 of their public key. Kept apart from the specs, so they never
-- appear in GET, export or the history, and an older version restored by a
-- rollback finds its key again.
CREATE TABLE certificate_keys (
    spki_sha256 TEXT PRIMARY KEY,
    sealed TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
