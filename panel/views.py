"""Browser pages that show things: login, the servers table, a server's detail, the public
status pages (the staff's and each customer's), static files and the public downloads. (Pages
that change things: manage.py.)

Each view builds a context dict and calls `render(page, partial, ctx)`: a plain request gets the
full page, an htmx request (`HX-Request` header) just the partial it asked for.
"""
import json
import secrets
import time
import urllib.parse
from pathlib import Path

import bottle

from . import (access as access_module, auth, charts, checks, exports, figures, keys, models,
               operations, protocol, quotas, server_page, status_page, traffic, units)
from .db import utcnow
from .errors import DATABASE_ERRORS, database_unavailable, refusal

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = str(ROOT / "templates")
STATIC = str(Path(__file__).resolve().parent / "static")
HTMX_FILE = "htmx-2.0.8.min.js"

# Public, secret-free files an admin's servers fetch while installing (`curl … | sudo bash`).
DOWNLOADS = {  # agent.py: the panel's settings.agent_file (MPANEL_AGENT_FILE), see downloads()
    "agent.py": (ROOT / "agent.py", "text/x-python; charset=utf-8"),
    "install.sh": (ROOT / "install" / "install.sh", "text/x-shellscript; charset=utf-8"),
    "install.ps1": (ROOT / "install" / "install.ps1", "text/plain; charset=utf-8"),
    "mpanel-agent.service": (ROOT / "install" / "mpanel-agent.service",
                             "text/plain; charset=utf-8"),
    "config.example.json": (ROOT / "config.example.json", "application/json"),
}

STATUSES = ("online", "offline", "never seen")
# The servers table's figure columns, from the figure table: (sort key, header, figure), left
# to right; each row carries the shown value under the sort key.
TABLE_FIGURES = tuple((figure.table.key, figure.table.label, figure)
                      for figure in figures.TABLE_COLUMNS)
SORT_KEYS = {
    "name": lambda r: r["name"].lower(),
    "hostname": lambda r: r["hostname"].lower(),
    "status": lambda r: (STATUSES.index(r["status"]), r["name"].lower()),
    "seen": lambda r: -(r["last_seen_epoch"] or -1e12),
    **{key: (lambda r, key=key: _number(r[key])) for key, _, _ in TABLE_FIGURES},
    # Most problems first when descending; then the servers that run the most services.
    "services": lambda r: (len(r["problems"]), len(r["services"])),
    # Traffic this cycle: the share of the allowance first, then the bytes.
    "traffic": lambda r: (_number((r["traffic"] or {}).get("percent")),
                          (r["traffic"] or {}).get("used", 0)),
    "version": lambda r: r["version"],
}
# The services a server may report, each a column the table can show (?show=mysql), in the
# wire schema's order; sorted by state, worst first when descending, then by problems.
SERVICE_NAMES = tuple(protocol.METRICS["properties"]["services"]["properties"])
SERVICE_SORT_PREFIX = "svc-"
SORT_KEYS.update({SERVICE_SORT_PREFIX + name: (lambda r, name=name: _service_rank(r, name))
                  for name in SERVICE_NAMES})
# The soonest disk-full forecast of a server's mounts (forecasts.py): (mount, seconds left) or
# None; sorted soonest first, the servers with none last.
DISK_FULL = "disk_full"
SORT_KEYS[DISK_FULL] = lambda r: r[DISK_FULL][1] if r[DISK_FULL] else float("inf")


def _disk_full_text(value):
    return f"{value[0]} in {units.duration(value[1])}" if value else ""


# For the templates: (sort key, header, column class, format of the value).
TABLE_CELLS = tuple((key, label, "c-rate" if figures.shown_unit(figure) == "rate" else "c-num",
                     units.FORMATS[figures.shown_unit(figure)])
                    for key, label, figure in TABLE_FIGURES) + \
    ((DISK_FULL, "Disk full in", "c-full", _disk_full_text),)


def _number(value):
    return float("-inf") if value is None else value


def _service_rank(row, name):
    state, wrong = row["service_states"].get(name, (None, []))
    return (len(checks.SERVICE_STATES) - checks.SERVICE_STATES.index(state) if state else 0,
            len(wrong))


def render(page, partial, ctx):
    name = partial if bottle.request.get_header("HX-Request") else page
    return template(name, **ctx)


def template(template_name, /, **ctx):
    ctx.setdefault("session", None)
    session = ctx["session"]
    # What the page may offer (links, forms): the same Access the route was given.
    ctx.setdefault("access", access_module.Access.of(session.admin) if session else None)
    ctx.setdefault("title", "mPanel")
    return bottle.template(template_name, template_lookup=[TEMPLATES], htmx_file=HTMX_FILE,
                           units=units, quote=urllib.parse.quote_plus, table_cells=TABLE_CELLS,
                           allowance_text=traffic.allowance_text, traffic_bases=traffic.BASES,
                           service_names=SERVICE_NAMES, service_sort=SERVICE_SORT_PREFIX, **ctx)


def panel_url(settings):
    """The panel's address as agents should use it: MPANEL_PUBLIC_URL, else this request's
    (scheme and host from a trusted proxy's X-Forwarded-* only)."""
    if settings.public_url:
        return settings.public_url
    return f"{auth.forwarded_scheme(settings)}://{auth.forwarded_host(settings)}"


# ===== The servers table ========================================================================

def _shown(figure, values):
    """A figure's value as the table shows and sorts it."""
    value = values[figure.column]
    if figure.share_of:
        return units.share(value, values[figure.share_of])
    if value is not None and figures.shown_unit(figure) == "percent":
        return round(value, 1)
    return value


def server_rows(offline_after, access, now=None):
    """One dict per server `access` sees, for the servers table (models.fleet: one query,
    plain tuples)."""
    now = now or utcnow()
    rows = []
    identity = len(models.FLEET_COLUMNS) - len(models.FLEET_FIGURES)
    checked = models.service_summary(access)
    usages = quotas.server_usages(access, now)
    soonest = models.soonest_full(access)
    for row in models.fleet(access):
        (server_id, name, critical, agent_id, hostname, agent_status, version, last_seen,
         clock_offset) = row[:identity]
        services, problems = checked.get(agent_id, ([], []))
        values = dict(zip(models.FLEET_FIGURES, row[identity:]))
        state = models.connection_state(last_seen, now, offline_after)
        rows.append({
            "id": server_id,
            "name": name,
            "critical": bool(critical),
            "hostname": hostname or "",
            "status": state,
            "revoked": agent_status == "revoked",
            "clock": models.clock_skew(clock_offset),
            "last_seen": units.ago((now - last_seen).total_seconds()) if last_seen else "never",
            "last_seen_iso": last_seen.isoformat() + "Z" if last_seen else "",
            "last_seen_epoch": charts.epoch(last_seen) if last_seen else None,
            **{key: _shown(figure, values) for key, _, figure in TABLE_FIGURES},
            "services": services, "problems": problems,
            "service_states": checks.service_states(services, problems),
            "traffic": quotas.shown(usages[server_id]) if server_id in usages else None,
            "version": version or "",
            DISK_FULL: (soonest[agent_id][0],
                        max(0.0, (soonest[agent_id][1] - now).total_seconds()))
            if agent_id in soonest else None,
        })
    # "upgrade failed" beside the version: the server's latest rollout result (upgrades.py).
    failed = models.last_upgrade_failures(row["id"] for row in rows)
    for row in rows:
        row["upgrade_failed"] = failed.get(row["id"])
    return rows


def fleet_context(offline_after, access):
    """The servers table's data, shared with its JSON twin (api_v1.py): every row `access`
    sees (server_rows), how many are in each state, how many alerts fire."""
    rows = server_rows(offline_after, access)
    return {"rows": rows, "counts": {s: sum(1 for r in rows if r["status"] == s)
                                     for s in STATUSES},
            "firing": models.firing_alert_count(access)}


def customer_filter(access):
    """`?customer=<id>` (staff only: a customer user's scope is theirs whatever the address
    says): -> (the id or None, the Access narrowed to it)."""
    text = (bottle.request.query.getunicode("customer") or "").strip()
    if not text or not access.staff:
        return None, access
    if not text.isdigit() or not models.valid_id(int(text)):
        raise refusal(400, "customer must be a customer's id (a whole number)", "customer")
    return int(text), access.narrowed(int(text))


def table_query(customer=None):
    """The table's filter and sort, from the query string, cleaned. `kept_query`: what the
    sort links carry besides q and status (the service columns, the customer filter)."""
    query = bottle.request.query
    sort = query.get("sort") if query.get("sort") in SORT_KEYS else "name"
    direction = "desc" if query.get("dir") == "desc" else "asc"
    state = query.getunicode("status") or ""
    asked = set(query.getall("show")[:len(SERVICE_NAMES) * 2])
    show = [name for name in SERVICE_NAMES if name in asked]
    return {"q": (query.getunicode("q") or "").strip()[:100],
            "status": state if state in STATUSES else "", "sort": sort, "dir": direction,
            "show": show, "kept_query": "".join(f"&show={name}" for name in show)
            + (f"&customer={customer}" if customer else ""), "customer": customer}


def filter_and_sort(rows, q, status_filter, sort, direction):
    needle = q.lower()
    chosen = [r for r in rows
              if (not needle or needle in r["name"].lower() or needle in r["hostname"].lower())
              and (not status_filter or r["status"] == status_filter)]
    chosen.sort(key=SORT_KEYS[sort], reverse=direction == "desc")
    return chosen


def page_title(counts, firing, what="Servers"):
    problems = []
    if counts["offline"]:
        problems.append(f"{counts['offline']} offline")
    if firing:
        problems.append(f"{firing} alert{'s' if firing != 1 else ''}")
    return f"{' · '.join(problems)} · mPanel" if problems else f"{what} · mPanel"


# ===== Routes ===================================================================================

def build_views(settings):
    app = bottle.Bottle()

    # bcrypt of a random password at the cost real passwords are hashed at: checked when the
    # username is unknown, so a failed login takes as long whether or not the user exists.
    unknown_user_hash = keys.hash_secret(secrets.token_urlsafe(16), settings.bcrypt_rounds)

    @app.get("/")
    def home():
        return bottle.redirect("/servers")

    @app.get("/login")
    def login_form():
        return login_page(settings)

    @app.post("/login")
    def login():
        form = bottle.request.forms
        if not auth.login_csrf_ok():
            bottle.response.status = 403
            return login_page(settings, "Your login form expired; please try again.")
        username = (form.getunicode("username") or "")[:64]
        password = form.getunicode("password") or ""
        try:
            return attempt_login(username, password, auth.client_address(settings))
        except DATABASE_ERRORS as err:
            # The limits live in the database: without it no password is checked at all. The
            # boundary's 503 (logged like any database trouble), on the login form itself.
            unavailable = database_unavailable(err)
            bottle.response.status = unavailable.status_code
            bottle.response.set_header("Retry-After", unavailable.headers["Retry-After"])
            return login_page(settings, "The panel's database is not answering; please try "
                              "again in a minute.", username)

    def attempt_login(username, password, address):
        limits = auth.login_limits(settings, address, username)
        # Taken before the password is checked, in one statement per limit, in the database:
        # concurrent attempts on any replica cannot all pass a count none of them has added to.
        wait = models.take_attempts(limits, time.time())
        if wait > 0:
            return login_page(settings, auth.throttled_login(wait, address, username), username)
        admin = models.admin_by_username(username)
        hashed = admin.password_hash if admin else unknown_user_hash
        if not keys.check_secret(password[:72], hashed) or admin is None:
            models.record_auth_failure("login_failed", client_addr=address,
                                       detail=f"user {username}")
            bottle.response.status = 401
            bottle.response.set_header("WWW-Authenticate", auth.LOGIN_CHALLENGE)
            return login_page(settings, "Wrong username or password.", username)
        models.give_back_attempts(limits)  # only failures count
        if auth.two_factor_on(admin):
            auth.start_challenge(admin, settings)  # account.py asks for the code
            return bottle.redirect("/login/code")
        models.record_auth_event("login_ok", client_addr=address, detail=f"user {username}")
        auth.open_session(admin, settings)
        return bottle.redirect("/servers")

    @app.post("/logout", auth="account")
    def logout(session, access):
        auth.end_session()
        bottle.response.delete_cookie(auth.SESSION_COOKIE, path="/")
        return bottle.redirect("/login")

    @app.get("/servers", auth="viewer")
    def servers(session, access):
        customer, shown_access = customer_filter(access)
        query = table_query(customer)
        fleet = fleet_context(settings.offline_after, shown_access)
        rows, counts, firing = fleet["rows"], fleet["counts"], fleet["firing"]
        shown = filter_and_sort(rows, query["q"], query["status"], query["sort"], query["dir"])
        bottle.response.set_header("Cache-Control", "no-store")
        return render("servers.tpl", "_server_rows.tpl", {
            "title": page_title(counts, firing), "servers": shown, "total": len(rows),
            "counts": counts, "firing": firing, "query": query, "session": session,
            "access": access, "customers": models.customers() if access.staff else [],
            # A customer user's own status page (its box below the table); staff set theirs
            # on each customer's page.
            **({} if access.staff else status_page_box(access.customer_id)),
        })

    @app.get("/servers/<server_id:int>", auth="viewer")
    def show_server(server_id, session, access):
        return render("server.tpl", "_server_head.tpl",
                      server_context(server_id, session, access, settings))

    @app.get("/servers/<server_id:int>/charts", auth="viewer")
    def server_charts(server_id, session, access):
        agent = agent_or_404(server_id, access)
        chart_range = server_page.parse_range(bottle.request.query.get("range"))
        bottle.response.set_header("Cache-Control", "no-store")
        built = built_charts(agent, chart_range)
        return template("_charts.tpl", server=agent.server, chart_range=chart_range,
                        ranges=charts.RANGES, charts=[(c.key, charts.render(c)) for c in built])

    def chart_download(server_id, access, shape):
        """/servers/<id>/charts.csv and .json: the charts of ?range= (the page's, 1h by
        default), or ?chart= alone, as a file."""
        try:
            only = server_page.parse_chart(bottle.request.query.getunicode("chart"))
        except ValueError as err:
            raise refusal(400, str(err), "chart") from None
        agent = agent_or_404(server_id, access)
        chart_range = server_page.parse_range(bottle.request.query.get("range"))
        built = built_charts(agent, chart_range, only)
        bottle.response.content_type = exports.FORMATS[shape]
        bottle.response.set_header("Cache-Control", "no-store")
        bottle.response.set_header(
            "Content-Disposition", f'attachment; filename="server-{server_id}-'
                                   f'{only or "charts"}-{chart_range.name}.{shape}"')
        if shape == "csv":
            return exports.chart_csv(built)
        return json.dumps({"serverId": server_id, "range": chart_range.name,
                           "charts": [exports.chart_json(chart) for chart in built]})

    @app.get("/servers/<server_id:int>/charts.csv", auth="viewer")
    def chart_csv(server_id, session, access):
        return chart_download(server_id, access, "csv")

    @app.get("/servers/<server_id:int>/charts.json", auth="viewer")
    def chart_json(server_id, session, access):
        return chart_download(server_id, access, "json")

    @app.get("/servers/<server_id:int>/processes", auth="viewer")
    def server_processes(server_id, session, access):
        agent = agent_or_404(server_id, access)
        try:
            moment = server_page.parse_moment(bottle.request.query.getunicode("at"))
        except ValueError as err:
            raise refusal(400, str(err), "at") from None
        bottle.response.set_header("Cache-Control", "no-store")
        return template("_processes.tpl", server=agent.server,
                        view=server_page.processes_view(agent.id, moment),
                        kept_days=settings.retention_raw_days)

    def status_answer(customer=None):
        """The staff's /status or, given a customer, its /status/<slug>: the same page, partial
        and headers, with that customer's published servers under its title."""
        rows = status_page.public_servers(customer_id=customer.id if customer else None)
        down = sum(1 for r in rows if r["state"] == "down")
        name = (customer.status_title or "Status") if customer else "Status"
        bottle.response.set_header("Cache-Control", "no-store")
        return render("status.tpl", "_status_rows.tpl", {
            "title": f"{down} down · {name}" if down else f"All systems up · {name}",
            "heading": customer.status_title if customer else "",
            "refresh": f"/status/{customer.slug}" if customer else "/status",
            "rows": rows, "down": down, "now": utcnow(),
        })

    @app.get("/status")
    def public_status():
        return status_answer()

    @app.get("/status/<slug>")
    def customer_status(slug):
        # One answer for a slug no customer has and for a page that is off: a visitor cannot
        # tell whether the customer exists. A slug that cannot be one is not looked up.
        customer = models.customer_status_page(slug) if operations.SLUG.fullmatch(slug) else None
        if customer is None:
            bottle.abort(404, "no status page here")
        return status_answer(customer)

    @app.get("/static/<path:path>")
    def static(path):
        response = bottle.static_file(path, root=STATIC)
        if path.startswith("htmx-"):  # the version is in the name, so it never changes
            response.set_header("Cache-Control", "public, max-age=31536000, immutable")
        return response

    @app.get("/downloads/<name>")
    def download(name):
        files = downloads(settings)
        if name not in files:
            bottle.abort(404, f"no download named {name!r}; there are "
                              f"{', '.join(sorted(files))}")
        path, mimetype = files[name]
        if not path.is_file():
            bottle.abort(404, f"{name} is not part of this panel's installation")
        response = bottle.static_file(path.name, root=str(path.parent), mimetype=mimetype,
                                      download=name if name.endswith(".py") else False)
        response.set_header("Cache-Control", "no-cache")
        return response

    return app


def downloads(settings):
    """{name: (path, type)} the panel serves: agent.py is the one it ships (and rolls out)."""
    return dict(DOWNLOADS, **{"agent.py": (Path(settings.agent_file),
                                           DOWNLOADS["agent.py"][1])})


def status_page_box(customer_id):
    """What the "Status page" box (_status_page_box.tpl) shows of a customer: its page, on or
    off, and the servers published on it."""
    return {"status_customer": models.by_id(models.Customer, customer_id),
            "published": models.public_status_servers(customer_id)}


def built_charts(agent, chart_range, only=None):
    """The server's charts for a range (server_page.build_charts) at the agent's clock: the
    page, its downloads and /api/v1's series build them here."""
    latest = models.latest_sample_per_agent(
        [agent.id], columns=server_page.TOTAL_COLUMNS).get(agent.id)
    return server_page.build_charts(agent.id, chart_range,
                                    models.agent_clock(agent.clock_offset, utcnow()),
                                    latest=latest, only=only)


def agent_or_404(server_id, access):
    """The agent (its server joined) of a server `access` may see, or a 404 that reads the
    same whether the server does not exist or is another customer's: every server route
    starts here."""
    agent = models.server_or_none(server_id, access)
    if agent is None:
        bottle.abort(404, f"no server with id {server_id}")
    return agent


# The latest figures the detail page's header shows (and /api/v1/servers/<id>/latest gives).
LATEST_COLUMNS = (models.Metric.agent, models.Metric.timestamp, models.Metric.cpu_usage,
                  models.Metric.memory_used, models.Metric.memory_total,
                  models.Metric.swap_total, models.Metric.disk_max_percent,
                  models.Metric.cpu_load_1min, models.Metric.network_rx_rate,
                  models.Metric.network_tx_rate, models.Metric.process_count)


def server_summary(server_id, access, offline_after):
    """A server's own data, shared by the detail page (server_context) and its JSON twin
    (api_v1.py): the server and agent (404 unless `access` sees it), its latest sample, its
    state, firing alerts, maintenance and clock."""
    agent = agent_or_404(server_id, access)
    server = agent.server
    now = utcnow()
    return {
        "server": server, "agent": agent, "now": now,
        "latest": models.latest_sample_per_agent([agent.id],
                                                 columns=LATEST_COLUMNS).get(agent.id),
        "state": models.connection_state(agent.last_seen, now, offline_after),
        "firing": models.firing_alerts(access, server.id),
        "maintenance": models.current_maintenance(server.id, now),
        "clock": models.clock_skew(agent.clock_offset),
        "traffic": quotas.shown(quotas.server_usages(access, now, server.id)[server.id]),
    }


def alert_lists(access, history=100):
    """The alerts page's two lists, shared with its JSON twin (api_v1.py): firing alerts and
    the latest `history` others `access` sees."""
    return {"firing": models.firing_alerts(access),
            "history": models.alert_history(access, history)}


def server_context(server_id, session, access, settings, full=None, **extra):
    """Everything the detail page's header, manage box and (`full`: by default unless htmx
    asks for the header alone) first render of charts and processes need."""
    summary = server_summary(server_id, access, settings.offline_after)
    server, agent, state, now = (summary["server"], summary["agent"], summary["state"],
                                 summary["now"])
    chart_range = server_page.parse_range(bottle.request.query.get("range"))
    context = {
        **summary,
        "title": f"{server.name} ({state}) · mPanel" if state == "offline"
        else f"{server.name} · mPanel",
        "session": session, "access": access, "chart_range": chart_range, "ranges": charts.RANGES,
        "charts": None, "panel_url": panel_url(settings),
        "uptime": _uptime_since_boot(agent),
        # Staff see whose server it is and may move it (manage.py, /servers/<id>/customer).
        "customers": models.customers() if access.staff else [],
        "upgrade_failed": models.last_upgrade_failures([server.id]).get(server.id),
    }
    latest = summary["latest"]
    if full is None:
        full = not bottle.request.get_header("HX-Request")
    if full:
        context["charts"] = [(c.key, charts.render(c)) for c in
                             server_page.build_charts(agent.id, chart_range,
                                                 models.agent_clock(agent.clock_offset, now),
                                                 latest)]
        context["processes"] = server_page.processes_view(agent.id)
        context["kept_days"] = settings.retention_raw_days
    context.update(extra)
    return context


def _uptime_since_boot(agent):
    """The server's own uptime, from the boot time it reported at registration, if any."""
    if not agent.boot_time:
        return ""
    return units.duration((utcnow() - agent.boot_time).total_seconds())


def login_page(settings, message="", username=""):
    return template("login.tpl", title="Log in · mPanel", message=message, username=username,
                    csrf_token=auth.new_login_csrf(settings))

