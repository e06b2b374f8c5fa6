"""`make run` (`python -m panel run-local`): everything a newcomer needs, on this machine.

Initialises the embedded database, makes sure an admin exists, registers this machine as a
server, then runs the panel under Waitress and a local agent reporting to it until Ctrl-C.
Both run as child processes, exactly as they run in production.
"""
import dataclasses
import datetime
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from . import db, keys, models, operations

ROOT = Path(__file__).resolve().parent.parent
ADMIN_USER = "admin"
LOCAL_INTERVAL = 10  # seconds: live numbers for the newcomer; production default stays 60


def ensure_admin(settings):
    """Create `admin` if no admin exists; returns the password when one was generated."""
    wanted = os.environ.get("MPANEL_ADMIN_PASSWORD")
    if wanted:
        operations.set_admin(ADMIN_USER, wanted, settings.bcrypt_rounds)
        return None
    if models.any_admin():
        return None
    password = secrets.token_urlsafe(12)
    operations.set_admin(ADMIN_USER, password, settings.bcrypt_rounds)
    return password


def ensure_local_server(settings, agent_dir, url):
    """Register this machine and write the local agent's config.json (mode 0600)."""
    config_path = agent_dir / "config.json"
    name = socket.gethostname()[:100] or "this-machine"
    key = None
    if config_path.exists():
        key = json.loads(config_path.read_text())["controlPanel"]["apiKey"]
        agent = models.agent_by_key_id(keys.key_id_of(key) or "")
        if agent is None or not keys.check_secret(key, agent.api_key_hash):
            key = None  # the database was reset since: issue a fresh key
    if key is None:
        if models.server_by_name(name) is None:
            _, key = operations.add_server(name, settings.bcrypt_rounds)
        else:
            key = operations.rotate_key(name, settings.bcrypt_rounds, datetime.timedelta(0), b"")
    config = {
        "controlPanel": {"url": url, "apiKey": key},
        "agent": {"reportInterval": LOCAL_INTERVAL, "hostname": "auto-detect",
                  "stateDir": str(agent_dir / "state")},
        "logging": {"level": "info", "file": ""},
    }
    agent_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(config, handle, indent=2)
    return config_path, name


def wait_for_panel(url, process, timeout=30.0):
    """True once our panel answers /healthz. Asking for /healthz, not just connecting, matters:
    when something else already holds the port, our panel exits, and a bare connect would
    succeed against the other program."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1) as response:
                if json.loads(response.read()).get("database") == "ok":
                    return process.poll() is None
        except (OSError, ValueError):
            time.sleep(0.1)
    return False


def run(settings):
    os.environ.setdefault("MPANEL_REPORT_INTERVAL", str(LOCAL_INTERVAL))
    settings = dataclasses.replace(settings, report_interval=int(os.environ["MPANEL_REPORT_INTERVAL"]))
    data_dir = Path(settings.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    database = db.bind(settings.database_url)
    db.init_schema(database)
    url = f"http://{settings.host}:{settings.port}"
    with database.connection_context():
        password = ensure_admin(settings)
        config_path, name = ensure_local_server(settings, data_dir / "local-agent", url)

    env = dict(os.environ, MPANEL_DATABASE_URL=settings.database_url,
               MPANEL_HOST=settings.host, MPANEL_PORT=str(settings.port))
    panel = subprocess.Popen([sys.executable, "-m", "panel", "serve"], cwd=ROOT, env=env)
    if not wait_for_panel(url, panel):
        print(f"error: the panel did not start on {url} (is the port in use? set MPANEL_PORT)",
              file=sys.stderr)
        panel.terminate()
        return 1
    agent = subprocess.Popen([sys.executable, "-m", "agent", "--config", str(config_path)],
                             cwd=ROOT, env=env)

    print(f"\n  mPanel is running at {url}/  (Ctrl-C stops panel and agent)")
    print(f"  log in as '{ADMIN_USER}'", end="")
    if password:
        print(f" with password: {password}\n  (shown once; set MPANEL_ADMIN_PASSWORD to choose it)")
    else:
        print(" with the password you set (MPANEL_ADMIN_PASSWORD or an earlier run)")
    print(f"  this machine reports as '{name}' every {settings.report_interval} s\n", flush=True)

    stopping = []

    def stop(signum, frame):
        stopping.append(signum)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        while not stopping and panel.poll() is None and agent.poll() is None:
            time.sleep(0.2)
    finally:
        for child in (agent, panel):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in (agent, panel):
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
    return 0 if stopping else 1
