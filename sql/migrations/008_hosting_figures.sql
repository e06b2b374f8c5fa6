-- 008 (issue 12): the hosting stack's figures, one row each in panel/figures.py: the hottest CPU
-- temperature, MySQL/MariaDB connections and queries, the mail queue, the first TLS certificate
-- to expire. Stored, rolled up where charted, exported on /metrics. Samples before this keep
-- them empty (their detail has the services as they were sent).
ALTER TABLE server_metrics ADD COLUMN cpu_temperature REAL;
ALTER TABLE server_metrics ADD COLUMN mysql_connections BIGINT;
ALTER TABLE server_metrics ADD COLUMN mysql_max_connections BIGINT;
ALTER TABLE server_metrics ADD COLUMN mysql_queries_rate REAL;
ALTER TABLE server_metrics ADD COLUMN mysql_slow_queries_rate REAL;
ALTER TABLE server_metrics ADD COLUMN mail_queue BIGINT;
ALTER TABLE server_metrics ADD COLUMN mail_deferred BIGINT;
ALTER TABLE server_metrics ADD COLUMN mail_oldest_age BIGINT;
ALTER TABLE server_metrics ADD COLUMN certificate_min_days REAL;
ALTER TABLE metrics_5m ADD COLUMN cpu_temperature_avg REAL;
ALTER TABLE metrics_5m ADD COLUMN cpu_temperature_max REAL;
ALTER TABLE metrics_5m ADD COLUMN mysql_connections_avg REAL;
ALTER TABLE metrics_5m ADD COLUMN mysql_connections_max REAL;
ALTER TABLE metrics_5m ADD COLUMN mysql_max_connections BIGINT;
ALTER TABLE metrics_5m ADD COLUMN mysql_queries_rate_avg REAL;
ALTER TABLE metrics_5m ADD COLUMN mysql_queries_rate_max REAL;
ALTER TABLE metrics_5m ADD COLUMN mysql_slow_queries_rate_avg REAL;
ALTER TABLE metrics_5m ADD COLUMN mysql_slow_queries_rate_max REAL;
ALTER TABLE metrics_5m ADD COLUMN mail_queue_avg REAL;
ALTER TABLE metrics_5m ADD COLUMN mail_queue_max REAL;
ALTER TABLE metrics_5m ADD COLUMN mail_deferred_avg REAL;
ALTER TABLE metrics_5m ADD COLUMN mail_deferred_max REAL;
ALTER TABLE metrics_1h ADD COLUMN cpu_temperature_avg REAL;
ALTER TABLE metrics_1h ADD COLUMN cpu_temperature_max REAL;
ALTER TABLE metrics_1h ADD COLUMN mysql_connections_avg REAL;
ALTER TABLE metrics_1h ADD COLUMN mysql_connections_max REAL;
ALTER TABLE metrics_1h ADD COLUMN mysql_max_connections BIGINT;
ALTER TABLE metrics_1h ADD COLUMN mysql_queries_rate_avg REAL;
ALTER TABLE metrics_1h ADD COLUMN mysql_queries_rate_max REAL;
ALTER TABLE metrics_1h ADD COLUMN mysql_slow_queries_rate_avg REAL;
ALTER TABLE metrics_1h ADD COLUMN mysql_slow_queries_rate_max REAL;
ALTER TABLE metrics_1h ADD COLUMN mail_queue_avg REAL;
ALTER TABLE metrics_1h ADD COLUMN mail_queue_max REAL;
ALTER TABLE metrics_1h ADD COLUMN mail_deferred_avg REAL;
ALTER TABLE metrics_1h ADD COLUMN mail_deferred_max REAL;
