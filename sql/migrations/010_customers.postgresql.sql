-- 010 (issue 13): customers. A server belongs to at most one (NULL: staff-only, as every
-- existing server stays); a user is staff (no customer) or one customer's (models.py,
-- ADMIN_ROLE_CHECK; panel/access.py decides what each sees).
CREATE TABLE IF NOT EXISTS customers (
  id SERIAL PRIMARY KEY,
  name VARCHAR(100) NOT NULL UNIQUE,
  slug VARCHAR(40) NOT NULL UNIQUE,
  created_at TIMESTAMP NOT NULL DEFAULT (NOW() AT TIME ZONE 'UTC')
);
ALTER TABLE servers ADD COLUMN customer_id INTEGER REFERENCES customers(id) ON DELETE SET NULL;
ALTER TABLE admins ADD COLUMN customer_id INTEGER REFERENCES customers(id) ON DELETE CASCADE;
ALTER TABLE admins ADD CHECK ((customer_id IS NULL AND role IN ('admin', 'viewer')) OR (customer_id IS NOT NULL AND role IN ('customer-admin', 'customer-viewer')));
CREATE INDEX IF NOT EXISTS idx_servers_customer ON servers (customer_id);
CREATE INDEX IF NOT EXISTS idx_admins_customer ON admins (customer_id);
