#!/usr/bin/env python3
"""Dashboard page times over real HTTP from a real panel (Waitress, its own process), on SQLite
and on PostgreSQL.

    .venv/bin/python bench/dashboard.py [--servers 1000] [--days 30] [--runs 30]

Data: `--servers` servers, each with a latest sample, and one of them with `--days` days of
minute samples (tests/synthetic.py: a daily rhythm, process lists, two mounts) rolled up into the
5-minute and hourly tiers by the panel's own rollup code.

Measured, median of N warm runs, logged in as an admin:
  - GET /servers                    the whole table, 1,000 rows      target < 150 ms
  - GET /servers/<id>?range=30d     detail page with all 7 charts    target < 200 ms
  - GET /servers/<id>?range=24h     the same over raw samples (per-mount disk from details)
  - GET /static/style.css           the floor: the same server answering a static file
No peer dashboard is named for these targets, so each figure is printed beside its target as a
ratio (below 1.0 meets it) and beside the static-file floor (what HTTP alone costs here).
"""
import argparse
import datetime
import http.client
import re
import statistics
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.scratch import scratch_postgres  # noqa: E402

PASSWORD = "benchmark password"


def seed(url, servers, days):
    """Servers with a latest sample each; one with `days` of minute history and its rollups."""
    from panel import db, ingest, models, operations, rollups
    from tests import synthetic

    database = db.bind(url)
    db.init_schema(database)
    now = db.utcnow().replace(microsecond=0)
    with database.connection_context():
        operations.set_admin("bench", PASSWORD, 4)
        rollups.ensure_partitions(now, days_back=days + 1)
        agents = []
        with database.atomic():
            for index in range(servers):
                server, _ = operations.add_server(f"srv-{index:04d}", 4, critical=index % 17 == 0)
                agents.append(models.Agent.get(models.Agent.server == server.id))
        started = time.perf_counter()
        rows = []
        history_agent = agents[len(agents) // 2]
        for document in synthetic.history(now, days * 1440, seed=5):
            row = ingest.sample_row(document["metrics"])
            row.update(agent=history_agent.id, timestamp=datetime.datetime.fromisoformat(
                document["timestamp"].rstrip("Z")))
            rows.append(row)
        latest_time = rows[-1]["timestamp"]
        for position, agent in enumerate(agents):
            if agent.id != history_agent.id:
                row = dict(rows[-1 - position % 60], agent=agent.id, timestamp=latest_time)
                rows.append(row)
        for chunk in range(0, len(rows), 2000):
            with database.atomic():
                models.Metric.insert_many(rows[chunk:chunk + 2000]).execute()
        with database.atomic():
            models.LatestSample.insert_many(
                [{"agent": a.id, "timestamp": latest_time} for a in agents]).execute()
            models.Agent.update(last_seen=now, status="active", hostname="host.example.net",
                                agent_version="0.2.0").execute()
        rollups.run_rollups(now, late_window=datetime.timedelta(days=days + 1))
        seconds = time.perf_counter() - started
    database.close()
    return history_agent.server_id, len(rows), seconds


class Client:
    def __init__(self, base):
        parts = urllib.parse.urlsplit(base)
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        self.cookie = ""

    def get(self, path):
        self.connection.request("GET", path, headers={"Cookie": self.cookie})
        response = self.connection.getresponse()
        body = response.read()
        return response, body

    def login(self):
        response, body = self.get("/login")
        token = re.search(rb'name="csrf_token" value="([^"]+)"', body).group(1).decode()
        login_cookie = response.getheader("Set-Cookie").split(";")[0]
        form = urllib.parse.urlencode({"csrf_token": token, "username": "bench",
                                       "password": PASSWORD})
        self.connection.request("POST", "/login", body=form, headers={
            "Content-Type": "application/x-www-form-urlencoded", "Cookie": login_cookie})
        answer = self.connection.getresponse()
        answer.read()
        self.cookie = [c for c in answer.msg.get_all("Set-Cookie")
                       if c.startswith("mpanel_session=")][0].split(";")[0]


def timed(client, path, runs):
    response, body = client.get(path)  # warm: caches, connection, first template compile
    assert response.status == 200, (path, response.status, body[:300])
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        response, body = client.get(path)
        samples.append((time.perf_counter() - started) * 1000)
        assert response.status == 200
    return statistics.median(samples), len(body)


def run(backend, url, args):
    from tests.conftest import start_panel, stop_panel

    server_id, rows, seconds = seed(url, args.servers, args.days)
    print(f"\n{backend}: {args.servers} servers, {args.days} days of minute samples for one "
          f"({rows} rows, seeded and rolled up in {seconds:.0f} s)")
    workdir = Path(tempfile.mkdtemp(prefix="mpanel-dash-"))
    panel = start_panel(url, workdir / "panel.log", extra_env={"MPANEL_JOB_INTERVAL": "0",
                                                               "MPANEL_THREADS": "4"})
    try:
        client = Client(panel.url)
        client.login()
        floor, floor_bytes = timed(client, "/static/style.css", args.runs)
        print(f"{'page':<34} {'median':>9} {'bytes':>8} {'target':>8} {'ratio':>6} "
              f"{'x floor':>8}")
        print(f"{'static file (floor)':<34} {floor:6.1f} ms {floor_bytes:8d} {'':>8} {'':>6} "
              f"{1:7.1f}x")
        for label, path, target in (
                (f"/servers ({args.servers} rows)", "/servers", 150),
                ("detail, 30 d, 7 charts", f"/servers/{server_id}?range=30d", 200),
                ("detail, 7 d, 7 charts", f"/servers/{server_id}?range=7d", 200),
                ("detail, 24 h, 7 charts", f"/servers/{server_id}?range=24h", 200),
                ("charts partial, 30 d", f"/servers/{server_id}/charts?range=30d", 200)):
            median, size = timed(client, path, args.runs)
            print(f"{label:<34} {median:6.1f} ms {size:8d} {target:5d} ms {median / target:6.2f} "
                  f"{median / floor:7.1f}x")
    finally:
        stop_panel(panel)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--servers", type=int, default=1000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    args = parser.parse_args()
    if args.backend in ("sqlite", "both"):
        workdir = Path(tempfile.mkdtemp(prefix="mpanel-dash-db-"))
        run("SQLite", f"sqlite:///{workdir / 'bench.db'}", args)
    if args.backend in ("postgresql", "both"):
        with scratch_postgres("mpanel_dashboard") as url:
            run("PostgreSQL", url, args)


if __name__ == "__main__":
    main()
