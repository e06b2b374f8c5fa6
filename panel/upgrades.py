"""Agent upgrades from the panel (issue 14): rollouts of the agent.py this panel ships.

The shipped agent is the file `settings.agent_file` (MPANEL_AGENT_FILE, default the repository's
agent.py): its version is its `__version__` line and its digest its SHA-256, both read from the
file (`shipped_agent`), never written down twice. /downloads/agent.py and the bundles serve the
same file, and agents that opted in fetch it from GET /api/agent/upgrade/agent.py.

A rollout (models.Rollout) offers that version to a set of servers — chosen ones, a customer's,
or a percentage of the fleet (a stable choice: `choose_percentage`) — a wave at a time
(`plan_waves`). The background job (`advance`, jobs.py) moves it on: a wave is offered only when
every server of the previous one has upgraded or was skipped (not opted in, offline; each said
so); a failure halts the rollout before the next wave (`next_step`). An offered server's agent
sees the offer in its answers (`offer_for`); its next registration reports the new version or
the failure its own fallback recorded (`note_registration`); silence past `offer_deadline` is a
failure too. Every start, result, halt and end is in the security log.

What a compromised panel could do with this, and why agents must opt in: docs/security.md.
"""
import dataclasses
import datetime
import hashlib
import math
import os
import re
import threading
import time

import peewee

from . import models
from .access import EVERYTHING
from .db import database_proxy, utcnow

DOWNLOAD_PATH = "/api/agent/upgrade/agent.py"
_VERSION_LINE = re.compile(rb'^__version__ = "([0-9A-Za-z][0-9A-Za-z.+-]{0,19})"$', re.M)
RESULTS = ("pending", "offered", "upgraded", "failed", "skipped")
# The agent watches a new file for 3 intervals + 60 s before falling back by itself
# (agent.py UPGRADE_WINDOW_*): the panel waits longer before calling the silence a failure.
OFFER_DEADLINE_INTERVALS = 5
OFFER_DEADLINE_SLACK = 180
MAX_WAVE_SIZE = 1000


# ===== The shipped agent ========================================================================

@dataclasses.dataclass(frozen=True)
class Shipped:
    path: str
    version: str
    sha256: str
    data: bytes = dataclasses.field(repr=False)

    @property
    def size(self):
        return len(self.data)


_shipped_cache = {}
_shipped_lock = threading.Lock()


def shipped_agent(path):
    """The agent.py at `path` (version, SHA-256, bytes), or None when it is missing or has no
    version line. Read again only when the file changes (its size and mtime)."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    key = (str(path), info.st_mtime_ns, info.st_size)
    with _shipped_lock:
        if key in _shipped_cache:
            return _shipped_cache[key]
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    match = _VERSION_LINE.search(data)
    shipped = Shipped(str(path), match.group(1).decode(), hashlib.sha256(data).hexdigest(),
                      data) if match else None
    with _shipped_lock:
        _shipped_cache.clear()
        _shipped_cache[key] = shipped
    return shipped


# ===== Pure planning ============================================================================

def choose_percentage(server_ids, percent, seed):
    """`percent` of `server_ids` (at least one), the same ones for the same seed (the target
    file's digest): each server's place is the hash of seed and id, not the order of the list."""
    ids = sorted(set(server_ids))
    count = min(len(ids), max(1, math.ceil(len(ids) * percent / 100)))
    ranked = sorted(ids, key=lambda i: hashlib.sha256(f"{seed}:{i}".encode()).hexdigest())
    return sorted(ranked[:count])


def plan_waves(server_ids, wave_size):
    """[[ids of wave 1], [wave 2], ...], `wave_size` servers each, in the given order."""
    ids = list(server_ids)
    return [ids[start:start + wave_size] for start in range(0, len(ids), wave_size)]


def next_step(results):
    """What a running rollout does next, from its servers' (wave, result): ("halt", None) after
    a failure, ("wait", None) while a wave is offered, ("offer", wave) for the next wave with
    servers pending, else ("done", None)."""
    states = [state for _, state in results]
    if "failed" in states:
        return "halt", None
    if "offered" in states:
        return "wait", None
    pending = [wave for wave, state in results if state == "pending"]
    if pending:
        return "offer", min(pending)
    return "done", None


def offer_deadline(report_interval):
    return datetime.timedelta(seconds=OFFER_DEADLINE_INTERVALS * report_interval
                              + OFFER_DEADLINE_SLACK)


# ===== Starting and halting (the page and the CLI) ==============================================

def start_rollout(settings, started_by, server_ids=(), customer_id=None, percent=None,
                  wave_size=1, now=None):
    """Start offering the shipped agent.py: to `server_ids`, to a customer's servers, or to
    `percent` of the fleet; `wave_size` servers per wave. -> the Rollout. ValueError with a
    message for a person when it cannot start."""
    now = now or utcnow()
    shipped = shipped_agent(settings.agent_file)
    if shipped is None:
        raise ValueError(f"the panel's agent file {settings.agent_file} is missing or has no "
                         "__version__ line")
    chosen = [bool(server_ids), customer_id is not None, percent is not None]
    if sum(chosen) != 1:
        raise ValueError("choose the servers one way: servers, a customer, or a percentage")
    if not isinstance(wave_size, int) or not 1 <= wave_size <= MAX_WAVE_SIZE:
        raise ValueError(f"the wave size must be a whole number from 1 to {MAX_WAVE_SIZE}")
    fleet = dict(models.fleet_for_rollout(EVERYTHING))
    if server_ids:
        unknown = sorted(set(server_ids) - set(fleet))
        if unknown:
            raise ValueError(f"no server with id {unknown[0]}")
        ids = sorted(set(server_ids))
        target = "servers " + ", ".join(fleet[i] for i in ids)
    elif customer_id is not None:
        customer = models.by_id(models.Customer, customer_id)
        if customer is None:
            raise ValueError(f"no customer with id {customer_id}")
        ids = [i for i, _ in models.fleet_for_rollout(EVERYTHING, customer.id)]
        target = f"customer {customer.name}"
    else:
        if not isinstance(percent, int) or not 1 <= percent <= 100:
            raise ValueError("the percentage must be a whole number from 1 to 100")
        ids = choose_percentage(fleet, percent, shipped.sha256)
        target = f"{percent} % of the fleet"
    if not ids:
        raise ValueError("no servers to upgrade: the choice has none")
    target = f"{target} ({len(ids)} server{'s' if len(ids) != 1 else ''})"[:200]
    try:
        with database_proxy.atomic():
            running = models.running_rollout()
            if running is not None:
                raise ValueError(f"rollout {running.id} (agent {running.version}) is still "
                                 "running: halt it first")
            rollout = models.Rollout.create(
                version=shipped.version, sha256=shipped.sha256, target=target,
                wave_size=wave_size, state="running", started_by=started_by[:64],
                created_at=now)
            for wave, members in enumerate(plan_waves(ids, wave_size), 1):
                for server_id in members:
                    models.RolloutServer.create(rollout=rollout, server=server_id, wave=wave)
            models.record_auth_event(
                "rollout_started", detail=f"rollout {rollout.id}: agent {shipped.version} "
                f"(sha256 {shipped.sha256[:12]}) to {target}, waves of {wave_size}, by "
                f"{started_by}")
    except peewee.IntegrityError:  # another start won the race (the one-running index)
        raise ValueError("another rollout was started at the same time") from None
    forget_running()
    return rollout


def halt_rollout(rollout_id, by, now=None):
    """Stop offering: servers not yet upgraded stay as they are. ValueError when it is not
    running."""
    now = now or utcnow()
    with database_proxy.atomic():
        if not models.finish_rollout(rollout_id, "halted", now, f"halted by {by}"):
            raise ValueError(f"no running rollout with id {rollout_id}")
        models.record_auth_event("rollout_halted", detail=f"rollout {rollout_id}: halted by "
                                                          f"{by}")
    forget_running()


def rollout_list(limit=20):
    """[(rollout, [its servers' rows])], newest first: the page's and the CLI's."""
    found = models.rollouts(limit)
    results = models.rollout_results([r.id for r in found])
    return [(rollout, results.get(rollout.id, [])) for rollout in found]


# ===== What agents see ==========================================================================

_RUNNING_TTL = 5.0  # seconds a replica trusts its idea of whether a rollout runs
_running = {"until": 0.0, "rollout": None}


def forget_running():
    _running["until"] = 0.0


def _running_rollout():
    """The running rollout, read at most every _RUNNING_TTL seconds: metrics answers ask on
    every report, and almost always none runs."""
    now = time.monotonic()
    if now >= _running["until"]:
        _running["rollout"] = models.running_rollout()
        _running["until"] = now + _RUNNING_TTL
    return _running["rollout"]


def offer_for(agent, settings):
    """The `upgrade` of this agent's answers: {version, sha256, path} while a running rollout
    offers the shipped file to its server, else None."""
    if _running_rollout() is None:
        return None
    rollout = models.offered_to(agent.server_id)
    shipped = shipped_agent(settings.agent_file)
    if rollout is None or shipped is None or shipped.sha256 != rollout.sha256:
        return None  # a changed file is never offered under an old digest (advance halts it)
    return {"version": rollout.version, "sha256": rollout.sha256, "path": DOWNLOAD_PATH,
            "size": shipped.size}


def note_registration(agent, document, now):
    """A registration of an offered server: its new version, or the failure its agent's
    fallback recorded, settles its result."""
    rollout = models.offered_to(agent.server_id)
    if rollout is None:
        return
    failed = document.get("upgradeFailed") or {}
    if document["version"] == rollout.version:
        _settle(rollout, agent.server_id, "upgraded", now, f"now runs {rollout.version}")
    elif failed.get("version") == rollout.version:
        _settle(rollout, agent.server_id, "failed", now,
                f"upgrade failed: {failed.get('reason') or 'no reason given'}; runs "
                f"{document['version']} again")


def _settle(rollout, server_id, state, now, detail, was="offered"):
    with database_proxy.atomic():
        if models.settle_rollout_server(rollout.id, server_id, state, now, detail, was=was):
            kind = {"upgraded": "upgrade_done", "failed": "upgrade_failed",
                    "skipped": "upgrade_skipped", "offered": "upgrade_offered"}[state]
            models.record_auth_event(kind, server_id=server_id,
                                     detail=f"rollout {rollout.id}: {detail}")


# ===== The job ==================================================================================

def advance(settings, now=None):
    """Move the running rollout on (jobs.py, under its lock): time out silent offers, halt after
    a failure, offer the next wave, finish. -> what it did, or None with nothing running."""
    now = now or utcnow()
    rollout = models.running_rollout()
    if rollout is None:
        return None
    shipped = shipped_agent(settings.agent_file)
    if shipped is None or shipped.sha256 != rollout.sha256:
        return _finish(rollout, "halted", now, "the panel's agent file changed since the "
                                               "rollout started")
    deadline = offer_deadline(settings.report_interval)
    offline = datetime.timedelta(seconds=settings.offline_after)
    def results():
        return models.rollout_results([rollout.id]).get(rollout.id, [])

    rows = results()
    # Bounded: each pass settles a whole wave (or returns), and there are at most one per row.
    for _ in range(len(rows) + 2):
        late = [row for row in rows if row.state == "offered" and row.offered_at + deadline < now]
        for row in late:
            _settle(rollout, row.server_id, "failed", now,
                    f"no report of version {rollout.version} within "
                    f"{deadline.total_seconds():.0f} s of the offer")
        if late:
            rows = results()
        step, wave = next_step([(row.wave, row.state) for row in rows])
        if step == "halt":
            failed = next(row for row in rows if row.state == "failed")
            return _finish(rollout, "halted", now, f"{failed.name} failed: {failed.detail}")
        if step == "done":
            return _finish(rollout, "done", now, None)
        if step == "wait":
            return "waiting"
        for row in rows:
            if row.wave != wave or row.state != "pending":
                continue
            if row.agent_version == rollout.version:
                _settle(rollout, row.server_id, "upgraded", now,
                        f"already runs {rollout.version}", was="pending")
            elif not row.auto_update:
                _settle(rollout, row.server_id, "skipped", now,
                        "not opted in (agent.autoUpdate is off)", was="pending")
            elif row.last_seen is None or row.last_seen + offline < now:
                _settle(rollout, row.server_id, "skipped", now, "offline", was="pending")
            else:
                _settle(rollout, row.server_id, "offered", now,
                        f"offered {rollout.version} (wave {wave})", was="pending")
        rows = results()
    return "waiting"


def _finish(rollout, state, now, detail):
    with database_proxy.atomic():
        if models.finish_rollout(rollout.id, state, now, detail):
            models.record_auth_event(
                f"rollout_{state}", detail=f"rollout {rollout.id}: agent {rollout.version} "
                + (f"halted: {detail}" if state == "halted" else "reached every server"))
    forget_running()
    return state
