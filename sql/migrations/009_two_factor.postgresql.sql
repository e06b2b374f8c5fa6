-- 009 (issue 13): TOTP two-factor login (panel/totp.py). Each user may have a TOTP secret,
-- sealed with the panel's secret, the time it was turned on and the last time step used (a code
-- is accepted once); recovery codes, hashed, each usable once; logins waiting for their second
-- factor. Existing users keep logging in with their password alone until they enrol.
ALTER TABLE admins ADD COLUMN IF NOT EXISTS totp_secret_box TEXT;
ALTER TABLE admins ADD COLUMN IF NOT EXISTS totp_enabled_at TIMESTAMP;
ALTER TABLE admins ADD COLUMN IF NOT EXISTS totp_last_step BIGINT;
CREATE TABLE IF NOT EXISTS recovery_codes (
  id SERIAL PRIMARY KEY,
  admin_id INTEGER NOT NULL REFERENCES admins(id) ON DELETE CASCADE,
  code_hash VARCHAR(64) NOT NULL,
  created_at TIMESTAMP NOT NULL DEFAULT (NOW() AT TIME ZONE 'UTC'),
  used_at TIMESTAMP,
  UNIQUE (admin_id, code_hash)
);
CREATE TABLE IF NOT EXISTS login_challenges (
  id SERIAL PRIMARY KEY,
  token_hash VARCHAR(64) NOT NULL UNIQUE,
  admin_id INTEGER NOT NULL REFERENCES admins(id) ON DELETE CASCADE,
  created_at TIMESTAMP NOT NULL DEFAULT (NOW() AT TIME ZONE 'UTC'),
  expires_at TIMESTAMP NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_login_challenges_admin ON login_challenges (admin_id);
