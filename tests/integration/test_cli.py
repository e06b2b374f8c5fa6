"""`python -m panel` commands, run as real processes against a real database."""
import os
import subprocess
import sys

import pytest

from panel import keys, models
from tests.conftest import ROOT, free_port, new_server, wait_for


def cli(database_url, *args, env=None, rounds="4"):
    full_env = dict(os.environ, MPANEL_DATABASE_URL=database_url, **(env or {}))
    if rounds:
        full_env["MPANEL_BCRYPT_ROUNDS"] = rounds
    else:
        full_env.pop("MPANEL_BCRYPT_ROUNDS", None)
    return subprocess.run([sys.executable, "-m", "panel", *args], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def test_add_server_prints_the_key_once_and_stores_only_a_cost_12_bcrypt_hash(database,
                                                                               backend_url):
    result = cli(backend_url, "add-server", "db-1", "--quiet", rounds=None)
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip()
    assert key.startswith("agent_")
    agent = models.Agent.get()
    assert agent.api_key_id == keys.key_id_of(key)
    assert agent.api_key_hash.startswith("$2b$12$")
    assert key not in agent.api_key_hash
    assert keys.check_secret(key, agent.api_key_hash)
    listed = cli(backend_url, "list-servers")
    assert key not in listed.stdout and "db-1" in listed.stdout


def test_add_server_refuses_a_duplicate_name(database, backend_url):
    assert cli(backend_url, "add-server", "twin").returncode == 0
    again = cli(backend_url, "add-server", "twin")
    assert again.returncode == 2 and "already exists" in again.stderr
    assert models.Server.select().count() == 1


@pytest.mark.parametrize("name", ["web\x9b31m", "web\x7f", "\u202eweb", "web\u2028b"])
def test_a_server_name_with_control_or_format_characters_is_refused(database, backend_url, name):
    """C1 controls (0x9b is CSI on many terminals), DEL, a bidi override, a line separator:
    a name is shown in pages, alerts and terminals, and none of these is part of a name."""
    refused = cli(backend_url, "add-server", name)
    assert refused.returncode == 2 and "control or format characters" in refused.stderr
    assert models.Server.select().count() == 0


def test_create_admin_from_environment(database, backend_url):
    result = cli(backend_url, "create-admin", "alice", env={"MPANEL_ADMIN_PASSWORD": "correct horse"})
    assert result.returncode == 0, result.stderr
    admin = models.Admin.get(models.Admin.username == "alice")
    assert keys.check_secret("correct horse", admin.password_hash)
    assert "correct horse" not in result.stdout + result.stderr


def test_create_admin_without_password_or_terminal_says_what_to_do(database, backend_url):
    env = {k: v for k, v in os.environ.items() if k != "MPANEL_ADMIN_PASSWORD"}
    result = subprocess.run([sys.executable, "-m", "panel", "create-admin", "bob"], cwd=ROOT,
                            env=dict(env, MPANEL_DATABASE_URL=backend_url), capture_output=True,
                            text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 2 and "MPANEL_ADMIN_PASSWORD" in result.stderr


def test_short_admin_password_is_refused(database, backend_url):
    result = cli(backend_url, "create-admin", "carol", env={"MPANEL_ADMIN_PASSWORD": "short"})
    assert result.returncode == 2 and "at least 8" in result.stderr


def test_bad_database_url_is_a_clear_error(tmp_path):
    result = cli("mysql://nope/x", "init-db")
    assert result.returncode == 2
    assert "unsupported database URL" in result.stderr and "Traceback" not in result.stderr


def test_unreachable_database_is_a_clear_error_without_the_password():
    from tests.conftest import free_port

    result = cli(f"postgresql://postgres:hunter2@127.0.0.1:{free_port()}/x", "init-db")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "hunter2" not in result.stderr


# ===== Operating: backup, prune, settings file ==================================================

def test_backup_copies_a_live_sqlite_database(tmp_path):
    import sqlite3

    url = f"sqlite:///{tmp_path / 'live.db'}"
    assert cli(url, "add-server", "keep-me").returncode == 0
    result = cli(url, "backup", str(tmp_path / "copy.db"))
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(tmp_path / "copy.db") as copy:
        assert copy.execute("SELECT name FROM servers").fetchall() == [("keep-me",)]
    again = cli(url, "backup", str(tmp_path / "copy.db"))
    assert again.returncode == 2 and "--force" in again.stderr
    assert cli(url, "backup", "--force", str(tmp_path / "copy.db")).returncode == 0


def test_backup_on_postgresql_says_how_to_use_pg_dump(postgresql_url):
    result = cli(postgresql_url, "backup", "x.dump")
    assert result.returncode == 2
    assert "pg_dump --format=custom" in result.stderr
    assert not (ROOT / "x.dump").exists()


def test_prune_drops_what_is_past_retention(database, backend_url):
    import datetime

    from panel import db

    server, _ = new_server("old")
    agent = models.Agent.get(models.Agent.server == server.id)
    now = db.utcnow()
    models.Metric.insert_many([{"agent": agent.id, "timestamp": now - datetime.timedelta(days=d),
                                "cpu_usage": 1.0} for d in (0, 1, 30)]).execute()
    result = cli(backend_url, "prune", env={"MPANEL_RETENTION_RAW_DAYS": "7"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("pruned: ")
    assert models.Metric.select().count() == 2


def test_settings_come_from_a_file_and_the_environment_wins(tmp_path):
    settings_file = tmp_path / "panel.env"
    settings_file.write_text(f"# the panel's settings\n"
                             f"MPANEL_DATABASE_URL=sqlite:///{tmp_path / 'from-file.db'}\n"
                             f"export MPANEL_REPORT_INTERVAL='30'\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPANEL_")}
    result = subprocess.run([sys.executable, "-m", "panel", "--config", str(settings_file),
                             "init-db"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "from-file.db").exists()
    env["MPANEL_DATABASE_URL"] = f"sqlite:///{tmp_path / 'from-env.db'}"
    env["MPANEL_CONFIG"] = str(settings_file)
    result = subprocess.run([sys.executable, "-m", "panel", "init-db"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and (tmp_path / "from-env.db").exists()
    settings_file.write_text("MPANEL_PORT 8080\n")
    broken = subprocess.run([sys.executable, "-m", "panel", "--config", str(settings_file),
                             "init-db"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60)
    assert broken.returncode == 2 and "panel.env:1: expected KEY=value" in broken.stderr
    missing = subprocess.run([sys.executable, "-m", "panel", "--config",
                              str(tmp_path / "nope.env"), "init-db"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "nope.env" in missing.stderr


# Installed in every Python process of a test through PYTHONPATH: one line per opening of the
# settings file, by any process (the CLI, serve and the workers serve starts).
COUNT_OPENINGS = """
import os, sys

_log = os.open({log!r}, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
_watched = os.path.realpath({path!r})

def _count(event, args):
    if event == "open" and isinstance(args[0], (str, os.PathLike)) \\
            and os.path.realpath(os.fspath(args[0])) == _watched:
        os.write(_log, f"{{os.getpid()}}\\n".encode())

sys.addaudithook(_count)
"""


@pytest.mark.parametrize("how", ["--config", "MPANEL_CONFIG", "serve with two workers"])
def test_the_settings_file_is_read_once(tmp_path, how):
    """One reading of the settings file for a whole start: the CLI merged it into the
    environment and from_env read it again, and each worker of serve did both once more."""
    from tests.integration.test_serve import descendants, kill_group, listens_on

    settings_file, openings = tmp_path / "panel.env", tmp_path / "openings.log"
    port = free_port()
    settings_file.write_text(f"MPANEL_DATABASE_URL=sqlite:///{tmp_path / 'panel.db'}\n"
                             f"MPANEL_DATA_DIR={tmp_path}\nMPANEL_PORT={port}\n"
                             "MPANEL_WORKERS=2\nMPANEL_JOB_INTERVAL=0\nMPANEL_THREADS=2\n")
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(COUNT_OPENINGS.format(log=str(openings),
                                                                  path=str(settings_file)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPANEL_")}
    env["PYTHONPATH"] = str(hooks)
    command = [sys.executable, "-m", "panel", "init-db"]
    if how == "--config":
        command[3:3] = ["--config", str(settings_file)]
    else:
        env["MPANEL_CONFIG"] = str(settings_file)
    if how != "serve with two workers":
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 0, result.stderr
        assert (tmp_path / "panel.db").exists()
    else:
        command[-1] = "serve"
        with open(tmp_path / "panel.log", "wb") as log:
            process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        def both_workers_listen():
            children = descendants(process.pid)
            if len(children) > 2:  # workers starting workers: stop it before it spreads
                kill_group(process, grace=0)
                pytest.fail(f"{len(children)} processes under serve for MPANEL_WORKERS=2")
            return len(children) == 2 and all(listens_on(child, port) for child in children)

        try:
            assert wait_for(both_workers_listen, timeout=40), (tmp_path / "panel.log").read_text()
        finally:
            kill_group(process)
    readers = openings.read_text().split()
    assert len(readers) == 1, f"the settings file was opened {len(readers)} times, by {readers}"


def test_listings_show_agent_text_with_control_characters_escaped(database, backend_url):
    """A hostname, server name or alert message holding ANSI and OSC sequences (ESC, BEL), a
    bidi override or a newline reaches the admin's terminal as visible escapes: it can neither
    retitle, recolour or clear the terminal nor fake a row. Rows are written straight to the
    database, as the CLI must be safe for whatever it holds (an agent's register, a page, an
    older release)."""
    from panel.db import utcnow

    server, _ = new_server("plain")
    hostile = "h\x1b]0;owned\x07\x1b[2J\u202eok\nfake 1 row"
    models.Server.update(name="web\x1b[31m").where(models.Server.id == server.id).execute()
    models.Agent.update(hostname=hostile, last_seen=utcnow()) \
        .where(models.Agent.server == server.id).execute()
    models.Alert.create(server=server.id, rule="disk", state="firing", started_at=utcnow(),
                        message="disk /mnt/\x1b]52;c;Y3VybCBldmlsfHNo\x07 is full")
    servers = cli(backend_url, "list-servers")
    alerts = cli(backend_url, "list-alerts")
    for result in (servers, alerts):
        assert result.returncode == 0, result.stderr
        assert not any(ch in result.stdout for ch in "\x1b\x07\u202e")
    assert "h\\x1b]0;owned\\x07\\x1b[2J\\u202eok\\x0afake 1 row" in servers.stdout
    assert "web\\x1b[31m" in servers.stdout
    assert len(servers.stdout.splitlines()) == 2  # the header and one row, no fake one
    assert "disk /mnt/\\x1b]52;c;Y3VybCBldmlsfHNo\\x07 is full" in alerts.stdout
    assert len(alerts.stdout.splitlines()) == 1
