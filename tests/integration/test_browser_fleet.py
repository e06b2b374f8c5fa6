"""The servers table of a 10,000-server fleet in a real browser (headless Chromium, as
test_browser.py; issue 15): the first screenful of 100 rows and the next as the page scrolls,
the summary exact for the whole fleet, the live refresh swapping only the rows that changed
without a reload (and a 204 when nothing did), sorting and filtering in SQL, the page gzipped as
the browser sees it, and a phone's width. The fleet is written straight into the test's database
(tests/synthetic.fleet). Screenshot: tests/artifacts/servers-10k.png."""
import datetime

import pytest

from panel import models
from panel.db import utcnow
from panel.settings import Settings
from tests import synthetic
from tests.conftest import ONE_BACKEND
from tests.integration.test_browser import (ARTIFACTS, browser,  # noqa: F401 (fixture)
                                            cell, log_in, sideways_overflow, wait_until)

pytestmark = ONE_BACKEND

FLEET = 10_000
CPU_COLUMN = 4  # name, host, status, last seen, then CPU
OFFLINE_AFTER = Settings().offline_after  # the shared panel runs with the default


def seeded_fleet():
    """-> [(server id, agent id)] by name: position n of the table sorted by name is pair n."""
    return synthetic.fleet(FLEET, utcnow())


def fleet_counts():
    """The summary's figures counted in the database on their own terms (last_seen alone)."""
    threshold = utcnow() - datetime.timedelta(seconds=OFFLINE_AFTER)
    agents = models.Agent.select()
    never = agents.where(models.Agent.last_seen.is_null()).count()
    offline = agents.where(models.Agent.last_seen < threshold).count()
    return {"total": models.Server.select().count(), "never seen": never, "offline": offline,
            "online": agents.count() - never - offline}


def shown_summary(browser):
    """{"total", "online", "offline", "never seen", "alerts firing"}: the strip's numbers
    ("10,000" as 10000)."""
    return browser.execute_script(
        "const out = {}; document.querySelectorAll('#summary a').forEach(a => {"
        " out[a.textContent.replace(a.querySelector('strong').textContent, '').trim()"
        "    .replace(/^servers$/, 'total')] = Number(a.querySelector('strong').textContent"
        "    .replace(/,/g, '')); });"
        "return out;")


def loader_text(browser):
    return browser.execute_script(
        "const more = document.getElementById('more'); return more ? more.textContent.trim() "
        ": null")


def shown_rows(browser):
    """[(row id, server id, name, status class)] of the table's rows, in order."""
    return browser.execute_script(
        "return [...document.querySelectorAll('#server-rows tr[data-server-id]')].map(r => "
        "[r.id, Number(r.dataset.serverId), r.querySelector('td.name a').textContent, "
        "r.className.split(' ')[0]])")


def latest_cpu(agent_id):
    row = (models.Metric.select(models.Metric.cpu_usage)
           .join(models.LatestSample, on=(
               (models.LatestSample.agent == models.Metric.agent) &
               (models.LatestSample.timestamp == models.Metric.timestamp)))
           .where(models.Metric.agent == agent_id).get())
    return f"{row.cpu_usage:.1f} %"


def refresh_entries(browser):
    """What the table's polls fetched, as the browser's Resource Timing saw them."""
    return browser.execute_script(
        "return performance.getEntriesByType('resource')"
        ".filter(e => new URL(e.name).pathname === '/servers/refresh')"
        ".map(e => ({status: e.responseStatus, transfer: e.transferSize,"
        " encoded: e.encodedBodySize, decoded: e.decodedBodySize}))")


# The ids of the rows whose node is not one the test marked: rendered since.
NOT_KEPT = ("return [...document.querySelectorAll('#server-rows tr[data-server-id]')]"
            ".filter(r => !r.__kept).map(r => r.id)")


def severe_console_entries(browser):
    return [entry for entry in browser.get_log("browser")
            if entry["level"] == "SEVERE" and "favicon" not in entry["message"]]


@pytest.mark.timeout(120)
def test_a_10000_server_table_shows_100_rows_and_refreshes_only_the_rows_that_changed(
        browser, panel):  # noqa: F811
    pairs = seeded_fleet()
    # The fleet keeps its traffic: the projection in a Traffic cell's title moves with the
    # clock alone, and a row's version leaves it out, so quiet rows stay quiet.
    assert models.TrafficDay.select().count() > 9000
    counts = fleet_counts()
    log_in(browser, panel)

    # First paint: a screenful of the fleet, the summary of all of it.
    assert [row[0] for row in shown_rows(browser)] == [f"row-{n}" for n in range(100)]
    assert [row[1] for row in shown_rows(browser)] == [server for server, _ in pairs[:100]]
    assert shown_summary(browser) == {**counts, "alerts firing": 0}
    assert counts["total"] == FLEET and counts["offline"] and counts["never seen"]
    assert loader_text(browser).startswith("100 of 10,000 shown")
    assert browser.title == f"{counts['offline']} offline · mPanel"

    # Scrolling to the loader row brings the next hundred.
    browser.execute_script("document.getElementById('more').scrollIntoView()")
    assert wait_until(lambda: browser.execute_script(
        "return !!document.getElementById('row-199')"), timeout=10), loader_text(browser)
    assert [row[1] for row in shown_rows(browser)] == [server for server, _ in pairs[:200]]
    assert loader_text(browser).startswith("200 of 10,000 shown")

    # Mark the page and every row's node: a reload loses the first, a re-render the second.
    # The polls' answers are kept too, for the assertions' messages.
    browser.execute_script(
        "window.__answers = []; document.body.addEventListener('htmx:afterRequest', e => "
        "window.__answers.push([e.detail.pathInfo.requestPath, e.detail.xhr.status,"
        " e.detail.xhr.responseText]))")
    assert browser.execute_script(
        "window.__mark = 1; document.querySelectorAll('#server-rows tr[data-server-id]')"
        ".forEach(r => { r.__kept = true; }); return window.__mark") == 1
    # A poll with nothing changed answers 204, headers only.
    assert wait_until(lambda: refresh_entries(browser), timeout=12), "no poll in 12 s"
    [unchanged] = refresh_entries(browser)[:1]
    print(f"unchanged poll: {unchanged}")
    assert unchanged["status"] == 204 and unchanged["encoded"] == 0, \
        (unchanged, browser.execute_script("return window.__answers"))
    assert unchanged["transfer"] < 1024, unchanged
    assert browser.execute_script(NOT_KEPT) == []  # the 204 re-rendered nothing

    # Three servers on the page change: two report again, one goes silent an hour ago.
    # Online in the synthetic fleet: neither never seen (index % 50 == 0) nor silent (% 40 == 1).
    reported, silent = (12, 57), 153
    before = {n: cell(browser, pairs[n][0], CPU_COLUMN) for n in reported}
    polls = len(refresh_entries(browser))
    synthetic.report_again([pairs[n][1] for n in reported], utcnow())
    models.Agent.update(last_seen=utcnow() - datetime.timedelta(hours=1)).where(
        models.Agent.id == pairs[silent][1]).execute()
    changed_ids = {f"row-{n}" for n in (*reported, silent)}
    assert wait_until(lambda: set(browser.execute_script(NOT_KEPT)) >= changed_ids,
                      timeout=25), (browser.execute_script(NOT_KEPT),
                                    browser.execute_script("return window.__answers"))

    # Exactly those rows are new nodes; every other row is the node it was; no reload.
    assert sorted(browser.execute_script(NOT_KEPT)) == sorted(changed_ids), \
        browser.execute_script("return window.__answers")
    assert browser.execute_script("return window.__mark") == 1
    assert [row[1] for row in shown_rows(browser)] == [server for server, _ in pairs[:200]]
    for n in reported:
        assert cell(browser, pairs[n][0], CPU_COLUMN) == latest_cpu(pairs[n][1]), before[n]
        assert cell(browser, pairs[n][0], 2) == "online"
    assert cell(browser, pairs[silent][0], 2) == "offline"
    assert cell(browser, pairs[silent][0], 3) == "1 h ago"
    moved = {**counts, "online": counts["online"] - 1, "offline": counts["offline"] + 1}
    assert fleet_counts() == moved
    assert wait_until(lambda: shown_summary(browser) == {**moved, "alerts firing": 0},
                      timeout=2), shown_summary(browser)
    assert browser.title == f"{moved['offline']} offline · mPanel"
    assert loader_text(browser).startswith("200 of 10,000 shown")
    changed_polls = [entry for entry in refresh_entries(browser)[polls:]
                     if entry["status"] == 200]
    print(f"polls after the change: {refresh_entries(browser)[polls:]}")
    assert changed_polls and all(0 < entry["encoded"] for entry in changed_polls)
    assert severe_console_entries(browser) == []


def matching_names(fragment):
    """Names of the servers whose name or hostname holds `fragment`, from the database."""
    return {name for (name,) in models.Server.select(models.Server.name)
            .join(models.Agent, on=(models.Agent.server == models.Server.id))
            .where(models.Server.name.contains(fragment) |
                   models.Agent.hostname.contains(fragment)).tuples()}


def busiest_server(names=None):
    """(name, CPU as shown) of the server with the highest latest CPU, ties by name, of all
    or of `names`."""
    query = (models.Metric.select(models.Server.name, models.Metric.cpu_usage)
                 .join(models.LatestSample, on=(
                     (models.LatestSample.agent == models.Metric.agent) &
                     (models.LatestSample.timestamp == models.Metric.timestamp)))
                 .join(models.Agent, on=(models.Agent.id == models.Metric.agent))
                 .join(models.Server, on=(models.Server.id == models.Agent.server))
                 .order_by(models.Metric.cpu_usage.desc(), models.Server.name))
    if names is not None:
        query = query.where(models.Server.name.in_(list(names)))
    name, cpu = query.tuples().first()
    return name, f"{cpu:.1f} %"


@pytest.mark.timeout(120)
def test_a_10000_server_table_sorts_by_cpu_and_filters_by_name_and_status(
        browser, panel):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    seeded_fleet()
    counts = fleet_counts()
    log_in(browser, panel)

    # The CPU header: a plain link, the page again sorted by CPU, highest first.
    browser.find_element(By.LINK_TEXT, "CPU").click()
    assert wait_until(lambda: "sort=cpu" in browser.current_url and browser.execute_script(
        "return document.readyState === 'complete' && !!document.getElementById('row-0')"),
        timeout=15), browser.current_url
    assert "dir=desc" in browser.current_url
    name, cpu = busiest_server()
    assert shown_rows(browser)[0][2] == name
    assert browser.execute_script(
        "return document.querySelector('#row-0').children[arguments[0]].textContent.trim()",
        CPU_COLUMN) == cpu
    shown_cpus = [float(text.split()[0]) for text in browser.execute_script(
        "return [...document.querySelectorAll('#server-rows tr[data-server-id]')]"
        ".map(r => r.children[arguments[0]].textContent.trim())", CPU_COLUMN)]
    assert shown_cpus == sorted(shown_cpus, reverse=True)

    # A name fragment: only the matching rows, as many as the database has, still by CPU.
    fragment = "77"
    expected = matching_names(fragment)
    assert len(expected) > 100  # more than a screenful: the loader row counts them
    browser.find_element(By.ID, "filter-q").send_keys(fragment)
    wanted = f"100 of {len(expected):,} shown"
    assert wait_until(lambda: f"q={fragment}" in browser.current_url and
                      (loader_text(browser) or "").startswith(wanted), timeout=10), \
        (browser.current_url, loader_text(browser))
    rows = shown_rows(browser)
    assert len(rows) == 100 and {row[2] for row in rows} <= expected
    assert "sort=cpu" in browser.current_url
    assert rows[0][2] == busiest_server(expected)[0]

    # Status "offline" alone: every offline server, as many as the summary says.
    search = browser.find_element(By.ID, "filter-q")
    search.send_keys(Keys.CONTROL, "a")
    search.send_keys(Keys.BACKSPACE)
    Select(browser.find_element(By.ID, "filter-status")).select_by_value("offline")
    offline = shown_summary(browser)["offline"]
    assert offline == counts["offline"] > 100
    wanted = f"100 of {offline:,} shown"
    assert wait_until(lambda: "status=offline" in browser.current_url and
                      "q=&" in browser.current_url and
                      (loader_text(browser) or "").startswith(wanted), timeout=10), \
        (browser.current_url, loader_text(browser))
    assert {row[3] for row in shown_rows(browser)} == {"status-offline"}
    browser.execute_script("document.getElementById('more').scrollIntoView()")
    assert wait_until(lambda: (loader_text(browser) or "").startswith(
        f"200 of {offline:,} shown"), timeout=10), loader_text(browser)
    assert {row[3] for row in shown_rows(browser)} == {"status-offline"}
    assert severe_console_entries(browser) == []


@pytest.mark.timeout(120)
def is_attached(element):
    from selenium.common.exceptions import StaleElementReferenceException

    try:
        element.is_enabled()
        return True
    except StaleElementReferenceException:
        return False


def test_a_10000_server_page_comes_gzipped_fits_a_screen_with_columns_hidden_and_a_phone(
        browser, panel):  # noqa: F811
    from selenium.webdriver.common.by import By

    seeded_fleet()
    log_in(browser, panel)
    browser.get(f"{panel.url}/servers")  # a navigation of its own, typed (Sec-Fetch-Site none)
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "servers-10k.png"))
    assert (ARTIFACTS / "servers-10k.png").stat().st_size > 10_000

    # The page as the browser received it (compression.py), and a fetch from the page.
    page = browser.execute_script(
        "const e = performance.getEntriesByType('navigation')[0]; return {transfer: "
        "e.transferSize, encoded: e.encodedBodySize, decoded: e.decodedBodySize}")
    fetched = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch('/servers', {credentials: 'same-origin'}).then(r => r.text().then(t => done({"
        " status: r.status, encoding: r.headers.get('content-encoding'), characters: t.length,"
        " rows: (t.match(/<tr data-v=/g) || []).length}))).catch(e => done({error: String(e)}))")
    print(f"servers page of {FLEET:,} servers: navigation {page}; fetch {fetched}")
    assert fetched["status"] == 200 and fetched["rows"] == 100, fetched
    assert fetched["encoding"] == "gzip", fetched
    assert 0 < page["transfer"] < page["decoded"], page
    assert page["encoded"] * 4 < page["decoded"], page  # HTML rows gzip well

    # At 1,280 px the whole table scrolls sideways in its box; with four columns hidden
    # (Hide columns, ?hide=) it fits.
    table_overflow = ("const w = document.querySelector('.table-wrap'); "
                      "return w.scrollWidth - w.clientWidth")
    assert browser.execute_script(table_overflow) > 0
    browser.find_element(By.XPATH, "//summary[text()='Hide columns']").click()
    for key in ("hostname", "version", "services", "traffic"):
        before = browser.find_element(By.ID, "row-0")
        browser.find_element(By.CSS_SELECTOR, f"input[name=hide][value={key}]").click()
        wait_until(lambda: not is_attached(before), timeout=10)
    assert "hide=traffic" in browser.current_url
    assert wait_until(lambda: browser.execute_script(table_overflow) <= 0, timeout=10)
    header = browser.find_element(By.CSS_SELECTOR, "table.servers thead").text.upper()
    assert "HOSTNAME" not in header and "AGENT" not in header and "STATUS" in header

    # At a phone's width nothing runs off the page sideways: the table scrolls in its box.
    browser.set_window_size(375, 800)
    browser.get(f"{panel.url}/servers")
    overflow, wide = sideways_overflow(browser)
    assert overflow <= 0, (overflow, wide)
    # Chromedriver keeps the console's warnings and errors by default: a CSP violation or an
    # htmx error is SEVERE.
    assert severe_console_entries(browser) == []
