-- 013 (issue 13): API tokens for /api/v1 (panel/tokens.py): named, read-only or read-write,
-- staff-wide or bound to one customer; only the token's SHA-256 is stored. No existing row
-- changes: an upgraded panel has no tokens until a user creates one.
-- Types and index names as Peewee gives them on SQLite.
CREATE TABLE IF NOT EXISTS "api_tokens" ("id" INTEGER NOT NULL PRIMARY KEY, "token_id" VARCHAR(16) NOT NULL, "secret_hash" VARCHAR(64) NOT NULL, "name" VARCHAR(64) NOT NULL, "admin_id" INTEGER NOT NULL, "customer_id" INTEGER, "may_write" INTEGER NOT NULL, "created_at" DATETIME NOT NULL, "last_used_at" DATETIME, "expires_at" DATETIME, "revoked_at" DATETIME, FOREIGN KEY ("admin_id") REFERENCES "admins" ("id") ON DELETE CASCADE, FOREIGN KEY ("customer_id") REFERENCES "customers" ("id") ON DELETE CASCADE);
CREATE UNIQUE INDEX IF NOT EXISTS "apitoken_token_id" ON "api_tokens" ("token_id");
CREATE INDEX IF NOT EXISTS "apitoken_admin_id" ON "api_tokens" ("admin_id");
CREATE INDEX IF NOT EXISTS "apitoken_customer_id" ON "api_tokens" ("customer_id");
