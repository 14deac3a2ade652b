-- Webhooks: endpoints, the outbox (events and one delivery row per endpoint, written in one
-- transaction), the attempts log, and one-off notices (so key.expiring goes out once per key).

CREATE TABLE webhook_endpoints (
    id                     TEXT PRIMARY KEY,
    account_id             TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    url                    TEXT NOT NULL,
    description            TEXT NOT NULL,
    -- Filters, comma-separated (empty: every event).
    event_types            TEXT NOT NULL,
    -- Sealed with the master key.
    secret                 TEXT NOT NULL,
    previous_secret        TEXT,
    previous_rotated_at    BIGINT,
    enabled                BIGINT NOT NULL,
    disabled_reason        TEXT,
    failing_since          BIGINT,
    created_at             BIGINT NOT NULL,
    updated_at             BIGINT NOT NULL
);
CREATE INDEX webhook_endpoints_by_account ON webhook_endpoints (account_id, id);

CREATE TABLE webhook_events (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    event_type  TEXT NOT NULL,
    payload     TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX webhook_events_by_time ON webhook_events (created_at);

CREATE TABLE webhook_deliveries (
    id                TEXT PRIMARY KEY,
    event_id          TEXT NOT NULL REFERENCES webhook_events (id) ON DELETE CASCADE,
    endpoint_id       TEXT NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    account_id        TEXT NOT NULL,
    status            TEXT NOT NULL,
    attempts          BIGINT NOT NULL,
    next_attempt_at   BIGINT NOT NULL,
    lease_owner       TEXT,
    lease_until       BIGINT,
    last_status_code  BIGINT,
    last_error        TEXT,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL
);
-- The workers' queue: only pending rows, by due time.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_by_endpoint ON webhook_deliveries (endpoint_id, id);
CREATE INDEX webhook_deliveries_by_event ON webhook_deliveries (event_id);

CREATE TABLE webhook_attempts (
    delivery_id       TEXT NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempted_at      BIGINT NOT NULL,
    status_code       BIGINT,
    latency_ms        BIGINT NOT NULL,
    error             TEXT,
    response_excerpt  TEXT NOT NULL
);
CREATE INDEX webhook_attempts_by_delivery ON webhook_attempts (delivery_id, attempted_at);

CREATE TABLE webhook_notices (
    subject     TEXT NOT NULL,
    kind        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (subject, kind)
);

-- key.expiring scans keys by expiry.
CREATE INDEX api_keys_by_expiry ON api_keys (expires_at) WHERE expires_at IS NOT NULL;
