-- A key's last use is kept on its usage row of the day, written by the same statement that adds
-- the day's count, instead of by an UPDATE of the key's own row at every flush: that update cost
-- more than the counts themselves (on SQLite, about twice the upsert per key, and on PostgreSQL a
-- new version of a wide row). A key's `last_used_at` is read from its latest usage row, and
-- from `api_keys.last_used_at` (what earlier versions wrote) when that row has none.
ALTER TABLE usage_daily ADD COLUMN last_used_at BIGINT;
