-- 014 (issue 14): agent upgrades from the panel (panel/upgrades.py). An agent says at
-- registration whether it opted in (agent.autoUpdate): off for every existing agent until it
-- registers again. Rollouts and each server's result are new tables; at most one rollout runs.
-- Types and index names as Peewee gives them on SQLite.
ALTER TABLE "servers_agents" ADD COLUMN "auto_update" INTEGER NOT NULL DEFAULT 0;
CREATE TABLE IF NOT EXISTS "rollouts" ("id" INTEGER NOT NULL PRIMARY KEY, "version" VARCHAR(20) NOT NULL, "sha256" VARCHAR(64) NOT NULL, "target" VARCHAR(200) NOT NULL, "wave_size" INTEGER NOT NULL, "state" VARCHAR(16) NOT NULL, "started_by" VARCHAR(64) NOT NULL, "created_at" DATETIME NOT NULL, "finished_at" DATETIME, "detail" VARCHAR(200));
CREATE UNIQUE INDEX IF NOT EXISTS "rollout_one_running" ON "rollouts" ("state") WHERE ("state" = 'running');
CREATE TABLE IF NOT EXISTS "rollout_servers" ("rollout_id" INTEGER NOT NULL, "server_id" INTEGER NOT NULL, "wave" INTEGER NOT NULL, "state" VARCHAR(16) NOT NULL, "offered_at" DATETIME, "finished_at" DATETIME, "detail" VARCHAR(200), PRIMARY KEY ("rollout_id", "server_id"), FOREIGN KEY ("rollout_id") REFERENCES "rollouts" ("id") ON DELETE CASCADE, FOREIGN KEY ("server_id") REFERENCES "servers" ("id") ON DELETE CASCADE);
CREATE INDEX IF NOT EXISTS "rolloutserver_rollout_id" ON "rollout_servers" ("rollout_id");
CREATE INDEX IF NOT EXISTS "rolloutserver_server_id" ON "rollout_servers" ("server_id");
