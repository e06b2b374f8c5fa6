#!/usr/bin/env python3
"""The servers page at fleet size and the detail pages, over real HTTP from a real panel
(Waitress, its own process), on SQLite and on PostgreSQL, measured as a browser receives them
(issue 15), beside the previous release on the same data.

    .venv/bin/python bench/dashboard.py [--servers 1000,10000] [--days 30] [--runs 10]
        [--idle 10] [--idle-runs 1] [--backend both] [--baseline da60951]

Data, per fleet size and backend, in a fresh database: `tests.synthetic.fleet` (servers with
a latest sample, services, forecasts, traffic; one in 50 never seen, one in 40 silent) and one
more server with `--days` days of minute samples (tests/synthetic.history) rolled up by the
panel's own rollup code, for the detail pages.

The client is a browser's: it sends `Accept-Encoding: gzip` and `Sec-Fetch-Site: same-origin`
(without it the panel leaves cookie-carrying answers plain, BREACH: docs/security.md), logged
in as an admin, on one warm keep-alive connection (reopened when an answer closes it, as
Waitress does after every 204). Bytes are counted on the socket as they arrive: "body" is the
body as sent (compressed when it was), "wire" adds the status line and headers; a refresh's
note gives the request's bytes too (its `have` grows 6 bytes a row). Time is the request's
wall time in the client, median of `--runs`; CPU is the panel process's user+system seconds
over those runs (psutil, 10 ms ticks), per request: PostgreSQL's own CPU is not in it.

Rows (each with its target and ratio, below 1.0 meets it, and × the static-file floor):
  - GET /servers, the first paint: by name, by CPU descending, filtered by text and by status
  - GET /servers/rows?offset=100, the next screenful as the page scrolls
  - GET /servers?rows=<all>, every row (how the second browser below gets all its rows)
  - POST /servers/refresh with nothing reported, at once and `--idle` seconds after the last
    one (a poll's interval), for a browser showing the first screenful and for one showing
    every row: 204, unless rows changed with time alone (drift), counted as rows back
  - POST /servers/refresh after 1 % of the reporting servers sent a new sample
    (synthetic.report_again), a fresh 1 % each run; each browser's `have` and `summary` are
    updated from the previous answer as mpanel.js and htmx would; the rows that came back
  - the detail page at 30 d, 7 d, 24 h and the 30-day charts partial
  - the static-file floor
  - the previous release (`--baseline`, before issue 15) checked out into a temporary git
    worktree and started beside the new panel on the same database (issue 15 changed no
    schema): its /servers (every row, uncompressed: it had no gzip), its refresh (GET /servers
    with HX-Request, the whole table every 10 s) and its detail page, each timed in turn with
    the new panel's answer to the same browser, with new/old ratios of time, wire bytes and
    CPU.

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
    its rollups. -> (the history server's id, the fleet's reporting agent ids, samples written,
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
    return server.id, reporting, len(rows) + len(reporting), time.perf_counter() - started


# ===== HTTP as a browser receives it ============================================================

class CountingSocket(socket.socket):
    """A socket that counts the bytes it receives and sends: http.client goes through it."""
    received = 0
    sent = 0

    def recv_into(self, buffer, nbytes=0, flags=0):
        count = super().recv_into(buffer, nbytes, flags)
        self.received += count
        return count

    def sendall(self, data, flags=0):
        super().sendall(data, flags)
        self.sent += len(data)


class CountingConnection(http.client.HTTPConnection):
    def connect(self):
        super().connect()
        plain = self.sock
        self.sock = CountingSocket(plain.family, plain.type, plain.proto, fileno=plain.detach())
        self.sock.settimeout(self.timeout)  # a socket made from a descriptor starts non-blocking
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as browsers do


# status; headers (http.client's message); body decoded; body bytes as sent; all bytes received;
# all bytes of the request
Answer = collections.namedtuple("Answer", "status headers body sent wire up")


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
        if self.connection.sock is None:  # first, or the last answer closed the connection
            self.connection.connect()
        sock = self.connection.sock
        up, received = sock.sent, sock.received
        self.connection.request(method, path, body=body, headers=sent_headers)
        response = self.connection.getresponse()
        raw = response.read()
        wire, up = sock.received - received, sock.sent - up
        decoded = gzip.decompress(raw) if response.getheader("Content-Encoding") == "gzip" \
            else raw
        return Answer(response.status, response.msg, decoded, len(raw), wire, up)

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
        self.back = 0
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
        """Swap a refresh's rows and summary in; `back`: how many rows came back."""
        self.back = 0
        if answer.status == 204:
            return
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
        self.back = back


def next_screenful(page):
    """The loader's address (`<tr id="more" hx-get=…>`)."""
    return html.unescape(re.search(rb'id="more"[^>]*hx-get="([^"]+)"', page).group(1).decode())


# ===== Measuring ================================================================================

# median ms; panel CPU ms per request; body bytes as sent, wire bytes and request bytes (the
# median run's); the last Answer; what Measured.observe saw after each run
Figure = collections.namedtuple("Figure", "ms cpu sent wire up answer observed")
# One thing to time: the panel's process, what to send, the statuses it may answer, and what
# to note after each answer (observe()).
Measured = collections.namedtuple("Measured", "process send expect observe",
                                  defaults=((200,), None))
Panel = collections.namedtuple("Panel", "process client")


def cpu_seconds(process):
    import psutil

    times = psutil.Process(process.pid).cpu_times()
    return times.user + times.system


def timed(runs, *measured, before_each=None):
    """[Figure] of each of `measured`: sent once to warm (caches, template compile, a browser's
    copy brought up to date), then `runs` times, `before_each()` untimed before each turn. In
    a turn each is sent once, the order rotating, so that the machine's load of the moment
    falls on each alike."""
    for each in measured:
        answer = each.send()
        assert answer.status in each.expect, (answer.status, answer.body[:300])
    kept = [collections.defaultdict(list) for _ in measured]
    for number in range(runs):
        if before_each:
            before_each()
        turn = list(range(len(measured)))
        for index in turn[number % len(turn):] + turn[:number % len(turn)]:
            each, samples = measured[index], kept[index]
            used, started = cpu_seconds(each.process), time.perf_counter()
            answer = each.send()
            samples["ms"].append((time.perf_counter() - started) * 1000)
            samples["cpu"].append(cpu_seconds(each.process) - used)
            assert answer.status in each.expect, (answer.status, answer.body[:300])
            samples["sizes"].append((answer.sent, answer.wire, answer.up))
            samples["answer"] = answer
            if each.observe:
                samples["observed"].append(each.observe())
    return [Figure(statistics.median(samples["ms"]), sum(samples["cpu"]) * 1000 / runs,
                   *sorted(samples["sizes"])[runs // 2], samples["answer"], samples["observed"])
            for samples in kept]


def timed_one(runs, process, send, expect=(200,), observe=None, before_each=None):
    return timed(runs, Measured(process, send, expect, observe), before_each=before_each)[0]


def refresh(client, browser):
    """What the tbody's poll sends for `browser`; its answer swapped into the browser."""
    def send():
        answer = client.request("POST", "/servers/refresh", browser.form(),
                                {"X-CSRF-Token": client.csrf})
        browser.apply(answer)
        return answer
    return send


class Changes:
    """Each call: a fresh 1 % of the reporting servers sends a new sample
    (synthetic.report_again), as a 10-second poll's worth of a fleet's reports."""

    def __init__(self, database, reporting):
        self.database = database
        self.reporting = reporting
        self.count = max(1, round(len(reporting) * CHANGED_SHARE))
        self.rng = random.Random(15)

    def __call__(self):
        from panel import db
        from tests import synthetic

        with self.database.connection_context():
            synthetic.report_again(self.rng.sample(self.reporting, self.count), db.utcnow(),
                                   seed=self.rng.randrange(1 << 30))


def rows_back(figure, changed):
    back = figure.observed
    return (f"  rows back: median {statistics.median(back):.0f} ({min(back)}-{max(back)}) of "
            f"{changed} changed; request {figure.up:,d} B")


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


def measure(panel, args, size, history_id, changes):
    """Every row of the new panel; -> the two browsers' (what, Browser), up to date."""
    process, client = panel
    table = Table()
    table.floor = timed_one(args.runs, process, lambda: client.get("/static/style.css"))
    table.row("static file (floor)", table.floor)
    page = None
    for label, path in (("first paint /servers", "/servers"),
                        ("/servers by CPU, descending", "/servers?sort=cpu&dir=desc"),
                        ("/servers filtered by text (q=12)", "/servers?q=12"),
                        ("/servers filtered by status (offline)", "/servers?status=offline")):
        figure = timed_one(args.runs, process, lambda: client.get(path))
        page = page or figure.answer.body
        table.row(label, figure, FIRST_PAINT)
    rest = next_screenful(page)
    table.row("next screenful " + rest.split("&")[0].replace("/servers", ""),
              timed_one(args.runs, process, lambda: client.get(rest)))
    every_row = timed_one(max(1, args.runs // 3), process,
                          lambda: client.get(f"/servers?rows={size}"))
    table.row(f"all rows /servers?rows={size}", every_row)
    browsers = (("first screenful", Browser(page)),
                (f"all {size} rows", Browser(every_row.answer.body)))
    assert len(browsers[1][1].have) == size, (len(browsers[1][1].have), size)

    # What the panel sends when nothing was reported is drift: rows whose version changed
    # with time alone.
    for what, browser in browsers:
        figure = timed_one(args.runs, process, refresh(client, browser), (200, 204),
                           lambda browser=browser: browser.back)
        table.row(f"unchanged refresh at once, {what}", figure, UNCHANGED_REFRESH,
                  rows_back(figure, 0))
    for what, browser in browsers:
        send = refresh(client, browser)
        figure = timed_one(args.idle_runs, process, send, (200, 204),
                           lambda browser=browser: browser.back,
                           lambda send=send: (send(), time.sleep(args.idle)))
        table.row(f"unchanged refresh {args.idle:g} s later, {what}", figure,
                  UNCHANGED_REFRESH, rows_back(figure, 0))
    for what, browser in browsers:
        # A first screenful of 100 rows may hold none of the changed servers, nor the summary
        # change: 204. The warm-up brings the browser up to date (the changes made while the
        # other browser was measured).
        figure = timed_one(args.runs, process, refresh(client, browser), (200, 204),
                           lambda browser=browser: browser.back, changes)
        table.row(f"1 % changed refresh, {what}", figure, CHANGED_REFRESH,
                  rows_back(figure, changes.count))

    for label, path in (("detail, 30 d, 7 charts", f"/servers/{history_id}?range=30d"),
                        ("detail, 7 d, 7 charts", f"/servers/{history_id}?range=7d"),
                        ("detail, 24 h, 7 charts", f"/servers/{history_id}?range=24h"),
                        ("charts partial, 30 d", f"/servers/{history_id}/charts?range=30d")):
        table.row(label, timed_one(args.runs, process, lambda: client.get(path)), DETAIL)
    return browsers


def compare(new, old, args, size, history_id, browsers, changes):
    """The previous release's /servers, its refresh (the whole table, every 10 s) and its
    detail pages, each timed in turn with the new panel's answer to the same browser, on the
    same data."""
    table = Table()
    table.floor = timed_one(args.runs, old.process, lambda: old.client.get("/static/style.css"))
    table.row("old static file (floor)", table.floor)
    new_page, old_page = timed(args.runs,
                               Measured(new.process, lambda: new.client.get("/servers")),
                               Measured(old.process, lambda: old.client.get("/servers")))
    table.row(f"old /servers ({size} rows)", old_page, FIRST_PAINT)

    def old_poll():
        return old.client.get("/servers", {"HX-Request": "true"})

    def refreshes(**options):
        return timed(args.runs, *(Measured(new.process, refresh(new.client, browser), (200, 204))
                                  for _, browser in browsers),
                     Measured(old.process, old_poll), **options)

    *unchanged, old_unchanged = refreshes()
    *changed, old_changed = refreshes(before_each=changes)
    table.row("old refresh (GET /servers, HX-Request)", old_changed, CHANGED_REFRESH)
    # The new panel's detail pages unzipped too: what gzip costs apart from the rest.
    details = []
    for label, path in (("detail, 30 d, 7 charts", f"/servers/{history_id}?range=30d"),
                        ("charts partial, 30 d", f"/servers/{history_id}/charts?range=30d")):
        mine, plain, theirs = timed(
            args.runs, Measured(new.process, lambda: new.client.get(path)),
            Measured(new.process, lambda: new.client.get(path, {"Accept-Encoding": "identity"})),
            Measured(old.process, lambda: old.client.get(path)))
        table.row(f"old {label}", theirs, DETAIL)
        details += [(label, mine, theirs), (f"{label}, not gzipped", plain, theirs)]
    print(f"{'new against ' + args.baseline + ', timed in turn':<44} {'new':>9} {'old':>9} "
          f"{'time':>6} {'new wire':>9} {'old wire':>9} {'bytes':>7} {'CPU':>6}")
    for label, mine, theirs in (
            ("first paint /servers", new_page, old_page),
            *((f"unchanged refresh at once, {what}", figure, old_unchanged)
              for (what, _), figure in zip(browsers, unchanged)),
            *((f"1 % changed refresh, {what}", figure, old_changed)
              for (what, _), figure in zip(browsers, changed)),
            *details):
        cpu = f"{mine.cpu / theirs.cpu:6.2f}" if theirs.cpu else ""
        print(f"{label:<44} {mine.ms:6.1f} ms {theirs.ms:6.1f} ms {mine.ms / theirs.ms:6.2f} "
              f"{mine.wire:9,d} {theirs.wire:9,d} {mine.wire / theirs.wire:7.3f} {cpu}",
              flush=True)


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
    from panel import db
    from tests.conftest import stop_process

    history_id, reporting, samples, seconds = seed(url, size, args.days)
    print(f"\n{backend}: {size:,} servers, {args.days} days of minute samples for one "
          f"({samples:,} samples, seeded and rolled up in {seconds:.0f} s), load "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="mpanel-dash-"))
    with contextlib.ExitStack() as stack:
        database = db.bind(url)
        stack.callback(database.close)
        changes = Changes(database, reporting)
        new = Panel(*start_checkout_panel(ROOT, url, workdir, PANEL_ENV))
        stack.callback(stop_process, new.process)
        browsers = measure(new, args, size, history_id, changes)
        if baseline is not None:
            old = Panel(*start_checkout_panel(baseline, url, workdir, PANEL_ENV))
            stack.callback(stop_process, old.process)
            compare(new, old, args, size, history_id, browsers, changes)
    shutil.rmtree(workdir, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--servers", default="1000,10000",
                        help="fleet sizes, comma-separated (default 1000,10000)")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--idle", type=float, default=10,
                        help="seconds between an unchanged page's load and its refresh")
    parser.add_argument("--idle-runs", type=int, default=1)
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
