-- mPanel schema for PostgreSQL. `python -m panel init-db` runs this file; every statement is
-- idempotent, so running it again changes nothing. SQLite gets the same tables from the Peewee
-- models in panel/models.py; tests/integration/test_schema.py checks the two agree.
--
-- Times are TIMESTAMP (without zone) holding UTC, as in the seed design.
-- Deviations from the seed design, and why:
--   * cpu_* columns are REAL, not DECIMAL(5,2): a load average can pass 999.99 on a large box,
--     and DECIMAL comes back as Python Decimal for no gain in a monitoring figure.
--   * server_metrics has no id: (agent_id, timestamp) is its primary key (named as the seed
--     design's index), and it is partitioned by day.
--   * added typed columns: memory_available, swap_*, cpu_iowait/steal, summed disk and network
--     rates (bytes/s), process_count; added the rest of the same sample as `detail`: disks
--     (per mount), interfaces, disk_io (per device), processes (top 5 by CPU and memory),
--     services, unavailable (collectors that failed) — compact JSON, zlib-compressed against
--     a dictionary of its recurring words (models.DETAIL_DICTIONARY): ~1 KB a sample in all. servers_agents gains api_key_id, the key's public
--     id that finds the row by index so a request never tries every hash.
--   * idx_server_metrics_agent_timestamp is the primary key: the same sample is stored once.
--   * servers_agents keeps a rotated key's predecessor during its grace period (prev_key_*)
--     and the new key sealed with the panel's secret until the agent has it (pending_key_box);
--     server_metrics.late marks samples replayed from an agent's buffer.
--   * servers.public_status opts a server into the public /status page; servers_agents.boot_time
--     is when the server booted, as its agent reported (uptime on the detail page);
--     servers_agents.clock_offset is how far the agent's clock was off, in seconds (warned of).
--   * servers_agents keeps each key's SHA-256 beside its bcrypt hash (api_key_fingerprint,
--     prev_key_fingerprint): a right key is recognised without bcrypt (panel/keys.py).
--   * auth_events summarises repeated failures (occurrences, last_seen_at, summary_key);
--     auth_limits holds the login limits every replica shares (panel/models.py, take_attempts).

CREATE TABLE IF NOT EXISTS schema_version (
  version INTEGER PRIMARY KEY,
  applied_at TIMESTAMP NOT NULL
);

-- A hosting customer (issue 13): its users see its servers only (panel/access.py).
CREATE TABLE IF NOT EXISTS customers (
  id SERIAL PRIMARY KEY,
  name VARCHAR(100) NOT NULL UNIQUE,
  slug VARCHAR(40) NOT NULL UNIQUE,
  created_at TIMESTAMP NOT NULL DEFAULT (NOW() AT TIME ZONE 'UTC'),
  -- Its public page /status/<slug> (migration 012): off by default, under its own title.
  status_page BOOLEAN NOT NULL DEFAULT FALSE,
  status_title VARCHAR(100) NOT NULL DEFAULT '',
  -- Traffic quota (migration 016, panel/quotas.py): the cycle's first day of the month (past
  -- a month's end, its last day), the allowance in bytes a cycle (NULL: none), what it counts.
  billing_day SMALLINT NOT NULL DEFAULT 1,
  traffic_allowance BIGINT,
  traffic_basis VARCHAR(3) NOT NULL DEFAULT 'sum'
);

CREATE TABLE IF NOT EXISTS servers (
  id SERIAL PRIMARY KEY,
  name VARCHAR(100) NOT NULL UNIQUE,
  -- NULL: staff-only; a deleted customer's servers go back to the staff with their data.
  customer_id INTEGER REFERENCES customers(id) ON DELETE SET NULL,
  critical BOOLEAN NOT NULL DEFAULT FALSE,
  public_status BOOLEAN NOT NULL DEFAULT FALSE,
  state VARCHAR(16) NOT NULL DEFAULT 'unknown',
  state_since TIMESTAMP,
  created_at TIMESTAMP NOT NULL DEFAULT (NOW() AT TIME ZONE 'UTC'),
  updated_at TIMESTAMP NOT NULL DEFAULT (NOW() AT TIME ZONE 'UTC'),
  -- Traffic quota (migration 016, panel/quotas.py): the cycle's first day of the month (past
  -- a month's end, its last day), the allowance in bytes a cycle (NULL: none), what it counts.
  billing_day SMALLINT NOT NULL DEFAULT 1,
  traffic_allowance BIGINT,
  traffic_basis VARCHAR(3) NOT NULL DEFAULT 'sum'
);

CREATE TABLE IF NOT EXISTS servers_agents (
  id SERIAL PRIMARY KEY,
  server_id INTEGER NOT NULL UNIQUE REFERENCES servers(id) ON DELETE CASCADE,
  hostname VARCHAR(255) NOT NULL DEFAULT '',
  ip_address VARCHAR(45),
  os VARCHAR(50),
  arch VARCHAR(50),
  agent_version VARCHAR(20),
  boot_time TIMESTAMP,
  api_key_id VARCHAR(16) NOT NULL UNIQUE,
  api_key_hash TEXT NOT NULL,
  api_key_fingerprint VARCHAR(64),
  prev_key_id VARCHAR(16) UNIQUE,
  prev_key_hash TEXT,
  prev_key_fingerprint VARCHAR(64),
  prev_key_expires_at TIMESTAMP,
  pending_key_box TEXT,
  key_rotated_at TIMESTAMP,
  key_switched_at TIMESTAMP,
  status VARCHAR(20) NOT NULL DEFAULT 'pending',
  last_seen TIMESTAMP,
  clock_offset INTEGER,
  created_at TIMESTAMP NOT NULL DEFAULT (NOW() AT TIME ZONE 'UTC'),
  updated_at TIMESTAMP NOT NULL DEFAULT (NOW() AT TIME ZONE 'UTC')
);

-- Partitioned by day on timestamp: retention drops whole partitions (jobs.py creates them
-- ahead and drops them after MPANEL_RETENTION_RAW_DAYS). The primary key includes the partition
-- column, as PostgreSQL requires, and is what stores a sample once.
CREATE TABLE IF NOT EXISTS server_metrics (
  -- 8-byte columns first, then 4-byte, then the rest: no alignment padding in a row
  -- (the seed design's names, in another order).
  timestamp TIMESTAMP NOT NULL,
  created_at TIMESTAMP NOT NULL DEFAULT (NOW() AT TIME ZONE 'UTC'),
  memory_total BIGINT,
  memory_used BIGINT,
  memory_free BIGINT,
  memory_available BIGINT,
  memory_cached BIGINT,
  swap_total BIGINT,
  swap_used BIGINT,
  disk_total BIGINT,
  disk_used BIGINT,
  disk_free BIGINT,
  network_rx_bytes BIGINT,
  network_tx_bytes BIGINT,
  agent_id INTEGER NOT NULL REFERENCES servers_agents(id) ON DELETE CASCADE,
  cpu_usage REAL,
  cpu_iowait REAL,
  cpu_steal REAL,
  cpu_load_1min REAL,
  cpu_load_5min REAL,
  cpu_load_15min REAL,
  disk_max_percent REAL,
  disk_max_inode_percent REAL,
  disk_read_rate REAL,
  disk_write_rate REAL,
  network_rx_rate REAL,
  network_tx_rate REAL,
  process_count INTEGER,
  cpu_temperature REAL,
  mysql_connections BIGINT,
  mysql_max_connections BIGINT,
  mysql_queries_rate REAL,
  mysql_slow_queries_rate REAL,
  fpm_active BIGINT,
  fpm_listen_queue BIGINT,
  mail_queue BIGINT,
  mail_deferred BIGINT,
  mail_oldest_age BIGINT,
  certificate_min_days REAL,
  late BOOLEAN NOT NULL DEFAULT FALSE,
  detail BYTEA,
  CONSTRAINT idx_server_metrics_agent_timestamp PRIMARY KEY (agent_id, timestamp)
) PARTITION BY RANGE (timestamp);

-- Catches a sample no daily partition covers yet; normally empty.
CREATE TABLE IF NOT EXISTS server_metrics_default PARTITION OF server_metrics DEFAULT;

-- Time windows across all servers (rules, rollups): a BRIN index is a few pages per day.
CREATE INDEX IF NOT EXISTS idx_server_metrics_timestamp ON server_metrics USING BRIN (timestamp);

CREATE TABLE IF NOT EXISTS latest_samples (
  agent_id INTEGER PRIMARY KEY REFERENCES servers_agents(id) ON DELETE CASCADE,
  timestamp TIMESTAMP NOT NULL
);

-- Rollups: average and peak of each chart figure per 5 minutes and per hour (rollups.py).
CREATE TABLE IF NOT EXISTS metrics_5m (
  agent_id INTEGER NOT NULL REFERENCES servers_agents(id) ON DELETE CASCADE,
  bucket TIMESTAMP NOT NULL,
  samples INTEGER NOT NULL,
  cpu_usage_avg REAL, cpu_usage_max REAL,
  cpu_iowait_avg REAL, cpu_iowait_max REAL,
  cpu_steal_avg REAL, cpu_steal_max REAL,
  cpu_load_1min_avg REAL, cpu_load_1min_max REAL,
  memory_used_avg REAL, memory_used_max REAL, memory_total BIGINT,
  swap_used_avg REAL, swap_used_max REAL,
  disk_max_percent_avg REAL, disk_max_percent_max REAL,
  disk_max_inode_percent_avg REAL, disk_max_inode_percent_max REAL,
  disk_read_rate_avg REAL, disk_read_rate_max REAL,
  disk_write_rate_avg REAL, disk_write_rate_max REAL,
  network_rx_rate_avg REAL, network_rx_rate_max REAL,
  network_tx_rate_avg REAL, network_tx_rate_max REAL,
  cpu_temperature_avg REAL, cpu_temperature_max REAL,
  mysql_connections_avg REAL, mysql_connections_max REAL,
  mysql_max_connections BIGINT,
  mysql_queries_rate_avg REAL, mysql_queries_rate_max REAL,
  mysql_slow_queries_rate_avg REAL, mysql_slow_queries_rate_max REAL,
  fpm_active_avg REAL, fpm_active_max REAL,
  fpm_listen_queue_avg REAL, fpm_listen_queue_max REAL,
  mail_queue_avg REAL, mail_queue_max REAL,
  mail_deferred_avg REAL, mail_deferred_max REAL,
  PRIMARY KEY (agent_id, bucket)
);

CREATE TABLE IF NOT EXISTS metrics_1h (
  agent_id INTEGER NOT NULL REFERENCES servers_agents(id) ON DELETE CASCADE,
  bucket TIMESTAMP NOT NULL,
  samples INTEGER NOT NULL,
  cpu_usage_avg REAL, cpu_usage_max REAL,
  cpu_iowait_avg REAL, cpu_iowait_max REAL,
  cpu_steal_avg REAL, cpu_steal_max REAL,
  cpu_load_1min_avg REAL, cpu_load_1min_max REAL,
  memory_used_avg REAL, memory_used_max REAL, memory_total BIGINT,
  swap_used_avg REAL, swap_used_max REAL,
  disk_max_percent_avg REAL, disk_max_percent_max REAL,
  disk_max_inode_percent_avg REAL, disk_max_inode_percent_max REAL,
  disk_read_rate_avg REAL, disk_read_rate_max REAL,
  disk_write_rate_avg REAL, disk_write_rate_max REAL,
  network_rx_rate_avg REAL, network_rx_rate_max REAL,
  network_tx_rate_avg REAL, network_tx_rate_max REAL,
  cpu_temperature_avg REAL, cpu_temperature_max REAL,
  mysql_connections_avg REAL, mysql_connections_max REAL,
  mysql_max_connections BIGINT,
  mysql_queries_rate_avg REAL, mysql_queries_rate_max REAL,
  mysql_slow_queries_rate_avg REAL, mysql_slow_queries_rate_max REAL,
  fpm_active_avg REAL, fpm_active_max REAL,
  fpm_listen_queue_avg REAL, fpm_listen_queue_max REAL,
  mail_queue_avg REAL, mail_queue_max REAL,
  mail_deferred_avg REAL, mail_deferred_max REAL,
  PRIMARY KEY (agent_id, bucket)
);

-- Each agent's traffic per hour (migration 016): bytes received and sent, from the samples'
-- interface counters (panel/traffic.py); the rollup job writes each hour over when it
-- recomputes it, so a re-run never adds twice; each day (from its midnight) is the sum of its
-- hours, rewritten with them. A billing cycle's traffic is the sum of its days.
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

-- 5-minute buckets that received samples too late for the rollup job's recent window: the job
-- recomputes each (and its hour) once, then deletes the row (rollups.py).
CREATE TABLE IF NOT EXISTS dirty_buckets (
  agent_id INTEGER NOT NULL REFERENCES servers_agents(id) ON DELETE CASCADE,
  bucket TIMESTAMP NOT NULL,
  PRIMARY KEY (agent_id, bucket)
);

-- The service checks' states (checks.py): per server, check and subject, since when it has been
-- bad (NULL while good) and what it was when last good.
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

CREATE TABLE IF NOT EXISTS auth_events (
  id SERIAL PRIMARY KEY,
  created_at TIMESTAMP NOT NULL DEFAULT (NOW() AT TIME ZONE 'UTC'),
  kind VARCHAR(32) NOT NULL,
  client_addr VARCHAR(45),
  key_id VARCHAR(16),
  server_id INTEGER,
  detail VARCHAR(200),
  occurrences INTEGER NOT NULL DEFAULT 1,
  last_seen_at TIMESTAMP,
  summary_key VARCHAR(64) UNIQUE
);

CREATE INDEX IF NOT EXISTS idx_auth_events_created_at ON auth_events (created_at);
CREATE INDEX IF NOT EXISTS idx_auth_events_last_seen_at ON auth_events (last_seen_at);

CREATE TABLE IF NOT EXISTS auth_limits (
  name VARCHAR(120) PRIMARY KEY,
  tat DOUBLE PRECISION NOT NULL
);

CREATE TABLE IF NOT EXISTS server_events (
  id SERIAL PRIMARY KEY,
  server_id INTEGER NOT NULL REFERENCES servers(id) ON DELETE CASCADE,
  kind VARCHAR(16) NOT NULL,
  at TIMESTAMP NOT NULL,
  detail VARCHAR(200)
);

CREATE INDEX IF NOT EXISTS idx_server_events_server_at ON server_events (server_id, at);

CREATE TABLE IF NOT EXISTS alert_rules (
  id SERIAL PRIMARY KEY,
  server_id INTEGER REFERENCES servers(id) ON DELETE CASCADE,
  metric VARCHAR(16) NOT NULL,
  threshold REAL NOT NULL,
  minutes INTEGER NOT NULL DEFAULT 5,
  enabled BOOLEAN NOT NULL DEFAULT TRUE
);

CREATE INDEX IF NOT EXISTS idx_alert_rules_server ON alert_rules (server_id);

CREATE TABLE IF NOT EXISTS alerts (
  id SERIAL PRIMARY KEY,
  server_id INTEGER NOT NULL REFERENCES servers(id) ON DELETE CASCADE,
  rule VARCHAR(32) NOT NULL,
  open_key VARCHAR(32),
  state VARCHAR(16) NOT NULL DEFAULT 'firing',
  started_at TIMESTAMP NOT NULL,
  resolved_at TIMESTAMP,
  value REAL,
  threshold REAL,
  message VARCHAR(500) NOT NULL,
  silenced BOOLEAN NOT NULL DEFAULT FALSE
);

-- One firing alert per (server, rule), whichever replica saw it first (NULLs never collide).
CREATE UNIQUE INDEX IF NOT EXISTS idx_alerts_server_open ON alerts (server_id, open_key);

CREATE TABLE IF NOT EXISTS channels (
  id SERIAL PRIMARY KEY,
  name VARCHAR(64) NOT NULL UNIQUE,
  kind VARCHAR(16) NOT NULL,
  target VARCHAR(2000) NOT NULL,
  is_default BOOLEAN NOT NULL DEFAULT TRUE,
  created_at TIMESTAMP NOT NULL DEFAULT (NOW() AT TIME ZONE 'UTC')
);

CREATE TABLE IF NOT EXISTS server_channels (
  server_id INTEGER NOT NULL REFERENCES servers(id) ON DELETE CASCADE,
  channel_id INTEGER NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
  PRIMARY KEY (server_id, channel_id)
);

CREATE TABLE IF NOT EXISTS deliveries (
  id SERIAL PRIMARY KEY,
  alert_id INTEGER REFERENCES alerts(id) ON DELETE CASCADE,
  channel_id INTEGER NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
  event VARCHAR(16) NOT NULL,
  status VARCHAR(16) NOT NULL DEFAULT 'pending',
  attempts INTEGER NOT NULL DEFAULT 0,
  next_attempt_at TIMESTAMP NOT NULL,
  last_error VARCHAR(500),
  sent_at TIMESTAMP,
  created_at TIMESTAMP NOT NULL DEFAULT (NOW() AT TIME ZONE 'UTC')
);

CREATE INDEX IF NOT EXISTS idx_deliveries_due ON deliveries (status, next_attempt_at);

CREATE TABLE IF NOT EXISTS maintenance_windows (
  id SERIAL PRIMARY KEY,
  server_id INTEGER NOT NULL REFERENCES servers(id) ON DELETE CASCADE,
  starts_at TIMESTAMP NOT NULL,
  ends_at TIMESTAMP NOT NULL,
  reason VARCHAR(200)
);

CREATE INDEX IF NOT EXISTS idx_maintenance_windows_server ON maintenance_windows (server_id);

CREATE TABLE IF NOT EXISTS admins (
  id SERIAL PRIMARY KEY,
  username VARCHAR(64) NOT NULL UNIQUE,
  password_hash TEXT NOT NULL,
  role VARCHAR(16) NOT NULL DEFAULT 'admin',
  created_at TIMESTAMP NOT NULL DEFAULT (NOW() AT TIME ZONE 'UTC'),
  -- Two-factor (panel/totp.py): the TOTP secret sealed with the panel's secret (keys.seal),
  -- when a code confirmed it (NULL: off or pending), the last time step accepted.
  totp_secret_box TEXT,
  totp_enabled_at TIMESTAMP,
  totp_last_step BIGINT,
  -- Staff roles have none, customer roles exactly one (models.ADMIN_ROLE_CHECK).
  customer_id INTEGER REFERENCES customers(id) ON DELETE CASCADE,
  CHECK ((customer_id IS NULL AND role IN ('admin', 'viewer')) OR (customer_id IS NOT NULL AND role IN ('customer-admin', 'customer-viewer')))
);

CREATE INDEX IF NOT EXISTS idx_servers_customer ON servers (customer_id);
CREATE INDEX IF NOT EXISTS idx_admins_customer ON admins (customer_id);

CREATE TABLE IF NOT EXISTS admin_sessions (
  id SERIAL PRIMARY KEY,
  token_hash VARCHAR(64) NOT NULL UNIQUE,
  admin_id INTEGER NOT NULL REFERENCES admins(id) ON DELETE CASCADE,
  csrf_token VARCHAR(64) NOT NULL,
  created_at TIMESTAMP NOT NULL DEFAULT (NOW() AT TIME ZONE 'UTC'),
  expires_at TIMESTAMP NOT NULL
);

CREATE INDEX IF NOT EXISTS idx_admin_sessions_admin ON admin_sessions (admin_id);

-- Two-factor recovery codes: SHA-256 only, each usable once.
CREATE TABLE IF NOT EXISTS recovery_codes (
  id SERIAL PRIMARY KEY,
  admin_id INTEGER NOT NULL REFERENCES admins(id) ON DELETE CASCADE,
  code_hash VARCHAR(64) NOT NULL,
  created_at TIMESTAMP NOT NULL DEFAULT (NOW() AT TIME ZONE 'UTC'),
  used_at TIMESTAMP,
  UNIQUE (admin_id, code_hash)
);

-- A login between its password and its second factor (cookie token's SHA-256; single use).
CREATE TABLE IF NOT EXISTS login_challenges (
  id SERIAL PRIMARY KEY,
  token_hash VARCHAR(64) NOT NULL UNIQUE,
  admin_id INTEGER NOT NULL REFERENCES admins(id) ON DELETE CASCADE,
  created_at TIMESTAMP NOT NULL DEFAULT (NOW() AT TIME ZONE 'UTC'),
  expires_at TIMESTAMP NOT NULL
);

CREATE INDEX IF NOT EXISTS idx_login_challenges_admin ON login_challenges (admin_id);

-- API tokens for /api/v1 (panel/tokens.py): the public id, the SHA-256 of the token (never the
-- token), read-only or read-write, staff-wide (no customer) or one customer's.
CREATE TABLE IF NOT EXISTS api_tokens (
  id SERIAL PRIMARY KEY,
  token_id VARCHAR(16) NOT NULL UNIQUE,
  secret_hash VARCHAR(64) NOT NULL,
  name VARCHAR(64) NOT NULL,
  admin_id INTEGER NOT NULL REFERENCES admins(id) ON DELETE CASCADE,
  customer_id INTEGER REFERENCES customers(id) ON DELETE CASCADE,
  may_write BOOLEAN NOT NULL DEFAULT FALSE,
  created_at TIMESTAMP NOT NULL DEFAULT (NOW() AT TIME ZONE 'UTC'),
  last_used_at TIMESTAMP,
  expires_at TIMESTAMP,
  revoked_at TIMESTAMP
);

CREATE INDEX IF NOT EXISTS idx_api_tokens_admin ON api_tokens (admin_id);
CREATE INDEX IF NOT EXISTS idx_api_tokens_customer ON api_tokens (customer_id);
-- Per-customer alert channels (issue 13, migration 011): a channel is the staff's (customer_id
-- NULL) or one customer's; staff channels an admin chose also get that customer's alerts
-- (panel/alerts.py channels_for); a customer may require two-factor of its users.
-- A name is unique among the staff's channels and among each customer's (not across them: a
-- customer choosing "ops" must learn nothing of another's).
ALTER TABLE channels ADD COLUMN IF NOT EXISTS customer_id INTEGER REFERENCES customers(id) ON DELETE CASCADE;
ALTER TABLE channels DROP CONSTRAINT IF EXISTS channels_name_key;
CREATE INDEX IF NOT EXISTS idx_channels_customer ON channels (customer_id);
CREATE UNIQUE INDEX IF NOT EXISTS idx_channels_staff_name ON channels (name) WHERE customer_id IS NULL;
CREATE UNIQUE INDEX IF NOT EXISTS idx_channels_customer_name ON channels (customer_id, name);
ALTER TABLE customers ADD COLUMN IF NOT EXISTS require_two_factor BOOLEAN NOT NULL DEFAULT FALSE;

CREATE TABLE IF NOT EXISTS customer_staff_channels (
  customer_id INTEGER NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
  channel_id INTEGER NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
  PRIMARY KEY (customer_id, channel_id)
);

-- Disk-full forecasts (issue 14, migration 015): per-mount hourly history and each mount's
-- newest forecast (panel/forecasts.py).
CREATE TABLE IF NOT EXISTS mount_hours (
  agent_id INTEGER NOT NULL REFERENCES servers_agents(id) ON DELETE CASCADE,
  mount VARCHAR(255) NOT NULL,
  bucket TIMESTAMP NOT NULL,
  used BIGINT NOT NULL,
  capacity BIGINT NOT NULL,
  PRIMARY KEY (agent_id, mount, bucket)
);
CREATE INDEX IF NOT EXISTS idx_mount_hours_bucket ON mount_hours (bucket);

CREATE TABLE IF NOT EXISTS mount_forecasts (
  agent_id INTEGER NOT NULL REFERENCES servers_agents(id) ON DELETE CASCADE,
  mount VARCHAR(255) NOT NULL,
  used BIGINT NOT NULL,
  capacity BIGINT NOT NULL,
  bytes_per_day DOUBLE PRECISION,
  full_at TIMESTAMP,
  reason VARCHAR(32),
  computed_at TIMESTAMP NOT NULL,
  PRIMARY KEY (agent_id, mount)
);

-- Agent upgrades (issue 14, migration 014; panel/upgrades.py): whether an agent opted in
-- (agent.autoUpdate, as it registered), rollouts of a shipped agent.py and each server's result.
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
