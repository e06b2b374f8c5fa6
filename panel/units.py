"""Numbers as an admin reads them: '12 s ago', '1.5 GiB', '340 KiB/s', '42.0 %'.

One place for every unit the pages, the charts' axes and the status page print, so a figure reads
the same in a table cell, on an axis and in a tooltip (static/mpanel.js mirrors `size`).
"""
import math

BINARY_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def ago(seconds):
    """'12 s ago', '5 min ago', '3 h ago', '2 d ago'."""
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def duration(seconds):
    """'45 s', '12 min', '3 h 5 min', '4 d 2 h': how long, to two units at most."""
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    if minutes:
        return f"{minutes} min"
    return f"{secs} s"


def size(value):
    """Bytes in binary units with three significant figures: 512 B, 1.50 KiB, 23.4 MiB, 117 GiB."""
    if value is None:
        return ""
    value = float(value)
    if not math.isfinite(value):
        return ""
    magnitude, index = abs(value), 0
    while magnitude >= 1024 and index < len(BINARY_UNITS) - 1:
        magnitude /= 1024
        index += 1
    if index == 0:
        return f"{value:.0f} B"
    digits = 2 if magnitude < 10 else 1 if magnitude < 100 else 0
    sign = "-" if value < 0 else ""
    return f"{sign}{magnitude:.{digits}f} {BINARY_UNITS[index]}"


def rate(value):
    return "" if value is None else f"{size(value)}/s"


def percent(value):
    return "" if value is None else f"{value:.1f} %"


def load(value):
    return "" if value is None else f"{value:.2f}"


def share(part, whole):
    """part / whole as a percentage, or None when either is unknown."""
    if part is None or not whole:
        return None
    return round(100.0 * part / whole, 1)


def count(value):
    return "" if value is None else f"{value:,.0f}"


def per_second(value):
    """Events a second: '1,234/s', '12.5/s', '0.02/s'."""
    if value is None:
        return ""
    return f"{value:,.0f}/s" if value >= 100 else f"{value:.1f}/s" if value >= 1 \
        else f"{value:.2f}/s"


def celsius(value):
    return "" if value is None else f"{value:.1f} °C"


def days(value):
    return "" if value is None else f"{value:.1f} d"


# A figure's unit (figures.Figure.unit, figures.Chart.unit) -> how a value of it is written.
FORMATS = {"percent": percent, "bytes": size, "rate": rate, "load": load, "count": count,
           "per_second": per_second, "celsius": celsius, "seconds": lambda v: "" if v is None
           else duration(v), "days": days}
