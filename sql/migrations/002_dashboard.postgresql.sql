-- 002: the dashboard (issue 5). Servers can be shown on the public status page; agents report
-- when their server booted (the detail page's uptime).
ALTER TABLE servers ADD COLUMN public_status BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE servers_agents ADD COLUMN boot_time TIMESTAMP;
