"""API tokens and /api/v1 (issue 13) over real HTTP, on SQLite and PostgreSQL: tokens created and
revoked on /account and by the CLI, shown once and stored hashed; each endpoint with a staff
token and a customer's token (another customer's ids are 404, a read-only token's writes 403);
expiry and revocation take effect at once; last use recorded; refusals in the security log
without the secret, and limited under concurrency as agent keys are; a page's figures and its
JSON twin's are the same. (Every /api/v1 route with B's ids: test_authorization.py.)"""
import datetime
import json
import re
import threading

import pytest

from panel import charts, models, operations, server_page, tokens
from panel.db import utcnow
from tests.conftest import (TEST_BCRYPT_ROUNDS, bearer, http_request, new_server, stamp,
                            start_panel, stop_panel)
from tests.integration.test_api import sample
from tests.integration.test_cli import cli
from tests.integration.test_customers import logged_in
from tests.integration.test_dashboard_pages import HTML, post, register


def api(panel, method, path, token, json_body=None, headers=None):
    return http_request(panel, method, f"/api/v1{path}",
                        headers={**(bearer(token) if token else {}), **(headers or {})},
                        json_body=json_body)


def user(username, role="admin", customer=None):
    operations.set_admin(username, "token password 1", TEST_BCRYPT_ROUNDS, role=role,
                         customer_id=customer.id if customer else None)
    return models.admin_by_username(username)


def token_for(username, role="admin", customer=None, scope="write", **options):
    admin = models.admin_by_username(username) or user(username, role, customer)
    return tokens.create(admin, f"{username} {scope}", scope, **options)[1]


def reporting(panel, name, customer=None, minutes=3):
    """A server of `customer` (None: staff-only) that has registered and sent samples."""
    server, key = operations.add_server(name, TEST_BCRYPT_ROUNDS,
                                        customer_id=customer and customer.id)
    register(panel, key, hostname=f"{name}.example.com")
    for minute in range(minutes):
        response = http_request(panel, "POST", "/api/agent/metrics", headers=bearer(key),
                                json_body=sample(server.id, stamp(minute)))
        assert response.status == 200, response.text
    return server


@pytest.fixture
def world(panel):
    acme = operations.add_customer("Acme", "acme")
    other = operations.add_customer("Other", "other")
    servers = {"acme": reporting(panel, "acme-web", acme),
               "other": reporting(panel, "other-web", other),
               "staff": reporting(panel, "staff-db")}
    models.Alert.create(server=servers["other"].id, rule="memory", open_key="memory",
                        started_at=stamp(0), message="other-web memory high")
    models.Alert.create(server=servers["acme"].id, rule="cpu", open_key="cpu",
                        started_at=stamp(0), message="acme-web cpu high")
    return {"other": other, "servers": servers,
            "staff": token_for("staff-admin"),
            "staff_read": token_for("staff-admin", scope="read"),
            "acme": token_for("acme-admin", "customer-admin", acme),
            "acme_read": token_for("acme-admin", "customer-admin", acme, scope="read"),
            "acme_customer": acme}


# ===== Endpoints, staff and customer tokens =====================================================

def test_a_staff_token_sees_every_server_and_a_customer_token_its_own(panel, world):
    everything = api(panel, "GET", "/servers", world["staff"])
    assert everything.status == 200, everything.text
    names = [row["name"] for row in everything.json()["servers"]]
    assert names == ["acme-web", "other-web", "staff-db"]
    assert everything.json()["firing"] == 2
    own = api(panel, "GET", "/servers", world["acme_read"]).json()
    assert [row["name"] for row in own["servers"]] == ["acme-web"]
    assert own["firing"] == 1 and own["counts"]["online"] == 1
    assert "other" not in json.dumps(own)
    row = own["servers"][0]
    assert row["hostname"] == "acme-web.example.com" and row["status"] == "online"


def test_one_server_its_latest_sample_and_series_are_scoped_as_the_pages(panel, world):
    acme, other = world["servers"]["acme"], world["servers"]["other"]
    for path in ("", "/latest", "/series?range=6h"):
        mine = api(panel, "GET", f"/servers/{acme.id}{path}", world["acme_read"])
        assert mine.status == 200, (path, mine.text)
        theirs = api(panel, "GET", f"/servers/{other.id}{path}", world["acme_read"])
        assert theirs.status == 404, (path, theirs.status)
        assert theirs.json()["error"] and "other" not in theirs.text
        assert api(panel, "GET", f"/servers/{other.id}{path}", world["staff_read"]).status == 200
    one = api(panel, "GET", f"/servers/{acme.id}", world["acme_read"]).json()
    assert one["name"] == "acme-web" and one["customerId"] == world["acme_customer"].id
    assert [alert["message"] for alert in one["firing"]] == ["acme-web cpu high"]
    latest = api(panel, "GET", f"/servers/{acme.id}/latest", world["acme_read"]).json()["latest"]
    assert latest["cpuUsage"] is not None and latest["timestamp"].endswith("Z")
    assert latest["timestamp"].startswith(stamp(2)[:16])
    # 6h: the samples are an hour old (stamp), and stay inside it however long the suite runs.
    series = api(panel, "GET", f"/servers/{acme.id}/series?range=6h", world["acme_read"]).json()
    cpu = next(chart for chart in series["charts"] if chart["title"] == "CPU")
    assert cpu["unit"] == "percent" and cpu["lines"][0]["points"]
    # The figures the page's charts draw: the same builder, run here.
    agent = models.agent_of_server(acme.id)
    drawn = server_page.build_charts(agent.id, charts.RANGES["6h"], latest=None)
    assert [chart.title for chart in drawn] == [chart["title"] for chart in series["charts"]]
    assert [list(point) for point in drawn[0].lines[0].points] == cpu["lines"][0]["points"]
    bad = api(panel, "GET", f"/servers/{acme.id}/series?range=2h", world["acme_read"])
    assert bad.status == 400 and bad.json()["field"] == "range"
    assert "1h, 6h, 24h, 7d, 30d" in bad.json()["error"]
    assert api(panel, "GET", "/servers/99999999999", world["staff"]).status == 404


def test_alerts_and_customers(panel, world):
    mine = api(panel, "GET", "/alerts", world["acme_read"]).json()
    assert [alert["message"] for alert in mine["firing"]] == ["acme-web cpu high"]
    assert mine["history"] == []
    every = api(panel, "GET", "/alerts", world["staff_read"]).json()
    assert len(every["firing"]) == 2
    customers = api(panel, "GET", "/customers", world["staff_read"])
    assert customers.status == 200
    assert [c["slug"] for c in customers.json()["customers"]] == ["acme", "other"]
    refused = api(panel, "GET", "/customers", world["acme"])
    assert refused.status == 403 and "staff" in refused.json()["error"]


def test_creating_and_deleting_servers(panel, world):
    made = api(panel, "POST", "/servers", world["acme"],
               {"name": "acme-new", "customerId": world["other"].id})
    assert made.status == 201, made.text
    body = made.json()
    # A customer's token adds to its own customer, whatever the body says.
    assert body["server"]["customerId"] == world["acme_customer"].id
    assert body["apiKey"].startswith("agent_")
    assert models.server_by_name("acme-new").customer_id == world["acme_customer"].id
    again = api(panel, "POST", "/servers", world["acme"], {"name": "acme-new"})
    assert again.status == 409 and again.json()["field"] == "name"
    bad = api(panel, "POST", "/servers", world["acme"], {"name": ""})
    assert bad.status == 422 and bad.json()["field"] == "name"
    assert api(panel, "POST", "/servers", world["acme_read"], {"name": "x"}).status == 403
    staff = api(panel, "POST", "/servers", world["staff"],
                {"name": "for-other", "customerId": world["other"].id, "critical": True})
    assert staff.status == 201 and staff.json()["server"]["customerId"] == world["other"].id
    assert staff.json()["server"]["critical"] is True

    target = models.server_by_name("acme-new")
    assert api(panel, "DELETE", f"/servers/{target.id}", world["acme"]).status == 403
    assert api(panel, "DELETE", f"/servers/{target.id}", world["staff_read"]).status == 403
    deleted = api(panel, "DELETE", f"/servers/{target.id}", world["staff"])
    assert deleted.status == 200 and deleted.json() == {"deleted": True, "id": target.id,
                                                        "name": "acme-new"}
    assert models.server_by_name("acme-new") is None
    assert api(panel, "DELETE", f"/servers/{target.id}", world["staff"]).status == 404


def test_the_servers_page_and_its_json_twin_show_the_same_figures(panel, world):
    """Both come from fleet_table.window: each server's name, status and CPU as the table
    shows them (rounded as it rounds them)."""
    browser = logged_in(panel, "acme-page", "customer-viewer", world["acme_customer"])
    page = browser.request("GET", "/servers", headers=HTML).text
    twin = api(panel, "GET", "/servers", world["acme_read"]).json()
    assert '<strong>1</strong> servers' in page
    for row in twin["servers"]:
        assert row["name"] in page and row["hostname"] in page
        assert f"{row['cpu']:.1f}" in page or f"{row['cpu']:g}" in page, row["cpu"]
    detail = browser.request("GET", f"/servers/{world['servers']['acme'].id}",
                             headers=HTML).text
    one = api(panel, "GET", f"/servers/{world['servers']['acme'].id}", world["acme_read"]).json()
    assert one["hostname"] in detail and one["firing"][0]["message"] in detail


def test_the_json_twin_pages_filters_and_sorts_like_the_table(panel, world):
    now = utcnow()
    for index in range(12):
        server, _ = new_server(f"fleet-{index:02d}")
        agent = models.Agent.get(models.Agent.server == server.id)
        models.Metric.insert(agent=agent.id, timestamp=now, cpu_usage=float(index)).execute()
        models.LatestSample.insert(agent=agent.id, timestamp=now).execute()
    everything = api(panel, "GET", "/servers", world["staff_read"]).json()
    assert everything["matched"] == len(everything["servers"]) == sum(
        everything["counts"].values())
    page = api(panel, "GET", "/servers?q=FLEET&sort=cpu&dir=desc&offset=2&limit=3",
               world["staff_read"]).json()
    assert [row["name"] for row in page["servers"]] == ["fleet-09", "fleet-08", "fleet-07"]
    assert page["matched"] == 12 and page["counts"] == everything["counts"]
    # A customer's token pages through its own servers only.
    theirs = api(panel, "GET", "/servers?q=fleet", world["acme_read"]).json()
    assert theirs["servers"] == [] and theirs["matched"] == 0
    for query, field in (("sort=nosuch", "sort"), ("dir=up", "dir"), ("status=gone", "status"),
                         ("offset=-1", "offset"), ("limit=0", "limit"), ("limit=%C2%B2", "limit"),
                         ("q=" + "x" * 101, "q"), ("nosuch=1", "nosuch")):
        refused = api(panel, "GET", f"/servers?{query}", world["staff_read"])
        assert refused.status == 400 and refused.json()["field"] == field, query


# ===== Refusals =================================================================================

def test_missing_unknown_wrong_expired_and_revoked_tokens_are_401_with_a_challenge(panel,
                                                                                   world):
    admin = models.admin_by_username("staff-admin")
    row, expired = tokens.create(admin, "soon", "read", expires_days=1)
    models.ApiToken.update(expires_at=datetime.datetime(2020, 1, 1)).where(
        models.ApiToken.id == row.id).execute()
    revoked_row, revoked = tokens.create(admin, "gone", "read")
    tokens.revoke(admin, revoked_row)
    good = world["staff_read"]
    wrong = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    for token, said in ((None, "missing API token"), ("nonsense", "rejected"),
                        ("mpt_0123456789ab_" + "W" * 43, "rejected"), (wrong, "rejected"),
                        (expired, "expired"), (revoked, "revoked")):
        response = api(panel, "GET", "/servers", token)
        assert response.status == 401, (token, response.status)
        assert response.headers["www-authenticate"].startswith('Bearer realm="mpanel"')
        assert said in response.json()["error"], response.text
        assert response.json()["field"] == "Authorization"
    # An agent key is no token, nor is a token an agent key.
    _server, agent_key = new_server("keyed")
    assert api(panel, "GET", "/servers", agent_key).status == 401
    assert http_request(panel, "GET", "/api/agent/config", headers=bearer(good)).status == 401
    kinds = {event.kind for event in models.AuthEvent.select()}
    assert {"token_missing", "token_malformed", "token_unknown", "token_bad", "token_expired",
            "token_revoked"} <= kinds
    stored = json.dumps([e.__data__ for e in models.AuthEvent.select()], default=str)
    for secret in (good, wrong, expired, revoked):
        assert secret.split("_", 2)[2] not in stored


def test_revoking_and_expiring_take_effect_at_once_and_use_is_recorded(panel, world):
    admin = models.admin_by_username("staff-admin")
    row, token = tokens.create(admin, "ci", "read", expires_days=30)
    assert models.ApiToken.get_by_id(row.id).last_used_at is None
    assert api(panel, "GET", "/servers", token).status == 200
    used = models.ApiToken.get_by_id(row.id).last_used_at
    assert used is not None and abs(used - datetime.datetime.utcnow()).total_seconds() < 120
    models.ApiToken.update(expires_at=datetime.datetime.utcnow() - datetime.timedelta(
        seconds=1)).where(models.ApiToken.id == row.id).execute()
    assert api(panel, "GET", "/servers", token).status == 401
    row, token = tokens.create(admin, "ci2", "read")
    assert api(panel, "GET", "/servers", token).status == 200
    tokens.revoke(admin, row)
    assert api(panel, "GET", "/servers", token).status == 401


def test_a_token_is_never_more_than_its_owner_may_do_now(panel, world):
    """The owner made read-only, or moved to another customer: their tokens follow at once."""
    acme, other = world["servers"]["acme"], world["servers"]["other"]
    token = token_for("mover", "customer-admin", world["acme_customer"])
    assert api(panel, "POST", "/servers", token, {"name": "mover-1"}).status == 201
    operations.set_admin("mover", "token password 1", TEST_BCRYPT_ROUNDS,
                         role="customer-viewer", customer_id=world["acme_customer"].id)
    assert api(panel, "POST", "/servers", token, {"name": "mover-2"}).status == 403
    assert api(panel, "GET", f"/servers/{acme.id}", token).status == 200
    operations.set_admin("mover", "token password 1", TEST_BCRYPT_ROUNDS,
                         role="customer-admin", customer_id=world["other"].id)
    assert api(panel, "GET", f"/servers/{other.id}", token).status == 404
    assert api(panel, "GET", "/servers", token).json()["servers"] == []
    operations.delete_user(models.admin_by_username("mover").id)
    assert api(panel, "GET", "/servers", token).status == 401


# ===== The account page and the CLI =============================================================

def test_a_token_is_created_shown_once_listed_and_revoked_on_the_account_page(panel, world):
    browser = logged_in(panel, "acme-ops", "customer-admin", world["acme_customer"])
    created = post(browser, "/account/tokens", {"name": "backup script", "scope": "write",
                                                "expires_days": "30",
                                                "password": browser.password,
                                                "customer_id": str(world["other"].id)})
    assert created.status == 200, created.text
    assert created.headers["cache-control"] == "no-store"
    token = re.search(r"(mpt_[0-9a-f]{12}_[A-Za-z0-9_-]{43})", created.text).group(1)
    row = models.ApiToken.get(models.ApiToken.name == "backup script")
    assert row.customer_id == world["acme_customer"].id and row.may_write
    assert row.secret_hash == tokens.token_hash(token) and token not in json.dumps(
        row.__data__, default=str)
    assert api(panel, "GET", "/servers", token).status == 200
    page = browser.request("GET", "/account", headers=HTML).text
    assert token not in page  # shown once
    assert "backup script" in page and "read-write, customer Acme" in page
    assert re.search(r"<td>\d{4}-\d\d-\d\d \d\d:\d\d</td>\s*<td>\d{4}-\d\d-\d\d", page)
    revoked = post(browser, f"/account/tokens/{row.id}/revoke", {})
    assert revoked.status == 200 and "revoked" in revoked.text
    assert api(panel, "GET", "/servers", token).status == 401
    again = post(browser, f"/account/tokens/{row.id}/revoke", {})
    assert again.status == 400
    kinds = [e.kind for e in models.AuthEvent.select().order_by(models.AuthEvent.id)]
    assert "token_created" in kinds and "token_revoked" in kinds


def test_a_viewer_gets_read_only_tokens_and_nobody_revokes_anothers(panel, world):
    viewer = logged_in(panel, "acme-view", "customer-viewer", world["acme_customer"])
    form = viewer.request("GET", "/account", headers=HTML).text
    assert 'value="read"' in form and 'value="write"' not in form
    refused = post(viewer, "/account/tokens", {"name": "w", "scope": "write",
                                                "password": viewer.password})
    assert refused.status == 400 and "read-only" in refused.text
    assert models.ApiToken.select().where(models.ApiToken.name == "w").count() == 0
    made = post(viewer, "/account/tokens", {"name": "r", "scope": "read",
                                             "password": viewer.password})
    assert made.status == 200
    staff_row = models.ApiToken.get(models.ApiToken.name == "staff-admin write")
    stolen = post(viewer, f"/account/tokens/{staff_row.id}/revoke", {})
    assert stolen.status == 404
    assert models.ApiToken.get_by_id(staff_row.id).revoked_at is None
    bad = post(viewer, "/account/tokens", {"name": "x", "expires_days": "soon",
                                            "password": viewer.password})
    assert bad.status == 400 and "expires_days" in bad.text


def test_creating_a_token_asks_for_the_password_again(panel, world):
    """A token outlives the session it was made in: a stolen session alone makes none."""
    browser = logged_in(panel, "acme-thief", "customer-admin", world["acme_customer"])
    page = browser.request("GET", "/account", headers=HTML).text
    assert 'name="password" type="password" autocomplete="current-password" required' in page
    for password in ("", "not it"):
        refused = post(browser, "/account/tokens", {"name": "kept", "password": password})
        assert refused.status == 403 and "No token was created" in refused.text
    assert models.ApiToken.select().where(models.ApiToken.name == "kept").count() == 0
    failures = [e.detail for e in models.AuthEvent.select().where(
        models.AuthEvent.kind == "login_failed")]
    assert any("wrong password to create a token" in (detail or "") for detail in failures)
    assert post(browser, "/account/tokens", {"name": "kept",
                                             "password": browser.password}).status == 200


def test_the_cli_creates_lists_and_revokes_tokens(panel, world, backend_url):
    made = cli(backend_url, "create-token", "staff-admin", "nightly report", "--scope", "read",
               "--expires-days", "7")
    assert made.returncode == 0, made.stderr
    token = re.search(r"(mpt_[0-9a-f]{12}_[A-Za-z0-9_-]{43})", made.stdout).group(1)
    assert api(panel, "GET", "/customers", token).status == 200
    listed = cli(backend_url, "tokens", "staff-admin")
    assert listed.returncode == 0 and "nightly report" in listed.stdout
    assert token not in listed.stdout
    token_id = tokens.token_id_of(token)
    revoked = cli(backend_url, "revoke-token", token_id)
    assert revoked.returncode == 0, revoked.stderr
    assert api(panel, "GET", "/customers", token).status == 401
    unknown = cli(backend_url, "revoke-token", "0123456789ab")
    assert unknown.returncode != 0 and "no token" in unknown.stderr
    wrong = cli(backend_url, "create-token", "acme-admin", "x", "--customer", "other")
    assert wrong.returncode != 0 and "own customer" in wrong.stderr


# ===== The limiter ==============================================================================

@pytest.fixture
def proxied_panel(backend_url, database, tmp_path):
    panel = start_panel(backend_url, tmp_path / "panel.log",
                        {"MPANEL_TRUSTED_PROXIES": "127.0.0.1/32"})
    yield panel
    stop_panel(panel)


def from_address(address):
    return {"X-Forwarded-For": address, "X-Forwarded-Proto": "https"}


def test_concurrent_wrong_secrets_for_one_token_pass_the_limit_exactly_and_the_right_one_works(
        proxied_panel):
    """Thirty wrong secrets under one token id at once, from thirty addresses: the limit
    (MPANEL_AUTH_FAILURE_LIMIT, 10) is taken under one lock, so exactly ten are answered 401
    and the rest 429; the token's own holder is never in the way."""
    token = token_for("victim", scope="read")
    token_id = tokens.token_id_of(token)
    barrier = threading.Barrier(30)
    statuses = []

    def guess(n):
        barrier.wait(timeout=30)
        statuses.append(api(proxied_panel, "GET", "/servers",
                            f"mpt_{token_id}_" + chr(65 + n % 26) * 43,
                            headers=from_address(f"10.9.9.{n}")).status)

    threads = [threading.Thread(target=guess, args=(n,)) for n in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(statuses) == 30
    assert statuses.count(401) == 10 and statuses.count(429) == 20
    limited = api(proxied_panel, "GET", "/servers", f"mpt_{token_id}_" + "z" * 43,
                  headers=from_address("10.9.9.200"))
    assert limited.status == 429 and 1 <= int(limited.headers["retry-after"]) <= 60
    assert api(proxied_panel, "GET", "/servers", token,
               headers=from_address("10.9.9.1")).status == 200
    # Unknown tokens are charged to their address: another address is not affected.
    for n in range(10):
        api(proxied_panel, "GET", "/servers", f"mpt_{n:012x}_" + "W" * 43,
            headers=from_address("203.0.113.9"))
    assert api(proxied_panel, "GET", "/servers", "mpt_ffffffffffff_" + "W" * 43,
               headers=from_address("203.0.113.9")).status == 429
    assert api(proxied_panel, "GET", "/servers", "mpt_ffffffffffff_" + "W" * 43,
               headers=from_address("198.51.100.7")).status == 401
    assert models.AuthEvent.select().where(models.AuthEvent.kind == "token_throttled").count()


def test_a_token_is_refused_over_plain_http_from_the_network(proxied_panel):
    token = token_for("plain", scope="read")
    response = api(proxied_panel, "GET", "/servers", token,
                   headers={"X-Forwarded-For": "203.0.113.5", "X-Forwarded-Proto": "http"})
    assert response.status == 403 and response.json()["field"] == "scheme"
