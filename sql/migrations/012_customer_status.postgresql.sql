-- 012 (issue 13): each customer's public status page, /status/<slug>: off for every customer
-- until they or the staff turn it on, under a title of the customer's (empty: "Status").
ALTER TABLE customers ADD COLUMN status_page BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE customers ADD COLUMN status_title VARCHAR(100) NOT NULL DEFAULT '';
