"""The real agent survives what a server's disk, files, clock and network put it through, and
says what it did: a full or read-only state disk (a real tmpfs), a damaged buffer or state
file, a wall-clock step, a panel (or a proxy in front of it) that refuses. The agent runs as a
subprocess against the real panel, or against a real socket server where the panel cannot be
made to answer that way."""
import contextlib
import datetime
import errno
import http.server
import json
import os
import signal
import subprocess
import sys
import threading

import pytest

from panel import models
from tests.conftest import (BASE_TIME, ROOT, CountingProxy, agent_env, free_port, new_server,
                            require, stamp, start_agent, start_panel, stop_panel, stop_process,
                            wait_for, write_agent_config)
from tests.integration.test_delivery import bury_in_buffer, buffered, old_sample, run_once


@pytest.fixture(scope="module")
def fast_panel_process(backend_url, tmp_path_factory):
    """A panel that asks for a report every second, so a test sees several in a few seconds."""
    panel = start_panel(backend_url, tmp_path_factory.mktemp("panel") / "panel.log",
                        {"MPANEL_REPORT_INTERVAL": "1"})
    yield panel
    stop_panel(panel)


@pytest.fixture
def fast_panel(fast_panel_process, database):
    return fast_panel_process


# ===== A real small disk ========================================================================

def mount_tmpfs(mount_point, size="1m", read_only=False):
    mount_point.mkdir(exist_ok=True)
    options = f"size={size},mode=0700" + (",ro" if read_only else "")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount_point)],
                            capture_output=True, text=True)
    require("mounting a tmpfs", result.returncode == 0,
            f"needs root: {result.stderr.strip() or 'mount failed'}")


@pytest.fixture
def small_disk(tmp_path):
    """A real 1 MB tmpfs on tmp_path/disk (mounting needs root), unmounted afterwards."""
    mount_point = tmp_path / "disk"
    mount_tmpfs(mount_point)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(directory, limit_bytes=64 * 1024 * 1024):
    """Write a file until the filesystem says ENOSPC; -> the file."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as handle:
        for _ in range(limit_bytes // 4096):
            try:
                handle.write(b"\0" * 4096)
            except OSError as err:
                assert err.errno == errno.ENOSPC, err
                return filler
    raise AssertionError(f"{directory} did not fill up")


def waiting(state):
    """Samples in the agent's buffer file; 0 before the agent has made it."""
    import sqlite3

    try:
        return buffered(state)
    except sqlite3.OperationalError:  # no file, or no table in it yet
        return 0


def stop(process):
    return stop_process(process, timeout=15)


def new_timestamps():
    return [m.timestamp for m in models.Metric.select() if m.timestamp > BASE_TIME]


def old_timestamps():
    return sorted(m.timestamp for m in models.Metric.select() if m.timestamp < BASE_TIME)


@pytest.mark.timeout(150)
@pytest.mark.parametrize("when", ["full-at-start", "fills-while-running"])
def test_full_disk_keeps_agent_running_and_it_recovers_by_itself(backend_url, database,
                                                                 small_disk, tmp_path, when):
    """Before: push() raised `database or disk is full`, the agent exited, and every restart
    did the same. Now it delivers straight from memory while the disk is full, keeps what the
    old buffer holds, says so once, and goes back to its file when space returns.

    A sample delivered at once never touches the disk: with the disk filled while the agent
    runs, the buffer is needed (and found unwritable) only once the panel is out of reach, so
    the panel (one of the test's own) is stopped meanwhile and started again."""
    panel = start_panel(backend_url, tmp_path / "panel.log", {"MPANEL_REPORT_INTERVAL": "1"})
    _, key = new_server("full-disk")
    state = small_disk / "state"
    config = write_agent_config(tmp_path, panel.url, key, interval=1, retry_max_delay=1,
                                enabledCollectors=["cpu", "memory"], stateDir=str(state))
    bury_in_buffer(state, [old_sample(n) for n in range(3)])
    filler = fill(small_disk) if when == "full-at-start" else None
    log_path = tmp_path / "agent.log"
    process = start_agent(config, log_path, "--log-level", "debug")
    try:
        if filler is None:
            assert wait_for(lambda: len(new_timestamps()) >= 2, 30), log_path.read_text()
            filler = fill(small_disk)
            stop_panel(panel)
        delivered = len(new_timestamps())
        assert wait_for(lambda: "buffer file cannot be written" in log_path.read_text() or
                        process.poll() is not None, 30), log_path.read_text()
        if when == "fills-while-running":  # the panel is stopped: samples wait in memory

            def since_full():
                return log_path.read_text().split("buffer file cannot be written", 1)[1]

            assert wait_for(lambda: since_full().count("sample buffered") >= 3, 20), \
                log_path.read_text()
            assert "id=-" in since_full(), "held in memory (ids below 0)"
            panel = start_panel(backend_url, tmp_path / "panel.log",
                                {"MPANEL_REPORT_INTERVAL": "1"}, port=panel.port)
        assert wait_for(lambda: len(new_timestamps()) >= delivered + 3 or
                        process.poll() is not None, 40)
        assert process.poll() is None, log_path.read_text()
        assert len(new_timestamps()) >= delivered + 3, log_path.read_text()
        assert len(old_timestamps()) == 3, "what the old buffer holds is delivered meanwhile"

        filler.unlink()  # space returns
        assert wait_for(lambda: "buffer file writable again" in log_path.read_text(), 20), \
            log_path.read_text()
        assert wait_for(lambda: buffered(state) == 0, 20), log_path.read_text()
        assert process.poll() is None
    finally:
        code = stop(process)
        stop_panel(panel)
    text = log_path.read_text()
    assert code == 0, text
    assert "Traceback" not in text
    assert text.count("buffer file cannot be written") == 1, text
    # The daemon writes its state when it registers, every 10 minutes and when it stops: in
    # this test, on the full disk only at the start of the full-at-start case.
    assert text.count("state file cannot be written") == (when == "full-at-start"), text
    assert text.count("buffer file writable again") == 1, text
    assert old_timestamps() == [BASE_TIME + datetime.timedelta(minutes=n - 50) for n in range(3)]
    stored = new_timestamps()
    assert len(stored) == len(set(stored)), "a sample was stored twice"


@pytest.mark.timeout(60)
def test_read_only_state_folder_keeps_agent_delivering(fast_panel, tmp_path):
    """A state folder and a log file on a read-only filesystem: no buffer file, state file or
    log file can be written, and the agent still registers, delivers every sample and says why,
    once, on stderr."""
    mount_point = tmp_path / "readonly"
    mount_tmpfs(mount_point, read_only=True)
    try:
        _, key = new_server("read-only")
        config = write_agent_config(tmp_path, fast_panel.url, key, interval=1,
                                    enabledCollectors=["cpu"], stateDir=str(mount_point / "s"))
        document = json.loads(config.read_text())
        document["logging"]["file"] = str(mount_point / "agent.log")
        config.write_text(json.dumps(document))
        log_path = tmp_path / "agent.log"
        process = start_agent(config, log_path)
        try:
            assert wait_for(lambda: len(new_timestamps()) >= 3 or process.poll() is not None, 40)
        finally:
            code = stop(process)
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)
    text = log_path.read_text()
    assert code == 0 and len(new_timestamps()) >= 3, text
    assert "Traceback" not in text and text.count("log file cannot be written") == 1, text
    assert text.count("buffer file cannot be written") == 1, text
    assert text.count("state file cannot be written") == 1, text


# ===== Damaged files ============================================================================

def checkpoint(state):
    import sqlite3

    with sqlite3.connect(state / "buffer.sqlite3") as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def kept_aside(state, name):
    return [p.name for p in state.iterdir() if p.name.startswith(f"{name}.corrupt-")]


def run_once_past_a_damaged_buffer(config, state):
    """`--once` on a damaged buffer: it runs, says once that it moved the file aside, and the
    file is kept for a person to look at."""
    result = run_once(config)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.count("buffer file damaged, moved aside") == 1, result.stderr
    assert kept_aside(state, "buffer.sqlite3")
    return result


def test_random_bytes_in_the_buffer_header_are_set_aside_and_the_agent_starts(panel, tmp_path):
    _, key = new_server("bad-header")
    config = write_agent_config(tmp_path, panel.url, key)
    state = tmp_path / "state"
    bury_in_buffer(state, [old_sample(0)])
    checkpoint(state)
    with open(state / "buffer.sqlite3", "r+b") as handle:
        handle.write(os.urandom(100))
    run_once_past_a_damaged_buffer(config, state)
    assert len(new_timestamps()) == 1 and buffered(state) == 0


def test_a_damaged_page_in_the_buffer_keeps_every_readable_sample(panel, tmp_path):
    """Damage in the middle of the file: the samples on either side of it still reach the
    panel; the damaged file stays for a person to look at."""
    _, key = new_server("bad-page")
    config = write_agent_config(tmp_path, panel.url, key)
    state = tmp_path / "state"
    bury_in_buffer(state, [old_sample(n) for n in range(40)] +
                   [dict(old_sample(n), pad="x" * 2000) for n in range(40, 50)])
    checkpoint(state)
    path = state / "buffer.sqlite3"
    pages = os.path.getsize(path) // 4096
    with open(path, "r+b") as handle:
        handle.seek(4096 * (pages - 4) + 8)
        handle.write(os.urandom(3000))
    result = run_once_past_a_damaged_buffer(config, state)
    replayed = old_timestamps()
    assert 40 <= len(replayed) < 50, result.stderr
    assert buffered(state) == 0


@pytest.mark.parametrize("document", ["[]", "null", "{not json",
                                      '{"serverId": "7", "registeredAs": [], "collectors": 5}',
                                      '{"collectors": {"rates": {"counters": []}, "cpu": 3}}'],
                         ids=["list", "null", "not-json", "wrong-types", "wrong-nested-types"])
def test_a_state_file_of_the_wrong_shape_is_set_aside_and_the_agent_starts(panel, tmp_path,
                                                                           document):
    _, key = new_server("bad-state")
    config = write_agent_config(tmp_path, panel.url, key, enabledCollectors=["cpu", "network"])
    state = tmp_path / "state"
    state.mkdir()
    (state / "state.json").write_text(document)
    result = run_once(config)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "collector failed" not in result.stderr
    assert result.stderr.count("moved aside") == 1, result.stderr
    assert [(state / name).read_text() for name in kept_aside(state, "state.json")] == [document]
    assert isinstance(json.loads((state / "state.json").read_text())["serverId"], int)
    assert len(new_timestamps()) == 1


# ===== Refusals =================================================================================

class _Refusing(http.server.BaseHTTPRequestHandler):
    """What a proxy that refuses plain HTTP (403) or a panel that refuses an odd hostname (422)
    answers to registering: the real panel answers neither on demand."""

    protocol_version = "HTTP/1.1"
    status = 403
    requests = []

    def _reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        type(self).requests.append(("GET", self.path))
        self._reply(200, {"reportInterval": 1, "metricsEnabled": ["cpu"]})

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).requests.append(("POST", self.path))
        self._reply(type(self).status, {"error": "refused", "field": "hostname"})

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def agent_refused_by(handler, tmp_path):
    """The real agent (1 s interval, CPU only) reporting to a local HTTP server whose answers
    `handler` makes; yields the agent's log path, then stops both and checks a clean exit."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config = write_agent_config(tmp_path, f"http://127.0.0.1:{server.server_port}",
                                "agent_0123456789ab_" + "A" * 40, interval=1,
                                enabledCollectors=["cpu"])
    log_path = tmp_path / "agent.log"
    process = start_agent(config, log_path)
    try:
        yield log_path
    finally:
        code = stop(process)
        server.shutdown()
        server.server_close()
    assert code == 0, log_path.read_text()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("status", [403, 422])
def test_a_refused_register_backs_off_and_is_logged_once(tmp_path, status):
    """Before: about 20 registers a second, each with a WARNING. Now one, then the maximum
    delay (the default 300 s here), and one line."""
    _Refusing.status, _Refusing.requests = status, []
    with agent_refused_by(_Refusing, tmp_path) as log_path:
        assert wait_for(lambda: ("POST", "/api/agent/register") in _Refusing.requests, 20)
        # Four collection intervals with the register refused: samples pile up, no requests.
        assert wait_for(lambda: waiting(tmp_path / "state") >= 4, 20)
    text = log_path.read_text()
    registers = _Refusing.requests.count(("POST", "/api/agent/register"))
    assert registers == 1, f"{registers} registers: {_Refusing.requests}"
    assert text.count("panel refused request=register") == 1, text


# ===== Clock steps ==============================================================================

@pytest.mark.timeout(90)
def test_a_wall_clock_step_while_buffering_loses_no_sample(fast_panel, tmp_path):
    """The agent's clock is 2 h slow, the panel is out of reach, samples are buffered; NTP then
    steps the clock 2 h forward. Before: the buffer, aged by the wall clock, dropped every
    sample as older than bufferMaxAge (1 h). Now each is kept, the step is logged once, and all
    are stored once the panel is reachable.

    The step is made through the agent's test hook MPANEL_AGENT_CLOCK_OFFSET_FILE (seconds
    added to its wall clock, re-read at each reading): this machine's own clock cannot be
    stepped, and libfaketime's clock_nanosleep makes Python 3.11's time.sleep fail (EINVAL)."""
    _, key = new_server("clock-step")
    proxy = CountingProxy(free_port())  # leads nowhere until pointed at the panel
    config = write_agent_config(tmp_path, proxy.url, key, interval=1, retry_max_delay=1,
                                enabledCollectors=["cpu"])
    offset_file = tmp_path / "clock-offset"
    offset_file.write_text("-7200")
    log_path = tmp_path / "agent.log"
    env = dict(agent_env(), MPANEL_AGENT_CLOCK_OFFSET_FILE=str(offset_file))
    with open(log_path, "ab") as output:
        process = subprocess.Popen([sys.executable, str(ROOT / "agent.py"), "--config",
                                    str(config), "--log-level", "debug"], env=env,
                                   stdout=output, stderr=subprocess.STDOUT)
    state = tmp_path / "state"
    try:
        assert wait_for(lambda: waiting(state) >= 3, 30), log_path.read_text()
        before = buffered(state)
        taken = log_path.read_text().count("sample buffered")
        offset_file.write_text("0")
        assert wait_for(lambda: log_path.read_text().count("sample buffered") >= taken + 2, 20)
        assert buffered(state) >= before + 2, "buffered samples were dropped after the step"
        proxy.target_port = fast_panel.port
        assert wait_for(lambda: buffered(state) == 0, 30), log_path.read_text()
    finally:
        code = stop(process)
        proxy.close()
    text = log_path.read_text()
    assert code == 0, text
    assert text.count("wall clock stepped seconds=+7200") == 1, text
    assert "buffer full" not in text and "panel refused" not in text, text
    taken = text.count("sample buffered timestamp=")
    stored = [m.timestamp for m in models.Metric.select()]
    assert len(stored) == len(set(stored)) and len(stored) >= taken - 1
    assert min(stored) < BASE_TIME - datetime.timedelta(minutes=30), "the slow clock's too"


# ===== Refused samples ==========================================================================

@pytest.mark.timeout(60)
def test_a_sample_the_panel_can_never_store_is_dropped_once_and_draining_goes_on(panel,
                                                                                  tmp_path):
    """A 422 for one sample deep in a buffer of several batches: one log line, that sample
    dropped, every other one stored, without waiting for a backoff."""
    _, key = new_server("bad-sample")
    config = write_agent_config(tmp_path, panel.url, key, interval=1)
    samples = [dict(old_sample(0), timestamp=stamp(n - 200)) for n in range(70)]
    samples.append(dict(old_sample(0, usage=500.0), timestamp=stamp(-100)))  # in batch 2
    samples += [dict(old_sample(0), timestamp=stamp(n - 99)) for n in range(9)]
    bury_in_buffer(tmp_path / "state", samples)
    log_path = tmp_path / "agent.log"
    process = start_agent(config, log_path)
    try:
        assert wait_for(lambda: len(old_timestamps()) >= 79, 20), log_path.read_text()
        assert wait_for(lambda: buffered(tmp_path / "state") <= 1, 10)
    finally:
        code = stop(process)
    text = log_path.read_text()
    assert code == 0, text
    assert text.count("panel refused a sample, dropping it") == 1, text
    assert f"dropping it timestamp={stamp(-100)}" in text
    assert len(old_timestamps()) == 79


def test_a_server_id_of_another_server_is_registered_again_once(panel, tmp_path):
    """The state file names another server (the key was moved): the panel answers 403, the
    agent registers again, once, and delivers under its own server's id."""
    import types

    import agent

    other, _ = new_server("other")
    mine, key = new_server("mine")
    config = write_agent_config(tmp_path, panel.url, key)
    identity = agent.Agent.identity(types.SimpleNamespace(
        config=agent.load_config(str(config)), state=types.SimpleNamespace(data={})))
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "state.json").write_text(json.dumps(
        {"serverId": other.id, "registeredAs": identity}))
    result = run_once(config)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("registering again") == 1, result.stderr
    agent_row = models.Agent.get(models.Agent.server == mine.id)
    assert [m.agent_id for m in models.Metric.select()] == [agent_row.id]
    assert json.loads((tmp_path / "state" / "state.json").read_text())["serverId"] == mine.id


class _RefusingMetrics(_Refusing):
    """A proxy that lets registering through but refuses every metrics body with 403."""

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).requests.append(("POST", self.path))
        if self.path == "/api/agent/register":
            self._reply(200, {"serverId": 1, "registered": True})
        else:
            self._reply(403, {"error": "plain HTTP refused", "field": "scheme"})


@pytest.mark.timeout(60)
def test_a_403_to_every_report_backs_off_instead_of_registering_in_a_loop(tmp_path):
    """Before: 403 -> register -> 403 -> register ... as fast as the network allows."""
    _RefusingMetrics.requests = []
    with agent_refused_by(_RefusingMetrics, tmp_path) as log_path:
        assert wait_for(lambda: ("POST", "/api/agent/metrics") in _RefusingMetrics.requests, 20)
        assert wait_for(lambda: waiting(tmp_path / "state") >= 4, 20)
    text = log_path.read_text()
    posts = [path for method, path in _RefusingMetrics.requests if method == "POST"]
    assert posts.count("/api/agent/metrics") <= 2 and posts.count("/api/agent/register") <= 2, \
        posts
    assert text.count("panel refused request=metrics status=403") == 1, text


SLOW_COLLECTOR_WRAPPER = f"""
import pathlib, sys, time
sys.path.insert(0, {str(ROOT)!r})
import agent


@agent.collector("slow")
def collect_slow(ctx):
    \"\"\"Takes 2 s (a service probe near its timeout); says when it starts.\"\"\"
    pathlib.Path(sys.argv[-1]).with_name("collecting").touch()
    time.sleep(2)
    return {{"seconds": 2}}


sys.argv.pop()
sys.exit(agent.main())
"""


class _AnswersConfigOnly(http.server.BaseHTTPRequestHandler):
    """A panel that answers GET /api/agent/config and holds every other request unanswered
    (a panel too busy to answer before the agent's 10 s request timeout)."""

    held = threading.Event()

    def do_GET(self):
        body = b'{"reportInterval": 1}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        self.held.wait(30)  # released by the test's teardown

    def log_message(self, *args):
        pass


@pytest.mark.timeout(60)
def test_a_stop_asked_while_collecting_starts_no_request(tmp_path):
    """SIGTERM arrives while a collector runs (not in a request, so nothing to cut short): the
    agent buffers that sample and stops, instead of first sending it to a panel that holds the
    request for the whole request timeout (a shutdown that overran systemd's and the tests'
    wait under load)."""
    _AnswersConfigOnly.held.clear()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _AnswersConfigOnly)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    wrapper = tmp_path / "agent_with_slow.py"
    wrapper.write_text(SLOW_COLLECTOR_WRAPPER)
    config = write_agent_config(tmp_path, f"http://127.0.0.1:{server.server_port}",
                                "agent_0123456789ab_" + "A" * 40, interval=60, timeout=20,
                                enabledCollectors=["cpu", "slow"])
    marker = tmp_path / "collecting"
    log_path = tmp_path / "agent.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen([sys.executable, str(wrapper), "--config", str(config),
                                    str(marker)], env=agent_env(), stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        assert wait_for(marker.exists, 20), log_path.read_text()
        process.send_signal(signal.SIGTERM)
        # The collector's 2 s and a clean exit; never the 20 s of a held request.
        code = process.wait(timeout=10)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
        _AnswersConfigOnly.held.set()
        server.shutdown()
        server.server_close()
    assert code == 0, log_path.read_text()
    assert waiting(tmp_path / "state") == 1  # the sample stays buffered for the next start
