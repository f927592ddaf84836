-- The SHA-256 of a task's request in canonical form (NewTask.fingerprint): a repeated
-- Idempotency-Key is the same request only when this matches. NULL for tasks made before.
ALTER TABLE tasks ADD COLUMN request_hash TEXT;
