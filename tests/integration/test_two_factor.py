"""TOTP two-factor login against the real panel under Waitress, on SQLite and PostgreSQL:
enrolment on /account, the second login step, the login limiter covering it (also under
concurrency), replayed codes, recovery codes, turning it off, the staff requirement and the
CLI's reset. Codes are computed here from the secret the page showed, as a phone would."""
import datetime
import re
import threading
import time
import urllib.parse

import pytest

from panel import auth, keys, models, operations, totp
from panel import settings as settings_module
from panel.db import utcnow
from tests.conftest import TEST_BCRYPT_ROUNDS, http_request, start_panel, stop_panel
from tests.integration.test_auth import panel_cli
from tests.integration.test_dashboard import PASSWORD, Browser
from tests.integration.test_dashboard_pages import csrf

HTML = {"Accept": "text/html"}


def post(browser, path, form, csrf_from="/account"):
    return browser.request("POST", path, form={**form, "csrf_token": csrf(browser, csrf_from)},
                           headers=HTML)


def code_for(secret, step):
    return totp.hotp(totp.secret_key(secret), step)


def wrong_codes(secret, step, count):
    """Six-digit codes that no step near `step` has."""
    near = {code_for(secret, n) for n in range(step - 3, step + 4)}
    return [code for code in (f"{n:06d}" for n in range(count + len(near)))
            if code not in near][:count]


def enrol(browser):
    """Set two-factor up as a user would: -> (secret, recovery codes, the step confirmed)."""
    assert post(browser, "/account/two-factor/setup", {}).status == 303
    page = browser.request("GET", "/account").text
    secret = re.search(r'id="totp-secret" class="secret">([A-Z2-7 ]+)</code>', page).group(1)
    secret = secret.replace(" ", "")
    link = re.search(r'id="totp-link" href="([^"]+)"', page).group(1)
    assert link.replace("&amp;", "&") == \
        f"otpauth://totp/mPanel:{browser.username}?secret={secret}&issuer=mPanel"
    step = totp.step_at(time.time())
    confirmed = post(browser, "/account/two-factor/confirm", {"code": code_for(secret, step),
                                                              "password": browser.password})
    assert confirmed.status == 200, confirmed.text
    assert confirmed.headers["cache-control"] == "no-store"
    codes = re.search(r'id="recovery-codes"[^>]*>([^<]+)</pre>', confirmed.text).group(1)
    return secret, codes.split("\n"), step


def logged_in_browser(panel, username="admin", role="admin"):
    operations.set_admin(username, PASSWORD, TEST_BCRYPT_ROUNDS, role=role)
    browser = Browser(panel)
    browser.username = username
    assert browser.login(username).status == 303
    return browser


def log_out(browser):
    assert post(browser, "/logout", {}).status in (302, 303)
    assert "mpanel_session" not in browser.cookies


def password_step(browser):
    """Log in with the password: -> the answer (a redirect to the code step)."""
    answer = browser.login(browser.username)
    assert answer.status == 303 and answer.headers["location"].endswith("/login/code")
    assert "mpanel_session" not in browser.cookies  # not logged in yet
    return answer


def send_code(browser, code):
    return post(browser, "/login/code", {"code": code}, csrf_from="/login/code")


def event_details(kind):
    return [event.detail for event in models.AuthEvent.select()
            .where(models.AuthEvent.kind == kind)]


def test_enrol_then_login_needs_the_code_once_and_a_recovery_code_works_once(panel):
    browser = logged_in_browser(panel)
    secret, codes, step = enrol(browser)
    assert len(codes) == totp.RECOVERY_CODE_COUNT
    # Stored sealed with the panel's secret (keys.seal), never in the clear.
    row = models.admin_by_username("admin")
    panel_secret = settings_module.secret_bytes(
        settings_module.Settings(data_dir=panel.log_path.parent))
    assert secret not in row.totp_secret_box
    assert keys.unseal(panel_secret, row.totp_secret_box) == secret
    assert row.totp_last_step == step
    log_out(browser)

    # The password alone no longer logs in; the code step does.
    password_step(browser)
    assert browser.request("GET", "/servers").status in (302, 303)
    # (Each refusal below spends one of the user's 5 login attempts; wrong codes: the next test.)
    # The code confirming enrolment was step `step`: it is spent; the next one is good.
    replayed = send_code(browser, code_for(secret, step))
    assert replayed.status == 401 and "already used" in replayed.text
    right = send_code(browser, code_for(secret, step + 1))
    assert right.status == 303 and right.headers["location"].endswith("/servers")
    assert browser.request("GET", "/servers").status == 200
    log_out(browser)

    # The same code again, at a new login: refused as a replay.
    password_step(browser)
    again = send_code(browser, code_for(secret, step + 1))
    assert again.status == 401 and "already used" in again.text
    # A recovery code, as typed from paper (upper case, no dashes), logs in once.
    recovery = send_code(browser, codes[3].upper().replace("-", ""))
    assert recovery.status == 303
    account = browser.request("GET", "/account").text
    assert f'id="recovery-codes-left">{totp.RECOVERY_CODE_COUNT - 1}<' in account
    log_out(browser)
    password_step(browser)
    assert send_code(browser, codes[3]).status == 401
    assert send_code(browser, codes[4]).status == 303

    # Off with the password; then the password alone logs in again.
    refused = post(browser, "/account/two-factor/disable", {"password": "not it"})
    assert refused.status == 403 and "stays on" in refused.text
    off = post(browser, "/account/two-factor/disable", {"password": PASSWORD})
    assert off.status == 200 and "Two-factor is off" in off.text
    assert models.recovery_codes_left(row.id) == 0
    log_out(browser)
    assert browser.login().headers["location"].endswith("/servers")

    # The security log has each step, and no secret or code.
    kinds = {event.kind for event in models.AuthEvent.select()}
    assert {"two_factor_enabled", "two_factor_failed", "recovery_code_used",
            "two_factor_disabled", "login_ok"} <= kinds
    logged = " ".join(event.detail or "" for event in models.AuthEvent.select())
    for secret_text in [secret, code_for(secret, step), code_for(secret, step + 1),
                        *codes, *(code.replace("-", "") for code in codes)]:
        assert secret_text.lower() not in logged.lower()
    assert event_details("recovery_code_used") == ["user admin: 9 left", "user admin: 8 left"]
    security = browser.request("GET", "/security").text
    assert "two factor enabled" in security and "recovery code used" in security


def test_turning_two_factor_off_with_a_code_refuses_a_used_one(panel):
    browser = logged_in_browser(panel)
    secret, _, step = enrol(browser)
    used = post(browser, "/account/two-factor/disable", {"code": code_for(secret, step)})
    assert used.status == 403 and "already used" in used.text
    off = post(browser, "/account/two-factor/disable", {"code": code_for(secret, step + 1)})
    assert off.status == 200 and "Two-factor is off" in off.text
    assert event_details("two_factor_disabled") == ["user admin, confirmed with a code"]


def test_enrolment_needs_a_right_code_and_csrf(panel):
    browser = logged_in_browser(panel)
    without_token = browser.request("POST", "/account/two-factor/setup", form={}, headers=HTML)
    assert without_token.status == 403
    assert post(browser, "/account/two-factor/setup", {}).status == 303
    wrong = post(browser, "/account/two-factor/confirm", {"code": "12345x",
                                                          "password": browser.password})
    assert wrong.status == 400 and "not right" in wrong.text
    assert models.admin_by_username("admin").totp_enabled_at is None
    # Pending is not on: the password still logs in alone.
    log_out(browser)
    assert browser.login().headers["location"].endswith("/servers")


def test_wrong_codes_spend_the_login_limit_and_then_even_the_right_code_waits(panel):
    browser = logged_in_browser(panel)
    secret, _, step = enrol(browser)
    log_out(browser)
    password_step(browser)  # a right password gives its attempt back
    answers = [send_code(browser, code) for code in wrong_codes(secret, step, 6)]
    assert [answer.status for answer in answers] == [401] * 5 + [429]
    assert "Wrong code" in answers[0].text
    right = send_code(browser, code_for(secret, step + 1))
    assert right.status == 429 and "Too many failed logins" in right.text
    assert "retry-after" in right.headers
    # The same budget as passwords: the password step waits too.
    assert browser.login().status == 429
    failed = models.AuthEvent.select().where(models.AuthEvent.kind == "two_factor_failed")
    assert sum(row.occurrences for row in failed) == 5


def test_concurrent_wrong_codes_get_no_more_than_the_limit_checked(panel, tmp_path):
    """Twenty wrong codes at once under one challenge, split over two panel processes on one
    database: exactly MPANEL_LOGIN_FAILURE_LIMIT (5) are checked (401), the rest 429 — the
    attempt is taken in the database before the code is checked."""
    browser = logged_in_browser(panel)
    secret, _, step = enrol(browser)
    log_out(browser)
    password_step(browser)
    page = browser.request("GET", "/login/code").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    cookie = "; ".join(f"{k}={v}" for k, v in browser.cookies.items())
    body = urllib.parse.urlencode({"csrf_token": token,
                                   "code": wrong_codes(secret, step, 1)[0]})
    replica = start_panel(panel.database_url, tmp_path / "replica.log")
    try:
        barrier = threading.Barrier(20)
        statuses = []

        def attempt(target):
            barrier.wait(timeout=30)
            statuses.append(http_request(target, "POST", "/login/code", body=body, headers={
                "Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"}).status)

        threads = [threading.Thread(target=attempt, args=(target,))
                   for target in [panel, replica] * 10]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        stop_panel(replica)
    assert sorted(statuses) == [401] * 5 + [429] * 15
    failed = models.AuthEvent.select().where(models.AuthEvent.kind == "two_factor_failed")
    assert sum(row.occurrences for row in failed) == 5


def test_the_code_step_without_a_challenge_goes_back_to_the_password(panel):
    browser = logged_in_browser(panel)
    secret, _, step = enrol(browser)
    log_out(browser)
    assert browser.request("GET", "/login/code").status in (302, 303)
    password_step(browser)
    token = csrf(browser, "/login/code")
    models.end_login_challenge(models.LoginChallenge.get().token_hash)  # expired, say
    answer = browser.request("POST", "/login/code", headers=HTML, form={
        "csrf_token": token, "code": code_for(secret, step + 1)})
    assert answer.status == 401 and "enter your password again" in answer.text
    assert "mpanel_session" not in browser.cookies


@pytest.fixture
def strict_panel(backend_url, database, tmp_path):
    panel = start_panel(backend_url, tmp_path / "panel.log",
                        {"MPANEL_REQUIRE_STAFF_TWO_FACTOR": "1"})
    yield panel
    stop_panel(panel)


@pytest.mark.parametrize("role", ["admin", "viewer"])
def test_required_for_staff_sends_a_user_without_it_to_enrol_first(strict_panel, role):
    browser = logged_in_browser(strict_panel, "staff", role)
    for path in ("/servers", "/alerts"):
        sent = browser.request("GET", path)
        assert sent.status in (302, 303) and sent.headers["location"].endswith("/account")
    htmx = browser.request("GET", "/servers", headers={"HX-Request": "true"})
    assert htmx.headers.get("hx-redirect") == "/account"
    refused = post(browser, "/servers", {"name": "sneaky"})
    assert refused.status == 403 and "two-factor" in refused.text
    assert "must use two-factor" in browser.request("GET", "/account").text
    enrol(browser)
    assert browser.request("GET", "/servers").status == 200


def test_reset_two_factor_from_the_cli_lets_a_locked_out_user_in_with_the_password(panel):
    browser = logged_in_browser(panel)
    enrol(browser)
    log_out(browser)
    done = panel_cli(panel, "reset-two-factor", "admin")
    assert done.returncode == 0 and "is off" in done.stdout, done.stderr
    assert browser.login().headers["location"].endswith("/servers")
    assert event_details("two_factor_reset") == ["user admin, from the command line"]
    unknown = panel_cli(panel, "reset-two-factor", "nobody")
    assert unknown.returncode == 2 and "no user named 'nobody'" in unknown.stderr


def test_a_login_waiting_for_its_code_is_pruned_after_it_expires(panel):
    browser = logged_in_browser(panel)
    enrol(browser)
    log_out(browser)
    password_step(browser)
    assert models.prune_login_challenges(utcnow()) == 0  # still waiting
    later = utcnow() + datetime.timedelta(minutes=auth.CHALLENGE_MINUTES + 1)
    assert models.prune_login_challenges(later) == 1


def test_turning_two_factor_on_asks_for_the_password_again(panel):
    """A stolen session alone cannot tie the account to the thief's phone (and so lock its
    owner out): the right code is not enough without the account's password, and wrong
    passwords spend the login limit as at login."""
    browser = logged_in_browser(panel)
    assert post(browser, "/account/two-factor/setup", {}).status == 303
    page = browser.request("GET", "/account").text
    assert 'name="password" type="password" autocomplete="current-password" required' in page
    secret = re.search(r'id="totp-secret" class="secret">([A-Z2-7 ]+)</code>',
                       page).group(1).replace(" ", "")
    for password in ("", "not the password"):
        refused = post(browser, "/account/two-factor/confirm", {
            "code": code_for(secret, totp.step_at(time.time())), "password": password})
        assert refused.status == 403 and "password is not right" in refused.text
        assert models.admin_by_username("admin").totp_enabled_at is None
    assert len(event_details("two_factor_failed")) >= 1
    assert "wrong password to turn two-factor on" in event_details("two_factor_failed")[0]
    enrol(browser)  # the password and the code: on
    assert models.admin_by_username("admin").totp_enabled_at is not None
