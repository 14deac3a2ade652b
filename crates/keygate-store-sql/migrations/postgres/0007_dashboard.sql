-- The developer dashboard: verified email addresses, browser sessions and one-time mailed links
-- (verification, password reset, invitation). Sessions and links are kept by the SHA-256 of
-- their secret only.
ALTER TABLE users ADD COLUMN email_verified_at BIGINT;
-- Logging in by email address looks users up across accounts.
CREATE INDEX users_by_email ON users (lower(email));

CREATE TABLE dashboard_sessions (
    token_hash  TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX dashboard_sessions_by_user ON dashboard_sessions (user_id);
CREATE INDEX dashboard_sessions_by_expiry ON dashboard_sessions (expires_at);

CREATE TABLE dashboard_links (
    token_hash  TEXT PRIMARY KEY,
    purpose     TEXT NOT NULL,
    account_id  TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    user_id     TEXT,
    email       TEXT NOT NULL,
    role        TEXT,
    created_by  TEXT,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT
);
CREATE INDEX dashboard_links_by_expiry ON dashboard_links (expires_at);
