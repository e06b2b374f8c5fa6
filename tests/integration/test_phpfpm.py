"""The PHP-FPM collector against Debian's php-fpm, started by each test with its own config in a
temporary folder (tests/conftest.py `php_fpm`, `start_php_fpm`): pools found from the running
master and its `include=` files, status pages read over FastCGI, and a full pool's listen queue,
"max children reached" and slow requests made real by requests held open (`PhpFpm.hold`) or
slow (`PhpFpm.sleep`)."""
import subprocess
import sys
import time

import agent
from panel import models, protocol
from panel.validation import validate
from tests.conftest import ROOT, agent_env, new_server, stop_php_fpm, wait_for, write_agent_config

SCHEMA = protocol.SERVICES["properties"]["phpfpm"]


def pools_of(result, fpm):
    """The result's entries for this test's own master (another may run on the machine)."""
    mine = {spec["listen"] for spec in fpm.pools.values()}
    return {p["name"]: p for p in result["pools"] if p["listen"] in mine}


def queued(path):
    return agent.parse_unix_diag(agent.fetch_unix_diag()).get(path, (None,))[0]


def collect(ctx):
    result = agent.collect_phpfpm(ctx)
    validate(SCHEMA, result, "phpfpm")
    return result


def test_pools_are_found_from_the_master_and_its_included_pool_files(php_fpm):
    fpm = php_fpm({"site": {"max_children": 3, "pm": "static"},
                       "plain": {"status": False}})
    pools = pools_of(collect(agent.CollectorContext()), fpm)
    assert set(pools) == {"site", "plain"}
    site, plain = pools["site"], pools["plain"]
    assert site["source"] == "status" and site["processManager"] == "static"
    assert site["maxChildren"] == 3 and site["total"] == 3
    # The status request itself is served by one of the workers: it is not counted as busy.
    assert site["active"] == 0 and site["idle"] == 3
    assert site["listenQueue"] == 0 and site["listenQueueLen"] > 0
    assert plain == {"name": "plain", "listen": fpm.listen("plain"), "source": "processes",
                     "processManager": "dynamic", "maxChildren": 1, "total": 1,
                     "listenQueue": 0, "listenQueueLen": plain["listenQueueLen"]}


def test_a_full_pool_shows_its_listen_queue_and_max_children_reached(php_fpm):
    """pm.max_children = 1 and five requests held open: one worker busy, four waiting. On a
    unix socket the queue comes from the kernel (FPM's page says 0 there); on TCP from FPM."""
    fpm = php_fpm({"unix": {"status_listen": True}, "tcp": {"tcp": True,
                                                                "status_listen": True}})
    ctx = agent.CollectorContext()
    before = pools_of(collect(ctx), fpm)
    assert all(p["listenQueue"] == 0 and "maxChildrenReached" not in p for p in before.values())
    ctx.rates.end_cycle()
    held = fpm.hold("unix", 5) + fpm.hold("tcp", 5)
    try:
        # FPM's manager checks its pools once a second.
        assert wait_for(lambda: all(fpm.status(name)["max children reached"] >= 1
                                    for name in ("unix", "tcp")), timeout=15)
        assert wait_for(lambda: all(p["listenQueue"] == 4
                                    for p in pools_of(collect(agent.CollectorContext()),
                                                      fpm).values()), timeout=15)
        during = pools_of(collect(ctx), fpm)
    finally:
        for sock in held:
            sock.close()
    for name, pool in during.items():
        assert pool["source"] == "status", pool
        assert (pool["active"], pool["idle"], pool["total"]) == (1, 0, 1), pool
        assert pool["listenQueue"] == 4 and pool["maxChildrenReached"] == 1, pool
        assert pool["acceptedPerSec"] >= 0 and pool["slowRequests"] == 0
    assert during["tcp"]["maxListenQueue"] >= 4 and "maxListenQueue" not in during["unix"]
    ctx.rates.end_cycle()
    assert wait_for(lambda: all(p["listenQueue"] == 0 and p["active"] == 0
                                for p in pools_of(collect(agent.CollectorContext()),
                                                  fpm).values()), timeout=15)
    after = pools_of(collect(ctx), fpm)
    assert all(p["maxChildrenReached"] == 0 for p in after.values())


def test_a_request_past_the_slowlog_timeout_is_a_slow_request(php_fpm):
    fpm = php_fpm({"www": {"slowlog": 1, "max_children": 2}})
    ctx = agent.CollectorContext()
    assert "slowRequests" not in pools_of(collect(ctx), fpm)["www"]
    ctx.rates.end_cycle()
    assert fpm.sleep("www", 1.6) == "slept"
    assert wait_for(lambda: fpm.status("www")["slow requests"] == 1, timeout=10)
    assert pools_of(collect(ctx), fpm)["www"]["slowRequests"] == 1


def test_a_full_pool_without_a_status_socket_is_counted_from_its_processes(php_fpm):
    """The status request waits behind the busy worker like any other: it times out, the pool
    is reported from its processes with the reason, and the kernel still shows the queue."""
    fpm = php_fpm({"www": {}})
    held = fpm.hold("www", 3)
    try:
        # Asked of the kernel directly: a status request that timed out stays in the queue
        # until a worker takes it (and finds it closed), so each sample would add one.
        assert wait_for(lambda: queued(fpm.listen("www")) == 2, timeout=15)
        pool = pools_of(collect(agent.CollectorContext()), fpm)["www"]
    finally:
        for sock in held:
            sock.close()
    assert pool["source"] == "processes" and pool["total"] == 1
    assert "timed out" in pool["statusError"] and "pm.status_listen" in pool["statusError"]
    assert "active" not in pool and pool["listenQueue"] == 2


def test_settings_add_a_pool_and_name_its_status_path(php_fpm):
    fpm = php_fpm({"www": {"status": False}, "other": {}})
    settings = {"pools": [{"name": "www", "statusPath": "/nowhere"},
                          {"name": "elsewhere", "listen": fpm.listen("other"),
                           "statusPath": "/fpm-status"}]}
    ctx = agent.CollectorContext(services={"phpfpm": settings})
    result = collect(ctx)
    www = pools_of(result, fpm)["www"]
    assert www["source"] == "processes" and "404" in www["statusError"]
    elsewhere = [p for p in result["pools"] if p["name"] == "elsewhere"]
    assert len(elsewhere) == 1 and elsewhere[0]["source"] == "status"
    assert elsewhere[0]["total"] == 1


def test_misshapen_pools_setting_is_unavailable_with_the_reason(php_fpm):
    php_fpm({"www": {}})
    ctx = agent.CollectorContext(services={"phpfpm": {"pools": "www"}})
    _, unavailable = agent.run_collectors(("phpfpm",), ctx)
    assert "services.phpfpm.pools" in unavailable["phpfpm"]


def test_a_configured_pool_with_nothing_running_is_absent(tmp_path):
    """No master of ours, and the configured pool's socket is not there: absent, not an error
    (unless the machine runs php-fpm of its own, whose pools would then be reported)."""
    ctx = agent.CollectorContext(services={"phpfpm": {"pools": [
        {"name": "gone", "listen": str(tmp_path / "gone.sock"), "statusPath": "/fpm-status"}]}})
    try:
        result = agent.collect_phpfpm(ctx)
    except agent.ServiceAbsent:
        return
    assert [p["statusError"] for p in result["pools"] if p["name"] == "gone"] == \
        [f"nothing listens on {tmp_path / 'gone.sock'}"]


def test_a_stopped_master_takes_its_pools_with_it(php_fpm):
    fpm = php_fpm({"www": {}})
    assert pools_of(collect(agent.CollectorContext()), fpm)
    stop_php_fpm(fpm)
    try:
        assert not pools_of(agent.collect_phpfpm(agent.CollectorContext()), fpm)
    except agent.ServiceAbsent:
        pass


def test_masters_are_kept_between_samples_until_one_is_gone(php_fpm, tmp_path):
    """The full process scan is not repeated while the masters it found run: workers are
    counted from their children meanwhile; a master that stopped makes the next sample look
    again, and so finds the one started in its place."""
    fpm = php_fpm({"www": {"status": False}})
    ctx = agent.CollectorContext()
    assert pools_of(collect(ctx), fpm)["www"]["total"] == 1
    assert fpm.process.pid in ctx.held["phpfpm"]["masters"]
    assert pools_of(collect(ctx), fpm)["www"]["total"] == 1  # from the master's children
    stop_php_fpm(fpm)
    replacement = php_fpm({"next": {}}, folder=tmp_path / "replacement")
    assert set(pools_of(collect(ctx), replacement)) == {"next"}
    assert fpm.process.pid not in ctx.held["phpfpm"]["masters"]


def test_the_agent_reports_its_pools_to_the_panel(php_fpm, panel, tmp_path):
    """The real agent (--once) sends the pools to the real panel, which keeps them in the
    sample's detail; a second run brings the rates."""
    fpm = php_fpm({"www": {}})
    _, key = new_server("php-host")
    config = write_agent_config(tmp_path / "agent", panel.url, key,
                                enabledCollectors=["cpu", "phpfpm"])
    for run in range(2):
        if run:  # samples are stamped to the second: the next one makes a new sample
            started = int(time.time())
            assert wait_for(lambda: int(time.time()) > started, timeout=5, step=0.02)
        result = subprocess.run([sys.executable, str(ROOT / "agent.py"), "--config", str(config),
                                 "--once"], env=agent_env(), capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 0, result.stderr
    rows = list(models.Metric.select().order_by(models.Metric.timestamp))
    assert len(rows) == 2
    pools = {p["listen"]: p for p in rows[-1].detail["services"]["phpfpm"]["pools"]}
    www = pools[fpm.listen("www")]
    assert www["source"] == "status" and www["total"] == 1 and "acceptedPerSec" in www
    assert "statusError" not in www
