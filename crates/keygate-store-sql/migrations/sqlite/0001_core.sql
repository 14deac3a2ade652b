-- Accounts, users, API keys and daily usage. Timestamps are Unix milliseconds (UTC).
CREATE TABLE accounts (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    name_lower  TEXT NOT NULL CONSTRAINT accounts_name UNIQUE,
    email       TEXT NOT NULL,
    plan        TEXT NOT NULL,
    status      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE users (
    id                 TEXT PRIMARY KEY,
    account_id         TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    email              TEXT NOT NULL,
    username           TEXT NOT NULL,
    first_name         TEXT NOT NULL,
    last_name          TEXT NOT NULL,
    role               TEXT NOT NULL,
    password_verifier  TEXT,
    md5_verifier       TEXT,
    sha1_verifier      TEXT,
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL,
    CONSTRAINT users_username UNIQUE (account_id, username)
);

CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY,
    account_id    TEXT REFERENCES accounts (id) ON DELETE CASCADE,
    created_by    TEXT,
    name          TEXT NOT NULL,
    description   TEXT NOT NULL,
    scope         TEXT NOT NULL,
    environment   TEXT NOT NULL,
    key_hash      TEXT NOT NULL CONSTRAINT api_keys_hash UNIQUE,
    start         TEXT NOT NULL,
    last4         TEXT NOT NULL,
    expires_at    BIGINT,
    revoked_at    BIGINT,
    rolled_to     TEXT,
    rate_limit    TEXT,
    metadata      TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    last_used_at  BIGINT
);
CREATE INDEX api_keys_by_account ON api_keys (account_id, id);

CREATE TABLE usage_daily (
    key_id      TEXT NOT NULL,
    account_id  TEXT,
    day         INTEGER NOT NULL,
    requests    BIGINT NOT NULL,
    PRIMARY KEY (key_id, day)
);
CREATE INDEX usage_daily_by_account ON usage_daily (account_id, day);
