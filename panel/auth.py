"""Who is calling: the agent's Bearer key (see keys.py), admin passwords and sessions, CSRF,
and the Bottle plugin that enforces them per route.

A route says what it needs in one place, `@app.post("/x", auth="agent")`:
  - auth="agent"  Bearer API key; the callback gets `agent=` (an Agent joined to its Server).
                  Refused over plain HTTP unless from loopback, through a trusted proxy that
                  says X-Forwarded-Proto: https, or with MPANEL_ALLOW_HTTP.
  - auth="viewer" any logged-in session (admin or read-only viewer): the pages that only show.
  - auth="admin"  a logged-in admin: everything that changes something. State-changing methods
                  also need the session's CSRF token (a form field, or htmx's X-CSRF-Token).
  - auth=None     public.
"""
import datetime
import hashlib
import hmac
import ipaddress
import logging
import secrets

import bottle

from . import keys, models
from .db import utcnow
from .errors import ApiError

log = logging.getLogger("mpanel.auth")

SESSION_COOKIE = "mpanel_session"
LOGIN_CSRF_COOKIE = "mpanel_login_csrf"
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


def _trusted(address, settings):
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in settings.trusted_proxies)


def _loopback(address):
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


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


class AgentAuthenticator:
    """Checks Bearer keys: cache, failure limiter, bcrypt, auth_events."""

    def __init__(self, settings, key_cache, limiter):
        self.settings = settings
        self.cache = key_cache
        self.limiter = limiter

    def __call__(self):
        require_https(self.settings)
        header = bottle.request.get_header("Authorization", "")
        scheme, _, presented = header.partition(" ")
        presented = presented.strip()
        address = client_address(self.settings)
        if scheme.lower() != "bearer" or not presented:
            self._refuse("missing", address, None, None)
        key_id = keys.key_id_of(presented)
        wait = self.limiter.retry_after(address, key_id)
        if wait and not keys.cached_without_bcrypt(presented, self.cache):
            raise ApiError(429, "too many failed attempts; retry later", "Authorization",
                           headers={"Retry-After": str(max(1, int(wait + 0.999)))})
        check = keys.check_key(presented, self.cache)
        if check.failure:
            self.limiter.fail(address, key_id)
            self._refuse(check.failure, address, key_id, check.agent)
        if not check.used_previous:
            keys.note_new_key_in_use(check.agent)
        return check

    def _refuse(self, failure, address, key_id, agent):
        models.record_auth_event(failure, client_addr=address, key_id=key_id,
                                 server_id=agent.server_id if agent else None,
                                 detail=f"{bottle.request.method} {bottle.request.path}"[:200])
        log.warning("agent authentication failed reason=%s client=%s key_id=%s", failure,
                    address, key_id or "-")
        raise ApiError(401, _REFUSALS[failure], "Authorization",
                       headers={"WWW-Authenticate": 'Bearer realm="mpanel"'})


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


def current_session():
    """The live AdminSession of this request, or None."""
    token = bottle.request.get_cookie(SESSION_COOKIE)
    if not token:
        return None
    session = (models.AdminSession.select(models.AdminSession, models.Admin)
               .join(models.Admin).where(models.AdminSession.token_hash == token_hash(token))
               .first())
    if session is None or session.expires_at < utcnow():
        return None
    return session


def end_session():
    token = bottle.request.get_cookie(SESSION_COOKIE)
    if token:
        models.AdminSession.delete().where(
            models.AdminSession.token_hash == token_hash(token)).execute()


def csrf_ok(session):
    sent = bottle.request.get_header("X-CSRF-Token") or bottle.request.forms.get("csrf_token") or ""
    return hmac.compare_digest(sent.encode(), session.csrf_token.encode())


# ===== The plugin ================================================================================

class AuthPlugin:
    """Reads `route.config["auth"]` and guards the callback accordingly."""

    name = "auth"
    api = 2

    def __init__(self, authenticator, secret):
        self.authenticate = authenticator
        self.secret = secret

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
        if need in ("admin", "viewer"):
            def admin_guard(*args, **kwargs):
                session = current_session()
                if session is None:
                    if bottle.request.get_header("HX-Request"):
                        # htmx follows HX-Redirect with a full page load.
                        bottle.response.set_header("HX-Redirect", "/login")
                        return ""
                    return bottle.redirect("/login")
                if need == "admin" and session.admin.role != "admin":
                    bottle.abort(403, "this account is read-only: changing things needs an "
                                      "admin account")
                if bottle.request.method not in SAFE_METHODS and not csrf_ok(session):
                    bottle.abort(403, "CSRF token missing or wrong")
                kwargs["session"] = session
                return callback(*args, **kwargs)
            return admin_guard
        return callback
