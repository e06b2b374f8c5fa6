"""`python -m panel` commands, run as real processes against a real database."""
import os
import subprocess
import sys

from panel import keys, models
from tests.conftest import ROOT


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
