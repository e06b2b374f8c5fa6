"""Customers (issue 13) over real HTTP and the real CLI, on SQLite and PostgreSQL: a staff admin
creates, renames and deletes customers, adds their users, moves servers between them and filters
the servers table, the alerts and the security log by customer; what a customer-admin and a
customer-viewer can and cannot do. (The sweep of every route is test_authorization.py.)"""
import re

import pytest

from panel import models, operations
from tests.conftest import TEST_BCRYPT_ROUNDS, bearer, http_request, new_server, stamp
from tests.integration.test_api import sample
from tests.integration.test_cli import cli
from tests.integration.test_dashboard import PASSWORD, Browser
from tests.integration.test_dashboard_pages import HTML, post


def logged_in(panel, username, role="admin", customer=None):
    operations.set_admin(username, PASSWORD, TEST_BCRYPT_ROUNDS, role=role,
                         customer_id=customer.id if customer else None)
    browser = Browser(panel)
    assert browser.login(username).status == 303
    return browser


@pytest.fixture
def admin(panel):
    return logged_in(panel, "admin")


def test_an_admin_creates_renames_and_lists_customers(admin):
    created = post(admin, "/customers", {"name": "Acme Hosting GmbH", "slug": ""})
    assert created.status == 303
    customer = models.Customer.get(models.Customer.name == "Acme Hosting GmbH")
    assert customer.slug == "acme-hosting-gmbh"
    assert created.headers["location"].endswith(f"/customers/{customer.id}")
    listing = admin.request("GET", "/customers", headers=HTML)
    assert "Acme Hosting GmbH" in listing.text and "acme-hosting-gmbh" in listing.text
    again = post(admin, "/customers", {"name": "Acme Hosting GmbH"})
    assert again.status == 409 and "already exists" in again.text
    bad = post(admin, "/customers", {"name": "Other", "slug": "Not A Slug"})
    assert bad.status == 400 and "slug must be" in bad.text
    renamed = post(admin, f"/customers/{customer.id}/rename", {"name": "Acme AG"})
    assert renamed.status == 303 and models.Customer.get_by_id(customer.id).name == "Acme AG"
    assert models.Customer.get_by_id(customer.id).slug == "acme-hosting-gmbh"
    assert admin.request("GET", "/customers/99999", headers=HTML).status == 404


def test_deleting_a_customer_gives_its_servers_back_and_logs_its_users_out(admin, panel):
    customer = operations.add_customer("Acme")
    server, key = new_server("acme-web")
    operations.move_server(server.id, customer.id)
    response = http_request(panel, "POST", "/api/agent/metrics", headers=bearer(key),
                            json_body=sample(server.id, stamp(0)))
    assert response.status == 200
    user = logged_in(panel, "acme-ops", "customer-admin", customer)
    assert user.request("GET", f"/servers/{server.id}").status == 200
    page = admin.request("GET", f"/customers/{customer.id}", headers=HTML).text
    assert "acme-web" in page and "acme-ops" in page
    assert "go back to the staff only" in page and "deleted and logged out" in page

    wrong = post(admin, f"/customers/{customer.id}/delete", {"confirm_slug": "acme-typo"})
    assert wrong.status == 400 and "slug exactly" in wrong.text
    assert models.Customer.select().count() == 1
    deleted = post(admin, f"/customers/{customer.id}/delete", {"confirm_slug": "acme"})
    assert deleted.status == 303
    assert models.Customer.select().count() == 0
    assert models.Server.get_by_id(server.id).customer_id is None
    assert models.Metric.select().count() == 1  # no sample lost
    assert models.admin_by_username("acme-ops") is None
    assert models.AdminSession.select().join(models.Admin).where(
        models.Admin.username == "acme-ops").count() == 0
    gone = user.request("GET", "/servers")
    assert gone.status in (302, 303) and gone.headers["location"].endswith("/login")


def test_an_admin_adds_and_removes_a_customers_users(admin, panel):
    customer = operations.add_customer("Acme")
    # The adding admin's own password first: a user outlives a stolen session.
    for mine in ("", "not mine"):
        refused = post(admin, f"/customers/{customer.id}/users", {
            "username": "acme-view", "password": PASSWORD, "role": "customer-viewer",
            "your_password": mine})
        assert refused.status == 403 and "No user was added" in refused.text
        assert models.admin_by_username("acme-view") is None
    added = post(admin, f"/customers/{customer.id}/users",
                 {"username": "acme-view", "password": PASSWORD, "role": "customer-viewer",
                  "your_password": admin.password})
    assert added.status == 303
    user = models.admin_by_username("acme-view")
    assert (user.role, user.customer_id) == ("customer-viewer", customer.id)
    # A staff account of the same name is not taken over by setting its password here.
    staff_hash = models.admin_by_username("admin").password_hash
    taken = post(admin, f"/customers/{customer.id}/users",
                 {"username": "admin", "password": "another password", "role": "customer-admin",
                  "your_password": admin.password})
    assert taken.status == 409 and "already exists" in taken.text
    assert models.admin_by_username("admin").password_hash == staff_hash
    assert models.admin_by_username("admin").customer_id is None
    staff_role = post(admin, f"/customers/{customer.id}/users",
                      {"username": "x-user", "password": PASSWORD, "role": "admin",
                       "your_password": admin.password})
    assert staff_role.status == 400 and "role must be one of" in staff_role.text
    browser = Browser(panel)
    assert browser.login("acme-view").status == 303
    removed = post(admin, f"/customers/{customer.id}/users/{user.id}/delete", {})
    assert removed.status == 303 and models.admin_by_username("acme-view") is None
    assert browser.request("GET", "/servers").status in (302, 303)
    other = operations.add_customer("Other")
    staff = models.admin_by_username("admin")
    # A user is removed through its own customer only.
    assert post(admin, f"/customers/{other.id}/users/{staff.id}/delete", {}).status == 404


def test_the_database_refuses_a_customer_role_without_a_customer(database):
    customer = operations.add_customer("Acme")
    for role, customer_id in (("customer-admin", None), ("viewer", customer.id)):
        with pytest.raises(models.peewee.IntegrityError):
            with models.database_proxy.atomic():
                models.Admin.create(username="x", password_hash="h", role=role,
                                    customer=customer_id)
    for role, customer_id in (("customer-viewer", None), ("admin", customer.id)):
        with pytest.raises(ValueError):
            operations.set_admin("x", PASSWORD, TEST_BCRYPT_ROUNDS, role=role,
                                 customer_id=customer_id)


def test_an_admin_moves_a_server_between_customers(admin):
    acme, globex = operations.add_customer("Acme"), operations.add_customer("Globex")
    server, _ = new_server("web-1")
    page = admin.request("GET", f"/servers/{server.id}", headers=HTML).text
    assert 'action="/servers/%d/customer"' % server.id in page and "staff only" in page
    assert post(admin, f"/servers/{server.id}/customer",
                {"customer_id": str(acme.id)}).status == 303
    assert models.Server.get_by_id(server.id).customer_id == acme.id
    assert "Acme" in admin.request("GET", f"/servers/{server.id}", headers=HTML).text
    assert post(admin, f"/servers/{server.id}/customer",
                {"customer_id": str(globex.id)}).status == 303
    assert models.Server.get_by_id(server.id).customer_id == globex.id
    assert post(admin, f"/servers/{server.id}/customer", {"customer_id": ""}).status == 303
    assert models.Server.get_by_id(server.id).customer_id is None
    missing = post(admin, f"/servers/{server.id}/customer", {"customer_id": "99999"})
    assert missing.status == 400 and "no customer with id 99999" in missing.text


def test_the_servers_table_alerts_and_security_log_filter_by_customer(admin, panel):
    acme = operations.add_customer("Acme")
    mine, _ = new_server("acme-web")
    other, other_key = new_server("staff-web")
    operations.move_server(mine.id, acme.id)
    for server in (mine, other):
        models.Alert.create(server=server.id, rule="cpu", open_key="cpu", started_at=stamp(0),
                            message=f"{server.name} is busy")
    models.record_auth_failure("bad_key", client_addr="192.0.2.1", server_id=other.id,
                               detail="POST /api/agent/metrics")
    table = admin.request("GET", f"/servers?customer={acme.id}", headers=HTML).text
    assert "acme-web" in table and "staff-web" not in table.split("<tbody")[1]
    assert f'<option value="{acme.id}" selected>Acme</option>' in table
    assert f"&amp;customer={acme.id}" in table  # the sort links keep the filter
    # The live refresh asks with the filter form's fields, the customer among them.
    refresh = admin.request("GET", f"/servers?customer={acme.id}",
                            headers={"HX-Request": "true"}).text
    assert "acme-web" in refresh and "staff-web" not in refresh
    assert 'hx-include="#filters"' in refresh
    everyone = admin.request("GET", "/servers", headers=HTML).text
    assert "acme-web" in everyone and "staff-web" in everyone
    bad = admin.request("GET", "/servers?customer=acme", headers=HTML)
    assert bad.status == 400 and "customer" in bad.text
    alerts = admin.request("GET", f"/alerts?customer={acme.id}", headers=HTML).text
    assert "acme-web is busy" in alerts and "staff-web is busy" not in alerts
    assert "staff-web is busy" in admin.request("GET", "/alerts", headers=HTML).text
    log = admin.request("GET", f"/security?customer={acme.id}", headers=HTML).text
    assert "192.0.2.1" not in log
    assert "192.0.2.1" in admin.request("GET", "/security", headers=HTML).text


def test_a_customer_admin_adds_a_server_to_its_customer_and_manages_it(panel):
    acme = operations.add_customer("Acme")
    other = operations.add_customer("Globex")
    user = logged_in(panel, "acme-ops", "customer-admin", acme)
    form_page = user.request("GET", "/servers/new", headers=HTML).text
    assert "customer_id" not in form_page  # their servers are theirs: nothing to choose
    added = post(user, "/servers", {"name": "acme-db", "customer_id": str(other.id)})
    assert added.status == 200 and "acme-db added" in added.text
    key = re.search(r"agent_[A-Za-z0-9_\-]+", added.text).group(0)
    server = models.server_by_name("acme-db")
    assert server.customer_id == acme.id
    assert http_request(panel, "GET", "/api/agent/config", headers=bearer(key)).status == 200
    page = user.request("GET", f"/servers/{server.id}", headers=HTML).text
    assert "Rotate key" in page and "Mark critical" in page and "Start maintenance" in page
    assert "Delete server" not in page and "Show on /status" not in page
    assert "Show on the status page" in page  # their own page (test_status_pages.py)
    assert "/customer" not in re.sub(r"/customers", "", page.split('id="manage"')[1])
    assert post(user, f"/servers/{server.id}/maintenance", {"minutes": "60"}).status == 303
    assert models.under_maintenance(server.id, models.utcnow())
    assert post(user, f"/servers/{server.id}/revoke", {}).status == 303
    assert models.agent_of_server(server.id).status == "revoked"
    for path in (f"/servers/{server.id}/delete", f"/servers/{server.id}/customer",
                 "/alerts/rules", "/customers"):
        refused = post(user, path, {"confirm_name": "acme-db", "customer_id": "",
                                    "name": "x"})
        assert refused.status == 403 and "staff" in refused.text, path
    assert models.server_by_name("acme-db").customer_id == acme.id
    nav = user.request("GET", "/servers", headers=HTML).text.split("</header>")[0]
    assert "Add server" in nav and "/customers" not in nav and "/security" not in nav
    assert "acme-ops · Acme" in nav


def test_a_customer_viewer_only_looks(panel):
    acme = operations.add_customer("Acme")
    server, _ = new_server("acme-web")
    operations.move_server(server.id, acme.id)
    viewer = logged_in(panel, "acme-view", "customer-viewer", acme)
    page = viewer.request("GET", f"/servers/{server.id}", headers=HTML)
    assert page.status == 200 and 'id="manage"' not in page.text
    nav = page.text.split("</header>")[0]
    assert "Add server" not in nav and "(read-only)" in nav
    for path in (f"/servers/{server.id}/rename", f"/servers/{server.id}/flags", "/servers"):
        refused = post(viewer, path, {"name": "x", "critical": "1"})
        assert refused.status == 403 and "read-only" in refused.text, path
    assert models.Server.get_by_id(server.id).name == "acme-web"


def test_a_staff_viewer_sees_customers_but_changes_none(panel):
    acme = operations.add_customer("Acme")
    viewer = logged_in(panel, "watcher", "viewer")
    assert viewer.request("GET", "/customers", headers=HTML).status == 200
    page = viewer.request("GET", f"/customers/{acme.id}", headers=HTML).text
    assert "Acme" in page and "Delete customer" not in page
    refused = post(viewer, f"/customers/{acme.id}/rename", {"name": "x"})
    assert refused.status == 403 and "read-only" in refused.text
    assert models.Customer.get_by_id(acme.id).name == "Acme"


def test_the_cli_manages_customers_their_servers_and_users(database, backend_url):
    added = cli(backend_url, "customers", "add", "Acme Hosting")
    assert added.returncode == 0 and "slug acme-hosting" in added.stdout, added.stderr
    assert cli(backend_url, "add-server", "acme-web").returncode == 0
    assert cli(backend_url, "add-server", "staff-web").returncode == 0
    moved = cli(backend_url, "move-server", "acme-web", "--customer", "acme-hosting")
    assert moved.returncode == 0 and "Acme Hosting's" in moved.stdout, moved.stderr
    user = cli(backend_url, "create-admin", "acme-ops", "--role", "customer-admin",
               "--customer", "acme-hosting", env={"MPANEL_ADMIN_PASSWORD": PASSWORD})
    assert user.returncode == 0 and "user of Acme Hosting" in user.stdout, user.stderr
    created = models.admin_by_username("acme-ops")
    assert created.role == "customer-admin" and created.customer_id is not None
    orphan = cli(backend_url, "create-admin", "lost", "--role", "customer-viewer",
                 env={"MPANEL_ADMIN_PASSWORD": PASSWORD})
    assert orphan.returncode == 2 and "belongs to a customer" in orphan.stderr
    listed = cli(backend_url, "list-servers", "--customer", "acme-hosting")
    assert "acme-web" in listed.stdout and "staff-web" not in listed.stdout
    customers = cli(backend_url, "customers", "list")
    assert "acme-hosting" in customers.stdout and "servers 1" in customers.stdout
    renamed = cli(backend_url, "customers", "rename", "acme-hosting", "Acme AG")
    assert renamed.returncode == 0 and models.Customer.get().name == "Acme AG"
    assert cli(backend_url, "move-server", "acme-web", "--staff").returncode == 0
    assert models.server_by_name("acme-web").customer_id is None
    assert cli(backend_url, "move-server", "acme-web", "--customer", "acme-hosting") \
        .returncode == 0
    deleted = cli(backend_url, "customers", "delete", "acme-hosting")
    assert deleted.returncode == 0 and "1 server(s)" in deleted.stdout, deleted.stderr
    assert models.Customer.select().count() == 0
    assert models.server_by_name("acme-web").customer_id is None
    assert models.admin_by_username("acme-ops") is None
    unknown = cli(backend_url, "customers", "delete", "nobody")
    assert unknown.returncode == 2 and "no customer named 'nobody'" in unknown.stderr
