"""How the real agent behaves when the real panel refuses: a rejected key backs off instead of
hammering; a sample the panel refuses is dropped alone while the rest get through; a batch too
large is split; a wrong URL keeps the samples. One stand-in, for 503 + Retry-After, which the
panel has no way to produce on demand."""
import datetime
import http.server
import json
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from panel import models
from tests.conftest import (BASE_TIME, ROOT, CountingProxy, agent_env, new_server, stamp,
                            start_agent, start_panel, stop_panel, stop_process, wait_for,
                            write_agent_config)


def run_once(config, timeout=60):
    return subprocess.run([sys.executable, str(ROOT / "agent.py"), "--config", str(config),
                           "--once", "--log-level", "debug"], env=agent_env(),
                          capture_output=True, text=True, timeout=timeout)


def bury_in_buffer(state_dir, samples):
    """Put samples in the agent's buffer as an earlier outage would have left them."""
    import agent

    buffer = agent.SpillBuffer(str(state_dir / "buffer.sqlite3"))
    for sample in samples:
        buffer.push(sample)
    buffer.close()


def old_sample(minute, usage=5.0, padding=0):
    """A sample from the hour before the suite started, as an outage leaves them."""
    sample = {"timestamp": stamp(minute - 50), "metrics": {"cpu": {"usage": usage}}}
    if padding:
        sample["metrics"]["filler"] = "x" * padding  # unknown to the panel: ignored, not stored
    return sample


def buffered(state_dir):
    """Samples in the agent's buffer; 0 before the agent has made it (read-only: never creates
    it under a running agent)."""
    path = state_dir / "buffer.sqlite3"
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            return db.execute("SELECT count(*) FROM samples").fetchone()[0]
    except sqlite3.OperationalError:  # made, but its table not yet
        return 0


@pytest.mark.timeout(60)
def test_rejected_key_is_logged_once_and_backs_off_instead_of_hammering(panel, tmp_path):
    new_server("web")
    proxy = CountingProxy(panel.port)
    config = write_agent_config(tmp_path, proxy.url, "agent_0123456789ab_" + "A" * 40,
                                interval=1)
    log_path = tmp_path / "agent.log"
    process = start_agent(config, log_path)
    try:
        # Four collections at 1 s: the period over which the agent must not hammer.
        assert wait_for(lambda: buffered(tmp_path / "state") >= 4, timeout=30), \
            log_path.read_text()
    finally:
        stop_process(process)
        proxy.close()
    text = log_path.read_text()
    assert text.count("API key rejected") == 1, text
    assert proxy.requests <= 3, f"{proxy.requests} requests in 4 collections with a rejected key"
    assert buffered(tmp_path / "state") >= 4  # collection went on; nothing was thrown away


def test_a_refused_sample_is_dropped_alone_and_the_rest_stored(panel, tmp_path):
    _, key = new_server("web")
    config = write_agent_config(tmp_path, panel.url, key)
    bury_in_buffer(tmp_path / "state", [old_sample(0), old_sample(1, usage=500.0),
                                        old_sample(2), old_sample(3)])
    result = run_once(config)
    assert result.returncode == 0, result.stderr
    assert f"panel refused a sample, dropping it timestamp={stamp(-49)}" in result.stderr
    replayed = sorted(m.timestamp for m in models.Metric.select() if m.timestamp < BASE_TIME)
    assert replayed == [BASE_TIME + datetime.timedelta(minutes=n) for n in (-50, -48, -47)]
    assert buffered(tmp_path / "state") == 0


@pytest.mark.timeout(120)
def test_a_batch_too_large_for_the_panel_is_split(backend_url, database, tmp_path):
    panel = start_panel(backend_url, tmp_path / "panel.log", {"MPANEL_MAX_BODY_BYTES": "40000"})
    try:
        _, key = new_server("web")
        config = write_agent_config(tmp_path, panel.url, key)
        bury_in_buffer(tmp_path / "state", [old_sample(n, padding=3000) for n in range(30)])
        result = run_once(config)
        assert result.returncode == 0, result.stderr
        assert models.Metric.select().count() == 31  # 30 replayed + this run's own
        assert buffered(tmp_path / "state") == 0
    finally:
        stop_panel(panel)


def test_a_wrong_panel_url_keeps_every_sample(panel, tmp_path):
    _, key = new_server("web")
    config = write_agent_config(tmp_path, panel.url + "/not-the-panel", key)
    bury_in_buffer(tmp_path / "state", [old_sample(0)])
    result = run_once(config)
    assert result.returncode == 1
    assert "stay buffered" in result.stderr
    assert buffered(tmp_path / "state") == 2


class _Unavailable(http.server.BaseHTTPRequestHandler):
    """Stand-in for a panel in maintenance: 503 with Retry-After, then 200 — the real panel
    has no way to answer 503 on demand."""

    protocol_version = "HTTP/1.1"
    answers = []
    times = []

    def _reply(self, status, body, headers=()):
        data = json.dumps(body).encode()
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._reply(200, {"reportInterval": 1, "metricsEnabled": ["cpu"]})

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/api/agent/register":
            self._reply(200, {"serverId": 1, "registered": True})
            return
        type(self).times.append(time.monotonic())
        if len(type(self).times) == 1:
            self._reply(503, {"error": "maintenance"}, [("Retry-After", "3")])
        else:
            self._reply(200, {"received": True, "stored": 1, "duplicates": 0,
                              "nextReportIn": 1})

    def log_message(self, *args):
        pass


@pytest.mark.timeout(60)
def test_retry_after_is_honoured(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Unavailable)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Unavailable.times = []
    config = write_agent_config(tmp_path, f"http://127.0.0.1:{server.server_port}",
                                "agent_0123456789ab_" + "A" * 40, interval=1, retry_max_delay=1,
                                enabledCollectors=["cpu"])
    process = start_agent(config)
    try:
        wait_for(lambda: len(_Unavailable.times) >= 2, timeout=20)
    finally:
        stop_process(process)
        server.shutdown()
    assert len(_Unavailable.times) >= 2
    gap = _Unavailable.times[1] - _Unavailable.times[0]
    assert gap >= 2.9, f"retried after {gap:.2f} s despite Retry-After: 3"


def test_the_agent_sends_no_header_the_panel_does_not_read(panel, tmp_path):
    """The 2 KB a minute budget (docs/benchmarks.md, issue 12): no `Accept-Encoding: identity`
    from http.client, while the body is still gzipped and stored."""
    _, key = new_server()
    proxy = CountingProxy(panel.port, keep_sent=True)
    try:
        config = write_agent_config(tmp_path, proxy.url, key)
        done = subprocess.run([sys.executable, str(ROOT / "agent.py"), "--config", str(config),
                               "--once"], env=agent_env(), capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        assert wait_for(lambda: b"/api/agent/metrics" in proxy.sent)
        heads = [part.split(b"\r\n\r\n")[0] for part in bytes(proxy.sent).split(b"POST ")[1:]]
        metrics = next(head for head in heads if head.startswith(b"/api/agent/metrics"))
        assert b"Content-Encoding: gzip" in metrics
        assert b"accept-encoding" not in metrics.lower()
        assert models.Metric.select().count() == 1
    finally:
        proxy.close()


@pytest.mark.timeout(60)
def test_the_daemon_writes_nothing_to_disk_for_a_sample_the_panel_takes(backend_url, database,
                                                                        tmp_path):
    """Delivered at once, a sample touches neither the buffer nor the state file (the state is
    written at registration, every 10 minutes and at the stop)."""
    panel = start_panel(backend_url, tmp_path / "panel.log", {"MPANEL_REPORT_INTERVAL": "1"})
    state = tmp_path / "state"
    agent = None
    try:
        _, key = new_server("quiet-disk")
        config = write_agent_config(tmp_path, panel.url, key, interval=1,
                                    enabledCollectors=["cpu", "memory"])
        agent = start_agent(config, tmp_path / "agent.log")
        assert wait_for(lambda: models.Metric.select().count() >= 2, 30)

        def stamps():
            return {path.name: (path.stat().st_mtime_ns, path.stat().st_size)
                    for path in state.iterdir()}

        before = stamps()
        count = models.Metric.select().count()
        assert wait_for(lambda: models.Metric.select().count() >= count + 4, 30)
        assert stamps() == before, "a delivered sample was written to disk"
        assert buffered(state) == 0
        assert stop_process(agent) == 0
        assert stamps()["state.json"] != before["state.json"], "the stop saves the state"
        assert json.loads((state / "state.json").read_text())["collectors"]["cpu"]
    finally:
        if agent is not None and agent.poll() is None:
            stop_process(agent)
        stop_panel(panel)
