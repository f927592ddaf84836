-- Status-page login sessions. Only the SHA-256 of the cookie's token is stored, so a copy
-- of the database does not log anyone in; the CSRF token is stored as is because the page
-- must render it into every form.
CREATE TABLE sessions (
    token_hash  TEXT PRIMARY KEY,
    key_id      INTEGER NOT NULL REFERENCES api_keys(key_id),
    csrf_token  TEXT NOT NULL,
    created_at  REAL NOT NULL,
    expires_at  REAL NOT NULL
);
CREATE INDEX sessions_expiry ON sessions(expires_at);
