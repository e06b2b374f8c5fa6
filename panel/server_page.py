"""What the server detail page shows: its charts for a range, and its top processes and
services for now or for any past minute.

Charts read the tier that fits the range (rollups.tier_for, the one rule charts.RANGES reads,
with a budget of rows per bin): raw samples up to a day, 5-minute rollups for a week, hourly
for a month, so a 30-day page reads 720 rows per figure, not 43,200. The charts and their series are figures.CHARTS and the figure
table's chart entries.
Per-mount disk usage comes from each sample's detail; it moves slowly, so one sample per chart
bin is read, never the whole range. Rollups keep only the fullest mount, which is what the long
ranges draw.
"""
import datetime
import re

from . import charts, figures, forecasts, models, rollups, units
from .db import utcnow

# Raw chart rows carry the charted figures right after the time, rollup rows a mean and a peak
# of each, both in figures.CHARTED order (rollups.series).
FIGURE_NAMES = [figure.column for figure in figures.CHARTED]
MOUNT_LINES = 8  # per-mount lines of a raw range's chart, with the chart's other figures
_TOTAL_INDEX = {chart.total: rollups.RAW_CHART_COLUMNS.index(chart.total)
                for chart in figures.CHARTS if chart.total}


# The latest sample's columns the charts read their totals from (each chart's y-axis top).
TOTAL_COLUMNS = (models.Metric.agent, *dict.fromkeys(
    getattr(models.Metric, chart.total) for chart in figures.CHARTS if chart.total))


def parse_range(name):
    return charts.RANGES.get(name or "", charts.RANGES[charts.DEFAULT_RANGE])


def chart_window(chart_range, now):
    """(start, end): the range ending at the current bin's end, on bin boundaries, so bins
    line up with rollup buckets and a refresh moves the chart by whole bins."""
    end = rollups.floor_time(now, chart_range.step) + datetime.timedelta(seconds=chart_range.step)
    return end - datetime.timedelta(seconds=chart_range.seconds), end


def figure_points(tier, rows):
    """{figure column: [(epoch seconds, mean, peak)]} from series() rows of either kind."""
    moments = [charts.epoch(row[0]) for row in rows]
    # Column by column: a 30-day page has 720 rows of 12 figures.
    columns = list(zip(*rows)) or [()] * (1 + 2 * len(FIGURE_NAMES))
    points = {}
    for offset, name in enumerate(FIGURE_NAMES):
        if tier == "raw":
            points[name] = [(moment, mean, None) for moment, mean in
                            zip(moments, columns[1 + offset]) if mean is not None]
        else:
            points[name] = [(moment, mean, peak) for moment, mean, peak in
                            zip(moments, columns[1 + 2 * offset], columns[2 + 2 * offset])
                            if mean is not None]
    return points


def mount_lines(agent_id, raw_rows, start, seconds, most=MOUNT_LINES, samples=120):
    """Per-mount usage % lines from at most `samples` samples spread over the range (the last
    in each stretch): disk usage moves slowly, and each sample's detail must be decompressed."""
    last_per_slot = {}
    origin = charts.epoch(start)
    slot = max(60, seconds // samples)
    for row in raw_rows:
        last_per_slot[int((charts.epoch(row[0]) - origin) // slot)] = row[0]
    lines = {}
    for moment, detail in models.details_at(agent_id, sorted(last_per_slot.values())):
        moment = charts.epoch(moment)
        for disk in (detail or {}).get("disks") or []:
            mount = str(disk.get("mountpoint", "?"))
            percent = disk.get("percent")
            if isinstance(percent, (int, float)):
                lines.setdefault(mount, []).append((moment, float(percent), None))
    # The fullest mounts first: those are the ones an admin is looking for.
    ordered = sorted(lines.items(), key=lambda item: -max(p[1] for p in item[1]))[:most]
    return [charts.Line(mount, points) for mount, points in ordered]


def parse_chart(name):
    """?chart= of a download: None (every chart) or one of figures.CHART_KEYS; ValueError
    otherwise."""
    if name is None:
        return None
    if name not in figures.CHART_KEYS:
        raise ValueError(f"chart must be one of {', '.join(figures.CHART_KEYS)}")
    return name


def build_charts(agent_id, chart_range, now=None, latest=None, only=None):
    """The detail page's charts, in page order (figures.CHARTS); `only`: just the chart of
    that key, drawn even when it is an optional one without data (a download asked for it)."""
    now = now or utcnow()
    start, end = chart_window(chart_range, now)
    tier, rows = rollups.series(agent_id, start, end, tier_name=chart_range.tier)
    points = figure_points(tier, rows)
    banded = "" if tier == "raw" and chart_range.step == 60 else "line: mean · band: peak"
    built = []
    for spec in figures.CHARTS:
        if only is not None and spec.key != only:
            continue
        y_max, note = None, banded
        if spec.total:
            total = getattr(latest, spec.total) if latest is not None else None
            if tier == "raw":
                index = _TOTAL_INDEX[spec.total]
                known = [row[index] for row in rows if row[index]]
                total = known[-1] if known else total
            y_max = total or None
            note = f"of {units.FORMATS[spec.unit](total)}" if total else spec.no_total
        lines = [charts.Line(figure.label, points[figure.column])
                 for figure in figures.chart_figures(spec.key)]
        if spec.optional and only is None and not any(line.points for line in lines):
            continue  # a service this server does not run in this range
        title = spec.title
        if spec.per_mount and tier == "raw":
            # The chart's other figures first, as a chart draws only its first lines.
            lines = [line for line, figure in zip(lines, figures.chart_figures(spec.key))
                     if figure.column != spec.per_mount]
            title, note = f"{spec.title} per mount", ""
            lines += mount_lines(agent_id, rows, start, chart_range.seconds,
                                 most=MOUNT_LINES - len(lines))
        elif spec.per_mount:
            note = spec.note
        projection, ahead = None, 0
        if spec.per_mount:
            projection = disk_projection(agent_id, now, end, chart_range)
            ahead = projection_bins(chart_range) if projection else 0
        built.append(charts.Chart(title=title, unit=spec.unit, lines=lines, start=start,
                                  step=chart_range.step, bins=chart_range.bins,
                                  gap_seconds=chart_range.gap_seconds, y_max=y_max, note=note,
                                  projection=projection, ahead=ahead, key=spec.key))
    return built


def projection_bins(chart_range):
    """Bins the disk chart draws after its range when a mount is filling: a third more."""
    return chart_range.bins // 3


def disk_projection(agent_id, now, end, chart_range):
    """The dashed Line of the mount full soonest (its stored forecast, forecasts.py) from now
    to its full point or the projection's edge, or None while no mount is filling."""
    soonest = next(iter(models.forecasts_of([agent_id]).get(agent_id, [])), None)
    if soonest is None or soonest.full_at is None:
        return None
    edge = end + datetime.timedelta(seconds=chart_range.step * projection_bins(chart_range))
    points = forecasts.percent_line(soonest, now, edge)
    return charts.Line(f"{soonest.mount} full in {units.duration(soonest.seconds_left(now))} "
                       f"(dashed)", [(charts.epoch(moment), value, None)
                                     for moment, value in points])


# ===== Processes and services at a minute =======================================================

# Moments outside these are refused: the queries around a moment add and subtract minutes, and
# datetime overflows near years 1 and 9999 (OverflowError, not a ValueError).
MOMENT_RANGE = (charts.EPOCH, datetime.datetime(9000, 1, 1))


def parse_moment(text):
    """'2026-11-30T03:12' (UTC, as a datetime-local input sends it) -> datetime, or None."""
    text = (text or "").strip().rstrip("Z")
    if not text:
        return None
    moment = None
    for fmt in ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M"):
        try:
            moment = datetime.datetime.strptime(text[:19], fmt)
            break
        except ValueError:
            continue
    if moment is None and text.isascii() and text.isdigit() and len(text) <= 11:
        moment = charts.EPOCH + datetime.timedelta(seconds=int(text))
    if moment is None:
        raise ValueError("time must look like 2026-11-30T03:12 (UTC)")
    if not MOMENT_RANGE[0] <= moment < MOMENT_RANGE[1]:
        raise ValueError(f"time must be between {MOMENT_RANGE[0]:%Y-%m-%d} and "
                         f"{MOMENT_RANGE[1]:%Y-%m-%d} (UTC)")
    return moment


def processes_view(agent_id, moment=None):
    """The top-process and service tables of the sample at `moment` (or the newest)."""
    if moment is None:
        sample = models.sample_at(agent_id, utcnow() + datetime.timedelta(minutes=5),
                                  within=datetime.timedelta(days=3650))
    else:
        sample = models.sample_at(agent_id, moment + datetime.timedelta(seconds=59))
    if sample is None:
        return {"sample_time": None, "asked": moment, "top_cpu": [], "top_memory": [],
                "services": [], "process_total": None, "unavailable": []}
    processes = sample.processes or {}
    services = []
    # Services, then the sections of collectors the panel has no schema for: shown the same way.
    reported_sections = sorted((sample.services or {}).items())
    if sample.sensors:
        reported_sections.append(("temperatures", sample.sensors))
    for name, reported in reported_sections + sorted((sample.extra or {}).items()):
        if isinstance(reported, dict):
            services.append(_service_view(name, reported))
    unavailable = sorted((sample.unavailable or {}).items())
    return {
        "sample_time": sample.timestamp, "asked": moment,
        "top_cpu": _process_rows(processes.get("topCpu")),
        "top_memory": _process_rows(processes.get("topMemory")),
        "process_total": processes.get("total"), "services": services,
        "unavailable": unavailable,
    }


def _process_rows(entries):
    rows = []
    for entry in entries or []:
        if isinstance(entry, dict):
            cpu = entry.get("cpuPercent")
            rows.append({"pid": entry.get("pid"), "name": str(entry.get("name", "")),
                         "user": str(entry.get("user") or ""),
                         "cpu": units.percent(cpu) if isinstance(cpu, (int, float)) else "",
                         "rss": units.size(entry.get("rss"))
                         if isinstance(entry.get("rss"), (int, float)) else ""})
    return rows


SERVICE_ROWS = 50  # entries of a service's list shown (the agent sends at most 50)


def _service_view(name, reported):
    """{"name", "figures": [(key, label, text)], "lists": [(label, [(key, label)], rows)]} of
    one service (the label for people, the wire key docs/protocol.md names in its title):
    its plain figures, then each list (pools, certificates, units, databases) as a table whose
    columns are the entries' plain fields. Agent-supplied text: the template escapes it."""
    figures_, lists = [], []
    for key, value in reported.items():
        if isinstance(value, list):
            entries = [entry for entry in value[:SERVICE_ROWS] if isinstance(entry, dict)]
            columns = list(dict.fromkeys(
                column for entry in entries for column, cell in entry.items()
                if not isinstance(cell, (dict, list))))
            rows = [[_service_value(column, entry[column]) if column in entry else ""
                     for column in columns] for entry in entries]
            if rows:
                lists.append((field_label(key), [(c, field_label(c)) for c in columns], rows))
        elif not isinstance(value, dict):
            figures_.append((key, field_label(key), _service_value(key, value)))
    return {"name": name, "figures": figures_, "lists": lists}


def field_label(key):
    """A wire key as the page names it: "queriesPerSec" -> "queries/s", "connectionsPercent"
    -> "connections %", "bufferPoolHitPercent" -> "buffer pool hit %", "daysLeft" -> "days
    left". Agent-sent keys of unknown sections come through the same way (escaped later)."""
    suffix = ""
    for ending, shown in (("PerSec", "/s"), ("Percent", " %")):
        if key.endswith(ending) and len(key) > len(ending):
            key, suffix = key[:-len(ending)], shown
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", key).lower()
    return words + suffix


def _service_value(key, value):
    if isinstance(value, bool):
        return "yes" if value else "no"
    if not isinstance(value, (int, float)):
        return str(value)
    lowered = key.lower()
    if lowered.endswith("persec"):
        return f"{value:,.1f}/s"
    if lowered.endswith("percent"):
        return units.percent(value)
    if "memory" in lowered or "size" in lowered or lowered.endswith("bytes") or lowered == "rss":
        return units.size(value)
    if lowered in ("uptime", "oldestage", "replicalag"):
        return units.duration(value)
    if lowered == "notafter":
        return (charts.EPOCH + datetime.timedelta(seconds=value)).strftime("%Y-%m-%d")
    return f"{value:,}" if isinstance(value, int) else f"{value:,.2f}"
