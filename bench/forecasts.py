#!/usr/bin/env python3
"""What disk-full forecasts cost, in-process, on SQLite and on PostgreSQL.

    .venv/bin/python bench/forecasts.py [--servers 1000] [--days 7] [--runs 5]

Data: `--servers` servers, each with a latest sample (tests/synthetic.py: two mounts) and
`--days` of hourly history for both mounts (models.record_mount_hours, as the job writes it).

Measured, median of N runs:
  - jobs.refresh_forecasts()   the forecasts job: record the hour, fit every mount, store
  - views.server_rows()        the servers table's rows, which read the stored forecasts
  - and the reads server_rows makes, each alone with its share of server_rows: the fleet's
    figures, the service checks, this cycle's traffic (quotas), the soonest full mount
    (forecasts) and the last upgrade failures — where the table's time goes.
"""
import argparse
import datetime
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.scratch import scratch_postgres  # noqa: E402


def seed(url, servers, days):
    from panel import db, ingest, models, operations, rollups
    from tests import synthetic

    database = db.bind(url)
    db.init_schema(database)
    now = db.utcnow().replace(microsecond=0)
    rollups.ensure_partitions(now)
    document = synthetic.history(now, 1, seed=5)[-1]
    agents = []
    with database.atomic():
        for index in range(servers):
            server, _ = operations.add_server(f"srv-{index:04d}", 4)
            agents.append(models.Agent.get(models.Agent.server == server.id))
    row = ingest.sample_row(document["metrics"])  # its detail holds the mounts
    with database.atomic():
        models.Metric.insert_many([dict(row, agent=a.id, timestamp=now)
                                   for a in agents]).execute()
        models.LatestSample.insert_many([{"agent": a.id, "timestamp": now}
                                         for a in agents]).execute()
        models.Agent.update(last_seen=now, status="active").execute()
    hours = []
    for agent in agents:
        for back in range(days * 24, 0, -1):
            bucket = rollups.floor_time(now - datetime.timedelta(hours=back), 3600)
            for mount in document["metrics"]["disk"]["mounts"]:
                capacity = mount["used"] + mount["free"]
                hours.append({"agent": agent.id, "mount": mount["mountpoint"],
                              "bucket": bucket, "capacity": capacity,
                              "used": int(mount["used"] - back * capacity * 1e-4)})
    for start in range(0, len(hours), 5000):
        with database.atomic():
            models.record_mount_hours(hours[start:start + 5000])
    return database, len(hours)


def table_reads(server_ids):
    """The reads views.server_rows makes, by what they are for."""
    from panel import access, models, quotas

    everything = access.EVERYTHING
    return {"fleet": lambda: models.fleet(everything),
            "services": lambda: models.service_summary(everything),
            "traffic": lambda: quotas.server_usages(everything),
            "forecasts": lambda: models.soonest_full(everything),
            "upgrades": lambda: models.last_upgrade_failures(server_ids)}


def measure(url, servers, days, runs):
    from panel import access, jobs, views

    database, rows = seed(url, servers, days)
    times = {"refresh_forecasts": [], "server_rows": []}
    reads = None
    for _ in range(runs):
        started = time.perf_counter()
        jobs.refresh_forecasts()
        times["refresh_forecasts"].append(time.perf_counter() - started)
        started = time.perf_counter()
        table = views.server_rows(300, access.EVERYTHING)
        times["server_rows"].append(time.perf_counter() - started)
        reads = reads or table_reads([row["id"] for row in table])
        for name, read in reads.items():
            started = time.perf_counter()
            read()
            times.setdefault(name, []).append(time.perf_counter() - started)
    assert sum(1 for row in table if row[views.DISK_FULL]) == servers
    database.close()
    return rows, {name: statistics.median(values) * 1000 for name, values in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=1000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        results = {"sqlite": measure(f"sqlite:///{folder}/bench.db", args.servers, args.days,
                                     args.runs)}
    with scratch_postgres("bench_forecasts") as url:
        results["postgresql"] = measure(url, args.servers, args.days, args.runs)
    for backend, (rows, times) in results.items():
        print(f"{backend}: {args.servers} servers, {rows:,} mount-hours; refresh_forecasts "
              f"{times.pop('refresh_forecasts'):.0f} ms, server_rows "
              f"{times['server_rows']:.0f} ms, of which: " + ", ".join(
                  f"{name} {ms:.0f} ms ({ms / times['server_rows']:.2f})"
                  for name, ms in times.items() if name != "server_rows"))


if __name__ == "__main__":
    main()
