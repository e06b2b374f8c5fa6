#!/usr/bin/env python3
"""agent.py against what a Prometheus user runs for the same coverage, side by side, in one run.

    .venv/bin/python bench/agent_footprint.py [--minutes 3] [--cycles 1000] [--install]

Starts the hosting stack the agent's service collectors watch, each a real server of its own on
loopback (nginx with stub_status and a TLS site, a Postfix instance with mail deferred for real,
a PHP-FPM pool), beside the machine's MariaDB, PostgreSQL and Redis; a real panel (SQLite, in a
temp folder) and the real agent at the default 60 s interval with every collector on, reporting
through a byte-counting relay; and Debian's exporters for the same services --
prometheus-node-exporter, -mysqld-exporter, -postfix-exporter and -nginx-exporter -- on free
ports, pointed at the same servers and scraped by this script every 60 s with Prometheus's
headers. For each process, and summed over the exporters, it prints:

  - steady RSS and PSS after the run (>= 2 min), from /proc/<pid>/smaps_rollup
  - RSS growth over N fast cycles (agent: collect + buffer + deliver with no pause, in a child
    process; an exporter: N back-to-back scrapes)
  - CPU % of one core over the run, from each thread's time on a CPU (schedstat, in ns; the
    clock-tick figure of /proc/<pid>/stat beside it moves in 10 ms steps, a third of what
    node_exporter uses in a minute)
  - one collection's time, median of 20, every collector on (agent: run_collectors in-process,
    and each collector's own time as the agent logs it; an exporter: one scrape)
  - bytes on the wire per minute, HTTP headers, answers and heartbeats included

then the ratios agent / sum of the exporters and agent / node_exporter alone, the agent's RSS
against its import floor (the RSS of a Python process that has imported agent.py and done
nothing else), which collectors ran and which were absent, and the load average over the run.

The exporters come from Debian's packages; `--install` installs the missing ones (apt-get, as
root) and stops any packaged service the install started, so none is left on its shared port
(9100, 9104, 9154, 9113). An exporter not installed is left out, and said so.
"""
import argparse
import json
import logging
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

from tests.conftest import (CountingProxy, free_port, self_signed_certificate,  # noqa: E402
                            start_nginx, start_panel, start_php_fpm, stop_panel, stop_php_fpm,
                            stop_process, wait_for_port)

CLOCK = os.sysconf("SC_CLK_TCK")
MARIADB_SOCKET = "/run/mysqld/mysqld.sock"
# Processes the agent's config names for the watched collector: the stack's daemons.
WATCHED = ["nginx", "mariadbd", "redis-server", "master", "php-fpm8.2", "postgres"]


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


def on_cpu(pid):
    """({thread id: nanoseconds on a CPU}) from /proc/<pid>/task/*/schedstat: the clock-tick
    figures of /proc/<pid>/stat move in 10 ms steps, as much as an exporter uses in a minute."""
    found = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            found[tid] = int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
        except (OSError, IndexError, ValueError):
            continue
    return found


def cpu_percent(pid, before, elapsed):
    """% of one core since `before` (on_cpu's), and whether every thread counted lived through
    the run (a thread gone takes its time with it: then the clock ticks are the figure)."""
    after = on_cpu(pid)
    lived = all(tid in after for tid in before)
    used = sum(after.values()) - sum(ns for tid, ns in before.items() if tid in after)
    return 100 * used / 1e9 / elapsed, lived


def mib(value):
    return f"{value / 2**20:.1f} MiB"


# ----- the hosting stack ------------------------------------------------------------------------

class Stack:
    """nginx (stub_status on one port, a TLS site on another), a Postfix instance with three
    messages deferred, and a PHP-FPM pool, each started here and stopped by stop(); MariaDB,
    PostgreSQL and Redis are the machine's own."""

    def __init__(self, workdir):
        from tests.integration.test_services_mail import PostfixInstance

        self.parts = []
        self.status_port, self.tls_port = free_port(), free_port()
        cert, key = self_signed_certificate(workdir)
        self.nginx = start_nginx(workdir, f"""
  server {{ listen 127.0.0.1:{self.status_port};
           location = /nginx_status {{ stub_status; }} }}
  server {{ listen 127.0.0.1:{self.tls_port} ssl; server_name localhost;
           ssl_certificate {cert}; ssl_certificate_key {key};
           location / {{ return 200 "ok"; }} }}""")
        self.parts.append(lambda: stop_process(self.nginx))
        wait_for_port(self.status_port, self.nginx)
        wait_for_port(self.tls_port, self.nginx)
        self.nginx_conf = workdir / "nginx" / "nginx.conf"
        # Postfix's daemons run as its own users: its folder must be one they may enter.
        mail = Path(tempfile.mkdtemp(prefix="mpanel-bench-mail-"))
        mail.chmod(0o755)
        self.postfix = PostfixInstance(mail / "postfix").start()
        self.parts.append(lambda: (self.postfix.stop(), shutil.rmtree(mail, ignore_errors=True)))
        self.postfix.send(3)
        deadline = time.monotonic() + 60
        while len(self.postfix.queue_ids("deferred")) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        self.fpm = start_php_fpm(workdir, {"www": {"max_children": 2}})
        self.parts.append(lambda: stop_php_fpm(self.fpm))

    def agent_services(self):
        """The agent's services settings: what detection cannot know here (the instances'
        own ports and folders) and the names to watch."""
        return {"nginx": {"url": f"http://127.0.0.1:{self.status_port}/nginx_status"},
                "certificates": {"nginxConfig": str(self.nginx_conf),
                                 "endpoints": [f"127.0.0.1:{self.tls_port}"]},
                "mailqueue": {"postfixQueue": str(self.postfix.queue)},
                "mysql": {"socket": MARIADB_SOCKET, "user": "root"},
                "watched": {"names": WATCHED}}

    def stop(self):
        for stop in reversed(self.parts):
            stop()


# ----- the exporters ----------------------------------------------------------------------------

# Debian's package, its binary, its default port (its packaged service's) and its arguments
# here, pointed at the stack's servers. Each runs with its defaults otherwise, as packaged.
EXPORTERS = {
    "node_exporter": ("prometheus-node-exporter", 9100, lambda port, stack: (
        [f"--web.listen-address=127.0.0.1:{port}"], {})),
    "mysqld_exporter": ("prometheus-mysqld-exporter", 9104, lambda port, stack: (
        [f"--web.listen-address=127.0.0.1:{port}"],
        {"DATA_SOURCE_NAME": f"root@unix({MARIADB_SOCKET})/"})),
    "postfix_exporter": ("prometheus-postfix-exporter", 9154, lambda port, stack: (
        [f"--web.listen-address=127.0.0.1:{port}",
         f"--postfix.showq_path={stack.postfix.queue}/public/showq",
         f"--postfix.logfile_path={stack.postfix.folder}/maillog"], {})),
    "nginx_exporter": ("prometheus-nginx-exporter", 9113, lambda port, stack: (
        [f"-web.listen-address=127.0.0.1:{port}",
         f"-nginx.scrape-uri=http://127.0.0.1:{stack.status_port}/nginx_status"], {})),
}


def exporter_binary(package):
    return shutil.which(package) or (f"/usr/bin/{package}" if Path(f"/usr/bin/{package}").exists()
                                     else None)


def packaged_running(package):
    """Pids running the package's binary that this script did not start (its service)."""
    binary = exporter_binary(package)
    own = os.getpid()
    found = []
    for proc in psutil.process_iter(["exe", "ppid"], ad_value=None):
        if binary and proc.info["exe"] == os.path.realpath(binary) and proc.info["ppid"] != own:
            found.append(proc.pid)
    return found


def install_exporters():
    """apt-get install the missing exporters, then stop whatever packaged service that started
    (Debian's postinst starts each on its default port unless policy-rc.d forbids it)."""
    missing = [package for package, *_ in EXPORTERS.values() if not exporter_binary(package)]
    if missing:
        print(f"installing {' '.join(missing)}", flush=True)
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *missing],
                       check=True, env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"),
                       stdout=subprocess.DEVNULL)
    for package, *_ in EXPORTERS.values():
        if packaged_running(package):
            subprocess.run(["service", package, "stop"], check=False, capture_output=True)
        if packaged_running(package):
            raise SystemExit(f"{package}'s packaged service still runs (pids "
                             f"{packaged_running(package)}): stop it first")


def start_exporter(binary, port, arguments, env):
    process = subprocess.Popen([binary, *arguments], env=dict(os.environ, **env),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port, process)
    return process


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


# ----- agent ------------------------------------------------------------------------------------

def import_floor():
    code = ("import sys, time; sys.path.insert(0, %r); import agent; "
            "print(open('/proc/self/smaps_rollup').read())" % str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    rss = next(int(line.split()[1]) for line in out.splitlines() if line.startswith("Rss:"))
    return rss * 1024


class _Timings(logging.Handler):
    """The agent's own per-collector debug lines: collector ok name=... ms=..., absent, failed."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append((record.msg, record.args))


def agent_collection(services):
    """One collection in-process with the run's settings, after a warm-up -> (median ms wall,
    ms CPU per collection, {collector: median ms}, ran, absent, unavailable)."""
    import agent

    ctx = agent.CollectorContext(services=services)
    names = agent.expand_collectors(agent.default_collectors())
    timings = _Timings()
    agent.log.addHandler(timings)
    agent.log.setLevel(logging.DEBUG)
    _, unavailable = agent.run_collectors(names, ctx)
    absent = [name for msg, args in timings.records if msg.startswith("collector absent")
              for name in args[:1]]
    timings.records.clear()
    times, cpu = [], time.process_time()
    for _ in range(20):
        time.sleep(0.05)
        started = time.perf_counter()
        agent.run_collectors(names, ctx)
        times.append((time.perf_counter() - started) * 1000)
    cpu_ms = (time.process_time() - cpu) * 1000 / 20
    agent.log.removeHandler(timings)
    per = {}
    for msg, args in timings.records:
        if msg.startswith("collector ok"):
            per.setdefault(args[0], []).append(args[1])
    per = {name: statistics.median(values) for name, values in per.items()}
    return statistics.median(times), cpu_ms, per, list(per), absent, unavailable


def agent_growth(panel_url, key, cycles, workdir, services):
    """RSS after 100 and after `cycles` fast cycles of the real Agent, in a child process."""
    code = f"""
import sys, time
sys.path.insert(0, {str(ROOT)!r})
import agent
config = agent.Config(url={panel_url!r}, api_key={key!r}, state_dir={str(workdir / 'growth')!r},
                      services={services!r})
a = agent.Agent(config)
a.ensure_registered()
def rss():
    return int(next(l for l in open('/proc/self/smaps_rollup') if l.startswith('Rss:')).split()[1]) * 1024
marks = {{}}
for i in range(1, {cycles} + 1):
    a.report()
    if i in (100, {cycles}):
        marks[i] = rss()
print(marks[100], marks[{cycles}], len(a.buffer))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=3600).stdout.split()
    return int(out[0]), int(out[1]), int(out[2])


def busiest_others(before, after, elapsed, mine):
    """The processes besides this run's that used the most CPU over it: [(name, % of a core)]."""
    used = []
    for key, (name, seconds) in after.items():
        if key[0] in mine or key not in before:
            continue
        used.append((name, 100 * (seconds - before[key][1]) / elapsed))
    return sorted(used, key=lambda item: item[1], reverse=True)[:5]


def cpu_by_process():
    found = {}
    for proc in psutil.process_iter(["name", "cpu_times", "create_time"], ad_value=None):
        times = proc.info["cpu_times"]
        if times:
            found[(proc.pid, proc.info["create_time"])] = (proc.info["name"],
                                                           times.user + times.system)
    return found


# ----- run ------------------------------------------------------------------------------------

def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--cycles", type=int, default=1000)
    parser.add_argument("--install", action="store_true",
                        help="apt-get install the missing exporters (root)")
    args = parser.parse_args()
    if args.minutes < 2:
        parser.error("the steady figures need at least 2 minutes")
    if args.install:
        install_exporters()
    for package, *_ in EXPORTERS.values():
        if packaged_running(package):
            raise SystemExit(f"{package}'s packaged service runs: stop it (service {package} "
                             "stop) so that only this run's exporters are measured")

    print(f"machine: {platform.machine()}, {psutil.cpu_count()} CPUs, "
          f"{psutil.virtual_memory().total / 2**30:.1f} GiB, {platform.system()} "
          f"{platform.release()}, Python {platform.python_version()}, "
          f"{len(psutil.pids())} processes", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="mpanel-bench-"))
    stack = Stack(workdir)
    started_here = []
    try:
        measure(args, workdir, stack, started_here)
    finally:
        for process in started_here:
            if process.poll() is None:
                stop_process(process)
        stack.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def measure(args, workdir, stack, started_here):
    panel = start_panel("sqlite:///" + str(workdir / "panel.db"), workdir / "panel.log")
    from panel import db, operations

    db.bind(panel.database_url)
    with db.database_proxy.obj.connection_context():
        _, key = operations.add_server("bench", 4)
        _, growth_key = operations.add_server("bench-growth", 4)
    proxy = CountingProxy(panel.port)
    services = stack.agent_services()

    config = workdir / "agent.json"
    config.write_text(json.dumps({
        "controlPanel": {"url": proxy.url, "apiKey": key},
        "agent": {"reportInterval": 60, "stateDir": str(workdir / "agent"),
                  "services": services},
        "logging": {"level": "warning", "file": str(workdir / "agent.log")}}))
    # As installed: `python -m agent` runs from cached bytecode (see README, "Running the agent").
    agent_process = subprocess.Popen([sys.executable, "-m", "agent", "--config", str(config)],
                                     cwd=ROOT)
    started_here.append(agent_process)

    exporters = {}
    for name, (package, _, arguments) in EXPORTERS.items():
        binary = exporter_binary(package)
        if not binary:
            print(f"{package} not installed: left out (apt-get install {package}, or --install)")
            continue
        port = free_port()
        process = start_exporter(binary, port, *arguments(port, stack))
        started_here.append(process)
        exporters[name] = {"port": port, "process": process, "bytes": 0, "scrapes": 0}

    time.sleep(2)  # past start-up and the first sample
    for name, e in exporters.items():
        scrape(e["port"])  # a scrape before the window, as Prometheus's first happened long ago
    mine = {os.getpid(), agent_process.pid, panel.process.pid,
            *(e["process"].pid for e in exporters.values())}
    others_before = cpu_by_process()
    started = time.monotonic()
    cpu_start = {"agent": cpu_seconds(agent_process.pid)}
    ns_start = {"agent": on_cpu(agent_process.pid)}
    up_start, down_start = proxy.bytes_up, proxy.bytes_down
    for name, e in exporters.items():
        cpu_start[name] = cpu_seconds(e["process"].pid)
        ns_start[name] = on_cpu(e["process"].pid)
        e["next"] = started
    loads, load_next = [], started
    window = args.minutes * 60
    while time.monotonic() - started < window:
        now = time.monotonic()
        for name, e in exporters.items():
            if now >= e["next"]:
                _, size = scrape(e["port"])
                e["bytes"] += size
                e["scrapes"] += 1
                e["next"] += 60
        if now >= load_next:
            loads.append(os.getloadavg()[0])
            load_next += 10
        time.sleep(0.2)
    elapsed = time.monotonic() - started
    minutes = elapsed / 60
    others = busiest_others(others_before, cpu_by_process(), elapsed, mine)

    rows = {}
    agent_rss, agent_pss = rss_pss(agent_process.pid)
    rows["agent.py"] = {
        "rss": agent_rss, "pss": agent_pss,
        "ticks": 100 * (cpu_seconds(agent_process.pid) - cpu_start["agent"]) / elapsed,
        "wire": (proxy.bytes_up - up_start + proxy.bytes_down - down_start) / minutes,
    }
    rows["agent.py"]["cpu"], lived = cpu_percent(agent_process.pid, ns_start["agent"], elapsed)
    threads_gone = [] if lived else ["agent.py"]
    for name, e in exporters.items():
        rss, pss = rss_pss(e["process"].pid)
        rows[name] = {"rss": rss, "pss": pss,
                      "ticks": 100 * (cpu_seconds(e["process"].pid) - cpu_start[name]) / elapsed,
                      "wire": e["bytes"] / minutes}
        rows[name]["cpu"], lived = cpu_percent(e["process"].pid, ns_start[name], elapsed)
        if not lived:
            threads_gone.append(name)
    for name in threads_gone:
        rows[name]["cpu"] = max(rows[name]["cpu"], rows[name]["ticks"])
    stop_process(agent_process)

    # Fast cycles and collection time.
    before, after, left = agent_growth(proxy.url, growth_key, args.cycles, workdir, services)
    rows["agent.py"]["growth"] = after - before
    wall, cpu_ms, per, ran, absent, unavailable = agent_collection(services)
    rows["agent.py"]["collect"] = wall
    for name, e in exporters.items():
        port, pid = e["port"], e["process"].pid
        times = [scrape(port)[0] * 1000 for _ in range(20)]
        first = rss_pss(pid)[0]
        for _ in range(args.cycles):
            scrape(port)
        rows[name]["collect"] = statistics.median(times)
        rows[name]["growth"] = rss_pss(pid)[0] - first
        stop_process(e["process"])
    floor = import_floor()
    proxy.close()
    stop_panel(panel)

    peers = [rows[name] for name in exporters]
    if peers:
        rows["exporters, summed"] = {field: sum(r[field] for r in peers)
                                     for field in ("rss", "pss", "cpu", "ticks", "wire",
                                                   "growth")}
        rows["exporters, summed"]["collect"] = max(r["collect"] for r in peers)

    print(f"run: {elapsed:.0f} s, agent at 60 s, exporters scraped every 60 s; "
          f"fast cycles: {args.cycles} (agent buffer left {left})")
    print(f"load average (1 min) over the run: {min(loads):.2f}-{max(loads):.2f}, "
          f"mean {statistics.mean(loads):.2f}; busiest other processes: "
          + ", ".join(f"{name} {share:.1f} %" for name, share in others))
    print(f"agent collectors that ran: {', '.join(ran)}; absent: {', '.join(absent) or 'none'}"
          + (f"; failed: {unavailable}" if unavailable else ""))
    print(f"agent import floor (python + agent.py's imports, idle): {mib(floor)}")
    header = f"{'':20} {'RSS':>10} {'PSS':>10} {'RSS growth':>11} {'CPU %':>7} " \
             f"{'(ticks)':>7} {'collect ms':>10} {'wire B/min':>10}"
    print(header)
    for name, r in rows.items():
        print(f"{name:20} {mib(r['rss']):>10} {mib(r['pss']):>10} "
              f"{(r['growth'] / 2**20):>8.2f} MiB {r['cpu']:>7.4f} {r['ticks']:>7.3f} "
              f"{r['collect']:>10.2f} {r['wire']:>10.0f}")
    print("(CPU %: time on a CPU from each thread's schedstat, in ns; (ticks): /proc/<pid>/stat, "
          "10 ms steps" + (f"; threads ended during the run, ticks used: {threads_gone}"
                           if threads_gone else "") + ")")
    print("(exporters, summed: collect ms is the slowest scrape, as Prometheus scrapes them "
          "in parallel)")
    print(f"agent one collection: {wall:.2f} ms wall, {cpu_ms:.2f} ms CPU; by collector: "
          + ", ".join(f"{name} {ms:.2f}" for name, ms in per.items()))
    agent_row = rows["agent.py"]
    print(f"agent RSS / import floor: {agent_row['rss'] / floor:.2f} (target <= 1.1)")
    print(f"agent wire: {agent_row['wire']:.0f} B/min (target <= 2048)")
    for peer_name in ("exporters, summed", "node_exporter"):
        if peer_name not in rows:
            continue
        peer = rows[peer_name]
        print(f"agent / {peer_name}: RSS {agent_row['rss'] / peer['rss']:.2f}, "
              f"PSS {agent_row['pss'] / peer['pss']:.2f}, "
              f"CPU {agent_row['cpu'] / max(peer['cpu'], 1e-9):.2f}, "
              f"collection {agent_row['collect'] / peer['collect']:.2f}, "
              f"wire {agent_row['wire'] / peer['wire']:.3f}")


if __name__ == "__main__":
    main()
