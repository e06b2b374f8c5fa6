"""The pure parts of the mail queue and systemd collectors, on captured output
(tests/fixtures/README.md): Postfix queue files and an Exim -H spool file from the real servers
the integration tests run, and systemctl's output in systemd 252's format."""
from pathlib import Path

import agent
from panel import protocol
from panel.validation import validate

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SERVICES = protocol.METRICS["properties"]["services"]["properties"]


def fixture(name):
    return (FIXTURES / name).read_bytes()


# ----- Postfix ----------------------------------------------------------------------------------

def test_a_deferred_postfix_file_gives_its_arrival_time_not_its_mtime():
    """The head of a deferred queue file: size record, then "T1796173498 805701"."""
    assert agent.parse_postfix_arrival(fixture("postfix_queue_file_deferred.bin")) == 1796173498


def test_a_maildrop_file_starts_with_its_time_record():
    assert agent.parse_postfix_arrival(fixture("postfix_queue_file_maildrop.bin")) == 1796173715


def test_a_head_without_a_time_record_gives_none():
    head = fixture("postfix_queue_file_deferred.bin")
    assert agent.parse_postfix_arrival(head[:100]) is None  # cut inside the time record
    assert agent.parse_postfix_arrival(b"S\x0ea@test.invalid") is None  # sender: stop
    assert agent.parse_postfix_arrival(b"") is None


def test_a_postfix_length_of_several_bytes_is_read():
    record = b"A" + bytes([0x80 | 5, 1]) + b"x" * 133 + b"T\x0b1700000000 0"
    assert agent.parse_postfix_arrival(record) == 1700000000


# ----- Exim -------------------------------------------------------------------------------------

def test_an_exim_header_gives_its_time_and_frozen_flag():
    assert agent.parse_exim_header(fixture("exim_spool_frozen-H.txt")) == (1796173445, True)


def test_an_exim_header_not_frozen():
    text = fixture("exim_spool_frozen-H.txt").replace(b"-frozen 1796173448\n", b"")
    assert agent.parse_exim_header(text) == (1796173445, False)


def test_a_frozen_word_past_the_options_is_not_the_flag():
    """A header line or recipient that says -frozen is not the option."""
    text = fixture("exim_spool_frozen-H.txt").replace(b"-frozen 1796173448\n", b"")
    assert agent.parse_exim_header(text + b"-frozen 1\n") == (1796173445, False)


def test_a_file_that_is_not_an_exim_header():
    assert agent.parse_exim_header(b"hello\n") == (None, False)


# ----- The section ------------------------------------------------------------------------------

def test_postfix_tallies_become_the_wire_section():
    raw = {"mta": "postfix", "counts": {"active": 1, "deferred": 5, "hold": 0, "incoming": 0,
                                        "maildrop": 2}, "oldest": 1000, "truncated": False}
    section = agent.parse_mailqueue(raw, now=4600.7)
    assert section == {"mta": "postfix", "total": 8, "active": 1, "deferred": 5, "hold": 0,
                       "incoming": 0, "maildrop": 2, "oldestAge": 3600}
    validate(SERVICES["mailqueue"], section)


def test_an_empty_queue_has_no_age_and_a_clock_behind_gives_zero():
    raw = {"mta": "exim", "counts": {"input": 0}, "oldest": None, "truncated": False,
           "frozen": 0}
    assert agent.parse_mailqueue(raw, now=10) == {"mta": "exim", "total": 0, "frozen": 0}
    raw.update(counts={"input": 1}, oldest=50)
    assert agent.parse_mailqueue(raw, now=10)["oldestAge"] == 0


def test_a_truncated_walk_says_so():
    raw = {"mta": "exim", "counts": {"input": 7}, "oldest": 5, "truncated": True, "frozen": 0}
    section = agent.parse_mailqueue(raw, now=10)
    assert section["truncated"] is True
    validate(SERVICES["mailqueue"], section)


# ----- systemd ----------------------------------------------------------------------------------

def text(name):
    return fixture(name).decode()


def test_parse_failed_units():
    units = agent.parse_systemctl_failed(text("systemctl_list_units_failed.txt"))
    assert [u["name"] for u in units] == ["mariadb.service", "phpsessionclean.service",
                                          "certbot.timer"]
    assert units[0] == {"name": "mariadb.service", "loadState": "loaded",
                        "activeState": "failed", "subState": "failed"}


def test_parse_failed_units_of_an_older_systemd_with_its_bullet():
    units = agent.parse_systemctl_failed(text("systemctl_list_units_failed_bullet.txt"))
    assert [u["name"] for u in units] == ["mariadb.service"]


def test_no_failed_units_is_an_empty_output():
    assert agent.parse_systemctl_failed("") == []


def test_parse_show_blocks():
    states = agent.parse_systemctl_show(text("systemctl_show.txt"))
    assert states["nginx.service"] == {"activeState": "active", "subState": "running",
                                       "loadState": "loaded"}
    assert states["pure-ftpd.service"]["loadState"] == "not-found"


def test_configured_units_first_then_the_other_failed_ones():
    section = agent.parse_systemd(text("systemctl_list_units_failed.txt"),
                                  text("systemctl_show.txt"),
                                  ["nginx.service", "php8.2-fpm", "mariadb", "pure-ftpd"])
    assert section["failed"] == 3
    names = [u["name"] for u in section["units"]]
    assert names == ["nginx.service", "php8.2-fpm", "mariadb", "pure-ftpd",
                     "phpsessionclean.service", "certbot.timer"]  # mariadb listed once
    assert section["units"][1]["activeState"] == "active"  # php8.2-fpm is php8.2-fpm.service
    assert section["units"][2]["activeState"] == "failed"
    validate(SERVICES["systemd"], section)


def test_more_than_fifty_units_are_bounded_and_counted():
    failed = "".join(f"unit{n}.service loaded failed failed Unit {n}\n" for n in range(70))
    section = agent.parse_systemd(failed, "", [])
    assert section["failed"] == 70 and len(section["units"]) == 50 and section["omitted"] == 20
    validate(SERVICES["systemd"], section)
