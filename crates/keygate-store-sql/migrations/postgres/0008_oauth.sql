-- OAuth 2.0: clients, authorization codes, grants (refresh-token families), their refresh
-- tokens, every access token issued (so a revoked grant or deleted client can deny them), and
-- users' consents. Secrets are stored as SHA-256 hex only.

CREATE TABLE oauth_clients (
    id             TEXT PRIMARY KEY,
    account_id     TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    name           TEXT NOT NULL,
    -- One URI per line.
    redirect_uris  TEXT NOT NULL,
    scope          TEXT NOT NULL,
    confidential   BIGINT NOT NULL,
    secret_hash    TEXT,
    created_by     TEXT,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);
CREATE INDEX oauth_clients_by_account ON oauth_clients (account_id, id);

CREATE TABLE oauth_grants (
    id          TEXT PRIMARY KEY,
    client_id   TEXT NOT NULL REFERENCES oauth_clients (id) ON DELETE CASCADE,
    account_id  TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    scope       TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);
CREATE INDEX oauth_grants_by_user ON oauth_grants (user_id, client_id);

CREATE TABLE oauth_codes (
    code_hash       TEXT PRIMARY KEY,
    client_id       TEXT NOT NULL REFERENCES oauth_clients (id) ON DELETE CASCADE,
    account_id      TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    redirect_uri    TEXT NOT NULL,
    scope           TEXT NOT NULL,
    code_challenge  TEXT,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    used_at         BIGINT,
    grant_id        TEXT
);

CREATE TABLE oauth_refresh_tokens (
    token_hash  TEXT PRIMARY KEY,
    grant_id    TEXT NOT NULL REFERENCES oauth_grants (id) ON DELETE CASCADE,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT
);
CREATE INDEX oauth_refresh_tokens_by_grant ON oauth_refresh_tokens (grant_id);

CREATE TABLE oauth_access_tokens (
    jti         TEXT PRIMARY KEY,
    client_id   TEXT NOT NULL REFERENCES oauth_clients (id) ON DELETE CASCADE,
    grant_id    TEXT,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX oauth_access_tokens_by_grant ON oauth_access_tokens (grant_id);
CREATE INDEX oauth_access_tokens_by_client ON oauth_access_tokens (client_id, expires_at);

CREATE TABLE oauth_consents (
    user_id     TEXT NOT NULL,
    client_id   TEXT NOT NULL REFERENCES oauth_clients (id) ON DELETE CASCADE,
    account_id  TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    scope       TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (user_id, client_id)
);
