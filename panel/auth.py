"""Who is calling: agent API keys, admin passwords and sessions, CSRF, and the Bottle plugin
that enforces them per route.

A route says what it needs in one place, `@app.post("/x", auth="agent")`:
  - auth="agent"  Bearer API key; the callback gets `agent=` (an Agent joined to its Server).
  - auth="admin"  logged-in admin session; state-changing methods also need the CSRF token.
  - auth=None     public.

API keys look like `agent_<key id>_<secret>`. The key id is public and indexed, so a request
costs one index probe to find its row and one bcrypt check, never a scan over every hash. After
one successful check the key is remembered, keyed by an HMAC of the presented key under a
per-process secret (never the key itself), together with the hash it was checked against: a
rotated or revoked key changes or removes that hash, so the next request misses the cache.
"""
import collections
import datetime
import hashlib
import hmac
import re
import secrets
import threading

import bcrypt
import bottle

from . import models
from .db import utcnow
from .errors import ApiError

KEY_PREFIX = "agent_"
KEY_PATTERN = re.compile(r"^agent_([0-9a-f]{12})_([A-Za-z0-9_-]{40})$")
SESSION_COOKIE = "mpanel_session"
LOGIN_CSRF_COOKIE = "mpanel_login_csrf"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


# ===== API keys =================================================================================

def new_api_key():
    """Return (key, key_id). The key is shown once; only its bcrypt hash is stored."""
    key_id = secrets.token_hex(6)
    return f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(30)}", key_id


def key_id_of(presented):
    """The public id of a well-formed key, else None. Safe to log."""
    match = KEY_PATTERN.match(presented or "")
    return match.group(1) if match else None


def hash_secret(secret, rounds):
    return bcrypt.hashpw(secret.encode(), bcrypt.gensalt(rounds)).decode()


def check_secret(secret, hashed):
    try:
        return bcrypt.checkpw(secret.encode(), hashed.encode())
    except ValueError:  # a corrupt stored hash must read as "no", not as a 500
        return False


class VerifiedKeyCache:
    """Keys that passed bcrypt in this process, so steady-state requests skip it."""

    def __init__(self, max_entries=100_000):
        self._secret = secrets.token_bytes(32)
        self._entries = collections.OrderedDict()
        self._lock = threading.Lock()
        self._max = max_entries
        self.bcrypt_checks = 0  # read by tests and benchmarks

    def _fingerprint(self, presented):
        return hmac.new(self._secret, presented.encode(), hashlib.sha256).digest()

    def verify(self, presented, agent):
        """True when `presented` is the key whose hash `agent` holds now."""
        fingerprint = self._fingerprint(presented)
        with self._lock:
            remembered = self._entries.get(fingerprint)
        if remembered is not None and remembered[0] == agent.id and \
                hmac.compare_digest(remembered[1], agent.api_key_hash):
            return True
        self.bcrypt_checks += 1
        if not check_secret(presented, agent.api_key_hash):
            return False
        with self._lock:
            self._entries[fingerprint] = (agent.id, agent.api_key_hash)
            self._entries.move_to_end(fingerprint)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)
        return True


def authenticate_agent(cache):
    """The Agent behind this request's Bearer key, or raise a 401 ApiError."""
    header = bottle.request.get_header("Authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise ApiError(401, "missing API key: send 'Authorization: Bearer <key>'", "Authorization")
    presented = presented.strip()
    key_id = key_id_of(presented)
    agent = models.agent_by_key_id(key_id) if key_id else None
    if agent is None or not cache.verify(presented, agent):
        raise ApiError(401, "API key rejected", "Authorization")
    return agent


# ===== Admin passwords and sessions =============================================================

def hash_password(password, rounds):
    if len(password.encode()) > 72:
        raise ValueError("passwords are limited to 72 bytes (a bcrypt limit)")
    return hash_secret(password, rounds)


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

    def __init__(self, key_cache):
        self.key_cache = key_cache

    def apply(self, callback, route):
        need = route.config.get("auth")
        if need == "agent":
            def agent_guard(*args, **kwargs):
                kwargs["agent"] = authenticate_agent(self.key_cache)
                return callback(*args, **kwargs)
            return agent_guard
        if need == "admin":
            def admin_guard(*args, **kwargs):
                session = current_session()
                if session is None:
                    if bottle.request.get_header("HX-Request"):
                        # htmx follows HX-Redirect with a full page load.
                        bottle.response.set_header("HX-Redirect", "/login")
                        return ""
                    return bottle.redirect("/login")
                if bottle.request.method not in SAFE_METHODS and not csrf_ok(session):
                    bottle.abort(403, "CSRF token missing or wrong")
                kwargs["session"] = session
                return callback(*args, **kwargs)
            return admin_guard
        return callback
