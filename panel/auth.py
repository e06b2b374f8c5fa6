"""Who is calling: the agent's Bearer key (see keys.py), admin passwords and sessions, CSRF,
and the Bottle plugin that enforces them per route.

A route says what it needs in one place, `@app.post("/x", auth="agent")`:
  - auth="agent"  Bearer API key; the callback gets `agent=` (an Agent joined to its Server).
                  Refused over plain HTTP unless from loopback, through a trusted proxy that
                  says X-Forwarded-Proto: https, or with MPANEL_ALLOW_HTTP.
  - auth="account" any logged-in session, also one that must still set up two-factor
                  (two_factor_required): the account page where it does, and logging out.
  - auth="viewer" any logged-in user: the pages that only show, scoped to what the user sees.
  - auth="admin"  a user who may change things (admin; customer-admin, within their customer).
  - auth="staff"  staff only (admin or viewer): pages about the whole panel.
  - auth="staff-admin"  a staff admin: customers, users, global rules, the staff channels a
                  customer's alerts also go to, security.
  - auth="token-read", "token-write", "token-staff", "token-staff-write"  an API token
                  (`Authorization: Bearer mpt_...`, tokens.py) for /api/v1 (api_v1.py): the
                  callback gets `token=` and `access=`, the token's scope as an Access, checked
                  as the session needs of the same name are (access.TOKEN_NEEDS).
  - auth=None     public.
A session route's callback gets `session=` and `access=` (access.Access: what the user may see
and change; every query that returns servers is scoped by it). State-changing methods also need
the session's CSRF token (a form field, or htmx's X-CSRF-Token).
"""
import datetime
import functools
import hashlib
import hmac
import ipaddress
import logging
import secrets
import time

import bottle

from . import access as access_module
from . import keys, models, tokens, units
from .db import utcnow
from .errors import ApiError

log = logging.getLogger("mpanel.auth")

SESSION_COOKIE = "mpanel_session"
LOGIN_CSRF_COOKIE = "mpanel_login_csrf"
# A login whose password was right and whose second factor is awaited (account.py).
CHALLENGE_COOKIE = "mpanel_login_challenge"
CHALLENGE_MINUTES = 5
LOGIN_WINDOW = 300  # seconds over which failed logins are counted
# Per username, and (an office behind one NAT address shares it) this many times that per address.
LOGIN_ADDRESS_FACTOR = 4
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")

# What an agent is told, by failure kind. "bad_key" and "unknown_key" read alike on purpose:
# the answer must not confirm which key ids exist.
_REFUSALS = {
    "missing": "missing API key: send 'Authorization: Bearer <key>'",
    "malformed": "API key rejected",
    "unknown_key": "API key rejected",
    "bad_key": "API key rejected",
    "revoked": "API key rejected (revoked)",
    "expired": "API key rejected (replaced by a newer key)",
}
# What a script presenting an API token is told, by failure kind (tokens.py): alike but for
# revoked and expired, which only the token's holder can present.
_TOKEN_REFUSALS = {
    "missing": "missing API token: send 'Authorization: Bearer mpt_...'",
    "malformed": "API token rejected",
    "unknown_token": "API token rejected",
    "bad_token": "API token rejected",
    "revoked": "API token rejected (revoked)",
    "expired": "API token rejected (expired)",
}
# A token's 403s, worded for a script rather than for a person at a page.
_TOKEN_REFUSED = {
    access_module.READ_ONLY: "this token is read-only: writes need a read-write token of a "
                             "user who may change things",
    access_module.STAFF_ONLY: "this endpoint is for staff-wide tokens",
}
# How each is recorded in auth_events (`kind` is at most 32 characters).
TOKEN_FAILURE_KINDS = {failure: f"token_{failure.removesuffix('_token')}"
                       for failure in (*_TOKEN_REFUSALS, "throttled")}
# Every kind of failure auth_events records (the Security page marks them).
FAILURE_KINDS = (*_REFUSALS, "throttled", "login_failed", "login_throttled", "two_factor_failed",
                 *TOKEN_FAILURE_KINDS.values())


# ===== Agents ===================================================================================

def client_address(settings):
    """The client's address: REMOTE_ADDR, or X-Forwarded-For's last hop when the request came
    through a trusted proxy (anything else in that header is whatever the client said)."""
    environ = bottle.request.environ
    remote = environ.get("REMOTE_ADDR") or ""
    if _trusted(remote, settings):
        forwarded = (environ.get("HTTP_X_FORWARDED_FOR") or "").split(",")[-1].strip()
        if forwarded:
            return forwarded[:45]
    return remote[:45]


@functools.lru_cache(maxsize=4096)
def _ip(address):
    """The address parsed, or None; every request asks for its peer's, twice or more, and
    ipaddress takes microseconds to parse one."""
    try:
        return ipaddress.ip_address(address)
    except ValueError:
        return None


def _trusted(address, settings):
    ip = _ip(address)
    return ip is not None and any(ip in network for network in settings.trusted_proxies)


def _loopback(address):
    ip = _ip(address)
    return ip is not None and ip.is_loopback


def forwarded_scheme(settings):
    """The scheme the client used: a trusted proxy's X-Forwarded-Proto, else this connection's.
    Anyone else's X-Forwarded-* is what the client says about itself, and is ignored."""
    environ = bottle.request.environ
    remote = environ.get("REMOTE_ADDR") or ""
    forwarded = (environ.get("HTTP_X_FORWARDED_PROTO") or "").split(",")[-1].strip().lower()
    if forwarded and _trusted(remote, settings):
        return forwarded
    return environ.get("wsgi.url_scheme") or "http"


def forwarded_host(settings):
    """The host the client asked for: a trusted proxy's X-Forwarded-Host, else Host."""
    environ = bottle.request.environ
    remote = environ.get("REMOTE_ADDR") or ""
    forwarded = (environ.get("HTTP_X_FORWARDED_HOST") or "").split(",")[-1].strip()
    if forwarded and _trusted(remote, settings):
        return forwarded
    return environ.get("HTTP_HOST") or f"{environ.get('SERVER_NAME')}:{environ.get('SERVER_PORT')}"


def require_https(settings):
    """The agent API carries keys: over plain HTTP only where nobody can listen in.

    A trusted proxy's X-Forwarded-Proto decides when it sends one — also a proxy on this very
    host, which connects from loopback: one that forwards port 80 must not pass keys that
    crossed the network in clear text. Without the header, a loopback peer is a local client
    (`make run`'s agent, a health check) and may use plain HTTP."""
    environ = bottle.request.environ
    if settings.allow_http or environ.get("wsgi.url_scheme") == "https":
        return
    remote = environ.get("REMOTE_ADDR") or ""
    forwarded = (environ.get("HTTP_X_FORWARDED_PROTO") or "").strip()
    if forwarded and _trusted(remote, settings):
        if forwarded_scheme(settings) == "https":
            return
    elif _loopback(remote):
        return
    raise ApiError(403, "plain HTTP refused: the agent API needs HTTPS (or a trusted proxy "
                        "sending X-Forwarded-Proto: https)", "scheme")


REALM = "mpanel"  # the protection space every 401 names (RFC 9110 §11.5)


def bearer_challenge(token_presented):
    """WWW-Authenticate for a 401 of a Bearer route (the agent API, /metrics). RFC 9110
    §11.6.1: every 401 names the scheme it wants; RFC 6750 §3.1: error="invalid_token" when a
    token was presented, no error code when none was."""
    challenge = f'Bearer realm="{REALM}"'
    return f'{challenge}, error="invalid_token"' if token_presented else challenge


# The same rule for the login form's 401. No registered scheme fits a form; browsers show the
# page for a scheme they do not know (they prompt only for Basic, Digest, NTLM, Negotiate).
LOGIN_CHALLENGE = f'Cookie realm="{REALM}", form-action="/login"'


def checked_bearer(settings, verifier):
    """The request's `Authorization: Bearer` credential (HTTPS required as require_https says),
    checked by `verifier` (agent keys, API tokens) -> (its check, the client's address)."""
    require_https(settings)
    scheme, _, presented = bottle.request.get_header("Authorization", "").partition(" ")
    presented = presented.strip()
    address = client_address(settings)
    if scheme.lower() != "bearer" or not presented:
        return verifier.refuse("missing", address), address
    return verifier.check(presented, address), address


class AgentAuthenticator:
    """Checks Bearer keys (keys.KeyVerifier) and answers refusals: 401 or, past a failure
    limit, 429; each counted into its auth_events summary row."""

    def __init__(self, settings, verifier):
        self.settings = settings
        self.verifier = verifier

    def __call__(self):
        # Database trouble here (the key's row, the refusal's summary) is the boundary's
        # 503 (errors.BoundaryPlugin), as everywhere else.
        check, address = checked_bearer(self.settings, self.verifier)
        if check.failure:
            self._refuse(check, address)
        if not check.used_previous:
            keys.note_new_key_in_use(check.agent)
        return check

    def _refuse(self, check, address):
        agent, throttled = check.agent, check.retry_after > 0
        kind = "throttled" if throttled else check.failure
        request = f"{bottle.request.method} {bottle.request.path}"
        occurrences = models.record_auth_failure(
            kind, client_addr=address, key_id=check.key_id,
            server_id=agent.server_id if agent else None,
            detail=f"{check.failure}: {request}" if throttled else request)
        # One WARNING when a kind of failure starts from an address; the rest are counted in
        # its summary row (the Security page shows how many).
        log.log(logging.WARNING if occurrences == 1 else logging.DEBUG,
                "agent authentication refused reason=%s client=%s key_id=%s status=%s "
                "in_window=%s", check.failure, address, check.key_id or "-",
                429 if throttled else 401, occurrences)
        if throttled:
            raise ApiError(429, "too many failed attempts; retry later", "Authorization",
                           headers={"Retry-After": str(max(1, int(check.retry_after + 0.999)))})
        raise ApiError(401, _REFUSALS[check.failure], "Authorization",
                       headers={"WWW-Authenticate": bearer_challenge(check.failure != "missing")})


# ===== API tokens ===============================================================================

class TokenAuthenticator:
    """Checks `Authorization: Bearer mpt_...` (tokens.TokenVerifier) and answers refusals as
    the agent API does: 401 with WWW-Authenticate or, past a failure limit, 429; each counted
    into its auth_events summary row. Tokens are credentials: HTTPS as for agent keys."""

    def __init__(self, settings, verifier):
        self.settings = settings
        self.verifier = verifier

    def __call__(self):
        check, address = checked_bearer(self.settings, self.verifier)
        if check.failure:
            self._refuse(check, address)
        return check.token

    def _refuse(self, check, address):
        throttled = check.retry_after > 0
        kind = TOKEN_FAILURE_KINDS["throttled" if throttled else check.failure]
        request = f"{bottle.request.method} {bottle.request.path}"
        occurrences = models.record_auth_failure(
            kind, client_addr=address, key_id=check.token_id,
            detail=f"{check.failure}: {request}" if throttled else request)
        log.log(logging.WARNING if occurrences == 1 else logging.DEBUG,
                "API token refused reason=%s client=%s token_id=%s status=%s in_window=%s",
                check.failure, address, check.token_id or "-", 429 if throttled else 401,
                occurrences)
        if throttled:
            raise ApiError(429, "too many failed attempts; retry later", "Authorization",
                           headers={"Retry-After": str(max(1, int(check.retry_after + 0.999)))})
        raise ApiError(401, _TOKEN_REFUSALS[check.failure], "Authorization",
                       headers={"WWW-Authenticate": bearer_challenge(check.failure != "missing")})


# ===== Admin passwords and sessions =============================================================

def hash_password(password, rounds):
    if len(password.encode()) > 72:
        raise ValueError("passwords are limited to 72 bytes (a bcrypt limit)")
    return keys.hash_secret(password, rounds)


def token_hash(token):
    return hashlib.sha256(token.encode()).hexdigest()


def start_session(admin, hours):
    """Create a session row and return the cookie's token."""
    token = secrets.token_urlsafe(32)
    models.AdminSession.create(token_hash=token_hash(token), admin=admin,
                               csrf_token=secrets.token_urlsafe(32),
                               expires_at=utcnow() + datetime.timedelta(hours=hours))
    return token


def _live_row(cookie, by_token_hash):
    """The unexpired row that this request's `cookie` names (looked up by its hash), or None."""
    token = bottle.request.get_cookie(cookie)
    if not token:
        return None
    row = by_token_hash(token_hash(token))
    if row is None or row.expires_at < utcnow():
        return None
    return row


def current_session():
    """The live AdminSession of this request, or None."""
    return _live_row(SESSION_COOKIE, models.session_by_token_hash)


def end_session():
    token = bottle.request.get_cookie(SESSION_COOKIE)
    if token:
        models.end_session_by_token_hash(token_hash(token))


def password_refused(settings, admin, kind, what, field="password"):
    """None when the form's `field` is `admin`'s password, else (status, message). Asked where
    a stolen session alone must not reach beyond itself: tying the account to another phone
    (which keeps its owner out), a token or a new user (which outlive the session). Spends the
    login limits as a login does: taken before the check, given back when it is right."""
    address = client_address(settings)
    limits = login_limits(settings, address, admin.username)
    wait = models.take_attempts(limits, time.time())
    if wait > 0:
        return 429, throttled_login(wait, address, admin.username)
    password = bottle.request.forms.getunicode(field) or ""
    if not keys.check_secret(password[:72], admin.password_hash):
        models.record_auth_failure(kind, client_addr=address,
                                   detail=f"user {admin.username}: wrong password to {what}")
        return 403, f"That password is not right: type your own to {what}."
    models.give_back_attempts(limits)
    return None


def csrf_ok(session):
    sent = bottle.request.get_header("X-CSRF-Token") or bottle.request.forms.get("csrf_token") or ""
    return hmac.compare_digest(sent.encode(), session.csrf_token.encode())


def https(settings):
    return forwarded_scheme(settings) == "https"


# ===== Logging in: limits, the second factor, the session =======================================

def login_limits(settings, address, username):
    """[(name, interval, burst)] for models.take_attempts: `login_failure_limit` failed
    logins per username per LOGIN_WINDOW, LOGIN_ADDRESS_FACTOR times that per address. A wrong
    password and a wrong second factor spend the same budget."""
    per_user = settings.login_failure_limit
    per_address = LOGIN_ADDRESS_FACTOR * per_user
    return [(f"login user {username}", LOGIN_WINDOW / per_user, per_user),
            (f"login address {address}", LOGIN_WINDOW / per_address, per_address)]


def throttled_login(wait, address, username):
    """Answer a login attempt past its limits (`wait` seconds until one may go): 429 with
    Retry-After, recorded. -> the message for the form."""
    bottle.response.status = 429
    bottle.response.set_header("Retry-After", str(max(1, int(wait + 0.999))))
    models.record_auth_failure("login_throttled", client_addr=address, detail=f"user {username}")
    return f"Too many failed logins. Try again in {units.duration(wait)}."


def new_login_csrf(settings):
    """The login forms' CSRF token (no session yet): a cookie and the same value in the form."""
    token = secrets.token_urlsafe(24)
    bottle.response.set_cookie(LOGIN_CSRF_COOKIE, token, path="/login", httponly=True,
                               samesite="strict", secure=https(settings))
    return token


def login_csrf_ok():
    sent = bottle.request.forms.get("csrf_token") or ""
    cookie = bottle.request.get_cookie(LOGIN_CSRF_COOKIE) or ""
    return bool(cookie) and secrets.compare_digest(sent.encode(), cookie.encode())


def two_factor_on(admin):
    return admin.totp_enabled_at is not None


def two_factor_required(admin, settings):
    """Whether `admin` must have two-factor before reaching any page but its account page: the
    one place that decides (MPANEL_REQUIRE_STAFF_TWO_FACTOR for staff; a customer's own flag,
    set by an admin, for that customer's users)."""
    if admin.role in access_module.STAFF_ROLES:
        return settings.require_staff_two_factor
    customer = models.by_id(models.Customer, admin.customer_id) \
        if admin.customer_id is not None else None
    return bool(customer and customer.require_two_factor)


def start_challenge(admin, settings):
    """The password was right and `admin` has two-factor on: a single-use challenge for this
    browser (its cookie's token; the database keeps a SHA-256), good for CHALLENGE_MINUTES."""
    token = secrets.token_urlsafe(32)
    models.create_login_challenge(admin.id, token_hash(token),
                                  utcnow() + datetime.timedelta(minutes=CHALLENGE_MINUTES))
    bottle.response.set_cookie(CHALLENGE_COOKIE, token, path="/login", httponly=True,
                               samesite="strict", secure=https(settings),
                               max_age=CHALLENGE_MINUTES * 60)


def current_challenge():
    """The live LoginChallenge (its admin joined) of this browser, or None."""
    return _live_row(CHALLENGE_COOKIE, models.login_challenge_by_token_hash)


def open_session(admin, settings):
    """Logged in: the session cookie; the login's own cookies are spent."""
    token = start_session(admin, settings.session_hours)
    bottle.response.set_cookie(SESSION_COOKIE, token, path="/", httponly=True, samesite="lax",
                               secure=https(settings), max_age=settings.session_hours * 3600)
    bottle.response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    bottle.response.delete_cookie(CHALLENGE_COOKIE, path="/login")


# ===== The plugin ================================================================================

class AuthPlugin:
    """Reads `route.config["auth"]` and guards the callback accordingly."""

    name = "auth"
    api = 2

    def __init__(self, authenticator, secret, token_authenticator=None):
        self.authenticate = authenticator
        self.secret = secret
        self.settings = authenticator.settings
        self.authenticate_token = token_authenticator

    def apply(self, callback, route):
        need = route.config.get("auth")
        if need == "agent":
            def agent_guard(*args, **kwargs):
                check = self.authenticate()
                kwargs["agent"] = check.agent
                answer = callback(*args, **kwargs)
                if check.used_previous and isinstance(answer, dict):
                    # Zero-touch rotation: hand the new key over in an authenticated answer.
                    new_key = keys.pending_key_for(check.agent, self.secret)
                    if new_key:
                        answer["newApiKey"] = new_key
                return answer
            return agent_guard
        if need in access_module.NEEDS:
            refused = access_module.NEEDS[need]

            def admin_guard(*args, **kwargs):
                session = current_session()
                if session is None:
                    return _send_to("/login")
                if (need != "account" and not two_factor_on(session.admin)
                        and two_factor_required(session.admin, self.settings)):
                    if bottle.request.method not in SAFE_METHODS:
                        bottle.abort(403, "this account must set up two-factor first: "
                                          "see /account")
                    return _send_to("/account")
                access = access_module.Access.of(session.admin)
                refusal = refused(access)
                if refusal:
                    bottle.abort(403, refusal)
                if bottle.request.method not in SAFE_METHODS and not csrf_ok(session):
                    bottle.abort(403, "CSRF token missing or wrong")
                kwargs["session"] = session
                kwargs["access"] = access
                return callback(*args, **kwargs)
            return admin_guard
        if need in access_module.TOKEN_NEEDS:
            token_refused = access_module.TOKEN_NEEDS[need]

            def token_guard(*args, **kwargs):
                if self.authenticate_token is None:
                    raise ApiError(404, "this panel serves no token API")
                token = self.authenticate_token()
                token_access = tokens.access_of(token)
                refusal = token_refused(token_access)
                if refusal:
                    raise ApiError(403, _TOKEN_REFUSED.get(refusal, refusal), "Authorization")
                kwargs["token"] = token
                kwargs["access"] = token_access
                return callback(*args, **kwargs)
            return token_guard
        if need is not None:  # a typo must not make a page public
            raise ValueError(f"route {route.rule}: unknown auth={need!r}; one of 'agent', "
                             f"{', '.join(map(repr, ALL_NEEDS))} or None")
        return callback


ALL_NEEDS = (*access_module.NEEDS, *access_module.TOKEN_NEEDS)


def _send_to(path):
    if bottle.request.get_header("HX-Request"):
        # htmx follows HX-Redirect with a full page load.
        bottle.response.set_header("HX-Redirect", path)
        return ""
    return bottle.redirect(path)
