"""The dashboard in a real browser: Debian's Chromium, headless, driven by Selenium through
Debian's chromedriver (both installed by .ci/run). Login, the servers table refreshing itself
through htmx without a reload, agent-supplied text shown as text, and screenshots."""
import shutil
import time

import pytest

from panel import operations
from tests.conftest import (ONE_BACKEND, ROOT, TEST_BCRYPT_ROUNDS, bearer, http_request,
                            new_server, require, stamp, stop_process)
from tests.integration.test_api import sample

# What a browser sees does not depend on the database under the page.
pytestmark = ONE_BACKEND

PASSWORD = "browser test password"
ARTIFACTS = ROOT / "tests" / "artifacts"


@pytest.fixture
def browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    require("Chromium and chromedriver", chromium and driver_path,
            "install Debian's chromium and chromium-driver (.ci/run does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    # As root, without a screen, and with no network but loopback: these keep Chromium from
    # reaching out (background networking, component updates) and from needing a sandbox.
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--window-size=1280,800"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def log_in(browser, panel):
    from selenium.webdriver.common.by import By

    operations.set_admin("admin", PASSWORD, TEST_BCRYPT_ROUNDS)
    browser.get(f"{panel.url}/servers")
    assert "/login" in browser.current_url
    browser.find_element(By.NAME, "username").send_keys("admin")
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    deadline = time.monotonic() + 10
    while "/servers" not in browser.current_url and time.monotonic() < deadline:
        time.sleep(0.1)


def cell(browser, server_id, column):
    """One cell's text, read in a single step inside the page: the table is swapped by htmx
    every 10 s, and an element found a moment earlier may be gone."""
    return browser.execute_script(
        "const row = document.querySelector(`tr[data-server-id='${arguments[0]}']`);"
        "return row ? row.children[arguments[1]].textContent.trim() : null;",
        server_id, column)


@pytest.mark.timeout(120)
def test_servers_table_refreshes_itself_and_escapes_agent_text(browser, panel):
    from selenium.webdriver.common.by import By

    xss = "<img src=x onerror=alert(1)>"
    web, web_key = new_server("web-1")
    evil, evil_key = new_server("evil")
    http_request(panel, "POST", "/api/agent/register", headers=bearer(evil_key),
                 json_body={"hostname": xss, "os": "Linux", "arch": "x86_64", "version": "0.2.0"})
    first = sample(web.id, stamp(1))
    first["metrics"]["cpu"]["usage"] = 11.0
    assert http_request(panel, "POST", "/api/agent/metrics", headers=bearer(web_key),
                        json_body=first).status == 200

    log_in(browser, panel)
    assert browser.title == "Servers · mPanel"
    assert cell(browser, web.id, 4) == "11.0 %"
    # The hostname is text in the page, not an element.
    assert cell(browser, evil.id, 1) == xss
    assert browser.find_elements(By.CSS_SELECTOR, "td img") == []
    marker = browser.execute_script("window.__notReloaded = true; return window.__notReloaded")
    assert marker is True

    second = sample(web.id, stamp(2))
    second["metrics"]["cpu"]["usage"] = 77.0
    assert http_request(panel, "POST", "/api/agent/metrics", headers=bearer(web_key),
                        json_body=second).status == 200
    deadline = time.monotonic() + 25  # the table polls every 10 s
    while cell(browser, web.id, 4) != "77.0 %" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert cell(browser, web.id, 4) == "77.0 %"
    assert browser.execute_script("return window.__notReloaded") is True  # swapped, not reloaded

    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "servers.png"))
    assert (ARTIFACTS / "servers.png").stat().st_size > 5000
    logs = [entry for entry in browser.get_log("browser")
            if entry["level"] == "SEVERE" and "favicon" not in entry["message"]]
    assert logs == [], logs  # no CSP violation, no script error


@pytest.mark.timeout(60)
def test_logged_out_browser_is_sent_to_the_login_page(browser, panel):
    log_in(browser, panel)
    from selenium.webdriver.common.by import By

    browser.find_element(By.CSS_SELECTOR, "form[action='/logout'] button").click()
    assert wait_until(lambda: "/login" in browser.current_url, timeout=10)  # logged out
    browser.get(f"{panel.url}/servers")
    assert "/login" in browser.current_url


# ===== The whole admin flow, with the real agent ================================================

@pytest.fixture
def live_panel(backend_url, database, tmp_path):
    """A panel of its own that asks agents to report every 2 s, so a test sees numbers change
    within seconds. It shares the test's database (another replica, as in production)."""
    from tests.conftest import start_panel, stop_panel

    panel = start_panel(backend_url, tmp_path / "live-panel.log",
                        extra_env={"MPANEL_REPORT_INTERVAL": "2", "MPANEL_JOB_INTERVAL": "1"})
    yield panel
    stop_panel(panel)


def wait_until(condition, timeout=30, step=0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step)
    return condition()


def full_page_screenshot(browser, path, width=1280):
    """The whole page, not just the window: grow the window to the page's height first."""
    browser.set_window_size(width, 800)
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(width, min(height + 40, 6000))
    time.sleep(0.3)
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(path))
    browser.set_window_size(1280, 800)
    assert path.stat().st_size > 10_000


def sideways_overflow(browser):
    """(how many pixels the page runs off sideways, the first few elements that do, outside
    the boxes that scroll on their own: the servers table's and .scroll)."""
    overflow = browser.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth")
    wide = browser.execute_script(
        "const w = document.documentElement.clientWidth; return [...document.querySelectorAll"
        "('body *')].filter(e => e.getBoundingClientRect().right > w + 1 && !e.closest("
        "'.table-wrap, .scroll')).slice(0, 5).map(e => e.tagName + '.' + e.className + ' '"
        " + Math.round(e.getBoundingClientRect().right) + ' ' + e.textContent.slice(0, 40))")
    return overflow, wide


def hosting_services(minute):
    """What db-1's agent says of its hosting stack at `minute`: MariaDB busy in the evening, a
    mail queue that backs up for an hour, a certificate close to expiry, a watched daemon."""
    import math

    wave = (1 + math.sin(minute / 40)) / 2
    backed_up = 120 <= minute < 180
    return {
        "mysql": {"up": True, "version": "10.11.19-MariaDB-0+deb12u1", "uptime": 86400 * 12,
                  "connections": 20 + round(40 * wave), "maxConnections": 151,
                  "connectionsPercent": round(100 * (20 + round(40 * wave)) / 151, 1),
                  "threadsRunning": 2 + round(6 * wave), "queriesPerSec": 180 + 420 * wave,
                  "slowQueriesPerSec": 0.2 * wave, "bufferPoolUsedPercent": 71.5,
                  "bufferPoolHitPercent": 99.2,
                  "databases": [{"name": "shop", "size": 3_400_000_000},
                                {"name": "wordpress", "size": 820_000_000}]},
        "mailqueue": {"mta": "postfix", "total": 40 + minute - 120 if backed_up else 3,
                      "active": 2, "deferred": 38 + minute - 120 if backed_up else 1, "hold": 0,
                      "incoming": 0, "maildrop": 0,
                      "oldestAge": 60 * (minute - 118) if backed_up else 240},
        "certificates": {"total": 2, "expired": 0, "mismatched": 0, "unreadable": 0,
                         "minDaysLeft": 6.5, "certificates": [
                             {"name": "shop.example.com", "source": "nginx",
                              "issuer": "R11", "daysLeft": 6.5, "matches": True},
                             {"name": "www.example.com", "source": "nginx", "issuer": "R11",
                              "daysLeft": 71.2, "matches": True}]},
        "phpfpm": {"pools": [
            {"name": "www", "source": "status", "processManager": "dynamic", "maxChildren": 20,
             "total": 12, "active": 3 + round(9 * wave), "idle": 9 - round(9 * wave),
             "listenQueue": 4 if backed_up else 0, "acceptedPerSec": 40 + 60 * wave}]},
        "watched": {"processes": [{"name": "named", "count": 1, "rss": 48 << 20},
                                  {"name": "pure-ftpd", "count": 2, "rss": 3 << 20}]},
    }


def neighbours(panel):
    """A few other servers so the table looks like a real fleet: one with a day of history
    (sent as an agent replaying its buffer would), one silent for hours, one never seen."""
    import datetime

    from panel import models
    from tests import synthetic

    busy, busy_key = new_server("db-1", critical=True)
    now = datetime.datetime.utcnow()
    history = synthetic.history(now, 6 * 60, seed=7, skip=range(200, 230))
    for minute, document in enumerate(history):
        document["metrics"]["services"] = hosting_services(minute)
    for start in range(0, len(history), 100):
        assert http_request(panel, "POST", "/api/agent/metrics", headers=bearer(busy_key),
                            json_body={"serverId": busy.id,
                                       "samples": history[start:start + 100]}).status == 200
    http_request(panel, "POST", "/api/agent/register", headers=bearer(busy_key),
                 json_body={"hostname": "db-1.example.net", "os": "Linux 6.1.0-28-amd64",
                            "arch": "x86_64", "version": "0.2.0",
                            "bootTime": time.time() - 41 * 86400})
    quiet, quiet_key = new_server("mail-old")
    old = synthetic.history(now - datetime.timedelta(hours=3), 30, seed=3)
    http_request(panel, "POST", "/api/agent/metrics", headers=bearer(quiet_key),
                 json_body={"serverId": quiet.id, "samples": old})
    # Reports stamp last_seen with their arrival; this one's agent went quiet 2.5 h ago.
    models.Agent.update(hostname="mail.example.net", agent_version="0.1.0",
                        last_seen=now - datetime.timedelta(hours=2.5)).where(
        models.Agent.server == quiet.id).execute()
    new_server("backup-2")
    return busy


@pytest.mark.timeout(240)
def test_admin_adds_a_server_watches_it_report_and_rotates_its_key(browser, live_panel,
                                                                      tmp_path):
    """Done-when flow of issue 5: log in; add a server; run the real agent with that key; see
    its row appear and its numbers change without a reload; open its page; see SVG charts with
    points; switch to 7 d; rotate the key and see the agent keep reporting; log out and be
    refused. Writes full-page screenshots of the servers page and a detail page. The fleet
    around it is sent through the ingest API as history (tests/synthetic.py)."""
    import json

    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    from panel import models, rollups
    from tests.conftest import start_agent, write_agent_config

    panel = live_panel
    busy = neighbours(panel)
    browser.implicitly_wait(10)  # each click loads a page: find_element waits for it
    log_in(browser, panel)
    assert browser.title == "1 offline · mPanel"  # mail-old has been silent for hours

    # Add a server through the page; the key is shown once.
    browser.find_element(By.LINK_TEXT, "Add server").click()
    browser.find_element(By.NAME, "name").send_keys("web-7")
    browser.find_element(By.CSS_SELECTOR, "form[action='/servers'] button[type=submit]").click()
    key = browser.find_element(By.ID, "api-key").text
    assert key.startswith("agent_")
    linux = browser.find_element(By.ID, "cmd-linux").text
    assert f"--api-key {key}" in linux and "/downloads/install.sh" in linux
    server = models.Server.get(models.Server.name == "web-7")

    browser.get(f"{panel.url}/servers")
    marker = browser.execute_script("window.__notReloaded = true; return true")
    assert marker and cell(browser, server.id, 2) == "never seen"

    # The real agent, with that key.
    config = write_agent_config(tmp_path / "agent", panel.url, key, interval=2)
    agent = start_agent(config, tmp_path / "agent.log")
    try:
        assert wait_until(lambda: cell(browser, server.id, 2) == "online", timeout=40), \
            (tmp_path / "agent.log").read_text()[-2000:]
        row_text = "return document.querySelector(`tr[data-server-id='${arguments[0]}']`)" \
                   ".textContent.replace(/\\s+/g, ' ')"
        first = browser.execute_script(row_text, server.id)
        # The agent reports every 2 s and the table polls every 10 s: the numbers move.
        changed = wait_until(lambda: browser.execute_script(row_text, server.id) != first and
                             cell(browser, server.id, 4), timeout=35)
        assert changed, f"the row did not change: {first}"
        assert cell(browser, server.id, 4).endswith("%")  # CPU from the real agent
        assert browser.execute_script("return window.__notReloaded") is True
        # The Services column comes from the service checks (their built-in rules, which the
        # test's wiped database lacks): run them now rather than wait.
        from panel import alerts, jobs

        alerts.ensure_default_rules()
        jobs.evaluate_checks(300)
        browser.get(f"{panel.url}/servers")
        assert wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, "td.svc .tag"))
        full_page_screenshot(browser, ARTIFACTS / "servers-page.png")

        # Its detail page: charts with points from the live samples.
        browser.find_element(By.LINK_TEXT, "web-7").click()
        wait_until(lambda: "web-7" in browser.title)
        charts = browser.find_elements(By.CSS_SELECTOR, "figure.chart")
        assert len(charts) >= 7  # the system's seven, and this machine's services' (MariaDB)
        points = int(charts[0].get_attribute("data-points"))
        assert points >= 1
        assert browser.find_elements(By.CSS_SELECTOR, "figure.chart svg.plot path.line")
        # Hovering a chart shows the values of that moment.
        ActionChains(browser).move_to_element_with_offset(
            charts[0].find_element(By.CSS_SELECTOR, "svg.chart-svg"), 250, 0).perform()
        tip = charts[0].find_element(By.CSS_SELECTOR, ".tip")
        assert wait_until(lambda: tip.is_displayed() and "usage" in tip.text, timeout=5)

        # 7 days: an htmx swap of the charts only, read from the 5-minute rollups (the
        # rollup job runs every minute; the test runs it now rather than wait).
        rollups.run_rollups()
        browser.execute_script("window.__detailNotReloaded = true")
        browser.find_element(By.CSS_SELECTOR, "nav.ranges a[href$='range=7d']").click()
        assert wait_until(lambda: browser.find_elements(
            By.CSS_SELECTOR, "nav.ranges a.active[href$='range=7d']"), timeout=10)
        assert browser.execute_script("return window.__detailNotReloaded") is True
        assert browser.current_url.endswith("range=7d")  # the address follows: reload keeps it
        week = browser.find_elements(By.CSS_SELECTOR, "figure.chart")
        assert int(week[0].get_attribute("data-points")) >= 1

        # Rotate the key from the page: the agent is handed the new key and keeps reporting.
        browser.find_element(By.CSS_SELECTOR, f"form[action='/servers/{server.id}/rotate'] "
                                              "button").click()
        new_key = browser.find_element(By.ID, "api-key").text
        assert new_key.startswith("agent_") and new_key != key
        before = models.Metric.select().where(models.Metric.agent == models.Agent.get(
            models.Agent.server == server.id).id).count()
        state = tmp_path / "agent" / "state" / "state.json"
        assert wait_until(lambda: state.exists() and
                          json.loads(state.read_text()).get("apiKey") == new_key, timeout=30)
        agent_row = models.Agent.get(models.Agent.server == server.id)
        assert wait_until(lambda: models.Metric.select().where(
            models.Metric.agent == agent_row.id).count() >= before + 2, timeout=30)
        browser.get(f"{panel.url}/servers/{server.id}")
        assert wait_until(lambda: "switched to the new key" in browser.page_source, timeout=20)
        assert agent.poll() is None  # still running
    finally:
        stop_process(agent)

    # A detail page with history, for the README: the system's charts, then its hosting
    # stack's (MySQL, the mail queue), and the services section with their lists.
    browser.get(f"{panel.url}/servers/{busy.id}?range=6h")
    titles = [figure.find_element(By.CSS_SELECTOR, "span.title").text
              for figure in browser.find_elements(By.CSS_SELECTOR, "figure.chart")]
    assert titles[:1] == ["CPU"] and {"MySQL connections", "MySQL queries", "PHP-FPM",
                                      "Mail queue"} <= set(titles), titles
    captions = {caption.text for caption in browser.find_elements(By.CSS_SELECTOR,
                                                                   "#processes caption")}
    assert {"mysql", "mysql · databases", "certificates · certificates",
            "watched · processes"} <= captions, captions
    full_page_screenshot(browser, ARTIFACTS / "server-detail.png")

    # At a phone's width nothing runs off the page sideways (the servers table scrolls in its
    # own box), and dark mode follows the system.
    for path in (f"/servers/{busy.id}?range=24h", "/servers", "/alerts"):
        browser.set_window_size(375, 800)
        browser.get(f"{panel.url}{path}")
        overflow, wide = sideways_overflow(browser)
        assert overflow <= 0, (path, overflow, wide)
    full_page_screenshot(browser, ARTIFACTS / "server-detail-375.png", width=375)
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {
        "features": [{"name": "prefers-color-scheme", "value": "dark"}]})
    browser.get(f"{panel.url}/servers/{busy.id}")
    background = browser.execute_script(
        "return getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(14, 16, 22)", background
    full_page_screenshot(browser, ARTIFACTS / "server-detail-dark.png")
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
    logs = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert logs == [], logs  # no CSP violation, no script error

    # Log out; the pages are refused afterwards.
    browser.find_element(By.CSS_SELECTOR, "form[action='/logout'] button").click()
    wait_until(lambda: "/login" in browser.current_url)
    browser.get(f"{panel.url}/servers/{server.id}")
    assert "/login" in browser.current_url


# ===== Two-factor login ==========================================================================

@pytest.mark.timeout(90)
def test_a_user_sets_up_two_factor_and_logs_in_with_a_code_from_the_secret_shown(browser, panel):
    """The account page shows the secret; the test is the phone: it computes each code from
    that secret (RFC 6238) and types it, once to turn two-factor on and once to log in."""
    from selenium.webdriver.common.by import By

    from panel import totp

    log_in(browser, panel)
    browser.find_element(By.CSS_SELECTOR, "a[href='/account']").click()
    assert wait_until(lambda: "/account" in browser.current_url, timeout=10)
    browser.find_element(By.XPATH, "//button[text()='Set up two-factor']").click()
    secret = wait_until(lambda: browser.find_elements(By.ID, "totp-secret"), timeout=10)[0].text
    link = browser.find_element(By.ID, "totp-link").get_attribute("href")
    assert link.startswith("otpauth://totp/mPanel:admin?secret=")
    key = totp.secret_key(secret)
    step = totp.step_at(time.time())
    browser.find_element(By.CSS_SELECTOR, "form[action='/account/two-factor/confirm'] "
                                          "input[name=code]").send_keys(totp.hotp(key, step))
    browser.find_element(By.CSS_SELECTOR, "form[action='/account/two-factor/confirm'] "
                                          "input[name=password]").send_keys(PASSWORD)
    browser.find_element(By.XPATH, "//button[text()='Turn two-factor on']").click()
    codes = wait_until(lambda: browser.find_elements(By.ID, "recovery-codes"), timeout=10)[0]
    assert len(codes.text.split()) == totp.RECOVERY_CODE_COUNT
    full_page_screenshot(browser, ARTIFACTS / "account-two-factor.png")

    browser.find_element(By.CSS_SELECTOR, "form[action='/logout'] button").click()
    assert wait_until(lambda: "/login" in browser.current_url, timeout=10)
    browser.find_element(By.NAME, "username").send_keys("admin")
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    assert wait_until(lambda: "/login/code" in browser.current_url, timeout=10)
    # The confirming code's step is spent: the phone's next code logs in.
    browser.find_element(By.NAME, "code").send_keys(totp.hotp(key, step + 1))
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    assert wait_until(lambda: browser.current_url.endswith("/servers"), timeout=10)
    assert browser.title == "Servers · mPanel"
    logs = [entry for entry in browser.get_log("browser")
            if entry["level"] == "SEVERE" and "favicon" not in entry["message"]]
    assert logs == [], logs  # no CSP violation, no script error
