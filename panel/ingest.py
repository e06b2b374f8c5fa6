"""Pure functions that turn a validated request body into rows: timestamp parsing and the
mapping of a sample's sections onto the typed columns and JSON detail of `server_metrics`.

Every row this builds is one the database stores: the schema bounds each field by its column
(protocol.py), a sum too large for its column is left empty, and a magnitude too small for a
REAL column is stored as 0. The sample is valid: refusing it would refuse what the schema allows.
"""
import datetime
import email.utils

import peewee

from . import models, protocol
from .validation import ValidationError

_REAL_COLUMNS = frozenset(name for name, field in models.Metric._meta.fields.items()
                          if isinstance(field, peewee.FloatField))
# Offsets measured from a Date header (whole seconds) differ by this much without any change.
CLOCK_RESOLUTION = 2
# What the offset column holds (INTEGER seconds: 68 years either way); a Date header can say
# year 9999, and that still reads as "far ahead", not as a database error.
MAX_CLOCK_OFFSET = models.column_max(models.Agent.clock_offset)


def clock_offset(now, date_header=None, agent_time=None):
    """Seconds the agent's clock is ahead of the panel's (negative: behind), from what the
    agent says its time is as it sends: the HTTP Date header (RFC 9110 lets a client send one)
    or a heartbeat's timestamp, naive UTC. None when it said nothing usable."""
    if agent_time is None and date_header:
        try:
            moment = email.utils.parsedate_to_datetime(date_header)
        except (TypeError, ValueError, OverflowError):
            return None
        if moment.tzinfo is None:
            return None  # RFC 9110 Dates are GMT; a zone-less one is not a reading to trust
        agent_time = moment.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    if agent_time is None or agent_time < protocol.EARLIEST:
        return None
    offset = round((agent_time - now).total_seconds())
    return max(-MAX_CLOCK_OFFSET, min(MAX_CLOCK_OFFSET, offset))


def parse_timestamp(value, now, field="timestamp"):
    """ISO 8601 with a zone, or epoch seconds -> naive UTC datetime.

    Samples stamped more than protocol.MAX_FUTURE ahead of the panel's clock are refused. Nearer ones
    are stored as stamped: the agent's times stay its data, so a replay is still stored once.
    """
    if isinstance(value, str):
        try:
            moment = datetime.datetime.fromisoformat(value)
        except ValueError:
            raise ValidationError("must be ISO 8601, e.g. 2026-11-30T01:52:00Z", field) from None
        if moment.tzinfo is None:
            raise ValidationError("must carry a time zone (Z or +hh:mm)", field)
        moment = moment.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    else:
        try:
            moment = datetime.datetime.fromtimestamp(value, datetime.timezone.utc).replace(tzinfo=None)
        except (OverflowError, OSError, ValueError):
            raise ValidationError("is not a usable epoch time in seconds", field) from None
    if moment < protocol.EARLIEST:
        raise ValidationError(f"is before the year {protocol.EARLIEST.year}; is the server's "
                              f"clock set?", field)
    if moment > now + protocol.MAX_FUTURE:
        raise ValidationError("is more than a day ahead of the panel's clock; is the server's "
                              "clock set?", field)
    return moment


def _known(entry, schema):
    """Only the fields the schema knows, so unknown agent-supplied keys are never stored."""
    return {k: v for k, v in entry.items() if k in schema["properties"]}


def _known_list(entries, item_schema):
    return [_known(entry, item_schema) for entry in entries]


def _int(value):
    return None if value is None else int(value)


def _total(entries, key, column):
    """Sum for `column`; None (unknown) when it passes what the column holds. Each entry's own
    figure is within bounds and kept in the detail; only a sum over hundreds of entries near
    2^63 can pass them, and refusing the sample for it would refuse data the schema allows."""
    total = sum(int(entry[key]) for entry in entries)
    return total if total <= models.column_max(column) else None


def _rate_sum(entries, key):
    """Sum of a per-second rate over entries that have one; None when none has (first sample)."""
    values = [entry[key] for entry in entries if entry.get(key) is not None]
    return float(sum(values)) if values else None


# A section no schema describes (a collector newer than this panel, or an agent's own plugin) is
# kept, so a new collector's data is stored and shown before anyone teaches the panel about it:
# its flat figures only (numbers, booleans, short text), within these bounds; anything nested,
# longer or past them is left out, never refused (the sample is valid: protocol.py).
EXTRA_SECTIONS = 16
EXTRA_FIGURES = 64
EXTRA_NAME_LENGTH = 64
EXTRA_TEXT_LENGTH = 256


def _plain_name(text, most=EXTRA_NAME_LENGTH):
    return isinstance(text, str) and 0 < len(text) <= most and "\x00" not in text


def extra_sections(metrics):
    """{section: {figure: value}} of the sections of `metrics` the schema does not describe."""
    kept = {}
    for name, section in metrics.items():
        if name in protocol.METRICS["properties"] or not isinstance(section, dict) or \
                not _plain_name(name):
            continue
        figures = {}
        for key, value in section.items():
            if len(figures) == EXTRA_FIGURES:
                break
            if not _plain_name(key):
                continue
            if isinstance(value, (bool, float)) or \
                    (isinstance(value, int) and abs(value) <= protocol.MAX_INT64) or \
                    _plain_name(value, EXTRA_TEXT_LENGTH):
                figures[key] = value
        if figures:
            kept[name] = figures
        if len(kept) == EXTRA_SECTIONS:
            break
    return kept


def sample_row(metrics, unavailable=None):
    """Column values for one validated `metrics` object (see protocol.METRICS)."""
    sections = protocol.METRICS["properties"]
    cpu = metrics.get("cpu") or {}
    memory = metrics.get("memory") or {}
    row = {
        "cpu_usage": cpu.get("usage"),
        "cpu_iowait": cpu.get("iowait"),
        "cpu_steal": cpu.get("steal"),
        "cpu_load_1min": cpu.get("load1"),
        "cpu_load_5min": cpu.get("load5"),
        "cpu_load_15min": cpu.get("load15"),
        "memory_total": _int(memory.get("total")),
        "memory_used": _int(memory.get("used")),
        "memory_free": _int(memory.get("free")),
        "memory_available": _int(memory.get("available")),
        "memory_cached": _int(memory.get("cached")),
        "swap_total": _int(memory.get("swapTotal")),
        "swap_used": _int(memory.get("swapUsed")),
    }

    detail = {}
    disk = metrics.get("disk") or {}
    if "mounts" in disk:
        mounts = _known_list(disk["mounts"], protocol.MOUNT)
        # Bind mounts show one device several times; count each device once in the totals.
        by_device = {}
        for mount in mounts:
            by_device.setdefault(mount.get("device") or mount["mountpoint"], mount)
        unique = list(by_device.values())
        shares = [100.0 * m["used"] / (m["used"] + m["free"]) for m in mounts
                  if m["used"] + m["free"] > 0]
        row.update(
            disk_max_percent=round(max(shares), 2) if shares else None,
            disk_total=_total(unique, "total", models.Metric.disk_total),
            disk_used=_total(unique, "used", models.Metric.disk_used),
            disk_free=_total(unique, "free", models.Metric.disk_free),
        )
        detail["disks"] = mounts
    if "io" in disk:
        io = _known_list(disk["io"], protocol.DISK_IO)
        row.update(disk_read_rate=_rate_sum(io, "readBytesPerSec"),
                   disk_write_rate=_rate_sum(io, "writeBytesPerSec"))
        detail["disk_io"] = io

    network = metrics.get("network") or {}
    if "interfaces" in network:
        interfaces = _known_list(network["interfaces"], protocol.INTERFACE)
        row.update(
            network_rx_bytes=_total(interfaces, "bytesRecv", models.Metric.network_rx_bytes),
            network_tx_bytes=_total(interfaces, "bytesSent", models.Metric.network_tx_bytes),
            network_rx_rate=_rate_sum(interfaces, "bytesRecvPerSec"),
            network_tx_rate=_rate_sum(interfaces, "bytesSentPerSec"),
        )
        detail["interfaces"] = interfaces

    processes = metrics.get("processes")
    if processes is not None:
        processes = _known(processes, protocol.PROCESSES)
        for key in ("topCpu", "topMemory"):
            if key in processes:
                processes[key] = _known_list(processes[key], protocol.PROCESS)
        row["process_count"] = _int(processes.get("total"))
        detail["processes"] = processes

    services = metrics.get("services")
    if services:
        service_schemas = sections["services"]["properties"]
        kept = {name: _known(value, service_schemas[name])
                for name, value in services.items() if name in service_schemas}
        if "postgresql" in kept and "databases" in kept["postgresql"]:
            kept["postgresql"]["databases"] = [
                {"name": d["name"], "size": d["size"]} for d in kept["postgresql"]["databases"]]
        if kept:
            detail["services"] = kept

    extra = extra_sections(metrics)
    if extra:
        detail["extra"] = extra
    if unavailable:
        detail["unavailable"] = dict(unavailable)
    for name in _REAL_COLUMNS.intersection(row):
        row[name] = models.storable_real(row[name])
    row["detail"] = detail or None
    return row
