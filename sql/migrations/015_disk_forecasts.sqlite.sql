-- 015 (issue 14): disk-full forecasts (panel/forecasts.py). mount_hours: per server, mount and
-- hour, the used bytes and capacity (used + free) of the hour's newest sample, the history that
-- outlives the raw samples' per-mount detail; mount_forecasts: each mount's newest forecast,
-- written by the forecasts job. Both start empty: forecasts appear once a mount has 6 hours of
-- history. The built-in disk_full rule is seeded by the upgrade (alerts.ensure_default_rules).
-- Types as Peewee gives them on SQLite.
CREATE TABLE IF NOT EXISTS "mount_hours" ("agent_id" INTEGER NOT NULL, "mount" VARCHAR(255) NOT NULL, "bucket" DATETIME NOT NULL, "used" INTEGER NOT NULL, "capacity" INTEGER NOT NULL, PRIMARY KEY ("agent_id", "mount", "bucket"), FOREIGN KEY ("agent_id") REFERENCES "servers_agents" ("id") ON DELETE CASCADE);
CREATE INDEX IF NOT EXISTS "mounthour_bucket" ON "mount_hours" ("bucket");
CREATE TABLE IF NOT EXISTS "mount_forecasts" ("agent_id" INTEGER NOT NULL, "mount" VARCHAR(255) NOT NULL, "used" INTEGER NOT NULL, "capacity" INTEGER NOT NULL, "bytes_per_day" REAL, "full_at" DATETIME, "reason" VARCHAR(32), "computed_at" DATETIME NOT NULL, PRIMARY KEY ("agent_id", "mount"), FOREIGN KEY ("agent_id") REFERENCES "servers_agents" ("id") ON DELETE CASCADE);
