"""The authorization sweep (issue 13), on SQLite and PostgreSQL: every route of the panel,
discovered from its route table, requested by customer A's users with the ids of customer B's
server, channel, rule, alert, user and customer (and of a staff-only server and channel) in the
path, the query and the form. A route that takes such an id in its path answers 403 or 404; no
answer names any of B's or the staff's servers, hostnames, processes, users, channels or alerts;
nothing of theirs changes.
A customer-viewer's writes are refused (403) even on A's own servers, and staff pages are
refused to customer users.

Nothing is listed by route: a new route is swept as soon as it exists, and one whose path takes
a parameter this test does not know how to fill fails the test, naming it.
"""
import re

import pytest

import panel
from panel import access, api_v1, models, operations, tokens
from panel import settings as settings_module
from tests.conftest import LOOPBACK, TEST_BCRYPT_ROUNDS, bearer, http_request, new_server, stamp
from tests.integration.test_api import sample
from tests.integration.test_dashboard import Browser
from tests.integration.test_dashboard_pages import register

PASSWORD = "sweep password 1"
# Every name of customer B and of the staff contains one of these: no page A sees may.
FOREIGN = ("bravo", "staffonly")
CSRF_REFUSAL = "CSRF token missing or wrong"  # a refusal that would prove nothing here
# The ids a route may take, by the name of its path parameter: what the sweep fills in.
PATH_IDS = ("server_id", "channel_id", "rule_id", "customer_id", "user_id", "alert_id",
            "token_id", "rollout_id")
# Form and query fields a page may read besides ids: plausible values, so that a refusal is
# the route's decision and not a complaint about the input.
FIELDS = {"name": "sweep-renamed", "critical": "1", "public_status": "1", "minutes": "60",
          "reason": "sweep", "username": "sweep-user", "password": PASSWORD,
          "role": "customer-admin", "metric": "cpu", "threshold": "50", "enabled": "1",
          "kind": "webhook", "target": "http://127.0.0.1:9/sweep", "is_default": "1",
          "slug": "sweep", "api_key": "x", "range": "1h", "at": "", "q": "", "status": ""}


def session_routes():
    """(method, rule, auth) of every route of the pages and the Prometheus bridge, from their
    own route tables (the agent API answers Bearer keys only: see the last test)."""
    settings = settings_module.from_env({"MPANEL_SECRET_KEY": "only-for-the-route-table"})
    routes = []
    for part in panel.page_parts(settings):
        routes += [(route.method, route.rule, route.config.get("auth")) for route in part.routes]
    return routes


def path_parameters(rule):
    return re.findall(r"<([^>:]+)(?::[^>]*)?>", rule)


def fill(rule, auth, ids):
    """The route's path with `ids` in it; pytest.fail for a parameter the sweep cannot fill."""
    def value(match):
        name = match.group(1)
        if name in ids:
            return str(ids[name])
        if auth is None:  # a public file route (static, downloads): any name will do
            return "sweep"
        pytest.fail(f"{rule}: the authorization sweep does not know how to fill <{name}>; "
                    f"add it to PATH_IDS and the world below")
    return re.sub(r"<([^>:]+)(?::[^>]*)?>", value, rule)


class User:
    """A logged-in browser that logs in again when a route (logout) ended its session."""

    def __init__(self, panel, username):
        self.username = username
        self.browser = Browser(panel)
        self.login()

    def login(self):
        assert self.browser.login(self.username, PASSWORD).status == 303, self.username
        page = self.browser.request("GET", "/servers").text
        self.csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)

    def request(self, method, path, form=None, headers=None):
        if "mpanel_session" not in self.browser.cookies:
            self.login()
        if form is not None:
            form = dict(form, csrf_token=self.csrf)
        return self.browser.request(method, path, form=form, headers=headers)


@pytest.fixture
def world(panel):
    """Customers A (Alpha) and B (Bravo), a staff-only server, and a user of each kind; B's
    server has reported (hostname, processes), has a rule and a firing alert."""
    alpha = operations.add_customer("Alpha Hosting", "alpha")
    bravo = operations.add_customer("Bravo Hosting", "bravo")
    servers = {}
    for name, customer, host in (("alpha-web", alpha, "alpha-box.example.com"),
                                 ("bravo-web", bravo, "bravo-box.example.com"),
                                 ("staffonly-db", None, "staffonly-box.example.com")):
        server, key = operations.add_server(name, TEST_BCRYPT_ROUNDS,
                                            customer_id=customer and customer.id)
        register(panel, key, hostname=host)
        document = sample(server.id, stamp(0))
        document["metrics"]["processes"]["topCpu"][0]["name"] = f"{name}-proc"
        response = http_request(panel, "POST", "/api/agent/metrics", headers=bearer(key),
                                json_body=document)
        assert response.status == 200, response.text
        operations.set_rule("memory", 80, 5, name)
        alert = models.Alert.create(server=server.id, rule="memory", open_key="memory",
                                    started_at=stamp(0), message=f"{name} memory high")
        servers[name] = (server, alert)
    # A channel of each owner, each routed to its owner's server; the staff's also gets B's
    # alerts (a staff choice B's users must not learn of either).
    channels = {"alpha-web": operations.add_channel("alpha-pager", "webhook",
                                                    "http://127.0.0.1:9/alpha",
                                                    customer_id=alpha.id, allowed=LOOPBACK),
                "bravo-web": operations.add_channel("bravo-pager", "webhook",
                                                    "http://127.0.0.1:9/bravo",
                                                    customer_id=bravo.id, allowed=LOOPBACK),
                "staffonly-db": operations.add_channel("staffonly-pager", "webhook",
                                                       "http://127.0.0.1:9/staff")}
    for name, channel in channels.items():
        operations.route_to(servers[name][0], channel)
    operations.choose_staff_channel(bravo.id, channels["staffonly-db"].id)
    for username, role, customer in (("alpha-admin", "customer-admin", alpha),
                                     ("alpha-viewer", "customer-viewer", alpha),
                                     ("bravo-admin", "customer-admin", bravo),
                                     ("staffonly-admin", "admin", None)):
        operations.set_admin(username, PASSWORD, TEST_BCRYPT_ROUNDS, role=role,
                             customer_id=customer and customer.id)
    # Each user's API token, and for customer A's users one of each scope they may have.
    api_tokens = {}
    for username, scopes in (("alpha-admin", ("read", "write")), ("alpha-viewer", ("read",)),
                             ("bravo-admin", ("write",)), ("staffonly-admin", ("write",))):
        for scope in scopes:
            api_tokens[username, scope] = tokens.create(
                models.admin_by_username(username), f"{username} {scope}", scope)

    # A running agent upgrade rollout (staff admins only halt it) over every server.
    rollout = models.Rollout.create(version="9.9.9", sha256="0" * 64, target="sweep",
                                    wave_size=1, started_by="staffonly-admin")
    for server, _ in servers.values():
        models.RolloutServer.create(rollout=rollout, server=server, wave=1)

    def ids(server_name, customer, username):
        server, alert = servers[server_name]
        return {"server_id": server.id, "alert_id": alert.id,
                "channel_id": channels[server_name].id,
                "rule_id": models.rule_of("memory", server.id).id,
                "customer_id": customer.id if customer else models.MAX_ID,
                "user_id": models.admin_by_username(username).id,
                "token_id": (api_tokens.get((username, "write"))
                             or api_tokens[username, "read"])[0].id,
                "rollout_id": rollout.id}

    return {"alpha": alpha, "bravo": bravo, "servers": servers, "tokens": api_tokens,
            "own": ids("alpha-web", alpha, "alpha-viewer"),
            "targets": [ids("bravo-web", bravo, "bravo-admin"),
                        ids("staffonly-db", None, "staffonly-admin")]}


def foreign_state(alpha):
    """What of B's and the staff's the sweep must leave as it was: all but customer A's."""
    theirs = {s.id for s in models.Server.select() if s.customer_id != alpha.id}
    return {
        "servers": sorted((s.id, s.name, s.critical, s.public_status, s.customer_id)
                          for s in models.Server.select() if s.id in theirs),
        "agents": sorted((a.server_id, a.api_key_id, a.status) for a in models.Agent.select()
                         if a.server_id in theirs),
        "customers": sorted((c.id, c.name, c.slug, c.require_two_factor)
                            for c in models.Customer.select()),
        "status pages": sorted((c.id, c.status_page, c.status_title)
                               for c in models.Customer.select() if c.id != alpha.id),
        "users": sorted((u.id, u.username, u.role, u.customer_id, u.password_hash)
                        for u in models.Admin.select()),
        "rules": sorted((r.id, r.server_id, r.metric, r.threshold, r.minutes, r.enabled)
                        for r in models.AlertRule.select() if r.server_id not in
                        {s.id for s in models.Server.select() if s.customer_id == alpha.id}),
        "channels": sorted((c.id, c.name, c.target, c.is_default, c.customer_id)
                           for c in models.Channel.select() if c.customer_id != alpha.id),
        "routes": sorted((r.server_id, r.channel_id) for r in models.ServerChannel.select()
                         if r.server_id in theirs),
        "staff channels": sorted((c.customer_id, c.channel_id)
                                 for c in models.CustomerStaffChannel.select()),
        "maintenance": sorted((w.server_id, w.ends_at) for w in models.MaintenanceWindow.select()
                              if w.server_id in theirs),
        "alerts": sorted((a.id, a.server_id, a.state, a.silenced) for a in models.Alert.select()
                         if a.server_id in theirs),
        "tokens": sorted((t.id, t.admin_id, t.customer_id, t.may_write, t.revoked_at)
                         for t in models.ApiToken.select() if t.customer_id != alpha.id),
        "rollouts": sorted((r.id, r.state, r.target) for r in models.Rollout.select()),
        "rollout servers": sorted((r.rollout_id, r.server_id, r.state)
                                  for r in models.RolloutServer.select()),
    }


def assert_no_foreign_data(response, what):
    body = response.text.lower()
    leaked = [word for word in FOREIGN if word in body]
    assert not leaked, (what, response.status, leaked,
                        body[max(0, body.find(leaked[0]) - 200):][:400])


def sweep_request(user, method, path, ids):
    """`method path` with every id of `ids` in the query, and for a write in the form too."""
    query = "&".join(f"{name}={value}" for name, value in
                     {**ids, "customer": ids["customer_id"]}.items())
    form = None
    if method != "GET":
        server = models.by_id(models.Server, ids["server_id"])
        customer = models.by_id(models.Customer, ids["customer_id"])
        form = {**FIELDS, **{name: str(value) for name, value in ids.items()},
                "customer": str(ids["customer_id"]),
                "confirm_name": server.name if server else "",
                "confirm_slug": customer.slug if customer else ""}
    return user.request(method, f"{path}?{query}", form=form, headers={"Accept": "text/html"})


def test_every_route_refuses_customer_a_the_servers_and_data_of_others(panel, world):
    routes = session_routes()
    assert {need for _, _, need in routes} - {None} <= set(access.NEEDS), routes
    before = foreign_state(world["alpha"])
    servers_before = {s.id for s in models.Server.select()}
    channels_before = {c.id for c in models.Channel.select()}
    users = [User(panel, "alpha-admin"), User(panel, "alpha-viewer")]
    swept = 0
    for method, rule, need in routes:
        for name in path_parameters(rule):
            if need is not None and name not in PATH_IDS:
                pytest.fail(f"{method} {rule}: the authorization sweep does not know how to "
                            f"fill <{name}>; add it to PATH_IDS and the world")
        for user in users:
            for ids in world["targets"]:
                path = fill(rule, need, ids)
                for headers in ({}, {"HX-Request": "true"}) if method == "GET" else ({},):
                    response = sweep_request(user, method, path, ids) if not headers else \
                        user.request(method, path, headers=headers)
                    what = f"{user.username}: {method} {path} {headers}"
                    assert response.status < 500, (what, response.text[:300])
                    assert need is None or CSRF_REFUSAL not in response.text, \
                        (what, "refused for its CSRF token: the sweep proved nothing")
                    if need is not None and set(path_parameters(rule)) & set(PATH_IDS):
                        assert response.status in (403, 404), (what, response.status,
                                                               response.text[:300])
                    if need in ("staff", "staff-admin"):
                        assert response.status in (403, 404), (what, response.status)
                    assert_no_foreign_data(response, what)
                    swept += 1
    assert swept > 4 * len(routes)
    assert foreign_state(world["alpha"]) == before
    # What customer A's admin added (POST /servers, naming B as the customer) is A's.
    added = [s for s in models.Server.select() if s.id not in servers_before]
    assert added and {s.customer_id for s in added} == {world["alpha"].id}
    # ... and so is the channel it added (POST /alerts/channels, naming B as the customer).
    added = [c for c in models.Channel.select() if c.id not in channels_before]
    assert added and {c.customer_id for c in added} == {world["alpha"].id}


def test_a_customer_viewer_may_change_nothing_not_even_its_own_servers(panel, world):
    viewer = User(panel, "alpha-viewer")
    before = {s.id: (s.name, s.critical, s.customer_id) for s in models.Server.select()}
    writes = 0
    for method, rule, need in session_routes():
        # Their own account (two-factor, logging out) is anyone's to change, read-only or not.
        if method == "GET" or need in (None, "viewer", "account"):
            continue
        path = fill(rule, need, world["own"])
        response = sweep_request(viewer, method, path, world["own"])
        assert response.status == 403, (method, path, response.status, response.text[:300])
        assert CSRF_REFUSAL not in response.text, (method, path)
        writes += 1
    assert writes >= 10
    assert {s.id: (s.name, s.critical, s.customer_id) for s in models.Server.select()} == before
    assert models.MaintenanceWindow.select().count() == 0


def test_customer_users_see_their_own_servers_and_only_those(panel, world):
    """The sweep's other side: what A's users are refused is not all they are refused."""
    own, _ = world["servers"]["alpha-web"]
    for username in ("alpha-admin", "alpha-viewer"):
        user = User(panel, username)
        table = user.request("GET", "/servers")
        assert table.status == 200 and "alpha-web" in table.text and "alpha-box" in table.text
        assert_no_foreign_data(table, username)
        assert "1 alert" in table.text.split("</title>")[0]  # A's own firing alert, no other
        assert '<strong>1</strong> servers' in table.text
        for path in (f"/servers/{own.id}", f"/servers/{own.id}/charts",
                     f"/servers/{own.id}/processes", "/alerts"):
            page = user.request("GET", path)
            assert page.status == 200, (username, path, page.status)
            assert_no_foreign_data(page, (username, path))
        assert "alpha-web-proc" in user.request("GET", f"/servers/{own.id}/processes").text
        assert "alpha-web memory high" in user.request("GET", "/alerts").text
        for path in ("/customers", "/security", f"/customers/{world['alpha'].id}"):
            assert user.request("GET", path).status == 403, (username, path)
    admin = User(panel, "alpha-admin")
    renamed = admin.request("POST", f"/servers/{own.id}/rename", form={"name": "alpha-www"})
    assert renamed.status == 303 and models.Server.get_by_id(own.id).name == "alpha-www"
    assert admin.request("POST", f"/servers/{own.id}/flags",
                         form={"critical": "1"}).status == 303
    assert models.Server.get_by_id(own.id).critical
    # Published on A's own status page (never on the staff's /status); A turns it on.
    assert admin.request("POST", f"/servers/{own.id}/flags",
                         form={"public_status": "1"}).status == 303
    assert models.Server.get_by_id(own.id).public_status
    assert admin.request("POST", f"/customers/{world['alpha'].id}/status-page",
                         form={"status_page": "1", "status_title": "Alpha"}).status == 303
    assert "alpha-www" in admin.request("GET", "/status/alpha").text
    assert "alpha-www" not in admin.request("GET", "/status").text
    key_page = admin.request("POST", f"/servers/{own.id}/rotate", form={})
    assert key_page.status == 200 and "New key for alpha-www" in key_page.text
    assert_no_foreign_data(key_page, "key page")


def test_a_customer_users_session_cookie_opens_no_agent_api(panel, world):
    """The agent API and the Prometheus bridge answer Bearer keys and tokens only."""
    user = User(panel, "alpha-admin")
    for path in ("/api/agent/config", "/metrics"):
        response = user.request("GET", path)
        assert response.status in (401, 404), (path, response.status)
        assert_no_foreign_data(response, path)


# ===== API tokens: every /api/v1 route ==========================================================

def api_routes():
    """(method, rule, auth) of every /api/v1 route, from its own route table."""
    settings = settings_module.from_env({"MPANEL_SECRET_KEY": "only-for-the-route-table"})
    return [(route.method, route.rule, route.config.get("auth"))
            for route in api_v1.build_api_v1(settings).routes]


def test_every_api_route_refuses_customer_a_tokens_the_servers_and_data_of_others(panel, world):
    """Customer A's tokens of each scope (the admin's read and write, the viewer's read) against
    every /api/v1 route with B's and the staff's ids in path, query and body: 403 or 404 where
    the path takes an id, 403 on staff routes, no B or staff data in any answer, nothing of
    theirs changed; a server A's write token adds is A's."""
    routes = api_routes()
    assert routes and {need for _, _, need in routes} <= set(access.TOKEN_NEEDS), routes
    before = foreign_state(world["alpha"])
    servers_before = {s.id for s in models.Server.select()}
    held = [world["tokens"][key][1] for key in (("alpha-admin", "read"), ("alpha-admin", "write"),
                                                 ("alpha-viewer", "read"))]
    swept = 0
    for method, rule, need in routes:
        for name in path_parameters(rule):
            if name not in PATH_IDS:
                pytest.fail(f"{method} {rule}: the sweep does not know how to fill <{name}>")
        for token in held:
            for ids in world["targets"]:
                path = fill(rule, need, ids)
                query = "&".join(f"{name}={value}" for name, value in ids.items())
                # What the write routes' schemas allow, naming B as the customer.
                body = {"name": f"sweep-{swept}", "critical": True,
                        "customerId": ids["customer_id"]}
                response = http_request(panel, method, f"{path}?{query}&range=1h",
                                        headers=bearer(token),
                                        json_body=body if method != "GET" else None)
                what = f"{method} {path} {token[:16]}"
                assert response.status < 500, (what, response.text[:300])
                assert response.headers["content-type"].startswith("application/json"), what
                if path_parameters(rule):
                    assert response.status in (403, 404), (what, response.status, response.text)
                if need in ("token-staff", "token-staff-write"):
                    assert response.status == 403, (what, response.status)
                if method != "GET" and token != world["tokens"]["alpha-admin", "write"][1]:
                    assert response.status == 403, (what, response.status)
                assert_no_foreign_data(response, what)
                swept += 1
    assert swept >= 3 * 2 * len(routes)
    assert foreign_state(world["alpha"]) == before
    added = [s for s in models.Server.select() if s.id not in servers_before]
    assert added and {s.customer_id for s in added} == {world["alpha"].id}


def test_a_customer_read_token_may_change_nothing_on_its_own_servers(panel, world):
    token = world["tokens"]["alpha-viewer", "read"][1]
    before = {s.id: (s.name, s.customer_id) for s in models.Server.select()}
    writes = 0
    for method, rule, need in api_routes():
        if method == "GET":
            continue
        path = fill(rule, need, world["own"])
        response = http_request(panel, method, path, headers=bearer(token),
                                json_body={"name": "viewer-made"})
        assert response.status == 403, (method, path, response.status, response.text)
        writes += 1
    assert writes >= 2
    assert {s.id: (s.name, s.customer_id) for s in models.Server.select()} == before
