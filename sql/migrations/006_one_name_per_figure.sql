-- 006 (issue 11): one name per figure from the column onwards. The rollup columns of six
-- figures kept names older than the figure table (load_avg, disk_percent_max, net_rx_avg, ...);
-- they now carry the figure's server_metrics column as their stem, as every other figure's do
-- (panel/figures.py rollup_columns). A rename keeps every stored bucket.
ALTER TABLE metrics_5m RENAME COLUMN load_avg TO cpu_load_1min_avg;
ALTER TABLE metrics_5m RENAME COLUMN load_max TO cpu_load_1min_max;
ALTER TABLE metrics_5m RENAME COLUMN disk_percent_avg TO disk_max_percent_avg;
ALTER TABLE metrics_5m RENAME COLUMN disk_percent_max TO disk_max_percent_max;
ALTER TABLE metrics_5m RENAME COLUMN disk_read_avg TO disk_read_rate_avg;
ALTER TABLE metrics_5m RENAME COLUMN disk_read_max TO disk_read_rate_max;
ALTER TABLE metrics_5m RENAME COLUMN disk_write_avg TO disk_write_rate_avg;
ALTER TABLE metrics_5m RENAME COLUMN disk_write_max TO disk_write_rate_max;
ALTER TABLE metrics_5m RENAME COLUMN net_rx_avg TO network_rx_rate_avg;
ALTER TABLE metrics_5m RENAME COLUMN net_rx_max TO network_rx_rate_max;
ALTER TABLE metrics_5m RENAME COLUMN net_tx_avg TO network_tx_rate_avg;
ALTER TABLE metrics_5m RENAME COLUMN net_tx_max TO network_tx_rate_max;
ALTER TABLE metrics_1h RENAME COLUMN load_avg TO cpu_load_1min_avg;
ALTER TABLE metrics_1h RENAME COLUMN load_max TO cpu_load_1min_max;
ALTER TABLE metrics_1h RENAME COLUMN disk_percent_avg TO disk_max_percent_avg;
ALTER TABLE metrics_1h RENAME COLUMN disk_percent_max TO disk_max_percent_max;
ALTER TABLE metrics_1h RENAME COLUMN disk_read_avg TO disk_read_rate_avg;
ALTER TABLE metrics_1h RENAME COLUMN disk_read_max TO disk_read_rate_max;
ALTER TABLE metrics_1h RENAME COLUMN disk_write_avg TO disk_write_rate_avg;
ALTER TABLE metrics_1h RENAME COLUMN disk_write_max TO disk_write_rate_max;
ALTER TABLE metrics_1h RENAME COLUMN net_rx_avg TO network_rx_rate_avg;
ALTER TABLE metrics_1h RENAME COLUMN net_rx_max TO network_rx_rate_max;
ALTER TABLE metrics_1h RENAME COLUMN net_tx_avg TO network_tx_rate_avg;
ALTER TABLE metrics_1h RENAME COLUMN net_tx_max TO network_tx_rate_max;
