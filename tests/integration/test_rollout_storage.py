"""The rollout's storage on both backends (panel/upgrades.py over models.py): starting one,
the job's conditional steps from wave to wave, results from registrations, timeouts, halting,
and the one-running rule. The agents are rows here; test_upgrades.py runs real ones."""
import datetime

import peewee
import pytest

from panel import fleet_table, models, operations, upgrades
from panel.access import EVERYTHING
from panel.db import utcnow
from panel.settings import Settings
from tests.conftest import TEST_BCRYPT_ROUNDS


@pytest.fixture
def fleet(database, backend_url, tmp_path):
    """Three servers: two agents that opted in, one that did not; all online at 0.2.0. The
    panel ships 0.3.0."""
    shipped = tmp_path / "agent.py"
    shipped.write_text('__version__ = "0.3.0"\n')
    settings = Settings(database_url=backend_url, agent_file=shipped, report_interval=60)
    ids = []
    for name, opted in (("a", True), ("b", True), ("c", False)):
        server, _ = operations.add_server(name, TEST_BCRYPT_ROUNDS)
        agent = models.agent_of_server(server.id)
        models.update_agent(agent.id, agent_version="0.2.0", auto_update=opted,
                            last_seen=utcnow())
        ids.append(server.id)
    return settings, ids


def states(rollout_id):
    return {row.server_id: row.state for row in models.RolloutServer.select().where(
        models.RolloutServer.rollout == rollout_id)}


def register(server_id, version, failed=None):
    agent = models.agent_of_server(server_id)
    document = {"version": version, **({"upgradeFailed": failed} if failed else {})}
    upgrades.note_registration(agent, document, utcnow())


def test_waves_advance_on_each_upgrade_and_a_failure_halts_before_the_next(fleet):
    settings, (a, b, c) = fleet
    rollout = upgrades.start_rollout(settings, "tester", server_ids=[c, a, b], wave_size=1)
    assert rollout.version == "0.3.0" and rollout.target.startswith("servers a, b, c")
    assert upgrades.advance(settings) == "waiting"
    assert states(rollout.id) == {a: "offered", b: "pending", c: "pending"}
    assert upgrades.offer_for(models.agent_of_server(a), settings)["version"] == "0.3.0"
    assert upgrades.offer_for(models.agent_of_server(b), settings) is None

    register(a, "0.3.0")
    assert upgrades.advance(settings) == "waiting"
    assert states(rollout.id) == {a: "upgraded", b: "offered", c: "pending"}
    register(b, "0.2.0", failed={"version": "0.3.0", "reason": "exited with 3"})
    register(b, "0.2.0", failed={"version": "0.3.0", "reason": "exited with 3"})  # once
    assert upgrades.advance(settings) == "halted"
    assert states(rollout.id) == {a: "upgraded", b: "failed", c: "pending"}
    halted = models.Rollout.get_by_id(rollout.id)
    assert halted.state == "halted" and "b failed: upgrade failed: exited with 3" in halted.detail
    assert upgrades.advance(settings) is None  # nothing runs any more
    rows = {row["id"]: row for row in fleet_table.server_rows(300, EVERYTHING)}
    assert rows[b]["upgrade_failed"].startswith("upgrade failed: exited with 3")
    assert rows[a]["upgrade_failed"] is None and rows[c]["upgrade_failed"] is None
    kinds = [e.kind for e in models.AuthEvent.select().order_by(models.AuthEvent.id)]
    assert kinds == ["rollout_started", "upgrade_offered", "upgrade_done", "upgrade_offered",
                     "upgrade_failed", "rollout_halted"]


def test_servers_not_opted_in_offline_or_already_there_are_settled_without_an_offer(fleet):
    settings, (a, b, c) = fleet
    long_ago = utcnow() - datetime.timedelta(hours=1)
    models.update_agent(models.agent_of_server(b).id, last_seen=long_ago)
    models.update_agent(models.agent_of_server(a).id, agent_version="0.3.0")
    rollout = upgrades.start_rollout(settings, "tester", server_ids=[a, b, c], wave_size=5)
    assert upgrades.advance(settings) == "done"
    rows = {row.server_id: row for row in models.RolloutServer.select()}
    assert {k: r.state for k, r in rows.items()} == {a: "upgraded", b: "skipped", c: "skipped"}
    assert rows[b].detail == "offline" and "not opted in" in rows[c].detail
    assert models.Rollout.get_by_id(rollout.id).state == "done"


def test_an_offer_unanswered_past_the_deadline_fails_and_halts(fleet):
    settings, (a, b, _) = fleet
    rollout = upgrades.start_rollout(settings, "tester", server_ids=[a, b])
    upgrades.advance(settings)
    later = utcnow() + upgrades.offer_deadline(settings.report_interval) + \
        datetime.timedelta(seconds=1)
    assert upgrades.advance(settings, now=later) == "halted"
    assert states(rollout.id) == {a: "failed", b: "pending"}


def test_a_changed_agent_file_halts_the_rollout_and_is_never_offered(fleet):
    settings, (a, _, _) = fleet
    rollout = upgrades.start_rollout(settings, "tester", server_ids=[a])
    upgrades.advance(settings)
    settings.agent_file.write_text('__version__ = "0.3.1"\n')
    assert upgrades.offer_for(models.agent_of_server(a), settings) is None
    assert upgrades.advance(settings) == "halted"
    assert "changed" in models.Rollout.get_by_id(rollout.id).detail


def test_one_rollout_runs_at_a_time(fleet):
    settings, (a, b, _) = fleet
    first = upgrades.start_rollout(settings, "tester", server_ids=[a])
    with pytest.raises(ValueError, match=f"rollout {first.id} .* is still running"):
        upgrades.start_rollout(settings, "tester", server_ids=[b])
    with pytest.raises(peewee.IntegrityError):  # the database says so too
        with models.database_proxy.atomic():
            models.Rollout.create(version="x", sha256="0" * 64, target="t", wave_size=1,
                                  state="running", started_by="t")
    upgrades.halt_rollout(first.id, "tester")
    upgrades.start_rollout(settings, "tester", server_ids=[b])


def test_a_customer_or_a_percentage_chooses_the_servers(fleet):
    settings, (a, b, c) = fleet
    customer = operations.add_customer("Acme", None)
    operations.move_server(b, customer.id)
    rollout = upgrades.start_rollout(settings, "tester", customer_id=customer.id)
    assert set(states(rollout.id)) == {b}
    upgrades.halt_rollout(rollout.id, "tester")
    rollout = upgrades.start_rollout(settings, "tester", percent=50)
    assert len(states(rollout.id)) == 2
    with pytest.raises(ValueError, match="one way"):
        upgrades.start_rollout(settings, "tester", server_ids=[a], percent=10)
