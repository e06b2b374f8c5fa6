-- 011 (issue 13): per-customer alert channels. A channel is the staff's (customer_id NULL, as
-- every existing one stays) or one customer's, its name unique among its owner's only;
-- customer_staff_channels are the staff channels an admin chose to also get a customer's
-- alerts (panel/alerts.py channels_for). A customer may require two-factor of its users
-- (auth.two_factor_required); off for every existing one. Types and index names as Peewee
-- gives them on SQLite.
ALTER TABLE "channels" ADD COLUMN "customer_id" INTEGER REFERENCES "customers" ("id") ON DELETE CASCADE;
DROP INDEX IF EXISTS "channel_name";
CREATE INDEX IF NOT EXISTS "channel_customer_id" ON "channels" ("customer_id");
CREATE UNIQUE INDEX IF NOT EXISTS "channel_staff_name" ON "channels" ("name") WHERE ("customer_id" IS NULL);
CREATE UNIQUE INDEX IF NOT EXISTS "channel_customer_id_name" ON "channels" ("customer_id", "name");
ALTER TABLE "customers" ADD COLUMN "require_two_factor" INTEGER NOT NULL DEFAULT 0;
CREATE TABLE IF NOT EXISTS "customer_staff_channels" ("customer_id" INTEGER NOT NULL, "channel_id" INTEGER NOT NULL, PRIMARY KEY ("customer_id", "channel_id"), FOREIGN KEY ("customer_id") REFERENCES "customers" ("id") ON DELETE CASCADE, FOREIGN KEY ("channel_id") REFERENCES "channels" ("id") ON DELETE CASCADE);
CREATE INDEX IF NOT EXISTS "customerstaffchannel_customer_id" ON "customer_staff_channels" ("customer_id");
CREATE INDEX IF NOT EXISTS "customerstaffchannel_channel_id" ON "customer_staff_channels" ("channel_id");
