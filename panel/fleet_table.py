"""The servers table at fleet size: which servers a screenful of it shows, chosen in SQL, and
each of those rows as the page shows it.

A page never reads the whole fleet. The filter (name or hostname, status), the sort (any
column, ties by name) and the window (offset and count) are one query, and only the window's
rows are built in Python, with their check states, traffic, forecasts and upgrade results read
for those servers alone. The summary strip counts the whole fleet in one aggregate query, so it
stays exact whatever the page shows. (views.py renders the rows and answers the refreshes.)
"""
import collections
import datetime
import re

import peewee
from peewee import JOIN, Case, fn

from . import charts, checks, figures, models, protocol, quotas, traffic, units
from .models import Agent, CheckState, LatestSample, MountForecast, Server, TrafficDay

STATUSES = ("online", "offline", "never seen")
# The servers table's figure columns, from the figure table: (sort key, header, figure), left
# to right; each row carries the shown value under the sort key.
TABLE_FIGURES = tuple((figure.table.key, figure.table.label, figure)
                      for figure in figures.TABLE_COLUMNS)
# The services a server may report, each a column the table can show (?show=mysql), in the
# wire schema's order.
SERVICE_NAMES = tuple(protocol.METRICS["properties"]["services"]["properties"])
SERVICE_SORT_PREFIX = "svc-"
# The soonest disk-full forecast of a server's mounts (forecasts.py): (mount, full at) or None.
DISK_FULL = "disk_full"
# Rows of the first screenful, and of each further one the page loads as it scrolls.
PAGE_ROWS = 100
# The longest filter text, and the furthest a window may start or reach.
TEXT_MAX = 100
OFFSET_MAX = 1_000_000
WHOLE = re.compile(r"[0-9]{1,7}")  # a row count or position as the address gives it (ASCII)
# One term of a sort: `inverted` runs against the asked direction (most recent first for
# "ascending" last seen); NULL sorts as the smallest value (first ascending), as the table
# always has, unless `null_largest`.
Term = collections.namedtuple("Term", "expression inverted null_largest", defaults=(False, False))


class _Query:
    """The sort and filter of one read of the table, as SQL: the joins a sort needs (check
    states, traffic, forecasts) are added only for that sort."""

    def __init__(self, now, offline_after):
        self.now = now
        self.threshold = now - datetime.timedelta(seconds=offline_after)
        self.latest = None  # the alias of each agent's newest sample, set by fleet_rows
        self.joins = []

    def state(self):
        """0 online, 1 offline, 2 never seen (STATUSES' order), as models.connection_state."""
        return Case(None, [(Agent.last_seen.is_null(), 2),
                           (Agent.last_seen < self.threshold, 1)], 0)

    def where(self, text, status):
        conditions = []
        if text:
            pattern = "%" + "".join("\\" + c if c in "\\%_" else c for c in text.lower()) + "%"
            conditions.append(_like(fn.LOWER(Server.name), pattern) |
                              _like(fn.LOWER(fn.COALESCE(Agent.hostname, "")), pattern))
        if status:
            conditions.append(self.state() == STATUSES.index(status))
        return conditions

    def join(self, subquery, agent_column):
        self.joins.append((subquery, agent_column))
        return subquery

    def checks(self, service=None):
        """Per agent: bad checks, services seen, and for `service` whether it is down, how many
        of its checks are bad and whether it reports at all (checks.service_states in SQL)."""
        bad = CheckState.bad_since.is_null(False)
        is_service = CheckState.metric == "service_down"

        def count(condition):
            return fn.SUM(Case(None, [(condition, 1)], 0))
        columns = [CheckState.agent, fn.COUNT(CheckState.bad_since).alias("problems"),
                   count(is_service).alias("services")]
        if service:
            own = [c.metric for c in checks.CHECKS if c.service == service and
                   c.metric != "service_down"]
            mine = is_service & (CheckState.subject == service)
            columns += [count(mine & bad).alias("down"), count(mine).alias("seen"),
                        count(CheckState.metric.in_(own) & bad).alias("wrong")]
        return self.join(CheckState.select(*columns).group_by(CheckState.agent), "agent_id")

    def traffic(self):
        """Per agent: bytes received and sent in its server's current billing cycle."""
        cycles = {day: traffic.cycle(self.now, day) for day in traffic.BILLING_DAYS}
        owner, agent = Server.alias("owner"), Agent.alias("counted")
        start = Case(owner.billing_day, [(day, span[0]) for day, span in cycles.items()])
        end = Case(owner.billing_day, [(day, span[1]) for day, span in cycles.items()])
        return self.join(
            TrafficDay.select(TrafficDay.agent, fn.SUM(TrafficDay.received).alias("received"),
                              fn.SUM(TrafficDay.sent).alias("sent"))
            .join(agent, on=(agent.id == TrafficDay.agent))
            .join(owner, on=(owner.id == agent.server))
            .where((TrafficDay.day >= start) & (TrafficDay.day < end))
            .group_by(TrafficDay.agent), "agent_id")

    def forecasts(self):
        return self.join(MountForecast.select(MountForecast.agent,
                                              fn.MIN(MountForecast.full_at).alias("full_at"))
                         .where(MountForecast.full_at.is_null(False))
                         .group_by(MountForecast.agent), "agent_id")

    def order(self, sort):
        """[Term] of a sort key."""
        latest = self.latest
        if sort == "name":
            return [Term(fn.LOWER(Server.name))]
        if sort == "hostname":
            return [Term(fn.LOWER(fn.COALESCE(Agent.hostname, "")))]
        if sort == "status":
            return [Term(self.state()), Term(fn.LOWER(Server.name))]
        if sort == "seen":  # most recent first; never seen last
            return [Term(Agent.last_seen, inverted=True)]
        if sort == "version":
            return [Term(fn.COALESCE(Agent.agent_version, ""))]
        if sort == DISK_FULL:  # soonest first; the servers with no forecast last
            return [Term(self.forecasts().c.full_at, null_largest=True)]
        if sort == "services":  # most problems first when descending, then most services
            checked = self.checks()
            return [Term(fn.COALESCE(checked.c.problems, 0)),
                    Term(fn.COALESCE(checked.c.services, 0))]
        if sort.startswith(SERVICE_SORT_PREFIX):  # worst state first when descending
            checked = self.checks(sort[len(SERVICE_SORT_PREFIX):])
            rank = Case(None, [(checked.c.down > 0, 3), (checked.c.wrong > 0, 2),
                               (checked.c.seen > 0, 1)], 0)
            return [Term(rank), Term(fn.COALESCE(checked.c.wrong, 0))]
        if sort == "traffic":  # the share of the allowance first, then the bytes
            counted = self.traffic()
            received = fn.COALESCE(counted.c.received, 0)
            sent = fn.COALESCE(counted.c.sent, 0)
            used = Case(None, [(Server.traffic_basis == "max",
                                Case(None, [(received > sent, received)], sent))],
                        received + sent)
            return [Term(used.cast(REAL) / fn.NULLIF(Server.traffic_allowance, 0)), Term(used)]
        figure = FIGURE_SORTS[sort]
        value = getattr(latest, figure.column)
        if figure.share_of:
            value = value.cast(REAL) / fn.NULLIF(getattr(latest, figure.share_of), 0)
        return [Term(value)]

    def narrowed(self, sort, descending, conditions, offset=0, limit=None):
        """fleet_rows' `narrow`: the filter, the sort (ties by name) and the window."""
        def narrow(query, latest):
            self.latest = latest
            terms = []
            for term in self.order(sort):
                down = descending != term.inverted
                nulls = "last" if down != term.null_largest else "first"
                terms.append(term.expression.desc(nulls=nulls) if down else
                             term.expression.asc(nulls=nulls))
            for subquery, column in self.joins:
                query = query.join(subquery, JOIN.LEFT_OUTER,
                                   on=(getattr(subquery.c, column) == Agent.id))
            if conditions:
                query = query.where(*conditions)
            query = query.order_by(*terms, Server.name, Server.id)
            return query.offset(offset).limit(limit) if offset or limit is not None else query
        return narrow


# A quotient of integer columns in floating point (both databases divide integers whole).
REAL = "DOUBLE PRECISION"
FIGURE_SORTS = {key: figure for key, _, figure in TABLE_FIGURES}
SORTS = ("name", "hostname", "status", "seen", *FIGURE_SORTS, DISK_FULL, "traffic",
         "services", *(SERVICE_SORT_PREFIX + name for name in SERVICE_NAMES), "version")


def _like(left, pattern):
    return peewee.NodeList((left, peewee.SQL("LIKE"), pattern, peewee.SQL("ESCAPE '\\'")))


def window(access, now, offline_after, text="", status="", sort="name", descending=False,
           offset=0, limit=PAGE_ROWS):
    """(the rows `access` sees that match `text` (in the name or hostname, any case) and
    `status`, sorted by `sort`, from `offset` for `limit` rows (None: all), built by
    `build_rows`; how many match in all)."""
    table = _Query(now, offline_after)
    conditions = table.where(text, status)
    tuples = models.fleet(access, table.narrowed(sort, descending, conditions, offset, limit))
    matched = Server.select(Server.id).join(Agent, on=(Agent.server == Server.id))
    if conditions:
        matched = matched.where(*conditions)
    return build_rows(tuples, access, now, offline_after), models.visible(matched, access).count()


def summary(access, now, offline_after):
    """{status: how many servers `access` sees are in it}, for the whole fleet, and "total"."""
    state = _Query(now, offline_after).state()
    query = (Server.select(fn.COUNT(Server.id),
                           *(fn.SUM(Case(None, [(state == index, 1)], 0))
                             for index, _ in enumerate(STATUSES)))
             .join(Agent, on=(Agent.server == Server.id)))
    total, *counts = models.visible(query, access).tuples().get()
    return {"total": total or 0, **{s: int(n or 0) for s, n in zip(STATUSES, counts)}}


def _shown(figure, values):
    """A figure's value as the table shows it."""
    value = values[figure.column]
    if figure.share_of:
        return units.share(value, values[figure.share_of])
    if value is not None and figures.shown_unit(figure) == "percent":
        return round(value, 1)
    return value


def server_rows(offline_after, access, now=None):
    """Every row `access` sees, by name: the JSON twin (api_v1.py) and the CLI's list."""
    now = now or models.utcnow()
    return window(access, now, offline_after, limit=None)[0]


def build_rows(tuples, access, now, offline_after):
    """One dict per fleet tuple (models.FLEET_COLUMNS), in their order, with what the table
    shows of each server; the side reads name only these servers."""
    if not tuples:
        return []
    identity = len(models.FLEET_IDENTITY)
    figured = identity + len(models.QUOTA_COLUMNS)
    agent_ids = [row[3] for row in tuples]
    server_ids = [row[0] for row in tuples]
    checked = models.service_summary(access, agent_ids)
    quota_of = {row[3]: row[identity:figured] for row in tuples}
    counted = models.traffic_between({agent_id: traffic.cycle(now, quota[0])
                                      for agent_id, quota in quota_of.items()})
    soonest = models.soonest_full(access, agent_ids)
    failed = models.last_upgrade_failures(server_ids)
    rows = []
    for row in tuples:
        (server_id, name, critical, agent_id, hostname, agent_status, version, last_seen,
         clock_offset) = row[:identity]
        services, problems = checked.get(agent_id, ([], []))
        values = dict(zip(models.FLEET_FIGURES, row[figured:]))
        full = soonest.get(agent_id)
        rows.append({
            "id": server_id,
            "name": name,
            "critical": bool(critical),
            "hostname": hostname or "",
            "status": models.connection_state(last_seen, now, offline_after),
            "revoked": agent_status == "revoked",
            "clock": models.clock_skew(clock_offset),
            "last_seen": units.ago((now - last_seen).total_seconds()) if last_seen else "never",
            "last_seen_iso": last_seen.isoformat() + "Z" if last_seen else "",
            "last_seen_epoch": charts.epoch(last_seen) if last_seen else None,
            **{key: _shown(figure, values) for key, _, figure in TABLE_FIGURES},
            "services": services, "problems": problems,
            "service_states": checks.service_states(services, problems),
            "traffic": quotas.shown(quotas.usage(quota_of[agent_id],
                                                 [counted.get(agent_id, (0, 0))], now)),
            "version": version or "",
            # (mount, seconds left, when) of the disk that fills first
            DISK_FULL: (full[0], max(0.0, (full[1] - now).total_seconds()),
                        full[1].isoformat() + "Z") if full else None,
            # "upgrade failed" beside the version: its latest rollout result (upgrades.py)
            "upgrade_failed": failed.get(server_id),
        })
    return rows
