"""Pure functions that turn a validated request body into rows: timestamp parsing and the
mapping of a sample's sections onto the typed columns and JSON detail of `server_metrics`.

Every row this builds is one the database stores: the schema bounds each field by its column
(protocol.py), a sum too large for its column is left empty, and a magnitude too small for a
REAL column is stored as 0. The sample is valid: refusing it would refuse what the schema allows.
"""
import datetime
import email.utils
import functools

from . import figures, models, protocol
from .errors import text_problem
from .validation import ValidationError

# Offsets measured from a Date header (whole seconds) differ by this much without any change.
CLOCK_RESOLUTION = 2
# What the offset column holds (INTEGER seconds: 68 years either way); a Date header can say
# year 9999, and that still reads as "far ahead", not as a database error.
MAX_CLOCK_OFFSET = models.column_max(models.Agent.clock_offset)


@functools.lru_cache(maxsize=256)
def _date_time(date_header):
    """An HTTP Date header as naive UTC, or None. Cached: the agents reporting within one
    second send the same header, and parsing one takes longer than the rest of the offset."""
    try:
        moment = email.utils.parsedate_to_datetime(date_header)
    except (TypeError, ValueError, OverflowError):
        return None
    if moment.tzinfo is None:
        return None  # RFC 9110 Dates are GMT; a zone-less one is not a reading to trust
    return moment.astimezone(datetime.timezone.utc).replace(tzinfo=None)


def clock_offset(now, date_header=None, agent_time=None):
    """Seconds the agent's clock is ahead of the panel's (negative: behind), from what the
    agent says its time is as it sends: the HTTP Date header (RFC 9110 lets a client send one)
    or a heartbeat's timestamp, naive UTC. None when it said nothing usable."""
    if agent_time is None and date_header:
        agent_time = _date_time(date_header)
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
    properties = schema["properties"]
    return {k: v for k, v in entry.items() if k in properties}


def _known_list(entries, item_schema):
    return [_known(entry, item_schema) for entry in entries]


def _known_deep(value, schema):
    """`value` with only the fields its schema knows, at every depth (a service's pools,
    certificates, units and databases are lists of objects)."""
    if isinstance(value, dict) and "properties" in schema:
        properties = schema["properties"]
        return {key: _known_deep(item, properties[key]) for key, item in value.items()
                if key in properties}
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_known_deep(item, schema["items"]) for item in value]
    return value


def _int(value):
    return None if value is None else int(value)


# ===== Reducers: a list section's entries -> one column's value (figures.REDUCERS) ==============

def _sum(entries, keys, bound):
    """Sum for a column; None (unknown) when it passes what the column holds. Each entry's own
    figure is within bounds and kept in the detail; only a sum over hundreds of entries near
    2^63 can pass them, and refusing the sample for it would refuse data the schema allows."""
    known = [int(entry[keys[0]]) for entry in entries if entry.get(keys[0]) is not None]
    if not known:
        return None  # no entry says (a PHP-FPM pool without its status page): unknown, not 0
    total = sum(known)
    return total if total <= bound else None


def _sum_per_device(entries, keys, bound):
    # Bind mounts show one device several times; count each device once in the totals.
    by_device = {}
    for entry in entries:
        by_device.setdefault(entry.get("device") or entry["mountpoint"], entry)
    return _sum(list(by_device.values()), keys, bound)


def _rate_sum(entries, keys, bound):
    """Sum of a per-second rate over entries that have one; None when none has (first sample)."""
    values = [entry[keys[0]] for entry in entries if entry.get(keys[0]) is not None]
    return float(sum(values)) if values else None


def _fullest_share(entries, keys, bound):
    used_key, free_key = keys
    shares = [100.0 * entry[used_key] / (entry[used_key] + entry[free_key]) for entry in entries
              if entry.get(used_key) is not None and entry.get(free_key) is not None
              and entry[used_key] + entry[free_key] > 0]
    return round(max(shares), 2) if shares else None


def _highest(entries, keys, bound):
    values = [entry[keys[0]] for entry in entries if entry.get(keys[0]) is not None]
    return max(values) if values else None


REDUCERS = {"sum": _sum, "sum_per_device": _sum_per_device, "rate_sum": _rate_sum,
            "fullest_share": _fullest_share, "highest": _highest}


# ===== The plan, built once from the figure table ===============================================

def _bound(figure):
    field = getattr(models.Metric, figure.column)
    return models.column_max(field) if figure.storage != "real" else None


def _convert(figure):
    return models.storable_real if figure.storage == "real" else _int


# Every column a sample fills, None unless its section says otherwise.
_EMPTY_ROW = dict.fromkeys(figure.column for figure in figures.FIGURES)
# section -> [(column, wire key, conversion)] for the figures a section gives as they are.
_VALUES = {}
# (section, list) -> [(column, reducer, keys, bound, conversion)] for those made from a list.
_LISTS = {}
for _figure in figures.FIGURES:
    if _figure.entries is None:
        _VALUES.setdefault(_figure.section, []).append(
            (_figure.column, _figure.keys[0], _convert(_figure)))
    else:
        _LISTS.setdefault((_figure.section, _figure.entries), []).append(
            (_figure.column, REDUCERS[_figure.reduce], _figure.keys, _bound(_figure),
             models.storable_real if _figure.storage == "real" else None))
del _figure
# The lists a sample's detail keeps, each entry with only the fields its schema knows:
# (section, list, entry schema, detail key).
DETAIL_LISTS = (("disk", "mounts", protocol.MOUNT, "disks"),
                ("disk", "io", protocol.DISK_IO, "disk_io"),
                ("network", "interfaces", protocol.INTERFACE, "interfaces"))
_SERVICE_SCHEMAS = protocol.METRICS["properties"]["services"]["properties"]
# The other lists figures are made from (a service's pools): read where they are sent, kept in
# the detail with their service.
_OTHER_LISTS = tuple((key, plan) for key, plan in _LISTS.items()
                     if key not in {(section, name) for section, name, _, _ in DETAIL_LISTS})


# A section no schema describes (a collector newer than this panel, or an agent's own plugin) is
# kept, so a new collector's data is stored and shown before anyone teaches the panel about it:
# its flat figures only (numbers, booleans, short text), within these bounds; anything nested,
# longer or past them is left out, never refused (the sample is valid: protocol.py).
EXTRA_SECTIONS = 16
EXTRA_FIGURES = 64
EXTRA_NAME_LENGTH = 64
EXTRA_TEXT_LENGTH = 256


def _plain_name(text, most=EXTRA_NAME_LENGTH):
    # The panel's one rule for text (errors.text_problem), as for every other string it keeps.
    return isinstance(text, str) and 0 < len(text) <= most and text_problem(text) is None


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
    """Column values for one validated `metrics` object (see protocol.METRICS): one pass over
    the figure table's plan, then the detail."""
    row = dict(_EMPTY_ROW)
    for section, plan in _VALUES.items():
        values = figures.section_of(metrics, section)
        if values:
            for column, key, convert in plan:
                row[column] = convert(values.get(key))

    detail = {}
    for section, name, schema, detail_key in DETAIL_LISTS:
        values = metrics.get(section)
        if values and name in values:
            entries = _known_list(values[name], schema)
            for column, reduce, keys, bound, convert in _LISTS.get((section, name), ()):
                value = reduce(entries, keys, bound)
                row[column] = convert(value) if convert is not None else value
            detail[detail_key] = entries

    for (section, name), plan in _OTHER_LISTS:
        values = figures.section_of(metrics, section)
        if values and isinstance(values.get(name), list):
            for column, reduce, keys, bound, convert in plan:
                value = reduce(values[name], keys, bound)
                row[column] = convert(value) if convert is not None else value

    processes = metrics.get("processes")
    if processes is not None:
        processes = _known(processes, protocol.PROCESSES)
        for key in ("topCpu", "topMemory"):
            if key in processes:
                processes[key] = _known_list(processes[key], protocol.PROCESS)
        detail["processes"] = processes

    sensors = metrics.get("sensors")
    if sensors:
        detail["sensors"] = _known_deep(sensors, protocol.SENSORS)

    services = metrics.get("services")
    if services:
        kept = {name: _known_deep(value, _SERVICE_SCHEMAS[name])
                for name, value in services.items() if name in _SERVICE_SCHEMAS}
        if kept:
            detail["services"] = kept

    extra = extra_sections(metrics)
    if extra:
        detail["extra"] = extra
    if unavailable:
        detail["unavailable"] = dict(unavailable)
    row["detail"] = detail or None
    return row
