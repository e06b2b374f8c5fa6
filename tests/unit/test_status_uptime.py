"""Uptime for the public status page, from recorded offline/online transitions."""
import datetime

from panel.status_page import uptime_percent

NOW = datetime.datetime(2026, 11, 30, 12, 0)
DAY = datetime.timedelta(days=1)
LONG_AGO = NOW - 365 * DAY


def hours_ago(h):
    return NOW - datetime.timedelta(hours=h)


def test_no_transitions_while_online_is_full_uptime():
    assert uptime_percent([], "online", NOW - DAY, NOW, LONG_AGO) == 100.0


def test_an_outage_inside_the_window_counts_its_length():
    events = [(hours_ago(10), "offline"), (hours_ago(7), "online")]
    assert uptime_percent(events, "online", NOW - DAY, NOW, LONG_AGO) == 100 * (21 / 24)


def test_an_outage_that_began_before_the_window():
    events = [(hours_ago(6), "online")]  # went down before the window opened, back 6 h ago
    assert uptime_percent(events, "online", NOW - DAY, NOW, LONG_AGO) == 100 * (6 / 24)


def test_still_down_counts_until_now():
    events = [(hours_ago(2), "offline")]
    assert round(uptime_percent(events, "offline", NOW - DAY, NOW, LONG_AGO), 4) == \
        round(100 * (22 / 24), 4)
    assert uptime_percent([], "offline", NOW - DAY, NOW, LONG_AGO) == 0.0


def test_time_before_monitoring_began_is_not_counted():
    events = [(hours_ago(3), "offline"), (hours_ago(2), "online")]
    assert uptime_percent(events, "online", NOW - DAY, NOW, hours_ago(4)) == 75.0


def test_a_server_that_never_reported_has_no_figure():
    assert uptime_percent([], "unknown", NOW - DAY, NOW, LONG_AGO) is None
