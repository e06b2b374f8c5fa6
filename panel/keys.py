"""Agent API keys: format, bcrypt storage, the verified-key cache, the failure limiter,
rotation with a grace period and zero-touch handoff, revocation.

A key looks like `agent_<key id>_<secret>`. The key id is public and indexed, so a request
costs one index probe to find its row and — the first time only — one bcrypt check, never a
scan over every hash.

After one successful check the key is remembered in a process-local cache, keyed by an HMAC of
the presented key under a per-process secret (never the key itself), together with the hash it
was checked against. The agent's row is kept for 2 seconds (AgentRows): a key rotated or revoked
— its hash changed — misses the cache at once in the process that did it, and within 2 seconds
in every other panel process (replicas, or a panel when the CLI made the change).

Failed attempts are recorded in `auth_events` and counted per client address and per key id in
a sliding minute (counters are per replica: N replicas allow N times the limit). Past the limit
a request whose key is not already verified gets 429 without costing a bcrypt check; agents
whose keys are cached are never slowed by someone else's failures.

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


# ===== Verified-key cache =======================================================================

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

    def known(self, presented, agent_id, hashed):
        """True when `presented` was verified against exactly this stored hash."""
        with self._lock:
            remembered = self._entries.get(self._fingerprint(presented))
        return remembered is not None and remembered[0] == agent_id and \
            hmac.compare_digest(remembered[1], hashed)

    def check(self, presented, agent_id, hashed):
        """bcrypt, remembering a success."""
        self.bcrypt_checks += 1
        if not check_secret(presented, hashed):
            return False
        fingerprint = self._fingerprint(presented)
        with self._lock:
            self._entries[fingerprint] = (agent_id, hashed)
            self._entries.move_to_end(fingerprint)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)
        return True

    def verify(self, presented, agent_id, hashed):
        return self.known(presented, agent_id, hashed) or self.check(presented, agent_id, hashed)


# ===== Agent rows by key id =====================================================================

class AgentRows:
    """Agent rows by key id, for `ttl` seconds.

    Every report would otherwise read its agent's row; at a thousand reports a second that
    round trip is a fifth of a PostgreSQL panel's work. A key rotated or revoked through this
    process is forgotten at once (forget()); one changed by another process — a replica, or the
    CLI — is seen within `ttl` seconds, which is the promise for other replicas.
    """

    def __init__(self, ttl=2.0, clock=time.monotonic):
        self.ttl, self.clock = ttl, clock
        self._rows = {}
        self._lock = threading.Lock()

    def get(self, key_id):
        now = self.clock()
        with self._lock:
            entry = self._rows.get(key_id)
        if entry is not None and now - entry[1] < self.ttl:
            return entry[0]
        agent = models.agent_by_key_id(key_id)
        if agent is not None:
            with self._lock:
                self._rows[key_id] = (agent, now)
                if len(self._rows) > 200_000:
                    self._rows.clear()
        return agent

    def forget(self, agent):
        with self._lock:
            for key_id in (agent.api_key_id, agent.prev_key_id):
                self._rows.pop(key_id, None)


AGENT_ROWS = AgentRows()


# ===== Failure limiter ==========================================================================

class FailureLimiter:
    """Failures per key (client address, key id) in a sliding window; per replica."""

    def __init__(self, limit=10, window=60.0, clock=time.monotonic):
        self.limit, self.window, self.clock = limit, window, clock
        self._failures = collections.defaultdict(collections.deque)
        self._lock = threading.Lock()

    def _recent(self, key, now):
        stamps = self._failures.get(key)
        if stamps is None:
            return None
        while stamps and stamps[0] <= now - self.window:
            stamps.popleft()
        if not stamps:
            del self._failures[key]
            return None
        return stamps

    def retry_after(self, *keys):
        """Seconds until the busiest of `keys` drops under the limit; 0 when none is over."""
        now = self.clock()
        wait = 0.0
        with self._lock:
            for key in keys:
                stamps = self._recent(key, now) if key else None
                if stamps is not None and len(stamps) >= self.limit:
                    wait = max(wait, stamps[-self.limit] + self.window - now)
        return wait

    def fail(self, *keys):
        now = self.clock()
        with self._lock:
            for key in keys:
                if key:
                    self._failures[key].append(now)
            if len(self._failures) > 100_000:  # an address sweep must not grow memory forever
                for key in list(self._failures):
                    self._recent(key, now)


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
        models.Agent.update(
            api_key_id=key_id, api_key_hash=hash_secret(key, rounds),
            prev_key_id=agent.api_key_id if keep_old else None,
            prev_key_hash=agent.api_key_hash if keep_old else None,
            prev_key_expires_at=now + grace if keep_old else None,
            pending_key_box=seal(secret, key) if keep_old else None,
            key_rotated_at=now, key_switched_at=None, updated_at=now,
            # A revoked server that gets a new key is back in service.
            status=("active" if agent.last_seen else "pending") if agent.status == "revoked"
            else agent.status,
        ).where(models.Agent.id == agent.id).execute()
        models.record_auth_event("key_rotated", server_id=agent.server_id,
                                 key_id=key_id, detail=f"grace {int(grace.total_seconds())} s")
    AGENT_ROWS.forget(agent)
    return key


def revoke(agent):
    """Cut the agent's keys off at once (every replica: the stored hash is gone)."""
    now = utcnow()
    with database_proxy.atomic():
        models.Agent.update(api_key_hash=REVOKED_HASH, prev_key_id=None, prev_key_hash=None,
                            prev_key_expires_at=None, pending_key_box=None, status="revoked",
                            updated_at=now).where(models.Agent.id == agent.id).execute()
        models.record_auth_event("key_revoked", server_id=agent.server_id,
                                 key_id=agent.api_key_id)
    AGENT_ROWS.forget(agent)


class KeyCheck:
    """The outcome of checking one presented key."""

    def __init__(self, agent=None, failure=None, used_previous=False):
        self.agent = agent
        self.failure = failure  # None, "malformed", "unknown_key", "bad_key", "revoked", "expired"
        self.used_previous = used_previous


def check_key(presented, cache, rows=None):
    """Find the agent for `presented` and verify it (bcrypt only on a cache miss)."""
    key_id = key_id_of(presented)
    if key_id is None:
        return KeyCheck(failure="malformed")
    agent = (rows or AGENT_ROWS).get(key_id)
    if agent is None:
        return KeyCheck(failure="unknown_key")
    if key_id == agent.api_key_id:
        if agent.api_key_hash == REVOKED_HASH:
            return KeyCheck(agent, failure="revoked")
        if cache.verify(presented, agent.id, agent.api_key_hash):
            return KeyCheck(agent)
        return KeyCheck(agent, failure="bad_key")
    # The previous key, during its grace period.
    if agent.prev_key_expires_at is None or agent.prev_key_expires_at <= utcnow():
        return KeyCheck(agent, failure="expired")
    if cache.verify(presented, agent.id, agent.prev_key_hash):
        return KeyCheck(agent, used_previous=True)
    return KeyCheck(agent, failure="bad_key")


def cached_without_bcrypt(presented, cache, rows=None):
    """True when `presented` is a key this process verified against the row's current hash —
    so the failure limiter need not stand in its way."""
    key_id = key_id_of(presented)
    if key_id is None:
        return False
    agent = (rows or AGENT_ROWS).get(key_id)
    if agent is None:
        return False
    hashed = agent.api_key_hash if key_id == agent.api_key_id else agent.prev_key_hash
    return bool(hashed) and cache.known(presented, agent.id, hashed)


def note_new_key_in_use(agent):
    """The agent authenticated with its current key: retire the previous one, once."""
    if agent.prev_key_id is None and agent.pending_key_box is None:
        return
    now = utcnow()
    with database_proxy.atomic():
        retired = models.Agent.update(prev_key_id=None, prev_key_hash=None,
                                      prev_key_expires_at=None, pending_key_box=None,
                                      key_switched_at=now) \
            .where((models.Agent.id == agent.id) & models.Agent.prev_key_id.is_null(False)) \
            .execute()
        if retired:
            models.record_auth_event("key_switched", server_id=agent.server_id,
                                     key_id=agent.api_key_id)
    AGENT_ROWS.forget(agent)


def pending_key_for(agent, secret):
    """The new key to hand to an agent still using its previous one, or None."""
    if not agent.pending_key_box:
        return None
    return unseal(secret, agent.pending_key_box)
