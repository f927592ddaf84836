-- The SHA-256 of a task's request in canonical form (NewTask.fingerprint): a repeated
-- Idempotency-Key is the same request only when this matches. NULL for tasks made before.
ALTER TABLE tasks ADD COLUMN request_hash TEXT;

-- A counter that every change to api_keys bumps, in the same transaction: a running server
-- sees a key created or revoked by another process (the CLI) by reading this one row when
-- SQLite's `PRAGMA data_version` says another connection committed (Store.key_generation).
CREATE TABLE key_generation (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    value  INTEGER NOT NULL
);
INSERT INTO key_generation (id, value) VALUES (1, 0);
CREATE TRIGGER api_keys_inserted AFTER INSERT ON api_keys
BEGIN
    UPDATE key_generation SET value = value + 1 WHERE id = 1;
END;
CREATE TRIGGER api_keys_updated AFTER UPDATE ON api_keys
BEGIN
    UPDATE key_generation SET value = value + 1 WHERE id = 1;
END;
CREATE TRIGGER api_keys_deleted AFTER DELETE ON api_keys
BEGIN
    UPDATE key_generation SET value = value + 1 WHERE id = 1;
END;
