"""The MySQL / MariaDB collector against real servers: the machine's shared MariaDB (127.0.0.1:3306
and its socket, root without a password; the tests add only users and databases of their own and
drop them, and never change a setting), and MariaDB servers of a test's own in a temporary
folder for what the shared one must not go through: being stopped, being a replica, holding
dozens of databases."""
import json
import os
import pwd
import shutil
import subprocess
import sys
import time

import pytest

import agent
from panel import models
from tests.conftest import (ROOT, free_port, new_server, require, write_agent_config)
from tests.integration.mariadb_instances import OwnMariadb, require_mariadb_server
from tests.integration.test_services import reachable

SHARED_SOCKET = "/run/mysqld/mysqld.sock"


def context(settings):
    return agent.CollectorContext(services={"mysql": settings})


def shared_sql(statements):
    done = subprocess.run([shutil.which("mariadb") or "mariadb", "--no-defaults", "-uroot",
                           "-h127.0.0.1", "-P3306", "-B", "-N", "-e", statements],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def mysql_settings():
    """The machine's shared MariaDB over TCP, as root with no password."""
    require("MariaDB on 127.0.0.1:3306", reachable(3306) and shutil.which("mariadb"),
            "start Debian's mariadb-server")
    return {"host": "127.0.0.1", "port": 3306, "user": "root"}


@pytest.fixture
def own_mariadb(tmp_path):
    """Start MariaDB servers of this test's own (server ids 1, 2, ...); all stopped after."""
    require_mariadb_server()
    started = []

    def start(copy_of=None):
        server = OwnMariadb(tmp_path / f"mariadb{len(started) + 1}", len(started) + 1)
        if copy_of is None:
            server.install()
        else:  # a copy of a fresh install is a fresh install, in a fraction of the time
            shutil.copytree(copy_of.datadir, server.datadir)
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.stop()


def test_mysql_reports_connections_queries_and_buffer_pool_from_the_real_server(mysql_settings):
    ctx = context(mysql_settings)
    first = agent.collect_mysql(ctx)
    assert first["up"] is True and "MariaDB" in first["version"]
    assert 1 <= first["connections"] <= first["maxConnections"]
    assert first["connectionsPercent"] == round(
        100 * first["connections"] / first["maxConnections"], 2)
    assert first["threadsRunning"] >= 1 and first["uptime"] > 0
    assert first["bufferPoolBytes"] > 0 and 0 < first["bufferPoolUsedPercent"] <= 100
    assert "queriesPerSec" not in first  # rates from the second sample on
    ctx.rates.end_cycle()
    shared_sql("SELECT 1; SELECT 2; SELECT 3")
    second = agent.collect_mysql(ctx)
    assert second["queriesPerSec"] > 0
    assert second["slowQueriesPerSec"] >= 0 and second["abortedConnectsPerSec"] >= 0


def test_buffer_pool_hit_ratio_is_over_the_interval(mysql_settings):
    """Logical reads between two samples give a hit ratio; its pages are in the pool already,
    so nearly every read is a hit (other clients' reads count too: the bound is loose)."""
    name = f"mpt_hits_{os.getpid()}"
    shared_sql(f"CREATE DATABASE {name}; CREATE TABLE {name}.t (a int) ENGINE=InnoDB; "
               f"INSERT INTO {name}.t VALUES (1), (2), (3)")
    try:
        ctx = context(mysql_settings)
        assert "bufferPoolHitPercent" not in agent.collect_mysql(ctx)
        ctx.rates.end_cycle()
        shared_sql("".join(f"SELECT COUNT(*) FROM {name}.t;" for _ in range(50)))
        assert 50 <= agent.collect_mysql(ctx)["bufferPoolHitPercent"] <= 100
    finally:
        shared_sql(f"DROP DATABASE IF EXISTS {name}")


def test_mysql_counts_our_own_extra_connections(mysql_settings):
    before = agent.collect_mysql(context(mysql_settings))["connections"]
    clients = [subprocess.Popen(["mariadb", "--no-defaults", "-uroot", "-h127.0.0.1",
                                 "-e", "SELECT SLEEP(30)"]) for _ in range(3)]
    try:
        deadline = time.monotonic() + 20
        during = before
        while time.monotonic() < deadline and during < before + 3 - 1:
            during = agent.collect_mysql(context(mysql_settings))["connections"]
    finally:
        for client in clients:
            client.kill()
            client.wait()
    assert during >= before + 3 - 1  # other clients may come and go meanwhile


def test_mysql_found_on_its_debian_socket_with_no_settings(mysql_settings):
    """No settings at all: the socket is found where Debian puts it, and the user is the OS
    user's name (root here, whom Debian's MariaDB lets in over the socket)."""
    require("MariaDB's socket", os.path.exists(SHARED_SOCKET), f"no {SHARED_SOCKET}")
    assert agent.collect_mysql(context({}))["up"] is True


@pytest.fixture
def socket_user(mysql_settings):
    """A throwaway OS user and a MariaDB user of the same name IDENTIFIED VIA unix_socket with
    no privilege at all; both removed afterwards."""
    require("root", os.geteuid() == 0, "creating an OS user needs root")
    require("MariaDB's socket", os.path.exists(SHARED_SOCKET), f"no {SHARED_SOCKET}")
    name = f"mpt{os.getpid() % 100000}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                   check=True, capture_output=True)
    try:
        shared_sql(f"CREATE USER '{name}'@'localhost' IDENTIFIED VIA unix_socket")
        try:
            yield name
        finally:
            shared_sql(f"DROP USER IF EXISTS '{name}'@'localhost'")
    finally:
        subprocess.run(["userdel", name], capture_output=True)


def collect_as(user, settings):
    """collect_mysql in a child process that runs as `user`: it imports the agent as root (this
    suite's interpreter lives under /root, out of an unprivileged user's reach), then gives up
    root for good before it connects, so the server sees that user's uid on the socket."""
    entry = pwd.getpwnam(user)
    code = (f"import json, os, sys; sys.path.insert(0, {str(ROOT)!r}); import agent\n"
            f"os.setgroups([]); os.setgid({entry.pw_gid}); os.setuid({entry.pw_uid})\n"
            "ctx = agent.CollectorContext(services={'mysql': json.loads(sys.argv[1])})\n"
            "try:\n    print(json.dumps(agent.collect_mysql(ctx)))\n"
            "except Exception as err:\n    print(json.dumps({'error': str(err)}))\n")
    done = subprocess.run([sys.executable, "-c", code, json.dumps(settings)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_dedicated_os_user_logs_in_over_the_socket_without_a_password(socket_user):
    """The README's set-up for the agent's system user, for real: unix_socket login, no
    password, no privilege; status still reads, replication is left out without REPLICA
    MONITOR (a primary here anyway), and only schemas the user may see are sized."""
    shared_sql("CREATE DATABASE IF NOT EXISTS mpt_hidden")
    try:
        result = collect_as(socket_user, {"socket": SHARED_SOCKET})
    finally:
        shared_sql("DROP DATABASE IF EXISTS mpt_hidden")
    assert result.get("up") is True, result
    assert result["connections"] >= 1
    assert "mpt_hidden" not in {d["name"] for d in result["databases"]}


def test_the_os_user_of_another_name_is_refused_with_the_reason(socket_user):
    """The server compares the socket peer's uid with the MariaDB user: another OS user (here
    `nobody`) may not log in as this one."""
    result = collect_as("nobody", {"socket": SHARED_SOCKET, "user": socket_user})
    assert "Access denied" in result["error"] or "denied" in result["error"], result


@pytest.fixture
def password_user(mysql_settings):
    name, password = f"mptpw{os.getpid() % 100000}", "s3cret-Pw-for-the-test"
    shared_sql(f"CREATE USER '{name}'@'127.0.0.1' IDENTIFIED BY '{password}'")
    try:
        yield name, password
    finally:
        shared_sql(f"DROP USER IF EXISTS '{name}'@'127.0.0.1'")


def test_a_user_and_password_from_config_log_in_over_tcp(mysql_settings, password_user):
    name, password = password_user
    result = agent.collect_mysql(context(dict(mysql_settings, user=name, password=password)))
    assert result["up"] is True and result["connections"] >= 1


def test_a_wrong_password_is_unavailable_with_the_reason_and_never_the_password(
        mysql_settings, password_user):
    name, _ = password_user
    ctx = context(dict(mysql_settings, user=name, password="not-the-password"))
    _, unavailable = agent.run_collectors(("mysql",), ctx)
    assert "Access denied" in unavailable["mysql"]
    assert "not-the-password" not in unavailable["mysql"]


def test_mysql_absent_when_nothing_listens(tmp_path):
    with pytest.raises(agent.ServiceAbsent):
        agent.collect_mysql(context({"host": "127.0.0.1", "port": free_port()}))
    with pytest.raises(agent.ServiceAbsent):
        agent.collect_mysql(context({"socket": str(tmp_path / "none.sock")}))


def test_database_sizes_are_read_every_few_minutes_and_the_last_known_sent_between(
        mysql_settings):
    name = f"mpt_sizes_{os.getpid()}"
    shared_sql(f"CREATE DATABASE {name}; CREATE TABLE {name}.t (a int) ENGINE=InnoDB; "
               f"INSERT INTO {name}.t VALUES (1)")
    try:
        ctx = context(mysql_settings)
        first = agent.collect_mysql(ctx)
        sizes = {d["name"]: d["size"] for d in first["databases"]}
        assert sizes[name] > 0
        assert not {"mysql", "information_schema", "performance_schema", "sys"} & set(sizes)
        shared_sql(f"CREATE DATABASE {name}_later")
        assert agent.collect_mysql(ctx)["databases"] == first["databases"]  # the last known
        ctx.held["mysql"]["sizesAt"] -= agent.DATABASE_SIZES_INTERVAL  # as if minutes went by
        assert f"{name}_later" in {d["name"] for d in agent.collect_mysql(ctx)["databases"]}
    finally:
        shared_sql(f"DROP DATABASE IF EXISTS {name}; DROP DATABASE IF EXISTS {name}_later")


def test_more_than_fifty_databases_send_the_largest_and_count_the_rest(own_mariadb):
    server = own_mariadb()
    server.sql("".join(f"CREATE DATABASE d{index:02};" for index in range(52))
               + "CREATE TABLE d07.t (a int) ENGINE=InnoDB;")
    result = agent.collect_mysql(context(server.settings))
    assert len(result["databases"]) == 50 and result["omitted"] == 2
    assert "d07" in {d["name"] for d in result["databases"]}  # the one with a table


def test_a_server_seen_up_that_stops_is_down_not_absent(own_mariadb):
    server = own_mariadb()
    ctx = context(server.settings)
    assert agent.collect_mysql(ctx)["up"] is True
    server.stop()
    metrics, unavailable = agent.run_collectors(("mysql",), ctx)
    assert metrics["services"]["mysql"] == {"up": False} and unavailable == {}
    assert ctx.absent_until.get("mysql") is None  # looked at again next sample
    with pytest.raises(agent.ServiceAbsent):  # never seen by this agent: simply not here
        agent.collect_mysql(context(server.settings))
    server.start()
    assert agent.collect_mysql(ctx)["up"] is True


def replica_figures(ctx, until, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        result = agent.collect_mysql(ctx)
        if until(result) or time.monotonic() > deadline:
            return result
        time.sleep(0.2)


@pytest.mark.timeout(180)
def test_a_replica_reports_its_threads_and_lag_and_a_primary_none(own_mariadb):
    """Two servers of the test's own: a primary, and a replica of it over loopback."""
    primary = own_mariadb()
    replica = own_mariadb(copy_of=primary)
    primary.sql("CREATE USER 'repl'@'127.0.0.1' IDENTIFIED BY 'repl-pw'; "
                "GRANT REPLICATION SLAVE ON *.* TO 'repl'@'127.0.0.1'")
    replica.sql(f"CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={primary.port}, "
                "MASTER_USER='repl', MASTER_PASSWORD='repl-pw', MASTER_USE_GTID=no; "
                "START SLAVE")
    ctx = context({"socket": replica.socket, "user": "root"})
    running = replica_figures(ctx, lambda r: r.get("replicaIoRunning") and "replicaLag" in r)
    assert running["replicaIoRunning"] is True and running["replicaSqlRunning"] is True
    assert running["replicaLag"] >= 0 and "replicaSqlErrno" not in running

    primary_figures = agent.collect_mysql(context(primary.settings))
    assert not any(key.startswith("replica") for key in primary_figures)

    replica.sql("STOP SLAVE SQL_THREAD")
    stopped = replica_figures(ctx, lambda r: r.get("replicaSqlRunning") is False)
    assert stopped["replicaSqlRunning"] is False and stopped["replicaIoRunning"] is True
    assert "replicaLag" not in stopped  # NULL while the SQL thread is stopped

    primary.stop()
    broken = replica_figures(ctx, lambda r: r.get("replicaIoRunning") is False)
    assert broken["replicaIoRunning"] is False and broken["replicaIoErrno"] > 0


def test_a_primary_is_asked_whether_it_replicates_only_as_often_as_for_its_sizes(own_mariadb):
    server = own_mariadb()

    def asked():
        done = server.sql("SHOW GLOBAL STATUS LIKE 'Com_show_slave_status'")
        return int(done.stdout.split()[1])

    ctx = context(server.settings)
    before = asked()
    for _ in range(3):
        agent.collect_mysql(ctx)
    assert asked() == before + 1  # at the first sample only
    ctx.held["mysql"]["sizesAt"] -= agent.DATABASE_SIZES_INTERVAL  # as if minutes went by
    agent.collect_mysql(ctx)
    assert asked() == before + 2


@pytest.mark.timeout(120)
def test_the_agent_reports_mysql_to_a_real_panel(panel, tmp_path, mysql_settings):
    _, key = new_server("db-box")
    config = write_agent_config(tmp_path, panel.url, key, services={"mysql": mysql_settings},
                                enabledCollectors=["services"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPANEL_")}
    for _ in range(2):  # the second run has rates, from the counters the first left behind
        done = subprocess.run([sys.executable, str(ROOT / "agent.py"), "--config", str(config),
                               "--once"], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    first, second = models.Metric.select().order_by(models.Metric.timestamp)
    mysql = second.detail["services"]["mysql"]
    assert mysql["up"] is True and mysql["connections"] >= 1 and mysql["queriesPerSec"] > 0
    assert "queriesPerSec" not in first.detail["services"]["mysql"]


def readme_grant(user):
    """The README's one GRANT line for MariaDB, for `user`."""
    line = next(line for line in (ROOT / "README.md").read_text().splitlines()
                if "IDENTIFIED VIA unix_socket" in line)
    return line.split(";", 1)[1].strip().rstrip(";").replace("mpanel-agent", user)


def test_the_readmes_grant_lets_the_agents_user_size_every_schema_without_reading_it(
        socket_user):
    name = f"mpt_sized_{os.getpid()}"
    shared_sql(f"{readme_grant(socket_user)}; CREATE DATABASE {name}; "
               f"CREATE TABLE {name}.t (a int) ENGINE=InnoDB")
    try:
        result = collect_as(socket_user, {"socket": SHARED_SOCKET})
        assert {d["name"]: d["size"] for d in result["databases"]}[name] > 0, result
        denied = subprocess.run(["runuser", "-u", socket_user, "--", "mariadb", "--no-defaults",
                                 f"--socket={SHARED_SOCKET}", "-e", f"SELECT * FROM {name}.t"],
                                capture_output=True, text=True, timeout=30)
        assert "denied" in denied.stderr, denied  # sizes, never rows
    finally:
        shared_sql(f"DROP DATABASE IF EXISTS {name}")
