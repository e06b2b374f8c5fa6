"""The pure parts of agent upgrades: the panel's wave planning, percentage choice and rollout
steps (panel/upgrades.py), reading the shipped agent.py, and the agent's checks of an offer
(agent.py, "Self-upgrade")."""
import hashlib
import os

import pytest

import agent
from panel import upgrades

SHA = "ab" * 32


# ===== The panel ================================================================================

def test_a_percentage_picks_the_same_servers_for_the_same_file_whatever_the_order():
    ids = list(range(1, 101))
    chosen = upgrades.choose_percentage(ids, 20, SHA)
    assert len(chosen) == 20
    assert upgrades.choose_percentage(list(reversed(ids)), 20, SHA) == chosen
    assert upgrades.choose_percentage(ids, 20, "cd" * 32) != chosen  # another file, another slice


def test_a_percentage_picks_at_least_one_and_at_most_all():
    assert len(upgrades.choose_percentage([7, 8, 9], 1, SHA)) == 1
    assert upgrades.choose_percentage([9, 7, 8], 100, SHA) == [7, 8, 9]


def test_a_wider_percentage_keeps_the_servers_a_narrower_one_chose():
    ids = list(range(1, 51))
    assert set(upgrades.choose_percentage(ids, 10, SHA)) <= \
        set(upgrades.choose_percentage(ids, 30, SHA))


def test_waves_hold_wave_size_servers_in_order():
    assert upgrades.plan_waves([4, 2, 9, 5, 1], 2) == [[4, 2], [9, 5], [1]]
    assert upgrades.plan_waves([3], 10) == [[3]]


@pytest.mark.parametrize("results, step", [
    ([(1, "pending"), (2, "pending")], ("offer", 1)),
    ([(1, "offered"), (2, "pending")], ("wait", None)),
    ([(1, "upgraded"), (1, "skipped"), (2, "pending")], ("offer", 2)),
    ([(1, "upgraded"), (1, "failed"), (2, "pending")], ("halt", None)),
    ([(1, "failed"), (1, "offered")], ("halt", None)),  # a failure halts at once
    ([(1, "upgraded"), (2, "skipped")], ("done", None)),
])
def test_a_rollout_offers_the_next_wave_only_after_the_last_and_halts_on_a_failure(results, step):
    assert upgrades.next_step(results) == step


def test_the_panel_waits_longer_than_the_agent_watches_a_new_file():
    for interval in (1, 60, 3600):
        agent_window = agent.upgrade_window(agent.Config(report_interval=interval))
        assert upgrades.offer_deadline(interval).total_seconds() > agent_window


def test_the_shipped_version_and_digest_come_from_the_file(tmp_path):
    path = tmp_path / "agent.py"
    path.write_bytes(b'"""doc"""\n__version__ = "1.2.3"\n')
    shipped = upgrades.shipped_agent(path)
    assert (shipped.version, shipped.sha256) == ("1.2.3", hashlib.sha256(path.read_bytes())
                                                 .hexdigest())
    path.write_bytes(b'__version__ = "1.2.4"  \n')  # not the exact line: no version
    os.utime(path, ns=(1, 1))
    assert upgrades.shipped_agent(path) is None
    assert upgrades.shipped_agent(tmp_path / "missing.py") is None


def test_the_repository_agent_is_what_the_panel_ships_by_default():
    from panel import settings

    shipped = upgrades.shipped_agent(settings.Settings().agent_file)
    assert shipped.version == agent.__version__


# ===== The agent ================================================================================

OFFER = {"version": "9.9.9", "sha256": SHA, "path": "/api/agent/upgrade/agent.py"}


def test_a_well_formed_offer_is_taken():
    assert agent.valid_offer(OFFER, "0.2.0", []) == (("9.9.9", SHA, OFFER["path"]), "")


@pytest.mark.parametrize("change, why", [
    ({"path": "https://elsewhere.example/agent.py"}, "path"),
    ({"path": "//elsewhere.example/api/agent/x"}, "path"),
    ({"path": "/api/agent/../../downloads/agent.py"}, "path"),
    ({"path": "/downloads/agent.py"}, "path"),
    ({"sha256": SHA.upper()}, "sha256"),
    ({"sha256": SHA[:-1]}, "sha256"),
    ({"version": "1; rm -rf /"}, "version"),
    ({"version": None}, "version"),
    ({"version": "0.2.0"}, "already"),
])
def test_an_offer_that_names_another_origin_a_bad_digest_or_the_running_version_is_refused(
        change, why):
    taken, reason = agent.valid_offer(dict(OFFER, **change), "0.2.0", [])
    assert taken is None and why in reason


def test_a_file_that_failed_here_before_is_not_tried_again():
    assert agent.valid_offer(OFFER, "0.2.0", [SHA]) == (None, "this file failed here before")


def test_the_new_file_gets_the_same_options_its_mode_and_an_absolute_config(tmp_path,
                                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = agent._checked_args(["--config", "c.json", "--once", "--interval", "5"], "--check")
    assert args == ["--config", str(tmp_path / "c.json"), "--interval", "5", "--check"]
    assert agent._checked_args(["--config=c.json"], None) == [f"--config={tmp_path}/c.json"]


def test_only_a_failed_upgrade_is_reported_at_registration():
    assert agent.upgrade_report({}) == {}
    assert agent.upgrade_report({"upgrade": {"state": "confirmed", "to": "9.9.9"}}) == {}
    assert agent.upgrade_report({"upgrade": {"state": "failed", "to": "9.9.9",
                                             "reason": "exited with 3"}}) == \
        {"upgradeFailed": {"version": "9.9.9", "reason": "exited with 3"}}


def test_auto_update_is_off_unless_the_config_says_so(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"agent": {}}')
    assert agent.load_config(str(path), env={}).auto_update is False
    path.write_text('{"agent": {"autoUpdate": true}}')
    assert agent.load_config(str(path), env={}).auto_update is True
