-- 004: late samples reach the rollups (issue 10). The writer records the 5-minute buckets that
-- received samples older than the rollup job's recent window; the job recomputes only those.
-- Types as Peewee gives them on SQLite.
CREATE TABLE IF NOT EXISTS "dirty_buckets" (
  "agent_id" INTEGER NOT NULL,
  "bucket" DATETIME NOT NULL,
  PRIMARY KEY ("agent_id", "bucket"),
  FOREIGN KEY ("agent_id") REFERENCES "servers_agents" ("id") ON DELETE CASCADE
);
