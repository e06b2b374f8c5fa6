"""Traffic totals and quotas, the arithmetic (issue 14): bytes per sample from the interfaces'
counters, billing cycles, the projection to a cycle's end, and the alert levels. Pure: nothing
from the rest of the panel (quotas.py stores and reads what this computes, and opens the alerts).

Totals come from counters, not from rates x time. Each sample's detail keeps every interface's
`bytesRecv` and `bytesSent` since boot (the agent already sends them); the traffic a sample
adds is, per interface, how much its counters grew since the previous sample that carried the
network section:
  * a gap (the agent stopped, the panel unreachable and the buffer dropped samples) is covered
    exactly: the counter's growth across the gap is what crossed the interface meanwhile;
  * a counter that went backwards was reset (a reboot, the interface re-created, a driver
    reload): what it reads now is what it counted since the reset, and that is added. A reboot
    inside a gap whose counters climb past their old values before the next sample counts as
    their growth, less than was sent (no sample says when it rebooted);
  * an interface the previous sample did not have (a container's veth, a VPN coming up) adds
    nothing until its second sample: the first reading of a counter gives no traffic, as the
    agent's own rates give no rate (what it carried before is unseen, never counted twice);
  * an interface that vanished adds nothing, and the others are unaffected: summing the
    interfaces first (network_rx_bytes) would take a docker host's every departing veth for a
    reset of the whole server and count its traffic again;
  * a late sample replayed into the series moves bytes between hours, never adds any: the
    hours it touches are recomputed from the stored samples and written over (quotas.py).
Rates x time would lose the traffic of every interval whose sample was lost, and guess (the
last rate stretched over the gap) wherever samples are missing.

Like the Net in/out columns, every interface but loopback counts: on a host that bridges
containers or VMs, the same bytes cross the bridge and the uplink and count on both.

Cycles run from the billing day's midnight (UTC) to the next month's; a billing day past a
month's end falls on its last day (31 -> 28 February, 30 April).
"""
import calendar
import dataclasses
import datetime
import functools
import re

HOUR = datetime.timedelta(hours=1)
BILLING_DAYS = range(1, 32)
# The alert levels, percent of the allowance used (not projected: a projection early in a cycle
# swings; it is shown beside the figure instead).
LEVELS = (80, 100)
# What an allowance counts: how hosts bill. -> (its label, bytes counted from in and out).
BASES = {
    "sum": ("in + out", lambda received, sent: received + sent),
    "max": ("the larger of in and out", max),
}
# A projection needs this much of the cycle behind it; earlier, one busy hour would project a
# month of it.
PROJECT_AFTER = datetime.timedelta(hours=6)
MAX_ALLOWANCE = 2 ** 63 - 1


# ===== Bytes per sample =========================================================================

def interface_counters(interfaces):
    """A sample's detail `interfaces` list -> {name: (bytesRecv, bytesSent)}; None when the
    sample has no network section (the collector failed or is off): such a sample neither adds
    traffic nor serves as the next one's base."""
    if interfaces is None:
        return None
    counters = {}
    for entry in interfaces:
        received, sent = entry.get("bytesRecv"), entry.get("bytesSent")
        if isinstance(received, int) and isinstance(sent, int) and entry.get("interface"):
            counters[entry["interface"]] = (received, sent)
    return counters


def _grown(before, now):
    """A counter's growth; after a reset, what it counted since."""
    return now - before if now >= before else now


def increments(samples):
    """[(timestamp, counters or None)] oldest first (counters as interface_counters gives) ->
    [(timestamp, bytes received, bytes sent)] each sample added since the previous one that had
    counters. The first sample with counters adds nothing: it is the base."""
    result, previous = [], None
    for moment, counters in samples:
        if counters is None:
            continue
        if previous is not None:
            received = sent = 0
            for name, (now_received, now_sent) in counters.items():
                before = previous.get(name)
                if before is not None:
                    received += _grown(before[0], now_received)
                    sent += _grown(before[1], now_sent)
            result.append((moment, received, sent))
        previous = counters
    return result


def floor_hour(moment):
    return moment.replace(minute=0, second=0, microsecond=0)


def hourly(samples, start, end):
    """The traffic of each hour in [start, end) from `samples` (as increments takes, holding
    the last sample before `start` too, the base of the first): {hour: (received, sent)}, only
    the hours where a sample added something or was taken."""
    hours = {}
    for moment, received, sent in increments(samples):
        if start <= moment < end:
            total = hours.setdefault(floor_hour(moment), [0, 0])
            total[0] += received
            total[1] += sent
    return {hour: tuple(total) for hour, total in hours.items()}


# ===== Billing cycles ===========================================================================

def _billing_date(year, month, billing_day):
    return datetime.datetime(year, month, min(billing_day, calendar.monthrange(year, month)[1]))


def _month_after(year, month):
    return (year + 1, 1) if month == 12 else (year, month + 1)


@functools.lru_cache(maxsize=64)
def cycle(moment, billing_day):
    """The billing cycle holding `moment`: (start, end), midnights UTC, start included.
    (Cached: a fleet's thousands of servers share a handful of billing days.)"""
    start = _billing_date(moment.year, moment.month, billing_day)
    if moment < start:
        year, month = (moment.year - 1, 12) if moment.month == 1 else \
            (moment.year, moment.month - 1)
        start = _billing_date(year, month, billing_day)
    return start, _billing_date(*_month_after(start.year, start.month), billing_day)


def projection(used, start, end, now):
    """Bytes by the cycle's end at the pace so far (used / elapsed x the cycle's length): None
    before PROJECT_AFTER of it has passed."""
    elapsed = (min(now, end) - start).total_seconds()
    if elapsed < PROJECT_AFTER.total_seconds():
        return None
    return round(used * (end - start).total_seconds() / elapsed)


@dataclasses.dataclass(frozen=True)
class Usage:
    """One server's or customer's traffic in its current cycle, against its allowance."""
    received: int
    sent: int
    start: datetime.datetime
    end: datetime.datetime
    now: datetime.datetime
    allowance: int = None   # bytes a cycle; None: no allowance, traffic only counted
    basis: str = "sum"      # BASES key

    # Worked out once each: the servers table reads them for every row it builds.
    @functools.cached_property
    def used(self):
        return BASES[self.basis][1](self.received, self.sent)

    @functools.cached_property
    def percent(self):
        return round(100.0 * self.used / self.allowance, 1) if self.allowance else None

    @functools.cached_property
    def projected(self):
        return projection(self.used, self.start, self.end, self.now)

    @property
    def level(self):
        """The highest of LEVELS reached, or None."""
        return reached(self.used, self.allowance)


def reached(used, allowance):
    """The highest of LEVELS that `used` has reached of `allowance`, or None."""
    if not allowance:
        return None
    hit = [level for level in LEVELS if used * 100 >= level * allowance]
    return hit[-1] if hit else None


# ===== Reading what people type =================================================================

_AMOUNT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?)(b?)\s*$", re.IGNORECASE)
_POWERS = "kmgtp"


def parse_allowance(text):
    """'500 GB', '1.5T', '2 TiB', '1000000' -> bytes; '' -> None (no allowance). Decimal units
    as hosts bill (1 TB = 10^12 bytes); KiB, GiB ... binary. ValueError with a reason."""
    text = "" if text is None else str(text).strip()
    if not text:
        return None
    match = _AMOUNT.match(text)
    if not match or (match.group(3) and not match.group(2)):
        raise ValueError("allowance must be an amount of bytes like 500 GB, 1.5 TB or 2 TiB")
    number, prefix, binary = match.group(1), match.group(2).lower(), match.group(3)
    power = _POWERS.index(prefix) + 1 if prefix else 0
    value = int(float(number) * (1024 if binary else 1000) ** power) if power else \
        int(float(number))
    if value < 1 or value > MAX_ALLOWANCE:
        raise ValueError("allowance must be at least 1 byte and below 8 EiB")
    return value


def allowance_text(value):
    """Bytes -> how parse_allowance reads them back exactly: '2 TB', '500 GB', '2 TiB',
    '1234567'; '' for None."""
    if not value:
        return ""
    for base, suffix in ((1000, "B"), (1024, "iB")):
        for power in range(len(_POWERS), 0, -1):
            if value % base ** power == 0:
                return f"{value // base ** power} {_POWERS[power - 1].upper()}{suffix}"
    return str(value)


def parse_billing_day(text):
    """'1'..'31' -> int, ValueError otherwise."""
    text = str(text if text is not None else "").strip()
    if not (text.isascii() and text.isdigit()) or int(text) not in BILLING_DAYS:
        raise ValueError("billing day must be a day of the month, 1 to 31 (past a month's end: "
                         "its last day)")
    return int(text)


def parse_basis(text):
    text = (text or "sum").strip()
    if text not in BASES:
        raise ValueError(f"basis must be one of {', '.join(BASES)}")
    return text
