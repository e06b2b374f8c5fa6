"""`python -m panel serve` as a real process: the number of processes `--workers` gives, and a
panel on its own port that idle and slow connections cannot silence (issue 10)."""
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import psutil
import pytest

from panel import db
from tests.conftest import (ROOT, agent_env, bearer, free_port, http_request, new_server, stamp,
                            start_panel, stop_panel, wait_for)
from tests.integration.test_api import sample


# ===== Workers ==================================================================================

def kill_group(process, grace=15):
    """Stop the panel and everything it started: SIGTERM to its process group (SIGKILL when
    grace is 0), then SIGKILL for whatever is left of the group."""
    try:
        os.killpg(process.pid, signal.SIGTERM if grace else signal.SIGKILL)
        process.wait(timeout=grace or 5)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # stragglers, or a leader that would not stop
    except ProcessLookupError:
        pass
    process.wait(timeout=5)


def descendants(pid):
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def listens_on(process, port):
    try:
        return any(conn.laddr.port == port and conn.status == psutil.CONN_LISTEN
                   for conn in process.net_connections())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


@pytest.mark.parametrize("source", ["environment", "settings file"])
def test_workers_setting_starts_that_many_processes_and_no_more(tmp_path, source):
    """MPANEL_WORKERS=2 from the environment or from the settings file: the parent and two
    workers, both listening, and still two a while later. Each worker used to read the setting
    again and start two of its own, without end; the guard kills the whole process group the
    moment there are more than two, so a regression cannot fork-bomb the machine."""
    workers, port = 2, free_port()
    env = dict(agent_env(), MPANEL_DATABASE_URL=f"sqlite:///{tmp_path / 'panel.db'}",
               MPANEL_DATA_DIR=str(tmp_path), MPANEL_BCRYPT_ROUNDS="4", MPANEL_THREADS="2",
               MPANEL_JOB_INTERVAL="0")
    settings = {"MPANEL_WORKERS": str(workers), "MPANEL_PORT": str(port)}
    command = [sys.executable, "-m", "panel", "serve"]
    if source == "environment":
        env.update(settings)
    else:
        (tmp_path / "panel.env").write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
        command[3:3] = ["--config", str(tmp_path / "panel.env")]
    with open(tmp_path / "panel.log", "wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        listening_since = None
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and process.poll() is None:
            children = descendants(process.pid)
            if len(children) > workers:
                kill_group(process, grace=0)
                pytest.fail(f"{len(children)} processes under the panel for "
                            f"MPANEL_WORKERS={workers}: pids {[c.pid for c in children]}")
            if len(children) == workers and all(listens_on(c, port) for c in children):
                listening_since = listening_since or time.monotonic()
                if time.monotonic() - listening_since > 3:
                    break  # settled: both serve, and nothing more was started meanwhile
            time.sleep(0.1)
        assert process.poll() is None, (tmp_path / "panel.log").read_text()
        assert listening_since, "both workers listen on the one port"
        assert http_request(type("Panel", (), {"host": "127.0.0.1", "port": port}),
                            "GET", "/healthz").status == 200
    finally:
        kill_group(process)
    assert process.returncode == 0, (tmp_path / "panel.log").read_text()


# ===== Connections that send nothing, or a byte at a time =======================================

def open_sockets(port, count, first_bytes=b""):
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        if first_bytes:
            sock.sendall(first_bytes)
        sock.setblocking(False)  # closed_by_server() and the trickle must never wait
        sockets.append(sock)
    return sockets


def closed_by_server(sock):
    """True when the panel has closed this connection (EOF or reset); never blocks."""
    try:
        return sock.recv(4096) == b""  # data first, if any: not yet
    except BlockingIOError:
        return False
    except OSError:  # reset
        return True


def kept_alive_healthz(connection):
    connection.request("GET", "/healthz")
    response = connection.getresponse()
    response.read()
    return response.status


def test_idle_and_slow_connections_do_not_silence_the_panel(tmp_path):
    """300 connections held open — 100 silent, 100 trickling a header a byte a second, 100
    trickling a body — and /healthz and an agent's report are still answered, at once, by a
    panel with the default connection limit. Each of them is closed once it has not delivered
    its headers within MPANEL_HEADER_TIMEOUT (or its body within MPANEL_BODY_TIMEOUT) of
    connecting, while a kept-alive connection that did send a request stays usable. Waitress's
    defaults (100 connections, 120 s of silence) had the panel time out here."""
    database_url = f"sqlite:///{tmp_path / 'panel.db'}"
    panel = start_panel(database_url, tmp_path / "panel.log",
                        {"MPANEL_HEADER_TIMEOUT": "5", "MPANEL_BODY_TIMEOUT": "8"})
    kept_alive = http.client.HTTPConnection(panel.host, panel.port, timeout=10)
    hostile = []
    stop = threading.Event()
    try:
        db.bind(database_url)
        server, key = new_server("busy-night")
        assert kept_alive_healthz(kept_alive) == 200
        kept_port = kept_alive.sock.getsockname()[1]

        idle = open_sockets(panel.port, 100)
        slow_header = open_sockets(panel.port, 100, b"POST /api/agent/metrics HTTP/1.1\r\nX-")
        slow_body = open_sockets(panel.port, 100, b"POST /api/agent/metrics HTTP/1.1\r\n"
                                 b"Host: panel\r\nContent-Length: 100000\r\n\r\n{")
        hostile = idle + slow_header + slow_body

        def trickle():
            while not stop.wait(1):
                for sock in slow_header + slow_body:
                    try:
                        sock.send(b"a")
                    except OSError:
                        pass  # cut by the panel: what the test waits for
        threading.Thread(target=trickle, daemon=True).start()

        # While all 300 are held (the header timeout has not run out yet: none is closed).
        assert http_request(panel, "GET", "/healthz").status == 200
        report = http_request(panel, "POST", "/api/agent/metrics", headers=bearer(key),
                              json_body=sample(server.id, stamp(1)))
        assert report.status == 200, report.text
        assert not any(closed_by_server(sock) for sock in hostile)

        assert wait_for(lambda: all(closed_by_server(sock) for sock in hostile), timeout=40,
                        step=0.5), \
            f"{sum(not closed_by_server(s) for s in hostile)} slow connections still open"
        # Still the same connection: a request sent on it earlier puts it under the idle
        # timeout, not the header timeout.
        assert kept_alive_healthz(kept_alive) == 200
        assert kept_alive.sock.getsockname()[1] == kept_port
        assert "closing connections that sent no complete request in time" in panel.log_text()
    finally:
        stop.set()
        kept_alive.close()
        for sock in hostile:
            sock.close()
        stop_panel(panel)


@pytest.mark.parametrize("hard_limit", ["this machine's", "1024"])
def test_the_open_file_limit_is_fitted_to_the_connection_limit(hard_limit):
    """A process started with a soft open-file limit of 512 raises it to fit 4000 connections,
    or, where the hard limit does not allow that, uses fewer connections and says so. Run in a
    process of its own, as the limits are the process's."""
    import resource

    machine_hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    hard = machine_hard if hard_limit == "this machine's" else min(1024, machine_hard)
    if hard == resource.RLIM_INFINITY or hard >= 4000 + 256:
        expected = [4000, 4000 + 256]
    else:
        expected = [hard - 256, hard]
    script = ("import logging, resource; logging.basicConfig();"
              "from panel import serving; print(serving.fit_file_limit(4000),"
              "resource.getrlimit(resource.RLIMIT_NOFILE)[0])")
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (min(512, hard), hard)))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(n) for n in expected]
    assert ("open-file limit too low" in result.stderr) == (expected[0] < 4000)


def test_a_backlog_of_reports_is_one_queue_warning_not_one_per_report(database, backend_url,
                                                                      tmp_path):
    """One Waitress thread and 32 agents reporting at once: most reports find the thread
    busy. Waitress warned "Task queue depth" for each of them (a log line per report under
    load, issue 11); the panel lets the first through and holds the rest for a minute."""
    import concurrent.futures

    panel = start_panel(backend_url, tmp_path / "panel.log", {"MPANEL_THREADS": "1"})
    try:
        agents = [new_server(f"queue-{index}") for index in range(32)]

        def report(agent, minute):
            server, key = agent
            return http_request(panel, "POST", "/api/agent/metrics", headers=bearer(key),
                                json_body=sample(server.id, stamp(minute))).status
        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            statuses = list(pool.map(report, agents * 4, [m for m in range(4) for _ in agents]))
    finally:
        stop_panel(panel)
    assert statuses.count(200) == 128
    assert panel.log_text().count("Task queue depth") <= 1


# ===== Waitress's own answers ===================================================================

def raw_exchange(panel, data):
    """Send bytes as they are, read the answer until the panel closes the connection."""
    with socket.create_connection((panel.host, panel.port), timeout=10) as sock:
        sock.sendall(data)
        answer = b""
        while len(answer) < 1 << 20:  # bounded: an error answer is a few hundred bytes
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in
               (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


@pytest.mark.parametrize("request_bytes, status, problem", [
    (b"GET /servers HTTP/1.1\r\nHost: x\r\nContent-Length: many\r\n\r\n", 400,
     "Content-Length"),
    (b"GET /servers HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n", 400, "header"),
    (b"GET /servers HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501,
     "Transfer-Encoding"),
])
def test_requests_waitress_refuses_itself_get_json_naming_the_problem_and_the_headers(
        panel, request_bytes, status, problem):
    """A request the panel never sees (Waitress cannot parse it, or it is over Waitress's own
    limits) is answered like the panel's own refusals: JSON, and the pages' security headers."""
    from panel import SECURITY_HEADERS

    answered, headers, body = raw_exchange(panel, request_bytes)
    assert answered == status
    assert headers["content-type"] == "application/json"
    assert problem in json.loads(body)["error"]
    for name, value in SECURITY_HEADERS.items():
        assert headers[name.lower()] == value, name
    assert headers["connection"] == "close" and headers["cache-control"] == "no-store"
