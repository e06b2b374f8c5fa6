"""Disk-full forecasts against a real panel: samples through the real ingest API, the mount's
earlier hours written as the forecasts job writes them (models.record_mount_hours: days of
history cannot be waited for), then the jobs run in-process on the same database
(jobs.refresh_forecasts, jobs.evaluate_checks). The alert fires for the filling mount and
resolves once a deleted file frees space; the servers table and the disk chart show it. And the
downloads: each chart's series as CSV and JSON (page and /api/v1), the alert history as CSV."""
import csv
import datetime
import io
import re

import pytest

from panel import alerts, jobs, models, operations, rollups, settings, tokens
from panel.db import utcnow
from tests.conftest import bearer, http_request, new_server
from tests.integration.test_api import sample
from tests.integration.test_dashboard_pages import admin, register  # noqa: F401 (fixture)

GIB = 1 << 30
CAPACITY = 100 * GIB


def disk(used, mountpoint="/var"):
    return {"mounts": [{"mountpoint": mountpoint, "device": "/dev/vdb", "fstype": "ext4",
                        "total": CAPACITY, "used": used, "free": CAPACITY - used,
                        "percent": round(100 * used / CAPACITY, 1)}], "io": []}


def report(panel, server, key, used, at, mountpoint="/var"):
    document = sample(server.id, at.replace(microsecond=0).isoformat() + "Z",
                      disk=disk(used, mountpoint))
    response = http_request(panel, "POST", "/api/agent/metrics", headers=bearer(key),
                            json_body=document)
    assert response.status == 200, response.text


def filling(panel, name="db-1", per_day=GIB, left=4 * GIB, hours=72, mountpoint="/var"):
    """A server whose mount has filled by `per_day` for `hours`, `left` free now. -> (server,
    key, now)."""
    server, key = new_server(name)
    register(panel, key)
    now = utcnow() - datetime.timedelta(seconds=30)
    agent = models.Agent.get(models.Agent.server == server.id)
    models.record_mount_hours([
        {"agent": agent.id, "mount": mountpoint,
         "bucket": rollups.floor_time(now - datetime.timedelta(hours=back), 3600),
         "used": int(CAPACITY - left - per_day * back / 24), "capacity": CAPACITY}
        for back in range(hours, 0, -1)])
    report(panel, server, key, CAPACITY - left, now, mountpoint)
    return server, key, now


def test_a_filling_mount_fires_and_resolves_once_a_deleted_file_frees_space(panel):
    operations.set_rule("disk_full", 7, 0)
    server, key, now = filling(panel)
    assert jobs.refresh_forecasts() == 1
    [item] = models.forecasts_of()[models.Agent.get(models.Agent.server == server.id).id]
    # 4 GiB free at 1 GiB a day: full 4 days after the newest hour.
    assert item.bytes_per_day == pytest.approx(GIB, rel=0.01)
    assert item.seconds_left(now) == pytest.approx(4 * 86400, abs=3600)

    assert jobs.evaluate_checks(300) == (1, 0)
    assert jobs.evaluate_checks(300) == (0, 0)
    [alert] = models.Alert.select()
    assert (alert.rule, alert.state, alert.open_key) == (
        "disk_full", "firing", alerts.subject_key("disk_full", "/var"))
    assert re.match(r"Disk full forecast: /var: full in [34] d.* at 1\.0+ GiB a day; below 7 "
                    r"days$", alert.message), alert.message

    # 26 GiB deleted: the drop starts the history afresh, too short to forecast.
    report(panel, server, key, 70 * GIB, now + datetime.timedelta(minutes=1))
    jobs.refresh_forecasts()
    assert [f.reason for f in models.forecasts_of()[item_agent(server)]] == \
        ["too little history"]
    assert jobs.evaluate_checks(300) == (0, 1)
    assert models.Alert.get_by_id(alert.id).state == "resolved"

    # The history lives as long as the hourly rollups.
    config = settings.from_env({})
    models.record_mount_hours([{"agent": item_agent(server), "mount": "/var", "used": 1,
                                "capacity": 2, "bucket": now - datetime.timedelta(
                                    days=config.retention_1h_days + 1)}])
    assert rollups.prune(config)["mount_hours"] == 1


def item_agent(server):
    return models.Agent.get(models.Agent.server == server.id).id


@pytest.mark.parametrize("backend_url", ["sqlite"], indirect=True)
def test_the_servers_table_and_the_disk_chart_show_the_forecast(panel, admin):  # noqa: F811
    soon, _, _ = filling(panel, "soon-1", per_day=2 * GIB, left=4 * GIB)
    later, _, _ = filling(panel, "later-1", per_day=GIB, left=20 * GIB, mountpoint="/")
    flat, flat_key = new_server("flat-1")
    register(panel, flat_key)
    report(panel, flat, flat_key, 50 * GIB, utcnow() - datetime.timedelta(seconds=30))
    jobs.refresh_forecasts()

    page = admin.request("GET", "/servers?sort=disk_full&dir=asc").text
    names = re.findall(r'<a href="/servers/\d+">([^<]+)</a>', page)
    assert names == ["soon-1", "later-1", "flat-1"]
    # The time left counts down in the browser (mpanel.js), from the moment in the <time>.
    assert re.search(r"/var in <time datetime=\"[^\"]+Z\" data-in>(1 d 2\d h|2 d)</time>", page)
    assert re.search(r">/ in <time[^>]*>(19 d 2\d h|20 d)<", page)

    chart = admin.request("GET", f"/servers/{soon.id}/charts?range=24h",
                          headers={"HX-Request": "true"}).text
    [disk_chart] = [part for part in chart.split("<figure")[1:] if "Disk usage" in part]
    assert 'class="line projection"' in disk_chart and "/var full in" in disk_chart
    # The x axis runs on past now for the projection: a third of the range more.
    values = re.search(r'data-values="([^"]*)"', disk_chart).group(1)
    assert values.count("null") >= 288 // 3
    flat_chart = admin.request("GET", f"/servers/{flat.id}/charts?range=24h",
                               headers={"HX-Request": "true"}).text
    assert "projection" not in flat_chart



# ===== Exports ==================================================================================

FORMULA_MOUNT = '=HYPERLINK("http://evil.example")'


@pytest.mark.parametrize("backend_url", ["sqlite"], indirect=True)
def test_each_chart_downloads_as_csv_and_json_with_what_it_draws(panel, admin):  # noqa: F811
    server, key = new_server("web-1")
    register(panel, key)
    now = utcnow()
    for minutes in range(5, 0, -1):
        report(panel, server, key, 40 * GIB, now - datetime.timedelta(minutes=minutes),
               FORMULA_MOUNT)
    page = admin.request("GET", f"/servers/{server.id}").text
    for chart in ("cpu", "disk"):
        assert f'href="/servers/{server.id}/charts.csv?range=1h&amp;chart={chart}"' in page

    got = admin.request("GET", f"/servers/{server.id}/charts.csv?range=1h&chart=disk")
    assert got.status == 200 and got.headers["content-type"].startswith("text/csv")
    assert got.headers["content-disposition"] == \
        f'attachment; filename="server-{server.id}-disk-1h.csv"'
    rows = list(csv.DictReader(io.StringIO(got.text)))
    assert {row["chart"] for row in rows} == {"disk"}
    mount = [row for row in rows if row["series"] == "'" + FORMULA_MOUNT]
    assert len(mount) == 5 and {row["mean"] for row in mount} == {"40.0"}

    # The JSON download, the API's series and its CSV are the one builder's.
    document = admin.request("GET", f"/servers/{server.id}/charts.json?chart=cpu").json()
    [cpu] = document["charts"]
    assert cpu["key"] == "cpu" and len(cpu["lines"][0]["points"]) == 5
    token = tokens.create(models.admin_by_username("admin"), "export", "read")[1]
    api = http_request(panel, "GET", f"/api/v1/servers/{server.id}/series?chart=cpu",
                       headers=bearer(token)).json()
    assert api["charts"] == document["charts"]
    api_csv = http_request(panel, "GET", f"/api/v1/servers/{server.id}/series?range=1h&"
                                         f"chart=disk&format=csv", headers=bearer(token))
    assert api_csv.headers["content-type"].startswith("text/csv") and api_csv.text == got.text
    every = admin.request("GET", f"/servers/{server.id}/charts.csv").text
    assert {"cpu", "disk", "network"} <= {row["chart"] for row in
                                          csv.DictReader(io.StringIO(every))}

    for path, field in ((f"/servers/{server.id}/charts.csv?chart=nope", "chart"),
                        (f"/api/v1/servers/{server.id}/series?chart=nope", "chart"),
                        (f"/api/v1/servers/{server.id}/series?format=xls", "format")):
        refused = http_request(panel, "GET", path, headers={
            **bearer(token), **admin_cookie(admin), "Accept": "text/html"})
        assert refused.status == 400 and field in refused.text, (path, refused.text)


def admin_cookie(browser):
    return {"Cookie": "; ".join(f"{k}={v}" for k, v in browser.cookies.items())}


@pytest.mark.parametrize("backend_url", ["sqlite"], indirect=True)
def test_the_alert_history_downloads_as_csv_with_the_pages_filter(panel, admin):  # noqa: F811
    acme = operations.add_customer("Acme")
    ours, _ = new_server("ours-1")
    theirs, _ = operations.add_server("acme-1", 4, customer_id=acme.id)
    started = utcnow() - datetime.timedelta(hours=2)
    models.Alert.create(server=ours.id, rule="cpu", open_key="cpu", started_at=started,
                        message="=cmd|' /C calc'!A0", state="resolved", resolved_at=started)
    models.Alert.create(server=theirs.id, rule="disk_full", open_key="disk_full", value=3.5,
                        threshold=7, started_at=started, message="Disk full forecast: /var")
    got = admin.request("GET", "/alerts.csv")
    assert got.status == 200 and got.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(got.text)))
    assert [(row["server"], row["state"]) for row in rows] == [("acme-1", "firing"),
                                                               ("ours-1", "resolved")]
    assert rows[1]["message"] == "'=cmd|' /C calc'!A0"
    assert 'href="/alerts.csv"' in admin.request("GET", "/alerts").text
    narrowed = admin.request("GET", f"/alerts.csv?customer={acme.id}").text
    assert [row["server"] for row in csv.DictReader(io.StringIO(narrowed))] == ["acme-1"]
