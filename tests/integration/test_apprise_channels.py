"""The `apprise` channel kind through the real Apprise library (requirements-optional.txt):
its own json:// and form:// schemes POST to a real receiver on loopback, from the page's "Send
test alert" (a staff admin's channel and a customer-admin's), with the existing backoff after
a failure; the page shows only the URL's scheme and no log carries its secret. And a panel
without the package — a real interpreter in which `import apprise` fails, as on a server
that never installed it — refuses the kind and fails a stored channel, naming the package.
One backend: this is delivery, not storage."""
import html
import os
import re
import subprocess
import sys
import urllib.parse

import pytest

from panel import alerts, models, operations
from tests.conftest import ROOT
from tests.integration.test_alerts import WebhookReceiver
from tests.integration.test_customers import logged_in
from tests.integration.test_dashboard_pages import post

pytestmark = pytest.mark.parametrize("backend_url", ["sqlite"], indirect=True)
SECRET = "s3cret-pass-word"


@pytest.fixture
def receiver():
    one = WebhookReceiver()
    yield one
    one.close()


def page_text(response):
    return html.unescape(response.text)


def test_apprise_json_and_form_channels_deliver_the_pages_test_alert_and_retry_after_a_failure(
        panel, receiver):
    admin = logged_in(panel, "admin")
    url = f"json://mpanel:{SECRET}@127.0.0.1:{receiver.server.server_port}/json-hook"
    assert post(admin, "/alerts/channels", {"name": "pager", "kind": "apprise",
                                            "target": url, "is_default": "1"}).status == 303
    channel = models.channel_of(None, "pager")
    page = page_text(admin.request("GET", "/alerts"))
    assert "json://…" in page and SECRET not in page and "json-hook" not in page

    sent = post(admin, f"/alerts/channels/{channel.id}/test", {})
    assert sent.status == 200 and "Test alert sent to pager." in page_text(sent)
    path, content_type, body = receiver.raw.pop()
    assert (path, content_type) == ("/json-hook", "application/json")
    assert '"title": "mPanel test alert"' in body and '"type": "info"' in body

    # A customer-admin's form:// channel (the shared panel allows loopback targets).
    acme = operations.add_customer("Acme Hosting", "acme")
    customer_admin = logged_in(panel, "acme-admin", "customer-admin", acme)
    assert post(customer_admin, "/alerts/channels", {
        "name": "acme-form", "kind": "apprise", "is_default": "1",
        "target": f"form://127.0.0.1:{receiver.server.server_port}/form-hook"}).status == 303
    form_channel = models.channel_of(acme.id, "acme-form")
    assert post(customer_admin, f"/alerts/channels/{form_channel.id}/test", {}).status == 200
    path, content_type, body = receiver.raw.pop()
    assert (path, content_type) == ("/form-hook", "application/x-www-form-urlencoded")
    assert urllib.parse.parse_qs(body)["title"] == ["mPanel test alert"]

    # A failing receiver: the page says why, without the secret; the existing backoff retries.
    receiver.fail_next = 1
    failed = post(admin, f"/alerts/channels/{channel.id}/test", {})
    assert failed.status == 502
    assert "Apprise: Failed to send JSON POST notification: Internal server error., " \
           "error=500.; it will be retried with backoff." in page_text(failed)
    assert SECRET not in failed.text and not receiver.raw
    delivery = models.latest_test_delivery(channel.id)
    assert (delivery.status, delivery.attempts) == ("pending", 1)
    assert (delivery.next_attempt_at - delivery.created_at).total_seconds() >= 29
    assert alerts.deliver_due({}, delivery.next_attempt_at) == (1, 0)
    assert len(receiver.raw) == 1
    assert models.Delivery.get_by_id(delivery.id).status == "sent"

    # Editing with the target left empty keeps the secret URL the page never showed.
    assert post(admin, f"/alerts/channels/{channel.id}/edit",
                {"name": "pager-2", "target": ""}).status == 303
    assert models.Channel.get_by_id(channel.id).target == url
    refused = post(admin, "/alerts/channels", {"name": "odd", "kind": "apprise",
                                               "target": f"nosuch://{SECRET}@example.com"})
    assert refused.status == 400 and "Apprise does not understand this URL (nosuch://…)" in \
        page_text(refused) and SECRET not in refused.text
    log = panel.log_text()
    assert SECRET not in log and "error=Apprise: Failed to send JSON POST" in log
    assert not re.search(r"^\S+ \S+ \w+ apprise ", log, re.M)  # Apprise's own logger kept out


HIDDEN = ("import sys; sys.modules['apprise'] = None; from panel.__main__ import main; "
          "sys.exit(main(sys.argv[1:]))")


def without_apprise(database_url, *args):
    """The real CLI in an interpreter where `import apprise` raises ImportError."""
    env = dict(os.environ, MPANEL_DATABASE_URL=database_url, MPANEL_BCRYPT_ROUNDS="4")
    return subprocess.run([sys.executable, "-c", HIDDEN, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def test_a_panel_without_apprise_refuses_the_kind_and_fails_stored_channels_naming_it(
        database, backend_url, receiver):
    url = f"json://127.0.0.1:{receiver.server.server_port}/hook"
    added = without_apprise(backend_url, "add-channel", "pager", "--apprise", url)
    assert added.returncode == 2 and "need the Apprise package" in added.stderr
    assert "pip install -r requirements-optional.txt" in added.stderr
    assert models.channel_of(None, "pager") is None
    # A channel stored where Apprise was installed, delivered where it is not.
    channel = operations.add_channel("pager", "apprise", url)
    tested = without_apprise(backend_url, "send-test-alert", "--channel", "pager")
    assert tested.returncode == 1
    assert tested.stdout.startswith("failed: pager (apprise): apprise channels need the "
                                    "Apprise package")
    delivery = models.latest_test_delivery(channel.id)
    assert (delivery.status, delivery.attempts) == ("failed", 1)  # no retry can mend it
    assert not receiver.raw
