"""panel/totp.py against the RFCs' own test vectors, and the rules around them: one step of
drift either side, a used step never accepted again, recovery codes hashed and read as typed."""
import base64
import hashlib
import urllib.parse

import pytest

from panel import totp

# RFC 4226 appendix D and RFC 6238 appendix B: the ASCII secret "12345678901234567890".
RFC_KEY = b"12345678901234567890"
HOTP_VECTORS = ["755224", "287082", "359152", "969429", "338314",
                "254676", "287922", "162583", "399871", "520489"]
# RFC 6238 appendix B, the SHA1 column (8 digits).
TOTP_SHA1_VECTORS = [(59, "94287082"), (1111111109, "07081804"), (1111111111, "14050471"),
                     (1234567890, "89005924"), (2000000000, "69279037"),
                     (20000000000, "65353130")]


@pytest.mark.parametrize("counter,expected", list(enumerate(HOTP_VECTORS)))
def test_hotp_matches_rfc_4226_appendix_d(counter, expected):
    assert totp.hotp(RFC_KEY, counter) == expected


@pytest.mark.parametrize("unix_time,expected", TOTP_SHA1_VECTORS)
def test_totp_matches_rfc_6238_appendix_b_sha1(unix_time, expected):
    assert totp.totp(RFC_KEY, unix_time, digits=8) == expected


def test_a_secret_round_trips_through_base32_as_a_person_types_it():
    secret = totp.new_secret()
    assert len(base64.b32decode(secret + "=" * (-len(secret) % 8))) == totp.SECRET_BYTES
    typed = totp.grouped(secret).lower()
    assert " " in typed and totp.secret_key(typed) == totp.secret_key(secret)


def test_the_otpauth_link_names_issuer_account_and_secret():
    link = totp.provisioning_uri("ops admin", "JBSWY3DPEHPK3PXP")
    parts = urllib.parse.urlsplit(link)
    assert (parts.scheme, parts.netloc) == ("otpauth", "totp")
    assert urllib.parse.unquote(parts.path) == "/mPanel:ops admin"
    assert urllib.parse.parse_qs(parts.query) == {"secret": ["JBSWY3DPEHPK3PXP"],
                                                  "issuer": ["mPanel"]}


SECRET = base64.b32encode(RFC_KEY).decode()
NOW = 1_800_000_015.0  # 15 s into a step


def code_at(step):
    return totp.hotp(RFC_KEY, step)


def test_the_current_step_and_one_either_side_are_accepted_and_no_further():
    now = totp.step_at(NOW)
    for offset in (-1, 0, 1):
        assert totp.check_code(SECRET, code_at(now + offset), NOW) == (now + offset, None)
    for offset in (-2, 2):
        assert totp.check_code(SECRET, code_at(now + offset), NOW) == (None, totp.WRONG)


def test_a_step_at_or_before_the_last_used_one_is_a_replay():
    now = totp.step_at(NOW)
    assert totp.check_code(SECRET, code_at(now), NOW, last_step=now) == (None, totp.REPLAYED)
    assert totp.check_code(SECRET, code_at(now - 1), NOW, last_step=now) == \
        (None, totp.REPLAYED)
    # The next step's code is still good after this one was used.
    assert totp.check_code(SECRET, code_at(now + 1), NOW, last_step=now) == (now + 1, None)


@pytest.mark.parametrize("typed", ["", "12345", "1234567", "abcdef", "١٢٣٤٥٦", None])
def test_anything_but_six_ascii_digits_is_wrong(typed):
    assert totp.check_code(SECRET, typed, NOW) == (None, totp.WRONG)


def test_a_code_typed_with_a_space_in_the_middle_is_read():
    now = totp.step_at(NOW)
    code = code_at(now)
    assert totp.check_code(SECRET, f"{code[:3]} {code[3:]}", NOW) == (now, None)


def test_recovery_codes_are_random_distinct_and_stored_as_sha256():
    codes = totp.new_recovery_codes()
    assert len(codes) == totp.RECOVERY_CODE_COUNT == len(set(codes))
    for code in codes:
        letters = code.replace("-", "")
        assert len(letters) == totp.RECOVERY_CODE_LENGTH
        assert totp.recovery_code_hash(code) == hashlib.sha256(letters.encode()).hexdigest()


def test_a_recovery_code_is_read_in_any_case_with_or_without_dashes():
    code = totp.new_recovery_codes(1)[0]
    wanted = totp.recovery_code_hash(code)
    assert totp.recovery_code_hash(code.upper()) == wanted
    assert totp.recovery_code_hash(code.replace("-", " ")) == wanted
    assert totp.recovery_code_hash(code.replace("-", "")) == wanted


@pytest.mark.parametrize("typed", ["", "123456", "abcd-efgh", "llll-llll-llll-llll", None])
def test_text_that_cannot_be_a_recovery_code_has_no_hash(typed):
    assert totp.recovery_code_hash(typed) is None


# ===== Stored: each recovery code and each step used once =======================================

@pytest.fixture
def stored(tmp_path):
    """The models on an SQLite file of this test's own; the binding before is put back."""
    from panel import db, models, operations

    before = db.database_proxy.obj
    database = db.bind(f"sqlite:///{tmp_path / 'panel.db'}")
    db.init_schema(database)
    operations.set_admin("admin", "a long password", 4)
    yield models, models.admin_by_username("admin")
    database.close()
    db.database_proxy.initialize(before)


def test_a_recovery_code_is_stored_hashed_and_spent_once(stored):
    from panel.db import utcnow

    models, admin = stored
    codes = totp.new_recovery_codes()
    models.start_two_factor_enrolment(admin.id, "sealed secret")
    assert models.confirm_two_factor(admin.id, 7, utcnow(),
                                     [totp.recovery_code_hash(code) for code in codes])
    kept = {row.code_hash for row in models.RecoveryCode.select()}
    assert kept == {totp.recovery_code_hash(code) for code in codes}
    assert not any(code.replace("-", "") in hashed for code in codes for hashed in kept)
    assert models.use_recovery_code(admin.id, totp.recovery_code_hash(codes[0]), utcnow())
    assert not models.use_recovery_code(admin.id, totp.recovery_code_hash(codes[0]), utcnow())
    assert models.recovery_codes_left(admin.id) == totp.RECOVERY_CODE_COUNT - 1


def test_a_step_is_accepted_once_and_never_an_earlier_one(stored):
    models, admin = stored
    assert models.accept_totp_step(admin.id, 100)
    assert not models.accept_totp_step(admin.id, 100)
    assert not models.accept_totp_step(admin.id, 99)
    assert models.accept_totp_step(admin.id, 101)


def test_confirming_twice_keeps_the_first_set_of_codes(stored):
    from panel.db import utcnow

    models, admin = stored
    models.start_two_factor_enrolment(admin.id, "sealed secret")
    assert models.confirm_two_factor(admin.id, 7, utcnow(), ["a" * 64])
    assert not models.confirm_two_factor(admin.id, 8, utcnow(), ["b" * 64])
    assert [row.code_hash for row in models.RecoveryCode.select()] == ["a" * 64]
