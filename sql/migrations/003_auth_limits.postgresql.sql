-- 003: authentication limits (issue 10). Keys get a SHA-256 fingerprint beside their bcrypt
-- hash (a right key passes without bcrypt); repeated failures are summarised into one
-- auth_events row per window; login limits live in auth_limits, shared by every replica.
ALTER TABLE servers_agents ADD COLUMN api_key_fingerprint VARCHAR(64);
ALTER TABLE servers_agents ADD COLUMN prev_key_fingerprint VARCHAR(64);
ALTER TABLE auth_events ADD COLUMN occurrences INTEGER NOT NULL DEFAULT 1;
ALTER TABLE auth_events ADD COLUMN last_seen_at TIMESTAMP;
ALTER TABLE auth_events ADD COLUMN summary_key VARCHAR(64) UNIQUE;
UPDATE auth_events SET last_seen_at = created_at;
CREATE INDEX IF NOT EXISTS idx_auth_events_last_seen_at ON auth_events (last_seen_at);
CREATE TABLE IF NOT EXISTS auth_limits (
  name VARCHAR(120) PRIMARY KEY,
  tat DOUBLE PRECISION NOT NULL
);
