"""A user's own account: two-factor set-up and removal on `/account` (any logged-in user), and
login's second step (`/login/code`) after the password step of views.login.

Two-factor is TOTP (totp.py). The secret is kept sealed with the panel's secret (keys.seal, as a
rotated agent key is) from the moment set-up starts; it is on once a current code confirmed it,
and then ten recovery codes are shown, once. A code is accepted once (models.accept_totp_step),
a recovery code used once (models.use_recovery_code). Every second-factor attempt at login, and
every attempt to turn two-factor off, spends the login limits (auth.login_limits) as a password
attempt does, and is given back when right.
"""
import logging
import time

import bottle

from . import access as access_module
from . import auth, keys, models, tokens, totp
from . import settings as settings_module
from .db import utcnow
from .errors import DATABASE_ERRORS, database_unavailable
from .views import login_page, template

log = logging.getLogger("mpanel.account")

# What the second-factor step answers, by why a code was refused.
_REFUSED_CODES = {
    totp.WRONG: "Wrong code.",
    totp.REPLAYED: "That code was already used: wait for the next one (a new code every "
                   f"{totp.STEP_SECONDS} seconds).",
}


def build_account(settings):
    app = bottle.Bottle()
    secret = settings_module.secret_bytes(settings)

    def second_factor(admin, typed):
        """-> (how, None) when `typed` is a current code of `admin`'s authenticator (its step
        is used up now) or one of its unused recovery codes (spent now); else (None, why)."""
        typed = (typed or "").strip()[:64]
        if totp.looks_like_code(typed.replace(" ", "")):
            shared = keys.unseal(secret, admin.totp_secret_box or "")
            if shared is None:
                # Sealed under another MPANEL_SECRET_KEY: only a recovery code (or the CLI's
                # reset-two-factor) gets this user in now.
                log.warning("two-factor secret unreadable user=%s (was MPANEL_SECRET_KEY "
                            "changed?)", admin.username)
                return None, totp.WRONG
            step, failure = totp.check_code(shared, typed, time.time(), admin.totp_last_step)
            if step is not None and models.accept_totp_step(admin.id, step):
                return "code", None
            return None, failure or totp.REPLAYED  # a concurrent request used that step
        code_hash = totp.recovery_code_hash(typed)
        if code_hash and models.use_recovery_code(admin.id, code_hash, utcnow()):
            return "recovery code", None
        return None, totp.WRONG

    def token_scopes(admin):
        """The scopes this user may give a token: never wider than their own role."""
        writes = access_module.Access.of(admin).may_change
        return [(name, label) for name, (may_write, label) in tokens.SCOPES.items()
                if writes or not may_write]

    # ----- login's second step -----------------------------------------------------------------

    def code_page(message="", status=200):
        bottle.response.status = status
        bottle.response.set_header("Cache-Control", "no-store")
        return template("login_code.tpl", title="Two-factor code · mPanel", message=message,
                        csrf_token=auth.new_login_csrf(settings),
                        minutes=auth.CHALLENGE_MINUTES)

    def back_to_password(message):
        """The challenge is gone (expired, spent, or never there): start again."""
        bottle.response.status = 401
        bottle.response.set_header("WWW-Authenticate", auth.LOGIN_CHALLENGE)
        bottle.response.delete_cookie(auth.CHALLENGE_COOKIE, path="/login")
        return login_page(settings, message)

    @app.get("/login/code")
    def code_form():
        if auth.current_challenge() is None:
            return bottle.redirect("/login")
        return code_page()

    @app.post("/login/code")
    def code_login():
        if not auth.login_csrf_ok():
            return code_page("Your login form expired; please try again.", 403)
        try:
            challenge = auth.current_challenge()
            if challenge is None:
                return back_to_password("Your login expired; enter your password again.")
            return attempt_code(challenge, bottle.request.forms.getunicode("code") or "",
                                auth.client_address(settings))
        except DATABASE_ERRORS as err:
            unavailable = database_unavailable(err)
            bottle.response.set_header("Retry-After", unavailable.headers["Retry-After"])
            return code_page("The panel's database is not answering; please try again in a "
                             "minute.", unavailable.status_code)

    def attempt_code(challenge, typed, address):
        admin = challenge.admin
        limits = auth.login_limits(settings, address, admin.username)
        # As for passwords: taken before the code is checked, in the database, so concurrent
        # guesses on any replica cannot pass a count none of them has added to.
        wait = models.take_attempts(limits, time.time())
        if wait > 0:
            return code_page(auth.throttled_login(wait, address, admin.username), 429)
        how, failure = second_factor(admin, typed)
        if how is None:
            models.record_auth_failure("two_factor_failed", client_addr=address,
                                       detail=f"user {admin.username}: {failure} code at login")
            page = code_page(_REFUSED_CODES[failure], 401)
            bottle.response.set_header("WWW-Authenticate", auth.LOGIN_CHALLENGE)
            return page
        if not models.end_login_challenge(challenge.token_hash):
            return back_to_password("Your login expired; enter your password again.")
        models.give_back_attempts(limits)
        models.record_auth_event("login_ok", client_addr=address,
                                 detail=f"user {admin.username}, with a {how}")
        if how == "recovery code":
            models.record_auth_event(
                "recovery_code_used", client_addr=address,
                detail=f"user {admin.username}: {models.recovery_codes_left(admin.id)} left")
        auth.open_session(admin, settings)
        return bottle.redirect("/servers")

    # ----- the account page --------------------------------------------------------------------

    def account_page(session, error="", notice="", status=200, recovery_codes=None,
                     new_token=None):
        admin = models.admin_by_id(session.admin_id)  # as this request left it
        setup = None
        if admin.totp_secret_box and not auth.two_factor_on(admin):
            shared = keys.unseal(secret, admin.totp_secret_box)
            if shared:
                setup = {"secret": totp.grouped(shared),
                         "uri": totp.provisioning_uri(admin.username, shared)}
        bottle.response.status = status
        # The set-up secret and the recovery codes are in this answer: no cache may keep it.
        bottle.response.set_header("Cache-Control", "no-store")
        return template("account.tpl", title="Account · mPanel", session=session, admin=admin,
                        on=auth.two_factor_on(admin), setup=setup,
                        codes_left=models.recovery_codes_left(admin.id),
                        required=auth.two_factor_required(admin, settings),
                        recovery_codes=recovery_codes, error=error, notice=notice,
                        step_seconds=totp.STEP_SECONDS, tokens=models.tokens_of(admin.id),
                        new_token=new_token, now=utcnow(), scope_label=tokens.scope_label,
                        token_scopes=token_scopes(admin),
                        customers=models.customers() if admin.customer_id is None else [])

    @app.get("/account", auth="account")
    def account(session, access):
        return account_page(session)

    # ----- API tokens (tokens.py): created, listed and revoked by their owner ------------------
    # auth="viewer", not "account": a user who must still set up two-factor gets no token
    # (a token would be a way around the second factor).

    def form_text(name, limit):
        return (bottle.request.forms.getunicode(name) or "").strip()[:limit]

    @app.post("/account/tokens", auth="viewer")
    def create_token(session, access):
        refused = auth.password_refused(settings, session.admin, "login_failed",
                                        "create a token")
        if refused:
            return account_page(session, f"{refused[1]} No token was created.",
                                status=refused[0])
        try:
            customer = form_text("customer_id", 20) if access.staff else ""
            days = form_text("expires_days", 20)
            for field, text in (("customer_id", customer), ("expires_days", days)):
                if text and not (text.isascii() and text.isdigit()):
                    raise ValueError(f"{field} must be a whole number, or empty")
            _row, token = tokens.create(
                session.admin, form_text("name", tokens.NAME_MAX + 1),
                form_text("scope", 10) or "read", int(customer) if customer else None,
                int(days) if days else None, auth.client_address(settings))
        except ValueError as err:
            return account_page(session, str(err), status=400)
        return account_page(session, notice="Token created.", new_token=token)

    @app.post("/account/tokens/<token_id:int>/revoke", auth="viewer")
    def revoke_token(token_id, session, access):
        token = models.token_of(session.admin_id, token_id)
        if token is None:
            bottle.abort(404, f"you have no token with id {token_id}")
        if not tokens.revoke(session.admin, token, auth.client_address(settings)):
            return account_page(session, "That token was already revoked.", status=400)
        return account_page(session, notice=f"Token “{token.name}” revoked.")

    @app.post("/account/two-factor/setup", auth="account")
    def start_setup(session, access):
        if auth.two_factor_on(session.admin):
            return account_page(session, "Two-factor is already on: turn it off first to set "
                                         "it up with a new secret.", status=400)
        models.start_two_factor_enrolment(session.admin_id, keys.seal(secret, totp.new_secret()))
        return bottle.redirect("/account")

    @app.post("/account/two-factor/confirm", auth="account")
    def confirm_setup(session, access):
        admin = session.admin
        if auth.two_factor_on(admin) or not admin.totp_secret_box:
            return account_page(session, "No two-factor set-up is waiting: start one with "
                                         "“Set up two-factor”.", status=400)
        refused = auth.password_refused(settings, admin, "two_factor_failed",
                                        "turn two-factor on")
        if refused:
            return account_page(session, f"{refused[1]} Two-factor stays off.",
                                status=refused[0])
        shared = keys.unseal(secret, admin.totp_secret_box)
        typed = (bottle.request.forms.getunicode("code") or "").strip()[:64]
        step, _ = (None, None) if shared is None else totp.check_code(shared, typed, time.time())
        if step is None:
            return account_page(session, "That code is not right: type the 6 digits your app "
                                         "shows now (is the phone's clock right?).", status=400)
        codes = totp.new_recovery_codes()
        if not models.confirm_two_factor(admin.id, step, utcnow(),
                                         [totp.recovery_code_hash(code) for code in codes]):
            return account_page(session, "This set-up changed meanwhile (another window?): "
                                         "start again.", status=409)
        models.record_auth_event("two_factor_enabled", client_addr=auth.client_address(settings),
                                 detail=f"user {admin.username}")
        return account_page(session, notice="Two-factor is on.", recovery_codes=codes)

    @app.post("/account/two-factor/disable", auth="account")
    def disable(session, access):
        admin, address = session.admin, auth.client_address(settings)
        if not auth.two_factor_on(admin):
            return account_page(session, "Two-factor is not on.", status=400)
        form = bottle.request.forms
        code, password = form.getunicode("code") or "", form.getunicode("password") or ""
        limits = auth.login_limits(settings, address, admin.username)
        wait = models.take_attempts(limits, time.time())
        if wait > 0:
            return account_page(session, auth.throttled_login(wait, address, admin.username),
                                status=429)
        if code.strip():
            how, failure = second_factor(admin, code)
        elif password and keys.check_secret(password[:72], admin.password_hash):
            how, failure = "password", None
        else:
            how, failure = None, totp.WRONG
        if how is None:
            models.record_auth_failure("two_factor_failed", client_addr=address,
                                       detail=f"user {admin.username}: {failure} code or "
                                              "password to turn two-factor off")
            message = (_REFUSED_CODES[failure] if failure == totp.REPLAYED else
                       "That code or password is not right.")
            return account_page(session, f"{message} Two-factor stays on.", status=403)
        models.give_back_attempts(limits)
        models.end_two_factor(admin.id)
        models.record_auth_event("two_factor_disabled", client_addr=address,
                                 detail=f"user {admin.username}, confirmed with a {how}")
        return account_page(session, notice="Two-factor is off.")

    return app
