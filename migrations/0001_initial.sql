-- Keys are stored as SHA-256 of the key: keys are 256-bit random tokens, so a slow hash
-- adds nothing and would cost every request.
CREATE TABLE api_keys (
    key_id      INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT NOT NULL UNIQUE,
    key_hash    TEXT NOT NULL UNIQUE,
    is_admin    INTEGER NOT NULL DEFAULT 0,
    created_at  REAL NOT NULL,
    revoked_at  REAL
);

CREATE TABLE tasks (
    task_order          INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id             TEXT NOT NULL UNIQUE,
    owner_key_id        INTEGER NOT NULL REFERENCES api_keys(key_id),
    url                 TEXT NOT NULL,
    filename            TEXT,
    requested_filename  TEXT,
    sha256              TEXT,
    state               TEXT NOT NULL,
    downloaded_bytes    INTEGER NOT NULL DEFAULT 0,
    total_bytes         INTEGER,
    result              TEXT,
    error               TEXT,
    options             TEXT NOT NULL DEFAULT '{}',
    etag                TEXT,
    last_modified       TEXT,
    attempts            INTEGER NOT NULL DEFAULT 0,
    idempotency_key     TEXT,
    created_at          REAL NOT NULL,
    updated_at          REAL NOT NULL
);
CREATE INDEX tasks_owner_order ON tasks(owner_key_id, task_order);
CREATE INDEX tasks_state_order ON tasks(state, task_order);
CREATE UNIQUE INDEX tasks_idempotency ON tasks(owner_key_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- seq is assigned by the event bus, not by SQLite: progress events carry a seq too but are
-- not stored one row each, so the counter must outlive them (see seq_reservation).
CREATE TABLE events (
    seq           INTEGER PRIMARY KEY,
    task_id       TEXT NOT NULL,
    owner_key_id  INTEGER NOT NULL,
    event         TEXT NOT NULL,
    state         TEXT NOT NULL,
    body          TEXT NOT NULL,
    created_at    REAL NOT NULL
);
CREATE INDEX events_task_seq ON events(task_id, seq);
CREATE INDEX events_owner_seq ON events(owner_key_id, seq);

-- The highest seq the bus may hand out before writing a new reservation. After a crash the
-- bus starts above it, so seq never repeats even for progress events that were not stored.
CREATE TABLE seq_reservation (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    reserved  INTEGER NOT NULL
);
INSERT INTO seq_reservation (id, reserved) VALUES (1, 0);
