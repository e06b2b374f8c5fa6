"""A customer's user in a real browser (headless Chromium, as test_browser.py): logs in through
the form and sees their customer's servers and nothing else — in the table, its live refresh,
the summary strip and the title — and another customer's server is a 404; a customer's admin
turns on their status page and it renders. Screenshots: tests/artifacts/customer-servers.png
and customer-status.png (docs/screenshots/ keeps copies)."""
import pytest

from panel import models, operations
from tests.conftest import LOOPBACK, ONE_BACKEND, TEST_BCRYPT_ROUNDS, bearer, http_request, stamp
from tests.integration.test_api import sample
from tests.integration.test_browser import (ARTIFACTS, PASSWORD, browser,  # noqa: F401 (fixture)
                                            cell, full_page_screenshot, wait_until)
from tests.integration.test_dashboard_pages import register

pytestmark = ONE_BACKEND


def reporting_server(panel, name, customer, hostname, cpu):
    server, key = operations.add_server(name, TEST_BCRYPT_ROUNDS,
                                        customer_id=customer.id if customer else None)
    register(panel, key, hostname=hostname)
    document = sample(server.id, stamp(0))
    document["metrics"]["cpu"]["usage"] = cpu
    assert http_request(panel, "POST", "/api/agent/metrics", headers=bearer(key),
                        json_body=document).status == 200
    return server, key


@pytest.mark.timeout(120)
def test_a_customer_user_logs_in_and_sees_only_their_servers(browser, panel):  # noqa: F811
    from selenium.webdriver.common.by import By

    acme = operations.add_customer("Acme Hosting")
    globex = operations.add_customer("Globex")
    web, web_key = reporting_server(panel, "acme-web", acme, "web.acme.example", 21.0)
    reporting_server(panel, "acme-db", acme, "db.acme.example", 35.0)
    other, _ = reporting_server(panel, "globex-web", globex, "web.globex.example", 50.0)
    reporting_server(panel, "staff-monitor", None, "monitor.staff.example", 5.0)
    models.Alert.create(server=other.id, rule="cpu", open_key="cpu", started_at=stamp(0),
                        message="globex-web CPU above 90 %")
    operations.set_admin("acme-ops", PASSWORD, TEST_BCRYPT_ROUNDS, role="customer-viewer",
                         customer_id=acme.id)

    browser.get(f"{panel.url}/servers")
    assert "/login" in browser.current_url
    browser.find_element(By.NAME, "username").send_keys("acme-ops")
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    assert wait_until(lambda: browser.current_url.endswith("/servers"), timeout=10)

    def names():
        return browser.execute_script(
            "return [...document.querySelectorAll('#server-rows td.name a')]"
            ".map(a => a.textContent.trim())")

    assert names() == ["acme-db", "acme-web"]
    assert browser.title == "Servers · mPanel"  # Globex's firing alert is not counted
    summary = browser.find_element(By.ID, "summary").text
    assert "2 servers" in summary.replace("\n", " ") and "0 alerts firing" in \
        summary.replace("\n", " ")
    nav = browser.find_element(By.CSS_SELECTOR, "header.topbar").text
    assert "acme-ops · Acme Hosting (read-only)" in nav
    assert "Customers" not in nav and "Security" not in nav and "Add server" not in nav
    page = browser.page_source.lower()
    assert "globex" not in page and "staff-monitor" not in page

    # The live refresh brings this customer's new numbers, and still only theirs.
    browser.execute_script("window.__notReloaded = true")
    later = sample(web.id, stamp(1))
    later["metrics"]["cpu"]["usage"] = 64.0
    assert http_request(panel, "POST", "/api/agent/metrics", headers=bearer(web_key),
                        json_body=later).status == 200
    assert wait_until(lambda: cell(browser, web.id, 4) == "64.0 %", timeout=25)
    assert browser.execute_script("return window.__notReloaded") is True
    assert names() == ["acme-db", "acme-web"]

    ARTIFACTS.mkdir(exist_ok=True)
    full_page_screenshot(browser, ARTIFACTS / "customer-servers.png")
    assert (ARTIFACTS / "customer-servers.png").stat().st_size > 5000

    # Another customer's server, by its address: the same 404 as a server that does not exist.
    browser.get(f"{panel.url}/servers/{other.id}")
    assert browser.title == "Not Found · mPanel" and "globex" not in browser.page_source.lower()
    browser.get(f"{panel.url}/alerts")
    assert "globex" not in browser.page_source.lower()
    logs = [entry for entry in browser.get_log("browser")
            if entry["level"] == "SEVERE" and "favicon" not in entry["message"]
            and "404" not in entry["message"]]
    assert logs == [], logs


@pytest.mark.timeout(150)
def test_a_customer_admin_turns_on_their_status_page_and_it_renders(browser, panel):  # noqa: F811
    """Issue 13's done-when: their status page renders. The customer's admin publishes a server,
    turns the page on with a title from the box below their table, and the public page (no
    session) shows their published servers only, with its live refresh. Screenshot:
    tests/artifacts/customer-status.png (docs/screenshots/ keeps a copy)."""
    import datetime

    from selenium.webdriver.common.by import By

    acme = operations.add_customer("Acme Hosting")
    globex = operations.add_customer("Globex")
    shop, _ = reporting_server(panel, "shop.acme.example", acme, "web.acme.example", 21.0)
    mail, _ = reporting_server(panel, "mail.acme.example", acme, "mx.acme.example", 8.0)
    api, _ = reporting_server(panel, "api.acme.example", acme, "api.acme.example", 35.0)
    reporting_server(panel, "backup.acme.example", acme, "backup.acme.example", 3.0)
    other, _ = reporting_server(panel, "globex-web", globex, "web.globex.example", 50.0)
    staff, _ = reporting_server(panel, "staff-monitor", None, "monitor.staff.example", 5.0)
    # Monitored for 40 days; the mail server was down for 20 minutes three hours ago.
    now = models.utcnow()
    models.Server.update(created_at=now - datetime.timedelta(days=40)).execute()
    models.record_server_event(mail.id, "offline", now - datetime.timedelta(hours=3))
    models.record_server_event(mail.id, "online", now - datetime.timedelta(hours=2, minutes=40))
    for published in (shop, api, other, staff):
        operations.set_flag(published.id, "public_status", True)
    operations.set_status_page(globex.id, True, "Globex")
    operations.set_admin("acme-ops", PASSWORD, TEST_BCRYPT_ROUNDS, role="customer-admin",
                         customer_id=acme.id)

    browser.get(f"{panel.url}/login")
    browser.find_element(By.NAME, "username").send_keys("acme-ops")
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    assert wait_until(lambda: browser.current_url.endswith("/servers"), timeout=10)
    # The mail server is published from its own page's Manage box.
    browser.get(f"{panel.url}/servers/{mail.id}")
    browser.find_element(By.XPATH, "//button[normalize-space()='Show on the status page']").click()
    assert wait_until(lambda: models.Server.get_by_id(mail.id).public_status, timeout=10)
    browser.get(f"{panel.url}/servers")
    box = browser.find_element(By.ID, "status-page")
    assert "Off" in box.text
    box.find_element(By.NAME, "status_page").click()
    title = box.find_element(By.NAME, "status_title")
    title.clear()
    title.send_keys("Acme Hosting — service status")
    box.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    assert wait_until(lambda: models.Customer.get_by_id(acme.id).status_page, timeout=10)
    box = browser.find_element(By.ID, "status-page")
    assert "/status/acme-hosting" in box.text and "On, public" in box.text

    # The public page, without a session.
    browser.delete_all_cookies()
    browser.get(f"{panel.url}/status/acme-hosting")
    assert browser.title == "All systems up · Acme Hosting — service status"
    assert browser.find_element(By.CSS_SELECTOR, ".status-heading").text == \
        "Acme Hosting — service status"

    def names():
        return browser.execute_script(
            "return [...document.querySelectorAll('#status-board tbody tr td:first-child')]"
            ".map(td => td.textContent.trim())")

    assert names() == ["api.acme.example", "mail.acme.example", "shop.acme.example"]
    mail_row = browser.find_element(By.XPATH, "//tr[td[normalize-space()='mail.acme.example']]")
    assert "98.61 %" in mail_row.text
    page = browser.page_source.lower()
    for absent in ("globex", "staff-monitor", "backup.acme", "web.acme.example", "21.0"):
        assert absent not in page, absent
    ARTIFACTS.mkdir(exist_ok=True)
    full_page_screenshot(browser, ARTIFACTS / "customer-status.png")

    # Its live refresh asks /status/acme-hosting: a server going down shows without a reload.
    browser.execute_script("window.__notReloaded = true")
    models.Server.update(state="offline", state_since=models.utcnow()).where(
        models.Server.id == api.id).execute()
    assert wait_until(lambda: "1 of 3 down" in browser.find_element(By.ID, "status-board").text,
                      timeout=45)
    assert browser.execute_script("return window.__notReloaded") is True
    assert wait_until(lambda: browser.title == "1 down · Acme Hosting — service status",
                      timeout=5)
    assert names() == ["api.acme.example", "mail.acme.example", "shop.acme.example"]
    logs = [entry for entry in browser.get_log("browser")
            if entry["level"] == "SEVERE" and "favicon" not in entry["message"]]
    assert logs == [], logs  # no CSP violation, no failed request
@pytest.mark.timeout(120)
def test_a_customer_admin_logs_in_with_a_code_adds_a_webhook_and_their_alert_reaches_it(
        browser, panel):  # noqa: F811
    """Two-factor required of the customer's users; the admin enrolled (its secret is the test's
    phone), logs in with password and code, adds a webhook channel on the alerts page, and an
    alert of their server reaches a real receiver — another customer's alert does not."""
    import time

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from panel import alerts, jobs, totp
    from panel.db import utcnow
    from tests.integration.test_alerts import WebhookReceiver, add_samples
    from tests.integration.test_dashboard import Browser
    from tests.integration.test_two_factor import enrol

    acme = operations.add_customer("Acme Hosting")
    globex = operations.add_customer("Globex")
    operations.require_two_factor(acme.id)
    web, _ = reporting_server(panel, "acme-web", acme, "web.acme.example", 21.0)
    other, _ = reporting_server(panel, "globex-web", globex, "web.globex.example", 50.0)
    operations.set_admin("acme-boss", PASSWORD, TEST_BCRYPT_ROUNDS, role="customer-admin",
                         customer_id=acme.id)
    phone = Browser(panel)
    phone.username = "acme-boss"
    assert phone.login("acme-boss", PASSWORD).status == 303
    secret, _, step = enrol(phone)
    receiver, stranger = WebhookReceiver(), WebhookReceiver()
    try:
        operations.add_channel("globex-hook", "webhook", stranger.url,
                               customer_id=globex.id, allowed=LOOPBACK)

        browser.get(f"{panel.url}/servers")
        browser.find_element(By.NAME, "username").send_keys("acme-boss")
        browser.find_element(By.NAME, "password").send_keys(PASSWORD)
        browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
        assert wait_until(lambda: "/login/code" in browser.current_url, timeout=10)
        # The enrolling code's step is spent: the phone's next code logs in.
        browser.find_element(By.NAME, "code").send_keys(
            totp.hotp(totp.secret_key(secret), max(step + 1, totp.step_at(time.time()))))
        browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
        assert wait_until(lambda: browser.current_url.endswith("/servers"), timeout=10)

        browser.get(f"{panel.url}/alerts")
        form = browser.find_element(By.CSS_SELECTOR, "form[action='/alerts/channels']")
        form.find_element(By.NAME, "name").send_keys("acme-oncall")
        Select(form.find_element(By.NAME, "kind")).select_by_value("webhook")
        form.find_element(By.NAME, "target").send_keys(receiver.url)
        form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        assert wait_until(lambda: "acme-oncall" in browser.page_source, timeout=10)
        assert "globex" not in browser.page_source.lower()
        channel = models.channel_of(acme.id, "acme-oncall")
        assert channel is not None and channel.is_default

        # The alert job, in this process as the other alert tests run it.
        operations.set_rule("cpu", 90, 5)
        now = utcnow()
        for server in (web, other):
            add_samples(models.agent_of_server(server.id).id, [95] * 6, end=now)
        assert jobs.evaluate_rules(60, now) == (2, 0)
        alerts.deliver_due({}, allowed=LOOPBACK)
        assert receiver.events() == [("firing", "acme-web", "cpu")]
        assert stranger.events() == [("firing", "globex-web", "cpu")]

        browser.get(f"{panel.url}/alerts")
        assert wait_until(lambda: "firing sent" in browser.page_source, timeout=10)
        ARTIFACTS.mkdir(exist_ok=True)
        full_page_screenshot(browser, ARTIFACTS / "customer-channels.png")
        logs = [entry for entry in browser.get_log("browser")
                if entry["level"] == "SEVERE" and "favicon" not in entry["message"]]
        assert logs == [], logs  # no CSP violation, no script error
    finally:
        receiver.close()
        stranger.close()
