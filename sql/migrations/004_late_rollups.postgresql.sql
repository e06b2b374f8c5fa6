-- 004: late samples reach the rollups (issue 10). The writer records the 5-minute buckets that
-- received samples older than the rollup job's recent window; the job recomputes only those.
CREATE TABLE IF NOT EXISTS dirty_buckets (
  agent_id INTEGER NOT NULL REFERENCES servers_agents(id) ON DELETE CASCADE,
  bucket TIMESTAMP NOT NULL,
  PRIMARY KEY (agent_id, bucket)
);
