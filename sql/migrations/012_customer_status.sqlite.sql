-- 012 (issue 13): each customer's public status page, /status/<slug>: off for every customer
-- until they or the staff turn it on, under a title of the customer's (empty: "Status").
-- Types as Peewee gives them on SQLite; a NOT NULL column added to a table needs a default.
ALTER TABLE "customers" ADD COLUMN "status_page" INTEGER NOT NULL DEFAULT 0;
ALTER TABLE "customers" ADD COLUMN "status_title" VARCHAR(100) NOT NULL DEFAULT '';
