"""API tokens for /api/v1 (api_v1.py): their format, storage, checking under failure limits,
creation and revocation.

A token looks like `mpt_<token id>_<secret>`, the scheme of agent keys (keys.py): the token id
is public and indexed, so a request costs one index probe, never a scan over hashes; the secret
is 256 random bits. Only the SHA-256 of the whole token is stored. bcrypt is for secrets a
person chose, which an attacker holding a database dump can guess; nobody guesses 256 random
bits, fast hash or slow, so bcrypt would only cost every API request ~50 ms of CPU. The
stored hash is compared in constant time.

What a token opens is an access.Access, the same a page user gets, so every query of the API
is scoped exactly as the pages are: its scope (staff-wide or one customer's; read-only or
read-write) as created, never more than its owner may now do (a user later made read-only, or
moved to another customer, has tokens that follow). Revoked and expired tokens are refused at
once: each request reads the token's row.

Refusals are limited per process as agent keys' are (keys.FailureLimiter, the same
MPANEL_AUTH_FAILURE_LIMIT): a malformed or unknown token is charged to the client address, a
known token id's refusals (a wrong secret, revoked, expired) to that id, and a presented token
is compared with its row's hash *before* any limit is consulted, so the right token always
passes. Every refusal is counted into the security log (never the secret, at most the id).
"""
import dataclasses
import datetime
import hashlib
import hmac
import re
import secrets

from . import access as access_module
from . import models
from .db import database_proxy, utcnow
from .errors import unshowable

TOKEN_PREFIX = "mpt_"
TOKEN_PATTERN = re.compile(r"^mpt_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
NAME_MAX = 64
MAX_EXPIRY_DAYS = 3650
# The scopes a token may have: (may write, label). A user picks one no wider than their own.
SCOPES = {"read": (False, "read-only"), "write": (True, "read-write")}


def new_token():
    """-> (token, token id). The token is shown once; only its SHA-256 is stored."""
    token_id = secrets.token_hex(6)
    return f"{TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(32)}", token_id


def token_id_of(presented):
    """The public id of a well-formed token, else None. Safe to log."""
    match = TOKEN_PATTERN.match(presented or "")
    return match.group(1) if match else None


def token_hash(presented):
    return hashlib.sha256(presented.encode()).hexdigest()


def scope_label(token):
    where = f"customer {token.customer.name}" if token.customer_id else "staff-wide"
    return f"{SCOPES['write' if token.may_write else 'read'][1]}, {where}"


def access_of(token):
    """What `token` opens: its own scope, within what its owner may do now."""
    owner = access_module.Access.of(token.admin)
    if owner.customer_id is not None and token.customer_id != owner.customer_id:
        return access_module.NOBODY  # the owner moved to another customer since
    return access_module.Access(customer_id=token.customer_id,
                                may_change=token.may_write and owner.may_change)


# ===== Checking a presented token ===============================================================

@dataclasses.dataclass
class TokenCheck:
    token: object = None
    # None, or why it was refused: "missing", "malformed", "unknown_token", "bad_token",
    # "revoked", "expired"; with retry_after > 0 the answer is 429 instead of 401.
    failure: str | None = None
    token_id: str | None = None
    retry_after: float = 0


class TokenVerifier:
    def __init__(self, limiter):
        self.limiter = limiter

    def refuse(self, failure, address, token_id=None, known=False):
        charged = ("token id", token_id) if known else ("address", address)
        return TokenCheck(None, failure, token_id, self.limiter.take(charged))

    def check(self, presented, address, now=None):
        token_id = token_id_of(presented)
        if token_id is None:
            return self.refuse("malformed", address)
        token = models.token_by_token_id(token_id)
        if token is None:
            return self.refuse("unknown_token", address, token_id)
        if not hmac.compare_digest(token_hash(presented), token.secret_hash):
            return self.refuse("bad_token", address, token_id, known=True)
        now = now or utcnow()
        if token.revoked_at is not None:
            return self.refuse("revoked", address, token_id, known=True)
        if token.expires_at is not None and token.expires_at <= now:
            return self.refuse("expired", address, token_id, known=True)
        models.note_token_used(token.id, now)
        return TokenCheck(token, token_id=token_id)


# ===== Life cycle ===============================================================================

def create(admin, name, scope, customer_id=None, expires_days=None, client_addr=None):
    """A new token of `admin`'s -> (row, token), the token to be shown once. Raises ValueError
    naming what is wrong: a customer user's token is their customer's and never wider than
    their role; a staff user's is staff-wide or bound to the customer they name."""
    name = (name or "").strip()
    if not name:
        raise ValueError("token name must not be empty")
    if len(name) > NAME_MAX:
        raise ValueError(f"token name must be at most {NAME_MAX} characters")
    if any(unshowable(ch) for ch in name):  # the rule for every name (operations.py)
        raise ValueError("token name must not contain control or format characters")
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}")
    owner = access_module.Access.of(admin)
    may_write = SCOPES[scope][0]
    if may_write and not owner.may_change:
        raise ValueError("this account is read-only: its tokens can only be read-only")
    if not owner.staff:
        if customer_id not in (None, owner.customer_id):
            raise ValueError("a customer user's tokens are bound to their own customer")
        customer_id = owner.customer_id
    elif customer_id is not None and models.by_id(models.Customer, customer_id) is None:
        raise ValueError(f"no customer with id {customer_id}")
    expires_at = None
    if expires_days is not None:
        if not 1 <= expires_days <= MAX_EXPIRY_DAYS:
            raise ValueError(f"expiry must be 1 to {MAX_EXPIRY_DAYS} days, or none")
        expires_at = utcnow() + datetime.timedelta(days=expires_days)
    token, token_id = new_token()
    with database_proxy.atomic():
        row = models.ApiToken.create(token_id=token_id, secret_hash=token_hash(token), name=name,
                                     admin=admin.id, customer=customer_id, may_write=may_write,
                                     expires_at=expires_at)
        models.record_auth_event(
            "token_created", client_addr=client_addr, key_id=token_id,
            detail=f"user {admin.username}: {name!r}, {SCOPES[scope][1]}, "
                   f"{'customer ' + str(customer_id) if customer_id else 'staff-wide'}"
                   f"{f', expires in {expires_days} d' if expires_days else ''}")
    return row, token


def revoke(admin, token, client_addr=None, via="the account page"):
    """Revoke one of `admin`'s tokens (at once: every request reads its row). -> whether it
    was live until now."""
    with database_proxy.atomic():
        revoked = models.revoke_token(token.id, utcnow())
        if revoked:
            models.record_auth_event("token_revoked", client_addr=client_addr,
                                     key_id=token.token_id,
                                     detail=f"user {admin.username}: {token.name!r}, from {via}")
    return revoked
