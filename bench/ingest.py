#!/usr/bin/env python3
"""Ingest throughput of the real panel on loopback, SQLite and PostgreSQL, with wrk.

    .venv/bin/python bench/ingest.py [--agents 512] [--connections 64] [--seconds 30]
                                     [--workers 2] [--backends sqlite,postgresql]

For each backend: a fresh database, N servers with their own keys, the panel started as
deployed (`python -m panel serve --workers W`, jobs on), every key verified once (a warm-up:
steady-state requests skip bcrypt, so first contacts are not what this measures), then
wrk (Debian's package, installed by this script if missing) sends agent reports with a Lua
script (bench/ingest.lua) — each request one agent's realistic ~2 KB sample with its own key
and a timestamp never sent before. Printed: sustained reports/s, p50/p90/p99 latency, how
many were acknowledged and how many rows are stored (must be >= acknowledged: every
acknowledged sample stored), and in the same run the deployment's hello-world GET rate
(/static/favicon.svg: a 238-byte file, no database — the stack's ceiling) and the /healthz rate
(since issue 10 it compares the live schema with the models: one catalog query).
"""
import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from tests.conftest import free_port  # noqa: E402

from bench.scratch import scratch_postgres  # noqa: E402


def ensure_wrk():
    if shutil.which("wrk"):
        return
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True,
                   env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))


def fresh_database(backend, workdir):
    if backend == "sqlite":
        return contextlib.nullcontext("sqlite:///" + str(workdir / "bench.db"))
    return scratch_postgres("mpanel_bench")


def make_agents(url, count, workdir):
    from panel import db, operations

    database = db.bind(url)
    db.init_schema(database)
    lines = []
    with database.connection_context():
        for index in range(count):
            server, key = operations.add_server(f"bench-{index:04d}", 4)
            lines.append(f"{server.id} {key}")
    path = workdir / "keys.txt"
    path.write_text("\n".join(lines) + "\n")
    database.close()
    return path


def sample_body(workdir):
    """A realistic sample: this machine's own, from the real agent, as a template."""
    out = subprocess.run([sys.executable, str(ROOT / "agent.py"), "--print", "--state-dir",
                          str(workdir / "agent")], capture_output=True, text=True, check=True)
    sample = json.loads(out.stdout)
    sample.update(serverId=0, timestamp="{TIME}")
    text = json.dumps(sample, separators=(",", ":")).replace('"serverId":0', '"serverId":{SERVER}')
    path = workdir / "body.json"
    path.write_text(text)
    return path, len(text)


def start_panel(url, port, workers, workdir):
    env = dict(os.environ, MPANEL_DATABASE_URL=url, MPANEL_PORT=str(port),
               MPANEL_DATA_DIR=str(workdir), MPANEL_LOG_LEVEL="WARNING")
    log = open(workdir / f"panel-{port}.log", "ab")
    process = subprocess.Popen([sys.executable, "-m", "panel", "serve", "--workers",
                                str(workers)], cwd=ROOT, env=env, stdout=log,
                               stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
            return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError((workdir / f"panel-{port}.log").read_text())


def warm_up(port, keys_path, workers):
    """Every key verified by every worker (SO_REUSEPORT spreads connections at random)."""
    for line in keys_path.read_text().splitlines():
        server_id, key = line.split()
        for _ in range(workers * 3):
            request = urllib.request.Request(f"http://127.0.0.1:{port}/api/agent/config",
                                             headers={"Authorization": f"Bearer {key}"})
            urllib.request.urlopen(request).read()


def run_wrk(port, threads, connections, seconds, script=None, env=None, path="/"):
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency",
               "--timeout", "10s"]
    if script:
        command += ["-s", str(script)]
    out = subprocess.run(command + [f"http://127.0.0.1:{port}{path}"], capture_output=True,
                         text=True, env=dict(os.environ, **(env or {})), check=True).stdout
    return out


def parse_plain_wrk(out):
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    return rate


def count_rows(url):
    from panel import db, models

    database = db.bind(url)
    with database.connection_context():
        return models.Metric.select().count()


def bench(backend, args, workdir):
    with fresh_database(backend, workdir) as url:
        keys_path = make_agents(url, args.agents, workdir)
        body_path, body_size = sample_body(workdir)
        port = free_port()
        panel = start_panel(url, port, args.workers, workdir)
        try:
            warm_up(port, keys_path, args.workers)
            # Stamped as live agents stamp them: the first two minutes ago, one second apart per
            # agent, so a 30 s run stays within the present (an older stamp is a replay, which
            # takes the late path: the latest pointer left alone, its rollup bucket marked).
            base = int((datetime.datetime.now(datetime.timezone.utc) -
                        datetime.timedelta(minutes=2)).timestamp())
            env = {"BENCH_KEYS": str(keys_path), "BENCH_BODY": str(body_path),
                   "BENCH_BASE": str(base), "BENCH_THREADS": "2"}
            out = run_wrk(port, 2, args.connections, args.seconds, ROOT / "bench" / "ingest.lua",
                          env)
            stats = dict(re.findall(r"^(P50|P90|P99|RATE) (\S+)", out, re.M))
            acked, refused = re.search(r"^ACKED (\d+) REFUSED (\d+)", out, re.M).groups()
            stats.update(ACKED=acked, REFUSED=refused)
            hello = parse_plain_wrk(run_wrk(port, 2, args.connections, 10,
                                            path="/static/favicon.svg"))
            health = parse_plain_wrk(run_wrk(port, 2, args.connections, 10, path="/healthz"))
            time.sleep(1)
        finally:
            panel.terminate()
            panel.wait(timeout=30)
        stored = count_rows(url)
        from panel import db

        database = db.database_proxy.obj
        getattr(database, "close_all", database.close)()  # before the scratch database goes
    return {"backend": backend, "rate": float(stats["RATE"]), "p50": float(stats["P50"]),
            "p90": float(stats["P90"]), "p99": float(stats["P99"]),
            "acked": int(stats["ACKED"]), "refused": int(stats["REFUSED"]), "stored": stored,
            "hello": hello, "health": health, "body": body_size}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=512)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()
    ensure_wrk()
    print(f"machine: {platform.machine()}, {psutil.cpu_count()} CPUs, "
          f"{psutil.virtual_memory().total / 2**30:.1f} GiB, {platform.system()} "
          f"{platform.release()}, Python {platform.python_version()}; wrk -t2 "
          f"-c{args.connections} -d{args.seconds}s; {args.agents} agents; "
          f"{args.workers} panel worker(s)", flush=True)
    for backend in args.backends.split(","):
        workdir = Path(tempfile.mkdtemp(prefix=f"mpanel-ingest-{backend}-"))
        try:
            r = bench(backend, args, workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        print(f"{r['backend']:<10} {r['rate']:8.0f} reports/s  p50 {r['p50']:6.1f} ms  "
              f"p90 {r['p90']:6.1f} ms  p99 {r['p99']:6.1f} ms  acked {r['acked']}  "
              f"refused {r['refused']}  stored {r['stored']}  "
              f"({'every acknowledged sample stored' if r['stored'] >= r['acked'] else 'LOST'})"
              f"  | hello-world GET {r['hello']:.0f}/s  ratio {r['rate'] / r['hello']:.2f}"
              f"  | /healthz {r['health']:.0f}/s"
              f"  | body {r['body']} B", flush=True)


if __name__ == "__main__":
    main()
