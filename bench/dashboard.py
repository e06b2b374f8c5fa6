#!/usr/bin/env python3
"""The servers page at fleet size and the detail pages, over real HTTP from a real panel
(Waitress, its own process), on SQLite and on PostgreSQL, measured as a browser receives them
(issue 15), beside the previous release on the same data.

    .venv/bin/python bench/dashboard.py [--servers 1000,10000] [--days 30] [--runs 10]
        [--backend both] [--baseline da60951]

Data, per fleet size and backend, in a fresh database: `tests.synthetic.fleet` (servers with
a latest sample, services, forecasts, traffic; one in 50 never seen, one in 40 silent) and one
more server with `--days` days of minute samples (tests/synthetic.history) rolled up by the
panel's own rollup code, for the detail pages.

The client is a browser's: it sends `Accept-Encoding: gzip` and `Sec-Fetch-Site: same-origin`
(without it the panel leaves cookie-carrying answers plain, BREACH: docs/security.md), logged
in as an admin, on one warm keep-alive connection. Bytes are counted on the socket as they
arrive: "body" is the body as sent (compressed when it was), "wire" adds the status line and
headers. Time is the request's wall time in the client, median of `--runs`; CPU is the panel
process's user+system seconds over those runs (psutil), per request.

Rows (each with its target and ratio, below 1.0 meets it, and × the static-file floor):
  - GET /servers, the first paint: by name, by CPU descending, filtered by text and by status
  - GET /servers/rows?offset=100, the next screenful as the page scrolls
  - GET /servers?rows=<all>, every row (how the second browser below gets all its rows)
  - POST /servers/refresh unchanged (204), for a browser showing the first screenful and for
    one showing every row
  - POST /servers/refresh after 1 % of the reporting servers sent a new sample
    (synthetic.report_again), a fresh 1 % each run; each browser's `have` and `summary` are
    updated from the previous answer as mpanel.js and htmx would; the rows that came back
  - the detail page at 30 d, 7 d, 24 h and the 30-day charts partial
  - the static-file floor
  - the previous release (`--baseline`, before issue 15) checked out into a temporary git
    worktree and started on the same database (issue 15 changed no schema): its /servers
    (every row, uncompressed: it had no gzip) and its refresh (GET /servers with HX-Request,
    the whole table every 10 s), with new/old ratios.

The panels run with MPANEL_OFFLINE_AFTER=1800: at the default 300 s the seeded servers seen
up to 59 s before the seed would turn offline during a long run, and an "unchanged" refresh
would no longer be unchanged. The silent servers (an hour) stay offline.
"""
import argparse
import collections
import contextlib
import datetime
import gzip
import html
import http.client
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.scratch import scratch_postgres  # noqa: E402

PASSWORD = "benchmark password"
# What a browser sends with every request from the panel's own pages.
BROWSER_HEADERS = {"Accept-Encoding": "gzip, deflate, br", "Sec-Fetch-Site": "same-origin"}
PANEL_ENV = {"MPANEL_OFFLINE_AFTER": "1800"}
BASELINE = "da60951"  # main before issue 15
CHANGED_SHARE = 0.01
KB = 1000
# (ms, wire bytes) targets of issue 15 and the detail pages' time target.
FIRST_PAINT = (150, 100 * KB)
CHANGED_REFRESH = (None, 20 * KB)
UNCHANGED_REFRESH = (None, 1 * KB)
DETAIL = (200, None)


# ===== Data =====================================================================================

def seed(url, servers, days):
    """`servers` servers in all: a synthetic fleet, and one with `days` of minute history and
    its rollups. -> (the history server's id, the fleet's reporting agent ids, rows written,
    seconds)."""
    from panel import db, ingest, models, operations, rollups
    from tests import synthetic

    database = db.bind(url)
    db.init_schema(database)
    now = db.utcnow().replace(microsecond=0)
    started = time.perf_counter()
    with database.connection_context():
        operations.set_admin("bench", PASSWORD, 4)
        rollups.ensure_partitions(now, days_back=days + 1)
        pairs = synthetic.fleet(servers - 1, now)
        server, _ = operations.add_server("history", 4)
        agent = models.Agent.get(models.Agent.server == server.id)
        rows = []
        for document in synthetic.history(now, days * 1440, seed=5):
            row = ingest.sample_row(document["metrics"])
            row.update(agent=agent.id, timestamp=datetime.datetime.fromisoformat(
                document["timestamp"].rstrip("Z")))
            rows.append(row)
        for chunk in range(0, len(rows), 2000):
            with database.atomic():
                models.Metric.insert_many(rows[chunk:chunk + 2000]).execute()
        with database.atomic():
            models.LatestSample.insert(agent=agent.id, timestamp=rows[-1]["timestamp"]).execute()
            models.Agent.update(last_seen=now, status="active", hostname="history.example.net",
                                agent_version="0.2.0").where(models.Agent.id == agent.id).execute()
        rollups.run_rollups(now, late_window=datetime.timedelta(days=days + 1))
    # synthetic.fleet: one in 50 never reported (report_again gives no latest sample to those)
    reporting = [agent for index, (_, agent) in enumerate(pairs) if index % 50]
    return server.id, reporting, len(rows) + servers, time.perf_counter() - started


# ===== HTTP as a browser receives it ============================================================

class CountingSocket(socket.socket):
    """A socket that counts the bytes it receives: http.client reads through it."""
    received = 0

    def recv_into(self, buffer, nbytes=0, flags=0):
        count = super().recv_into(buffer, nbytes, flags)
        self.received += count
        return count


class CountingConnection(http.client.HTTPConnection):
    def connect(self):
        super().connect()
        plain = self.sock
        self.sock = CountingSocket(plain.family, plain.type, plain.proto, fileno=plain.detach())
        self.sock.settimeout(self.timeout)  # a socket made from a descriptor starts non-blocking
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as browsers do


# status; headers (http.client's message); body decoded; body bytes as sent; all bytes received
Answer = collections.namedtuple("Answer", "status headers body sent wire")


class Client:
    """One keep-alive connection with a session, sending what a browser sends."""

    def __init__(self, base):
        parts = urllib.parse.urlsplit(base)
        self.connection = CountingConnection(parts.hostname, parts.port, timeout=120)
        self.cookie = ""
        self.csrf = ""

    def request(self, method, path, form=None, headers=None):
        # bytes, not text: http.client sends bytes with the headers in one write, text in a
        # second one that Nagle's algorithm holds until the panel's delayed ACK (40 ms)
        body = urllib.parse.urlencode(form, doseq=True).encode() if form is not None else None
        sent_headers = dict(BROWSER_HEADERS, **({"Cookie": self.cookie} if self.cookie else {}),
                            **(headers or {}))
        if body is not None:
            sent_headers["Content-Type"] = "application/x-www-form-urlencoded"
        self.connection.request(method, path, body=body, headers=sent_headers)
        sock = self.connection.sock
        before = sock.received
        response = self.connection.getresponse()
        raw = response.read()
        wire = sock.received - before
        decoded = gzip.decompress(raw) if response.getheader("Content-Encoding") == "gzip" \
            else raw
        return Answer(response.status, response.msg, decoded, len(raw), wire)

    def get(self, path, headers=None):
        return self.request("GET", path, headers=headers)

    def login(self):
        answer = self.get("/login")
        token = re.search(rb'name="csrf_token" value="([^"]+)"', answer.body).group(1).decode()
        login_cookie = answer.headers.get("Set-Cookie").split(";")[0]
        self.cookie = login_cookie
        answer = self.request("POST", "/login", form={"csrf_token": token, "username": "bench",
                                                      "password": PASSWORD})
        self.cookie = [c for c in answer.headers.get_all("Set-Cookie")
                       if c.startswith("mpanel_session=")][0].split(";")[0]
        page = self.get("/servers").body
        found = re.search(rb'"X-CSRF-Token": "([^"]+)"', page)
        self.csrf = found.group(1).decode() if found else ""


def start_checkout_panel(checkout, url, workdir, extra_env=None):
    """The panel of `checkout` (its own code, its .venv's Python) on `url`, on a free port:
    -> (process, a logged-in Client). bench/dashboard_pair.py starts its panels here too."""
    from tests.conftest import free_port, stop_process

    port = free_port()
    env = dict(os.environ, MPANEL_DATABASE_URL=url, MPANEL_PORT=str(port),
               MPANEL_HOST="127.0.0.1", MPANEL_BCRYPT_ROUNDS="4", MPANEL_THREADS="4",
               MPANEL_JOB_INTERVAL="0", MPANEL_DATA_DIR=str(workdir))
    env.update(extra_env or {})
    log = open(workdir / "panel.log", "ab")
    process = subprocess.Popen([str(checkout / ".venv/bin/python"), "-m", "panel", "serve"],
                               cwd=checkout, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log_text = (workdir / "panel.log").read_text()
            raise RuntimeError(f"panel of {checkout} exited:\n{log_text}")
        client = Client(f"http://127.0.0.1:{port}")
        try:
            client.login()
            return process, client
        except OSError:
            time.sleep(0.1)
    stop_process(process)
    raise RuntimeError(f"panel of {checkout} did not answer")


# ===== What the page holds ======================================================================

TAG = re.compile(r"<(tr|section)\b([^>]*)>")
ATTRIBUTE = re.compile(r'([\w-]+)="([^"]*)"')


def tags(text):
    """(name, {attribute: value}) of the <tr> and <section> tags of an answer, in order."""
    return [(name, dict(ATTRIBUTE.findall(attributes)))
            for name, attributes in TAG.findall(text.decode())]


class Browser:
    """What mpanel.js posts for the table: the versions of the rows shown, in order, and the
    summary's; kept up to date from each refresh's answer as htmx swaps it in."""

    def __init__(self, page):
        self.have = []
        self.summary = ""
        for name, attributes in tags(page):
            if name == "tr" and "data-v" in attributes:
                self.have.append(attributes["data-v"])
            elif attributes.get("id") == "summary":
                self.summary = attributes["data-v"]

    def form(self):
        # hx-include="#filters": the form's fields as servers.tpl writes them (no service
        # column shown, no customer filter: the bench has no customers)
        return {"q": "", "status": "", "sort": "name", "dir": "asc",
                "have": "".join(self.have), "summary": self.summary}

    def apply(self, answer):
        """Swap a refresh's rows and summary in; -> how many rows came back."""
        if answer.status == 204:
            return 0
        back, end = 0, len(self.have)
        for name, attributes in tags(answer.body):
            position = attributes.get("id", "")
            if name == "tr" and position.startswith("row-"):
                if attributes.get("hx-swap-oob") == "delete":
                    end = min(end, int(position[4:]))
                else:
                    self.have[int(position[4:])] = attributes["data-v"]
                    back += 1
            elif position == "summary":
                self.summary = attributes["data-v"]
        del self.have[end:]
        return back


def next_screenful(page):
    """The loader's address (`<tr id="more" hx-get=…>`)."""
    return html.unescape(re.search(rb'id="more"[^>]*hx-get="([^"]+)"', page).group(1).decode())


# ===== Measuring ================================================================================

# median ms; panel CPU ms per request; body bytes as sent; wire bytes; the last Answer
Figure = collections.namedtuple("Figure", "ms cpu sent wire answer")


def cpu_seconds(process):
    import psutil

    times = psutil.Process(process.pid).cpu_times()
    return times.user + times.system


def timed(process, client, runs, send, expect=(200,), before_each=None):
    """`send()` on a warm connection, `runs` times (`before_each()` first, untimed); each
    answer's status one of `expect`."""
    answer = send()  # warm: caches, template compile
    assert answer.status in expect, (answer.status, answer.body[:300])
    samples, cpu, sizes = [], 0.0, []
    for _ in range(runs):
        if before_each:
            before_each()
        used, started = cpu_seconds(process), time.perf_counter()
        answer = send()
        samples.append((time.perf_counter() - started) * 1000)
        cpu += cpu_seconds(process) - used
        sizes.append((answer.sent, answer.wire))
        assert answer.status in expect, (answer.status, answer.body[:300])
    sent, wire = sorted(sizes)[len(sizes) // 2]
    return Figure(statistics.median(samples), cpu * 1000 / runs, sent, wire, answer)


class Table:
    COLUMNS = (f"{'':<44} {'median':>9} {'CPU':>8} {'body':>9} {'wire':>9} {'target':>15} "
               f"{'ratio ms/B':>11} {'x floor':>8}")

    def __init__(self):
        self.floor = None
        print(self.COLUMNS)

    def row(self, label, figure, target=(None, None), note=""):
        ms_target, byte_target = target
        wanted = " ".join(filter(None, (ms_target and f"{ms_target} ms",
                                        byte_target and f"{byte_target // KB} KB")))
        ratios = "/".join(f"{value / goal:.2f}" for value, goal in
                          ((figure.ms, ms_target), (figure.wire, byte_target)) if goal)
        floor = f"{figure.ms / self.floor.ms:7.1f}x" if self.floor else f"{1:7.1f}x"
        print(f"{label:<44} {figure.ms:6.1f} ms {figure.cpu:5.1f} ms {figure.sent:9,d} "
              f"{figure.wire:9,d} {wanted:>15} {ratios:>11} {floor}{note}", flush=True)


def measure(process, client, args, size, history_id, reporting, database_url):
    """Every row of the new panel; -> {name: Figure} for the comparison with the old one."""
    from panel import db
    from tests import synthetic

    table = Table()
    floor = timed(process, client, args.runs, lambda: client.get("/static/style.css"))
    table.row("static file (floor)", floor)
    table.floor = floor
    found = {}
    for label, path, target in (
            ("first paint /servers", "/servers", FIRST_PAINT),
            ("/servers by CPU, descending", "/servers?sort=cpu&dir=desc", FIRST_PAINT),
            ("/servers filtered by text (q=12)", "/servers?q=12", FIRST_PAINT),
            ("/servers filtered by status (offline)", "/servers?status=offline", FIRST_PAINT)):
        found[path] = figure = timed(process, client, args.runs, lambda: client.get(path))
        table.row(label, figure, target)
    page = found["/servers"].answer.body
    rest = next_screenful(page)
    table.row("next screenful " + rest.split("&")[0].replace("/servers", ""),
              timed(process, client, args.runs, lambda: client.get(rest)))
    everything = f"/servers?rows={size}"
    every_row = timed(process, client, max(1, args.runs // 3), lambda: client.get(everything))
    table.row(f"all rows /servers?rows={size}", every_row)
    first, full = Browser(page), Browser(every_row.answer.body)
    assert len(full.have) == size, (len(full.have), size)
    csrf = {"X-CSRF-Token": client.csrf}

    def refresh(browser):
        return lambda: client.request("POST", "/servers/refresh", browser.form(), csrf)

    for label, browser in (("unchanged refresh, first screenful", first),
                           (f"unchanged refresh, all {size} rows", full)):
        table.row(label, timed(process, client, args.runs, refresh(browser), expect=(204,)),
                  UNCHANGED_REFRESH)

    database = db.bind(database_url)
    rng = random.Random(15)
    changed = max(1, round(len(reporting) * CHANGED_SHARE))
    for label, browser in (("1 % changed refresh, first screenful", first),
                           (f"1 % changed refresh, all {size} rows", full)):
        back = []

        def report():
            with database.connection_context():
                synthetic.report_again(rng.sample(reporting, changed), db.utcnow(),
                                       seed=rng.randrange(1 << 30))

        def send(send=refresh(browser), browser=browser):
            answer = send()
            back.append(browser.apply(answer))
            return answer

        # A first screenful of 100 rows may hold none of the changed servers, nor the summary
        # change: 204.
        figure = timed(process, client, args.runs, send, expect=(200, 204), before_each=report)
        back = back[1:]  # the warm-up: the changes made while the other browser was measured
        table.row(label, figure, CHANGED_REFRESH,
                  f"  rows back: median {statistics.median(back):.0f} "
                  f"({min(back)}-{max(back)}) of {changed} changed")
        found[label.split(",")[1].strip()] = figure
    database.close()

    for label, path in (("detail, 30 d, 7 charts", f"/servers/{history_id}?range=30d"),
                        ("detail, 7 d, 7 charts", f"/servers/{history_id}?range=7d"),
                        ("detail, 24 h, 7 charts", f"/servers/{history_id}?range=24h"),
                        ("charts partial, 30 d", f"/servers/{history_id}/charts?range=30d")):
        table.row(label, timed(process, client, args.runs, lambda: client.get(path)), DETAIL)
    return found


def measure_old(process, client, args, new, size):
    """The previous release's /servers and its refresh, against the new panel's."""
    table = Table()
    table.floor = timed(process, client, args.runs, lambda: client.get("/static/style.css"))
    table.row("old static file (floor)", table.floor)
    runs = max(1, args.runs // 2)
    page = timed(process, client, runs, lambda: client.get("/servers"))
    table.row(f"old /servers ({size} rows)", page, FIRST_PAINT)
    poll = timed(process, client, runs, lambda: client.get("/servers", {"HX-Request": "true"}))
    table.row("old refresh (GET /servers, HX-Request)", poll, CHANGED_REFRESH)
    ratio = "new/old: first paint {:.2f} time, {:.3f} bytes".format(
        new["/servers"].ms / page.ms, new["/servers"].wire / page.wire)
    for what, figure in (("first screenful", new["first screenful"]),
                         (f"all {size} rows", new[f"all {size} rows"])):
        ratio += (f"; 1 % refresh, {what}: {figure.ms / poll.ms:.2f} time, "
                  f"{figure.wire / poll.wire:.3f} bytes, {figure.cpu / poll.cpu:.2f} CPU")
    print(ratio)


@contextlib.contextmanager
def old_checkout(ref):
    """`ref` checked out into a temporary git worktree sharing this tree's .venv; removed
    afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="mpanel-baseline-")) / "tree"
    subprocess.run(["git", "worktree", "add", "--detach", str(folder), ref], cwd=ROOT,
                   check=True, capture_output=True)
    try:
        (folder / ".venv").symlink_to((ROOT / ".venv").resolve())
        yield folder
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(folder)], cwd=ROOT,
                       check=True, capture_output=True)
        shutil.rmtree(folder.parent, ignore_errors=True)


def run(backend, url, size, args, baseline):
    from tests.conftest import stop_process

    history_id, reporting, rows, seconds = seed(url, size, args.days)
    print(f"\n{backend}: {size:,} servers, {args.days} days of minute samples for one "
          f"({rows:,} rows, seeded and rolled up in {seconds:.0f} s), load "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="mpanel-dash-"))
    process, client = start_checkout_panel(ROOT, url, workdir, PANEL_ENV)
    try:
        new = measure(process, client, args, size, history_id, reporting, url)
    finally:
        stop_process(process)
    if baseline is None:
        return
    process, client = start_checkout_panel(baseline, url, workdir, PANEL_ENV)
    try:
        measure_old(process, client, args, new, size)
    finally:
        stop_process(process)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--servers", default="1000,10000",
                        help="fleet sizes, comma-separated (default 1000,10000)")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--baseline", default=BASELINE,
                        help="git ref of the release to compare with ('' for none)")
    args = parser.parse_args()
    sizes = [int(size) for size in args.servers.split(",")]
    with contextlib.ExitStack() as stack:
        baseline = stack.enter_context(old_checkout(args.baseline)) if args.baseline else None
        for size in sizes:
            if args.backend in ("sqlite", "both"):
                folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="mpanel-dash-db-"))
                run("SQLite", f"sqlite:///{folder}/bench.db", size, args, baseline)
            if args.backend in ("postgresql", "both"):
                with scratch_postgres(f"mpanel_dashboard_{size}") as url:
                    run("PostgreSQL", url, size, args, baseline)


if __name__ == "__main__":
    main()
