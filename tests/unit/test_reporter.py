"""Reporter's pure parts: Retry-After parsing and the backoff schedule."""
import email.utils
import time

import agent


def reporter(max_delay=300):
    return agent.Reporter(agent.Config(url="http://127.0.0.1:1", api_key="agent_x",
                                       retry_max_delay=max_delay))


def test_retry_after_in_seconds_and_as_a_date():
    assert agent.parse_retry_after("120") == 120.0
    future = email.utils.formatdate(time.time() + 60, usegmt=True)
    assert 55 <= agent.parse_retry_after(future) <= 61
    assert agent.parse_retry_after(None) is None
    assert agent.parse_retry_after("soon") is None


def test_backoff_doubles_with_jitter_and_is_capped():
    r = reporter(max_delay=30)
    delays = [r.failed() for _ in range(10)]
    assert 0.5 <= delays[0] <= 1.0
    assert 4.0 <= delays[3] <= 8.0
    assert all(d <= 30 for d in delays) and delays[-1] >= 15
    assert not r.may_send()
    r.succeeded()
    assert r.may_send() and r.failures == 0


def test_retry_after_wins_over_the_schedule():
    r = reporter()
    assert r.failed(retry_after=42.0) == 42.0
    assert r.not_before - time.monotonic() > 40


def test_the_key_is_only_in_the_authorization_header():
    r = agent.Reporter(agent.Config(url="https://p", api_key="agent_0123456789ab_SECRET"))
    assert r.headers["Authorization"] == "Bearer agent_0123456789ab_SECRET"
    assert "SECRET" not in repr(agent.Config(url="https://p", api_key="agent_0123456789ab_SECRET"))


def test_tls_below_1_2_is_never_offered():
    import ssl

    r = reporter()
    context = r.pool.connection_pool_kw["ssl_context"]
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    # Certificates are still checked; urllib3 matches the host name itself.
    assert context.verify_mode == ssl.CERT_REQUIRED and not context.check_hostname


def test_a_pin_replaces_ca_trust():
    r = agent.Reporter(agent.Config(url="https://p", api_key="agent_x", pin_sha256="AB" * 32))
    assert r.pool.connection_pool_kw["assert_fingerprint"] == "AB" * 32
    assert r.pool.connection_pool_kw["cert_reqs"] == "CERT_NONE"


def test_a_refusal_retrying_will_not_change_waits_the_maximum_at_once():
    r = reporter(max_delay=300)
    assert 240 <= r.failed(permanent=True) <= 300
    assert r.failed(retry_after=5.0, permanent=True) == 5.0  # the server's word still wins
