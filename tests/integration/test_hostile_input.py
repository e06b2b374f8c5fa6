"""Hostile input to every page, on SQLite and PostgreSQL: each query and form parameter gets a 4xx
that names the problem, never a 500, and every answer (error pages too) carries the page
security headers.

Nothing is listed by hand: the routes come from the panel's own route table, the parameters
from the forms and links of the pages the panel serves (crawled as an admin, and as a visitor
for the login form). A route that no page reaches fails the test, so a new page or form is swept
as soon as it exists.
"""
import html
import html.parser
import json
import re
import urllib.parse

import pytest

import panel
from panel import SECURITY_HEADERS, errors, models, operations, tokens
from panel import settings as settings_module
from tests.conftest import LOOPBACK, bearer, http_request, new_server
from tests.integration.test_api import sample
from tests.integration.test_dashboard import Browser
from tests.integration.test_dashboard_pages import post

HOSTILE = ["", "0", "-1", "1.5", "1e309", "-1e309", "nan", "inf", "99999999999999999999999",
           "99999999999", "0001-01-01T00:00", "9999-12-31T23:59", "2026-13-45T99:99",
           "<script>", "'; --", "%", "..", "[]", "{}", "true", "x" * 5000,
           "\x00", "a\x00b", "\x1b[2J", b"\xff\xfe", "x" * 100_000,
           # Digits to str.isdigit() that int() refuses (a superscript two) or reads (١ is 1).
           "\u00b2", "\u0661"]
# Text the one rule refuses (errors.text_problem), whatever the parameter: 400 naming it.
REFUSED_TEXT = ["\x00", "a\x00b", b"\xff\xfe"]
# Routes no page links to, with why.
UNLINKED = {
    "/": "redirects to /servers",
    "/static/<path:path>": "files; swept below with hostile paths",
    "/downloads/<name>": "files; swept below with hostile names",
    "/metrics": "Prometheus scrape, no page links it; swept below with a NUL parameter",
    "/servers/rows": "linked from the table's end past its first screenful only; its query is "
                     "/servers' (swept), its offset swept in test_servers_table",
}


class Forms(html.parser.HTMLParser):
    """The forms of a page ({action, method, fields: {name: default}}) and the targets of its
    links and htmx requests."""

    def __init__(self, text):
        super().__init__(convert_charrefs=True)
        self.forms = []
        self.links = set()
        self.select = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name in ("href", "hx-get", "action"):
            if (attrs.get(name) or "").startswith(("/", "?")):
                self.links.add(attrs[name])
        if tag == "body" and attrs.get("hx-headers"):
            self.csrf = json.loads(attrs["hx-headers"]).get("X-CSRF-Token")
        if tag != "form" and (attrs.get("hx-post") or "").startswith("/"):
            # An htmx POST from outside a form (the servers table's refresh): the fields of
            # the form it includes, its hx-vals, and the token htmx sends in a header.
            included = next((f["fields"] for f in self.forms
                             if "#" + (f["id"] or "") == attrs.get("hx-include")), {})
            self.forms.append({"action": attrs["hx-post"], "method": "post", "id": None,
                               "fields": {**included, **json.loads(attrs.get("hx-vals") or "{}"),
                                          "csrf_token": getattr(self, "csrf", "")}})
            return
        if tag == "form":
            self.forms.append({"action": attrs.get("action") or attrs.get("hx-get"),
                               "method": (attrs.get("method") or "get").lower(),
                               "id": attrs.get("id"), "fields": {}})
            return
        if not self.forms:
            return
        fields = self.forms[-1]["fields"]
        if tag == "option" and self.select:
            if self.select not in fields or "selected" in attrs:
                fields[self.select] = attrs.get("value") or ""
        elif "name" not in attrs:
            return
        elif tag == "input" and attrs.get("type") == "checkbox":
            fields[attrs["name"]] = (attrs.get("value") or "on") if "checked" in attrs else ""
        elif tag in ("input", "textarea"):
            fields[attrs["name"]] = attrs.get("value") or ""
        elif tag == "select":
            self.select = attrs["name"]

    def handle_endtag(self, tag):
        if tag == "select":
            self.select = None


def rule_pattern(rule):
    """Bottle's route rule as a regular expression over paths."""
    pattern = re.sub(r"<[^>:]+:int>", r"\\d+", re.escape(rule).replace(r"\<", "<")
                     .replace(r"\>", ">").replace(r"\:", ":"))
    pattern = re.sub(r"<[^>:]+:path>", ".+", pattern)
    return re.compile("^" + re.sub(r"<[^>]+>", "[^/]+", pattern) + "$")


def page_routes():
    """(method, rule) of every page route, from the panel's own route table (the agent API
    takes JSON bodies and is swept by the protocol tests)."""
    # A secret of its own, so building the route table writes no secret.key anywhere.
    settings = settings_module.from_env({"MPANEL_SECRET_KEY": "only-for-the-route-table"})
    routes = []
    for part in panel.page_parts(settings):
        routes += [(route.method, route.rule) for route in part.routes]
    return routes


def crawl(browser, starts, limit=60):
    """GET pages from `starts` along their links (same panel, at most `limit` pages):
    {path: parsed page}."""
    seen, queue = {}, list(starts)
    while queue and len(seen) < limit:
        path = queue.pop(0)
        target = urllib.parse.urlsplit(path).path
        if path in seen or target.startswith(("/static/", "/downloads/", "/logout")):
            continue
        response = browser.request("GET", path, headers={"Accept": "text/html"})
        assert response.status < 500, (path, response.status)
        seen[path] = Forms(response.text)
        for link in seen[path].links:
            link = urllib.parse.urljoin(path, link)
            if link not in seen and urllib.parse.urlsplit(link).path.startswith("/"):
                queue.append(link)
    return seen


def assert_answer(response, what, value):
    shown = (what, value[:30] if isinstance(value, (str, bytes)) else value)
    assert response.status < 500, (shown, response.status, response.text[:300])
    for header in SECURITY_HEADERS:
        assert header.lower() in response.headers, (shown, response.status, header)
    if response.status >= 400:
        assert response.headers["content-type"].startswith(("application/json", "text/html"))


def assert_refused(response, field, value):
    """The one text rule: 400, naming the parameter (JSON for tools, a page for browsers)."""
    assert response.status == 400, (field, value, response.status, response.text[:300])
    if response.headers["content-type"].startswith("application/json"):
        assert response.json()["field"] == field, response.text[:300]
        assert field in response.json()["error"]
    else:
        assert field in html.unescape(response.text), response.text[:300]


def assert_names(response, field, value):
    """A refusal says what it refuses: the field, or (CSRF, size, throttling) the reason."""
    text = html.unescape(response.text).lower()
    words = [field.lower(), field.replace("_", " ").lower()] + field.lower().split("_")
    reasons = {403: "csrf", 413: "too large", 429: "too many", 401: "wrong username"}
    assert any(w in text for w in words) or reasons.get(response.status, "\0") in text, \
        (field, value[:30], response.status, re.sub(r"\s+", " ", text)[-600:])


def encode(pairs):
    return urllib.parse.urlencode(pairs)


@pytest.fixture
def site(panel):
    """An admin's browser on a panel with one of everything a page can list."""
    operations.set_admin("admin", "correct horse battery", 4)
    server, _ = new_server("web-1")
    other, _ = new_server("web-2")
    channel = operations.add_channel("ops", "webhook", "http://127.0.0.1:9/hook")
    operations.route("web-1", "ops")
    operations.set_rule("cpu", 90, 5, "web-1")
    customer = operations.add_customer("Acme")
    operations.move_server(other.id, customer.id)
    operations.set_status_page(customer.id, True, "Acme status")  # its page, linked and crawled
    # A customer's own channel, routed, and a staff channel chosen for the customer.
    operations.add_channel("acme-hook", "webhook", "http://127.0.0.1:9/acme",
                           customer_id=customer.id, allowed=LOOPBACK)
    operations.route("web-2", "acme-hook", customer_id=customer.id)
    operations.choose_staff_channel(customer.id, channel.id)
    operations.set_admin("acme-ops", "correct horse battery", 4, role="customer-admin",
                         customer_id=customer.id)
    # A token of the admin's: /account then lists it with its revoke form.
    tokens.create(models.admin_by_username("admin"), "hostile", "write")
    # A running agent upgrade rollout: /upgrades then shows its halt form.
    rollout = models.Rollout.create(version="9.9.9", sha256="0" * 64, target="hostile",
                                    wave_size=1, started_by="admin")
    models.RolloutServer.create(rollout=rollout, server=server, wave=1)
    browser = Browser(panel)
    assert browser.login(password="correct horse battery").status == 303
    return browser, server, other, channel


def test_hostile_input_to_every_page_is_a_4xx_never_a_500(site, panel):
    admin, server, other, _ = site
    pages = crawl(admin, ["/servers", "/alerts", "/security", "/servers/new", "/status",
                          "/customers", "/account"])
    # The key page is the answer to a form, not a link: add a server to see its forms too.
    token = re.search(r'name="csrf_token" value="([^"]+)"',
                      admin.request("GET", "/servers").text).group(1)
    added = admin.request("POST", "/servers", form={"csrf_token": token, "name": "web-3"})
    assert added.status == 200
    pages["(key page)"] = Forms(added.text)
    visitor = Browser(panel)
    pages.update(crawl(visitor, ["/login"], limit=1))
    # The second login step is the answer to a password too: a user with two-factor on logs in
    # to see its form.
    from tests.integration.test_two_factor import enrol

    operations.set_admin("two-step", "correct horse battery", 4)
    enrolled = Browser(panel)
    enrolled.username = "two-step"
    assert enrolled.login("two-step", "correct horse battery").status == 303
    enrol(enrolled)
    stepping = Browser(panel)
    assert stepping.login("two-step", "correct horse battery").headers["location"].endswith(
        "/login/code")
    pages.update(crawl(stepping, ["/login/code"], limit=1))
    pages["(account, two-factor on)"] = Forms(enrolled.request("GET", "/account").text)
    from tests.integration.test_two_factor import post

    operations.set_admin("half-way", "correct horse battery", 4)
    pending = Browser(panel)
    assert pending.login("half-way", "correct horse battery").status == 303
    assert post(pending, "/account/two-factor/setup", {}).status == 303
    pages["(account, set-up waiting)"] = Forms(pending.request("GET", "/account").text)

    routes = page_routes()

    def rule_of(path):
        return next((rule for _, rule in routes if rule_pattern(rule).match(path)), path)

    # One form per route and set of fields: each server's detail page has the same ones.
    forms = list({(rule_of(f["action"]), f["method"], tuple(f["fields"])): f
                  for page in pages.values() for f in page.forms}.values())
    reached = {urllib.parse.urlsplit(link).path for page in pages.values()
               for link in page.links} | set(pages)
    for method, rule in routes:
        if rule in UNLINKED:
            continue
        pattern = rule_pattern(rule)
        if method == "POST":
            assert any(pattern.match(f["action"]) for f in forms if f["method"] == "post"), \
                f"no page has a form for POST {rule}: the sweep cannot reach it"
        else:
            assert any(pattern.match(urllib.parse.urlsplit(p).path) for p in reached), \
                f"no page links GET {rule}: the sweep cannot reach it"

    # Query parameters: those of the pages' GET forms and links, on the paths they belong to.
    # Parameters of a route's pages for other servers are the same: swept once, on `server`.
    query = {}
    for page in pages.values():
        for form in page.forms:
            if form["method"] == "get":
                query.setdefault(form["action"], set()).update(form["fields"])
        for link in page.links:
            parts = urllib.parse.urlsplit(link)
            if parts.query and parts.path:
                query.setdefault(parts.path, set()).update(urllib.parse.parse_qs(parts.query))
    query = {path: names for path, names in query.items()
             if not re.match(r"/servers/\d+", path) or path.startswith(f"/servers/{server.id}")}
    assert {"q", "status", "sort", "dir"} <= query["/servers"]
    assert "at" in query[f"/servers/{server.id}/processes"]
    assert "range" in query[f"/servers/{server.id}"]
    for path, names in query.items():
        for name in sorted(names):
            for value in HOSTILE:
                response = admin.request("GET", f"{path}?{encode({name: value})}")
                assert_answer(response, f"GET {path} {name}", value)
                if value in REFUSED_TEXT:
                    assert_refused(response, name, value)
                elif 400 <= response.status < 500:
                    assert_names(response, name, value)
    # The rule holds on every route, linked or not, before anything else reads the request.
    for method, rule in routes:
        path = re.sub(r"<[^>]+:int>", str(server.id), rule).replace("<path:path>", "style.css") \
            .replace("<name>", "agent.py")
        if method == "GET":
            response = admin.request("GET", path + "?" + encode({"x": "a\x00b"}))
            assert_refused(response, "x", "NUL")
            assert_answer(response, f"GET {path}", "NUL")
    for path in ("/servers/99999999999999999999", "/servers/-1", "/servers/0/charts",
                 "/downloads/..%2Fpanel%2Fsettings.py", "/static/..%2F..%2Fpanel%2Fsettings.py",
                 "/downloads/%00", "/static/%00", "/nowhere", "/servers/x"):
        assert_answer(admin.request("GET", path), path, "")

    # Form fields: each in turn hostile, the others at what the page filled in.
    for form in forms:
        if form["method"] != "post":
            continue
        browser = visitor if form["action"] == "/login" else admin
        for field in form["fields"]:
            for value in HOSTILE:
                if browser is visitor:
                    # A fresh login form each time, so the CSRF cookie matches.
                    form = next(f for f in Forms(visitor.request("GET", "/login").text).forms
                                if f["action"] == "/login")
                sent = dict(form["fields"], **{field: value})
                response = browser.request("POST", form["action"], form=sent,
                                           headers={"Accept": "*/*"})
                assert_answer(response, f"POST {form['action']} {field}", value)
                if value in REFUSED_TEXT:
                    assert_refused(response, field, value)
                elif 400 <= response.status < 500:
                    assert_names(response, field, value)

    # What was stored is what names may be: printable, at most 100 characters.
    for stored in models.Server.select():
        assert 0 < len(stored.name) <= 100 and all(ord(c) >= 32 for c in stored.name)
    for window in models.MaintenanceWindow.select():
        assert errors.text_problem(window.reason or "") is None
    assert models.AlertRule.select().where(models.AlertRule.minutes > 1440).count() == 0
    assert sorted(c.name for c in models.Channel.select()) == ["acme-hook", "ops"]


def test_a_minute_out_of_range_is_a_named_400(site):
    admin, server, _, _ = site
    for at in ("0001-01-01T00:00", "9999-12-31T23:59", "1969-12-31T23:59"):
        response = admin.request("GET", f"/servers/{server.id}/processes?at={at}")
        assert response.status == 400, (at, response.text[:200])
        assert response.json()["field"] == "at" and "between" in response.json()["error"]


def test_nul_in_login_maintenance_and_channel_is_refused_naming_the_field(site, panel):
    """The three 500s of the issue on PostgreSQL (psycopg2 refuses NUL in a query)."""
    admin, server, _, _ = site
    visitor = Browser(panel)
    page = visitor.request("GET", "/login").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    login = visitor.request("POST", "/login", form={"csrf_token": token, "username": "ad\x00min",
                                                    "password": "x"})
    assert_refused(login, "username", "NUL")
    reason = post(admin, f"/servers/{server.id}/maintenance", {"minutes": "60",
                                                               "reason": "kernel\x00"})
    assert_refused(reason, "reason", "NUL")
    target = post(admin, "/alerts/channels", {"name": "x", "kind": "webhook",
                                              "target": "https://h.example.com/\x00"})
    assert_refused(target, "target", "NUL")
    assert not models.MaintenanceWindow.select().exists()
    assert models.Channel.select().count() == 2  # the site's own two


def test_nul_or_half_a_surrogate_in_agent_json_is_a_422_naming_the_field(panel):
    """The same rule (errors.text_problem) for agents' JSON, through their schemas."""
    server, key = new_server("web-1")
    document = sample(server.id)
    document["metrics"]["processes"]["topCpu"][0]["name"] = "post\x00gres"
    for path, body, field in (
            ("/api/agent/register", {"hostname": "web\x001", "os": "Linux", "arch": "x86_64",
                                     "version": "0.2.0"}, "hostname"),
            ("/api/agent/register", {"hostname": "web\ud8001", "os": "Linux", "arch": "x86_64",
                                     "version": "0.2.0"}, "hostname"),
            ("/api/agent/metrics", document, "metrics.processes.topCpu[0].name")):
        response = http_request(panel, "POST", path, headers=bearer(key), json_body=body)
        assert response.status == 422, (field, response.status, response.text[:300])
        assert response.json()["field"] == field, response.text
    assert models.Agent.get(models.Agent.server == server.id).hostname in (None, "")
    assert models.Metric.select().count() == 0


def test_an_unexpected_error_is_a_page_with_the_security_headers(database, backend_url,
                                                                    tmp_path):
    """A bug no view catches still gets the error page and its headers (Bottle makes that 500
    after its after_request hook has run), and says nothing of the bug."""
    from tests.integration.test_auth import InProcessPanel

    panel = InProcessPanel(backend_url, tmp_path)
    try:
        @panel.app.get("/boom")  # a route with a bug, in the real app under real Waitress
        def boom():
            raise RuntimeError("secret detail of a bug")

        for accept in ("text/html", "*/*"):
            response = http_request(panel, "GET", "/boom", headers={"Accept": accept})
            assert response.status == 500, response.text[:200]
            for header in SECURITY_HEADERS:
                assert header.lower() in response.headers, (accept, header)
            assert "secret detail" not in response.text
    finally:
        panel.close()
