"""Browser pages that change things (auth="admin": a user who may change things, plus the CSRF
token; a customer-admin only their customer's servers, status page and channels): adding a
server and showing its key once, the agent bundle, rotating and revoking keys, renaming, flags,
maintenance, a customer's status page, alert channels and routes (a customer-admin: their
customer's own); and, for staff admins only (auth="staff-admin"), deleting and moving servers,
customers and their users, the staff channels a customer's alerts also go to, rules, and the
security log.

Every form answers bad input with the same page, a 4xx status and a message naming the problem;
nothing is half-written (each change is one transaction in operations.py).
"""
import datetime
import io
import json
import shlex
import tarfile
import time
from pathlib import Path

import bottle

from . import access as access_module
from . import alerts, auth, exports, keys, models, operations, quotas
from . import settings as settings_module
from .db import utcnow
from .errors import refusal
from .views import (ROOT, agent_or_404, alert_lists, customer_filter, panel_url, server_context,
                    template)

ALERTS_CSV_ROWS = 10_000  # of the history in /alerts.csv, latest first

BUNDLE_FILES = (("install.sh", ROOT / "install" / "install.sh", 0o755),
                ("mpanel-agent.service", ROOT / "install" / "mpanel-agent.service", 0o644))


def refused_status(err):
    """A page's status for an operation's ValueError: 409 for a name already taken."""
    return 409 if isinstance(err, operations.NameTaken) else 400


def install_commands(url, key):
    """The lines an admin pastes on the new server: Linux, Windows, and cron without root."""
    quoted_url, quoted_key = shlex.quote(url), shlex.quote(key)
    return {
        "linux": f"curl -fsSL {quoted_url}/downloads/install.sh | sudo bash -s -- "
                 f"--url {quoted_url} --api-key {quoted_key}",
        "windows": "powershell -NoProfile -ExecutionPolicy Bypass -Command \"& ([scriptblock]::"
                   f"Create((Invoke-RestMethod '{url}/downloads/install.ps1'))) -Url '{url}' "
                   f"-ApiKey '{key}'\"",
        # The key goes in the environment, not on the command line: `ps` shows arguments to
        # every user of the machine, the environment only to the same user.
        "cron": f"* * * * * MPANEL_AGENT_URL={quoted_url} MPANEL_AGENT_API_KEY={quoted_key} "
                "flock -n $HOME/.mpanel-agent.lock python3 $HOME/mpanel-agent/agent.py --once",
    }


def agent_config(url, key, interval):
    """config.json for the bundle: the example's shape with this server's URL and key."""
    config = json.loads((ROOT / "config.example.json").read_text())
    config["controlPanel"] = {"url": url, "apiKey": key}
    config["agent"]["reportInterval"] = interval
    config["logging"]["file"] = "/var/log/mpanel-agent/agent.log"
    return json.dumps(config, indent=2) + "\n"


def bundle(url, key, interval, agent_file=ROOT / "agent.py"):
    """mpanel-agent.tar.gz: agent.py (the panel's settings.agent_file), install.sh, the unit,
    and config.json with the key."""
    buffer = io.BytesIO()
    now = time.time()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        def add(name, data, mode):
            info = tarfile.TarInfo(f"mpanel-agent/{name}")
            info.size, info.mode, info.mtime = len(data), mode, now
            archive.addfile(info, io.BytesIO(data))

        for name, path, mode in (("agent.py", Path(agent_file), 0o644), *BUNDLE_FILES):
            if path.is_file():
                add(name, path.read_bytes(), mode)
        add("config.json", agent_config(url, key, interval).encode(), 0o600)
    return buffer.getvalue()


def build_manage(settings):
    app = bottle.Bottle()
    secret = settings_module.secret_bytes(settings)

    def form_text(name, limit=200):
        return (bottle.request.forms.getunicode(name) or "").strip()[:limit]

    def optional_id(name):
        """A form's id field: None when empty, else a whole number or ValueError naming it."""
        text = form_text(name, 20)
        if not text:
            return None
        if not (text.isascii() and text.isdigit()) or not models.valid_id(int(text)):
            raise ValueError(f"{name} must be an id (a whole number)")
        return int(text)

    def quota_fields():
        """A quota form's (billing day, allowance, basis), as typed: operations checks them."""
        return form_text("billing_day", 3), form_text("allowance", 40), form_text("basis", 4)

    def key_page(session, server, key, heading):
        # The key is in this answer and nowhere else: no cache may keep it.
        bottle.response.set_header("Cache-Control", "no-store")
        url = panel_url(settings)
        return template("server_key.tpl", title=f"{heading} · mPanel", heading=heading,
                        server=server, key=key, url=url, commands=install_commands(url, key),
                        session=session)

    def back_to(server_id, notice=None):
        target = f"/servers/{server_id}"
        if bottle.request.get_header("HX-Request"):
            bottle.response.set_header("HX-Redirect", target)
            return ""
        return bottle.redirect(target + (f"?notice={notice}" if notice else ""))

    def error_on_detail(server_id, session, access, message, status=400):
        bottle.response.status = status
        context = server_context(server_id, session, access, settings, full=True, error=message)
        return template("server.tpl", **context)

    # ----- servers ------------------------------------------------------------------------------

    def new_server_page(session, access, error="", name="", critical=False, customer_id=None):
        return template("server_new.tpl", title="Add server · mPanel", session=session,
                        error=error, name=name, critical=critical, customer_id=customer_id,
                        customers=models.customers() if access.staff else [])

    @app.get("/servers/new", auth="admin")
    def new_server_form(session, access):
        return new_server_page(session, access)

    @app.post("/servers", auth="admin")
    def create_server(session, access):
        name = form_text("name", 101)
        critical = bool(bottle.request.forms.get("critical"))
        # A customer-admin's server is their customer's, whatever the form says; staff choose.
        customer_id = access.customer_id
        try:
            if access.staff:
                customer_id = optional_id("customer_id")
            server, key = operations.add_server(name, settings.bcrypt_rounds, critical=critical,
                                                customer_id=customer_id)
        except ValueError as err:
            bottle.response.status = refused_status(err)
            return new_server_page(session, access, str(err), name, critical, customer_id)
        return key_page(session, server, key, f"{server.name} added")

    @app.post("/servers/<server_id:int>/bundle", auth="admin")
    def download_bundle(server_id, session, access):
        agent = agent_or_404(server_id, access)
        key = form_text("api_key", 100)
        # The key is not stored, only its hash: the page that showed it sends it back, and
        # it must be this server's current key.
        if keys.key_id_of(key) != agent.api_key_id or \
                not keys.check_secret(key, agent.api_key_hash):
            bottle.abort(400, "that is not this server's current API key")
        data = bundle(panel_url(settings), key, settings.report_interval, settings.agent_file)
        bottle.response.content_type = "application/gzip"
        bottle.response.set_header("Content-Disposition",
                                   'attachment; filename="mpanel-agent.tar.gz"')
        bottle.response.set_header("Cache-Control", "no-store")
        return data

    @app.post("/servers/<server_id:int>/rotate", auth="admin")
    def rotate(server_id, session, access):
        agent = agent_or_404(server_id, access)
        grace = datetime.timedelta(hours=settings.key_grace_hours)
        key = keys.rotate(agent, settings.bcrypt_rounds, grace, secret)
        return key_page(session, agent.server, key, f"New key for {agent.server.name}")

    @app.post("/servers/<server_id:int>/revoke", auth="admin")
    def revoke(server_id, session, access):
        keys.revoke(agent_or_404(server_id, access))
        return back_to(server_id, "revoked")

    @app.post("/servers/<server_id:int>/flags", auth="admin")
    def flags(server_id, session, access):
        agent_or_404(server_id, access)
        try:
            # public_status: a staff-only server is published on /status, a customer's on
            # that customer's /status/<slug> (models.public_status_servers), so a
            # customer-admin publishes their own servers on their own page only.
            for flag in ("critical", "public_status"):
                value = bottle.request.forms.get(flag)
                if value is not None:
                    if value not in ("0", "1"):
                        raise ValueError(f"{flag} must be 0 or 1")
                    operations.set_flag(server_id, flag, value == "1")
        except ValueError as err:
            return error_on_detail(server_id, session, access, str(err))
        return back_to(server_id)

    @app.post("/servers/<server_id:int>/maintenance", auth="admin")
    def maintenance(server_id, session, access):
        agent_or_404(server_id, access)
        try:
            if bottle.request.forms.get("end"):
                operations.end_maintenance(server_id)
            else:
                minutes = int(form_text("minutes", 10) or "x")
                operations.add_maintenance(None, minutes, form_text("reason", 200),
                                         server_id=server_id)
        except ValueError as err:
            message = str(err) if "maintenance" in str(err) else \
                "minutes must be a whole number of minutes"
            return error_on_detail(server_id, session, access, message)
        return back_to(server_id)

    @app.post("/servers/<server_id:int>/rename", auth="admin")
    def rename(server_id, session, access):
        agent_or_404(server_id, access)
        try:
            operations.rename_server(server_id, form_text("name", 101))
        except ValueError as err:
            status = refused_status(err)
            return error_on_detail(server_id, session, access, str(err), status)
        return back_to(server_id)

    @app.post("/servers/<server_id:int>/delete", auth="staff-admin")
    def delete(server_id, session, access):
        agent_or_404(server_id, access)
        try:
            operations.delete_server(server_id, form_text("confirm_name", 101))
        except ValueError as err:
            return error_on_detail(server_id, session, access, str(err))
        if bottle.request.get_header("HX-Request"):
            bottle.response.set_header("HX-Redirect", "/servers")
            return ""
        return bottle.redirect("/servers")

    # ----- alerts -------------------------------------------------------------------------------

    def alerts_page(session, access, error="", notice="", status=200):
        bottle.response.status = status
        smtp = settings.smtp
        customer, shown = customer_filter(access)
        # Rules are the staff's; channels and routes each user sees as models scopes them (a
        # customer's users: their customer's own, nothing of the staff's or another's).
        staff = access.staff
        channels = models.visible_channels(shown)
        return template("alerts.tpl", title="Alerts · mPanel", session=session, access=access,
                        **alert_lists(shown),
                        customers=models.customers() if staff else [], customer=customer,
                        channels=channels,
                        last_delivery=models.last_delivery_per_channel(500),
                        rules=models.alert_rules_with_servers() if staff else [],
                        servers=models.server_names(shown),
                        routes=models.visible_routes(shown),
                        staff_choices=models.staff_channel_choices(shown) if staff else [],
                        staff_channels=[c for c in models.visible_channels(access)
                                        if c.customer_id is None] if staff else [],
                        metrics=alerts.METRICS,
                        channel_kinds=tuple(alerts.CHANNEL_KINDS.values()),
                        shown_target=alerts.shown_target,
                        units_of=alerts.UNITS, sides=alerts.SIDES, rule_help=alerts.HELP,
                        states=alerts.STATES, error=error, notice=notice,
                        smtp={"host": smtp.get("host"), "port": smtp.get("port"),
                              "sender": smtp.get("sender"), "tls": smtp.get("tls"),
                              "login": bool(smtp.get("user"))})

    def channel_or_404(channel_id, access):
        """A channel `access` may see: another customer's or (for a customer's user) the
        staff's is a 404 that reads the same as one that does not exist."""
        channel = models.channel_or_none(channel_id, access)
        if channel is None:
            bottle.abort(404, f"no channel with id {channel_id}")
        return channel

    def owner_of_new(access):
        """Whose a new channel or route is: a customer-admin's customer's, whatever the form
        says; staff choose (none: the staff's)."""
        return optional_id("customer_id") if access.staff else access.customer_id

    @app.get("/alerts", auth="viewer")
    def alerts_view(session, access):
        return alerts_page(session, access)

    @app.get("/alerts.csv", auth="viewer")
    def alerts_download(session, access):
        """The alerts the page lists (the same ?customer= filter), firing first, then up to
        ALERTS_CSV_ROWS of the history, as a file."""
        _, shown = customer_filter(access)
        lists = alert_lists(shown, history=ALERTS_CSV_ROWS)
        bottle.response.content_type = exports.FORMATS["csv"]
        bottle.response.set_header("Cache-Control", "no-store")
        bottle.response.set_header("Content-Disposition", 'attachment; filename="alerts.csv"')
        return exports.alerts_csv(lists["firing"] + lists["history"])

    @app.post("/alerts/channels", auth="admin")
    def add_channel(session, access):
        try:
            operations.add_channel(form_text("name", 65), form_text("kind", 16),
                                   form_text("target", 2001),
                                   is_default=bool(bottle.request.forms.get("is_default")),
                                   customer_id=owner_of_new(access),
                                   allowed=settings.allow_channel_networks)
        except ValueError as err:
            return alerts_page(session, access, error=str(err),
                               status=refused_status(err))
        return bottle.redirect("/alerts")

    @app.post("/alerts/channels/<channel_id:int>/edit", auth="admin")
    def edit_channel(channel_id, session, access):
        channel = channel_or_404(channel_id, access)
        try:
            operations.edit_channel(channel, form_text("name", 65), form_text("target", 2001),
                                    is_default=bool(bottle.request.forms.get("is_default")),
                                    allowed=settings.allow_channel_networks)
        except ValueError as err:
            return alerts_page(session, access, error=str(err),
                               status=refused_status(err))
        return bottle.redirect("/alerts")

    @app.post("/alerts/channels/<channel_id:int>/delete", auth="admin")
    def delete_channel(channel_id, session, access):
        models.delete_channel(channel_or_404(channel_id, access).id)
        return bottle.redirect("/alerts")

    @app.post("/alerts/channels/<channel_id:int>/test", auth="admin")
    def test_channel(channel_id, session, access):
        channel = channel_or_404(channel_id, access)
        delivery = alerts.queue_test(channel, utcnow())
        # This one delivery only: the background job sends the rest (a customer-admin's click
        # must not send everyone's due alerts).
        alerts.deliver_due(settings.smtp, allowed=settings.allow_channel_networks,
                           only=[delivery.id])
        delivery = models.Delivery.get_by_id(delivery.id)
        if delivery.status == "sent":
            return alerts_page(session, access, notice=f"Test alert sent to {channel.name}.")
        return alerts_page(session, access, error=f"Test alert to {channel.name} failed: "
                                          f"{delivery.last_error or delivery.status}; "
                                          "it will be retried with backoff.", status=502)

    @app.post("/alerts/routes", auth="admin")
    def add_route(session, access):
        try:
            server_id = optional_id("server_id")
            channel_id = optional_id("channel_id")
            if server_id is None or channel_id is None:
                raise ValueError("choose a server and a channel")
            agent = models.server_or_none(server_id, access)
            if agent is None:
                raise ValueError(f"no server with id {server_id}")
            channel = models.channel_or_none(channel_id, access)
            if channel is None:
                raise ValueError(f"no channel with id {channel_id}")
            operations.route_to(agent.server, channel)
        except ValueError as err:
            return alerts_page(session, access, error=str(err), status=400)
        return bottle.redirect("/alerts")

    @app.post("/alerts/routes/<server_id:int>/<channel_id:int>/delete", auth="admin")
    def delete_route(server_id, channel_id, session, access):
        agent_or_404(server_id, access)
        channel_or_404(channel_id, access)
        operations.unroute(server_id, channel_id)
        return bottle.redirect("/alerts")

    @app.post("/alerts/staff-channels", auth="staff-admin")
    def choose_staff_channel(session, access):
        try:
            customer_id, channel_id = optional_id("customer_id"), optional_id("channel_id")
            if customer_id is None or channel_id is None:
                raise ValueError("choose a customer and a staff channel")
            operations.choose_staff_channel(customer_id, channel_id)
        except ValueError as err:
            return alerts_page(session, access, error=str(err), status=400)
        return bottle.redirect("/alerts")

    @app.post("/alerts/staff-channels/<customer_id:int>/<channel_id:int>/delete",
              auth="staff-admin")
    def unchoose_staff_channel(customer_id, channel_id, session, access):
        try:
            operations.choose_staff_channel(customer_id, channel_id, chosen=False)
        except ValueError as err:
            bottle.abort(404, str(err))
        return bottle.redirect("/alerts")

    @app.post("/alerts/rules", auth="staff-admin")
    def set_rule(session, access):
        forms = bottle.request.forms
        try:
            threshold = float(forms.get("threshold") or "x")
            minutes = int(forms.get("minutes") or "x")
        except ValueError:
            return alerts_page(session, access, error="threshold must be a number and minutes "
                                                      "a whole number", status=400)
        server_name = None
        if forms.get("server_id"):
            try:
                server_name = operations.server_by_id(int(forms.get("server_id"))).name
            except ValueError as err:
                return alerts_page(session, access, error=str(err), status=400)
        try:
            operations.set_rule(form_text("metric", 16), threshold, minutes, server_name,
                              enabled=forms.get("enabled", "1") == "1")
        except ValueError as err:
            return alerts_page(session, access, error=str(err), status=400)
        return bottle.redirect("/alerts")

    @app.post("/alerts/rules/<rule_id:int>/delete", auth="staff-admin")
    def delete_rule(rule_id, session, access):
        rule = models.by_id(models.AlertRule, rule_id)
        if rule is None:
            bottle.abort(404, f"no rule with id {rule_id}")
        if rule.server_id is None:
            return alerts_page(session, access,
                               error="global rules can be disabled but not deleted", status=400)
        rule.delete_instance()
        return bottle.redirect("/alerts")

    # ----- customers and their users ------------------------------------------------------------

    def customer_or_404(customer_id):
        customer = models.by_id(models.Customer, customer_id)
        if customer is None:
            bottle.abort(404, f"no customer with id {customer_id}")
        return customer

    def customers_page(session, error="", status=200, name=""):
        bottle.response.status = status
        return template("customers.tpl", title="Customers · mPanel", session=session,
                        customers=models.customers(), error=error, name=name,
                        traffic_of={customer_id: quotas.shown(usage) for customer_id, (usage, _)
                                    in quotas.customer_usages().items()})

    def customer_page(session, customer, error="", status=200, username=""):
        bottle.response.status = status
        usage, _ = quotas.customer_usages([customer.id])[customer.id]
        return template("customer.tpl", title=f"{customer.name} · Customers · mPanel",
                        session=session, customer=customer, error=error, username=username,
                        traffic=quotas.shown(usage),
                        published=models.public_status_servers(customer.id),
                        servers=models.customer_servers(customer.id),
                        users=models.customer_users(customer.id),
                        roles=[access_module.ROLES[name] for name in access_module.CUSTOMER_ROLES])

    @app.get("/customers", auth="staff")
    def customers_view(session, access):
        return customers_page(session)

    @app.post("/customers", auth="staff-admin")
    def create_customer(session, access):
        name = form_text("name", 101)
        try:
            customer = operations.add_customer(name, form_text("slug", 41) or None)
        except ValueError as err:
            return customers_page(session, str(err),
                                  refused_status(err), name)
        return bottle.redirect(f"/customers/{customer.id}")

    @app.get("/customers/<customer_id:int>", auth="staff")
    def customer_view(customer_id, session, access):
        return customer_page(session, customer_or_404(customer_id))

    @app.post("/customers/<customer_id:int>/rename", auth="staff-admin")
    def rename_customer(customer_id, session, access):
        customer = customer_or_404(customer_id)
        try:
            operations.rename_customer(customer.id, form_text("name", 101))
        except ValueError as err:
            return customer_page(session, customer, str(err),
                                 refused_status(err))
        return bottle.redirect(f"/customers/{customer.id}")

    @app.post("/customers/<customer_id:int>/delete", auth="staff-admin")
    def delete_customer(customer_id, session, access):
        customer = customer_or_404(customer_id)
        try:
            operations.delete_customer(customer.id, form_text("confirm_slug", 41))
        except ValueError as err:
            return customer_page(session, customer, str(err), 400)
        return bottle.redirect("/customers")

    @app.post("/customers/<customer_id:int>/users", auth="staff-admin")
    def add_customer_user(customer_id, session, access):
        customer = customer_or_404(customer_id)
        username = form_text("username", 65)
        role = form_text("role", 20)
        # The adding admin's own password: a user outlives the session that adds it.
        refused = auth.password_refused(settings, session.admin, "login_failed", "add a user",
                                        field="your_password")
        if refused:
            return customer_page(session, customer, f"{refused[1]} No user was added.",
                                 refused[0], username)
        try:
            if role not in access_module.CUSTOMER_ROLES:
                raise ValueError(f"role must be one of {', '.join(access_module.CUSTOMER_ROLES)}")
            if models.admin_by_username(username) is not None:
                # Setting a password here must never take over a staff account (or another
                # customer's user) of the same name.
                raise operations.NameTaken(f"a user named {username!r} already exists")
            operations.set_admin(username, bottle.request.forms.getunicode("password") or "",
                                 settings.bcrypt_rounds, role=role, customer_id=customer.id)
        except ValueError as err:
            return customer_page(session, customer, str(err),
                                 refused_status(err), username)
        return bottle.redirect(f"/customers/{customer.id}")

    @app.post("/customers/<customer_id:int>/users/<user_id:int>/delete", auth="staff-admin")
    def delete_customer_user(customer_id, user_id, session, access):
        customer = customer_or_404(customer_id)
        user = models.by_id(models.Admin, user_id)
        if user is None or user.customer_id != customer.id:
            bottle.abort(404, f"no user with id {user_id} at this customer")
        operations.delete_user(user.id)
        return bottle.redirect(f"/customers/{customer.id}")

    @app.post("/customers/<customer_id:int>/two-factor", auth="staff-admin")
    def customer_two_factor(customer_id, session, access):
        customer = customer_or_404(customer_id)
        required = form_text("required", 2)
        if required not in ("0", "1"):
            return customer_page(session, customer, "required must be 0 or 1", 400)
        operations.require_two_factor(customer.id, required == "1")
        return bottle.redirect(f"/customers/{customer.id}")

    @app.post("/customers/<customer_id:int>/quota", auth="staff-admin")
    def customer_quota(customer_id, session, access):
        customer = customer_or_404(customer_id)
        try:
            operations.set_customer_quota(customer.id, *quota_fields())
        except ValueError as err:
            return customer_page(session, customer, str(err), 400)
        return bottle.redirect(f"/customers/{customer.id}")

    @app.post("/servers/<server_id:int>/quota", auth="staff-admin")
    def server_quota(server_id, session, access):
        agent_or_404(server_id, access)
        try:
            operations.set_server_quota(server_id, *quota_fields())
        except ValueError as err:
            return error_on_detail(server_id, session, access, str(err))
        return back_to(server_id)

    @app.post("/servers/<server_id:int>/customer", auth="staff-admin")
    def move_server(server_id, session, access):
        agent_or_404(server_id, access)
        try:
            operations.move_server(server_id, optional_id("customer_id"))
        except ValueError as err:
            return error_on_detail(server_id, session, access, str(err))
        return back_to(server_id)

    # ----- customers' status pages --------------------------------------------------------------

    @app.post("/customers/<customer_id:int>/status-page", auth="admin")
    def set_status_page(customer_id, session, access):
        # Staff set any customer's page; a customer-admin their own only (another customer's
        # reads as one that does not exist).
        if not access.staff and access.customer_id != customer_id:
            bottle.abort(404, f"no customer with id {customer_id}")
        customer = customer_or_404(customer_id)
        on = bottle.request.forms.get("status_page") or "0"
        try:
            if on not in ("0", "1"):
                raise ValueError("status_page must be 1 (on) or 0 (off)")
            operations.set_status_page(customer.id, on == "1",
                                       form_text("status_title",
                                                 operations.STATUS_TITLE_MAX + 1))
        except ValueError as err:
            field = "status_page" if "status_page" in str(err) else "status_title"
            if access.staff:
                return customer_page(session, customer, str(err), 400)
            raise refusal(400, str(err), field) from None
        return bottle.redirect(f"/customers/{customer.id}#status-page" if access.staff
                               else "/servers#status-page")

    # ----- security -----------------------------------------------------------------------------

    @app.get("/security", auth="staff-admin")
    def security(session, access):
        customer, shown = customer_filter(access)
        events = models.recent_auth_events(shown, 200)
        names = {s.id: s.name for s in models.server_names(access)}
        return template("security.tpl", title="Security · mPanel", session=session,
                        events=events, names=names, failure_kinds=auth.FAILURE_KINDS,
                        customers=models.customers(), customer=customer,
                        summary_minutes=models.AUTH_SUMMARY_WINDOW // 60)

    return app

