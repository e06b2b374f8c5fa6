"""Traffic totals and quotas on the real databases: samples through the real ingest endpoint
with a counter reset and a gap give exact totals, recomputing adds nothing, and the quota alerts
at 80 % and 100 % fire and resolve (a raised allowance, a new cycle), per server and per
customer (panel/quotas.py)."""
import datetime
import html

import peewee
import pytest

from panel import jobs, models, operations, quotas, rollups, settings, traffic
from panel.db import utcnow
from tests.conftest import TEST_BCRYPT_ROUNDS, bearer, http_request, new_server
from tests.integration.test_dashboard import PASSWORD, Browser
from tests.integration.test_dashboard_pages import csrf


def send(panel, server_id, key, moment, counters):
    """One sample with these {interface: (received, sent)} counters (None: no network section),
    as the agent sends it (or replays it from its buffer)."""
    metrics = {"cpu": {"usage": 1.0}, "memory": {"total": 100, "used": 10}}
    if counters is not None:
        metrics["network"] = {"interfaces": [
            {"interface": name, "bytesRecv": received, "bytesSent": sent}
            for name, (received, sent) in counters.items()]}
    document = {"serverId": server_id, "timestamp": moment.isoformat() + "Z", "metrics": metrics}
    response = http_request(panel, "POST", "/api/agent/metrics", json_body=document,
                            headers=bearer(key))
    assert response.status == 200 and response.json()["stored"] == 1, response.text


def billing_day_a_day_ago(now):
    """A billing day whose cycle began at least a day before `now`: the test's samples of the
    last hours are all in the current cycle, whatever day the suite runs on."""
    return min((now - datetime.timedelta(days=1)).day, 28)


def stored_totals(agent_id):
    hours = models.TrafficHour.select(peewee.fn.SUM(models.TrafficHour.received),
                                      peewee.fn.SUM(models.TrafficHour.sent)) \
        .where(models.TrafficHour.agent == agent_id)
    return tuple(int(v or 0) for v in hours.tuples().first())


def test_totals_are_exact_across_a_counter_reset_and_a_gap_and_recomputing_adds_nothing(panel):
    server, key = new_server("web")
    now = utcnow().replace(microsecond=0)
    operations.set_server_quota(server.id, billing_day_a_day_ago(now), "")
    start = now - datetime.timedelta(hours=3)
    series = [
        (0, {"eth0": (1000, 100), "eth1": (50, 5)}),       # the base
        (1, {"eth0": (2000, 300), "eth1": (60, 6)}),       # +1000/+200, +10/+1
        (2, None),                                          # network collector failed
        (95, {"eth0": (5000, 700), "eth1": (70, 7)}),      # a 93-minute gap: +3000/+400, +10/+1
        (96, {"eth0": (400, 50), "eth1": (5, 1)}),         # rebooted: +400/+50, +5/+1
        (150, {"eth0": (900, 80), "veth9": (10 ** 9, 1)}),  # +500/+30; veth9 new: nothing yet
        (170, {"eth0": (1900, 90), "veth9": (10 ** 9 + 7, 2)}),  # +1000/+10, +7/+1
    ]
    # The last samples first, then the older ones, as a replayed buffer arrives after a
    # live sample: the hours they land in are recomputed whatever the order.
    for minute, counters in series[-2:] + series[:-2]:
        send(panel, server.id, key, start + datetime.timedelta(minutes=minute), counters)
    agent = models.Agent.get(models.Agent.server == server.id)
    expected = (1000 + 10 + 3000 + 10 + 400 + 5 + 500 + 1000 + 7,
                200 + 1 + 400 + 1 + 50 + 1 + 30 + 10 + 1)

    jobs.JobRunner(settings.from_env({})).run_once()
    assert stored_totals(agent.id) == expected
    rollups.run_rollups()
    quotas.recompute_spans([(agent.id, start), (agent.id, start + datetime.timedelta(hours=2))])
    assert stored_totals(agent.id) == expected  # written over, never added

    usage = quotas.server_usages()[server.id]
    assert (usage.received, usage.sent, usage.used) == (*expected, sum(expected))


def hours_of(agent_id, received, sent, at):
    models.upsert_traffic_hours([(agent_id, traffic.floor_hour(at), received, sent)])


def firing(rule):
    return sorted((a.server.name, a.open_key) for a in models.Alert.select()
                  .where((models.Alert.rule == rule) & (models.Alert.state == "firing")))


def test_server_alerts_fire_at_80_and_100_percent_and_resolve_when_raised_or_a_new_cycle(
        database):
    server, _ = new_server("web")
    agent = models.Agent.get(models.Agent.server == server.id)
    now = utcnow()
    operations.set_server_quota(server.id, billing_day_a_day_ago(now), "1000", "sum")
    hours_of(agent.id, 600, 250, now - datetime.timedelta(hours=2))

    assert quotas.evaluate(now) == (1, 0)
    assert firing("quota") == [("web", "quota:80")]
    assert quotas.evaluate(now) == (0, 0)  # once, not every run
    message = models.Alert.get(models.Alert.open_key == "quota:80").message
    assert "850 B of 1000 B (85.0 %" in message

    operations.set_server_quota(server.id, billing_day_a_day_ago(now), "800", "sum")
    assert quotas.evaluate(now) == (1, 0)
    assert firing("quota") == [("web", "quota:100"), ("web", "quota:80")]
    operations.set_server_quota(server.id, billing_day_a_day_ago(now), "800", "max")
    assert quotas.evaluate(now) == (0, 2)  # 600 of 800 counted as the larger: 75 %
    assert firing("quota") == []

    operations.set_server_quota(server.id, billing_day_a_day_ago(now), "700", "sum")
    assert quotas.evaluate(now) == (2, 0)
    _, end = traffic.cycle(now, billing_day_a_day_ago(now))
    assert quotas.evaluate(end + datetime.timedelta(hours=1)) == (0, 2)  # a new cycle
    assert firing("quota") == []
    resolved = models.Alert.select().where(models.Alert.state == "resolved").count()
    assert resolved == 4


def test_a_customers_allowance_covers_its_servers_together_and_alerts_its_channel(database):
    customer = operations.add_customer("Acme")
    small, _ = operations.add_server("acme-small", 4, customer_id=customer.id)
    big, _ = operations.add_server("acme-big", 4, customer_id=customer.id)
    other, _ = new_server("staff-box")
    channel = operations.add_channel("acme-ops", "webhook", "https://hooks.example.com/acme",
                                     customer_id=customer.id)
    now = utcnow()
    day = billing_day_a_day_ago(now)
    operations.set_customer_quota(customer.id, day, "1 kB")
    for server, received in ((small, 300), (big, 500), (other, 10 ** 6)):
        agent = models.Agent.get(models.Agent.server == server.id)
        hours_of(agent.id, received, 50, now - datetime.timedelta(hours=1))

    usage, servers = quotas.customer_usages(now=now)[customer.id]
    assert usage.used == 900 and {name for _, name, _ in servers} == {"acme-small", "acme-big"}
    assert quotas.evaluate(now) == (1, 0)
    assert firing("customer_quota") == [("acme-big", "cquota:80")]  # on its busiest server
    alert = models.Alert.get(models.Alert.rule == "customer_quota")
    assert "customer Acme" in alert.message
    assert [d.channel_id for d in models.Delivery.select().where(
        models.Delivery.alert == alert.id)] == [channel.id]

    operations.set_customer_quota(customer.id, day, "2 kB")  # raised
    assert quotas.evaluate(now) == (0, 1)
    assert firing("customer_quota") == []


@pytest.mark.parametrize("backend_url", ["sqlite"], indirect=True)
def test_the_pages_show_traffic_and_staff_admins_set_quotas_through_their_forms(panel):
    operations.set_admin("admin", PASSWORD, TEST_BCRYPT_ROUNDS)
    customer = operations.add_customer("Acme")
    server, _ = operations.add_server("acme-web", TEST_BCRYPT_ROUNDS, customer_id=customer.id)
    operations.set_admin("acme-ops", PASSWORD, TEST_BCRYPT_ROUNDS, role="customer-admin",
                         customer_id=customer.id)
    agent = models.Agent.get(models.Agent.server == server.id)
    now = utcnow()
    day = billing_day_a_day_ago(now)
    hours_of(agent.id, 600, 250, now - datetime.timedelta(hours=1))
    browser = Browser(panel)
    assert browser.login().status == 303

    changed = post(browser, f"/servers/{server.id}/quota",
                   {"billing_day": str(day), "allowance": "1 kB", "basis": "sum"},
                   csrf_path=f"/servers/{server.id}")
    assert changed.status == 303
    table = browser.request("GET", "/servers").text
    assert "Traffic this cycle" in table and "850 B / 1000 B (85 %)" in table
    page = html.unescape(browser.request("GET", f"/servers/{server.id}").text)
    assert "850 B of 1000 B (85.0 %)" in page and 'value="1 KB"' in page
    refused = post(browser, f"/servers/{server.id}/quota",
                   {"billing_day": "32", "allowance": "1 kB", "basis": "sum"},
                   csrf_path=f"/servers/{server.id}")
    assert refused.status == 400 and "billing day must be" in html.unescape(refused.text)

    assert post(browser, f"/customers/{customer.id}/quota",
                {"billing_day": str(day), "allowance": "2 TB", "basis": "max"},
                csrf_path=f"/customers/{customer.id}").status == 303
    listed = html.unescape(browser.request("GET", "/customers").text)
    assert "600 B of 1.82 TiB (0.0 %)" in listed  # the larger of in and out
    assert models.Customer.get_by_id(customer.id).traffic_allowance == 2 * 10 ** 12

    # A customer's admin sees the figure, and may not set the quota its host bills by.
    theirs = Browser(panel)
    assert theirs.login("acme-ops").status == 303
    assert "850 B / 1000 B" in theirs.request("GET", "/servers").text
    assert post(theirs, f"/servers/{server.id}/quota", {"billing_day": "1", "allowance": ""},
                csrf_path="/servers").status == 403
    assert models.Server.get_by_id(server.id).traffic_allowance == 1000


def post(browser, path, form, csrf_path):
    return browser.request("POST", path, form={**form, "csrf_token": csrf(browser, csrf_path)},
                           headers={"Accept": "text/html"})
