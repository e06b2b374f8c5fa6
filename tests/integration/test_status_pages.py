"""Per-customer status pages (issue 13) over real HTTP, on SQLite and PostgreSQL: /status/<slug>
is off by default and then a 404 that reads as one for a slug no customer has; on, it shows
that customer's published servers under its title (escaped) and nothing of another customer's
or the staff's, with the same headers and live refresh as the staff's /status, which keeps the
staff's servers only. Who may turn a page on and set its title: the customer's admin for their
own customer, staff for any; a customer-viewer or a staff viewer may not."""
import html
import re

import bottle
import pytest

from panel import SECURITY_HEADERS, models, operations
from tests.conftest import bearer, http_request, new_server, stamp
from tests.integration.test_api import sample
from tests.integration.test_customers import logged_in
from tests.integration.test_dashboard_pages import HTML, post, register

HOSTILE_TITLE = '<script>alert("x")</script> Acme & "Co" status'


def published(panel, name, customer, hostname):
    """A server of `customer` (None: staff-only) that has reported and is on its status page."""
    server, key = new_server(name)
    if customer:
        operations.move_server(server.id, customer.id)
    register(panel, key, hostname=hostname)
    document = sample(server.id, stamp(0))
    document["metrics"]["cpu"]["usage"] = 12.5
    assert http_request(panel, "POST", "/api/agent/metrics", headers=bearer(key),
                        json_body=document).status == 200
    operations.set_flag(server.id, "public_status", True)
    return server


@pytest.fixture
def world(panel):
    acme = operations.add_customer("Acme Hosting", "acme")
    bravo = operations.add_customer("Bravo Hosting", "bravo")
    published(panel, "acme-web", acme, "web.acme-secret.example")
    operations.move_server(new_server("acme-db")[0].id, acme.id)  # Acme's, not published
    published(panel, "bravo-web", bravo, "web.bravo.example")
    published(panel, "staff-shop", None, "shop.staff.example")
    operations.set_status_page(bravo.id, True, "Bravo status")
    return {"acme": acme, "bravo": bravo}


def status_of(customer):
    row = models.Customer.get_by_id(customer.id)
    return row.status_page, row.status_title


def test_a_status_page_is_off_by_default_and_then_reads_as_an_unknown_slug(panel, world):
    assert status_of(world["acme"]) == (False, "")
    answers = {slug: http_request(panel, "GET", f"/status/{slug}", headers=HTML)
               for slug in ("acme", "no-such-customer", "Not-A-Slug", "x" * 41)}
    for slug, answer in answers.items():
        assert answer.status == 404, (slug, answer.status)
        assert "acme" not in answer.text.lower(), slug
        assert answer.headers["cache-control"] == "no-store"
        for header in SECURITY_HEADERS:
            assert header.lower() in answer.headers, (slug, header)
    assert len({answer.text for answer in answers.values()}) == 1
    as_json = [http_request(panel, "GET", f"/status/{slug}").json()
               for slug in ("acme", "no-such-customer")]
    assert as_json[0] == as_json[1] == {"error": "Not Found: no status page here"}
    # Turned off again, it is that 404 again.
    operations.set_status_page(world["acme"].id, True, "")
    assert http_request(panel, "GET", "/status/acme").status == 200
    operations.set_status_page(world["acme"].id, False, "")
    assert http_request(panel, "GET", "/status/acme", headers=HTML).text == \
        answers["no-such-customer"].text


def test_on_it_shows_that_customers_published_servers_only_under_its_escaped_title(panel,
                                                                                   world):
    operations.set_status_page(world["acme"].id, True, HOSTILE_TITLE)
    page = http_request(panel, "GET", "/status/acme", headers=HTML)
    assert page.status == 200
    text = page.text
    assert "acme-web" in text and "100 %" in text and "up" in text
    for absent in ("acme-db", "bravo", "staff-shop", "acme-secret", "12.5"):
        assert absent not in text, absent  # nor another's server, a hostname or a metric
    assert "<script>alert" not in text
    assert f'<p class="status-heading">{bottle.html_escape(HOSTILE_TITLE)}</p>' in text
    assert html.unescape(re.search(r"<title>(.*?)</title>", text).group(1)) == \
        f"All systems up · {HOSTILE_TITLE}"
    assert 'hx-get="/status/acme"' in text
    # The headers of the staff's /status, the same live-refresh partial.
    staff = http_request(panel, "GET", "/status", headers=HTML)
    for header in (*SECURITY_HEADERS, "Cache-Control"):
        assert page.headers[header.lower()] == staff.headers[header.lower()], header
    partial = http_request(panel, "GET", "/status/acme", headers={"HX-Request": "true"})
    assert partial.status == 200 and "<html" not in partial.text
    assert partial.text.lstrip().startswith('<div id="status-board" hx-get="/status/acme"')
    assert "acme-web" in partial.text and "bravo" not in partial.text
    assert "<script>alert" not in partial.text
    # Bravo's page has Bravo's server only; the staff's /status the staff's only.
    bravo = http_request(panel, "GET", "/status/bravo", headers=HTML).text
    assert "bravo-web" in bravo and "acme" not in bravo.lower() and "staff-shop" not in bravo
    assert "<title>All systems up · Bravo status</title>" in bravo
    assert "staff-shop" in staff.text
    assert "acme-web" not in staff.text and "bravo-web" not in staff.text
    assert "<title>All systems up · Status</title>" in staff.text
    # An empty title: the page is just "Status".
    operations.set_status_page(world["acme"].id, True, "")
    plain = http_request(panel, "GET", "/status/acme", headers=HTML).text
    assert "<title>All systems up · Status</title>" in plain and "status-heading" not in plain


def test_a_down_server_counts_on_its_customers_page_only(panel, world, database):
    operations.set_status_page(world["acme"].id, True, "Acme")
    acme_web = models.server_by_name("acme-web")
    models.Server.update(state="offline", state_since=stamp(0)).where(
        models.Server.id == acme_web.id).execute()
    acme = http_request(panel, "GET", "/status/acme", headers=HTML).text
    assert "<title>1 down · Acme</title>" in acme and "1 of 1 down" in acme
    assert "favicon-alert.svg" in acme
    staff = http_request(panel, "GET", "/status", headers=HTML).text
    assert "<title>All systems up · Status</title>" in staff


def test_who_may_turn_a_status_page_on_and_set_its_title(panel, world):
    acme, bravo = world["acme"], world["bravo"]
    viewer = logged_in(panel, "acme-view", "customer-viewer", acme)
    refused = post(viewer, f"/customers/{acme.id}/status-page",
                   {"status_page": "1", "status_title": "Viewer's"})
    assert refused.status == 403 and "read-only" in refused.text
    assert status_of(acme) == (False, "")
    box = viewer.request("GET", "/servers", headers=HTML).text
    assert 'id="status-page"' in box and "/customers/" not in box  # shown, no form

    owner = logged_in(panel, "acme-ops", "customer-admin", acme)
    box = owner.request("GET", "/servers", headers=HTML).text
    assert f'action="/customers/{acme.id}/status-page"' in box
    assert "acme-web." in box.split('id="status-page"')[1]  # what is published on it
    done = post(owner, f"/customers/{acme.id}/status-page",
                {"status_page": "1", "status_title": "Acme uptime"})
    assert done.status == 303 and done.headers["location"].endswith("/servers#status-page")
    assert status_of(acme) == (True, "Acme uptime")
    assert http_request(panel, "GET", "/status/acme").status == 200
    # Another customer's page: the 404 of a customer that does not exist; nothing changes.
    for target in (bravo.id, models.MAX_ID):
        other = post(owner, f"/customers/{target}/status-page", {"status_page": "0"})
        assert other.status == 404 and "bravo" not in other.text.lower(), target
    assert status_of(bravo) == (True, "Bravo status")
    # Bad input: a 400 naming it, nothing changed.
    too_long = post(owner, f"/customers/{acme.id}/status-page",
                    {"status_page": "1", "status_title": "x" * 101})
    assert too_long.status == 400 and "status page title must be at most 100" in too_long.text
    odd = post(owner, f"/customers/{acme.id}/status-page", {"status_page": "yes"})
    assert odd.status == 400 and "status_page must be 1" in odd.text
    assert status_of(acme) == (True, "Acme uptime")
    # Turned off from the same box (the checkbox unticked sends nothing).
    assert post(owner, f"/customers/{acme.id}/status-page",
                {"status_title": "Acme uptime"}).status == 303
    assert status_of(acme) == (False, "Acme uptime")
    assert http_request(panel, "GET", "/status/acme").status == 404

    # Staff: any customer's, from its page; a staff viewer may not.
    staff_viewer = logged_in(panel, "watcher", "viewer")
    assert post(staff_viewer, f"/customers/{bravo.id}/status-page",
                {"status_page": "0"}).status == 403
    assert status_of(bravo) == (True, "Bravo status")
    staff = logged_in(panel, "admin")
    page = staff.request("GET", f"/customers/{bravo.id}", headers=HTML).text
    assert 'href="/status/bravo"' in page and f'/customers/{bravo.id}/status-page' in page
    assert "bravo-web" in page.split('id="status-page"')[1]
    changed = post(staff, f"/customers/{bravo.id}/status-page",
                   {"status_page": "1", "status_title": "Bravo & friends"})
    assert changed.status == 303 and changed.headers["location"].endswith(
        f"/customers/{bravo.id}#status-page")
    assert status_of(bravo) == (True, "Bravo & friends")
    bad = post(staff, f"/customers/{bravo.id}/status-page",
               {"status_page": "1", "status_title": "a\x1bb"})
    assert bad.status == 400 and "status page title must not contain" in bad.text
    assert "Bravo Hosting" in bad.text  # the customer's page, with the reason
    assert post(staff, "/customers/999999/status-page", {"status_page": "1"}).status == 404


def test_a_customer_admin_publishes_their_own_servers_on_their_own_page(panel, world):
    acme = world["acme"]
    operations.set_status_page(acme.id, True, "")
    owner = logged_in(panel, "acme-ops", "customer-admin", acme)
    db_server = models.server_by_name("acme-db")
    detail = owner.request("GET", f"/servers/{db_server.id}", headers=HTML).text
    assert "Show on the status page" in detail and "Show on /status" not in detail
    assert post(owner, f"/servers/{db_server.id}/flags", {"public_status": "1"}).status == 303
    page = http_request(panel, "GET", "/status/acme", headers=HTML).text
    assert "acme-db" in page and "acme-web" in page
    assert "acme-db" not in http_request(panel, "GET", "/status", headers=HTML).text
    # Another customer's server or a staff one: a 404, its flag as it was.
    for name in ("bravo-web", "staff-shop"):
        server = models.server_by_name(name)
        answer = post(owner, f"/servers/{server.id}/flags", {"public_status": "0"})
        assert answer.status == 404, name
        assert models.Server.get_by_id(server.id).public_status, name
    # A server moved to the staff leaves the customer's page (and is on the staff's).
    operations.move_server(db_server.id, None)
    assert "acme-db" not in http_request(panel, "GET", "/status/acme").text
    assert "acme-db" in http_request(panel, "GET", "/status").text


def test_deleting_a_customer_takes_its_status_page_with_it(panel, world):
    operations.set_status_page(world["bravo"].id, True, "Bravo")
    assert http_request(panel, "GET", "/status/bravo").status == 200
    operations.delete_customer(world["bravo"].id, "bravo")
    assert http_request(panel, "GET", "/status/bravo").status == 404
    # Its published server is the staff's now, and so on the staff's page.
    assert "bravo-web" in http_request(panel, "GET", "/status", headers=HTML).text


def test_the_title_rule_is_the_names_rule(database):
    customer = operations.add_customer("Acme")
    for title, problem in (("x" * 101, "at most 100"), ("a\u202eb", "control or format")):
        with pytest.raises(ValueError, match=problem):
            operations.set_status_page(customer.id, True, title)
    operations.set_status_page(customer.id, True, "  Acme  ")
    assert status_of(customer) == (True, "Acme")
    with pytest.raises(ValueError, match="no customer"):
        operations.set_status_page(models.MAX_ID, True, "")


def test_the_cli_turns_a_status_page_on_and_off(database, backend_url):
    from tests.integration.test_cli import cli

    customer = operations.add_customer("Acme Hosting", "acme")
    on = cli(backend_url, "status-page", "acme", "--on", "--title", "Acme uptime")
    assert on.returncode == 0, on.stderr
    assert on.stdout.strip() == "/status/acme is on, titled 'Acme uptime'"
    assert status_of(customer) == (True, "Acme uptime")
    off = cli(backend_url, "status-page", "Acme Hosting", "--off")  # the title is kept
    assert off.returncode == 0 and "/status/acme is off (a 404)" in off.stdout
    assert status_of(customer) == (False, "Acme uptime")
    bad = cli(backend_url, "status-page", "acme", "--on", "--title", "x" * 101)
    assert bad.returncode == 2 and "status page title must be at most 100" in bad.stderr
    assert "Traceback" not in bad.stderr
    unknown = cli(backend_url, "status-page", "nobody", "--on")
    assert unknown.returncode == 2 and "no customer named 'nobody'" in unknown.stderr
    assert status_of(customer) == (False, "Acme uptime")
