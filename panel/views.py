"""Browser pages and their htmx partials.

Each view builds a context dict and calls `render(page, partial, ctx)`: a plain request gets the
full page, an htmx request (`HX-Request` header) just the partial it asked for.
"""
import secrets
from pathlib import Path

import bottle

from . import auth, keys, models
from .db import utcnow

TEMPLATES = str(Path(__file__).resolve().parent.parent / "templates")
STATIC = str(Path(__file__).resolve().parent / "static")
HTMX_FILE = "htmx-2.0.8.min.js"

# bcrypt of a random password: checked when the username is unknown, so a failed login takes
# as long whether or not the user exists.
_DUMMY_HASH = keys.hash_secret(secrets.token_urlsafe(16), 4)


def render(page, partial, ctx):
    name = partial if bottle.request.get_header("HX-Request") else page
    return bottle.template(name, template_lookup=[TEMPLATES], htmx_file=HTMX_FILE, **ctx)


def ago(seconds):
    """'12 s ago', '5 min ago', '3 h ago', '2 d ago'."""
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def percent(part, whole):
    if part is None or not whole:
        return None
    return round(100.0 * part / whole, 1)


def server_rows(offline_after):
    """One dict per server for the servers table."""
    pairs = models.servers_with_agents()
    latest = models.latest_sample_per_agent(agent.id for _, agent in pairs)
    now = utcnow()
    rows = []
    for server, agent in pairs:
        sample = latest.get(agent.id)
        last_seen = agent.last_seen
        if last_seen is None:
            status = "never seen"
        elif (now - last_seen).total_seconds() > offline_after:
            status = "offline"
        else:
            status = "online"
        rows.append({
            "id": server.id,
            "name": server.name,
            "hostname": agent.hostname,
            "status": status,
            "last_seen": ago((now - last_seen).total_seconds()) if last_seen else "never",
            "last_seen_iso": last_seen.isoformat() + "Z" if last_seen else "",
            "cpu": None if sample is None or sample.cpu_usage is None else round(sample.cpu_usage, 1),
            "memory": percent(sample.memory_used, sample.memory_total) if sample else None,
            "disk": None if sample is None or sample.disk_max_percent is None
            else round(sample.disk_max_percent, 1),
            "load": sample.cpu_load_1min if sample else None,
            "version": agent.agent_version or "",
        })
    return rows


def build_views(settings):
    app = bottle.Bottle()

    @app.get("/")
    def home():
        return bottle.redirect("/servers")

    @app.get("/login")
    def login_form():
        return _login_page()

    @app.post("/login")
    def login():
        form = bottle.request.forms
        sent = form.get("csrf_token") or ""
        cookie = bottle.request.get_cookie(auth.LOGIN_CSRF_COOKIE) or ""
        if not cookie or not secrets.compare_digest(sent.encode(), cookie.encode()):
            bottle.response.status = 403
            return _login_page("Your login form expired; please try again.")
        username = form.getunicode("username") or ""
        password = form.getunicode("password") or ""
        admin = models.Admin.get_or_none(models.Admin.username == username)
        hashed = admin.password_hash if admin else _DUMMY_HASH
        if not keys.check_secret(password[:72], hashed) or admin is None:
            bottle.response.status = 401
            return _login_page("Wrong username or password.", username)
        token = auth.start_session(admin, settings.session_hours)
        bottle.response.set_cookie(auth.SESSION_COOKIE, token, path="/", httponly=True,
                                   samesite="lax", secure=_https(),
                                   max_age=settings.session_hours * 3600)
        bottle.response.delete_cookie(auth.LOGIN_CSRF_COOKIE, path="/login")
        return bottle.redirect("/servers")

    @app.post("/logout", auth="admin")
    def logout(session):
        auth.end_session()
        bottle.response.delete_cookie(auth.SESSION_COOKIE, path="/")
        return bottle.redirect("/login")

    @app.get("/servers", auth="admin")
    def servers(session):
        rows = server_rows(settings.offline_after)
        counts = {s: sum(1 for r in rows if r["status"] == s)
                  for s in ("online", "offline", "never seen")}
        title = f"{counts['offline']} offline · mPanel" if counts["offline"] else "Servers · mPanel"
        return render("servers.tpl", "_server_rows.tpl", {
            "title": title, "servers": rows, "counts": counts, "session": session,
        })

    @app.get("/static/<path:path>")
    def static(path):
        response = bottle.static_file(path, root=STATIC)
        if path.startswith("htmx-"):  # the version is in the name, so it never changes
            response.set_header("Cache-Control", "public, max-age=31536000, immutable")
        return response

    return app


def _https():
    return bottle.request.urlparts.scheme == "https"


def _login_page(message="", username=""):
    token = secrets.token_urlsafe(24)
    bottle.response.set_cookie(auth.LOGIN_CSRF_COOKIE, token, path="/login", httponly=True,
                               samesite="strict", secure=_https())
    return bottle.template("login.tpl", template_lookup=[TEMPLATES], htmx_file=HTMX_FILE,
                           title="Log in · mPanel", message=message, username=username,
                           csrf_token=token, session=None)
