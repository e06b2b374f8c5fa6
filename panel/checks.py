"""Service checks: built-in alert rules judged on each server's newest sample, one alert per
subject (a service, a PHP-FPM pool, a certificate, a watched process, a systemd unit).

A figure's rule (figures.Watch) watches one stored column over time; a check reads the services
a sample carries, which come in lists whose members matter by name: "certificate shop.example.com
expires in 3 days" is one alert, "www.example.com" another. CHECKS is the one table: each entry
is a rule metric (alert_rules.metric, set by the admin like any other), its built-in threshold
and duration, and a pure `judge` that turns a sample's services into findings per subject,
tested alone (pure: nothing from the rest of the panel but units, which words a value;
jobs.evaluate_checks runs them). check_states keeps, per (server, metric, subject), since when
it has been bad and what it was when last good, so a message can say what broke, what the value
is and what it was, and a rule can ask for a state to hold `minutes` before it fires. Each check
names the service its subjects belong to: the servers table's per-service columns.
"""
import dataclasses
import datetime

from . import units


@dataclasses.dataclass(frozen=True)
class Finding:
    """One subject's state in one sample: `bad` against the rule's threshold, `value` the
    figure compared (None for a state), `text` how the message says it ("3 waiting")."""
    value: float
    bad: bool
    text: str


@dataclasses.dataclass(frozen=True)
class Check:
    metric: str             # alert_rules.metric
    title: str              # how a message and the rules page name it
    judge: object           # (services, unavailable, threshold, seen) -> {subject: Finding}
    threshold: float        # the built-in rule's, in `unit`
    minutes: int = 0        # how long a subject must stay bad before it fires
    unit: str = ""
    below: bool = False     # bad under the threshold (days left), else over it
    since: int = 7          # the schema version that brought the built-in rule
    help: str = ""          # what the threshold means, for the rules page
    uses_threshold: bool = True  # False: a state (down, failed); the threshold is ignored
    service: str = ""       # the services section its subjects are in ("" : the subject is one)
    # What its judge is given as `services`: the newest sample's services, or "forecasts":
    # {mount: (forecasts.Forecast, seconds left)} of the server's mounts (the forecasts job's).
    reads: str = "services"


def _over(value, threshold, below=False):
    if value is None:
        return False
    return value < threshold if below else value > threshold


# ===== The judges (pure) ========================================================================
# Each takes the sample's `services` dict, its `unavailable` dict (collector -> why), the rule's
# threshold, and `seen`: {subject: Finding text when last good} of this server's earlier states.

def judge_service_down(services, unavailable, threshold, seen):
    """A service this server reported before that is now absent or failing: "seen, then gone".
    A service never seen is not down, so installing nothing alarms no one."""
    found = {}
    for name, section in services.items():
        if isinstance(section, dict) and section.get("up") is False:
            # A collector that remembers its server was up says so itself (MySQL).
            found[name] = Finding(None, name in seen, "not answering")
        else:
            found[name] = Finding(None, False, "up")
    for name, why in unavailable.items():
        if why.startswith("gone: "):
            # The agent says "gone: <why>" of a service it answered for before, whether or not
            # the panel saw it up (a check run may fall between its samples).
            found[name] = Finding(None, True, f"not answering ({why[6:]})")
        elif name in seen or name in found:
            found[name] = Finding(None, True, f"failing: {why}")
    for name in seen:
        if name not in found:
            found[name] = Finding(None, True, "no longer answering")
    return found


def judge_mysql_connections(services, unavailable, threshold, seen):
    mysql = services.get("mysql")
    if not mysql or mysql.get("connectionsPercent") is None:
        return {}
    share = mysql["connectionsPercent"]
    return {"mysql": Finding(share, _over(share, threshold),
                             f"{mysql.get('connections')} of {mysql.get('maxConnections')} "
                             f"connections ({share:.0f} %)")}


def judge_mysql_replica(services, unavailable, threshold, seen):
    """A replica whose IO or SQL thread stopped (with its error number), or that lags more than
    `threshold` seconds. A primary sends no replica fields: nothing to judge."""
    mysql = services.get("mysql") or {}
    if "replicaIoRunning" not in mysql and "replicaSqlRunning" not in mysql:
        return {}
    stopped = [f"{name} thread stopped" + (f" (error {mysql[errno]})" if mysql.get(errno) else "")
               for name, key, errno in (("IO", "replicaIoRunning", "replicaIoErrno"),
                                        ("SQL", "replicaSqlRunning", "replicaSqlErrno"))
               if not mysql.get(key)]
    if stopped:
        return {"mysql": Finding(None, True, "replication " + ", ".join(stopped))}
    lag = mysql.get("replicaLag")
    return {"mysql": Finding(lag, _over(lag, threshold),
                             "replica lag unknown" if lag is None else f"{lag:g} s behind")}


def _pools(services):
    return ((services.get("phpfpm") or {}).get("pools")) or []


def judge_fpm_queue(services, unavailable, threshold, seen):
    return {f"pool {pool['name']}": Finding(
        pool.get("listenQueue"), _over(pool.get("listenQueue"), threshold),
        f"{pool.get('listenQueue')} connections waiting in the listen queue")
        for pool in _pools(services) if pool.get("listenQueue") is not None}


def judge_fpm_max_children(services, unavailable, threshold, seen):
    """Bad while a pool keeps hitting pm.max_children: the agent sends how many times it did
    since the previous sample (maxChildrenReached; absent on the first)."""
    found = {}
    for pool in _pools(services):
        reached = pool.get("maxChildrenReached")
        if reached is not None:
            found[f"pool {pool['name']}"] = Finding(
                reached, _over(reached, threshold),
                f"reached pm.max_children {reached} times since the previous sample"
                if reached else "below pm.max_children")
    return found


def judge_mail_queue(services, unavailable, threshold, seen):
    queue = services.get("mailqueue")
    if not queue or queue.get("total") is None:
        return {}
    return {queue.get("mta", "mail"): Finding(queue["total"], _over(queue["total"], threshold),
                                              f"{queue['total']} messages queued")}


def judge_mail_oldest(services, unavailable, threshold, seen):
    """The oldest message's age; an empty queue (no oldestAge) is the good state, so the
    message can say what it was before mail got stuck."""
    queue = services.get("mailqueue")
    if not queue or queue.get("total") is None:
        return {}
    subject, age = queue.get("mta", "mail"), queue.get("oldestAge")
    if age is None:
        return {subject: Finding(0, False, "no message queued")} if queue["total"] == 0 else {}
    return {subject: Finding(age, _over(age, threshold),
                             f"oldest message queued {units.ago(age)}")}


def judge_certificates(services, unavailable, threshold, seen):
    """One finding per site name, from its most urgent certificate: a name comes twice when
    nginx's config names a renewed file while the handshake still gets the old certificate
    (nginx not reloaded), and the old one is what visitors see."""
    found = {}
    for cert in (services.get("certificates") or {}).get("certificates") or []:
        days = cert.get("daysLeft")
        if days is None or (cert["name"] in found and found[cert["name"]].value <= days):
            continue
        text = f"expired {-days:.0f} days ago" if days < 0 else f"expires in {days:.0f} days"
        found[cert["name"]] = Finding(days, _over(days, threshold, below=True), text)
    return found


def judge_watched(services, unavailable, threshold, seen):
    return {proc["name"]: Finding(proc.get("count"), proc.get("count", 0) < threshold,
                                  f"{proc.get('count', 0)} running")
            for proc in (services.get("watched") or {}).get("processes") or []}


def judge_units(services, unavailable, threshold, seen):
    """The units systemd lists (the configured ones and every failed one): bad while failed. A
    unit no longer listed has recovered: steps() resolves and forgets it."""
    found = {}
    for unit in (services.get("systemd") or {}).get("units") or []:
        state = unit.get("activeState") or "unknown"
        text = f"{state} ({unit['subState']})" if unit.get("subState") else state
        found[unit["name"]] = Finding(None, state == "failed", text)
    return found


def judge_disk_full(mounts, unavailable, threshold, seen):
    """A mount whose forecast (forecasts.py) says full within `threshold` days. One without a
    forecast (flat, shrinking, too little history) is good: its alert resolves."""
    found = {}
    for mount, (item, left) in mounts.items():
        days = None if left is None else left / 86400
        text = f"full in {units.duration(left)}" if left else \
            "full" if left == 0 else f"not filling ({item.reason})"
        if days is not None and item.bytes_per_day:
            text += f" at {units.size(item.bytes_per_day)} a day"
        found[mount] = Finding(days, _over(days, threshold, below=True), text)
    return found


CHECKS = (
    Check("service_down", "Service down", judge_service_down, 0, minutes=2,
          help="a service this server reported before stops answering", uses_threshold=False),
    Check("mysql_conns", "MySQL connections", judge_mysql_connections, 80, minutes=5,
          unit="%", help="connections above this share of max_connections", service="mysql"),
    Check("mysql_replica", "MySQL replication", judge_mysql_replica, 300, minutes=2, unit="s",
          help="replication stopped, or the replica this many seconds behind", service="mysql"),
    Check("fpm_queue", "PHP-FPM listen queue", judge_fpm_queue, 0, minutes=5,
          help="connections waiting for a free worker", service="phpfpm"),
    Check("fpm_children", "PHP-FPM max children", judge_fpm_max_children, 0, minutes=0,
          help="times a pool hit pm.max_children since the previous sample", service="phpfpm"),
    Check("mail_queue", "Mail queue", judge_mail_queue, 500, minutes=10,
          help="messages in the queue", service="mailqueue"),
    Check("mail_oldest", "Oldest queued mail", judge_mail_oldest, 3600, minutes=0, unit="s",
          help="age of the oldest queued message", service="mailqueue"),
    Check("cert_expiry", "TLS certificate", judge_certificates, 14, minutes=0, unit=" days",
          below=True, service="certificates",
          help="days until a site's certificate expires (expired ones too; a site served two "
               "certificates counts by the one that expires first)"),
    Check("process_down", "Watched process", judge_watched, 1, minutes=2, below=True,
          help="a watched process with fewer than this many running", service="watched"),
    Check("unit_failed", "systemd unit", judge_units, 0, minutes=0,
          help="a unit in the failed state", uses_threshold=False, service="systemd"),
    Check("disk_full", "Disk full forecast", judge_disk_full, 7, minutes=0, unit=" days",
          below=True, since=15, reads="forecasts",
          help="days until a mount is full at the trend of its last 7 days (least squares on "
               "its hourly history; none while flat, shrinking or with under 6 hours of it)"),
)
BY_METRIC = {check.metric: check for check in CHECKS}


# A service's state in the servers table, worst first: its cell's word and its sort rank.
SERVICE_STATES = ("down", "problem", "up")


def service_states(services, problems):
    """One server's {service: (state, [what is wrong])} from its check states: `services`
    [(name, down)] (service_down's subjects), `problems` [(metric, subject, text)] of the bad
    ones. A service with a bad check of its own (a pool's queue, a certificate) is a
    "problem" unless it is down."""
    states = {name: ("down" if down else "up", []) for name, down in services}
    for metric, subject, text in problems:
        check = BY_METRIC.get(metric)
        if check is None or not check.service:  # service_down: already in `services`
            continue
        state, wrong = states.get(check.service, ("up", []))
        states[check.service] = ("down" if state == "down" else "problem",
                                 wrong + [f"{subject}: {text}"])
    return states


def _check():
    for check in CHECKS:
        assert len(check.metric) <= 16, f"{check.metric}: alert_rules.metric holds 16"
        assert check.service or check.metric == "service_down" or check.reads != "services", \
            f"{check.metric}: no service"
        assert check.reads in ("services", "forecasts"), check.metric
    assert len(BY_METRIC) == len(CHECKS), "a check listed twice"


_check()


# ===== Judging one sample against the states before it (pure) ==================================

@dataclasses.dataclass
class Step:
    """What a sample changes for one (metric, subject): the state to store, and whether to
    open or resolve its alert."""
    subject: str
    bad_since: datetime.datetime    # None while good
    text: str                       # the finding's text now
    was: str                        # the text when last good
    value: float
    fire: bool = False
    resolve: bool = False
    gone: bool = False              # the subject left the sample: forget its state


def steps(check, threshold, minutes, findings, states, at):
    """[Step] for one check on one server: `findings` of the newest sample (taken `at`),
    `states` {subject: CheckState} stored before. A bad subject fires once it has been bad for
    `minutes`; a good one resolves; a subject gone from the sample is resolved and forgotten."""
    result = []
    for subject, finding in findings.items():
        state = states.get(subject)
        was = state.was if state else None
        if not finding.bad:
            result.append(Step(subject, None, finding.text, finding.text, finding.value,
                               resolve=bool(state and state.bad_since)))
            continue
        since = state.bad_since if state and state.bad_since else at
        result.append(Step(subject, since, finding.text, was, finding.value,
                           fire=at - since >= datetime.timedelta(minutes=minutes)))
    for subject, state in states.items():
        if subject not in findings:
            result.append(Step(subject, None, state.text, state.was, None,
                               resolve=bool(state.bad_since), gone=True))
    return result


def message(check, subject, step, threshold):
    """"PHP-FPM listen queue: pool www: 12 connections waiting in the listen queue (was 0
    connections waiting ...; threshold 0)"."""
    was = f"; was {step.was}" if step.was and step.was != step.text else ""
    limit = "" if not check.uses_threshold or step.value is None else \
        f"; {'below' if check.below else 'above'} {threshold:g}{check.unit}"
    return f"{check.title}: {subject}: {step.text}{was}{limit}"
