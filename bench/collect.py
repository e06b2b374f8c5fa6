#!/usr/bin/env python3
"""One agent collection on this machine: time per collector and in all (median of N runs after a
warm-up), and the size of the payload on the wire, raw and gzipped.

    .venv/bin/python bench/collect.py [--runs 20]

The peer comparison (node_exporter side by side: RSS, CPU, bytes per minute) is
bench/agent_footprint.py; this script breaks one collection down by collector.
"""
import argparse
import gzip
import json
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import psutil  # noqa: E402

import agent  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()

    ctx = agent.CollectorContext()
    names = agent.expand_collectors(agent.default_collectors())
    agent.run_collectors(names, ctx)  # warm-up; primes CPU and rate readings, finds services
    time.sleep(0.2)

    totals, per_collector = [], {name: [] for name in names}
    cpu_before = time.process_time()
    for _ in range(args.runs):
        started = time.perf_counter()
        for name in names:
            one = time.perf_counter()
            agent.run_collectors((name,), ctx)
            per_collector[name].append((time.perf_counter() - one) * 1000)
        totals.append((time.perf_counter() - started) * 1000)
        time.sleep(0.05)  # let counters move, as between real samples
    cpu_ms = (time.process_time() - cpu_before) * 1000 / args.runs
    metrics, unavailable = agent.run_collectors(names, ctx)

    payload = {"serverId": 1, "timestamp": agent.utc_now_iso(), "metrics": metrics}
    raw = json.dumps(payload, separators=(",", ":")).encode()
    print(f"machine: {platform.machine()}, {psutil.cpu_count()} CPUs, "
          f"{psutil.virtual_memory().total / 2**30:.1f} GiB, {platform.system()} "
          f"{platform.release()}, Python {platform.python_version()}, psutil {psutil.__version__}")
    print(f"processes: {len(psutil.pids())}, mounts: {len(metrics['disk']['mounts'])}, "
          f"interfaces: {len(metrics['network']['interfaces'])}, services found: "
          f"{', '.join(metrics.get('services', {})) or 'none'}")
    print(f"collection, median of {args.runs}: {statistics.median(totals):.2f} ms wall, "
          f"{cpu_ms:.2f} ms CPU per collection")
    for name, values in per_collector.items():
        print(f"  {name:<10} {statistics.median(values):.2f} ms")
    print(f"payload: {len(raw)} bytes JSON, {len(gzip.compress(raw, 6))} bytes gzip")


if __name__ == "__main__":
    main()
