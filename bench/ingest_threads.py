#!/usr/bin/env python3
"""Where the panel's CPU goes under bench/ingest.py's load, thread by thread.

    .venv/bin/python bench/ingest_threads.py [--backend sqlite|postgresql] [--seconds 10]

The same deployment as bench/ingest.py (`serve --workers 2`, 512 agents, every key verified
first, wrk with bench/ingest.lua), then its hello-world GET; the CPU time (user + system) of
each thread of the two workers is read from the kernel before and after each wrk run and
printed per report (per GET) by the kind of thread: Waitress's event loop (MainThread), its
request threads, the group-commit writer (mpanel-writer), the jobs. Thread names come from
`py-spy dump` (pip install py-spy; it needs ptrace).
"""
import argparse
import collections
import datetime
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from bench.ingest import (ensure_wrk, fresh_database, make_agents, parse_plain_wrk,  # noqa: E402
                          run_wrk, sample_body, start_panel, warm_up)
from tests.conftest import free_port  # noqa: E402


def thread_names(pid):
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    out = subprocess.run([spy, "dump", "--pid", str(pid)], capture_output=True, text=True,
                         check=True).stdout
    return {int(tid, 0): name for tid, name in
            re.findall(r"Thread (\d+|0x[0-9A-Fa-f]+) \([^)]*\): \"([^\"]+)\"", out)}


def cpu_by_kind(processes, names):
    kinds = collections.Counter()
    for process in processes:
        for thread in process.threads():
            name = names.get(thread.id, "other")
            if name.startswith(("waitress-", "Thread-")):
                name = "request threads"
            kinds[name] += thread.user_time + thread.system_time
    return kinds


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", default="sqlite")
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    ensure_wrk()
    workdir = Path(tempfile.mkdtemp(prefix="mpanel-threads-"))
    try:
        with fresh_database(args.backend, workdir) as url:
            keys_path = make_agents(url, 512, workdir)
            body_path, _ = sample_body(workdir)
            port = free_port()
            panel = start_panel(url, port, 2, workdir)
            try:
                warm_up(port, keys_path, 2)
                workers = psutil.Process(panel.pid).children()
                names = {}
                for worker in workers:
                    names.update(thread_names(worker.pid))
                base = int((datetime.datetime.now(datetime.timezone.utc) -
                            datetime.timedelta(minutes=2)).timestamp())
                env = {"BENCH_KEYS": str(keys_path), "BENCH_BODY": str(body_path),
                       "BENCH_BASE": str(base), "BENCH_THREADS": "2"}
                before, started = cpu_by_kind(workers, names), time.monotonic()
                out = run_wrk(port, 2, 64, args.seconds, ROOT / "bench" / "ingest.lua", env)
                after, elapsed = cpu_by_kind(workers, names), time.monotonic() - started
                acked = int(re.search(r"^ACKED (\d+)", out, re.M).group(1))
                print(f"{args.backend}: {acked / elapsed:.0f} reports/s; CPU per report:")
                for kind in sorted(after):
                    print(f"  {kind:<18} {1e6 * (after[kind] - before[kind]) / acked:6.0f} µs")
                before = cpu_by_kind(workers, names)
                rate = parse_plain_wrk(run_wrk(port, 2, 64, args.seconds,
                                               path="/static/favicon.svg"))
                after, gets = cpu_by_kind(workers, names), rate * args.seconds
                print(f"hello-world GET: {rate:.0f}/s; CPU per GET:")
                for kind in sorted(after):
                    print(f"  {kind:<18} {1e6 * (after[kind] - before[kind]) / gets:6.0f} µs")
            finally:
                panel.terminate()
                panel.wait(timeout=30)
            from panel import db

            database = db.database_proxy.obj
            getattr(database, "close_all", database.close)()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
