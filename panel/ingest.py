"""Pure functions that turn a validated request body into rows: timestamp parsing and the
mapping of a sample's sections onto the typed columns and JSON detail of `server_metrics`."""
import datetime

from .validation import ValidationError

EARLIEST = datetime.datetime(2000, 1, 1)
MAX_FUTURE = datetime.timedelta(minutes=5)
MAX_INT64 = 2**63 - 1


def parse_timestamp(value, now, field="timestamp"):
    """ISO 8601 with a zone, or epoch seconds -> naive UTC datetime.

    Samples stamped more than 5 minutes ahead of the panel's clock are refused: a skewed
    clock would otherwise put them ahead of every later sample for good.
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
    if moment < EARLIEST:
        raise ValidationError("is before the year 2000; is the server's clock set?", field)
    if moment > now + MAX_FUTURE:
        raise ValidationError("is more than 5 minutes in the future; is the server's clock set?",
                              field)
    return moment


def _known(entry, schema):
    """Only the fields the schema knows, so unknown agent-supplied keys are never stored."""
    return {k: v for k, v in entry.items() if k in schema["properties"]}


def _int(value):
    return None if value is None else int(value)


def _total(entries, key, field):
    """Sum for a BIGINT column; a sum past 64 bits is refused, not left to overflow in SQL."""
    total = sum(int(entry[key]) for entry in entries)
    if total > MAX_INT64:
        raise ValidationError(f"sum of {key} exceeds a 64-bit counter", field)
    return total


def sample_row(metrics, schemas):
    """Column values for one validated `metrics` object (see protocol.METRICS_BODY)."""
    cpu = metrics.get("cpu") or {}
    memory = metrics.get("memory") or {}
    row = {
        "cpu_usage": cpu.get("usage"),
        "cpu_load_1min": cpu.get("load1"),
        "cpu_load_5min": cpu.get("load5"),
        "cpu_load_15min": cpu.get("load15"),
        "memory_total": _int(memory.get("total")),
        "memory_used": _int(memory.get("used")),
        "memory_free": _int(memory.get("free")),
        "memory_available": _int(memory.get("available")),
        "memory_cached": _int(memory.get("cached")),
    }

    disks = metrics.get("disk")
    if disks is not None:
        disks = [_known(d, schemas["disk"]["items"]) for d in disks]
        # Bind mounts show one device several times; count each device once in the totals.
        by_device = {}
        for disk in disks:
            by_device.setdefault(disk.get("device") or disk["mountpoint"], disk)
        unique = list(by_device.values())
        row.update(
            disk_total=_total(unique, "total", "metrics.disk"),
            disk_used=_total(unique, "used", "metrics.disk"),
            disk_free=_total(unique, "free", "metrics.disk"),
            disks=disks,
        )

    interfaces = metrics.get("network")
    if interfaces is not None:
        interfaces = [_known(i, schemas["network"]["items"]) for i in interfaces]
        row.update(
            network_rx_bytes=_total(interfaces, "bytesRecv", "metrics.network"),
            network_tx_bytes=_total(interfaces, "bytesSent", "metrics.network"),
            interfaces=interfaces,
        )
    return row
