-- Token signing keys (private halves sealed with the master key) and the revocation feed that
-- every node polls to drop cached keys, users and accounts and to deny logged-out tokens.
CREATE TABLE signing_keys (
    kid         TEXT PRIMARY KEY,
    alg         TEXT NOT NULL,
    sealed      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    retired_at  BIGINT
);

CREATE TABLE revocations (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    kind        TEXT NOT NULL,
    subject     TEXT NOT NULL,
    expires_at  BIGINT,
    created_at  BIGINT NOT NULL
);
CREATE INDEX revocations_by_kind ON revocations (kind, expires_at);

CREATE INDEX users_by_md5 ON users (account_id, md5_verifier);
CREATE INDEX users_by_sha1 ON users (account_id, sha1_verifier);

-- The account's own key, shown and re-created by /v2/accounts/{id}/api_key.
ALTER TABLE accounts ADD COLUMN api_key_id TEXT;
