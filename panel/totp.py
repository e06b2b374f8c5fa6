"""Two-factor codes on the standard library: RFC 4226 HOTP, RFC 6238 TOTP (HMAC-SHA1, 30 s
steps, 6 digits, as every authenticator app reads an `otpauth://totp/` link), and the recovery
codes handed out beside them.

Pure functions: no database, no clock of their own (the caller passes the time), so the RFC
test vectors and the drift window are checked alone (tests/unit/test_totp.py). Which step a
user last used, and that a code is accepted only once, is stored per user (models.Admin
`totp_last_step`, taken by models.accept_totp_step in one statement).
"""
import base64
import hashlib
import hmac
import secrets
import struct
import urllib.parse

ISSUER = "mPanel"
STEP_SECONDS = 30
DIGITS = 6
# Steps accepted either side of the current one: a phone's clock a little off, or a code typed
# as it changed (RFC 6238 §5.2 recommends at most one).
DRIFT_STEPS = 1
SECRET_BYTES = 20  # 160 bits: RFC 4226 §4 asks for at least 128, recommends 160
RECOVERY_CODE_COUNT = 10
# 16 characters of a 32-letter alphabet: 80 random bits, beyond guessing from a database dump
# even with a fast hash (hence SHA-256, not bcrypt), and quick to type from paper.
RECOVERY_CODE_LENGTH = 16
RECOVERY_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"  # no l, o, 0, 1: read aloud or misread


def hotp(key, counter, digits=DIGITS, digest=hashlib.sha1):
    """RFC 4226 §5.3: the code of `counter` (an integer) under `key` (bytes)."""
    mac = hmac.new(key, struct.pack(">Q", counter), digest).digest()
    offset = mac[-1] & 0x0F  # dynamic truncation
    number = struct.unpack(">I", mac[offset:offset + 4])[0] & 0x7FFFFFFF
    return str(number % 10 ** digits).zfill(digits)


def step_at(unix_time, step=STEP_SECONDS):
    """RFC 6238 §4.2: T = floor((time - T0) / X), T0 = 0."""
    return int(unix_time // step)


def totp(key, unix_time, step=STEP_SECONDS, digits=DIGITS, digest=hashlib.sha1):
    """RFC 6238: the code at `unix_time` (seconds since the epoch)."""
    return hotp(key, step_at(unix_time, step), digits, digest)


# ===== Secrets ==================================================================================

def new_secret():
    """A random secret, base32 without padding: what the otpauth link and the page show."""
    return base64.b32encode(secrets.token_bytes(SECRET_BYTES)).decode().rstrip("=")


def secret_key(secret):
    """The key bytes of a base32 secret (spaces and case as a person may type them)."""
    cleaned = secret.replace(" ", "").upper()
    return base64.b32decode(cleaned + "=" * (-len(cleaned) % 8))


def grouped(secret):
    """The secret in groups of four, for typing it into an app by hand."""
    return " ".join(secret[i:i + 4] for i in range(0, len(secret), 4))


def provisioning_uri(username, secret):
    """The otpauth:// link authenticator apps read (Google Authenticator's Key Uri Format):
    label `issuer:account`, issuer again as a parameter; the defaults (SHA1, 6 digits, 30 s)
    are what this module uses, so they are not spelled out."""
    label = urllib.parse.quote(f"{ISSUER}:{username}", safe=":@")
    return f"otpauth://totp/{label}?secret={secret}&issuer={urllib.parse.quote(ISSUER)}"


# ===== Verification =============================================================================

WRONG, REPLAYED = "wrong", "replayed"


def looks_like_code(text):
    return len(text) == DIGITS and text.isascii() and text.isdigit()


def check_code(secret, code, unix_time, last_step=None):
    """-> (step, None) for a code of the current step or one either side that is later than
    `last_step`; (None, REPLAYED) when the code is right but its step was already used; (None,
    WRONG) otherwise. Every candidate is compared in constant time."""
    code = (code or "").strip().replace(" ", "")
    if not looks_like_code(code):
        return None, WRONG
    key = secret_key(secret)
    now = step_at(unix_time)
    matched = [step for step in range(now - DRIFT_STEPS, now + DRIFT_STEPS + 1)
               if hmac.compare_digest(hotp(key, step).encode(), code.encode())]
    fresh = [step for step in matched if last_step is None or step > last_step]
    if fresh:
        return max(fresh), None
    return None, REPLAYED if matched else WRONG


# ===== Recovery codes ===========================================================================

def new_recovery_codes(count=RECOVERY_CODE_COUNT):
    """Random one-time codes, shown once as xxxx-xxxx-xxxx-xxxx."""
    codes = []
    for _ in range(count):
        raw = "".join(secrets.choice(RECOVERY_ALPHABET) for _ in range(RECOVERY_CODE_LENGTH))
        codes.append("-".join(raw[i:i + 4] for i in range(0, len(raw), 4)))
    return codes


def normalised_recovery_code(text):
    """A recovery code as typed (any case, with or without dashes and spaces) -> its letters,
    or None when it cannot be one."""
    letters = "".join(ch for ch in (text or "").lower() if ch not in "- ")
    if len(letters) != RECOVERY_CODE_LENGTH or any(ch not in RECOVERY_ALPHABET for ch in letters):
        return None
    return letters


def recovery_code_hash(text):
    """SHA-256 (hex) of a recovery code's letters: what the database keeps. None for text that
    cannot be a recovery code."""
    letters = normalised_recovery_code(text)
    return None if letters is None else hashlib.sha256(letters.encode()).hexdigest()
