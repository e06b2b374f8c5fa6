"""The dashboard in a real browser: Debian's Chromium, headless, driven by Selenium through
Debian's chromedriver (both installed by .ci/run). Login, the servers table refreshing itself
through htmx without a reload, agent-supplied text shown as text, and screenshots."""
import os
import shutil
import time
from pathlib import Path

import pytest

from panel import services
from tests.conftest import (ROOT, TEST_BCRYPT_ROUNDS, bearer, http_request, new_server, require,
                            stamp)
from tests.integration.test_api import sample

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

    services.set_admin("admin", PASSWORD, TEST_BCRYPT_ROUNDS)
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
    time.sleep(0.5)
    browser.get(f"{panel.url}/servers")
    assert "/login" in browser.current_url
