"""Service checks end to end: the real agent (`--once`, as cron runs it) reports a real Redis the
test starts on its own port, the panel stores it, and the checks job opens "service down" when
that Redis is stopped and resolves it when it is back — one alert, naming the service, what it
says now and what it was."""
import shutil
import subprocess
import sys

import pytest

from panel import checks, jobs, models, operations
from tests.conftest import (ROOT, free_port, new_server, require, stop_process, wait_for_port,
                            write_agent_config)
from tests.integration.test_dashboard_pages import admin  # noqa: F401 (the fixture)
from tests.integration.test_once import once


def start_redis(tmp_path, port):
    binary = shutil.which("redis-server")
    require("redis-server", binary, "apt-get install redis-server")
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1",
                                "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    wait_for_port(port, process)
    return process


def report(config, **how):
    """One `agent.py --once` (`how`: once's options) -> the newest stored sample."""
    result = once(config, **how)
    assert result.returncode == 0, result.stderr
    return models.Metric.select().order_by(models.Metric.timestamp.desc()).first()


def redis_agent(panel, tmp_path, name):
    """A new server whose agent collects only a Redis on a port of the test's own, with
    "service down" firing at the first sample without it. -> (agent config, port)."""
    port = free_port()
    _, key = new_server(name)
    operations.set_rule("service_down", 0, 0)
    config = write_agent_config(tmp_path / "agent", panel.url, key,
                                enabledCollectors=["cpu", "redis"],
                                services={"redis": {"port": port}})
    return config, port


@pytest.mark.timeout(120)
def test_a_service_seen_then_stopped_is_down_until_it_answers_again(panel, tmp_path):
    config, port = redis_agent(panel, tmp_path, "cache-1")
    redis = start_redis(tmp_path, port)
    try:
        sample = report(config)
        assert "redis" in sample.services
        assert jobs.evaluate_checks(300) == (0, 0)
        state = models.CheckState.get(metric="service_down", subject="redis")
        assert (state.bad_since, state.was) == (None, "up")
    finally:
        stop_process(redis)

    sample = report(config)
    assert "redis" not in (sample.services or {})
    assert sample.unavailable["redis"].startswith("gone: ")
    assert jobs.evaluate_checks(300) == (1, 0)
    assert jobs.evaluate_checks(300) == (0, 0)  # once
    [alert] = models.Alert.select()  # one: only Redis is collected here
    assert alert.rule == "service_down" and alert.state == "firing"
    assert alert.message.startswith("Service down: redis: not answering (")
    assert alert.message.endswith("; was up")

    redis = start_redis(tmp_path, port)
    try:
        sample = report(config)  # the agent looks again at once for a service it had seen
        assert "redis" in sample.services
        assert jobs.evaluate_checks(300) == (0, 1)
    finally:
        stop_process(redis)
    alert = models.Alert.get_by_id(alert.id)
    assert alert.state == "resolved" and alert.resolved_at is not None
    assert alert.message.startswith("Service down: redis: not answering (")  # what it was


def test_a_service_never_seen_raises_nothing(panel, tmp_path):
    server, key = new_server("plain-1")
    config = write_agent_config(tmp_path / "agent", panel.url, key,
                                enabledCollectors=["cpu", "redis"],
                                services={"redis": {"port": free_port()}})
    report(config)
    assert jobs.evaluate_checks(300) == (0, 0)
    assert models.Alert.select().count() == 0
    assert models.CheckState.get_or_none(metric="service_down", subject="redis") is None
    assert checks.BY_METRIC["service_down"].judge({}, {}, 0, {}) == {}


def redis_seen_then_stopped(panel, tmp_path, name, check_between=True):
    """A server whose agent reported a Redis of the test's own, then reported again with that
    Redis stopped. -> the agent's config."""
    config, port = redis_agent(panel, tmp_path, name)
    redis = start_redis(tmp_path, port)
    try:
        first = report(config)
        assert "redis" in (first.services or {}), first.unavailable  # seen
    finally:
        stop_process(redis)
    if check_between:
        assert jobs.evaluate_checks(300) == (0, 0)
    report(config)
    return config


def test_a_service_switched_off_in_the_panel_settings_is_forgotten_not_down(panel, tmp_path):
    redis_seen_then_stopped(panel, tmp_path, "cache-2")
    # The panel narrowed collection to cpu: redis gone is what the admin asked for.
    assert jobs.evaluate_checks(300, enabled_collectors=("cpu",)) == (0, 0)
    assert models.CheckState.get_or_none(metric="service_down", subject="redis") is None
    assert models.Alert.select().count() == 0


def test_the_servers_table_shows_each_service_and_the_one_down(panel, admin,  # noqa: F811
                                                               tmp_path):
    # No check run while it was up: the agent's own word ("gone") is enough.
    redis_seen_then_stopped(panel, tmp_path, "cache-3", check_between=False)
    _, quiet_key = new_server("quiet-3")
    report(write_agent_config(tmp_path / "quiet", panel.url, quiet_key,
                              enabledCollectors=["cpu"]))
    assert jobs.evaluate_checks(300)[0] >= 1
    page = admin.request("GET", "/servers?sort=services&dir=desc").text
    assert '<span class="tag bad" title="down">redis</span>' in page
    assert page.index("cache-3") < page.index("quiet-3")  # most problems first


@pytest.mark.timeout(120)
def test_a_full_php_fpm_pool_fires_its_queue_and_max_children_checks_and_both_resolve(
        panel, tmp_path, php_fpm):
    """A real php-fpm master of the test's own (pm.max_children = 1) found by the real agent
    among the running processes; three requests held open keep its one worker busy and two
    waiting: the listen queue and "max children reached" checks fire, once each, naming the
    pool, and resolve when the requests are let go."""
    from tests.conftest import wait_for

    fpm = php_fpm({"shop": {"status_listen": True}})
    server, key = new_server("php-1")
    operations.set_rule("fpm_queue", 0, 0)
    operations.set_rule("fpm_children", 0, 0)
    config = write_agent_config(tmp_path / "agent", panel.url, key,
                                enabledCollectors=["cpu", "phpfpm"])

    def pool(sample):
        return next(p for p in sample.services["phpfpm"]["pools"] if p["name"] == "shop")

    assert pool(report(config))["listenQueue"] == 0  # the first sample: no counts since yet
    assert jobs.evaluate_checks(300) == (0, 0)
    held = fpm.hold("shop", 3)
    try:
        assert wait_for(lambda: fpm.status("shop")["max children reached"] >= 1, timeout=15)
        busy = pool(report(config))
        assert busy["listenQueue"] == 2 and busy["maxChildrenReached"] >= 1, busy
        assert jobs.evaluate_checks(300) == (2, 0)
        assert jobs.evaluate_checks(300) == (0, 0)
    finally:
        for sock in held:
            sock.close()
    messages = sorted(alert.message for alert in models.Alert.select())
    assert messages[0].startswith("PHP-FPM listen queue: pool shop: 2 connections waiting in "
                                  "the listen queue; was 0 connections waiting")
    assert messages[1].startswith("PHP-FPM max children: pool shop: reached pm.max_children")

    assert wait_for(lambda: fpm.status("shop")["active processes"] <= 1 and
                    fpm.status("shop")["listen queue"] == 0, timeout=15)
    calm = pool(report(config))
    assert calm["listenQueue"] == 0 and calm["maxChildrenReached"] == 0, calm
    assert jobs.evaluate_checks(300) == (0, 2)
    assert {alert.state for alert in models.Alert.select()} == {"resolved"}


@pytest.mark.timeout(120)
def test_the_servers_table_shows_a_column_per_chosen_service_sorted_worst_first(
        panel, admin, tmp_path):  # noqa: F811
    redis_seen_then_stopped(panel, tmp_path / "down", "cache-4", check_between=False)
    config, port = redis_agent(panel, tmp_path / "up", "cache-5")
    redis = start_redis(tmp_path, port)
    try:
        report(config)
    finally:
        stop_process(redis)
    _, quiet_key = new_server("quiet-4")
    report(write_agent_config(tmp_path / "quiet", panel.url, quiet_key,
                              enabledCollectors=["cpu"]))
    jobs.evaluate_checks(300)

    page = admin.request("GET", "/servers?show=redis&show=nosuch&sort=svc-redis&dir=desc").text
    assert '<input class="column-choice" type="checkbox" name="show" value="redis" checked>' \
        in page
    assert page.count('<col class="c-svc1">') == 1  # the unknown name is not a column
    assert 'aria-sort="descending"><a href="/servers?sort=svc-redis&amp;dir=asc' in page
    assert "&amp;show=redis\">" in page  # every header link keeps the columns
    rows = page.split('<tbody id="server-rows"', 1)[1]
    cells = [row.split('<td class="svc-one">', 1)[1].split("</td>", 1)[0].strip()
             for row in rows.split("<tr ")[1:] if "data-server-id" in row]
    assert cells == ['<span class="tag bad" title="redis is down">down</span>',
                     '<span class="tag" title="redis is up">up</span>', ""]
    assert rows.index("cache-4") < rows.index("cache-5") < rows.index("quiet-4")

    # The live refresh asks with the same columns (the form's inputs) and gets them.
    partial = admin.request("GET", "/servers?show=redis", headers={"HX-Request": "true"}).text
    assert partial.count('<td class="svc-one">') == 3
    assert admin.request("GET", "/servers").text.count('<td class="svc-one">') == 0
