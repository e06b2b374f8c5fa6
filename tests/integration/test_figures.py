"""Figures added through the figure table alone (panel/figures.py), end to end on a real panel
(Waitress, its own process) on SQLite and PostgreSQL: what the agent sends is stored, rolled
up, drawn on the server page and exported on /metrics."""
import datetime
import html
import json
import os
import re
import subprocess
import sys

from panel import ingest, jobs, models, protocol, rollups, settings
from panel.db import utcnow
from panel.validation import validate
from tests.conftest import ROOT, agent_env, new_server
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


def mount(path, used, free, inodes_used=None, inodes_free=None):
    entry = {"mountpoint": path, "device": f"/dev/{path.strip('/') or 'root'}", "fstype": "ext4",
             "total": used + free, "used": used, "free": free,
             "percent": round(100 * used / (used + free), 1)}
    if inodes_used is not None:
        entry.update(inodesUsed=inodes_used, inodesFree=inodes_free,
                     inodesPercent=100.0 * inodes_used / (inodes_used + inodes_free))
    return entry


def test_the_fullest_mounts_inodes_are_stored_rolled_up_charted_exported_and_alerted(
        panel, admin, scraper):  # noqa: F811
    """A mail spool out of inodes with most of its space free: the disk figure says 10 %, the
    inode figure 95 %, and the inodes rule fires on it."""
    from panel import operations
    operations.set_rule("inodes", 90, 1)
    server, key = new_server("mail")
    now = utcnow()
    mounts = [mount("/", 10, 90, 200, 800), mount("/var/spool", 5, 95, 950, 50),
              mount("/boot/efi", 1, 9)]  # vfat: no inode table, no inode fields
    report(panel, server.id, key, [
        (now - datetime.timedelta(minutes=minute), {"disk": {"mounts": mounts}})
        for minute in (2, 1, 0)])

    agent = models.Agent.get(models.Agent.server == server.id)
    stored = [row.disk_max_inode_percent for row in
              models.Metric.select().where(models.Metric.agent == agent.id)]
    assert stored == [95.0, 95.0, 95.0]
    assert jobs.evaluate_rules(60, now) == (1, 0)
    [alert] = models.Alert.select().where(models.Alert.server == server.id)
    assert alert.rule == "inodes" and "inodes above 90%" in alert.message

    jobs.JobRunner(settings.from_env({})).run_once()
    bucket = models.Rollup5m.get(models.Rollup5m.agent == agent.id)
    assert bucket.disk_max_inode_percent_max == 95.0
    # Beside the disk figures: the per-mount lines on raw ranges, the fullest mount beyond.
    for chart_range, title in (("1h", "Disk usage per mount"), ("7d", "Disk usage")):
        page = admin.request("GET", f"/servers/{server.id}/charts?range={chart_range}").text
        disk = chart_series(page)[title]
        line = disk["inodes, fullest mount"]
        assert line and all(mean == 95.0 for mean, _ in line), (chart_range, line)
        assert ("/var/spool" in disk) == (chart_range == "1h") and len(disk) >= 2, disk

    samples = parse(scraper())
    assert value(samples, "mpanel_disk_max_inode_used_ratio", server="mail") == 0.95
    assert value(samples, "mpanel_filesystem_inodes_used", server="mail",
                 mountpoint="/var/spool") == 950
    assert value(samples, "mpanel_filesystem_inodes_free", server="mail", mountpoint="/") == 800
    assert not [labels for labels, _ in samples["mpanel_filesystem_inodes_used"]
                if labels["mountpoint"] == "/boot/efi"]


def test_agent_print_shows_each_mounts_inodes_and_the_panel_keeps_the_fullest(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "agent.py"), "--print", "--state-dir",
                             str(tmp_path)], env=agent_env(), capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    validate(protocol.METRICS_BODY, {**payload, "serverId": 1})
    mounts = payload["metrics"]["disk"]["mounts"]
    assert mounts
    for mount in mounts:
        files = os.statvfs(mount["mountpoint"]).f_files
        assert ("inodesUsed" in mount) == (files > 0), mount
        if files:
            assert mount["inodesUsed"] + mount["inodesFree"] == files, mount
            assert 0 <= mount["inodesPercent"] <= 100
    shares = [m["inodesPercent"] for m in mounts if "inodesPercent" in m]
    row = ingest.sample_row(payload["metrics"])
    assert row["disk_max_inode_percent"] == (max(shares) if shares else None)


def test_the_cli_sets_a_rule_on_any_alert_metric_of_the_figure_table(database, backend_url):
    from tests.integration.test_cli import cli
    result = cli(backend_url, "set-rule", "inodes", "85", "--minutes", "10")
    assert result.returncode == 0, result.stderr
    rule = models.AlertRule.get(models.AlertRule.metric == "inodes")
    assert (rule.threshold, rule.minutes, rule.server_id) == (85.0, 10, None)
    refused = cli(backend_url, "set-rule", "temperature", "85")
    assert refused.returncode == 2 and "invalid choice" in refused.stderr


def test_hosting_stack_figures_are_stored_rolled_up_charted_only_where_present_and_exported(
        panel, admin, scraper):  # noqa: F811
    """MySQL, the mail queue, the first certificate to expire and the CPU temperature: rows of
    the figure table (issue 12). A server without them draws none of their charts."""
    server, key = new_server("mail-1")
    plain, plain_key = new_server("plain-1")
    start = rollups.floor_time(utcnow() - datetime.timedelta(hours=3), 300)
    services = [{"mysql": {"up": True, "connections": connections, "maxConnections": 151,
                           "connectionsPercent": 100 * connections / 151, "queriesPerSec": qps},
                 "mailqueue": {"mta": "postfix", "total": queued, "deferred": queued - 1,
                               "oldestAge": 7200},
                 "certificates": {"total": 2, "expired": 0, "minDaysLeft": 3.5},
                 "phpfpm": {"pools": [
                     {"name": "www", "source": "status", "total": 5, "active": queued - 4,
                      "idle": 9 - queued, "listenQueue": queued - 5},
                     {"name": "shop", "source": "processes", "total": 2}]}}
                for connections, qps, queued in ((10, 100.0, 5), (30, 300.0, 9), (20, 200.0, 7))]
    report(panel, server.id, key, [
        (start + datetime.timedelta(minutes=minute),
         {"services": services[minute],
          "sensors": {"cpuMax": 40.0 + minute, "readings": [
              {"name": "coretemp", "label": "Package id 0", "current": 40.0 + minute}]}})
        for minute in range(3)])
    report(panel, plain.id, plain_key, [(start, {})])
    jobs.JobRunner(settings.from_env({})).run_once()

    agent = models.Agent.get(models.Agent.server == server.id)
    newest = models.Metric.select().where(models.Metric.agent == agent.id) \
        .order_by(models.Metric.timestamp.desc()).get()
    assert (newest.mysql_connections, newest.mysql_max_connections, newest.mail_queue,
            newest.mail_deferred, newest.mail_oldest_age, newest.certificate_min_days,
            newest.cpu_temperature) == (20, 151, 7, 6, 7200, 3.5, 42.0)
    bucket = models.Rollup5m.get((models.Rollup5m.agent == agent.id) &
                                 (models.Rollup5m.bucket == start))
    assert (bucket.mysql_connections_avg, bucket.mysql_connections_max) == (20.0, 30.0)
    assert (bucket.mysql_queries_rate_avg, bucket.mail_queue_max) == (200.0, 9.0)
    assert bucket.mysql_max_connections == 151

    drawn = chart_series(admin.request("GET", f"/servers/{server.id}/charts?range=7d").text)
    assert drawn["MySQL connections"]["connections"] == [(20.0, 30.0)]
    assert drawn["MySQL queries"]["queries"] == [(200.0, 300.0)]
    assert drawn["Mail queue"]["queued"] == [(7.0, 9.0)]
    # Summed over the pools that say (the one without a status page has no active count).
    assert drawn["PHP-FPM"]["active"] == [(3.0, 5.0)]
    assert drawn["PHP-FPM"]["listen queue"] == [(2.0, 4.0)]
    assert drawn["CPU temperature"]["hottest CPU reading"] == [(41.0, 42.0)]
    bare = chart_series(admin.request("GET", f"/servers/{plain.id}/charts?range=7d").text)
    assert not {"MySQL connections", "MySQL queries", "Mail queue", "CPU temperature",
                "PHP-FPM"} & set(bare)
    assert "CPU" in bare  # the system charts stay, empty or not

    scraped = parse(scraper())
    assert value(scraped, "mpanel_mysql_connections", server="mail-1") == 20
    assert value(scraped, "mpanel_mail_queue_messages", server="mail-1") == 7
    assert value(scraped, "mpanel_certificate_min_days_left", server="mail-1") == 3.5
    assert value(scraped, "mpanel_cpu_temperature_celsius", server="mail-1") == 42.0
    assert value(scraped, "mpanel_phpfpm_listen_queue", server="mail-1") == 2
