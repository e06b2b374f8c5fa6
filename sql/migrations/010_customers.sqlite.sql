-- 010 (issue 13): customers. A server belongs to at most one (NULL: staff-only, as every
-- existing server stays); a user is staff (no customer) or one customer's (models.py,
-- ADMIN_ROLE_CHECK; panel/access.py decides what each sees). SQLite adds no table constraint
-- to an existing table: the CHECK rides on the new column.
CREATE TABLE IF NOT EXISTS customers (
  id INTEGER NOT NULL PRIMARY KEY,
  name VARCHAR(100) NOT NULL UNIQUE,
  slug VARCHAR(40) NOT NULL UNIQUE,
  created_at DATETIME NOT NULL
);
ALTER TABLE servers ADD COLUMN customer_id INTEGER REFERENCES customers(id) ON DELETE SET NULL;
ALTER TABLE admins ADD COLUMN customer_id INTEGER REFERENCES customers(id) ON DELETE CASCADE CHECK ((customer_id IS NULL AND role IN ('admin', 'viewer')) OR (customer_id IS NOT NULL AND role IN ('customer-admin', 'customer-viewer')));
CREATE INDEX IF NOT EXISTS servers_customer_id ON servers (customer_id);
CREATE INDEX IF NOT EXISTS admins_customer_id ON admins (customer_id);
