-- 016 (issue 14): traffic totals and quotas (panel/traffic.py, panel/quotas.py). Each agent's
-- traffic per hour, recomputed from the samples' interface counters by the rollup job, and per
-- day (the sum of its hours: what a billing cycle sums); and on servers and customers a billing
-- day, an optional allowance (bytes a cycle) and what it counts (in + out, or the larger).
-- Existing servers and customers start on day 1 without an allowance: traffic is counted from
-- the upgrade on, no alert opens until an admin sets one.
CREATE TABLE IF NOT EXISTS traffic_hours (
  agent_id INTEGER NOT NULL REFERENCES servers_agents(id) ON DELETE CASCADE,
  hour TIMESTAMP NOT NULL,
  received BIGINT NOT NULL,
  sent BIGINT NOT NULL,
  PRIMARY KEY (agent_id, hour)
);
CREATE TABLE IF NOT EXISTS traffic_days (
  agent_id INTEGER NOT NULL REFERENCES servers_agents(id) ON DELETE CASCADE,
  day TIMESTAMP NOT NULL,
  received BIGINT NOT NULL,
  sent BIGINT NOT NULL,
  PRIMARY KEY (agent_id, day)
);
ALTER TABLE servers ADD COLUMN billing_day SMALLINT NOT NULL DEFAULT 1;
ALTER TABLE servers ADD COLUMN traffic_allowance BIGINT;
ALTER TABLE servers ADD COLUMN traffic_basis VARCHAR(3) NOT NULL DEFAULT 'sum';
ALTER TABLE customers ADD COLUMN billing_day SMALLINT NOT NULL DEFAULT 1;
ALTER TABLE customers ADD COLUMN traffic_allowance BIGINT;
ALTER TABLE customers ADD COLUMN traffic_basis VARCHAR(3) NOT NULL DEFAULT 'sum';
