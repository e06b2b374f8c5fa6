"""Background jobs: offline detection, threshold rules, alert delivery, agent upgrade rollouts
(upgrades.advance), rollups and retention. Every panel replica runs the loop; each job runs in
one replica at a time — on PostgreSQL under a transaction-scoped advisory lock, on SQLite under
the database's own write lock. Either way the writes are conditional (state changes, unique open
alerts, claimed deliveries, rollout results), so even two runs at once record each transition
once.
"""
import datetime
import logging
import threading
import time

from . import alerts, checks, forecasts, models, quotas, rollups, upgrades
from .db import database_proxy, is_postgres, utcnow

log = logging.getLogger("mpanel.jobs")

# Advisory lock keys: one per job, in a range of our own.
LOCK_KEYS = {"offline": 7_341_001, "rules": 7_341_002, "deliver": 7_341_003,
             "rollups": 7_341_004, "retention": 7_341_005, "checks": 7_341_006,
             "forecasts": 7_341_007, "upgrades": 7_341_014, "quotas": 7_341_016}


def run_locked(name, job, *args):
    """Run `job(*args)` unless another replica holds this job's lock (PostgreSQL). The lock is
    held by this connection for the job's run, without a transaction around it: alert delivery
    makes network calls, and a transaction held open meanwhile would block writers (on SQLite,
    every writer). Jobs group their own writes in short transactions."""
    if not is_postgres():
        return job(*args)
    key = LOCK_KEYS[name]
    if not models.try_job_lock(key):
        return None
    try:
        return job(*args)
    finally:
        models.release_job_lock(key)


# ===== Offline detection ========================================================================

def detect_offline(offline_after, now=None):
    """Servers silent for `offline_after` seconds become offline, once each. -> their names."""
    now = now or utcnow()
    cutoff = now - datetime.timedelta(seconds=offline_after)
    gone = []
    for agent in models.silent_online_agents(cutoff):
        server = agent.server
        went_at = agent.last_seen + datetime.timedelta(seconds=offline_after)
        with database_proxy.atomic():
            if not models.change_server_state(server.id, "offline", went_at, was="online"):
                continue
            models.record_server_event(
                server.id, "offline", went_at,
                detail=f"silent since {agent.last_seen:%Y-%m-%d %H:%M:%S} UTC")
        if server.critical:
            alerts.open_alert(server, "offline", f"offline: no report since "
                              f"{agent.last_seen:%Y-%m-%d %H:%M:%S} UTC", now)
        gone.append(server.name)
    return gone


def note_alive(agent, now):
    """Called on every authenticated report: the first after silence records the return."""
    server = agent.server
    if server.state == "online":
        return
    with database_proxy.atomic():
        changed = models.change_server_state(server.id, "online", now, was=server.state)
        previous, server.state = server.state, "online"  # also in a cached agent row
        if not changed or previous != "offline":
            return
        models.record_server_event(server.id, "online", now)
    alerts.resolve_alert(server, "offline", now)


# ===== Threshold rules ==========================================================================

def evaluate_rules(interval, now=None):
    """Open and resolve threshold alerts for every reporting server. -> (opened, resolved)."""
    now = now or utcnow()
    rules = models.all_rules()
    if not rules:
        return 0, 0
    longest = max(rule.minutes for rule in rules)
    since = now - datetime.timedelta(minutes=longest, seconds=2 * interval)
    samples = models.watched_samples(alerts.WATCHED_COLUMNS, since)
    # An agent whose clock is off is judged by its own clock, so a clock set back an hour does
    # not blind the rules to what it sends now: its window is read on its own, by its key, as
    # long as anyone else's (the offset is the agent's to claim, so it buys no wider read).
    offsets = models.skewed_clocks()
    for agent_id, offset in offsets.items():
        if offset < 0:
            shift = datetime.timedelta(seconds=offset)
            samples.pop(agent_id, None)
            samples.update(models.watched_samples(alerts.WATCHED_COLUMNS, agent_id=agent_id,
                                                  start=since + shift, end=now + shift))
    agents = models.agents_with_servers(samples)
    open_rules = models.open_alert_keys()
    opened = resolved = 0
    for agent in agents:
        server = agent.server
        rows = samples[agent.id]
        agent_now = models.agent_clock(offsets.get(agent.id), now)
        for rule in alerts.effective_rules(rules, server.id):
            if rule.metric not in alerts.WATCHED:
                continue  # a metric of a newer release sharing the database
            below = alerts.WATCHED[rule.metric].alert.below
            points = [(r["timestamp"], alerts.sample_value(rule.metric, r)) for r in rows]
            firing = (server.id, rule.metric) in open_rules
            decision = alerts.evaluate(points, rule.threshold, rule.minutes, firing, agent_now,
                                       interval, below)
            if decision == "fire":
                value = points[-1][1] if points else None
                unit = alerts.UNITS[rule.metric]
                message = (f"{rule.metric} {alerts.SIDES[rule.metric]} {rule.threshold:g}{unit} "
                           f"for {rule.minutes} min (now {value:.1f}{unit})")
                if alerts.open_alert(server, rule.metric, message, now, value, rule.threshold):
                    opened += 1
            elif decision == "resolve":
                if alerts.resolve_alert(server, rule.metric, now):
                    resolved += 1
    return opened, resolved


# ===== Service checks ===========================================================================

def evaluate_checks(offline_after, now=None, enabled_collectors=()):
    """Judge every server's newest sample (if it is recent) with the check rules in force.
    A service whose collector the panel's settings switched off (`enabled_collectors`, empty:
    all) is not down: its states are forgotten. -> (opened, resolved)."""
    now = now or utcnow()

    def collected(name):
        return not enabled_collectors or "services" in enabled_collectors or \
            name in enabled_collectors

    rules = [rule for rule in models.all_rules() if rule.metric in checks.BY_METRIC]
    if not rules:
        return 0, 0
    since = now - datetime.timedelta(seconds=offline_after)
    opened = resolved = 0
    latest = models.latest_services(since)
    states = models.check_states([agent.id for agent, _, _ in latest])
    mounts = forecast_view(models.forecasts_of([agent.id for agent, _, _ in latest]), now) \
        if any(checks.BY_METRIC[rule.metric].reads == "forecasts" for rule in rules) else {}
    # A subject still bad stays "fire" at every run: one already open is not inserted again.
    already_open = models.open_alert_keys()
    for agent, taken_at, detail in latest:
        server = agent.server
        services = detail.get("services") or {}
        unavailable = detail.get("unavailable") or {}
        for rule in alerts.effective_rules(rules, server.id):
            check = checks.BY_METRIC[rule.metric]
            mine = states.get((agent.id, check.metric), {})
            # A subject left out of `seen` and not in the sample is resolved and forgotten.
            seen = {subject: state.was for subject, state in mine.items() if state.was and
                    (check.metric != "service_down" or collected(subject))}
            told = unavailable if check.metric != "service_down" else \
                {name: why for name, why in unavailable.items() if collected(name)}
            given = services if check.reads == "services" else mounts.get(agent.id, {})
            findings = check.judge(given, told, rule.threshold, seen)
            changes = checks.steps(check, rule.threshold, rule.minutes, findings, mine, taken_at)
            with database_proxy.atomic():
                models.store_check_states(agent.id, check.metric, changes, now)
            for step in changes:
                key = alerts.subject_key(check.metric, step.subject)
                if step.fire and (server.id, key) not in already_open:
                    text = checks.message(check, step.subject, step, rule.threshold)
                    if alerts.open_alert(server, check.metric, text, now, step.value,
                                         rule.threshold, key=key):
                        opened += 1
                elif step.resolve:
                    if alerts.resolve_alert(server, check.metric, now, key=key):
                        resolved += 1
    return opened, resolved


# ===== Disk-full forecasts ======================================================================

FORECAST_EVERY = 600  # seconds: the history is hourly, so a forecast moves little in between
FORECAST_BATCH = 100  # servers fitted and stored together


def forecast_view(stored, now):
    """{agent_id: {mount: (forecasts.Forecast, seconds left)}}: what the disk_full check
    judges, from models.forecasts_of."""
    return {agent_id: {item.mount: (item, item.seconds_left(now)) for item in items}
            for agent_id, items in stored.items()}


def refresh_forecasts(now=None):
    """Record each server's newest sample's mounts into their hour (models.MountHour), then
    fit every mount's forecast from its last forecasts.WINDOW. -> mounts forecast."""
    now = now or utcnow()
    hour = datetime.timedelta(hours=1)
    rows = [{"agent": agent.id, "mount": mount, "bucket": rollups.floor_time(taken_at, 3600),
             "used": used, "capacity": capacity}
            for agent, taken_at, detail in models.latest_services(now - hour)
            if taken_at > now - hour
            for mount, used, capacity in forecasts.hour_rows(detail.get("disks"))]
    with database_proxy.atomic():
        models.record_mount_hours(rows)
    made = 0
    since = now - forecasts.WINDOW
    agent_ids = models.agents_with_mount_history(since)
    # A batch of servers at a time: a fleet's week of hours is never all in memory, and each
    # batch's forecasts are one short transaction.
    for start in range(0, len(agent_ids), FORECAST_BATCH):
        history = models.mount_history(since, agent_ids[start:start + FORECAST_BATCH])
        fitted = {agent_id: [forecasts.forecast(mount, points)
                             for mount, points in mounts.items()]
                  for agent_id, mounts in history.items()}
        with database_proxy.atomic():
            for agent_id, items in fitted.items():
                models.store_forecasts(agent_id, items, now)
        made += sum(len(items) for items in fitted.values())
    with database_proxy.atomic():
        models.forget_forecasts_before(now)  # of servers with no history left
    return made


def housekeeping(settings):
    """Partitions ahead (PostgreSQL), then retention."""
    rollups.ensure_partitions(days_back=settings.retention_raw_days + 1)
    return rollups.prune(settings)


# ===== The loop =================================================================================

class JobRunner(threading.Thread):
    """Runs the jobs every `every` seconds until stopped. A job that raises is logged and
    tried again next round; the others still run."""

    def __init__(self, settings, every=15.0):
        super().__init__(name="mpanel-jobs", daemon=True)
        self.settings = settings
        self.every = every
        self.stopped = threading.Event()
        self.last_run = {}
        self.failing = {}  # job name -> what its last failure was, while it keeps failing

    def jobs(self):
        """(name, function, argument, at most every N seconds)."""
        settings = self.settings
        return (
            ("offline", detect_offline, settings.offline_after, 0),
            ("rules", evaluate_rules, settings.report_interval, 0),
            ("checks", lambda s: evaluate_checks(s.offline_after,
                                                 enabled_collectors=s.enabled_collectors),
             settings, 0),
            ("deliver", lambda s: alerts.deliver_due(s.smtp, allowed=s.allow_channel_networks),
             settings, 0),
            ("upgrades", upgrades.advance, settings, 0),
            ("rollups", lambda _: rollups.run_rollups(), None, 60),
            # After the rollups: the traffic hours it recomputes are what the quotas read.
            ("quotas", lambda _: quotas.evaluate(), None, 60),
            ("forecasts", lambda _: refresh_forecasts(), None, FORECAST_EVERY),
            ("retention", housekeeping, settings, 600),
        )

    def run_once(self):
        now = time.monotonic()
        for name, job, argument, period in self.jobs():
            if period and now - self.last_run.get(name, -period) < period:
                continue
            self.last_run[name] = now
            started = time.perf_counter()
            try:
                with database_proxy.connection_context():
                    result = run_locked(name, job, argument)
            except Exception as err:  # the boundary: one failing job must not stop the others
                # Logged with its traceback when it starts failing or fails differently; a
                # database that stays broken is one message, not one every round.
                failure = f"{type(err).__name__}: {err}"
                if self.failing.get(name) != failure:
                    log.exception("job failed name=%s (logged again when it recovers or fails "
                                  "differently)", name)
                else:
                    log.debug("job still failing name=%s error=%s", name, failure)
                self.failing[name] = failure
                continue
            if self.failing.pop(name, None) is not None:
                log.warning("job recovered name=%s", name)
            log.debug("job done name=%s result=%s ms=%.1f", name, result,
                      (time.perf_counter() - started) * 1000)

    def run(self):
        while not self.stopped.wait(self.every):
            self.run_once()

    def stop(self):
        self.stopped.set()
