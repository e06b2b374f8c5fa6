"""Errors at the boundary: every route of the panel answers bad input with a 4xx naming the
problem, and database trouble with 503 + Retry-After, never a 500.

Two plugins do it, so views never catch either themselves:
  - `BoundaryPlugin` (outermost, on every route) applies the one rule for text input
    (`text_problem`: UTF-8, no NUL) to every query and form parameter before anything reads
    them (validation.py applies it to agents' JSON), and turns a database error from anywhere
    inside the route — the auth check, the view, the template — into 503 with `Retry-After`
    and a reason that names the database.
  - `JsonErrorPlugin` (the agent API) turns an `ApiError` into its JSON answer
    `{"error": "...", "field": "..."}` and anything unexpected into a logged 500 that says
    nothing of the internals.
"""
import json
import logging
import sqlite3
import threading
import time
import unicodedata

import bottle
import peewee
from playhouse.pool import MaxConnectionsExceeded

log = logging.getLogger("mpanel.api")

# What "the database is in trouble" looks like from here: Peewee's wrapped driver errors, a
# driver error Peewee did not wrap, and a pool with no connection to lend (a ValueError in
# Peewee, so it must be named before any view's `except ValueError` sees it).
DATABASE_ERRORS = (peewee.DatabaseError, peewee.InterfaceError, MaxConnectionsExceeded,
                   sqlite3.Error)
try:
    import psycopg2
except ImportError:  # SQLite-only installs need no PostgreSQL driver
    pass
else:
    DATABASE_ERRORS += (psycopg2.Error,)

DATABASE_RETRY_AFTER = 30  # seconds: a restarted database or a fixed grant is back by then
REPEAT_WARNING_AFTER = 60  # seconds between WARNINGs for the same database trouble


class ApiError(Exception):
    def __init__(self, status, message, field=None, headers=None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.headers = headers or {}


def json_response(status, body, headers=None):
    response = bottle.HTTPResponse(status=status, body=json.dumps(body),
                                   headers=headers or {})
    response.content_type = "application/json"
    return response


def error_response(status, message, field=None, headers=None):
    body = {"error": message}
    if field is not None:
        body["field"] = field
    return json_response(status, body, headers)


def refusal(status, message, field=None, headers=None):
    """An HTTPError for the panel's error pages (JSON or HTML, see create_app) that names the
    field at fault."""
    error = bottle.HTTPError(status, message, headers=headers)
    error.field = field
    return error


# ===== The one rule for text input ===============================================================

# Characters a terminal acts on instead of showing: C0/C1 controls (ESC starts ANSI and OSC
# sequences that recolour, retitle, or write to the clipboard; a newline fakes a row), Unicode
# format characters (bidi overrides reorder what is shown), line and paragraph separators, and
# lone surrogates (which would make print() raise). The CLI escapes them (__main__.shown); a
# name an admin gives may not hold them (operations.py).
UNSHOWABLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def unshowable(ch):
    return unicodedata.category(ch) in UNSHOWABLE_CATEGORIES


def text_problem(text):
    """What is wrong with `text` as text input, or None. The one rule for every query and form
    parameter (names and values, check_text_input) and every string of an agent's JSON
    (validation.py): it is UTF-8 and holds no NUL. PostgreSQL can store neither a NUL nor
    half a surrogate pair, and no real text contains them. Other control characters are data:
    a field that must not hold them (names) says so in its own validation, and templates
    escape what they show."""
    if "\x00" in text:
        return "must not contain NUL characters"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid UTF-8"
    return None


# The rule's NUL half as a JSON Schema pattern, for the published documents (protocol.py puts it
# on every text field, so generated clients know it); validation.py skips it for text already
# known to meet the rule.
NO_NUL_PATTERN = r"^[^\u0000]*$"


def wsgi_text_problem(text):
    """text_problem() of a WSGI string (bytes decoded as latin-1, as Bottle keeps them)."""
    try:
        text = text.encode("latin-1").decode("utf-8")
    except UnicodeEncodeError:
        pass  # already decoded text
    except UnicodeDecodeError:
        return "must be valid UTF-8"
    return text_problem(text)


def _form_body():
    content_type = (bottle.request.content_type or "").split(";")[0].strip().lower()
    return content_type in ("application/x-www-form-urlencoded", "multipart/form-data")


def check_text_input():
    """Refuse the request (400, naming the parameter) if any query or form parameter breaks
    the text rule. Agent API bodies are JSON: their schemas apply the rule (validation.py)."""
    request = bottle.request
    sources = [request.query]
    if _form_body():
        sources.append(request.forms)
    for source in sources:
        for name, value in source.allitems():
            field = name.encode("latin-1", "replace").decode("utf-8", "replace")
            problem = wsgi_text_problem(name)
            if problem:
                field = field.replace("\x00", "\\x00")[:40]
                raise refusal(400, f"parameter name {field!r} {problem}", field)
            problem = wsgi_text_problem(value)
            if problem:
                raise refusal(400, f"{field} {problem}", field)


# ===== Database trouble ==========================================================================

class DatabaseTrouble:
    """Logs database errors as a change of state: a WARNING when the trouble starts or changes,
    again after REPEAT_WARNING_AFTER if it lasts, DEBUG in between; a WARNING on recovery."""

    def __init__(self):
        self.lock = threading.Lock()
        self.kind = None
        self.warned_at = 0.0

    def failed(self, kind, detail, where):
        now = time.monotonic()
        with self.lock:
            repeat = kind == self.kind and now - self.warned_at < REPEAT_WARNING_AFTER
            if not repeat:
                self.kind, self.warned_at = kind, now
        level = logging.DEBUG if repeat else logging.WARNING
        log.log(level, "database error kind=%s where=%s detail=%s", kind.replace(" ", "."),
                where, " ".join(str(detail).split())[:300])

    def answered(self, where):
        with self.lock:
            if self.kind is None:
                return
            kind, self.kind = self.kind, None
        log.warning("database answering again after=%s where=%s", kind.replace(" ", "."),
                    where)


trouble = DatabaseTrouble()


def describe_database_error(err):
    """'PostgreSQL UndefinedTable', 'SQLite OperationalError': which database, and the
    driver's own class of error — never its message, which can quote stored values."""
    original = getattr(err, "orig", None) or err  # Peewee keeps the driver's error as .orig
    module = type(original).__module__ or ""
    if module.startswith("psycopg2"):
        database = "PostgreSQL"
    elif module.startswith("sqlite3"):
        database = "SQLite"
    else:
        from .db import product_name

        database = product_name()
    return f"{database} {type(original).__name__}"


def database_unavailable(err):
    kind = describe_database_error(err)
    trouble.failed(kind, err, f"{bottle.request.method} {bottle.request.path}")
    return refusal(503, f"the database is not answering as this panel expects ({kind}); "
                        "retry later", headers={"Retry-After": str(DATABASE_RETRY_AFTER)})


# ===== Plugins ===================================================================================

class BoundaryPlugin:
    """Outermost on every route: the text rule before anything reads the request, and database
    errors from anything inside (auth, view, template) as 503."""

    name = "boundary"
    api = 2

    def apply(self, callback, route):
        def wrapper(*args, **kwargs):
            check_text_input()
            try:
                return callback(*args, **kwargs)
            except DATABASE_ERRORS as err:
                raise database_unavailable(err) from None
        return wrapper


class JsonErrorPlugin:
    """Turns ApiError (and any other exception) raised by an API route into a JSON answer;
    database errors go on to BoundaryPlugin."""

    name = "json_errors"
    api = 2

    def apply(self, callback, route):
        def wrapper(*args, **kwargs):
            try:
                return callback(*args, **kwargs)
            except ApiError as err:
                return error_response(err.status, err.message, err.field, err.headers)
            except (bottle.HTTPResponse, *DATABASE_ERRORS):
                raise
            except Exception:
                log.exception("unhandled error path=%s", bottle.request.path)
                return error_response(500, "internal error; see the panel log")
        return wrapper
