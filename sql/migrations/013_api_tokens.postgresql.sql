-- 013 (issue 13): API tokens for /api/v1 (panel/tokens.py): named, read-only or read-write,
-- staff-wide or bound to one customer; only the token's SHA-256 is stored. No existing row
-- changes: an upgraded panel has no tokens until a user creates one.
CREATE TABLE IF NOT EXISTS api_tokens (
  id SERIAL PRIMARY KEY,
  token_id VARCHAR(16) NOT NULL UNIQUE,
  secret_hash VARCHAR(64) NOT NULL,
  name VARCHAR(64) NOT NULL,
  admin_id INTEGER NOT NULL REFERENCES admins(id) ON DELETE CASCADE,
  customer_id INTEGER REFERENCES customers(id) ON DELETE CASCADE,
  may_write BOOLEAN NOT NULL DEFAULT FALSE,
  created_at TIMESTAMP NOT NULL DEFAULT (NOW() AT TIME ZONE 'UTC'),
  last_used_at TIMESTAMP,
  expires_at TIMESTAMP,
  revoked_at TIMESTAMP
);
CREATE INDEX IF NOT EXISTS idx_api_tokens_admin ON api_tokens (admin_id);
CREATE INDEX IF NOT EXISTS idx_api_tokens_customer ON api_tokens (customer_id);
