#!/usr/bin/env python3
"""Bytes per stored sample, all-in (table, indexes, TOAST, detail included), on SQLite and on
PostgreSQL.

    .venv/bin/python bench/storage.py [--servers 50] [--samples 200]

Stores real samples of this machine (from the real agent, varied per server and minute so they
do not compress unrealistically) through the panel's own ingest path, and divides what the
samples added by their number: on PostgreSQL pg_total_relation_size of server_metrics'
partitions (after VACUUM; empty partitions' fixed pages are measured before, not counted per
sample); on SQLite the pages of server_metrics and its indexes (dbstat) after VACUUM.
Target: <= 1 KB per sample.
"""
import argparse
import datetime
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.scratch import scratch_postgres  # noqa: E402


def real_sample(workdir):
    out = subprocess.run([sys.executable, str(ROOT / "agent.py"), "--print", "--state-dir",
                          str(workdir / "agent")], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)["metrics"]


def varied(metrics, rng):
    """The same shape with the numbers a live server would have: every figure moves."""
    def jiggle(value):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return value
        if isinstance(value, int):
            return max(0, int(value * rng.uniform(0.9, 1.1)))
        return round(max(0.0, value * rng.uniform(0.5, 1.5)), 2)

    def walk(node):
        if isinstance(node, dict):
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return jiggle(node)
    return walk(metrics)


def fill(url, servers, samples, workdir, measure):
    """-> (database, samples stored, JSON size of one sample, bytes the samples added)."""
    from panel import db, ingest, models, operations, writer

    database = db.bind(url)
    db.init_schema(database)
    before = measure(database)
    metrics = real_sample(workdir)
    rng = random.Random(7)
    committer = writer.GroupCommitter(database)
    start = datetime.datetime.utcnow().replace(second=0, microsecond=0) - \
        datetime.timedelta(minutes=samples + 5)
    with database.connection_context():
        agents = [models.Agent.get(models.Agent.server == operations.add_server(
            f"storage-{i}", 4)[0].id).id for i in range(servers)]
    for minute in range(samples):
        now = start + datetime.timedelta(minutes=minute)
        for agent in agents:
            row = ingest.sample_row(varied(metrics, rng))
            committer.submit(agent, [dict(row, timestamp=now, created_at=now, late=False)], now)
    return (database, len(agents) * samples, len(json.dumps(metrics, separators=(",", ":"))),
            measure(database) - before)


def measure_sqlite(database):
    import sqlite3

    path = database.database
    database.close()
    with sqlite3.connect(path) as connection:
        connection.execute("VACUUM")
        names = [r[0] for r in connection.execute(
            "SELECT name FROM sqlite_master WHERE tbl_name = 'server_metrics'")]
        page = connection.execute("PRAGMA page_size").fetchone()[0]
        try:
            total = connection.execute(
                f"SELECT sum(pgsize) FROM dbstat WHERE name IN ({','.join('?' * len(names))})",
                names).fetchone()[0]
        except sqlite3.OperationalError:  # dbstat not compiled in: count the whole file
            total = connection.execute("PRAGMA page_count").fetchone()[0] * page
    return total


def measure_postgres(database):
    database.execute_sql("VACUUM ANALYZE server_metrics")
    return database.execute_sql(
        "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent "
        "WHERE p.relname = 'server_metrics'").fetchone()[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--servers", type=int, default=50)
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="mpanel-storage-"))
    print(f"{args.servers} servers x {args.samples} samples of this machine's real payload")

    path = workdir / "storage.db"
    database, count, raw, size = fill("sqlite:///" + str(path), args.servers, args.samples,
                                      workdir, measure_sqlite)
    print(f"sample as sent: {raw} bytes of JSON")
    print(f"sqlite      {size / count:7.0f} bytes per sample (table + indexes), {count} samples")

    with scratch_postgres("mpanel_storage") as url:
        database, count, _, size = fill(url, args.servers, args.samples, workdir,
                                        measure_postgres)
        database.close_all()
        print(f"postgresql  {size / count:7.0f} bytes per sample (table + indexes + TOAST), "
              f"{count} samples")


if __name__ == "__main__":
    main()
