-- 009 (issue 13): TOTP two-factor login (panel/totp.py). Each user may have a TOTP secret,
-- sealed with the panel's secret, the time it was turned on and the last time step used (a code
-- is accepted once); recovery codes, hashed, each usable once; logins waiting for their second
-- factor. Existing users keep logging in with their password alone until they enrol.
-- Types and index names as Peewee gives them on SQLite.
ALTER TABLE "admins" ADD COLUMN "totp_secret_box" TEXT;
ALTER TABLE "admins" ADD COLUMN "totp_enabled_at" DATETIME;
ALTER TABLE "admins" ADD COLUMN "totp_last_step" INTEGER;
CREATE TABLE IF NOT EXISTS "recovery_codes" ("id" INTEGER NOT NULL PRIMARY KEY, "admin_id" INTEGER NOT NULL, "code_hash" VARCHAR(64) NOT NULL, "created_at" DATETIME NOT NULL, "used_at" DATETIME, FOREIGN KEY ("admin_id") REFERENCES "admins" ("id") ON DELETE CASCADE);
CREATE INDEX IF NOT EXISTS "recoverycode_admin_id" ON "recovery_codes" ("admin_id");
CREATE UNIQUE INDEX IF NOT EXISTS "recoverycode_admin_id_code_hash" ON "recovery_codes" ("admin_id", "code_hash");
CREATE TABLE IF NOT EXISTS "login_challenges" ("id" INTEGER NOT NULL PRIMARY KEY, "token_hash" VARCHAR(64) NOT NULL, "admin_id" INTEGER NOT NULL, "created_at" DATETIME NOT NULL, "expires_at" DATETIME NOT NULL, FOREIGN KEY ("admin_id") REFERENCES "admins" ("id") ON DELETE CASCADE);
CREATE UNIQUE INDEX IF NOT EXISTS "loginchallenge_token_hash" ON "login_challenges" ("token_hash");
CREATE INDEX IF NOT EXISTS "loginchallenge_admin_id" ON "login_challenges" ("admin_id");
