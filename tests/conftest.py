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

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# Tests hash keys at bcrypt's lowest cost so the suite stays fast; one test checks that the
# product's default is 12.
TEST_BCRYPT_ROUNDS = 4
BACKENDS = ("sqlite", "postgresql")


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
    panel = start_panel(backend_url, log_path, {"MPANEL_AUTH_FAILURE_LIMIT": "100000"})
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
    what crosses the wire (retries, bandwidth) without touching either end."""

    def __init__(self, target_port):
        import threading

        self.target_port = target_port
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
