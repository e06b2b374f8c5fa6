"""Offline detection and alerts, end to end: the real panel's background jobs, a real webhook
receiver and a real SMTP server (aiosmtpd, with STARTTLS) on loopback. On SQLite and
PostgreSQL; the two-replica test needs PostgreSQL."""
import datetime
import http.server
import json
import os
import ssl
import subprocess
import sys
import threading
import time

import pytest

from panel import alerts, jobs, models, operations
from panel.db import utcnow
from tests.conftest import (ROOT, bearer, free_port, http_request, new_server, start_panel,
                            stop_panel, wait_for)
from tests.integration.test_api import sample


class WebhookReceiver:
    """A real HTTP server that records the JSON bodies POSTed to it (`received`), and every
    body as (path, content type, text) in `raw` (Apprise's form:// is not JSON)."""

    def __init__(self):
        received = self.received = []
        raw = self.raw = []
        self.fail_next = 0
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if receiver.fail_next:
                    receiver.fail_next -= 1
                    self.send_response(500)
                    self.end_headers()
                    return
                raw.append((self.path, self.headers["Content-Type"], body.decode()))
                if self.headers["Content-Type"] == "application/json":
                    received.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self):
        return [(r["alert"]["event"], r["alert"].get("server"), r["alert"].get("rule"))
                for r in self.received]

    def close(self):
        self.server.shutdown()


@pytest.fixture
def webhook():
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


def jobs_panel(backend_url, tmp_path, name="panel.log", **extra):
    env = {"MPANEL_OFFLINE_AFTER": "2", "MPANEL_JOB_INTERVAL": "0.3",
           "MPANEL_REPORT_INTERVAL": "1"}
    env.update(extra)
    return start_panel(backend_url, tmp_path / name, env)


def report(panel, key, server_id):
    return http_request(panel, "POST", "/api/agent/metrics", headers=bearer(key),
                        json_body=sample(server_id))


# ===== Offline and back =========================================================================

@pytest.mark.timeout(90)
def test_critical_server_offline_then_back_alerts_once_each_way(backend_url, database, tmp_path,
                                                                webhook):
    panel = jobs_panel(backend_url, tmp_path)
    try:
        operations.add_channel("ops", "webhook", webhook.url)
        server, key = new_server("db-1", critical=True)
        assert report(panel, key, server.id).status == 200
        assert models.Server.get_by_id(server.id).state == "online"
        assert wait_for(lambda: webhook.events() == [("firing", "db-1", "offline")])
        assert models.Server.get_by_id(server.id).state == "offline"
        # Proving that nothing more is sent: about three job rounds (0.3 s each) of watching.
        time.sleep(1)
        assert len(webhook.received) == 1
        assert report(panel, key, server.id).status == 200
        assert wait_for(lambda: len(webhook.received) == 2)
    finally:
        stop_panel(panel)
    assert webhook.events()[1] == ("resolved", "db-1", "offline")
    firing = webhook.received[0]
    assert "db-1" in firing["text"] and firing["content"] == firing["text"]  # Slack + Discord
    kinds = [e.kind for e in models.ServerEvent.select().order_by(models.ServerEvent.at)]
    assert kinds == ["offline", "online"]
    assert models.Alert.get().state == "resolved"


@pytest.mark.timeout(60)
def test_a_server_that_is_not_critical_goes_offline_without_an_alert(backend_url, database,
                                                                     tmp_path, webhook):
    panel = jobs_panel(backend_url, tmp_path)
    try:
        operations.add_channel("ops", "webhook", webhook.url)
        server, key = new_server("scratch")
        report(panel, key, server.id)
        assert wait_for(lambda: models.Server.get_by_id(server.id).state == "offline")
        # Proving that no alert is sent: two more job rounds (0.3 s each) of watching.
        time.sleep(0.7)
    finally:
        stop_panel(panel)
    assert webhook.received == []
    assert models.ServerEvent.get().kind == "offline"


# ===== E-mail ===================================================================================

@pytest.fixture
def smtp_server(tmp_path):
    """aiosmtpd on loopback, requiring STARTTLS with a certificate made by openssl."""
    from aiosmtpd.controller import Controller

    cert, key = tmp_path / "smtp.pem", tmp_path / "smtp.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))

    class Inbox:
        messages = []

        async def handle_DATA(self, server, session, envelope):
            self.messages.append((envelope.rcpt_tos, envelope.content.decode()))
            return "250 OK"

    inbox = Inbox()
    inbox.messages = []
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, tls_context=context,
                            require_starttls=True)
    controller.start()
    yield {"port": port, "cafile": str(cert), "inbox": inbox}
    controller.stop()


@pytest.mark.timeout(90)
def test_offline_alert_by_email_over_starttls(backend_url, database, tmp_path, smtp_server):
    panel = jobs_panel(backend_url, tmp_path, MPANEL_SMTP_HOST="127.0.0.1",
                       MPANEL_SMTP_PORT=str(smtp_server["port"]),
                       MPANEL_SMTP_CAFILE=smtp_server["cafile"],
                       MPANEL_SMTP_FROM="alerts@panel.example")
    inbox = smtp_server["inbox"].messages
    try:
        operations.add_channel("mail", "email", "oncall@example.com")
        server, key = new_server("mail-1", critical=True)
        report(panel, key, server.id)
        assert wait_for(lambda: len(inbox) == 1)
        report(panel, key, server.id)
        assert wait_for(lambda: len(inbox) == 2)
    finally:
        stop_panel(panel)
    recipients, text = inbox[0]
    assert recipients == ["oncall@example.com"]
    assert "Subject: [mPanel FIRING] mail-1 offline" in text
    assert "From: alerts@panel.example" in text
    assert "[mPanel RESOLVED] mail-1 offline" in inbox[1][1]


def test_a_channel_of_an_unknown_kind_is_never_sent_as_email(database, smtp_server):
    """A row whose kind this panel does not know (written by hand, or by a newer release) fails
    at once, naming the kind: it is not mailed to its target, nor retried."""
    smtp = {"host": "127.0.0.1", "port": smtp_server["port"], "cafile": smtp_server["cafile"]}
    mail = operations.add_channel("mail", "email", "oncall@example.com")
    pager = models.Channel.create(name="pager", kind="sms", target="pager@example.com")
    server, _ = new_server("odd", critical=True)
    now = utcnow()
    alerts.open_alert(server, "offline", "offline: test", now)
    assert alerts.deliver_due(smtp, now) == (1, 1)
    assert [recipients for recipients, _ in smtp_server["inbox"].messages] == \
        [["oncall@example.com"]]
    refused = models.Delivery.get(models.Delivery.channel == pager.id)
    assert refused.status == "failed" and refused.attempts == 1
    assert "unknown channel kind 'sms'" in refused.last_error
    assert models.Delivery.get(models.Delivery.channel == mail.id).status == "sent"
    assert alerts.deliver_due(smtp, now + datetime.timedelta(days=1)) == (0, 0)


def test_an_unknown_smtp_tls_mode_never_sends_in_clear(database, smtp_server):
    """MPANEL_SMTP_TLS=ssl (a typo for implicit) fails at once naming the setting: it used to
    fall through to plain SMTP, login included. The CLI refuses it before anything else."""
    smtp = {"host": "127.0.0.1", "port": smtp_server["port"], "cafile": smtp_server["cafile"],
            "tls": "ssl", "user": "alerts", "password": "secret"}
    mail = operations.add_channel("mail", "email", "oncall@example.com")
    alerts.queue_test(mail, utcnow())
    assert alerts.deliver_due(smtp) == (0, 1)
    refused = models.Delivery.get()
    assert refused.status == "failed" and "MPANEL_SMTP_TLS" in refused.last_error
    assert smtp_server["inbox"].messages == []
    env = dict(os.environ, MPANEL_SMTP_TLS="ssl")
    result = subprocess.run([sys.executable, "-m", "panel", "list-alerts"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "MPANEL_SMTP_TLS must be" in result.stderr


def test_add_channel_flags_are_the_channel_kinds(backend_url, database, tmp_path):
    """`add-channel --<kind>` for each kind of the table, and nothing else."""
    from panel.__main__ import build_parser

    add_channel = build_parser()._subparsers._group_actions[0].choices["add-channel"]
    flags = {option for action in add_channel._mutually_exclusive_groups[0]._group_actions
             for option in action.option_strings}
    assert flags == {f"--{kind}" for kind in alerts.CHANNEL_KINDS}
    env = dict(os.environ, MPANEL_DATABASE_URL=backend_url, MPANEL_DATA_DIR=str(tmp_path))
    for flag, target in (("--webhook", "https://hooks.example.com/x"),
                         ("--email", "ops@example.com")):
        result = subprocess.run([sys.executable, "-m", "panel", "add-channel", flag[2:], flag,
                                 target], cwd=ROOT, env=env, capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 0, result.stderr
    unknown = subprocess.run([sys.executable, "-m", "panel", "add-channel", "pager", "--email",
                              "ops@example.com", "--sms", "555"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=60)
    assert unknown.returncode == 2 and "unrecognized arguments: --sms" in unknown.stderr
    assert sorted((c.name, c.kind) for c in models.Channel.select()) == \
        [("email", "email"), ("webhook", "webhook")]


def test_send_test_alert_reports_each_channel(backend_url, database, tmp_path, webhook):
    operations.add_channel("good", "webhook", webhook.url)
    operations.add_channel("broken", "webhook", f"http://127.0.0.1:{free_port()}/nothing")
    env = dict(os.environ, MPANEL_DATABASE_URL=backend_url, MPANEL_DATA_DIR=str(tmp_path))
    result = subprocess.run([sys.executable, "-m", "panel", "send-test-alert"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "ok: good (webhook)" in result.stdout
    assert "failed: broken (webhook): webhook unreachable" in result.stdout
    assert webhook.events() == [("test", None, None)]


# ===== Rules, routing, quiet, retries (the jobs' functions, run in this process) ===============

def add_samples(agent_id, cpu_values, end=None):
    end = end or utcnow()
    for index, cpu in enumerate(cpu_values):
        stamp = end - datetime.timedelta(minutes=len(cpu_values) - 1 - index)
        models.Metric.insert(agent=agent_id, timestamp=stamp, cpu_usage=cpu,
                             memory_used=1, memory_total=4, disk_max_percent=10.0).execute()


def test_threshold_alert_fires_once_and_resolves_once_without_flapping(database, webhook):
    operations.add_channel("ops", "webhook", webhook.url)
    operations.set_rule("cpu", 90, 5)
    server, _ = new_server("busy")
    agent = models.Agent.get()
    now = utcnow()
    minute = datetime.timedelta(minutes=1)

    add_samples(agent.id, [95] * 6, end=now)
    assert jobs.evaluate_rules(60, now) == (1, 0)
    # Hovering around the line for a quarter of an hour: no new alert, no resolution.
    for step, cpu in enumerate([89, 91, 88, 92, 89.5, 90.5, 89, 91, 88, 92, 89, 91, 90, 89, 91]):
        later = now + minute * (step + 1)
        add_samples(agent.id, [cpu], end=later)
        assert jobs.evaluate_rules(60, later) == (0, 0)
    # Clearly back to normal for 5 minutes: resolved, once.
    end = now + minute * 16
    for step in range(6):
        add_samples(agent.id, [40], end=end + minute * step)
    results = [jobs.evaluate_rules(60, end + minute * step) for step in range(6, 9)]
    assert results == [(0, 1), (0, 0), (0, 0)]
    assert alerts.deliver_due({}, end + minute * 10) == (2, 0)
    assert webhook.events() == [("firing", "busy", "cpu"), ("resolved", "busy", "cpu")]
    assert "cpu above 90% for 5 min" in webhook.received[0]["text"]


def test_server_override_and_routing(database, webhook):
    other = WebhookReceiver()
    try:
        operations.add_channel("default", "webhook", webhook.url)
        operations.add_channel("team-db", "webhook", other.url, is_default=False)
        operations.set_rule("cpu", 90, 5)
        db_server, _ = new_server("db")
        web_server, _ = new_server("web")
        operations.route("db", "team-db")
        operations.set_rule("cpu", 99, 5, server_name="web")  # web runs hot by design
        now = utcnow()
        for agent in models.Agent.select():
            add_samples(agent.id, [95] * 6, end=now)
        assert jobs.evaluate_rules(60, now) == (1, 0)  # only db: web's own rule says 99
        alerts.deliver_due({})
        assert other.events() == [("firing", "db", "cpu")]
        assert webhook.received == []
    finally:
        other.close()


def test_maintenance_silences_alerts_but_keeps_data(database, webhook):
    operations.add_channel("ops", "webhook", webhook.url)
    operations.set_rule("cpu", 90, 5)
    server, _ = new_server("patching", critical=True)
    operations.add_maintenance("patching", 60, "kernel upgrade")
    agent = models.Agent.get()
    now = utcnow()
    add_samples(agent.id, [99] * 6, end=now)
    assert jobs.evaluate_rules(60, now) == (1, 0)
    assert alerts.deliver_due({}) == (0, 0)
    alert = models.Alert.get()
    assert alert.silenced and models.Delivery.select().count() == 0
    assert models.Metric.select().count() == 6  # data kept


def test_failed_delivery_is_retried_with_backoff_and_visible(database, webhook):
    operations.add_channel("ops", "webhook", webhook.url)
    server, _ = new_server("flaky", critical=True)
    webhook.fail_next = 2
    now = utcnow()
    alerts.open_alert(server, "offline", "offline: test", now)
    assert alerts.deliver_due({}, now) == (0, 1)
    delivery = models.Delivery.get()
    assert delivery.status == "pending" and delivery.attempts == 1
    assert "HTTP 500" in delivery.last_error
    assert delivery.next_attempt_at >= now + datetime.timedelta(seconds=30)
    assert alerts.deliver_due({}, now) == (0, 0)  # not due yet
    later = delivery.next_attempt_at
    assert alerts.deliver_due({}, later) == (0, 1)
    second = models.Delivery.get()
    assert second.next_attempt_at - later >= datetime.timedelta(seconds=60)  # backing off
    assert alerts.deliver_due({}, second.next_attempt_at) == (1, 0)
    assert models.Delivery.get().status == "sent" and len(webhook.received) == 1


def test_two_evaluations_at_once_open_one_alert(database, webhook):
    """What two replicas do when their jobs overlap: the unique open alert wins."""
    operations.add_channel("ops", "webhook", webhook.url)
    server, _ = new_server("twice", critical=True)
    now = utcnow()
    assert alerts.open_alert(server, "offline", "offline", now) is not None
    assert alerts.open_alert(server, "offline", "offline", now) is None
    assert models.Alert.select().count() == 1 and models.Delivery.select().count() == 1
    assert alerts.resolve_alert(server, "offline", now) is not None
    assert alerts.resolve_alert(server, "offline", now) is None


# ===== Two replicas =============================================================================

@pytest.mark.timeout(120)
def test_two_replicas_on_one_postgresql_send_one_alert_per_transition(postgresql_url, tmp_path,
                                                                      webhook):
    """Two panel processes, both running their jobs every 0.2 s against one PostgreSQL, both
    receiving reports: each offline and each recovery is recorded and sent once."""
    from panel import db
    from tests.conftest import wipe

    database = db.bind(postgresql_url)
    db.init_schema(database)
    wipe(database)
    env = {"MPANEL_OFFLINE_AFTER": "2", "MPANEL_JOB_INTERVAL": "0.2",
           "MPANEL_REPORT_INTERVAL": "1", "MPANEL_SECRET_KEY": "shared-by-replicas"}
    first = start_panel(postgresql_url, tmp_path / "a.log", env)
    second = start_panel(postgresql_url, tmp_path / "b.log", env)
    try:
        operations.add_channel("ops", "webhook", webhook.url)
        server, key = new_server("replicated", critical=True)
        for _ in range(2):  # two outages, reported to alternate replicas
            assert report(first, key, server.id).status == 200
            assert report(second, key, server.id).status == 200
            expected = len(webhook.received) + 1
            assert wait_for(lambda: len(webhook.received) >= expected)
            # Proving that neither replica sends it again: sleeps, not waits, as what is
            # watched for must not happen. Five job rounds of both replicas here, ...
            time.sleep(1.0)
            assert report(second, key, server.id).status == 200
            assert wait_for(lambda: len(webhook.received) >= expected + 1)
            time.sleep(0.5)  # ... two or three after each recovery ...
        time.sleep(1.0)  # ... and five after the last, before the count
    finally:
        stop_panel(first)
        stop_panel(second)
    assert [e for e, _, _ in webhook.events()] == ["firing", "resolved"] * 2
    kinds = [e.kind for e in models.ServerEvent.select().order_by(models.ServerEvent.at)]
    assert kinds[:4] == ["offline", "online", "offline", "online"]
    assert models.Alert.select().count() == 2
