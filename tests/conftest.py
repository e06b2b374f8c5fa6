"""Shared fixtures: real databases (SQLite and PostgreSQL), a real panel under Waitress in its
own process, and a small HTTP client that sends exactly the bytes a test asks for.

PostgreSQL comes from MPANEL_TEST_DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/test).
Each test run creates its own database on that server and drops it at the end, so runs never see
each other's rows. Without a reachable server the PostgreSQL half of the suite is skipped with a
message, except under CI=true, where it must run and an absent server is an error.
"""
import datetime
import http.client
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from panel import db, models, operations  # noqa: E402
from panel import settings as settings_module  # noqa: E402

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# Tests hash keys at bcrypt's lowest cost so the suite stays fast; one test checks that the
# product's default is 12.
TEST_BCRYPT_ROUNDS = 4
BACKENDS = ("sqlite", "postgresql")
# For a test that proves what a page, the agent or a browser does, not how rows are stored: it
# runs on the embedded default only (the storage under it is tested on both backends elsewhere),
# which keeps CI within its time. `pytestmark = ONE_BACKEND` marks a whole module.
ONE_BACKEND = pytest.mark.parametrize("backend_url", ["sqlite"], indirect=True)
# The tests' webhook receivers listen on loopback, which customers' channels may reach only
# where the operator allows it (panel/outbound.py): the shared panel allows it, as an operator
# with a local receiver would; in-process calls pass LOOPBACK as their `allowed`.
ALLOW_LOOPBACK = "127.0.0.0/8"
LOOPBACK = settings_module.networks([ALLOW_LOOPBACK], "MPANEL_ALLOW_CHANNEL_NETWORKS")


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ===== Databases ================================================================================

def _pg_admin_connection(url):
    import psycopg2

    parts = urllib.parse.urlsplit(url)
    connection = psycopg2.connect(dbname=parts.path.lstrip("/") or "postgres",
                                  user=parts.username, password=parts.password,
                                  host=parts.hostname, port=parts.port or 5432, connect_timeout=3)
    connection.autocommit = True
    return connection


@pytest.fixture(scope="session")
def postgresql_url():
    """A fresh PostgreSQL database for this run; dropped afterwards."""
    base = os.environ.get("MPANEL_TEST_DATABASE_URL") or DEFAULT_PG_URL
    try:
        admin = _pg_admin_connection(base)
    except Exception as err:  # any connection failure means "no PostgreSQL here"
        message = f"PostgreSQL not reachable at {base}: {err}".strip()
        if IN_CI:
            pytest.fail(f"{message} (CI=true: the PostgreSQL tests must run)", pytrace=False)
        pytest.skip(f"{message}; set MPANEL_TEST_DATABASE_URL to run the PostgreSQL tests")
    name = f"mpanel_test_{os.getpid()}_{secrets.token_hex(3)}"
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    parts = urllib.parse.urlsplit(base)
    yield urllib.parse.urlunsplit(parts._replace(path="/" + name))
    with admin.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory):
    return "sqlite:///" + str(tmp_path_factory.mktemp("sqlite") / "mpanel.db")


@pytest.fixture(scope="session", params=BACKENDS)
def backend_url(request):
    """The database URL of one backend for this run, schema initialised."""
    url = request.getfixturevalue(f"{request.param}_url")
    database = db.open_database(url)
    db.init_schema(database)
    database.close()
    return url


def wipe(database):
    """Delete every row, children first, so each test starts from an empty schema."""
    with database.connection_context():
        with database.atomic():
            for model in reversed(models.ALL_MODELS):
                if model is not models.SchemaVersion:
                    model.delete().execute()


@pytest.fixture
def database(backend_url):
    """The models bound to a clean database of the current backend."""
    bound = db.bind(backend_url)
    wipe(bound)
    bound.connect(reuse_if_open=True)
    yield bound
    if not bound.is_closed():
        bound.close()


# ===== The panel as a real process ==============================================================

class PanelProcess:
    def __init__(self, url, database_url, process, log_path):
        self.url = url
        self.database_url = database_url
        self.process = process
        self.log_path = log_path
        parts = urllib.parse.urlsplit(url)
        self.host, self.port = parts.hostname, parts.port

    def log_text(self):
        return Path(self.log_path).read_text(errors="replace")


def start_panel(database_url, log_path, extra_env=None, port=None):
    port = port or free_port()
    env = dict(os.environ, MPANEL_DATABASE_URL=database_url, MPANEL_PORT=str(port),
               MPANEL_HOST="127.0.0.1", MPANEL_BCRYPT_ROUNDS=str(TEST_BCRYPT_ROUNDS),
               MPANEL_THREADS="4", MPANEL_DATA_DIR=str(Path(log_path).parent))
    env.update(extra_env or {})
    host = env["MPANEL_HOST"]
    log = open(log_path, "ab")
    process = subprocess.Popen([sys.executable, "-m", "panel", "serve"], cwd=ROOT, env=env,
                               stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"panel exited early:\n{Path(log_path).read_text()}")
        try:
            connection = http.client.HTTPConnection(host, port, timeout=1)
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                return PanelProcess(f"http://{host}:{port}", database_url, process, log_path)
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"panel did not answer /healthz:\n{Path(log_path).read_text()}")


def stop_panel(panel):
    panel.process.terminate()
    try:
        panel.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        panel.process.kill()


@pytest.fixture(scope="session")
def panel_process(backend_url, tmp_path_factory):
    """One panel per backend for the whole run; tests wipe the rows, not the process."""
    log_path = tmp_path_factory.mktemp("panel") / "panel.log"
    # The agent failure limiter lives in the process, which every test using this panel shares
    # (all from 127.0.0.1): one test's refused requests must not turn the next one's into 429s.
    # The limits themselves are tested on panels of their own (test_auth.py).
    # It runs no background jobs: tests run a job in-process and count what it did (rules,
    # checks, deliveries), and the panel's own run every 15 s on the same database raced them
    # (an alert opened or a delivery claimed by the panel first). Tests of the job loop itself
    # start panels of their own (test_alerts.py jobs_panel).
    panel = start_panel(backend_url, log_path, {"MPANEL_AUTH_FAILURE_LIMIT": "100000",
                                                "MPANEL_JOB_INTERVAL": "0",
                                                "MPANEL_ALLOW_CHANNEL_NETWORKS": ALLOW_LOOPBACK})
    yield panel
    stop_panel(panel)


@pytest.fixture
def panel(panel_process, database):
    """A running panel on a clean database (the models are bound to it too)."""
    return panel_process


# ===== HTTP =====================================================================================

class Response:
    def __init__(self, status, headers, body, raw_cookies=()):
        self.status = status
        self.headers = headers
        self.body = body
        self.raw_cookies = list(raw_cookies)

    def json(self):
        return json.loads(self.body)

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")


def http_request(panel, method, path, body=None, headers=None, json_body=None):
    """Send exactly these bytes; return status, headers and body. No retries, no magic."""
    headers = dict(headers or {})
    if json_body is not None:
        body = json.dumps(json_body).encode()
        headers.setdefault("Content-Type", "application/json")
    if isinstance(body, str):
        body = body.encode()
    connection = http.client.HTTPConnection(panel.host, panel.port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return Response(response.status, {k.lower(): v for k, v in response.getheaders()},
                        response.read(), response.msg.get_all("Set-Cookie") or [])
    finally:
        connection.close()


def new_server(name="web-1", critical=False):
    """Create a server in the bound database; return (server, key)."""
    return operations.add_server(name, TEST_BCRYPT_ROUNDS, critical=critical)


DELETE = object()


def with_field(document, path, value):
    """`document` with the field at `path` (keys and list indexes) set to value, or removed
    when value is DELETE. Changes the document in place and returns it."""
    target = document
    for key in path[:-1]:
        target = target[key]
    if value is DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return document


# An hour ago, to the minute: fixed sample times inside the panel's retention, whatever the
# date the suite runs on.
BASE_TIME = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1)) \
    .replace(second=0, microsecond=0, tzinfo=None)


def stamp(minute=0):
    """BASE_TIME plus `minute` minutes, as the agent writes it (ISO 8601, UTC)."""
    return (BASE_TIME + datetime.timedelta(minutes=minute)).isoformat() + "Z"


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


def write_agent_config(tmp_path, url, key, interval=60, retry_max_delay=300, timeout=10,
                       services=None, **agent_extra):
    """An agent config.json in the seed shape, state under tmp_path/state."""
    document = {
        "controlPanel": {"url": url, "apiKey": key},
        "agent": {"reportInterval": interval, "stateDir": str(tmp_path / "state"),
                  "retryMaxDelay": retry_max_delay, "requestTimeout": timeout,
                  "services": services or {}, **agent_extra},
        "logging": {"level": "debug"},
    }
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(document))
    return path


# ===== Other real servers =======================================================================

def require(what, available, why):
    """Skip when a real server the test needs is missing — but never under CI=true."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"{what} is required under CI=true: {why}", pytrace=False)
    pytest.skip(f"{what} not available here: {why}")


def self_signed_certificate(directory):
    """(cert.pem, key.pem): a certificate for 127.0.0.1 made by Debian's openssl."""
    import shutil

    require("openssl", shutil.which("openssl"), "install Debian's openssl")
    cert, key = Path(directory) / "cert.pem", Path(directory) / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


def start_nginx(tmp_path, server_blocks):
    """Debian's nginx as an unprivileged foreground process with its own prefix and config."""
    import shutil

    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists()
                                       else None)
    require("nginx", binary, "install Debian's nginx package (.ci/run does)")
    prefix = tmp_path / "nginx"
    prefix.mkdir(exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(f"""
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {prefix}/body; proxy_temp_path {prefix}/proxy;
  fastcgi_temp_path {prefix}/fastcgi; uwsgi_temp_path {prefix}/uwsgi; scgi_temp_path {prefix}/scgi;
  {server_blocks}
}}
""")
    process = subprocess.Popen([binary, "-p", str(prefix), "-c", str(conf), "-e", "stderr"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return process


def wait_for_port(port, process=None, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited: {process.stderr.read().decode() if process.stderr else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


class CountingProxy:
    """A TCP relay in front of a real server that counts requests and bytes each way, to check
    what crosses the wire (retries, bandwidth) without touching either end. With keep_sent,
    `sent` keeps every byte the client sent (to read its request headers)."""

    def __init__(self, target_port, keep_sent=False):
        import threading

        self.target_port = target_port
        self.sent = bytearray() if keep_sent else None
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.requests = 0
        self.bytes_up = 0
        self.bytes_down = 0
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def _accept(self):
        import threading

        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, source, sink, upward):
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                with self.lock:
                    if upward:
                        self.bytes_up += len(data)
                        if self.sent is not None:
                            self.sent.extend(data)
                        self.requests += data.count(b" HTTP/1.1\r\n")
                    else:
                        self.bytes_down += len(data)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                end.close()

    def close(self):
        self.closed = True
        self.listener.close()


# ===== The agent as a real process ==============================================================

def agent_env():
    """The environment without MPANEL_* settings, so an agent reads only what a test gives it."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MPANEL_")}


def stop_process(process, timeout=10):
    """SIGTERM and wait; one that has not stopped by then is killed (so it cannot outlive the
    test) and the test fails on the timeout. -> its exit code."""
    process.terminate()
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)
        raise


def start_agent(config_path, log_path=None, *args):
    """agent.py --config CONFIG [args] in the background, its output in log_path."""
    output = open(log_path, "ab") if log_path else subprocess.DEVNULL
    try:
        return subprocess.Popen([sys.executable, str(ROOT / "agent.py"), "--config",
                                 str(config_path), *args], env=agent_env(), stdout=output,
                                stderr=subprocess.STDOUT)
    finally:
        if log_path:
            output.close()


def wait_for(condition, timeout=30, step=0.1):
    """True as soon as condition() holds; False after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return False


# ===== PHP-FPM ==================================================================================

class PhpFpm:
    """A php-fpm master of the test's own (`start_php_fpm`): its pools' sockets and a way to
    make their queues real."""

    def __init__(self, folder, process, pools):
        self.folder = folder
        self.process = process
        self.pools = pools  # name -> {"listen", "status_listen", ...} as written in the config
        self.config = folder / "php-fpm.conf"

    def listen(self, pool):
        return self.pools[pool]["listen"]

    def status(self, pool):
        """The pool's status page (`?json`) read as the agent reads it."""
        import agent

        spec = self.pools[pool]
        _, text = agent.fetch_fastcgi(spec["status_listen"] or spec["listen"], "/fpm-status",
                                      "json", timeout=5)
        return agent.parse_phpfpm_status(text)

    def hold(self, pool, connections):
        """Open `connections` requests to the pool that never finish their headers (a
        BEGIN_REQUEST record, no PARAMS): each keeps a worker busy reading them, and those past
        pm.max_children wait in the listen queue. -> the sockets; close them to let go."""
        import agent

        held = []
        for _ in range(connections):
            sock = agent._connect(self.pools[pool]["listen"], 5)
            sock.sendall(agent._fcgi_record(agent._FCGI_BEGIN_REQUEST,
                                            b"\x00\x01" + bytes(6)))
            held.append(sock)
        return held

    def sleep(self, pool, seconds):
        """Run the folder's sleep.php on the pool: a request that takes `seconds` of PHP."""
        import agent

        _, text = agent.fetch_fastcgi(self.listen(pool), str(self.folder / "sleep.php"),
                                      f"ms={int(seconds * 1000)}", timeout=seconds + 10)
        return text

    def log_text(self):
        path = self.folder / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""


def php_fpm_binary():
    import shutil

    for name in ("php-fpm8.2", "php-fpm"):
        found = shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists()
                                       else None)
        if found:
            return found
    return None


def start_php_fpm(tmp_path, pools):
    """Debian's php-fpm in the foreground (`-F`), in its own process group, with its own
    php-fpm.conf in tmp_path/fpm and one pool.d/<name>.conf per pool, pulled in by an
    `include=` glob as Debian's is. Stop it with stop_php_fpm.

    pools: {name: options}; options (all optional): `pm` ("dynamic"), `max_children` (1),
    `status` (True: pm.status_path = /fpm-status), `status_listen` (False: the status page on
    a socket of its own, readable while every worker is busy), `tcp` (False: listen on
    127.0.0.1:<free port> instead of a unix socket), `slowlog` (None: request_slowlog_timeout
    in seconds, so that a PhpFpm.sleep past it counts as a slow request). With the defaults one
    held request (see PhpFpm.hold) fills the pool: more wait in the listen queue and FPM counts
    "max children reached".
    """
    binary = php_fpm_binary()
    require("php-fpm", binary, "install Debian's php8.2-fpm package (.ci/run does)")
    folder = tmp_path / "fpm"
    (folder / "pool.d").mkdir(parents=True, exist_ok=True)
    root = os.geteuid() == 0
    written = {}
    for name, options in pools.items():
        listen = (f"127.0.0.1:{free_port()}" if options.get("tcp")
                  else str(folder / f"{name}.sock"))
        status_listen = str(folder / f"{name}-status.sock") if options.get("status_listen") \
            else None
        children = options.get("max_children", 1)
        lines = [f"[{name}]", f"listen = {listen}", f"pm = {options.get('pm', 'dynamic')}",
                 f"pm.max_children = {children}", "pm.start_servers = 1",
                 "pm.min_spare_servers = 1", "pm.max_spare_servers = 1"]
        if root:
            # -R lets a pool run as root; as nobody it could not read sleep.php in tmp_path.
            lines.append("user = root")
        if options.get("status", True):
            lines.append("pm.status_path = /fpm-status")
        if status_listen:
            lines.append(f"pm.status_listen = {status_listen}")
        if options.get("slowlog"):
            lines += [f"request_slowlog_timeout = {options['slowlog']}s",
                      f"slowlog = {folder}/{name}.slow.log"]
        (folder / "pool.d" / f"{name}.conf").write_text("\n".join(lines) + "\n")
        written[name] = dict(options, listen=listen, status_listen=status_listen)
    (folder / "sleep.php").write_text("<?php usleep((int) $_GET['ms'] * 1000); echo 'slept';\n")
    (folder / "php-fpm.conf").write_text(f"""[global]
pid = {folder}/php-fpm.pid
error_log = {folder}/error.log
daemonize = no
include = {folder}/pool.d/*.conf
""")
    command = [binary, "-y", str(folder / "php-fpm.conf"), "-F"] + (["-R"] if root else [])
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)  # its log: error.log
    fpm = PhpFpm(folder, process, written)
    # Ready once FPM says so and every pool has its first workers, titled. No connection is
    # made to find out: one left in a queue until a worker takes it would show as waiting.
    import agent

    initial = {name: spec.get("max_children", 1) if spec.get("pm") == "static" else
               0 if spec.get("pm") == "ondemand" else 1 for name, spec in written.items()}

    def ready():
        workers = agent._phpfpm_workers({process.pid: None})
        return "ready to handle connections" in fpm.log_text() and \
            all(workers.get((process.pid, name), 0) == n for name, n in initial.items())

    if not wait_for(lambda: process.poll() is not None or ready(), timeout=15) or \
            process.poll() is not None:
        stop_php_fpm(fpm)
        raise RuntimeError(f"php-fpm did not start:\n{fpm.log_text()}")
    return fpm


@pytest.fixture
def php_fpm(tmp_path):
    """start(pools, folder=None) -> a running PhpFpm (see start_php_fpm); every master started
    is stopped, its whole process group, after the test."""
    started = []

    def start(pools, folder=None):
        fpm = start_php_fpm(folder or tmp_path / f"fpm{len(started)}", pools)
        started.append(fpm)
        return fpm

    yield start
    for fpm in started:
        stop_php_fpm(fpm)


def stop_php_fpm(fpm):
    """SIGTERM to the master (it stops its workers) and wait; then nothing of its process group
    may be left (killed if it is, and the test fails)."""
    import signal

    try:
        stop_process(fpm.process)
    finally:
        try:
            os.killpg(fpm.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        pytest.fail("php-fpm's workers outlived their master", pytrace=False)
