"""A database in trouble, for real: a scratch database of its own (an SQLite file; on
PostgreSQL a new database and a login role without superuser rights, dropped afterwards), a real
panel on it, then a table really renamed away or dropped, or a privilege really revoked. Every
kind of endpoint then answers 503 with Retry-After and a reason naming the database — never a
500, and a wrong key is 503 (the panel cannot tell), not 401 — /healthz and `migrate --check`
say what does not match, and once the database is repaired the same panel serves again."""
import contextlib
import json
import os
import re
import secrets
import subprocess
import sys
import urllib.parse

import pytest

from panel import SECURITY_HEADERS, db, keys, migrations, operations
from tests.conftest import (DEFAULT_PG_URL, ROOT, TEST_BCRYPT_ROUNDS, _pg_admin_connection,
                            bearer, http_request, new_server, start_panel, stop_panel, wait_for)
from tests.integration.test_api import sample
from tests.integration.test_dashboard import Browser

PASSWORD = "trouble test password"
NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}

AGENT_LOOKUP = ("register", "heartbeat", "config", "metrics", "wrong key", "unknown key")
SESSION = ("login", "dashboard", "dashboard page", "detail", "alerts")

# Each case: the backends it runs on, SQL that breaks and SQL that repairs (run by the
# database's owner), what /healthz's error must say, the requests that must be 503 (every
# other one may work, but is never a 500), and what `migrate --check` must say (exit code,
# text in its output).
BREAKAGES = {
    "agents_and_admins_missing": dict(
        backends=("sqlite", "postgresql"),
        breaking=["ALTER TABLE servers_agents RENAME TO servers_agents_gone",
                  "ALTER TABLE admins RENAME TO admins_gone"],
        repairing=["ALTER TABLE servers_agents_gone RENAME TO servers_agents",
                   "ALTER TABLE admins_gone RENAME TO admins"],
        healthz="table servers_agents is missing", must_fail=AGENT_LOOKUP + SESSION,
        check=(1, "table servers_agents is missing")),
    "latest_samples_dropped": dict(
        backends=("sqlite", "postgresql"),
        breaking=["DROP TABLE latest_samples"],
        # As sql/schema.sql has it; the GRANT only means something on PostgreSQL.
        repairing=["CREATE TABLE latest_samples (agent_id INTEGER PRIMARY KEY REFERENCES "
                   "servers_agents(id) ON DELETE CASCADE, timestamp TIMESTAMP NOT NULL)",
                   "GRANT ALL ON latest_samples TO {role}"],
        healthz="table latest_samples is missing",
        must_fail=("metrics", "dashboard", "dashboard page"),
        check=(1, "table latest_samples is missing")),
    "privileges_revoked": dict(
        backends=("postgresql",),
        breaking=["REVOKE ALL ON servers_agents, admins, admin_sessions FROM {role}"],
        repairing=["GRANT ALL ON servers_agents, admins, admin_sessions TO {role}"],
        healthz="table servers_agents: this role may not", must_fail=AGENT_LOOKUP + SESSION,
        check=(1, "table servers_agents: this role may not")),
    "schema_version_unreadable": dict(
        backends=("postgresql",),
        breaking=["REVOKE ALL ON schema_version FROM {role}"],
        repairing=["GRANT ALL ON schema_version TO {role}"],
        healthz="table schema_version: this role may not", must_fail=(),
        check=(2, "PostgreSQL InsufficientPrivilege")),
    # The database refuses connections and the panel's open ones are cut: a database restart,
    # a failover, max_connections reached.
    "connections_refused": dict(
        backends=("postgresql",),
        breaking=["ALTER DATABASE {database} ALLOW_CONNECTIONS false",
                  "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                  "WHERE datname = {database_name}"],
        repairing=["ALTER DATABASE {database} ALLOW_CONNECTIONS true"],
        healthz="PostgreSQL OperationalError",
        must_fail=AGENT_LOOKUP + SESSION + ("status", "customer status"),
        check=(2, "PostgreSQL OperationalError")),
}
CASES = [(name, backend) for name, case in BREAKAGES.items() for backend in case["backends"]]


@contextlib.contextmanager
def scratch_database(backend, tmp_path):
    """(URL the panel uses, a function running SQL as the database's owner)."""
    if backend == "sqlite":
        import sqlite3

        url = f"sqlite:///{tmp_path / 'trouble.db'}"
        database = db.bind(url)  # bound: migrate() makes PostgreSQL partitions through the proxy
        db.init_schema(database)
        database.close()

        def run_as_owner(statements):
            connection = sqlite3.connect(str(tmp_path / "trouble.db"))
            try:
                for statement in statements:
                    if not statement.startswith("GRANT"):  # SQLite has no roles
                        connection.execute(statement)
                connection.commit()
            finally:
                connection.close()

        yield url, run_as_owner
        return
    base = os.environ.get("MPANEL_TEST_DATABASE_URL") or DEFAULT_PG_URL
    label = f"mpanel_trouble_{os.getpid()}_{secrets.token_hex(3)}"
    admin = _pg_admin_connection(base)
    parts = urllib.parse.urlsplit(base)
    owner_url = urllib.parse.urlunsplit(parts._replace(path=f"/{label}"))
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{label}"')
        cursor.execute(f'CREATE ROLE "{label}" LOGIN NOSUPERUSER')
    owner = None
    try:
        database = db.bind(owner_url)
        db.init_schema(database)
        database.close()
        owner = _pg_admin_connection(owner_url)
        with owner.cursor() as cursor:
            cursor.execute(f'GRANT ALL ON ALL TABLES IN SCHEMA public TO "{label}"')
            cursor.execute(f'GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO "{label}"')
            cursor.execute(f'GRANT CREATE, USAGE ON SCHEMA public TO "{label}"')

        def run_as_owner(statements):
            for statement in statements:
                # Statements about the database itself run from outside it.
                connection = admin if "{database" in statement else owner
                with connection.cursor() as cursor:
                    cursor.execute(statement.format(role=f'"{label}"', database=f'"{label}"',
                                                    database_name=f"'{label}'"))

        host = parts.hostname + (f":{parts.port}" if parts.port else "")
        yield f"postgresql://{label}@{host}/{label}", run_as_owner
    finally:
        if owner is not None:
            owner.close()
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{label}" WITH (FORCE)')
            cursor.execute(f'DROP ROLE IF EXISTS "{label}"')
        admin.close()


def run_cli(url, *args):
    env = dict(os.environ, MPANEL_DATABASE_URL=url)
    return subprocess.run([sys.executable, "-m", "panel", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def assert_database_trouble(response, backend, what):
    assert response.status == 503, (what, response.status, response.text[:300])
    assert int(response.headers["retry-after"]) > 0, what
    assert "database" in response.text, (what, response.text[:300])


def every_endpoint(panel, browser, server, key):
    """(what, response) for one request of every kind."""
    wrong = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    unknown, _ = keys.new_api_key()  # well-formed: its id must be looked up
    register = {"hostname": "web-1", "os": "Linux 6.1", "arch": "x86_64", "version": "0.2.0"}
    heartbeat = {"serverId": server.id, "timestamp": sample(server.id)["timestamp"]}
    login_page = Browser(panel)
    token = re.search(r'name="csrf_token" value="([^"]+)"',
                      login_page.request("GET", "/login").text)
    return [
        ("register", http_request(panel, "POST", "/api/agent/register", headers=bearer(key),
                                  json_body=register)),
        ("heartbeat", http_request(panel, "POST", "/api/agent/heartbeat", headers=bearer(key),
                                   json_body=heartbeat)),
        ("config", http_request(panel, "GET", "/api/agent/config", headers=bearer(key))),
        ("metrics", http_request(panel, "POST", "/api/agent/metrics", headers=bearer(key),
                                 json_body=sample(server.id))),
        ("wrong key", http_request(panel, "GET", "/api/agent/config", headers=bearer(wrong))),
        ("unknown key", http_request(panel, "GET", "/api/agent/config",
                                     headers=bearer(unknown))),
        ("login", login_page.request("POST", "/login", form={
            "csrf_token": token.group(1), "username": "admin", "password": PASSWORD})),
        ("dashboard", browser.request("GET", "/servers")),
        ("dashboard page", browser.request("GET", "/servers", headers={"Accept": "text/html"})),
        ("detail", browser.request("GET", f"/servers/{server.id}")),
        ("alerts", browser.request("GET", "/alerts")),
        ("status", http_request(panel, "GET", "/status")),
        ("customer status", http_request(panel, "GET", "/status/acme")),
        ("prometheus", http_request(panel, "GET", "/metrics")),
        ("healthz", http_request(panel, "GET", "/healthz")),
    ]


@pytest.mark.parametrize("breakage,backend", CASES)
def test_database_trouble_is_a_503_everywhere_and_healthz_and_check_notice(
        breakage, backend, tmp_path, request):
    if backend == "postgresql":
        request.getfixturevalue("postgresql_url")  # skips without PostgreSQL, fails under CI
    case = BREAKAGES[breakage]
    must_fail = case["must_fail"]
    with scratch_database(backend, tmp_path) as (url, run_as_owner):
        db.bind(url)
        server, key = new_server("web-1")
        operations.set_admin("admin", PASSWORD, TEST_BCRYPT_ROUNDS)
        db.database_proxy.close()
        panel = start_panel(url, tmp_path / "panel.log")
        try:
            browser = Browser(panel)
            assert browser.login(password=PASSWORD).status == 303
            run_as_owner(case["breaking"])

            answers = dict(every_endpoint(panel, browser, server, key))
            for what, response in answers.items():
                assert response.status != 500, (what, response.text[:300])
                if response.status == 503:
                    assert_database_trouble(response, backend, what)
                if what not in ("register", "heartbeat", "config", "metrics", "wrong key",
                                "unknown key", "prometheus"):
                    for header in SECURITY_HEADERS:
                        assert header.lower() in response.headers, (what, header)
            healthz = answers["healthz"]
            assert healthz.status == 503 and int(healthz.headers["retry-after"]) > 0
            assert case["healthz"] in healthz.json()["error"], healthz.text
            assert "database" in healthz.json()["error"]
            for what in must_fail:
                assert_database_trouble(answers[what], backend, what)
            if "dashboard" in must_fail:
                assert NAMES[backend] in answers["dashboard"].json()["error"]
                assert "<html" in answers["dashboard page"].text
            if "wrong key" not in must_fail:
                assert answers["wrong key"].status == 401
                assert answers["config"].status == 200

            check = run_cli(url, "migrate", "--check")
            code, says = case["check"]
            assert check.returncode == code and says in check.stdout + check.stderr, \
                check.stdout + check.stderr
            assert "Traceback" not in check.stderr, check.stderr
            # Plain `migrate` (the systemd unit's step before serving) says the same: nothing
            # to apply does not make a broken schema "up to date".
            migrate = run_cli(url, "migrate")
            assert migrate.returncode == code and says in migrate.stdout + migrate.stderr, \
                migrate.stdout + migrate.stderr
            assert "Traceback" not in migrate.stderr, migrate.stderr

            run_as_owner(case["repairing"])
            assert wait_for(lambda: http_request(panel, "GET", "/healthz").status == 200, 10)
            assert http_request(panel, "POST", "/api/agent/metrics", headers=bearer(key),
                                json_body=sample(server.id)).status == 200
            assert run_cli(url, "migrate", "--check").returncode == 0
            log = panel.log_text()
            assert "database error kind=" in log and "database answering again" in log
            assert key not in log and key.split("_", 2)[2] not in log  # nor its secret part
            assert "unhandled error" not in log
        finally:
            stop_panel(panel)
            db.database_proxy.close()


def test_healthz_is_one_query(database):
    """/healthz is polled: the schema check must stay one round trip."""
    statements = []
    original = database.execute_sql

    def counting(sql, params=None, *args, **kwargs):
        statements.append(sql)
        return original(sql, params, *args, **kwargs)

    database.execute_sql = counting
    try:
        assert migrations.schema_problems(database) == []
    finally:
        del database.execute_sql
    assert len(statements) == 1, json.dumps(statements)
