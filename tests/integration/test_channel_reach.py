"""Customers' channels reach only public addresses (panel/outbound.py), on a real panel started
without MPANEL_ALLOW_CHANNEL_NETWORKS: a customer-admin's webhook or Apprise URL on the panel's
network is refused when saved, naming the problem, while a staff admin's is not; and a target
that passed at save but reaches loopback at send — saved here while loopback was allowed and
sent by the panel that does not allow it, as a name re-pointed after the check would be
(DNS rebinding) — fails at connect time and nothing reaches the receiver. "Send test alert"
sends its own delivery only. One backend: this is delivery, not storage."""
import html
import re

import pytest

from panel import alerts, models, operations
from panel.db import utcnow
from tests.conftest import LOOPBACK, start_panel, stop_panel
from tests.integration.test_alerts import WebhookReceiver
from tests.integration.test_customers import logged_in
from tests.integration.test_dashboard_pages import post

pytestmark = pytest.mark.parametrize("backend_url", ["sqlite"], indirect=True)
RULE = "customer channels may reach only public addresses (MPANEL_ALLOW_CHANNEL_NETWORKS)"


@pytest.fixture
def strict_panel(backend_url, database, tmp_path):
    """A panel with the default setting (no networks allowed), logging at debug level so that
    anything Apprise or the delivery would leak shows."""
    panel = start_panel(backend_url, tmp_path / "panel.log",
                        {"MPANEL_JOB_INTERVAL": "0", "MPANEL_LOG_LEVEL": "debug"})
    yield panel
    stop_panel(panel)


@pytest.fixture
def receiver():
    one = WebhookReceiver()
    yield one
    one.close()


def test_a_customer_admins_target_on_the_panels_network_is_refused_at_save_naming_it(
        strict_panel, receiver):
    acme = operations.add_customer("Acme Hosting", "acme")
    customer_admin = logged_in(strict_panel, "acme-admin", "customer-admin", acme)
    for kind, target, problem in (
            ("webhook", receiver.url, "webhook target 127.0.0.1 is a loopback address"),
            ("webhook", "http://169.254.169.254/latest/meta-data/",
             "webhook target 169.254.169.254 is a link-local address"),
            ("webhook", "http://2130706433/", "webhook target 2130706433 (127.0.0.1) is a "
                                              "loopback address"),
            ("webhook", "http://[::ffff:10.0.0.5]/", "webhook target ::ffff:10.0.0.5 is a "
                                                     "private address"),
            ("apprise", "json://10.0.0.5/hook", "apprise target 10.0.0.5 is a private address")):
        refused = post(customer_admin, "/alerts/channels", {"name": "probe", "kind": kind,
                                                             "target": target})
        assert refused.status == 400 and f"{problem}; {RULE}" in html.unescape(refused.text)
    assert models.channel_of(acme.id, "probe") is None
    # Saved where loopback was allowed, it cannot be edited to another internal target.
    mine = operations.add_channel("mine", "webhook", receiver.url, customer_id=acme.id,
                                  allowed=LOOPBACK)
    edited = post(customer_admin, f"/alerts/channels/{mine.id}/edit",
                  {"name": "mine", "target": "http://192.168.1.1/"})
    assert edited.status == 400 and "192.168.1.1 is a private address" in edited.text
    assert models.Channel.get_by_id(mine.id).target == receiver.url
    # The staff's channels may reach anything: the admin owns the network.
    admin = logged_in(strict_panel, "admin")
    assert post(admin, "/alerts/channels", {"name": "ops", "kind": "webhook",
                                            "target": receiver.url}).status == 303


def test_a_target_internal_at_send_fails_at_connect_time_and_the_test_sends_only_its_own(
        strict_panel, receiver):
    acme = operations.add_customer("Acme Hosting", "acme")
    port = receiver.server.server_port
    hook = operations.add_channel("acme-hook", "webhook", f"http://localhost:{port}/hook",
                                  customer_id=acme.id, allowed=LOOPBACK)
    pager = operations.add_channel("acme-pager", "apprise", f"json://localhost:{port}/apprise",
                                   customer_id=acme.id, allowed=LOOPBACK)
    staff = operations.add_channel("ops", "webhook", receiver.url)
    waiting = alerts.queue_test(staff, utcnow())  # due, for the background job to send
    customer_admin = logged_in(strict_panel, "acme-admin", "customer-admin", acme)
    for channel, kind in ((hook, "webhook"), (pager, "apprise")):
        failed = post(customer_admin, f"/alerts/channels/{channel.id}/test", {})
        text = html.unescape(failed.text)
        assert failed.status == 502
        assert re.search(rf"{kind} target (127\.0\.0\.1|::1) is a loopback address; "
                         rf"{re.escape(RULE)}", text), text
        delivery = models.latest_test_delivery(channel.id)
        assert (delivery.status, delivery.attempts) == ("failed", 1)  # never retried
    assert receiver.raw == []  # nothing reached the receiver, nor the staff's hook
    assert models.Delivery.get_by_id(waiting.id).status == "pending"
    log = strict_panel.log_text()
    assert "alert delivery failed channel=acme-pager" in log
    assert not re.search(r"^\S+ \S+ \w+ apprise ", log, re.M)
