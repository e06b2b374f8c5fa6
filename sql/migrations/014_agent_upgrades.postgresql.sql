-- 014 (issue 14): agent upgrades from the panel (panel/upgrades.py). An agent says at
-- registration whether it opted in (agent.autoUpdate): off for every existing agent until it
-- registers again. Rollouts and each server's result are new tables; at most one rollout runs.
ALTER TABLE servers_agents ADD COLUMN IF NOT EXISTS auto_update BOOLEAN NOT NULL DEFAULT FALSE;

CREATE TABLE IF NOT EXISTS rollouts (
  id SERIAL PRIMARY KEY,
  version VARCHAR(20) NOT NULL,
  sha256 VARCHAR(64) NOT NULL,
  target VARCHAR(200) NOT NULL,
  wave_size INTEGER NOT NULL CHECK (wave_size >= 1),
  state VARCHAR(16) NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'halted', 'done')),
  started_by VARCHAR(64) NOT NULL,
  created_at TIMESTAMP NOT NULL DEFAULT (NOW() AT TIME ZONE 'UTC'),
  finished_at TIMESTAMP,
  detail VARCHAR(200)
);
-- At most one rollout runs at a time: its offers are the only ones agents see.
CREATE UNIQUE INDEX IF NOT EXISTS rollout_one_running ON rollouts (state) WHERE state = 'running';

CREATE TABLE IF NOT EXISTS rollout_servers (
  rollout_id INTEGER NOT NULL REFERENCES rollouts(id) ON DELETE CASCADE,
  server_id INTEGER NOT NULL REFERENCES servers(id) ON DELETE CASCADE,
  wave INTEGER NOT NULL,
  state VARCHAR(16) NOT NULL DEFAULT 'pending'
    CHECK (state IN ('pending', 'offered', 'upgraded', 'failed', 'skipped')),
  offered_at TIMESTAMP,
  finished_at TIMESTAMP,
  detail VARCHAR(200),
  PRIMARY KEY (rollout_id, server_id)
);
CREATE INDEX IF NOT EXISTS idx_rollout_servers_server ON rollout_servers (server_id);
