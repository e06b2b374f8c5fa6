"""Figures added through the figure table alone (panel/figures.py), end to end on a real panel
(Waitress, its own process) on SQLite and PostgreSQL: what the agent sends is stored, rolled
up, drawn on the server page and exported on /metrics."""
import datetime
import html
import json
import re

from panel import jobs, models, rollups, settings
from panel.db import utcnow
from tests.conftest import new_server
from tests.integration.test_api import post, sample
from tests.integration.test_dashboard_pages import admin  # noqa: F401 (the fixture)
from tests.integration.test_prometheus import (metrics_panel, parse, scraper,  # noqa: F401
                                               value)

FIGURE = re.compile(r'<figure class="chart"[^>]*?data-labels="([^"]*)"[^>]*?data-values="([^"]*)"'
                    r'[^>]*>\s*<figcaption><span class="title">([^<]*)</span>')


def chart_series(page):
    """{chart title: {line label: [(mean, peak) of each filled bin]}} of a charts partial."""
    charts = {}
    for labels, values, title in FIGURE.findall(page):
        labels = json.loads(html.unescape(labels))
        rows = [row for row in json.loads(html.unescape(values)) if row]
        charts[html.unescape(title)] = {
            label: [(row[2 * i], row[2 * i + 1]) for row in rows if row[2 * i] is not None]
            for i, label in enumerate(labels)}
    return charts


def report(panel, server_id, key, moments_and_metrics):
    for moment, metrics in moments_and_metrics:
        document = sample(server_id, moment.isoformat() + "Z", **metrics)
        answer = post(panel, "/api/agent/metrics", key, document)
        assert answer.status == 200 and answer.json()["stored"] == 1, answer.text


def test_cpu_steal_is_rolled_up_charted_and_exported(panel, admin, scraper):  # noqa: F811
    server, key = new_server("noisy-neighbour")
    start = rollups.floor_time(utcnow() - datetime.timedelta(hours=3), 300)
    report(panel, server.id, key, [
        (start + datetime.timedelta(minutes=minute), {"cpu": {"usage": 50.0, "steal": steal}})
        for minute, steal in enumerate((4.0, 12.0, 8.0))])
    jobs.JobRunner(settings.from_env({})).run_once()

    agent = models.Agent.get(models.Agent.server == server.id)
    for tier in rollups.TIERS:
        row = tier.model.get((tier.model.agent == agent.id) &
                             (tier.model.bucket == rollups.floor_time(start, tier.seconds)))
        assert (row.cpu_steal_avg, row.cpu_steal_max) == (8.0, 12.0), tier.name

    for chart_range, expected in (("24h", 8.0), ("7d", 8.0), ("30d", 8.0)):
        page = admin.request("GET", f"/servers/{server.id}/charts?range={chart_range}").text
        steal = chart_series(page)["CPU"]["steal"]
        assert [mean for mean, _ in steal] == [expected], (chart_range, steal)
    long_range = chart_series(admin.request(
        "GET", f"/servers/{server.id}/charts?range=7d").text)["CPU"]["steal"]
    assert long_range == [(8.0, 12.0)]  # the peak rides along as the band

    assert value(parse(scraper()), "mpanel_cpu_steal_ratio", server="noisy-neighbour") == 0.08
