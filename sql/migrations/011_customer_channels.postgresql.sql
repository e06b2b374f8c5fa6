-- 011 (issue 13): per-customer alert channels. A channel is the staff's (customer_id NULL, as
-- every existing one stays) or one customer's, its name unique among its owner's only;
-- customer_staff_channels are the staff channels an admin chose to also get a customer's
-- alerts (panel/alerts.py channels_for). A customer may require two-factor of its users
-- (auth.two_factor_required); off for every existing one.
ALTER TABLE channels ADD COLUMN customer_id INTEGER REFERENCES customers(id) ON DELETE CASCADE;
ALTER TABLE channels DROP CONSTRAINT IF EXISTS channels_name_key;
CREATE INDEX IF NOT EXISTS idx_channels_customer ON channels (customer_id);
CREATE UNIQUE INDEX IF NOT EXISTS idx_channels_staff_name ON channels (name) WHERE customer_id IS NULL;
CREATE UNIQUE INDEX IF NOT EXISTS idx_channels_customer_name ON channels (customer_id, name);
ALTER TABLE customers ADD COLUMN require_two_factor BOOLEAN NOT NULL DEFAULT FALSE;
CREATE TABLE IF NOT EXISTS customer_staff_channels (
  customer_id INTEGER NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
  channel_id INTEGER NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
  PRIMARY KEY (customer_id, channel_id)
);
