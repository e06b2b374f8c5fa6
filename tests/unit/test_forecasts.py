"""Disk-full forecasts on synthetic hourly series whose answer is known."""
import datetime
import random

import pytest

from panel import forecasts

NOW = datetime.datetime(2026, 12, 2, 12, 0)
HOUR = datetime.timedelta(hours=1)
GB = 1024 ** 3
CAPACITY = 100 * GB


def series(used_at, hours=7 * 24, capacity=CAPACITY):
    """Hourly points up to NOW, `used_at(hours before NOW)` bytes used."""
    return [(NOW - back * HOUR, int(used_at(back)), capacity) for back in range(hours, -1, -1)]


def test_a_linear_fill_is_full_when_the_line_reaches_the_capacity():
    # 60 GB used now, 2 GB a day more: 40 GB left is 20 days.
    item = forecasts.forecast("/var", series(lambda back: 60 * GB - 2 * GB * back / 24))
    assert item.reason is None
    assert item.bytes_per_day == pytest.approx(2 * GB, rel=1e-6)
    assert item.seconds_left(NOW) == pytest.approx(20 * 86400, rel=1e-4)


def test_a_flat_disk_has_no_forecast():
    item = forecasts.forecast("/", series(lambda back: 50 * GB))
    assert (item.full_at, item.reason) == (None, "flat")


def test_a_shrinking_disk_has_no_forecast():
    item = forecasts.forecast("/", series(lambda back: 50 * GB + GB * back / 24))
    assert (item.full_at, item.reason) == (None, "shrinking")
    assert item.bytes_per_day == pytest.approx(-GB, rel=1e-6)


def test_noise_around_a_trend_leaves_the_trend():
    noise = random.Random(14)
    item = forecasts.forecast("/var", series(
        lambda back: 60 * GB - 2 * GB * back / 24 + noise.uniform(-GB, GB) / 4))
    assert item.seconds_left(NOW) == pytest.approx(20 * 86400, rel=0.05)


def test_too_little_history_has_no_forecast():
    few = series(lambda back: 60 * GB - 10 * GB * back / 24, hours=forecasts.MIN_POINTS - 2)
    assert forecasts.forecast("/", few).reason == "too little history"
    assert forecasts.forecast("/", []) is None


def test_a_step_down_from_a_deleted_file_starts_the_history_afresh():
    # 1 GB a day, then 20 GB deleted 48 hours ago, then 3 GB a day: the new slope counts.
    def used(back):
        return 40 * GB - GB * back / 24 if back > 48 else 30 * GB - 3 * GB * back / 24
    item = forecasts.forecast("/home", series(used))
    assert item.bytes_per_day == pytest.approx(3 * GB, rel=1e-6)
    assert item.seconds_left(NOW) == pytest.approx(70 / 3 * 86400, rel=1e-4)


def test_a_step_down_just_now_is_too_little_history():
    item = forecasts.forecast("/", series(lambda back: 90 * GB if back > 2 else 10 * GB))
    assert item.reason == "too little history"


def test_a_full_disk_is_full_now():
    item = forecasts.forecast("/", series(lambda back: CAPACITY))
    assert item.full_at == NOW and item.seconds_left(NOW) == 0


def test_a_full_point_past_a_year_is_shown_as_nothing():
    # 50 GB free at 0.05 GB a day: 1,000 days.
    slow = forecasts.forecast("/", series(lambda back: 50 * GB - 0.05 * GB * back / 24))
    assert (slow.full_at, slow.reason) == (None, "not within a year")


def test_the_projection_runs_to_the_full_point_or_the_chart_edge():
    item = forecasts.Forecast("/", 50, 100, 10.0, NOW + 5 * 86400 * HOUR / 3600)
    assert forecasts.percent_line(item, NOW, NOW + 10 * 24 * HOUR) == [
        (NOW, 50.0), (item.full_at, 100.0)]
    edge = NOW + 24 * HOUR
    assert forecasts.percent_line(item, NOW, edge) == [(NOW, 50.0), (edge, 60.0)]
    assert forecasts.percent_line(forecasts.Forecast("/", 1, 2, None, None, "flat"),
                                  NOW, edge) == []


def test_the_history_is_read_from_the_samples_disks():
    disks = [{"mountpoint": "/", "used": 30, "free": 70, "total": 110},
             {"mountpoint": "/odd", "used": "30", "free": 1}, {"used": 1, "free": 1}]
    assert forecasts.hour_rows(disks) == [("/", 30, 100)]
    assert forecasts.hour_rows(None) == []
