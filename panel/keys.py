"""Agent API keys: format, storage (bcrypt hash and fingerprint), checking them under failure
limits, rotation with a grace period and zero-touch handoff, revocation.

A key looks like `agent_<key id>_<secret>`. The key id is public and indexed, so a request
costs one index probe to find its row (AgentRows keeps it 2 s), never a scan over every hash.

Beside the bcrypt hash the row keeps the key's SHA-256 (`fingerprint`, set when the key is
issued). A key is 240 random bits, so a fast hash is as safe to store as bcrypt, and it lets the
panel tell a right key from a wrong one without bcrypt in every process, also after a restart.
bcrypt is left for keys issued before schema version 3 that have not been used since: their first
successful check stores the fingerprint.

Refusals are limited per process (FailureLimiter) so that nobody's failures ever stand between
an agent and its own key:
  - missing or malformed credentials and unknown key ids are charged to the client address;
  - a known key id's refusals (a wrong secret, a revoked or expired key) are charged to that key
    id — and a presented key is compared with its row's fingerprint *before* any limit is
    consulted, so the right key always passes;
  - bcrypt runs only for a row without a fingerprint, and only while that key id's budget
    lasts: at most MPANEL_AUTH_FAILURE_LIMIT checks a minute per such key id.
Refusing an unknown id costs a row lookup, refusing a wrong secret a row lookup and a SHA-256:
neither costs bcrypt, so the answer time does not tell whether a key id exists
(docs/security.md, "Failed authentication").

Rotation issues a new key and keeps the old one valid for a grace period. The new key is kept,
until the agent has it, sealed with the panel's secret (MPANEL_SECRET_KEY): while the agent
still authenticates with the old key, every answer carries `newApiKey`; the first request made
with the new key retires the old one.
"""
import base64
import collections
import hashlib
import hmac
import re
import secrets
import threading
import time

import bcrypt

from . import models
from .db import database_proxy, utcnow

KEY_PREFIX = "agent_"
KEY_PATTERN = re.compile(r"^agent_([0-9a-f]{12})_([A-Za-z0-9_-]{40})$")
REVOKED_HASH = "!revoked"


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
    except ValueError:  # a corrupt or revoked stored hash must read as "no", not as a 500
        return False


def fingerprint(presented):
    """What the row keeps to recognise its key without bcrypt: SHA-256, hex."""
    return hashlib.sha256(presented.encode()).hexdigest()


def key_columns(key, key_id, rounds):
    """The Agent columns that store a newly issued key: its id, bcrypt hash and fingerprint."""
    return {"api_key_id": key_id, "api_key_hash": hash_secret(key, rounds),
            "api_key_fingerprint": fingerprint(key)}


# ===== Agent rows by key id =====================================================================

class AgentRows:
    """Agent rows by key id, none older than `ttl` seconds.

    Every report would otherwise read its agent's row; at a thousand reports a second that
    round trip is a fifth of a PostgreSQL panel's work. Nor does each row expire on its own:
    once every `ttl` seconds the first request to need a row re-reads every cached row in one
    query per 400 agents (`refreshes` counts those rounds), so steady state costs a query
    per process every `ttl` seconds, not one per agent. A key rotated or revoked through this
    process is forgotten at once (forget()); one changed by another process — a replica, or
    the CLI — is seen within `ttl` seconds, which is the promise for other replicas.
    """

    def __init__(self, ttl=2.0, clock=time.monotonic):
        self.ttl, self.clock = ttl, clock
        self._rows = {}
        self._lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._refreshed_at = clock()
        self._forgotten = set()  # key ids forgotten while a refresh was reading
        self.refreshes = 0

    def get(self, key_id):
        now = self.clock()
        if now - self._refreshed_at >= self.ttl:
            self._refresh()
        with self._lock:
            entry = self._rows.get(key_id)
        if entry is not None and now - entry[1] < self.ttl:
            return entry[0]
        agent = models.agent_by_key_id(key_id)
        if agent is not None:
            with self._lock:
                if len(self._rows) >= 200_000:
                    self._rows.clear()
                self._rows[key_id] = (agent, now)
        return agent

    def _refresh(self):
        with self._refresh_lock:  # one thread reads; the others wait for what it read
            read_at = self.clock()
            if read_at - self._refreshed_at < self.ttl:
                return  # another thread has just refreshed
            with self._lock:
                wanted = list(self._rows)
                self._forgotten.clear()
            fresh = models.agents_by_key_ids(wanted) if wanted else {}
            with self._lock:
                for key_id in wanted:
                    if key_id in self._forgotten:
                        continue  # changed here while we read: the next get() reads it anew
                    if key_id in fresh:
                        self._rows[key_id] = (fresh[key_id], read_at)
                    else:
                        self._rows.pop(key_id, None)
                self._refreshed_at = read_at
                self.refreshes += 1

    def forget(self, agent):
        with self._lock:
            for key_id in (agent.api_key_id, agent.prev_key_id):
                self._rows.pop(key_id, None)
                self._forgotten.add(key_id)


AGENT_ROWS = AgentRows()


# ===== Failure limiter ==========================================================================

class FailureLimiter:
    """At most `limit` attempts per name (an address, a key id) in a sliding window; per
    process.

    take() counts and decides under one lock, so concurrent requests cannot all pass a check
    made before any of them counted; give_back() returns an attempt that turned out right."""

    def __init__(self, limit=10, window=60.0, clock=time.monotonic):
        self.limit, self.window, self.clock = limit, window, clock
        self._attempts = collections.defaultdict(collections.deque)
        self._lock = threading.Lock()

    def _recent(self, name, now):
        stamps = self._attempts.get(name)
        if stamps is None:
            return None
        while stamps and stamps[0] <= now - self.window:
            stamps.popleft()
        if not stamps:
            del self._attempts[name]
            return None
        return stamps

    def take(self, name):
        """Count one attempt for `name`. -> 0 when it may go, else seconds until one may."""
        now = self.clock()
        with self._lock:
            stamps = self._recent(name, now)
            if stamps is not None and len(stamps) >= self.limit:
                return stamps[-self.limit] + self.window - now
            self._attempts[name].append(now)
            if len(self._attempts) > 100_000:  # an address sweep must not grow memory forever
                for other in list(self._attempts):
                    self._recent(other, now)
        return 0

    def give_back(self, name):
        with self._lock:
            stamps = self._attempts.get(name)
            if stamps:
                stamps.pop()


# ===== Sealing a pending key ====================================================================

def _stream(key, nonce, length):
    blocks, counter = [], 0
    while sum(len(b) for b in blocks) < length:
        blocks.append(hmac.new(key, nonce + counter.to_bytes(4, "big"), hashlib.sha256).digest())
        counter += 1
    return b"".join(blocks)[:length]


def seal(secret, plaintext):
    """Encrypt-then-MAC with keys derived from `secret` (HMAC-SHA256 keystream and tag): the
    standard library has no AES, and this is all a short key needs."""
    enc = hmac.new(secret, b"mpanel-seal-enc", hashlib.sha256).digest()
    mac = hmac.new(secret, b"mpanel-seal-mac", hashlib.sha256).digest()
    nonce = secrets.token_bytes(16)
    data = plaintext.encode()
    cipher = bytes(a ^ b for a, b in zip(data, _stream(enc, nonce, len(data))))
    tag = hmac.new(mac, nonce + cipher, hashlib.sha256).digest()
    return base64.b64encode(nonce + cipher + tag).decode()


def unseal(secret, box):
    """The plaintext of `seal(secret, ...)`, or None when the box was not sealed with it."""
    try:
        raw = base64.b64decode(box.encode(), validate=True)
    except (ValueError, AttributeError):
        return None
    if len(raw) < 48:
        return None
    nonce, cipher, tag = raw[:16], raw[16:-32], raw[-32:]
    enc = hmac.new(secret, b"mpanel-seal-enc", hashlib.sha256).digest()
    mac = hmac.new(secret, b"mpanel-seal-mac", hashlib.sha256).digest()
    if not hmac.compare_digest(tag, hmac.new(mac, nonce + cipher, hashlib.sha256).digest()):
        return None
    return bytes(a ^ b for a, b in zip(cipher, _stream(enc, nonce, len(cipher)))).decode()


# ===== Life cycle: issue, rotate, revoke ========================================================

def rotate(agent, rounds, grace, secret):
    """Give `agent` a new key; the current one stays valid for `grace` (a timedelta; zero cuts
    it off at once). Returns the new key, to be shown once."""
    key, key_id = new_api_key()
    now = utcnow()
    keep_old = grace.total_seconds() > 0 and agent.api_key_hash != REVOKED_HASH
    with database_proxy.atomic():
        models.update_agent(
            agent.id, **key_columns(key, key_id, rounds),
            prev_key_id=agent.api_key_id if keep_old else None,
            prev_key_hash=agent.api_key_hash if keep_old else None,
            prev_key_fingerprint=agent.api_key_fingerprint if keep_old else None,
            prev_key_expires_at=now + grace if keep_old else None,
            pending_key_box=seal(secret, key) if keep_old else None,
            key_rotated_at=now, key_switched_at=None, updated_at=now,
            # A revoked server that gets a new key is back in service.
            status=("active" if agent.last_seen else "pending") if agent.status == "revoked"
            else agent.status)
        models.record_auth_event("key_rotated", server_id=agent.server_id,
                                 key_id=key_id, detail=f"grace {int(grace.total_seconds())} s")
    AGENT_ROWS.forget(agent)
    return key


def revoke(agent):
    """Cut the agent's keys off at once (every replica: the stored hash is gone)."""
    now = utcnow()
    with database_proxy.atomic():
        models.update_agent(agent.id, api_key_hash=REVOKED_HASH, api_key_fingerprint=None,
                            prev_key_id=None, prev_key_hash=None, prev_key_fingerprint=None,
                            prev_key_expires_at=None, pending_key_box=None, status="revoked",
                            updated_at=now)
        models.record_auth_event("key_revoked", server_id=agent.server_id,
                                 key_id=agent.api_key_id)
    AGENT_ROWS.forget(agent)


class KeyCheck:
    """The outcome of checking one presented key."""

    def __init__(self, agent=None, failure=None, used_previous=False, key_id=None,
                 retry_after=0):
        self.agent = agent
        # None, or why it was refused: "missing", "malformed", "unknown_key", "bad_key",
        # "revoked", "expired"; with retry_after > 0 the answer is 429 instead of 401.
        self.failure = failure
        self.used_previous = used_previous
        self.key_id = key_id
        self.retry_after = retry_after


class KeyVerifier:
    """Checks presented keys against their rows, with the failure limits of the module
    docstring. Counts its bcrypt checks (tests and benchmarks read `bcrypt_checks`)."""

    def __init__(self, limiter, rows=None):
        self.limiter = limiter
        self.rows = rows or AGENT_ROWS
        self.bcrypt_checks = 0
        self._count_lock = threading.Lock()

    def refuse(self, failure, address, agent=None, key_id=None):
        """A refusal, charged to the key id when one is known, else to the address."""
        charged = ("key id", key_id) if agent is not None else ("address", address)
        return KeyCheck(agent, failure, key_id=key_id, retry_after=self.limiter.take(charged))

    def check(self, presented, address):
        key_id = key_id_of(presented)
        if key_id is None:
            return self.refuse("malformed", address)
        agent = self.rows.get(key_id)
        if agent is None:
            return self.refuse("unknown_key", address, key_id=key_id)
        current = key_id == agent.api_key_id
        if current and agent.api_key_hash == REVOKED_HASH:
            return self.refuse("revoked", address, agent, key_id)
        if not current and (agent.prev_key_expires_at is None or
                            agent.prev_key_expires_at <= utcnow()):
            return self.refuse("expired", address, agent, key_id)
        hashed = agent.api_key_hash if current else agent.prev_key_hash
        stored = agent.api_key_fingerprint if current else agent.prev_key_fingerprint
        if stored:
            if hmac.compare_digest(fingerprint(presented), stored):
                return KeyCheck(agent, used_previous=not current, key_id=key_id)
            return self.refuse("bad_key", address, agent, key_id)
        # A key from before fingerprints: bcrypt, within this key id's budget.
        wait = self.limiter.take(("key id", key_id))
        if wait:
            return KeyCheck(agent, "bad_key", key_id=key_id, retry_after=wait)
        with self._count_lock:
            self.bcrypt_checks += 1
        if not check_secret(presented, hashed):
            return KeyCheck(agent, "bad_key", key_id=key_id)
        self.limiter.give_back(("key id", key_id))
        self.remember_fingerprint(agent, presented, current)
        return KeyCheck(agent, used_previous=not current, key_id=key_id)

    def remember_fingerprint(self, agent, presented, current):
        """Store the fingerprint of a key bcrypt just accepted, if its hash is still the
        row's: from now on every process recognises it without bcrypt."""
        models.store_key_fingerprint(agent, fingerprint(presented), current)
        self.rows.forget(agent)


def note_new_key_in_use(agent):
    """The agent authenticated with its current key: retire the previous one, once."""
    if agent.prev_key_id is None and agent.pending_key_box is None:
        return
    now = utcnow()
    with database_proxy.atomic():
        retired = models.retire_previous_key(agent.id, now)
        if retired:
            models.record_auth_event("key_switched", server_id=agent.server_id,
                                     key_id=agent.api_key_id)
    AGENT_ROWS.forget(agent)


def pending_key_for(agent, secret):
    """The new key to hand to an agent still using its previous one, or None."""
    if not agent.pending_key_box:
        return None
    return unseal(secret, agent.pending_key_box)
