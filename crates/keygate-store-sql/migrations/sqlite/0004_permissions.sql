-- Extra permissions a key holds beside its scope, comma-separated (e.g. `verify`: may call the
-- verification API for its account's keys).
ALTER TABLE api_keys ADD COLUMN permissions TEXT NOT NULL DEFAULT '';
