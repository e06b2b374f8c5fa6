"""The real agent stops when asked, whatever it is doing: SIGTERM (or SIGINT) sent at varied
moments while a request to a slow panel is in flight — once, twice or in a quick burst, as a
service manager and an impatient person at a terminal do — and every agent exits within 10 s
with code 0, its samples kept in the buffer. With the urllib3 the project pins (2.x) and with
urllib3 1.26 (.venv/urllib3-1.26), which Debian 12, Ubuntu 22.04 and RHEL 9 ship.

Before: the signal handler raised an exception to cut the request short, and it could land
anywhere in urllib3 — inside the connection pool's queue, with its lock held; at exit urllib3's
finalizer then waited on that lock forever, and systemd had to SIGKILL the agent after its stop
timeout. Or it landed in the agent's own bookkeeping, and a later signal raised in the middle
of saving the state (a traceback, exit code 1)."""
import hashlib
import http.server
import json
import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time

import pytest

from tests.conftest import (ROOT, agent_env, require, self_signed_certificate, wait_for,
                            write_agent_config)
from tests.integration.test_delivery import buffered

LEGACY_URLLIB3 = ROOT / ".venv" / "urllib3-1.26"
STARTS = 24  # per urllib3 version
STOP_WITHIN = 10.0  # seconds; systemd waits 90 before SIGKILL, the tests' helpers 10


class _SlowPanel(http.server.BaseHTTPRequestHandler):
    """A panel too busy to store anything: it answers the settings and registering at once,
    and every report only after 10-200 ms, with 503 and Retry-After: 0 — so the agent sends its
    buffered samples again and again, and is nearly always in the middle of a request."""

    protocol_version = "HTTP/1.1"
    released = threading.Event()  # set by the teardown: no handler outlives the test
    reports = 0

    def _reply(self, status, body, **headers):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        try:
            self.wfile.write(body)
        except OSError:  # the agent stopped and closed the connection: what it is here for
            pass

    def do_GET(self):
        self._reply(200, b'{"reportInterval": 1}')

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/api/agent/register":
            self._reply(200, b'{"serverId": 1, "registered": true}')
            return
        type(self).reports += 1
        self.released.wait(random.uniform(0.01, 0.2))
        self._reply(503, b'{"error": "busy"}', Retry_After="0")

    def log_message(self, *args):
        pass


@pytest.fixture
def slow_panel():
    _SlowPanel.released.clear()
    _SlowPanel.reports = 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowPanel)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    _SlowPanel.released.set()
    server.shutdown()
    server.server_close()


@pytest.fixture(params=["urllib3-2", "urllib3-1.26"])
def agent_pythonpath(request):
    if request.param == "urllib3-1.26":
        require("urllib3 1.26 in .venv/urllib3-1.26", (LEGACY_URLLIB3 / "urllib3").is_dir(),
                "run `make venv`")
        return {"PYTHONPATH": str(LEGACY_URLLIB3)}
    return {}


def signal_burst(pid, rng):
    """SIGTERM, then up to four more SIGTERMs or SIGINTs 0-2 ms apart: the later ones reach
    the agent while it is still acting on the first."""
    signals = [signal.SIGTERM] + [rng.choice([signal.SIGTERM, signal.SIGINT])
                                  for _ in range(rng.choice([0, 1, 4, 16, 32]))]
    for index, signum in enumerate(signals):
        if index:
            gap = rng.choice([0.0, 0.00002, 0.0001, 0.0005])
            until = time.perf_counter() + gap
            while time.perf_counter() < until:  # busy: time.sleep would round 0.1 ms up
                pass
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            return


@pytest.mark.timeout(400)
def test_a_stop_during_requests_to_a_slow_panel_always_exits_promptly(slow_panel,
                                                                       agent_pythonpath,
                                                                       tmp_path):
    rng = random.Random(os.environ.get("PYTEST_SEED") or None)
    env = dict(agent_env(), PYTHONFAULTHANDLER="1", **agent_pythonpath)
    failures = []
    for start in range(STARTS):
        run_dir = tmp_path / f"run-{start}"
        config = write_agent_config(run_dir, slow_panel, "agent_0123456789ab_" + "A" * 40,
                                    interval=1, timeout=10, enabledCollectors=["cpu"])
        log_path = run_dir / "agent.log"
        with open(log_path, "ab") as log:
            process = subprocess.Popen([sys.executable, str(ROOT / "agent.py"), "--config",
                                        str(config)], env=env, stdout=log,
                                       stderr=subprocess.STDOUT)
        try:
            reports = _SlowPanel.reports
            assert wait_for(lambda: _SlowPanel.reports > reports, 20), log_path.read_text()
            # Varied moments: waiting on the panel, reading its answer, between two requests.
            time.sleep(rng.uniform(0, 0.3))
            signal_burst(process.pid, rng)
            try:
                code = process.wait(timeout=STOP_WITHIN)
            except subprocess.TimeoutExpired:
                code = None
                process.send_signal(signal.SIGABRT)  # faulthandler: where each thread waits
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=5)
        text = log_path.read_text()
        kept = buffered(run_dir / "state")
        collected = text.count("sample buffered")
        if code != 0 or "Traceback" in text or kept < 1 or kept != collected:
            failures.append(f"start {start}: exit code {code} (None: still running after "
                            f"{STOP_WITHIN} s), {kept} buffered of {collected} collected\n"
                            f"{text[-4000:]}")
    assert not failures, f"{len(failures)} of {STARTS} starts:\n" + "\n".join(failures)


class _Hanging(http.server.BaseHTTPRequestHandler):
    """A panel that answers the settings and holds every other request unanswered."""

    protocol_version = "HTTP/1.1"
    held = threading.Event()

    def do_POST(self):
        self.held.wait(30)  # released by the test's teardown

    def log_message(self, *args):
        pass


@pytest.mark.timeout(60)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_during_once_keeps_the_sample_buffered_and_says_so(tmp_path, signum):
    """--once (cron) stopped while its request hangs: the request is cut short, and the run
    ends at once with exit code 1 and the sample buffered for the next run. Before: SIGTERM
    killed it outright and SIGINT raised KeyboardInterrupt inside urllib3 (a traceback, and
    the same held lock as in the test above)."""
    _Hanging.held.clear()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hanging)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config = write_agent_config(tmp_path, f"http://127.0.0.1:{server.server_port}",
                                "agent_0123456789ab_" + "A" * 40, timeout=30,
                                enabledCollectors=["cpu"])
    process = subprocess.Popen([sys.executable, str(ROOT / "agent.py"), "--config", str(config),
                                "--once"], env=agent_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        # The sample is buffered before the first request (registering) goes out.
        assert wait_for(lambda: buffered(tmp_path / "state") == 1, 20)
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=STOP_WITHIN)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)
        _Hanging.held.set()
        server.shutdown()
        server.server_close()
    assert process.returncode == 1, stderr
    assert "Traceback" not in stderr
    assert "stopped by a signal); 1 sample(s) stay buffered" in stderr, stderr
    assert buffered(tmp_path / "state") == 1


HALT_SCRIPT = f"""
import json, sys, threading
sys.path.insert(0, {str(ROOT)!r})
import agent, urllib3

url, pin = sys.argv[1], sys.argv[2] or None
reporter = agent.Reporter(agent.Config(url=url, api_key="agent_x", pin_sha256=pin, timeout=60))
threading.Timer(0.3, reporter.halt).start()  # from another thread, as Agent.stop calls it
cut = reporter.request("GET", "/api/agent/config")
after = reporter.request("GET", "/api/agent/config")  # a new connection, shut once connected
print(json.dumps({{"version": urllib3.__version__, "cut": cut.status, "after": after.status,
                  "error": cut.error}}))
"""


@pytest.mark.timeout(90)
@pytest.mark.parametrize("scheme", ["http", "https"])
def test_halt_cuts_a_held_request_short_over_plain_http_and_tls(scheme, agent_pythonpath,
                                                               tmp_path):
    """Reporter.halt() from another thread ends a request the server holds (60 s request
    timeout) with status 0, and fails the next one at once — over TLS too, where the socket is
    an SSLSocket, with urllib3 2.x and 1.26."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    pin, context = "", None
    if scheme == "https":
        cert, key = self_signed_certificate(tmp_path)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        pin = hashlib.sha256(ssl.PEM_cert_to_DER_cert(cert.read_text())).hexdigest()
    held = []

    def hold():  # reads each request and never answers it
        while True:
            try:
                conn, _ = listener.accept()
                if context is not None:
                    conn = context.wrap_socket(conn, server_side=True)
                conn.recv(65536)
            except OSError:
                if listener.fileno() == -1:
                    return
                continue
            held.append(conn)

    threading.Thread(target=hold, daemon=True).start()
    try:
        result = subprocess.run([sys.executable, "-c", HALT_SCRIPT,
                                 f"{scheme}://127.0.0.1:{port}", pin],
                                env=dict(agent_env(), **agent_pythonpath), capture_output=True,
                                text=True, timeout=30)
    finally:
        listener.close()
        for conn in held:
            conn.close()
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["version"].startswith("1.26." if agent_pythonpath else "2.")
    assert outcome["cut"] == 0 and outcome["after"] == 0, outcome
    assert held, "the request never reached the server"
