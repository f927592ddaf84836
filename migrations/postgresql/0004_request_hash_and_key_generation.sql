-- PostgreSQL twin of ../0004_request_hash_and_key_generation.sql (#11).
-- The SHA-256 of a task's request in canonical form (NewTask.fingerprint): a repeated
-- Idempotency-Key is the same request only when this matches. NULL for tasks made before.
ALTER TABLE tasks ADD COLUMN request_hash text;

-- A counter that every change to api_keys bumps, in the same transaction, and a
-- notification (delivered at the commit) that every node's event feed listens for: a key
-- created or revoked anywhere (another node, the CLI) is known to every node at once
-- (PostgresStore.key_generation).
CREATE TABLE key_generation (
    id     integer PRIMARY KEY CHECK (id = 1),
    value  bigint NOT NULL
);
INSERT INTO key_generation (id, value) VALUES (1, 0);

CREATE FUNCTION progress_server_key_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE key_generation SET value = value + 1 WHERE id = 1;
    PERFORM pg_notify('progress_server_keys', '');
    RETURN NULL;
END;
$$;
CREATE TRIGGER api_keys_changed AFTER INSERT OR UPDATE OR DELETE ON api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION progress_server_key_changed();
