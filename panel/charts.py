"""Server-rendered charts: time series in, an SVG figure out. No chart library, no JS build.

A chart is drawn on a fixed number of time bins (one per minute for an hour, per two hours for a
month): each bin keeps the mean and the peak of the rows that fall in it, so a long range reads
as an average line with its peaks as a band, and the page stays small whatever the range. A run
of empty bins longer than `gap_seconds` is a gap — the server was silent — and the line breaks
there instead of bridging it; samples replayed late from an agent's buffer are plain data.

Layout, and why: the SVG is 100 % wide and a fixed number of pixels high. Text (axis labels)
lives in the outer SVG at percentage x positions, so it stays legible at 375 px; only the
inner plot stretches (`preserveAspectRatio="none"`, strokes with `non-scaling-stroke`).
Everything is attributes, never `style=""`: the Content-Security-Policy forbids inline styles.
The values ride along in `data-values` for the hover tooltip in static/mpanel.js.
"""
import dataclasses
import datetime
import html
import json
import math

from . import rollups, units

EPOCH = datetime.datetime(1970, 1, 1)
HEIGHT = 170          # px, the whole figure
PLOT_TOP = 8
PLOT_HEIGHT = 136     # px; x axis labels below
PLOT_WIDTH = 1000     # viewBox units of the stretched plot
SERIES_CLASSES = ("s1", "s2", "s3", "s4", "s5", "s6")


# A chart reads at most this many rows per bin (rollups.tier_for's budget): more are lost in
# the bin's mean anyway, and the coarser tier keeps their peak. So a 30-day chart's 360 bins
# read 720 hourly rows, not 8,640 five-minute ones.
ROWS_PER_BIN = 8


@dataclasses.dataclass(frozen=True)
class Range:
    name: str
    seconds: int
    step: int            # seconds per bin

    @property
    def tier(self):
        """"raw" or the rollup tier this range reads: rollups.tier_for, the one rule."""
        return rollups.tier_name_for(datetime.timedelta(seconds=self.seconds),
                                     ROWS_PER_BIN * self.bins)

    @property
    def source_interval(self):
        """Seconds between the rows it reads."""
        tier = rollups.tier_for(datetime.timedelta(seconds=self.seconds),
                                ROWS_PER_BIN * self.bins)
        return rollups.RAW_INTERVAL if tier is None else tier.seconds

    @property
    def bins(self):
        return self.seconds // self.step

    @property
    def gap_seconds(self):
        # Two missed reports at most are jitter; longer is silence. Never below 3 bins, or a
        # bin that happens to hold no sample would break the line.
        return max(3 * self.step, 3 * self.source_interval)


RANGES = {r.name: r for r in (
    Range("1h", 3600, 60),
    Range("6h", 6 * 3600, 120),
    Range("24h", 86400, 300),
    Range("7d", 7 * 86400, 1800),
    Range("30d", 30 * 86400, 7200),
)}
DEFAULT_RANGE = "1h"


@dataclasses.dataclass
class Line:
    """One series: `points` are (seconds since the epoch, mean, peak); peak may be None (a
    single sample). Epoch seconds, not datetimes: a chart's rows are converted once, not once
    per figure."""
    label: str
    points: list


@dataclasses.dataclass
class Chart:
    title: str
    unit: str              # a key of units.FORMATS
    lines: list
    start: datetime.datetime
    step: int
    bins: int
    gap_seconds: int
    y_max: float = None    # fixed top (100 % for percentages, total memory); else from the data
    note: str = ""
    # A forecast (forecasts.percent_line): a dashed Line into `ahead` more bins after the
    # range, which the x axis then also covers; its label says what it foresees.
    projection: Line = None
    ahead: int = 0
    key: str = ""          # its figures.CHARTS key


def epoch(moment):
    return (moment - EPOCH).total_seconds()


# ===== Binning (pure) ===========================================================================

def bin_points(points, start, step, bins):
    """[(epoch seconds, mean, peak)] -> a list of `bins` entries, (mean, peak) or None where no
    row fell. The mean is of the rows' means, the peak the highest peak (or mean), so a filled
    bin always has a peak."""
    sums = [0.0] * bins
    counts = [0] * bins
    peaks = [None] * bins
    origin = epoch(start)
    # The hot loop of a page (a 30-day page bins 12 lines of 720 rows): no calls per row.
    for moment, mean, peak in points:
        if mean is None:
            continue
        index = int((moment - origin) // step)
        if not 0 <= index < bins:
            continue
        sums[index] += mean
        counts[index] += 1
        if peak is None or mean > peak:  # max(peak, mean)
            peak = mean
        known = peaks[index]
        if known is None or peak > known:
            peaks[index] = peak
    return [(total / count, peak) if count else None
            for total, count, peak in zip(sums, counts, peaks)]


def segments(binned, step, gap_seconds):
    """Runs of consecutive bin indexes to draw as one stroke: a new run starts where the empty
    stretch since the last filled bin is longer than gap_seconds."""
    runs, current, last = [], [], None
    for index, value in enumerate(binned):
        if value is None:
            continue
        if last is not None and (index - last) * step > gap_seconds:
            runs.append(current)
            current = []
        current.append(index)
        last = index
    if current:
        runs.append(current)
    return runs


# ===== Axes (pure) ==============================================================================

def nice_ceiling(value):
    """The smallest of 1, 2, 2.5, 4, 5, 8, 10 x 10^n at least `value`: quarters read well."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for factor in (1, 2, 2.5, 4, 5, 8, 10):
        if factor * power >= value * (1 - 1e-9):
            return factor * power
    return 10 * power


def axis_top(unit, highest, fixed=None):
    if fixed:
        return float(fixed)
    if unit == "percent":
        return 100.0
    if unit in ("bytes", "rate"):
        if highest <= 0:
            return 1024.0
        scale = 1024 ** max(0, min(5, int(math.log(max(highest, 1), 1024))))
        return nice_ceiling(highest / scale) * scale
    return nice_ceiling(max(highest, 1.0 if unit == "load" else highest))


TIME_STEPS = (300, 600, 900, 1800, 3600, 2 * 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400,
              2 * 86400, 7 * 86400)


def time_ticks(start, seconds, most=7):
    """[(fraction of the width, label)] on round times (UTC), at most `most` of them."""
    step = next((s for s in TIME_STEPS if seconds / s <= most), TIME_STEPS[-1])
    first = math.ceil(epoch(start) / step) * step
    fmt = "%H:%M" if step < 86400 else "%b %d"
    ticks = []
    moment = first
    while moment <= epoch(start) + seconds:
        label = (EPOCH + datetime.timedelta(seconds=moment)).strftime(fmt)
        ticks.append(((moment - epoch(start)) / seconds, label))
        moment += step
    return ticks


# ===== Rendering ================================================================================

def _number(value, unit):
    """A bin's value as JSON text for data-values: json.dumps(round(value)) for bytes and rates,
    json.dumps(round(value, 2)) otherwise. Below 1e13 the latter is the 2-decimal text with its
    trailing zeros cut ("12.30" -> "12.3", "5.00" -> "5.0"): both round the exact binary value
    to 2 decimals, and so few decimals of a number that small name one double and are its
    shortest repr. round(x, 2) and float repr cost twice what this does, and a 30-day page has
    4,320 such values."""
    if unit in ("bytes", "rate"):
        return str(round(value))
    if -1e13 < value < 1e13:  # False for NaN too, which takes the general way
        text = f"{value:.2f}".rstrip("0")
        return text + "0" if text[-1] == "." else text
    return json.dumps(round(value, 2))


def render(chart):
    """The chart as an HTML <figure> holding one SVG."""
    binned = [bin_points(line.points, chart.start, chart.step, chart.bins) for line in chart.lines]
    # A filled bin always has a peak (bin_points); filter(None, ...) skips the empty ones.
    highest = max((max(value[1], value[0]) for column in binned for value in filter(None, column)),
                  default=0.0)
    top = axis_top(chart.unit, highest, chart.y_max)
    fmt = units.FORMATS[chart.unit]
    shown_bins = chart.bins + chart.ahead
    seconds = chart.step * shown_bins
    filled = sum(1 for column in binned for value in column if value is not None)

    parts = []
    for level in range(5):  # grid and value labels, bottom to top
        value = top * level / 4
        y = PLOT_TOP + PLOT_HEIGHT - PLOT_HEIGHT * level / 4
        parts.append(f'<line class="grid" x1="0" x2="100%" y1="{y:.1f}" y2="{y:.1f}"/>')
        if level:
            parts.append(f'<text class="tick" x="4" y="{y - 3:.1f}">{html.escape(fmt(value))}'
                         f'</text>')
    for fraction, label in time_ticks(chart.start, seconds):
        anchor = "start" if fraction < 0.04 else "end" if fraction > 0.96 else "middle"
        parts.append(f'<line class="grid vertical" x1="{100 * fraction:.2f}%" '
                     f'x2="{100 * fraction:.2f}%" y1="{PLOT_TOP}" '
                     f'y2="{PLOT_TOP + PLOT_HEIGHT}"/>')
        parts.append(f'<text class="tick" x="{100 * fraction:.2f}%" y="{HEIGHT - 8}" '
                     f'text-anchor="{anchor}">{label}</text>')

    plot = []
    xs = [f"{(i + 0.5) * PLOT_WIDTH / shown_bins:.1f}" for i in range(chart.bins)]
    scale = PLOT_HEIGHT / top
    for css, column in zip(SERIES_CLASSES, binned):
        # Each bin's "x,y" of its mean once, as text: the line and the band's lower edge both
        # draw it, and a chart has up to 360 bins.
        means = [None if v is None else
                 f"{xs[i]},{PLOT_HEIGHT - min(max(v[0], 0.0), top) * scale:.1f}"
                 for i, v in enumerate(column)]
        for run in segments(column, chart.step, chart.gap_seconds):
            if any(column[i][1] > column[i][0] for i in run):
                peaks = " L".join([
                    f"{xs[i]},{PLOT_HEIGHT - min(max(column[i][1], 0.0), top) * scale:.1f}"
                    for i in run])
                lower = " L".join([means[i] for i in reversed(run)])
                plot.append(f'<path class="band {css}" d="M{peaks} L{lower} Z"/>')
            if len(run) == 1:
                plot.append(f'<path class="line dot {css}" d="M{means[run[0]]} l0.01,0" '
                            f'vector-effect="non-scaling-stroke"/>')
            else:
                points = " L".join([means[i] for i in run])
                plot.append(f'<path class="line {css}" d="M{points}" '
                            f'vector-effect="non-scaling-stroke"/>')

    if chart.projection:
        origin = epoch(chart.start)
        path = " L".join(f"{(moment - origin) / seconds * PLOT_WIDTH:.1f},"
                         f"{PLOT_HEIGHT - min(max(value, 0.0), top) * scale:.1f}"
                         for moment, value, _ in chart.projection.points)
        now_x = chart.bins * PLOT_WIDTH / shown_bins
        plot.append(f'<line class="now" x1="{now_x:.1f}" x2="{now_x:.1f}" y1="0" '
                    f'y2="{PLOT_HEIGHT}" vector-effect="non-scaling-stroke"/>')
        plot.append(f'<path class="line projection" d="M{path}" '
                    f'vector-effect="non-scaling-stroke"/>')

    # data-values, as JSON: per bin, each line's mean and peak (null where it has none), or null
    # where no line has a value. Written as text, not json.dumps: see _number.
    unit = chart.unit
    cells = [[None if v is None else f"{_number(v[0], unit)},{_number(v[1], unit)}"
              for v in column] for column in binned]
    rows = [f"[{','.join([cell or 'null,null' for cell in row])}]" if any(row) else "null"
            for row in zip(*cells)] if cells else ["null"] * chart.bins
    rows += ["null"] * chart.ahead  # the future: nothing to show on hover
    data = html.escape(f"[{','.join(rows)}]", quote=True)
    labels = [line.label for line in chart.lines]
    legend = "".join(f'<span class="key {css}">{html.escape(label)}</span>'
                     for css, label in zip(SERIES_CLASSES, labels))
    empty = "" if filled else '<p class="nodata">No data in this range</p>'
    note = f'<span class="note">{html.escape(chart.note)}</span>' if chart.note else ""
    if chart.projection:
        note += f'<span class="forecast">{html.escape(chart.projection.label)}</span>'
    return (
        f'<figure class="chart" data-unit="{chart.unit}" data-start="{epoch(chart.start):.0f}" '
        f'data-step="{chart.step}" data-labels="{html.escape(json.dumps(labels), quote=True)}" '
        f'data-values="{data}" data-points="{filled}">'
        f'<figcaption><span class="title">{html.escape(chart.title)}</span>{legend}{note}'
        f'</figcaption>'
        f'<svg class="chart-svg" width="100%" height="{HEIGHT}" role="img" '
        f'aria-label="{html.escape(chart.title)}">'
        f'<title>{html.escape(chart.title)}</title>{"".join(parts)}'
        f'<svg class="plot" x="0" y="{PLOT_TOP}" width="100%" height="{PLOT_HEIGHT}" '
        f'viewBox="0 0 {PLOT_WIDTH} {PLOT_HEIGHT}" preserveAspectRatio="none">{"".join(plot)}'
        f'</svg></svg>{empty}<div class="tip" hidden></div></figure>'
    )
