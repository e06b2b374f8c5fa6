"""What the server detail page shows: its charts for a range, and its top processes and
services for now or for any past minute.

Charts read the tier that fits the range (charts.RANGES): raw samples up to a day, 5-minute
rollups for a week, hourly for a month, so a 30-day page reads 720 rows per figure, not 43,200.
Per-mount disk usage comes from each sample's detail; it moves slowly, so one sample per chart
bin is read, never the whole range. Rollups keep only the fullest mount, which is what the long
ranges draw.
"""
import datetime

from . import charts, models, rollups, units
from .db import utcnow

# (figure in rollups.FIGURES, raw column index in rollups.RAW_CHART_COLUMNS)
_RAW_INDEX = {name: rollups.RAW_CHART_COLUMNS.index(column) for name, column in
              (("cpu_usage", "cpu_usage"), ("cpu_iowait", "cpu_iowait"), ("load", "cpu_load_1min"),
               ("memory_used", "memory_used"), ("swap_used", "swap_used"),
               ("disk_percent", "disk_max_percent"), ("disk_read", "disk_read_rate"),
               ("disk_write", "disk_write_rate"), ("net_rx", "network_rx_rate"),
               ("net_tx", "network_tx_rate"))}
FIGURE_NAMES = list(_RAW_INDEX)
_MEMORY_TOTAL = rollups.RAW_CHART_COLUMNS.index("memory_total")


def parse_range(name):
    return charts.RANGES.get(name or "", charts.RANGES[charts.DEFAULT_RANGE])


def chart_window(chart_range, now):
    """(start, end): the range ending at the current bin's end, on bin boundaries, so bins
    line up with rollup buckets and a refresh moves the chart by whole bins."""
    end = rollups.floor_time(now, chart_range.step) + datetime.timedelta(seconds=chart_range.step)
    return end - datetime.timedelta(seconds=chart_range.seconds), end


def figure_points(tier, rows):
    """{figure: [(epoch seconds, mean, peak)]} from series() rows of either kind."""
    points = {name: [] for name in FIGURE_NAMES}
    raw_columns = list(_RAW_INDEX.items())
    for row in rows:
        moment = charts.epoch(row[0])
        if tier == "raw":
            for name, index in raw_columns:
                value = row[index]
                if value is not None:
                    points[name].append((moment, value, None))
        else:
            for offset, name in enumerate(FIGURE_NAMES):
                mean = row[1 + 2 * offset]
                if mean is not None:
                    points[name].append((moment, mean, row[2 + 2 * offset]))
    return points


def mount_lines(agent_id, raw_rows, start, seconds, most=8, samples=120):
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


def build_charts(agent_id, chart_range, now=None, latest=None):
    """The detail page's charts, in page order."""
    now = now or utcnow()
    start, end = chart_window(chart_range, now)
    tier, rows = rollups.series(agent_id, start, end, tier_name=chart_range.tier)
    points = figure_points(tier, rows)
    memory_total = latest.memory_total if latest is not None else None
    swap_total = latest.swap_total if latest is not None else None
    if tier == "raw":
        totals = [row[_MEMORY_TOTAL] for row in rows if row[_MEMORY_TOTAL]]
        memory_total = totals[-1] if totals else memory_total

    def chart(title, unit, lines, y_max=None, note=""):
        return charts.Chart(title=title, unit=unit, lines=lines, start=start,
                            step=chart_range.step, bins=chart_range.bins,
                            gap_seconds=chart_range.gap_seconds, y_max=y_max, note=note)

    if tier == "raw":
        disk = chart("Disk usage per mount", "percent",
                     mount_lines(agent_id, rows, start, chart_range.seconds))
    else:
        disk = chart("Disk usage", "percent", [charts.Line("fullest mount",
                                                           points["disk_percent"])],
                     note="per-mount detail for ranges up to 24 h")
    banded = "" if tier == "raw" and chart_range.step == 60 else "line: mean · band: peak"
    return [
        chart("CPU", "percent", [charts.Line("usage", points["cpu_usage"]),
                                 charts.Line("iowait", points["cpu_iowait"])], note=banded),
        chart("Load (1 min)", "load", [charts.Line("load", points["load"])], note=banded),
        chart("Memory used", "bytes", [charts.Line("used", points["memory_used"])],
              y_max=memory_total, note=f"of {units.size(memory_total)}" if memory_total else ""),
        chart("Swap used", "bytes", [charts.Line("swap", points["swap_used"])],
              y_max=swap_total or None,
              note=f"of {units.size(swap_total)}" if swap_total else "no swap"),
        disk,
        chart("Disk I/O", "rate", [charts.Line("read", points["disk_read"]),
                                   charts.Line("write", points["disk_write"])], note=banded),
        chart("Network", "rate", [charts.Line("received", points["net_rx"]),
                                  charts.Line("sent", points["net_tx"])], note=banded),
    ]



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
    if moment is None and text.isdigit() and len(text) <= 11:
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
                "services": [], "process_total": None}
    processes = sample.processes or {}
    services = []
    # Services, then the sections of collectors the panel has no schema for: shown the same way.
    for name, figures in sorted((sample.services or {}).items()) + \
            sorted((sample.extra or {}).items()):
        if isinstance(figures, dict):
            services.append((name, [(key, _service_value(key, value))
                                    for key, value in figures.items()
                                    if not isinstance(value, (dict, list))]))
    return {
        "sample_time": sample.timestamp, "asked": moment,
        "top_cpu": _process_rows(processes.get("topCpu")),
        "top_memory": _process_rows(processes.get("topMemory")),
        "process_total": processes.get("total"), "services": services,
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


def _service_value(key, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    lowered = key.lower()
    if lowered.endswith("persec"):
        return f"{value:,.1f}/s"
    if "memory" in lowered or "size" in lowered or lowered.endswith("bytes"):
        return units.size(value)
    return f"{value:,}" if isinstance(value, int) else f"{value:,.2f}"
