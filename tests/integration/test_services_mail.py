"""The mail queue, watched processes and systemd collectors against real parts on this machine.

Postfix is Debian's package (.ci/run installs it, "Local only"), run as an instance of our own:
its own config_directory and queue_directory in a temporary folder, smtpd on a free loopback
port, and every message relayed to a closed loopback port, so mail to an unroutable domain is
deferred for real. Exim conflicts with Postfix as a Debian package, so .ci/exim unpacks
Debian's exim4-daemon-light beside it (dpkg -x) and the test runs that binary with its own
config and spool. Both need root (Postfix's master, Exim's spool owner), as CI has. systemd
cannot run as PID 1 here (no /run/systemd/system): the systemd collector is absent here, which
the test checks, and its parsers are tested on systemctl output in tests/unit.
"""
import json
import os
import shutil
import smtplib
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import agent
from panel import models
from tests.conftest import (ROOT, agent_env, free_port, new_server, require, stop_process,
                            wait_for, wait_for_port, write_agent_config)

POSTFIX_DAEMONS = "/usr/lib/postfix/sbin"
EXIM_ROOT = Path(os.environ.get("MPANEL_EXIM_ROOT", "/var/cache/mpanel-ci/exim")) / "root"

# Every daemon on `n` (no chroot): the instance needs no copy of /etc in its queue folder.
MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
local     unix  - n n - - local
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


def context(**services):
    return agent.CollectorContext(services=services)


@pytest.fixture(scope="module")
def daemon_folder():
    """A folder the mail daemons' own users may enter (pytest's lives under a root-only one)."""
    folder = Path(tempfile.mkdtemp(prefix="mpanel-mail-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


# ----- Postfix ----------------------------------------------------------------------------------

class PostfixInstance:
    """Debian's Postfix with its own config and queue under `folder`, master in the foreground
    (a child of the test, stopped by it)."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.conf = self.folder / "conf"
        self.queue = self.folder / "queue"
        self.port = free_port()
        self.process = None

    def start(self):
        self.conf.mkdir(parents=True)
        self.queue.mkdir()
        (self.folder / "data").mkdir()
        shutil.chown(self.folder / "data", "postfix")
        (self.conf / "main.cf").write_text(f"""\
compatibility_level = 3.6
queue_directory = {self.queue}
data_directory = {self.folder}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = test.invalid
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
relayhost = [127.0.0.1]:{free_port()}
maillog_file = {self.folder}/maillog
maillog_file_prefixes = {self.folder}
""")
        (self.conf / "master.cf").write_text(MASTER_CF.format(port=self.port))
        # `postfix check` makes the queue folders with their owners and modes.
        self.postfix("check")
        self.process = subprocess.Popen(
            [f"{POSTFIX_DAEMONS}/master", "-d", "-c", str(self.conf)],
            env=dict(os.environ, MAIL_CONFIG=str(self.conf)), start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_for_port(self.port, self.process)
        return self

    def postfix(self, *args, program="postfix"):
        done = subprocess.run([program, "-c", str(self.conf), *args], capture_output=True,
                              text=True, timeout=30)
        assert done.returncode == 0, (done.stdout, done.stderr, self.log())
        return done.stdout

    def log(self):
        path = self.folder / "maillog"
        return path.read_text(errors="replace") if path.exists() else ""

    def send(self, count):
        with smtplib.SMTP("127.0.0.1", self.port, timeout=10) as client:
            for index in range(count):
                client.sendmail("agent-test@test.invalid", [f"user{index}@nowhere.invalid"],
                                f"Subject: test {index}\r\n\r\nhello\r\n")

    def queue_ids(self, queue):
        return sorted(p.name for p in (self.queue / queue).rglob("*") if p.is_file())

    def stop(self):
        if self.process is not None:
            stop_process(self.process)


def require_postfix():
    binary = shutil.which("postfix") or shutil.which("postfix", path="/usr/sbin")
    require("Postfix", binary and os.path.exists(f"{POSTFIX_DAEMONS}/master"),
            "install Debian's postfix package (.ci/run does)")
    require("root", os.geteuid() == 0, "Postfix's master daemon runs as root")


@pytest.fixture(scope="module")
def postfix_deferred(daemon_folder):
    """A Postfix instance with three messages deferred for real (the relay refuses them)."""
    require_postfix()
    instance = PostfixInstance(daemon_folder / "postfix")
    try:
        instance.start()
        instance.send(3)
        assert wait_for(lambda: len(instance.queue_ids("deferred")) == 3, timeout=60), \
            instance.log()
        yield instance
    finally:
        instance.stop()


def test_postfix_deferred_mail_is_counted_with_its_age(postfix_deferred):
    settings = {"postfixQueue": str(postfix_deferred.queue)}
    result = agent.collect_mailqueue(context(mailqueue=settings))
    assert result["mta"] == "postfix"
    assert result["deferred"] == 3 and result["total"] == 3
    assert result["active"] == result["hold"] == result["incoming"] == result["maildrop"] == 0
    assert "truncated" not in result
    # Postfix sets a deferred file's mtime to its next attempt, minutes ahead: an age from
    # mtimes would stay 0. The arrival record makes it grow from the first second.
    assert wait_for(lambda: agent.collect_mailqueue(
        context(mailqueue=settings))["oldestAge"] >= 1, timeout=15)
    assert "deferred, delay" not in json.dumps(result)


def test_postfix_hold_queue_is_counted(postfix_deferred):
    held = postfix_deferred.queue_ids("deferred")[0]
    postfix_deferred.postfix("-h", held, program="postsuper")
    try:
        result = agent.collect_mailqueue(
            context(mailqueue={"postfixQueue": str(postfix_deferred.queue)}))
        assert (result["hold"], result["deferred"], result["total"]) == (1, 2, 3)
    finally:
        postfix_deferred.postfix("-H", held, program="postsuper")


def test_nothing_of_a_message_leaves_the_server(postfix_deferred):
    result = agent.collect_mailqueue(
        context(mailqueue={"postfixQueue": str(postfix_deferred.queue)}))
    text = json.dumps(result)
    assert "@" not in text and "invalid" not in text and "hello" not in text


def test_walk_stops_at_its_limit_and_says_so(postfix_deferred, monkeypatch):
    monkeypatch.setattr(agent, "MAIL_QUEUE_LIMIT", 2)
    result = agent.collect_mailqueue(
        context(mailqueue={"postfixQueue": str(postfix_deferred.queue)}))
    assert result["truncated"] is True and result["total"] == 2


def without_file_access(*command):
    """The command as root without the capabilities that let root read any file
    (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH): what an unprivileged agent meets."""
    setpriv = shutil.which("setpriv")
    require("setpriv", setpriv and os.geteuid() == 0, "util-linux's setpriv, as root")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search", *command]


def test_an_unreadable_queue_is_unavailable_with_what_the_agent_needs(postfix_deferred,
                                                                      tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"agent": {
        "stateDir": str(tmp_path / "state"), "enabledCollectors": ["mailqueue"],
        "services": {"mailqueue": {"postfixQueue": str(postfix_deferred.queue)}}}}))
    done = subprocess.run(without_file_access(sys.executable, str(ROOT / "agent.py"),
                                              "--config", str(config), "--print"),
                          env=agent_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    sample = json.loads(done.stdout)
    assert "services" not in sample["metrics"]  # not a queue of 0
    assert "root" in sample["unavailable"]["mailqueue"]


def test_no_mail_server_is_absent(tmp_path):
    with pytest.raises(agent.ServiceAbsent):
        agent.collect_mailqueue(context(mailqueue={"postfixQueue": str(tmp_path / "none"),
                                                   "eximSpool": str(tmp_path / "none")}))


# ----- Exim -------------------------------------------------------------------------------------

EXIM_CONF = """\
exim_user = mail
exim_group = mail
spool_directory = {spool}
log_file_path = {spool}/log/%slog
primary_hostname = test.invalid
keep_environment =
begin routers
relay:
  driver = manualroute
  route_list = * 127.0.0.1::{port}
  transport = remote
begin transports
remote:
  driver = smtp
"""


class EximSpool:
    """Debian's Exim binary (unpacked by .ci/exim) with its own config and spool under
    `folder`: messages are queued (-odq, no delivery attempt) and frozen with -Mf."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.spool = self.folder / "spool"
        self.input = self.spool / "input"
        self.conf = self.folder / "exim.conf"

    def start(self):
        (self.spool / "log").mkdir(parents=True)
        shutil.chown(self.spool, "mail", "mail")
        shutil.chown(self.spool / "log", "mail", "mail")
        self.conf.write_text(EXIM_CONF.format(spool=self.spool, port=free_port()))
        return self

    def exim(self, *args, stdin=None):
        libraries = ":".join(str(p) for p in EXIM_ROOT.glob("usr/lib/*-linux-gnu"))
        env = dict(os.environ, LD_LIBRARY_PATH=libraries)  # libidn12, unpacked with Exim
        done = subprocess.run([str(EXIM_ROOT / "usr/sbin/exim4"), "-C", str(self.conf), *args],
                              input=stdin, env=env, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def queue(self, count):
        for index in range(count):
            self.exim("-odq", "-f", "agent-test@test.invalid", f"user{index}@nowhere.invalid",
                      stdin=f"Subject: test {index}\n\nhello\n")

    def message_ids(self):
        return sorted(p.name[:-2] for p in self.input.rglob("*-H"))


@pytest.fixture(scope="module")
def exim_spool(daemon_folder):
    """Three messages in a real Exim spool, one of them frozen."""
    require("Exim", (EXIM_ROOT / "usr/sbin/exim4").exists(),
            f"run .ci/exim to unpack Debian's exim4-daemon-light into {EXIM_ROOT.parent}")
    require("root", os.geteuid() == 0, "Exim's spool belongs to its own user")
    spool = EximSpool(daemon_folder / "exim").start()
    spool.queue(3)
    spool.exim("-Mf", spool.message_ids()[0])
    return spool


def test_exim_queue_and_frozen_messages_are_counted(exim_spool):
    result = agent.collect_mailqueue(context(mailqueue={
        "postfixQueue": str(exim_spool.folder / "no-postfix"), "eximSpool": str(exim_spool.input)}))
    assert result == {"mta": "exim", "total": 3, "frozen": 1,
                      "oldestAge": result["oldestAge"]}
    assert 0 <= result["oldestAge"] < 3600
    assert "frozen" in exim_spool.exim("-bp")  # Exim agrees one is frozen


def test_an_unreadable_exim_spool_is_unavailable(exim_spool, tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"agent": {
        "stateDir": str(tmp_path / "state"), "enabledCollectors": ["mailqueue"],
        "services": {"mailqueue": {"postfixQueue": str(tmp_path / "none"),
                                   "eximSpool": str(exim_spool.input)}}}}))
    done = subprocess.run(without_file_access(sys.executable, str(ROOT / "agent.py"),
                                              "--config", str(config), "--print"),
                          env=agent_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Debian-exim" in json.loads(done.stdout)["unavailable"]["mailqueue"]


# ----- Watched processes ------------------------------------------------------------------------

@pytest.fixture
def sleepers(tmp_path):
    """Two processes named `mpanel-sleeper` (a copy of sleep under that name) and one busy
    process whose first argument is `mpanel-burner` (python started under that argv[0])."""
    sleeper = tmp_path / "mpanel-sleeper"
    shutil.copy(shutil.which("sleep"), sleeper)
    processes = [subprocess.Popen([str(sleeper), "300"]) for _ in range(2)]
    processes.append(subprocess.Popen(
        ["mpanel-burner", "-c", "while True: pass"], executable=sys.executable))
    try:
        yield processes
    finally:
        for process in processes:
            stop_process(process)


def test_watched_processes_are_counted_with_cpu_and_memory(sleepers):
    ctx = context(watched={"names": ["mpanel-sleeper", "mpanel-burner", "mpanel-missing"]})
    first = {p["name"]: p for p in agent.collect_watched(ctx)["processes"]}
    assert first["mpanel-sleeper"]["count"] == 2 and first["mpanel-sleeper"]["rss"] > 0
    assert first["mpanel-burner"]["count"] == 1  # found by its first argument
    assert first["mpanel-missing"] == {"name": "mpanel-missing", "count": 0, "rss": 0}
    assert "cpuPercent" not in first["mpanel-burner"]  # no previous reading yet
    ctx.rates.end_cycle()
    burner = sleepers[2].pid

    def busy():
        import psutil

        return sum(psutil.Process(burner).cpu_times()[:2]) > 0.3

    assert wait_for(busy, timeout=30)
    second = {p["name"]: p for p in agent.collect_watched(ctx)["processes"]}
    assert second["mpanel-burner"]["cpuPercent"] > 5
    assert second["mpanel-sleeper"]["cpuPercent"] < 5


def test_watched_is_off_without_names():
    with pytest.raises(agent.ServiceAbsent):
        agent.collect_watched(context(watched={"names": []}))
    with pytest.raises(agent.ServiceAbsent):
        agent.collect_watched(context())


def test_more_than_fifty_names_are_bounded_and_counted():
    names = [f"mpanel-none-{index}" for index in range(60)] + ["x" * 300]
    result = agent.collect_watched(context(watched={"names": names}))
    assert len(result["processes"]) == 50 and result["omitted"] == 11


# ----- systemd ----------------------------------------------------------------------------------

def test_systemd_is_absent_where_it_is_not_the_init():
    """systemd cannot run as PID 1 here: no /run/systemd/system, so the collector is absent
    (not failing). What it reads on a systemd machine is tested on systemctl's output in
    tests/unit/test_service_parsers_mail.py."""
    if os.path.isdir(agent.SYSTEMD_RUNTIME):
        pytest.skip("systemd is this machine's init")
    with pytest.raises(agent.ServiceAbsent):
        agent.collect_systemd(context(systemd={"units": ["nginx.service"]}))


# ----- Through the real agent to a real panel ---------------------------------------------------

@pytest.mark.timeout(120)
def test_the_agent_reports_the_queue_and_watched_processes_to_the_panel(
        panel, tmp_path, postfix_deferred, sleepers):
    _, key = new_server("mail-box")
    config = write_agent_config(tmp_path, panel.url, key,
                                enabledCollectors=["mailqueue", "watched", "systemd"],
                                services={"mailqueue": {"postfixQueue":
                                                        str(postfix_deferred.queue)},
                                          "watched": {"names": ["mpanel-sleeper", "master"]}})
    done = subprocess.run([sys.executable, str(ROOT / "agent.py"), "--config", str(config),
                           "--once"], env=agent_env(), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    sample = models.Metric.get()
    services = sample.services
    assert services["mailqueue"]["deferred"] == 3 and services["mailqueue"]["mta"] == "postfix"
    watched = {p["name"]: p["count"] for p in services["watched"]["processes"]}
    assert watched == {"mpanel-sleeper": 2, "master": watched["master"]}
    assert watched["master"] >= 1  # our Postfix instance's master
    assert "systemd" not in services  # not the init here
    assert not (sample.detail or {}).get("unavailable")
