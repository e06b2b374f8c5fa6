#!/usr/bin/env python3
"""agent.py and Debian's prometheus-node-exporter side by side, in one run, on this machine.

    .venv/bin/python bench/agent_footprint.py [--minutes 3] [--cycles 1000]

Starts a real panel (SQLite, in a temp folder) and the real agent at the default 60 s interval
reporting to it through a byte-counting relay, plus two node_exporter processes scraped by this
script, one every 60 s and one every 15 s (Prometheus's common setting). For each it prints:

  - steady RSS and PSS after the run (>= 2 min), from /proc/<pid>/smaps_rollup
  - RSS growth over N fast cycles (agent: collect + buffer + deliver with no pause, in a child
    process; node_exporter: N back-to-back scrapes)
  - CPU % of one core over the run (children included: psql, for the agent)
  - one collection's time, median of 20, every collector on (agent: run_collectors in-process;
    node_exporter: one scrape)
  - bytes on the wire per minute, HTTP headers, answers and heartbeats included

and the agent's import floor: the RSS of a Python process that has imported agent.py (psutil,
urllib3, ssl, sqlite3, gzip, json, logging.handlers, ...) and done nothing else.
node_exporter comes from Debian (`apt-get install prometheus-node-exporter`); without it the
script says so and measures the agent alone.
"""
import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from tests.conftest import CountingProxy, free_port, start_panel, stop_panel  # noqa: E402

CLOCK = os.sysconf("SC_CLK_TCK")


def rss_pss(pid):
    """(RSS, PSS) in bytes from /proc/<pid>/smaps_rollup."""
    values = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        parts = line.split()
        if parts and parts[0] in ("Rss:", "Pss:"):
            values[parts[0][:-1]] = int(parts[1]) * 1024
    return values["Rss"], values["Pss"]


def cpu_seconds(pid, children=True):
    """utime + stime (+ waited-for children) of a process, seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLOCK


def mib(value):
    return f"{value / 2**20:.1f} MiB"


# ----- agent ------------------------------------------------------------------------------------

def import_floor():
    code = ("import sys, time; sys.path.insert(0, %r); import agent; "
            "print(open('/proc/self/smaps_rollup').read())" % str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    rss = next(int(line.split()[1]) for line in out.splitlines() if line.startswith("Rss:"))
    return rss * 1024


def agent_collection_ms():
    import agent

    ctx = agent.CollectorContext()
    names = agent.expand_collectors(agent.default_collectors())
    agent.run_collectors(names, ctx)
    times = []
    for _ in range(20):
        time.sleep(0.05)
        started = time.perf_counter()
        agent.run_collectors(names, ctx)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def agent_growth(panel_url, key, cycles, workdir):
    """RSS after 100 and after `cycles` fast cycles of the real Agent, in a child process."""
    code = f"""
import sys, time
sys.path.insert(0, {str(ROOT)!r})
import agent
config = agent.Config(url={panel_url!r}, api_key={key!r}, state_dir={str(workdir / 'growth')!r})
a = agent.Agent(config)
a.ensure_registered()
def rss():
    return int(next(l for l in open('/proc/self/smaps_rollup') if l.startswith('Rss:')).split()[1]) * 1024
marks = {{}}
for i in range(1, {cycles} + 1):
    a.collect_and_buffer()
    a.drain()
    if i in (100, {cycles}):
        marks[i] = rss()
print(marks[100], marks[{cycles}], len(a.buffer))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=3600).stdout.split()
    return int(out[0]), int(out[1]), int(out[2])


# ----- node_exporter ----------------------------------------------------------------------------

def start_node_exporter(binary, port):
    process = subprocess.Popen([binary, f"--web.listen-address=127.0.0.1:{port}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return process
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("node_exporter did not start")


def scrape(port):
    """One scrape as Prometheus makes it (gzip accepted); -> (seconds, bytes on the wire)."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers={
        "Accept-Encoding": "gzip", "User-Agent": "Prometheus/2.45.0",
        "Accept": "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"})
    started = time.perf_counter()
    with urllib.request.urlopen(request) as response:
        body = response.read()
        headers = sum(len(k) + len(v) + 4 for k, v in response.getheaders()) + 17
    took = time.perf_counter() - started
    request_bytes = 4 + len("/metrics HTTP/1.1\r\n") + sum(
        len(k) + len(v) + 4 for k, v in request.header_items()) + 30  # + Host, Connection
    return took, headers + len(body) + request_bytes


# ----- run ------------------------------------------------------------------------------------

def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--cycles", type=int, default=1000)
    args = parser.parse_args()
    if args.minutes < 2:
        parser.error("the steady figures need at least 2 minutes")

    print(f"machine: {platform.machine()}, {psutil.cpu_count()} CPUs, "
          f"{psutil.virtual_memory().total / 2**30:.1f} GiB, {platform.system()} "
          f"{platform.release()}, Python {platform.python_version()}, "
          f"{len(psutil.pids())} processes", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="mpanel-bench-"))
    panel = start_panel("sqlite:///" + str(workdir / "panel.db"), workdir / "panel.log")
    sys.path.insert(0, str(ROOT))
    from panel import db, operations

    db.bind(panel.database_url)
    with db.database_proxy.obj.connection_context():
        _, key = operations.add_server("bench", 4)
        _, growth_key = operations.add_server("bench-growth", 4)
    proxy = CountingProxy(panel.port)

    config = workdir / "agent.json"
    config.write_text(json.dumps({
        "controlPanel": {"url": proxy.url, "apiKey": key},
        "agent": {"reportInterval": 60, "stateDir": str(workdir / "agent")},
        "logging": {"level": "warning", "file": str(workdir / "agent.log")}}))
    # As installed: `python -m agent` runs from cached bytecode (see README, "Running the agent").
    agent_process = subprocess.Popen([sys.executable, "-m", "agent", "--config", str(config)],
                                     cwd=ROOT)

    binary = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
    exporters = {}
    if binary:
        for every in (60, 15):
            port = free_port()
            exporters[every] = {"port": port, "process": start_node_exporter(binary, port),
                                "bytes": 0, "scrapes": 0}
    else:
        print("prometheus-node-exporter not installed: measuring the agent alone "
              "(apt-get install prometheus-node-exporter)")

    time.sleep(2)  # past start-up and the first sample
    started = time.monotonic()
    cpu_start = {"agent": cpu_seconds(agent_process.pid)}
    up_start, down_start = proxy.bytes_up, proxy.bytes_down
    for every, e in exporters.items():
        cpu_start[every] = cpu_seconds(e["process"].pid)
        e["next"] = started
    window = args.minutes * 60
    while time.monotonic() - started < window:
        now = time.monotonic()
        for every, e in exporters.items():
            if now >= e["next"]:
                _, size = scrape(e["port"])
                e["bytes"] += size
                e["scrapes"] += 1
                e["next"] += every
        time.sleep(0.2)
    elapsed = time.monotonic() - started
    minutes = elapsed / 60

    rows = {}
    agent_rss, agent_pss = rss_pss(agent_process.pid)
    rows["agent.py (60 s)"] = {
        "rss": agent_rss, "pss": agent_pss,
        "cpu": 100 * (cpu_seconds(agent_process.pid) - cpu_start["agent"]) / elapsed,
        "wire": (proxy.bytes_up - up_start + proxy.bytes_down - down_start) / minutes,
    }
    for every, e in exporters.items():
        rss, pss = rss_pss(e["process"].pid)
        rows[f"node_exporter ({every} s)"] = {
            "rss": rss, "pss": pss,
            "cpu": 100 * (cpu_seconds(e["process"].pid) - cpu_start[every]) / elapsed,
            "wire": e["bytes"] / minutes,
        }
    agent_process.terminate()
    agent_process.wait(timeout=10)

    # Fast cycles and collection time.
    before, after, left = agent_growth(proxy.url, growth_key, args.cycles, workdir)
    rows["agent.py (60 s)"]["growth"] = after - before
    rows["agent.py (60 s)"]["collect"] = agent_collection_ms()
    for every, e in exporters.items():
        port, pid = e["port"], e["process"].pid
        times = [scrape(port)[0] * 1000 for _ in range(20)]
        first = rss_pss(pid)[0]
        for _ in range(args.cycles):
            scrape(port)
        name = f"node_exporter ({every} s)"
        rows[name]["collect"] = statistics.median(times)
        rows[name]["growth"] = rss_pss(pid)[0] - first
        e["process"].terminate()
    floor = import_floor()
    proxy.close()
    stop_panel(panel)

    print(f"run: {elapsed:.0f} s; fast cycles: {args.cycles} (agent buffer left {left})")
    print(f"agent import floor (python + agent.py's imports, idle): {mib(floor)}")
    header = f"{'':24} {'RSS':>10} {'PSS':>10} {'RSS growth':>11} {'CPU %':>7} " \
             f"{'collect ms':>10} {'wire B/min':>10}"
    print(header)
    for name, r in rows.items():
        print(f"{name:24} {mib(r['rss']):>10} {mib(r['pss']):>10} "
              f"{(r['growth'] / 2**20):>8.2f} MiB {r['cpu']:>7.3f} {r['collect']:>10.2f} "
              f"{r['wire']:>10.0f}")
    agent_row = rows["agent.py (60 s)"]
    print(f"agent RSS / import floor: {agent_row['rss'] / floor:.2f} (target <= 1.1)")
    for every in exporters:
        peer = rows[f"node_exporter ({every} s)"]
        print(f"agent / node_exporter ({every} s): RSS {agent_row['rss'] / peer['rss']:.2f}, "
              f"CPU {agent_row['cpu'] / max(peer['cpu'], 1e-9):.2f}, "
              f"collection {agent_row['collect'] / peer['collect']:.2f}, "
              f"wire {agent_row['wire'] / peer['wire']:.3f}")
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
