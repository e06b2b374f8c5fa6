"""Many reports at once: group commit stores every acknowledged sample, and the panel serves
from several processes on one port."""
import concurrent.futures
import os
import signal
import subprocess
import sys
import time

import psutil

from panel import models
from tests.conftest import ROOT, bearer, free_port, http_request, new_server, stamp
from tests.integration.test_api import sample
from tests.integration.test_auth import InProcessPanel


def flood(panel, agents, per_agent):
    """Every agent posts `per_agent` distinct samples, all agents at once."""
    def one_agent(agent):
        server_id, key = agent
        return [http_request(panel, "POST", "/api/agent/metrics", headers=bearer(key),
                             json_body=sample(server_id, stamp(minute))).status
                for minute in range(per_agent)]
    with concurrent.futures.ThreadPoolExecutor(len(agents)) as pool:
        return [status for statuses in pool.map(one_agent, agents) for status in statuses]


def test_concurrent_reports_share_commits_and_all_are_stored(database, backend_url, tmp_path):
    panel = InProcessPanel(backend_url, tmp_path)
    try:
        agents = []
        for index in range(16):
            server, key = new_server(f"load-{index}")
            agents.append((server.id, key))
        statuses = flood(panel, agents, per_agent=15)
        committer = panel.app.committer
    finally:
        panel.close()
    assert statuses.count(200) == len(statuses) == 240
    assert models.Metric.select().count() == 240
    assert committer.requests == 240
    assert committer.batches < committer.requests  # commits were shared
    latest = {row.agent_id: row.timestamp for row in models.LatestSample.select()}
    assert len(latest) == 16 and set(latest.values()) == {
        models.Metric.select().order_by(models.Metric.timestamp.desc()).first().timestamp}


def test_serve_with_two_workers_shares_the_port_and_stops_cleanly(database, backend_url,
                                                                   tmp_path):
    port = free_port()
    env = dict(os.environ, MPANEL_DATABASE_URL=backend_url, MPANEL_PORT=str(port),
               MPANEL_DATA_DIR=str(tmp_path), MPANEL_BCRYPT_ROUNDS="4")
    process = subprocess.Popen([sys.executable, "-m", "panel", "serve", "--workers", "2"],
                               cwd=ROOT, env=env)
    try:
        deadline = time.monotonic() + 30
        children = []
        while time.monotonic() < deadline:
            children = psutil.Process(process.pid).children()
            listening = [c for c in children if any(
                conn.laddr.port == port and conn.status == psutil.CONN_LISTEN
                for conn in c.net_connections())]
            if len(listening) == 2:
                break
            time.sleep(0.2)
        assert len(listening) == 2, "both workers listen on the one port"

        import types

        target = types.SimpleNamespace(host="127.0.0.1", port=port)
        agents = []
        for index in range(8):
            server, key = new_server(f"w-{index}")
            agents.append((server.id, key))
        statuses = flood(target, agents, per_agent=10)
        assert statuses.count(200) == 80
        assert models.Metric.select().count() == 80
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
    assert code == 0
    assert not any(child.is_running() and child.status() != psutil.STATUS_ZOMBIE
                   for child in children)


def test_a_failed_commit_answers_503_and_stores_nothing(database, backend_url, tmp_path):
    """The database refuses the write (here: the server's agent row vanished under the
    request, a foreign-key failure): the agent is told to keep its samples and retry."""
    panel = InProcessPanel(backend_url, tmp_path)
    try:
        server, key = new_server("vanishing")
        assert http_request(panel, "POST", "/api/agent/metrics", headers=bearer(key),
                            json_body=sample(server.id, stamp(1))).status == 200  # cached now
        models.Agent.delete().where(models.Agent.server == server.id).execute()
        response = http_request(panel, "POST", "/api/agent/metrics", headers=bearer(key),
                                json_body=sample(server.id, stamp(2)))
        assert response.status == 503 and response.headers["retry-after"] == "30"
        error = response.json()["error"]
        assert "retry" in error and ("PostgreSQL" in error or "SQLite" in error), error
        assert models.Metric.select().count() == 0
        # The writer recovers: the next agent's report is stored.
        other, other_key = new_server("healthy")
        assert http_request(panel, "POST", "/api/agent/metrics", headers=bearer(other_key),
                            json_body=sample(other.id, stamp(3))).status == 200
        assert models.Metric.select().count() == 1
    finally:
        panel.close()
