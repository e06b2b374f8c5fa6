"""Many reports at once: group commit stores every acknowledged sample, and the panel serves
from several processes on one port."""
import collections
import concurrent.futures
import datetime
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import psutil

from panel import db, keys, models
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


def counting_database(url, statements):
    """The backend's real database, each statement it runs listed under the thread that ran
    it: SQLite's own trace callback, a psycopg2 cursor that notes what it executes."""
    database = db.open_database(url)

    def note(sql):
        statements[threading.current_thread().name].append(" ".join(sql.split()[:3]).upper())

    if db.is_postgres(database):
        import psycopg2.extensions

        class Cursor(psycopg2.extensions.cursor):
            def execute(self, sql, params=None):
                note(sql if isinstance(sql, str) else sql.decode())
                return super().execute(sql, params)
        database.connect_params["cursor_factory"] = Cursor
    else:
        class Connection(sqlite3.Connection):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                self.set_trace_callback(note)
        database.connect_params["factory"] = Connection
    return database


def test_a_report_in_steady_state_costs_the_batched_insert_and_nothing_else(
        database, backend_url, tmp_path):
    """Issue 11: once every key has been seen, a report runs no SQL of its own — the agent
    row, the key check, the failure limits, the clock and the server's state come from
    memory; the only reads are AgentRows' refresh of every cached row, one query every 2 s
    whatever the number of agents — and its commit is the batched insert, the latest pointer
    and last_seen. No bcrypt. AgentRows' clock is stepped half a second per report, so 40
    reports span 20 s of its time without the test waiting for them."""
    agents = [new_server(f"steady-{index}") for index in range(4)]
    statements = collections.defaultdict(list)
    counting = counting_database(backend_url, statements)
    db.database_proxy.initialize(counting)
    panel = InProcessPanel(backend_url, tmp_path)
    moment = [0.0]
    rows = panel.app.key_verifier.rows = keys.AgentRows(clock=lambda: moment[0])
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0, tzinfo=None)

    def report(server, key, seconds_ago):
        taken = now - datetime.timedelta(seconds=seconds_ago)
        return http_request(panel, "POST", "/api/agent/metrics", headers=bearer(key),
                            json_body=sample(server.id, taken.isoformat() + "Z")).status
    try:
        for server, key in agents:  # first contact: each key's row is read once
            assert report(server, key, 60) == 200
        statements.clear()
        verifier, committer = panel.app.key_verifier, panel.app.committer
        bcrypt_before, batches_before = verifier.bcrypt_checks, committer.batches
        refreshes_before = rows.refreshes
        for turn in range(10):
            for server, key in agents:
                moment[0] += 0.5
                assert report(server, key, 50 - turn) == 200
        refreshes = rows.refreshes - refreshes_before
        commits = committer.batches - batches_before
    finally:
        panel.close()
        getattr(counting, "close_all", counting.close)()
    requests = [sql for thread, run in statements.items() if thread != "mpanel-writer"
                for sql in run]
    # One read per 2 s for all four agents (it was one per agent every 2 s: 40 here).
    # One read per 2 s for all four agents (it was one per agent every 2 s: 40 here), and on
    # PostgreSQL the pool's liveness check of the connection it lends for it.
    reads = [sql for sql in requests if sql != "SELECT 1"]
    assert len(reads) == refreshes and 1 <= refreshes <= 10, requests
    assert all(sql.startswith("SELECT") for sql in requests), requests
    assert len(requests) <= 2 * refreshes, requests
    assert verifier.bcrypt_checks == bcrypt_before
    writer = [sql for sql in statements["mpanel-writer"]
              if not sql.startswith(("BEGIN", "COMMIT", "PRAGMA"))]
    assert commits == 40  # one report at a time here: a commit each
    assert collections.Counter(writer) == {"INSERT INTO SERVER_METRICS": commits,
                                           "INSERT INTO LATEST_SAMPLES": commits,
                                           "UPDATE SERVERS_AGENTS SET": commits}, writer
    db.database_proxy.initialize(database)
    assert models.Metric.select().count() == 44
