"""The PHP-FPM collector's pure parts on captured output (tests/fixtures/README.md): the status
page's JSON, the process titles, Debian's shipped config files, the kernel's socket queues."""
from pathlib import Path

import pytest

import agent

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def fixture(name):
    return (FIXTURES / name).read_text()


def test_parse_phpfpm_status_of_a_full_pool():
    status = agent.parse_phpfpm_status(fixture("phpfpm_status.json"))
    assert status == {"pool": "www", "process manager": "dynamic", "accepted conn": 2,
                      "listen queue": 0, "max listen queue": 0, "listen queue len": 0,
                      "idle processes": 0, "active processes": 1, "total processes": 1,
                      "max children reached": 1, "slow requests": 0}


@pytest.mark.parametrize("text", ["File not found.\n", "[]", '{"pool": "www"}'])
def test_a_page_that_is_not_fpm_status_json_says_so(text):
    with pytest.raises(RuntimeError, match="pm.status_path"):
        agent.parse_phpfpm_status(text)


def test_parse_phpfpm_titles_groups_workers_under_their_master():
    rows = [tuple(int(part) if i < 2 else part for i, part in
                  enumerate(line.strip().split(None, 2)))
            for line in fixture("phpfpm_ps.txt").splitlines()]
    masters, workers = agent.parse_phpfpm_titles(rows + [(9, 1, "bash"), (10, 1, "php-fpm")])
    assert masters == {3537: "/tmp/fpmcap/fpm/php-fpm.conf"}
    assert workers == {(3537, "api"): 2, (3537, "www"): 1, (3537, "www_status"): 1}


def test_parse_debian_php_fpm_conf_finds_its_pool_d_include():
    parsed = agent.parse_phpfpm_config(fixture("phpfpm_debian_php-fpm.conf"))
    assert parsed == {"includes": ["/etc/php/8.2/fpm/pool.d/*.conf"], "pools": []}


def test_parse_debian_www_pool():
    parsed = agent.parse_phpfpm_config(fixture("phpfpm_debian_www.conf"))
    assert parsed == {"includes": [], "pools": [
        {"name": "www", "listen": "/run/php/php8.2-fpm.sock", "pm": "dynamic",
         "max_children": 5}]}


def test_parse_phpfpm_config_values_the_way_fpm_reads_them():
    text = """
[global]
include = pools/*.conf ; a comment after a value
[shop]
listen = /run/php/$pool.sock
pm = ondemand
pm.max_children = "12"
pm.status_path = /fpm-status
pm.status_listen = 127.0.0.1:9001
php_admin_value[sendmail_path] = /usr/sbin/sendmail -t -i
# a hash comment
[api]
listen = [::1]:9000
pm.max_children = many
"""
    assert agent.parse_phpfpm_config(text) == {"includes": ["pools/*.conf"], "pools": [
        {"name": "shop", "listen": "/run/php/shop.sock", "pm": "ondemand", "max_children": 12,
         "status_path": "/fpm-status", "status_listen": "127.0.0.1:9001"},
        {"name": "api", "listen": "[::1]:9000"}]}


def test_read_phpfpm_pools_follows_includes_relative_to_the_config(tmp_path):
    (tmp_path / "pool.d").mkdir()
    (tmp_path / "php-fpm.conf").write_text("[global]\ninclude=pool.d/*.conf\n")
    (tmp_path / "pool.d" / "b.conf").write_text("[b]\nlisten = 9001\n")
    (tmp_path / "pool.d" / "a.conf").write_text("[a]\nlisten = /run/a.sock\n"
                                                 f"include = {tmp_path}/php-fpm.conf\n")
    pools = agent.read_phpfpm_pools(str(tmp_path / "php-fpm.conf"))
    assert pools == [{"name": "a", "listen": "/run/a.sock"}, {"name": "b", "listen": "9001"}]


def test_read_phpfpm_pools_reads_again_only_what_changed(tmp_path, monkeypatch):
    (tmp_path / "pool.d").mkdir()
    config = tmp_path / "php-fpm.conf"
    config.write_text("[global]\ninclude=pool.d/*.conf\n")
    (tmp_path / "pool.d" / "a.conf").write_text("[a]\nlisten = 9001\n")
    opened = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda path, *a, **k: (opened.append(path),
                                                                real_open(path, *a, **k))[1])
    assert [p["name"] for p in agent.read_phpfpm_pools(str(config))] == ["a"]
    assert len(opened) == 2
    assert [p["name"] for p in agent.read_phpfpm_pools(str(config))] == ["a"]
    assert len(opened) == 2  # nothing changed: nothing read
    (tmp_path / "pool.d" / "b.conf").write_text("[b]\nlisten = 9002\n")  # the folder changed
    assert [p["name"] for p in agent.read_phpfpm_pools(str(config))] == ["a", "b"]
    (tmp_path / "pool.d" / "a.conf").write_text("[a]\nlisten = /run/a.sock\n")  # a file did
    assert agent.read_phpfpm_pools(str(config))[0]["listen"] == "/run/a.sock"


def test_parse_unix_diag_reads_the_listening_sockets_queues():
    """Captured with four requests held on a pool of pm.max_children = 1: three wait."""
    queues = agent.parse_unix_diag((FIXTURES / "phpfpm_unix_diag.bin").read_bytes())
    assert queues["/tmp/fpmcap/fpm/www.sock"] == (3, 4096)
    assert queues["/tmp/fpmcap/fpm/www-status.sock"] == (0, 4096)
    assert all(path.startswith("/") for path in queues)
    assert agent.parse_unix_diag(b"") == {}


def test_fastcgi_pairs_take_four_length_bytes_past_127():
    assert agent._fcgi_pair("A", "b") == b"\x01\x01Ab"
    long = agent._fcgi_pair("Q", "x" * 200)
    assert long[:6] == b"\x01\x80\x00\x00\xc8Q" and len(long) == 6 + 200


def test_rates_increase_counts_what_a_counter_added():
    rates = agent.Rates(boot_time=1.0)
    first, second, reset = {}, {}, {}
    rates.increase(first, "n", "k", 5, now=10)
    rates.end_cycle()
    rates.increase(second, "n", "k", 7, now=310)
    rates.end_cycle()
    rates.increase(reset, "n", "k", 1, now=610)  # FPM restarted: its counters start over
    assert (first, second, reset) == ({}, {"n": 2}, {})
