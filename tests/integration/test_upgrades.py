"""Agent upgrades from the panel, for real: agents installed by install/install.sh into
temporary root trees (two with --auto-update, one without), run as real processes from those
trees the way cron or the unit runs them (here as the test's user: the trees' agent users
exist only in the trees' own /etc/passwd); a real panel under Waitress pointed at a copy of
agent.py the test bumps (MPANEL_AGENT_FILE, the setting the product uses), its background jobs
moving the rollout on; rollouts started through the real CLI.

A good version reaches the opted-in agents one wave after the other and each reports it; a
version that exits at start (but passes --version and --check) halts the rollout, and its
agent goes back to the version it ran by itself. The agent that did not opt in never changes.
One backend (SQLite): this proves agent and page behaviour; the rollout SQL runs on both in
test_rollout_storage.py.
"""
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from panel import models
from tests.conftest import (ROOT, agent_env, http_request, start_panel, stop_panel, stop_process,
                            wait_for)
from tests.integration.test_install_sh import installer, make_tree, ok

pytestmark = pytest.mark.parametrize("backend_url", ["sqlite"], indirect=True)

AGENT_PY = ROOT / "agent.py"
RUNNING = re.search(r'^__version__ = "(.+)"$', AGENT_PY.read_text(), re.M).group(1)


def agent_with_version(version, broken=False):
    """agent.py with its version changed; `broken`: it exits at once when run for real, while
    --version and --check still pass (the hardest failure: found only after the switch)."""
    text = AGENT_PY.read_text().replace(f'__version__ = "{RUNNING}"', f'__version__ = "{version}"')
    if broken:
        marker = "    args = build_parser().parse_args(argv)\n"
        assert marker in text
        text = text.replace(marker, marker + "    if not (args.check or args.version):\n"
                                             "        return 3  # broken on purpose\n", 1)
    return text


@pytest.fixture
def upgrade_panel(database, backend_url, tmp_path):
    """A panel of this test's own: a 1 s report interval, jobs every 0.3 s, shipping
    tmp_path/shipped/agent.py (the repository's until the test bumps it)."""
    shipped = tmp_path / "shipped" / "agent.py"
    shipped.parent.mkdir()
    shipped.write_text(AGENT_PY.read_text())
    panel = start_panel(backend_url, tmp_path / "panel.log", {
        "MPANEL_AGENT_FILE": str(shipped), "MPANEL_REPORT_INTERVAL": "1",
        "MPANEL_JOB_INTERVAL": "0.3", "MPANEL_AUTH_FAILURE_LIMIT": "100000"})
    panel.shipped = shipped
    yield panel
    stop_panel(panel)


class Installed:
    """One server: a root tree installed by install.sh, and its agent running from it."""

    def __init__(self, panel, name, auto_update, log_dir):
        from panel import operations

        server, key = operations.add_server(name, 4)
        self.server_id, self.name = server.id, name
        self.root = make_tree(f"mpanel-upgrade-{name}-")
        etc = self.root / "etc"
        etc.mkdir()
        (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
        (etc / "group").write_text("root:x:0:\n")
        for file, text in (("shadow", "root:*:19000:0:99999:7:::\n"), ("gshadow", "root:*::\n")):
            (etc / file).write_text(text)
        ok(installer("--root", self.root, "--python", sys.executable, "--url", panel.url,
                     "--api-key", key, "--interval", "1", "--init", "cron", "--skip-check",
                     *(["--auto-update"] if auto_update else [])))
        self.state = self.root / "var/lib/mpanel-agent"
        self.log = log_dir / f"{name}.log"
        self.process = None

    def start(self):
        env = dict(agent_env(), MPANEL_AGENT_STATE_DIR=str(self.state),
                   MPANEL_AGENT_LOG_FILE=str(self.log))
        # As the unit runs it: the installed file, from its folder.
        self.process = subprocess.Popen(
            [sys.executable, "-m", "agent", "--config",
             str(self.root / "etc/mpanel-agent/config.json")],
            cwd=self.root / "opt/mpanel-agent", env=env, stdout=subprocess.DEVNULL,
            stderr=open(self.log, "ab"))

    def version(self):
        return models.Agent.get(models.Agent.server == self.server_id).agent_version

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            # A copy being watched is the base's child: it must not outlive the test either.
            children = psutil.Process(self.process.pid).children(recursive=True)
            stop_process(self.process, timeout=15)
            for child in children:
                try:
                    child.terminate()
                    child.wait(10)
                except psutil.NoSuchProcess:
                    pass
        shutil.rmtree(self.root, ignore_errors=True)


def rollout_cli(panel, *args):
    env = dict(os.environ, MPANEL_DATABASE_URL=panel.database_url,
               MPANEL_AGENT_FILE=str(panel.shipped))
    return subprocess.run([sys.executable, "-m", "panel", "rollout", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def rollout_state(rollout_id):
    return models.Rollout.get_by_id(rollout_id).state


def results(rollout_id):
    return {row.server_id: row for row in models.RolloutServer.select().where(
        models.RolloutServer.rollout == rollout_id)}


def test_rollout_reaches_opted_in_agents_in_waves_and_a_broken_one_rolls_itself_back(
        upgrade_panel, tmp_path):
    servers = []
    try:
        for name, opted in (("up-a", True), ("up-b", True), ("up-never", False)):
            servers.append(Installed(upgrade_panel, name, opted, tmp_path))
        for server in servers:
            server.start()
        first, second, never = servers
        assert wait_for(lambda: all(s.version() == RUNNING for s in servers), timeout=30)
        flags = {a.server_id: a.auto_update for a in models.Agent.select()}
        assert flags == {first.server_id: True, second.server_id: True, never.server_id: False}

        # A good new version, to all three in waves of one.
        upgrade_panel.shipped.write_text(agent_with_version("9.0.1"))
        started = rollout_cli(upgrade_panel, "start", "--servers", "up-a,up-b,up-never",
                              "--wave-size", "1")
        assert started.returncode == 0, started.stderr
        good = int(re.search(r"rollout (\d+) started", started.stdout).group(1))
        assert wait_for(lambda: rollout_state(good) != "running", timeout=60), \
            [(r.state, r.detail) for r in results(good).values()]
        assert rollout_state(good) == "done"
        rows = results(good)
        assert [rows[s.server_id].state for s in servers] == ["upgraded", "upgraded", "skipped"]
        assert "not opted in" in rows[never.server_id].detail
        # Wave 2 was offered only once wave 1 had upgraded.
        assert rows[second.server_id].offered_at >= rows[first.server_id].finished_at
        assert first.version() == second.version() == "9.0.1"
        assert never.version() == RUNNING
        upgraded = first.state / "upgrade" / "agent.py"
        assert hashlib.sha256(upgraded.read_bytes()).hexdigest() == \
            hashlib.sha256(upgrade_panel.shipped.read_bytes()).hexdigest()
        # The installed file is untouched: the upgrade lives in the agent's state folder.
        assert (first.root / "opt/mpanel-agent/agent.py").read_bytes() == AGENT_PY.read_bytes()

        # A version that passes its checks but exits at start: halted after its first server,
        # which goes back to 9.0.1 by itself; the second is never offered it.
        upgrade_panel.shipped.write_text(agent_with_version("9.0.2", broken=True))
        started = rollout_cli(upgrade_panel, "start", "--servers", "up-a,up-b",
                              "--wave-size", "1")
        assert started.returncode == 0, started.stderr
        bad = int(re.search(r"rollout (\d+) started", started.stdout).group(1))
        assert wait_for(lambda: rollout_state(bad) != "running", timeout=60)
        assert rollout_state(bad) == "halted"
        rows = results(bad)
        failed = rows[first.server_id]
        assert failed.state == "failed" and "exited with 3" in failed.detail, failed.detail
        assert rows[second.server_id].state == "pending"
        assert wait_for(lambda: first.version() == "9.0.1", timeout=30)
        assert first.process.poll() is None  # still reporting, from the restored file
        reported = models.Agent.get(models.Agent.server == first.server_id).last_seen
        assert wait_for(lambda: models.Agent.get(
            models.Agent.server == first.server_id).last_seen > reported, timeout=15)
        assert second.version() == "9.0.1" and never.version() == RUNNING

        # The CLI lists both; the security log has each step.
        listed = rollout_cli(upgrade_panel, "list")
        assert f"rollout {bad} halted" in listed.stdout and f"rollout {good} done" in \
            listed.stdout
        kinds = [e.kind for e in models.AuthEvent.select().order_by(models.AuthEvent.id)]
        for kind in ("rollout_started", "upgrade_offered", "upgrade_done", "upgrade_skipped",
                     "rollout_done", "upgrade_failed", "rollout_halted"):
            assert kind in kinds, kinds
    finally:
        for server in servers:
            server.stop()
