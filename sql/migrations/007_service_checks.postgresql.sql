-- 007 (issue 12): the service checks' states (panel/checks.py): per server, check and subject
-- (a service, a pool, a certificate, a unit), since when it has been bad and what it was when
-- last good. The built-in check rules are seeded by the upgrade (alerts.ensure_default_rules).
CREATE TABLE IF NOT EXISTS check_states (
  agent_id INTEGER NOT NULL REFERENCES servers_agents(id) ON DELETE CASCADE,
  metric VARCHAR(16) NOT NULL,
  subject VARCHAR(300) NOT NULL,
  bad_since TIMESTAMP,
  text VARCHAR(300) NOT NULL,
  was VARCHAR(300),
  value DOUBLE PRECISION,
  updated_at TIMESTAMP NOT NULL,
  PRIMARY KEY (agent_id, metric, subject)
);
