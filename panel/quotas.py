"""Traffic quotas (issue 14): each agent's traffic per hour and per day (traffic_hours,
traffic_days: a cycle sums at most 31 days), each server's
and customer's usage this billing cycle, and the alerts at traffic.LEVELS of an allowance.
(The arithmetic is traffic.py's, pure and tested alone; this module reads and writes.)

Hours are recomputed by the rollup job (rollups.run_rollups): those of its recent window every
run, and those of the 5-minute buckets a late sample made dirty, with the hour of the sample
after them (whose bytes the late one shares). Each hour is computed from the stored samples and
written over its row, and its day summed again from its hours, so a re-run, or two replicas at
once, write the same figures, never add.

Alerts follow usage, not projection: a server over 80 % of its allowance opens one alert
(`quota`, key quota:80), over 100 % a second (quota:100); each resolves when usage falls under
its level, which happens when a new cycle starts or an admin raises the allowance (or removes
it). A customer's allowance covers its servers together, on the customer's billing day: its
alerts (`customer_quota`) open on the customer's busiest server this cycle, so they reach the
customer's channels like any of its servers' alerts (alerts.channels_for), once, not once per
server; they resolve wherever they were opened.
"""
import datetime
import logging

from . import alerts, models, traffic, units
from .db import utcnow

log = logging.getLogger("mpanel.quotas")

SERVER_RULE, CUSTOMER_RULE = "quota", "customer_quota"
# Traffic days are kept this long: a year of cycles and a month to compare with. Hours only as
# long as a late sample can still land in one (the raw retention, and a day) and its day be
# summed again, and at least HOURS_RETENTION.
RETENTION = datetime.timedelta(days=400)
HOURS_RETENTION = datetime.timedelta(days=40)


# ===== Hours from samples =======================================================================

def _recompute(agent_id, start, end):
    """Write the agent's hours in [start, end) from its samples. -> rows written."""
    hours = traffic.hourly([(moment, traffic.interface_counters(interfaces)) for moment, interfaces
                            in models.traffic_series(agent_id, start, end)], start, end)
    return models.upsert_traffic_hours([(agent_id, hour, received, sent)
                                        for hour, (received, sent) in sorted(hours.items())])


def recompute_recent(since, now):
    """Every agent that reported since `since`: its hours from since's hour to now."""
    start = traffic.floor_hour(since)
    end = traffic.floor_hour(now) + traffic.HOUR
    return sum(_recompute(agent_id, start, end) for agent_id in models.agents_sampled_since(start))


def recompute_spans(pairs):
    """The hours of these dirty (agent, 5-minute bucket) pairs, and for each the hour of the
    agent's next sample after it: a late sample is the base of the one after it."""
    hours = sorted({(agent_id, traffic.floor_hour(bucket)) for agent_id, bucket in pairs})
    written = 0
    for agent_id, hour in hours:
        written += _recompute(agent_id, hour, hour + traffic.HOUR)
        following = models.next_sample_time(agent_id, hour + traffic.HOUR)
        if following is not None and (agent_id, traffic.floor_hour(following)) not in hours:
            start = traffic.floor_hour(following)
            written += _recompute(agent_id, start, start + traffic.HOUR)
    return written


# ===== Usage this cycle =========================================================================

def usage(quota, totals, now):
    """A traffic.Usage from (billing day, allowance, basis) and {agent: (received, sent)} in
    its cycle."""
    billing_day, allowance, basis = quota
    start, end = traffic.cycle(now, billing_day)
    return traffic.Usage(sum(r for r, _ in totals), sum(s for _, s in totals), start, end, now,
                         allowance, basis if basis in traffic.BASES else "sum")


def server_usages(access=None, now=None, server_ids=None):
    """{server_id: traffic.Usage} of every server `access` sees (all: None), or of
    `server_ids` only, each on its own billing day."""
    now = now or utcnow()
    holders = models.quota_holders(access, server_ids)
    spans = {agent_id: traffic.cycle(now, day) for _, _, agent_id, _, day, _, _ in holders}
    totals = models.traffic_between(spans)
    return {server_id: usage((day, allowance, basis), [totals.get(agent_id, (0, 0))], now)
            for server_id, _, agent_id, _, day, allowance, basis in holders}


def customer_usages(customer_ids=None, now=None):
    """{customer_id: (traffic.Usage, [(server_id, server name, (received, sent))])}: its
    servers' traffic summed on the customer's billing day."""
    now = now or utcnow()
    customers = models.customer_quotas(customer_ids)
    wanted = {row[0]: row for row in customers}
    servers = [h for h in models.quota_holders() if h[3] in wanted]
    spans = {agent_id: traffic.cycle(now, wanted[customer][2])
             for _, _, agent_id, customer, _, _, _ in servers}
    totals = models.traffic_between(spans)
    result = {}
    for customer_id, _, day, allowance, basis in customers:
        mine = [(server_id, name, totals.get(agent_id, (0, 0)))
                for server_id, name, agent_id, customer, _, _, _ in servers
                if customer == customer_id]
        result[customer_id] = (usage((day, allowance, basis), [t for _, _, t in mine], now),
                               mine)
    return result


def shown(usage):
    """What the pages and /api/v1 say of a Usage (one-word keys, JSON as they are): bytes
    "used" (by its basis), "received", "sent", "allowance" (None: none), "percent",
    "projected" (None early in the cycle), the "level" reached, the cycle's "start" and "end"
    (ISO dates) and the "text": "1.20 TiB of 2.00 TiB (60.0 %), 2.40 TiB projected"."""
    text = units.size(usage.used)
    if usage.allowance:
        text += f" of {units.size(usage.allowance)} ({usage.percent:.1f} %)"
    if usage.projected is not None:
        text += f", {units.size(usage.projected)} projected"
    return {"used": usage.used, "received": usage.received, "sent": usage.sent,
            "basis": usage.basis, "allowance": usage.allowance, "percent": usage.percent,
            "projected": usage.projected, "level": usage.level, "text": text,
            "start": f"{usage.start:%Y-%m-%d}", "end": f"{usage.end:%Y-%m-%d}"}


# ===== Alerts ===================================================================================

def _key(prefix, level):
    return f"{prefix}:{level}"


def _message(what, usage, level):
    projected = f", {units.size(usage.projected)} projected by {usage.end:%Y-%m-%d}" \
        if usage.projected is not None else ""
    return (f"{what} traffic this cycle over {level} % of its allowance: "
            f"{units.size(usage.used)} of {units.size(usage.allowance)} "
            f"({usage.percent:.1f} %, {traffic.BASES[usage.basis][0]}){projected}")


def _settle(rule, prefix, target, usage, open_alerts, what, now):
    """Open and resolve one holder's alerts. `target`: the server an alert opens on;
    `open_alerts` {level: (server, alert)} of this holder. -> (opened, resolved)."""
    opened = resolved = 0
    for level in traffic.LEVELS:
        over = usage is not None and usage.allowance and \
            usage.used * 100 >= level * usage.allowance
        held = open_alerts.get(level)
        if over and held is None and target is not None:
            if alerts.open_alert(target, rule, _message(what, usage, level), now,
                                 usage.percent, level, key=_key(prefix, level)):
                opened += 1
        elif not over and held is not None:
            if alerts.resolve_alert(held, rule, now, key=_key(prefix, level)):
                resolved += 1
    return opened, resolved


def _open_by_holder(rule, prefix, servers, holder_of):
    """{holder: {level: server}} of the open alerts of `rule`; `holder_of(server_id)`."""
    found = {}
    keys = {_key(prefix, level): level for level in traffic.LEVELS}
    for server_id, open_key in models.open_alerts_of_rule(rule):
        if open_key in keys and server_id in servers:
            found.setdefault(holder_of(server_id), {})[keys[open_key]] = servers[server_id]
    return found


def evaluate(now=None):
    """The quota job: open and resolve every server's and customer's alerts. -> (opened,
    resolved)."""
    now = now or utcnow()
    opened = resolved = 0
    servers = {server.id: server for server, _ in models.servers_with_agents()}
    usages = server_usages(now=now)
    held = _open_by_holder(SERVER_RULE, SERVER_RULE, servers, lambda server_id: server_id)
    for server_id in set(usages) | set(held):
        server = servers.get(server_id)
        if server is None:
            continue
        result = _settle(SERVER_RULE, SERVER_RULE, server, usages.get(server_id),
                         held.get(server_id, {}), f"server {server.name}", now)
        opened, resolved = opened + result[0], resolved + result[1]

    customers = customer_usages(now=now)
    names = {row[0]: row[1] for row in models.customer_quotas()}
    owner = {server_id: server.customer_id for server_id, server in servers.items()}
    held = _open_by_holder(CUSTOMER_RULE, "cquota", servers, owner.get)
    for customer_id in set(customers) | set(held):
        usage, mine = customers.get(customer_id, (None, []))
        busiest = max(mine, key=lambda m: traffic.BASES[usage.basis][1](*m[2]), default=None) \
            if usage else None
        target = servers.get(busiest[0]) if busiest else None
        result = _settle(CUSTOMER_RULE, "cquota", target, usage, held.get(customer_id, {}),
                         f"customer {names.get(customer_id, customer_id)}", now)
        opened, resolved = opened + result[0], resolved + result[1]
    return opened, resolved


def prune(now, raw_days):
    """Traffic past its retention (`raw_days`: the samples'). -> (hours, days) removed."""
    hours_kept = max(HOURS_RETENTION, datetime.timedelta(days=raw_days + 1))
    return models.prune_traffic(now - hours_kept, now - RETENTION)

