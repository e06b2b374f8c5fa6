-- 005 (issue 11): figures added to the rollups through the figure table (panel/figures.py):
-- CPU steal time, stored since the first release, is now rolled up (and charted and exported).
-- Buckets rolled up before this keep it empty; the job fills it from here on.
ALTER TABLE metrics_5m ADD COLUMN cpu_steal_avg REAL;
ALTER TABLE metrics_5m ADD COLUMN cpu_steal_max REAL;
ALTER TABLE metrics_1h ADD COLUMN cpu_steal_avg REAL;
ALTER TABLE metrics_1h ADD COLUMN cpu_steal_max REAL;
-- Inode usage: the fullest mount's share of its inodes, stored, rolled up, charted, exported and
-- alertable beside the fullest disk (an agent that sends no inode fields leaves it empty).
ALTER TABLE server_metrics ADD COLUMN disk_max_inode_percent REAL;
ALTER TABLE metrics_5m ADD COLUMN disk_max_inode_percent_avg REAL;
ALTER TABLE metrics_5m ADD COLUMN disk_max_inode_percent_max REAL;
ALTER TABLE metrics_1h ADD COLUMN disk_max_inode_percent_avg REAL;
ALTER TABLE metrics_1h ADD COLUMN disk_max_inode_percent_max REAL;
