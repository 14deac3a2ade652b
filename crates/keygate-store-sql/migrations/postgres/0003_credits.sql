-- Credits: a balance on the account, changed only together with an append-only ledger entry.
-- Every entry carries an idempotency key, unique per account, so a retried grant or debit
-- applies once.
ALTER TABLE accounts ADD COLUMN credit_balance BIGINT NOT NULL DEFAULT 0;
ALTER TABLE accounts ADD COLUMN credits_used BIGINT NOT NULL DEFAULT 0;
-- The month (YYYY-MM) of the last plan refill.
ALTER TABLE accounts ADD COLUMN credits_period TEXT;

CREATE TABLE credit_ledger (
    id               TEXT PRIMARY KEY,
    account_id       TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    amount           BIGINT NOT NULL,
    balance_after    BIGINT NOT NULL,
    kind             TEXT NOT NULL,
    idempotency_key  TEXT NOT NULL,
    description      TEXT NOT NULL,
    key_id           TEXT,
    created_at       BIGINT NOT NULL,
    CONSTRAINT credit_ledger_idempotency UNIQUE (account_id, idempotency_key)
);
CREATE INDEX credit_ledger_by_account ON credit_ledger (account_id, id);
