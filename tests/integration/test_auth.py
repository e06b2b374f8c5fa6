"""Agent authentication against the real panel: keys recognised without bcrypt, failed attempts
summarised and rate-limited without locking out a valid key, answers that do not tell whether a
key id or username exists, login limits shared by replicas, rotation with a grace period and the
real agent's zero-touch switch, revocation, and refusal of plain HTTP from the network."""
import datetime
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time

import pytest
import waitress.server

from panel import create_app, db, keys, models, operations, settings
from tests.conftest import (ROOT, TEST_BCRYPT_ROUNDS, bearer, free_port, http_request, new_server,
                            stamp, start_agent, start_panel, stop_panel, stop_process, wait_for,
                            write_agent_config)
from tests.integration.test_api import sample


def post_metrics(panel, key, server_id, headers=None, timestamp=None):
    return http_request(panel, "POST", "/api/agent/metrics",
                        headers={**bearer(key), **(headers or {})},
                        json_body=sample(server_id, timestamp))


# ===== The cache, counted inside a real Waitress ================================================

class InProcessPanel:
    """The panel's WSGI app under real Waitress in a thread of this process, so the test can
    read the app's own counters."""

    def __init__(self, database_url, tmp_path, extra_env=None):
        self.port = free_port()
        self.host = "127.0.0.1"
        config = settings.from_env({"MPANEL_DATABASE_URL": database_url,
                                    "MPANEL_DATA_DIR": str(tmp_path),
                                    "MPANEL_BCRYPT_ROUNDS": str(TEST_BCRYPT_ROUNDS),
                                    **(extra_env or {})})
        self.app = create_app(config, database=db.database_proxy.obj)
        self.server = waitress.server.create_server(self.app, host=self.host, port=self.port,
                                                    threads=4)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        # Short rounds of Waitress's own loop, so close() can stop it before closing its
        # sockets (closing them under a running select() is EBADF in this thread).
        while not self.stopping.is_set():
            self.server.asyncore.loop(timeout=0.05, map=self.server._map, count=1)

    def close(self):
        self.stopping.set()
        self.thread.join(timeout=10)
        self.server.task_dispatcher.shutdown()
        self.server.close()


def without_fingerprint(key):
    """Make `key`'s row look like one issued before schema version 3 (bcrypt hash only)."""
    models.Agent.update(api_key_fingerprint=None).where(
        models.Agent.api_key_id == keys.key_id_of(key)).execute()


def test_keys_are_checked_without_bcrypt_and_an_old_key_pays_it_once(database, backend_url,
                                                                      tmp_path):
    panel = InProcessPanel(backend_url, tmp_path)
    try:
        server, key = new_server("fingerprinted")
        for minute in range(10):
            assert post_metrics(panel, key, server.id, timestamp=stamp(minute)).status == 200
        assert panel.app.key_verifier.bcrypt_checks == 0
        # A key from before fingerprints: one bcrypt check, then its fingerprint is stored.
        old_server, old_key = new_server("issued-before-v3")
        without_fingerprint(old_key)
        for minute in range(10):
            assert post_metrics(panel, old_key, old_server.id,
                                timestamp=stamp(minute)).status == 200
        assert panel.app.key_verifier.bcrypt_checks == 1
        assert models.Agent.get(models.Agent.server == old_server.id).api_key_fingerprint == \
            keys.fingerprint(old_key)
        # Rotated through this process: the very next request is refused (the agent-row
        # cache forgets at once).
        keys.rotate(models.agent_by_key_id(keys.key_id_of(key)), TEST_BCRYPT_ROUNDS,
                    datetime.timedelta(0), b"s")
        assert post_metrics(panel, key, server.id).status == 401
        server2, key2 = new_server("revoked-here")
        assert post_metrics(panel, key2, server2.id).status == 200
        keys.revoke(models.agent_by_key_id(keys.key_id_of(key2)))
        assert post_metrics(panel, key2, server2.id).status == 401
    finally:
        panel.close()


# ===== Failures: logged, limited ================================================================

@pytest.fixture
def proxied_panel(backend_url, database, tmp_path):
    """A panel that trusts 127.0.0.1 as its reverse proxy, so X-Forwarded-For sets the client
    address — how one test can speak from several addresses."""
    panel = start_panel(backend_url, tmp_path / "panel.log",
                        {"MPANEL_TRUSTED_PROXIES": "127.0.0.1/32"})
    yield panel
    stop_panel(panel)


def from_address(address):
    return {"X-Forwarded-For": address, "X-Forwarded-Proto": "https"}


def test_failed_attempts_are_logged_without_the_secret(proxied_panel):
    server, key = new_server("web")
    forged = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    response = post_metrics(proxied_panel, forged, server.id, from_address("203.0.113.9"))
    assert response.status == 401
    event = models.AuthEvent.get(models.AuthEvent.kind == "bad_key")
    assert event.client_addr == "203.0.113.9"
    assert event.key_id == keys.key_id_of(key) and event.server_id == server.id
    stored = json.dumps([e.__data__ for e in models.AuthEvent.select()], default=str)
    assert forged.split("_", 2)[2] not in stored and key.split("_", 2)[2] not in stored


def unknown_key(n=0):
    return f"agent_{n:012x}_" + "W" * 40


def test_ten_failures_from_an_address_bring_429_for_its_unknown_keys_only(proxied_panel):
    """A fresh panel process (nothing verified yet) behind one NAT address: five misconfigured
    agents fail ten times between them; the healthy ones there, never seen by this process,
    keep reporting. Only what names no known key is refused from that address."""
    nat = from_address("203.0.113.9")
    healthy = [new_server(f"healthy-{n}") for n in range(3)]
    for n in range(10):
        assert post_metrics(proxied_panel, unknown_key(n % 5), 1, nat).status == 401
    limited = post_metrics(proxied_panel, unknown_key(1), 1, nat)
    assert limited.status == 429
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert limited.json()["field"] == "Authorization"
    assert post_metrics(proxied_panel, "agent_nonsense", 1, nat).status == 429
    for server, key in healthy:
        assert post_metrics(proxied_panel, key, server.id, nat).status == 200
    # An address elsewhere is not affected either.
    assert post_metrics(proxied_panel, unknown_key(7), 1,
                        from_address("198.51.100.7")).status == 401


def test_an_agent_already_verified_is_not_locked_out_by_its_neighbour(proxied_panel):
    """Behind one NAT: a broken agent fails ten times; its healthy neighbour keeps reporting."""
    server, key = new_server("healthy")
    nat = from_address("192.0.2.44")
    assert post_metrics(proxied_panel, key, server.id, nat,
                        timestamp=stamp(0)).status == 200
    for _ in range(12):
        post_metrics(proxied_panel, "agent_0123456789ab_" + "W" * 40, server.id, nat)
    assert post_metrics(proxied_panel, key, server.id, nat,
                        timestamp=stamp(1)).status == 200


def test_failures_against_one_key_id_limit_that_key_id_from_anywhere(proxied_panel):
    server, key = new_server("target")
    key_id = keys.key_id_of(key)
    for n in range(10):
        guess = f"agent_{key_id}_" + chr(ord("A") + n) * 40
        post_metrics(proxied_panel, guess, server.id, from_address(f"203.0.113.{n + 1}"))
    guess = f"agent_{key_id}_" + "Z" * 40
    assert post_metrics(proxied_panel, guess, server.id,
                        from_address("203.0.113.200")).status == 429


def test_bad_secrets_under_a_victims_key_id_do_not_lock_the_victim_out(proxied_panel):
    """The key id is public; thirty wrong secrets under it, from anywhere, leave the victim's
    own key working from anywhere — in a process that has never seen it."""
    victim, key = new_server("victim")
    key_id = keys.key_id_of(key)
    for n in range(30):
        post_metrics(proxied_panel, f"agent_{key_id}_" + chr(ord("A") + n % 26) * 40, victim.id,
                     from_address(f"203.0.113.{n + 1}"))
    for n, address in enumerate(("203.0.113.1", "198.51.100.7")):
        assert post_metrics(proxied_panel, key, victim.id, from_address(address),
                            timestamp=stamp(n)).status == 200


def test_bcrypt_work_stays_bounded_under_attack(database, backend_url, tmp_path):
    """Counted, not timed: unknown ids, malformed keys, missing credentials and wrong secrets for
    fingerprinted keys never cost bcrypt; a key from before fingerprints costs at most the
    failure limit's worth of checks a minute, whoever sends them."""
    panel = InProcessPanel(backend_url, tmp_path,
                           {"MPANEL_TRUSTED_PROXIES": "127.0.0.1/32"})
    try:
        server, key = new_server("fingerprinted")
        old_server, old_key = new_server("issued-before-v3")
        without_fingerprint(old_key)
        key_id, old_key_id = keys.key_id_of(key), keys.key_id_of(old_key)
        statuses = []
        for n in range(40):
            address = from_address(f"10.{n // 250}.{n % 250}.1")
            statuses.append(post_metrics(panel, unknown_key(n), 1, address).status)
            statuses.append(post_metrics(panel, "agent_" + "x" * n, 1, address).status)
            statuses.append(http_request(panel, "POST", "/api/agent/metrics",
                                         headers=address).status)
            statuses.append(post_metrics(panel, f"agent_{key_id}_" + "Q" * 40, server.id,
                                         address).status)
        # Wrong secrets for the old key, all at once: the budget is taken before bcrypt, under
        # one lock, so concurrency does not slip extra checks through.
        barrier = threading.Barrier(30)

        def guess(n):
            barrier.wait(timeout=30)
            statuses.append(post_metrics(panel, f"agent_{old_key_id}_" + chr(65 + n % 26) * 40,
                                         old_server.id, from_address(f"10.9.9.{n}")).status)

        threads = [threading.Thread(target=guess, args=(n,)) for n in range(30)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert len(statuses) == 4 * 40 + 30
        assert set(statuses) <= {401, 429} and 429 in statuses
        assert panel.app.key_verifier.bcrypt_checks == 10  # MPANEL_AUTH_FAILURE_LIMIT
        # ...and the fingerprinted key's agent was never in the way of the attack.
        assert post_metrics(panel, key, server.id, from_address("10.0.0.1")).status == 200
    finally:
        panel.close()


def medians_seconds(first, second, times=9):
    """Median durations of first(n) and second(n), taken in turns so that the shared machine's
    load falls on both alike."""
    spent = ([], [])
    for n in range(times):
        for request, durations in ((first, spent[0]), (second, spent[1])):
            started = time.perf_counter()
            request(n)
            durations.append(time.perf_counter() - started)
    return statistics.median(spent[0]), statistics.median(spent[1])


def test_an_unknown_key_id_is_refused_as_fast_as_a_wrong_secret(database, backend_url,
                                                               tmp_path):
    """Keys hashed at cost 10 (~60 ms a bcrypt check here): if either refusal paid bcrypt and
    the other did not, their medians would differ twentyfold."""
    panel = start_panel(backend_url, tmp_path / "panel.log",
                        {"MPANEL_TRUSTED_PROXIES": "127.0.0.1/32"})
    try:
        server, key = operations.add_server("costly", 10)
        key_id = keys.key_id_of(key)

        def wrong_secret(n):
            assert post_metrics(panel, f"agent_{key_id}_" + chr(ord("A") + n) * 40, server.id,
                                from_address(f"192.0.2.{n + 1}")).status == 401

        def unknown_id(n):
            assert post_metrics(panel, unknown_key(n), server.id,
                                from_address(f"192.0.2.{n + 1}")).status == 401

        known, unknown = medians_seconds(wrong_secret, unknown_id)
        assert max(known, unknown) < 3 * min(known, unknown), (known, unknown)
    finally:
        stop_panel(panel)


# ===== Refusals: summarised, with a challenge ===================================================

def test_requests_without_credentials_are_limited_and_summarised(proxied_panel):
    """A flood with no key, or a malformed one, from one address: the same limit as wrong keys,
    a few summary rows counting every request, and one WARNING per row, not per request."""
    flood = from_address("203.0.113.50")
    statuses = [http_request(proxied_panel, "POST", "/api/agent/metrics", headers=flood).status
                for _ in range(60)]
    statuses += [post_metrics(proxied_panel, "agent_not_a_key", 1, flood).status
                 for _ in range(60)]
    assert statuses[:10] == [401] * 10 and set(statuses[10:]) == {429}
    rows = list(models.AuthEvent.select())
    assert sum(row.occurrences for row in rows) == 120
    assert {(row.kind, row.occurrences) for row in rows} >= {("missing", 10)}
    assert len(rows) <= 4  # missing, throttled missing, throttled malformed (+ a window edge)
    warnings = [line for line in proxied_panel.log_text().splitlines()
                if "WARNING" in line and "agent authentication refused" in line]
    assert 1 <= len(warnings) <= len(rows)


def test_every_401_of_the_agent_api_carries_a_bearer_challenge(proxied_panel):
    server, key = new_server("challenged")
    rotated_away, old_key = new_server("rotated")
    keys.rotate(models.agent_by_key_id(keys.key_id_of(old_key)), TEST_BCRYPT_ROUNDS,
                datetime.timedelta(0), b"s")
    revoked, revoked_key = new_server("revoked")
    keys.revoke(models.agent_by_key_id(keys.key_id_of(revoked_key)))
    presented = {"malformed": "agent_nope", "unknown": unknown_key(3),
                 "wrong secret": key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB"),
                 "revoked": revoked_key, "replaced": old_key}
    paths = (("POST", "/api/agent/register"), ("POST", "/api/agent/metrics"),
             ("POST", "/api/agent/heartbeat"), ("GET", "/api/agent/config"))
    for n, (method, path) in enumerate(paths):
        body = {} if method == "POST" else None
        # Each from its own address: an address's budget for keyless requests is not the point.
        missing = http_request(proxied_panel, method, path, json_body=body,
                               headers=from_address(f"192.0.2.{n + 1}"))
        assert missing.status == 401
        assert missing.headers["www-authenticate"] == 'Bearer realm="mpanel"'
        for m, (what, sent) in enumerate(presented.items()):
            refused = http_request(proxied_panel, method, path, json_body=body,
                                   headers={**bearer(sent),
                                            **from_address(f"198.51.{n}.{m + 1}")})
            assert refused.status == 401, (path, what)
            assert refused.headers["www-authenticate"] == \
                'Bearer realm="mpanel", error="invalid_token"', (path, what)


def test_security_page_shows_summaries_with_count_and_first_and_last_seen(proxied_panel):
    from tests.integration.test_dashboard import PASSWORD, Browser

    operations.set_admin("admin", PASSWORD, TEST_BCRYPT_ROUNDS)
    admin = Browser(proxied_panel)
    assert admin.login().status == 303
    for _ in range(25):
        http_request(proxied_panel, "GET", "/api/agent/config",
                     headers=from_address("203.0.113.77"))
    page = admin.request("GET", "/security").text
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", page, re.S)
    cells = {}
    for row in rows:
        values = [re.sub(r"<[^>]+>", "", cell).strip()
                  for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
        if len(values) == 8:
            cells.setdefault(values[3], values)
    first, last, count = cells["missing"][:3]
    assert count == "10" and first <= last and last
    assert cells["throttled"][2] == "15" and "missing: GET /api/agent/config" in \
        cells["throttled"][7]
    assert cells["login ok"][2] == "1" and cells["login ok"][1] == ""


def test_database_trouble_while_authenticating_is_503_not_500(tmp_path):
    """A PostgreSQL that refuses connections (nothing listens on its port): refusing a key, or
    limiting a login, needs the database, and its absence reads as 'retry later'."""
    dead = db.open_database(f"postgresql://postgres@127.0.0.1:{free_port()}/gone")
    bound = db.database_proxy.obj
    db.database_proxy.initialize(dead)
    try:
        panel = InProcessPanel("sqlite:///unused", tmp_path, {"MPANEL_TRUSTED_PROXIES": ""})
        try:
            for headers in ({}, bearer(unknown_key(1)), bearer("agent_nope")):
                answer = http_request(panel, "GET", "/api/agent/config", headers=headers)
                assert answer.status == 503 and answer.headers["retry-after"] == "30", answer.text
                assert "database" in answer.json()["error"]
            login = send_login(login_forms(panel, 1)[0], "admin", "wrong")
            assert login.status == 503 and login.headers["retry-after"] == "30"
        finally:
            panel.close()
    finally:
        db.database_proxy.initialize(bound)


# ===== Logins: timing and limits shared by replicas =============================================

def login_forms(panel, count):
    """`count` fresh login forms: (CSRF cookie, token) pairs, fetched before a test sends them."""
    from tests.integration.test_dashboard import Browser

    forms = []
    for _ in range(count):
        browser = Browser(panel)
        page = browser.request("GET", "/login").text
        forms.append((browser, re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)))
    return forms


def send_login(form, username, password, headers=None):
    browser, token = form
    return browser.request("POST", "/login", form={"csrf_token": token, "username": username,
                                                   "password": password}, headers=headers)


def test_concurrent_wrong_logins_on_two_replicas_check_the_password_only_up_to_the_limit(
        backend_url, database, tmp_path):
    """Forty wrong logins for one user at once, split over two panel processes on one database:
    exactly MPANEL_LOGIN_FAILURE_LIMIT (5) get their password checked (401), the rest 429."""
    operations.set_admin("admin", "the right password", 8)
    replicas = [start_panel(backend_url, tmp_path / f"panel-{n}.log",
                            {"MPANEL_BCRYPT_ROUNDS": "8", "MPANEL_THREADS": "8"})
                for n in range(2)]
    try:
        forms = [form for replica in replicas for form in login_forms(replica, 20)]
        barrier = threading.Barrier(len(forms))
        statuses = []

        def attempt(form):
            barrier.wait(timeout=30)
            statuses.append(send_login(form, "admin", "wrong").status)

        threads = [threading.Thread(target=attempt, args=(form,)) for form in forms]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert sorted(statuses) == [401] * 5 + [429] * 35
        failed = models.AuthEvent.select().where(models.AuthEvent.kind == "login_failed")
        assert sum(row.occurrences for row in failed) == 5
    finally:
        for replica in replicas:
            stop_panel(replica)


def test_a_refused_login_names_how_to_authenticate(panel):
    """RFC 9110 §15.5.2: a 401 carries WWW-Authenticate, the login form's too."""
    refused = send_login(login_forms(panel, 1)[0], "nobody", "wrong")
    assert refused.status == 401
    assert refused.headers["www-authenticate"].startswith('Cookie realm="mpanel"')


def test_a_login_takes_as_long_for_an_unknown_user_as_for_a_known_one(backend_url, database,
                                                                     tmp_path):
    """Passwords hashed at cost 10 (~60 ms here): an unknown user checked against a cheaper
    dummy would answer many times faster."""
    operations.set_admin("admin", "the right password", 10)
    panel = start_panel(backend_url, tmp_path / "panel.log",
                        {"MPANEL_BCRYPT_ROUNDS": "10", "MPANEL_LOGIN_FAILURE_LIMIT": "50"})
    try:
        forms = login_forms(panel, 18)

        def known(n):
            assert send_login(forms[n], "admin", "wrong").status == 401

        def unknown(n):
            assert send_login(forms[9 + n], f"nobody-{n}", "wrong").status == 401

        known_median, unknown_median = medians_seconds(known, unknown)
        assert max(known_median, unknown_median) < 2 * min(known_median, unknown_median), \
            (known_median, unknown_median)
    finally:
        stop_panel(panel)


# ===== Rotation and revocation ==================================================================

def panel_cli(panel, *args):
    env = dict(os.environ, MPANEL_DATABASE_URL=panel.database_url,
               MPANEL_BCRYPT_ROUNDS=str(TEST_BCRYPT_ROUNDS),
               MPANEL_DATA_DIR=str(panel.log_path.parent))
    return subprocess.run([sys.executable, "-m", "panel", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def fast_panel(backend_url, database, tmp_path):
    panel = start_panel(backend_url, tmp_path / "panel.log",
                        {"MPANEL_REPORT_INTERVAL": "1", "MPANEL_DATA_DIR": str(tmp_path)})
    yield panel
    stop_panel(panel)


@pytest.mark.timeout(90)
def test_rotation_hands_the_running_agent_its_new_key(fast_panel, tmp_path):
    _, old_key = new_server("rotating")
    config = write_agent_config(tmp_path / "agent", fast_panel.url, old_key, interval=1)
    log_path = tmp_path / "agent.log"
    agent = start_agent(config, log_path)
    try:
        assert wait_for(lambda: models.Metric.select().count() >= 1)
        rotated = panel_cli(fast_panel, "rotate-key", "rotating", "--quiet")
        assert rotated.returncode == 0, rotated.stderr
        new_key = rotated.stdout.strip()
        assert new_key.startswith("agent_") and new_key != old_key
        assert wait_for(lambda: models.Agent.get().key_switched_at is not None), \
            log_path.read_text()
        count = models.Metric.select().count()
        assert wait_for(lambda: models.Metric.select().count() >= count + 2)
    finally:
        stop_process(agent)
    row = models.Agent.get()
    assert row.prev_key_id is None and row.pending_key_box is None  # old key retired
    state = json.loads((tmp_path / "agent" / "state" / "state.json").read_text())
    assert state["apiKey"] == new_key
    server_id = row.server_id
    assert post_metrics(fast_panel, old_key, server_id).status == 401
    assert models.AuthEvent.select().where(models.AuthEvent.kind == "key_switched").count() == 1
    assert old_key.split("_", 2)[2] not in log_path.read_text()
    assert new_key.split("_", 2)[2] not in log_path.read_text()


def seen_within(seconds, probe):
    """How long until `probe()` holds; fails past `seconds`. A change made by another process
    (here the CLI) reaches a running panel within AgentRows' 2 s."""
    started = time.monotonic()
    while not probe():
        assert time.monotonic() - started < seconds, "not seen in time"
        time.sleep(0.1)
    return time.monotonic() - started


def test_during_the_grace_period_both_keys_work(fast_panel):
    server, old_key = new_server("grace")
    assert post_metrics(fast_panel, old_key, server.id,
                        timestamp=stamp(0)).status == 200
    new_key = panel_cli(fast_panel, "rotate-key", "grace", "--quiet").stdout.strip()
    answers = []

    def handed_over():
        answers.append(post_metrics(fast_panel, old_key, server.id,
                                    timestamp=stamp(len(answers) + 1)))
        return answers[-1].json().get("newApiKey") == new_key

    seen_within(3, handed_over)
    assert all(answer.status == 200 for answer in answers)  # the old key never stopped working
    assert post_metrics(fast_panel, new_key, server.id, timestamp=stamp(50)).status == 200


def test_grace_zero_cuts_the_old_key_off_at_once(fast_panel):
    server, old_key = new_server("abrupt")
    new_key = panel_cli(fast_panel, "rotate-key", "abrupt", "--grace-hours", "0",
                        "--quiet").stdout.strip()
    assert post_metrics(fast_panel, old_key, server.id).status == 401
    assert post_metrics(fast_panel, new_key, server.id).status == 200


def test_an_expired_grace_period_refuses_the_old_key(fast_panel):
    server, old_key = new_server("late")
    panel_cli(fast_panel, "rotate-key", "late", "--quiet")
    models.Agent.update(prev_key_expires_at=db.utcnow() - datetime.timedelta(seconds=1)).execute()
    response = post_metrics(fast_panel, old_key, server.id)
    assert response.status == 401 and "replaced" in response.json()["error"]


def test_revoke_from_the_cli_reaches_a_running_panel_within_seconds(fast_panel):
    server, key = new_server("stolen")
    assert post_metrics(fast_panel, key, server.id,
                        timestamp=stamp(0)).status == 200  # cached now
    result = panel_cli(fast_panel, "revoke", "stolen")
    assert result.returncode == 0, result.stderr
    attempts = []

    def refused():
        attempts.append(post_metrics(fast_panel, key, server.id, timestamp=stamp(len(attempts) + 1)))
        return attempts[-1].status == 401

    seen_within(3, refused)
    assert "revoked" in attempts[-1].json()["error"]
    assert models.Agent.get().status == "revoked"
    new_key = panel_cli(fast_panel, "rotate-key", "stolen", "--quiet").stdout.strip()
    seen_within(3, lambda: post_metrics(fast_panel, new_key, server.id,
                                        timestamp=stamp(40)).status == 200)
    assert post_metrics(fast_panel, key, server.id).status == 401


def test_rotating_an_unknown_server_is_a_clear_error(fast_panel):
    result = panel_cli(fast_panel, "rotate-key", "nope")
    assert result.returncode == 2 and "no server named 'nope'" in result.stderr


# ===== Late samples =============================================================================

def test_replayed_samples_are_marked_late_and_fresh_ones_not(panel):
    server, key = new_server("web")
    old = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=30))
    assert post_metrics(panel, key, server.id, timestamp=old.isoformat()).status == 200
    assert post_metrics(panel, key, server.id).status == 200
    late, fresh = models.Metric.select().order_by(models.Metric.timestamp)
    assert late.late is True and fresh.late is False


# ===== Plain HTTP from the network ==============================================================

@pytest.fixture
def non_loopback_address():
    """A link-local address on a veth interface of our own: traffic to it stays on this
    machine, but the panel sees a client that is not loopback."""
    import shutil

    from tests.conftest import require

    name, address = f"mpd{os.getpid() % 10000}", "169.254.78.1"

    def ip(*args):
        return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)

    can = shutil.which("ip") and os.geteuid() == 0 and \
        ip("link", "add", name, "type", "veth", "peer", "name", name + "p").returncode == 0
    require("a veth interface", can, "needs root and iproute2 (.ci/run installs it)")
    try:
        assert ip("addr", "add", f"{address}/32", "dev", name).returncode == 0
        assert ip("link", "set", name, "up").returncode == 0
        assert ip("link", "set", name + "p", "up").returncode == 0
        yield address
    finally:
        ip("link", "del", name)


def test_plain_http_from_the_network_is_refused(backend_url, database, tmp_path,
                                                non_loopback_address):
    panel = start_panel(backend_url, tmp_path / "panel.log",
                        {"MPANEL_HOST": non_loopback_address,
                         "MPANEL_TRUSTED_PROXIES": non_loopback_address})
    try:
        server, key = new_server("remote")
        refused = post_metrics(panel, key, server.id)
        assert refused.status == 403 and refused.json()["field"] == "scheme"
        assert "HTTPS" in refused.json()["error"]
        # The same request through the trusted proxy that terminated TLS is fine.
        proxied = post_metrics(panel, key, server.id, {"X-Forwarded-Proto": "https"})
        assert proxied.status == 200
        assert models.Metric.select().count() == 1
    finally:
        stop_panel(panel)


def test_plain_http_can_be_allowed_explicitly(backend_url, database, tmp_path,
                                              non_loopback_address):
    panel = start_panel(backend_url, tmp_path / "panel.log",
                        {"MPANEL_HOST": non_loopback_address, "MPANEL_ALLOW_HTTP": "1"})
    try:
        server, key = new_server("lan")
        assert post_metrics(panel, key, server.id).status == 200
        forged = post_metrics(panel, key, server.id, {"X-Forwarded-For": "10.9.9.9"},
                              timestamp=stamp(0))
        assert forged.status == 200
        # Not a trusted proxy: its X-Forwarded-For is not believed.
        assert models.Agent.get().ip_address != "10.9.9.9"
    finally:
        stop_panel(panel)
