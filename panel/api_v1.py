"""The versioned JSON API for automation, `/api/v1/*`, opened by API tokens (tokens.py).

A route says which token it needs (`auth="token-read"`, "token-write", "token-staff",
"token-staff-write": access.TOKEN_NEEDS); the auth plugin turns the token into the same
access.Access a page user gets, so every query is scoped exactly as the pages are — another
customer's server is a 404 here as there. Each answer is built by the page's own context
builder (fleet_table.window, views.server_summary, views.alert_lists, server_page.build_charts)
and only turned into camelCase JSON here, so a page and its JSON twin cannot drift.

Errors are `{"error": "...", "field": "..."}`: 401 with WWW-Authenticate for a missing, unknown,
expired or revoked token, 403 for a write with a read-only token (or a staff endpoint with a
customer's), 404 for what the token does not see, 503 + Retry-After for database trouble.
"""
import bottle

from . import charts, exports, fleet_table, models, operations, protocol, server_page, views
from .db import utcnow
from .api import read_json
from .errors import ApiError, JsonErrorPlugin, json_response
from .exports import iso

PREFIX = "/api/v1"
MAX_BODY = 4096  # a server's name and two flags


def camel(name):
    """cpu_usage -> cpuUsage: the wire is camelCase (STYLE.md), Python snake_case."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def server_json(row):
    """A servers-table row (fleet_table.build_rows) as JSON: the same figures, camelCase keys."""
    skipped = {"service_states", "last_seen", "last_seen_epoch", "last_seen_iso"}
    shown = {camel(key): value for key, value in row.items() if key not in skipped}
    shown["lastSeen"] = row["last_seen_iso"] or None
    shown["clock"] = row["clock"] or None
    soonest = row[fleet_table.DISK_FULL]
    shown[camel(fleet_table.DISK_FULL)] = {"mount": soonest[0], "secondsLeft": soonest[1]} \
        if soonest else None
    return shown


def latest_json(latest):
    if latest is None:
        return None
    return {camel(column.name): (iso(getattr(latest, column.name))
                                 if column.name == "timestamp" else getattr(latest, column.name))
            for column in views.LATEST_COLUMNS if column.name != "agent"}


def alert_json(alert):
    return {"id": alert.id, "serverId": alert.server_id, "serverName": alert.server.name,
            "rule": alert.rule, "state": alert.state, "message": alert.message,
            "value": alert.value, "threshold": alert.threshold, "silenced": alert.silenced,
            "startedAt": iso(alert.started_at), "resolvedAt": iso(alert.resolved_at)}


def list_query():
    """/api/v1/servers' filter, sort and window (the servers table's), checked: a value the
    table would quietly ignore is a 400 here, for a script to see its mistake."""
    query = bottle.request.query
    choices = {"status": ("", *fleet_table.STATUSES), "sort": fleet_table.SORTS,
               "dir": ("asc", "desc")}
    known = ("q", *choices, "offset", "limit")
    unknown = sorted(set(query.keys()) - set(known))
    if unknown:
        raise ApiError(400, f"{unknown[0]!r} is not a parameter of this list; it takes "
                            f"{', '.join(known)}", unknown[0][:40])
    asked = {name: query.getunicode(name) or "" for name in ("q", *choices)}
    for name, allowed in choices.items():
        if asked[name] and asked[name] not in allowed:
            raise ApiError(400, f"{name} must be one of {', '.join(filter(None, allowed))}",
                           name)
    if len(asked["q"]) > fleet_table.TEXT_MAX:
        raise ApiError(400, f"q is longer than {fleet_table.TEXT_MAX} characters", "q")
    window = {}
    for name, least in (("offset", 0), ("limit", 1)):
        text = query.get(name)
        if text is None:
            continue
        if not fleet_table.WHOLE.fullmatch(text) or not least <= int(text) <= \
                fleet_table.OFFSET_MAX:
            raise ApiError(400, f"{name} must be a whole number from {least} to "
                                f"{fleet_table.OFFSET_MAX}", name)
        window[name] = int(text)
    return {"text": asked["q"].strip(), "status": asked["status"],
            "sort": asked["sort"] or "name", "descending": asked["dir"] == "desc",
            "offset": window.get("offset", 0), "limit": window.get("limit")}


def build_api_v1(settings):
    app = bottle.Bottle()
    app.install(JsonErrorPlugin())

    def server_detail(server_id, access):
        summary = views.server_summary(server_id, access, settings.offline_after)
        server, agent = summary["server"], summary["agent"]
        return {"id": server.id, "name": server.name, "customerId": server.customer_id,
                "critical": server.critical, "publicStatus": server.public_status,
                "status": summary["state"], "hostname": agent.hostname or "",
                "version": agent.agent_version or "", "lastSeen": iso(agent.last_seen),
                "clock": summary["clock"] or None,
                "maintenanceUntil": iso(summary["maintenance"].ends_at)
                if summary["maintenance"] else None,
                "firing": [alert_json(alert) for alert in summary["firing"]],
                "latest": latest_json(summary["latest"]), "traffic": summary["traffic"]}

    @app.get(f"{PREFIX}/servers", auth="token-read")
    def servers(token, access):
        listing = list_query()
        now = utcnow()
        rows, matched = fleet_table.window(access, now, settings.offline_after, **listing)
        counts = fleet_table.summary(access, now, settings.offline_after)
        return {"servers": [server_json(row) for row in rows], "matched": matched,
                "counts": {camel(state.replace(" ", "_")): counts[state]
                           for state in fleet_table.STATUSES},
                "firing": models.firing_alert_count(access)}

    @app.post(f"{PREFIX}/servers", auth="token-write")
    def create_server(token, access):
        document = read_json(protocol.API_V1_NEW_SERVER, MAX_BODY)
        customer_id = access.customer_id  # a customer's token adds to its customer, always
        if access.staff:
            customer_id = document.get("customerId")
        try:
            server, key = operations.add_server(document["name"], settings.bcrypt_rounds,
                                                critical=document.get("critical", False),
                                                customer_id=customer_id)
        except ValueError as err:
            status = 409 if isinstance(err, operations.NameTaken) else 422
            raise ApiError(status, str(err),
                           "customerId" if "customer" in str(err) else "name") from None
        return json_response(201, {"server": server_detail(server.id, access), "apiKey": key,
                                   "install": views.panel_url(settings)
                                   + "/downloads/install.sh"})

    @app.get(f"{PREFIX}/servers/<server_id:int>", auth="token-read")
    def server(server_id, token, access):
        return server_detail(server_id, access)

    @app.delete(f"{PREFIX}/servers/<server_id:int>", auth="token-staff-write")
    def delete_server(server_id, token, access):
        agent = views.agent_or_404(server_id, access)
        name = operations.delete_server(server_id, agent.server.name)
        return {"deleted": True, "id": server_id, "name": name}

    @app.get(f"{PREFIX}/servers/<server_id:int>/latest", auth="token-read")
    def latest(server_id, token, access):
        summary = views.server_summary(server_id, access, settings.offline_after)
        return {"serverId": summary["server"].id, "status": summary["state"],
                "latest": latest_json(summary["latest"])}

    @app.get(f"{PREFIX}/servers/<server_id:int>/series", auth="token-read")
    def series(server_id, token, access):
        name = bottle.request.query.getunicode("range")
        name = charts.DEFAULT_RANGE if name is None else name  # absent, not empty
        if name not in charts.RANGES:
            raise ApiError(400, f"range must be one of {', '.join(charts.RANGES)}", "range")
        query = bottle.request.query
        try:
            only = server_page.parse_chart(query.getunicode("chart"))
        except ValueError as err:
            raise ApiError(400, str(err), "chart") from None
        shape = query.getunicode("format")
        shape = "json" if shape is None else shape  # absent, not empty
        if shape not in exports.FORMATS:
            raise ApiError(400, f"format must be one of {', '.join(exports.FORMATS)}",
                           "format")
        agent = views.agent_or_404(server_id, access)
        built = views.built_charts(agent, charts.RANGES[name], only)
        if shape == "csv":
            bottle.response.content_type = exports.FORMATS["csv"]
            return exports.chart_csv(built)
        return {"serverId": agent.server_id, "range": name,
                "charts": [exports.chart_json(chart) for chart in built]}

    @app.get(f"{PREFIX}/alerts", auth="token-read")
    def alerts(token, access):
        lists = views.alert_lists(access)
        return {"firing": [alert_json(alert) for alert in lists["firing"]],
                "history": [alert_json(alert) for alert in lists["history"]]}

    @app.get(f"{PREFIX}/customers", auth="token-staff")
    def customers(token, access):
        return {"customers": [{"id": customer.id, "name": customer.name, "slug": customer.slug,
                               "createdAt": iso(customer.created_at)}
                              for customer in models.customers()]}

    return app
