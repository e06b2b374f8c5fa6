"""install/install.sh for real: real bash, real files, real accounts, and the real panel for the
`agent.py --check` step.

Every install goes into a directory tree with `--root`, which creates the agent's user in that
tree's /etc/passwd and /etc/group (never on the host) and never runs systemctl. No systemd runs
in this container, so the `systemctl daemon-reload / enable / restart` steps are not exercised:
`--root` skips them, and a dry run on this host (no /run/systemd/system) shows the cron path. The
unit itself is checked by `systemd-analyze verify` when systemd-analyze is installed (Debian's
systemd package, which this image has; the test skips, with a message, where it is missing:
installing systemd into a container just for its verifier pulls in far more than it checks).

The check runs as the agent's user, which cannot reach the tests' own Python (under /root), so
those tests use `agent_python`: a venv built from the system's python3 with psutil and urllib3
copied from the tests' environment (the installer would take Debian's python3-psutil and
python3-urllib3 on a real server; the tests do not install OS packages into this machine).
"""
import configparser
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest
import urllib3

from panel import models
from tests.conftest import ROOT, agent_env, free_port, new_server, require, wait_for

INSTALL_SH = ROOT / "install" / "install.sh"
AGENT_PY = ROOT / "agent.py"
KEY = "agent_0123456789ab_" + "k" * 40  # well-formed; for installs that skip the check
WRONG_KEY = "agent_0123456789ab_" + "w" * 40
URL = "https://panel.example.com"
NOBODY = 65534
EXEC_START_TAIL = "-m agent --config /etc/mpanel-agent/config.json"


# ===== Helpers ==================================================================================

def make_tree(prefix):
    """A world-traversable folder under /tmp (pytest's own are 0700, and the agent's user must
    reach its config during the check)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


@pytest.fixture
def target():
    """An empty system to install into, with the accounts of a fresh server: root, and a docker
    group (the installer adds the agent's user to it)."""
    path = make_tree("mpanel-root-")
    etc = path / "etc"
    etc.mkdir()
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (etc / "group").write_text("root:x:0:\ndocker:x:998:\n")
    for name, text in (("shadow", "root:*:19000:0:99999:7:::\n"), ("gshadow", "root:*::\n")):
        (etc / name).write_text(text)
        (etc / name).chmod(0o640)
    yield path
    shutil.rmtree(path)


@pytest.fixture(scope="session")
def agent_python():
    """A Python the agent's user can run, with psutil and urllib3: a venv of the system's
    python3 with both packages copied from this environment (no network needed)."""
    system = "/usr/bin/python3"
    require("/usr/bin/python3", os.access(system, os.X_OK),
            "the check runs as the agent's user, who cannot run the tests' Python under /root")
    home = make_tree("mpanel-python-")
    subprocess.run([system, "-m", "venv", "--without-pip", str(home / "venv")], check=True)
    python = home / "venv" / "bin" / "python3"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path("
                           "'purelib'))"], capture_output=True, text=True, check=True).stdout
    for module in (psutil, urllib3):
        shutil.copytree(Path(module.__file__).parent, Path(site.strip()) / module.__name__)
    yield str(python)
    shutil.rmtree(home)


def installer(*args, user=None, cwd="/", env=None):
    """bash install.sh ARGS, as root or (user=) another uid; returns the CompletedProcess."""
    command = ["bash", str(INSTALL_SH), *map(str, args)]
    if user is not None:
        command = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *command]
    return subprocess.run(command, cwd=cwd, env=env or agent_env(), capture_output=True,
                          text=True, timeout=120)


def install(target, *extra, url=URL, key=KEY, python=sys.executable, check=False):
    """A fresh install (or upgrade) into target, with the options most tests want."""
    args = ["--root", target, "--python", python, *extra]
    if url:
        args += ["--url", url]
    if key:
        args += ["--api-key", key]
    if not check:
        args.append("--skip-check")
    result = installer(*args)
    assert KEY not in result.stdout + result.stderr
    return result


def ok(result):
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


def account(target, name):
    """The passwd entry of `name` in target/etc/passwd as a list of fields, or None."""
    for line in (target / "etc" / "passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return fields
    return None


def group_members(target, group):
    for line in (target / "etc" / "group").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == group:
            return [m for m in fields[3].split(",") if m]
    return None


def owner_and_mode(path):
    info = path.stat()
    return info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)


def snapshot(root):
    """Every path under root with its type and mode, owner, and content hash or link target."""
    tree = {}
    for path in [root, *root.rglob("*")]:
        info = path.lstat()
        if stat.S_ISREG(info.st_mode):
            content = hashlib.sha256(path.read_bytes()).hexdigest()
        elif stat.S_ISLNK(info.st_mode):
            content = os.readlink(path)
        else:
            content = None
        tree[str(path.relative_to(root))] = (stat.filemode(info.st_mode), info.st_uid,
                                             info.st_gid, content)
    return tree


def load_unit(path):
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read_string(path.read_text())
    return parser


def cron_line(target):
    lines = (target / "etc/cron.d/mpanel-agent").read_text().splitlines()
    jobs = [line for line in lines if line.startswith("*")]
    assert len(jobs) == 1, lines
    return jobs[0]


def unreachable_url():
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there


# ===== Fresh install ============================================================================

def test_fresh_install_creates_the_user_files_owners_and_modes(target):
    result = ok(install(target, "--interval", "30"))

    user = account(target, "mpanel-agent")
    assert user is not None, (target / "etc/passwd").read_text()
    uid, gid = int(user[2]), int(user[3])
    assert uid != 0 and user[5] == "/nonexistent" and user[6].endswith("nologin")
    assert "mpanel-agent" in group_members(target, "docker")
    assert "docker group" in result.stdout
    with pytest.raises(KeyError):  # the host's own accounts are untouched
        __import__("pwd").getpwnam("mpanel-agent")

    opt = target / "opt/mpanel-agent"
    assert (opt / "agent.py").read_bytes() == AGENT_PY.read_bytes()
    assert owner_and_mode(opt / "agent.py") == (0, 0, 0o644)  # the agent cannot rewrite itself
    assert list((opt / "__pycache__").glob("agent.cpython-*.pyc"))  # what `-m agent` runs

    config = target / "etc/mpanel-agent/config.json"
    assert owner_and_mode(config) == (uid, gid, 0o600)
    assert owner_and_mode(config.parent) == (0, gid, 0o750)
    assert json.loads(config.read_text()) == {
        "controlPanel": {"url": URL, "apiKey": KEY},
        "agent": {"reportInterval": 30, "stateDir": "/var/lib/mpanel-agent"},
        "logging": {"level": "info", "file": "/var/log/mpanel-agent/agent.log"},
    }
    assert owner_and_mode(target / "var/lib/mpanel-agent") == (uid, gid, 0o700)
    assert owner_and_mode(target / "var/log/mpanel-agent") == (uid, gid, 0o750)
    assert "systemctl status mpanel-agent" in result.stdout


def test_unit_runs_the_chosen_python_hardened_with_only_its_own_folders_writable(target):
    ok(install(target, "--user", "monitor"))
    unit_file = target / "etc/systemd/system/mpanel-agent.service"
    assert owner_and_mode(unit_file) == (0, 0, 0o644)
    service = load_unit(unit_file)["Service"]
    assert service["ExecStart"] == f"{sys.executable} {EXEC_START_TAIL}"
    assert service["User"] == service["Group"] == "monitor"
    assert service["WorkingDirectory"] == "/opt/mpanel-agent"
    assert service["Restart"] == "always"
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict",
                       "ProtectHome": "read-only", "PrivateTmp": "yes",
                       "CapabilityBoundingSet": ""}.items():
        assert service[key] == value, key
    assert service["ReadWritePaths"].split() == ["/var/lib/mpanel-agent", "/var/log/mpanel-agent"]
    # Everything but ExecStart/User/Group is the shipped unit, line for line.
    shipped = (ROOT / "install/mpanel-agent.service").read_text().splitlines()
    installed = unit_file.read_text().splitlines()
    assert [line for line in installed if not line.startswith(("ExecStart=", "User=", "Group="))] \
        == [line for line in shipped if not line.startswith(("ExecStart=", "User=", "Group="))]


def test_installed_unit_passes_systemd_analyze_verify(target):
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.skip("systemd-analyze is not installed (Debian's systemd package has it): the "
                    "installed unit's syntax is not verified here")
    ok(install(target))
    unit_file = target / "etc/systemd/system/mpanel-agent.service"
    result = subprocess.run([analyze, "verify", str(unit_file)], capture_output=True, text=True,
                            timeout=60)
    complaints = [line for line in (result.stdout + result.stderr).splitlines()
                  if "mpanel-agent" in line]
    assert result.returncode == 0 and not complaints, result.stdout + result.stderr


def test_tarball_install_takes_url_key_and_settings_from_the_config_beside_it(target, tmp_path):
    bundle = tmp_path / "mpanel-agent"
    bundle.mkdir()
    shutil.copy(INSTALL_SH, bundle / "install.sh")
    (bundle / "agent.py").write_bytes(AGENT_PY.read_bytes() + b"\n# the tarball's copy\n")
    (bundle / "config.json").write_text(json.dumps(
        {"controlPanel": {"url": URL, "apiKey": KEY}, "agent": {"hostname": "db-7"}}))

    result = subprocess.run(["bash", str(bundle / "install.sh"), "--root", str(target),
                             "--python", sys.executable, "--skip-check"], cwd="/",
                            env=agent_env(), capture_output=True, text=True, timeout=120)
    ok(result)
    assert KEY not in result.stdout + result.stderr
    installed = target / "opt/mpanel-agent/agent.py"
    assert installed.read_bytes().endswith(b"# the tarball's copy\n")
    config = json.loads((target / "etc/mpanel-agent/config.json").read_text())
    assert config["controlPanel"] == {"url": URL, "apiKey": KEY}
    assert config["agent"] == {"hostname": "db-7", "reportInterval": 60,
                               "stateDir": "/var/lib/mpanel-agent"}


# ===== The check against the panel ==============================================================

def test_good_key_passes_the_check_and_the_installed_agent_delivers(panel, target, agent_python):
    _, key = new_server("installed-1")
    result = ok(install(target, url=panel.url, key=key, python=agent_python, check=True))
    assert f"ok: {panel.url} accepted the key" in result.stdout
    assert key not in result.stdout + result.stderr

    # The installed agent, run the way the unit runs it: as its user, from its folder.
    user = account(target, "mpanel-agent")
    env = dict(agent_env(), MPANEL_AGENT_STATE_DIR=str(target / "var/lib/mpanel-agent"),
               MPANEL_AGENT_LOG_FILE=str(target / "var/log/mpanel-agent/agent.log"))
    run = subprocess.run(["setpriv", f"--reuid={user[2]}", f"--regid={user[3]}", "--clear-groups",
                          agent_python, "-m", "agent", "--config",
                          str(target / "etc/mpanel-agent/config.json"), "--once"],
                         cwd=target / "opt/mpanel-agent", env=env, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert wait_for(lambda: models.Metric.select().count() == 1, timeout=10)
    assert (target / "var/lib/mpanel-agent/buffer.sqlite3").stat().st_uid == int(user[2])


def test_refused_key_fails_clearly_and_leaves_the_tree_as_it_was(panel, target, agent_python):
    new_server("installed-2")
    before = snapshot(target)
    result = install(target, url=panel.url, key=WRONG_KEY, python=agent_python, check=True)
    assert result.returncode == 1
    assert "API key rejected" in result.stderr
    assert "check failed" in result.stderr
    assert "nothing was installed" in result.stdout
    assert WRONG_KEY not in result.stdout + result.stderr
    assert snapshot(target) == before


def test_unreachable_panel_fails_and_leaves_the_tree_as_it_was(target, agent_python):
    before = snapshot(target)
    url = unreachable_url()
    result = install(target, url=url, python=agent_python, check=True)
    assert result.returncode == 1
    assert f"agent: error: {url}" in result.stderr  # the agent's own reason, passed on
    assert snapshot(target) == before


def test_failed_check_on_upgrade_puts_the_previous_install_back(target, agent_python):
    ok(install(target, "--init", "cron", python=agent_python))
    installed = target / "opt/mpanel-agent/agent.py"
    installed.write_bytes(installed.read_bytes().replace(b'__version__ = "0.2.0"',
                                                         b'__version__ = "0.1.9"'))
    before = snapshot(target)

    result = install(target, url=unreachable_url(), key=WRONG_KEY, python=agent_python,
                     check=True)
    assert result.returncode == 1
    assert "upgrading the mPanel agent 0.1.9 -> 0.2.0" in result.stdout
    assert "previous agent, unit and config are back" in result.stdout
    # The check may open the agent's log (empty here); on a live server the running service
    # writes to it meanwhile, so it is never rolled back.
    after = snapshot(target)
    after.pop("var/log/mpanel-agent/agent.log", None)
    assert after == before


def test_piped_install_downloads_agent_py_from_the_panel(panel, target, agent_python, tmp_path):
    """`curl -fsSL URL/downloads/install.sh | sudo bash -s -- ...`, with no agent.py nearby."""
    _, key = new_server("piped-1")
    result = subprocess.run(["bash", "-s", "--", "--root", str(target), "--url", panel.url,
                             "--api-key", key, "--python", agent_python],
                            input=INSTALL_SH.read_text(), cwd=tmp_path, env=agent_env(),
                            capture_output=True, text=True, timeout=120)
    ok(result)
    assert f"downloading {panel.url}/downloads/agent.py" in result.stdout
    assert (target / "opt/mpanel-agent/agent.py").read_bytes() == AGENT_PY.read_bytes()
    assert (target / "etc/systemd/system/mpanel-agent.service").exists()  # the embedded unit
    assert "accepted the key" in result.stdout


# ===== Cron =====================================================================================

def test_cron_fallback_runs_the_agent_once_a_minute_as_its_user_under_a_lock(target):
    result = ok(install(target, "--init", "cron", "--user", "monitor"))
    assert "no systemd: cron runs the agent once a minute" in result.stdout
    cron_file = target / "etc/cron.d/mpanel-agent"
    assert owner_and_mode(cron_file) == (0, 0, 0o644)  # cron ignores group/world-writable files
    assert not (target / "etc/systemd/system/mpanel-agent.service").exists()
    assert account(target, "monitor") is not None
    assert cron_line(target) == (
        "* * * * * monitor cd /opt/mpanel-agent && flock -n /var/lib/mpanel-agent/cron.lock "
        f"{sys.executable} {EXEC_START_TAIL} --once >/dev/null 2>&1")


def test_switching_from_cron_to_systemd_removes_the_cron_job(target):
    ok(install(target, "--init", "cron"))
    ok(install(target, "--init", "systemd"))
    assert not (target / "etc/cron.d/mpanel-agent").exists()
    assert (target / "etc/systemd/system/mpanel-agent.service").exists()


# ===== Upgrade ==================================================================================

def test_rerun_is_an_upgrade_that_keeps_config_state_and_buffer(target):
    ok(install(target))
    config = target / "etc/mpanel-agent/config.json"
    document = json.loads(config.read_text())
    document["agent"]["hostname"] = "edited-by-hand"
    config.write_text(json.dumps(document, indent=4))
    state_dir = target / "var/lib/mpanel-agent"
    kept = {state_dir / "state.json": b'{"serverId": 7}',
            state_dir / "buffer.sqlite3": os.urandom(4096),
            config: config.read_bytes()}
    for path, content in kept.items():
        path.write_bytes(content)
    installed = target / "opt/mpanel-agent/agent.py"
    installed.write_text('__version__ = "0.1.0"\n')

    result = ok(install(target, url=None, key=None))  # no --url, no --api-key
    assert "upgrading the mPanel agent 0.1.0 -> 0.2.0" in result.stdout
    assert "keeping /etc/mpanel-agent/config.json" in result.stdout
    assert installed.read_bytes() == AGENT_PY.read_bytes()
    for path, content in kept.items():
        assert path.read_bytes() == content, path
    assert owner_and_mode(config)[2] == 0o600

    # Only what is given on the command line changes the kept config.
    result = ok(install(target, "--interval", "15", url=None, key=None))
    assert "updating /etc/mpanel-agent/config.json" in result.stdout
    document = json.loads(config.read_text())
    assert document["agent"]["reportInterval"] == 15
    assert document["agent"]["hostname"] == "edited-by-hand"
    assert document["controlPanel"] == {"url": URL, "apiKey": KEY}


# ===== Uninstall ================================================================================

def test_auto_update_is_written_only_when_asked_and_can_be_turned_off_again(target):
    config = target / "etc/mpanel-agent/config.json"
    ok(install(target))
    assert "autoUpdate" not in json.loads(config.read_text())["agent"]  # off: the default
    ok(install(target, "--auto-update"))
    assert json.loads(config.read_text())["agent"]["autoUpdate"] is True
    ok(install(target, url=None, key=None))  # an upgrade without the option keeps it
    assert json.loads(config.read_text())["agent"]["autoUpdate"] is True
    ok(install(target, "--no-auto-update", url=None, key=None))
    assert json.loads(config.read_text())["agent"]["autoUpdate"] is False


def test_uninstall_removes_service_files_and_user_but_keeps_state_and_logs(target):
    ok(install(target))
    buffer = target / "var/lib/mpanel-agent/buffer.sqlite3"
    buffer.write_bytes(b"samples not yet delivered")

    result = ok(installer("--root", target, "--uninstall"))
    assert not (target / "etc/systemd/system/mpanel-agent.service").exists()
    assert not (target / "opt/mpanel-agent").exists()
    assert not (target / "etc/mpanel-agent").exists()
    assert account(target, "mpanel-agent") is None
    assert group_members(target, "mpanel-agent") is None
    assert "mpanel-agent" not in group_members(target, "docker")
    assert buffer.read_bytes() == b"samples not yet delivered"
    assert (target / "var/log/mpanel-agent").is_dir()
    assert "--purge removes it" in result.stdout


def test_uninstall_with_purge_also_removes_state_and_logs(target):
    ok(install(target, "--init", "cron", "--user", "monitor"))
    ok(installer("--root", target, "--uninstall", "--purge"))  # the user comes from the cron file
    assert not (target / "etc/cron.d/mpanel-agent").exists()
    assert not (target / "var/lib/mpanel-agent").exists()
    assert not (target / "var/log/mpanel-agent").exists()
    assert account(target, "monitor") is None


# ===== Dry run ==================================================================================

def test_dry_run_prints_every_action_and_changes_nothing(target):
    before = snapshot(target)
    result = ok(install(target, "--dry-run"))
    assert snapshot(target) == before
    for action in (f"would: useradd --prefix {target} --system",
                   f"would: usermod --prefix {target} --append --groups docker mpanel-agent",
                   f"would: install -m 0644 -o 0 -g 0 {AGENT_PY} {target}/opt/mpanel-agent/agent.py",
                   "would: write /etc/mpanel-agent/config.json (mode 0600",
                   f"would: install -d -m 0700 -o mpanel-agent -g mpanel-agent "
                   f"{target}/var/lib/mpanel-agent",
                   f"{target}/etc/systemd/system/mpanel-agent.service",
                   f"| ExecStart={sys.executable} {EXEC_START_TAIL}",
                   "dry run: nothing was changed"):
        assert action in result.stdout, action


def test_dry_run_of_an_upgrade_and_of_a_purge_changes_nothing(target):
    ok(install(target))
    (target / "var/lib/mpanel-agent/buffer.sqlite3").write_bytes(b"buffered")
    before = snapshot(target)
    result = ok(install(target, "--dry-run", key=KEY.replace("k", "n")))
    assert "would: write /etc/mpanel-agent/config.json" in result.stdout
    assert KEY.replace("k", "n") not in result.stdout
    result = ok(installer("--root", target, "--uninstall", "--purge", "--dry-run"))
    assert f"would: rm -rf -- {target}/var/lib/mpanel-agent" in result.stdout
    assert f"would: userdel --prefix {target} mpanel-agent" in result.stdout
    assert snapshot(target) == before


def test_dry_run_on_this_host_as_an_ordinary_user_touches_nothing():
    """--dry-run is allowed without root. Without systemd here it shows the cron path."""
    watched = [Path(p) for p in ("/etc/passwd", "/etc/group", "/opt/mpanel-agent",
                                 "/etc/mpanel-agent", "/etc/cron.d/mpanel-agent",
                                 "/etc/systemd/system/mpanel-agent.service",
                                 "/var/lib/mpanel-agent")]
    before = {p: p.exists() and (p.is_dir() or p.read_bytes()) for p in watched}
    result = installer("--dry-run", "--url", URL, "--api-key", KEY, user=NOBODY)
    ok(result)
    assert KEY not in result.stdout + result.stderr
    assert "would: useradd --system" in result.stdout
    assert "/etc/cron.d/mpanel-agent" in result.stdout or \
        "/etc/systemd/system/mpanel-agent.service" in result.stdout
    assert {p: p.exists() and (p.is_dir() or p.read_bytes()) for p in watched} == before


# ===== Refusals =================================================================================

def test_non_root_is_refused_with_exit_code_2(target):
    before = snapshot(target)
    result = installer("--root", target, "--url", URL, "--api-key", KEY, "--skip-check",
                       user=NOBODY)
    assert result.returncode == 2
    assert "must run as root" in result.stderr
    assert "sudo" in result.stderr
    assert snapshot(target) == before


@pytest.mark.parametrize("args, message", [
    ([], "--url is required"),
    (["--url", URL], "--api-key is required"),
    (["--url", URL, "--api-key", "sk_live_123"], "does not look like an mPanel key"),
    (["--url", URL, "--api-key", 'agent_1"; rm -rf /'], "does not look like an mPanel key"),
    (["--url", "panel.example.com", "--api-key", KEY], "--url must start with https://"),
    (["--url", "https://panel example.com", "--api-key", KEY], "--url must start with https://"),
    (["--url", URL, "--api-key", KEY, "--interval", "0"], "--interval must be"),
    (["--url", URL, "--api-key", KEY, "--init", "upstart"], "--init must be"),
    (["--url", URL, "--api-key", KEY, "--user", "Bad User"], "--user must be"),
    (["--url", URL, "--api-key"], "--api-key needs a value"),
    (["--url", URL, "--bogus"], "unknown option --bogus"),
    (["--url", URL, KEY], "unexpected argument #"),
    (["--purge"], "--purge only goes with --uninstall"),
])
def test_bad_arguments_are_refused_with_a_clear_message(target, args, message):
    result = installer("--root", target, "--python", sys.executable, *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert KEY not in result.stdout + result.stderr  # not even a stray one
    assert sorted(p.name for p in target.iterdir()) == ["etc"]


# ===== The key stays secret =====================================================================

# Every external command install.sh may run, to wrap in a shim that records its command line
# and environment.
COMMANDS = ("awk", "cp", "chmod", "chown", "cut", "dirname", "env", "find", "getent", "grep",
            "install", "mkdir", "mktemp", "rm", "sed", "setpriv", "stat", "useradd", "usermod",
            "userdel", "groupdel", "curl", "wget", "flock", "runuser", "id", "cat")


def test_key_is_never_on_a_command_line_or_in_an_environment(target, agent_python):
    """ps shows every process's command line to every user: the key must stay off them. Shims
    in front of every command the installer runs (and of Python) record what they were given."""
    shims = make_tree("mpanel-shims-")
    record = shims / "record"
    record.touch()
    record.chmod(0o666)  # the check runs as the agent's user
    (shims / "bin").mkdir()
    for name, real in [(n, shutil.which(n)) for n in COMMANDS] + [("python3", agent_python)]:
        if real:
            shim = shims / "bin" / name
            shim.write_text(f'#!/bin/sh\n{{ printf "%s " "{name}" "$@"; echo; /usr/bin/env; }} '
                            f'>>{record}\nexec {real} "$@"\n')
            shim.chmod(0o755)
    env = dict(agent_env(), PATH=f"{shims}/bin:{os.environ['PATH']}")
    try:
        for extra in (["--skip-check"], ["--url", unreachable_url()]):  # installs; fails the check
            installer("--root", target, "--python", shims / "bin/python3", "--url", URL,
                      "--api-key", KEY, *extra, env=env)
        recorded = record.read_text()
    finally:
        shutil.rmtree(shims)
    assert "useradd --prefix" in recorded and "-m agent --config" in recorded  # shims ran
    assert "--check" in recorded
    assert KEY not in recorded
