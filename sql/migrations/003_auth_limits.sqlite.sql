-- 003: authentication limits (issue 10). Keys get a SHA-256 fingerprint beside their bcrypt
-- hash (a right key passes without bcrypt); repeated failures are summarised into one
-- auth_events row per window; login limits live in auth_limits, shared by every replica.
-- Types and index names as Peewee gives them on SQLite.
ALTER TABLE "servers_agents" ADD COLUMN "api_key_fingerprint" VARCHAR(64);
ALTER TABLE "servers_agents" ADD COLUMN "prev_key_fingerprint" VARCHAR(64);
ALTER TABLE "auth_events" ADD COLUMN "occurrences" INTEGER NOT NULL DEFAULT 1;
ALTER TABLE "auth_events" ADD COLUMN "last_seen_at" DATETIME;
ALTER TABLE "auth_events" ADD COLUMN "summary_key" VARCHAR(64);
UPDATE "auth_events" SET "last_seen_at" = "created_at";
CREATE INDEX IF NOT EXISTS "authevent_last_seen_at" ON "auth_events" ("last_seen_at");
CREATE UNIQUE INDEX IF NOT EXISTS "authevent_summary_key" ON "auth_events" ("summary_key");
CREATE TABLE IF NOT EXISTS "auth_limits" ("name" VARCHAR(120) NOT NULL PRIMARY KEY, "tat" REAL NOT NULL);
