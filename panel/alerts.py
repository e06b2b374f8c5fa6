"""Alerts: pure rule evaluation, opening and resolving alerts once, and delivering them to
webhooks, e-mail and (with the optional Apprise package) about 150 other services, with retries.

Channel kinds are one table, CHANNEL_KINDS: each entry checks a target, delivers to it, says
how the page shows it and which host of it a customer's channel may reach (outbound.py), and
gives the alerts page its choice and the CLI its `add-channel --<kind>` flag. A kind not in the
table is refused when a channel is added and at delivery (a row written by hand or by a newer
release is never sent as e-mail). The `apprise` kind is always in the table: on a panel without
the package it is refused when added and fails its deliveries, naming the package.

Evaluation is a pure function of the recent samples (tested alone): a rule fires when every
sample of the last `minutes` is above its threshold, and resolves when every sample of the last
`minutes` is below the threshold less 5 % — a minimum duration both ways plus hysteresis, so a
value hovering around the line makes no storm of alerts.

Opening is an INSERT guarded by a unique (server_id, open_key) index and resolving a conditional
UPDATE, so two replicas evaluating at the same moment still produce one alert and one
delivery per channel.
"""
import dataclasses
import datetime
import email.message
import functools
import hashlib
import json
import logging
import smtplib
import ssl
import urllib.parse
import urllib.request

import peewee

from . import checks, figures, models, outbound
from .db import database_proxy, utcnow
from .settings import SMTP_TLS_MODES

log = logging.getLogger("mpanel.alerts")

APPRISE_MISSING = ("apprise channels need the Apprise package, which this panel does not "
                   "have: pip install -r requirements-optional.txt (or pip install apprise)")

# The rule metrics, from the figure table (figures.Figure.alert): the name stored in
# alert_rules.metric -> the figure it watches.
WATCHED = figures.ALERTED
# Every rule metric an admin can set: the figures' and the service checks' (checks.CHECKS).
METRICS = tuple(WATCHED) + tuple(checks.BY_METRIC)
UNITS = {**{metric: "%" if figures.shown_unit(figure) == "percent" else ""
            for metric, figure in WATCHED.items()},
         **{check.metric: check.unit for check in checks.CHECKS}}
# Which side of its threshold is bad, and what the rules page says a threshold means.
SIDES = {**{metric: "below" if figure.alert.below else "above" for metric, figure in WATCHED.items()},
         **{check.metric: "below" if check.below else "above" for check in checks.CHECKS}}
HELP = {**{metric: figure.description for metric, figure in WATCHED.items()},
        **{check.metric: check.help for check in checks.CHECKS}}
# The checks that judge a state, whose threshold means nothing.
STATES = tuple(check.metric for check in checks.CHECKS if not check.uses_threshold)
# The server_metrics columns sample_value reads.
WATCHED_COLUMNS = tuple(dict.fromkeys(column for figure in WATCHED.values()
                                      for column in (figure.column, figure.share_of) if column))
# The built-in global rules (figures.Watch with a threshold): (watch, figure).
BUILT_IN = tuple((figure.alert, figure) for figure in WATCHED.values()
                 if figure.alert.threshold is not None)
HYSTERESIS = 0.05
MAX_ATTEMPTS = 10


# ===== Rule evaluation (pure) ===================================================================

def sample_value(metric, row):
    """The watched figure of one sample row (dict of server_metrics columns), or None."""
    figure = WATCHED.get(metric)
    if figure is None:
        raise ValueError(f"unknown metric {metric!r}")
    value = row.get(figure.column)
    if figure.share_of:
        total = row.get(figure.share_of)
        return 100.0 * value / total if total and value is not None else None
    return value


def evaluate(points, threshold, minutes, firing, now, interval=60, below=False):
    """Decide from `points` [(timestamp, value)] whether a rule starts firing ("fire"), stops
    ("resolve") or stays as it is (None). A `below` rule fires under its threshold (days
    until a certificate expires) and resolves above it plus the hysteresis.

    The window must be covered: at least half the samples expected in `minutes` at the report
    interval, and one at least `minutes` old minus one interval — a server that just came up
    cannot fire a 5-minute rule after one sample.
    """
    start = now - datetime.timedelta(minutes=minutes)
    window = [(t, v) for t, v in points if t >= start - datetime.timedelta(seconds=interval)
              and v is not None]
    expected = max(1, int(minutes * 60 / interval))
    if len(window) < max(1, expected // 2):
        return None
    if min(t for t, _ in window) > start + datetime.timedelta(seconds=interval):
        return None
    values = [v for _, v in window]
    margin = abs(threshold) * HYSTERESIS
    if below:
        bad, clear = (v < threshold for v in values), (v > threshold + margin for v in values)
    else:
        bad, clear = (v > threshold for v in values), (v < threshold - margin for v in values)
    if not firing and all(bad):
        return "fire"
    if firing and all(clear):
        return "resolve"
    return None


def effective_rules(rules, server_id):
    """Per metric: the server's own rule if it has one, else the global one."""
    chosen = {}
    for rule in rules:
        if rule.server_id is None and rule.metric not in chosen:
            chosen[rule.metric] = rule
    for rule in rules:
        if rule.server_id == server_id:
            chosen[rule.metric] = rule
    return [rule for rule in chosen.values() if rule.enabled]


# ===== Opening and resolving ====================================================================

def channels_for(server_id):
    """Where the alerts of one server go: the one place that decides it.

    Its owner's channels (the staff's for a staff-only server, else its customer's): those
    routed to the server if any, else the owner's default channels. A customer's server's
    alerts also go to the staff channels an admin chose for that customer and to staff
    channels routed to the server itself. Never to another customer's channel, whatever a
    route says (a server moved since it was made)."""
    server = models.by_id(models.Server, server_id)
    if server is None:
        return []
    owner = server.customer_id
    routed = models.routed_channels(server_id)
    chosen = [c for c in routed if c.customer_id == owner] or models.default_channels_of(owner)
    if owner is not None:
        chosen += [c for c in routed if c.customer_id is None]
        chosen += models.staff_channels_for_customer(owner)
    return list({c.id: c for c in chosen if c.customer_id in (None, owner)}.values())


def subject_key(rule, subject):
    """The open key of a rule's alert about one subject (a pool, a certificate): the rule and
    a digest of the subject, within the column's 32 characters whatever the subject's length."""
    digest = hashlib.sha256(subject.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{rule}:{digest}"


def open_alert(server, rule, message, now, value=None, threshold=None, key=None):
    """Open a firing alert and queue its deliveries; None when one is already open. `key`: the
    open key when a rule can have several alerts at once (subject_key), else the rule."""
    silenced = models.under_maintenance(server.id, now)
    try:
        with database_proxy.atomic():
            alert = models.Alert.create(server=server.id, rule=rule, open_key=key or rule,
                                        state="firing", started_at=now, value=value,
                                        threshold=threshold, message=message[:500],
                                        silenced=silenced)
            if not silenced:
                _queue(alert, "firing", now)
    except peewee.IntegrityError:
        return None  # another replica, or an earlier run, opened it
    log.warning("alert firing server=%s rule=%s silenced=%s", server.name, rule, silenced)
    return alert


def resolve_alert(server, rule, now, message=None, key=None):
    """Resolve the open alert of `rule` (or of its open `key`), once; returns it or None."""
    key = key or rule
    alert = models.open_alert_of(server.id, key)
    if alert is None:
        return None
    with database_proxy.atomic():
        if not models.close_alert(alert.id, key, now):
            return None
        alert.state, alert.resolved_at = "resolved", now
        if message:
            alert.message = message[:500]
        if not alert.silenced and not models.under_maintenance(server.id, now):
            _queue(alert, "resolved", now)
    log.warning("alert resolved server=%s rule=%s", server.name, rule)
    return alert


def _queue(alert, event, now):
    for channel in channels_for(alert.server_id):
        models.Delivery.create(alert=alert.id, channel=channel.id, event=event,
                               next_attempt_at=now)


def queue_test(channel, now):
    return models.Delivery.create(alert=None, channel=channel.id, event="test",
                                  next_attempt_at=now)


# ===== Delivery =================================================================================

class DeliveryError(Exception):
    pass


class UndeliverableError(DeliveryError):
    """A delivery that no retry can make: it fails at once instead of backing off."""


def describe(delivery):
    """(subject, text, structured dict) for one delivery."""
    if delivery.event == "test":
        text = "mPanel test alert: this channel works."
        return "mPanel test alert", text, {"event": "test"}
    alert = delivery.alert
    server = alert.server
    mark = "RESOLVED" if delivery.event == "resolved" else "FIRING"
    when = (alert.resolved_at if delivery.event == "resolved" else alert.started_at)
    text = f"[{mark}] {server.name}: {alert.message}"
    if delivery.event == "resolved":
        text += f" (resolved {when:%Y-%m-%d %H:%M} UTC)"
    structured = {
        "event": delivery.event, "server": server.name, "serverId": server.id,
        "critical": server.critical, "rule": alert.rule, "message": alert.message,
        "value": alert.value, "threshold": alert.threshold,
        "startedAt": alert.started_at.isoformat() + "Z",
        "resolvedAt": alert.resolved_at.isoformat() + "Z" if alert.resolved_at else None,
    }
    return f"[mPanel {mark}] {server.name} {alert.rule}", text, structured


def send_webhook(url, subject, text, structured, timeout=10):
    """JSON POST; `text` makes it a Slack message, `content` a Discord one."""
    body = json.dumps({"text": text, "content": text, "subject": subject,
                       "alert": structured}).encode()
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", "User-Agent": "mPanel-alerts"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if not 200 <= response.status < 300:
                raise DeliveryError(f"webhook answered HTTP {response.status}")
    except urllib.error.HTTPError as err:
        raise DeliveryError(f"webhook answered HTTP {err.code}") from None
    except (urllib.error.URLError, OSError) as err:
        raise DeliveryError(f"webhook unreachable: {getattr(err, 'reason', err)}") from None


@functools.lru_cache(maxsize=None)
def _apprise():
    """The optional Apprise package (requirements-optional.txt), or None. Imported when an
    apprise channel is first checked or sent: its 0.3 s would slow every panel and CLI start."""
    # Apprise logs the URLs it loads and fails on, secrets included (from its import on):
    # never into the panel's log. A delivery's reason comes from its own result (send_apprise).
    logging.getLogger("apprise").propagate = False
    try:
        import apprise
    except ImportError:
        return None
    return apprise


def redacted(text, target):
    """`text` without the parts of `target` that may be secret (user, password, host, path
    segments, query values: Apprise puts tokens in any of them)."""
    parts = urllib.parse.urlsplit(target)
    secrets = [target, parts.netloc, parts.username, parts.password, parts.hostname,
               *parts.path.split("/"), *(v for _, v in urllib.parse.parse_qsl(parts.query)),
               parts.fragment]
    for secret in sorted({s for s in secrets if s and len(s) >= 3}, key=len, reverse=True):
        text = text.replace(secret, "…")
    return text


def send_apprise(url, subject, text, event, timeout=10):
    """One notification through Apprise; its False is a DeliveryError (retried with backoff)
    naming the reason Apprise logged for it, without the URL's secrets. `timeout` bounds the
    whole call (Apprise stops waiting; its worker may finish in the background)."""
    apprise = _apprise()
    if apprise is None:
        raise UndeliverableError(APPRISE_MISSING)
    sender = apprise.Apprise()
    if not sender.add(url):
        raise UndeliverableError("Apprise does not understand this channel's URL")
    kind = {"firing": apprise.NotifyType.FAILURE, "resolved": apprise.NotifyType.SUCCESS}
    result = sender.notify(body=text, title=subject, timeout=timeout,
                           notify_type=kind.get(event, apprise.NotifyType.INFO))
    if result:
        return
    reasons = [entry.message for entry in result.logs()
               if entry.level in ("WARNING", "ERROR", "CRITICAL")]
    status = getattr(result.status, "name", "failure").lower()
    reason = reasons[-1] if reasons else f"no notification sent ({status})"
    raise DeliveryError(f"Apprise: {redacted(reason, url)}"[:300])


def send_email(smtp, recipients, subject, text, timeout=10):
    """SMTP with STARTTLS (or implicit TLS), from the standard library."""
    if not smtp.get("host"):
        raise DeliveryError("no SMTP server configured (MPANEL_SMTP_HOST)")
    tls = smtp.get("tls") or "starttls"
    if tls not in SMTP_TLS_MODES:
        # Never fall through to plain SMTP: a typo ("ssl") would send the login in clear.
        raise UndeliverableError(f"MPANEL_SMTP_TLS must be {', '.join(SMTP_TLS_MODES)}, "
                                 f"got {tls!r}")
    message = email.message.EmailMessage()
    message["From"] = smtp.get("sender") or "mpanel@localhost"
    message["To"] = ", ".join(recipients)
    message["Subject"] = subject
    message.set_content(text)
    context = ssl.create_default_context(cafile=smtp.get("cafile") or None)
    try:
        if tls == "implicit":
            client = smtplib.SMTP_SSL(smtp["host"], smtp.get("port", 465), timeout=timeout,
                                      context=context)
        else:
            client = smtplib.SMTP(smtp["host"], smtp.get("port", 587), timeout=timeout)
        with client:
            if tls == "starttls":
                client.starttls(context=context)
            if smtp.get("user"):
                client.login(smtp["user"], smtp.get("password", ""))
            client.send_message(message)
    except (smtplib.SMTPException, OSError) as err:
        raise DeliveryError(f"SMTP: {type(err).__name__}: {err}"[:300]) from None


# ===== Channel kinds ============================================================================

def email_addresses(target):
    return [address.strip() for address in target.split(",")]


def _check_webhook(target):
    if not target.startswith(("http://", "https://")):
        return "a webhook target must be an http(s) URL"
    return None


def _check_email(target):
    if not all("@" in address for address in email_addresses(target)):
        return "an e-mail target is one or more addresses, comma-separated"
    return None


def _check_apprise(target):
    apprise = _apprise()
    if apprise is None:
        return APPRISE_MISSING
    sender = apprise.Apprise()
    if not sender.add(target) or len(sender) != 1:
        return (f"Apprise does not understand this URL ({shown_secret(target)}): one URL of a "
                "service Apprise supports, such as ntfy://ntfy.sh/topic")
    return None


def _apprise_host(target):
    """The host an Apprise URL names, for the check at save (json://host/…). Not an all-digit
    one: a Telegram URL's "host" is its bot id, which getaddrinfo would read as a decimal IPv4
    address; those are left to the check at connect time, which sees the real address."""
    apprise = _apprise()
    plugin = apprise.Apprise.instantiate(target) if apprise else None
    host = str(getattr(plugin, "host", None) or "")
    return None if host.isdigit() else host or None


def _to_webhook(target, subject, text, structured, smtp):
    send_webhook(target, subject, text, structured)


def _to_email(target, subject, text, structured, smtp):
    send_email(smtp, email_addresses(target), subject, text)


def _to_apprise(target, subject, text, structured, smtp):
    send_apprise(target, subject, text, structured["event"])


def shown_secret(target):
    """A target whose every part may be a secret, as pages show it: its scheme only."""
    scheme, sep, _ = target.partition("://")
    return f"{scheme}://…" if sep else "…"


@dataclasses.dataclass(frozen=True)
class ChannelKind:
    name: str  # stored in channels.kind; the page's value; the CLI's flag --<name>
    label: str  # the page's choice
    target_help: str  # the CLI's help for the flag
    example: str  # in the page's placeholder for the target
    check: object  # target -> None, or why it is refused (a message fit for a person)
    send: object  # (target, subject, text, structured, smtp) -> None; raises DeliveryError
    # target -> the host a delivery connects to (checked for customers' channels at save, and
    # every connection at send: outbound.py); None: the kind reaches no host of its target
    # (e-mail goes through the operator's SMTP server).
    host: object = None
    # target -> what pages show of it once saved; None: all of it (to admins). A secret
    # target is never sent back: its edit form keeps it when left empty.
    shown: object = None


def _url_host(target):
    return urllib.parse.urlsplit(target).hostname


CHANNEL_KINDS = {kind.name: kind for kind in (
    ChannelKind(name="webhook", label="webhook",
                target_help="URL to POST JSON to (Slack/Discord compatible)",
                example="https://hooks.example.com/…", check=_check_webhook, send=_to_webhook,
                host=_url_host),
    ChannelKind(name="email", label="e-mail", target_help="address(es), comma-separated",
                example="ops@example.com", check=_check_email, send=_to_email),
    ChannelKind(name="apprise", label="Apprise (ntfy, Telegram, Teams, …)",
                target_help="an Apprise URL (needs the optional apprise package)",
                example="ntfy://ntfy.sh/topic", check=_check_apprise, send=_to_apprise,
                host=_apprise_host, shown=shown_secret),
)}


def shown_target(kind, target):
    """What a page shows of a saved channel's target (an unknown kind's: nothing of it)."""
    entry = CHANNEL_KINDS.get(kind)
    if entry is None:
        return shown_secret(target)
    return entry.shown(target) if entry.shown else target


def reach_of(customer_id, kind, allowed):
    """What a delivery to a channel may connect to: None (anything) for the staff's, or for a
    kind that reaches no host of its target; else public addresses and `allowed`."""
    entry = CHANNEL_KINDS.get(kind)
    if customer_id is None or entry is None or entry.host is None:
        return None
    return outbound.Reach(allowed=tuple(allowed), what=f"{entry.name} target")


def check_channel(kind, target, customer_id=None, allowed=()):
    """Refuse a kind not in CHANNEL_KINDS, a target its kind does not accept, or a customer's
    target on a non-public address outside `allowed` (ValueError naming the problem)."""
    if kind not in CHANNEL_KINDS:
        raise ValueError(f"channel kind must be {' or '.join(CHANNEL_KINDS)}")
    entry = CHANNEL_KINDS[kind]
    problem = entry.check(target)
    reach = reach_of(customer_id, kind, allowed)
    if not problem and reach is not None:
        problem = outbound.problem_of_host(entry.host(target), reach)
    if problem:
        raise ValueError(problem)


def deliver_due(smtp, now=None, limit=50, allowed=(), only=None):
    """Send what is due (`only`: of these delivery ids); back off exponentially on failure,
    give up after MAX_ATTEMPTS. `allowed`: the networks customers' channels may reach besides
    public addresses (settings.allow_channel_networks). -> (sent, failed) counts."""
    now = now or utcnow()
    # A replica that died while sending left its claim behind: give it back after 5 minutes.
    models.release_stale_deliveries(now - datetime.timedelta(minutes=5))
    sent = failed = 0
    for delivery in models.due_deliveries(now, limit, only):
        if not models.claim_delivery(delivery.id):
            continue
        subject, text, structured = describe(delivery)
        channel = delivery.channel
        try:
            kind = CHANNEL_KINDS.get(channel.kind)
            if kind is None:
                raise UndeliverableError(f"unknown channel kind {channel.kind!r}; this panel "
                                         f"sends to {' or '.join(CHANNEL_KINDS)}")
            _send(kind, channel, subject, text, structured, smtp, allowed)
        except DeliveryError as err:
            attempts = delivery.attempts + 1
            delay = min(3600, 30 * 2 ** (attempts - 1))
            final = attempts >= MAX_ATTEMPTS or isinstance(err, UndeliverableError)
            status = "failed" if final else "pending"
            models.record_delivery(delivery.id, status=status, attempts=attempts,
                                   last_error=str(err)[:500],
                                   next_attempt_at=now + datetime.timedelta(seconds=delay))
            log.warning("alert delivery failed channel=%s attempt=%s error=%s", channel.name,
                        attempts, err)
            failed += 1
            continue
        models.record_delivery(delivery.id, status="sent", attempts=delivery.attempts + 1,
                               sent_at=utcnow(), last_error=None)
        sent += 1
    return sent, failed


def _send(kind, channel, subject, text, structured, smtp, allowed):
    """One delivery, every connection of a customer's checked (outbound.guarded): a refused
    one fails it at once, however the library in between reported the refusal."""
    with outbound.guarded(reach_of(channel.customer_id, channel.kind, allowed)) as guard:
        try:
            kind.send(channel.target, subject, text, structured, smtp)
        except (DeliveryError, outbound.Refused):
            if guard is None or guard.refused is None:
                raise
        if guard is not None and guard.refused:
            raise UndeliverableError(guard.refused)


def built_in_rules():
    """(metric, threshold, minutes, since) of every built-in global rule: the figures' with a
    threshold, and every service check."""
    return [(w.metric, w.threshold, w.minutes, w.since) for w, _ in BUILT_IN] + \
        [(c.metric, c.threshold, c.minutes, c.since) for c in checks.CHECKS]


def ensure_default_rules(upgraded_from=None):
    """Seed the built-in global rules: all of them in a new database (`upgraded_from` None),
    and in one upgraded from schema version `upgraded_from` those a later version brought.
    Each once: a built-in rule an admin deleted is not seeded again by a restart."""
    for metric, threshold, minutes, since in built_in_rules():
        if upgraded_from is not None and since <= upgraded_from:
            continue
        if models.rule_of(metric) is None:
            models.AlertRule.create(server=None, metric=metric, threshold=threshold,
                                    minutes=minutes)
