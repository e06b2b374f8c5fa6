"""Charts as pure functions: binning keeps means and peaks, silence makes gaps, axes land on
round values, and agent-supplied labels come out escaped."""
import datetime
import json
import math
import random
import re

from panel import charts, units

T0 = datetime.datetime(2026, 11, 30, 12, 0)


def minute(n, second=0):
    return charts.epoch(T0 + datetime.timedelta(minutes=n, seconds=second))


def test_bins_keep_the_mean_and_the_peak():
    points = [(minute(0, 5), 10.0, None), (minute(0, 40), 30.0, None), (minute(1), 5.0, 9.0)]
    binned = charts.bin_points(points, T0, 60, 3)
    assert binned[0] == (20.0, 30.0)
    assert binned[1] == (5.0, 9.0)
    assert binned[2] is None


def test_points_outside_the_window_and_missing_values_are_dropped():
    points = [(minute(-1), 50.0, None), (minute(5), 50.0, None), (minute(2), None, None)]
    assert charts.bin_points(points, T0, 60, 5) == [None] * 5


def test_one_missed_report_is_not_a_gap_but_silence_is():
    filled = [(1.0, 1.0)] * 3 + [None] + [(1.0, 1.0)] * 3 + [None] * 5 + [(1.0, 1.0)]
    runs = charts.segments(filled, 60, charts.RANGES["1h"].gap_seconds)
    assert runs == [[0, 1, 2, 4, 5, 6], [12]]


def test_every_range_fits_the_page():
    for chart_range in charts.RANGES.values():
        assert chart_range.bins <= 400
        assert chart_range.gap_seconds >= 3 * chart_range.step


def test_axis_tops_are_round():
    assert charts.axis_top("percent", 12.0) == 100.0
    assert charts.axis_top("load", 3.2) == 4.0
    assert charts.axis_top("load", 0.3) == 1.0
    assert charts.axis_top("rate", 3.5 * 1024 ** 2) == 4 * 1024 ** 2
    assert charts.axis_top("bytes", 700) == 800
    assert charts.axis_top("bytes", 5e9, fixed=8 << 30) == 8 << 30
    assert charts.nice_ceiling(0.07) == 0.08


def test_time_ticks_fall_on_round_times():
    ticks = charts.time_ticks(datetime.datetime(2026, 11, 30, 11, 7), 3600)
    assert [label for _, label in ticks] == ["11:10", "11:20", "11:30", "11:40", "11:50",
                                             "12:00"]
    assert all(0 <= fraction <= 1 for fraction, _ in ticks)
    days = charts.time_ticks(datetime.datetime(2026, 11, 23, 12, 0), 7 * 86400)
    assert days[0][1] == "Nov 24" and len(days) <= 7


def chart(lines, unit="percent", **extra):
    chart_range = charts.RANGES["1h"]
    return charts.Chart(title="CPU", unit=unit, lines=lines, start=T0, step=chart_range.step,
                        bins=chart_range.bins, gap_seconds=chart_range.gap_seconds, **extra)


def test_render_draws_a_line_per_stretch_and_carries_the_values():
    points = [(minute(i), float(i), None) for i in range(10)] + \
             [(minute(i), 50.0, None) for i in range(30, 40)]
    svg = charts.render(chart([charts.Line("usage", points)]))
    assert svg.count('class="line s1"') == 2
    assert 'data-points="20"' in svg
    values = json.loads(re.search(r'data-values="([^"]+)"', svg).group(1).replace("&quot;", '"'))
    assert values[3] == [3.0, 3.0] and values[20] is None
    assert "100.0 %" in svg  # the top of a percent axis
    assert "preserveAspectRatio=\"none\"" in svg and "style=" not in svg  # CSP: no inline style


def test_chart_values_are_the_json_of_the_rounded_numbers():
    # charts._number writes the text itself (json.dumps of round() cost a 30-day page ~3 ms):
    # it must give the very bytes json.dumps(round(value, 2)) and json.dumps(round(value)) give.
    rng = random.Random(11)
    values = [0.0, -0.0, 0.005, 0.015, 0.125, 0.375, 2.675, 1e-7, -1e-7, -3.14159, 99.995,
              100.0, 12.3, 5.0, 9.999999e12, -9.999999e12, 1e13, 1e15, 1.5e20, math.nan,
              math.inf, -math.inf]
    values += [rng.choice((1, -1)) * rng.uniform(0, 10 ** rng.randint(-4, 14))
               for _ in range(20000)]
    values += [rng.randint(0, 10 ** 6) / 1000 for _ in range(5000)]  # exact ties at 3 places
    for value in values:
        assert charts._number(value, "percent") == json.dumps(round(value, 2)), value
        if math.isfinite(value):
            assert charts._number(value, "bytes") == json.dumps(round(value)), value


def test_chart_data_holds_each_bins_mean_and_peak_per_line():
    first = [(minute(i), i * 1.005, i * 1.5) for i in range(0, 40, 2)]
    second = [(minute(i), 7.0 / (i + 1), None) for i in range(20, 50)]
    one = chart([charts.Line("a", first), charts.Line("b", second)])
    svg = charts.render(one)
    expected = []
    columns = [charts.bin_points(line.points, one.start, one.step, one.bins)
               for line in one.lines]
    for row in zip(*columns):
        numbers = [number for value in row
                   for number in ((None, None) if value is None else
                                  (round(value[0], 2), round(value[1], 2)))]
        expected.append(numbers if any(value is not None for value in row) else None)
    data = re.search(r'data-values="([^"]+)"', svg).group(1).replace("&quot;", '"')
    assert data == json.dumps(expected, separators=(",", ":"))


def test_peaks_above_the_mean_make_a_band():
    svg = charts.render(chart([charts.Line("usage", [(minute(i), 10.0, 40.0)
                                                     for i in range(5)])]))
    assert 'class="band s1"' in svg


def test_an_empty_chart_says_so():
    svg = charts.render(chart([charts.Line("usage", [])]))
    assert "No data in this range" in svg and 'class="line' not in svg


def test_labels_from_agents_are_escaped():
    svg = charts.render(chart([charts.Line('/mnt/<img src=x onerror="alert(1)">',
                                           [(minute(1), 5.0, None)])]))
    assert "<img" not in svg
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in svg


def test_units_read_like_an_admin_expects():
    assert units.size(512) == "512 B"
    assert units.size(1536) == "1.50 KiB"
    assert units.size(23.4 * 1024 ** 2) == "23.4 MiB"
    assert units.size(117 * 1024 ** 3) == "117 GiB"
    assert units.rate(2048) == "2.00 KiB/s"
    assert units.ago(12) == "12 s ago" and units.ago(7200) == "2 h ago"
    assert units.duration(3 * 86400 + 7200) == "3 d 2 h"
    assert units.share(1, 4) == 25.0 and units.share(1, 0) is None
