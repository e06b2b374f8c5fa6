"""Browser pages that show things: login, the servers table, a server's detail, the public
status pages (the staff's and each customer's), static files and the public downloads. (Pages
that change things: manage.py.)

Each view builds a context dict and calls `render(page, partial, ctx)`: a plain request gets the
full page, an htmx request (`HX-Request` header) just the partial it asked for.
"""
import base64
import hashlib
import json
import re
import secrets
import time
import urllib.parse
from pathlib import Path

import bottle

from . import (access as access_module, auth, charts, exports, figures, fleet_table, keys,
               models, operations, quotas, server_page, status_page, traffic, units)
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

# The servers table's columns, left to right: (key, header, column class, numeric). The key
# is the column's sort key (fleet_table.SORTS), and ?hide=<key> leaves it out; the service
# columns a user picks (?show=) come after Services. Name and status always show. The figure
# columns come from the figure table.
TABLE_COLUMNS = (("name", "Name", "c-name", False), ("hostname", "Hostname", "c-host", False),
                 ("status", "Status", "c-status", False), ("seen", "Last seen", "c-seen", False),
                 *((key, label, "c-rate" if figures.shown_unit(figure) == "rate" else "c-num",
                    True) for key, label, figure in fleet_table.TABLE_FIGURES),
                 (fleet_table.DISK_FULL, "Disk full in", "c-full", True),
                 ("traffic", "Traffic this cycle", "c-traffic", True),
                 ("services", "Services", "c-svc", False), ("version", "Agent", "c-ver", False))
ALWAYS_SHOWN = ("name", "status")
HIDEABLE = tuple((key, label) for key, label, _, _ in TABLE_COLUMNS if key not in ALWAYS_SHOWN)
# How the row template writes each figure column's value.
CELL_FORMATS = {key: units.FORMATS[figures.shown_unit(figure)]
                for key, _, figure in fleet_table.TABLE_FIGURES}


def shown_columns(show, hide):
    """The table's columns for a query: TABLE_COLUMNS without `hide`, with a column for each
    service in `show` after Services."""
    columns = []
    for column in TABLE_COLUMNS:
        if column[0] not in hide:
            columns.append(column)
        if column[0] == "services":
            columns += [(fleet_table.SERVICE_SORT_PREFIX + name, name, "c-svc1", False)
                        for name in show]
    return tuple(columns)


# Each row carries a version: a hash of what the row shows (its data, position and columns, and
# the row template's own text) but for the times it counts from ("12 s ago", which mpanel.js
# keeps counting without the panel). The browser sends back the versions it shows, and a
# refresh renders and answers only the rows whose version differs.
ROW_TEMPLATE = Path(TEMPLATES) / "_server_row.tpl"
# A row's values as its version counts them, without those that move with the clock alone:
# the text of its <time> elements, and the traffic projection in its tooltip (used / elapsed,
# so it creeps down between the quota job's updates of `used`; shown to three figures it
# would send a tenth of a fleet's rows again every few refreshes early in a cycle). A row
# sent for any other change carries the projection of that moment.
STEADY = {
    "last_seen": None,
    fleet_table.DISK_FULL: lambda full: full and (full[0], full[2]),  # not its seconds left
    "traffic": lambda t: t and (t["used"], t["allowance"], t["percent"], t["level"],
                                t["start"], t["end"], t["projected"] is None),
}
VERSION_WIDTH = 6  # base64 characters of 4 bytes: one miss in 4 billion changes
VERSION_TEXT = re.compile(r"[A-Za-z0-9_-]*")
# The most rows a browser may have loaded and have refreshed: 6 bytes each in a refresh's body,
# which the form size (MEMFILE_MAX) must hold.
LIVE_ROWS_MAX = 40_000


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
                           units=units, quote=urllib.parse.quote_plus,
                           allowance_text=traffic.allowance_text, traffic_bases=traffic.BASES,
                           service_names=fleet_table.SERVICE_NAMES,
                           service_sort=fleet_table.SERVICE_SORT_PREFIX,
                           disk_full=fleet_table.DISK_FULL, page_rows=fleet_table.PAGE_ROWS,
                           live_rows=LIVE_ROWS_MAX, hideable=HIDEABLE, cell_formats=CELL_FORMATS,
                           **ctx)


def panel_url(settings):
    """The panel's address as agents should use it: MPANEL_PUBLIC_URL, else this request's
    (scheme and host from a trusted proxy's X-Forwarded-* only)."""
    if settings.public_url:
        return settings.public_url
    return f"{auth.forwarded_scheme(settings)}://{auth.forwarded_host(settings)}"


# ===== The servers table ========================================================================

def fleet_head(access, now, offline_after, matched):
    """The summary strip (exact for the whole fleet), the page's title and icon, and their
    version: what every answer about the table carries beside its rows."""
    counts = fleet_table.summary(access, now, offline_after)
    firing = models.firing_alert_count(access)
    title = page_title(counts, firing)
    alarm = bool(counts["offline"] or firing)
    version = version_of(f"{counts}|{firing}|{matched}|{title}")
    html = template("_summary.tpl", counts=counts, firing=firing, total=counts["total"],
                    version=version)
    return {"counts": counts, "firing": firing, "total": counts["total"], "title": title,
            "favicon": "favicon-alert.svg" if alarm else "favicon.svg", "summary": html,
            "summary_version": version}


def version_of(text):
    digest = hashlib.blake2b(text.encode(), digest_size=4, key=_VERSION_KEY).digest()
    return base64.urlsafe_b64encode(digest).decode()[:VERSION_WIDTH]


# A new row template (a release) changes every version, so browsers take the new rows.
_VERSION_KEY = hashlib.blake2b(ROW_TEMPLATE.read_bytes(), digest_size=16).digest()


def row_version(row, position, columns):
    shown = [(key, STEADY[key](value) if key in STEADY else value)
             for key, value in row.items() if STEADY.get(key, True) is not None]
    return version_of(repr((position, [column[0] for column in columns], shown)))


def row_html(row, position, columns, version, oob=False):
    """One table row: its position is its id (row-<n>), which a refresh swaps by."""
    html = template("_server_row.tpl", s=row, position=position, columns=columns)
    swap = 'hx-swap-oob="true" ' if oob else ""
    return html.replace("<tr ", f'<tr {swap}data-v="{version}" ', 1)


def rendered_rows(rows, offset, columns):
    """The HTML of table rows from position `offset`, with these columns (shown_columns)."""
    return [row_html(row, position, columns, row_version(row, position, columns))
            for position, row in enumerate(rows, offset)]


def table_window(access, query, now, offline_after, offset, limit):
    return fleet_table.window(access, now, offline_after, query["q"], query["status"],
                              query["sort"], query["dir"] == "desc", offset, limit)


def customer_filter(access):
    """`?customer=<id>` (staff only: a customer user's scope is theirs whatever the address
    says): -> (the id or None, the Access narrowed to it)."""
    text = (bottle.request.query.getunicode("customer") or "").strip()
    if not text or not access.staff:
        return None, access
    # ASCII digits only: "²" is a digit to isdigit() and no number to int().
    if not (text.isascii() and text.isdigit()) or not models.valid_id(int(text)):
        raise refusal(400, "customer must be a customer's id (a whole number)", "customer")
    return int(text), access.narrowed(int(text))


def table_query(customer=None):
    """The table's filter, sort and first screenful, from the query string (or a refresh's
    form), cleaned. `link`: all of it as a query string, for the links and the loader."""
    query = bottle.request.params
    sort = query.get("sort") if query.get("sort") in fleet_table.SORTS else "name"
    direction = "desc" if query.get("dir") == "desc" else "asc"
    state = query.getunicode("status") or ""
    asked = set(query.getall("show")[:len(fleet_table.SERVICE_NAMES) * 2])
    show = [name for name in fleet_table.SERVICE_NAMES if name in asked]
    hidden = set(query.getall("hide")[:len(HIDEABLE) * 2])
    hide = [key for key, _ in HIDEABLE if key in hidden]
    rows = query.get("rows") or ""
    rows = min(max(int(rows), fleet_table.PAGE_ROWS), LIVE_ROWS_MAX) \
        if fleet_table.WHOLE.fullmatch(rows) else fleet_table.PAGE_ROWS
    cleaned = {"q": (query.getunicode("q") or "").strip()[:fleet_table.TEXT_MAX],
               "status": state if state in fleet_table.STATUSES else "", "sort": sort,
               "dir": direction, "show": show, "hide": hide, "customer": customer,
               "rows": rows, "columns": shown_columns(show, hide),
               "kept_query": "".join(f"&show={name}" for name in show)
               + "".join(f"&hide={key}" for key in hide)
               + (f"&customer={customer}" if customer else "")}
    cleaned["link"] = (f"q={urllib.parse.quote_plus(cleaned['q'])}&status="
                       f"{urllib.parse.quote_plus(cleaned['status'])}&sort={sort}&dir={direction}"
                       + cleaned["kept_query"])
    return cleaned


def parse_versions(text):
    """The refresh's `have`: the versions of the rows the browser shows, in order."""
    if len(text) > VERSION_WIDTH * LIVE_ROWS_MAX:
        raise refusal(413, f"have holds the versions of at most {LIVE_ROWS_MAX} rows", "have")
    if len(text) % VERSION_WIDTH or not VERSION_TEXT.fullmatch(text):
        raise refusal(400, f"have must be row versions, {VERSION_WIDTH} base64url characters "
                           "each", "have")
    return [text[i:i + VERSION_WIDTH] for i in range(0, len(text), VERSION_WIDTH)]


def page_title(counts, firing, what="Servers"):
    problems = []
    if counts["offline"]:
        problems.append(f"{counts['offline']:,} offline")
    if firing:
        problems.append(f"{firing:,} alert{'s' if firing != 1 else ''}")
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

    def table_answer(session, access, template_name):
        """The servers page, or its table alone (the filter form's htmx request: the columns
        may have changed too) with the summary out of band: the first screenful of rows."""
        customer, shown_access = customer_filter(access)
        query = table_query(customer)
        now = utcnow()
        rows, matched = table_window(shown_access, query, now, settings.offline_after, 0,
                                     query["rows"])
        head = fleet_head(shown_access, now, settings.offline_after, matched)
        bottle.response.set_header("Cache-Control", "no-store")
        return template(template_name, **head, **{
            "rows": rendered_rows(rows, 0, query["columns"]),
            "matched": matched, "query": query, "session": session, "access": access,
            "now": int(charts.epoch(now)), "oob": template_name != "servers.tpl",
            "customers": models.customers() if access.staff else [],
            # A customer user's own status page (its box below the table); staff set theirs
            # on each customer's page.
            **({} if access.staff else status_page_box(access.customer_id)),
        })

    @app.get("/servers", auth="viewer")
    def servers(session, access):
        return table_answer(session, access, "_servers_table.tpl"
                            if bottle.request.get_header("HX-Request") else "servers.tpl")

    @app.get("/servers/rows", auth="viewer")
    def more_servers(session, access):
        """The next screenful, from ?offset=, as the page scrolls to its end: its rows and
        the loader of the one after."""
        text = bottle.request.query.get("offset") or ""
        if not fleet_table.WHOLE.fullmatch(text) or int(text) > LIVE_ROWS_MAX:
            raise refusal(400, f"offset must be a row number from 0 to {LIVE_ROWS_MAX}",
                          "offset")
        offset = int(text)
        customer, shown_access = customer_filter(access)
        query = table_query(customer)
        limit = max(0, min(fleet_table.PAGE_ROWS, LIVE_ROWS_MAX - offset))
        rows, matched = table_window(shown_access, query, utcnow(), settings.offline_after,
                                     offset, limit)
        bottle.response.set_header("Cache-Control", "no-store")
        return "".join(rendered_rows(rows, offset, query["columns"])) + \
            template("_server_more.tpl", offset=offset + len(rows), matched=matched,
                     query=query, oob=False)

    @app.post("/servers/refresh", auth="viewer")
    def refresh_servers(session, access):
        """What changed in the table since the browser's copy (`have`: its rows' versions;
        `summary`: its summary's): the rows whose version differs, swapped in by position,
        rows past the new end removed, and the summary, title and icon if theirs changed.
        Nothing changed: 204, no body."""
        have = parse_versions(bottle.request.forms.get("have") or "")
        customer, shown_access = customer_filter(access)
        query = table_query(customer)
        now = utcnow()
        rows, matched = table_window(shown_access, query, now, settings.offline_after, 0,
                                     len(have))
        head = fleet_head(shown_access, now, settings.offline_after, matched)
        bottle.response.set_header("Cache-Control", "no-store")
        if bool(have) != bool(rows):  # from no rows to some, or back: the whole body again
            first, _ = table_window(shown_access, query, now, settings.offline_after, 0,
                                    query["rows"])
            return template("_server_rows.tpl", **head, body_oob=True,
                            rows=rendered_rows(first, 0, query["columns"]),
                            matched=matched, query=query, now=int(charts.epoch(now))) + \
                template("_fleet_head.tpl", **head, offset=None, query=query)
        changed = []
        for position, (row, seen) in enumerate(zip(rows, have)):
            version = row_version(row, position, query["columns"])
            if version != seen:
                changed.append(row_html(row, position, query["columns"], version, oob=True))
        gone = range(len(rows), len(have))
        fresh_head = head["summary_version"] != bottle.request.forms.get("summary")
        if not changed and not gone and not fresh_head:
            bottle.response.status = 204
            return ""
        parts = changed + [f'<tr id="row-{position}" hx-swap-oob="delete"></tr>'
                           for position in gone]
        if fresh_head or gone:
            parts.append(template("_fleet_head.tpl", **head, offset=len(rows),
                                  matched=matched, query=query))
        return "".join(parts)

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
        "traffic": quotas.shown(quotas.server_usages(access, now, [server.id])[server.id]),
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

