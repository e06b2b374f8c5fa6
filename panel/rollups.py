"""History: 5-minute and 1-hour rollups, retention, and PostgreSQL's daily partitions.

The tiers are a data table walked by one loop; averaging is a pure function that keeps each
figure's peak beside its mean, tested alone. Rollups are incremental: each run recomputes the
buckets of the last LATE_WINDOW, never the whole history, plus the buckets the writer marked
dirty: a sample that arrives older than DIRTY_AFTER (a replay after a long outage, a back-fill
of up to the raw retention) records its 5-minute bucket in `dirty_buckets` in the transaction
that stores it, and the next run recomputes that bucket and the coarser ones holding it, once.
Charts read the tier that fits their range: a 30-day chart reads 8,640 five-minute rows, not
43,200 samples.
"""
import datetime
import logging
import re

import peewee

from . import figures, models, quotas
from .db import database_proxy, is_postgres, utcnow

log = logging.getLogger("mpanel.rollups")

EPOCH = datetime.datetime(1970, 1, 1)
LATE_WINDOW = datetime.timedelta(minutes=75)
# Older than this on arrival, a sample marks its bucket dirty. Younger ones are in the window of
# the runs ahead; the margin is the half hour the job may lag (a slow or failed run, a restart).
DIRTY_AFTER = LATE_WINDOW - datetime.timedelta(minutes=30)

# The server_metrics column of each figure rolled up as mean and peak: each gets <column>_avg
# and <column>_max in the rollup tables (figures.rollup_columns). From the figure table.
FIGURES = tuple(figure.column for figure in figures.ROLLED_UP)
# Figures kept as the bucket's last known value (a total the charts scale to), same name.
LAST_VALUES = tuple(figure.column for figure in figures.FIGURES if figure.rollup == "last")


class Tier:
    def __init__(self, name, seconds, model, source, retention_setting, charts_from):
        self.name, self.seconds, self.model = name, seconds, model
        self.source = source  # "raw" or the finer tier it is built from
        self.retention_setting = retention_setting
        # Charts of a longer range than this read this tier (tier_for): the one rule.
        self.charts_from = charts_from


TIERS = (
    Tier("5m", 300, models.Rollup5m, "raw", "retention_5m_days",
         charts_from=datetime.timedelta(hours=26)),
    Tier("1h", 3600, models.Rollup1h, "5m", "retention_1h_days",
         charts_from=datetime.timedelta(days=31)),
)


def floor_time(moment, seconds):
    return moment - datetime.timedelta(seconds=(moment - EPOCH).total_seconds() % seconds)


# ===== Averaging (pure) =========================================================================

def _summarise(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return sum(values) / len(values), max(values)


def rollup(rows, seconds):
    """Raw sample rows (dicts of server_metrics columns) -> one rollup row per (agent, bucket),
    with the mean and the peak of every figure."""
    groups = {}
    for row in rows:
        key = (row["agent"], floor_time(row["timestamp"], seconds))
        groups.setdefault(key, []).append(row)
    result = []
    for (agent, bucket), members in sorted(groups.items(), key=lambda item: item[0][1]):
        out = {"agent": agent, "bucket": bucket, "samples": len(members)}
        for column in FIGURES:
            out[f"{column}_avg"], out[f"{column}_max"] = _summarise(m.get(column) for m in members)
        for column in LAST_VALUES:
            known = [m[column] for m in members if m.get(column)]
            out[column] = known[-1] if known else None
        result.append(out)
    return result


def merge(rollup_rows, seconds):
    """Finer rollup rows -> coarser ones: means weighted by sample counts, peaks of peaks."""
    groups = {}
    for row in rollup_rows:
        groups.setdefault((row["agent"], floor_time(row["bucket"], seconds)), []).append(row)
    result = []
    for (agent, bucket), members in sorted(groups.items(), key=lambda item: item[0][1]):
        out = {"agent": agent, "bucket": bucket, "samples": sum(m["samples"] for m in members)}
        for field in FIGURES:
            weighted = [(m[f"{field}_avg"], m["samples"]) for m in members
                        if m[f"{field}_avg"] is not None]
            weight = sum(n for _, n in weighted)
            out[f"{field}_avg"] = sum(v * n for v, n in weighted) / weight if weight else None
            peaks = [m[f"{field}_max"] for m in members if m[f"{field}_max"] is not None]
            out[f"{field}_max"] = max(peaks) if peaks else None
        for field in LAST_VALUES:
            known = [m[field] for m in members if m[field]]
            out[field] = known[-1] if known else None
        result.append(out)
    return result


# ===== The job ==================================================================================

def _recompute(tier, since=None, spans=()):
    """Rows of `tier` recomputed from its source: its rows from `since`, or in `spans`
    ((agent, bucket start) pairs of this tier)."""
    width = datetime.timedelta(seconds=tier.seconds)
    if tier.source == "raw":
        rows = models.raw_rows_to_roll_up(LAST_VALUES + FIGURES, since, spans, width)
        return rollup(rows, tier.seconds)
    finer = next(t for t in TIERS if t.name == tier.source).model
    return merge(models.rollup_rows(finer, since, spans, width), tier.seconds)


def run_rollups(now=None, late_window=LATE_WINDOW):
    """Recompute the buckets of the last `late_window` in every tier and the traffic hours
    (quotas.py), then the dirty ones. -> rows written per tier (and "traffic")."""
    now = now or utcnow()
    written = {}
    for tier in TIERS:
        start = floor_time(now - late_window, tier.seconds)
        written[tier.name] = models.upsert_rollups(tier.model, _recompute(tier, since=start))
    written["traffic"] = quotas.recompute_recent(now - late_window, now)
    for name, count in roll_up_dirty().items():
        written[name] += count
    return written


# ===== Late samples =============================================================================

def dirty_buckets(samples, now):
    """The finest tier's buckets that these new samples, (agent, timestamp) pairs, make dirty:
    those of the samples older than DIRTY_AFTER. -> sorted [(agent, bucket)]."""
    cutoff = now - DIRTY_AFTER
    seconds = TIERS[0].seconds
    return sorted({(agent, floor_time(moment, seconds)) for agent, moment in samples
                   if moment < cutoff})


def _write_transaction():
    """On SQLite, the write lock from the start: the run reads, then writes, and a reader that
    must upgrade to a writer while ingest writes fails rather than waits."""
    if is_postgres():
        return database_proxy.atomic()
    return database_proxy.atomic("IMMEDIATE")


def roll_up_dirty(batch=200, max_batches=1000):
    """Recompute every dirty bucket and the coarser buckets holding it, `batch` at a time, each
    batch in one transaction that also deletes its dirty rows: a batch that fails leaves them
    for the next run, and a sample stored meanwhile marks its bucket again (on PostgreSQL the
    writer's mark waits for this transaction's delete; on SQLite the write lock orders them).
    The batch's traffic hours too (quotas.recompute_spans). -> rows written per tier."""
    written = {tier.name: 0 for tier in TIERS}
    written["traffic"] = 0
    for _ in range(max_batches):
        with _write_transaction():
            pairs = models.claim_dirty_buckets(batch)
            if not pairs:
                break
            for tier in TIERS:
                spans = sorted({(agent, floor_time(bucket, tier.seconds))
                                for agent, bucket in pairs})
                written[tier.name] += models.upsert_rollups(tier.model,
                                                            _recompute(tier, spans=spans))
            written["traffic"] += quotas.recompute_spans(pairs)
        log.debug("dirty buckets rolled up count=%s", len(pairs))
    return written


# ===== Reading for charts =======================================================================

# Seconds between raw samples: the agent's default report interval.
RAW_INTERVAL = 60


def tier_for(span, max_rows=None):
    """The tier a range of `span` reads, None for raw samples: the one rule, for charts
    (charts.RANGES) and any other reader. The coarsest tier whose `charts_from` the span passes
    (raw up to a day and a bit, 5-minute rollups up to a month, hourly beyond), and coarser
    still while that gives more than `max_rows` rows (a chart's budget for its bins)."""
    index = -1  # raw
    for position, tier in enumerate(TIERS):
        if span > tier.charts_from:
            index = position
    if max_rows is not None:
        while index + 1 < len(TIERS) and span.total_seconds() / (
                RAW_INTERVAL if index < 0 else TIERS[index].seconds) > max_rows:
            index += 1
    return None if index < 0 else TIERS[index]


def tier_name_for(span, max_rows=None):
    tier = tier_for(span, max_rows)
    return "raw" if tier is None else tier.name


# Raw chart rows: the time, the charted figures in figures.CHARTED order, the totals charts
# scale to, and whether the sample came late.
RAW_CHART_COLUMNS = ("timestamp", *(figure.column for figure in figures.CHARTED),
                     *(chart.total for chart in figures.CHARTS if chart.total), "late")


def series(agent_id, start, end, columns=None, tier_name=None):
    """(tier name, rows as tuples) for one agent between start and end, from `tier_name` ("raw"
    or a tier's name) or else the tier that fits: raw rows carry RAW_CHART_COLUMNS; rollup rows
    the bucket then, for each of `columns` (from FIGURES; default the charted ones, in
    figures.CHARTED order), its mean and peak. Tuples, not model objects: a 30-day
    chart is 8,640 rows, and building objects would cost more than the query."""
    if tier_name is None:
        tier = tier_for(end - start)
    else:
        tier = None if tier_name == "raw" else next(t for t in TIERS if t.name == tier_name)
    if tier is None:
        return "raw", models.chart_rows(agent_id, start, end, columns=RAW_CHART_COLUMNS[1:])
    names = columns or [figure.column for figure in figures.CHARTED]
    return tier.name, models.chart_rows(agent_id, start, end, tier.model, [
        f"{name}_{kind}" for name in names for kind in ("avg", "max")])


# ===== Retention ================================================================================

PARTITION_NAME = re.compile(r"^server_metrics_p(\d{8})$")


def ensure_partitions(now=None, days_back=8, days_ahead=3):
    """PostgreSQL: one partition per day, from `days_back` ago to `days_ahead` ahead."""
    if not is_postgres():
        return 0
    now = now or utcnow()
    made = 0
    for offset in range(-days_back, days_ahead + 1):
        day = (now + datetime.timedelta(days=offset)).date()
        try:
            models.create_day_partition(day)
            made += 1
        except peewee.DatabaseError as err:  # rows for that day already sit in the default
            log.warning("cannot create partition day=%s error=%s", day, err)
    return made


def prune(settings, now=None):
    """Drop what is past its retention. -> {what: rows or partitions removed}."""
    now = now or utcnow()
    removed = {}
    raw_cutoff = now - datetime.timedelta(days=settings.retention_raw_days)
    if is_postgres():
        dropped = 0
        for name in models.day_partitions():
            match = PARTITION_NAME.match(name)
            if match:
                day = datetime.datetime.strptime(match.group(1), "%Y%m%d")
                if day + datetime.timedelta(days=1) <= raw_cutoff:
                    models.drop_day_partition(name)
                    dropped += 1
        removed["raw_partitions"] = dropped
    # Whatever landed in PostgreSQL's default partition ages out row by row.
    removed["raw"] = models.prune_samples(raw_cutoff)
    for tier in TIERS:
        cutoff = now - datetime.timedelta(days=getattr(settings, tier.retention_setting))
        removed[tier.name] = models.prune_rollups(tier.model, cutoff)
    removed["traffic_hours"], removed["traffic_days"] = quotas.prune(
        now, settings.retention_raw_days)
    # The mounts' hourly history (forecasts.py) lives as long as the hourly rollups.
    removed["mount_hours"] = models.prune_mount_hours(
        now - datetime.timedelta(days=settings.retention_1h_days))
    removed["auth_events"] = models.prune_auth_events(now - datetime.timedelta(days=30))
    removed["auth_limits"] = models.prune_auth_limits(now)
    removed["deliveries"] = models.prune_deliveries(now - datetime.timedelta(days=90))
    removed["sessions"] = models.prune_sessions(now)
    removed["login_challenges"] = models.prune_login_challenges(now)
    return removed
