"""The minimal dashboard over real HTTP: login, the servers table, escaping, CSRF."""
import html
import re

import pytest

from panel import models, operations
from tests.conftest import TEST_BCRYPT_ROUNDS, bearer, http_request, new_server

PASSWORD = "correct horse battery"
XSS = "<img src=x onerror=alert(1)>"


class Browser:
    """Cookies and redirects by hand, so each test sees exactly what the panel sent."""

    def __init__(self, panel):
        self.panel = panel
        self.cookies = {}

    def request(self, method, path, form=None, headers=None):
        headers = dict(headers or {})
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            from urllib.parse import urlencode

            body = urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        response = http_request(self.panel, method, path, body=body, headers=headers)
        for raw in response.raw_cookies:
            name, _, rest = raw.partition("=")
            value = rest.split(";")[0]
            if value in ("", '""') or "max-age=0" in raw.lower() or "expires=thu, 01 jan 1970" in raw.lower():
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        return response

    def login(self, username="admin", password=PASSWORD):
        self.password = password  # what a page that asks for it again is given
        page = self.request("GET", "/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        return self.request("POST", "/login", form={"csrf_token": token, "username": username,
                                                    "password": password})


@pytest.fixture
def admin(panel):
    operations.set_admin("admin", PASSWORD, TEST_BCRYPT_ROUNDS)


@pytest.fixture
def browser(panel, admin):
    return Browser(panel)


def test_servers_page_needs_login(browser):
    response = browser.request("GET", "/servers")
    assert response.status in (302, 303) and response.headers["location"].endswith("/login")


def test_htmx_request_without_login_is_told_to_redirect(browser):
    response = browser.request("GET", "/servers", headers={"HX-Request": "true"})
    assert response.headers.get("hx-redirect") == "/login"


def test_wrong_password_is_refused(browser):
    response = browser.login(password="wrong password")
    assert response.status == 401
    assert "Wrong username or password" in response.text
    assert "mpanel_session" not in browser.cookies


def test_unknown_user_is_refused_the_same_way(browser):
    response = browser.login(username="mallory")
    assert response.status == 401 and "Wrong username or password" in response.text


def test_login_without_the_form_token_is_refused(browser):
    response = browser.request("POST", "/login", form={"username": "admin", "password": PASSWORD})
    assert response.status == 403
    assert "mpanel_session" not in browser.cookies


def test_session_cookie_is_httponly_and_samesite(browser):
    response = browser.login()
    assert response.status == 303
    cookie = next(c for c in response.raw_cookies if c.startswith("mpanel_session="))
    assert "httponly" in cookie.lower() and "samesite=lax" in cookie.lower()


def test_servers_table_shows_each_server_with_its_latest_numbers(browser, panel):
    server, key = new_server("web-1")
    http_request(panel, "POST", "/api/agent/register", headers={**bearer(key),
                 "Content-Type": "application/json"},
                 json_body={"hostname": "web-1.example.com", "os": "Linux", "arch": "x86_64",
                            "version": "0.1.0"})
    from tests.integration.test_api import sample

    http_request(panel, "POST", "/api/agent/metrics", headers=bearer(key),
                 json_body=sample(server.id))
    new_server("db-1")
    browser.login()
    page = browser.request("GET", "/servers")
    assert page.status == 200
    text = page.text
    assert "web-1.example.com" in text and "db-1" in text
    assert "12.5 %" in text          # CPU
    assert "25.0 %" in text          # memory: 2 GiB of 8 GiB
    assert "40.0 %" in text          # fullest disk
    assert 'badge online' in text and 'badge never-seen' in text
    assert "<title>Servers · mPanel</title>" in text


def test_agent_supplied_text_is_escaped(browser, panel):
    server, key = new_server(XSS)
    http_request(panel, "POST", "/api/agent/register", headers=bearer(key),
                 json_body={"hostname": XSS, "os": "Linux", "arch": "x86_64", "version": "0.1.0"})
    browser.login()
    text = browser.request("GET", "/servers").text
    assert XSS not in text
    assert html.escape(XSS) in text or XSS.replace("<", "&lt;").replace(">", "&gt;") in text


def test_filter_request_gets_only_the_table(browser):
    new_server("web-1")
    browser.login()
    partial = browser.request("GET", "/servers", headers={"HX-Request": "true"})
    text = partial.text
    assert "<html" not in text and "<form" not in text
    assert text.count('<tbody id="server-rows"') == 1 and 'hx-trigger="every 10s"' in text
    assert 'hx-post="/servers/refresh"' in text
    # The table first, its header with it (the columns may have changed: ?hide=, ?show=; a
    # leading <title> would make the browser's parser drop the table), then the summary strip
    # swapped out of band, and the page title.
    assert text.lstrip().startswith('<table id="servers-table" class="servers')
    assert "<thead>" in text and "<colgroup>" in text
    assert text.rstrip().endswith("<title>Servers · mPanel</title>")
    assert '<section hx-swap-oob="true" id="summary" class="summary" data-v="' in text


def test_offline_server_is_marked_and_counted_in_the_title(browser, database):
    server, _ = new_server("quiet")
    import datetime

    models.Agent.update(last_seen=datetime.datetime(2026, 1, 1)).execute()
    browser.login()
    text = browser.request("GET", "/servers").text
    assert "badge offline" in text
    assert "<title>1 offline · mPanel</title>" in text


def test_logout_needs_the_csrf_token(browser):
    browser.login()
    refused = browser.request("POST", "/logout", form={})
    assert refused.status == 403
    assert browser.request("GET", "/servers").status == 200  # still logged in
    page = browser.request("GET", "/servers").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    done = browser.request("POST", "/logout", form={"csrf_token": token})
    assert done.status == 303
    assert browser.request("GET", "/servers").status in (302, 303)


def test_pages_forbid_framing_and_inline_script(browser):
    response = browser.request("GET", "/login")
    assert response.headers["x-frame-options"] == "DENY"
    csp = response.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "<script>" not in response.text


def test_htmx_is_served_from_the_panel(browser):
    response = browser.request("GET", "/static/htmx-2.0.8.min.js")
    assert response.status == 200 and b"htmx" in response.body[:200]
    assert "immutable" in response.headers["cache-control"]
