"""Rollup averaging as pure functions: means beside peaks, weighted merging, bucket edges."""
import datetime

from panel import rollups

T0 = datetime.datetime(2026, 11, 30, 12, 0)


def raw(agent, minute, second=0, **values):
    row = {"agent": agent, "timestamp": T0 + datetime.timedelta(minutes=minute, seconds=second),
           "memory_total": 1000}
    for column in rollups.FIGURES:
        row[column] = None
    row.update(values)
    return row


def test_buckets_keep_the_mean_and_the_peak():
    rows = [raw(1, 0, cpu_usage=10.0), raw(1, 1, cpu_usage=30.0), raw(1, 4, second=59,
                                                                      cpu_usage=80.0)]
    [bucket] = rollups.rollup(rows, 300)
    assert bucket["bucket"] == T0 and bucket["samples"] == 3
    assert bucket["cpu_usage_avg"] == 40.0 and bucket["cpu_usage_max"] == 80.0


def test_a_sample_on_the_edge_starts_the_next_bucket():
    buckets = rollups.rollup([raw(1, 4, 59, cpu_usage=1.0), raw(1, 5, cpu_usage=2.0)], 300)
    assert [b["bucket"] for b in buckets] == [T0, T0 + datetime.timedelta(minutes=5)]


def test_agents_are_kept_apart_and_missing_figures_stay_empty():
    buckets = rollups.rollup([raw(1, 0, cpu_usage=5.0), raw(2, 0, cpu_usage=7.0,
                                                         network_rx_rate=100.0)], 300)
    by_agent = {b["agent"]: b for b in buckets}
    assert by_agent[1]["network_rx_rate_avg"] is None
    assert by_agent[2]["network_rx_rate_avg"] == 100.0
    assert by_agent[1]["disk_max_percent_max"] is None


def test_merge_weights_means_by_samples_and_keeps_peaks():
    fine = rollups.rollup([raw(1, 0, cpu_usage=10.0)] +
                          [raw(1, 5 + i, cpu_usage=40.0) for i in range(3)] +
                          [raw(1, 10, cpu_usage=95.0)], 300)
    [hour] = rollups.merge(fine, 3600)
    assert hour["samples"] == 5
    assert hour["cpu_usage_avg"] == (10 + 40 * 3 + 95) / 5
    assert hour["cpu_usage_max"] == 95.0
    assert hour["memory_total"] == 1000


def test_tier_for_a_range():
    day, month = datetime.timedelta(days=1), datetime.timedelta(days=30)
    assert rollups.tier_for(day) is None
    assert rollups.tier_for(7 * day).name == "5m"
    assert rollups.tier_for(month).name == "5m"
    assert rollups.tier_for(90 * day).name == "1h"
    assert month.total_seconds() / rollups.tier_for(month).seconds <= 9000


def test_only_samples_older_than_the_window_margin_mark_their_bucket():
    now = T0 + datetime.timedelta(hours=3)
    old = now - rollups.DIRTY_AFTER - datetime.timedelta(seconds=1)
    recent = now - rollups.DIRTY_AFTER + datetime.timedelta(seconds=1)
    samples = [(2, old), (1, old), (1, old + datetime.timedelta(seconds=30)), (1, recent),
               (1, T0 + datetime.timedelta(minutes=7))]
    assert rollups.dirty_buckets(samples, now) == [
        (1, T0 + datetime.timedelta(minutes=5)),
        (1, rollups.floor_time(old, 300)),
        (2, rollups.floor_time(old, 300)),
    ]
    assert rollups.DIRTY_AFTER < rollups.LATE_WINDOW  # the rest the window's runs still cover
