"""Per-customer alert channels and routes, and a customer's two-factor requirement (issue 13),
over real HTTP, the real CLI and real webhook receivers on loopback, on SQLite and PostgreSQL:
each operation by each role (allowed, refused, a 404 for another's), where a customer's alerts
go (alerts.channels_for), and a customer whose users must set up two-factor first. (The sweep
of every route with B's channel ids is test_authorization.py.)"""
import html
import re

import pytest

from panel import alerts, jobs, models, operations
from panel.db import utcnow
from tests.conftest import ALLOW_LOOPBACK, LOOPBACK, new_server
from tests.integration.test_alerts import WebhookReceiver, add_samples
from tests.integration.test_cli import cli
from tests.integration.test_customers import logged_in
from tests.integration.test_dashboard_pages import post
from tests.integration.test_two_factor import enrol


@pytest.fixture
def receivers():
    made = {}

    def receiver(name):
        made[name] = WebhookReceiver()
        return made[name]

    yield receiver
    for one in made.values():
        one.close()


@pytest.fixture
def world(panel):
    """Customers Acme and Bravo with a server each, a staff-only server, and a channel of
    each owner (no receiver behind them: these tests look at who may do what)."""
    acme = operations.add_customer("Acme Hosting", "acme")
    bravo = operations.add_customer("Bravo Hosting", "bravo")
    servers = {"acme": new_server("acme-web")[0], "bravo": new_server("bravo-web")[0],
               "staff": new_server("staff-db")[0]}
    operations.move_server(servers["acme"].id, acme.id)
    operations.move_server(servers["bravo"].id, bravo.id)
    channels = {"acme": operations.add_channel("acme-hook", "webhook", "http://127.0.0.1:9/a",
                                               customer_id=acme.id, allowed=LOOPBACK),
                "bravo": operations.add_channel("bravo-hook", "webhook",
                                                "http://127.0.0.1:9/b",
                                                customer_id=bravo.id, allowed=LOOPBACK),
                "staff": operations.add_channel("staff-pager", "webhook",
                                                "http://127.0.0.1:9/s")}
    return {"acme": acme, "bravo": bravo, "servers": servers, "channels": channels}


def channel_names(customer_id=None):
    return sorted(c.name for c in models.Channel.select() if c.customer_id == customer_id)


# ===== Who may do what ==========================================================================

def test_a_customer_admin_adds_edits_tests_and_deletes_its_own_channels(panel, world,
                                                                        receivers):
    acme = world["acme"]
    hook = receivers("acme")
    admin = logged_in(panel, "acme-admin", "customer-admin", acme)
    # The form's customer_id is ignored: a customer-admin's channel is their customer's.
    added = post(admin, "/alerts/channels", {"name": "acme-ops", "kind": "webhook",
                                             "target": hook.url, "is_default": "1",
                                             "customer_id": str(world["bravo"].id)})
    assert added.status == 303
    channel = models.channel_of(acme.id, "acme-ops")
    assert channel is not None and channel.customer_id == acme.id
    page = admin.request("GET", "/alerts").text
    assert "acme-ops" in page and hook.url in page and "acme-hook" in page
    assert "bravo" not in page.lower() and "staff-pager" not in page

    edited = post(admin, f"/alerts/channels/{channel.id}/edit",
                  {"name": "acme-oncall", "target": hook.url + "?v=2"})
    assert edited.status == 303
    channel = models.Channel.get_by_id(channel.id)
    assert (channel.name, channel.target, channel.is_default) == \
        ("acme-oncall", hook.url + "?v=2", False)
    bad = post(admin, f"/alerts/channels/{channel.id}/edit", {"name": "x", "target": "ftp://x"})
    assert bad.status == 400 and "http(s) URL" in bad.text
    taken = post(admin, f"/alerts/channels/{channel.id}/edit",
                 {"name": "acme-hook", "target": hook.url})
    assert taken.status == 409 and "already exists" in taken.text

    tested = post(admin, f"/alerts/channels/{channel.id}/test", {})
    assert tested.status == 200 and "Test alert sent to acme-oncall" in tested.text
    assert hook.events() == [("test", None, None)]

    assert post(admin, f"/alerts/channels/{channel.id}/delete", {}).status == 303
    assert models.by_id(models.Channel, channel.id) is None


def test_a_customer_admin_routes_its_servers_to_its_channels_only(panel, world):
    acme, servers, channels = world["acme"], world["servers"], world["channels"]
    admin = logged_in(panel, "acme-admin", "customer-admin", acme)
    own = {"server_id": str(servers["acme"].id), "channel_id": str(channels["acme"].id)}
    assert post(admin, "/alerts/routes", own).status == 303
    assert [c.name for c in alerts.channels_for(servers["acme"].id)] == ["acme-hook"]
    assert "acme-web" in admin.request("GET", "/alerts").text
    # Another's server or channel, and the staff's: named as not there, nothing routed.
    for server, channel in ((servers["bravo"], channels["acme"]),
                            (servers["staff"], channels["acme"]),
                            (servers["acme"], channels["bravo"]),
                            (servers["acme"], channels["staff"])):
        refused = post(admin, "/alerts/routes", {"server_id": str(server.id),
                                                 "channel_id": str(channel.id)})
        assert refused.status == 400 and "no " in refused.text, (server.name, channel.name)
        assert "bravo" not in refused.text.lower() and "staff-" not in refused.text
    assert sorted((r.server_id, r.channel_id) for r in models.ServerChannel.select()) == \
        [(servers["acme"].id, channels["acme"].id)]
    # A staff channel the staff routed to Acme's server is theirs to know and to remove.
    operations.route_to(servers["acme"], channels["staff"])
    assert "staff-pager" not in admin.request("GET", "/alerts").text
    gone = post(admin, f"/alerts/routes/{servers['acme'].id}/{channels['staff'].id}/delete", {})
    assert gone.status == 404
    assert post(admin, f"/alerts/routes/{servers['acme'].id}/{channels['acme'].id}/delete",
                {}).status == 303
    assert [(r.server_id, r.channel_id) for r in models.ServerChannel.select()] == \
        [(servers["acme"].id, channels["staff"].id)]


def test_another_customers_and_the_staffs_channels_are_a_404_to_a_customer_admin(panel, world):
    admin = logged_in(panel, "acme-admin", "customer-admin", world["acme"])
    before = sorted((c.id, c.name, c.target) for c in models.Channel.select())
    for owner in ("bravo", "staff"):
        channel = world["channels"][owner]
        for action, form in (("edit", {"name": "mine-now", "target": "http://127.0.0.1:9/x"}),
                             ("test", {}), ("delete", {})):
            answer = post(admin, f"/alerts/channels/{channel.id}/{action}", form)
            assert answer.status == 404, (owner, action, answer.status)
            # The same words as for a channel that does not exist.
            assert f"no channel with id {channel.id}" in answer.text
            assert channel.name not in answer.text
    missing = post(admin, f"/alerts/channels/{models.MAX_ID}/test", {})
    assert missing.status == 404 and f"no channel with id {models.MAX_ID}" in missing.text
    assert sorted((c.id, c.name, c.target) for c in models.Channel.select()) == before
    assert models.Delivery.select().count() == 0


def test_a_customer_viewer_sees_its_channels_and_changes_none(panel, world):
    viewer = logged_in(panel, "acme-viewer", "customer-viewer", world["acme"])
    page = viewer.request("GET", "/alerts").text
    assert "acme-hook" in page and "http://127.0.0.1:9/a" not in page  # targets: admins only
    assert "bravo" not in page.lower() and "staff-pager" not in page
    assert "Send test alert" not in page and 'action="/alerts/channels"' not in page
    channel = world["channels"]["acme"]
    for path, form in (("/alerts/channels", {"name": "v", "kind": "webhook",
                                              "target": "http://127.0.0.1:9/v"}),
                       (f"/alerts/channels/{channel.id}/edit", {"name": "v",
                                                                "target": "http://x.example"}),
                       (f"/alerts/channels/{channel.id}/test", {}),
                       (f"/alerts/channels/{channel.id}/delete", {}),
                       ("/alerts/routes", {"server_id": str(world["servers"]["acme"].id),
                                           "channel_id": str(channel.id)})):
        assert post(viewer, path, form).status == 403, path
    assert channel_names(world["acme"].id) == ["acme-hook"]
    assert models.ServerChannel.select().count() == 0


def test_names_are_unique_per_owner_and_a_taken_one_tells_nothing_of_others(panel, world):
    admin = logged_in(panel, "acme-admin", "customer-admin", world["acme"])
    for name in ("staff-pager", "bravo-hook"):  # another owner's names are free here
        assert post(admin, "/alerts/channels", {"name": name, "kind": "email",
                                                "target": "ops@acme.example"}).status == 303
    again = post(admin, "/alerts/channels", {"name": "acme-hook", "kind": "email",
                                             "target": "ops@acme.example"})
    assert again.status == 409
    assert "a channel named 'acme-hook' already exists" in html.unescape(again.text)
    assert channel_names(world["acme"].id) == ["acme-hook", "bravo-hook", "staff-pager"]
    assert channel_names(None) == ["staff-pager"]
    with pytest.raises(ValueError, match="already exists"):
        operations.add_channel("staff-pager", "webhook", "http://127.0.0.1:9/s2")


def test_staff_see_every_channel_filterable_by_customer_and_may_add_one_for_a_customer(panel,
                                                                                      world):
    admin = logged_in(panel, "admin")
    page = admin.request("GET", "/alerts").text
    for name in ("acme-hook", "bravo-hook", "staff-pager", "Acme Hosting", "Bravo Hosting"):
        assert name in page, name
    only_acme = admin.request("GET", f"/alerts?customer={world['acme'].id}").text
    table = only_acme.split("<h2>Channels</h2>")[1].split("</table>")[0]
    assert "acme-hook" in table and "bravo-hook" not in table and "staff-pager" not in table
    assert post(admin, "/alerts/channels", {"name": "acme-mail", "kind": "email",
                                            "target": "it@acme.example",
                                            "customer_id": str(world["acme"].id)}).status == 303
    assert channel_names(world["acme"].id) == ["acme-hook", "acme-mail"]
    # A staff admin routes no server to another customer's channel either.
    refused = post(admin, "/alerts/routes", {"server_id": str(world["servers"]["bravo"].id),
                                             "channel_id": str(world["channels"]["acme"].id)})
    assert refused.status == 400 and "another customer's" in html.unescape(refused.text)
    viewer = logged_in(panel, "staff-viewer", "viewer")
    assert post(viewer, "/alerts/staff-channels", {
        "customer_id": str(world["acme"].id),
        "channel_id": str(world["channels"]["staff"].id)}).status == 403


def test_an_admin_chooses_staff_channels_for_a_customer(panel, world):
    admin = logged_in(panel, "admin")
    acme, staff = world["acme"], world["channels"]["staff"]
    chosen = post(admin, "/alerts/staff-channels", {"customer_id": str(acme.id),
                                                    "channel_id": str(staff.id)})
    assert chosen.status == 303
    assert [c.name for c in models.staff_channels_for_customer(acme.id)] == ["staff-pager"]
    assert "Customers' alerts to staff channels" in admin.request("GET", "/alerts").text
    # Only a staff channel can be chosen: a customer's is no staff channel.
    refused = post(admin, "/alerts/staff-channels", {
        "customer_id": str(acme.id), "channel_id": str(world["channels"]["bravo"].id)})
    assert refused.status == 400 and "no staff channel" in refused.text
    assert post(admin, "/alerts/staff-channels", {"customer_id": "x",
                                                  "channel_id": "1"}).status == 400
    # Acme's users do not learn of it.
    customer = logged_in(panel, "acme-admin", "customer-admin", acme)
    assert "staff-pager" not in customer.request("GET", "/alerts").text
    assert post(admin, f"/alerts/staff-channels/{acme.id}/{staff.id}/delete", {}).status == 303
    assert models.staff_channels_for_customer(acme.id) == []
    assert post(admin, f"/alerts/staff-channels/{models.MAX_ID}/{staff.id}/delete",
                {}).status == 404


# ===== Where a customer's alerts go =============================================================

def fire_cpu_alerts():
    """Every server's CPU above the global rule for 6 minutes: one alert each, delivered."""
    operations.set_rule("cpu", 90, 5)
    now = utcnow()
    for agent in models.Agent.select():
        add_samples(agent.id, [95] * 6, end=now)
    opened, _ = jobs.evaluate_rules(60, now)
    alerts.deliver_due({}, allowed=LOOPBACK)
    return opened


def test_an_alert_of_a_customers_server_reaches_its_channels_and_the_chosen_staff_one(
        database, receivers):
    acme = operations.add_customer("Acme Hosting", "acme")
    bravo = operations.add_customer("Bravo Hosting", "bravo")
    hooks = {name: receivers(name) for name in
             ("acme", "acme-db", "bravo", "staff-default", "staff-chosen")}
    operations.add_channel("acme", "webhook", hooks["acme"].url,
                           customer_id=acme.id, allowed=LOOPBACK)
    operations.add_channel("acme-db", "webhook", hooks["acme-db"].url, is_default=False,
                           customer_id=acme.id, allowed=LOOPBACK)
    operations.add_channel("bravo", "webhook", hooks["bravo"].url,
                           customer_id=bravo.id, allowed=LOOPBACK)
    operations.add_channel("staff-default", "webhook", hooks["staff-default"].url)
    chosen = operations.add_channel("staff-chosen", "webhook", hooks["staff-chosen"].url,
                                    is_default=False)
    operations.choose_staff_channel(acme.id, chosen.id)
    acme_web, _ = new_server("acme-web")
    acme_db, _ = new_server("acme-db")
    new_server("staff-db")
    for server in (acme_web, acme_db):
        operations.move_server(server.id, acme.id)
    operations.route("acme-db", "acme-db", customer_id=acme.id)

    assert fire_cpu_alerts() == 3
    assert hooks["acme"].events() == [("firing", "acme-web", "cpu")]  # its default
    assert hooks["acme-db"].events() == [("firing", "acme-db", "cpu")]  # its route, only
    assert sorted(hooks["staff-chosen"].events()) == [("firing", "acme-db", "cpu"),
                                                      ("firing", "acme-web", "cpu")]
    # The staff's defaults keep today's routing: the staff-only server's alerts, no other.
    assert hooks["staff-default"].events() == [("firing", "staff-db", "cpu")]
    assert hooks["bravo"].received == []


def test_a_route_never_sends_a_server_that_moved_to_its_old_customers_channel(database,
                                                                              receivers):
    acme = operations.add_customer("Acme Hosting", "acme")
    bravo = operations.add_customer("Bravo Hosting", "bravo")
    acme_hook, bravo_hook = receivers("acme"), receivers("bravo")
    operations.add_channel("acme", "webhook", acme_hook.url, customer_id=acme.id, allowed=LOOPBACK)
    operations.add_channel("bravo", "webhook", bravo_hook.url,
                           customer_id=bravo.id, allowed=LOOPBACK)
    server, _ = new_server("web")
    operations.move_server(server.id, acme.id)
    operations.route("web", "acme", customer_id=acme.id)
    # A route written before the move (or by hand) is still never followed across customers.
    models.Server.update(customer=bravo.id).where(models.Server.id == server.id).execute()
    assert [c.name for c in alerts.channels_for(server.id)] == ["bravo"]
    operations.move_server(server.id, bravo.id)  # ... and the move itself drops it
    assert models.ServerChannel.select().count() == 0
    assert fire_cpu_alerts() == 1
    assert acme_hook.received == [] and bravo_hook.events() == [("firing", "web", "cpu")]


def test_deleting_a_customer_deletes_its_channels_and_keeps_the_staffs(admin_panel_world):
    world = admin_panel_world
    assert operations.delete_customer(world["acme"].id, "acme") == "Acme Hosting"
    assert channel_names(None) == ["staff-pager"]
    assert sorted(c.name for c in models.Channel.select()) == ["bravo-hook", "staff-pager"]
    assert models.CustomerStaffChannel.select().count() == 0


@pytest.fixture
def admin_panel_world(world):
    operations.route_to(models.Server.get_by_id(world["servers"]["acme"].id),
                        world["channels"]["acme"])
    operations.choose_staff_channel(world["acme"].id, world["channels"]["staff"].id)
    alert = models.Alert.create(server=world["servers"]["acme"].id, rule="cpu", open_key="cpu",
                                started_at=utcnow(), message="cpu high")
    models.Delivery.create(alert=alert.id, channel=world["channels"]["acme"].id,
                           event="firing")
    return world


# ===== Two-factor per customer ==================================================================

def test_a_customers_users_must_enrol_first_once_an_admin_requires_it(panel, world):
    acme, bravo = world["acme"], world["bravo"]
    admin = logged_in(panel, "admin")
    on = post(admin, f"/customers/{acme.id}/two-factor", {"required": "1"})
    assert on.status == 303 and models.Customer.get_by_id(acme.id).require_two_factor
    assert "Stop requiring two-factor" in admin.request("GET", f"/customers/{acme.id}").text
    assert post(admin, f"/customers/{acme.id}/two-factor", {"required": "yes"}).status == 400
    assert post(admin, f"/customers/{models.MAX_ID}/two-factor",
                {"required": "1"}).status == 404
    # The staff requirement is its own setting: the staff admin goes on without it.
    assert admin.request("GET", "/servers").status == 200

    acme_user = logged_in(panel, "acme-viewer", "customer-viewer", acme)
    acme_user.username = "acme-viewer"
    for path in ("/servers", "/alerts", f"/servers/{world['servers']['acme'].id}"):
        sent = acme_user.request("GET", path)
        assert sent.status in (302, 303) and sent.headers["location"].endswith("/account"), path
    assert "must use two-factor" in acme_user.request("GET", "/account").text
    enrol(acme_user)
    assert acme_user.request("GET", "/servers").status == 200

    bravo_user = logged_in(panel, "bravo-viewer", "customer-viewer", bravo)
    assert bravo_user.request("GET", "/servers").status == 200
    assert post(admin, f"/customers/{acme.id}/two-factor", {"required": "0"}).status == 303
    assert not models.Customer.get_by_id(acme.id).require_two_factor
    # A customer-admin cannot turn its own customer's requirement off.
    acme_admin = logged_in(panel, "acme-admin", "customer-admin", acme)
    assert post(acme_admin, f"/customers/{acme.id}/two-factor",
                {"required": "0"}).status == 403


# ===== The command line =========================================================================

def test_the_cli_gives_channels_and_routes_a_customer(database, backend_url, receivers):
    hook = receivers("acme")
    acme = operations.add_customer("Acme Hosting", "acme")
    server, _ = new_server("acme-web")
    operations.move_server(server.id, acme.id)
    allow = {"MPANEL_ALLOW_CHANNEL_NETWORKS": ALLOW_LOOPBACK}
    added = cli(backend_url, "add-channel", "ops", "--webhook", hook.url, "--customer", "acme",
                "--not-default", env=allow)
    assert added.returncode == 0 and "Acme Hosting's" in added.stdout, added.stderr
    assert cli(backend_url, "add-channel", "ops", "--email", "ops@example.com").returncode == 0
    assert channel_names(acme.id) == ["ops"] and channel_names(None) == ["ops"]
    routed = cli(backend_url, "route", "acme-web", "ops", "--customer", "acme")
    assert routed.returncode == 0, routed.stderr
    assert [(c.name, c.customer_id) for c in alerts.channels_for(server.id)] == \
        [("ops", acme.id)]
    copied = cli(backend_url, "customers", "staff-channel", "acme", "ops")
    assert copied.returncode == 0 and "also go to the staff channel 'ops'" in copied.stdout
    assert sorted((c.name, c.customer_id or 0) for c in alerts.channels_for(server.id)) == \
        [("ops", 0), ("ops", acme.id)]
    assert cli(backend_url, "customers", "staff-channel", "acme", "ops",
               "--remove").returncode == 0
    tested = cli(backend_url, "send-test-alert", "--customer", "acme", env=allow)
    assert tested.returncode == 0 and tested.stdout.strip() == "ok: ops (webhook)"
    assert hook.events() == [("test", None, None)]
    required = cli(backend_url, "customers", "two-factor", "acme", "on")
    assert required.returncode == 0 and "required of Acme Hosting's users" in required.stdout
    assert models.Customer.get_by_id(acme.id).require_two_factor
    missing = cli(backend_url, "route", "acme-web", "nope", "--customer", "acme")
    assert missing.returncode != 0 and "no channel named 'nope'" in missing.stderr
    bravo = operations.add_customer("Bravo Hosting", "bravo")
    operations.add_channel("bravo", "webhook", "http://127.0.0.1:9/b",
                           customer_id=bravo.id, allowed=LOOPBACK)
    crossed = cli(backend_url, "route", "acme-web", "bravo", "--customer", "bravo")
    assert crossed.returncode != 0 and "another customer's" in crossed.stderr


def test_roles_on_the_alerts_page_name_who_owns_what(panel, world):
    """The staff's page says whose each channel is; a customer's never says 'staff'."""
    admin = logged_in(panel, "admin")
    rows = re.findall(r"<tr><td>([^<]+)</td>\s*<td>([^<]+)</td>", admin.request(
        "GET", "/alerts").text)
    assert ("acme-hook", "Acme Hosting") in rows and ("staff-pager", "staff") in rows
    customer = logged_in(panel, "acme-admin", "customer-admin", world["acme"])
    assert "<th>Owner</th>" not in customer.request("GET", "/alerts").text
