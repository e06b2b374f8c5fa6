-- 004 (issue 10): late samples reach the rollups, and agents' clocks are watched. The writer
-- records the 5-minute buckets that received samples older than the rollup job's recent window;
-- the job recomputes only those.
-- Types as Peewee gives them on SQLite.
CREATE TABLE IF NOT EXISTS "dirty_buckets" (
  "agent_id" INTEGER NOT NULL,
  "bucket" DATETIME NOT NULL,
  PRIMARY KEY ("agent_id", "bucket"),
  FOREIGN KEY ("agent_id") REFERENCES "servers_agents" ("id") ON DELETE CASCADE
);
-- How far each agent's clock is off, in seconds (the servers table warns).
ALTER TABLE "servers_agents" ADD COLUMN "clock_offset" INTEGER;
