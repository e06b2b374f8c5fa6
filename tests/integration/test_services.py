"""Service collectors against real servers on this machine: Redis and PostgreSQL (started before
the tests, as in CI), nginx (started by the test), and Docker through a stand-in that speaks the
Engine API on a unix socket — no Docker engine can run here."""
import http.server
import json
import os
import socketserver
import threading
import urllib.request
from pathlib import Path

import pytest

import agent
from tests.conftest import (DEFAULT_PG_URL, free_port, require, start_nginx, stop_process,
                            wait_for_port)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def context(**services):
    return agent.CollectorContext(services=services)


def reachable(port):
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


# ----- Redis ------------------------------------------------------------------------------------

@pytest.fixture
def redis_port():
    require("Redis on 127.0.0.1:6379", reachable(6379), "start redis-server")
    return 6379


def test_redis_reports_memory_and_clients_from_the_real_server(redis_port):
    ctx = context(redis={"port": redis_port})
    first = agent.collect_redis(ctx)
    assert first["usedMemory"] > 0 and first["connectedClients"] >= 1
    ctx.rates.end_cycle()
    second = agent.collect_redis(ctx)
    assert second["opsPerSec"] > 0  # our own INFO commands count


def test_redis_with_a_password_it_does_not_have_is_unavailable_not_absent(redis_port):
    ctx = context(redis={"port": redis_port, "password": "not-the-password"})
    metrics, unavailable = agent.run_collectors(("redis",), ctx)
    assert "redis" in unavailable and "not-the-password" not in unavailable["redis"]


def test_redis_absent_when_nothing_listens():
    with pytest.raises(agent.ServiceAbsent):
        agent.collect_redis(context(redis={"port": free_port()}))


# ----- PostgreSQL -------------------------------------------------------------------------------

@pytest.fixture
def postgres_settings():
    from urllib.parse import urlsplit

    url = urlsplit(os.environ.get("MPANEL_TEST_DATABASE_URL") or DEFAULT_PG_URL)
    require("PostgreSQL", reachable(url.port or 5432), f"nothing listens at {url.netloc}")
    return {"host": url.hostname, "port": url.port or 5432, "user": url.username or "postgres"}


@pytest.mark.parametrize("method", ["socket", "psql"])
def test_postgresql_reports_connections_and_database_sizes(postgres_settings, method):
    import shutil

    if method == "psql":
        require("psql", shutil.which("psql"), "install postgresql-client")
    result = agent.collect_postgresql(context(postgresql=dict(postgres_settings, method=method)))
    assert result["connections"] >= 1
    names = {d["name"] for d in result["databases"]}
    assert "postgres" in names
    assert all(d["size"] > 0 for d in result["databases"])


@pytest.mark.parametrize("method", ["socket", "psql"])
def test_postgresql_sizes_are_read_every_few_minutes_and_the_last_known_sent_between(
        postgres_settings, method):
    import shutil

    import psycopg2

    if method == "psql":
        require("psql", shutil.which("psql"), "install postgresql-client")
    name = f"mpt_sizes_{os.getpid()}_{method}"
    admin = psycopg2.connect(host=postgres_settings["host"], port=postgres_settings["port"],
                             user=postgres_settings["user"], dbname="postgres")
    admin.autocommit = True
    try:
        ctx = context(postgresql=dict(postgres_settings, method=method))
        first = agent.collect_postgresql(ctx)
        assert name not in {d["name"] for d in first["databases"]}
        with admin.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {name}")
        again = agent.collect_postgresql(ctx)
        assert again["databases"] == first["databases"]  # the last known
        ctx.held["postgresql"]["sizesAt"] -= agent.DATABASE_SIZES_INTERVAL  # minutes went by
        assert name in {d["name"] for d in agent.collect_postgresql(ctx)["databases"]}
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.close()


def test_postgresql_absent_when_nothing_listens(postgres_settings):
    with pytest.raises(agent.ServiceAbsent):
        agent.collect_postgresql(context(postgresql=dict(postgres_settings, port=free_port())))


def test_postgresql_over_its_unix_socket(postgres_settings):
    folder = "/var/run/postgresql"
    require("PostgreSQL's unix socket", os.path.exists(
        f"{folder}/.s.PGSQL.{postgres_settings['port']}"), f"no socket in {folder}")
    settings = dict(postgres_settings, socket=folder)
    assert agent.collect_postgresql(context(postgresql=settings))["connections"] >= 1


def test_postgresql_counts_our_own_extra_connections(postgres_settings):
    import psycopg2

    before = agent.collect_postgresql(context(postgresql=postgres_settings))["connections"]
    extra = [psycopg2.connect(host=postgres_settings["host"], port=postgres_settings["port"],
                              user=postgres_settings["user"], dbname="postgres")
             for _ in range(3)]
    try:
        during = agent.collect_postgresql(context(postgresql=postgres_settings))["connections"]
    finally:
        for connection in extra:
            connection.close()
    assert during >= before + 3 - 1  # other clients may come and go meanwhile


def test_postgresql_wrong_user_is_unavailable_with_the_reason(postgres_settings):
    ctx = context(postgresql=dict(postgres_settings, user="no_such_role_here"))
    _, unavailable = agent.run_collectors(("postgresql",), ctx)
    assert "no_such_role_here" in unavailable["postgresql"]


# ----- nginx ------------------------------------------------------------------------------------

@pytest.fixture
def nginx_port(tmp_path):
    port = free_port()
    process = start_nginx(tmp_path, f"""
  server {{
    listen 127.0.0.1:{port};
    location = /nginx_status {{ stub_status; }}
    location = /boom {{ return 500; }}
    location / {{ return 200 "hello"; }}
  }}""")
    try:
        wait_for_port(port, process)
        yield port
    finally:
        stop_process(process)


def test_nginx_reports_connections_and_a_request_rate(nginx_port):
    ctx = context(nginx={"url": f"http://127.0.0.1:{nginx_port}/nginx_status"})
    first = agent.collect_nginx(ctx)
    assert first["activeConnections"] >= 1 and "requestsPerSec" not in first
    ctx.rates.end_cycle()
    for _ in range(20):
        urllib.request.urlopen(f"http://127.0.0.1:{nginx_port}/").read()
    second = agent.collect_nginx(ctx)
    assert second["requestsPerSec"] > 0


def test_nginx_without_stub_status_is_absent(nginx_port):
    with pytest.raises(agent.ServiceAbsent):
        agent.collect_nginx(context(nginx={"url": f"http://127.0.0.1:{nginx_port}/missing"}))


def test_apache_status_url_served_by_nginx_is_absent_not_an_error(nginx_port):
    """A web server that is not Apache answers the mod_status URL: no Apache, no error."""
    with pytest.raises(agent.ServiceAbsent):
        agent.collect_apache(context(apache={"url": f"http://127.0.0.1:{nginx_port}/"}))


def test_a_status_page_that_errs_or_is_not_http_fails_with_the_reason(nginx_port,
                                                                      tls_nginx_port):
    """The status pages' own HTTP client: a 5xx, an answer that is not HTTP, an https page whose
    certificate the system does not trust, and nothing listening."""
    def collect(url):
        _, unavailable = agent.run_collectors(("nginx",), context(nginx={"url": url}))
        return unavailable.get("nginx", "")

    garbage = socketserver.TCPServer(("127.0.0.1", 0), _Garbage)
    threading.Thread(target=garbage.serve_forever, daemon=True).start()
    try:
        assert "answered HTTP 500" in collect(f"http://127.0.0.1:{nginx_port}/boom")
        assert "did not answer HTTP" in collect(f"http://127.0.0.1:{garbage.server_address[1]}/")
        assert "CERTIFICATE_VERIFY_FAILED" in collect(f"https://127.0.0.1:{tls_nginx_port}/")
    finally:
        garbage.shutdown()
        garbage.server_close()
    with pytest.raises(agent.ServiceAbsent):
        agent.collect_nginx(context(nginx={"url": f"http://127.0.0.1:{free_port()}/"}))


class _Garbage(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.recv(1024)
        self.request.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")


@pytest.fixture
def tls_nginx_port(tmp_path):
    """An nginx of the test's own serving https with a self-signed certificate."""
    from tests.conftest import self_signed_certificate

    port = free_port()
    cert, key = self_signed_certificate(tmp_path)
    (tmp_path / "tls").mkdir()
    process = start_nginx(tmp_path / "tls", f"""
  server {{ listen 127.0.0.1:{port} ssl; ssl_certificate {cert}; ssl_certificate_key {key};
           location / {{ stub_status; }} }}""")
    try:
        wait_for_port(port, process)
        yield port
    finally:
        stop_process(process)


# ----- Docker (stand-in) ------------------------------------------------------------------------

class _EngineAPI(http.server.BaseHTTPRequestHandler):
    """Answers GET /info like the Docker Engine API, from a captured reply."""

    def do_GET(self):
        if self.path != "/info":
            self.send_error(404)
            return
        body = (FIXTURES / "docker_info.json").read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class _UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def get_request(self):
        request, _ = super().get_request()
        return request, ("local", 0)


@pytest.fixture
def docker_socket(tmp_path):
    """A stand-in for the Docker engine (none can run here): the Engine API's /info over a unix
    socket, which is all the collector speaks."""
    path = str(tmp_path / "docker.sock")
    server = _UnixHTTPServer(path, _EngineAPI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield path
    server.shutdown()
    server.server_close()


def test_docker_reports_containers_over_the_engine_api_socket(docker_socket):
    result = agent.collect_docker(context(docker={"socket": docker_socket}))
    assert result == {"containersTotal": 4, "containersRunning": 3, "images": 12}


def test_docker_socket_without_permission_is_unavailable_with_a_hint(docker_socket):
    """The agent's user is not in the docker group: the socket exists but may not be opened.
    Root may open any socket (and this suite's interpreter lives under /root, out of reach of
    an unprivileged child), so this runs only when the suite itself is unprivileged."""
    if os.geteuid() == 0:
        pytest.skip("running as root: a socket's permissions cannot refuse root")
    os.chmod(docker_socket, 0)
    _, unavailable = agent.run_collectors(("docker",), context(docker={"socket": docker_socket}))
    assert "docker group" in unavailable["docker"]


def test_docker_absent_without_a_socket(tmp_path):
    with pytest.raises(agent.ServiceAbsent):
        agent.collect_docker(context(docker={"socket": str(tmp_path / "none.sock")}))


# ----- All of them through the real agent -------------------------------------------------------

def test_print_reports_every_service_found(nginx_port, docker_socket, redis_port,
                                           postgres_settings, tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"agent": {"stateDir": str(tmp_path / "state"), "services": {
        "nginx": {"url": f"http://127.0.0.1:{nginx_port}/nginx_status"},
        "apache": {"url": f"http://127.0.0.1:{free_port()}/server-status?auto"},
        "redis": {"port": redis_port},
        "postgresql": postgres_settings,
        "docker": {"socket": docker_socket},
        # This machine has Postfix (.ci/run installs it): pointed elsewhere, the queue is absent.
        "mailqueue": {"postfixQueue": str(tmp_path / "none"), "eximSpool": str(tmp_path / "none")},
    }}}))
    import subprocess
    import sys

    from tests.conftest import ROOT

    result = subprocess.run([sys.executable, str(ROOT / "agent.py"), "--config", str(config),
                             "--print"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["metrics"]["services"]
    # no Apache here; MariaDB is found on its usual socket with no settings, where it runs
    found = {"mysql"} if any(os.path.exists(p) for p in agent.MYSQL_SOCKETS) else set()
    assert set(services) == {"nginx", "redis", "postgresql", "docker"} | found
