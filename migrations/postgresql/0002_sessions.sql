-- PostgreSQL twin of ../0002_sessions.sql.
-- Status-page login sessions. Only the SHA-256 of the cookie's token is stored, so a copy
-- of the database does not log anyone in; the CSRF token is stored as is because the page
-- must render it into every form.
CREATE TABLE sessions (
    token_hash  text PRIMARY KEY,
    key_id      bigint NOT NULL REFERENCES api_keys(key_id),
    csrf_token  text NOT NULL,
    created_at  double precision NOT NULL,
    expires_at  double precision NOT NULL
);
CREATE INDEX sessions_expiry ON sessions(expires_at);
