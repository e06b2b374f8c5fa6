"""Threshold rules as pure functions: when a rule fires, when it resolves, and that a value
hovering around the threshold does not make a storm."""
import datetime
import types

from panel import alerts

NOW = datetime.datetime(2026, 11, 30, 12, 0)


def series(*values, every=60):
    """Samples ending now, oldest first, one every `every` seconds."""
    count = len(values)
    return [(NOW - datetime.timedelta(seconds=every * (count - 1 - i)), v)
            for i, v in enumerate(values)]


def test_fires_when_every_sample_of_the_window_is_above():
    assert alerts.evaluate(series(95, 96, 97, 95, 99, 98), 90, 5, False, NOW) == "fire"


def test_one_dip_in_the_window_keeps_it_quiet():
    assert alerts.evaluate(series(95, 96, 85, 95, 99, 98), 90, 5, False, NOW) is None


def test_a_server_that_just_started_cannot_fire_a_five_minute_rule():
    assert alerts.evaluate(series(99, 99), 90, 5, False, NOW) is None


def test_resolves_only_below_the_threshold_less_hysteresis_for_the_whole_window():
    assert alerts.evaluate(series(80, 80, 80, 80, 80, 80), 90, 5, True, NOW) == "resolve"
    assert alerts.evaluate(series(80, 80, 86, 80, 80, 80), 90, 5, True, NOW) is None  # > 85.5


def test_a_value_hovering_around_the_threshold_fires_once_and_never_flaps():
    values = [95] * 6 + [89, 91, 89, 92, 88, 91, 90.5, 89, 91, 89] * 3
    firing, transitions = False, []
    for end in range(6, len(values) + 1):
        window = values[max(0, end - 6):end]
        decision = alerts.evaluate(series(*window), 90, 5, firing, NOW)
        if decision:
            transitions.append(decision)
            firing = decision == "fire"
    assert transitions == ["fire"]


def test_missing_values_are_ignored_not_read_as_zero():
    assert alerts.evaluate(series(95, None, 96, 97, 95, 99), 90, 5, False, NOW) == "fire"


def test_sample_values_per_metric():
    row = {"cpu_usage": 12.0, "memory_used": 3, "memory_total": 4, "disk_max_percent": 81.5,
           "cpu_load_1min": 2.5}
    assert alerts.sample_value("cpu", row) == 12.0
    assert alerts.sample_value("memory", row) == 75.0
    assert alerts.sample_value("disk", row) == 81.5
    assert alerts.sample_value("load", row) == 2.5
    assert alerts.sample_value("memory", {"memory_used": 3, "memory_total": None}) is None


def rule(metric, threshold, server_id=None, enabled=True):
    return types.SimpleNamespace(metric=metric, threshold=threshold, server_id=server_id,
                                 enabled=enabled, minutes=5)


def test_a_server_rule_overrides_the_global_one_for_that_server_only():
    rules = [rule("cpu", 90), rule("disk", 90), rule("cpu", 99, server_id=7),
             rule("disk", 90, server_id=8, enabled=False)]
    for_7 = {r.metric: r.threshold for r in alerts.effective_rules(rules, 7)}
    for_8 = {r.metric: r.threshold for r in alerts.effective_rules(rules, 8)}
    assert for_7 == {"cpu": 99, "disk": 90}
    assert for_8 == {"cpu": 90}  # disk switched off for server 8


def test_a_below_rule_fires_under_its_threshold_and_resolves_above_the_margin():
    """Days until a certificate expires: bad when low."""
    assert alerts.evaluate(series(10, 9, 8, 7, 6, 5), 14, 5, False, NOW, below=True) == "fire"
    assert alerts.evaluate(series(10, 20, 8, 7, 6, 5), 14, 5, False, NOW, below=True) is None
    assert alerts.evaluate(series(14.5, 14.5, 14.5, 14.5, 14.5, 14.5), 14, 5, True, NOW,
                           below=True) is None  # above 14, not past 14.7
    assert alerts.evaluate(series(90, 90, 90, 90, 90, 90), 14, 5, True, NOW,
                           below=True) == "resolve"


def test_the_built_in_rules_come_from_the_figure_table():
    assert {(watch.metric, watch.threshold, watch.minutes) for watch, _ in alerts.BUILT_IN} >= {
        ("cpu", 90.0, 5), ("memory", 90.0, 5), ("disk", 90.0, 5)}
