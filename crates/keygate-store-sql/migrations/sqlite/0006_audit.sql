-- The audit log: one row per security-relevant act. No foreign keys: an entry outlives the
-- account, user or key it names (an account's deletion is itself audited), until retention
-- purges it by age.
CREATE TABLE audit_log (
    id             TEXT PRIMARY KEY,
    at             BIGINT NOT NULL,
    action         TEXT NOT NULL,
    account_id     TEXT,
    actor_key_id   TEXT,
    actor_user_id  TEXT,
    object_type    TEXT NOT NULL,
    object_id      TEXT,
    client_addr    TEXT,
    request_id     TEXT,
    details        TEXT NOT NULL
);
CREATE INDEX audit_log_by_account ON audit_log (account_id, id);
CREATE INDEX audit_log_by_time ON audit_log (at);
