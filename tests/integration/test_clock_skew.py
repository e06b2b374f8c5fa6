"""An agent whose clock is off, against the real panel over real HTTP, on SQLite and PostgreSQL:
its samples are kept as stamped (up to a day ahead), the admin is told how far off the clock is,
and the servers table and the alert rules follow the newest samples it sends — also after its
clock was set back an hour. The real agent says its time in a Date header as it sends."""
import datetime
import email.utils
import re

import pytest

from panel import jobs, models
from panel.db import utcnow
from tests.conftest import bearer, http_request, new_server
from tests.integration.test_api import sample
from tests.integration.test_dashboard_pages import admin  # noqa: F401 (the fixture)
from tests.integration.test_end_to_end import run_agent




def iso(moment):
    return moment.isoformat(timespec="milliseconds") + "Z"


def send(panel, key, document, agent_now=None):
    """POST as an agent whose clock reads `agent_now` (naive UTC), or with no Date at all."""
    headers = dict(bearer(key))
    if agent_now is not None:
        headers["Date"] = email.utils.format_datetime(
            agent_now.replace(tzinfo=datetime.timezone.utc), usegmt=True)
    return http_request(panel, "POST", "/api/agent/metrics", json_body=document,
                        headers=headers)


def with_cpu(server_id, moment, cpu):
    document = sample(server_id, iso(moment))
    document["metrics"]["cpu"]["usage"] = cpu
    return document


def offset_of(server):
    return models.Agent.get(models.Agent.server == server.id).clock_offset


def cpu_cell(admin, server):
    """The CPU figure the servers table shows for this server."""
    row = admin.request("GET", "/servers").text.split(f'data-server-id="{server.id}"')[1]
    return row.split("</tr>")[0]


def test_samples_of_a_clock_two_hours_ahead_are_kept_and_the_admin_is_told(panel, admin):
    server, key = new_server("ahead")
    agent_now = utcnow() + datetime.timedelta(hours=2)
    response = send(panel, key, with_cpu(server.id, agent_now, 42.0), agent_now)
    assert response.status == 200, response.text
    assert response.json()["stored"] == 1
    assert abs(offset_of(server) - 7200) <= 2
    assert "clock 2 h ahead" in cpu_cell(admin, server) and "42.0 %" in cpu_cell(admin, server)
    assert "clock 2 h ahead" in admin.request("GET", f"/servers/{server.id}").text


def test_an_agent_without_a_date_header_ahead_is_kept_and_flagged(panel):
    server, key = new_server("old-agent")
    ahead = utcnow() + datetime.timedelta(hours=2)
    assert send(panel, key, with_cpu(server.id, ahead, 5.0)).status == 200
    assert abs(offset_of(server) - 7200) <= 2  # at least the lead of its newest sample


def test_after_the_clock_steps_back_an_hour_the_table_shows_the_newest_sample(panel, admin):
    server, key = new_server("stepped")
    now = utcnow()
    assert send(panel, key, with_cpu(server.id, now, 10.0), now).status == 200
    assert "10.0 %" in cpu_cell(admin, server)
    for minute, cpu in ((1, 77.0), (2, 78.0)):
        agent_now = now - datetime.timedelta(hours=1) + datetime.timedelta(minutes=minute)
        assert send(panel, key, with_cpu(server.id, agent_now, cpu), agent_now).status == 200
        assert f"{cpu:.1f} %" in cpu_cell(admin, server)
    assert abs(offset_of(server) + 3600 - 120) <= 3
    assert "behind" in cpu_cell(admin, server)


def test_a_replayed_backlog_does_not_pull_the_table_back(panel, admin):
    server, key = new_server("replaying")
    now = utcnow()
    assert send(panel, key, with_cpu(server.id, now, 10.0), now).status == 200
    backlog = [with_cpu(server.id, now - datetime.timedelta(minutes=60 - i), 50.0)
               for i in range(5)]
    for one in backlog:
        del one["serverId"]
    response = send(panel, key, {"serverId": server.id, "samples": backlog}, now)
    assert response.status == 200 and response.json()["stored"] == 5
    assert "10.0 %" in cpu_cell(admin, server) and "clock" not in cpu_cell(admin, server)


def test_rules_watch_what_a_clock_an_hour_behind_sends(panel):
    server, key = new_server("busy-behind")
    models.AlertRule.create(metric="cpu", threshold=90.0, minutes=5)
    agent_now = utcnow() - datetime.timedelta(hours=1)
    samples = [with_cpu(server.id, agent_now - datetime.timedelta(minutes=m), 99.0)
               for m in range(7, -1, -1)]
    for one in samples:
        del one["serverId"]
    response = send(panel, key, {"serverId": server.id, "samples": samples}, agent_now)
    assert response.status == 200 and response.json()["stored"] == 8
    opened, _ = jobs.evaluate_rules(60)
    assert opened == 1
    assert models.Alert.get(models.Alert.server == server.id).rule == "cpu"


def test_a_heartbeat_reports_the_agents_clock(panel):
    server, key = new_server("beating")
    behind = utcnow() - datetime.timedelta(minutes=30)
    response = http_request(panel, "POST", "/api/agent/heartbeat", headers=bearer(key),
                            json_body={"serverId": server.id, "timestamp": iso(behind)})
    assert response.status == 200
    assert abs(offset_of(server) + 1800) <= 2


def test_the_real_agent_says_its_time_and_a_right_clock_is_not_flagged(panel, admin, tmp_path):
    server, key = new_server("this-machine")
    result = run_agent(panel, key, tmp_path, "--once")
    assert result.returncode == 0, result.stderr
    assert offset_of(server) is not None and abs(offset_of(server)) <= 2
    assert "clock" not in cpu_cell(admin, server)


def test_the_charts_of_a_clock_ahead_show_what_it_sent(panel, admin):
    server, key = new_server("charted")
    agent_now = utcnow() + datetime.timedelta(hours=2)
    for minute in range(3, -1, -1):
        moment = agent_now - datetime.timedelta(minutes=minute)
        assert send(panel, key, with_cpu(server.id, moment, 20.0), moment).status == 200
    response = admin.request("GET", f"/servers/{server.id}/charts?range=1h",
                             headers={"HX-Request": "true"})
    assert response.status == 200
    points = [int(p) for p in re.findall(r'data-points="(\d+)"', response.text)]
    assert points and max(points) >= 4
    page = admin.request("GET", f"/servers/{server.id}?range=1h").text
    assert max(int(p) for p in re.findall(r'data-points="(\d+)"', page)) >= 4


@pytest.mark.parametrize("date_header", ["Fri, 31 Dec 9999 23:59:59 GMT",
                                         "Mon, 01 Jan 99999999999999999999 00:00:00 GMT",
                                         "x" * 2000, "Sat, 01 Jan 2000 00:00:00 GMT"])
def test_a_hostile_date_header_is_data_not_a_crash(panel, date_header):
    server, key = new_server("liar")
    headers = {**bearer(key), "Date": date_header}
    response = http_request(panel, "POST", "/api/agent/metrics", headers=headers,
                            json_body=with_cpu(server.id, utcnow(), 1.0))
    assert response.status == 200, response.text
    assert response.json()["stored"] == 1
    offset = offset_of(server)
    assert offset is None or -2**31 < offset < 2**31


def test_a_clock_days_ahead_is_refused_but_the_admin_still_sees_why(panel, admin):
    server, key = new_server("far-ahead")
    agent_now = utcnow() + datetime.timedelta(days=3)
    response = send(panel, key, with_cpu(server.id, agent_now, 1.0), agent_now)
    assert response.status == 422 and response.json()["field"] == "timestamp"
    assert models.Metric.select().count() == 0
    assert "clock 3 d ahead" in cpu_cell(admin, server)
