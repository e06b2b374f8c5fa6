"""Agent authentication against the real panel: the verified-key cache, failed attempts logged
and rate-limited per address and key id, rotation with a grace period and the real agent's
zero-touch switch, revocation, and refusal of plain HTTP from the network."""
import datetime
import json
import os
import subprocess
import sys
import threading
import time

import pytest
import waitress.server

from panel import create_app, db, keys, models, settings
from tests.conftest import (ROOT, TEST_BCRYPT_ROUNDS, bearer, free_port, http_request,
                            new_server, stamp, start_agent, start_panel, stop_panel, wait_for,
                            write_agent_config)
from tests.integration.test_api import sample


def post_metrics(panel, key, server_id, headers=None, timestamp=None):
    return http_request(panel, "POST", "/api/agent/metrics",
                        headers={**bearer(key), **(headers or {})},
                        json_body=sample(server_id, timestamp))


# ===== The cache, counted inside a real Waitress ================================================

class InProcessPanel:
    """The panel's WSGI app under real Waitress in a thread of this process, so the test can
    read the app's own counters."""

    def __init__(self, database_url, tmp_path):
        self.port = free_port()
        self.host = "127.0.0.1"
        config = settings.from_env({"MPANEL_DATABASE_URL": database_url,
                                    "MPANEL_DATA_DIR": str(tmp_path),
                                    "MPANEL_BCRYPT_ROUNDS": str(TEST_BCRYPT_ROUNDS)})
        self.app = create_app(config, database=db.database_proxy.obj)
        self.server = waitress.server.create_server(self.app, host=self.host, port=self.port,
                                                    threads=4)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()

    def close(self):
        self.server.close()


def test_steady_requests_do_not_pay_bcrypt(database, backend_url, tmp_path):
    panel = InProcessPanel(backend_url, tmp_path)
    try:
        server, key = new_server("cached")
        for minute in range(20):
            assert post_metrics(panel, key, server.id, timestamp=stamp(minute)).status == 200
        assert panel.app.key_cache.bcrypt_checks == 1
        # Rotated through this process: the very next request is refused (the agent-row and
        # key caches forget at once).
        keys.rotate(models.agent_by_key_id(keys.key_id_of(key)), TEST_BCRYPT_ROUNDS,
                    datetime.timedelta(0), b"s")
        assert post_metrics(panel, key, server.id).status == 401
        server2, key2 = new_server("revoked-here")
        assert post_metrics(panel, key2, server2.id).status == 200
        keys.revoke(models.agent_by_key_id(keys.key_id_of(key2)))
        assert post_metrics(panel, key2, server2.id).status == 401
    finally:
        panel.close()


# ===== Failures: logged, limited ================================================================

@pytest.fixture
def proxied_panel(backend_url, database, tmp_path):
    """A panel that trusts 127.0.0.1 as its reverse proxy, so X-Forwarded-For sets the client
    address — how one test can speak from several addresses."""
    panel = start_panel(backend_url, tmp_path / "panel.log",
                        {"MPANEL_TRUSTED_PROXIES": "127.0.0.1/32"})
    yield panel
    stop_panel(panel)


def from_address(address):
    return {"X-Forwarded-For": address, "X-Forwarded-Proto": "https"}


def test_failed_attempts_are_logged_without_the_secret(proxied_panel):
    server, key = new_server("web")
    forged = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    response = post_metrics(proxied_panel, forged, server.id, from_address("203.0.113.9"))
    assert response.status == 401
    event = models.AuthEvent.get(models.AuthEvent.kind == "bad_key")
    assert event.client_addr == "203.0.113.9"
    assert event.key_id == keys.key_id_of(key) and event.server_id == server.id
    stored = json.dumps([e.__data__ for e in models.AuthEvent.select()], default=str)
    assert forged.split("_", 2)[2] not in stored and key.split("_", 2)[2] not in stored


def test_ten_failures_in_a_minute_bring_429_for_that_address_only(proxied_panel):
    server, key = new_server("web")
    other, other_key = new_server("db")
    wrong = "agent_0123456789ab_" + "W" * 40
    for _ in range(10):
        assert post_metrics(proxied_panel, wrong, server.id,
                            from_address("203.0.113.9")).status == 401
    limited = post_metrics(proxied_panel, key, server.id, from_address("203.0.113.9"))
    assert limited.status == 429
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert limited.json()["field"] == "Authorization"
    # A healthy agent elsewhere is not affected.
    assert post_metrics(proxied_panel, other_key, other.id,
                        from_address("198.51.100.7")).status == 200


def test_an_agent_already_verified_is_not_locked_out_by_its_neighbour(proxied_panel):
    """Behind one NAT: a broken agent fails ten times; its healthy neighbour keeps reporting."""
    server, key = new_server("healthy")
    nat = from_address("192.0.2.44")
    assert post_metrics(proxied_panel, key, server.id, nat,
                        timestamp=stamp(0)).status == 200
    for _ in range(12):
        post_metrics(proxied_panel, "agent_0123456789ab_" + "W" * 40, server.id, nat)
    assert post_metrics(proxied_panel, key, server.id, nat,
                        timestamp=stamp(1)).status == 200


def test_failures_against_one_key_id_limit_that_key_id_from_anywhere(proxied_panel):
    server, key = new_server("target")
    key_id = keys.key_id_of(key)
    for n in range(10):
        guess = f"agent_{key_id}_" + chr(ord("A") + n) * 40
        post_metrics(proxied_panel, guess, server.id, from_address(f"203.0.113.{n + 1}"))
    guess = f"agent_{key_id}_" + "Z" * 40
    assert post_metrics(proxied_panel, guess, server.id,
                        from_address("203.0.113.200")).status == 429


# ===== Rotation and revocation ==================================================================

def panel_cli(panel, *args):
    env = dict(os.environ, MPANEL_DATABASE_URL=panel.database_url,
               MPANEL_BCRYPT_ROUNDS=str(TEST_BCRYPT_ROUNDS),
               MPANEL_DATA_DIR=str(panel.log_path.parent))
    return subprocess.run([sys.executable, "-m", "panel", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def fast_panel(backend_url, database, tmp_path):
    panel = start_panel(backend_url, tmp_path / "panel.log",
                        {"MPANEL_REPORT_INTERVAL": "1", "MPANEL_DATA_DIR": str(tmp_path)})
    yield panel
    stop_panel(panel)


@pytest.mark.timeout(90)
def test_rotation_hands_the_running_agent_its_new_key(fast_panel, tmp_path):
    _, old_key = new_server("rotating")
    config = write_agent_config(tmp_path / "agent", fast_panel.url, old_key, interval=1)
    log_path = tmp_path / "agent.log"
    agent = start_agent(config, log_path)
    try:
        assert wait_for(lambda: models.Metric.select().count() >= 1)
        rotated = panel_cli(fast_panel, "rotate-key", "rotating", "--quiet")
        assert rotated.returncode == 0, rotated.stderr
        new_key = rotated.stdout.strip()
        assert new_key.startswith("agent_") and new_key != old_key
        assert wait_for(lambda: models.Agent.get().key_switched_at is not None), \
            log_path.read_text()
        count = models.Metric.select().count()
        assert wait_for(lambda: models.Metric.select().count() >= count + 2)
    finally:
        agent.terminate()
        agent.wait(timeout=10)
    row = models.Agent.get()
    assert row.prev_key_id is None and row.pending_key_box is None  # old key retired
    state = json.loads((tmp_path / "agent" / "state" / "state.json").read_text())
    assert state["apiKey"] == new_key
    server_id = row.server_id
    assert post_metrics(fast_panel, old_key, server_id).status == 401
    assert models.AuthEvent.select().where(models.AuthEvent.kind == "key_switched").count() == 1
    assert old_key.split("_", 2)[2] not in log_path.read_text()
    assert new_key.split("_", 2)[2] not in log_path.read_text()


def seen_within(seconds, probe):
    """How long until `probe()` holds; fails past `seconds`. A change made by another process
    (here the CLI) reaches a running panel within AgentRows' 2 s."""
    started = time.monotonic()
    while not probe():
        assert time.monotonic() - started < seconds, "not seen in time"
        time.sleep(0.1)
    return time.monotonic() - started


def test_during_the_grace_period_both_keys_work(fast_panel):
    server, old_key = new_server("grace")
    assert post_metrics(fast_panel, old_key, server.id,
                        timestamp=stamp(0)).status == 200
    new_key = panel_cli(fast_panel, "rotate-key", "grace", "--quiet").stdout.strip()
    answers = []

    def handed_over():
        answers.append(post_metrics(fast_panel, old_key, server.id,
                                    timestamp=stamp(len(answers) + 1)))
        return answers[-1].json().get("newApiKey") == new_key

    seen_within(3, handed_over)
    assert all(answer.status == 200 for answer in answers)  # the old key never stopped working
    assert post_metrics(fast_panel, new_key, server.id, timestamp=stamp(50)).status == 200


def test_grace_zero_cuts_the_old_key_off_at_once(fast_panel):
    server, old_key = new_server("abrupt")
    new_key = panel_cli(fast_panel, "rotate-key", "abrupt", "--grace-hours", "0",
                        "--quiet").stdout.strip()
    assert post_metrics(fast_panel, old_key, server.id).status == 401
    assert post_metrics(fast_panel, new_key, server.id).status == 200


def test_an_expired_grace_period_refuses_the_old_key(fast_panel):
    server, old_key = new_server("late")
    panel_cli(fast_panel, "rotate-key", "late", "--quiet")
    models.Agent.update(prev_key_expires_at=db.utcnow() - datetime.timedelta(seconds=1)).execute()
    response = post_metrics(fast_panel, old_key, server.id)
    assert response.status == 401 and "replaced" in response.json()["error"]


def test_revoke_from_the_cli_reaches_a_running_panel_within_seconds(fast_panel):
    server, key = new_server("stolen")
    assert post_metrics(fast_panel, key, server.id,
                        timestamp=stamp(0)).status == 200  # cached now
    result = panel_cli(fast_panel, "revoke", "stolen")
    assert result.returncode == 0, result.stderr
    attempts = []

    def refused():
        attempts.append(post_metrics(fast_panel, key, server.id, timestamp=stamp(len(attempts) + 1)))
        return attempts[-1].status == 401

    seen_within(3, refused)
    assert "revoked" in attempts[-1].json()["error"]
    assert models.Agent.get().status == "revoked"
    new_key = panel_cli(fast_panel, "rotate-key", "stolen", "--quiet").stdout.strip()
    seen_within(3, lambda: post_metrics(fast_panel, new_key, server.id,
                                        timestamp=stamp(40)).status == 200)
    assert post_metrics(fast_panel, key, server.id).status == 401


def test_rotating_an_unknown_server_is_a_clear_error(fast_panel):
    result = panel_cli(fast_panel, "rotate-key", "nope")
    assert result.returncode == 2 and "no server named 'nope'" in result.stderr


# ===== Late samples =============================================================================

def test_replayed_samples_are_marked_late_and_fresh_ones_not(panel):
    server, key = new_server("web")
    old = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=30))
    assert post_metrics(panel, key, server.id, timestamp=old.isoformat()).status == 200
    assert post_metrics(panel, key, server.id).status == 200
    late, fresh = models.Metric.select().order_by(models.Metric.timestamp)
    assert late.late is True and fresh.late is False


# ===== Plain HTTP from the network ==============================================================

@pytest.fixture
def non_loopback_address():
    """A link-local address on a veth interface of our own: traffic to it stays on this
    machine, but the panel sees a client that is not loopback."""
    import shutil

    from tests.conftest import require

    name, address = f"mpd{os.getpid() % 10000}", "169.254.78.1"

    def ip(*args):
        return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)

    can = shutil.which("ip") and os.geteuid() == 0 and \
        ip("link", "add", name, "type", "veth", "peer", "name", name + "p").returncode == 0
    require("a veth interface", can, "needs root and iproute2 (.ci/run installs it)")
    try:
        assert ip("addr", "add", f"{address}/32", "dev", name).returncode == 0
        assert ip("link", "set", name, "up").returncode == 0
        assert ip("link", "set", name + "p", "up").returncode == 0
        yield address
    finally:
        ip("link", "del", name)


def test_plain_http_from_the_network_is_refused(backend_url, database, tmp_path,
                                                non_loopback_address):
    panel = start_panel(backend_url, tmp_path / "panel.log",
                        {"MPANEL_HOST": non_loopback_address,
                         "MPANEL_TRUSTED_PROXIES": non_loopback_address})
    try:
        server, key = new_server("remote")
        refused = post_metrics(panel, key, server.id)
        assert refused.status == 403 and refused.json()["field"] == "scheme"
        assert "HTTPS" in refused.json()["error"]
        # The same request through the trusted proxy that terminated TLS is fine.
        proxied = post_metrics(panel, key, server.id, {"X-Forwarded-Proto": "https"})
        assert proxied.status == 200
        assert models.Metric.select().count() == 1
    finally:
        stop_panel(panel)


def test_plain_http_can_be_allowed_explicitly(backend_url, database, tmp_path,
                                              non_loopback_address):
    panel = start_panel(backend_url, tmp_path / "panel.log",
                        {"MPANEL_HOST": non_loopback_address, "MPANEL_ALLOW_HTTP": "1"})
    try:
        server, key = new_server("lan")
        assert post_metrics(panel, key, server.id).status == 200
        forged = post_metrics(panel, key, server.id, {"X-Forwarded-For": "10.9.9.9"},
                              timestamp=stamp(0))
        assert forged.status == 200
        # Not a trusted proxy: its X-Forwarded-For is not believed.
        assert models.Agent.get().ip_address != "10.9.9.9"
    finally:
        stop_panel(panel)
