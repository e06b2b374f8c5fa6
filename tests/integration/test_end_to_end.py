"""The whole path, for real: the panel CLI creates a server and key, the real agent.py runs as a
subprocess against the real panel under Waitress, and the stored row is checked against this
machine — on SQLite and on PostgreSQL."""
import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

import agent as agent_module
from panel import models, protocol
from panel.validation import validate
from tests.conftest import ROOT, TEST_BCRYPT_ROUNDS, wait_for


def panel_cli(panel, *args, env=None):
    full_env = dict(os.environ, MPANEL_DATABASE_URL=panel.database_url,
                    MPANEL_BCRYPT_ROUNDS=str(TEST_BCRYPT_ROUNDS), **(env or {}))
    return subprocess.run([sys.executable, "-m", "panel", *args], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=60)


def run_agent(panel, key, state_dir, *args, timeout=60):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPANEL_")}
    return subprocess.run(
        [sys.executable, str(ROOT / "agent.py"), "--url", panel.url, "--api-key", key,
         "--state-dir", str(state_dir), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def add_server(panel, name):
    result = panel_cli(panel, "add-server", name)
    assert result.returncode == 0, result.stderr
    key = result.stdout.split("shown once, store it now): ")[1].strip()
    return key


def test_agent_once_stores_this_machines_sample(panel, tmp_path):
    key = add_server(panel, "this-machine")
    result = run_agent(panel, key, tmp_path, "--once")
    assert result.returncode == 0, result.stderr

    agent = models.Agent.get()
    assert agent.hostname and agent.agent_version == agent_module.__version__
    assert agent.status == "active"
    row = models.Metric.get()
    assert row.agent_id == agent.id
    assert row.memory_total == psutil.virtual_memory().total
    assert 0 <= row.cpu_usage <= 100
    assert row.cpu_load_1min is not None
    assert len(row.disks) >= 1 and row.disk_total > 0
    assert len(row.interfaces) >= 1
    assert row.process_count > 10 and len(row.processes["topMemory"]) == 5
    mounts = {d["mountpoint"] for d in row.disks}
    assert "/" in mounts or any(p.mountpoint in mounts for p in psutil.disk_partitions())
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["serverId"] == agent.server_id


def test_second_once_run_reuses_registration_and_adds_a_sample(panel, tmp_path):
    key = add_server(panel, "cron-box")
    assert run_agent(panel, key, tmp_path, "--once").returncode == 0
    # Timestamps are per second: the next second makes a new sample.
    first_second = int(time.time())
    assert wait_for(lambda: int(time.time()) > first_second, timeout=5, step=0.02)
    assert run_agent(panel, key, tmp_path, "--once").returncode == 0
    assert models.Metric.select().count() == 2
    values = [m.cpu_usage for m in models.Metric.select()]
    assert all(0 <= v <= 100 for v in values)


def test_agent_once_with_a_wrong_key_fails_clearly(panel, tmp_path):
    add_server(panel, "web")
    result = run_agent(panel, "agent_0123456789ab_" + "x" * 40, tmp_path, "--once")
    assert result.returncode == 1
    assert "API key rejected" in result.stderr
    assert models.Metric.select().count() == 0


def test_agent_check_accepts_a_good_key_and_refuses_a_bad_one(panel, tmp_path):
    key = add_server(panel, "checked")
    good = run_agent(panel, key, tmp_path, "--check")
    assert good.returncode == 0 and "accepted the key" in good.stdout
    bad = run_agent(panel, key[:-3] + "zzz", tmp_path, "--check")
    assert bad.returncode == 1 and "API key rejected" in bad.stderr


def test_agent_check_reports_an_unreachable_panel(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPANEL_")}
    from tests.conftest import free_port

    result = subprocess.run(
        [sys.executable, str(ROOT / "agent.py"), "--url", f"http://127.0.0.1:{free_port()}",
         "--api-key", "agent_0123456789ab_" + "x" * 40, "--state-dir", str(tmp_path), "--check"],
        env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "error:" in result.stderr and "Traceback" not in result.stderr


def test_agent_print_sends_nothing_and_prints_a_valid_payload(panel, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPANEL_")}
    result = subprocess.run([sys.executable, str(ROOT / "agent.py"), "--print",
                             "--state-dir", str(tmp_path)], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    payload["serverId"] = 1
    validate(protocol.METRICS_BODY, payload)
    assert "agent_" not in result.stdout
    assert models.Metric.select().count() == 0


def test_agent_refuses_plain_http_to_a_remote_panel(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPANEL_")}
    result = subprocess.run(
        [sys.executable, str(ROOT / "agent.py"), "--url", "http://panel.example.com",
         "--api-key", "agent_0123456789ab_" + "x" * 40, "--state-dir", str(tmp_path), "--once"],
        env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "clear text" in result.stderr


def test_running_agent_reports_then_stops_cleanly_on_sigterm(panel, tmp_path):
    key = add_server(panel, "daemon")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({
        "controlPanel": {"url": panel.url, "apiKey": key},
        "agent": {"reportInterval": 5, "stateDir": str(tmp_path / "state")},
        "logging": {"level": "info", "file": str(tmp_path / "agent.log")},
    }))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPANEL_")}
    process = subprocess.Popen([sys.executable, str(ROOT / "agent.py"), "--config", str(config)],
                               env=env)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and models.Metric.select().count() == 0:
            time.sleep(0.2)
        assert models.Metric.select().count() >= 1
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
    log_text = (tmp_path / "agent.log").read_text()
    assert "registered" in log_text and "agent stopped" in log_text
    assert key.split("_", 2)[2] not in log_text


@pytest.mark.parametrize("name", ["<img src=x onerror=alert(1)>"])
def test_cli_list_servers_shows_the_new_server(panel, name):
    add_server(panel, name)
    result = panel_cli(panel, "list-servers")
    assert result.returncode == 0 and name in result.stdout and "never seen" in result.stdout
