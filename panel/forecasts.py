"""Disk-full forecasts: when each mount will be full, from the trend of its last days (pure).

The method is Prometheus' `predict_linear` and Zabbix's `timeleft`: a least-squares line
through (time, used bytes) of the mount's hourly history (models.MountHour, kept by the
forecasts job from each server's newest sample), extended to where used reaches the mount's
capacity, used + free: what an unprivileged writer can fill, the same share the disk alert
watches (figures "disk_max_percent"). `statistics.linear_regression` does the fit.

No forecast (`Forecast.full_at` None, and `reason` says why) when:
  - "too little history": fewer than MIN_POINTS hours, or spanning less than MIN_SPAN;
  - "flat": the trend moves less than FLAT_SHARE of the capacity a day either way;
  - "shrinking": the trend frees space;
  - "not within a year": the full point is further than HORIZON: shown as nothing, as an
    absurd horizon ("full in 40 years") is noise.
A step down of more than STEP_SHARE of the capacity between two hours (a deleted file, a
rotated log, a cleaned cache) starts the history afresh: the old slope says nothing about the
disk after it. A mount already full (no free space) is full now.
"""
import dataclasses
import datetime
import statistics

WINDOW = datetime.timedelta(days=7)       # the history a forecast reads
MIN_POINTS = 6                            # hourly points at least
MIN_SPAN = datetime.timedelta(hours=6)    # from the first to the last of them
FLAT_SHARE = 0.0001                       # of the capacity per day: 0.01 %, 100 MB of 1 TB
STEP_SHARE = 0.02                         # a drop of 2 % of the capacity in an hour: a step
HORIZON = datetime.timedelta(days=365)

REASONS = ("too little history", "flat", "shrinking", "not within a year")


@dataclasses.dataclass(frozen=True)
class Forecast:
    mount: str
    used: int                   # the newest point's
    capacity: int               # used + free at the newest point
    bytes_per_day: float        # the trend; None with too little history
    full_at: datetime.datetime  # None: not filling (see reason)
    reason: str = None          # REASONS, None when full_at is set

    def seconds_left(self, now):
        """Seconds from `now` until full (0 once past), or None."""
        if self.full_at is None:
            return None
        return max(0.0, (self.full_at - now).total_seconds())


def since_last_step(points):
    """The points from the last step down (a drop of more than STEP_SHARE of the capacity
    from one point to the next) on; all of them if there is none."""
    start = 0
    for index in range(1, len(points)):
        (_, before, _), (_, after, capacity) = points[index - 1], points[index]
        if before - after > STEP_SHARE * capacity:
            start = index
    return points[start:]


def forecast(mount, points):
    """The Forecast of one mount from `points` [(datetime, used, capacity)], oldest first (the
    caller keeps them within WINDOW). None for no points at all."""
    if not points:
        return None
    _, used, capacity = points[-1]
    if capacity and used >= capacity:
        return Forecast(mount, used, capacity, None, points[-1][0])
    points = since_last_step(points)
    first = points[0][0]
    if len(points) < MIN_POINTS or points[-1][0] - first < MIN_SPAN or not capacity:
        return Forecast(mount, used, capacity, None, None, "too little history")
    # Seconds from the first point, not from 1970: the fit stays well conditioned.
    xs = [(moment - first).total_seconds() for moment, _, _ in points]
    slope, intercept = statistics.linear_regression(xs, [float(u) for _, u, _ in points])
    per_day = slope * 86400
    if abs(per_day) < FLAT_SHARE * capacity:
        return Forecast(mount, used, capacity, per_day, None, "flat")
    if per_day < 0:
        return Forecast(mount, used, capacity, per_day, None, "shrinking")
    seconds = (capacity - intercept) / slope
    full_at = first + datetime.timedelta(seconds=seconds)
    if full_at - points[-1][0] > HORIZON:
        return Forecast(mount, used, capacity, per_day, None, "not within a year")
    return Forecast(mount, used, capacity, per_day, full_at)


def hour_rows(disks):
    """[(mount, used, capacity)] of a sample's per-mount detail (its "disks"), the entries
    with a mount point and whole used and free bytes."""
    rows = []
    for disk in disks or []:
        mount, used, free = disk.get("mountpoint"), disk.get("used"), disk.get("free")
        if isinstance(mount, str) and mount and all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (used, free)):
            rows.append((mount, used, used + free))
    return rows


def percent_line(item, now, end):
    """The dashed projection a chart draws for a forecast: [(datetime, used %)] from the used
    share at `now` straight to 100 % at the full point, cut at `end` if that comes first."""
    if item is None or item.full_at is None or not item.capacity:
        return []
    share = min(100.0, 100.0 * item.used / item.capacity)
    full_at = max(item.full_at, now)
    if full_at <= end:
        return [(now, share), (full_at, 100.0)]
    part = (end - now).total_seconds() / (full_at - now).total_seconds()
    return [(now, share), (end, share + (100.0 - share) * part)]
