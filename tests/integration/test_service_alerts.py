"""Every built-in service check (panel/checks.py) fires and resolves against the real service:
the real agent (`--once`, as cron runs it) reports a service the test started itself to a real
panel, `jobs.evaluate_checks` judges the stored sample in-process against the same database,
and the test breaks the service, then mends it. Each check's rule is made immediate
(`operations.set_rule(metric, threshold, 0)`); each test asserts one alert for the right
subject, a message naming the subject, its value now and what it was, nothing more on a
second evaluation, and the alert resolved once the service is mended.

The services are the test's own, never the machine's shared ones: MariaDB servers in a
temporary folder (tests/integration/mariadb_instances.py), a Postfix instance with its own
queue that defers mail for real (tests/integration/test_services_mail.py), Debian's nginx
serving certificates made by openssl (tests/integration/test_certificates.py), a copy of
`sleep` under a name of the test's own. systemd cannot run as PID 1 here: for unit_failed the
agent runs in a mount namespace of its own where /run/systemd/system exists, and finds first on
its PATH a stand-in `systemctl` that prints tests/fixtures/systemctl_*.txt (written in systemd
252's format, not captured: see tests/fixtures/README.md). PHP-FPM's two checks wait for its
collector, which this branch does not have yet.
"""
import os
import shutil
import signal
import ssl
import subprocess
import time

import pytest

import agent
from panel import alerts, checks, jobs, models, operations
from tests.conftest import (ROOT, free_port, new_server, require, start_nginx, stop_process,
                            wait_for, wait_for_port, write_agent_config)
from tests.integration.mariadb_instances import OwnMariadb, require_mariadb_server
from tests.integration.test_certificates import DAY, CertificateAuthority
from tests.integration.test_mysql import own_mariadb, replica_figures  # noqa: F401 (fixture)
from tests.integration.test_service_checks import report
from tests.integration.test_services_mail import (PostfixInstance, daemon_folder,  # noqa: F401
                                                  require_postfix)

FIXTURES = ROOT / "tests" / "fixtures"


def agent_config(tmp_path, panel, key, collector, settings):
    return write_agent_config(tmp_path / "agent", panel.url, key, enabledCollectors=[collector],
                              services={collector: settings})


def good_first(metric, subject):
    """The sample just stored is good for `subject`: nothing opens, its state says so."""
    assert jobs.evaluate_checks(300) == (0, 0)
    state = models.CheckState.get(metric=metric, subject=subject)
    assert state.bad_since is None and state.was == state.text
    return state.was


def fires_once(metric, subject, threshold):
    """The sample just stored opens exactly one alert, for `subject`; evaluating again opens
    nothing more. -> the alert."""
    assert jobs.evaluate_checks(300) == (1, 0)
    assert jobs.evaluate_checks(300) == (0, 0)
    [alert] = models.Alert.select()
    assert (alert.rule, alert.state, alert.threshold) == (metric, "firing", threshold)
    assert alert.open_key == alerts.subject_key(metric, subject)
    assert alert.message.startswith(f"{checks.BY_METRIC[metric].title}: {subject}: ")
    return alert


def resolves(alert):
    assert jobs.evaluate_checks(300) == (0, 1)
    assert jobs.evaluate_checks(300) == (0, 0)
    alert = models.Alert.get_by_id(alert.id)
    assert alert.state == "resolved" and alert.resolved_at is not None
    assert models.Alert.select().count() == 1


# ===== MySQL / MariaDB ==========================================================================

def threads_connected(server):
    """Client connections the server counts, this query's own left out."""
    return int(server.sql("SHOW GLOBAL STATUS LIKE 'Threads_connected'").stdout.split()[1]) - 1


@pytest.mark.timeout(120)
def test_mysql_connections_above_80_percent_fire_and_resolve_when_they_close(panel, tmp_path):
    require_mariadb_server()
    server = OwnMariadb(tmp_path / "mariadb", 1, options=("--max-connections=10",))
    server.install()
    holders = []
    try:
        server.start()
        _, key = new_server("db-1")
        operations.set_rule("mysql_conns", 80, 0)
        config = agent_config(tmp_path, panel, key, "mysql",
                              {"socket": server.socket, "user": "root"})
        before = report(config).services["mysql"]
        assert before["maxConnections"] == 10 and before["connections"] == 1  # the agent's
        was = good_first("mysql_conns", "mysql")
        assert was == "1 of 10 connections (10 %)"

        # Idle clients reading statements from a pipe: each holds a connection until its
        # stdin closes, when it says goodbye (COM_QUIT) and the server lets it go at once.
        holders = [subprocess.Popen([shutil.which("mariadb"), "--no-defaults", "-uroot",
                                     f"--socket={server.socket}"], stdin=subprocess.PIPE,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                   for _ in range(8)]
        assert wait_for(lambda: threads_connected(server) == 8, timeout=30)
        during = report(config).services["mysql"]
        assert during["connections"] == 9 and during["connectionsPercent"] == 90.0
        alert = fires_once("mysql_conns", "mysql", 80)
        assert alert.message == ("MySQL connections: mysql: 9 of 10 connections (90 %); "
                                 f"was {was}; above 80%")
        assert alert.value == 90.0

        for holder in holders:
            holder.stdin.close()
            holder.wait(timeout=10)
        assert wait_for(lambda: threads_connected(server) == 0, timeout=30)
        assert report(config).services["mysql"]["connections"] == 1
        resolves(alert)
    finally:
        for holder in holders:
            if holder.poll() is None:
                stop_process(holder)
        server.stop()


@pytest.mark.timeout(180)
def test_a_replica_whose_sql_thread_stops_on_an_error_fires_and_resolves_when_restarted(
        panel, tmp_path, own_mariadb):  # noqa: F811
    """A primary and a replica of it (both the test's own): a row written on the replica
    first makes the primary's same row fail there (1062, duplicate key), which stops the
    replica's SQL thread, as a stray write on a replica does; deleting it and starting the
    thread again mends it."""
    primary = own_mariadb()
    replica = own_mariadb(copy_of=primary)
    primary.sql("CREATE USER 'repl'@'127.0.0.1' IDENTIFIED BY 'repl-pw'; "
                "GRANT REPLICATION SLAVE ON *.* TO 'repl'@'127.0.0.1'; "
                "CREATE DATABASE shop; CREATE TABLE shop.orders (id int PRIMARY KEY)")
    replica.sql(f"CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={primary.port}, "
                "MASTER_USER='repl', MASTER_PASSWORD='repl-pw', MASTER_USE_GTID=no, "
                "MASTER_LOG_FILE='binlog.000001', MASTER_LOG_POS=4; START SLAVE")
    settings = {"socket": replica.socket, "user": "root"}
    watch = agent.CollectorContext(services={"mysql": settings})

    def replicating(result):
        return result.get("replicaSqlRunning") and result.get("replicaIoRunning") and \
            "replicaLag" in result and "replicaSqlErrno" not in result

    assert replicating(replica_figures(watch, replicating))
    assert wait_for(lambda: replica.sql("SHOW TABLES IN shop", check=False).stdout.strip()
                    == "orders", timeout=30)
    _, key = new_server("db-replica")
    operations.set_rule("mysql_replica", 300, 0)
    config = agent_config(tmp_path, panel, key, "mysql", settings)
    lag = report(config).services["mysql"]["replicaLag"]
    was = good_first("mysql_replica", "mysql")
    assert was == f"{lag} s behind"

    replica.sql("INSERT INTO shop.orders VALUES (1)")
    primary.sql("INSERT INTO shop.orders VALUES (1)")
    stopped = replica_figures(watch, lambda r: r.get("replicaSqlRunning") is False)
    assert stopped["replicaSqlRunning"] is False and stopped.get("replicaSqlErrno") == 1062
    sample = report(config).services["mysql"]
    assert (sample["replicaSqlRunning"], sample["replicaSqlErrno"]) == (False, 1062)
    alert = fires_once("mysql_replica", "mysql", 300)
    assert alert.message == ("MySQL replication: mysql: replication SQL thread stopped "
                             f"(error 1062); was {was}")

    replica.sql("DELETE FROM shop.orders WHERE id = 1; START SLAVE SQL_THREAD")
    assert replicating(replica_figures(watch, replicating))
    assert replicating(report(config).services["mysql"])
    resolves(alert)


# ===== Mail queue ===============================================================================

@pytest.fixture(scope="module")
def postfix(daemon_folder):  # noqa: F811
    """A Postfix instance of the module's own whose relay refuses every message; each test
    starts from an empty queue and leaves it empty."""
    require_postfix()
    instance = PostfixInstance(daemon_folder / "postfix-alerts")
    try:
        instance.start()
        yield instance
    finally:
        instance.stop()


def queued(instance):
    return sum(len(instance.queue_ids(queue)) for queue in agent.POSTFIX_QUEUES)


@pytest.fixture
def mail_box(postfix, panel, tmp_path):
    """(the Postfix instance, an agent config reporting its queue) with the queue empty."""
    assert queued(postfix) == 0
    _, key = new_server("mail-1")
    try:
        yield postfix, agent_config(tmp_path, panel, key, "mailqueue",
                                    {"postfixQueue": str(postfix.queue)})
    finally:
        postfix.postfix("-d", "ALL", program="postsuper")


def defer(instance, count):
    instance.send(count)
    assert wait_for(lambda: len(instance.queue_ids("deferred")) == count, timeout=60), \
        instance.log()


def flush(instance):
    """Delete every queued message (postsuper -d ALL), as an admin clears a stuck queue."""
    instance.postfix("-d", "ALL", program="postsuper")
    assert wait_for(lambda: queued(instance) == 0, timeout=30)


@pytest.mark.timeout(120)
def test_deferred_mail_above_the_queue_threshold_fires_and_resolves_when_flushed(mail_box):
    instance, config = mail_box
    operations.set_rule("mail_queue", 0, 0)
    assert report(config).services["mailqueue"]["total"] == 0
    assert good_first("mail_queue", "postfix") == "0 messages queued"

    defer(instance, 3)
    assert report(config).services["mailqueue"]["deferred"] == 3
    alert = fires_once("mail_queue", "postfix", 0)
    assert alert.message == "Mail queue: postfix: 3 messages queued; was 0 messages queued; " \
                            "above 0"
    assert alert.value == 3

    flush(instance)
    assert report(config).services["mailqueue"]["total"] == 0
    resolves(alert)


@pytest.mark.timeout(120)
def test_mail_older_than_the_threshold_fires_and_resolves_when_the_queue_is_emptied(mail_box):
    instance, config = mail_box
    operations.set_rule("mail_oldest", 1, 0)
    assert "oldestAge" not in report(config).services["mailqueue"]
    assert good_first("mail_oldest", "postfix") == "no message queued"

    defer(instance, 1)
    settings = {"postfixQueue": str(instance.queue)}
    assert wait_for(lambda: agent.collect_mailqueue(agent.CollectorContext(
        services={"mailqueue": settings})).get("oldestAge", 0) >= 2, timeout=30)
    age = report(config).services["mailqueue"]["oldestAge"]
    assert age >= 2
    alert = fires_once("mail_oldest", "postfix", 1)
    assert alert.message == (f"Oldest queued mail: postfix: oldest message queued {age} s ago; "
                             "was no message queued; above 1s")

    flush(instance)
    assert "oldestAge" not in report(config).services["mailqueue"]
    resolves(alert)


# ===== TLS certificates =========================================================================

def served(port, name):
    """The certificate nginx presents for `name` now (DER), None while it cannot say."""
    try:
        return agent.served_certificate("127.0.0.1", port, name)
    except OSError:
        return None


def der(pem):
    return ssl.PEM_cert_to_DER_cert(pem.read_text())


@pytest.mark.timeout(120)
def test_a_certificate_expiring_in_3_days_fires_and_resolves_once_renewed_and_reloaded(
        panel, tmp_path):
    """nginx serves shop.example.test from one pair of files; the agent reads the file nginx's
    config names and the certificate a local handshake gets. Renewing goes 90 days -> 3 days
    (fires) -> the 90-day files back on disk: still firing while nginx, not yet reloaded,
    serves the old one -> reload: resolved."""
    folder = tmp_path / "tls"
    folder.mkdir()
    ca, now, name = CertificateAuthority(folder / "ca"), int(time.time()), "shop.example.test"
    long_pem, long_key, _ = ca.issue("long", [name], now - DAY, now + 90 * DAY)
    short_pem, short_key, _ = ca.issue("short", [name], now - 87 * DAY, now + 3 * DAY)
    site_pem, site_key = folder / "site.pem", folder / "site.key"

    def install(pem, key):
        for source, target in ((pem, site_pem), (key, site_key)):
            shutil.copy(source, f"{target}.new")
            os.replace(f"{target}.new", target)

    def reload_to(pem):
        nginx.send_signal(signal.SIGHUP)
        assert wait_for(lambda: served(port, name) == der(pem), timeout=30)

    install(long_pem, long_key)
    port = free_port()
    nginx = start_nginx(folder, f"""
  server {{
    listen 127.0.0.1:{port} ssl;
    server_name {name};
    ssl_certificate {site_pem};
    ssl_certificate_key {site_key};
    return 200;
  }}""")
    try:
        wait_for_port(port, nginx)
        _, key = new_server("web-1")
        operations.set_rule("cert_expiry", 14, 0)
        config = agent_config(tmp_path, panel, key, "certificates", {
            "nginxConfig": str(folder / "nginx" / "nginx.conf"), "apacheConfig": [],
            "endpoints": [{"address": f"127.0.0.1:{port}", "serverName": name}]})

        def days_left():
            entries = report(config).services["certificates"]["certificates"]
            return {entry["source"]: entry["daysLeft"] for entry in entries
                    if entry["name"] == name}

        assert {source: round(days) for source, days in days_left().items()} == \
            {"nginx": 90, "endpoint": 90}
        assert good_first("cert_expiry", name) == "expires in 90 days"

        install(short_pem, short_key)
        reload_to(short_pem)
        assert {source: round(days) for source, days in days_left().items()} == \
            {"nginx": 3, "endpoint": 3}
        alert = fires_once("cert_expiry", name, 14)
        assert alert.message == (f"TLS certificate: {name}: expires in 3 days; was expires in "
                                 "90 days; below 14 days")

        install(long_pem, long_key)  # renewed on disk, nginx not told
        assert {source: round(days) for source, days in days_left().items()} == \
            {"nginx": 90, "endpoint": 3}
        assert jobs.evaluate_checks(300) == (0, 0)
        assert models.Alert.get_by_id(alert.id).state == "firing"

        reload_to(long_pem)
        assert {source: round(days) for source, days in days_left().items()} == \
            {"nginx": 90, "endpoint": 90}
        resolves(alert)
    finally:
        stop_process(nginx)


# ===== Watched processes ========================================================================

@pytest.mark.timeout(120)
def test_a_watched_process_killed_fires_and_resolves_when_it_runs_again(panel, tmp_path):
    name = f"mptw{os.getpid() % 100000}"  # a copy of sleep under a name of this test's own
    program = tmp_path / name
    shutil.copy(shutil.which("sleep"), program)
    _, key = new_server("ftp-1")
    operations.set_rule("process_down", 1, 0)
    config = agent_config(tmp_path, panel, key, "watched", {"names": [name]})
    process = subprocess.Popen([str(program), "600"])
    try:
        assert report(config).services["watched"]["processes"][0]["count"] == 1
        assert good_first("process_down", name) == "1 running"

        stop_process(process)
        assert report(config).services["watched"]["processes"] == [
            {"name": name, "count": 0, "rss": 0}]
        alert = fires_once("process_down", name, 1)
        assert alert.message == f"Watched process: {name}: 0 running; was 1 running; below 1"

        process = subprocess.Popen([str(program), "600"])
        assert report(config).services["watched"]["processes"][0]["count"] == 1
        resolves(alert)
    finally:
        if process.poll() is None:
            stop_process(process)


# ===== systemd ==================================================================================

STAND_IN = """#!/bin/sh
# A stand-in for systemctl (systemd is not PID 1 here): prints the output the test chose.
case "$1" in
  list-units) exec cat {folder}/list-units.txt ;;
  show) exec cat {folder}/show.txt ;;
esac
echo "stand-in systemctl: nothing to print for $1" >&2
exit 1
"""

# The agent's own mount namespace: a tmpfs where /run/systemd/system can exist (over
# /run/systemd, or over /run where there is none), gone when the agent exits.
WITH_SYSTEMD_RUNTIME = (
    "unshare", "--mount", "--propagation", "private", "--", "sh", "-ec",
    'top=/run/systemd; [ -d "$top" ] || top=/run; mount -t tmpfs mpanel-test "$top"; '
    'mkdir -p /run/systemd/system; exec "$@"', "sh")


def require_mount_namespace():
    can = os.geteuid() == 0 and shutil.which("unshare") and subprocess.run(
        [*WITH_SYSTEMD_RUNTIME, "test", "-d", "/run/systemd/system"], capture_output=True,
        timeout=30).returncode == 0
    require("a mount namespace", can, "needs root and util-linux's unshare")


@pytest.mark.timeout(120)
def test_a_failed_systemd_unit_fires_and_resolves_when_active_again(panel, tmp_path):
    """systemd cannot run as PID 1 here: the agent runs in a mount namespace of its own where
    /run/systemd/system exists, with a stand-in systemctl first on its PATH that prints the
    fixtures (systemd 252's format, not captured from a real systemd): systemctl_show.txt
    (mariadb.service failed) and systemctl_list_units_failed_bullet.txt while broken; before
    and after, the same show output with mariadb.service's block active (running), and no
    failed unit."""
    require_mount_namespace()
    captured, bin_folder = tmp_path / "systemctl", tmp_path / "bin"
    captured.mkdir()
    bin_folder.mkdir()
    stand_in = bin_folder / "systemctl"
    stand_in.write_text(STAND_IN.format(folder=captured))
    stand_in.chmod(0o755)
    broken_show = (FIXTURES / "systemctl_show.txt").read_text()
    failed_block = "Id=mariadb.service\nLoadState=loaded\nActiveState=failed\nSubState=failed\n"
    assert failed_block in broken_show
    healthy_show = broken_show.replace(failed_block, failed_block.replace(
        "ActiveState=failed\nSubState=failed", "ActiveState=active\nSubState=running"))

    def systemd_says(show, failed):
        (captured / "show.txt").write_text(show)
        (captured / "list-units.txt").write_text(failed)

    _, key = new_server("db-2")
    operations.set_rule("unit_failed", 0, 0)
    config = agent_config(tmp_path, panel, key, "systemd",
                          {"units": ["nginx.service", "mariadb.service"]})

    def sample():
        return report(config, path_first=bin_folder, wrapper=WITH_SYSTEMD_RUNTIME) \
            .services["systemd"]

    systemd_says(healthy_show, "")
    assert sample() == {"failed": 0, "units": [
        {"name": "nginx.service", "activeState": "active", "subState": "running",
         "loadState": "loaded"},
        {"name": "mariadb.service", "activeState": "active", "subState": "running",
         "loadState": "loaded"}]}
    assert good_first("unit_failed", "mariadb.service") == "active (running)"

    systemd_says(broken_show,
                 (FIXTURES / "systemctl_list_units_failed_bullet.txt").read_text())
    broken = sample()
    assert broken["failed"] == 1 and broken["units"][1]["activeState"] == "failed"
    alert = fires_once("unit_failed", "mariadb.service", 0)
    assert alert.message == "systemd unit: mariadb.service: failed (failed); " \
                            "was active (running)"

    systemd_says(healthy_show, "")
    assert sample()["failed"] == 0
    resolves(alert)
