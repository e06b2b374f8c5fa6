"""mPanel: the control panel that agents push their metrics to.

`create_app(settings)` builds the WSGI app: the agent API (`api.py`) and the browser pages
(`views.py`) as two Bottle apps merged into one, with auth and error plugins (errors.py: bad
text is a 400, database trouble a 503), a database connection per request, and security headers
on every answer, error pages included. gzip is added where Waitress is handed the app
(serving.serve, compression.py).
"""
__version__ = "0.1.0"

import json
import logging

import bottle

from . import (account, api, api_v1, auth, db, errors, keys, manage, prometheus, tokens,
               upgrade_page, views, writer)
from . import settings as settings_module

log = logging.getLogger("mpanel")

# Pages' forms are small but for the servers table's refresh, which carries 6 bytes per row the
# browser shows (views.LIVE_ROWS_MAX); the API reads its own bodies with its own limits
# (api.read_body).
bottle.BaseRequest.MEMFILE_MAX = 256 * 1024

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
                               "form-action 'self'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def page_parts(settings):
    """The apps of the pages and the Prometheus bridge (every route a session or the metrics
    token opens), as create_app merges them beside the agent API: the authorization and
    hostile-input sweeps walk the same list, so a new part is swept without editing them."""
    return (views.build_views(settings), account.build_account(settings),
            manage.build_manage(settings), upgrade_page.build_upgrade_page(settings),
            prometheus.build_prometheus(settings))


def create_app(settings, database=None):
    """The panel as a WSGI app. Binds the models to `settings.database_url` unless a database
    is given."""
    database = database or db.bind(settings.database_url, max_connections=settings.threads + 4)
    verifier = keys.KeyVerifier(keys.FailureLimiter(limit=settings.auth_failure_limit))

    app = bottle.Bottle()
    app.key_verifier = verifier  # tests and benchmarks count bcrypt checks through it
    app.settings = settings
    # API tokens' failures are limited as agent keys' are (tokens.py).
    app.token_verifier = tokens.TokenVerifier(
        keys.FailureLimiter(limit=settings.auth_failure_limit))
    plugin = auth.AuthPlugin(auth.AgentAuthenticator(settings, verifier),
                             settings_module.secret_bytes(settings),
                             auth.TokenAuthenticator(settings, app.token_verifier))
    app.committer = writer.GroupCommitter(database)
    boundary = errors.BoundaryPlugin()
    for part in (api.build_api(settings, app.committer), api_v1.build_api_v1(settings),
                 *page_parts(settings)):
        part.install(plugin)
        # Bottle applies the first installed plugin outermost: the boundary goes first, so it
        # also sees what the auth check and the API's JSON errors let through.
        part.plugins.insert(0, boundary)
        part.reset()
        app.merge(part)

    pooled = db.is_postgres(database)

    @app.hook("after_request")
    def close_connection_and_secure():
        # Connections open on first use (Peewee's autoconnect): a report whose agent row and key
        # are cached never touches the pool. PostgreSQL: back to the pool after the request.
        # SQLite: each Waitress thread keeps its connection, as reopening one costs a file open
        # and four PRAGMAs per request.
        if pooled and not database.is_closed():
            database.close()
        secure(bottle.response)

    def error_page(error):
        """JSON naming the problem (agents and scripts parse it); a small page for a browser
        that asks for HTML."""
        # An unhandled exception's 500 is made after the after_request hook has run: its
        # headers are set here as well.
        secure(bottle.response)
        bottle.response.set_header("Cache-Control", "no-store")
        reason = error.body if isinstance(error.body, str) and error.body else \
            f"{bottle.request.method} {bottle.request.path}"
        field = getattr(error, "field", None)
        wants_html = "text/html" in (bottle.request.get_header("Accept") or "")
        if bottle.request.path.startswith("/api/") or not wants_html:
            bottle.response.content_type = "application/json"
            body = {"error": f"{error.status_line[4:]}: {reason}"}
            if field is not None:
                body["field"] = field
            return json.dumps(body)
        bottle.response.content_type = "text/html; charset=utf-8"
        return views.template("error.tpl", title=f"{error.status_line[4:]} · mPanel",
                              status=error.status_line, reason=reason)

    for status in bottle.HTTP_CODES:
        if status >= 400:
            app.error(status)(error_page)
    return app


def secure(response):
    if bottle.request.path.startswith("/api/agent/"):
        # JSON for agents, never rendered by a browser: the page headers would only add
        # ~170 bytes to every report on metered customer links.
        response.set_header("X-Content-Type-Options", "nosniff")
        return
    for name, value in SECURITY_HEADERS.items():
        response.set_header(name, value)
