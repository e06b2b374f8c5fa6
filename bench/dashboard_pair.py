#!/usr/bin/env python3
"""Dashboard pages of two or more checkouts in one sitting, request for request: on a shared
machine the noise of one run is larger than the differences between commits.

    .venv/bin/python bench/dashboard_pair.py OTHER_CHECKOUT [MORE ...] [--backend sqlite]
        [--rounds 100] [--paths /static/style.css,/servers/{id}/charts?range=30d]

Each checkout (this one first, then the others, each with its own .venv) seeds its own database
with its own code (bench/dashboard.py's seed: 1,000 servers, one with 30 days of minute
samples) and runs its own panel under Waitress. Then the requests go round the panels in turn,
the order rotating each round, on keep-alive connections, logged in as an admin, with a
browser's headers (bench/dashboard.py's Client: gzip accepted; sizes are the bodies unpacked).
Printed per page and panel: the median and quartile time of `--rounds` requests, and the panel
process's CPU per request (from /proc: what the machine's other load inflates least); then
each panel against the first.
"""
import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.dashboard import start_checkout_panel  # noqa: E402
from bench.scratch import scratch_postgres  # noqa: E402
from tests.conftest import stop_process  # noqa: E402

PATHS = "/static/style.css,/servers/{id}/charts?range=30d,/servers/{id}?range=30d"
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def seed(checkout, url):
    """The server id of the one with history, seeded by the checkout's own code."""
    code = ("import sys; sys.path.insert(0, '.'); from bench.dashboard import seed; "
            f"print(seed({url!r}, 1000, 30)[0])")
    out = subprocess.run([str(checkout / ".venv/bin/python"), "-c", code], cwd=checkout,
                         check=True, capture_output=True, text=True).stdout
    return int(out.split()[-1])


def compare(panels, paths, rounds):
    names = list(panels)
    for template in paths:
        times = {name: [] for name in names}
        cpu = dict.fromkeys(names, 0.0)
        size = {}
        for name, (process, client, server_id) in panels.items():
            for _ in range(3):  # warm: caches, first template compile
                answer = client.get(template.format(id=server_id))
                assert answer.status == 200, (name, template, answer.status)
            size[name] = len(answer.body)
        for number in range(rounds):
            for name in names[number % len(names):] + names[:number % len(names)]:
                process, client, server_id = panels[name]
                before, started = cpu_seconds(process.pid), time.perf_counter()
                client.get(template.format(id=server_id))
                times[name].append((time.perf_counter() - started) * 1000)
                cpu[name] += cpu_seconds(process.pid) - before
        print(template)
        first = names[0]
        for name in names:
            ordered = sorted(times[name])
            ratio = "" if name == first else (
                f"  x{statistics.median(ordered) / statistics.median(times[first]):.2f} time, "
                f"x{cpu[name] / cpu[first]:.2f} CPU")
            print(f"  {name:<28} median {statistics.median(ordered):6.1f} ms  quartile "
                  f"{ordered[len(ordered) // 4]:6.1f} ms  CPU {cpu[name] * 1000 / rounds:5.1f} "
                  f"ms/request  {size[name]:7d} B{ratio}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("others", nargs="+", type=Path)
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--paths", default=PATHS)
    args = parser.parse_args()
    checkouts = [ROOT] + [path.resolve() for path in args.others]
    panels = {}
    with contextlib.ExitStack() as stack:
        for index, checkout in enumerate(checkouts):
            workdir = Path(tempfile.mkdtemp(prefix="mpanel-pair-"))
            url = (f"sqlite:///{workdir / 'bench.db'}" if args.backend == "sqlite" else
                   stack.enter_context(scratch_postgres(f"mpanel_pair{index}")))
            server_id = seed(checkout, url)
            process, client = start_checkout_panel(checkout, url, workdir)
            stack.callback(stop_process, process)
            commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=checkout,
                                    capture_output=True, text=True).stdout.strip()
            panels[f"{checkout.name} ({commit})"] = (process, client, server_id)
        print(f"{args.backend}, {args.rounds} rounds, load {os.getloadavg()[0]:.1f}")
        compare(panels, args.paths.split(","), args.rounds)


if __name__ == "__main__":
    main()
