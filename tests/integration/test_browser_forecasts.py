"""Disk-full forecasts and traffic quotas in a real browser (headless Chromium, as
test_browser.py): the servers table's "Disk full in" column names the mount full soonest, its
"Traffic this cycle" column the cycle's use of the allowance (marked past 80 %), and the server
page's disk chart draws the dashed projection to its full point past now. A day of samples goes through the real
ingest API, the mount's earlier hours are written as the forecasts job writes them, then the
forecasts job runs in-process. Screenshot: tests/artifacts/forecast.png (docs/screenshots/
keeps a copy)."""
import datetime
import re

import pytest

from panel import jobs, models, operations, quotas, rollups
from panel.db import utcnow
from tests.conftest import bearer, http_request, new_server
from tests.integration.test_api import sample
from tests.integration.test_browser import (ARTIFACTS, browser, cell,  # noqa: F401 (fixture)
                                            full_page_screenshot, log_in, wait_until)
from tests.integration.test_dashboard_pages import register
from tests.integration.test_forecasts import CAPACITY, GIB, disk
from tests.integration.test_quotas import billing_day_a_day_ago, hours_of

PER_DAY = 6 * GIB
FULL_COLUMN = 10  # name, host, status, seen, the six figures, then "Disk full in"
TRAFFIC_COLUMN = FULL_COLUMN + 1


def used_at(back_hours):
    """/var: 6 GiB free now, filling by 6 GiB a day: full in a day."""
    return int(CAPACITY - 6 * GIB - PER_DAY * back_hours / 24)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend_url", ["sqlite"], indirect=True)
def test_the_table_and_the_disk_chart_show_when_a_mount_fills_and_the_traffic_used(browser,
                                                                                   panel):  # noqa: F811
    from selenium.webdriver.common.by import By

    server, key = new_server("files-1")
    register(panel, key)
    now = utcnow() - datetime.timedelta(seconds=30)
    samples = []
    for step in range(144, -1, -1):  # every 10 minutes for a day
        document = sample(server.id, (now - datetime.timedelta(minutes=10 * step))
                          .replace(microsecond=0).isoformat() + "Z",
                          disk=disk(used_at(step / 6)))
        samples.append({key_: document[key_] for key_ in ("timestamp", "metrics")})
    for start in range(0, len(samples), 100):
        assert http_request(panel, "POST", "/api/agent/metrics", headers=bearer(key),
                            json_body={"serverId": server.id,
                                       "samples": samples[start:start + 100]}).status == 200
    agent = models.Agent.get(models.Agent.server == server.id)
    models.record_mount_hours([
        {"agent": agent.id, "mount": "/var", "used": used_at(back), "capacity": CAPACITY,
         "bucket": rollups.floor_time(now - datetime.timedelta(hours=back), 3600)}
        for back in range(72, 0, -1)])
    rollups.run_rollups(late_window=datetime.timedelta(hours=26))
    assert jobs.refresh_forecasts() == 1
    # 850 B of a 1000 B allowance this cycle: 85 %, past the 80 % alert.
    operations.set_server_quota(server.id, billing_day_a_day_ago(utcnow()), "1000", "sum")
    hours_of(agent.id, 600, 250, utcnow() - datetime.timedelta(hours=1))
    assert quotas.evaluate() == (1, 0)  # the 80 % alert

    log_in(browser, panel)
    browser.get(f"{panel.url}/servers?sort=disk_full")
    assert wait_until(lambda: (cell(browser, server.id, FULL_COLUMN) or "").startswith(
        "/var in "), timeout=10), cell(browser, server.id, FULL_COLUMN)
    assert re.fullmatch(r"/var in (23 h \d+ min|1 d)", cell(browser, server.id, FULL_COLUMN))
    assert cell(browser, server.id, TRAFFIC_COLUMN) == "850 B / 1000 B (85 %)"
    assert browser.execute_script(
        "return document.querySelector(`tr[data-server-id='${arguments[0]}']`)"
        ".children[arguments[1]].classList.contains('bad')", server.id, TRAFFIC_COLUMN)

    browser.get(f"{panel.url}/servers/{server.id}?range=7d")
    [figure] = [f for f in browser.find_elements(By.CSS_SELECTOR, "figure.chart")
                if f.find_element(By.CSS_SELECTOR, "span.title").text == "Disk usage"]
    caption = figure.find_element(By.CSS_SELECTOR, ".forecast").text
    assert caption.startswith("/var full in ") and caption.endswith("(dashed)")
    projection = figure.find_element(By.CSS_SELECTOR, "path.projection")
    assert projection.value_of_css_property("stroke-dasharray") not in ("", "none")
    # It reaches 100 % (y 0 of the plot) inside the chart: the full point is a day ahead.
    assert projection.get_attribute("d").endswith(",0.0")
    full_page_screenshot(browser, ARTIFACTS / "forecast.png")
    logs = [entry for entry in browser.get_log("browser")
            if entry["level"] == "SEVERE" and "favicon" not in entry["message"]]
    assert logs == [], logs
