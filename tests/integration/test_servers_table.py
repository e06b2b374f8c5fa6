"""The servers table at fleet size: the sort, filter and window run in SQL and agree with what
the rows show; the page loads screenful by screenful; a refresh sends only what changed."""
import datetime
import random
import re
from urllib.parse import quote, urlencode

import pytest

from panel import access, checks, fleet_table, models, operations, views
from panel.db import utcnow
from tests.conftest import TEST_BCRYPT_ROUNDS
from tests.integration.test_dashboard import admin, browser  # noqa: F401 (fixtures)

OFFLINE_AFTER = 300
COLUMNS = views.shown_columns([], [])  # every column but the services'
EVERYTHING = access.EVERYTHING
ROW = re.compile(r'<tr (?:hx-swap-oob="true" )?data-v="([^"]+)" id="row-(\d+)"[^>]*'
                 r'data-server-id="(\d+)"')


def _number(value):
    return float("-inf") if value is None else value


# What each sort means, in Python over the rows as the table shows them (the specification the
# SQL in fleet_table.py must meet): ties keep the fleet's name order.
def reference_key(sort):
    if sort == "name":
        return lambda r: r["name"].lower()
    if sort == "hostname":
        return lambda r: r["hostname"].lower()
    if sort == "status":
        return lambda r: (fleet_table.STATUSES.index(r["status"]), r["name"].lower())
    if sort == "seen":
        return lambda r: -(r["last_seen_epoch"] or -1e12)
    if sort == "version":
        return lambda r: r["version"]
    if sort == fleet_table.DISK_FULL:
        return lambda r: r[sort][1] if r[sort] else float("inf")
    if sort == "services":
        return lambda r: (len(r["problems"]), len(r["services"]))
    if sort == "traffic":
        return lambda r: (_number((r["traffic"] or {}).get("percent")),
                          (r["traffic"] or {}).get("used", 0))
    if sort.startswith(fleet_table.SERVICE_SORT_PREFIX):
        name = sort[len(fleet_table.SERVICE_SORT_PREFIX):]

        def rank(r):
            state, wrong = r["service_states"].get(name, (None, []))
            return (len(checks.SERVICE_STATES) - checks.SERVICE_STATES.index(state)
                    if state else 0, len(wrong))
        return rank
    return lambda r: _number(r[sort])


def seed_fleet(count, seed=7):
    """`count` servers with varied figures, states, check states, forecasts and traffic, many
    of them tied on each column; values differ by more than the table's rounding."""
    rng = random.Random(seed)
    now = utcnow().replace(microsecond=0)
    service_checks = [c for c in checks.CHECKS if c.service and c.metric != "service_down"]
    with models.database_proxy.atomic():
        for index in range(count):
            server, _ = operations.add_server(f"srv{index:03d}" if index % 5 else
                                              f"Srv{index:03d}", TEST_BCRYPT_ROUNDS)
            agent = models.Agent.get(models.Agent.server == server.id)
            kind = index % 4  # 0 never seen, 1 offline, 2-3 online
            if kind == 0:
                continue
            seen = now - datetime.timedelta(seconds=rng.choice([10, 20, 3600, 7200])
                                            if kind == 1 else rng.choice([5, 30, 60]))
            models.Agent.update(
                last_seen=seen, hostname=rng.choice(["", "Web%d.example" % index, "db"]),
                agent_version=rng.choice(["0.2.0", "0.3.0", ""])).where(
                models.Agent.id == agent.id).execute()
            figures_row = {"cpu_usage": rng.choice([None, 5.0, 12.5, 80.0]),
                           "memory_used": rng.choice([None, 1 << 30, 3 << 30]),
                           "memory_total": rng.choice([None, 0, 8 << 30]),
                           "disk_max_percent": rng.choice([None, 40.0, 91.5]),
                           "network_rx_rate": rng.choice([None, 100.0, 5000.0]),
                           "network_tx_rate": rng.choice([None, 100.0, 7000.0]),
                           "cpu_load_1min": rng.choice([None, 0.5, 2.0])}
            models.Metric.insert(agent=agent.id, timestamp=seen, **figures_row).execute()
            models.LatestSample.insert(agent=agent.id, timestamp=seen).execute()
            for service in rng.sample(fleet_table.SERVICE_NAMES, rng.randint(0, 3)):
                models.CheckState.insert(
                    agent=agent.id, metric="service_down", subject=service, text="",
                    bad_since=seen if rng.random() < 0.3 else None, updated_at=seen).execute()
            for check in rng.sample(service_checks, rng.randint(0, 2)):
                models.CheckState.insert(
                    agent=agent.id, metric=check.metric, subject="x", text="bad",
                    bad_since=seen if rng.random() < 0.6 else None, updated_at=seen).execute()
            if rng.random() < 0.4:
                models.MountForecast.insert(
                    agent=agent.id, mount="/var", used=1, capacity=2, bytes_per_day=1.0,
                    full_at=now + datetime.timedelta(days=rng.choice([1, 3, 30])),
                    reason="", computed_at=now).execute()
            if rng.random() < 0.6:
                models.Server.update(
                    billing_day=rng.choice([1, 15, 31]),
                    traffic_allowance=rng.choice([None, 10 << 30]),
                    traffic_basis=rng.choice(["sum", "max"])).where(
                    models.Server.id == server.id).execute()
                models.TrafficDay.insert(agent=agent.id, day=now.replace(
                    hour=0, minute=0, second=0), received=rng.choice([1, 3]) << 30,
                    sent=rng.choice([1, 2]) << 30).execute()
    return now


def test_every_sort_orders_the_fleet_as_its_shown_values_do(database):
    now = seed_fleet(60)
    # The fleet in the database's own name order: the ties' order.
    by_name = fleet_table.build_rows(models.fleet(EVERYTHING), EVERYTHING, now, OFFLINE_AFTER)
    assert len(by_name) == 60
    for sort in fleet_table.SORTS:
        for descending in (False, True):
            expected = [r["id"] for r in sorted(by_name, key=reference_key(sort),
                                                reverse=descending)]
            rows, matched = fleet_table.window(EVERYTHING, now, OFFLINE_AFTER, sort=sort,
                                               descending=descending, limit=None)
            assert matched == 60
            assert [r["id"] for r in rows] == expected, (sort, descending)
            # A window is the same slice of the same order.
            page, _ = fleet_table.window(EVERYTHING, now, OFFLINE_AFTER, sort=sort,
                                         descending=descending, offset=20, limit=15)
            assert [r["id"] for r in page] == expected[20:35], (sort, descending)


def test_the_filter_matches_name_or_hostname_in_any_case_and_wildcards_literally(database):
    now = seed_fleet(40)
    everyone = fleet_table.server_rows(OFFLINE_AFTER, EVERYTHING, now)
    for text in ("SRV01", "web1", "db", "%", "_", "srv0_", "\\"):
        rows, matched = fleet_table.window(EVERYTHING, now, OFFLINE_AFTER, text=text,
                                           limit=None)
        expected = [r["id"] for r in everyone if text.lower() in r["name"].lower() or
                    text.lower() in r["hostname"].lower()]
        assert [r["id"] for r in rows] == expected and matched == len(expected), text
    for status in fleet_table.STATUSES:
        rows, matched = fleet_table.window(EVERYTHING, now, OFFLINE_AFTER, status=status,
                                           limit=5)
        expected = [r["id"] for r in everyone if r["status"] == status]
        assert matched == len(expected) and [r["id"] for r in rows] == expected[:5]
    counts = fleet_table.summary(EVERYTHING, now, OFFLINE_AFTER)
    assert counts == {"total": 40, **{s: sum(1 for r in everyone if r["status"] == s)
                                      for s in fleet_table.STATUSES}}


def test_a_customer_sees_and_counts_only_its_own_servers(database):
    now = seed_fleet(12)
    customer = operations.add_customer("Acme")
    mine = [s.id for s in models.Server.select().order_by(models.Server.id)][:5]
    models.Server.update(customer=customer.id).where(models.Server.id.in_(mine)).execute()
    theirs = EVERYTHING.narrowed(customer.id)
    rows, matched = fleet_table.window(theirs, now, OFFLINE_AFTER, sort="cpu", limit=None)
    assert sorted(r["id"] for r in rows) == sorted(mine) and matched == 5
    assert fleet_table.summary(theirs, now, OFFLINE_AFTER)["total"] == 5


# ----- over HTTP --------------------------------------------------------------------------------

def page_rows(text):
    return [(version, int(position), int(server)) for version, position, server in
            ROW.findall(text)]


def summary_version(text):
    return re.search(r'id="summary" class="summary" data-v="([^"]+)"', text).group(1)


def csrf(text):
    return re.search(r'"X-CSRF-Token": "([^"]+)"', text).group(1)


def refresh(browser, token, have, summary, **query):
    return browser.request("POST", "/servers/refresh?" + urlencode(query, doseq=True),
                           form={"have": "".join(have), "summary": summary},
                           headers={"X-CSRF-Token": token, "HX-Request": "true"})


def test_the_page_loads_screenful_by_screenful_to_the_end(browser, panel):
    for index in range(fleet_table.PAGE_ROWS * 2 + 30):
        operations.add_server(f"n{index:04d}", TEST_BCRYPT_ROUNDS)
    browser.login()
    page = browser.request("GET", "/servers")
    assert page.status == 200
    seen = page_rows(page.text)
    assert [p for _, p, _ in seen] == list(range(fleet_table.PAGE_ROWS))
    assert "230</strong> servers" in page.text  # the summary counts the whole fleet
    loader = re.search(r'<tr id="more" class="more" hx-get="([^"]+)"', page.text)
    for _ in range(5):  # bounded: three screenfuls and the end
        if loader is None:
            break
        more = browser.request("GET", loader.group(1).replace("&amp;", "&"))
        assert more.status == 200
        seen += page_rows(more.text)
        loader = re.search(r'<tr id="more" class="more" hx-get="([^"]+)"', more.text)
    assert 'class="more end" hidden' in more.text
    names = [server for _, _, server in seen]
    assert [p for _, p, _ in seen] == list(range(230)) and len(set(names)) == 230
    expected = [s.id for s in models.Server.select().order_by(models.Server.name)]
    assert names == expected
    # Without script, "Show more" asks for a longer first screenful.
    longer = browser.request("GET", "/servers?rows=200&sort=name&dir=desc")
    assert [s for _, _, s in page_rows(longer.text)] == expected[::-1][:200]


def test_a_refresh_sends_nothing_when_nothing_changed_and_only_the_changed_rows(browser,
                                                                               panel):
    now = utcnow()
    servers = []
    for index in range(30):
        server, _ = operations.add_server(f"r{index:02d}", TEST_BCRYPT_ROUNDS)
        agent = models.Agent.get(models.Agent.server == server.id)
        models.Agent.update(last_seen=now).where(models.Agent.id == agent.id).execute()
        models.Metric.insert(agent=agent.id, timestamp=now, cpu_usage=10.0).execute()
        models.LatestSample.insert(agent=agent.id, timestamp=now).execute()
        # Traffic this cycle, against an allowance: its projection moves with the clock.
        yesterday = now.replace(hour=0, minute=0, second=0, microsecond=0) - \
            datetime.timedelta(days=1)
        models.TrafficDay.insert(agent=agent.id, day=yesterday, received=index << 30,
                                 sent=1 << 30).execute()
        # A cycle two days old whatever today's date: old enough to project.
        models.Server.update(traffic_allowance=100 << 30, billing_day=(
            now - datetime.timedelta(days=2)).day).where(models.Server.id == server.id).execute()
        servers.append((server, agent))
    browser.login()
    page = browser.request("GET", "/servers").text
    token, rows, summary = csrf(page), page_rows(page), summary_version(page)
    have = [version for version, _, _ in rows]
    assert len(have) == 30

    assert "projected" in page
    unchanged = refresh(browser, token, have, summary)
    assert unchanged.status == 204 and unchanged.body == b""

    # One server's newer sample: its row alone, at its position; the summary is the same.
    server, agent = servers[7]
    later = now + datetime.timedelta(seconds=5)
    models.Metric.insert(agent=agent.id, timestamp=later, cpu_usage=55.5).execute()
    models.LatestSample.update(timestamp=later).where(
        models.LatestSample.agent == agent.id).execute()
    one = refresh(browser, token, have, summary)
    assert one.status == 200
    assert [(p, s) for _, p, s in page_rows(one.text)] == [(7, server.id)]
    assert "55.5 %" in one.text and 'id="summary"' not in one.text
    assert len(one.body) < 3000

    # The browser now shows it: nothing again.
    have[7] = page_rows(one.text)[0][0]
    assert refresh(browser, token, have, summary).status == 204

    # Another goes quiet: its row, and the summary, title and icon with it.
    server, agent = servers[3]
    models.Agent.update(last_seen=now - datetime.timedelta(hours=1)).where(
        models.Agent.id == agent.id).execute()
    offline = refresh(browser, token, have, summary)
    assert [(p, s) for _, p, s in page_rows(offline.text)] == [(3, server.id)]
    assert "badge offline" in offline.text
    assert '<section hx-swap-oob="true" id="summary"' in offline.text
    assert "<title>1 offline · mPanel</title>" in offline.text
    assert 'href="/static/favicon-alert.svg" hx-swap-oob="true"' in offline.text


def test_a_refresh_moves_rows_with_the_sort_and_removes_those_past_the_end(browser, panel):
    for index in range(6):
        operations.add_server(f"m{index}", TEST_BCRYPT_ROUNDS)
    browser.login()
    page = browser.request("GET", "/servers?q=m").text
    token, summary = csrf(page), summary_version(page)
    have = [version for version, _, _ in page_rows(page)]
    # A server renamed out of the filter: the rows after it move up; the last is removed.
    models.Server.update(name="gone").where(models.Server.name == "m2").execute()
    moved = refresh(browser, token, have, summary, q="m")
    assert [p for _, p, _ in page_rows(moved.text)] == [2, 3, 4]
    assert '<tr id="row-5" hx-swap-oob="delete"></tr>' in moved.text
    assert '<tr id="more" class="more end" hx-swap-oob="true" hidden>' in moved.text
    # None left that match: the whole body again, saying so.
    for server in models.Server.select().where(models.Server.name.startswith("m")):
        models.Server.update(name=f"x{server.id}").where(
            models.Server.id == server.id).execute()
    empty = refresh(browser, token, have, summary, q="m")
    assert '<tbody id="server-rows" hx-swap-oob="true"' in empty.text
    assert "No server matches this filter." in empty.text


def test_a_refresh_refuses_what_is_not_a_list_of_versions(browser, panel):
    operations.add_server("solo", TEST_BCRYPT_ROUNDS)
    browser.login()
    page = browser.request("GET", "/servers").text
    token = csrf(page)
    no_token = browser.request("POST", "/servers/refresh", form={"have": "", "summary": ""})
    assert no_token.status == 403
    for have, status in (("abc", 400), ("abc<>!", 400), ("A" * 6 * (views.LIVE_ROWS_MAX + 1),
                                                        413)):
        refused = browser.request("POST", "/servers/refresh", form={"have": have},
                                  headers={"X-CSRF-Token": token})
        assert refused.status == status and refused.json()["field"] == "have", have[:10]
    for offset in ("-1", "x", "9" * 12, "\u00b2", "1e3", " 1"):
        refused = browser.request("GET", f"/servers/rows?offset={quote(offset)}")
        assert refused.status == 400 and refused.json()["field"] == "offset"


def test_a_rows_version_holds_while_only_the_clock_moves_and_follows_all_it_shows(database):
    now = seed_fleet(24)
    later = now + datetime.timedelta(seconds=40)  # still online: the same rows, older
    first, _ = fleet_table.window(EVERYTHING, now, OFFLINE_AFTER, limit=None)
    again, _ = fleet_table.window(EVERYTHING, later, OFFLINE_AFTER, limit=None)
    assert [r["last_seen"] for r in first] != [r["last_seen"] for r in again]
    held = 0
    for position, (row, same) in enumerate(zip(first, again)):
        if row["status"] == same["status"]:
            assert views.row_version(row, position, COLUMNS) == \
                views.row_version(same, position, COLUMNS)
            held += 1
    assert held > len(first) / 2
    shown = next(r for r in first if r["traffic"]["used"] and r[fleet_table.DISK_FULL] and
                 r["services"])
    version = views.row_version(shown, 3, COLUMNS)
    assert views.row_version(shown, 4, COLUMNS) != version  # rows are swapped by position
    assert views.row_version(shown, 3, views.shown_columns(["mysql"], [])) != version
    assert views.row_version(shown, 3, views.shown_columns([], ["cpu"])) != version
    full = shown[fleet_table.DISK_FULL]
    steady = {"last_seen": [],  # counted on by the browser
              "traffic": [dict(shown["traffic"], used=shown["traffic"]["used"] + 1)],
              fleet_table.DISK_FULL: [(full[0] + "x", full[1], full[2]),
                                      (full[0], full[1], "2031-01-01T00:00:00Z")]}
    assert set(steady) == set(views.STEADY)
    for key, value in shown.items():
        for other in steady.get(key, [("other", value)]):
            assert views.row_version(dict(shown, **{key: other}), 3, COLUMNS) != version, key
    # The seconds left to a full disk count down in the browser, not in the version.
    moved = dict(shown, **{fleet_table.DISK_FULL: (full[0], full[1] - 30, full[2])})
    assert views.row_version(moved, 3, COLUMNS) == version
    traffic = shown["traffic"]
    nudged = dict(shown, traffic=dict(traffic, projected=(traffic["projected"] or 0) + 1,
                                      text="moved"))
    if traffic["projected"] is not None:  # the projection creeps with the clock
        assert views.row_version(nudged, 3, COLUMNS) == version
        far = dict(shown, traffic=dict(traffic, projected=traffic["projected"] * 2))
        assert views.row_version(far, 3, COLUMNS) == version


def test_a_refresh_keeps_the_pages_customer_filter(browser, panel):
    customer = operations.add_customer("Acme")
    for index in range(4):
        server, _ = operations.add_server(f"c{index}", TEST_BCRYPT_ROUNDS,
                                          customer_id=customer.id if index % 2 else None)
    browser.login()
    page = browser.request("GET", f"/servers?customer={customer.id}").text
    assert len(page_rows(page)) == 2
    refresh_path = re.search(r'<tbody id="server-rows" hx-post="([^"]+)"', page).group(1)
    assert refresh_path == f"/servers/refresh?customer={customer.id}"
    have = [version for version, _, _ in page_rows(page)]
    unchanged = browser.request("POST", refresh_path, form={
        "have": "".join(have), "summary": summary_version(page)},
        headers={"X-CSRF-Token": csrf(page)})
    assert unchanged.status == 204


def test_columns_can_be_hidden_and_the_choice_is_kept_in_the_address(browser, panel):
    for index in range(3):
        operations.add_server(f"h{index}", TEST_BCRYPT_ROUNDS)
    browser.login()
    page = browser.request("GET", "/servers?hide=cpu&hide=traffic&hide=name&hide=nosuch").text
    headers = re.findall(r'<th class="[^"]*" aria-sort="[^"]+"><a href="/servers\?sort=([^&]+)',
                         page)
    expected = [key for key, _, _, _ in views.shown_columns([], ["cpu", "traffic"])]
    assert headers == expected and "name" in headers and "cpu" not in headers
    assert page.count("<col ") == len(expected)
    assert 'type="checkbox" name="hide" value="cpu" checked' in page
    assert 'name="hide" value="name"' not in page  # name and status always show
    body = page.split('<tbody id="server-rows"', 1)[1].split("</tbody>", 1)[0]
    for row in body.split("<tr ")[1:]:
        if "data-server-id" in row:
            assert row.count("<td") == len(expected)
    assert "&amp;hide=cpu&amp;hide=traffic" in page  # the sort links keep the choice
    # A refresh with the same choice (the form's fields) has nothing to send.
    have = [version for version, _, _ in page_rows(page)]
    unchanged = refresh(browser, csrf(page), have, summary_version(page),
                        hide=["cpu", "traffic"])
    assert unchanged.status == 204
    # The same rows with every column are other versions: sent again.
    assert refresh(browser, csrf(page), have, summary_version(page)).status == 200
