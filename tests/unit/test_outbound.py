"""Which addresses customers' channels may reach (panel/outbound.py), the save-time check of a
channel's target (alerts.check_channel) and what pages show of a secret target. Pure, but for
getaddrinfo of numeric forms and of `localhost` (the hosts file, no DNS) and one socket that
the guard stops before it connects."""
import ipaddress
import socket

import pytest

from panel import alerts, outbound
from panel.settings import networks

STRICT = outbound.Reach(what="webhook target")


@pytest.mark.parametrize("address, label", [
    ("8.8.8.8", None), ("1.1.1.1", None), ("2001:4860:4860::8888", None),
    ("127.0.0.1", "loopback"), ("127.255.0.9", "loopback"), ("::1", "loopback"),
    ("10.0.0.5", "private"), ("172.16.4.4", "private"), ("192.168.1.1", "private"),
    ("fc00::1", "private"), ("fd12:3456::1", "private"),
    ("169.254.169.254", "link-local"), ("fe80::1", "link-local"),
    ("0.0.0.0", "unspecified"), ("0.1.2.3", "unspecified"), ("::", "unspecified"),
    ("224.0.0.1", "multicast"), ("ff02::1", "multicast"),
    ("100.64.0.1", "carrier-grade NAT"), ("100.127.255.254", "carrier-grade NAT"),
    ("192.0.2.1", "reserved"), ("240.0.0.1", "reserved"),
    # IPv4 carried in IPv6 is judged as the IPv4 address it reaches.
    ("::ffff:10.0.0.1", "private"), ("::ffff:127.0.0.1", "loopback"),
    ("::ffff:8.8.8.8", None), ("2002:a00:1::1", "private"), ("64:ff9b::a9fe:a9fe", "link-local"),
    ("::7f00:1", "loopback"),
])
def test_addresses_are_classified_with_ipv4_inside_ipv6_judged_as_ipv4(address, label):
    assert outbound.classify(address) == label


@pytest.mark.parametrize("host", ["2130706433", "0177.0.0.1", "0x7f.1", "127.1", "localhost"])
def test_decimal_octal_and_short_forms_and_names_resolve_as_a_connection_would(host):
    assert "127.0.0.1" in outbound.resolve(host)
    problem = outbound.problem_of_host(host, STRICT)
    assert problem.startswith(f"webhook target {host} (") and \
        ") is a loopback address; customer channels may reach only public addresses " \
        "(MPANEL_ALLOW_CHANNEL_NETWORKS)" in problem


def test_a_refusal_names_the_address_and_its_kind_and_allowed_networks_pass():
    assert STRICT.problem("10.0.0.5") == (
        "webhook target 10.0.0.5 is a private address; customer channels may reach only public "
        "addresses (MPANEL_ALLOW_CHANNEL_NETWORKS)")
    allowed = outbound.Reach(allowed=networks(["10.0.0.0/24", "::1"], "X"))
    assert allowed.problem("10.0.0.5") is None and allowed.problem("::1") is None
    assert "private" in allowed.problem("10.0.1.5")
    assert allowed.problem("fe80::1%eth0").endswith("(MPANEL_ALLOW_CHANNEL_NETWORKS)")
    assert outbound.problem_of_host("name.invalid", STRICT) is None  # left to connect time


def test_a_bad_allowed_network_is_refused_naming_the_setting():
    with pytest.raises(ValueError, match="MPANEL_ALLOW_CHANNEL_NETWORKS"):
        networks(["10.0.0.0/33"], "MPANEL_ALLOW_CHANNEL_NETWORKS")
    assert networks(["", " 192.168.0.0/16 "], "X") == (ipaddress.ip_network("192.168.0.0/16"),)


def test_customer_targets_are_checked_at_save_and_staff_and_email_ones_are_not():
    for target in ("http://2130706433/", "http://0177.0.0.1/", "http://[::ffff:10.0.0.1]/",
                   "https://169.254.169.254/latest/meta-data", "http://localhost:8080/"):
        with pytest.raises(ValueError, match="customer channels may reach only public"):
            alerts.check_channel("webhook", target, customer_id=7)
        alerts.check_channel("webhook", target)  # the staff's: the admin owns the network
    alerts.check_channel("webhook", "http://localhost:8080/", 7, networks(["127.0.0.0/8"], "X"))
    alerts.check_channel("email", "ops@localhost", customer_id=7)  # the operator's SMTP server


def test_a_guarded_connection_to_a_non_public_address_is_refused_before_it_connects():
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        port = listener.getsockname()[1]
        with outbound.guarded(STRICT) as guard:
            with pytest.raises(outbound.Refused, match="127.0.0.1 is a loopback address"):
                socket.create_connection(("127.0.0.1", port), timeout=2)
        assert guard.refused.startswith("webhook target 127.0.0.1 is a loopback address")
        listener.settimeout(0.2)
        with pytest.raises(socket.timeout):
            listener.accept()  # nothing connected
        with outbound.guarded(None):  # the staff's: unchecked
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        socket.create_connection(("127.0.0.1", port), timeout=2).close()  # no guard: as ever
    finally:
        listener.close()


def test_secret_targets_show_only_their_scheme_and_errors_lose_their_secrets():
    url = "tgram://123456789:AAbbCCddEE/987654?token=s3cr3t"
    assert alerts.shown_target("apprise", url) == "tgram://…"
    assert alerts.shown_target("webhook", "https://h.example/x") == "https://h.example/x"
    assert alerts.shown_target("carrier-pigeon", "secret") == "…"
    reason = alerts.redacted(f"failed for {url}: chat 987654, token s3cr3t, bot 123456789", url)
    assert not any(part in reason for part in ("987654", "s3cr3t", "123456789", "AAbb"))
