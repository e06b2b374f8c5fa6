-- 002: the dashboard (issue 5). Servers can be shown on the public status page; agents report
-- when their server booted (the detail page's uptime). Types as Peewee gives them on SQLite.
ALTER TABLE "servers" ADD COLUMN "public_status" INTEGER NOT NULL DEFAULT 0;
ALTER TABLE "servers_agents" ADD COLUMN "boot_time" DATETIME;
