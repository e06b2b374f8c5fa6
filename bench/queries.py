#!/usr/bin/env python3
"""Read paths on a big PostgreSQL database: 1,000 servers x 7 days of minute samples (10 M
rows, generated in SQL) and 30 days of rollups.

    .venv/bin/python bench/queries.py [--servers 1000] [--days 7] [--runs 20]

Times, median of N warm runs, both in the database (EXPLAIN ANALYZE execution time) and through
the panel's own functions (SQL + Python rows):
  - latest sample of every server (models.latest_sample_per_agent: latest_samples + key probes)
  - one server's last 24 h of raw samples
  - one server's 7 d and 30 d CPU chart from the 5-minute rollups (rollups.series), and the
    30 d with every figure
Targets: latest-per-server < 20 ms, 24 h < 20 ms, 7 d and 30 d < 10 ms.
"""
import argparse
import datetime
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.scratch import scratch_postgres  # noqa: E402


def timed(function, runs):
    function()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        function()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def explain_ms(database, sql, params, runs):
    def once():
        plan = database.execute_sql("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params).fetchone()[0]
        return plan[0]["Execution Time"]
    once()
    return statistics.median(once() for _ in range(runs))


def generate(database, servers, days, now):
    from panel import models, operations, rollups

    with database.atomic():
        for index in range(servers):
            operations.add_server(f"q-{index:04d}", 4)
    rollups.ensure_partitions(now, days_back=days + 1)
    start = now - datetime.timedelta(days=days)
    started = time.perf_counter()
    database.execute_sql(
        "INSERT INTO server_metrics (agent_id, timestamp, created_at, cpu_usage, cpu_load_1min, "
        "memory_total, memory_used, disk_max_percent, network_rx_rate, network_tx_rate) "
        "SELECT a.id, t, t, random() * 100, random() * 4, 8589934592, "
        "(random() * 8589934592)::bigint, 40 + random() * 20, random() * 1e6, random() * 1e6 "
        "FROM servers_agents a, generate_series(%s::timestamp, %s::timestamp, "
        "interval '1 minute') t", (start, now))
    database.execute_sql(
        "INSERT INTO latest_samples (agent_id, timestamp) SELECT id, %s FROM servers_agents",
        (now,))
    raw_seconds = time.perf_counter() - started
    for table, step, span in (("metrics_5m", "5 minutes", 30), ("metrics_1h", "1 hour", 30)):
        database.execute_sql(
            f"INSERT INTO {table} (agent_id, bucket, samples, cpu_usage_avg, cpu_usage_max, "
            "cpu_load_1min_avg, cpu_load_1min_max, memory_used_avg, memory_used_max, memory_total, "
            "disk_max_percent_avg, disk_max_percent_max, network_rx_rate_avg, network_rx_rate_max, "
            "network_tx_rate_avg, network_tx_rate_max) "
            "SELECT a.id, b, 5, random() * 100, 100, random() * 4, 4, random() * 8e9, 8e9, "
            "8589934592, 50, 60, random() * 1e6, 1e6, random() * 1e6, 1e6 "
            "FROM servers_agents a, generate_series(%s::timestamp, %s::timestamp, "
            f"interval '{step}') b", (now - datetime.timedelta(days=span), now))
    database.execute_sql("VACUUM ANALYZE")
    return models.Metric.select().count(), raw_seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--servers", type=int, default=1000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()

    from panel import db, models, rollups

    with scratch_postgres("mpanel_queries") as url:
        database = db.bind(url)
        db.init_schema(database)
        now = db.utcnow().replace(second=0, microsecond=0)
        with database.connection_context():
            rows, seconds = generate(database, args.servers, args.days, now)
            print(f"{args.servers} servers x {args.days} days: {rows} raw rows generated in "
                  f"{seconds:.0f} s; 30 days of 5-minute and hourly rollups")
            agents = [a.id for a in models.Agent.select(models.Agent.id)]
            one = agents[len(agents) // 2]
            day_ago = now - datetime.timedelta(days=1)
            results = [
                ("latest sample of every server",
                 lambda: models.latest_sample_per_agent(agents),
                 "SELECT m.* FROM server_metrics m JOIN latest_samples l ON "
                 "l.agent_id = m.agent_id AND l.timestamp = m.timestamp", (), 20),
                ("one server, 24 h raw",
                 lambda: rollups.series(one, day_ago, now),
                 f"SELECT {', '.join(rollups.RAW_CHART_COLUMNS)} FROM server_metrics "
                 "WHERE agent_id = %s AND timestamp >= %s AND timestamp <= %s "
                 "ORDER BY timestamp", (one, day_ago, now), 20),
                # One chart: its figure's mean and peak per bucket.
                ("one server, 7 d CPU chart (5-min rollups)",
                 lambda: rollups.series(one, now - datetime.timedelta(days=7), now, ["cpu_usage"]),
                 "SELECT bucket, cpu_usage_avg, cpu_usage_max FROM metrics_5m WHERE agent_id = %s "
                 "AND bucket >= %s AND bucket <= %s ORDER BY bucket",
                 (one, now - datetime.timedelta(days=7), now), 10),
                ("one server, 30 d CPU chart (5-min rollups)",
                 lambda: rollups.series(one, now - datetime.timedelta(days=30), now,
                                        ["cpu_usage"]),
                 "SELECT bucket, cpu_usage_avg, cpu_usage_max FROM metrics_5m WHERE agent_id = %s "
                 "AND bucket >= %s AND bucket <= %s ORDER BY bucket",
                 (one, now - datetime.timedelta(days=30), now), 10),
                ("one server, 30 d, every figure",
                 lambda: rollups.series(one, now - datetime.timedelta(days=30), now),
                 "SELECT * FROM metrics_5m WHERE agent_id = %s AND bucket >= %s AND bucket <= %s "
                 "ORDER BY bucket", (one, now - datetime.timedelta(days=30), now), 10),
            ]
            print(f"{'query':<40} {'in SQL':>9} {'via panel':>10} {'target':>8}")
            for label, function, sql, params, target in results:
                in_sql = explain_ms(database, sql, params, args.runs)
                via_panel = timed(function, args.runs)
                print(f"{label:<40} {in_sql:7.2f} ms {via_panel:8.2f} ms {target:>5} ms")
        database.close()


if __name__ == "__main__":
    main()
